//! What `node list`, `node show` and `status` print. Pure: built from the
//! admin API's answers here (testable), printed by the CLI.
//!
//! The formats are read by scripts and tests, so they are stable: a
//! header row then one row per node, columns aligned with two spaces
//! between them; `node show` as `key: value` lines, then its events.

use crate::api::{Node, NodeDetail, NodeState};
use crate::clock::rfc3339;
use crate::size::Human;

/// Column headers of `node list` and `status`.
pub const COLUMNS: [&str; 7] = ["MAC", "NAME", "STATE", "IMAGE", "PHASE", "PROGRESS", "RATE"];

/// Width of the progress bar's inside.
const BAR_WIDTH: u64 = 10;

/// `node list`: one row per node.
pub fn list_table(nodes: &[Node]) -> String {
    table(nodes.iter().map(|n| row(n, progress(n))).collect())
}

/// `status`: the list, with a progress bar when `bars` (a terminal), and
/// a summary line.
pub fn status_text(nodes: &[Node], bars: bool) -> String {
    let rows = nodes
        .iter()
        .map(|n| {
            let progress = if bars { bar(n) } else { progress(n) };
            row(n, progress)
        })
        .collect();
    format!("{}{}\n", table(rows), summary(nodes))
}

/// `3 nodes: 1 deploying, 1 done, 1 failed` (states in life order, empty
/// ones left out).
pub fn summary(nodes: &[Node]) -> String {
    let counts: Vec<String> = NodeState::ALL
        .into_iter()
        .filter_map(|s| {
            let n = nodes.iter().filter(|n| n.state == s).count();
            (n > 0).then(|| format!("{n} {s}"))
        })
        .collect();
    let plural = if nodes.len() == 1 { "" } else { "s" };
    if counts.is_empty() {
        format!("{} node{plural}", nodes.len())
    } else {
        format!("{} node{plural}: {}", nodes.len(), counts.join(", "))
    }
}

/// `node show`: the node's fields, then its events oldest first.
pub fn show_text(detail: &NodeDetail) -> String {
    let n = &detail.node;
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let deployed = match (&n.deployed_image, &n.deployed_sha256) {
        (Some(image), Some(sha)) => format!("{image} {sha}"),
        (Some(image), None) => image.clone(),
        _ => "-".into(),
    };
    let progress = if n.bytes_total == 0 {
        "-".to_owned()
    } else {
        format!(
            "{}/{} ({}%)",
            Human(n.bytes_done),
            Human(n.bytes_total),
            percent(n)
        )
    };
    // The deployment's own mode, when it chose one over the server's.
    let image = match &n.mode {
        Some(mode) => format!("{} (mode {mode})", dash(&n.image)),
        None => dash(&n.image),
    };
    let mut out = format!(
        "node: {}\nname: {}\nstate: {}\nimage: {image}\ndeployed: {deployed}\nphase: {}\nprogress: {progress}\nerror: {}\nevents:\n",
        n.mac,
        dash(&n.name),
        n.state,
        dash(&n.phase),
        dash(&n.last_error),
    );
    for e in &detail.events {
        let phase = e
            .phase
            .as_deref()
            .map(|p| format!("{p}: "))
            .unwrap_or_default();
        out.push_str(&format!(
            "  {}  {}  {phase}{}\n",
            rfc3339(e.at_ms),
            e.kind,
            e.message
        ));
    }
    out
}

fn row(n: &Node, progress: String) -> Vec<String> {
    let dash = |v: Option<&str>| v.unwrap_or("-").to_owned();
    vec![
        n.mac.clone(),
        dash(n.name.as_deref()),
        n.state.to_string(),
        dash(n.image.as_deref()),
        dash(n.phase.as_deref()),
        progress,
        rate(n),
    ]
}

fn percent(n: &Node) -> u64 {
    if n.bytes_total == 0 {
        0
    } else {
        (u128::from(n.bytes_done.min(n.bytes_total)) * 100 / u128::from(n.bytes_total)) as u64
    }
}

/// `52%`, or `-` before the first progress report.
fn progress(n: &Node) -> String {
    if n.bytes_total == 0 {
        "-".into()
    } else {
        format!("{}%", percent(n))
    }
}

/// `[#####.....] 52%`.
fn bar(n: &Node) -> String {
    if n.bytes_total == 0 {
        return "-".into();
    }
    let pct = percent(n);
    let filled = (pct * BAR_WIDTH / 100) as usize;
    format!(
        "[{}{}] {pct}%",
        "#".repeat(filled),
        ".".repeat(BAR_WIDTH as usize - filled)
    )
}

