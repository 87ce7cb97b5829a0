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
//! - A slow link is found from the upstream's side when it reports its
//!   downstreams (the next chunk it will hand each): a node that over the
//!   last `slow_window` took under half as many chunks as its upstream
//!   received, while more than a couple wait for it there, holds back
//!   everyone behind it. Without that (older agents), from the two
//!   nodes' own reports. Heartbeats come every [`FAST_HEARTBEAT`] for
//!   [`FAST_FOR`] after a node, or a node it feeds, gets a new upstream
//!   (the session's start included), when a slow link costs the most,
//!   and every `heartbeat` after that. A node's rate stops changing once
//!   it has every chunk: it is what it could deliver, not the zero it
//!   receives from then on.
//! - A node that has every chunk keeps its assignment: it connects to
//!   nobody any more, so a new upstream would only be noise.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use drover_agent::chain::api::{FailReason, NodeStatus, SessionStatus, Status};
use drover_agent::chain::SessionId;
use kernel_cmdline::MacAddr;

/// A node is only called slow once it trails its upstream by more than
/// this many chunks (and by a quarter of a window at the upstream's rate),
/// as the two nodes' own reports tell it.
const MIN_SLOW_LAG_CHUNKS: f64 = 4.0;

/// The same, as the upstream itself tells it (chunks it holds that it has
/// not yet handed to the node's connection): one report, one moment, sent
/// over the upstream's link, which the slow one does not delay; never more
/// than the truth (what it handed over may still be on its way). A
/// healthy node takes what it is sent as it comes — even a node that
/// stops reading for a moment, as its kernel keeps receiving — so more
/// than this many waiting already means its link does not keep up.
const MIN_SLOW_LAG_SEEN: u32 = 2;

/// The heartbeat interval during a node's first [`FAST_FOR`] with an
/// upstream (or `heartbeat`, if that is shorter): its rate, and its
/// upstream's lead over it, are then known within a fraction of a second.
pub const FAST_HEARTBEAT: Duration = Duration::from_millis(250);

/// How long after the session's start or a new upstream a node
/// heartbeats every [`FAST_HEARTBEAT`].
pub const FAST_FOR: Duration = Duration::from_secs(10);

/// Progress samples kept per node (the rate window's worth, bounded).
const SAMPLES_KEPT: usize = 64;

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
    /// has held them back this long (a slow disk).
    pub slow_after: Duration,
    /// Rates are measured over this sliding window. A node with
    /// downstreams is moved to the tail (a slow link) when over the last
    /// window it took under half as many chunks as its upstream node
    /// received, and trails it by more than a few chunks (and a quarter
    /// window): more than `MIN_SLOW_LAG_SEEN` (2) held for it by its
    /// upstream, as the upstream reports, else more than
    /// `MIN_SLOW_LAG_CHUNKS` (4) by the two nodes' reports. The head-fed
    /// node of a chain is probed (swapped with the next node) once it has
    /// been fed this long.
    pub slow_window: Duration,
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
            slow_window: Duration::from_secs(1),
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
    /// Since when it has its current upstream (or the session started):
    /// its rate is measured from then on.
    pub attached_at: Instant,
    /// Until when it heartbeats every [`FAST_HEARTBEAT`]: [`FAST_FOR`]
    /// after it, or a node it feeds, got a new upstream.
    pub fast_until: Instant,
    /// Bytes read from its upstreams, as last reported (newer agents).
    pub bytes: Option<u64>,
    /// Its connected downstreams and the next chunk each will be sent,
    /// as last reported (newer agents): how far each trails it, measured
    /// at the same moment as its own `received`.
    pub sent: Vec<(MacAddr, u32)>,
    /// Its progress since `attached_at`, oldest first: the first is the
    /// start of the current rate window (see [`Node::sample`]).
    samples: VecDeque<Sample>,
    /// Chunks per second over the last complete window (the last one
    /// while it still received, once it has every chunk).
    pub rate: Option<f64>,
    /// Bytes per second over the same window, if it reports bytes: not
    /// blind to a chunk in progress, as whole chunks are over a short
    /// window.
    pub byte_rate: Option<f64>,
    pub last_seen: Instant,
    /// Corrupt-chunk reports against it.
    pub strikes: u32,
    /// The last few things that happened to it, for the status.
    pub events: VecDeque<String>,
}

const EVENTS_KEPT: usize = 16;

