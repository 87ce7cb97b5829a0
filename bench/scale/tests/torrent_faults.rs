//! Torrent mode under faults, 16 nodes in the process-level lab: agents
//! SIGKILLed at random points mid-swarm, the server (tracker and first
//! seed) SIGKILLed and restarted mid-session, and a rogue peer in the
//! swarm that answers every request with garbage.
//!
//! Each test asserts outcomes — every surviving node's agent ends well
//! with its disk holding exactly the image and is `done` in the server's
//! fleet state, the killed ones are not `done` — and prints its timing
//! next to an undisturbed run of the same fleet (measured once per test
//! process), with the server's transmitted bytes over the payload. Timing
//! is printed, not asserted: the machine's 2 cores are shared with the
//! nodes and with whatever else runs.
//!
//! A node seeds after its disk is done until the tracker lists nobody
//! still downloading. A killed node never says it stopped, so the tracker
//! lists it as downloading until it expires (three announce intervals,
//! 90 s by default) and the survivors linger meanwhile: the tests wait
//! [`LINGER_GRACE`] for them, then stop them (their success was reported
//! before they lingered) and print how many were.
//!
//! Random choices (which nodes, when) come from `DROVER_FAULT_SEED` if
//! set, else the clock; the seed is printed so a failure can be replayed.
//! Needs root and iproute2; `DROVER_SKIP_SCALE_TESTS=1` skips.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use drover_agent::torrent::tracker::Event;
use drover_bench::fault::{run_until, sigkill, wait_all_logged, Rng};
use drover_bench::fleet::{Bins, Fleet, FleetOptions, Transport};
use drover_bench::image::{self, Image};
use drover_bench::lab::{Lab, Rate};
use drover_bench::rogue::Rogue;
use drover_bench::should_run;
use drover_qemu_tests::procs::Procs;

const NODES: usize = 16;
const SIZE_MIB: u64 = 32;
/// 16 nodes × 32 Mbit/s keeps the 2 cores below saturation.
const RATE: Rate = Rate(32.0);
const CHUNK_KIB: u64 = 1024;
/// The torrent's pieces: as the benchmark's 256 MiB image gets (the
/// importer's choice for 32 MiB would be 32 KiB): 16 blocks each, so a
/// piece is often fetched from several peers at once.
const PIECE_KIB: u64 = 256;
/// How long survivors may keep seeding after the last disk is done
/// before the test stops them (module doc).
const LINGER_GRACE: Duration = Duration::from_secs(20);
/// The agent's line once it is in the swarm (data flows from here on).
const JOINED: &str = "torrent: joined the swarm";

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
                    .join("torrent-faults");
                let image = Image::build_with_pieces(
                    &out.join("image"),
                    &bins.server,
                    SIZE_MIB,
                    Some(CHUNK_KIB),
                    Some(PIECE_KIB),
                )?;
                Ok(Shared { bins, image, out })
            })()
            .map_err(|e| format!("{e:#}"))
        })
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// A fleet of [`NODES`] torrent nodes for `test` (with `guests` more hosts
/// on the switch and `server_toml` in the server's config), not launched
/// yet. The registry is returned too: the server restarts through it.
fn fleet(test: &str, guests: usize, server_toml: &str) -> Result<(Procs, Fleet)> {
    let sh = shared()?;
    let dir = sh.out.join(test);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let procs = Procs::new(&dir)?;
    let mut lab = Lab::create("dtf", NODES, RATE)?;
    for _ in 0..guests {
        lab.add_guest()?;
    }
    let mut options = FleetOptions::new(Transport::Torrent);
    options.server_toml = server_toml.to_owned();
    let fleet = Fleet::start(
        &procs,
        lab,
        &sh.bins,
        &sh.image,
        options,
        &dir.join("disks"),
    )?;
    eprintln!("{test}: logs in {}", dir.display());
    Ok((procs, fleet))
}

fn ideal_secs() -> f64 {
    shared().map_or(f64::NAN, |s| RATE.ideal_secs(s.image.payload_len))
}

fn payload_len() -> u64 {
    shared().map_or(1, |s| s.image.payload_len)
}

/// Generous: the run's timeout, far above any expected time.
fn timeout() -> Duration {
    Duration::from_secs_f64(ideal_secs() * 10.0 + 120.0)
}

/// What a finished run measured.
struct Outcome {
    /// The last survivor's disk done, seconds after the launch.
    last: f64,
    /// Survivors still seeding after [`LINGER_GRACE`], stopped.
    reaped: usize,
}

