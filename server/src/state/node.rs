//! A node's record and the rules by which it changes. Pure: [`super::db`]
//! stores records, [`crate::fleet`] decides when to apply which rule.
//!
//! ```text
//!            node add                 deploy / auto-registration
//!   (none) ──────────► idle ─────────────────────────────► pending
//!                                                             │ deploy entry served
//!       deploy (any state: a new deployment, a new token)     ▼
//!   done ◄── success report ── deploying ◄── phase/progress ── booting
//!              failure report, or success with the wrong hash │
//!                                                             ▼
//!                                                           failed
//! ```
//!
//! Reports are accepted while a deployment is in progress (pending,
//! booting, deploying); a node whose entry is served again (it rebooted
//! mid-deploy) goes back to booting with its progress cleared.

use std::fmt;
use std::str::FromStr;

use drover_agent::report::Report;
use kernel_cmdline::{MacAddr, Mode};
use serde::{Deserialize, Serialize};

use crate::size::Human;

/// Where a node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Registered, nothing assigned: boots from its disk.
    Idle,
    /// An image is assigned; the node has not asked for its entry yet.
    Pending,
    /// Its deploy entry was served; no report yet.
    Booting,
    /// Reports are arriving.
    Deploying,
    /// Its success was recorded: boots from its disk.
    Done,
    /// Its failure was recorded: boots from its disk until deployed again.
    Failed,
}

impl NodeState {
    /// Every state, in life order.
    pub const ALL: [NodeState; 6] = [
        NodeState::Idle,
        NodeState::Pending,
        NodeState::Booting,
        NodeState::Deploying,
        NodeState::Done,
        NodeState::Failed,
    ];

    /// The name stored and shown (`"deploying"`).
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Idle => "idle",
            NodeState::Pending => "pending",
            NodeState::Booting => "booting",
            NodeState::Deploying => "deploying",
            NodeState::Done => "done",
            NodeState::Failed => "failed",
        }
    }

    /// A deployment is assigned and not finished: the node gets the deploy
    /// entry and its reports are accepted.
    pub fn in_progress(self) -> bool {
        matches!(
            self,
            NodeState::Pending | NodeState::Booting | NodeState::Deploying
        )
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NodeState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown node state {s:?}"))
    }
}

/// What a name may be, for messages.
pub const NAME_ACCEPTED: &str =
    "1 to 63 of A-Z a-z 0-9 . _ -, starting with a letter or digit, and not a MAC address";

/// Check a node name. Names and MACs share one namespace on the command
/// line (`node show NODE`), so a name that reads as a MAC is refused.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
        && name.parse::<MacAddr>().is_err();
    if ok {
        Ok(())
    } else {
        Err(format!("node name {name:?} is not {NAME_ACCEPTED}"))
    }
}

/// One node, as stored and as the admin API shows it. The report token is
/// not here: it is only ever read to be compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// `aa:bb:cc:dd:ee:ff`, lower case: the key.
    pub mac: String,
    /// The operator's name for it, unique.
    pub name: Option<String>,
    pub state: NodeState,
    /// The assigned image, pinned at assignment: `NAME@VERSION` (or, on a
    /// server without a store, the configured image as written).
    pub image: Option<String>,
    /// `deploy.wipe` for this deployment.
    pub wipe: bool,
    /// `deploy.mode` for this deployment (`http`, `chain`, `torrent`);
    /// none: the server's `[deploy] mode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The agent's last reported phase.
    pub phase: Option<String>,
    /// Payload bytes written, of `bytes_total`.
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// Bytes per second: a moving average of progress reports.
    pub rate: f64,
    /// When the last progress report came, for the rate.
    #[serde(skip)]
    pub progress_ms: Option<i64>,
    /// What the last successful deployment put on the disk.
    pub deployed_image: Option<String>,
    pub deployed_sha256: Option<String>,
    pub deployed_ms: Option<i64>,
    /// Why the last deployment failed: `PHASE: ERROR`.
    pub last_error: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// One line of a node's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Increasing: the order events happened in.
    pub id: i64,
    pub at_ms: i64,
    /// One of the [`kind`] names.
    pub kind: String,
    pub phase: Option<String>,
    pub message: String,
}

