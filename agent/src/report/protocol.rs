//! The node report protocol, shared by the agent (sender) and the server
//! (receiver) so the two ends cannot drift apart.
//!
//! A node sends each report as one JSON object:
//!
//! ```text
//! POST /api/v1/nodes/{mac}/report
//! Authorization: Bearer {deploy.token}
//! Content-Type: application/json
//!
//! {"event":"phase","phase":"write","message":"writing 2 partitions"}
//! {"event":"progress","done":1048576,"total":134217728}
//! {"event":"success","image":"demo@1.0","disk":"/dev/vda","payload_sha256":"…","bytes_written":…,"elapsed_ms":…}
//! {"event":"failure","phase":"disk","error":"…"}
//! ```
//!
//! The token is the one the server put on this node's command line; it is
//! valid for that MAC and that deployment only. The server answers `204`
//! when it recorded the report, `401` for a missing or wrong token, `409`
//! when the report does not fit the node's deployment (e.g. a success whose
//! hash is not the assigned image's), `400`/`413`/`415` for a malformed one,
//! each with a one-line text body saying why.

use serde::{Deserialize, Serialize};

/// Where reports go, relative to the server URL.
pub fn report_path(mac: &kernel_cmdline::MacAddr) -> String {
    format!("/api/v1/nodes/{mac}/report")
}

/// The largest report body the server accepts. Messages longer than
/// [`MAX_TEXT`] are cut by the sender, so a real report is far below this.
pub const MAX_BODY: usize = 16 * 1024;

/// Longest `message`/`error` text a report carries (bytes, cut on a char
/// boundary with a trailing `…`).
pub const MAX_TEXT: usize = 4096;

/// One report from a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Report {
    /// The agent entered a phase.
    Phase { phase: Phase, message: String },
    /// Payload bytes verified and written so far, of `total`.
    Progress { done: u64, total: u64 },
    /// The image is on the disk, checked, synced and unmounted; sent before
    /// the node reboots. `payload_sha256` is the verified whole-payload hash
    /// from the signed manifest; the server compares it with the image it
    /// assigned before it gives the node localboot.
    Success {
        image: String,
        disk: String,
        payload_sha256: String,
        bytes_written: u64,
        elapsed_ms: u64,
    },
    /// The deploy failed; `phase` is where, `error` the full error chain.
    Failure { phase: Phase, error: String },
}

/// The agent's phases, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Options parsed, modules loaded, network up: the first report.
    Start,
    /// Fetching and checking the signed manifest.
    Manifest,
    /// Choosing the disk.
    Disk,
    /// Writing the partition table and making filesystems.
    Partition,
    /// Streaming the payload: verify → inflate → write.
    Write,
    /// Re-reading what was written.
    Verify,
    /// Boot code, sync, unmount.
    Finish,
}

impl Phase {
    /// Every phase, in order.
    pub const ALL: [Phase; 7] = [
        Phase::Start,
        Phase::Manifest,
        Phase::Disk,
        Phase::Partition,
        Phase::Write,
        Phase::Verify,
        Phase::Finish,
    ];

    /// The wire name (`"write"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Start => "start",
            Phase::Manifest => "manifest",
            Phase::Disk => "disk",
            Phase::Partition => "partition",
            Phase::Write => "write",
            Phase::Verify => "verify",
            Phase::Finish => "finish",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Report {
    /// The JSON body, texts cut to [`MAX_TEXT`].
    pub fn to_json(&self) -> Vec<u8> {
        let mut r = self.clone();
        match &mut r {
            Report::Phase { message: t, .. } | Report::Failure { error: t, .. } => {
                *t = truncate(t, MAX_TEXT)
            }
            Report::Success { image, disk, .. } => {
                *image = truncate(image, MAX_TEXT);
                *disk = truncate(disk, MAX_TEXT);
            }
            Report::Progress { .. } => {}
        }
        serde_json::to_vec(&r).expect("a report always serializes")
    }

    /// Parse a body as the server receives it; the error says what is
    /// wrong and what is accepted.
    pub fn from_json(body: &[u8]) -> Result<Report, String> {
        if body.len() > MAX_BODY {
            return Err(format!(
                "report of {} bytes exceeds the limit of {MAX_BODY}",
                body.len()
            ));
        }
        serde_json::from_slice(body).map_err(|e| {
            format!(
                "bad report: {e}; accepted: one JSON object with \"event\" one of phase, progress, success, failure (see the README's report protocol)"
            )
        })
    }
}

/// `text` cut to at most `max` bytes on a char boundary, `…` marking a cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_is_stable() {
        let cases: &[(Report, &str)] = &[
            (
                Report::Phase {
                    phase: Phase::Write,
                    message: "writing".into(),
                },
                r#"{"event":"phase","phase":"write","message":"writing"}"#,
            ),
            (
                Report::Progress { done: 1, total: 2 },
                r#"{"event":"progress","done":1,"total":2}"#,
            ),
            (
                Report::Success {
                    image: "demo@1.0".into(),
                    disk: "/dev/vda".into(),
                    payload_sha256: "ab".into(),
                    bytes_written: 3,
                    elapsed_ms: 4,
                },
                r#"{"event":"success","image":"demo@1.0","disk":"/dev/vda","payload_sha256":"ab","bytes_written":3,"elapsed_ms":4}"#,
            ),
            (
                Report::Failure {
                    phase: Phase::Disk,
                    error: "no disk".into(),
                },
                r#"{"event":"failure","phase":"disk","error":"no disk"}"#,
            ),
        ];
        for (report, json) in cases {
            assert_eq!(String::from_utf8(report.to_json()).unwrap(), *json);
            assert_eq!(&Report::from_json(json.as_bytes()).unwrap(), report);
        }
        for p in Phase::ALL {
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{p}\""));
        }
    }

    #[test]
    fn bad_reports_say_what_is_accepted() {
        for body in [
            &br#"{"event":"reboot"}"#[..],
            br#"{"event":"progress","done":1}"#,
            br#"{"event":"progress","done":1,"total":2,"extra":0}"#,
            br#"{"event":"phase","phase":"dance","message":""}"#,
            br#"[]"#,
            b"\xff",
        ] {
            let e = Report::from_json(body).unwrap_err();
            assert!(e.starts_with("bad report: "), "{e}");
            assert!(e.contains("accepted: one JSON object"), "{e}");
        }
        let e = Report::from_json(&vec![b' '; MAX_BODY + 1]).unwrap_err();
        assert!(e.contains("exceeds the limit"), "{e}");
    }

    #[test]
    fn long_texts_are_cut_on_a_char_boundary() {
        let long = "é".repeat(MAX_TEXT);
        let json = Report::Failure {
            phase: Phase::Write,
            error: long,
        }
        .to_json();
        assert!(json.len() < MAX_BODY);
        let Report::Failure { error, .. } = Report::from_json(&json).unwrap() else {
            panic!()
        };
        assert!(
            error.len() <= MAX_TEXT && error.ends_with('…'),
            "{}",
            error.len()
        );
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("abcdef", 4), "a…");
    }
}
