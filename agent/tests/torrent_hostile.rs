//! Hostile and odd peers against a real node ([`TorrentSource`]) and the
//! server's seeder, over loopback TCP: a scripted peer shakes hands on the
//! node's listening port and sends one bad message (a huge bitfield
//! length, a have past the last piece, a piece it was never asked for).
//! The node closes that connection, counts the peer dropped, and stays
//! healthy: it then completes every chunk from a good seeder. A peer that
//! sends its bitfield again (as aria2c does) is not hostile: it is kept,
//! and asked for what the new bitfield adds. (`wire_bounds.rs` covers the
//! decoder's allocations; `torrent_swarm.rs` a liar and garbage.)

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use drover_agent::image::{
    BuildOptions, ChunkSource, ContentKind, Filesystem, ImageBuilder, Manifest, PartSize, PartSpec,
    TypeGuid,
};
use drover_agent::torrent::bitfield::Bitfield;
use drover_agent::torrent::metainfo::{Info, InfoHash};
use drover_agent::torrent::seeder::Seeder;
use drover_agent::torrent::wire::{
    FrameBuffer, Handshake, Limits, Message, PeerId, HANDSHAKE_LEN, MAX_BLOCK,
};
use drover_agent::torrent::{join, TorrentOptions, TorrentSource};

/// Pseudo-random bytes (incompressible).
fn noise(len: usize, mut x: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// An image of one raw partition of `len` bytes in 64 KiB chunks, and its
/// torrent in 16 KiB pieces (one block each).
fn image(dir: &Path, len: usize) -> (Manifest, PathBuf, Info) {
    let opts = BuildOptions {
        chunk_size: 64 << 10,
        level: 1,
        threads: 2,
    };
    let mut b = ImageBuilder::new(dir, "hostile", "1", opts).unwrap();
    let spec = PartSpec {
        label: "data".into(),
        type_guid: TypeGuid::parse(TypeGuid::LINUX_FS).unwrap(),
        size: PartSize::Rest,
        attributes: Vec::new(),
        filesystem: Filesystem::None,
    };
    let data = noise(len, 0xbad);
    b.add_partition(spec, Some((ContentKind::Raw, &mut &data[..])))
        .unwrap();
    let m = b.finish().unwrap();
    let payload = dir.join("payload");
    let bytes = std::fs::read(&payload).unwrap();
    let info = Info::build("p", &bytes[..], bytes.len() as u64, Some(MAX_BLOCK)).unwrap();
    (m, payload, info)
}

fn seeder(payload: &Path, info: &Info) -> Arc<Seeder> {
    let (info, path) = (info.clone(), payload.to_path_buf());
    let want = info.info_hash();
    let find = move |h: &InfoHash| (*h == want).then(|| (info.clone(), path.clone()));
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    Seeder::start(l, Arc::new(find)).unwrap().0
}

/// A node whose tracker answers nothing (port 9): it knows only the peers
/// that dial it, until the test tells it of the good seeder.
fn node(m: &Manifest, info: &Info) -> TorrentSource {
    let mut o = TorrentOptions::new("http://127.0.0.1:9/announce".parse().unwrap(), b"hostile");
    o.listen = "127.0.0.1:0".parse().unwrap();
    o.memory = 8 << 20;
    o.stall_after = Duration::from_secs(30);
    join(o, m, info.clone(), None).unwrap()
}

/// Dial `to` as peer `[id; 20]` and shake hands for `hash`.
fn dial(to: SocketAddr, hash: InfoHash, id: u8) -> TcpStream {
    let mut s = TcpStream::connect(to).unwrap();
    s.write_all(&Handshake::new(hash, PeerId([id; 20])).encode())
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; HANDSHAKE_LEN];
    s.read_exact(&mut buf).unwrap();
    let h = Handshake::decode(&buf).unwrap().unwrap();
    assert_eq!(h.info_hash, hash);
    s
}

/// Read (and drop) what the other end sends until it closes the
/// connection: true; false if it is still open after `limit`.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

/// Read more of what the other end sends into `fb`, waiting half a
/// second at most; false once it closed the connection.
fn read_more(fb: &mut FrameBuffer, s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    match fb.read_from(s) {
        Ok(n) => n > 0,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => true,
        Err(e) => panic!("reading from the peer: {e}"),
    }
}

