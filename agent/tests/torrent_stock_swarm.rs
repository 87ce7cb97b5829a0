//! drover's node in a swarm made of stock parts: Debian's opentracker as
//! the tracker and libtorrent (python3-libtorrent) as the only seed. The
//! node ([`TorrentSource`], no HTTP fallback) announces to opentracker,
//! dials the libtorrent seed it is told of, and gets every chunk of the
//! payload, verified against the signed manifest; the bytes match.
//!
//! `make setup` installs both. A missing one fails the test under CI
//! (`CI` set: CI runs `make setup` first), and elsewhere skips it with a
//! printed reason. Debian's opentracker serves whitelisted info-hashes
//! only, and drops root for user nobody (chrooted to its directory): the
//! test writes it a config and a whitelist nobody can read.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use drover_agent::image::{
    BuildOptions, ChunkSource, ContentKind, Filesystem, ImageBuilder, Manifest, PartSize, PartSpec,
    TypeGuid,
};
use drover_agent::torrent::metainfo::{Info, Metainfo};
use drover_agent::torrent::tracker::parse_scrape;
use drover_agent::torrent::{join, TorrentOptions};

/// Under CI every tool must be there (`.ci/run` runs `make setup`): a
/// missing one fails the test rather than passing it unseen.
fn missing(what: &str) {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(!ci, "{what} (CI is set: `make setup` installs it)");
    eprintln!("SKIP: {what}");
}

fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        missing(&format!(
            "{tool} is not installed (apt-get install it, or run `make setup`)"
        ));
    }
    found
}