impl Node {
    /// Measure its rate anew (a new upstream at `now`, the start): from
    /// `received` as of `seen`, when it was last reported (or `now`, if
    /// nothing can have flowed since).
    fn restart_rate(&mut self, now: Instant, seen: Instant) {
        self.attached_at = now;
        self.samples.clear();
        self.samples.push_back(Sample {
            at: seen.min(now),
            received: self.received,
            bytes: self.bytes,
            sent: self.sent.clone(),
        });
        self.rate = None;
        self.byte_rate = None;
    }

    /// Record its progress at `now`; once the samples span `window`, its
    /// rate is the progress over the last `window` (from the newest
    /// sample at least that old). Not once it has all `total` chunks: it
    /// then receives nothing, which says nothing of its link.
    fn sample(&mut self, now: Instant, window: Duration, total: u32) {
        self.samples.push_back(Sample {
            at: now,
            received: self.received,
            bytes: self.bytes,
            sent: self.sent.clone(),
        });
        // Kept a little longer than a window: a downstream's window is
        // judged against this node's samples (see `Session::seen_slow`).
        let keep = window * 2;
        while self.samples.len() > 2 && self.samples[1].at + keep <= now {
            self.samples.pop_front();
        }
        if self.samples.len() > SAMPLES_KEPT {
            // A long window at a fast cadence: thin out, keeping its start.
            self.samples.remove(1);
        }
        let Some(first) = self.samples.iter().rev().find(|s| s.at + window <= now) else {
            return;
        };
        let span = now.saturating_duration_since(first.at);
        if span >= window && !span.is_zero() && self.received < total {
            let secs = span.as_secs_f64();
            self.rate = Some(f64::from(self.received.saturating_sub(first.received)) / secs);
            self.byte_rate = match (first.bytes, self.bytes) {
                (Some(b0), Some(b)) => Some(b.saturating_sub(b0) as f64 / secs),
                _ => None,
            };
        }
    }

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
    /// The probed node: it keeps the rate it was measured at from the
    /// head (its own link's) when it moves behind the next node.
    keep_rate: Option<MacAddr>,
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
            keep_rate: None,
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
        n.restart_rate(now, now);
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
                    attached_at: now,
                    fast_until: now,
                    bytes: None,
                    sent: Vec::new(),
                    samples: VecDeque::new(),
                    rate: None,
                    byte_rate: None,
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
        n.bytes = progress.bytes.or(n.bytes);
        n.sent = progress.downstreams;
        n.backpressured_since = match (progress.backpressured, n.backpressured_since) {
            (true, since) => Some(since.unwrap_or(now)),
            (false, _) => None,
        };
        n.sample(now, self.cfg.slow_window, self.total);
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

    /// The node says it is going away, with its last progress if it
    /// sent it (else its last heartbeat's stands).
    pub fn leave(
        &mut self,
        mac: MacAddr,
        complete: bool,
        last: Option<Progress>,
        now: Instant,
    ) -> Result<(), UnknownNode> {
        let total = self.total;
        let n = self.nodes.get_mut(&mac).ok_or(UnknownNode(mac))?;
        n.last_seen = now;
        if let Some(p) = last {
            n.received = p.received.min(total);
            n.oldest = p.oldest;
            n.written = p.written;
        }
        if complete {
            n.received = total;
        }
        n.backpressured_since = None;
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
                    n.restart_rate(now, now);
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
        self.recompute(now);
    }

