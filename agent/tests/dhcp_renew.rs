//! DHCP lease renewal against a real dnsmasq.
//!
//! Each test builds two network namespaces joined by a veth pair: dnsmasq
//! serves DHCP in one, and the agent's own `net::configure` runs in the
//! other, in a copy of this test binary started with `ip netns exec` (which
//! also gives it the namespace's `/sys/class/net`, where the agent looks
//! for interfaces). The copy logs to stderr exactly as on the console; the
//! test reads those lines as they come, and dnsmasq's lease file.
//!
//! dnsmasq will not grant leases under two minutes, but it sends the T1
//! and T2 it is given (options 58 and 59), so renewal starts after a few
//! seconds while the lease stays 120 s. Needs root, `ip` and `dnsmasq`;
//! skipped with a message otherwise.
//! Everything is deleted on every way out (the [`Lab`] guard).

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// Set (to anything) in the copy of this binary that plays the client.
const CLIENT_ENV: &str = "DROVER_DHCP_RENEW_CLIENT";
/// The server's end of the veth pair, and the client's.
const SERVER_DEV: &str = "vs";
const CLIENT_DEV: &str = "vc";
const SERVER_IP: &str = "10.77.0.1";
/// Renewal times handed out (seconds from the start of the lease).
const T1: u64 = 6;
const T2: u64 = 12;
/// Leeway for "at T1": the lease starts a moment before the client reports
/// it, and the two processes' lines take a moment to arrive.
const EARLY: Duration = Duration::from_millis(1500);
const LATE: Duration = Duration::from_secs(3);
const PREFIX: &str = "drover-dhcp";

/// T1: the client renews with a unicast REQUEST to its server, which
/// extends the lease (dnsmasq's lease file shows a later expiry); then
/// again T1 after that, the timers following the renewed lease.
#[test]
fn renews_at_t1() {
    let Some((lab, mut client, bound_at)) = leased("10.77.0.100,10.77.0.100") else {
        return;
    };
    let expiry0 = lab.lease_expiry();

    let (first, line) = client.expect("lease renewed:", Duration::from_secs(T1) + LATE);
    assert!(
        line.ends_with("for 120 s from 10.77.0.1"),
        "unexpected renewal line: {line}"
    );
    assert_near(first - bound_at, Duration::from_secs(T1), "first renewal");
    // dnsmasq rewrites its lease file after the ACK; give it a moment.
    let renewed = wait_for(Duration::from_secs(2), || {
        lab.lease_expiry().filter(|e| Some(*e) > expiry0)
    });
    assert!(
        renewed.is_some(),
        "dnsmasq's lease expiry did not move on ({expiry0:?}): {}",
        lab.dnsmasq_log()
    );

    let (second, _) = client.expect("lease renewed:", Duration::from_secs(T1) + LATE);
    assert_near(second - first, Duration::from_secs(T1), "second renewal");
    client.refute("warning:");
    client.refute("error:");
    // The interface kept its address and route throughout.
    lab.assert_configured("10.77.0.100/24");
}

/// The server moves from 10.77.0.1 to 10.77.0.2 after granting the lease,
/// so the client's unicasts to the server it knows go nowhere (nobody
/// answers ARP for 10.77.0.1) until T2; then it broadcasts (REBINDING) and
/// dnsmasq answers from its new address, where the client's next renewal
/// goes (unicast again, at T1). That the renewing requests went unanswered
/// shows they were unicasts: dnsmasq would have heard a broadcast.
#[test]
fn rebinds_at_t2_when_the_server_does_not_answer() {
    let Some((mut lab, mut client, bound_at)) = leased("10.77.0.100,10.77.0.200") else {
        return;
    };
    // dnsmasq reads interface addresses at start: restart it, with the
    // leases it granted.
    lab.stop_dnsmasq();
    lab.server_ip(&["addr", "del", &format!("{SERVER_IP}/24"), "dev", SERVER_DEV]);
    lab.server_ip(&["addr", "add", "10.77.0.2/24", "dev", SERVER_DEV]);
    lab.start_dnsmasq("10.77.0.100,10.77.0.200", &[]);

    let (_, line) = client.expect("no DHCP answer to Renewing", Duration::from_secs(T2) + LATE);
    assert!(line.starts_with("drover: debug:"), "{line}");
    let (warned, line) = client.expect("(rebinding)", Duration::from_secs(T2) + LATE);
    assert!(line.starts_with("drover: warning:"), "{line}");
    assert!(line.contains("DHCP server 10.77.0.1 "), "{line}");
    assert_near(warned - bound_at, Duration::from_secs(T2), "rebinding");
    let (rebound, line) = client.expect("lease renewed:", LATE);
    assert!(line.ends_with("for 120 s from 10.77.0.2"), "{line}");
    assert_near(
        rebound - bound_at,
        Duration::from_secs(T2),
        "renewal by rebinding",
    );

    let (again, line) = client.expect("lease renewed:", Duration::from_secs(T1) + LATE);
    assert!(line.ends_with("for 120 s from 10.77.0.2"), "{line}");
    assert_near(
        again - rebound,
        Duration::from_secs(T1),
        "renewal after rebinding",
    );
    client.refute("error:");
}