/// Event kinds.
pub mod kind {
    pub const REGISTERED: &str = "registered";
    pub const ASSIGNED: &str = "assigned";
    pub const BOOT: &str = "boot";
    pub const LOCALBOOT: &str = "localboot";
    pub const PHASE: &str = "phase";
    pub const SUCCESS: &str = "success";
    pub const FAILURE: &str = "failure";
}

/// An event about to be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub kind: &'static str,
    pub phase: Option<String>,
    pub message: String,
}

impl NewEvent {
    pub fn new(kind: &'static str, message: impl Into<String>) -> NewEvent {
        NewEvent {
            kind,
            phase: None,
            message: message.into(),
        }
    }
}

/// Weight of the newest sample in the rate's moving average: about the last
/// few reports count, so the rate follows a link that slows down.
const RATE_WEIGHT: f64 = 0.3;

impl Node {
    /// A node just registered: idle.
    pub fn new(mac: MacAddr, name: Option<String>, now_ms: i64) -> Node {
        Node {
            mac: mac.to_string(),
            name,
            state: NodeState::Idle,
            image: None,
            wipe: false,
            mode: None,
            phase: None,
            bytes_done: 0,
            bytes_total: 0,
            rate: 0.0,
            progress_ms: None,
            deployed_image: None,
            deployed_sha256: None,
            deployed_ms: None,
            last_error: None,
            created_ms: now_ms,
            updated_ms: now_ms,
        }
    }

    fn clear_progress(&mut self) {
        self.phase = None;
        self.bytes_done = 0;
        self.bytes_total = 0;
        self.rate = 0.0;
        self.progress_ms = None;
    }

    /// A deployment of the pinned `image` is assigned (from any state: a
    /// new deployment replaces one in progress). What was deployed before
    /// stays recorded until this one succeeds.
    pub fn assign(&mut self, image: String, wipe: bool, mode: Option<Mode>, now_ms: i64) {
        self.state = NodeState::Pending;
        self.image = Some(image);
        self.wipe = wipe;
        self.mode = mode.map(|m| m.to_string());
        self.last_error = None;
        self.clear_progress();
        self.updated_ms = now_ms;
    }

    /// This deployment's own `deploy.mode`, if it chose one (as stored:
    /// `Err` says what is wrong with the stored text).
    pub fn chosen_mode(&self) -> Result<Option<Mode>, String> {
        self.mode
            .as_deref()
            .map(|m| {
                m.parse::<Mode>()
                    .map_err(|e| format!("node {}: stored mode: {e}", self.mac))
            })
            .transpose()
    }

    /// Its deploy entry was served: the agent starts (again) from scratch.
    pub fn boot(&mut self, now_ms: i64) {
        debug_assert!(self.state.in_progress());
        self.state = NodeState::Booting;
        self.clear_progress();
        self.updated_ms = now_ms;
    }

    /// It could not be given a deployment (automatic registration with an
    /// image that is not there).
    pub fn fail(&mut self, error: String, now_ms: i64) {
        self.state = NodeState::Failed;
        self.last_error = Some(error);
        self.rate = 0.0;
        self.updated_ms = now_ms;
    }
}

/// What recording a report did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// For the node's history (progress reports add none).
    pub event: Option<NewEvent>,
    /// The report was recorded but is refused: the reply is 409 with this.
    pub refused: Option<String>,
}

