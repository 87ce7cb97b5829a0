//! A rogue BitTorrent peer for the fault tests: it joins a torrent's swarm
//! as an ordinary client would (a guest announce, so the server must have
//! `[torrent] open = true`), claims every piece but the last (so drover's
//! picker treats it as a peer worth asking rather than a seed to spare),
//! unchokes whoever connects and answers every request with garbage of
//! the right length. A drover node must drop it at its first bad piece
//! (each piece is checked against the torrent's SHA-1) and still finish
//! with a verified disk.
//!
//! It runs on threads of the test process; its sockets belong to whichever
//! network namespace the listener was made in (see
//! [`drover_qemu_tests::netns::Netns::run_in`]). Dropped, it stops.

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use drover_agent::torrent::bitfield::Bitfield;
use drover_agent::torrent::metainfo::{Info, InfoHash, Metainfo};
use drover_agent::torrent::swarm::read_handshake;
use drover_agent::torrent::tracker::{Announce, Event};
use drover_agent::torrent::wire::{
    piece_header, BlockRef, FrameBuffer, Handshake, Limits, Message, PeerId,
};
use drover_qemu_tests::netns::Netns;

/// What the rogue did so far.
#[derive(Debug, Default)]
pub struct RogueStats {
    /// Peers that completed a handshake with it.
    pub handshakes: AtomicU64,
    /// Blocks asked of it (each answered with garbage).
    pub requests: AtomicU64,
    /// Garbage bytes sent.
    pub garbage_bytes: AtomicU64,
}