fn frame(id: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = (1 + payload.len() as u32).to_be_bytes().to_vec();
    out.push(id);
    out.extend_from_slice(payload);
    out
}

/// The messages of a hostile peer, each on its own connection.
fn hostile_messages(info: &Info) -> Vec<(&'static str, Vec<u8>)> {
    let count = info.piece_count();
    let mut piece0 = 0u32.to_be_bytes().to_vec();
    piece0.extend_from_slice(&0u32.to_be_bytes());
    piece0.extend_from_slice(&noise(info.piece_size(0) as usize, 7));
    vec![
        (
            "a bitfield of 2^30 bytes",
            [&(1u32 + (1 << 30)).to_be_bytes()[..], &[5], &[0xff; 64]].concat(),
        ),
        (
            "a bitfield one byte too long",
            frame(5, &vec![0xff; count.div_ceil(8) as usize + 1]),
        ),
        ("a have past the last piece", frame(4, &count.to_be_bytes())),
        ("a piece never asked for", frame(7, &piece0)),
        ("a 4 GiB length prefix", vec![0xff, 0xff, 0xff, 0xf0, 7]),
    ]
}

#[test]
fn hostile_peers_are_dropped_and_the_node_completes_from_a_good_seeder() {
    let dir = tempfile::tempdir().unwrap();
    let (m, payload, info) = image(dir.path(), 1 << 20);
    let hash = info.info_hash();
    let mut src = node(&m, &info);
    let cases = hostile_messages(&info);
    for (n, (what, bytes)) in cases.iter().enumerate() {
        let mut s = dial(src.listen_addr(), hash, 0x40 + n as u8);
        // The node's first messages (unchoke) may be in flight: a bad
        // message after them, as a peer would.
        std::thread::sleep(Duration::from_millis(50));
        s.write_all(bytes).unwrap();
        assert!(
            closed_within(&mut s, Duration::from_secs(10)),
            "{what}: the node kept the connection"
        );
        eprintln!("{what}: dropped");
    }
    // Each counted as a misbehaving peer; nothing was taken from them.
    let deadline = Instant::now() + Duration::from_secs(5);
    while src.swarm().stats().peers_dropped < cases.len() as u64 {
        assert!(Instant::now() < deadline, "{:?}", src.swarm().stats());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(src.swarm().have_count(), 0);
    assert_eq!(src.swarm().peer_count(), 0);

    // Healthy: a good seeder gets it every chunk.
    let good = seeder(&payload, &info);
    src.swarm().add_known([good.listen_addr()]);
    let mut got = Vec::new();
    for (i, c) in m.chunks.iter().enumerate() {
        got.extend(src.fetch(i, c).unwrap());
    }
    assert!(
        got == std::fs::read(&payload).unwrap(),
        "the payload differs"
    );
    let stats = src.finish(Duration::from_secs(1));
    assert_eq!(stats.peers_dropped, cases.len() as u64, "{stats:?}");
    assert_eq!(stats.bad_pieces, 0, "{stats:?}");
}

#[test]
fn the_seeder_drops_a_peer_sending_it_pieces_or_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let (_, payload, info) = image(dir.path(), 256 << 10);
    let hash = info.info_hash();
    let seed = seeder(&payload, &info);
    for (n, (what, bytes)) in hostile_messages(&info).iter().enumerate() {
        let mut s = dial(seed.listen_addr(), hash, 0x60 + n as u8);
        std::thread::sleep(Duration::from_millis(50));
        s.write_all(bytes).unwrap();
        assert!(
            closed_within(&mut s, Duration::from_secs(10)),
            "{what}: the seeder kept the connection"
        );
    }
    // Still serving: a peer that asks gets a verified piece.
    let mut s = dial(seed.listen_addr(), hash, 0x70);
    s.write_all(&frame(2, &[])).unwrap(); // interested
                                          // The seeder shows pieces a few at a time (super-seeding): ask for
                                          // the first one it shows.
    let mut fb = FrameBuffer::new(Limits::for_info(&info));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut asked = None;
    loop {
        assert!(Instant::now() < deadline, "no piece from the seeder");
        match fb.message().unwrap() {
            Some(Message::Have(i)) if asked.is_none() => {
                let mut r = Vec::new();
                for v in [i, 0, info.piece_size(i)] {
                    r.extend_from_slice(&v.to_be_bytes());
                }
                s.write_all(&frame(6, &r)).unwrap();
                asked = Some(i);
            }
            Some(Message::Piece {
                index,
                begin,
                block,
            }) => {
                assert_eq!((Some(index), begin), (asked, 0));
                let want = std::fs::read(&payload).unwrap();
                let at = info.piece_range(index);
                assert!(block == &want[at.start as usize..at.end as usize]);
                break;
            }
            Some(_) => {}
            None => assert!(
                read_more(&mut fb, &mut s),
                "the seeder closed the connection"
            ),
        }
    }
}

