//! One benchmark run: a fresh lab of N nodes, one transport, every node
//! timed from the launch to its disk done (drover: the agent's `deployed`
//! line; udpcast: the receiver's exit), every disk checked, CPU sampled,
//! the server's transmitted bytes counted.
//!
//! Chain and torrent nodes keep serving the others after their disk is
//! done; that time is not counted. The run waits for every disk, then
//! gives the lingering agents [`LINGER_GRACE`] to leave by themselves (a
//! torrent node leaves once the tracker lists nobody still downloading)
//! and stops those still there; how long they lingered is reported.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Result};
use drover_qemu_tests::procs::Procs;

use crate::cpu::{CpuUse, Sampler};
use crate::fleet::{AgentEnd, Bins, Fleet, FleetOptions, Transport};
use crate::image::Image;
use crate::lab::{Lab, Rate};
use crate::udpcast;

/// How long agents may keep serving others after the last disk is done
/// before the run stops them.
pub const LINGER_GRACE: Duration = Duration::from_secs(60);

/// What moves the image to the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// drover, each node pulling from the server over HTTP.
    Http,
    /// drover's relay chain.
    Chain,
    /// udpcast multicast.
    Udpcast,
    /// drover's BitTorrent swarm (the server's tracker and seeder).
    Torrent,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Http, Mode::Chain, Mode::Udpcast, Mode::Torrent];

    /// How many full-rate streams the machine carries at once with `n`
    /// nodes: the server's link is the bottleneck for http (the nodes
    /// share it), every node receives at the full rate otherwise.
    pub fn streams(self, n: usize) -> usize {
        match self {
            Mode::Http => 1,
            Mode::Chain | Mode::Udpcast | Mode::Torrent => n,
        }
    }

    /// drover's transport for this mode (`None`: udpcast).
    pub fn transport(self) -> Option<Transport> {
        match self {
            Mode::Http => Some(Transport::Http),
            Mode::Chain => Some(Transport::Chain),
            Mode::Torrent => Some(Transport::Torrent),
            Mode::Udpcast => None,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Http => "http",
            Mode::Chain => "chain",
            Mode::Udpcast => "udpcast",
            Mode::Torrent => "torrent",
        })
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "http" => Ok(Mode::Http),
            "chain" => Ok(Mode::Chain),
            "udpcast" => Ok(Mode::Udpcast),
            "torrent" => Ok(Mode::Torrent),
            _ => Err(format!(
                "unknown mode {s:?}; accepted: http, chain, udpcast, torrent"
            )),
        }
    }
}

/// What one run is.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub mode: Mode,
    pub nodes: usize,
    pub rate: Rate,
    /// Give up on nodes still running after this long.
    pub timeout: Duration,
}

/// One row of results.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub mode: Mode,
    pub nodes: usize,
    pub rate_mbit: f64,
    /// Bytes each node receives over the wire (payload or raw image).
    pub bytes: u64,
    /// `bytes` at the link rate.
    pub ideal_secs: f64,
    /// Launch to the last node finished (successful or not).
    pub last_secs: f64,
    /// Launch to the first node finished.
    pub first_secs: f64,
    /// Per-node throughput (bytes over the node's own time), Mbit/s.
    pub node_mbit_mean: f64,
    pub node_mbit_min: f64,
    /// Per-node throughput while streaming: bytes over the time from the
    /// node's disk partitioned (ready for the payload) to its disk done,
    /// Mbit/s; `None` unless every successful node told both (udpcast's
    /// receivers do not).
    pub stream_mbit_mean: Option<f64>,
    pub stream_mbit_min: Option<f64>,
    pub cpu: CpuUse,
    /// Bytes the server's interface sent from the launch until every node
    /// had left (all traffic, headers included), if it could be read.
    pub server_tx: Option<u64>,
    /// From the last disk done to the last node gone (chain and torrent
    /// nodes serve others meanwhile); `None` when not measured.
    pub linger_secs: Option<f64>,
    /// Nodes still serving after [`LINGER_GRACE`], stopped by the run.
    pub reaped: usize,
    /// Nodes that exited 0 with a verified disk (and, for drover, are
    /// `done` in the server's state); a node stopped while lingering
    /// after its disk was done counts.
    pub ok: usize,
    /// What went wrong with the others, one line each.
    pub problems: Vec<String>,
}

impl Row {
    /// Time to the last node as a multiple of the ideal transfer time.
    pub fn time_ratio(&self) -> f64 {
        self.last_secs / self.ideal_secs
    }

    /// Mean per-node throughput as a share of the link rate.
    pub fn link_share(&self) -> f64 {
        self.node_mbit_mean / self.rate_mbit
    }

    /// Mean per-node streaming throughput as a share of the link rate.
    pub fn stream_share(&self) -> Option<f64> {
        self.stream_mbit_mean.map(|m| m / self.rate_mbit)
    }

