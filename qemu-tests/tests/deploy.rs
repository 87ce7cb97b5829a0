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
use drover_qemu_tests::testos::{blank_disk, raw_copy, run, store};
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
    blank_disk(&disk, "1G")?;

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
    raw_copy(&disk, &raw)?;
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

/// A failed deploy, seen on the console: the agent names the problem,
/// powers off as `deploy.on-error` says, and leaves no bootable table.
fn deploy_fails(
    name: &str,
    store: &std::path::Path,
    disk_size: &str,
    expect: &str,
) -> Result<Vec<u8>> {
    let Some(env) = TestEnv::start(name, &[Need::Qemu, Need::Netboot])? else {
        return Ok(Vec::new());
    };
    let art = Artifacts::locate()?;
    let bin = artifacts::server_bin()?;
    let disk = env.dir().join("disk.qcow2");
    blank_disk(&disk, disk_size)?;
    let lab = PxeLab::start(env.procs(), &bin, |ns| {
        ServerConfig::new(ns, &art.kernel, &art.initrd)
            .store(store)
            .deploy("on_error", "poweroff")
    })?;
    let vm = lab
        .vm("deploy")
        .mac("52:54:00:d0:00:10")
        .disk(&disk)
        .spawn(env.procs())?;
    let err = vm.wait_for_line("drover: error: ", TIMEOUT)?;
    ensure!(err.contains(expect), "expected {expect:?} in {err}");
    vm.wait_for_line("drover: on-error=poweroff: powering off", TIMEOUT)?;
    vm.wait_exit(TIMEOUT)?;
    let ns_name = lab.ns.name().to_owned();
    drop(vm);
    drop(lab);
    // The first MiB of the disk as the VM left it.
    let raw = env.dir().join("disk.raw");
    raw_copy(&disk, &raw)?;
    let mut head = vec![0u8; 1 << 20];
    std::io::Read::read_exact(&mut std::fs::File::open(&raw)?, &mut head)?;
    std::fs::remove_file(&raw)?;
    env.assert_clean(&[&ns_name])?;
    Ok(head)
}

/// A copy of the good store, for tampering.
fn store_copy(art: &Artifacts, name: &str) -> Result<std::path::PathBuf> {
    let good = store(art)?;
    let copy = artifacts::target_dir()
        .join("qemu-tests")
        .join(name)
        .join("store");
    let _ = std::fs::remove_dir_all(&copy);
    std::fs::create_dir_all(copy.join("demo"))?;
    run(Command::new("cp")
        .arg("-a")
        .arg(good.join("demo/1.0"))
        .arg(copy.join("demo/1.0")))?;
    Ok(copy)
}

#[test]
fn deploy_corrupted_payload_is_refused() -> Result<()> {
    let art = Artifacts::locate()?;
    let store = store_copy(&art, "corrupted-store")?;
    // The last byte of the payload: inside the root tar's last chunk, so the
    // ESP is already written when the bad chunk arrives.
    let payload = store.join("demo/1.0/payload");
    let mut p = std::fs::read(&payload)?;
    let last = p.len() - 1;
    p[last] ^= 0xff;
    std::fs::write(&payload, p)?;
    let head = deploy_fails(
        "deploy_corrupted_payload_is_refused",
        &store,
        "1G",
        "SHA-256",
    )?;
    // Written partitions are left, but the partition table is wiped.
    ensure!(
        head.iter().all(|&b| b == 0),
        "the partition table of a failed deploy was not wiped"
    );
    Ok(())
}

#[test]
fn deploy_wrong_signature_is_refused() -> Result<()> {
    let art = Artifacts::locate()?;
    let store = store_copy(&art, "wrong-key-store")?;
    let manifest = std::fs::read(store.join("demo/1.0/manifest.json"))?;
    let other = std::fs::read(store.join("demo/1.0/manifest.sig"))?;
    ensure!(
        manifest.len() > 64 && other.len() == 64,
        "unexpected image files"
    );
    // A signature of the right length that is not the trusted key's.
    let mut sig = other;
    sig[0] ^= 1;
    std::fs::write(store.join("demo/1.0/manifest.sig"), sig)?;
    let head = deploy_fails(
        "deploy_wrong_signature_is_refused",
        &store,
        "1G",
        "does not match the trusted key",
    )?;
    ensure!(
        head.iter().all(|&b| b == 0),
        "the disk was written although the signature was refused"
    );
    Ok(())
}

#[test]
fn deploy_disk_too_small_is_refused() -> Result<()> {
    let art = Artifacts::locate()?;
    let store = store(&art)?;
    let head = deploy_fails(
        "deploy_disk_too_small_is_refused",
        &store,
        "32M",
        "too small",
    )?;
    ensure!(head.iter().all(|&b| b == 0), "a too-small disk was written");
    Ok(())
}
