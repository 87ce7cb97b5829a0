//! The lab: a switch, a server and N nodes, each a network namespace.
//!
//! ```text
//!   server ns (10.78.0.1)          node ns i (10.78.0.(10+i))
//!     eth0 ──veth── srv ┐            eth0 ──veth── n<i> ┐
//!                       └──── br0 (switch ns) ──────────┘
//! ```
//!
//! Every veth end is shaped with `tc tbf` on egress, on both sides, so a
//! link's rate holds in both directions as on a real switch port: the node
//! side limits what the node sends, the switch side what it receives. The
//! server's link has the same rate as a node's. The bridge has multicast
//! snooping off (udpcast floods to every port, as an unmanaged switch
//! would) and the switch namespace's own address (`.254`) is only there
//! because [`Netns::create`] gives every bridge one; nothing uses it.
//!
//! Guests ([`Lab::add_guest`], `.(230+i)`) are more hosts on the same
//! switch that are not nodes of the fleet (a fault test's rogue peer).
//!
//! [`Lab::server_tx_bytes`] reads what the server's interface has sent
//! (every frame, headers and all protocols included), so a run can say
//! how much the server uploaded.
//!
//! Namespaces are named `<prefix>-<pid>-<n>` ([`Netns`]), so labs of
//! parallel tests never clash, and each is deleted on drop (killing what
//! still runs in it).

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{bail, ensure, Context as _, Result};
use drover_qemu_tests::netns::{Netns, Subnet, BRIDGE};

/// The subnet every lab uses (each lab is its own island).
const NET: [u8; 3] = [10, 78, 0];
/// The server's host number.
const SERVER_HOST: u8 = 1;
/// Node `i` is `.(FIRST_NODE + i)`.
const FIRST_NODE: u8 = 10;
/// Guest `i` is `.(FIRST_GUEST + i)`.
const FIRST_GUEST: u8 = 230;
/// Most guests one lab holds (`.230`–`.253`).
pub const MAX_GUESTS: usize = 24;
/// The switch namespace's bridge address.
const SWITCH_HOST: u8 = 254;
/// Most nodes one lab holds (addresses `.10`–`.209`).
pub const MAX_NODES: usize = 200;
/// The interface name inside the server and node namespaces.
pub const DEV: &str = "eth0";

/// A link rate in Mbit/s (10^6 bits per second, as `tc` reads `mbit`).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Rate(pub f64);

impl Rate {
    /// Bytes per second.
    pub fn bytes_per_sec(self) -> f64 {
        self.0 * 1e6 / 8.0
    }

    /// The ideal time to move `bytes` over this link, in seconds.
    pub fn ideal_secs(self, bytes: u64) -> f64 {
        bytes as f64 / self.bytes_per_sec()
    }

    /// `tc`'s spelling, in kbit/s so fractional rates survive.
    fn tc(self) -> String {
        format!("{}kbit", (self.0 * 1000.0).round() as u64)
    }
}

/// One host on the switch: its namespace, address and switch port.
pub struct Host {
    pub ns: Netns,
    pub addr: Ipv4Addr,
    /// `02:dc:00:00:hh:ll`: locally administered, set on its `eth0`.
    pub mac: String,
    /// Its port on the bridge, in the switch namespace.
    pub port: String,
}

/// Fields drop in order: nodes, guests and server before the switch.
pub struct Lab {
    pub nodes: Vec<Host>,
    /// Hosts on the switch that are not fleet nodes ([`Lab::add_guest`]).
    pub guests: Vec<Host>,
    pub server: Host,
    pub switch: Netns,
    rate: Rate,
    prefix: String,
}

