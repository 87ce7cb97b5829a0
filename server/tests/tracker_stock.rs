//! The real server's torrent, tracker and seeder with stock BitTorrent
//! clients (Debian's aria2, python3-libtorrent, transmission-cli; `make
//! setup` installs them), on loopback, with `[torrent] open = true`
//! (stock clients have no node token):
//!
//! - the served `payload.torrent` reads the same in transmission-show and
//!   libtorrent as in drover, announce = this server;
//! - the tracker's bencoded answers (peers, scrape, failure) decode with
//!   libtorrent's own `bdecode`;
//! - aria2c announces and the tracker lists it to others;
//! - libtorrent seeds the payload and aria2c downloads it through
//!   drover's tracker, byte for byte;
//! - aria2c, libtorrent and transmission-cli each download the payload
//!   from drover's own seeder (the only seed), byte for byte.
//!
//! A missing tool fails the test under CI (`CI` set: CI runs `make setup`
//! first), and elsewhere skips its part with a printed reason.

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
    missing("no python3 can import libtorrent (apt-get install python3-libtorrent)");
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

/// `len` pseudo-random bytes (incompressible: the payload is as large).
fn common_noise(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491u32;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A server with an open tracker, its seeder and demo@1.0 (a 2 MB payload).
fn lab() -> Lab {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = common_noise(2_000_000);
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
             seed_listen = \"127.0.0.1:0\"\n[chain]\nlisten = \"127.0.0.1:0\"\n"
        ),
    )
    .unwrap();
    // (The seeder's and the chain head's ports too are ephemeral: tests
    // run in parallel, and 6881, the seeder's default, may be taken.)
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