/// Apply `report` to `node`, which must have a deployment in progress.
/// `expected_sha256` is asked for only by a success report: the pinned
/// image's payload hash, or why it cannot be known.
pub fn apply_report(
    node: &mut Node,
    report: &Report,
    expected_sha256: impl FnOnce() -> Result<String, String>,
    now_ms: i64,
) -> Result<Applied, String> {
    // A node the chain coordinator declared failed (silent too long) may
    // have finished after all: its success still counts.
    let late_success = node.state == NodeState::Failed && matches!(report, Report::Success { .. });
    if !node.state.in_progress() && !late_success {
        return Err(format!(
            "node {} has no deployment in progress (state {}); reports are accepted from pending, booting and deploying nodes (drover-server deploy starts one)",
            node.mac, node.state
        ));
    }
    node.updated_ms = now_ms;
    let image = node.image.clone().unwrap_or_else(|| "-".into());
    let applied = match report {
        Report::Phase { phase, message } => {
            node.state = NodeState::Deploying;
            node.phase = Some(phase.to_string());
            Applied {
                event: Some(NewEvent {
                    kind: kind::PHASE,
                    phase: Some(phase.to_string()),
                    message: message.clone(),
                }),
                refused: None,
            }
        }
        Report::Progress { done, total } => {
            node.state = NodeState::Deploying;
            node.rate = next_rate(node, *done, now_ms);
            node.bytes_done = *done;
            node.bytes_total = *total;
            node.progress_ms = Some(now_ms);
            Applied {
                event: None,
                refused: None,
            }
        }
        Report::Success {
            image: reported,
            disk,
            payload_sha256,
            bytes_written,
            elapsed_ms,
        } => {
            node.rate = 0.0;
            match expected_sha256() {
                Ok(expected) if expected.eq_ignore_ascii_case(payload_sha256) => {
                    node.state = NodeState::Done;
                    node.deployed_image = Some(image.clone());
                    node.deployed_sha256 = Some(expected);
                    node.deployed_ms = Some(now_ms);
                    node.last_error = None;
                    let message = format!(
                        "{reported} on {disk}: {} written in {:.1} s, payload sha256 {payload_sha256}",
                        Human(*bytes_written),
                        *elapsed_ms as f64 / 1000.0
                    );
                    Applied {
                        event: Some(NewEvent::new(kind::SUCCESS, message)),
                        refused: None,
                    }
                }
                Ok(expected) => refuse_success(
                    node,
                    format!(
                        "success report refused: payload sha256 {payload_sha256} is not {image}'s {expected}"
                    ),
                ),
                Err(why) => refuse_success(
                    node,
                    format!("success report refused: cannot check its payload sha256 {payload_sha256}: {why}"),
                ),
            }
        }
        Report::Failure { phase, error } => {
            node.state = NodeState::Failed;
            node.phase = Some(phase.to_string());
            node.rate = 0.0;
            node.last_error = Some(format!("{phase}: {error}"));
            Applied {
                event: Some(NewEvent {
                    kind: kind::FAILURE,
                    phase: Some(phase.to_string()),
                    message: error.clone(),
                }),
                refused: None,
            }
        }
    };
    Ok(applied)
}

fn refuse_success(node: &mut Node, why: String) -> Applied {
    node.state = NodeState::Failed;
    node.last_error = Some(why.clone());
    Applied {
        event: Some(NewEvent::new(kind::FAILURE, why.clone())),
        refused: Some(why),
    }
}

/// The rate after a progress report of `done` bytes at `now_ms`: the
/// moving average of the bytes per second since the previous report. The
/// first report only starts the clock; a count that went back (the agent
/// started over) starts it again.
fn next_rate(node: &Node, done: u64, now_ms: i64) -> f64 {
    let Some(then) = node.progress_ms else {
        return 0.0;
    };
    if done < node.bytes_done {
        return 0.0;
    }
    let elapsed_ms = now_ms - then;
    if elapsed_ms <= 0 {
        return node.rate;
    }
    let sample = (done - node.bytes_done) as f64 * 1000.0 / elapsed_ms as f64;
    if node.rate == 0.0 {
        sample
    } else {
        RATE_WEIGHT * sample + (1.0 - RATE_WEIGHT) * node.rate
    }
}

#[cfg(test)]
mod tests {
    use drover_agent::report::Phase;

    use super::*;

