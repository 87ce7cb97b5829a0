//! What the server's integration tests share: the real binary, started
//! with `serve` and killed on drop, and a demo image imported with it.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_drover-server");

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The server process, killed on drop.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `serve` on an ephemeral port; its address comes from the log.
pub fn serve(config: &Path) -> Server {
    let mut child = Command::new(BIN)
        .args(["serve", "--config", s(config)])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting drover-server serve");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            eprintln!("server: {line}");
            if let Some(rest) = line.split("listening on ").nth(1) {
                let addr = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let _ = tx.send(addr);
            }
        }
    });
    let mut server = Server {
        child,
        addr: "0.0.0.0:0".parse().unwrap(),
    };
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the server logs its address");
    server.addr = addr.parse().expect("a socket address");
    server
}

/// Run `drover-server ARGS`, which must succeed.
pub fn run_ok(args: &[&str]) {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("running drover-server");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A signing key in `dir/keys` and `content` imported as `demo@1.0` (one
/// raw partition of `size`, e.g. "4M"; `extra` import flags) into
/// `dir/store`. Returns the store.
pub fn import_demo(dir: &Path, content: &[u8], size: &str, extra: &[&str]) -> PathBuf {
    let keys = dir.join("keys");
    let store = dir.join("store");
    let raw = dir.join("content.img");
    run_ok(&["key", "generate", "--out", s(&keys)]);
    std::fs::write(&raw, content).unwrap();
    let key = keys.join("drover.key");
    let partition = format!("size={size},content=raw:{}", s(&raw));
    let mut args = vec![
        "image",
        "import",
        "--store",
        s(&store),
        "--name",
        "demo",
        "--version",
        "1.0",
        "--key",
        s(&key),
        "--partition",
        &partition,
    ];
    args.extend(extra);
    run_ok(&args);
    store
}
