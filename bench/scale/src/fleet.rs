//! drover in the lab: the real `drover-server serve` in the server
//! namespace and N real `drover-agent run` processes, one per node
//! namespace, each writing its own file disk.
//!
//! The nodes are registered and deployed through the server's CLI as an
//! operator would (`node add`, `deploy`); each agent gets the kernel
//! command line of its node's boot entry (`GET /boot/MAC.ipxe`, which
//! carries its deploy token), so it reports to the server like a
//! netbooted machine.
//!
//! A chain or torrent node keeps serving others after its disk is done
//! (the agent's `deployed` line): [`Fleet::wait_done`] waits for every
//! disk, [`Fleet::reap_lingering`] then gives the lingering agents a grace
//! period to leave by themselves and stops the rest.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use drover_qemu_tests::procs::{Proc, Procs};
use drover_qemu_tests::server::{Server, ServerConfig};

use crate::image::Image;
use crate::lab::Lab;

/// The programs under test.
#[derive(Debug, Clone)]
pub struct Bins {
    pub agent: PathBuf,
    pub server: PathBuf,
}

impl Bins {
    /// `$DROVER_AGENT_BIN`/`$DROVER_SERVER_BIN`, else built by cargo in the
    /// caller's profile (see `drover_qemu_tests::artifacts`).
    pub fn locate() -> Result<Bins> {
        Ok(Bins {
            agent: drover_qemu_tests::artifacts::agent_bin()?,
            server: drover_qemu_tests::artifacts::server_bin()?,
        })
    }
}

/// drover's transports the harness drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Http,
    Chain,
    Torrent,
}

impl Transport {
    /// `deploy.mode`'s value.
    pub fn mode(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Chain => "chain",
            Transport::Torrent => "torrent",
        }
    }
}

/// How a fleet is set up.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub transport: Transport,
    /// `drover-agent run --server-patience`.
    pub server_patience: Duration,
    /// `drover-agent run --report-deadline`.
    pub report_deadline: Duration,
    /// More of the server's config, appended after `[deploy]` (e.g.
    /// `"[torrent]\nopen = true\n"`).
    pub server_toml: String,
}

impl FleetOptions {
    pub fn new(transport: Transport) -> FleetOptions {
        FleetOptions {
            transport,
            server_patience: Duration::from_secs(60),
            report_deadline: Duration::from_secs(60),
            server_toml: String::new(),
        }
    }
}

/// How one agent ended.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentEnd {
    /// Seconds from the launch of the fleet to its exit.
    pub secs: f64,
    /// Its exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    /// When its payload could start to arrive (the disk partitioned), in
    /// seconds since the launch, if known.
    pub ready: Option<f64>,
}

/// What the server's fleet state says about one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    pub state: String,
    pub last_error: Option<String>,
    pub deployed_sha256: Option<String>,
}

/// Fields drop in order: agents, then the server, then the namespaces.
pub struct Fleet {
    agents: Vec<Option<Proc>>,
    ends: Vec<Option<AgentEnd>>,
    /// When each agent printed that its disk is deployed (seconds since
    /// the launch): a chain node keeps serving its downstreams after that.
    done: Vec<Option<f64>>,
    ready: Vec<Option<f64>>,
    /// Agents stopped by [`Fleet::reap_lingering`] after their disk was
    /// done.
    reaped: Vec<bool>,
    server: Server,
    lab: Lab,
    procs: Procs,
    bins: Bins,
    image: Image,
    options: FleetOptions,
    cmdlines: Vec<String>,
    disks: Vec<PathBuf>,
    launched: Option<Instant>,
}

impl Fleet {
    /// Start the server in `lab`, register every node, deploy the image to
    /// all of them and fetch their boot entries; make their disks under
    /// `disk_dir`. Nothing runs on the nodes yet ([`Fleet::launch`]).
    pub fn start(
        procs: &Procs,
        lab: Lab,
        bins: &Bins,
        image: &Image,
        options: FleetOptions,
        disk_dir: &Path,
    ) -> Result<Fleet> {
        let mut config = ServerConfig::new(&lab.server.ns, &image.kernel, &image.initrd)
            .store(&image.store)
            .deploy("mode", options.transport.mode());
        config.extra_toml.push_str(&options.server_toml);
        // Nodes are registered explicitly, not on first contact.
        config.deploy.retain(|(k, _)| k != "image");
        let server = Server::start(procs, &lab.server.ns, &bins.server, config)?;
        let macs: Vec<String> = lab.nodes.iter().map(|n| n.mac.clone()).collect();
        for (i, mac) in macs.iter().enumerate() {
            cli_ok(
                &server,
                &["node", "add", mac, "--name", &format!("node{i}")],
            )?;
        }
        let mut deploy = vec!["deploy", "--image"];
        let reference = image.reference();
        deploy.push(&reference);
        deploy.extend(macs.iter().map(String::as_str));
        cli_ok(&server, &deploy)?;
        let listen = server.config().listen;
        let mut cmdlines = Vec::with_capacity(macs.len());
        for mac in &macs {
            cmdlines.push(boot_cmdline(&lab, listen, mac)?);
        }
        std::fs::create_dir_all(disk_dir)
            .with_context(|| format!("creating {}", disk_dir.display()))?;
        let mut disks = Vec::with_capacity(macs.len());
        for i in 0..macs.len() {
            let disk = disk_dir.join(format!("node{i}.img"));
            image.new_disk(&disk)?;
            disks.push(disk);
        }
        let n = macs.len();
        Ok(Fleet {
            agents: (0..n).map(|_| None).collect(),
            ends: vec![None; n],
            done: vec![None; n],
            ready: vec![None; n],
            reaped: vec![false; n],
            server,
            lab,
            procs: procs.clone(),
            bins: bins.clone(),
            image: image.clone(),
            options,
            cmdlines,
            disks,
            launched: None,
        })
    }

