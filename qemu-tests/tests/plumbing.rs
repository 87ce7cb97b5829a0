//! The PXE chain with the host's own Debian kernel and initrd instead of
//! drover's: DHCP → TFTP `drover.ipxe` → HTTP boot script → HTTP kernel +
//! initrd → the kernel runs `/init`. Independent of the agent, so when a
//! boot test fails these tell plumbing from agent problems.
//!
//! Ignored by default (they need `/boot/vmlinuz-*` + `initrd.img-*`, i.e.
//! the `linux-image-amd64` package); run them with
//! `cargo test -p drover-qemu-tests --test plumbing -- --ignored --nocapture`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use drover_qemu_tests::artifacts::{self, Artifacts};
use drover_qemu_tests::lab::PxeLab;
use drover_qemu_tests::qemu::{Firmware, Nic};
use drover_qemu_tests::server::ServerConfig;
use drover_qemu_tests::{Need, TestEnv};

const TIMEOUT: Duration = Duration::from_secs(240);

/// The newest `/boot/vmlinuz-V` that has an `/boot/initrd.img-V`, copied
/// into `dir`.
fn host_kernel(dir: &Path) -> Result<Artifacts> {
    let mut versions: Vec<String> = std::fs::read_dir("/boot")?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let v = name.strip_prefix("vmlinuz-")?.to_owned();
            Path::new("/boot")
                .join(format!("initrd.img-{v}"))
                .is_file()
                .then_some(v)
        })
        .collect();
    versions.sort();
    let v = versions
        .pop()
        .context("no /boot/vmlinuz-* with an initrd.img (apt-get install linux-image-amd64)")?;
    std::fs::create_dir_all(dir)?;
    for (from, to) in [("vmlinuz", "vmlinuz"), ("initrd.img", "initrd.img")] {
        let src = PathBuf::from(format!("/boot/{from}-{v}"));
        std::fs::copy(&src, dir.join(to)).with_context(|| format!("copying {}", src.display()))?;
    }
    Artifacts::in_dir(dir)
}

fn pxe_host_kernel(name: &str, firmware: Firmware, nic: Nic, mac: &str) -> Result<()> {
    let mut needs = vec![Need::Qemu, Need::Netboot];
    if firmware == Firmware::Uefi {
        needs.push(Need::Uefi);
    }
    let Some(env) = TestEnv::start(name, &needs)? else {
        return Ok(());
    };
    let art = host_kernel(&env.dir().join("artifacts"))?;
    let bin = artifacts::server_bin()?;
    let lab = PxeLab::start(env.procs(), &bin, |ns| {
        ServerConfig::new(ns, &art.kernel, &art.initrd)
    })?;
    let vm = lab
        .vm("vm")
        .firmware(firmware)
        .nic(nic)
        .mac(mac)
        .spawn(env.procs())?;

    vm.wait_for_line(format!("drover: deploying {mac} (image demo)"), TIMEOUT)?;
    vm.wait_for_line("Linux version", TIMEOUT)?;
    let cmdline = vm.wait_for_line("Command line:", TIMEOUT)?;
    ensure!(cmdline.contains("deploy.image=demo"), "{cmdline}");
    ensure!(cmdline.ends_with("console=ttyS0"), "{cmdline}");
    vm.wait_for_line("Run /init as init process", TIMEOUT)?;
    eprintln!(
        "{name}: PXE to /init in {:.1} s",
        vm.elapsed().as_secs_f64()
    );

    let log = lab.server.log();
    ensure!(log.contains("GET /files/vmlinuz -> 200"), "{log}");
    ensure!(log.contains("GET /files/initrd.img -> 200"), "{log}");
    ensure!(
        lab.dnsmasq.log().contains("drover.ipxe to 10.77.0."),
        "{}",
        lab.dnsmasq.log()
    );

    let ns_name = lab.ns.name().to_owned();
    drop(vm);
    drop(lab);
    env.assert_clean(&[&ns_name])
}

#[test]
#[ignore = "needs the host's /boot kernel; run with --ignored"]
fn plumbing_pxe_bios_virtio_host_kernel() -> Result<()> {
    pxe_host_kernel(
        "plumbing_pxe_bios_virtio_host_kernel",
        Firmware::Bios,
        Nic::VirtioNet,
        "52:54:00:12:34:11",
    )
}

#[test]
#[ignore = "needs the host's /boot kernel; run with --ignored"]
fn plumbing_pxe_uefi_e1000_host_kernel() -> Result<()> {
    pxe_host_kernel(
        "plumbing_pxe_uefi_e1000_host_kernel",
        Firmware::Uefi,
        Nic::E1000,
        "52:54:00:12:34:12",
    )
}
