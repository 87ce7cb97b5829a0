//! The fleet end to end with the real `drover-server` binary: `serve` on a
//! loopback port, the `node`/`deploy`/`status` commands against it (found
//! through the config's public_url and the state directory's admin token,
//! as an operator would run them), boot entries fetched and reports posted
//! with the agent's own HTTP client, as a node would; then a restart that
//! keeps the state.

mod common;
use common::serve;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use drover_agent::fetch::Client;
use drover_agent::image::Manifest;
use drover_agent::report::protocol::report_path;
use drover_agent::report::{Phase, Report};
use kernel_cmdline::MacAddr;

use common::BIN;
const WEB1: &str = "52:54:00:12:34:01";
const WEB2: &str = "52:54:00:12:34:02";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Cli {
    config: PathBuf,
}

/// What a command printed and how it ended.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Cli {
    /// `drover-server ARGS --config CONFIG`, the config last as the QEMU
    /// tests pass it.
    fn run(&self, args: &[&str]) -> Ran {
        let out: Output = Command::new(BIN)
            .args(args)
            .args(["--config", s(&self.config)])
            .stdin(Stdio::null())
            .output()
            .expect("running drover-server");
        Ran {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(r.code, Some(0), "{args:?}:\n{}\n{}", r.stdout, r.stderr);
        r.stdout
    }

    /// Expect exit status `code`; stderr.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let r = self.run(args);
        assert_eq!(r.code, Some(code), "{args:?}:\n{}\n{}", r.stdout, r.stderr);
        r.stderr
    }
}

/// A node: fetches its boot entry and reports, like the agent.
struct Node {
    mac: MacAddr,
    client: Client,
}

impl Node {
    fn new(url: &str, mac: &str) -> Node {
        let mut client = Client::new(url.parse().unwrap());
        client.timeout = Duration::from_secs(10);
        Node {
            mac: mac.parse().unwrap(),
            client,
        }
    }

    /// Its iPXE entry; takes the token from it when it is a deploy entry.
    fn boot(&mut self) -> String {
        let entry = self
            .client
            .get(&format!("/boot/{}.ipxe", self.mac), 1 << 16)
            .unwrap();
        let entry = String::from_utf8(entry).unwrap();
        self.client.token = entry
            .split_whitespace()
            .find_map(|w| w.strip_prefix("deploy.token="))
            .map(str::to_owned)
            .or(self.client.token.take());
        entry
    }

    /// Post a report; the status.
    fn report(&self, report: &Report) -> u16 {
        let resp = self
            .client
            .post_json(&report_path(&self.mac), &report.to_json(), 1 << 16)
            .unwrap();
        resp.head.status
    }
}

fn success(sha: &str) -> Report {
    Report::Success {
        image: "demo@1.0".into(),
        disk: "/dev/vda".into(),
        payload_sha256: sha.into(),
        bytes_written: 1 << 20,
        elapsed_ms: 1200,
    }
}

