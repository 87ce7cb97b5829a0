//! Torrent mode end to end through the real programs: `drover-server
//! serve` with an imported image (a few MB), `node add` and `deploy --mode
//! torrent` for three MACs, and three real `drover-agent run` processes
//! (process mode, a file for a disk, the command line of each node's boot
//! entry) deploying at once on loopback. Each must exit 0 with the image's
//! partition on its disk, the fleet must record each success, and the
//! agents' logs must show the payload came from the swarm (the server's
//! seeder and each other), not from the HTTP fallback. On the way, the
//! tracker's answers through the real server: a node's wrong token is
//! refused, a right one gets the seeder listed first.

mod common;
use common::{import_demo, serve, BIN};

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use drover_agent::fetch::Client;
use drover_agent::image::Manifest;
use drover_agent::torrent::metainfo::Metainfo;
use drover_agent::torrent::tracker::{Announce, AnnounceReply, Event, ReplyError};
use drover_agent::torrent::wire::PeerId;

const MACS: [&str; 3] = [
    "52:54:00:7e:00:01",
    "52:54:00:7e:00:02",
    "52:54:00:7e:00:03",
];
const MIB: u64 = 1 << 20;

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

fn ok(config: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .args(["--config", s(config)])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `drover-agent` binary: `$DROVER_AGENT_BIN`, else built now by cargo
/// in this test's profile (once per process; cargo makes it current, so a
/// stale agent is never run).
fn agent_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
            if let Some(bin) = std::env::var_os("DROVER_AGENT_BIN") {
                let bin = root.join(bin);
                assert!(
                    bin.is_file(),
                    "DROVER_AGENT_BIN={} is missing",
                    bin.display()
                );
                return bin;
            }
            // <target>/<profile>/deps/torrent_serve-<hash>
            let exe = std::env::current_exe().unwrap();
            let profile = exe
                .parent()
                .and_then(Path::parent)
                .and_then(Path::file_name)
                .and_then(|p| p.to_str())
                .unwrap_or("debug")
                .to_owned();
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.current_dir(root).args([
                "build",
                "-p",
                "drover-agent",
                "--bin",
                "drover-agent",
                "--message-format=json-render-diagnostics",
            ]);
            match profile.as_str() {
                "debug" => {}
                "release" => {
                    cmd.arg("--release");
                }
                other => {
                    cmd.args(["--profile", other]);
                }
            }
            let out = cmd.output().expect("running cargo");
            assert!(
                out.status.success(),
                "building drover-agent (set DROVER_AGENT_BIN to use a built one): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            const KEY: &str = "\"executable\":\"";
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains("\"reason\":\"compiler-artifact\""))
                .filter_map(|l| {
                    let start = l.find(KEY)? + KEY.len();
                    let end = start + l[start..].find('"')?;
                    Some(PathBuf::from(&l[start..end]))
                })
                .find(|p| p.file_name().is_some_and(|f| f == "drover-agent"))
                .expect("cargo names the drover-agent executable")
        })
        .clone()
}

/// The kernel command line of `mac`'s boot entry (the `kernel URL ARGS`
/// line's ARGS).
fn boot_cmdline(url: &str, mac: &str) -> String {
    let entry = Client::new(url.parse().unwrap())
        .get(&format!("/boot/{mac}.ipxe"), 1 << 16)
        .unwrap();
    let entry = String::from_utf8(entry).unwrap();
    let line = entry
        .lines()
        .find_map(|l| l.strip_prefix("kernel "))
        .unwrap_or_else(|| panic!("no kernel line in {entry}"));
    line.trim()
        .split_once(' ')
        .unwrap_or_else(|| panic!("no arguments in {entry}"))
        .1
        .to_owned()
}

fn token_of(cmdline: &str) -> String {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("deploy.token="))
        .unwrap_or_else(|| panic!("no token in {cmdline}"))
        .to_owned()
}

/// An announce for the torrent `meta` to `path` (a node's or the guest
/// announce URL's path); the raw answer.
fn announce(url: &str, path: &str, meta: &Metainfo, port: u16, left: u64, event: Event) -> Vec<u8> {
    let q = Announce {
        info_hash: meta.info_hash,
        peer_id: PeerId([0x77; 20]),
        port,
        uploaded: 0,
        downloaded: 0,
        left,
        event,
        compact: true,
        numwant: None,
    }
    .to_query();
    Client::new(url.parse().unwrap())
        .get(&format!("{path}?{q}"), 1 << 16)
        .unwrap()
}