    /// The server's transmitted bytes as a multiple of the bytes one node
    /// needs (the payload, or udpcast's raw image).
    pub fn server_tx_ratio(&self) -> Option<f64> {
        self.server_tx.map(|b| b as f64 / self.bytes as f64)
    }

    /// Compute a row from the nodes' ends and checks.
    fn from_ends(
        spec: &RunSpec,
        bytes: u64,
        ends: &[Option<AgentEnd>],
        checks: &[Result<()>],
        cpu: CpuUse,
    ) -> Row {
        let secs: Vec<f64> = ends.iter().flatten().map(|e| e.secs).collect();
        let ok_secs: Vec<f64> = ends
            .iter()
            .zip(checks)
            .filter(|(_, c)| c.is_ok())
            .filter_map(|(e, _)| e.as_ref().map(|e| e.secs))
            .collect();
        let mbit_over = |s: f64| bytes as f64 * 8.0 / 1e6 / s.max(1e-3);
        let mbit: Vec<f64> = ok_secs.iter().map(|&s| mbit_over(s)).collect();
        let stream: Option<Vec<f64>> = ends
            .iter()
            .zip(checks)
            .filter(|(_, c)| c.is_ok())
            .filter_map(|(e, _)| e.as_ref())
            .map(|e| e.ready.map(|r| mbit_over(e.secs - r)))
            .collect();
        let stream = stream.filter(|v| !v.is_empty());
        let problems = checks
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().err().map(|e| format!("node{i}: {e:#}")))
            .collect();
        Row {
            mode: spec.mode,
            nodes: spec.nodes,
            rate_mbit: spec.rate.0,
            bytes,
            ideal_secs: spec.rate.ideal_secs(bytes),
            last_secs: secs.iter().copied().fold(0.0, f64::max),
            first_secs: secs.iter().copied().reduce(f64::min).unwrap_or(0.0),
            node_mbit_mean: if mbit.is_empty() {
                0.0
            } else {
                mbit.iter().sum::<f64>() / mbit.len() as f64
            },
            node_mbit_min: mbit.iter().copied().reduce(f64::min).unwrap_or(0.0),
            stream_mbit_mean: stream
                .as_ref()
                .map(|v| v.iter().sum::<f64>() / v.len() as f64),
            stream_mbit_min: stream
                .as_ref()
                .and_then(|v| v.iter().copied().reduce(f64::min)),
            cpu,
            server_tx: None,
            linger_secs: None,
            reaped: 0,
            ok: ok_secs.len(),
            problems,
        }
    }
}

/// Where a run keeps its logs and disks.
pub fn run_dir(out: &Path, spec: &RunSpec) -> PathBuf {
    out.join("runs")
        .join(format!("{}-n{}", spec.mode, spec.nodes))
}

