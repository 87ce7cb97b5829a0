//! Chain mode through the real `drover-server serve`: the deploy opens the
//! session expecting its nodes, nodes authenticate with the tokens of
//! their boot entries, the head streams from the store, a node that joins
//! and falls silent is bypassed and recorded failed in the fleet, and
//! `chain status`/`chain start` show and start sessions. The nodes are the
//! agent's own chain library on loopback (`deploy_source`), one thread
//! each; the VM tests run the same in QEMU.

mod common;
use common::{import_demo, serve, BIN};

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use drover_agent::chain::api::{Join, JOIN_PATH};
use drover_agent::chain::{deploy_source, ChainOptions, RelayConfig};
use drover_agent::fetch::Client;
use drover_agent::image::{ChunkSource, Manifest};
use kernel_cmdline::MacAddr;

const MACS: [&str; 3] = [
    "52:54:00:aa:00:01",
    "52:54:00:aa:00:02",
    "52:54:00:aa:00:03",
];

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn cli(config: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .args(["--config", s(config)])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(config: &Path, args: &[&str]) -> String {
    let (code, out, err) = cli(config, args);
    assert_eq!(code, Some(0), "{args:?}:\n{out}\n{err}");
    out
}

/// The `deploy.token=` of `mac`'s boot entry.
fn token(url: &str, mac: &str) -> String {
    let entry = Client::new(url.parse().unwrap())
        .get(&format!("/boot/{mac}.ipxe"), 1 << 16)
        .unwrap();
    let entry = String::from_utf8(entry).unwrap();
    assert!(entry.contains("deploy.mode=chain"), "{entry}");
    entry
        .split_whitespace()
        .find_map(|w| w.strip_prefix("deploy.token="))
        .unwrap_or_else(|| panic!("no token in {entry}"))
        .to_owned()
}

/// An imported image (3 MB in 256 KiB chunks) and a chain-mode config on
/// a free loopback port: (config, url, manifest, payload).
fn setup(dir: &Path) -> (PathBuf, String, Arc<Manifest>, Vec<u8>) {
    std::fs::write(dir.join("vmlinuz"), b"kernel").unwrap();
    std::fs::write(dir.join("initrd.img"), b"initrd").unwrap();
    // Incompressible content in small chunks: a stream of many frames.
    let bytes: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let store = import_demo(dir, &bytes, "4M", &["--chunk-size", "256K"]);
    let manifest = Arc::new(
        Manifest::parse(&std::fs::read(store.join("demo/1.0/manifest.json")).unwrap()).unwrap(),
    );
    let payload = std::fs::read(store.join("demo/1.0/payload")).unwrap();
    assert!(
        manifest.chunks.len() >= 8,
        "{} chunks",
        manifest.chunks.len()
    );

    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let config = dir.join("server.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\npublic_url = \"{url}\"\nkernel = \"vmlinuz\"\n\
             initrd = \"initrd.img\"\nstore = \"store\"\n[deploy]\nmode = \"chain\"\n\
             [chain]\nlisten = \"127.0.0.1:0\"\nheartbeat = 1\ndead_after = 3\njoin_timeout = 60\n"
        ),
    )
    .unwrap();
    (config, url, manifest, payload)
}

/// A join by hand, as a node that never listens nor heartbeats; the status.
fn join(url: &str, mac: &str, token: &str) -> u16 {
    let mut c = Client::new(url.parse().unwrap());
    c.token = Some(token.to_owned());
    let body = serde_json::to_vec(&Join {
        session: "demo@1.0".into(),
        mac: mac.into(),
        listen: "127.0.0.1:9".into(),
        next: 0,
    })
    .unwrap();
    c.post_json(JOIN_PATH, &body, 1 << 16).unwrap().head.status
}