/// The rogue peer (module doc).
pub struct Rogue {
    info_hash: InfoHash,
    peer_id: PeerId,
    port: u16,
    stats: Arc<RogueStats>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Rogue {
    /// Serve the torrent whose metainfo is `torrent` (a `payload.torrent`)
    /// on `listener`.
    pub fn start(listener: TcpListener, torrent: &[u8]) -> Result<Rogue> {
        let meta = Metainfo::parse(torrent).context("parsing the torrent")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let mut id = [0u8; 20];
        id[..8].copy_from_slice(b"-RG0001-");
        id[8..].copy_from_slice(b"garbage-only");
        let peer_id = PeerId(id);
        let stats = Arc::new(RogueStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let info = Arc::new(meta.info);
        let thread = {
            let (stats, stop) = (stats.clone(), stop.clone());
            let hash = meta.info_hash;
            thread::Builder::new()
                .name("rogue-accept".into())
                .spawn(move || accept_loop(&listener, &info, hash, peer_id, &stats, &stop))?
        };
        Ok(Rogue {
            info_hash: meta.info_hash,
            peer_id,
            port,
            stats,
            stop,
            thread: Some(thread),
        })
    }

    /// The guest announce's path and query (`/announce?…`): `left=0`, so
    /// the tracker counts it as a seed and nobody waits for it to finish.
    pub fn announce_path(&self, event: Event) -> String {
        let a = Announce {
            info_hash: self.info_hash,
            peer_id: self.peer_id,
            port: self.port,
            uploaded: 0,
            downloaded: 0,
            left: 0,
            event,
            compact: true,
            numwant: Some(0),
        };
        format!("/announce?{}", a.to_query())
    }

    /// Announce from inside `ns` to the tracker at `server`; an error if
    /// the tracker refused.
    pub fn announce(&self, ns: &Netns, server: SocketAddr, event: Event) -> Result<()> {
        let path = self.announce_path(event);
        let (status, body) = ns.http_get(server, &path)?;
        if status != 200 || body.contains("failure reason") || !body.starts_with('d') {
            bail!("the tracker refused the rogue's announce: HTTP {status}: {body:?}");
        }
        Ok(())
    }

    pub fn stats(&self) -> &RogueStats {
        &self.stats
    }
}

impl Drop for Rogue {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    info: &Arc<Info>,
    hash: InfoHash,
    id: PeerId,
    stats: &Arc<RogueStats>,
    stop: &Arc<AtomicBool>,
) {
    let mut conns = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((s, _)) => {
                let (info, stats, stop) = (info.clone(), stats.clone(), stop.clone());
                if let Ok(t) = thread::Builder::new()
                    .name("rogue-conn".into())
                    .spawn(move || {
                        let _ = serve(s, &info, hash, id, &stats, &stop);
                    })
                {
                    conns.push(t);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(20));
            }
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
    }
    for t in conns {
        let _ = t.join();
    }
}

/// One connection: handshake, a bitfield of all pieces but the last,
/// unchoke, then garbage for every request until the peer leaves.
fn serve(
    mut s: TcpStream,
    info: &Info,
    hash: InfoHash,
    id: PeerId,
    stats: &RogueStats,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    let h = read_handshake(&mut s, Duration::from_secs(10)).map_err(std::io::Error::other)?;
    if h.info_hash != hash {
        return Ok(());
    }
    s.write_all(&Handshake::new(hash, id).encode())?;
    stats.handshakes.fetch_add(1, Ordering::Relaxed);
    let count = info.piece_count();
    let mut has = Bitfield::full(count);
    if count > 1 {
        has.clear(count - 1);
    }
    s.write_all(&Message::Bitfield(has.as_wire()).to_bytes())?;
    s.write_all(&Message::Unchoke.to_bytes())?;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    let mut fb = FrameBuffer::new(Limits::for_info(info));
    let mut noise = 0x9e37_79b9_7f4a_7c15u64;
    loop {
        let mut asked: Vec<BlockRef> = Vec::new();
        loop {
            match fb.message() {
                Ok(Some(Message::Request(b))) => asked.push(b),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            }
        }
        for b in asked {
            let mut block = vec![0u8; b.length as usize];
            for word in block.chunks_mut(8) {
                noise ^= noise << 13;
                noise ^= noise >> 7;
                noise ^= noise << 17;
                word.copy_from_slice(&noise.to_le_bytes()[..word.len()]);
            }
            s.write_all(&piece_header(b.index, b.begin, b.length))?;
            s.write_all(&block)?;
            stats.requests.fetch_add(1, Ordering::Relaxed);
            stats
                .garbage_bytes
                .fetch_add(u64::from(b.length), Ordering::Relaxed);
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        match fb.read_from(&mut s) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_agent::torrent::metainfo::piece_hash;
    use std::io::Read as _;

    fn read_n(s: &mut TcpStream, n: usize) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; n];
        s.read_exact(&mut buf)?;
        Ok(buf)
    }

    #[test]
    fn answers_requests_with_garbage() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let info = Info::build("p", &data[..], data.len() as u64, Some(32 << 10)).unwrap();
        let torrent = Metainfo::new(info.clone(), None).to_bytes();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let rogue = Rogue::start(l, &torrent).unwrap();
        assert!(rogue.announce_path(Event::Started).contains(&format!(
            "port={}&uploaded=0&downloaded=0&left=0",
            addr.port()
        )));

        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let me = PeerId([7; 20]);
        s.write_all(&Handshake::new(info.info_hash(), me).encode())
            .unwrap();
        let h = Handshake::decode(&read_n(&mut s, 68).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(h.info_hash, info.info_hash());
        // 4 pieces: bitfield 0b1110_0000, then unchoke.
        assert_eq!(read_n(&mut s, 6).unwrap(), [0, 0, 0, 2, 5, 0b1110_0000]);
        assert_eq!(read_n(&mut s, 5).unwrap(), [0, 0, 0, 1, 1]);
        let mut piece = Vec::new();
        for begin in [0u32, 16 << 10] {
            let req = Message::Request(BlockRef {
                index: 1,
                begin,
                length: 16 << 10,
            });
            s.write_all(&req.to_bytes()).unwrap();
            let head = read_n(&mut s, 13).unwrap();
            assert_eq!(head, piece_header(1, begin, 16 << 10));
            piece.extend(read_n(&mut s, 16 << 10).unwrap());
        }
        assert_ne!(piece_hash(&piece), info.pieces[1]);
        assert_ne!(piece[..], data[32 << 10..64 << 10]);
        assert_eq!(rogue.stats().handshakes.load(Ordering::Relaxed), 1);
        assert_eq!(rogue.stats().requests.load(Ordering::Relaxed), 2);
        drop(s);
        drop(rogue);
    }
}
