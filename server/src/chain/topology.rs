//! One chain session's shape, as pure state transitions: who feeds whom,
//! who is dead, slow or cut out. No I/O and no clock: every event takes
//! `now`, so the table tests can play any history.
//!
//! Invariants:
//! - `order` lists the nodes in the chain/tree (states `Waiting`, `Active`),
//!   each once; position `p` is fed by the node at position `p / k - 1`,
//!   or by the head when `p / k` is 0 (k = arity; k = 1 is a chain).
//!   A node in `order` may instead be fed by the head while it catches up
//!   (`catch_up`), keeping its place so its own downstreams stay put.
//! - `leaves` are nodes fed by the head outside the tree (cut out for bad
//!   data: they finish their own deploy, nobody depends on them).
//! - A node's `generation` changes exactly when its assignment (upstream or
//!   status) changes; a report about an older generation changes nothing.
//! - A node taken out on a downstream's word is `Suspect`: if it keeps
//!   heartbeating it was the link, and it rejoins at the tail; silent for
//!   `dead_after`, it is `Failed`. Any node silent that long is `Failed`.
//! - Slowness is relative: a node against its upstream node, a head-fed
//!   node against the other head-fed ones. A lone head-fed node (a chain)
//!   is probed once by swapping it with the next, and a node whose
//!   upstream changed has its rate measured anew.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use drover_agent::chain::api::{FailReason, NodeStatus, SessionStatus, Status};
use drover_agent::chain::SessionId;
use kernel_cmdline::MacAddr;

/// A node is only called slow once it trails its upstream by more than
/// this many chunks (and by a quarter of a window at the upstream's rate).
const MIN_SLOW_LAG_CHUNKS: f64 = 4.0;

/// Per-session policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Downstreams per node (and streams from the head): 1 is a chain.
    pub arity: u32,
    /// Start as soon as this many nodes joined.
    pub expected: Option<u32>,
    /// Start this long after the first join, however many joined.
    pub join_timeout: Duration,
    /// How often nodes heartbeat (and how long their long polls last).
    pub heartbeat: Duration,
    /// A node silent this long is failed.
    pub dead_after: Duration,
    /// A node with downstreams is moved to the tail when its full buffer
    /// has held them back this long (a slow disk), or when over a window
    /// this long it received at less than half its upstream node's rate
    /// (a slow link).
    pub slow_after: Duration,
    /// Corrupt chunks reported against a node before it is cut out.
    pub corrupt_strikes: u32,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            arity: 1,
            expected: None,
            join_timeout: Duration::from_secs(30),
            heartbeat: Duration::from_secs(2),
            dead_after: Duration::from_secs(8),
            slow_after: Duration::from_secs(10),
            corrupt_strikes: 2,
        }
    }
}

/// Where a node's chunks come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Upstream {
    Head,
    Node(MacAddr),
}

/// A node's standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Joined; the session has not started.
    Waiting,
    /// In the chain.
    Active,
    /// Taken out on a downstream's report; failed unless it heartbeats.
    Suspect,
    /// Silent past `dead_after`.
    Failed,
    /// Sent corrupt chunks: fed by the head, feeds nobody.
    CutOut,
    /// Said it was leaving.
    Left,
}

impl NodeState {
    fn name(self) -> &'static str {
        match self {
            NodeState::Waiting => "waiting",
            NodeState::Active => "active",
            NodeState::Suspect => "suspect",
            NodeState::Failed => "failed",
            NodeState::CutOut => "cut-out",
            NodeState::Left => "left",
        }
    }
}

