//! Boot drover's kernel + initrd in QEMU and follow the agent's console
//! milestones (`drover: …` lines).
//!
//! Needs root, QEMU, dnsmasq, OVMF (packages qemu-system-x86 ipxe-qemu ovmf
//! dnsmasq-base iproute2) and the artifacts of `make initramfs`
//! (`target/drover/{vmlinuz,initrd.img}`, or `DROVER_ARTIFACTS=DIR`). A
//! missing prerequisite fails the test with what to install;
//! `DROVER_SKIP_QEMU_TESTS=1` turns every test here into a passing no-op.
//! Logs (console, QEMU, dnsmasq, drover-server) are kept in
//! `target/qemu-tests/<test>/`.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use drover_qemu_tests::artifacts::{self, Artifacts};
use drover_qemu_tests::lab::PxeLab;
use drover_qemu_tests::qemu::{Firmware, Nic, Vm, VmBuilder};
use drover_qemu_tests::server::ServerConfig;
use drover_qemu_tests::{Need, TestEnv};
use regex::Regex;

/// Per milestone. Alone, a TCG guest reaches `/init` in ~5 s (direct) or
/// ~20–30 s (PXE); the tests of this file run in parallel on two cores, so
/// leave room.
const TIMEOUT: Duration = Duration::from_secs(240);

/// `key=value` from a `drover: lease: …` line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// The milestones every boot passes: options, modules, link, lease.
/// Returns the lease line.
fn expect_agent_up(vm: &Vm, servers: &str, mac: &str) -> Result<String> {
    vm.wait_for_line("drover: agent ", TIMEOUT)?;
    let opts = vm.wait_for_line("drover: options parsed: ", TIMEOUT)?;
    ensure!(
        opts.contains(&format!("image=demo mode=http servers={servers} ")),
        "{opts}"
    );
    ensure!(opts.contains("on-error=poweroff"), "{opts}");
    vm.wait_for_line(Regex::new(r"drover: modules loaded: [1-9]")?, TIMEOUT)?;
    vm.wait_for_line(
        Regex::new(&format!(r"drover: link up: \S+ mac={mac}"))?,
        TIMEOUT,
    )?;
    vm.wait_for_line("drover: lease: ", TIMEOUT)
}

/// Without a deploy transport (or an image) the agent reports an error and
/// follows `deploy.on-error=poweroff`: QEMU exits by itself.
fn expect_error_then_poweroff(vm: &Vm) -> Result<()> {
    vm.wait_for_line("drover: error: ", TIMEOUT)?;
    vm.wait_for_line("drover: on-error=poweroff: powering off", TIMEOUT)?;
    vm.wait_exit(TIMEOUT)?;
    Ok(())
}

#[test]
fn direct_boot_user_net() -> Result<()> {
    let Some(env) = TestEnv::start("direct_boot_user_net", &[Need::Qemu])? else {
        return Ok(());
    };
    let art = Artifacts::locate()?;
    let mac = "52:54:00:12:34:56";
    let vm = VmBuilder::new("vm")
        .user_net()
        .mac(mac)
        .direct_boot(
            &art.kernel,
            &art.initrd,
            "deploy.server=http://10.0.2.2:8080 deploy.image=demo deploy.on-error=poweroff console=ttyS0",
        )
        .spawn(env.procs())?;

    let lease = expect_agent_up(&vm, "http://10.0.2.2:8080", mac)?;
    // QEMU's user-mode network: fixed guest address, gateway = DHCP server.
    ensure!(field(&lease, "address") == Some("10.0.2.15/24"), "{lease}");
    ensure!(field(&lease, "gateway") == Some("10.0.2.2"), "{lease}");
    expect_error_then_poweroff(&vm)?;
    eprintln!(
        "direct_boot_user_net: powered off after {:.1} s",
        vm.elapsed().as_secs_f64()
    );

    drop(vm);
    env.assert_clean(&[])
}

/// Static `ip=` with `BOOTIF` picking the interface (e1000 this time): no
/// DHCP, the address from the command line.
#[test]
fn direct_boot_static_ip() -> Result<()> {
    let Some(env) = TestEnv::start("direct_boot_static_ip", &[Need::Qemu])? else {
        return Ok(());
    };
    let art = Artifacts::locate()?;
    let mac = "52:54:00:aa:bb:cc";
    let vm = VmBuilder::new("vm")
        .user_net()
        .nic(Nic::E1000)
        .mac(mac)
        .direct_boot(
            &art.kernel,
            &art.initrd,
            "deploy.server=http://10.0.2.2:8080 deploy.image=demo deploy.on-error=poweroff \
             BOOTIF=01-52-54-00-aa-bb-cc ip=10.0.2.50::10.0.2.2:255.255.255.0::eth0:off console=ttyS0",
        )
        .spawn(env.procs())?;
    vm.wait_for_line(
        Regex::new(&format!(r"drover: link up: eth0 mac={mac}"))?,
        TIMEOUT,
    )?;
    let line = vm.wait_for_line("drover: static: ", TIMEOUT)?;
    ensure!(field(&line, "address") == Some("10.0.2.50/24"), "{line}");
    ensure!(field(&line, "gateway") == Some("10.0.2.2"), "{line}");
    expect_error_then_poweroff(&vm)?;
    drop(vm);
    env.assert_clean(&[])
}

