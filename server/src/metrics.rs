//! `/metrics`: Prometheus text exposition (format 0.0.4).
//!
//! Gauges come from the fleet state at scrape time (nodes per state, each
//! node's progress and rate); counters are this process's, since it
//! started, as Prometheus expects of counters.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use drover_agent::report::Report;

use crate::state::node::{Node, NodeState};

/// The content type of the exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Report events, as the `event` label says them.
const REPORT_EVENTS: [&str; 4] = ["phase", "progress", "success", "failure"];

/// The process's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    http_requests: AtomicU64,
    payload_bytes: AtomicU64,
    reports: [AtomicU64; 4],
    deploys_success: AtomicU64,
    deploys_failure: AtomicU64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub http_requests: u64,
    pub payload_bytes: u64,
    /// By [`REPORT_EVENTS`].
    pub reports: [u64; 4],
    pub deploys_success: u64,
    pub deploys_failure: u64,
}

impl Metrics {
    /// One HTTP request answered.
    pub fn request(&self) {
        self.http_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` bytes of image payload sent.
    pub fn payload_bytes(&self, n: u64) {
        self.payload_bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// A report was recorded and left its node in `state`.
    pub fn report(&self, report: &Report, state: NodeState) {
        let i = match report {
            Report::Phase { .. } => 0,
            Report::Progress { .. } => 1,
            Report::Success { .. } => 2,
            Report::Failure { .. } => 3,
        };
        self.reports[i].fetch_add(1, Ordering::Relaxed);
        // Reports are accepted only during a deployment, so ending in done
        // or failed is the moment the deployment ended.
        match state {
            NodeState::Done => self.deploys_success.fetch_add(1, Ordering::Relaxed),
            NodeState::Failed => self.deploys_failure.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }

    pub fn counters(&self) -> Counters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counters {
            http_requests: get(&self.http_requests),
            payload_bytes: get(&self.payload_bytes),
            reports: self.reports.each_ref().map(get),
            deploys_success: get(&self.deploys_success),
            deploys_failure: get(&self.deploys_failure),
        }
    }
}

/// One node's value of a per-node gauge.
type NodeValue = fn(&Node) -> String;

/// The exposition text for these counters and nodes.
pub fn render(c: &Counters, nodes: &[Node]) -> String {
    let mut out = String::new();
    header(&mut out, "drover_nodes", "gauge", "Nodes in each state.");
    for state in NodeState::ALL {
        let n = nodes.iter().filter(|n| n.state == state).count();
        let _ = writeln!(out, "drover_nodes{{state=\"{state}\"}} {n}");
    }
    let per_node: [(&str, &str, NodeValue); 3] = [
        (
            "drover_node_bytes_done",
            "Payload bytes the node has written.",
            |n| n.bytes_done.to_string(),
        ),
        (
            "drover_node_bytes_total",
            "Payload bytes the node is writing in all.",
            |n| n.bytes_total.to_string(),
        ),
        (
            "drover_node_rate_bytes_per_second",
            "The node's write rate (moving average of its reports).",
            |n| format!("{:.0}", n.rate),
        ),
    ];
    for (name, help, value) in per_node {
        header(&mut out, name, "gauge", help);
        for n in nodes {
            let _ = writeln!(
                out,
                "{name}{{mac=\"{}\",name=\"{}\"}} {}",
                label(&n.mac),
                label(n.name.as_deref().unwrap_or("")),
                value(n)
            );
        }
    }
    header(
        &mut out,
        "drover_reports_total",
        "counter",
        "Node reports recorded, by event.",
    );
    for (event, count) in REPORT_EVENTS.iter().zip(c.reports) {
        let _ = writeln!(out, "drover_reports_total{{event=\"{event}\"}} {count}");
    }
    header(
        &mut out,
        "drover_deploys_total",
        "counter",
        "Deployments that ended, by result.",
    );
    let _ = writeln!(
        out,
        "drover_deploys_total{{result=\"success\"}} {}",
        c.deploys_success
    );
    let _ = writeln!(
        out,
        "drover_deploys_total{{result=\"failure\"}} {}",
        c.deploys_failure
    );
    header(
        &mut out,
        "drover_payload_bytes_served_total",
        "counter",
        "Image payload bytes sent.",
    );
    let _ = writeln!(out, "drover_payload_bytes_served_total {}", c.payload_bytes);
    header(
        &mut out,
        "drover_http_requests_total",
        "counter",
        "HTTP requests answered.",
    );
    let _ = writeln!(out, "drover_http_requests_total {}", c.http_requests);
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value as the format wants it: `\`, `"` and newline escaped.
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use kernel_cmdline::MacAddr;

    use super::*;

    #[test]
    fn exposition_text() {
        let mut a = Node::new(MacAddr([0x52, 0x54, 0, 0, 0, 1]), Some("web1".into()), 0);
        a.state = NodeState::Deploying;
        a.bytes_done = 1024;
        a.bytes_total = 4096;
        a.rate = 1234.6;
        let b = Node::new(MacAddr([0x52, 0x54, 0, 0, 0, 2]), None, 0);
        let m = Metrics::default();
        m.request();
        m.request();
        m.payload_bytes(4096);
        m.report(
            &Report::Progress { done: 1, total: 2 },
            NodeState::Deploying,
        );
        let success = Report::Success {
            image: String::new(),
            disk: String::new(),
            payload_sha256: String::new(),
            bytes_written: 0,
            elapsed_ms: 0,
        };
        m.report(&success, NodeState::Done);
        m.report(&success, NodeState::Failed);
        let text = render(&m.counters(), &[a, b]);
        let want = r#"# HELP drover_nodes Nodes in each state.
# TYPE drover_nodes gauge
drover_nodes{state="idle"} 1
drover_nodes{state="pending"} 0
drover_nodes{state="booting"} 0
drover_nodes{state="deploying"} 1
drover_nodes{state="done"} 0
drover_nodes{state="failed"} 0
# HELP drover_node_bytes_done Payload bytes the node has written.
# TYPE drover_node_bytes_done gauge
drover_node_bytes_done{mac="52:54:00:00:00:01",name="web1"} 1024
drover_node_bytes_done{mac="52:54:00:00:00:02",name=""} 0
# HELP drover_node_bytes_total Payload bytes the node is writing in all.
# TYPE drover_node_bytes_total gauge
drover_node_bytes_total{mac="52:54:00:00:00:01",name="web1"} 4096
drover_node_bytes_total{mac="52:54:00:00:00:02",name=""} 0
# HELP drover_node_rate_bytes_per_second The node's write rate (moving average of its reports).
# TYPE drover_node_rate_bytes_per_second gauge
drover_node_rate_bytes_per_second{mac="52:54:00:00:00:01",name="web1"} 1235
drover_node_rate_bytes_per_second{mac="52:54:00:00:00:02",name=""} 0
# HELP drover_reports_total Node reports recorded, by event.
# TYPE drover_reports_total counter
drover_reports_total{event="phase"} 0
drover_reports_total{event="progress"} 1
drover_reports_total{event="success"} 2
drover_reports_total{event="failure"} 0
# HELP drover_deploys_total Deployments that ended, by result.
# TYPE drover_deploys_total counter
drover_deploys_total{result="success"} 1
drover_deploys_total{result="failure"} 1
# HELP drover_payload_bytes_served_total Image payload bytes sent.
# TYPE drover_payload_bytes_served_total counter
drover_payload_bytes_served_total 4096
# HELP drover_http_requests_total HTTP requests answered.
# TYPE drover_http_requests_total counter
drover_http_requests_total 2
"#;
        assert_eq!(text, want);
    }

    #[test]
    fn label_escaping() {
        assert_eq!(label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(label("a\nb"), "a\\nb");
        assert_eq!(label("plain-1.x"), "plain-1.x");
    }
}
