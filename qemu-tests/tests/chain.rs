//! Chain mode in VMs: four blank machines — SeaBIOS and OVMF, virtio-net
//! and e1000, virtio-blk and NVMe — PXE-boot on one network, join the
//! server's relay chain for demo@1.0 (`[deploy] mode = "chain"`), receive
//! the payload from the head or from each other, write and verify it,
//! report success, keep serving their downstreams, reboot, get localboot
//! and boot the deployed OS.
//!
//! Slow by nature: four TCG VMs share the host's cores. The session is
//! opened by `drover-server deploy` expecting the four, and `join_timeout`
//! is long, so it starts when the last one joined however far apart they
//! booted.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use drover_qemu_tests::artifacts::Artifacts;
use drover_qemu_tests::deployed;
use drover_qemu_tests::fleet::{self, Machine};
use drover_qemu_tests::qemu::{DiskBus, Firmware, Nic};
use drover_qemu_tests::testos::store;
use drover_qemu_tests::{Need, TestEnv};
use regex::Regex;

/// For any one console line; the VMs are slow when they all run.
const TIMEOUT: Duration = Duration::from_secs(900);

const MACHINES: [Machine; 4] = [
    Machine {
        name: "bios-virtio",
        firmware: Firmware::Bios,
        nic: Nic::VirtioNet,
        bus: DiskBus::VirtioBlk,
        mac: "52:54:00:c4:00:01",
    },
    Machine {
        name: "uefi-e1000-nvme",
        firmware: Firmware::Uefi,
        nic: Nic::E1000,
        bus: DiskBus::Nvme,
        mac: "52:54:00:c4:00:02",
    },
    Machine {
        name: "bios-e1000-nvme",
        firmware: Firmware::Bios,
        nic: Nic::E1000,
        bus: DiskBus::Nvme,
        mac: "52:54:00:c4:00:03",
    },
    Machine {
        name: "uefi-virtio",
        firmware: Firmware::Uefi,
        nic: Nic::VirtioNet,
        bus: DiskBus::VirtioBlk,
        mac: "52:54:00:c4:00:04",
    },
];

/// When (since its VM started) one machine got where.
#[derive(Debug, Default)]
struct Timeline {
    address: Option<Ipv4Addr>,
    lease: Duration,
    joined: Duration,
    received: Duration,
    written: Duration,
    reboot: Duration,
    os_up: Duration,
}

