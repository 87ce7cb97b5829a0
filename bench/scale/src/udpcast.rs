//! The multicast baseline: Debian's udpcast (`udp-sender` in the server
//! namespace, `udp-receiver` in each node namespace), receivers writing the
//! raw image into a file disk of the same kind as drover's.
//!
//! udpcast multicasts on the lab's bridge, which floods it to every port
//! (multicast snooping is off) and needs the broadcast address on each
//! interface, which [`crate::lab`] sets. The sender is capped a little
//! under the link rate (`--max-bitrate`): uncapped, it overruns the shaped
//! link's queue and spends the difference on retransmissions.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use drover_qemu_tests::procs::{Proc, Procs};

use crate::fleet::AgentEnd;
use crate::image::Image;
use crate::lab::{Lab, DEV};

/// The sender's rate cap as a share of the link rate.
pub const SENDER_SHARE: f64 = 0.95;

/// A udpcast session in `lab`; fields drop in order (processes first).
pub struct Session {
    receivers: Vec<Proc>,
    sender: Option<Proc>,
    ends: Vec<Option<AgentEnd>>,
    disks: Vec<PathBuf>,
    started: Instant,
}

/// Whether udpcast is installed (`udp-sender`, `udp-receiver`).
pub fn available() -> bool {
    ["udp-sender", "udp-receiver"].iter().all(|c| {
        Command::new(c)
            .arg("--license")
            .output()
            .is_ok_and(|o| !o.stdout.is_empty() || !o.stderr.is_empty())
    })
}

impl Session {
    /// Start one receiver per node, then the sender (which waits for all
    /// of them); the clock starts before the first receiver.
    pub fn start(procs: &Procs, lab: &Lab, image: &Image, disk_dir: &Path) -> Result<Session> {
        std::fs::create_dir_all(disk_dir)
            .with_context(|| format!("creating {}", disk_dir.display()))?;
        let mut disks = Vec::new();
        for i in 0..lab.nodes.len() {
            let disk = disk_dir.join(format!("node{i}.img"));
            image.new_disk(&disk)?;
            disks.push(disk);
        }
        let started = Instant::now();
        let mut receivers = Vec::new();
        for (i, node) in lab.nodes.iter().enumerate() {
            let mut cmd = Command::new("udp-receiver");
            cmd.arg("--file")
                .arg(&disks[i])
                .args(["--interface", DEV, "--nokbd", "--no-progress"]);
            receivers.push(procs.spawn(&format!("udp-receiver{i}"), node.ns.exec(&cmd))?);
        }
        let cap_kbit = (lab.rate().0 * 1000.0 * SENDER_SHARE).round() as u64;
        let mut cmd = Command::new("udp-sender");
        cmd.arg("--file")
            .arg(&image.raw)
            .args(["--interface", DEV, "--nokbd", "--no-progress"])
            .args(["--min-receivers", &lab.nodes.len().to_string()])
            .args(["--max-bitrate", &format!("{cap_kbit}k")]);
        let sender = procs.spawn("udp-sender", lab.server.ns.exec(&cmd))?;
        let n = receivers.len();
        Ok(Session {
            receivers,
            sender: Some(sender),
            ends: vec![None; n],
            disks,
            started,
        })
    }

    /// Wait until every receiver exited or `timeout` passed; whether all did.
    pub fn wait(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.started.elapsed().as_secs_f64();
            let mut all = true;
            for (proc, end) in self.receivers.iter().zip(self.ends.iter_mut()) {
                if end.is_some() {
                    continue;
                }
                match proc.try_wait() {
                    Ok(Some(status)) => {
                        *end = Some(AgentEnd {
                            secs: now,
                            code: status.code(),
                            ready: None,
                        })
                    }
                    _ => all = false,
                }
            }
            if all {
                // The sender ends by itself once every receiver confirmed.
                if let Some(s) = &self.sender {
                    let _ = s.wait_timeout(Duration::from_secs(10));
                }
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn end(&self, i: usize) -> Option<&AgentEnd> {
        self.ends[i].as_ref()
    }

    pub fn disk(&self, i: usize) -> &Path {
        &self.disks[i]
    }

    pub fn receiver_log(&self, i: usize) -> String {
        self.receivers[i].log()
    }

    pub fn sender_log(&self) -> String {
        self.sender.as_ref().map(Proc::log).unwrap_or_default()
    }

    pub fn remove_disks(&self) {
        for d in &self.disks {
            let _ = std::fs::remove_file(d);
        }
    }
}
