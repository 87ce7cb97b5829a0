//! The first real deployment: a blank disk, PXE (dnsmasq + iPXE), the agent
//! deploys the test OS over HTTP from drover-server, verifies, reports,
//! reboots; the server answers the next PXE request with localboot and the
//! VM boots from its disk, where the test OS prints its marker.
//!
//! The test OS (qemu-tests/testos/build.sh) is built once per run and
//! imported with `drover-server image import`, signed with the key `make
//! initramfs` baked into the initrd (target/drover/keys).

use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use drover_qemu_tests::artifacts::{self, Artifacts};
use drover_qemu_tests::deployed;
use drover_qemu_tests::lab::PxeLab;
use drover_qemu_tests::procs::Procs;
use drover_qemu_tests::qemu::{DiskBus, Firmware, Nic, Vm};
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
    // One machine, as in a rack: it netboots, the agent deploys and reports
    // success, the machine reboots, the server answers its second PXE
    // request with localboot (iPXE `exit`), and the firmware boots the
    // deployed disk.
    let vm = lab
        .vm("deploy")
        .firmware(firmware)
        .nic(nic)
        .mac(mac)
        .disk(&disk)
        .disk_bus(bus)
        .allow_reboot(true)
        .spawn(env.procs())?;
    vm.wait_for_line("drover: lease: ", TIMEOUT)?;
    vm.wait_for_line("signed by the trusted key", TIMEOUT)?;
    deployed::wait_disk_chosen(&vm, bus, TIMEOUT)?;
    deployed::wait_written(&vm, bus, TIMEOUT)?;
    vm.wait_for_line("drover: deploy finished: rebooting", TIMEOUT)?;
    let deployed_at = vm.elapsed();
    // The server's record, before the machine comes back.
    deployed::assert_node_done(&lab.server, mac, &store)?;
    // iPXE prints the server's localboot entry, then the deployed OS boots.
    let booted_at = deployed::wait_deployed_os(&vm, mac, TIMEOUT)?;
    vm.wait_exit(TIMEOUT)?;
    let slog = lab.server.log();
    ensure!(
        slog.contains("/images/demo/1.0/payload -> 206"),
        "no ranged payload fetch:\n{slog}"
    );
    // The agent fetched the deploy entry once: the second request got localboot.
    let served = lab.server.node_show(mac)?;
    ensure!(served.contains("localboot"), "{served}");
    let ns_name = lab.ns.name().to_owned();
    drop(vm);
    drop(lab);
    // The disk, inspected from outside: a sound GPT and a clean ext4.
    deployed::check_disk(&disk, env.dir())?;
    eprintln!(
        "{name}: deployed in {:.1}s, deployed OS up {:.1}s later",
        deployed_at.as_secs_f64(),
        (booted_at - deployed_at).as_secs_f64()
    );
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

/// How a failed-deploy test sets up and disturbs its machine.
struct Failing<'a> {
    name: &'a str,
    store: &'a std::path::Path,
    /// The disk the VM gets: created blank at this size, or copied.
    disk: Disk<'a>,
    /// On the console after `drover: error: `.
    console: &'a str,
    /// In `drover-server node show` once the failure is reported.
    event: &'a str,
    /// Runs once the VM is started: what goes wrong meanwhile.
    meddle: &'a dyn Fn(&mut PxeLab, &Procs, &Vm) -> Result<()>,
}