/// Wait for `p` to exit, at most `limit`; its status.
fn wait_exit(p: &mut Proc, what: &str, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = p.0.try_wait().unwrap() {
            return status;
        }
        assert!(
            start.elapsed() < limit,
            "{what} did not finish in {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Lab {
    /// Where the tracker lists drover's seeder (first in every answer).
    fn seeder(&self) -> SocketAddr {
        let r = AnnounceReply::parse(&self.announce(9, 9, 1, Event::None)).unwrap();
        self.announce(9, 9, 1, Event::Stopped);
        r.peers.first().expect("the seeder is listed").addr
    }

    /// `dir/demo-1.0.payload` is the payload, byte for byte.
    fn check_download(&self, dir: &Path, who: &str) {
        let got = std::fs::read(dir.join("demo-1.0.payload"))
            .unwrap_or_else(|e| panic!("{who} left no payload file: {e}"));
        assert!(
            got == std::fs::read(&self.payload).unwrap(),
            "{who}: the downloaded payload differs"
        );
    }
}

#[test]
fn aria2c_downloads_the_payload_from_drovers_seeder() {
    if !have("aria2c") {
        return;
    }
    let l = lab();
    let seeder = l.seeder();
    let dir = l.dir.path().join("aria2c");
    let start = Instant::now();
    let mut p = Proc(
        Command::new("aria2c")
            .args([
                "--dir",
                s(&dir),
                "--seed-time=0",
                "--enable-dht=false",
                "--enable-dht6=false",
                "--bt-enable-lpd=false",
                "--enable-peer-exchange=false",
                "--summary-interval=0",
                "--console-log-level=warn",
            ])
            .arg(format!("--listen-port={}", free_port()))
            .arg(&l.torrent)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let status = wait_exit(&mut p, "aria2c", Duration::from_secs(120));
    assert!(status.success(), "aria2c: {status}");
    l.check_download(&dir, "aria2c");
    eprintln!(
        "aria2c downloaded the payload from drover's seeder ({seeder}) in {:.1?}",
        start.elapsed()
    );
}

#[test]
fn libtorrent_downloads_the_payload_from_drovers_seeder() {
    let Some(py) = libtorrent_python() else {
        return;
    };
    let l = lab();
    let seeder = l.seeder();
    let dir = l.dir.path().join("libtorrent");
    std::fs::create_dir_all(&dir).unwrap();
    // Until the torrent is complete (libtorrent checks every piece's
    // SHA-1 as it arrives); the payload bytes it downloaded. drover's
    // seeder is the only peer the tracker lists.
    let script = r#"
import sys, time, libtorrent as lt
s = lt.session({'listen_interfaces': '127.0.0.1:' + sys.argv[3], 'enable_dht': False,
                'enable_lsd': False, 'enable_upnp': False, 'enable_natpmp': False})
h = s.add_torrent({'ti': lt.torrent_info(sys.argv[1]), 'save_path': sys.argv[2]})
deadline = time.time() + 100
while not h.status().is_seeding:
    if time.time() > deadline:
        st = h.status()
        sys.exit('not complete: %s %.2f %s' % (st.state, st.progress, st.errc.message()))
    time.sleep(0.2)
print(h.status().total_payload_download)
"#;
    let start = Instant::now();
    let out = Command::new(&py)
        .args(["-c", script])
        .arg(&l.torrent)
        .arg(&dir)
        .arg(free_port().to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "libtorrent: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    l.check_download(&dir, "libtorrent");
    let bytes: u64 = stdout.trim().parse().unwrap();
    assert!(bytes >= l.meta.info.length, "{bytes} bytes downloaded");
    eprintln!(
        "libtorrent downloaded {bytes} bytes from drover's seeder ({seeder}) in {:.1?}",
        start.elapsed()
    );
}

/// The last lines of a log that redraws its line with `\r`.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text
        .split(['\r', '\n'])
        .filter(|l| !l.trim().is_empty())
        .collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// A private network namespace (`unshare --net`, root only) whose
/// loopback also answers at [`NETNS_IP`]; processes join it with
/// `nsenter`. It ends with this value (`--kill-child`).
struct Netns {
    holder: Proc,
    pid: String,
}

/// The namespace's own address: not 127/8, which transmission will not
/// take a peer from (a "martian" to it), and reachable from nowhere else.
const NETNS_IP: &str = "10.213.0.1";

impl Netns {
    fn new() -> Option<Netns> {
        let mut child = Command::new("unshare")
            .args(["--net", "--fork", "--kill-child", "sh", "-c"])
            .arg(format!(
                "ip link set lo up && ip addr add {NETNS_IP}/32 dev lo && echo $$ && exec sleep 600"
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        let mut out = child.stdout.take().unwrap();
        let mut holder = Proc(child);
        let mut pid = String::new();
        let mut b = [0u8; 1];
        while out.read(&mut b).ok()? == 1 && b[0] != b'\n' {
            pid.push(b[0] as char);
        }
        if pid.trim().parse::<u32>().is_err() {
            let _ = holder.0.kill();
            let mut err = String::new();
            let _ = holder.0.stderr.take().unwrap().read_to_string(&mut err);
            missing(&format!(
                "no private network namespace (needs root, unshare and ip): {}",
                err.trim()
            ));
            return None;
        }
        Some(Netns {
            holder,
            pid: pid.trim().to_owned(),
        })
    }

    /// `program` to run inside the namespace.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let _ = &self.holder;
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.pid, "-n"]).arg(program);
        c
    }
}

/// transmission-cli takes no peer on 127/8, so this lab is a private
/// network namespace of its own (root, as `make test` is): the server
/// and transmission-cli run in it, at [`NETNS_IP`].
#[test]
fn transmission_downloads_the_payload_from_drovers_seeder() {
    if !have("transmission-cli") {
        return;
    }
    let Some(ns) = Netns::new() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = common_noise(2_000_000);
    std::fs::write(d.join("vmlinuz"), b"K").unwrap();
    // 256 KiB pieces: the seeder shows a peer 4 pieces at a time, and
    // transmission asks for what it was shown about once a second; with
    // 16 KiB pieces that is 64 KiB/s (a deployment's pieces are larger,
    // and drover's nodes ask at once).
    let store = common::import_demo(d, &raw, "4M", &["--piece-length", "256K"]);
    let url = format!("http://{NETNS_IP}:8080");
    let config = d.join("server.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{NETNS_IP}:8080\"\npublic_url = \"{url}\"\n\
             kernel = \"vmlinuz\"\ninitrd = \"vmlinuz\"\nstore = \"store\"\n\
             [deploy]\non_error = \"poweroff\"\n[torrent]\nopen = true\nannounce_interval = 5\n\
             seed_listen = \"{NETNS_IP}:6881\"\n[chain]\nlisten = \"{NETNS_IP}:7150\"\n"
        ),
    )
    .unwrap();
    let server_log = d.join("server.log");
    let mut server = Proc(
        ns.command(common::BIN)
            .args(["serve", "--config", s(&config)])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&server_log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_until(
        "the server in the namespace",
        Duration::from_secs(30),
        || {
            if let Some(status) = server.0.try_wait().unwrap() {
                panic!("the server exited ({status}): {}", tail(&server_log));
            }
            std::fs::read_to_string(&server_log)
                .unwrap_or_default()
                .contains("torrent seeder on")
        },
    );
    // The stored torrent with the announce URL the server would add.
    let torrent = d.join("served.torrent");
    let stored = std::fs::read(store.join("demo/1.0/payload.torrent")).unwrap();
    let served =
        drover_agent::torrent::metainfo::with_announce(&stored, &format!("{url}/announce"))
            .unwrap();
    std::fs::write(&torrent, served).unwrap();

    let dl = d.join("transmission");
    let tconfig = d.join("transmission-config");
    std::fs::create_dir_all(&dl).unwrap();
    std::fs::create_dir_all(&tconfig).unwrap();
    // Nothing but the tracker: no DHT, local peer discovery, PEX or uTP.
    std::fs::write(
        tconfig.join("settings.json"),
        r#"{"dht-enabled": false, "lpd-enabled": false, "pex-enabled": false,
            "utp-enabled": false, "port-forwarding-enabled": false,
            "rpc-enabled": false, "speed-limit-up-enabled": false}"#,
    )
    .unwrap();
    // transmission-cli seeds forever once done: its finish script says
    // when, and the test ends it.
    let done = d.join("transmission.done");
    let script = d.join("finished.sh");
    std::fs::write(&script, format!("#!/bin/sh\ntouch '{}'\n", s(&done))).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let log = d.join("transmission.log");
    let start = Instant::now();
    let mut p = Proc(
        ns.command("transmission-cli")
            .args([
                "-g",
                s(&tconfig),
                "-w",
                s(&dl),
                "-M",
                "-et",
                "-f",
                s(&script),
            ])
            .args(["-p", "51413"])
            .arg(&torrent)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    while !done.exists() {
        if let Some(status) = p.0.try_wait().unwrap() {
            panic!(
                "transmission-cli exited ({status}) before finishing:\n{}",
                tail(&log)
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "transmission-cli did not finish in 120 s:\n{}\nthe server's warnings:\n{}",
            tail(&log),
            std::fs::read_to_string(&server_log)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("WARN"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let got = std::fs::read(dl.join("demo-1.0.payload")).unwrap();
    assert!(
        got == std::fs::read(store.join("demo/1.0/payload")).unwrap(),
        "transmission-cli: the downloaded payload differs"
    );
    eprintln!(
        "transmission-cli downloaded the payload from drover's seeder ({NETNS_IP}:6881) in {:.1?}",
        start.elapsed()
    );
}
