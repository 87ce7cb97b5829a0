//! The admin API ([`crate::api`] has the paths and bodies): list, add,
//! show and remove nodes, and deploy images to them. Every route needs
//! `Authorization: Bearer ADMIN_TOKEN` (the state directory's
//! `admin.token`), compared in constant time.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;

use crate::api::{self, AddNode, DeployRequest, Deployed, NodeDetail, NodeList};
use crate::http::{blocking, is_json, text, AppState};
use crate::tokens;

/// The admin routes, to merge into the server's router.
pub fn routes(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route(api::NODES_PATH, get(list).post(add))
        .route(
            &format!("{}/{{node}}", api::NODES_PATH),
            get(show).delete(remove),
        )
        .route(api::DEPLOY_PATH, post(deploy))
        .layer(DefaultBodyLimit::max(api::MAX_REQUEST))
        // route_layer: a path that is not an admin route stays a 404.
        .route_layer(middleware::from_fn_with_state(state, require_admin))
}

async fn require_admin(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match tokens::bearer(authorization) {
        Ok(token) if tokens::matches(&state.admin_token, token) => next.run(req).await,
        Ok(_) => text(
            StatusCode::UNAUTHORIZED,
            "wrong admin token; accepted: the token in the server's state directory (admin.token)",
        ),
        Err(why) => text(
            StatusCode::UNAUTHORIZED,
            format!("{why} (the admin token, from the server's state directory)"),
        ),
    }
}

/// A JSON request body, or the status and message saying what is wrong
/// with it.
fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    accepted: &str,
) -> Result<T, (StatusCode, String)> {
    if !is_json(headers) {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("the body is JSON; accepted: Content-Type: application/json with {accepted}"),
        ));
    }
    let body = match body {
        Ok(body) => body,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body larger than the limit of {} bytes",
                    api::MAX_REQUEST
                ),
            ))
        }
        Err(e) => {
            return Err((
                e.status(),
                format!("reading the request body: {}", e.body_text()),
            ))
        }
    };
    api::parse(&body, accepted).map_err(|why| (StatusCode::BAD_REQUEST, why))
}

/// `GET /api/v1/nodes`.
async fn list(State(state): State<Arc<AppState>>) -> Response {
    match blocking(&state, |s| s.fleet.nodes()).await {
        Ok(nodes) => Json(NodeList { nodes }).into_response(),
        Err(resp) => resp,
    }
}

/// `POST /api/v1/nodes`.
async fn add(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let req: AddNode = match json_body(&headers, body, AddNode::ACCEPTED) {
        Ok(req) => req,
        Err((status, why)) => return text(status, why),
    };
    match blocking(&state, move |s| s.fleet.add(&req.mac, req.name.as_deref())).await {
        Ok(node) => {
            log::info!("admin: added node {}", node.mac);
            (StatusCode::CREATED, Json(node)).into_response()
        }
        Err(resp) => resp,
    }
}

/// `GET /api/v1/nodes/{node}`.
async fn show(State(state): State<Arc<AppState>>, Path(key): Path<String>) -> Response {
    match blocking(&state, move |s| s.fleet.show(&key)).await {
        Ok((node, events)) => Json(NodeDetail { node, events }).into_response(),
        Err(resp) => resp,
    }
}

/// `DELETE /api/v1/nodes/{node}`.
async fn remove(State(state): State<Arc<AppState>>, Path(key): Path<String>) -> Response {
    match blocking(&state, move |s| s.fleet.remove(&key)).await {
        Ok(node) => {
            log::info!("admin: removed node {}", node.mac);
            Json(node).into_response()
        }
        Err(resp) => resp,
    }
}

/// `POST /api/v1/deploy`.
async fn deploy(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let req: DeployRequest = match json_body(&headers, body, DeployRequest::ACCEPTED) {
        Ok(req) => req,
        Err((status, why)) => return text(status, why),
    };
    match blocking(&state, move |s| {
        s.fleet
            .deploy(&req.image, &req.nodes, req.wipe, req.mode.as_deref())
    })
    .await
    {
        Ok(nodes) => {
            for n in &nodes {
                log::info!(
                    "admin: deploy {} to {}",
                    n.image.as_deref().unwrap_or("-"),
                    n.mac
                );
            }
            if let Err(e) = open_chain_session(&state, &nodes).await {
                // The nodes are assigned; their session will be made at
                // the first join instead (starting on its join timeout).
                log::warn!("chain session not opened ahead: {e}");
            }
            Json(Deployed { nodes }).into_response()
        }
        Err(resp) => resp,
    }
}

