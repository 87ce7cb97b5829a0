//! The coordinator's HTTP API (JSON), one definition for the agent that
//! calls it and the server that answers. Every node request carries the
//! node's deploy token as `Authorization: Bearer`.
//!
//! - `POST /api/v1/chain/join` [`Join`] → [`Assignment`]
//! - `POST /api/v1/chain/heartbeat` [`Heartbeat`] → [`Assignment`]; with
//!   `wait_ms` it is also the long poll: answered as soon as the node's
//!   assignment changes, else after `wait_ms`.
//! - `POST /api/v1/chain/upstream-failed` [`UpstreamFailed`] → [`Assignment`]
//! - `POST /api/v1/chain/leave` [`Leave`] → [`Assignment`]
//! - `POST /api/v1/chain/start` [`Start`] (admin token) → [`SessionStatus`]
//! - `GET /api/v1/chain/sessions/{NAME@VERSION}` (admin token) → [`SessionStatus`]
//!
//! MACs are `aa:bb:cc:dd:ee:ff`; chunk indices are 0-based; unknown fields
//! are ignored so either end can add some.

use serde::{Deserialize, Serialize};

pub const JOIN_PATH: &str = "/api/v1/chain/join";
pub const HEARTBEAT_PATH: &str = "/api/v1/chain/heartbeat";
pub const UPSTREAM_FAILED_PATH: &str = "/api/v1/chain/upstream-failed";
pub const LEAVE_PATH: &str = "/api/v1/chain/leave";
pub const START_PATH: &str = "/api/v1/chain/start";
/// Followed by `/NAME@VERSION`.
pub const SESSIONS_PATH: &str = "/api/v1/chain/sessions";
/// Request bodies larger than this are refused; answers too.
pub const MAX_BODY: usize = 64 * 1024;
/// The longest long poll a server grants.
pub const MAX_WAIT_MS: u32 = 30_000;

/// A node asks to take part in a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Join {
    /// `NAME@VERSION`.
    pub session: String,
    pub mac: String,
    /// Where its downstreams connect, `IP:PORT`; an unspecified IP
    /// (`0.0.0.0:PORT`) means "the address this request came from".
    pub listen: String,
    /// The first chunk it needs (0 for a fresh node).
    pub next: u32,
}

/// A node's periodic report, and its poll for a new assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub session: String,
    pub mac: String,
    /// The assignment generation the node is acting on.
    pub generation: u64,
    /// Chunks received and verified: `0..received`.
    pub received: u32,
    /// The oldest chunk its replay buffer still holds.
    pub oldest: u32,
    /// Chunks its own write pipeline has taken.
    pub written: u32,
    /// Its receiver is waiting for its own disk (the buffer is full).
    pub backpressured: bool,
    /// Bytes read from its upstreams so far (chunks in progress and
    /// framing included): its link's rate, finer than whole chunks.
    /// Absent from older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Its connected downstreams, each with the next chunk it will be
    /// sent (those before it are handed to the connection): how far each
    /// trails this node, seen from here at the moment of this report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub downstreams: Vec<DownstreamProgress>,
    /// Hold the answer up to this long unless the assignment changes.
    #[serde(default)]
    pub wait_ms: u32,
}

/// A downstream as its upstream sees it (see [`Heartbeat::downstreams`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownstreamProgress {
    pub mac: String,
    /// The next chunk it will be sent.
    pub next: u32,
}

/// Why a node gave up on its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailReason {
    /// Could not connect, the connection broke, or it went silent.
    Dead,
    /// Keep-alives but no chunk for too long.
    Stalled,
    /// A chunk failed its length or SHA-256 check.
    Corrupt,
    /// It refused: what the node wants is older than its replay buffer.
    TooOld,
    /// Another refusal or a protocol violation.
    Refused,
}

/// A node reports that its upstream failed it; the answer is where to go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamFailed {
    pub session: String,
    pub mac: String,
    /// The generation of the assignment that failed (stale reports are
    /// answered with the current assignment and change nothing).
    pub generation: u64,
    pub reason: FailReason,
    /// The first chunk the node still needs.
    pub want: u32,
    /// For the log.
    #[serde(default)]
    pub detail: String,
}

/// A node is going away (done, or giving up on the chain).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leave {
    pub session: String,
    pub mac: String,
    /// It received every chunk.
    pub complete: bool,
    /// Its last progress, as in a heartbeat (absent from older agents:
    /// the coordinator keeps their last heartbeat's).
    #[serde(default)]
    pub received: Option<u32>,
    #[serde(default)]
    pub oldest: Option<u32>,
    #[serde(default)]
    pub written: Option<u32>,
}

/// Start a session now (admin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Start {
    pub session: String,
}

/// What a node should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// No upstream yet (the session has not started, or a new place is
    /// being found): poll again.
    Waiting,
    /// Receive from `upstream`.
    Attached,
    /// The coordinator has taken it out of the chain (it left, or sent bad
    /// data): fetch the rest over HTTP.
    Fallback,
}

/// The coordinator's answer to every node request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub session: String,
    pub status: Status,
    /// Bumped whenever this node's upstream or status changes.
    pub generation: u64,
    /// `IP:PORT` to connect to when attached: a node's listener or the
    /// server's head.
    pub upstream: Option<String>,
    /// Send a heartbeat at least this often (more often while the
    /// coordinator measures the node's rate, after the start or a new
    /// upstream).
    pub heartbeat_ms: u32,
    /// Nodes this one feeds that have not received everything yet: a
    /// finished node lingers (keeps serving) until this is 0.
    #[serde(default)]
    pub downstreams_pending: u32,
}

/// A session as the coordinator sees it (admin, tests).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStatus {
    pub session: String,
    pub started: bool,
    pub chunks: u32,
    pub arity: u32,
    /// In chain order first, then the nodes out of the chain.
    pub nodes: Vec<NodeStatus>,
}

/// One node of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub mac: String,
    /// `waiting`, `active`, `complete`, `suspect`, `failed`, `cut-out`, `left`.
    pub state: String,
    /// Its place in the chain (0 = fed by the head), if in it.
    pub position: Option<u32>,
    /// `head`, an upstream's MAC, or none.
    pub upstream: Option<String>,
    pub received: u32,
    pub written: u32,
    pub generation: u64,
    /// Why it failed, was cut out or moved, most recent last.
    pub events: Vec<String>,
}