enum Disk<'a> {
    Blank(&'a str),
    CopyOf(&'a std::path::Path),
}

const MAC_FAILING: &str = "52:54:00:d0:00:10";

/// A failed deploy, seen on the console and in the server's record: the
/// agent names the problem, reports it, powers off as `deploy.on-error`
/// says, and leaves no bootable table. Returns the first MiB of the disk.
fn deploy_fails(t: Failing<'_>) -> Result<Vec<u8>> {
    let Some(env) = TestEnv::start(t.name, &[Need::Qemu, Need::Netboot])? else {
        return Ok(Vec::new());
    };
    let art = Artifacts::locate()?;
    let bin = artifacts::server_bin()?;
    let disk = match t.disk {
        Disk::Blank(size) => {
            let disk = env.dir().join("disk.qcow2");
            blank_disk(&disk, size)?;
            disk
        }
        Disk::CopyOf(src) => {
            let disk = env.dir().join("disk.img");
            std::fs::copy(src, &disk)?;
            disk
        }
    };
    let mut lab = PxeLab::start(env.procs(), &bin, |ns| {
        ServerConfig::new(ns, &art.kernel, &art.initrd)
            .store(t.store)
            .deploy("on_error", "poweroff")
    })?;
    let vm = lab
        .vm("deploy")
        .mac(MAC_FAILING)
        .disk(&disk)
        .spawn(env.procs())?;
    (t.meddle)(&mut lab, env.procs(), &vm)?;
    let err = vm.wait_for_line("drover: error: ", TIMEOUT)?;
    ensure!(err.contains(t.console), "expected {:?} in {err}", t.console);
    vm.wait_for_line("drover: report: failure recorded", TIMEOUT)?;
    vm.wait_for_line("drover: on-error=poweroff: powering off", TIMEOUT)?;
    vm.wait_exit(TIMEOUT)?;
    let node = lab.server.node_show(MAC_FAILING)?;
    ensure!(node.contains("state: failed"), "{node}");
    let event = node
        .lines()
        .find(|l| l.contains("failure"))
        .with_context(|| format!("no failure event:\n{node}"))?;
    ensure!(event.contains(t.event), "expected {:?} in {event}", t.event);
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

fn leave_it(_: &mut PxeLab, _: &Procs, _: &Vm) -> Result<()> {
    Ok(())
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
    let head = deploy_fails(Failing {
        name: "deploy_corrupted_payload_is_refused",
        store: &store,
        disk: Disk::Blank("1G"),
        console: "SHA-256",
        event: "SHA-256",
        meddle: &leave_it,
    })?;
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
    let head = deploy_fails(Failing {
        name: "deploy_wrong_signature_is_refused",
        store: &store,
        disk: Disk::Blank("1G"),
        console: "does not match the trusted key",
        event: "does not match the trusted key",
        meddle: &leave_it,
    })?;
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
    let head = deploy_fails(Failing {
        name: "deploy_disk_too_small_is_refused",
        store: &store,
        disk: Disk::Blank("32M"),
        console: "too small",
        event: "disk: ",
        meddle: &leave_it,
    })?;
    ensure!(head.iter().all(|&b| b == 0), "a too-small disk was written");
    Ok(())
}

#[test]
fn deploy_non_empty_disk_is_refused_without_wipe() -> Result<()> {
    let art = Artifacts::locate()?;
    let store = store(&art)?;
    // A disk with an OS on it: the test OS's own disk image.
    let existing = art_testos_disk(&store)?;
    let before = std::fs::read(&existing)?;
    let head = deploy_fails(Failing {
        name: "deploy_non_empty_disk_is_refused_without_wipe",
        store: &store,
        disk: Disk::CopyOf(&existing),
        console: "already has a partition table",
        event: "without deploy.wipe=yes",
        meddle: &leave_it,
    })?;
    ensure!(
        head.is_empty() || head[..] == before[..head.len()],
        "a disk with a partition table was written without deploy.wipe"
    );
    Ok(())
}

#[test]
fn deploy_missing_image_is_reported() -> Result<()> {
    let art = Artifacts::locate()?;
    let store = store_copy(&art, "vanishing-store")?;
    // The boot entry pins demo@1.0; the image disappears before the agent
    // asks for it (an operator deleted it, a store on a failed mount).
    let gone = store.join("demo/1.0");
    let meddle = |lab: &mut PxeLab, _: &Procs, _: &Vm| -> Result<()> {
        lab.server
            .wait_for_log(&format!("/boot/{}.ipxe", url_mac(MAC_FAILING)), TIMEOUT)?;
        std::fs::rename(&gone, store.join("demo/gone"))?;
        Ok(())
    };
    deploy_fails(Failing {
        name: "deploy_missing_image_is_reported",
        store: &store,
        disk: Disk::Blank("1G"),
        console: "404",
        event: "manifest: ",
        meddle: &meddle,
    })?;
    Ok(())
}

#[test]
fn deploy_unreachable_server_is_reported_when_it_returns() -> Result<()> {
    let art = Artifacts::locate()?;
    let store = store(&art)?;
    // The server goes away once the agent runs (its kernel and initrd are
    // loaded), and comes back after the agent gave up: the failure report
    // waits for it.
    let meddle = |lab: &mut PxeLab, procs: &Procs, vm: &Vm| -> Result<()> {
        vm.wait_for_line("drover: agent ", TIMEOUT)?;
        lab.server.stop();
        // Not `wait_for_line`: that would consume the line deploy_fails checks.
        let gave_up = drover_qemu_tests::wait_until(TIMEOUT, Duration::from_millis(200), || {
            vm.console().iter().any(|l| l.contains("drover: error: "))
        });
        ensure!(gave_up, "the agent never gave up:\n{}", vm.diagnostics());
        lab.server.restart(procs)?;
        Ok(())
    };
    deploy_fails(Failing {
        name: "deploy_unreachable_server_is_reported_when_it_returns",
        store: &store,
        disk: Disk::Blank("1G"),
        console: "Connection refused",
        event: "Connection refused",
        meddle: &meddle,
    })?;
    Ok(())
}

/// The testos disk image next to the store (testos/build.sh's disk.img).
fn art_testos_disk(store: &std::path::Path) -> Result<std::path::PathBuf> {
    let disk = store
        .parent()
        .context("store without a parent")?
        .join("testos/disk.img");
    ensure!(disk.exists(), "no {}", disk.display());
    Ok(disk)
}

/// The MAC as it appears in iPXE's request path (`:` URL-encoded).
fn url_mac(mac: &str) -> String {
    mac.replace(':', "%3A")
}