#[test]
fn operator_and_nodes_against_a_real_server() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("vmlinuz"), b"kernel").unwrap();
    std::fs::write(dir.join("initrd.img"), b"initrd").unwrap();

    // An image, imported with the CLI.
    let store = common::import_demo(dir, &[0x5a; 300_000], "1M", &[]);
    let manifest =
        Manifest::parse(&std::fs::read(store.join("demo/1.0/manifest.json")).unwrap()).unwrap();
    let sha = manifest.payload.sha256.to_string();

    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let config = dir.join("server.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\npublic_url = \"{url}\"\nkernel = \"vmlinuz\"\ninitrd = \"initrd.img\"\nstore = \"store\"\n[deploy]\non_error = \"poweroff\"\n"
        ),
    )
    .unwrap();
    let cli = Cli { config };

    // Before the server runs: no token yet, then no server.
    let e = cli.fails(&["node", "list"], 1);
    assert!(e.contains("admin.token"), "{e}");
    let server = serve(&cli.config);
    let token = std::fs::read_to_string(dir.join("state/admin.token")).unwrap();

    // An unknown machine boots from its disk and is not registered.
    let mut web1 = Node::new(&url, WEB1);
    let entry = web1.boot();
    assert!(
        entry.contains("unknown machine, booting from disk"),
        "{entry}"
    );
    assert_eq!(
        cli.ok(&["node", "list"]),
        "MAC  NAME  STATE  IMAGE  PHASE  PROGRESS  RATE\n"
    );

    // Add two machines; a duplicate is refused with the server's reason.
    let out = cli.ok(&["node", "add", WEB1, "--name", "web1"]);
    assert!(
        out.starts_with("added 52:54:00:12:34:01 (web1): idle"),
        "{out}"
    );
    cli.ok(&["node", "add", WEB2]);
    let e = cli.fails(&["node", "add", WEB1], 1);
    assert_eq!(
        e,
        "drover-server: error: node 52:54:00:12:34:01 already exists (drover-server node show 52:54:00:12:34:01)\n"
    );
    let e = cli.fails(&["node", "add", "52:54", "--name", "x"], 1);
    assert!(e.contains("bad MAC address \"52:54\""), "{e}");
    let entry = web1.boot();
    assert!(
        entry.contains("no deployment assigned, booting from disk"),
        "{entry}"
    );

    // Deploy: all or nothing.
    let e = cli.fails(&["deploy", "--image", "demo", "web1", "web9"], 1);
    assert!(e.contains("no node \"web9\": nothing was deployed"), "{e}");
    let e = cli.fails(&["deploy", "--image", "nope", "web1"], 1);
    assert!(e.contains("no image named \"nope\""), "{e}");
    let out = cli.ok(&["deploy", "--image", "demo", "web1", WEB2]);
    assert_eq!(
        out,
        "deploy demo@1.0 to 52:54:00:12:34:01 (web1) (wipe no): it installs at its next network boot\n\
         deploy demo@1.0 to 52:54:00:12:34:02 (wipe no): it installs at its next network boot\n"
    );
    let r = cli.run(&["status"]);
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.ends_with("2 nodes: 2 pending\n"), "{}", r.stdout);

    // web1 deploys and succeeds.
    let entry = web1.boot();
    assert!(
        entry.contains("echo drover: deploying 52:54:00:12:34:01 (image demo@1.0)"),
        "{entry}"
    );
    assert!(entry.contains(" deploy.image=demo@1.0 "), "{entry}");
    let phase = Report::Phase {
        phase: Phase::Write,
        message: "writing 1 partition".into(),
    };
    assert_eq!(web1.report(&phase), 204);
    assert_eq!(
        web1.report(&Report::Progress {
            done: 1 << 19,
            total: 1 << 20
        }),
        204
    );
    let list = cli.ok(&["node", "list"]);
    let row = list.lines().find(|l| l.starts_with(WEB1)).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells[..6],
        [WEB1, "web1", "deploying", "demo@1.0", "write", "50%"],
        "{list}"
    );
    assert_eq!(web1.report(&success(&sha)), 204);
    let show = cli.ok(&["node", "show", "web1"]);
    for want in [
        "node: 52:54:00:12:34:01\n",
        "name: web1\n",
        "state: done\n",
        "image: demo@1.0\n",
        &format!("deployed: demo@1.0 {sha}\n"),
        "phase: write\n",
        "progress: 512.0 KiB/1.0 MiB (50%)\n",
        "error: -\n",
        "events:\n",
        "  registered  added by admin\n",
        "  localboot  localboot entry served (iPXE): no deployment assigned",
        "  assigned  deploy assigned by admin: demo@1.0, wipe no\n",
        "  boot  deploy entry served (iPXE): demo@1.0\n",
        "  phase  write: writing 1 partition\n",
        "  success  demo@1.0 on /dev/vda: 1.0 MiB written in 1.2 s",
    ] {
        assert!(show.contains(want), "{want:?} in\n{show}");
    }
    let entry = web1.boot();
    assert!(
        entry.contains("echo drover: 52:54:00:12:34:01: deployed demo@1.0 at "),
        "{entry}"
    );
    assert!(entry.ends_with("\nexit 1\n"), "{entry}");
    // Its token is spent.
    assert_eq!(web1.report(&phase), 409);

    // web2 fails; status says so.
    let mut web2 = Node::new(&url, WEB2);
    web2.boot();
    let failure = Report::Failure {
        phase: Phase::Disk,
        error: "disk /dev/vda already has a partition table; deploy.wipe=yes allows overwriting it"
            .into(),
    };
    assert_eq!(web2.report(&failure), 204);
    let r = cli.run(&["status", "--watch", "--interval", "0.2"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.ends_with("2 nodes: 1 done, 1 failed\n"),
        "{}",
        r.stdout
    );
    let show = cli.ok(&["node", "show", WEB2]);
    assert!(show.contains("state: failed\n"), "{show}");
    assert!(
        show.contains("error: disk: disk /dev/vda already has a partition table"),
        "{show}"
    );
    let out = cli.ok(&["node", "remove", WEB2]);
    assert_eq!(out, "removed 52:54:00:12:34:02 (state failed)\n");
    assert_eq!(cli.run(&["status"]).code, Some(0));

    // A deployment watched to its end: `status --watch` prints the table
    // again when it changes and exits 0 once the node is done.
    cli.ok(&["deploy", "--image", "demo@1.0", "--wipe", "web1"]);
    let watch = Command::new(BIN)
        .args([
            "status",
            "--watch",
            "--interval",
            "0.2",
            "--config",
            s(&cli.config),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let entry = web1.boot();
    assert!(entry.contains(" deploy.wipe=yes "), "{entry}");
    assert_eq!(web1.report(&success(&sha)), 204);
    let out = watch.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 node: 1 pending\n"), "{stdout}");
    assert!(stdout.ends_with("1 node: 1 done\n"), "{stdout}");

    // JSON for scripts, the admin token checked, /metrics open.
    let json = cli.ok(&["node", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(list["nodes"][0]["state"], "done");
    assert_eq!(list["nodes"][0]["deployed_sha256"], sha.as_str());
    let bad = dir.join("bad.token");
    std::fs::write(&bad, "0123\n").unwrap();
    let e = cli.fails(&["node", "list", "--token-file", s(&bad)], 1);
    assert!(e.contains("wrong admin token"), "{e}");
    let metrics = String::from_utf8(
        Client::new(url.parse().unwrap())
            .get("/metrics", 1 << 20)
            .unwrap(),
    )
    .unwrap();
    assert!(
        metrics.contains("drover_nodes{state=\"done\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("drover_deploys_total{result=\"success\"} 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("drover_deploys_total{result=\"failure\"} 1\n"),
        "{metrics}"
    );

    // A restart keeps the fleet and the admin token.
    drop(server);
    let e = cli.fails(&["node", "show", "web1"], 1);
    assert_eq!(
        e,
        format!("drover-server: error: cannot reach drover-server at {url} (is `drover-server serve` running?): connection refused\n")
    );
    let _server = serve(&cli.config);
    assert_eq!(
        std::fs::read_to_string(dir.join("state/admin.token")).unwrap(),
        token
    );
    let show = cli.ok(&["node", "show", "web1"]);
    assert!(show.contains("state: done\n"), "{show}");
    let entry = web1.boot();
    assert!(entry.contains(": deployed demo@1.0 at "), "{entry}");
}