/// What the coordinator knows of one node.
#[derive(Debug, Clone)]
pub struct Node {
    pub mac: MacAddr,
    pub listen: SocketAddr,
    pub state: NodeState,
    pub generation: u64,
    pub upstream: Option<Upstream>,
    /// Fed by the head in place (see the module invariants).
    pub catch_up: bool,
    pub received: u32,
    pub oldest: u32,
    pub written: u32,
    pub backpressured_since: Option<Instant>,
    /// Start of the current rate window: when, and `received` then.
    pub window: (Instant, u32),
    /// Chunks per second over the last complete window.
    pub rate: Option<f64>,
    pub last_seen: Instant,
    /// Corrupt-chunk reports against it.
    pub strikes: u32,
    /// The last few things that happened to it, for the status.
    pub events: VecDeque<String>,
}

const EVENTS_KEPT: usize = 16;

impl Node {
    fn note(&mut self, what: String) {
        log::info!("chain node {}: {what}", self.mac);
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_front();
        }
        self.events.push_back(what);
    }
}

/// A node's assignment, before addresses are filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub status: Status,
    pub generation: u64,
    pub upstream: Option<Upstream>,
    pub downstreams_pending: u32,
}

/// A node the session does not know (it must join first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} has not joined this session")]
pub struct UnknownNode(pub MacAddr);

/// One session. See the module documentation.
#[derive(Debug)]
pub struct Session {
    pub id: SessionId,
    pub total: u32,
    pub cfg: SessionConfig,
    pub started: bool,
    /// Whether the head-fed node was swapped with the next one to
    /// measure its link (see [`Session::probe_first`]).
    probed: bool,
    first_join: Option<Instant>,
    nodes: HashMap<MacAddr, Node>,
    order: Vec<MacAddr>,
    leaves: Vec<MacAddr>,
    /// Bumped on every change of any assignment (long polls watch it).
    pub version: u64,
    /// Nodes declared failed since the coordinator last took this list
    /// (it tells the fleet), with why.
    pub newly_failed: Vec<(MacAddr, String)>,
}

impl Session {
    pub fn new(id: SessionId, total: u32, cfg: SessionConfig) -> Self {
        Session {
            id,
            total,
            cfg,
            started: false,
            probed: false,
            first_join: None,
            nodes: HashMap::new(),
            order: Vec::new(),
            leaves: Vec::new(),
            version: 0,
            newly_failed: Vec::new(),
        }
    }

    /// No node is waiting, active or suspect: every one left, failed or
    /// was cut out (or none joined). A new deployment of the same image
    /// starts a fresh session rather than joining this one's tail.
    pub fn is_over(&self) -> bool {
        !self.nodes.is_empty()
            && self.nodes.values().all(|n| {
                matches!(
                    n.state,
                    NodeState::Failed | NodeState::Left | NodeState::CutOut
                )
            })
    }

    pub fn node(&self, mac: &MacAddr) -> Option<&Node> {
        self.nodes.get(mac)
    }

    /// The chain order, head side first.
    pub fn order(&self) -> &[MacAddr] {
        &self.order
    }

    fn arity(&self) -> usize {
        self.cfg.arity.max(1) as usize
    }

    /// The positional upstream of position `pos`.
    fn parent_of(&self, pos: usize) -> Upstream {
        match pos / self.arity() {
            0 => Upstream::Head,
            p => Upstream::Node(self.order[p - 1]),
        }
    }

    fn has_children(&self, pos: usize) -> bool {
        (pos + 1) * self.arity() < self.order.len()
    }

    /// Whether `up` still holds chunk `want` (the head always does).
    fn covers(&self, up: Upstream, want: u32) -> bool {
        match up {
            Upstream::Head => true,
            Upstream::Node(m) => self.nodes.get(&m).is_some_and(|n| n.oldest <= want),
        }
    }

    fn remove(&mut self, mac: &MacAddr) {
        self.order.retain(|m| m != mac);
        self.leaves.retain(|m| m != mac);
    }