/// A new server that does not know the lease refuses it (NAK): the client
/// drops the address, starts over with DISCOVER and configures the new
/// lease it gets.
#[test]
fn nak_starts_over_with_a_new_lease() {
    let Some((mut lab, mut client, _)) = leased("10.77.0.100,10.77.0.100") else {
        return;
    };
    // The replacement hands out another address, forgets the old lease,
    // and being authoritative NAKs requests for addresses it cannot give.
    lab.stop_dnsmasq();
    fs::remove_file(lab.leases()).unwrap();
    lab.start_dnsmasq("10.77.0.150,10.77.0.150", &["--dhcp-authoritative"]);
    let (_, line) = client.expect("(NAK)", Duration::from_secs(T1) + LATE);
    assert!(line.starts_with("drover: error:"), "{line}");
    assert!(line.contains("10.77.0.100"), "{line}");
    let (_, line) = client.expect("new lease: address=", Duration::from_secs(15));
    assert!(line.contains("address=10.77.0.150/24"), "{line}");
    assert!(line.contains("gateway=10.77.0.1"), "{line}");

    lab.assert_configured("10.77.0.150/24");
}

/// A lab whose dnsmasq hands out `range` (first,last), and a client that
/// configured a lease from it: its console lines, and when it told the
/// lease. `None` when the test is to be skipped.
fn leased(range: &str) -> Option<(Lab, ClientLog, Instant)> {
    let mut lab = Lab::new()?;
    lab.start_dnsmasq(range, &[]);
    let mut client = lab.start_client();
    let (at, line) = client.expect("lease: address=", Duration::from_secs(30));
    assert!(line.contains("address=10.77.0."), "{line}");
    assert!(
        line.contains("gateway=10.77.0.1 server=10.77.0.1"),
        "{line}"
    );
    Some((lab, client, at))
}

/// Not a test of its own: the client side of the tests above when they
/// start this binary in their namespace with [`CLIENT_ENV`] set; does
/// nothing otherwise. Configures the network like `/init` does, then
/// lives until the test kills it (at most two minutes).
#[test]
fn client_in_namespace() {
    if std::env::var_os(CLIENT_ENV).is_none() {
        return;
    }
    // `ip netns exec` gave this process a mount namespace of its own: keep
    // the agent's /etc/resolv.conf (were a name server in the lease) in it.
    let guard = std::env::temp_dir().join(format!("drover-resolv-{}", std::process::id()));
    fs::write(&guard, "").unwrap();
    let etc = Path::new("/etc/resolv.conf");
    if etc.exists() {
        rustix::mount::mount_bind(&guard, etc).expect("bind-mounting over /etc/resolv.conf");
    }
    drover_agent::console::init();
    drover_agent::console::set_level(kernel_cmdline::LogLevel::Debug);
    let opts =
        kernel_cmdline::parse("deploy.server=http://10.77.0.1:8080 deploy.image=test@1 ip=dhcp")
            .unwrap();
    let net = drover_agent::net::configure(&opts)
        .expect("configuring the network")
        .expect("ip=dhcp configures a network");
    log::info!("{}", net.describe());
    assert!(net.dns.is_empty(), "the lease named DNS servers");
    let _ = fs::remove_file(&guard);
    std::thread::sleep(Duration::from_secs(120));
}