    const MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x01]);
    const SHA: &str = "c3e8aa";

    fn assigned() -> Node {
        let mut n = Node::new(MAC, Some("web1".into()), 1000);
        n.assign("demo@1.0".into(), true, None, 2000);
        n
    }

    fn apply(node: &mut Node, report: Report, now_ms: i64) -> Result<Applied, String> {
        apply_report(node, &report, || Ok(SHA.into()), now_ms)
    }

    fn success(sha: &str) -> Report {
        Report::Success {
            image: "demo@1.0".into(),
            disk: "/dev/vda".into(),
            payload_sha256: sha.into(),
            bytes_written: 3 << 20,
            elapsed_ms: 1500,
        }
    }

    #[test]
    fn states_round_trip_and_in_progress() {
        for s in NodeState::ALL {
            assert_eq!(s.as_str().parse::<NodeState>(), Ok(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        let in_progress: Vec<_> = NodeState::ALL
            .into_iter()
            .filter(|s| s.in_progress())
            .collect();
        assert_eq!(
            in_progress,
            [NodeState::Pending, NodeState::Booting, NodeState::Deploying]
        );
        assert!("gone".parse::<NodeState>().is_err());
    }

    #[test]
    fn names() {
        for ok in ["web1", "rack-2.node_3", "9", &"a".repeat(63)] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "-x",
            ".x",
            "a b",
            "a/b",
            "é",
            &"a".repeat(64),
            "52:54:00:12:34:01",
            "52-54-00-12-34-01",
        ] {
            let e = check_name(bad).unwrap_err();
            assert!(e.ends_with(NAME_ACCEPTED), "{bad}: {e}");
        }
    }

    #[test]
    fn assign_and_boot_clear_progress_and_keep_what_was_deployed() {
        let mut n = assigned();
        assert_eq!(n.state, NodeState::Pending);
        assert_eq!((n.image.as_deref(), n.wipe), (Some("demo@1.0"), true));
        n.boot(3000);
        apply(
            &mut n,
            Report::Progress {
                done: 10,
                total: 100,
            },
            3100,
        )
        .unwrap();
        apply(&mut n, success(SHA), 3200).unwrap();
        assert_eq!(n.state, NodeState::Done);
        n.assign("demo@2.0".into(), false, Some(Mode::Chain), 4000);
        assert_eq!(n.state, NodeState::Pending);
        assert_eq!(n.mode.as_deref(), Some("chain"));
        assert_eq!(
            (n.bytes_done, n.bytes_total, n.phase.as_deref()),
            (0, 0, None)
        );
        assert_eq!(n.deployed_image.as_deref(), Some("demo@1.0"));
        apply(
            &mut n,
            Report::Progress {
                done: 10,
                total: 100,
            },
            4100,
        )
        .unwrap();
        n.boot(4200);
        assert_eq!(
            (n.state, n.bytes_done, n.progress_ms),
            (NodeState::Booting, 0, None)
        );
    }

    #[test]
    fn phases_and_progress() {
        let mut n = assigned();
        n.boot(3000);
        let a = apply(
            &mut n,
            Report::Phase {
                phase: Phase::Write,
                message: "writing 2 partitions".into(),
            },
            3001,
        )
        .unwrap();
        assert_eq!(n.state, NodeState::Deploying);
        assert_eq!(n.phase.as_deref(), Some("write"));
        assert_eq!(
            a.event,
            Some(NewEvent {
                kind: kind::PHASE,
                phase: Some("write".into()),
                message: "writing 2 partitions".into()
            })
        );
        assert_eq!(a.refused, None);

        // The first progress report starts the clock; then 1 MB/s, then
        // 2 MB/s moves the average by RATE_WEIGHT.
        let a = apply(
            &mut n,
            Report::Progress {
                done: 0,
                total: 10_000_000,
            },
            10_000,
        )
        .unwrap();
        assert_eq!((a.event, n.rate), (None, 0.0));
        apply(
            &mut n,
            Report::Progress {
                done: 1_000_000,
                total: 10_000_000,
            },
            11_000,
        )
        .unwrap();
        assert_eq!(n.rate, 1_000_000.0);
        apply(
            &mut n,
            Report::Progress {
                done: 3_000_000,
                total: 10_000_000,
            },
            12_000,
        )
        .unwrap();
        assert!((n.rate - 1_300_000.0).abs() < 1e-6, "{}", n.rate);
        // Same millisecond: the rate stands.
        apply(
            &mut n,
            Report::Progress {
                done: 3_100_000,
                total: 10_000_000,
            },
            12_000,
        )
        .unwrap();
        assert!((n.rate - 1_300_000.0).abs() < 1e-6, "{}", n.rate);
        // Started over: the rate starts over.
        apply(
            &mut n,
            Report::Progress {
                done: 5,
                total: 10_000_000,
            },
            13_000,
        )
        .unwrap();
        assert_eq!(n.rate, 0.0);
        assert_eq!(
            (n.bytes_done, n.bytes_total, n.updated_ms),
            (5, 10_000_000, 13_000)
        );
    }

    #[test]
    fn success_with_the_pinned_hash_is_done() {
        let mut n = assigned();
        n.rate = 5.0;
        let a = apply(&mut n, success("C3E8AA"), 5000).unwrap();
        assert_eq!(a.refused, None);
        assert_eq!(n.state, NodeState::Done);
        assert_eq!(n.deployed_image.as_deref(), Some("demo@1.0"));
        assert_eq!(n.deployed_sha256.as_deref(), Some(SHA));
        assert_eq!((n.deployed_ms, n.rate), (Some(5000), 0.0));
        let e = a.event.unwrap();
        assert_eq!(e.kind, kind::SUCCESS);
        assert_eq!(
            e.message,
            "demo@1.0 on /dev/vda: 3.0 MiB written in 1.5 s, payload sha256 C3E8AA"
        );
    }

    #[test]
    fn success_with_another_hash_or_none_known_fails_and_is_refused() {
        let mut n = assigned();
        let a = apply(&mut n, success("ffff"), 5000).unwrap();
        let why = "success report refused: payload sha256 ffff is not demo@1.0's c3e8aa";
        assert_eq!(a.refused.as_deref(), Some(why));
        assert_eq!(a.event, Some(NewEvent::new(kind::FAILURE, why)));
        assert_eq!(
            (n.state, n.last_error.as_deref()),
            (NodeState::Failed, Some(why))
        );
        assert_eq!(n.deployed_image, None);

        let mut n = assigned();
        let a = apply_report(&mut n, &success(SHA), || Err("no store".into()), 5000).unwrap();
        assert_eq!(
            a.refused.as_deref(),
            Some("success report refused: cannot check its payload sha256 c3e8aa: no store")
        );
        assert_eq!(n.state, NodeState::Failed);
    }

    #[test]
    fn failure_records_phase_and_error() {
        let mut n = assigned();
        n.boot(3000);
        let a = apply(
            &mut n,
            Report::Failure {
                phase: Phase::Disk,
                error: "disk /dev/vda is too small".into(),
            },
            4000,
        )
        .unwrap();
        assert_eq!(n.state, NodeState::Failed);
        assert_eq!(
            n.last_error.as_deref(),
            Some("disk: disk /dev/vda is too small")
        );
        let e = a.event.unwrap();
        assert_eq!((e.kind, e.phase.as_deref()), (kind::FAILURE, Some("disk")));
    }

    #[test]
    fn reports_need_a_deployment_in_progress() {
        let mut idle = Node::new(MAC, None, 0);
        let e = apply(&mut idle, Report::Progress { done: 1, total: 2 }, 1).unwrap_err();
        assert!(
            e.starts_with("node 52:54:00:12:34:01 has no deployment in progress (state idle)"),
            "{e}"
        );
        let mut n = assigned();
        apply(&mut n, success(SHA), 5000).unwrap();
        let before = n.clone();
        let e = apply(&mut n, success(SHA), 6000).unwrap_err();
        assert!(e.contains("(state done)"), "{e}");
        assert_eq!(n, before, "a refused report changes nothing");
        let mut n = assigned();
        n.fail("x".into(), 1);
        assert!(apply(&mut n, Report::Progress { done: 1, total: 2 }, 2).is_err());
    }
}