/// Run `spec` in a fresh lab whose namespaces are named `prefix-…`;
/// logs under [`run_dir`]. Disks are deleted afterwards unless `keep`.
pub fn run(
    out: &Path,
    prefix: &str,
    bins: &Bins,
    image: &Image,
    spec: &RunSpec,
    keep: bool,
) -> Result<Row> {
    let dir = run_dir(out, spec);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let procs = Procs::new(&dir)?;
    let lab = Lab::create(prefix, spec.nodes, spec.rate)?;
    let disks = dir.join("disks");
    match spec.mode.transport() {
        Some(transport) => {
            let mut fleet = Fleet::start(
                &procs,
                lab,
                bins,
                image,
                FleetOptions::new(transport),
                &disks,
            )?;
            let tx0 = fleet.lab().server_tx_bytes();
            let cpu = Sampler::start();
            fleet.launch()?;
            fleet.wait_done(spec.timeout);
            let cpu = cpu.stop();
            // Chain and torrent nodes serve the others for a while after
            // their disk is done: not counted, but waited for.
            let reaped = fleet.reap_lingering(LINGER_GRACE);
            let tx1 = fleet.lab().server_tx_bytes();
            // A node is finished when its disk is.
            let ends: Vec<Option<AgentEnd>> = (0..fleet.len())
                .map(|i| {
                    fleet.end(i).map(|e| AgentEnd {
                        secs: fleet.done_secs(i).unwrap_or(e.secs),
                        code: e.code,
                        ready: e.ready,
                    })
                })
                .collect();
            let states = fleet.node_states()?;
            let checks: Vec<Result<()>> = (0..fleet.len())
                .map(|i| {
                    match fleet.end(i).map(|e| e.code) {
                        None => bail!("still running after {:?}", spec.timeout),
                        Some(_) if fleet.ended_well(i) => {}
                        Some(c) => bail!("agent exited with {c:?}; log {}", log_tail(&fleet, i)),
                    }
                    if states[i].state != "done" {
                        bail!(
                            "server state {:?} ({:?})",
                            states[i].state,
                            states[i].last_error
                        );
                    }
                    fleet.verify_disk(i)
                })
                .collect();
            if !keep {
                fleet.remove_disks();
            }
            let mut row = Row::from_ends(spec, image.payload_len, &ends, &checks, cpu);
            row.server_tx = match (tx0, tx1) {
                (Ok(a), Ok(b)) => Some(b.saturating_sub(a)),
                _ => None,
            };
            let last_done = (0..fleet.len())
                .filter_map(|i| fleet.done_secs(i))
                .fold(0.0, f64::max);
            let last_exit = (0..fleet.len())
                .filter_map(|i| fleet.end(i).map(|e| e.secs))
                .fold(0.0, f64::max);
            row.linger_secs = Some((last_exit - last_done).max(0.0));
            row.reaped = reaped.len();
            if !reaped.is_empty() {
                eprintln!(
                    "{} N={}: nodes {reaped:?} still serving {:?} after the last disk was done; stopped",
                    spec.mode, spec.nodes, LINGER_GRACE
                );
            }
            Ok(row)
        }
        None => {
            let tx0 = lab.server_tx_bytes();
            let cpu = Sampler::start();
            let mut session = udpcast::Session::start(&procs, &lab, image, &disks)?;
            session.wait(spec.timeout);
            let cpu = cpu.stop();
            let tx1 = lab.server_tx_bytes();
            let ends: Vec<Option<AgentEnd>> =
                (0..spec.nodes).map(|i| session.end(i).cloned()).collect();
            let checks: Vec<Result<()>> = (0..spec.nodes)
                .map(|i| {
                    match ends[i].as_ref().map(|e| e.code) {
                        None => bail!("still running after {:?}", spec.timeout),
                        Some(Some(0)) => {}
                        Some(c) => bail!(
                            "udp-receiver exited with {c:?}: {}",
                            last_lines(&session.receiver_log(i), 3)
                        ),
                    }
                    image.verify_at(session.disk(i), 0)
                })
                .collect();
            if !keep {
                session.remove_disks();
            }
            drop(session);
            drop(lab);
            let mut row = Row::from_ends(spec, image.raw_len, &ends, &checks, cpu);
            row.server_tx = match (tx0, tx1) {
                (Ok(a), Ok(b)) => Some(b.saturating_sub(a)),
                _ => None,
            };
            Ok(row)
        }
    }
}

fn log_tail(fleet: &Fleet, i: usize) -> String {
    last_lines(&fleet.agent_log(i), 3)
}

/// The last `n` lines of `text`, joined with " | ".
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print() {
        for m in Mode::ALL {
            assert_eq!(m.to_string().parse::<Mode>(), Ok(m));
        }
        assert!("tcp".parse::<Mode>().unwrap_err().contains("http, chain"));
        assert_eq!(Mode::Http.streams(32), 1);
        assert_eq!(Mode::Chain.streams(32), 32);
        assert_eq!(Mode::Torrent.streams(32), 32);
        assert_eq!(Mode::Torrent.transport(), Some(Transport::Torrent));
        assert_eq!(Mode::Udpcast.transport(), None);
    }

    #[test]
    fn row_from_ends() {
        let spec = RunSpec {
            mode: Mode::Chain,
            nodes: 3,
            rate: Rate(80.0),
            timeout: Duration::from_secs(1),
        };
        let end = |secs| {
            Some(AgentEnd {
                secs,
                code: Some(0),
                ready: Some(2.0),
            })
        };
        let ends = [end(10.0), end(20.0), None];
        let checks = [Ok(()), Ok(()), Err(anyhow::anyhow!("still running"))];
        let row = Row::from_ends(&spec, 100_000_000, &ends, &checks, CpuUse::default());
        assert_eq!(row.ideal_secs, 10.0);
        assert_eq!((row.first_secs, row.last_secs), (10.0, 20.0));
        assert_eq!(row.ok, 2);
        assert_eq!((row.node_mbit_mean, row.node_mbit_min), (60.0, 40.0));
        // Ready at 2 s: 8 and 18 s of streaming.
        assert_eq!(row.stream_mbit_min, Some(800.0 / 18.0));
        assert_eq!(row.stream_mbit_mean, Some((100.0 + 800.0 / 18.0) / 2.0));
        assert_eq!(row.time_ratio(), 2.0);
        assert_eq!(row.link_share(), 0.75);
        assert_eq!(row.problems, ["node2: still running"]);
        assert_eq!(row.server_tx_ratio(), None);
        let row = Row {
            server_tx: Some(110_000_000),
            ..row
        };
        assert_eq!(row.server_tx_ratio(), Some(1.1));
    }

    #[test]
    fn last_lines_of_a_log() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b | c");
        assert_eq!(last_lines("", 2), "");
    }
}