    /// A slow link is found by comparing a node with its upstream node,
    /// but the node fed by the head has none: were its link slow, the
    /// whole chain would run at its pace unnoticed. So once, when it has
    /// been fed for a rate window, it swaps places with the next node:
    /// now fed by a node, a slow link shows (and [`Session::move_slow`]
    /// sends it to the tail as soon as the next node is a few chunks
    /// ahead of it; it keeps the rate it was measured at from the head);
    /// a fast one costs the chain a moment while the new first node
    /// passes it. Arity 1 only: in a tree the head's nodes are compared
    /// with each other.
    fn probe_first(&mut self, now: Instant) {
        if self.probed || self.arity() != 1 || self.order.len() < 2 {
            return;
        }
        let (a, b) = (self.order[0], self.order[1]);
        let (na, nb) = (&self.nodes[&a], &self.nodes[&b]);
        // The first fed for a window (by time: a slow link also slows the
        // heartbeats that would measure it), the second measured and not
        // the slow one itself: falling behind the first at under half its
        // rate, it would be made head-fed, where nothing measures it (the
        // usual rule moves it instead once it trails by a few chunks).
        let fed = now.saturating_duration_since(na.attached_at) >= self.cfg.slow_window;
        if !fed || nb.rate.is_none() || na.catch_up || nb.catch_up || na.received >= self.total {
            return;
        }
        // Nor while the third may be the slow one: the swap gives it a new
        // upstream, which measures it anew.
        // (Before a whole window of its upstream's view, chunks waiting for
        // it there already make it a suspect.)
        let behind = |up: &Node, n: &Node| match self.seen_slow(up, n, 1) {
            Some(verdict) => verdict.is_some(),
            None => match up
                .samples
                .back()
                .filter(|s| s.at >= n.attached_at)
                .and_then(|s| Some((s.received, s.sent_to(n.mac)?)))
            {
                Some((has, sent)) => has.saturating_sub(sent) > 1,
                None => self.reported_slow(n, up, "", 1.0).is_some(),
            },
        };
        let third = self.order.get(2).map(|c| &self.nodes[c]);
        if behind(na, nb) || third.is_some_and(|nc| behind(nb, nc)) {
            return;
        }
        if self.why_slow(1, now).is_some() {
            return;
        }
        self.probed = true;
        self.order.swap(0, 1);
        self.keep_rate = Some(a);
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
        // A slow link: it takes chunks at under half the rate its
        // upstream receives them and has fallen behind it (both: the lag
        // is what it held back, the rate says it still does). Only
        // against a node: the head's rate is unknown. Not while its disk
        // holds its buffer full: that is the rule above.
        if n.received >= self.total || n.backpressured_since.is_some() {
            return None;
        }
        match self.parent_of(pos) {
            Upstream::Node(u) => {
                let up = &self.nodes[&u];
                match self.seen_slow(up, n, MIN_SLOW_LAG_SEEN) {
                    Some(verdict) => verdict,
                    None => self.reported_slow(n, up, "its upstream", MIN_SLOW_LAG_CHUNKS),
                }
            }
            // Fed by the head: against the fastest other node it feeds.
            Upstream::Head => {
                let other = (0..self.order.len().min(self.arity()))
                    .filter(|&q| q != pos)
                    .map(|q| &self.nodes[&self.order[q]])
                    .filter(|o| !o.catch_up && o.rate.is_some())
                    .max_by(|x, y| {
                        x.rate
                            .partial_cmp(&y.rate)
                            .unwrap_or(std::cmp::Ordering::Equal)
                    })?;
                self.reported_slow(
                    n,
                    other,
                    "another node fed by the head",
                    MIN_SLOW_LAG_CHUNKS,
                )
            }
        }
    }

    /// How `up` sees its downstream `mac` (newer agents say, in each
    /// heartbeat, the next chunk each downstream will be handed): slow if
    /// over `up`'s last window it handed `mac` under half as many chunks
    /// as it received itself (or as its rate while it still received,
    /// once it has them all) and holds more than `guard` chunks (and a
    /// quarter window's worth) that `n` has not taken. `None` when `up`
    /// has not reported `n` connected for a whole window since `n` was
    /// given it as its upstream.
    fn seen_slow(&self, up: &Node, n: &Node, guard: u32) -> Option<Option<String>> {
        let (window, mac) = (self.cfg.slow_window, n.mac);
        let last = up.samples.back().filter(|s| s.at >= n.attached_at)?;
        let s1 = last.sent_to(mac)?;
        let base = up.samples.iter().rev().find(|s| {
            s.at + window <= last.at && s.at >= n.attached_at && s.sent_to(mac).is_some()
        })?;
        let s0 = base.sent_to(mac)?;
        let span = last.at.saturating_duration_since(base.at).as_secs_f64();
        if span <= 0.0 {
            return None;
        }
        let taken = f64::from(s1.saturating_sub(s0)) / span;
        let delivered = if last.received >= self.total {
            up.rate?
        } else {
            f64::from(last.received.saturating_sub(base.received)) / span
        };
        let waiting = last.received.saturating_sub(s1);
        let slack = (delivered * window.as_secs_f64() / 4.0).max(f64::from(guard));
        let slow = taken < delivered / 2.0 && f64::from(waiting) > slack;
        Some(slow.then(|| {
            format!(
                "it took {taken:.1} chunks/s from its upstream, which received {delivered:.1} \
                 and held {waiting} chunks it had not taken"
            )
        }))
    }

