//! `drover-server status`: the fleet at a glance, once or until every
//! deployment has ended, and an exit code a script can branch on.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;

use crate::admin_client::AdminClient;
use crate::api::{Node, NodeState};
use crate::fleet_text::status_text;

/// How the fleet stands, as `status` exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No deployment in progress and none failed (exit 0).
    Settled,
    /// At least one node failed (exit 1), whatever the others do.
    Failed,
    /// Deployments are in progress, none failed (exit 2).
    Running,
}

impl Outcome {
    /// Of these nodes.
    pub fn of(nodes: &[Node]) -> Outcome {
        if nodes.iter().any(|n| n.state == NodeState::Failed) {
            Outcome::Failed
        } else if nodes.iter().any(|n| n.state.in_progress()) {
            Outcome::Running
        } else {
            Outcome::Settled
        }
    }

    pub fn exit_code(self) -> ExitCode {
        ExitCode::from(match self {
            Outcome::Settled => 0,
            Outcome::Failed => 1,
            Outcome::Running => 2,
        })
    }
}

/// ANSI: cursor home, clear the screen.
const CLEAR: &str = "\x1b[H\x1b[2J";

/// Print the status once, or with `watch` every `interval` until no
/// deployment is in progress. On a terminal (`tty`) the table has
/// progress bars and is redrawn in place; otherwise it is printed again
/// only when it changed, so a log stays readable.
pub fn run(
    client: &AdminClient,
    watch: bool,
    interval: Duration,
    tty: bool,
    out: &mut impl Write,
) -> Result<Outcome> {
    let mut last = String::new();
    loop {
        let nodes = client.nodes()?;
        let text = status_text(&nodes, tty);
        if tty && watch {
            write!(out, "{CLEAR}{text}")?;
        } else if text != last {
            if !last.is_empty() {
                writeln!(out)?;
            }
            write!(out, "{text}")?;
        }
        out.flush()?;
        last = text;
        let outcome = Outcome::of(&nodes);
        // Watching ends when nothing is left running, failures included.
        if !watch || !nodes.iter().any(|n| n.state.in_progress()) {
            return Ok(outcome);
        }
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use kernel_cmdline::MacAddr;

    use super::*;

    fn node(state: NodeState) -> Node {
        let mut n = Node::new(MacAddr([2; 6]), None, 0);
        n.state = state;
        n
    }

    #[test]
    fn outcomes() {
        use NodeState::*;
        let cases: &[(&[NodeState], Outcome)] = &[
            (&[], Outcome::Settled),
            (&[Idle, Done], Outcome::Settled),
            (&[Done, Pending], Outcome::Running),
            (&[Booting], Outcome::Running),
            (&[Deploying, Done], Outcome::Running),
            (&[Deploying, Failed], Outcome::Failed),
            (&[Failed, Done], Outcome::Failed),
        ];
        for (states, want) in cases {
            let nodes: Vec<Node> = states.iter().map(|s| node(*s)).collect();
            assert_eq!(Outcome::of(&nodes), *want, "{states:?}");
        }
    }
}
