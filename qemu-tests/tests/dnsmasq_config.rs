//! `drover-server dnsmasq-config` boots real VMs: the configuration it
//! prints is written to a file and run by dnsmasq as is (plus only flags
//! that manage the process: foreground, log, lease and pid files), and a
//! VM PXE-boots through it into the drover agent.
//!
//! - `--dhcp-range`: that dnsmasq is the DHCP server.
//! - `--proxy`: the site's own DHCP server (a second dnsmasq, in a second
//!   namespace joined to the same Ethernet segment by a veth pair, handing
//!   out addresses and nothing else) leases the address; drover's dnsmasq
//!   only adds the boot information (proxy DHCP).
//!
//! Needs what boot.rs needs (root, QEMU, dnsmasq, QEMU's iPXE ROMs, the
//! artifacts of `make initramfs server`); `DROVER_SKIP_QEMU_TESTS=1` turns
//! the tests into passing no-ops. Logs, the generated configurations and
//! the lease files are kept in `target/qemu-tests/<test>/`.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use drover_qemu_tests::artifacts::{self, Artifacts};
use drover_qemu_tests::dnsmasq::Dnsmasq;
use drover_qemu_tests::netns::{Netns, Subnet, BRIDGE};
use drover_qemu_tests::qemu::{Firmware, Vm, VmBuilder};
use drover_qemu_tests::server::{Server, ServerConfig};
use drover_qemu_tests::{Need, TestEnv};
use regex::Regex;

/// Per milestone; a PXE boot to the agent takes ~25–60 s under TCG, more
/// when other QEMU tests share the two cores.
const TIMEOUT: Duration = Duration::from_secs(300);

/// `key=value` from a `drover: lease: …` line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// `drover-server dnsmasq-config ARGS --config <the server's config>`, run
/// as an operator would, written to `<log dir>/<file>`. Returns the path
/// and the text.
fn generate(server: &Server, dir: &Path, file: &str, args: &[&str]) -> Result<(String, String)> {
    let mut all = vec!["dnsmasq-config"];
    all.extend_from_slice(args);
    let out = server.cli(&all)?;
    ensure!(
        out.code == Some(0) && out.stderr.is_empty(),
        "drover-server {} failed: {out:?}",
        all.join(" ")
    );
    let path = dir.join(file);
    std::fs::write(&path, &out.stdout).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("{}:\n{}", path.display(), out.stdout);
    Ok((path.display().to_string(), out.stdout))
}

