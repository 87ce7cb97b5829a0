//! `make demo`: PXE-boot one blank VM into the drover agent, deploy the
//! test OS, and boot it — console shown live. A private network namespace
//! holds everything (bridge, tap, dnsmasq for DHCP + TFTP, drover-server
//! for the iPXE script, kernel, initrd and image); all of it is torn down
//! at the end, also on error.
//!
//! The VM deploys the test OS (built and imported as `demo@1.0`) over
//! HTTP, reports success, reboots; the server answers its next PXE request
//! with localboot and the VM boots the deployed OS from its disk. The
//! server's record of the node is printed at the end.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use drover_qemu_tests::artifacts::{self, Artifacts};
use drover_qemu_tests::lab::PxeLab;
use drover_qemu_tests::qemu::{Firmware, Nic, Vm};
use drover_qemu_tests::server::ServerConfig;
use drover_qemu_tests::{testos, Need, TestEnv};

const TIMEOUT: Duration = Duration::from_secs(300);

fn main() -> Result<()> {
    let Some(env) = TestEnv::start("demo", &[Need::Qemu, Need::Netboot])? else {
        return Ok(());
    };
    let art = Artifacts::locate()?;
    let bin = artifacts::server_bin()?;
    println!("demo: building the test OS and importing it as demo@1.0 (signed)…");
    let store = testos::store(&art)?;
    let disk = env.dir().join("disk.qcow2");
    testos::blank_disk(&disk, "1G")?;
    let lab = PxeLab::start(env.procs(), &bin, |ns| {
        ServerConfig::new(ns, &art.kernel, &art.initrd)
            .store(&store)
            .deploy("on_error", "poweroff")
    })?;
    println!(
        "demo: namespace {}, dnsmasq (DHCP+TFTP) and drover-server at {}; PXE-booting a VM with a blank 1 GiB disk (SeaBIOS, virtio-net) under TCG…",
        lab.ns.name(),
        lab.config.public_url
    );
    let vm = lab
        .vm("deploy")
        .firmware(Firmware::Bios)
        .nic(Nic::VirtioNet)
        .mac("52:54:00:de:00:01")
        .disk(&disk)
        .allow_reboot(true)
        .spawn(env.procs())?;
    follow(&vm, |l| {
        l.contains("drover")
            || l.contains("DROVER-TEST-OS")
            || l.contains("iPXE")
            || l.starts_with("http://")
            || l.starts_with("Booting from")
    })?;
    let node = lab.server.cli(&["node", "show", "52:54:00:de:00:01"])?;
    println!("demo: the server's record of the node (drover-server node show 52:54:00:de:00:01):");
    print!("{}", node.stdout);
    println!("demo: done; console logs in {}", env.dir().display());
    Ok(())
}

/// Echo the console lines `show` picks as they arrive, until the VM exits.
fn follow(vm: &Vm, show: impl Fn(&str) -> bool) -> Result<()> {
    let started = Instant::now();
    let mut shown = 0;
    loop {
        let lines = vm.console();
        for line in &lines[shown..] {
            if show(line) {
                println!(
                    "[{:5.1}s] {}",
                    started.elapsed().as_secs_f64(),
                    plain(line).trim_end()
                );
            }
        }
        shown = lines.len();
        if vm.proc().try_wait()?.is_some() {
            return Ok(());
        }
        if started.elapsed() > TIMEOUT {
            bail!(
                "the VM did not finish within {}s; console: {}",
                TIMEOUT.as_secs(),
                vm.console_log_path().display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
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
