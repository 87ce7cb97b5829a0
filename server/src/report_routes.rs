//! `POST /api/v1/nodes/{mac}/report`: what the agent tells the server
//! (the wire format is the agent's own, `drover_agent::report::protocol`).
//!
//! Checked in this order, each refusal one line saying why: the MAC (400),
//! an `Authorization: Bearer` header (401), a JSON content type (415), the
//! body size (413, at most `MAX_BODY`), the report itself (400), then the
//! token against the node's current deployment (401; an unknown MAC gets
//! the same answer, so reports do not reveal registrations) and whether
//! the report fits the node's state (409). Recorded: 204.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use drover_agent::report::protocol::MAX_BODY;
use drover_agent::report::Report;
use kernel_cmdline::MacAddr;

use crate::http::{blocking, is_json, text, AppState};
use crate::tokens;

/// The report route, to merge into the server's router. The path segment
/// is named `node` like the admin API's, which shares the prefix.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route(
        "/api/v1/nodes/{node}/report",
        post(report).layer(DefaultBodyLimit::max(MAX_BODY)),
    )
}

async fn report(
    State(state): State<Arc<AppState>>,
    Path(mac): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mac = match mac.parse::<MacAddr>() {
        Ok(mac) => mac,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("bad MAC address {mac:?} in the report path: {e}"),
            )
        }
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = match tokens::bearer(authorization) {
        Ok(token) => token.to_owned(),
        Err(why) => {
            return text(
                StatusCode::UNAUTHORIZED,
                format!("{why} (the node's deploy.token)"),
            )
        }
    };
    if !is_json(&headers) {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a report is JSON; accepted: Content-Type: application/json",
        );
    }
    let body = match body {
        Ok(body) => body,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("report body larger than the limit of {MAX_BODY} bytes"),
            )
        }
        Err(e) => {
            return text(
                e.status(),
                format!("reading the report body: {}", e.body_text()),
            )
        }
    };
    let report = match Report::from_json(&body) {
        Ok(report) => report,
        Err(why) => return text(StatusCode::BAD_REQUEST, why),
    };
    let recorded = blocking(&state, move |s| {
        let reported = s.fleet.report(mac, &token, &report)?;
        s.metrics.report(&report, reported.state);
        Ok(reported)
    })
    .await;
    match recorded {
        Ok(reported) => match reported.refused {
            Some(why) => text(StatusCode::CONFLICT, why),
            None => StatusCode::NO_CONTENT.into_response(),
        },
        Err(resp) => resp,
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Method, Request};

    use super::*;
    use crate::api::NodeState;
    use crate::test_fixture::{fixture, token_of, Fixture, Setup, MAC};

    /// A server with demo@1.0 in its store and MAC deploying it (its entry
    /// served); the node's token.
    async fn deploying() -> (Fixture, String) {
        let f = fixture(Setup {
            auto_register: None,
            store: true,
        });
        let add = f
            .admin(
                Method::POST,
                "/api/v1/nodes",
                Some(&format!(r#"{{"mac":"{MAC}","name":"web1"}}"#)),
            )
            .await;
        assert_eq!(add.status, StatusCode::CREATED, "{}", add.body);
        let deploy = f
            .admin(
                Method::POST,
                "/api/v1/deploy",
                Some(r#"{"image":"demo","nodes":["web1"]}"#),
            )
            .await;
        assert_eq!(deploy.status, StatusCode::OK, "{}", deploy.body);
        let token = token_of(&f.ipxe(MAC).await);
        (f, token)
    }

    fn success(sha: &str) -> String {
        format!(
            r#"{{"event":"success","image":"demo@1.0","disk":"/dev/vda","payload_sha256":"{sha}","bytes_written":1048576,"elapsed_ms":2000}}"#
        )
    }

    #[tokio::test]
    async fn a_whole_deployment_then_localboot() {
        let (f, token) = deploying().await;
        let phase = r#"{"event":"phase","phase":"write","message":"writing 1 partition"}"#;
        for body in [
            phase,
            r#"{"event":"progress","done":0,"total":1048576}"#,
            r#"{"event":"progress","done":524288,"total":1048576}"#,
        ] {
            let got = f.report(MAC, &token, body).await;
            assert_eq!(
                (got.status, got.body.as_str()),
                (StatusCode::NO_CONTENT, ""),
                "{body}"
            );
        }
        let shown = f.node("web1").await;
        assert_eq!(shown.node.state, NodeState::Deploying);
        assert_eq!(shown.node.phase.as_deref(), Some("write"));
        assert_eq!(
            (shown.node.bytes_done, shown.node.bytes_total),
            (524288, 1048576)
        );

        let got = f.report(MAC, &token, &success(&f.sha256)).await;
        assert_eq!(got.status, StatusCode::NO_CONTENT, "{}", got.body);
        let shown = f.node(MAC).await;
        assert_eq!(shown.node.state, NodeState::Done);
        assert_eq!(shown.node.deployed_image.as_deref(), Some("demo@1.0"));
        assert_eq!(
            shown.node.deployed_sha256.as_deref(),
            Some(f.sha256.as_str())
        );
        let last = shown.events.last().unwrap();
        assert_eq!(last.kind, "success");
        assert!(
            last.message
                .starts_with("demo@1.0 on /dev/vda: 1.0 MiB written in 2.0 s"),
            "{}",
            last.message
        );

        // Done: the next boot goes to the disk, on iPXE and PXELINUX.
        let script = f.ipxe(MAC).await;
        assert!(
            script.starts_with("#!ipxe\necho drover: 52:54:00:12:34:01: deployed demo@1.0 at "),
            "{script}"
        );
        assert!(
            script.ends_with("; booting from disk\nexit 1\n"),
            "{script}"
        );
        let pxe = f.get("/pxelinux.cfg/01-52-54-00-12-34-01").await;
        assert!(
            pxe.body
                .starts_with("# drover: 52:54:00:12:34:01: deployed demo@1.0 at "),
            "{}",
            pxe.body
        );
        assert!(
            pxe.body
                .ends_with("DEFAULT local\nLABEL local\n  LOCALBOOT 0\n"),
            "{}",
            pxe.body
        );
        let shown = f.node(MAC).await;
        let kinds: Vec<&str> = shown.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "registered",
                "assigned",
                "boot",
                "phase",
                "success",
                "localboot",
                "localboot"
            ]
        );
        assert!(shown.events[5]
            .message
            .starts_with("localboot entry served (iPXE): deployed demo@1.0 at "));

        // The deployment is over: its token no longer reports.
        let got = f.report(MAC, &token, phase).await;
        assert_eq!(got.status, StatusCode::CONFLICT);
        assert!(
            got.body
                .starts_with("node 52:54:00:12:34:01 has no deployment in progress (state done)"),
            "{}",
            got.body
        );
        let metrics = f.get("/metrics").await.body;
        assert!(
            metrics.contains("drover_deploys_total{result=\"success\"} 1\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("drover_reports_total{event=\"phase\"} 1\n"),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn success_with_the_wrong_hash_is_refused_and_fails_the_node() {
        let (f, token) = deploying().await;
        let wrong = "ab".repeat(32);
        let got = f.report(MAC, &token, &success(&wrong)).await;
        assert_eq!(got.status, StatusCode::CONFLICT);
        assert_eq!(
            got.body,
            format!(
                "success report refused: payload sha256 {wrong} is not demo@1.0's {}\n",
                f.sha256
            )
        );
        let shown = f.node(MAC).await;
        assert_eq!(shown.node.state, NodeState::Failed);
        assert_eq!(shown.node.deployed_image, None);
        let script = f.ipxe(MAC).await;
        assert!(
            script.contains(": deploy of demo@1.0 failed: success report refused: "),
            "{script}"
        );
        assert!(
            script.contains("drover-server deploy --image NAME 52:54:00:12:34:01 retries"),
            "{script}"
        );
        let metrics = f.get("/metrics").await.body;
        assert!(
            metrics.contains("drover_deploys_total{result=\"failure\"} 1\n"),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn failure_is_recorded_with_its_phase() {
        let (f, token) = deploying().await;
        let got = f
            .report(MAC, &token, r#"{"event":"failure","phase":"disk","error":"disk /dev/vda (32 MiB) is too small"}"#)
            .await;
        assert_eq!(got.status, StatusCode::NO_CONTENT, "{}", got.body);
        let shown = f.node(MAC).await;
        assert_eq!(shown.node.state, NodeState::Failed);
        assert_eq!(
            shown.node.last_error.as_deref(),
            Some("disk: disk /dev/vda (32 MiB) is too small")
        );
        let e = shown.events.last().unwrap();
        assert_eq!(
            (e.kind.as_str(), e.phase.as_deref()),
            ("failure", Some("disk"))
        );
        // A new deploy starts over with a new token; the old one is refused.
        let deploy = f
            .admin(
                Method::POST,
                "/api/v1/deploy",
                Some(r#"{"image":"demo@1.0","nodes":["52-54-00-12-34-01"]}"#),
            )
            .await;
        assert_eq!(deploy.status, StatusCode::OK, "{}", deploy.body);
        let new_token = token_of(&f.ipxe(MAC).await);
        assert_ne!(new_token, token);
        let progress = r#"{"event":"progress","done":1,"total":2}"#;
        assert_eq!(
            f.report(MAC, &token, progress).await.status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            f.report(MAC, &new_token, progress).await.status,
            StatusCode::NO_CONTENT
        );
    }

    #[tokio::test]
    async fn refusals_say_why() {
        let (f, token) = deploying().await;
        let progress = r#"{"event":"progress","done":1,"total":2}"#;
        let uri = format!("/api/v1/nodes/{MAC}/report");

        let got = f.call(Method::POST, &uri, None, Some(progress)).await;
        assert_eq!(got.status, StatusCode::UNAUTHORIZED);
        assert!(
            got.body
                .starts_with("missing Authorization header; accepted: Authorization: Bearer TOKEN"),
            "{}",
            got.body
        );

        let wrong = f.report(MAC, "0123", progress).await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            wrong.body,
            "wrong token for node 52:54:00:12:34:01; accepted: the deploy.token of its current deployment (each deploy makes a new one)\n"
        );
        // An unknown MAC looks the same as a wrong token.
        let unknown = f.report("52:54:00:00:00:99", &token, progress).await;
        assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
        assert!(
            unknown
                .body
                .starts_with("wrong token for node 52:54:00:00:00:99;"),
            "{}",
            unknown.body
        );

        let got = f.report("nope", &token, progress).await;
        assert_eq!(got.status, StatusCode::BAD_REQUEST);
        assert!(
            got.body
                .starts_with("bad MAC address \"nope\" in the report path: "),
            "{}",
            got.body
        );

        let got = f.report(MAC, &token, r#"{"event":"reboot"}"#).await;
        assert_eq!(got.status, StatusCode::BAD_REQUEST);
        assert!(got.body.starts_with("bad report: "), "{}", got.body);
        assert!(
            got.body.contains("accepted: one JSON object"),
            "{}",
            got.body
        );

        let big = format!(
            r#"{{"event":"phase","phase":"write","message":"{}"}}"#,
            "x".repeat(MAX_BODY)
        );
        let got = f.report(MAC, &token, &big).await;
        assert_eq!(got.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            got.body,
            format!("report body larger than the limit of {MAX_BODY} bytes\n")
        );

        let req = Request::builder()
            .method(Method::POST)
            .uri(&uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from(progress))
            .unwrap();
        let got = f.send(req).await;
        assert_eq!(got.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(
            got.body
                .contains("accepted: Content-Type: application/json"),
            "{}",
            got.body
        );

        // None of that changed the node.
        let shown = f.node(MAC).await;
        assert_eq!(
            (shown.node.state, shown.node.bytes_done),
            (NodeState::Booting, 0)
        );
    }
}