    pub fn len(&self) -> usize {
        self.agents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    pub fn server(&self) -> &Server {
        &self.server
    }

    pub fn server_mut(&mut self) -> &mut Server {
        &mut self.server
    }

    /// Node `i`'s kernel command line, from its boot entry.
    pub fn cmdline(&self, i: usize) -> &str {
        &self.cmdlines[i]
    }

    pub fn disk(&self, i: usize) -> &Path {
        &self.disks[i]
    }

    /// Start every agent at once; the clock starts now.
    pub fn launch(&mut self) -> Result<()> {
        self.launched = Some(Instant::now());
        for i in 0..self.len() {
            self.launch_one(i)?;
        }
        Ok(())
    }

    /// Start agent `i` (again).
    pub fn launch_one(&mut self, i: usize) -> Result<()> {
        if self.launched.is_none() {
            self.launched = Some(Instant::now());
        }
        let node = &self.lab.nodes[i];
        let mut cmd = Command::new(&self.bins.agent);
        cmd.arg("run")
            .arg("--cmdline")
            .arg(&self.cmdlines[i])
            .arg("--disk")
            .arg(&self.disks[i])
            .arg("--key")
            .arg(self.image.public_key())
            .arg("--mac")
            .arg(&node.mac)
            .arg("--server-patience")
            .arg(self.options.server_patience.as_secs().to_string())
            .arg("--report-deadline")
            .arg(self.options.report_deadline.as_secs().to_string());
        let proc = self.procs.spawn(&format!("agent{i}"), node.ns.exec(&cmd))?;
        self.agents[i] = Some(proc);
        self.ends[i] = None;
        self.done[i] = None;
        self.ready[i] = None;
        self.reaped[i] = false;
        Ok(())
    }

    /// Seconds since [`Fleet::launch`].
    pub fn elapsed(&self) -> f64 {
        self.launched.map_or(0.0, |t| t.elapsed().as_secs_f64())
    }

    /// SIGKILL agent `i`, as a node losing power.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        let proc = self.agents[i].as_ref().context("agent not running")?;
        if let Some(pid) = i32::try_from(proc.pid())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            // ESRCH: it had exited already; the poll below records how.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        self.poll();
        Ok(())
    }

    /// The log of agent `i` so far.
    pub fn agent_log(&self, i: usize) -> String {
        self.agents[i].as_ref().map(Proc::log).unwrap_or_default()
    }

    /// Record the agents that exited since the last poll; whether all have.
    pub fn poll(&mut self) -> bool {
        let now = self.elapsed();
        let mut all = true;
        for (((proc, end), done), ready) in self
            .agents
            .iter()
            .zip(self.ends.iter_mut())
            .zip(self.done.iter_mut())
            .zip(self.ready.iter_mut())
        {
            if end.is_some() {
                continue;
            }
            let Some(proc) = proc else {
                all = false;
                continue;
            };
            if ready.is_none() && proc.log().contains(PARTITIONED) {
                *ready = Some(now);
            }
            if done.is_none() && proc.log().contains(DEPLOYED) {
                *done = Some(now);
            }
            match proc.try_wait() {
                Ok(Some(status)) => {
                    *end = Some(AgentEnd {
                        secs: now,
                        code: status.code(),
                        ready: *ready,
                    })
                }
                _ => all = false,
            }
        }
        all
    }

