//! The threads of a swarm: per connection a reader (decodes, hands each
//! message to the swarm) and a writer (sends what the swarm queued, reads
//! upload blocks from the store only when it sends them); per swarm a
//! listener (a node's own port) and a ticker (time-outs, dialing known
//! peers, refilling requests).

use std::io::{BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::Swarm;
use crate::torrent::picker::PeerKey;
use crate::torrent::wire::{
    piece_header, BlockRef, FrameBuffer, Handshake, Message, HANDSHAKE_LEN,
};

/// Unsent bytes a peer's socket may hold: about a block. A message (a
/// have, a request) goes out behind what the socket holds, and Linux grows
/// a socket's buffer to megabytes: at 32 nodes, where the server's flow
/// to a node is a 32nd of its link, a have waited seconds behind blocks,
/// the super-seeding server took pieces it had shown as not wanted and
/// showed them again (17 % of the pieces left it twice), and nodes heard
/// late of each other's pieces. What is in flight is not limited.
pub(super) const NOTSENT_LOWAT: u32 = 32 << 10;

/// `TCP_NOTSENT_LOWAT` on `s` (Linux 3.12).
pub(super) fn set_notsent_lowat(s: &TcpStream, bytes: u32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let v = bytes as libc::c_int;
    // SAFETY: the option reads one c_int from a live local.
    let ret = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// What a connection's writer sends.
#[derive(Debug)]
pub enum Out {
    /// An encoded message.
    Bytes(Vec<u8>),
    /// The peer's queue of requests ([`super::Peer::uploads`]) has blocks
    /// to send: read from the store one by one as they are sent. Sent
    /// once until the writer finds the queue empty, so cancelled requests
    /// leave nothing behind in the channel.
    Uploads,
}

/// Keep-alive after this much silence on our side (BEP 3: two minutes).
const KEEPALIVE: Duration = Duration::from_secs(60);
/// Concurrent dials at most.
const MAX_DIALING: usize = 8;
/// How often the ticker runs.
const TICK: Duration = Duration::from_millis(250);

/// What [`Swarm::take_upload`] found.
pub(super) enum Upload {
    Block(BlockRef, Vec<u8>),
    /// The block's piece is no longer in the store: the queue was dropped,
    /// the peer is to be choked and unchoked.
    Gone,
    Empty,
}

/// Read the 68-byte handshake a dialing peer sends first, within `timeout`.
pub fn read_handshake(stream: &mut TcpStream, timeout: Duration) -> Result<Handshake, String> {
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; HANDSHAKE_LEN];
    stream
        .read_exact(&mut buf)
        .map_err(|e| format!("reading the handshake: {e}"))?;
    match Handshake::decode(&buf) {
        Ok(Some(h)) => Ok(h),
        Ok(None) => Err("short handshake".into()),
        Err(e) => Err(e.to_string()),
    }
}

impl Swarm {
    /// Dial `addr` and shake hands.
    fn dial(&self, addr: SocketAddr) -> Result<(TcpStream, Handshake), String> {
        let mut s = TcpStream::connect_timeout(&addr, self.cfg.connect_timeout)
            .map_err(|e| format!("connecting: {e}"))?;
        s.set_write_timeout(Some(self.cfg.connect_timeout))
            .map_err(|e| e.to_string())?;
        s.write_all(&Handshake::new(self.info_hash, self.cfg.peer_id).encode())
            .map_err(|e| format!("sending the handshake: {e}"))?;
        let h = read_handshake(&mut s, self.cfg.connect_timeout)?;
        if h.info_hash != self.info_hash {
            return Err(format!(
                "answered for torrent {}, not {}",
                h.info_hash, self.info_hash
            ));
        }
        Ok((s, h))
    }

    /// Take a connection whose handshake (for this torrent) was read:
    /// answer it and run the connection (blocking until it ends).
    pub fn adopt(self: &Arc<Self>, mut s: TcpStream, addr: SocketAddr, h: Handshake) {
        let _ = s.set_write_timeout(Some(self.cfg.connect_timeout));
        if s.write_all(&Handshake::new(self.info_hash, self.cfg.peer_id).encode())
            .is_err()
        {
            return;
        }
        self.run(s, addr, h, false);
    }

    fn run(self: &Arc<Self>, s: TcpStream, addr: SocketAddr, h: Handshake, outbound: bool) {
        let _ = s.set_nodelay(true);
        let _ = set_notsent_lowat(&s, NOTSENT_LOWAT);
        let _ = s.set_write_timeout(Some(self.cfg.idle_timeout));
        let (tx, rx) = mpsc::channel();
        let key = match self.register(&s, addr, h.peer_id, outbound, tx) {
            Ok(k) => k,
            Err(why) => {
                log::debug!("torrent: not keeping {addr}: {why}");
                let _ = s.shutdown(Shutdown::Both);
                return;
            }
        };
        log::debug!("torrent: connected to {addr} ({:?})", h.peer_id);
        let writer = {
            let sw = self.clone();
            let ws = s.try_clone();
            thread::Builder::new()
                .name("torrent-tx".into())
                .spawn(move || {
                    if let Ok(ws) = ws {
                        sw.write_loop(key, ws, rx);
                    }
                })
        };
        let fault = self.read_loop(key, &s).err();
        self.unregister(key, fault.as_deref());
        let _ = s.shutdown(Shutdown::Both);
        if let Ok(w) = writer {
            let _ = w.join();
        }
    }

    /// Messages from the peer until it leaves (`Ok`) or misbehaves.
    fn read_loop(&self, key: PeerKey, s: &TcpStream) -> Result<(), String> {
        let mut r = s;
        let _ = s.set_read_timeout(Some(self.cfg.idle_timeout));
        let mut fb = FrameBuffer::new(self.limits);
        loop {
            loop {
                match fb.message() {
                    Ok(Some(m)) => self.on_message(key, m)?,
                    Ok(None) => break,
                    Err(e) => return Err(e.to_string()),
                }
            }
            match fb.read_from(&mut r) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(format!("silent for {:?}", self.cfg.idle_timeout));
                }
                Err(_) => return Ok(()),
            }
        }
    }

    /// Send what the swarm queued for `key`, batching small messages.
    fn write_loop(&self, key: PeerKey, s: TcpStream, rx: Receiver<Out>) {
        let mut w = BufWriter::with_capacity(64 << 10, &s);
        let mut next = rx.recv_timeout(KEEPALIVE);
        loop {
            let out = match next {
                Ok(o) => o,
                Err(RecvTimeoutError::Timeout) => {
                    if w.write_all(&Message::KeepAlive.to_bytes()).is_err() || w.flush().is_err() {
                        break;
                    }
                    next = rx.recv_timeout(KEEPALIVE);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let ok = match out {
                Out::Bytes(b) => w.write_all(&b).is_ok(),
                Out::Uploads => self.write_uploads(key, &mut w, &rx),
            };
            if !ok {
                break;
            }
            next = match rx.try_recv() {
                Ok(o) => Ok(o),
                Err(mpsc::TryRecvError::Empty) => {
                    if w.flush().is_err() {
                        break;
                    }
                    rx.recv_timeout(KEEPALIVE)
                }
                Err(mpsc::TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
            };
        }
        let _ = w.flush();
        let _ = s.shutdown(Shutdown::Both);
    }

    /// Send the blocks `key` asked for until its queue is empty (messages
    /// queued meanwhile go out between blocks). Whether the socket held.
    fn write_uploads(
        &self,
        key: PeerKey,
        w: &mut BufWriter<&TcpStream>,
        rx: &Receiver<Out>,
    ) -> bool {
        loop {
            let (b, data) = match self.take_upload(key) {
                Upload::Block(b, data) => (b, data),
                Upload::Gone => {
                    // BEP 3: a choke discards every pending request; the
                    // peer then asks again, elsewhere for what we lack.
                    let ok = w
                        .write_all(&Message::Choke.to_bytes())
                        .and_then(|()| w.write_all(&Message::Unchoke.to_bytes()))
                        .is_ok();
                    if !ok {
                        return false;
                    }
                    continue;
                }
                Upload::Empty => return true,
            };
            let ok = w
                .write_all(&piece_header(b.index, b.begin, b.length))
                .and_then(|()| w.write_all(&data))
                .is_ok();
            if !ok {
                return false;
            }
            self.sent_block(key, b, data.len());
            while let Ok(Out::Bytes(m)) = rx.try_recv() {
                if w.write_all(&m).is_err() {
                    return false;
                }
            }
        }
    }

    /// The next block `key` asked for and its bytes. A node's store keeps
    /// a bounded window of pieces, so a piece it announced long ago may be
    /// gone: then its whole queue is dropped ([`Upload::Gone`]). When the
    /// queue is empty the next request wakes the writer again.
    pub(super) fn take_upload(&self, key: PeerKey) -> Upload {
        let b = {
            let mut st = self.lock();
            let Some(p) = st.peers.get_mut(&key) else {
                return Upload::Empty;
            };
            match p.uploads.pop_front() {
                Some(b) => b,
                None => {
                    p.woken = false;
                    return Upload::Empty;
                }
            }
        };
        match self.store.read(b.index, b.begin, b.length) {
            Some(data) => Upload::Block(b, data),
            None => {
                if let Some(p) = self.lock().peers.get_mut(&key) {
                    p.uploads.clear();
                }
                Upload::Gone
            }
        }
    }

    /// Accept peers on `listener` for this torrent until the swarm stops.
    pub fn spawn_listener(
        self: &Arc<Self>,
        listener: TcpListener,
    ) -> std::io::Result<JoinHandle<()>> {
        listener.set_nonblocking(true)?;
        let sw = self.clone();
        thread::Builder::new()
            .name("torrent-listen".into())
            .spawn(move || loop {
                if sw.is_stopped() {
                    return;
                }
                match listener.accept() {
                    Ok((mut s, addr)) => {
                        let _ = s.set_nonblocking(false);
                        let sw = sw.clone();
                        let _ = thread::Builder::new()
                            .name("torrent-rx".into())
                            .spawn(
                                move || match read_handshake(&mut s, sw.cfg.connect_timeout) {
                                    Ok(h) if h.info_hash == sw.info_hash => sw.adopt(s, addr, h),
                                    Ok(h) => log::debug!(
                                        "torrent: {addr} asked for torrent {}, not ours",
                                        h.info_hash
                                    ),
                                    Err(e) => log::debug!("torrent: {addr}: {e}"),
                                },
                            );
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => {
                        log::warn!("torrent: accepting peers: {e}");
                        thread::sleep(Duration::from_millis(500));
                    }
                }
            })
    }

    /// Time-outs, dialing and refilling, until the swarm stops.
    pub fn spawn_ticker(self: &Arc<Self>) -> std::io::Result<JoinHandle<()>> {
        let sw = self.clone();
        thread::Builder::new()
            .name("torrent-tick".into())
            .spawn(move || {
                while !sw.is_stopped() {
                    sw.tick(Instant::now());
                    thread::sleep(TICK);
                }
            })
    }

    fn tick(self: &Arc<Self>, now: Instant) {
        let mut guard = self.lock();
        let st = &mut *guard;
        super::update_rate(st, now);
        // Requests unanswered too long: ask elsewhere, hold it against the
        // peer — once per sweep, however many blocks expired together
        // (they were asked together: counted per block, one slow answer
        // of three blocks dropped the peer at once).
        let mut late = std::collections::HashSet::new();
        let mut demoted = false;
        for (k, b) in st.picker.expire(now, self.cfg.request_timeout) {
            if let Some(p) = st.peers.get_mut(&k) {
                p.send(&Message::Cancel(b));
                // It may no longer hold the piece (a node's store drops
                // what it consumed long ago): stop asking it for that one.
                demoted |= super::lost_piece(&mut st.picker, p, b.index);
                late.insert(k);
            }
        }
        if demoted {
            self.restripe(st);
        }
        for k in late {
            if let Some(p) = st.peers.get_mut(&k) {
                p.timeouts += 1;
                if p.timeouts >= 3 {
                    log::info!("torrent: peer {} keeps not answering; dropping it", p.addr);
                    let _ = p.stream.shutdown(Shutdown::Both);
                }
            }
        }
        for p in st.peers.values() {
            if now.saturating_duration_since(p.last_heard) > self.cfg.idle_timeout {
                let _ = p.stream.shutdown(Shutdown::Both);
            }
        }
        self.take_back_ignored(st, now);
        self.reveal_idle(st, now);
        self.refill_all(st);
        // Dial known peers we are not connected to, a few at a time.
        if st.picker.have.is_full() {
            // A complete node waits to be dialed: it needs nothing.
            return;
        }
        let connected: std::collections::HashSet<SocketAddr> =
            st.peers.values().map(|p| p.addr).collect();
        let mut dial = Vec::new();
        let (connecting, peers) = (st.connecting, st.peers.len());
        for (addr, (at, fails)) in st.known.iter_mut() {
            if connecting + dial.len() >= MAX_DIALING
                || peers + connecting + dial.len() >= self.cfg.max_peers
            {
                break;
            }
            if *at > now || connected.contains(addr) {
                continue;
            }
            // Retry later whatever happens; a live connection makes the
            // retry moot.
            *at = now + Duration::from_secs(2u64 << (*fails).min(4));
            *fails += 1;
            dial.push(*addr);
        }
        st.connecting += dial.len();
        drop(guard);
        for addr in dial {
            let sw = self.clone();
            let _ = thread::Builder::new()
                .name("torrent-dial".into())
                .spawn(move || {
                    let r = sw.dial(addr);
                    let mut st = sw.lock();
                    st.connecting -= 1;
                    if r.is_ok() {
                        if let Some(k) = st.known.get_mut(&addr) {
                            // Connected: if it ends, dial again soon.
                            *k = (Instant::now() + Duration::from_secs(2), 0);
                        }
                    }
                    drop(st);
                    match r {
                        Ok((s, h)) => sw.run(s, addr, h, true),
                        Err(e) => log::debug!("torrent: dialing {addr}: {e}"),
                    }
                });
        }
    }
}
