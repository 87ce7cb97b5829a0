//! Chain mode under faults, 16 nodes in the process-level lab: agents
//! killed with SIGKILL at random points, the server killed and restarted
//! mid-session, one node's link shaped to a tenth of the others'.
//!
//! Each test asserts outcomes — every surviving node exits 0 with its disk
//! holding exactly the image and is `done` in the server's fleet state,
//! the killed ones end `failed` there — and prints its timing next to an
//! undisturbed run of the same fleet (measured once per test process).
//! Timing goals are printed, not asserted: the machine's 2 cores are
//! shared with the nodes and with whatever else runs (the slow-node test
//! asserts a looser bound, see [`SLOW_NODE_BOUND`]).
//!
//! Random choices (which nodes, when) come from `DROVER_FAULT_SEED` if
//! set, else the clock; the seed is printed so a failure can be replayed.
//! Needs root and iproute2; `DROVER_SKIP_SCALE_TESTS=1` skips.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use drover_bench::fleet::{Bins, Fleet, FleetOptions, Transport};
use drover_bench::image::Image;
use drover_bench::lab::{Lab, Rate};
use drover_bench::should_run;
use drover_qemu_tests::procs::Procs;

const NODES: usize = 16;
const SIZE_MIB: u64 = 32;
/// 16 nodes × 32 Mbit/s keeps the 2 cores below saturation.
const RATE: Rate = Rate(32.0);
/// Small chunks: more of them to resume from, a short pipeline.
const CHUNK_KIB: u64 = 1024;
/// The agent's replay buffer (`RelayConfig::default().ring_bytes`).
const REPLAY_BUFFER: u64 = 64 << 20;
/// The slow-node test's asserted bound on the others' time against the
/// undisturbed run's (the goal, +10 %, is printed): measured −1 % to +8 %
/// with the slow node in the chain, +7 % with it fed by the head; two
/// undisturbed runs differ by up to 8 % on the shared 2-core machine.
/// Before the coordinator found slow links within about a second, +65 %
/// and more.
const SLOW_NODE_BOUND: f64 = 1.25;

struct Shared {
    bins: Bins,
    image: Image,
    out: PathBuf,
}

/// The binaries and the image, built once per test process.
fn shared() -> Result<&'static Shared> {
    static SHARED: OnceLock<std::result::Result<Shared, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            (|| -> Result<Shared> {
                let bins = Bins::locate()?;
                let out = drover_qemu_tests::artifacts::target_dir()
                    .join("bench-scale-tests")
                    .join("faults");
                let image =
                    Image::build(&out.join("image"), &bins.server, SIZE_MIB, Some(CHUNK_KIB))?;
                Ok(Shared { bins, image, out })
            })()
            .map_err(|e| format!("{e:#}"))
        })
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// A fleet of [`NODES`] chain nodes for `test`, not launched yet. The
/// registry is returned too: the server restarts through it.
fn fleet(test: &str) -> Result<(Procs, Fleet)> {
    let sh = shared()?;
    let dir = sh.out.join(test);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let procs = Procs::new(&dir)?;
    let lab = Lab::create("dft", NODES, RATE)?;
    let fleet = Fleet::start(
        &procs,
        lab,
        &sh.bins,
        &sh.image,
        FleetOptions::new(Transport::Chain),
        &dir.join("disks"),
    )?;
    eprintln!("{test}: logs in {}", dir.display());
    Ok((procs, fleet))
}

fn ideal_secs() -> f64 {
    shared().map_or(f64::NAN, |s| RATE.ideal_secs(s.image.payload_len))
}

/// Generous: the run's timeout, far above any expected time.
fn timeout() -> Duration {
    Duration::from_secs_f64(ideal_secs() * 10.0 + 120.0)
}

