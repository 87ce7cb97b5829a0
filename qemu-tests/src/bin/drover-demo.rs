//! `make demo`: three blank VMs (SeaBIOS and OVMF, virtio-net and e1000,
//! virtio-blk and NVMe) PXE-boot into the drover agent and deploy the test
//! OS in chain mode — the server feeds the first machine, each machine
//! feeds the next — then boot it. A private network namespace holds
//! everything (bridge, taps, dnsmasq for DHCP + TFTP, drover-server for
//! the iPXE script, kernel, initrd, image and the chain's head); all of it
//! is torn down at the end, also on error.
//!
//! Shown live: each machine's milestones from its serial console, and the
//! server's view as an operator would watch it (`drover-server status` and
//! `drover-server chain status demo@1.0`, printed again whenever they
//! change). At the end, each node's record (`drover-server node show`).

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use drover_qemu_tests::artifacts::Artifacts;
use drover_qemu_tests::fleet::{self, Machine};
use drover_qemu_tests::qemu::{DiskBus, Firmware, Nic, Vm};
use drover_qemu_tests::server::Server;
use drover_qemu_tests::{testos, Need, TestEnv};

/// The whole demo: three TCG VMs on a laptop's cores take a few minutes.
const TIMEOUT: Duration = Duration::from_secs(1200);
/// How often the server's tables are polled.
const POLL: Duration = Duration::from_secs(3);

const MACHINES: [Machine; 3] = [
    Machine {
        name: "node1",
        firmware: Firmware::Bios,
        nic: Nic::VirtioNet,
        bus: DiskBus::VirtioBlk,
        mac: "52:54:00:de:00:01",
    },
    Machine {
        name: "node2",
        firmware: Firmware::Uefi,
        nic: Nic::E1000,
        bus: DiskBus::Nvme,
        mac: "52:54:00:de:00:02",
    },
    Machine {
        name: "node3",
        firmware: Firmware::Bios,
        nic: Nic::E1000,
        bus: DiskBus::VirtioBlk,
        mac: "52:54:00:de:00:03",
    },
];

fn main() -> Result<()> {
    let Some(env) = TestEnv::start("demo", &[Need::Qemu, Need::Netboot, Need::Uefi])? else {
        return Ok(());
    };
    let art = Artifacts::locate()?;
    println!("demo: building the test OS and importing it as demo@1.0 (signed)…");
    let store = testos::store(&art)?;
    // The machines are added and deployed below, as an operator would;
    // the session starts when all three joined, however far apart they
    // boot.
    let lab = fleet::lab(
        env.procs(),
        &art,
        &store,
        "chain",
        "[chain]\njoin_timeout = 600\n",
    )?;
    println!(
        "demo: namespace {}: dnsmasq (DHCP+TFTP) and drover-server at {} in chain mode \
         ([deploy] mode = \"chain\"; the chain's head on port 7150)",
        lab.ns.name(),
        lab.config.public_url
    );
    let mut macs = Vec::new();
    for m in &MACHINES {
        operator(&lab.server, &["node", "add", m.mac, "--name", m.name])?;
        macs.push(m.mac);
    }
    let mut deploy = vec!["deploy", "--image", "demo"];
    deploy.extend(&macs);
    operator(&lab.server, &deploy)?;

    let mut vms = Vec::new();
    for (i, m) in MACHINES.iter().enumerate() {
        println!(
            "demo: PXE-booting {} ({}, {}) with a blank 1 GiB disk under TCG",
            m.name,
            m.mac,
            m.hardware()
        );
        let (vm, _disk) = m.spawn(i, &lab, env.procs())?;
        vms.push((m, vm));
    }
    follow(&lab.server, &vms)?;

    for m in &MACHINES {
        println!(
            "demo: the server's record of {} (drover-server node show {}):",
            m.name, m.name
        );
        print!("{}", lab.server.cli(&["node", "show", m.name])?.stdout);
    }
    println!("demo: done; console logs in {}", env.dir().display());
    Ok(())
}

/// Run `drover-server ARGS` as the operator, echoing it and its output.
fn operator(server: &Server, args: &[&str]) -> Result<()> {
    println!(
        "demo: $ drover-server {} --config server.toml",
        args.join(" ")
    );
    let out = server.cli(args)?;
    for line in out.stdout.lines().chain(out.stderr.lines()) {
        println!("demo:   {line}");
    }
    ensure!(
        out.code == Some(0),
        "drover-server {} failed",
        args.join(" ")
    );
    Ok(())
}

/// Until every VM has powered off (the deployed test OS does, after its
/// checks): echo each VM's milestones as they arrive, and the server's
/// tables whenever they change.
fn follow(server: &Server, vms: &[(&Machine, Vm)]) -> Result<()> {
    let started = Instant::now();
    let stamp = || format!("[{:5.1}s]", started.elapsed().as_secs_f64());
    let mut shown = vec![0; vms.len()];
    let mut tables = [String::new(), String::new()];
    let mut polled: Option<Instant> = None;
    loop {
        for ((m, vm), shown) in vms.iter().zip(&mut shown) {
            let lines = vm.console();
            for line in &lines[*shown..] {
                let line = plain(line);
                if milestone(&line) {
                    println!("{} {:<5} | {}", stamp(), m.name, line.trim());
                }
            }
            *shown = lines.len();
        }
        if polled.is_none_or(|t| t.elapsed() >= POLL) {
            polled = Some(Instant::now());
            let queries: [&[&str]; 2] = [&["status"], &["chain", "status", "demo@1.0"]];
            for (query, last) in queries.iter().zip(&mut tables) {
                let out = server.cli(query)?;
                if out.stdout != *last && !out.stdout.is_empty() {
                    println!("{} $ drover-server {}", stamp(), query.join(" "));
                    for line in out.stdout.lines() {
                        println!("            {line}");
                    }
                    *last = out.stdout;
                }
            }
        }
        let mut running = 0;
        for (_, vm) in vms {
            if vm.proc().try_wait()?.is_none() {
                running += 1;
            }
        }
        if running == 0 {
            return Ok(());
        }
        if started.elapsed() > TIMEOUT {
            bail!(
                "{running} VM(s) did not finish within {}s; console logs: {}",
                TIMEOUT.as_secs(),
                vms[0]
                    .1
                    .console_log_path()
                    .parent()
                    .unwrap_or(vms[0].1.console_log_path())
                    .display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The console lines worth showing: the agent's milestones, the iPXE
/// script's own lines and what the deployed OS prints.
fn milestone(line: &str) -> bool {
    const AGENT: &[&str] = &[
        "drover: agent ",
        "drover: lease: ",
        "drover: manifest: ",
        "drover: disk: ",
        "drover: chain: joined",
        "drover: chain: assignment",
        "drover: chain: received all",
        "drover: chain: left the session",
        "drover: deployed ",
        "drover: report: success",
        "drover: deploy finished",
        "drover: error",
    ];
    AGENT.iter().any(|p| line.starts_with(p))
        // The server's iPXE entries echo what they do (deploy, localboot).
        || line.starts_with("drover: deploying ")
        || line.starts_with("drover: 52:54:00:")
        || line.starts_with("DROVER-TEST-OS")
}

/// The line without terminal escape sequences (iPXE colours its banner).
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters… final byte in @..~
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
