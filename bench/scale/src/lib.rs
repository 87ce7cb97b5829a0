//! drover's process-level scale harness: N real agents as ordinary
//! processes, each in its own network namespace with a `tc`-shaped veth
//! into a bridge, each writing a file-backed disk, against the real
//! `drover-server` in a namespace of its own, and the udpcast multicast
//! baseline on the same network. The scale benchmark (`make bench-scale`,
//! binary `bench-scale`) and the fault tests run on it.
//!
//! - [`lab`]: the switch, server and node namespaces, veths, addresses and
//!   shaping.
//! - [`fleet`]: drover-server with N registered and deployed nodes, and
//!   the agents (launch, kill, wait, fleet state, disk checks).
//! - [`udpcast`]: `udp-sender` and N `udp-receiver`s.
//! - [`image`]: the benchmark image, its store and key, disk checks.
//! - [`run`]: one timed run of one transport at one N; a result [`run::Row`].
//! - [`cpu`]: the machine's CPU use during a run.
//! - [`results`]: table, CSV, plot.
//! - [`fault`]: the fault tests' random choices and polling helpers.
//! - [`rogue`]: a BitTorrent peer that answers with garbage (torrent
//!   fault tests).
//!
//! Namespaces, processes and disks are cleaned up by `Drop` guards (the
//! QEMU harness's [`drover_qemu_tests::netns::Netns`] and
//! [`drover_qemu_tests::procs::Procs`]), also when a run fails.
//!
//! All simulated nodes share the machine's cores, so link rates are
//! chosen per N to keep the machine below saturation ([`auto_rate`]) and
//! times are reported as multiples of the ideal shaped-link time, which
//! does not depend on the rate.

use std::path::Path;

use anyhow::{bail, Result};

pub mod cpu;
pub mod fault;
pub mod fleet;
pub mod image;
pub mod lab;
pub mod results;
pub mod rogue;
pub mod run;
pub mod udpcast;

use lab::Rate;
use run::Mode;

/// Set to `1` to turn the scale tests into passing no-ops.
pub const SKIP_VAR: &str = "DROVER_SKIP_SCALE_TESTS";

/// The link rate for `mode` with `n` nodes: at most `max`, and low enough
/// that the full-rate streams the machine carries at once (see
/// [`Mode::streams`]) add up to at most `budget` Mbit/s. Rounded down to a
/// whole Mbit/s.
pub fn auto_rate(mode: Mode, n: usize, budget: f64, max: f64) -> Rate {
    let per_stream = budget / mode.streams(n).max(1) as f64;
    Rate(per_stream.min(max).floor().max(1.0))
}

/// What is missing for the lab to run (root, `ip`, `tc`, udpcast if
/// `udpcast`), one line each.
pub fn missing_prerequisites(udpcast: bool) -> Vec<String> {
    let mut missing = Vec::new();
    if !rustix::process::geteuid().is_root() {
        missing.push("root (network namespaces, veths, tc)".to_owned());
    }
    for (cmd, package) in [("ip", "iproute2"), ("tc", "iproute2")] {
        if !["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join(cmd).is_file())
        {
            missing.push(format!("`{cmd}` (package {package})"));
        }
    }
    if udpcast && !udpcast::available() {
        missing.push("`udp-sender`/`udp-receiver` (package udpcast)".to_owned());
    }
    missing
}

/// For tests: `Ok(false)` to skip (`DROVER_SKIP_SCALE_TESTS=1`), an error
/// naming what to install when something is missing (a machine without
/// the tools must not pass by testing nothing), `Ok(true)` to run.
pub fn should_run(test: &str, udpcast: bool) -> Result<bool> {
    if std::env::var(SKIP_VAR).is_ok_and(|v| v == "1") {
        eprintln!("{test}: skipped ({SKIP_VAR}=1)");
        return Ok(false);
    }
    let missing = missing_prerequisites(udpcast);
    if !missing.is_empty() {
        bail!(
            "scale test {test} cannot run, missing:\n  - {}\n(apt-get install -y iproute2 udpcast, \
             run as root) or set {SKIP_VAR}=1 to skip",
            missing.join("\n  - ")
        );
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_rates() {
        let r = |m, n| auto_rate(m, n, 512.0, 100.0).0;
        assert_eq!(r(Mode::Chain, 1), 100.0);
        assert_eq!(r(Mode::Chain, 4), 100.0);
        assert_eq!(r(Mode::Chain, 8), 64.0);
        assert_eq!(r(Mode::Udpcast, 32), 16.0);
        assert_eq!(r(Mode::Http, 32), 100.0);
        assert_eq!(auto_rate(Mode::Chain, 1000, 512.0, 100.0).0, 1.0);
    }
}