    /// Wait until every launched agent exited, or `timeout` from now.
    /// `Ok(true)`: all exited.
    pub fn wait(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.poll() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            // Each poll reads every agent's log: not too often.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until every launched agent has its disk done or has exited,
    /// or `timeout` from now. `true`: all have.
    pub fn wait_done(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            self.poll();
            let all = (0..self.len()).all(|i| {
                self.agents[i].is_some() && (self.ends[i].is_some() || self.done[i].is_some())
            });
            if all {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Give agents still running after their disk was done (a chain or
    /// torrent node serving others) `grace` from now to leave by
    /// themselves, then stop them (SIGTERM, then SIGKILL); they count as
    /// [`Fleet::reaped`]. Agents whose disk is not done are left alone.
    /// Returns the indices of those stopped.
    pub fn reap_lingering(&mut self, grace: Duration) -> Vec<usize> {
        let deadline = Instant::now() + grace;
        let lingering = |f: &Fleet| -> Vec<usize> {
            (0..f.len())
                .filter(|&i| f.agents[i].is_some() && f.ends[i].is_none() && f.done[i].is_some())
                .collect()
        };
        loop {
            self.poll();
            let left = lingering(self);
            if left.is_empty() {
                return left;
            }
            if Instant::now() >= deadline {
                for &i in &left {
                    if let Some(p) = &self.agents[i] {
                        p.stop();
                    }
                    self.reaped[i] = true;
                }
                self.poll();
                return left;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether agent `i` was stopped by [`Fleet::reap_lingering`] after
    /// its disk was done.
    pub fn reaped(&self, i: usize) -> bool {
        self.reaped[i]
    }

    /// Whether agent `i` ended well: it exited 0, or it was stopped while
    /// lingering after its disk was done.
    pub fn ended_well(&self, i: usize) -> bool {
        match &self.ends[i] {
            Some(e) => e.code == Some(0) || (self.reaped[i] && self.done[i].is_some()),
            None => false,
        }
    }

    /// How agent `i` ended, if it has.
    pub fn end(&self, i: usize) -> Option<&AgentEnd> {
        self.ends[i].as_ref()
    }

    /// When agent `i` said its disk was deployed (synced and verified),
    /// in seconds since the launch; its exit may come later (a chain node
    /// serves its downstreams first).
    pub fn done_secs(&self, i: usize) -> Option<f64> {
        self.done[i]
    }

    /// Every node's state in the server's fleet, in node order.
    pub fn node_states(&self) -> Result<Vec<NodeState>> {
        let out = cli_ok(&self.server, &["node", "list", "--json"])?;
        let json: serde_json::Value =
            serde_json::from_str(&out).with_context(|| format!("parsing node list: {out}"))?;
        let nodes = json["nodes"]
            .as_array()
            .context("node list without nodes")?;
        let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
        self.lab
            .nodes
            .iter()
            .map(|host| {
                let node = nodes
                    .iter()
                    .find(|n| n["mac"].as_str() == Some(&host.mac))
                    .with_context(|| format!("node {} not in the server's list", host.mac))?;
                Ok(NodeState {
                    state: text(&node["state"]).unwrap_or_default(),
                    last_error: text(&node["last_error"]),
                    deployed_sha256: text(&node["deployed_sha256"]),
                })
            })
            .collect()
    }

    /// Check node `i`'s disk holds the image.
    pub fn verify_disk(&self, i: usize) -> Result<()> {
        self.image.verify_gpt_disk(&self.disks[i])
    }

    /// Delete the disk files (they are as large as the image each).
    pub fn remove_disks(&self) {
        for d in &self.disks {
            let _ = std::fs::remove_file(d);
        }
    }
}

/// The agent's console line once its disk is written, synced and verified
/// (`drover: deployed IMAGE to DISK: …`).
const DEPLOYED: &str = "drover: deployed ";
/// The agent's line once its disk is partitioned: from here on it only
/// waits for the payload (a chain node for its session to start).
const PARTITIONED: &str = "drover: partitioned ";

/// Run a server CLI command that must succeed; its stdout.
fn cli_ok(server: &Server, args: &[&str]) -> Result<String> {
    let out = server.cli(args)?;
    if out.code != Some(0) {
        bail!(
            "drover-server {} failed ({:?}):\n{}{}",
            args.join(" "),
            out.code,
            out.stdout,
            out.stderr
        );
    }
    Ok(out.stdout)
}

/// The kernel command line of `mac`'s boot entry: the iPXE `kernel URL ARGS`
/// line's ARGS.
fn boot_cmdline(lab: &Lab, server: SocketAddr, mac: &str) -> Result<String> {
    let path = format!("/boot/{}.ipxe", mac.replace(':', "%3A"));
    let (status, body) = lab.server.ns.http_get(server, &path)?;
    if status != 200 {
        bail!("GET {path}: HTTP {status}: {body}");
    }
    kernel_args(&body).with_context(|| format!("no kernel line in {path}:\n{body}"))
}

fn kernel_args(script: &str) -> Option<String> {
    let line = script.lines().find_map(|l| l.strip_prefix("kernel "))?;
    let (_url, args) = line.trim().split_once(' ')?;
    Some(args.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_args_from_an_entry() {
        let script = "#!ipxe\ninitrd --name initrd.img http://s/files/initrd.img\n\
                      kernel http://s/files/vmlinuz initrd=initrd.img deploy.server=http://s \
                      deploy.disk=\"serial:a b\" console=ttyS0\nboot\n";
        assert_eq!(
            kernel_args(script).as_deref(),
            Some(
                "initrd=initrd.img deploy.server=http://s deploy.disk=\"serial:a b\" console=ttyS0"
            )
        );
        assert_eq!(kernel_args("#!ipxe\nexit 1\n"), None);
    }
}