/// The first sector of GPT partition 1 on `disk` (the table's own header
/// and entries, read as the GPT specification lays them out).
fn first_partition_offset(disk: &Path) -> u64 {
    let f = std::fs::File::open(disk).unwrap();
    let mut header = [0u8; 92];
    f.read_exact_at(&mut header, 512).unwrap();
    assert_eq!(
        &header[..8],
        b"EFI PART",
        "no GPT header on {}",
        disk.display()
    );
    let entries_lba = u64::from_le_bytes(header[72..80].try_into().unwrap());
    let mut entry = [0u8; 128];
    f.read_exact_at(&mut entry, entries_lba * 512).unwrap();
    let first_lba = u64::from_le_bytes(entry[32..40].try_into().unwrap());
    assert_ne!(first_lba, 0, "partition 1 is empty on {}", disk.display());
    first_lba * 512
}

/// What an agent said when it left the swarm: (MiB downloaded from peers,
/// MiB uploaded to peers, pieces over HTTP).
fn swarm_summary(log: &str) -> (u64, u64, u64) {
    let line = log
        .lines()
        .find_map(|l| l.split("torrent: left the swarm: ").nth(1))
        .unwrap_or_else(|| panic!("the agent never left a swarm:\n{log}"));
    let num = |after: &str| -> u64 {
        line.split(", ")
            .find_map(|part| part.strip_suffix(after))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {after:?} in {line:?}"))
    };
    (
        num(" MiB downloaded"),
        num(" MiB uploaded"),
        num(" pieces over HTTP"),
    )
}

