//! What the deploy tests check about a machine that deployed the test OS
//! (`demo@1.0`, see [`crate::testos`]): its console milestones, the
//! server's record of it, the deployed OS booting, and its disk inspected
//! from outside. Shared by `tests/deploy.rs` (one machine over HTTP) and
//! `tests/chain.rs` (several in chain mode).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};

use crate::qemu::{DiskBus, Vm};
use crate::server::Server;
use crate::testos::{raw_copy, run};

/// The guest's name for the (single) disk on `bus`.
pub fn disk_dev(bus: DiskBus) -> &'static str {
    match bus {
        DiskBus::Nvme => "/dev/nvme0n1",
        DiskBus::VirtioBlk => "/dev/vda",
    }
}

/// The payload hash in the store's manifest for demo@1.0.
pub fn payload_sha256(store: &Path) -> Result<String> {
    let text = std::fs::read_to_string(store.join("demo/1.0/manifest.json"))?;
    let m: serde_json::Value = serde_json::from_str(&text)?;
    m["payload"]["sha256"]
        .as_str()
        .map(str::to_owned)
        .context("manifest without payload.sha256")
}

/// The agent chose the disk on `bus` (console line).
pub fn wait_disk_chosen(vm: &Vm, bus: DiskBus, timeout: Duration) -> Result<()> {
    vm.wait_for_line(format!("drover: disk: {} ", disk_dev(bus)), timeout)?;
    Ok(())
}

/// The agent wrote demo@1.0 to the disk on `bus` and the server recorded
/// the success (console lines, in order).
pub fn wait_written(vm: &Vm, bus: DiskBus, timeout: Duration) -> Result<()> {
    let dev = disk_dev(bus);
    vm.wait_for_line(format!("drover: deployed demo@1.0 to {dev}"), timeout)?;
    vm.wait_for_line("drover: report: success recorded", timeout)?;
    Ok(())
}

/// The server's record of `mac`: done, with the payload hash of the
/// store's demo@1.0. Returns `node show`'s output.
pub fn assert_node_done(server: &Server, mac: &str, store: &Path) -> Result<String> {
    let node = server.node_show(mac)?;
    let sha = payload_sha256(store)?;
    ensure!(node.contains("state: done"), "{mac}:\n{node}");
    ensure!(
        node.contains(&format!("deployed: demo@1.0 {sha}")),
        "{mac}: not the manifest's payload hash {sha}:\n{node}"
    );
    Ok(node)
}

/// After the agent's reboot: iPXE prints the server's localboot entry for
/// `mac`, the firmware boots the deployed disk and the test OS checks its
/// files (it then powers off). Returns when, after the VM's start, the OS
/// printed its marker.
pub fn wait_deployed_os(vm: &Vm, mac: &str, timeout: Duration) -> Result<Duration> {
    vm.wait_for_line(format!("drover: {mac}: deployed demo@1.0"), timeout)?;
    vm.wait_for_line("DROVER-TEST-OS image=demo version=1.0", timeout)?;
    let booted = vm.elapsed();
    vm.wait_for_line("DROVER-TEST-OS files=ok", timeout)?;
    vm.wait_for_line("DROVER-TEST-OS meta=ok", timeout)?;
    Ok(booted)
}

/// The disk, inspected from outside once its VM is gone: a sound GPT
/// (`sgdisk -v`) and a clean ext4 root (`e2fsck -fn` on partition 2). The
/// raw copy it needs goes to `work` and is removed afterwards.
pub fn check_disk(disk: &Path, work: &Path) -> Result<()> {
    let stem = disk.file_stem().and_then(|s| s.to_str()).unwrap_or("disk");
    let raw = work.join(format!("{stem}.raw"));
    raw_copy(disk, &raw)?;
    let v = run(Command::new("sgdisk").arg("-v").arg(&raw))?;
    ensure!(v.contains("No problems found"), "{}: {v}", disk.display());
    let info = run(Command::new("sgdisk").arg("-i2").arg(&raw))?;
    let first: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("First sector: "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("{}: no partition 2:\n{info}", disk.display()))?;
    let fsck =
        run(Command::new("e2fsck")
            .args(["-fn", &format!("{}?offset={}", raw.display(), first * 512)]));
    if let Err(e) = fsck {
        // Older e2fsck has no ?offset=: copy the partition out.
        let part = work.join(format!("{stem}.root.ext4"));
        run(Command::new("dd")
            .arg(format!("if={}", raw.display()))
            .arg(format!("of={}", part.display()))
            .args(["bs=512", &format!("skip={first}"), "status=none"]))
        .with_context(|| format!("after {e:#}"))?;
        let checked = run(Command::new("e2fsck").arg("-fn").arg(&part));
        std::fs::remove_file(&part)?;
        checked?;
    }
    std::fs::remove_file(&raw)?;
    Ok(())
}