/// Wait for every survivor's disk; give lingering agents
/// [`LINGER_GRACE`]; check the survivors (ended well, disk holds the
/// image, `done`) and that the `killed` ones are not `done`.
fn finish(fleet: &mut Fleet, killed: &[usize]) -> Result<Outcome> {
    let all = fleet.wait_done(timeout());
    let reaped = fleet.reap_lingering(LINGER_GRACE);
    let mut problems = Vec::new();
    let mut last: f64 = 0.0;
    for i in (0..fleet.len()).filter(|i| !killed.contains(i)) {
        match (fleet.end(i), fleet.done_secs(i)) {
            (None, _) => problems.push(format!("node{i}: still running after {:?}", timeout())),
            (Some(e), _) if !fleet.ended_well(i) => problems.push(format!(
                "node{i}: exited {:?}: {}",
                e.code,
                drover_bench::run::last_lines(&fleet.agent_log(i), 4)
            )),
            (Some(e), done) => {
                last = last.max(done.unwrap_or(e.secs));
                if let Err(e) = fleet.verify_disk(i) {
                    problems.push(format!("node{i}: {e:#}"));
                }
            }
        }
    }
    let states = fleet.node_states()?;
    for (i, s) in states.iter().enumerate() {
        if killed.contains(&i) {
            eprintln!(
                "  killed node{i}: server says {:?} ({})",
                s.state,
                s.last_error.as_deref().unwrap_or("-")
            );
            if s.state == "done" || fleet.done_secs(i).is_some() {
                problems.push(format!(
                    "node{i} was killed but is recorded {:?} (disk done: {:?})",
                    s.state,
                    fleet.done_secs(i)
                ));
            }
        } else if s.state != "done" {
            problems.push(format!(
                "node{i}: server state {:?} (last error {:?}), expected done",
                s.state, s.last_error
            ));
        }
    }
    if !reaped.is_empty() {
        eprintln!(
            "  {} survivors still seeding {LINGER_GRACE:?} after the last disk was done \
             (the tracker lists nodes as downloading until they announce or expire): stopped",
            reaped.len()
        );
    }
    if problems.is_empty() && all {
        // Kept for a look when something failed; 16 images otherwise.
        fleet.remove_disks();
    } else {
        bail!(
            "{} problem(s):\n  {}",
            problems.len(),
            problems.join("\n  ")
        );
    }
    Ok(Outcome {
        last,
        reaped: reaped.len(),
    })
}