/// An agent process, killed on drop; its output goes to a file.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn three_agents_deploy_in_torrent_mode_through_the_real_server() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("vmlinuz"), b"kernel").unwrap();
    std::fs::write(d.join("initrd.img"), b"initrd").unwrap();
    // 6 MB of noise (incompressible: the payload is as large), in 64 KiB
    // pieces: ~90 pieces to share.
    let mut x = 0x9e37_79b9u32;
    let content: Vec<u8> = (0..6_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let store = import_demo(
        d,
        &content,
        "8M",
        &["--chunk-size", "256K", "--piece-length", "64K"],
    );
    let manifest =
        Manifest::parse(&std::fs::read(store.join("demo/1.0/manifest.json")).unwrap()).unwrap();
    let payload_len = manifest.payload.size;
    assert!(payload_len > 5 * MIB, "payload {payload_len} bytes");

    let port = free_port();
    let seed_port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let config = d.join("server.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\npublic_url = \"{url}\"\nkernel = \"vmlinuz\"\n\
             initrd = \"initrd.img\"\nstore = \"store\"\n[deploy]\non_error = \"poweroff\"\n\
             [torrent]\nannounce_interval = 5\nseed_listen = \"127.0.0.1:{seed_port}\"\n\
             [chain]\nlisten = \"127.0.0.1:0\"\n"
        ),
    )
    .unwrap();
    let agent = agent_bin();
    let _server = serve(&config);

    for mac in MACS {
        ok(&config, &["node", "add", mac]);
    }
    let mut args = vec!["deploy", "--image", "demo", "--mode", "torrent"];
    args.extend(MACS);
    let out = ok(&config, &args);
    assert!(out.contains("mode torrent"), "{out}");
    let cmdlines: Vec<String> = MACS.iter().map(|m| boot_cmdline(&url, m)).collect();
    for c in &cmdlines {
        assert!(c.contains("deploy.mode=torrent"), "{c}");
        assert!(c.contains("deploy.image=demo@1.0"), "{c}");
    }
    let meta = Metainfo::parse(
        &Client::new(url.parse().unwrap())
            .get("/images/demo/1.0/payload.torrent", 1 << 20)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(meta.announce, Some(format!("{url}/announce")));
    assert_eq!(meta.info.length, payload_len);

    // The tracker through the real server: a wrong token is refused, the
    // right one is answered with the seeder first (compact peers).
    let path = |mac: &str, token: &str| format!("/announce/{mac}/{token}");
    let wrong = announce(
        &url,
        &path(MACS[0], "WRONGTOKEN"),
        &meta,
        7,
        payload_len,
        Event::Started,
    );
    match AnnounceReply::parse(&wrong) {
        Err(ReplyError::Failure(f)) => assert!(f.contains("wrong token"), "{f}"),
        other => panic!("a wrong token was answered: {other:?}"),
    }
    let guest = announce(&url, "/announce", &meta, 7, payload_len, Event::Started);
    assert!(
        matches!(AnnounceReply::parse(&guest), Err(ReplyError::Failure(_))),
        "a guest announce was answered by a closed tracker"
    );
    // As the first node (complete: the agents need nothing from it; port 9
    // refuses them at once), then gone again.
    let right = path(MACS[0], &token_of(&cmdlines[0]));
    let r = AnnounceReply::parse(&announce(&url, &right, &meta, 9, 0, Event::Started)).unwrap();
    assert_eq!(
        r.peers.first().map(|p| p.addr),
        Some(SocketAddr::from(([127, 0, 0, 1], seed_port))),
        "the seeder is listed first: {r:?}"
    );
    assert_eq!(r.interval, 5);
    announce(&url, &right, &meta, 9, 0, Event::Stopped);

    // Three agents at once.
    let started = Instant::now();
    let mut agents: Vec<Agent> = MACS
        .iter()
        .zip(&cmdlines)
        .enumerate()
        .map(|(i, (mac, cmdline))| {
            let disk = d.join(format!("disk{i}.img"));
            std::fs::File::create(&disk)
                .unwrap()
                .set_len(16 * MIB)
                .unwrap();
            let log = d.join(format!("agent{i}.log"));
            let out = std::fs::File::create(&log).unwrap();
            let child = Command::new(&agent)
                .args(["run", "--cmdline", cmdline, "--disk", s(&disk)])
                .args(["--key", s(&d.join("keys/drover.pub")), "--mac", mac])
                .args(["--report-deadline", "30", "--server-patience", "30"])
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .unwrap();
            Agent { child, log }
        })
        .collect();
    let mut codes = vec![None; agents.len()];
    while codes.iter().any(Option::is_none) {
        for (i, a) in agents.iter_mut().enumerate() {
            if codes[i].is_none() {
                codes[i] = a.child.try_wait().unwrap().map(|s| s.code());
            }
        }
        if started.elapsed() > Duration::from_secs(240) {
            let logs: Vec<String> = agents
                .iter()
                .map(|a| std::fs::read_to_string(&a.log).unwrap_or_default())
                .collect();
            panic!("agents still running after 240 s: {codes:?}\n{logs:#?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("three agents done in {:.1?}", started.elapsed());

    let mut uploaded = 0;
    for (i, a) in agents.iter().enumerate() {
        let log = std::fs::read_to_string(&a.log).unwrap();
        assert_eq!(codes[i], Some(Some(0)), "agent {i} ({}):\n{log}", MACS[i]);
        assert!(log.contains("deployed demo@1.0 to"), "agent {i}:\n{log}");
        // The partition holds the image's content.
        let disk = d.join(format!("disk{i}.img"));
        let at = first_partition_offset(&disk);
        let mut got = vec![0u8; content.len()];
        std::fs::File::open(&disk)
            .unwrap()
            .read_exact_at(&mut got, at)
            .unwrap();
        assert!(got == content, "agent {i}: the partition differs");
        // From the swarm, not over HTTP.
        let (down, up, over_http) = swarm_summary(&log);
        eprintln!(
            "agent {i}: {down} MiB from peers, {up} MiB to peers, {over_http} pieces over HTTP"
        );
        assert_eq!(over_http, 0, "agent {i} fell back to HTTP:\n{log}");
        assert!(
            down >= payload_len / MIB,
            "agent {i}: {down} MiB from the swarm:\n{log}"
        );
        uploaded += up;
        // The fleet recorded its success.
        let show = ok(&config, &["node", "show", MACS[i]]);
        assert!(show.contains("state: done\n"), "{show}");
        assert!(
            show.contains(&format!("deployed: demo@1.0 {}\n", manifest.payload.sha256)),
            "{show}"
        );
        assert!(show.contains("image: demo@1.0 (mode torrent)\n"), "{show}");
    }
    // The seeder super-seeds: the nodes got much of the payload from each
    // other.
    assert!(uploaded >= 1, "the agents traded nothing");
    let status = Command::new(BIN)
        .args(["status", "--config", s(&config)])
        .output()
        .unwrap();
    assert_eq!(
        status.status.code(),
        Some(0),
        "status: nothing in progress, nothing failed:\n{}",
        String::from_utf8_lossy(&status.stdout)
    );
}