    /// `n` against `up` (its upstream, or a node fed by the head beside
    /// it) from their own reports: slow if it received at under half
    /// `up`'s rate and trails it by more than `guard` chunks and a
    /// quarter window at that rate (both, so that windows measured at
    /// different moments, and reports of different ages, cannot fake it).
    fn reported_slow(&self, n: &Node, up: &Node, whose: &str, guard: f64) -> Option<String> {
        let reference = up.rate?;
        let (mine, theirs, unit) = rates(n, up)?;
        let lag = f64::from(up.received.saturating_sub(n.received));
        // A healthy node trails its upstream by the chunk in flight; while
        // the chain fills, deep nodes have had nothing yet at all. Neither
        // is slowness: only a node that has fallen several chunks behind.
        let window = self.cfg.slow_window.as_secs_f64();
        let slack = (reference * window / 4.0).max(guard);
        (mine < theirs / 2.0 && lag > slack)
            .then(|| format!("it received {mine:.1} {unit} where {whose} received {theirs:.1}"))
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
    fn recompute(&mut self, now: Instant) {
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
        let keep_rate = self.keep_rate.take();
        let total = self.total;
        let mut new_feeders = Vec::new();
        for n in self.nodes.values_mut() {
            let up = want.get(&n.mac).copied().flatten();
            // A node with every chunk connects to nobody: it keeps its
            // assignment while it is still in the chain (it feeds others).
            let complete = n.received >= total && n.upstream.is_some() && up.is_some();
            if up != n.upstream && !complete {
                n.upstream = up;
                n.generation += 1;
                // Its last rate was its old upstream's pace: measure anew
                // (except the probed node's, measured from the head).
                if keep_rate == Some(n.mac) {
                    n.attached_at = now;
                } else {
                    let seen = n.last_seen;
                    n.restart_rate(now, seen);
                }
                // Its link, and its upstream's view of it, are measured
                // from now: both report often for a while.
                n.fast_until = now + FAST_FOR;
                if let Some(Upstream::Node(u)) = up {
                    new_feeders.push(u);
                }
                changed = true;
            }
        }
        for u in new_feeders {
            if let Some(n) = self.nodes.get_mut(&u) {
                n.fast_until = n.fast_until.max(now + FAST_FOR);
            }
        }
        if changed {
            self.version += 1;
        }
    }

    /// How often `mac` should heartbeat: every [`FAST_HEARTBEAT`] for
    /// [`FAST_FOR`] after it or a node it feeds got a new upstream (the
    /// session's start included), when its progress and its view of that
    /// node decide whether the node holds back the chain; else every
    /// `heartbeat`.
    pub fn heartbeat_for(&self, mac: &MacAddr, now: Instant) -> Duration {
        let usual = self.cfg.heartbeat;
        let fast = self
            .nodes
            .get(mac)
            .is_some_and(|n| n.upstream.is_some() && now < n.fast_until);
        if fast {
            usual.min(FAST_HEARTBEAT)
        } else {
            usual
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

/// `n`'s rate and `other`'s, and their unit: bytes (as MB/s) when both
/// report bytes, else whole chunks.
fn rates(n: &Node, other: &Node) -> Option<(f64, f64, &'static str)> {
    match (n.byte_rate, other.byte_rate) {
        (Some(a), Some(b)) => Some((a / 1e6, b / 1e6, "MB/s")),
        _ => Some((n.rate?, other.rate?, "chunks/s")),
    }
}

/// A heartbeat's numbers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Progress {
    pub received: u32,
    pub oldest: u32,
    pub written: u32,
    pub backpressured: bool,
    /// Bytes read from its upstreams so far (not sent by older agents).
    pub bytes: Option<u64>,
    /// Its connected downstreams and the next chunk each will be sent.
    pub downstreams: Vec<(MacAddr, u32)>,
}

/// One heartbeat's progress, for rates.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sample {
    at: Instant,
    received: u32,
    bytes: Option<u64>,
    /// Its downstreams' next chunks (see [`Node::sent`]).
    sent: Vec<(MacAddr, u32)>,
}

impl Sample {
    /// The next chunk it will hand `mac`, if connected.
    fn sent_to(&self, mac: MacAddr) -> Option<u32> {
        self.sent
            .iter()
            .filter(|(m, _)| *m == mac)
            .map(|(_, next)| *next)
            .max()
    }
}

#[cfg(test)]
#[path = "topology_tests.rs"]
mod tests;
