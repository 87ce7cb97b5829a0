//! The coordinator's HTTP endpoints (paths and bodies in
//! `drover_agent::chain::api`). Bodies are bounded; node requests need
//! the node's token, `start` and the status the admin's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{header, Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use drover_agent::chain::api::{
    Assignment, Heartbeat, Join, Leave, SessionStatus, Start, UpstreamFailed, HEARTBEAT_PATH,
    JOIN_PATH, LEAVE_PATH, MAX_BODY, SESSIONS_PATH, START_PATH, UPSTREAM_FAILED_PATH,
};
use drover_agent::chain::SessionId;
use kernel_cmdline::MacAddr;

use super::coordinator::{ApiError, Coordinator};
use super::topology::Progress;

/// The chain API, to merge into the server's router (any state type).
pub fn routes<S: Clone + Send + Sync + 'static>(coordinator: Arc<Coordinator>) -> Router<S> {
    Router::new()
        .route(JOIN_PATH, post(join))
        .route(HEARTBEAT_PATH, post(heartbeat))
        .route(UPSTREAM_FAILED_PATH, post(upstream_failed))
        .route(LEAVE_PATH, post(leave))
        .route(START_PATH, post(start))
        .route(&format!("{SESSIONS_PATH}/{{session}}"), get(status))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(coordinator)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
        };
        (status, format!("{self}\n")).into_response()
    }
}

type C = State<Arc<Coordinator>>;
type Answer = Result<Json<Assignment>, ApiError>;

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The node's MAC and session, once its token is accepted.
fn node(
    c: &Coordinator,
    headers: &HeaderMap,
    mac: &str,
    session: &str,
) -> Result<(MacAddr, SessionId), ApiError> {
    let mac: MacAddr = mac
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("mac {mac:?}: {e}")))?;
    if !c.auth().node(&mac, bearer(headers)) {
        return Err(ApiError::Unauthorized(format!(
            "{mac}: missing or wrong deploy token"
        )));
    }
    Ok((mac, session_id(session)?))
}

fn session_id(s: &str) -> Result<SessionId, ApiError> {
    s.parse().map_err(ApiError::BadRequest)
}

fn admin(c: &Coordinator, headers: &HeaderMap) -> Result<(), ApiError> {
    if c.auth().admin(bearer(headers)) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized(
            "missing or wrong admin token".into(),
        ))
    }
}

async fn join(State(c): C, headers: HeaderMap, ext: Extensions, Json(r): Json<Join>) -> Answer {
    let (mac, id) = node(&c, &headers, &r.mac, &r.session)?;
    let mut listen: SocketAddr = r
        .listen
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("listen {:?} is not IP:PORT", r.listen)))?;
    if listen.ip().is_unspecified() {
        // "Wherever you see me": the address this request came from.
        let peer = ext.get::<ConnectInfo<SocketAddr>>().ok_or_else(|| {
            ApiError::BadRequest("listen has no IP and the peer is unknown".into())
        })?;
        listen.set_ip(peer.0.ip());
    }
    if listen.port() == 0 {
        return Err(ApiError::BadRequest("listen has no port".into()));
    }
    Ok(Json(c.join(&id, mac, listen, r.next).await?))
}

async fn heartbeat(State(c): C, headers: HeaderMap, Json(r): Json<Heartbeat>) -> Answer {
    let (mac, id) = node(&c, &headers, &r.mac, &r.session)?;
    let progress = Progress {
        received: r.received,
        oldest: r.oldest,
        written: r.written,
        backpressured: r.backpressured,
        bytes: r.bytes,
        // Unparsable MACs are no one's: skipped.
        downstreams: r
            .downstreams
            .iter()
            .filter_map(|d| Some((d.mac.parse().ok()?, d.next)))
            .collect(),
    };
    let wait = Duration::from_millis(r.wait_ms.into());
    Ok(Json(
        c.heartbeat(&id, mac, r.generation, progress, wait).await?,
    ))
}

async fn upstream_failed(State(c): C, headers: HeaderMap, Json(r): Json<UpstreamFailed>) -> Answer {
    let (mac, id) = node(&c, &headers, &r.mac, &r.session)?;
    let detail: String = r.detail.chars().take(500).collect();
    let a = c
        .upstream_failed(&id, mac, r.generation, r.reason, r.want, &detail)
        .await?;
    Ok(Json(a))
}

async fn leave(State(c): C, headers: HeaderMap, Json(r): Json<Leave>) -> Answer {
    let (mac, id) = node(&c, &headers, &r.mac, &r.session)?;
    // Older agents send no progress: their last heartbeat's stands.
    let last = match (r.received, r.oldest, r.written) {
        (Some(received), Some(oldest), Some(written)) => Some(Progress {
            received,
            oldest,
            written,
            backpressured: false,
            bytes: None,
            downstreams: Vec::new(),
        }),
        _ => None,
    };
    Ok(Json(c.leave(&id, mac, r.complete, last).await?))
}

async fn start(
    State(c): C,
    headers: HeaderMap,
    Json(r): Json<Start>,
) -> Result<Json<SessionStatus>, ApiError> {
    admin(&c, &headers)?;
    Ok(Json(c.start(&session_id(&r.session)?).await?))
}

async fn status(
    State(c): C,
    headers: HeaderMap,
    Path(session): Path<String>,
) -> Result<Json<SessionStatus>, ApiError> {
    admin(&c, &headers)?;
    let id = session_id(&session)?;
    c.status(&id)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no chain session {id}")))
}
