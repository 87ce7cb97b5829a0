//! `make demo`: PXE-boot one VM into the drover agent and show its console
//! live. A private network namespace holds everything (bridge, tap,
//! dnsmasq for DHCP + TFTP, drover-server for the iPXE script, kernel and
//! initrd); all of it is torn down at the end, also on Ctrl-C or error.
//!
//! Today the agent stops after bringing up the network ("no deploy
//! transport yet"); the demo grows with the deploy issues.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use drover_qemu_tests::artifacts::{self, Artifacts};
use drover_qemu_tests::dnsmasq::{Dnsmasq, DnsmasqOptions};
use drover_qemu_tests::netns::{Netns, Subnet};
use drover_qemu_tests::qemu::{Firmware, Nic, VmBuilder};
use drover_qemu_tests::server::{Server, ServerConfig};
use drover_qemu_tests::{Need, TestEnv};

const TIMEOUT: Duration = Duration::from_secs(300);

fn main() -> Result<()> {
    let Some(env) = TestEnv::start("demo", &[Need::Qemu, Need::Netboot])? else {
        return Ok(());
    };
    let art = Artifacts::locate()?;
    let bin = artifacts::server_bin()?;
    let ns = Netns::create("drover-demo", Subnet::default())?;
    ns.add_tap("tap0")?;
    let config = ServerConfig::new(&ns, &art.kernel, &art.initrd).deploy("on_error", "poweroff");
    let _server = Server::start(env.procs(), &ns, &bin, config.clone())?;
    let _dnsmasq = Dnsmasq::start(
        env.procs(),
        &ns,
        &DnsmasqOptions::chain_to(config.chain_url()),
    )?;
    println!(
        "demo: namespace {}, dnsmasq (DHCP+TFTP) and drover-server at {}; PXE-booting a VM (SeaBIOS, virtio-net) under TCG…",
        ns.name(),
        config.public_url
    );
    let vm = VmBuilder::new("demo-vm")
        .firmware(Firmware::Bios)
        .nic(Nic::VirtioNet)
        .mac("52:54:00:de:00:01")
        .tap(&ns, "tap0")
        .netboot()
        .spawn(env.procs())?;

    // Echo the console as it arrives: iPXE, then the agent's `drover:`
    // lines (kernel messages are left to the log file).
    let started = Instant::now();
    let mut shown = 0;
    loop {
        let lines = vm.console();
        for line in &lines[shown..] {
            if line.contains("drover") || line.contains("iPXE") || line.starts_with("http://") {
                println!(
                    "[{:5.1}s] {}",
                    started.elapsed().as_secs_f64(),
                    plain(line).trim_end()
                );
            }
        }
        shown = lines.len();
        if vm.proc().try_wait()?.is_some() {
            break;
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
    println!(
        "demo: the VM powered itself off after {:.1}s; full console log: {}",
        started.elapsed().as_secs_f64(),
        vm.console_log_path().display()
    );
    Ok(())
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
