//! A throwaway network namespace with a bridge, for VMs and the services
//! they boot from.
//!
//! Everything a test runs on the network (dnsmasq, drover-server, QEMU with
//! its tap) runs inside the namespace, so DHCP offers and boot traffic can
//! never reach a real network, and tests can run side by side with the same
//! addresses. Deleting the namespace deletes its bridge and taps.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

/// Where `ip netns add` puts its bind mounts.
const NETNS_DIR: &str = "/run/netns";

/// The bridge every namespace gets.
pub const BRIDGE: &str = "br0";

/// An IPv4 subnet given by the bridge's (host side) address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// The bridge's address: DHCP server, router, boot server.
    pub host: Ipv4Addr,
    pub prefix_len: u8,
}

impl Default for Subnet {
    /// `10.77.0.1/24`.
    fn default() -> Subnet {
        Subnet {
            host: Ipv4Addr::new(10, 77, 0, 1),
            prefix_len: 24,
        }
    }
}

impl Subnet {
    /// `10.77.0.1/24`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.host, self.prefix_len)
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(
            u32::MAX
                .checked_shl(32 - u32::from(self.prefix_len))
                .unwrap_or(0),
        )
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.host) & u32::from(self.netmask()))
    }

    /// The DHCP pool: `.100`–`.200` of the network (needs a /24 or larger).
    pub fn dhcp_range(&self) -> (Ipv4Addr, Ipv4Addr) {
        let net = u32::from(self.network());
        (Ipv4Addr::from(net + 100), Ipv4Addr::from(net + 200))
    }

    /// Whether `ip` is in the DHCP pool.
    pub fn in_dhcp_range(&self, ip: Ipv4Addr) -> bool {
        let (lo, hi) = self.dhcp_range();
        (lo..=hi).contains(&ip)
    }
}

/// A network namespace `<prefix>-<pid>-<n>` with `lo` up and a bridge
/// [`BRIDGE`] carrying the subnet's host address. Deleted on drop, after
/// killing whatever still runs in it.
pub struct Netns {
    name: String,
    subnet: Subnet,
}

impl Netns {
    /// Create the namespace, its loopback and bridge.
    pub fn create(prefix: &str, subnet: Subnet) -> Result<Netns> {
        let ns = Netns::create_host(prefix, subnet)?;
        // forward_delay 0: with STP off ports forward at once anyway, but a
        // non-zero delay would cost the first DHCP exchange if STP got enabled.
        ns.ip(&[
            "link",
            "add",
            BRIDGE,
            "type",
            "bridge",
            "forward_delay",
            "0",
        ])?;
        ns.ip(&["addr", "add", &subnet.cidr(), "dev", BRIDGE])?;
        ns.ip(&["link", "set", BRIDGE, "up"])?;
        Ok(ns)
    }

    /// Create a namespace with only its loopback up: a host to plug into
    /// another namespace's bridge with [`Netns::veth_to_bridge`]. `subnet`
    /// is the address the host will carry (`host` is its own address).
    pub fn create_host(prefix: &str, subnet: Subnet) -> Result<Netns> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        reap_stale(prefix);
        let pid = std::process::id();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-{pid}-{n}");
        run_ip(&["netns", "add", &name])?;
        // From here on, drop cleans up whatever the next steps managed.
        let ns = Netns { name, subnet };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Plug this namespace into `switch`'s [`BRIDGE`] with a veth pair:
    /// `dev` here, carrying this namespace's subnet address (with its
    /// broadcast address, which multicast tools such as udpcast need),
    /// and `port` in `switch`, enslaved to the bridge. Both ends are up.
    pub fn veth_to_bridge(&self, switch: &Netns, dev: &str, port: &str) -> Result<()> {
        self.ip(&[
            "link",
            "add",
            dev,
            "type",
            "veth",
            "peer",
            "name",
            port,
            "netns",
            &switch.name,
        ])?;
        switch.ip(&["link", "set", port, "master", BRIDGE])?;
        switch.ip(&["link", "set", port, "up"])?;
        self.ip(&["addr", "add", &self.subnet.cidr(), "brd", "+", "dev", dev])?;
        self.ip(&["link", "set", dev, "up"])?;
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn subnet(&self) -> Subnet {
        self.subnet
    }

    /// Add a tap device attached to the bridge. QEMU opens it by name, so it
    /// must run inside the namespace ([`Netns::exec`]).
    pub fn add_tap(&self, tap: &str) -> Result<()> {
        self.ip(&["tuntap", "add", "dev", tap, "mode", "tap"])?;
        self.ip(&["link", "set", tap, "master", BRIDGE])?;
        self.ip(&["link", "set", tap, "up"])?;
        Ok(())
    }

    /// `ip -n NAME ARGS…`, failing with its stderr.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run_ip(&all)
    }