/// `12.0 MiB/s` while it is writing, else `-`.
fn rate(n: &Node) -> String {
    if n.state == NodeState::Deploying && n.rate >= 1.0 {
        format!("{}/s", Human(n.rate as u64))
    } else {
        "-".into()
    }
}

/// The header and `rows`, each column as wide as its widest cell, two
/// spaces between columns, no trailing spaces.
fn table(rows: Vec<Vec<String>>) -> String {
    let header: Vec<String> = COLUMNS.iter().map(|c| (*c).to_owned()).collect();
    let all: Vec<&Vec<String>> = std::iter::once(&header).chain(rows.iter()).collect();
    let widths: Vec<usize> = (0..COLUMNS.len())
        .map(|i| all.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in all {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            if i + 1 < r.len() {
                line.push_str(&" ".repeat(widths[i] - cell.chars().count()));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use kernel_cmdline::MacAddr;

    use super::*;
    use crate::api::Event;

    fn nodes() -> Vec<Node> {
        let mut a = Node::new(
            MacAddr([0x52, 0x54, 0, 0x12, 0x34, 1]),
            Some("web1".into()),
            0,
        );
        a.assign("demo@1.0".into(), false, None, 0);
        a.state = NodeState::Deploying;
        a.phase = Some("write".into());
        a.bytes_done = 52 << 20;
        a.bytes_total = 100 << 20;
        a.rate = 12.0 * 1024.0 * 1024.0;
        let b = Node::new(MacAddr([0x52, 0x54, 0, 0x12, 0x34, 2]), None, 0);
        vec![a, b]
    }

    #[test]
    fn list_is_aligned() {
        assert_eq!(
            list_table(&nodes()),
            "\
MAC                NAME  STATE      IMAGE     PHASE  PROGRESS  RATE
52:54:00:12:34:01  web1  deploying  demo@1.0  write  52%       12.0 MiB/s
52:54:00:12:34:02  -     idle       -         -      -         -
"
        );
        assert_eq!(
            list_table(&[]),
            "MAC  NAME  STATE  IMAGE  PHASE  PROGRESS  RATE\n"
        );
    }

    #[test]
    fn status_with_and_without_bars() {
        let text = status_text(&nodes(), true);
        assert!(text.contains("  [#####.....] 52%  12.0 MiB/s\n"), "{text}");
        assert!(text.ends_with("2 nodes: 1 idle, 1 deploying\n"), "{text}");
        let plain = status_text(&nodes(), false);
        assert_eq!(
            plain,
            format!("{}2 nodes: 1 idle, 1 deploying\n", list_table(&nodes()))
        );
        assert_eq!(summary(&[]), "0 nodes");
        assert_eq!(summary(&nodes()[1..]), "1 node: 1 idle");
    }

    #[test]
    fn bars() {
        let mut n = nodes().remove(0);
        for (done, want) in [
            (0, "[..........] 0%"),
            (5, "[..........] 5%"),
            (99, "[#########.] 99%"),
            (100, "[##########] 100%"),
            (150, "[##########] 100%"),
        ] {
            n.bytes_done = done;
            n.bytes_total = 100;
            assert_eq!(bar(&n), want);
        }
        n.bytes_total = 0;
        assert_eq!(bar(&n), "-");
    }

    #[test]
    fn show() {
        let mut node = nodes().remove(0);
        node.deployed_image = Some("demo@0.9".into());
        node.deployed_sha256 = Some("ab12".into());
        let detail = NodeDetail {
            node,
            events: vec![
                Event {
                    id: 1,
                    at_ms: 1_793_611_800_000,
                    kind: "registered".into(),
                    phase: None,
                    message: "added by admin".into(),
                },
                Event {
                    id: 2,
                    at_ms: 1_793_611_801_000,
                    kind: "failure".into(),
                    phase: Some("disk".into()),
                    message: "no disk".into(),
                },
            ],
        };
        assert_eq!(
            show_text(&detail),
            "\
node: 52:54:00:12:34:01
name: web1
state: deploying
image: demo@1.0
deployed: demo@0.9 ab12
phase: write
progress: 52.0 MiB/100.0 MiB (52%)
error: -
events:
  2026-11-02T09:30:00Z  registered  added by admin
  2026-11-02T09:30:01Z  failure  disk: no disk
"
        );
        let idle = NodeDetail {
            node: nodes().remove(1),
            events: vec![],
        };
        let text = show_text(&idle);
        assert!(text.contains("\nname: -\n"), "{text}");
        assert!(
            text.contains("\ndeployed: -\nphase: -\nprogress: -\nerror: -\nevents:\n"),
            "{text}"
        );
    }
}