impl Lab {
    /// Build a lab of `nodes` nodes, every link shaped to `rate`.
    /// `prefix` names the namespaces (`<prefix>-<pid>-<n>`).
    pub fn create(prefix: &str, nodes: usize, rate: Rate) -> Result<Lab> {
        ensure!(
            (1..=MAX_NODES).contains(&nodes),
            "a lab holds 1 to {MAX_NODES} nodes, not {nodes}"
        );
        ensure!(rate.0 > 0.0, "link rate must be positive");
        let switch = Netns::create(prefix, subnet(SWITCH_HOST))?;
        // Flood multicast to every port (udpcast), as an unmanaged switch.
        switch.ip(&[
            "link",
            "set",
            BRIDGE,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        let server = add_host(&switch, prefix, SERVER_HOST, "srv", "02:dc:00:00:00:01")?;
        shape_pair(&switch, &server, rate)?;
        let mut hosts = Vec::with_capacity(nodes);
        for i in 0..nodes {
            let host = u8::try_from(usize::from(FIRST_NODE) + i).expect("MAX_NODES fits");
            let mac = node_mac(i);
            let node = add_host(&switch, prefix, host, &format!("n{i}"), &mac)
                .with_context(|| format!("adding node {i}"))?;
            shape_pair(&switch, &node, rate)?;
            hosts.push(node);
        }
        Ok(Lab {
            nodes: hosts,
            guests: Vec::new(),
            server,
            switch,
            rate,
            prefix: prefix.to_owned(),
        })
    }

    /// The rate every link was created with.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Reshape node `i`'s link (both directions) to `rate`, e.g. a slow node.
    pub fn shape_node(&self, i: usize, rate: Rate) -> Result<()> {
        let node = self.nodes.get(i).context("no such node")?;
        shape_pair(&self.switch, node, rate)
    }

    /// Add a host on the switch that is not a fleet node, its link shaped
    /// like the others (port `g<i>`, MAC `02:dc:00:01:00:<i>`); its index
    /// in [`Lab::guests`].
    pub fn add_guest(&mut self) -> Result<usize> {
        let i = self.guests.len();
        ensure!(i < MAX_GUESTS, "a lab holds {MAX_GUESTS} guests at most");
        let host = FIRST_GUEST + u8::try_from(i).expect("MAX_GUESTS fits");
        let guest = add_host(
            &self.switch,
            &self.prefix,
            host,
            &format!("g{i}"),
            &format!("02:dc:00:01:00:{i:02x}"),
        )
        .with_context(|| format!("adding guest {i}"))?;
        shape_pair(&self.switch, &guest, self.rate)?;
        self.guests.push(guest);
        Ok(i)
    }

    /// Bytes the server's interface has sent since it was made: every
    /// frame (Ethernet, IP and TCP headers, HTTP, torrent, multicast).
    pub fn server_tx_bytes(&self) -> Result<u64> {
        tx_bytes(&self.server.ns, DEV)
    }

    /// Names of every namespace of the lab (for leak checks).
    pub fn netns_names(&self) -> Vec<String> {
        std::iter::once(&self.switch)
            .chain(std::iter::once(&self.server.ns))
            .chain(self.nodes.iter().map(|n| &n.ns))
            .chain(self.guests.iter().map(|n| &n.ns))
            .map(|n| n.name().to_owned())
            .collect()
    }
}

fn subnet(host: u8) -> Subnet {
    Subnet {
        host: Ipv4Addr::new(NET[0], NET[1], NET[2], host),
        prefix_len: 24,
    }
}

/// Node `i`'s MAC.
pub fn node_mac(i: usize) -> String {
    let i = i + 0x10;
    format!("02:dc:00:00:{:02x}:{:02x}", (i >> 8) & 0xff, i & 0xff)
}

fn add_host(switch: &Netns, prefix: &str, host: u8, port: &str, mac: &str) -> Result<Host> {
    let sub = subnet(host);
    let ns = Netns::create_host(prefix, sub)?;
    ns.veth_to_bridge(switch, DEV, port)?;
    ns.ip(&["link", "set", DEV, "address", mac])?;
    Ok(Host {
        ns,
        addr: sub.host,
        mac: mac.to_owned(),
        port: port.to_owned(),
    })
}

/// `dev`'s transmitted bytes in `ns` (`ip -s -j link show`).
fn tx_bytes(ns: &Netns, dev: &str) -> Result<u64> {
    let out = ns.ip(&["-s", "-j", "link", "show", "dev", dev])?;
    parse_tx_bytes(&out).with_context(|| format!("no tx bytes for {dev} in {out:?}"))
}

/// `stats64.tx.bytes` of the first link of `ip -s -j link show`'s output.
fn parse_tx_bytes(json: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    v.get(0)?.get("stats64")?.get("tx")?.get("bytes")?.as_u64()
}

/// Shape both ends of `host`'s link to `rate`.
fn shape_pair(switch: &Netns, host: &Host, rate: Rate) -> Result<()> {
    tbf(&host.ns, DEV, rate)?;
    tbf(switch, &host.port, rate)
}

/// `tc qdisc replace dev DEV root tbf …` in `ns`.
///
/// The burst is 64 KiB so a full GSO packet (veth hands tbf up to 64 KiB
/// at once) passes without being split; the queue holds 50 ms at the rate,
/// like a switch port's buffer, and at least two bursts.
fn tbf(ns: &Netns, dev: &str, rate: Rate) -> Result<()> {
    const BURST: u64 = 64 * 1024;
    let limit = ((rate.bytes_per_sec() * 0.050) as u64).max(2 * BURST);
    let mut cmd = Command::new("tc");
    cmd.args(["qdisc", "replace", "dev", dev, "root", "tbf", "rate"])
        .arg(rate.tc())
        .args(["burst", &BURST.to_string(), "limit", &limit.to_string()]);
    let out = ns
        .exec(&cmd)
        .output()
        .context("running tc (package iproute2)")?;
    if !out.status.success() {
        bail!(
            "tc {dev} in {} failed ({}): {}",
            ns.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        let r = Rate(100.0);
        assert_eq!(r.bytes_per_sec(), 12.5e6);
        assert!((r.ideal_secs(50 << 20) - 4.194).abs() < 0.001);
        assert_eq!(r.tc(), "100000kbit");
        assert_eq!(Rate(12.5).tc(), "12500kbit");
    }

    #[test]
    fn tx_bytes_from_ip_json() {
        let out = r#"[{"ifindex":2,"ifname":"eth0","stats64":{"rx":{"bytes":5,"packets":1},"tx":{"bytes":1234567890123,"packets":9}}}]"#;
        assert_eq!(parse_tx_bytes(out), Some(1_234_567_890_123));
        assert_eq!(parse_tx_bytes("[]"), None);
        assert_eq!(parse_tx_bytes("not json"), None);
    }

    #[test]
    fn macs_are_distinct_and_local() {
        assert_eq!(node_mac(0), "02:dc:00:00:00:10");
        assert_eq!(node_mac(255), "02:dc:00:00:01:0f");
        let all: std::collections::HashSet<_> = (0..MAX_NODES).map(node_mac).collect();
        assert_eq!(all.len(), MAX_NODES);
        assert!(!all.contains("02:dc:00:00:00:01"));
    }
}