/// The swarm's counters summed over the agents that said goodbye (`left
/// the swarm: … B bad pieces refused, D peers dropped, H pieces over
/// HTTP`; an agent stopped while seeding prints none): (agents, bad
/// pieces, peers dropped, pieces over HTTP).
fn swarm_totals(fleet: &Fleet) -> (usize, u64, u64, u64) {
    let mut t = (0, 0, 0, 0);
    for i in 0..fleet.len() {
        let log = fleet.agent_log(i);
        let Some(line) = log.lines().find(|l| l.contains("left the swarm:")) else {
            continue;
        };
        let num = |what: &str| -> u64 {
            line.split(", ")
                .find(|part| part.ends_with(what))
                .and_then(|p| p.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        t.0 += 1;
        t.1 += num("bad pieces refused");
        t.2 += num("peers dropped");
        t.3 += num("pieces over HTTP");
    }
    t
}

/// The server's transmitted bytes since `from`, over the payload.
fn server_tx_ratio(fleet: &Fleet, from: u64) -> f64 {
    fleet.lab().server_tx_bytes().map_or(f64::NAN, |b| {
        b.saturating_sub(from) as f64 / payload_len() as f64
    })
}

/// The undisturbed run's time to the last node done (once per process).
fn baseline() -> Result<f64> {
    static BASE: Mutex<Option<f64>> = Mutex::new(None);
    let mut base = BASE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = *base {
        return Ok(b);
    }
    let (_procs, mut fleet) = fleet("undisturbed", 0, "")?;
    let tx0 = fleet.lab().server_tx_bytes()?;
    fleet.launch()?;
    let out = finish(&mut fleet, &[]).context("the undisturbed run")?;
    let (said, bad, dropped, http) = swarm_totals(&fleet);
    eprintln!(
        "undisturbed: {NODES} nodes done in {:.2} s ({:.2} x the ideal {:.2} s at {} Mbit/s); \
         server sent {:.2} x the payload; {} stopped while seeding; {said} agents' totals: \
         {bad} bad pieces, {dropped} peers dropped, {http} pieces over HTTP",
        out.last,
        out.last / ideal_secs(),
        ideal_secs(),
        RATE.0,
        server_tx_ratio(&fleet, tx0),
        out.reaped
    );
    ensure!(
        out.reaped == 0,
        "undisturbed: {} nodes were still seeding {LINGER_GRACE:?} after the last disk was done",
        out.reaped
    );
    *base = Some(out.last);
    Ok(out.last)
}

/// SIGKILL 3 of the 16 nodes at random points while the pieces flow: the
/// others finish verified, the victims are not recorded done.
#[test]
fn torrent_survives_3_of_16_killed() -> Result<()> {
    let test = "torrent_survives_3_of_16_killed";
    if !should_run(test, false)? {
        return Ok(());
    }
    let base = baseline()?;
    let mut rng = Rng::new(test);
    let victims = rng.pick(3, NODES);
    let (_procs, mut fleet) = fleet(test, 0, "")?;
    let tx0 = fleet.lab().server_tx_bytes()?;
    fleet.launch()?;
    let flowing = wait_all_logged(&mut fleet, JOINED, timeout())?;
    let mut at: Vec<f64> = (0..victims.len())
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
    let out = finish(&mut fleet, &victims)?;
    let (said, bad, dropped, http) = swarm_totals(&fleet);
    eprintln!(
        "{test}: survivors done in {:.2} s vs {base:.2} s undisturbed ({:+.2} s); server sent \
         {:.2} x the payload; {} survivors stopped while seeding; {said} agents' totals: {bad} \
         bad pieces, {dropped} peers dropped, {http} pieces over HTTP",
        out.last,
        out.last - base,
        server_tx_ratio(&fleet, tx0),
        out.reaped
    );
    Ok(())
}

/// The server (tracker and first seed) is SIGKILLed mid-session and comes
/// back 5 s later: every node still finishes verified and is recorded
/// done.
#[test]
fn torrent_survives_a_server_restart() -> Result<()> {
    let test = "torrent_survives_a_server_restart";
    if !should_run(test, false)? {
        return Ok(());
    }
    let base = baseline()?;
    let mut rng = Rng::new(test);
    let (procs, mut fleet) = fleet(test, 0, "")?;
    fleet.launch()?;
    let flowing = wait_all_logged(&mut fleet, JOINED, timeout())?;
    run_until(&mut fleet, flowing + rng.range(0.2, 0.6) * ideal_secs());
    let done_before = (0..NODES).filter(|&i| fleet.done_secs(i).is_some()).count();
    eprintln!(
        "{test}: SIGKILL drover-server at {:.2} s ({done_before} disks done)",
        fleet.elapsed()
    );
    sigkill(fleet.server().proc().pid());
    let down = fleet.elapsed();
    run_until(&mut fleet, down + 5.0);
    fleet.server_mut().restart(&procs)?;
    let back = fleet.elapsed();
    eprintln!("{test}: drover-server back at {back:.2} s");
    let out = finish(&mut fleet, &[])?;
    let (said, bad, dropped, http) = swarm_totals(&fleet);
    eprintln!(
        "{test}: all done in {:.2} s vs {base:.2} s undisturbed ({:+.2} s; server down {:.1} s); \
         {} stopped while seeding; {said} agents' totals: {bad} bad pieces, {dropped} peers \
         dropped, {http} pieces over HTTP",
        out.last,
        out.last - base,
        back - down,
        out.reaped
    );
    Ok(())
}

/// A rogue client joins the swarm (the tracker is open to guests here),
/// claims nearly every piece and answers every request with garbage:
/// every node still finishes verified, and the nodes that asked it drop
/// it.
#[test]
fn torrent_drops_a_peer_that_sends_garbage() -> Result<()> {
    let test = "torrent_drops_a_peer_that_sends_garbage";
    if !should_run(test, false)? {
        return Ok(());
    }
    let base = baseline()?;
    let sh = shared()?;
    let (_procs, mut fleet) = fleet(test, 1, "[torrent]\nopen = true\n")?;
    let guest = &fleet.lab().guests[0];
    let rogue_addr = guest.addr;
    let listener = guest
        .ns
        .run_in(|| std::net::TcpListener::bind(("0.0.0.0", 6881)))?
        .context("the rogue's listener")?;
    let torrent_path = sh
        .image
        .store
        .join(image::NAME)
        .join(image::VERSION)
        .join("payload.torrent");
    let torrent = std::fs::read(&torrent_path)
        .with_context(|| format!("reading {}", torrent_path.display()))?;
    let rogue = Rogue::start(listener, &torrent)?;
    // In the swarm before the nodes: the tracker lists it to each.
    rogue.announce(&guest.ns, fleet.server().config().listen, Event::Started)?;
    eprintln!("{test}: rogue peer {rogue_addr}:6881 announced");
    fleet.launch()?;
    let out = finish(&mut fleet, &[])?;
    let st = rogue.stats();
    let (handshakes, requests, garbage) = (
        st.handshakes.load(Ordering::Relaxed),
        st.requests.load(Ordering::Relaxed),
        st.garbage_bytes.load(Ordering::Relaxed),
    );
    drop(rogue);
    let needle = format!("dropped peer {rogue_addr}:");
    let dropped_it: Vec<usize> = (0..NODES)
        .filter(|&i| fleet.agent_log(i).contains(&needle))
        .collect();
    let (said, bad, dropped, http) = swarm_totals(&fleet);
    eprintln!(
        "{test}: all done in {:.2} s vs {base:.2} s undisturbed ({:+.2} s); the rogue shook \
         hands {handshakes} times and sent {requests} garbage blocks ({} KiB); nodes that \
         logged dropping it: {dropped_it:?}; {} stopped while seeding; {said} agents' totals: \
         {bad} bad pieces, {dropped} peers dropped, {http} pieces over HTTP",
        out.last,
        out.last - base,
        garbage >> 10,
        out.reaped
    );
    // Else the test proved nothing: nobody asked the rogue for anything.
    ensure!(
        requests > 0 && !dropped_it.is_empty(),
        "the rogue was not exercised: {handshakes} handshakes, {requests} requests, \
         dropped by {dropped_it:?}"
    );
    Ok(())
}