/// In chain mode a deploy opens its image's session expecting exactly
/// these nodes: it starts as soon as they have all joined (or on the join
/// timeout, if some never come).
async fn open_chain_session(state: &AppState, nodes: &[crate::api::Node]) -> Result<(), String> {
    let Some(first) = nodes.first() else {
        return Ok(());
    };
    let mode = first.chosen_mode()?.unwrap_or(state.config.deploy.mode);
    let (Some(coordinator), kernel_cmdline::Mode::Chain) = (&state.chain, mode) else {
        return Ok(());
    };
    let Some(image) = first.image.as_deref() else {
        return Ok(());
    };
    let id: drover_agent::chain::SessionId = image.parse()?;
    let cfg = crate::chain::SessionConfig {
        expected: Some(u32::try_from(nodes.len()).unwrap_or(u32::MAX)),
        ..state.config.chain.session.clone()
    };
    coordinator
        .open_session(&id, cfg)
        .await
        .map_err(|e| e.to_string())?;
    log::info!("chain session {id}: expecting {} nodes", nodes.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Method, Request};

    use super::*;
    use crate::api::{Node, NodeState};
    use crate::test_fixture::{fixture, Fixture, Setup, MAC};

    const OTHER: &str = "52:54:00:12:34:02";

    fn server(store: bool) -> Fixture {
        fixture(Setup {
            auto_register: None,
            store,
        })
    }

    async fn add(f: &Fixture, json: &str) -> (StatusCode, String) {
        let got = f.admin(Method::POST, api::NODES_PATH, Some(json)).await;
        (got.status, got.body)
    }

    #[tokio::test]
    async fn admin_token_is_required() {
        let f = server(false);
        for (token, want) in [
            (None, "missing Authorization header; accepted: Authorization: Bearer TOKEN (the admin token, from the server's state directory)\n"),
            (Some("nope"), "wrong admin token; accepted: the token in the server's state directory (admin.token)\n"),
        ] {
            for (method, uri) in [
                (Method::GET, "/api/v1/nodes"),
                (Method::POST, "/api/v1/nodes"),
                (Method::GET, "/api/v1/nodes/web1"),
                (Method::DELETE, "/api/v1/nodes/web1"),
                (Method::POST, "/api/v1/deploy"),
            ] {
                let got = f.call(method.clone(), uri, token, Some("{}")).await;
                assert_eq!((got.status, got.body.as_str()), (StatusCode::UNAUTHORIZED, want), "{method} {uri}");
            }
        }
        // The report token of a node is not an admin token, nor the reverse.
        let got = f
            .call(Method::GET, "/api/v1/nodes", Some(&"0".repeat(64)), None)
            .await;
        assert_eq!(got.status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn add_list_show_remove() {
        let f = server(false);
        let (status, body) = add(&f, r#"{"mac":"52-54-00-12-34-01","name":"web1"}"#).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let node: Node = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (node.mac.as_str(), node.name.as_deref(), node.state),
            (MAC, Some("web1"), NodeState::Idle)
        );
        let (status, _) = add(&f, &format!(r#"{{"mac":"{OTHER}"}}"#)).await;
        assert_eq!(status, StatusCode::CREATED);

        let got = f.admin(Method::GET, "/api/v1/nodes", None).await;
        assert_eq!(got.content_type, "application/json");
        let list: api::NodeList = serde_json::from_str(&got.body).unwrap();
        let macs: Vec<&str> = list.nodes.iter().map(|n| n.mac.as_str()).collect();
        assert_eq!(macs, [MAC, OTHER]);

        // By name or by MAC in any spelling.
        for key in ["web1", MAC, "52-54-00-12-34-01", "52:54:00:12:34:01"] {
            let shown = f.node(key).await;
            assert_eq!(shown.node.mac, MAC);
            assert_eq!(shown.events.len(), 1);
            assert_eq!(
                (
                    shown.events[0].kind.as_str(),
                    shown.events[0].message.as_str()
                ),
                ("registered", "added by admin")
            );
        }
        let got = f.admin(Method::GET, "/api/v1/nodes/web2", None).await;
        assert_eq!(got.status, StatusCode::NOT_FOUND);
        assert_eq!(
            got.body,
            "no node \"web2\"; nodes are named by MAC (aa:bb:cc:dd:ee:ff) or by the name given at node add\n"
        );

        let got = f.admin(Method::DELETE, "/api/v1/nodes/web1", None).await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.body);
        let removed: Node = serde_json::from_str(&got.body).unwrap();
        assert_eq!(removed.mac, MAC);
        let got = f.admin(Method::DELETE, "/api/v1/nodes/web1", None).await;
        assert_eq!(got.status, StatusCode::NOT_FOUND);
        // Removed: it is unknown again, and may be added again.
        let (status, _) = add(&f, &format!(r#"{{"mac":"{MAC}","name":"web1"}}"#)).await;
        assert_eq!(status, StatusCode::CREATED);
    }

    #[tokio::test]
    async fn add_refusals() {
        let f = server(false);
        assert_eq!(
            add(&f, &format!(r#"{{"mac":"{MAC}","name":"web1"}}"#))
                .await
                .0,
            StatusCode::CREATED
        );
        let cases = [
            (format!(r#"{{"mac":"{MAC}"}}"#), StatusCode::CONFLICT, "node 52:54:00:12:34:01 already exists (drover-server node show 52:54:00:12:34:01)\n".to_owned()),
            (format!(r#"{{"mac":"{OTHER}","name":"web1"}}"#), StatusCode::CONFLICT, "the name \"web1\" is already node 52:54:00:12:34:01's; names are unique\n".to_owned()),
            (r#"{"mac":"52:54:00"}"#.to_owned(), StatusCode::BAD_REQUEST, "bad MAC address \"52:54:00\": invalid value; accepted: aa:bb:cc:dd:ee:ff (hex, \":\" or \"-\")\n".to_owned()),
            (format!(r#"{{"mac":"{OTHER}","name":"a b"}}"#), StatusCode::BAD_REQUEST, format!("node name \"a b\" is not {}\n", crate::state::node::NAME_ACCEPTED)),
        ];
        for (json, status, body) in cases {
            assert_eq!(add(&f, &json).await, (status, body), "{json}");
        }
        let (status, body) = add(&f, r#"{"mac":1}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.starts_with("bad JSON body: invalid type"), "{body}");
        assert!(
            body.ends_with(&format!("accepted: {}\n", AddNode::ACCEPTED)),
            "{body}"
        );

        let big = format!(r#"{{"mac":"{}"}}"#, "x".repeat(api::MAX_REQUEST));
        let (status, body) = add(&f, &big).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            body,
            format!(
                "request body larger than the limit of {} bytes\n",
                api::MAX_REQUEST
            )
        );

        let req = Request::builder()
            .method(Method::POST)
            .uri(api::NODES_PATH)
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", f.state.admin_token),
            )
            .body(Body::from(format!(r#"{{"mac":"{OTHER}"}}"#)))
            .unwrap();
        let got = f.send(req).await;
        assert_eq!(
            got.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{}",
            got.body
        );
    }

    #[tokio::test]
    async fn deploy_is_all_or_nothing() {
        let f = server(true);
        for json in [
            format!(r#"{{"mac":"{MAC}","name":"web1"}}"#),
            format!(r#"{{"mac":"{OTHER}"}}"#),
        ] {
            assert_eq!(add(&f, &json).await.0, StatusCode::CREATED);
        }
        let deploy = |json: &'static str| f.admin(Method::POST, api::DEPLOY_PATH, Some(json));
        let cases = [
            (r#"{"image":"demo","nodes":["web1","web9","52:54:00:00:00:09"]}"#, StatusCode::NOT_FOUND,
             "no node \"web9\", \"52:54:00:00:00:09\": nothing was deployed; nodes are named by MAC or by the name given at node add\n"),
            (r#"{"image":"nope","nodes":["web1"]}"#, StatusCode::NOT_FOUND,
             "no image named \"nope\" in the store (drover-server image list shows what there is)\n"),
            (r#"{"image":"demo@2.0","nodes":["web1"]}"#, StatusCode::NOT_FOUND,
             "image \"demo\" has no version \"2.0\"; it has: 1.0\n"),
            (r#"{"image":"de/mo","nodes":["web1"]}"#, StatusCode::BAD_REQUEST,
             "bad image \"de/mo\": invalid value (bad NAME); accepted: NAME[@VERSION], each made of A-Z a-z 0-9 . _ - and not \".\" or \"..\"\n"),
            (r#"{"image":"demo","nodes":[]}"#, StatusCode::BAD_REQUEST,
             "no nodes to deploy to; accepted: one or more MACs or node names\n"),
        ];
        for (json, status, body) in cases {
            let got = deploy(json).await;
            assert_eq!((got.status, got.body.as_str()), (status, body), "{json}");
        }
        // Nothing was assigned by any of those.
        for key in ["web1", OTHER] {
            let shown = f.node(key).await;
            assert_eq!(
                (shown.node.state, shown.events.len()),
                (NodeState::Idle, 1),
                "{key}"
            );
        }

        let got = deploy(r#"{"image":"demo","nodes":["web1","52:54:00:12:34:02","52-54-00-12-34-01"],"wipe":true}"#).await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.body);
        let deployed: api::Deployed = serde_json::from_str(&got.body).unwrap();
        assert_eq!(deployed.nodes.len(), 2, "duplicates count once");
        for n in &deployed.nodes {
            assert_eq!(
                (n.state, n.image.as_deref(), n.wipe),
                (NodeState::Pending, Some("demo@1.0"), true)
            );
        }
        let shown = f.node("web1").await;
        let last = shown.events.last().unwrap();
        assert_eq!(
            (last.kind.as_str(), last.message.as_str()),
            ("assigned", "deploy assigned by admin: demo@1.0, wipe yes")
        );
        let script = f.ipxe(MAC).await;
        assert!(
            script.contains(" deploy.image=demo@1.0 deploy.wipe=yes "),
            "{script}"
        );
    }

    #[tokio::test]
    async fn deploy_needs_a_store() {
        let f = server(false);
        assert_eq!(
            add(&f, &format!(r#"{{"mac":"{MAC}"}}"#)).await.0,
            StatusCode::CREATED
        );
        let got = f
            .admin(
                Method::POST,
                api::DEPLOY_PATH,
                Some(&format!(r#"{{"image":"demo","nodes":["{MAC}"]}}"#)),
            )
            .await;
        assert_eq!(got.status, StatusCode::CONFLICT);
        assert!(
            got.body
                .starts_with("this server has no image store (set store = \"DIR\" in its config)"),
            "{}",
            got.body
        );
    }
}