/// Debian's python3, which python3-libtorrent belongs to (a pyenv
/// `python3` first in PATH would not see it).
fn python_with_libtorrent() -> Option<PathBuf> {
    for py in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(py)
            .args(["-c", "import libtorrent"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(py.into());
        }
    }
    missing("no python3 can import libtorrent (apt-get install python3-libtorrent)");
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` from `addr` over a fresh connection: the body (any status).
fn get(addr: SocketAddr, path: &str) -> Option<Vec<u8>> {
    let mut c = TcpStream::connect(addr).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut all = Vec::new();
    c.read_to_end(&mut all).ok()?;
    let at = all.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some(all[at + 4..].to_vec())
}

/// Pseudo-random bytes (incompressible, so the payload is as large).
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

/// An image of one raw partition of `len` bytes in 256 KiB chunks.
fn image(dir: &Path, len: usize) -> (Manifest, PathBuf) {
    let opts = BuildOptions {
        chunk_size: 256 << 10,
        level: 1,
        threads: 2,
    };
    let mut b = ImageBuilder::new(dir, "stock", "1", opts).unwrap();
    let spec = PartSpec {
        label: "data".into(),
        type_guid: TypeGuid::parse(TypeGuid::LINUX_FS).unwrap(),
        size: PartSize::Rest,
        attributes: Vec::new(),
        filesystem: Filesystem::None,
    };
    let data = noise(len, 0x0917);
    b.add_partition(spec, Some((ContentKind::Raw, &mut &data[..])))
        .unwrap();
    (b.finish().unwrap(), dir.join("payload"))
}

#[test]
fn a_drover_node_downloads_from_a_libtorrent_seed_through_opentracker() {
    if !have("opentracker") {
        return;
    }
    let Some(py) = python_with_libtorrent() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (manifest, payload) = image(d, 3 << 20);
    let bytes = std::fs::read(&payload).unwrap();
    // The torrent, as `image import` would make it (64 KiB pieces), with
    // opentracker's announce URL.
    let tracker_port = free_port();
    let tracker = SocketAddr::from(([127, 0, 0, 1], tracker_port));
    let announce = format!("http://{tracker}/announce");
    let info = Info::build(
        "stock-1.payload",
        &bytes[..],
        bytes.len() as u64,
        Some(64 << 10),
    )
    .unwrap();
    let torrent = d.join("stock.torrent");
    std::fs::write(
        &torrent,
        Metainfo::new(info.clone(), Some(announce.clone())).to_bytes(),
    )
    .unwrap();

    // opentracker: this torrent whitelisted; chrooted to its directory as
    // user nobody, so the directory and the list are world-readable.
    let ot = d.join("opentracker");
    std::fs::create_dir_all(&ot).unwrap();
    std::fs::write(ot.join("whitelist.txt"), format!("{}\n", info.info_hash())).unwrap();
    std::fs::write(
        ot.join("opentracker.conf"),
        format!(
            "listen.tcp {tracker}\naccess.whitelist /whitelist.txt\ntracker.rootdir {}\n",
            ot.display()
        ),
    )
    .unwrap();
    for p in [d, ot.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(
        ot.join("whitelist.txt"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let ot_log = d.join("opentracker.log");
    let mut opentracker = Proc(
        Command::new("opentracker")
            .arg("-f")
            .arg(ot.join("opentracker.conf"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&ot_log).unwrap())
            .stderr(std::fs::File::create(d.join("opentracker.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    let scrape = format!(
        "/scrape?info_hash={}",
        info.info_hash()
            .0
            .iter()
            .map(|b| format!("%{b:02x}"))
            .collect::<String>()
    );
    // (complete, incomplete) as opentracker counts them.
    let counts = || {
        let body = get(tracker, &scrape)?;
        let files = parse_scrape(&body).ok()?;
        files
            .iter()
            .find(|(h, _)| *h == info.info_hash())
            .map(|(_, st)| (st.complete, st.incomplete))
    };
    let wait = |what: &str, limit: Duration, f: &dyn Fn() -> bool| {
        let start = Instant::now();
        while !f() {
            assert!(start.elapsed() < limit, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    // (It lists a torrent in a scrape only once someone announced it.)
    wait("opentracker to answer", Duration::from_secs(10), &|| {
        get(tracker, &scrape).is_some_and(|b| parse_scrape(&b).is_ok())
    });
    assert!(
        opentracker.0.try_wait().unwrap().is_none(),
        "opentracker exited"
    );

    // libtorrent seeds the payload under the torrent's name. opentracker
    // lists a peer its own address too, and libtorrent bans the address
    // it found itself at: keyed by IP alone (the default) that would be
    // 127.0.0.1, the node's too, so peers are told apart by port.
    let seed_dir = d.join("seed");
    std::fs::create_dir_all(&seed_dir).unwrap();
    std::fs::copy(&payload, seed_dir.join("stock-1.payload")).unwrap();
    let script = r#"
import sys, time, libtorrent as lt
s = lt.session({'listen_interfaces': '127.0.0.1:' + sys.argv[3], 'enable_dht': False,
                'enable_lsd': False, 'enable_upnp': False, 'enable_natpmp': False,
                'allow_multiple_connections_per_ip': True})
h = s.add_torrent({'ti': lt.torrent_info(sys.argv[1]), 'save_path': sys.argv[2]})
while True:
    st = h.status()
    print('%s %d %d' % (st.state, st.num_peers, st.total_payload_upload), flush=True)
    time.sleep(0.5)
"#;
    let seed_log = d.join("seed.log");
    let _seed = Proc(
        Command::new(&py)
            .args(["-c", script])
            .arg(&torrent)
            .arg(&seed_dir)
            .arg(free_port().to_string())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&seed_log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait(
        "the libtorrent seed's announce to opentracker",
        Duration::from_secs(30),
        &|| counts().is_some_and(|(complete, _)| complete >= 1),
    );

    // drover's node, with opentracker as its tracker and no fallback.
    let mut o = TorrentOptions::new(announce.parse().unwrap(), b"stock-swarm");
    o.listen = "127.0.0.1:0".parse().unwrap();
    o.memory = 8 << 20;
    o.stall_after = Duration::from_secs(60);
    let start = Instant::now();
    let mut src = join(o, &manifest, info.clone(), None).unwrap();
    let mut got = Vec::with_capacity(bytes.len());
    for (i, c) in manifest.chunks.iter().enumerate() {
        got.extend(src.fetch(i, c).unwrap());
    }
    let took = start.elapsed();
    assert!(got == bytes, "the payload from the swarm differs");
    // opentracker heard the node too: a second peer, now complete.
    wait(
        "the node's completed announce",
        Duration::from_secs(10),
        &|| counts().is_some_and(|(complete, _)| complete >= 2),
    );
    let stats = src.finish(Duration::from_secs(1));
    assert_eq!(stats.fallback_pieces, 0, "{stats:?}");
    assert_eq!(stats.bad_pieces, 0, "{stats:?}");
    assert!(stats.downloaded >= bytes.len() as u64, "{stats:?}");
    // Every byte came from libtorrent, as it says itself (its status line,
    // every half second: state, peers, payload bytes uploaded).
    let uploaded = || -> u64 {
        std::fs::read_to_string(&seed_log)
            .unwrap_or_default()
            .lines()
            .last()
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    wait(
        "libtorrent's upload count",
        Duration::from_secs(10),
        &|| uploaded() >= bytes.len() as u64,
    );
    let uploaded = uploaded();
    eprintln!(
        "drover's node got {} bytes from the libtorrent seed via opentracker in {took:.1?} \
         (libtorrent reports {uploaded} bytes uploaded)",
        bytes.len()
    );
}