fn assert_near(got: Duration, want: Duration, what: &str) {
    assert!(
        got + EARLY >= want && got <= want + LATE,
        "{what} after {got:.1?}, expected about {want:?}"
    );
}

fn wait_for<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let until = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Two namespaces `<PREFIX>-<pid>-<n>-{s,c}` joined by a veth pair, with
/// what runs in them; all of it killed and deleted on drop.
struct Lab {
    name: String,
    dir: tempfile::TempDir,
    dnsmasq: Option<Child>,
    /// How many dnsmasq runs there were, for their file names.
    runs: usize,
    client: Option<Child>,
}

impl Lab {
    /// The lab, or `None` (having said why) when this machine cannot run
    /// the test: not root, or a program missing.
    fn new() -> Option<Lab> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipping: needs root (network namespaces, dnsmasq)");
            return None;
        }
        for (prog, arg, package) in [
            ("ip", "-V", "iproute2"),
            ("dnsmasq", "--version", "dnsmasq-base"),
        ] {
            let ok = Command::new(prog)
                .arg(arg)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!("skipping: `{prog}` not found (package {package})");
                return None;
            }
        }
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        reap_stale();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let lab = Lab {
            name: format!("{PREFIX}-{}-{n}", std::process::id()),
            dir: tempfile::tempdir().unwrap(),
            dnsmasq: None,
            runs: 0,
            client: None,
        };
        // From here on, drop deletes whatever was made.
        run("ip", &["netns", "add", &lab.server_ns()]);
        run("ip", &["netns", "add", &lab.client_ns()]);
        run(
            "ip",
            &[
                "link",
                "add",
                SERVER_DEV,
                "netns",
                &lab.server_ns(),
                "type",
                "veth",
                "peer",
                "name",
                CLIENT_DEV,
                "netns",
                &lab.client_ns(),
            ],
        );
        let cidr = format!("{SERVER_IP}/24");
        lab.server_ip(&["addr", "add", &cidr, "dev", SERVER_DEV]);
        lab.server_ip(&["link", "set", SERVER_DEV, "up"]);
        lab.server_ip(&["link", "set", "lo", "up"]);
        // The client's end stays down: bringing it up is the agent's job.
        Some(lab)
    }

    /// The client's interface has `cidr` as its only IPv4 address, and the
    /// default route goes through the server.
    fn assert_configured(&self, cidr: &str) {
        let addr = self.client_ip(&["-4", "-o", "addr", "show", "dev", CLIENT_DEV]);
        assert_eq!(addr.matches(" inet ").count(), 1, "{addr}");
        assert!(addr.contains(&format!(" inet {cidr} ")), "{addr}");
        let route = self.client_ip(&["route", "show", "default"]);
        assert!(route.contains(&format!("via {SERVER_IP} ")), "{route}");
    }

    fn server_ns(&self) -> String {
        format!("{}-s", self.name)
    }

    fn client_ns(&self) -> String {
        format!("{}-c", self.name)
    }

    fn server_ip(&self, args: &[&str]) -> String {
        run("ip", &[&["-n", &self.server_ns()], args].concat())
    }

    fn client_ip(&self, args: &[&str]) -> String {
        run("ip", &[&["-n", &self.client_ns()], args].concat())
    }

    /// dnsmasq's lease file, kept from one run to the next.
    fn leases(&self) -> PathBuf {
        self.dir.path().join("leases")
    }

    fn dnsmasq_log_path(&self) -> PathBuf {
        self.dir.path().join(format!("dnsmasq.{}.log", self.runs))
    }

    fn dnsmasq_log(&self) -> String {
        fs::read_to_string(self.dnsmasq_log_path()).unwrap_or_default()
    }

    /// dnsmasq on the server's end: `range` ("first,last") for 2 minutes,
    /// T1 and T2 as above, router 10.77.0.1, no DNS.
    fn start_dnsmasq(&mut self, range: &str, extra: &[&str]) {
        self.runs += 1;
        let log = fs::File::create(self.dnsmasq_log_path()).unwrap();
        let mut args = vec![
            "netns".to_string(),
            "exec".into(),
            self.server_ns(),
            "dnsmasq".into(),
            "--no-daemon".into(),
            "--conf-file=/dev/null".into(),
            // DHCP only; without DNS it names no name server either.
            "--port=0".into(),
            format!("--interface={SERVER_DEV}"),
            "--bind-interfaces".into(),
            format!("--dhcp-range={range},255.255.255.0,2m"),
            format!("--dhcp-option=option:router,{SERVER_IP}"),
            format!("--dhcp-option=option:T1,{T1}"),
            format!("--dhcp-option=option:T2,{T2}"),
            "--no-ping".into(),
            format!("--dhcp-leasefile={}", self.leases().display()),
            "--user=root".into(),
            "--group=root".into(),
            "--log-dhcp".into(),
            "--log-facility=-".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new("ip")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting dnsmasq");
        self.dnsmasq = Some(child);
        let ready = wait_for(Duration::from_secs(10), || {
            let exited = self
                .dnsmasq
                .as_mut()
                .is_some_and(|c| !matches!(c.try_wait(), Ok(None)));
            (exited || self.dnsmasq_log().contains("DHCP, sockets bound")).then_some(!exited)
        });
        assert_eq!(
            ready,
            Some(true),
            "dnsmasq did not start: {}",
            self.dnsmasq_log()
        );
    }

    fn stop_dnsmasq(&mut self) {
        if let Some(mut c) = self.dnsmasq.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The expiry (seconds since the epoch) of the one lease in the lease
    /// file, once there is one.
    fn lease_expiry(&self) -> Option<u64> {
        fs::read_to_string(self.leases())
            .ok()?
            .lines()
            .next()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// This binary's [`client_in_namespace`], in the client namespace.
    fn start_client(&mut self) -> ClientLog {
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.client_ns()])
            .arg(exe)
            .args([
                "--exact",
                "client_in_namespace",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CLIENT_ENV, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the client");
        let stderr = child.stderr.take().unwrap();
        self.client = Some(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        ClientLog {
            rx,
            seen: Vec::new(),
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("dnsmasq's log:\n{}", self.dnsmasq_log());
        }
        if let Some(mut c) = self.client.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.stop_dnsmasq();
        destroy(&self.name);
    }
}

/// The client's console lines, as they arrive.
struct ClientLog {
    rx: Receiver<(Instant, String)>,
    seen: Vec<String>,
}

impl ClientLog {
    /// The next line containing `what` and when it came, within `within`.
    fn expect(&mut self, what: &str, within: Duration) -> (Instant, String) {
        let until = Instant::now() + within;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((at, line)) => {
                    self.seen.push(line.clone());
                    if line.contains(what) {
                        return (at, line);
                    }
                }
                Err(e) => panic!(
                    "no client line with {what:?} within {within:?} ({e}); its lines:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// No line so far contains `what`.
    fn refute(&mut self, what: &str) {
        while let Ok((_, line)) = self.rx.try_recv() {
            self.seen.push(line);
        }
        let bad: Vec<&String> = self.seen.iter().filter(|l| l.contains(what)).collect();
        assert!(bad.is_empty(), "unexpected client lines: {bad:?}");
    }
}

/// Run a program, panicking with its stderr if it fails; its stdout.
fn run(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {prog}: {e}"));
    assert!(
        out.status.success(),
        "{prog} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Kill what still runs in the lab's namespaces and delete them (which
/// deletes the veth pair too). Best effort: this runs while unwinding.
fn destroy(name: &str) {
    for ns in [format!("{name}-s"), format!("{name}-c")] {
        if !Path::new("/run/netns").join(&ns).exists() {
            continue;
        }
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Some(pid) = pid.parse().ok().and_then(rustix::process::Pid::from_raw) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    }
}

/// Delete labs left behind by test processes that were killed outright.
fn reap_stale() {
    let Ok(dir) = fs::read_dir("/run/netns") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(lab) = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|r| r.strip_suffix("-s").or(r.strip_suffix("-c")))
        else {
            continue;
        };
        let Some((pid, _)) = lab.split_once('-') else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            eprintln!("deleting stale network namespace {name}");
            destroy(&format!("{PREFIX}-{lab}"));
        }
    }
}
