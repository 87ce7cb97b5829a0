//! Torrent mode in VMs: four blank machines — SeaBIOS and OVMF, virtio-net
//! and e1000, virtio-blk and NVMe — PXE-boot on one network and are
//! deployed demo@1.0 with `drover-server deploy --mode torrent` (the
//! server's default mode stays http). Each agent fetches the image's
//! `payload.torrent`, announces to the server's tracker as its node
//! (`/announce/MAC/TOKEN`), takes pieces from the server's seeder and
//! from the other machines, writes and verifies them, reports success,
//! seeds until the tracker lists nobody still downloading, reboots, gets
//! localboot and boots the deployed OS.
//!
//! Asserted beyond the deploy itself: every machine joined the swarm and
//! left it with its counters on the console; pieces moved between the
//! machines (at least one uploaded to another); no bad pieces and nothing
//! over HTTP (no `payload` request in the server's log, no fallback
//! piece); the tracker saw each machine start and complete.
//!
//! Slow by nature: four TCG VMs share the host's cores. A machine seeds
//! at most 300 s after its disk is done (the agent's limit), less when the
//! tracker soon lists nobody downloading.

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

/// Every NIC with every disk controller, under both firmwares.
const MACHINES: [Machine; 4] = [
    Machine {
        name: "bios-virtio",
        firmware: Firmware::Bios,
        nic: Nic::VirtioNet,
        bus: DiskBus::VirtioBlk,
        mac: "52:54:00:c6:00:01",
    },
    Machine {
        name: "uefi-e1000-nvme",
        firmware: Firmware::Uefi,
        nic: Nic::E1000,
        bus: DiskBus::Nvme,
        mac: "52:54:00:c6:00:02",
    },
    Machine {
        name: "bios-e1000",
        firmware: Firmware::Bios,
        nic: Nic::E1000,
        bus: DiskBus::VirtioBlk,
        mac: "52:54:00:c6:00:03",
    },
    Machine {
        name: "uefi-virtio-nvme",
        firmware: Firmware::Uefi,
        nic: Nic::VirtioNet,
        bus: DiskBus::Nvme,
        mac: "52:54:00:c6:00:04",
    },
];

/// When (since its VM started) one machine got where.
#[derive(Debug, Default)]
struct Timeline {
    address: Option<Ipv4Addr>,
    lease: Duration,
    joined: Duration,
    written: Duration,
    reboot: Duration,
    os_up: Duration,
    /// The agent's "torrent: seeded for Ns after the disk was done".
    seeded: String,
    /// Its "torrent: left the swarm: …", parsed.
    left: Left,
}

/// A machine's swarm counters, from its "left the swarm" line.
#[derive(Debug, Default, Clone, PartialEq)]
struct Left {
    downloaded_mib: f64,
    uploaded_mib: f64,
    connections: u64,
    bad_pieces: u64,
    peers_dropped: u64,
    http_pieces: u64,
}

impl Left {
    fn parse(line: &str) -> Result<Left> {
        let re = Regex::new(
            r"left the swarm: ([\d.]+) MiB downloaded, ([\d.]+) MiB uploaded, (\d+) connections, (\d+) bad pieces refused, (\d+) peers dropped, (\d+) pieces over HTTP",
        )?;
        let c = re
            .captures(line)
            .with_context(|| format!("not a 'left the swarm' line: {line:?}"))?;
        Ok(Left {
            downloaded_mib: c[1].parse()?,
            uploaded_mib: c[2].parse()?,
            connections: c[3].parse()?,
            bad_pieces: c[4].parse()?,
            peers_dropped: c[5].parse()?,
            http_pieces: c[6].parse()?,
        })
    }
}

#[test]
fn left_line_parses() {
    let l = Left::parse(
        "drover: torrent: left the swarm: 12 MiB downloaded, 3 MiB uploaded, 5 connections, \
         0 bad pieces refused, 1 peers dropped, 0 pieces over HTTP",
    )
    .unwrap();
    assert_eq!(
        l,
        Left {
            downloaded_mib: 12.0,
            uploaded_mib: 3.0,
            connections: 5,
            bad_pieces: 0,
            peers_dropped: 1,
            http_pieces: 0
        }
    );
    assert!(Left::parse("drover: torrent: left").is_err());
}