    /// Append `mac` at the tail, fed by the head if the tail no longer
    /// holds what it needs.
    fn place(&mut self, mac: MacAddr, want: u32, now: Instant) {
        self.remove(&mac);
        self.order.push(mac);
        let parent = self.parent_of(self.order.len() - 1);
        let catch_up = self.started && !self.covers(parent, want);
        let started = self.started;
        let n = self.nodes.get_mut(&mac).expect("placed nodes exist");
        n.state = if started {
            NodeState::Active
        } else {
            NodeState::Waiting
        };
        n.catch_up = catch_up;
        n.backpressured_since = None;
        n.window = (now, want);
        n.rate = None;
    }

    /// A node joins (or joins again: a restarted agent, a coordinator that
    /// forgot it). Joining again keeps its place unless it lost data.
    pub fn join(&mut self, mac: MacAddr, listen: SocketAddr, next: u32, now: Instant) {
        self.first_join.get_or_insert(now);
        match self.nodes.get_mut(&mac) {
            Some(n) => {
                n.listen = listen;
                n.last_seen = now;
                let keep =
                    matches!(n.state, NodeState::Waiting | NodeState::Active) && next >= n.received;
                match n.state {
                    NodeState::CutOut => {}
                    _ if keep => n.received = next,
                    _ => {
                        n.note(format!("joined again needing chunk {next}"));
                        n.received = next;
                        n.oldest = next;
                        self.place(mac, next, now);
                    }
                }
            }
            None => {
                let mut n = Node {
                    mac,
                    listen,
                    state: NodeState::Waiting,
                    generation: 0,
                    upstream: None,
                    catch_up: false,
                    received: next,
                    oldest: next,
                    written: next,
                    backpressured_since: None,
                    window: (now, next),
                    rate: None,
                    last_seen: now,
                    strikes: 0,
                    events: VecDeque::new(),
                };
                n.note(format!("joined from {listen}"));
                self.nodes.insert(mac, n);
                self.place(mac, next, now);
            }
        }
        self.tick(now);
    }

    /// A heartbeat with the node's progress.
    pub fn heartbeat(
        &mut self,
        mac: MacAddr,
        progress: Progress,
        now: Instant,
    ) -> Result<(), UnknownNode> {
        let n = self.nodes.get_mut(&mac).ok_or(UnknownNode(mac))?;
        n.last_seen = now;
        n.received = progress.received.min(self.total);
        n.oldest = progress.oldest;
        n.written = progress.written;
        n.backpressured_since = match (progress.backpressured, n.backpressured_since) {
            (true, since) => Some(since.unwrap_or(now)),
            (false, _) => None,
        };
        let (t0, r0) = n.window;
        let span = now.saturating_duration_since(t0);
        if span >= self.cfg.slow_after && !span.is_zero() {
            n.rate = Some(f64::from(n.received.saturating_sub(r0)) / span.as_secs_f64());
            n.window = (now, n.received);
        }
        if matches!(n.state, NodeState::Suspect | NodeState::Failed) {
            n.note("alive after all: back at the tail".into());
            let want = n.received;
            self.place(mac, want, now);
        }
        self.tick(now);
        Ok(())
    }

