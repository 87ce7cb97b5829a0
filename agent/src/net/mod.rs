//! Bringing up the deploy network: pick the interface (`BOOTIF`, the one
//! named by `ip=`, else the first with carrier), then DHCP or a static
//! address. A DHCP lease is then kept alive in the background for the rest
//! of the agent's life ([`renew`]).

pub mod dhcp;
mod dhcp_client;
pub mod iface;
pub mod renew;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use kernel_cmdline::{IpConfig, MacAddr, Options};

pub use iface::Iface;

/// How long to wait for the NIC to appear and see a link: drivers probe
/// asynchronously and switch ports may take seconds (spanning tree).
const LINK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to keep asking for a DHCP lease.
const DHCP_TIMEOUT: Duration = Duration::from_secs(90);

/// The configured network, for the console and later for reports. For a
/// DHCP lease this is the first one: renewal may later change it (rarely:
/// servers renew the same address), which the console then tells.
#[derive(Debug, Clone)]
pub struct Network {
    /// Whether the address came from a DHCP lease (else `ip=` static).
    pub dhcp: bool,
    pub iface: Iface,
    pub address: Ipv4Addr,
    pub prefix_len: u32,
    pub gateway: Option<Ipv4Addr>,
    pub server: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
}

impl Network {
    fn leased(iface: Iface, lease: &dhcp::Lease) -> Network {
        Network {
            dhcp: true,
            iface,
            address: lease.address,
            prefix_len: lease.prefix_len(),
            gateway: lease.gateway,
            server: lease.server.or(lease.next_server),
            dns: lease.dns.clone(),
        }
    }

    /// The console line for this configuration: `lease: …` or `static: …`.
    pub fn describe(&self) -> String {
        let opt = |a: Option<Ipv4Addr>| a.map_or_else(|| "none".to_string(), |a| a.to_string());
        let dns: Vec<String> = self.dns.iter().map(Ipv4Addr::to_string).collect();
        format!(
            "{}: address={}/{} gateway={} server={} dns={}",
            if self.dhcp { "lease" } else { "static" },
            self.address,
            self.prefix_len,
            opt(self.gateway),
            opt(self.server),
            if dns.is_empty() {
                "none".into()
            } else {
                dns.join(",")
            }
        )
    }
}

/// Configure the network as the options say. `None` for `ip=off`. A DHCP
/// lease is renewed by a background thread started here.
pub fn configure(opts: &Options) -> Result<Option<Network>> {
    let wanted_dev = match &opts.ip {
        IpConfig::Off => return Ok(None),
        IpConfig::Static(s) => s.device.clone(),
        IpConfig::Dhcp => None,
    };
    let iface = choose(opts.bootif, wanted_dev.as_deref())?;
    log::info!("link up: {} mac={}", iface.name, iface.mac);
    let net = match &opts.ip {
        IpConfig::Static(s) => Network {
            dhcp: false,
            iface,
            address: s.client,
            prefix_len: u32::from(s.netmask).count_ones(),
            gateway: s.gateway,
            server: s.server,
            dns: s.dns.clone(),
        },
        _ => {
            let sock = iface::dhcp_socket(&iface.name)
                .with_context(|| format!("opening a DHCP socket on {}", iface.name))?;
            let bound = dhcp_client::Client {
                sock: &sock,
                mac: iface.mac,
                deadline: Instant::now() + DHCP_TIMEOUT,
            }
            .obtain()
            .with_context(|| format!("configuring {} by DHCP", iface.name))?;
            let net = Network::leased(iface.clone(), &bound.lease);
            apply(&net)?;
            renew::spawn(sock, iface, bound);
            return Ok(Some(net));
        }
    };
    apply(&net)?;
    Ok(Some(net))
}

/// Give the interface its address and default route, and write the name
/// servers: at first, and again when a DHCP lease changes them.
fn apply(net: &Network) -> Result<()> {
    let name = &net.iface.name;
    let mask = u32::MAX.checked_shl(32 - net.prefix_len).unwrap_or(0);
    iface::set_address(name, net.address, Ipv4Addr::from(mask))?;
    if let Some(gw) = net.gateway {
        iface::add_default_route(name, gw)?;
    }
    write_resolv_conf(&net.dns);
    Ok(())
}

/// Find the interface to deploy over and bring it up with carrier.
fn choose(bootif: Option<MacAddr>, device: Option<&str>) -> Result<Iface> {
    let sys = Path::new("/sys/class/net");
    let deadline = Instant::now() + LINK_TIMEOUT;
    let mut raised = std::collections::HashSet::new();
    loop {
        let all = iface::list(sys);
        let candidates: Vec<&Iface> = match (bootif, device) {
            (_, Some(dev)) => all.iter().filter(|i| i.name == dev).collect(),
            (Some(mac), None) => all.iter().filter(|i| i.mac == mac).collect(),
            (None, None) => all.iter().collect(),
        };
        for i in &candidates {
            if raised.insert(i.name.clone()) {
                iface::set_up(&i.name).with_context(|| format!("bringing up {}", i.name))?;
            }
        }
        if let Some(i) = candidates.iter().find(|i| iface::has_carrier(&i.name)) {
            return Ok((*i).clone());
        }
        if Instant::now() >= deadline {
            let seen: Vec<String> = all
                .iter()
                .map(|i| format!("{} ({})", i.name, i.mac))
                .collect();
            let seen = if seen.is_empty() {
                "none".to_string()
            } else {
                seen.join(", ")
            };
            return Err(match (bootif, device, candidates.is_empty()) {
                (_, Some(dev), true) => {
                    anyhow!("interface {dev} named by ip= does not exist; interfaces: {seen}")
                }
                (Some(mac), None, true) => {
                    anyhow!("no interface has the BOOTIF address {mac}; interfaces: {seen}")
                }
                (_, _, true) => {
                    anyhow!("no Ethernet interface found (is its driver in the initramfs?)")
                }
                _ => anyhow!(
                    "no link on {seen} after {}s (cable, switch port?)",
                    LINK_TIMEOUT.as_secs()
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Name resolution for server URLs that use host names. Best effort: a
/// read-only or missing /etc only matters if a name is used.
fn write_resolv_conf(dns: &[Ipv4Addr]) {
    if dns.is_empty() {
        return;
    }
    let text: String = dns.iter().map(|d| format!("nameserver {d}\n")).collect();
    if let Err(e) =
        std::fs::create_dir_all("/etc").and_then(|_| std::fs::write("/etc/resolv.conf", text))
    {
        log::debug!("writing /etc/resolv.conf: {e}");
    }
}