#[test]
fn chain_session_through_the_real_server() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, url, manifest, payload) = setup(tmp.path());
    let _server = serve(&config);

    for mac in MACS {
        ok(&config, &["node", "add", mac]);
    }
    let mut args = vec!["deploy", "--image", "demo"];
    args.extend(MACS);
    ok(&config, &args);
    let out = ok(&config, &["chain", "status", "demo@1.0"]);
    assert!(
        out.starts_with("session demo@1.0: waiting for nodes, 0 nodes in a chain"),
        "{out}"
    );

    // A wrong token is refused.
    let join = |mac: &str, token: &str| join(&url, mac, token);
    assert_eq!(join(MACS[2], "not-its-token"), 401);
    // The third node joins first (so it would feed the others) and then
    // falls silent: it listens nowhere and never heartbeats.
    assert_eq!(join(MACS[2], &token(&url, MACS[2])), 200);

    // The other two are real chain nodes; the session starts when they
    // have joined (3 expected).
    let started = Instant::now();
    let nodes: Vec<_> = MACS[..2]
        .iter()
        .map(|mac| {
            let mut opts = ChainOptions::new(
                vec![url.parse().unwrap()],
                Some(token(&url, mac)),
                mac.parse::<MacAddr>().unwrap(),
            );
            opts.listen = SocketAddr::from(([127, 0, 0, 1], 0));
            opts.relay = RelayConfig {
                connect_timeout: Duration::from_secs(2),
                ..RelayConfig::default()
            };
            let manifest = manifest.clone();
            std::thread::spawn(move || {
                let mut src = deploy_source(opts, manifest.clone(), None).unwrap();
                let mut got = Vec::new();
                for (i, c) in manifest.chunks.iter().enumerate() {
                    got.extend(src.fetch(i, c).unwrap());
                }
                let stats = src.finish(Duration::from_secs(10));
                (got, stats)
            })
        })
        .collect();
    for (i, n) in nodes.into_iter().enumerate() {
        let (got, stats) = n.join().unwrap();
        assert!(got == payload, "node {i}: the payload it received differs");
        assert_eq!(stats.fallback, None, "node {i}: fed by the chain");
    }
    eprintln!("two nodes through the chain in {:?}", started.elapsed());

    // The silent node: out of the chain, and failed in the fleet.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let show = ok(&config, &["node", "show", MACS[2]]);
        if show.contains("state: failed") {
            assert!(
                show.contains("chain session demo@1.0: failed: no heartbeat for 3s"),
                "{show}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not failed in the fleet:\n{show}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = ok(&config, &["chain", "status", "demo@1.0"]);
    assert!(out.contains("session demo@1.0: started, 3 nodes"), "{out}");
    let row = |mac: &str| out.lines().find(|l| l.contains(mac)).unwrap().to_owned();
    assert!(row(MACS[2]).contains("failed"), "{out}");
    for mac in &MACS[..2] {
        assert!(row(mac).contains("left"), "{out}");
    }

    // The next deployment of the same image begins a new session, which
    // an admin can start before anyone joined.
    ok(&config, &["deploy", "--image", "demo", MACS[0]]);
    let out = ok(&config, &["chain", "start", "demo@1.0"]);
    assert!(
        out.starts_with("session demo@1.0: started, 0 nodes"),
        "{out}"
    );
    // A deploy may choose its own mode over the config's.
    let out = ok(
        &config,
        &["deploy", "--image", "demo", "--mode", "http", MACS[1]],
    );
    assert!(out.contains("(wipe no, mode http)"), "{out}");
    let entry = Client::new(url.parse().unwrap())
        .get(&format!("/boot/{}.ipxe", MACS[1]), 1 << 16)
        .unwrap();
    let entry = String::from_utf8(entry).unwrap();
    assert!(!entry.contains("deploy.mode=chain"), "{entry}");
    let show = ok(&config, &["node", "show", MACS[1]]);
    assert!(show.contains("image: demo@1.0 (mode http)\n"), "{show}");
    let (code, _, err) = cli(
        &config,
        &["deploy", "--image", "demo", "--mode", "chian", MACS[1]],
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("bad mode \"chian\""), "{err}");

    let (code, _, err) = cli(&config, &["chain", "status", "other@1"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no chain session other@1"), "{err}");
}

/// After a restart the server has forgotten its sessions: the first join
/// makes a new one, which expects the chain deployments still in progress
/// and so starts when they are all back, not after the join timeout.
#[test]
fn after_a_restart_the_session_expects_the_deployments_in_progress() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, url, _, _) = setup(tmp.path());
    let server = serve(&config);
    for mac in &MACS[..2] {
        ok(&config, &["node", "add", mac]);
    }
    ok(&config, &["deploy", "--image", "demo", MACS[0], MACS[1]]);
    let tokens: Vec<String> = MACS[..2].iter().map(|m| token(&url, m)).collect();
    drop(server);
    let _server = serve(&config);
    let join = |mac: &str, token: &str| join(&url, mac, token);
    assert_eq!(join(MACS[0], &tokens[0]), 200);
    let out = ok(&config, &["chain", "status", "demo@1.0"]);
    assert!(
        out.starts_with("session demo@1.0: waiting for nodes, 1 nodes"),
        "{out}"
    );
    assert_eq!(join(MACS[1], &tokens[1]), 200);
    let out = ok(&config, &["chain", "status", "demo@1.0"]);
    assert!(
        out.starts_with("session demo@1.0: started, 2 nodes"),
        "{out}"
    );
}