#[test]
fn torrent_four_vms_bios_and_uefi() -> Result<()> {
    let name = "torrent_four_vms_bios_and_uefi";
    let Some(env) = TestEnv::start(name, &[Need::Qemu, Need::Netboot, Need::Uefi])? else {
        return Ok(());
    };
    let art = Artifacts::locate()?;
    let store = store(&art)?;
    // The server's default stays http: torrent mode is the deployment's.
    let lab = fleet::lab(env.procs(), &art, &store, "http", "")?;
    let seeder = lab
        .server
        .wait_for_log("torrent seeder on ", Duration::from_secs(10))?;
    ensure!(
        seeder.contains(&format!(
            "listed by the tracker as {}:6881",
            lab.config.listen.ip()
        )),
        "the seeder is not listed at the server's address: {seeder}"
    );
    fleet::add_and_deploy(&lab.server, &MACHINES, &["--mode", "torrent"])?;

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
                    vm.wait_for_line("drover: torrent: joined the swarm of ", TIMEOUT)?;
                    t.joined = vm.elapsed();
                    deployed::wait_written(vm, m.bus, TIMEOUT)?;
                    t.written = vm.elapsed();
                    vm.wait_for_line("drover: torrent: disk done; seeding", TIMEOUT)?;
                    let seeded = vm.wait_for_line("drover: torrent: seeded for ", TIMEOUT)?;
                    t.seeded = seeded
                        .trim()
                        .trim_start_matches("drover: torrent: ")
                        .to_owned();
                    let left = vm.wait_for_line("drover: torrent: left the swarm: ", TIMEOUT)?;
                    t.left = Left::parse(&left)?;
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
    let slog = lab.server.log();
    ensure!(
        failed.is_empty(),
        "{}\n\nthe server's log:\n{slog}",
        failed.join("\n\n")
    );

    // Nothing came over HTTP: no fallback on any console, no payload
    // request at the server (payload.torrent is fetched, the payload not).
    for (m, vm, _) in &vms {
        let fallback = vm.console().into_iter().find(|l| {
            l.contains("over HTTP instead")
                || l.contains("from the fallback")
                || l.contains("disagrees with the signed manifest")
        });
        ensure!(fallback.is_none(), "{}: {}", m.name, fallback.unwrap());
    }
    let payload_gets = slog.matches("GET /images/demo/1.0/payload -> ").count();
    let torrent_gets = slog
        .matches("GET /images/demo/1.0/payload.torrent -> 200")
        .count();
    ensure!(
        payload_gets == 0,
        "{payload_gets} payload requests over HTTP:\n{slog}"
    );
    ensure!(
        torrent_gets >= 4,
        "payload.torrent fetched {torrent_gets} times, not by all four:\n{slog}"
    );

    // The swarm, as the machines saw it.
    let by_addr: BTreeMap<Ipv4Addr, &str> = lines
        .iter()
        .filter_map(|(m, t)| Some((t.address?, m.name)))
        .collect();
    let payload_mib = std::fs::metadata(store.join("demo/1.0/payload"))?.len() as f64 / 1048576.0;
    let mut uploaded = 0.0;
    let mut downloaded = 0.0;
    for (m, t) in &lines {
        let l = &t.left;
        ensure!(
            l.bad_pieces == 0 && l.http_pieces == 0,
            "{}: bad pieces or pieces over HTTP: {l:?}",
            m.name
        );
        ensure!(l.connections >= 1, "{}: no connection: {l:?}", m.name);
        uploaded += l.uploaded_mib;
        downloaded += l.downloaded_mib;
    }
    ensure!(
        uploaded > 0.0,
        "no machine uploaded to another (all {downloaded} MiB from the seeder): {:?}",
        lines.iter().map(|(_, t)| &t.left).collect::<Vec<_>>()
    );

    // The tracker saw each machine start and complete.
    let event_re =
        Regex::new(r"tracker: demo@1\.0: (Started|Completed) from (\d+\.\d+\.\d+\.\d+):")?;
    let mut events: BTreeMap<(&str, Ipv4Addr), usize> = BTreeMap::new();
    for c in slog.lines().filter_map(|l| event_re.captures(l)) {
        let ip: Ipv4Addr = c[2].parse()?;
        let event = if &c[1] == "Started" {
            "Started"
        } else {
            "Completed"
        };
        *events.entry((event, ip)).or_default() += 1;
    }
    for (ip, vm) in &by_addr {
        for event in ["Started", "Completed"] {
            ensure!(
                events.contains_key(&(event, *ip)),
                "the tracker logged no {event} from {vm} ({ip}):\n{slog}"
            );
        }
    }

    eprintln!("{name}: the swarm, as the machines saw it (payload {payload_mib:.1} MiB):");
    for (m, t) in &lines {
        let l = &t.left;
        eprintln!(
            "  {:<16} {:>3} MiB down, {:>3} MiB up, {:>2} connections, {} peers dropped; {}",
            m.name, l.downloaded_mib, l.uploaded_mib, l.connections, l.peers_dropped, t.seeded
        );
    }
    // The agents round their counters down to whole MiB: the seeder's
    // share is an estimate.
    eprintln!(
        "{name}: {downloaded:.0} MiB downloaded in all, {uploaded:.0} MiB of it from other \
         machines (whole MiB, rounded down); the server's seeder sent roughly {:.0} MiB \
         ({:.1}x the payload)",
        downloaded - uploaded,
        (downloaded - uploaded) / payload_mib
    );
    eprintln!("{name}: the tracker's events:");
    for l in slog.lines().filter(|l| l.contains("tracker: ")) {
        eprintln!("  {l}");
    }
    eprintln!(
        "{name}: seconds since each VM started:\n  {:<16} {:>6} {:>7} {:>8} {:>7} {:>6}",
        "machine", "lease", "joined", "written", "reboot", "OS up"
    );
    for (m, t) in &lines {
        eprintln!(
            "  {:<16} {:>6.1} {:>7.1} {:>8.1} {:>7.1} {:>6.1}",
            m.name,
            t.lease.as_secs_f64(),
            t.joined.as_secs_f64(),
            t.written.as_secs_f64(),
            t.reboot.as_secs_f64(),
            t.os_up.as_secs_f64()
        );
    }

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