/// Poll the fleet (recording who finished when) until `secs` after launch.
fn run_until(fleet: &mut Fleet, secs: f64) {
    while fleet.elapsed() < secs && !fleet.poll() {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait until every agent's log has a line containing `needle`.
fn wait_all_logged(fleet: &mut Fleet, needle: &str, timeout: Duration) -> Result<f64> {
    let ok = drover_qemu_tests::wait_until(timeout, Duration::from_millis(50), || {
        fleet.poll();
        (0..fleet.len()).all(|i| fleet.agent_log(i).contains(needle))
    });
    if !ok {
        let missing: Vec<usize> = (0..fleet.len())
            .filter(|&i| !fleet.agent_log(i).contains(needle))
            .collect();
        bail!("agents {missing:?} never logged {needle:?}");
    }
    Ok(fleet.elapsed())
}

/// Wait for every agent to exit; check the survivors (exit 0, disk holds
/// the image, `done`) and that the `killed` ones end `failed`. Returns the
/// time the last survivor's disk was done.
fn finish(fleet: &mut Fleet, killed: &[usize]) -> Result<f64> {
    let all = fleet.wait(timeout());
    let mut problems = Vec::new();
    let mut last: f64 = 0.0;
    for i in (0..fleet.len()).filter(|i| !killed.contains(i)) {
        match fleet.end(i) {
            None => problems.push(format!("node{i}: still running after {:?}", timeout())),
            Some(e) if e.code != Some(0) => problems.push(format!(
                "node{i}: exited {:?}: {}",
                e.code,
                drover_bench::run::last_lines(&fleet.agent_log(i), 4)
            )),
            Some(e) => {
                last = last.max(fleet.done_secs(i).unwrap_or(e.secs));
                if let Err(e) = fleet.verify_disk(i) {
                    problems.push(format!("node{i}: {e:#}"));
                }
            }
        }
    }
    // The coordinator declares a silent node dead after `dead_after` (8 s);
    // the fleet records it failed.
    let mut states = fleet.node_states()?;
    drover_qemu_tests::wait_until(Duration::from_secs(30), Duration::from_millis(500), || {
        if let Ok(s) = fleet.node_states() {
            states = s;
        }
        killed.iter().all(|&i| states[i].state == "failed")
    });
    for (i, s) in states.iter().enumerate() {
        let want = if killed.contains(&i) {
            "failed"
        } else {
            "done"
        };
        if s.state != want {
            problems.push(format!(
                "node{i}: server state {:?} (last error {:?}), expected {want}",
                s.state, s.last_error
            ));
        }
    }
    for &i in killed {
        eprintln!(
            "  killed node{i}: server says {:?}: {}",
            states[i].state,
            states[i].last_error.as_deref().unwrap_or("-")
        );
    }
    if problems.is_empty() && all {
        // Kept for a look when something failed; 16 images otherwise.
        fleet.remove_disks();
    } else {
        bail!(
            "{} problem(s):\n  {}\nchain status:\n{}",
            problems.len(),
            problems.join("\n  "),
            chain_status(fleet)
        );
    }
    Ok(last)
}

fn chain_status(fleet: &Fleet) -> String {
    let reference = shared().map(|s| s.image.reference()).unwrap_or_default();
    match fleet.server().cli(&["chain", "status", &reference]) {
        Ok(out) => out.stdout + &out.stderr,
        Err(e) => format!("{e:#}"),
    }
}

/// The undisturbed run's time to the last node done (once per process).
fn baseline() -> Result<f64> {
    static BASE: Mutex<Option<f64>> = Mutex::new(None);
    let mut base = BASE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = *base {
        return Ok(b);
    }
    let (_procs, mut fleet) = fleet("undisturbed")?;
    fleet.launch()?;
    let t = finish(&mut fleet, &[]).context("the undisturbed run")?;
    // Nobody is slow here: any node called slow was a false move.
    let moves = chain_moves(&fleet);
    eprintln!(
        "undisturbed: {NODES} nodes done in {t:.2} s ({:.2} x the ideal {:.2} s at {} Mbit/s); \
         chain moves: {moves:?}",
        t / ideal_secs(),
        ideal_secs(),
        RATE.0
    );
    *base = Some(t);
    Ok(t)
}

/// The coordinator's moves of the session (the server log's `slow:` and
/// `probe:` notes), as `MAC: note`.
fn chain_moves(fleet: &Fleet) -> Vec<String> {
    fleet
        .server()
        .log()
        .lines()
        .filter_map(|l| l.split_once("chain node ").map(|(_, rest)| rest))
        .filter(|rest| rest.contains(": slow: ") || rest.contains(": probe: "))
        .map(str::to_owned)
        .collect()
}

/// Node `i`'s place in the chain as the session started: how many nodes
/// lie between it and the head, following each agent's first upstream
/// (its `chain: … receive from IP:PORT` line).
fn start_position(fleet: &Fleet, i: usize) -> Option<usize> {
    let lab = fleet.lab();
    let first_upstream = |n: usize| -> Option<String> {
        let log = fleet.agent_log(n);
        let line = log.lines().find(|l| l.contains("receive from "))?;
        let addr = line.rsplit("receive from ").next()?;
        Some(addr.split(':').next()?.trim().to_owned())
    };
    let (mut at, mut depth) = (i, 0);
    loop {
        let up = first_upstream(at)?;
        if up == lab.server.addr.to_string() {
            return Some(depth);
        }
        at = lab.nodes.iter().position(|h| h.addr.to_string() == up)?;
        depth += 1;
        if depth > NODES {
            return None;
        }
    }
}

/// xorshift64*, seeded from `DROVER_FAULT_SEED` or the clock.
struct Rng(u64);

impl Rng {
    fn new(test: &str) -> Rng {
        let seed = std::env::var("DROVER_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("{test}: DROVER_FAULT_SEED={seed}");
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `[lo, hi)`.
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `k` distinct indices below `n`.
    fn pick(&mut self, k: usize, n: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..n).collect();
        for i in 0..k {
            let j = i + (self.next() % (n - i) as u64) as usize;
            all.swap(i, j);
        }
        all.truncate(k);
        all
    }
}

/// SIGKILL `k` random nodes at random points while the image flows; the
/// rest must finish verified and the victims be recorded failed.
fn kill_nodes(test: &str, k: usize) -> Result<()> {
    if !should_run(test, false)? {
        return Ok(());
    }
    let base = baseline()?;
    let mut rng = Rng::new(test);
    let victims = rng.pick(k, NODES);
    let (_procs, mut fleet) = fleet(test)?;
    fleet.launch()?;
    // Every node has joined and partitioned its disk: the session runs.
    let flowing = wait_all_logged(&mut fleet, "partitioned", timeout())?;
    let mut at: Vec<f64> = (0..k)
        .map(|_| flowing + rng.range(0.1, 0.7) * ideal_secs())
        .collect();
    at.sort_by(f64::total_cmp);
    for (&victim, &t) in victims.iter().zip(&at) {
        run_until(&mut fleet, t);
        ensure!(
            fleet.done_secs(victim).is_none(),
            "node{victim} finished before it could be killed"
        );
        eprintln!("{test}: SIGKILL node{victim} at {:.2} s", fleet.elapsed());
        fleet.kill(victim)?;
    }
    let t = finish(&mut fleet, &victims)?;
    let buffer = RATE.ideal_secs(REPLAY_BUFFER);
    eprintln!(
        "{test}: survivors done in {t:.2} s vs {base:.2} s undisturbed: +{:.2} s \
         (goal: less than one replay buffer's transfer, {buffer:.1} s: {})",
        t - base,
        if t - base < buffer { "met" } else { "NOT met" }
    );
    Ok(())
}

#[test]
fn chain_survives_1_of_16_killed() -> Result<()> {
    kill_nodes("chain_survives_1_of_16_killed", 1)
}

#[test]
fn chain_survives_3_of_16_killed() -> Result<()> {
    kill_nodes("chain_survives_3_of_16_killed", 3)
}

/// The server (head and coordinator) is SIGKILLed mid-session and comes
/// back after a few seconds: every node still finishes with a verified
/// disk and is recorded done.
#[test]
fn chain_survives_a_server_restart() -> Result<()> {
    let test = "chain_survives_a_server_restart";
    if !should_run(test, false)? {
        return Ok(());
    }
    let base = baseline()?;
    let mut rng = Rng::new(test);
    let (procs, mut fleet) = fleet(test)?;
    fleet.launch()?;
    let flowing = wait_all_logged(&mut fleet, "partitioned", timeout())?;
    run_until(&mut fleet, flowing + rng.range(0.2, 0.6) * ideal_secs());
    let pid = fleet.server().proc().pid();
    eprintln!("{test}: SIGKILL drover-server at {:.2} s", fleet.elapsed());
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        rustix::process::kill_process(pid, rustix::process::Signal::KILL)?;
    }
    let down = fleet.elapsed();
    run_until(&mut fleet, down + 5.0);
    fleet.server_mut().restart(&procs)?;
    let back = fleet.elapsed();
    eprintln!("{test}: drover-server back at {back:.2} s");
    let t = finish(&mut fleet, &[])?;
    eprintln!(
        "{test}: all done in {t:.2} s vs {base:.2} s undisturbed (server down {:.1} s)",
        back - down
    );
    Ok(())
}

/// One node's link shaped to a tenth of the rate: it finishes late (its
/// own link), the others should not wait for it (the coordinator moves a
/// slow node to the tail as soon as its upstream holds a few chunks it
/// does not take; the head-fed node is found by the probe first).
///
/// Asserted: the slow node is moved (unless it started at the tail) and
/// the others finish within [`SLOW_NODE_BOUND`] of the undisturbed run.
/// The goal (+10 %) is printed: it is met on this machine with a few
/// per cent to spare, about what two undisturbed runs differ by, so it
/// is not asserted.
#[test]
fn chain_slow_node_does_not_hold_back_the_others() -> Result<()> {
    let test = "chain_slow_node_does_not_hold_back_the_others";
    if !should_run(test, false)? {
        return Ok(());
    }
    let base = baseline()?;
    let mut rng = Rng::new(test);
    let slow = rng.pick(1, NODES)[0];
    let (_procs, mut fleet) = fleet(test)?;
    fleet.lab().shape_node(slow, Rate(RATE.0 / 10.0))?;
    eprintln!("{test}: node{slow}'s link at {} Mbit/s", RATE.0 / 10.0);
    fleet.launch()?;
    finish(&mut fleet, &[])?;
    let others = (0..NODES)
        .filter(|&i| i != slow)
        .filter_map(|i| fleet.done_secs(i))
        .fold(0.0, f64::max);
    let slow_t = fleet.done_secs(slow).unwrap_or(f64::NAN);
    let position = start_position(&fleet, slow);
    let moves = chain_moves(&fleet);
    let mac = fleet.lab().nodes[slow].mac.clone();
    let moved = moves
        .iter()
        .any(|m| m.starts_with(&format!("{mac}: slow: ")));
    eprintln!(
        "{test}: the other {} nodes done in {others:.2} s vs {base:.2} s undisturbed ({:+.1}%; goal <= +10%: {}); \
         node{slow} (position {} at the start) in {slow_t:.2} s (its own link's ideal: {:.1} s); \
         chain moves: {moves:?}",
        NODES - 1,
        (others / base - 1.0) * 100.0,
        if others <= base * 1.1 { "met" } else { "NOT met" },
        position.map_or("?".into(), |p| p.to_string()),
        ideal_secs() * 10.0
    );
    eprintln!("chain status:\n{}", chain_status(&fleet));
    ensure!(
        moved || position == Some(NODES - 1),
        "node{slow} (position {position:?}) was never moved: {moves:?}"
    );
    ensure!(
        others <= base * SLOW_NODE_BOUND,
        "the others took {:+.1}% longer than undisturbed (asserted bound {:+.0}%)",
        (others / base - 1.0) * 100.0,
        (SLOW_NODE_BOUND - 1.0) * 100.0
    );
    Ok(())
}
