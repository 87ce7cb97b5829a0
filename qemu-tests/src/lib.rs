//! Harness for drover's QEMU netboot tests (cloud-hypervisor `test_infra`
//! style): small helpers that always clean up.
//!
//! - [`procs`]: a registry of child processes, killed and reaped on drop;
//!   their output goes to `target/qemu-tests/<test>/<name>.log`.
//! - [`netns`]: a throwaway network namespace with a bridge and taps.
//! - [`dnsmasq`]: DHCP + TFTP handing QEMU's iPXE a chain to drover-server.
//! - [`server`]: `drover-server serve` with a generated config.
//! - [`qemu`]: a VM builder and serial-console assertions.
//! - [`artifacts`]: the kernel, initrd and server binary under test.
//! - [`deployed`]: what a deploy test checks about a deployed machine.
//! - [`fleet`]: several machines deploying together (lab, VMs, deploy).
//!
//! A test starts with [`TestEnv::start`], which checks the prerequisites
//! (root, QEMU, dnsmasq, …) and fails with what to install; with
//! `DROVER_SKIP_QEMU_TESTS=1` it returns `None` and the test passes as
//! skipped instead.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

pub mod artifacts;
pub mod deployed;
pub mod dnsmasq;
pub mod fleet;
pub mod lab;
pub mod netns;
pub mod procs;
pub mod qemu;
pub mod server;
pub mod testos;

/// Poll `f` every `poll` until it returns true (→ true) or `timeout` passes
/// (→ false). `f` runs at least once.
pub fn wait_until(timeout: Duration, poll: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(poll);
    }
}

/// The environment variable that turns the QEMU tests into passing no-ops.
pub const SKIP_VAR: &str = "DROVER_SKIP_QEMU_TESTS";

/// What a test needs from the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// `qemu-system-x86_64`.
    Qemu,
    /// Network boot in a namespace: root, `ip`, `/dev/net/tun`, `dnsmasq`,
    /// QEMU's iPXE ROMs.
    Netboot,
    /// OVMF.
    Uefi,
}

/// One test's log directory and process registry.
pub struct TestEnv {
    name: String,
    procs: procs::Procs,
    started: Instant,
}

impl TestEnv {
    /// Check `needs` and set up `target/qemu-tests/<name>/` (emptied first).
    ///
    /// `Ok(None)`: skipped because `DROVER_SKIP_QEMU_TESTS=1`; the test
    /// should return `Ok(())`. `Err`: a prerequisite is missing; the message
    /// says what to install. Missing tools fail rather than skip, so a CI
    /// machine without QEMU cannot go green by testing nothing.
    pub fn start(name: &str, needs: &[Need]) -> Result<Option<TestEnv>> {
        if std::env::var(SKIP_VAR).is_ok_and(|v| v == "1") {
            eprintln!("{name}: skipped ({SKIP_VAR}=1)");
            return Ok(None);
        }
        let missing = missing_prerequisites(needs);
        if !missing.is_empty() {
            bail!(
                "QEMU test {name} cannot run:\n  - {}\nInstall the packages \
                 (apt-get install -y qemu-system-x86 ipxe-qemu ovmf dnsmasq-base iproute2) and \
                 run as root, or set {SKIP_VAR}=1 to skip the QEMU tests.",
                missing.join("\n  - ")
            );
        }
        let dir = artifacts::target_dir().join("qemu-tests").join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("emptying {}", dir.display()))?;
        }
        let procs = procs::Procs::new(&dir)?;
        eprintln!("{name}: logs in {}", dir.display());
        Ok(Some(TestEnv {
            name: name.to_owned(),
            procs,
            started: Instant::now(),
        }))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `target/qemu-tests/<name>/`.
    pub fn dir(&self) -> &Path {
        self.procs.log_dir()
    }

    pub fn procs(&self) -> &procs::Procs {
        &self.procs
    }

    /// Time since [`TestEnv::start`].
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// After the test dropped its VMs, servers and namespaces: fail if a
    /// child is still running or a namespace still exists.
    pub fn assert_clean(&self, netns_names: &[&str]) -> Result<()> {
        self.procs.assert_none_running()?;
        let left: Vec<&str> = netns_names
            .iter()
            .copied()
            .filter(|n| netns::exists(n))
            .collect();
        if !left.is_empty() {
            bail!("network namespaces left behind: {}", left.join(", "));
        }
        Ok(())
    }
}

/// Human-readable reasons the machine cannot run a test with `needs`.
fn missing_prerequisites(needs: &[Need]) -> Vec<String> {
    let mut missing = Vec::new();
    let mut need_cmd = |cmd: &str, package: &str| {
        if find_in_path(cmd).is_none() {
            missing.push(format!("`{cmd}` not found on PATH (package {package})"));
        }
    };
    for need in needs {
        match need {
            Need::Qemu => need_cmd("qemu-system-x86_64", "qemu-system-x86"),
            Need::Netboot => {
                need_cmd("ip", "iproute2");
                need_cmd("dnsmasq", "dnsmasq-base");
            }
            Need::Uefi => {}
        }
    }
    if needs.contains(&Need::Netboot) {
        if !rustix::process::geteuid().is_root() {
            missing.push(format!(
                "root (network namespaces and taps); running as uid {}",
                rustix::process::geteuid().as_raw()
            ));
        }
        if !Path::new("/dev/net/tun").exists() {
            missing.push("/dev/net/tun (tap devices)".to_owned());
        }
        if !Path::new("/usr/lib/ipxe/qemu").is_dir() {
            missing.push("QEMU's iPXE ROMs in /usr/lib/ipxe/qemu (package ipxe-qemu)".to_owned());
        }
    }
    if needs.contains(&Need::Uefi) {
        if let Err(e) = qemu::find_ovmf() {
            missing.push(format!("{e:#}"));
        }
    }
    missing
}

fn find_in_path(cmd: &str) -> Option<PathBuf> {
    // root's PATH has the sbin directories; a user's may not, and dnsmasq
    // lives in /usr/sbin.
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_until_true_and_timeout() {
        let mut n = 0;
        assert!(wait_until(
            Duration::from_secs(5),
            Duration::from_millis(1),
            || {
                n += 1;
                n == 3
            }
        ));
        assert_eq!(n, 3);
        let start = Instant::now();
        assert!(!wait_until(
            Duration::from_millis(50),
            Duration::from_millis(5),
            || false
        ));
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn finds_sh() {
        assert!(find_in_path("sh").is_some());
        assert!(find_in_path("no-such-command-here").is_none());
    }
}