#[test]
fn a_peer_sending_its_bitfield_again_is_kept_and_asked_for_the_new_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _, info) = image(dir.path(), 256 << 10);
    let hash = info.info_hash();
    let src = node(&m, &info);
    let mut s = dial(src.listen_addr(), hash, 0x50);
    let count = info.piece_count();
    let bits = |n: u32| {
        let mut b = Bitfield::new(count);
        for i in 0..n {
            b.set(i);
        }
        frame(5, b.as_wire())
    };
    // Pieces 0-1, unchoked: the node asks for them.
    s.write_all(&bits(2)).unwrap();
    s.write_all(&frame(1, &[])).unwrap();
    let mut fb = FrameBuffer::new(Limits::for_info(&info));
    let mut asked = std::collections::BTreeSet::new();
    let mut resent = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !asked.contains(&3) {
        assert!(
            Instant::now() < deadline,
            "asked for {asked:?} only (bitfield sent again: {resent})"
        );
        match fb.message().unwrap() {
            Some(Message::Request(b)) => {
                assert!(b.index < if resent { 4 } else { 2 }, "asked for {b:?}");
                asked.insert(b.index);
            }
            Some(_) => {}
            None => assert!(read_more(&mut fb, &mut s), "the node closed the connection"),
        }
        if !resent && asked.len() == 2 {
            // Now 0-3, in a bitfield again.
            s.write_all(&bits(4)).unwrap();
            resent = true;
        }
    }
    assert_eq!(src.swarm().peer_count(), 1);
    assert_eq!(src.swarm().stats().peers_dropped, 0);
}

/// A client that batches its haves (transmission: every 10 s) or never
/// sends them still gets every piece from the super-seeding seeder: a
/// piece sent whole counts as had, and the next ones are shown at once.
#[test]
fn the_seeder_shows_more_to_a_peer_that_never_says_have() {
    let dir = tempfile::tempdir().unwrap();
    // More than the seeder shows at once (2 MiB in flight).
    let (_, payload, info) = image(dir.path(), 3 << 20);
    let want = std::fs::read(&payload).unwrap();
    let hash = info.info_hash();
    let seed = seeder(&payload, &info);
    let mut s = dial(seed.listen_addr(), hash, 0x71);
    s.write_all(&frame(2, &[])).unwrap(); // interested
    let count = info.piece_count();
    let mut got = Bitfield::new(count);
    let mut asked = std::collections::HashSet::new();
    let mut fb = FrameBuffer::new(Limits::for_info(&info));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !got.is_full() {
        assert!(
            Instant::now() < deadline,
            "{} of {count} pieces, never saying have",
            got.count()
        );
        match fb.message().unwrap() {
            Some(Message::Have(i)) if asked.insert(i) => {
                let mut r = Vec::new();
                for v in [i, 0, info.piece_size(i)] {
                    r.extend_from_slice(&v.to_be_bytes());
                }
                s.write_all(&frame(6, &r)).unwrap();
            }
            Some(Message::Piece {
                index,
                begin,
                block,
            }) => {
                let at = info.piece_range(index);
                assert_eq!(begin, 0);
                assert!(block == &want[at.start as usize..at.end as usize]);
                got.set(index);
            }
            Some(_) => {}
            None => assert!(
                read_more(&mut fb, &mut s),
                "the seeder closed the connection"
            ),
        }
    }
}