    /// `cmd`, run inside the namespace (`ip netns exec NAME …`). Program,
    /// arguments, environment and working directory are carried over.
    pub fn exec(&self, cmd: &Command) -> Command {
        exec_in(&self.name, cmd)
    }

    /// Run `f` on a thread that has entered the namespace, e.g. to connect
    /// to a server listening on the bridge address.
    pub fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let path = Path::new(NETNS_DIR).join(&self.name);
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let handle = std::thread::spawn(move || -> Result<T> {
            // setns(CLONE_NEWNET) affects only the calling thread, which
            // ends with `f`: the test's own threads stay where they were.
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&file),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .context("entering the namespace (setns)")?;
            Ok(f())
        });
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("thread in namespace panicked"))?
    }

    /// A minimal `GET path` to `addr` from inside the namespace: the status
    /// code and body. Enough to probe drover-server without an HTTP client.
    pub fn http_get(&self, addr: SocketAddr, path: &str) -> Result<(u16, String)> {
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        self.run_in(move || -> Result<(u16, String)> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .with_context(|| format!("connecting to {addr}"))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.write_all(request.as_bytes())?;
            let mut resp = Vec::new();
            s.read_to_end(&mut resp)?;
            let resp = String::from_utf8_lossy(&resp);
            let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("bad HTTP response from {addr}: {head:?}"))?;
            Ok((status, body.to_owned()))
        })?
    }

    /// Pids of processes in the namespace.
    pub fn pids(&self) -> Vec<u32> {
        pids_in(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        destroy(&self.name);
    }
}

/// Whether a namespace of this name exists.
pub fn exists(name: &str) -> bool {
    Path::new(NETNS_DIR).join(name).exists()
}

/// `cmd`, wrapped to run in namespace `name`. `ip netns exec` execs the
/// program (no fork), so the child's pid is the program's.
pub fn exec_in(name: &str, cmd: &Command) -> Command {
    let mut wrapped = Command::new("ip");
    wrapped
        .args(["netns", "exec", name])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped
}

fn run_ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (package iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn pids_in(name: &str) -> Vec<u32> {
    run_ip(&["netns", "pids", name])
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Kill what still runs in the namespace, then delete it.
fn destroy(name: &str) {
    for pid in pids_in(name) {
        if let Some(pid) = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            // These escaped the process registry; no grace period.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
    if let Err(e) = run_ip(&["netns", "del", name]) {
        eprintln!("warning: {e:#}");
    }
}

/// Delete namespaces `<prefix>-<pid>-<n>` left by test processes that died
/// without cleaning up (SIGKILL, power loss): their pid no longer exists.
fn reap_stale(prefix: &str) {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix('-')) else {
            continue;
        };
        let Some((pid, n)) = rest.split_once('-') else {
            continue;
        };
        let (Ok(pid), Ok(_)) = (pid.parse::<u32>(), n.parse::<u32>()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("deleting stale network namespace {name}");
            destroy(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_math() {
        let s = Subnet::default();
        assert_eq!(s.cidr(), "10.77.0.1/24");
        assert_eq!(s.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(s.network(), Ipv4Addr::new(10, 77, 0, 0));
        assert_eq!(
            s.dhcp_range(),
            (Ipv4Addr::new(10, 77, 0, 100), Ipv4Addr::new(10, 77, 0, 200))
        );
        assert!(s.in_dhcp_range(Ipv4Addr::new(10, 77, 0, 150)));
        assert!(!s.in_dhcp_range(Ipv4Addr::new(10, 77, 0, 1)));
        let s = Subnet {
            host: Ipv4Addr::new(192, 168, 5, 9),
            prefix_len: 16,
        };
        assert_eq!(s.netmask(), Ipv4Addr::new(255, 255, 0, 0));
        assert_eq!(s.dhcp_range().0, Ipv4Addr::new(192, 168, 0, 100));
    }

    #[test]
    fn exec_wraps_the_command() {
        let mut c = Command::new("dnsmasq");
        c.arg("--no-daemon").env("A", "1").current_dir("/tmp");
        let w = exec_in("ns1", &c);
        assert_eq!(w.get_program(), "ip");
        let args: Vec<_> = w.get_args().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(args, ["netns", "exec", "ns1", "dnsmasq", "--no-daemon"]);
        assert_eq!(w.get_current_dir(), Some(Path::new("/tmp")));
        assert_eq!(w.get_envs().count(), 1);
    }
}
