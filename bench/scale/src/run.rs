//! One benchmark run: a fresh lab of N nodes, one transport, every node
//! timed from the launch to its exit, every disk checked, CPU sampled.

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

/// What moves the image to the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// drover, each node pulling from the server over HTTP.
    Http,
    /// drover's relay chain.
    Chain,
    /// udpcast multicast.
    Udpcast,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Http, Mode::Chain, Mode::Udpcast];

    /// How many full-rate streams the machine carries at once with `n`
    /// nodes: the server's link is the bottleneck for http (the nodes
    /// share it), every node receives at the full rate otherwise.
    pub fn streams(self, n: usize) -> usize {
        match self {
            Mode::Http => 1,
            Mode::Chain | Mode::Udpcast => n,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Http => "http",
            Mode::Chain => "chain",
            Mode::Udpcast => "udpcast",
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
            _ => Err(format!(
                "unknown mode {s:?}; accepted: http, chain, udpcast"
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
    pub cpu: CpuUse,
    /// Nodes that exited 0 with a verified disk (and, for drover, are
    /// `done` in the server's state).
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
        let mbit: Vec<f64> = ok_secs
            .iter()
            .map(|s| bytes as f64 * 8.0 / 1e6 / s.max(1e-3))
            .collect();
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
            cpu,
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
    match spec.mode {
        Mode::Http | Mode::Chain => {
            let transport = if spec.mode == Mode::Http {
                Transport::Http
            } else {
                Transport::Chain
            };
            let mut fleet = Fleet::start(
                &procs,
                lab,
                bins,
                image,
                FleetOptions::new(transport),
                &disks,
            )?;
            let cpu = Sampler::start();
            fleet.launch()?;
            let all = fleet.wait(spec.timeout);
            let cpu = cpu.stop();
            // A node is finished when its disk is (a chain node serves its
            // downstreams for a while after that).
            let ends: Vec<Option<AgentEnd>> = (0..fleet.len())
                .map(|i| {
                    fleet.end(i).map(|e| AgentEnd {
                        secs: fleet.done_secs(i).unwrap_or(e.secs),
                        code: e.code,
                    })
                })
                .collect();
            let states = fleet.node_states()?;
            let checks: Vec<Result<()>> = (0..fleet.len())
                .map(|i| {
                    let code = ends[i].as_ref().map(|e| e.code);
                    match code {
                        None => bail!("still running after {:?}", spec.timeout),
                        Some(Some(0)) => {}
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
            let _ = all;
            Ok(Row::from_ends(spec, image.payload_len, &ends, &checks, cpu))
        }
        Mode::Udpcast => {
            let cpu = Sampler::start();
            let mut session = udpcast::Session::start(&procs, &lab, image, &disks)?;
            session.wait(spec.timeout);
            let cpu = cpu.stop();
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
            Ok(Row::from_ends(spec, image.raw_len, &ends, &checks, cpu))
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
            })
        };
        let ends = [end(10.0), end(20.0), None];
        let checks = [Ok(()), Ok(()), Err(anyhow::anyhow!("still running"))];
        let row = Row::from_ends(&spec, 100_000_000, &ends, &checks, CpuUse::default());
        assert_eq!(row.ideal_secs, 10.0);
        assert_eq!((row.first_secs, row.last_secs), (10.0, 20.0));
        assert_eq!(row.ok, 2);
        assert_eq!((row.node_mbit_mean, row.node_mbit_min), (60.0, 40.0));
        assert_eq!(row.time_ratio(), 2.0);
        assert_eq!(row.link_share(), 0.75);
        assert_eq!(row.problems, ["node2: still running"]);
    }

    #[test]
    fn last_lines_of_a_log() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b | c");
        assert_eq!(last_lines("", 2), "");
    }
}