    /// `mac` reports that its upstream (of `generation`) failed it.
    pub fn report(
        &mut self,
        mac: MacAddr,
        generation: u64,
        reason: FailReason,
        want: u32,
        detail: &str,
        now: Instant,
    ) -> Result<(), UnknownNode> {
        let n = self.nodes.get_mut(&mac).ok_or(UnknownNode(mac))?;
        n.last_seen = now;
        if generation != n.generation {
            // About an assignment it no longer has: already handled.
            return Ok(());
        }
        let up = n.upstream;
        n.received = n.received.max(want);
        match (up, reason) {
            (None, _) => {}
            (Some(Upstream::Head), _) => n.note(format!("the head failed it ({detail})")),
            (Some(Upstream::Node(_)), FailReason::TooOld) => {
                n.note(format!(
                    "its upstream no longer holds chunk {want}: catching up from the head"
                ));
                n.catch_up = true;
            }
            (Some(Upstream::Node(u)), FailReason::Corrupt) => {
                let strikes = self.cfg.corrupt_strikes.max(1);
                if let Some(bad) = self.nodes.get_mut(&u) {
                    bad.strikes += 1;
                    if bad.strikes >= strikes {
                        bad.note(format!(
                            "cut out: sent {} corrupt chunks, the last to {mac} ({detail})",
                            bad.strikes
                        ));
                        bad.state = NodeState::CutOut;
                        bad.catch_up = false;
                        self.remove(&u);
                        self.leaves.push(u);
                    } else {
                        bad.note(format!("sent a corrupt chunk to {mac} ({detail})"));
                    }
                }
            }
            (Some(Upstream::Node(u)), FailReason::Stalled) => {
                let has_it = self.nodes.get(&u).is_some_and(|b| b.received > want);
                if has_it {
                    self.suspect(
                        u,
                        format!("stalled {mac} though it has chunk {want} ({detail})"),
                    );
                }
            }
            (Some(Upstream::Node(u)), FailReason::Dead | FailReason::Refused) => {
                self.suspect(u, format!("{mac} reports it {reason:?} ({detail})"));
            }
        }
        self.tick(now);
        Ok(())
    }

    fn suspect(&mut self, mac: MacAddr, why: String) {
        if let Some(n) = self.nodes.get_mut(&mac) {
            if matches!(n.state, NodeState::Waiting | NodeState::Active) {
                n.note(format!("suspect: {why}"));
                n.state = NodeState::Suspect;
                self.remove(&mac);
            }
        }
    }

    /// The node says it is going away.
    pub fn leave(&mut self, mac: MacAddr, complete: bool, now: Instant) -> Result<(), UnknownNode> {
        let n = self.nodes.get_mut(&mac).ok_or(UnknownNode(mac))?;
        n.note(if complete {
            "left, complete".into()
        } else {
            "left before completing".into()
        });
        n.state = NodeState::Left;
        self.remove(&mac);
        self.tick(now);
        Ok(())
    }

    /// Start now (admin), whoever has joined.
    pub fn start(&mut self, now: Instant) {
        if !self.started {
            log::info!(
                "chain session {}: starting with {} nodes",
                self.id,
                self.order.len()
            );
            self.started = true;
            for m in &self.order {
                if let Some(n) = self.nodes.get_mut(m) {
                    n.state = NodeState::Active;
                    // Rates count from the start: nothing flows while a
                    // node waits for it, which is no measure of its link.
                    n.window = (now, n.received);
                    n.rate = None;
                }
            }
        }
        self.tick(now);
    }

    /// Apply the clock: start, failures, slow nodes, catch-ups; then
    /// recompute every assignment.
    pub fn tick(&mut self, now: Instant) {
        let due = self
            .first_join
            .is_some_and(|t| now >= t + self.cfg.join_timeout);
        let enough = self
            .cfg
            .expected
            .is_some_and(|e| self.order.len() >= e as usize);
        if !self.started && !self.order.is_empty() && (due || enough) {
            self.start(now);
            return;
        }
        // Silence.
        let dead_after = self.cfg.dead_after;
        let silent: Vec<MacAddr> = self
            .nodes
            .values()
            .filter(|n| {
                !matches!(n.state, NodeState::Failed | NodeState::Left)
                    && now.saturating_duration_since(n.last_seen) > dead_after
            })
            .map(|n| n.mac)
            .collect();
        for m in silent {
            self.remove(&m);
            if let Some(n) = self.nodes.get_mut(&m) {
                let why = format!("failed: no heartbeat for {}s", dead_after.as_secs_f32());
                n.note(why.clone());
                n.state = NodeState::Failed;
                self.newly_failed.push((m, why));
            }
        }
        if self.started {
            if !self.move_slow(now) {
                self.probe_first(now);
            }
            self.end_catch_ups();
        }
        self.recompute();
    }