#[test]
fn chain_four_vms_bios_and_uefi() -> Result<()> {
    let name = "chain_four_vms_bios_and_uefi";
    let Some(env) = TestEnv::start(name, &[Need::Qemu, Need::Netboot, Need::Uefi])? else {
        return Ok(());
    };
    let art = Artifacts::locate()?;
    let store = store(&art)?;
    // The session starts when all four joined, however far apart they boot.
    let lab = fleet::lab(
        env.procs(),
        &art,
        &store,
        "chain",
        "[chain]\njoin_timeout = 600\n",
    )?;
    let head = format!("{}:7150", lab.config.listen.ip());

    // As an operator would: register the machines, then deploy to them,
    // which opens the chain session expecting exactly these four.
    fleet::add_and_deploy(&lab.server, &MACHINES, &[])?;
    lab.server
        .wait_for_log("chain session demo@1.0: expecting 4 nodes", TIMEOUT)?;

    let mut vms = Vec::new();
    for (i, m) in MACHINES.iter().enumerate() {
        let (vm, disk) = m.spawn(i, &lab, env.procs())?;
        vms.push((m, vm, disk));
    }

    // Each machine's way, watched on its own thread.
    let lease_re = Regex::new(r"drover: lease: address=(\d+\.\d+\.\d+\.\d+)/")?;
    let timelines: Vec<Result<Timeline>> = std::thread::scope(|s| {
        let handles: Vec<_> = vms
            .iter()
            .map(|(m, vm, _)| {
                let lab = &lab;
                let store = &store;
                let lease_re = &lease_re;
                s.spawn(move || -> Result<Timeline> {
                    let mut t = Timeline::default();
                    let lease = vm.wait_for_line(lease_re, TIMEOUT)?;
                    t.lease = vm.elapsed();
                    t.address = lease_re.captures(&lease).and_then(|c| c[1].parse().ok());
                    vm.wait_for_line("signed by the trusted key", TIMEOUT)?;
                    deployed::wait_disk_chosen(vm, m.bus, TIMEOUT)?;
                    vm.wait_for_line(
                        format!("drover: chain: joined demo@1.0 as {}", m.mac),
                        TIMEOUT,
                    )?;
                    t.joined = vm.elapsed();
                    vm.wait_for_line("drover: chain: received all ", TIMEOUT)?;
                    t.received = vm.elapsed();
                    deployed::wait_written(vm, m.bus, TIMEOUT)?;
                    t.written = vm.elapsed();
                    vm.wait_for_line("drover: chain: left the session: ", TIMEOUT)?;
                    vm.wait_for_line("drover: deploy finished: rebooting", TIMEOUT)?;
                    t.reboot = vm.elapsed();
                    // The server's record, before the machine comes back.
                    deployed::assert_node_done(&lab.server, m.mac, store)?;
                    t.os_up = deployed::wait_deployed_os(vm, m.mac, TIMEOUT)?;
                    vm.wait_exit(TIMEOUT)?;
                    Ok(t)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| bail!("a watcher thread panicked"))
            })
            .collect()
    });
    let mut failed = Vec::new();
    let mut lines = Vec::new();
    for ((m, _, _), t) in vms.iter().zip(timelines) {
        match t {
            Ok(t) => lines.push((m, t)),
            Err(e) => failed.push(format!("{}: {e:#}", m.name)),
        }
    }
    ensure!(failed.is_empty(), "{}", failed.join("\n\n"));

    // The chain's shape, from the consoles: who received from whom.
    let by_addr: BTreeMap<String, &str> = lines
        .iter()
        .filter_map(|(m, t)| Some((format!("{}:7151", t.address?), m.name)))
        .collect();
    let from_re = Regex::new(r"drover: chain: (joined .*|assignment \d+): receive from (\S+)")?;
    let mut from_a_vm = 0;
    let mut shape = Vec::new();
    for (m, vm, _) in &vms {
        let console = vm.console();
        // Until it had every chunk: a complete node whose upstream leaves
        // is reassigned too, but never connects again.
        let upstreams: Vec<String> = console
            .iter()
            .take_while(|l| !l.contains("drover: chain: received all "))
            .filter_map(|l| Some(from_re.captures(l)?[2].to_owned()))
            .collect();
        ensure!(
            !upstreams.is_empty(),
            "{} was never told where to receive from:\n{}",
            m.name,
            vm.diagnostics()
        );
        let fallback = console
            .iter()
            .find(|l| l.contains("over HTTP instead") || l.contains("without the chain"));
        ensure!(fallback.is_none(), "{}: {}", m.name, fallback.unwrap());
        let named: Vec<String> = upstreams
            .iter()
            .map(|u| match by_addr.get(u) {
                Some(vm) => format!("{vm} ({u})"),
                None if *u == head => format!("the head ({u})"),
                None => u.clone(),
            })
            .collect();
        if upstreams.iter().any(|u| by_addr.contains_key(u)) {
            from_a_vm += 1;
        }
        let left = console
            .iter()
            .find(|l| l.contains("chain: left the session: "))
            .map(|l| l.trim_start_matches("drover: chain: "))
            .unwrap_or_default();
        shape.push(format!(
            "  {:<16} received from {}; {left}",
            m.name,
            named.join(", then ")
        ));
    }
    ensure!(
        from_a_vm >= 1,
        "no machine received from another one (only from the head):\n{}",
        shape.join("\n")
    );
    let slog = lab.server.log();
    ensure!(
        slog.contains("chain session demo@1.0: starting with 4 nodes"),
        "the session did not start with all four:\n{slog}"
    );
    let status = lab.server.cli(&["chain", "status", "demo@1.0"])?;

    eprintln!("{name}: the chain, as the machines saw it:");
    eprintln!("{}", shape.join("\n"));
    eprintln!(
        "{name}: drover-server chain status demo@1.0:\n{}",
        status.stdout
    );
    eprintln!("{name}: the session in the server's log:");
    for l in slog.lines().filter(|l| {
        l.contains("chain session") || l.contains("chain head: ") || l.contains("chain node ")
    }) {
        eprintln!("  {l}");
    }
    eprintln!(
        "{name}: seconds since each VM started:\n  {:<16} {:>6} {:>7} {:>9} {:>8} {:>7} {:>6}",
        "machine", "lease", "joined", "received", "written", "reboot", "OS up"
    );
    for (m, t) in &lines {
        eprintln!(
            "  {:<16} {:>6.1} {:>7.1} {:>9.1} {:>8.1} {:>7.1} {:>6.1}",
            m.name,
            t.lease.as_secs_f64(),
            t.joined.as_secs_f64(),
            t.received.as_secs_f64(),
            t.written.as_secs_f64(),
            t.reboot.as_secs_f64(),
            t.os_up.as_secs_f64()
        );
    }
    let payload_gets = slog.matches("/images/demo/1.0/payload").count();
    eprintln!("{name}: payload requests over HTTP (fallback): {payload_gets}");

    // The disks, inspected from outside.
    let ns_name = lab.ns.name().to_owned();
    let disks: Vec<_> = vms
        .into_iter()
        .map(|(m, vm, disk)| {
            drop(vm);
            (m, disk)
        })
        .collect();
    drop(lab);
    for (m, disk) in &disks {
        deployed::check_disk(disk, env.dir()).with_context(|| m.name)?;
    }
    eprintln!("{name}: done in {:.1}s", env.elapsed().as_secs_f64());
    env.assert_clean(&[&ns_name])
}