/// The lines of `text` that are settings (no comments, no blank lines).
fn settings(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// The boot as far as this file cares, on a VM that PXE-boots from `tap0`
/// of `ns` with MAC `mac`: iPXE ran drover's boot entry, the agent came up
/// and got a lease; then, with no image store, the manifest fetch fails and
/// the agent powers off (`on_error=poweroff`). Returns the lease line and
/// the leased address.
fn boot_to_agent(server: &Server, vm: &Vm, mac: &str) -> Result<(String, Ipv4Addr)> {
    // iPXE got the URL of drover's boot entry from DHCP and ran it: the
    // entry's `echo` is on the console, the server logged the request.
    vm.wait_for_line(format!("drover: deploying {mac} (image demo)"), TIMEOUT)?;
    server.wait_for_log(".ipxe -> 200", Duration::from_secs(5))?;
    vm.wait_for_line("drover: agent ", TIMEOUT)?;
    vm.wait_for_line(
        Regex::new(&format!(r"drover: link up: \S+ mac={mac}"))?,
        TIMEOUT,
    )?;
    let lease = vm.wait_for_line("drover: lease: ", TIMEOUT)?;
    let address = field(&lease, "address")
        .and_then(|a| a.strip_suffix("/24"))
        .and_then(|a| a.parse::<Ipv4Addr>().ok())
        .with_context(|| format!("no address=IP/24 in {lease:?}"))?;
    // The agent asked drover-server for the image's manifest.
    server.wait_for_log("/images/demo/", TIMEOUT)?;
    vm.wait_for_line("drover: error: ", TIMEOUT)?;
    vm.wait_for_line("drover: on-error=poweroff: powering off", TIMEOUT)?;
    vm.wait_exit(TIMEOUT)?;
    // The server's record of the node: the boot entry it served.
    let node = server.node_show(mac)?;
    eprintln!("node show {mac}:\n{node}");
    Ok((lease, address))
}

/// drover-server in a new namespace (bridge 10.77.0.1/24, `tap0`), with no
/// image store.
fn server_in(env: &TestEnv, ns: &Netns) -> Result<Server> {
    let art = Artifacts::locate()?;
    let bin = artifacts::server_bin()?;
    ns.add_tap("tap0")?;
    Server::start(
        env.procs(),
        ns,
        &bin,
        ServerConfig::new(ns, &art.kernel, &art.initrd).deploy("on_error", "poweroff"),
    )
}

/// A VM that boots from the network first; its PXE client is the NIC's
/// iPXE ROM (QEMU's), under SeaBIOS and OVMF alike.
fn netboot_vm(env: &TestEnv, ns: &Netns, firmware: Firmware, mac: &str) -> Result<Vm> {
    VmBuilder::new("vm")
        .tap(ns, "tap0")
        .netboot()
        .firmware(firmware)
        .mac(mac)
        .spawn(env.procs())
}

fn range_boots(name: &str, firmware: Firmware, mac: &str) -> Result<()> {
    let mut needs = vec![Need::Qemu, Need::Netboot];
    if firmware == Firmware::Uefi {
        needs.push(Need::Uefi);
    }
    let Some(env) = TestEnv::start(name, &needs)? else {
        return Ok(());
    };
    let ns = Netns::create("drover-qt", Subnet::default())?;
    let subnet = ns.subnet();
    let server = server_in(&env, &ns)?;
    let (lo, hi) = subnet.dhcp_range();
    let range = format!("{lo},{hi},{}", subnet.netmask());
    let (conf, text) = generate(
        &server,
        env.dir(),
        "drover-dnsmasq.conf",
        &["--interface", BRIDGE, "--dhcp-range", &range],
    )?;
    let lines = settings(&text);
    ensure!(
        lines.contains(&format!("dhcp-range={range},12h").as_str())
            && lines.contains(&"bind-dynamic"),
        "{text}"
    );
    let dnsmasq = Dnsmasq::start_with_conf(env.procs(), &ns, "dnsmasq", Path::new(&conf))?;
    let vm = netboot_vm(&env, &ns, firmware, mac)?;

    let (lease, address) = boot_to_agent(&server, &vm, mac)?;
    ensure!(
        subnet.in_dhcp_range(address),
        "{address} not from the generated dhcp-range {range}: {lease}"
    );
    let host = subnet.host.to_string();
    ensure!(field(&lease, "server") == Some(host.as_str()), "{lease}");
    eprintln!(
        "{name}: powered off after {:.1} s",
        vm.elapsed().as_secs_f64()
    );
    // That dnsmasq leased the address (to iPXE and to the agent).
    let dlog = dnsmasq.log();
    ensure!(
        dlog.contains(&format!("DHCPACK({BRIDGE}) {address} {mac}")),
        "no DHCPACK of {address} to {mac} in dnsmasq's log:\n{dlog}"
    );
    let leases = dnsmasq.leases();
    ensure!(
        leases.contains(&format!("{mac} {address} ")),
        "{mac} {address} not in the lease file:\n{leases}"
    );

    let ns_name = ns.name().to_owned();
    drop(vm);
    drop(dnsmasq);
    drop(server);
    drop(ns);
    env.assert_clean(&[&ns_name])
}

#[test]
fn dnsmasq_config_range_boots_a_vm() -> Result<()> {
    range_boots(
        "dnsmasq_config_range_boots_a_vm",
        Firmware::Bios,
        "52:54:00:12:35:01",
    )
}

/// The site's own DHCP server: addresses only, no boot options.
const SITE_HOST: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// Its interface, in its own namespace.
const SITE_IF: &str = "eth0";
const SITE_RANGE: (Ipv4Addr, Ipv4Addr) =
    (Ipv4Addr::new(10, 77, 0, 50), Ipv4Addr::new(10, 77, 0, 59));

fn proxy_boots(name: &str, firmware: Firmware, mac: &str) -> Result<()> {
    let mut needs = vec![Need::Qemu, Need::Netboot];
    if firmware == Firmware::Uefi {
        needs.push(Need::Uefi);
    }
    let Some(env) = TestEnv::start(name, &needs)? else {
        return Ok(());
    };
    let ns = Netns::create("drover-qt", Subnet::default())?;
    let subnet = ns.subnet();
    // The site's DHCP server is another host (two DHCP servers in one
    // namespace would fight over port 67) on the same Ethernet segment:
    // its own namespace, plugged into the bridge by a veth pair.
    let site_ns = Netns::create_host(
        "drover-qt",
        Subnet {
            host: SITE_HOST,
            prefix_len: subnet.prefix_len,
        },
    )?;
    site_ns.veth_to_bridge(&ns, SITE_IF, "veth-site")?;
    let server = server_in(&env, &ns)?;

    let (lo, hi) = SITE_RANGE;
    let site_conf = env.dir().join("site-dhcp.conf");
    std::fs::write(
        &site_conf,
        format!(
            "# The site's DHCP server: addresses, nothing about booting.\n\
             port=0\n\
             interface={SITE_IF}\n\
             bind-interfaces\n\
             dhcp-range={lo},{hi},{},1h\n\
             no-ping\n\
             log-dhcp\n",
            subnet.netmask()
        ),
    )?;
    let site = Dnsmasq::start_with_conf(env.procs(), &site_ns, "site-dhcp", &site_conf)?;

    let network = subnet.network().to_string();
    let (conf, text) = generate(
        &server,
        env.dir(),
        "drover-dnsmasq.conf",
        &["--interface", BRIDGE, "--proxy", &network],
    )?;
    ensure!(
        settings(&text).contains(&format!("dhcp-range={network},proxy").as_str()),
        "{text}"
    );
    let proxy = Dnsmasq::start_with_conf(env.procs(), &ns, "dnsmasq", Path::new(&conf))?;
    let vm = netboot_vm(&env, &ns, firmware, mac)?;

    let (lease, address) = boot_to_agent(&server, &vm, mac)?;
    ensure!(
        (lo..=hi).contains(&address),
        "{address} not from the site's range {lo}–{hi}: {lease}"
    );
    let site_host = SITE_HOST.to_string();
    ensure!(
        field(&lease, "server") == Some(site_host.as_str()),
        "{lease}"
    );
    eprintln!(
        "{name}: powered off after {:.1} s",
        vm.elapsed().as_secs_f64()
    );
    // The site's server leased the address; drover's dnsmasq leased none
    // but answered the PXE client as a proxy.
    let leases = site.leases();
    ensure!(
        leases.contains(&format!("{mac} {address} ")),
        "{mac} {address} not in the site server's lease file:\n{leases}"
    );
    ensure!(
        proxy.leases().trim().is_empty(),
        "drover's proxy dnsmasq leased addresses:\n{}",
        proxy.leases()
    );
    let plog = proxy.log();
    ensure!(
        plog.contains(&format!("PXE({BRIDGE}) {mac} proxy")),
        "no proxy-DHCP answer to {mac} in drover's dnsmasq log:\n{plog}"
    );
    let slog = site.log();
    ensure!(
        !slog.contains("bootfile name"),
        "the site's server handed out a boot file:\n{slog}"
    );
    if firmware == Firmware::Uefi {
        // iPXE for x86-64 UEFI says client-arch 7, which dnsmasq calls
        // BC_EFI: the generated file's BC_EFI line answered it.
        ensure!(
            plog.contains("PXEClient:Arch:00007")
                && plog.contains(&format!("bootfile name: {}", server.config().chain_url())),
            "no boot entry URL for the client-arch 7 iPXE in drover's dnsmasq log:\n{plog}"
        );
    }

    let names = [ns.name().to_owned(), site_ns.name().to_owned()];
    drop(vm);
    drop(proxy);
    drop(site);
    drop(server);
    drop(site_ns);
    drop(ns);
    env.assert_clean(&[&names[0], &names[1]])
}

#[test]
fn dnsmasq_config_proxy_boots_a_vm() -> Result<()> {
    proxy_boots(
        "dnsmasq_config_proxy_boots_a_vm",
        Firmware::Bios,
        "52:54:00:12:35:02",
    )
}

/// UEFI (OVMF with the NIC's iPXE EFI ROM, which sends client-arch 7).
#[test]
fn dnsmasq_config_proxy_boots_a_uefi_vm() -> Result<()> {
    proxy_boots(
        "dnsmasq_config_proxy_boots_a_uefi_vm",
        Firmware::Uefi,
        "52:54:00:12:35:03",
    )
}