    /// A slow link is found by comparing a node with its upstream node,
    /// but the node fed by the head has none: were its link slow, the
    /// whole chain would run at its pace unnoticed. So once, when its
    /// first rate window is measured, it swaps places with the next node:
    /// now fed by a node, a slow link shows (and [`Session::move_slow`]
    /// sends it to the tail); a fast one costs the chain a moment while
    /// the new first node passes it. Arity 1 only: in a tree the head's
    /// nodes are compared with each other.
    fn probe_first(&mut self, now: Instant) {
        if self.probed || self.arity() != 1 || self.order.len() < 2 {
            return;
        }
        let (a, b) = (self.order[0], self.order[1]);
        let (na, nb) = (&self.nodes[&a], &self.nodes[&b]);
        // Both measured, and the second not already the slow one (the
        // usual rule moves it, from behind the first, next).
        let (Some(ra), Some(rb)) = (na.rate, nb.rate) else {
            return;
        };
        if na.catch_up || nb.catch_up || na.received >= self.total || rb < ra / 2.0 {
            return;
        }
        self.probed = true;
        self.order.swap(0, 1);
        for m in [a, b] {
            let n = self.nodes.get_mut(&m).expect("ordered nodes exist");
            n.window = (now, n.received);
            n.rate = None;
        }
        let n = self.nodes.get_mut(&a).expect("ordered nodes exist");
        n.note(format!(
            "probe: moved behind {b} so that its link is measured against a node's"
        ));
    }

    /// The first node with downstreams that is slow — its full buffer has
    /// held them back for `slow_after` (its disk), or it receives at less
    /// than half its upstream's rate (its link) — goes to the tail, one
    /// per tick: moves are not free.
    fn move_slow(&mut self, now: Instant) -> bool {
        let slow = (0..self.order.len())
            .filter(|&p| self.has_children(p))
            .find_map(|p| self.why_slow(p, now).map(|why| (p, why)));
        let Some((p, why)) = slow else {
            return false;
        };
        let mac = self.order[p];
        let n = self.nodes.get_mut(&mac).expect("ordered nodes exist");
        n.note(format!("slow: {why}; moved to the tail"));
        let want = n.received;
        self.place(mac, want, now);
        true
    }

    fn why_slow(&self, pos: usize, now: Instant) -> Option<String> {
        let n = &self.nodes[&self.order[pos]];
        let limit = self.cfg.slow_after;
        if n.backpressured_since
            .is_some_and(|t| now.saturating_duration_since(t) >= limit)
        {
            return Some(format!(
                "its disk held back its downstreams for {}s",
                limit.as_secs_f32()
            ));
        }
        // A slow link: it receives at under half its upstream's rate and
        // has fallen behind it by over a quarter of a window at that rate
        // (both, so that windows measured at different moments cannot
        // fake it). Only against a node: the head's rate is unknown.
        let rate = n.rate.filter(|_| n.received < self.total)?;
        let (up, whose) = match self.parent_of(pos) {
            Upstream::Node(u) => (&self.nodes[&u], "its upstream"),
            // Fed by the head: against the fastest other node it feeds.
            Upstream::Head => (
                (0..self.order.len().min(self.arity()))
                    .filter(|&q| q != pos)
                    .map(|q| &self.nodes[&self.order[q]])
                    .filter(|o| !o.catch_up && o.rate.is_some())
                    .max_by(|x, y| {
                        x.rate
                            .partial_cmp(&y.rate)
                            .unwrap_or(std::cmp::Ordering::Equal)
                    })?,
                "another node fed by the head",
            ),
        };
        let reference = up.rate?;
        let lag = f64::from(up.received.saturating_sub(n.received));
        // A healthy node trails its upstream by the chunk in flight; while
        // the chain fills, deep nodes have had nothing yet at all. Neither
        // is slowness: only a node that has fallen several chunks behind.
        let slack = (reference * limit.as_secs_f64() / 4.0).max(MIN_SLOW_LAG_CHUNKS);
        (rate < reference / 2.0 && lag > slack).then(|| {
            format!("it received {rate:.1} chunks/s where {whose} received {reference:.1}")
        })
    }

