//! The first real deployment: a blank disk, PXE (dnsmasq + iPXE), the agent
//! deploys the test OS over HTTP from drover-server, verifies, reboots;
//! then the VM boots from its disk and the test OS prints its marker.
//!
//! The test OS (qemu-tests/testos/build.sh) is built once per run and
//! imported with `drover-server image import`, signed with the key `make
//! initramfs` baked into the initrd (target/drover/keys).

use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use drover_qemu_tests::artifacts::{self, Artifacts};
use drover_qemu_tests::lab::PxeLab;
use drover_qemu_tests::qemu::{DiskBus, Firmware, Nic, VmBuilder};
use drover_qemu_tests::server::ServerConfig;
use drover_qemu_tests::testos::{run, store};
use drover_qemu_tests::{Need, TestEnv};

const TIMEOUT: Duration = Duration::from_secs(300);

fn deploy_and_boot(
    name: &str,
    firmware: Firmware,
    nic: Nic,
    bus: DiskBus,
    mac: &str,
) -> Result<()> {
    let mut needs = vec![Need::Qemu, Need::Netboot];
    if firmware == Firmware::Uefi {
        needs.push(Need::Uefi);
    }
    let Some(env) = TestEnv::start(name, &needs)? else {
        return Ok(());
    };
    let art = Artifacts::locate()?;
    let store = store(&art)?;
    let bin = artifacts::server_bin()?;
    let disk = env.dir().join("disk.qcow2");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&disk)
        .arg("1G"))?;

    let lab = PxeLab::start(env.procs(), &bin, |ns| {
        ServerConfig::new(ns, &art.kernel, &art.initrd)
            .store(&store)
            .deploy("on_error", "poweroff")
    })?;
    let vm = lab
        .vm("deploy")
        .firmware(firmware)
        .nic(nic)
        .mac(mac)
        .disk(&disk)
        .disk_bus(bus)
        .spawn(env.procs())?;
    vm.wait_for_line("drover: lease: ", TIMEOUT)?;
    vm.wait_for_line("signed by the trusted key", TIMEOUT)?;
    let dev = if bus == DiskBus::Nvme {
        "/dev/nvme0n1"
    } else {
        "/dev/vda"
    };
    vm.wait_for_line(format!("drover: disk: {dev} "), TIMEOUT)?;
    vm.wait_for_line(format!("drover: deployed demo@1.0 to {dev}"), TIMEOUT)?;
    vm.wait_for_line("drover: deploy finished: rebooting", TIMEOUT)?;
    vm.wait_exit(TIMEOUT)?;
    let deployed_at = vm.elapsed();
    let slog = lab.server.log();
    ensure!(
        slog.contains("/images/demo/1.0/payload -> 206"),
        "no ranged payload fetch:\n{slog}"
    );
    let ns_name = lab.ns.name().to_owned();
    drop(vm);
    drop(lab);

    // The disk, inspected from outside: a sound GPT and a clean ext4.
    let raw = env.dir().join("disk.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(&disk)
        .arg(&raw))?;
    let v = run(Command::new("sgdisk").arg("-v").arg(&raw))?;
    ensure!(v.contains("No problems found"), "{v}");
    let info = run(Command::new("sgdisk").arg("-i2").arg(&raw))?;
    let first: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("First sector: "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no partition 2:\n{info}"))?;
    let fsck =
        run(Command::new("e2fsck")
            .args(["-fn", &format!("{}?offset={}", raw.display(), first * 512)]));
    if let Err(e) = fsck {
        // Older e2fsck has no ?offset=: copy the partition out.
        let part = env.dir().join("root.ext4");
        run(Command::new("dd")
            .arg(format!("if={}", raw.display()))
            .arg(format!("of={}", part.display()))
            .args(["bs=512", &format!("skip={first}"), "status=none"]))
        .with_context(|| format!("after {e:#}"))?;
        run(Command::new("e2fsck").arg("-fn").arg(&part))?;
    }
    std::fs::remove_file(&raw)?;

    // Then the machine boots from that disk alone.
    let vm = VmBuilder::new("boot")
        .firmware(firmware)
        .disk(&disk)
        .disk_bus(bus)
        .spawn(env.procs())?;
    vm.wait_for_line("DROVER-TEST-OS image=demo version=1.0", TIMEOUT)?;
    vm.wait_for_line("DROVER-TEST-OS files=ok", TIMEOUT)?;
    vm.wait_for_line("DROVER-TEST-OS meta=ok", TIMEOUT)?;
    vm.wait_exit(TIMEOUT)?;
    eprintln!(
        "{name}: deployed in {:.1}s, booted the deployed OS in {:.1}s",
        deployed_at.as_secs_f64(),
        vm.elapsed().as_secs_f64()
    );
    drop(vm);
    env.assert_clean(&[&ns_name])
}

#[test]
fn deploy_bios_virtio_net_virtio_blk() -> Result<()> {
    deploy_and_boot(
        "deploy_bios_virtio_net_virtio_blk",
        Firmware::Bios,
        Nic::VirtioNet,
        DiskBus::VirtioBlk,
        "52:54:00:d0:00:01",
    )
}

#[test]
fn deploy_uefi_e1000_nvme() -> Result<()> {
    deploy_and_boot(
        "deploy_uefi_e1000_nvme",
        Firmware::Uefi,
        Nic::E1000,
        DiskBus::Nvme,
        "52:54:00:d0:00:02",
    )
}

#[test]
fn deploy_bios_e1000_nvme() -> Result<()> {
    deploy_and_boot(
        "deploy_bios_e1000_nvme",
        Firmware::Bios,
        Nic::E1000,
        DiskBus::Nvme,
        "52:54:00:d0:00:03",
    )
}

#[test]
fn deploy_uefi_virtio_net_virtio_blk() -> Result<()> {
    deploy_and_boot(
        "deploy_uefi_virtio_net_virtio_blk",
        Firmware::Uefi,
        Nic::VirtioNet,
        DiskBus::VirtioBlk,
        "52:54:00:d0:00:04",
    )
}