#[test]
fn bad_option_powers_off() -> Result<()> {
    let Some(env) = TestEnv::start("bad_option_powers_off", &[Need::Qemu])? else {
        return Ok(());
    };
    let art = Artifacts::locate()?;
    let vm = VmBuilder::new("vm")
        .user_net()
        .direct_boot(
            &art.kernel,
            &art.initrd,
            "deploy.server=http://10.0.2.2:8080 deploy.image=demo deploy.bogus=1 \
             deploy.on-error=poweroff console=ttyS0",
        )
        .spawn(env.procs())?;

    let err = vm.wait_for_line("drover: error: ", TIMEOUT)?;
    // The value is shown quoted (`deploy.bogus="1"`): kernel-cmdline escapes
    // what it echoes so a garbage value cannot drive the terminal.
    ensure!(err.contains("unknown option deploy.bogus="), "{err}");
    // The list of valid options, so the operator can fix the typo.
    ensure!(
        err.contains("valid options: ")
            && err.contains("deploy.image")
            && err.contains("deploy.on-error"),
        "{err}"
    );
    // on-error is still honoured although the command line did not parse.
    vm.wait_for_line("drover: on-error=poweroff: powering off", TIMEOUT)?;
    vm.wait_exit(TIMEOUT)?;

    drop(vm);
    env.assert_clean(&[])
}

/// The whole network boot: dnsmasq (DHCP + TFTP `drover.ipxe`), iPXE chains
/// to drover-server's `/boot/MAC.ipxe`, fetches kernel and initrd over HTTP,
/// the agent gets a lease from the same dnsmasq.
fn pxe_boot(name: &str, firmware: Firmware, nic: Nic, mac: &str) -> Result<()> {
    let mut needs = vec![Need::Qemu, Need::Netboot];
    if firmware == Firmware::Uefi {
        needs.push(Need::Uefi);
    }
    let Some(env) = TestEnv::start(name, &needs)? else {
        return Ok(());
    };
    let art = Artifacts::locate()?;
    let bin = artifacts::server_bin()?;
    let lab = PxeLab::start(env.procs(), &bin, |ns| {
        ServerConfig::new(ns, &art.kernel, &art.initrd).deploy("on_error", "poweroff")
    })?;
    let (config, server, dnsmasq, subnet) =
        (&lab.config, &lab.server, &lab.dnsmasq, lab.ns.subnet());
    let vm = lab
        .vm("vm")
        .firmware(firmware)
        .nic(nic)
        .mac(mac)
        .spawn(env.procs())?;

    // iPXE ran the server's script: its `echo` reaches the serial console
    // (SeaBIOS sercon / OVMF console) and the server logged the request.
    vm.wait_for_line(format!("drover: deploying {mac} (image demo)"), TIMEOUT)?;
    server.wait_for_log(".ipxe -> 200", Duration::from_secs(5))?;

    let lease = expect_agent_up(&vm, &config.public_url, mac)?;
    let address = field(&lease, "address")
        .and_then(|a| a.strip_suffix("/24"))
        .and_then(|a| a.parse::<Ipv4Addr>().ok())
        .with_context(|| format!("no address=IP/24 in {lease:?}"))?;
    ensure!(
        subnet.in_dhcp_range(address),
        "{address} not from dnsmasq's pool: {lease}"
    );
    let host = subnet.host.to_string();
    ensure!(field(&lease, "gateway") == Some(host.as_str()), "{lease}");
    ensure!(field(&lease, "server") == Some(host.as_str()), "{lease}");
    expect_error_then_poweroff(&vm)?;
    eprintln!(
        "{name}: powered off after {:.1} s",
        vm.elapsed().as_secs_f64()
    );

    // Each hop really happened: TFTP script, HTTP kernel and initrd.
    let dlog = dnsmasq.log();
    ensure!(
        dlog.contains("drover.ipxe to 10.77.0."),
        "no TFTP transfer in dnsmasq log:\n{dlog}"
    );
    let slog = server.log();
    ensure!(slog.contains("GET /files/vmlinuz -> 200"), "{slog}");
    ensure!(slog.contains("GET /files/initrd.img -> 200"), "{slog}");

    let ns_name = lab.ns.name().to_owned();
    drop(vm);
    drop(lab);
    env.assert_clean(&[&ns_name])
}

#[test]
fn pxe_boot_bios_virtio() -> Result<()> {
    pxe_boot(
        "pxe_boot_bios_virtio",
        Firmware::Bios,
        Nic::VirtioNet,
        "52:54:00:12:34:01",
    )
}

#[test]
fn pxe_boot_uefi_e1000() -> Result<()> {
    pxe_boot(
        "pxe_boot_uefi_e1000",
        Firmware::Uefi,
        Nic::E1000,
        "52:54:00:12:34:02",
    )
}