    /// A node catching up from the head rejoins the tree once its own
    /// upstream is ahead of it and still holds what it needs.
    fn end_catch_ups(&mut self) {
        for p in 0..self.order.len() {
            let mac = self.order[p];
            let n = &self.nodes[&mac];
            if !n.catch_up {
                continue;
            }
            let want = n.received;
            let parent = self.parent_of(p);
            let ahead = match parent {
                Upstream::Head => true,
                Upstream::Node(u) => self.nodes[&u].received > want,
            };
            if ahead && self.covers(parent, want) {
                let n = self.nodes.get_mut(&mac).expect("ordered nodes exist");
                n.note(format!("caught up to chunk {want}: back in the chain"));
                n.catch_up = false;
            }
        }
    }

    /// Derive every assignment from `order`, `leaves` and the states.
    fn recompute(&mut self) {
        let mut want: HashMap<MacAddr, Option<Upstream>> = HashMap::new();
        for (p, m) in self.order.iter().enumerate() {
            let up = match (self.started, self.nodes[m].catch_up) {
                (false, _) => None,
                (true, true) => Some(Upstream::Head),
                (true, false) => Some(self.parent_of(p)),
            };
            want.insert(*m, up);
        }
        for m in &self.leaves {
            want.insert(*m, Some(Upstream::Head));
        }
        let mut changed = false;
        for n in self.nodes.values_mut() {
            let up = want.get(&n.mac).copied().flatten();
            if up != n.upstream {
                n.upstream = up;
                n.generation += 1;
                // Its last rate was its old upstream's pace: measure anew.
                n.rate = None;
                n.window = (n.last_seen, n.received);
                changed = true;
            }
        }
        if changed {
            self.version += 1;
        }
    }

    /// What `mac` should do now.
    pub fn placement(&self, mac: &MacAddr) -> Option<Placement> {
        let n = self.nodes.get(mac)?;
        let status = match (n.state, n.upstream) {
            (NodeState::Left, _) => Status::Fallback,
            (_, Some(_)) => Status::Attached,
            _ => Status::Waiting,
        };
        let downstreams_pending = self
            .nodes
            .values()
            .filter(|d| d.upstream == Some(Upstream::Node(*mac)) && d.received < self.total)
            .count() as u32;
        Some(Placement {
            status,
            generation: n.generation,
            upstream: n.upstream,
            downstreams_pending,
        })
    }

    /// The whole session, chain order first.
    pub fn status(&self) -> SessionStatus {
        let mut rest: Vec<&Node> = self
            .nodes
            .values()
            .filter(|n| !self.order.contains(&n.mac))
            .collect();
        rest.sort_by_key(|n| n.mac.to_string());
        let ordered = self.order.iter().map(|m| &self.nodes[m]);
        let nodes = ordered
            .chain(rest)
            .map(|n| NodeStatus {
                mac: n.mac.to_string(),
                state: if n.state == NodeState::Active && n.received >= self.total {
                    "complete".into()
                } else {
                    n.state.name().into()
                },
                position: self
                    .order
                    .iter()
                    .position(|m| *m == n.mac)
                    .map(|p| p as u32),
                upstream: n.upstream.map(|u| match u {
                    Upstream::Head => "head".into(),
                    Upstream::Node(m) => m.to_string(),
                }),
                received: n.received,
                written: n.written,
                generation: n.generation,
                events: n.events.iter().cloned().collect(),
            })
            .collect();
        SessionStatus {
            session: self.id.to_string(),
            started: self.started,
            chunks: self.total,
            arity: self.cfg.arity,
            nodes,
        }
    }
}

/// A heartbeat's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    pub received: u32,
    pub oldest: u32,
    pub written: u32,
    pub backpressured: bool,
}

#[cfg(test)]
#[path = "topology_tests.rs"]
mod tests;
