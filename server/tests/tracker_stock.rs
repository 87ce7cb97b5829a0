//! The real server's torrent and tracker with stock BitTorrent clients
//! (Debian's aria2, python3-libtorrent, transmission-cli; `make setup`
//! installs them), on loopback, with `[torrent] open = true` (stock
//! clients have no node token):
//!
//! - the served `payload.torrent` reads the same in transmission-show and
//!   libtorrent as in drover, announce = this server;
//! - the tracker's bencoded answers (peers, scrape, failure) decode with
//!   libtorrent's own `bdecode`;
//! - aria2c announces and the tracker lists it to others;
//! - libtorrent seeds the payload and aria2c downloads it through
//!   drover's tracker, byte for byte (drover's own seeder comes next).
//!
//! A missing tool skips its part with a printed reason.

mod common;
use common::serve;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use drover_agent::torrent::metainfo::Metainfo;
use drover_agent::torrent::tracker::{parse_scrape, Announce, AnnounceReply, Event, ReplyError};
use drover_agent::torrent::wire::PeerId;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("SKIP: {tool} is not installed (apt-get install it, or run `make setup`)");
    }
    found
}

/// Debian's python3 with python3-libtorrent (a pyenv `python3` first in
/// PATH would not see it).
fn libtorrent_python() -> Option<PathBuf> {
    for py in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(py)
            .args(["-c", "import libtorrent"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(py.into());
        }
    }
    eprintln!("SKIP: no python3 can import libtorrent (apt-get install python3-libtorrent)");
    None
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` over a fresh connection; the body.
fn get(addr: SocketAddr, path: &str) -> Vec<u8> {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    c.read_to_end(&mut all)
        .unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"));
    let at = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&all[..at]);
    assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
    all[at + 4..].to_vec()
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

struct Lab {
    dir: tempfile::TempDir,
    _server: common::Server,
    addr: SocketAddr,
    payload: PathBuf,
    torrent: PathBuf,
    meta: Metainfo,
}

/// A server with an open tracker and demo@1.0 (a 2 MB payload).
fn lab() -> Lab {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut x = 0x2545_f491u32;
    let raw: Vec<u8> = (0..2_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    std::fs::write(d.join("vmlinuz"), b"K").unwrap();
    let store = common::import_demo(d, &raw, "4M", &[]);
    let port = free_port();
    let config = d.join("server.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
             kernel = \"vmlinuz\"\ninitrd = \"vmlinuz\"\nstore = \"store\"\n\
             [deploy]\non_error = \"poweroff\"\n[torrent]\nopen = true\nannounce_interval = 5\n\
             [chain]\nlisten = \"127.0.0.1:0\"\n"
        ),
    )
    .unwrap();
    // (The chain head's port too is ephemeral: tests run in parallel.)
    let server = serve(&config);
    let addr = server.addr;
    let bytes = get(addr, "/images/demo/1.0/payload.torrent");
    let meta = Metainfo::parse(&bytes).unwrap();
    let torrent = d.join("served.torrent");
    std::fs::write(&torrent, &bytes).unwrap();
    Lab {
        payload: store.join("demo/1.0/payload"),
        dir,
        _server: server,
        addr,
        torrent,
        meta,
    }
}

impl Lab {
    /// Announce as a guest with our own client code, as peer `[id; 20]`.
    fn announce(&self, id: u8, port: u16, left: u64, event: Event) -> Vec<u8> {
        let q = Announce {
            info_hash: self.meta.info_hash,
            peer_id: PeerId([id; 20]),
            port,
            uploaded: 0,
            downloaded: 0,
            left,
            event,
            compact: true,
            numwant: None,
        }
        .to_query();
        get(self.addr, &format!("/announce?{q}"))
    }
}

#[test]
fn stock_clients_read_the_torrent_and_the_answers() {
    let l = lab();
    assert_eq!(
        l.meta.announce,
        Some(format!("http://{}/announce", l.addr)),
        "announce = this server's public_url"
    );
    assert_eq!(l.meta.info.name, "demo-1.0.payload");
    if have("transmission-show") {
        let out = Command::new("transmission-show")
            .arg(&l.torrent)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.contains(&format!("Hash: {}", l.meta.info_hash)),
            "{out}"
        );
        assert!(
            out.contains(&format!("http://{}/announce", l.addr)),
            "{out}"
        );
    }
    let Some(py) = libtorrent_python() else {
        return;
    };
    // Three answers: peers (compact), a scrape, a failure.
    let answers = l.dir.path().join("answers");
    std::fs::create_dir_all(&answers).unwrap();
    std::fs::write(
        answers.join("announce"),
        l.announce(1, 7777, 0, Event::Started),
    )
    .unwrap();
    std::fs::write(
        answers.join("announce2"),
        l.announce(2, 7778, 10, Event::Started),
    )
    .unwrap();
    std::fs::write(answers.join("scrape"), get(l.addr, "/scrape")).unwrap();
    std::fs::write(
        answers.join("failure"),
        get(l.addr, "/announce?info_hash=x"),
    )
    .unwrap();
    let script = r#"
import sys, os, libtorrent as lt
ti = lt.torrent_info(sys.argv[1])
print(str(ti.info_hash()), ti.num_pieces(), next(iter(ti.trackers())).url)
d = sys.argv[2]
a = lt.bdecode(open(os.path.join(d, 'announce2'), 'rb').read())
print(a[b'interval'], a[b'complete'], a[b'incomplete'], len(a[b'peers']))
sc = lt.bdecode(open(os.path.join(d, 'scrape'), 'rb').read())
for h, v in sc[b'files'].items():
    print(h.hex(), v[b'complete'], v[b'incomplete'], v[b'downloaded'])
f = lt.bdecode(open(os.path.join(d, 'failure'), 'rb').read())
print(f[b'failure reason'].decode())
"#;
    let out = Command::new(&py)
        .args(["-c", script])
        .arg(&l.torrent)
        .arg(&answers)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "{} {} http://{}/announce",
            l.meta.info_hash,
            l.meta.info.piece_count(),
            l.addr
        )
    );
    // Two seeders listed to the leecher, 6 compact bytes each: the
    // announced one (7777) and the server's own seeder, counted complete.
    assert_eq!(lines[1], "5 2 1 12");
    assert_eq!(lines[2], format!("{} 1 1 0", l.meta.info_hash));
    assert!(
        lines[3].starts_with("bad announce: info_hash is 1 bytes"),
        "{}",
        lines[3]
    );
}

#[test]
fn aria2c_is_listed_and_downloads_from_a_libtorrent_seed_through_the_tracker() {
    if !have("aria2c") {
        return;
    }
    let l = lab();
    let d = l.dir.path();
    let aria2 = |dir: &str, port: u16| {
        Command::new("aria2c")
            .args([
                "--dir",
                s(&d.join(dir)),
                "--seed-time=0",
                "--enable-dht=false",
                "--bt-enable-lpd=false",
                "--summary-interval=0",
                "--console-log-level=warn",
                "--bt-tracker-interval=2",
            ])
            .arg(format!("--listen-port={port}"))
            .arg(&l.torrent)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };

    // Alone, aria2c waits for peers; the tracker lists it to others.
    let port = free_port();
    let waiting = Proc(aria2("wait", port));
    wait_until(
        "aria2c listed by the tracker",
        Duration::from_secs(30),
        || match AnnounceReply::parse(&l.announce(3, 7000, 0, Event::None)) {
            Ok(r) => r.peers.iter().any(|p| p.addr.port() == port),
            Err(ReplyError::Failure(f)) => panic!("refused: {f}"),
            Err(e) => panic!("{e}"),
        },
    );
    let files = parse_scrape(&get(l.addr, "/scrape")).unwrap();
    assert_eq!(files[0].1.incomplete, 1, "{files:?}");
    drop(waiting);
    l.announce(3, 7000, 0, Event::Stopped);

    let Some(py) = libtorrent_python() else {
        return;
    };
    // libtorrent seeds the payload file under the torrent's name.
    let seed_dir = d.join("seed");
    std::fs::create_dir_all(&seed_dir).unwrap();
    std::fs::copy(&l.payload, seed_dir.join("demo-1.0.payload")).unwrap();
    let seed_port = free_port();
    let script = r#"
import sys, time, libtorrent as lt
s = lt.session({'listen_interfaces': '127.0.0.1:' + sys.argv[3], 'enable_dht': False,
                'enable_lsd': False, 'enable_upnp': False, 'enable_natpmp': False})
h = s.add_torrent({'ti': lt.torrent_info(sys.argv[1]), 'save_path': sys.argv[2]})
while True:
    time.sleep(0.5)
"#;
    let _seed = Proc(
        Command::new(&py)
            .args(["-c", script])
            .arg(&l.torrent)
            .arg(&seed_dir)
            .arg(seed_port.to_string())
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until(
        "the libtorrent seed's announce",
        Duration::from_secs(30),
        || {
            parse_scrape(&get(l.addr, "/scrape"))
                .unwrap()
                .first()
                .is_some_and(|(_, st)| st.complete >= 1)
        },
    );
    let mut leecher = Proc(aria2("dl", free_port()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = leecher.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "aria2c did not finish"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(status.success(), "aria2c: {status}");
    let got = std::fs::read(d.join("dl/demo-1.0.payload")).unwrap();
    assert!(
        got == std::fs::read(&l.payload).unwrap(),
        "downloaded payload differs"
    );
    eprintln!(
        "aria2c downloaded {} bytes via drover's tracker in {:.1?}",
        got.len(),
        start.elapsed()
    );
}
