//! The admin API's paths and JSON bodies, shared by the server's handlers
//! ([`crate::admin_routes`]) and the CLI ([`crate::admin_client`]) so the
//! two cannot drift apart.
//!
//! ```text
//! GET    /api/v1/nodes          → {"nodes":[NODE…]}
//! POST   /api/v1/nodes          {"mac":"aa:bb:cc:dd:ee:ff","name":"web1"}  → 201 NODE
//! GET    /api/v1/nodes/{node}   → {"node":NODE,"events":[EVENT…]}  (MAC or name)
//! DELETE /api/v1/nodes/{node}   → NODE (as it was)
//! POST   /api/v1/deploy         {"image":"demo","nodes":["web1",…],"wipe":true} → {"nodes":[NODE…]}
//! ```
//!
//! Every request carries `Authorization: Bearer ADMIN_TOKEN`; every error
//! is a one-line text body saying what was wrong and what is accepted.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use crate::state::node::{Event, Node, NodeState};

/// The node collection.
pub const NODES_PATH: &str = "/api/v1/nodes";
/// Deployments.
pub const DEPLOY_PATH: &str = "/api/v1/deploy";

/// Largest admin request body: a deploy to thousands of nodes fits.
pub const MAX_REQUEST: usize = 1 << 20;
/// Largest response the CLI reads.
pub const MAX_RESPONSE: usize = 64 << 20;

/// One node's path: `/api/v1/nodes/{node}`, `node` percent-encoded so
/// whatever the operator typed arrives as typed (and is refused there if
/// it names no node).
pub fn node_path(node: &str) -> String {
    let mut path = format!("{NODES_PATH}/");
    for b in node.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':') {
            path.push(char::from(b));
        } else {
            path.push_str(&format!("%{b:02X}"));
        }
    }
    path
}

/// `POST /api/v1/nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddNode {
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl AddNode {
    pub const ACCEPTED: &str = r#"{"mac":"aa:bb:cc:dd:ee:ff","name":"NAME"} (name optional)"#;
}

/// `POST /api/v1/deploy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// `NAME[@VERSION]`; a bare name is pinned to the newest version.
    pub image: String,
    /// MACs or names.
    pub nodes: Vec<String>,
    /// `deploy.wipe`; the config's `[deploy] wipe` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wipe: Option<bool>,
    /// `deploy.mode` (`http`, `chain`, `torrent`); the config's
    /// `[deploy] mode` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

impl DeployRequest {
    pub const ACCEPTED: &str = r#"{"image":"NAME[@VERSION]","nodes":["MAC or name",…],"wipe":true|false,"mode":"http|chain|torrent"} (wipe and mode optional)"#;
}

/// `GET /api/v1/nodes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeList {
    pub nodes: Vec<Node>,
}

/// `GET /api/v1/nodes/{node}`: the node and its last events, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeDetail {
    pub node: Node,
    pub events: Vec<Event>,
}

/// `POST /api/v1/deploy`'s answer: the nodes as assigned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployed {
    pub nodes: Vec<Node>,
}

/// Parse a JSON body; the error names what is accepted.
pub fn parse<T: DeserializeOwned>(body: &[u8], accepted: &str) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("bad JSON body: {e}; accepted: {accepted}"))
}

#[cfg(test)]
mod tests {
    use kernel_cmdline::MacAddr;

    use super::*;

    #[test]
    fn request_bodies() {
        let add: AddNode = parse(br#"{"mac":"52:54:00:12:34:01"}"#, AddNode::ACCEPTED).unwrap();
        assert_eq!(add.name, None);
        assert_eq!(
            serde_json::to_string(&add).unwrap(),
            r#"{"mac":"52:54:00:12:34:01"}"#
        );
        let deploy = DeployRequest {
            image: "demo".into(),
            nodes: vec!["web1".into()],
            wipe: Some(true),
            mode: Some("chain".into()),
        };
        let json = serde_json::to_vec(&deploy).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&json),
            r#"{"image":"demo","nodes":["web1"],"wipe":true,"mode":"chain"}"#
        );
        assert_eq!(parse::<DeployRequest>(&json, "").unwrap(), deploy);

        let e = parse::<AddNode>(br#"{"mac":"x","colour":1}"#, AddNode::ACCEPTED).unwrap_err();
        assert!(
            e.starts_with("bad JSON body: unknown field `colour`"),
            "{e}"
        );
        assert!(e.ends_with(AddNode::ACCEPTED), "{e}");
        let e = parse::<DeployRequest>(b"{", DeployRequest::ACCEPTED).unwrap_err();
        assert!(e.contains("accepted: {\"image\""), "{e}");
    }

    #[test]
    fn node_json_round_trips_without_its_clock_state() {
        let mut node = Node::new(MacAddr([2; 6]), Some("web1".into()), 7);
        node.progress_ms = Some(9);
        let json = serde_json::to_string(&node).unwrap();
        assert!(json.contains(r#""mac":"02:02:02:02:02:02""#), "{json}");
        assert!(json.contains(r#""state":"idle""#), "{json}");
        assert!(
            !json.contains("progress_ms") && !json.contains("token"),
            "{json}"
        );
        let back: Node = serde_json::from_str(&json).unwrap();
        assert_eq!(
            back,
            Node {
                progress_ms: None,
                ..node
            }
        );
    }

    #[test]
    fn node_paths_are_encoded() {
        assert_eq!(
            node_path("52:54:00:12:34:01"),
            "/api/v1/nodes/52:54:00:12:34:01"
        );
        assert_eq!(node_path("web-1.a_b"), "/api/v1/nodes/web-1.a_b");
        assert_eq!(node_path("a b/c?"), "/api/v1/nodes/a%20b%2Fc%3F");
    }
}
