//! A chain session as `drover-server chain status` prints it: one line for
//! the session, then its nodes in chain order (those out of the chain
//! last) with where each receives from and how far it got. Pure.

use std::fmt::Write as _;

use drover_agent::chain::api::SessionStatus;

/// The session's text, ending in a newline.
pub fn render(s: &SessionStatus) -> String {
    let mut out = String::new();
    let shape = match s.arity {
        1 => "a chain".to_owned(),
        k => format!("a tree of arity {k}"),
    };
    let started = if s.started {
        "started"
    } else {
        "waiting for nodes"
    };
    let _ = writeln!(
        out,
        "session {}: {started}, {} nodes in {shape}, {} chunks",
        s.session,
        s.nodes.len(),
        s.chunks
    );
    if s.nodes.is_empty() {
        return out;
    }
    let rows: Vec<[String; 6]> = s
        .nodes
        .iter()
        .map(|n| {
            [
                n.position.map_or("-".into(), |p| p.to_string()),
                n.mac.clone(),
                n.state.clone(),
                n.upstream.clone().unwrap_or_else(|| "-".into()),
                format!("{}/{} {}", n.received, s.chunks, n.written),
                n.events.last().cloned().unwrap_or_default(),
            ]
        })
        .collect();
    let head = [
        "POS",
        "MAC",
        "STATE",
        "UPSTREAM",
        "RECEIVED WRITTEN",
        "LAST EVENT",
    ];
    let mut width = head.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    for r in std::iter::once(head.map(str::to_owned)).chain(rows) {
        let mut line = String::new();
        for (i, (c, w)) in r.iter().zip(width).enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                let _ = write!(line, "{c:<w$}  ");
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use drover_agent::chain::api::NodeStatus;

    use super::*;

    fn node(
        pos: Option<u32>,
        mac: &str,
        state: &str,
        up: Option<&str>,
        rw: (u32, u32),
    ) -> NodeStatus {
        NodeStatus {
            mac: mac.into(),
            state: state.into(),
            position: pos,
            upstream: up.map(Into::into),
            received: rw.0,
            written: rw.1,
            generation: 1,
            events: vec!["joined".into(), format!("{state} now")],
        }
    }

    #[test]
    fn nodes_in_chain_order_with_upstream_and_progress() {
        let s = SessionStatus {
            session: "demo@1.0".into(),
            started: true,
            chunks: 17,
            arity: 1,
            nodes: vec![
                node(
                    Some(0),
                    "52:54:00:00:00:01",
                    "complete",
                    Some("head"),
                    (17, 17),
                ),
                node(
                    Some(1),
                    "52:54:00:00:00:02",
                    "active",
                    Some("52:54:00:00:00:01"),
                    (9, 8),
                ),
                node(None, "52:54:00:00:00:03", "failed", None, (4, 4)),
            ],
        };
        let want = "\
session demo@1.0: started, 3 nodes in a chain, 17 chunks
POS  MAC                STATE     UPSTREAM           RECEIVED WRITTEN  LAST EVENT
0    52:54:00:00:00:01  complete  head               17/17 17          complete now
1    52:54:00:00:00:02  active    52:54:00:00:00:01  9/17 8            active now
-    52:54:00:00:00:03  failed    -                  4/17 4            failed now
";
        assert_eq!(render(&s), want);
    }

    #[test]
    fn an_empty_session_is_one_line() {
        let s = SessionStatus {
            session: "demo@1.0".into(),
            started: false,
            chunks: 3,
            arity: 2,
            nodes: vec![],
        };
        assert_eq!(
            render(&s),
            "session demo@1.0: waiting for nodes, 0 nodes in a tree of arity 2, 3 chunks\n"
        );
    }
}
