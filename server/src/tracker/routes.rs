//! The tracker's HTTP routes: `GET /announce`, `/announce/{mac}/{token}`,
//! `/scrape`, `/scrape/{mac}/{token}` (who may use which: the module doc
//! of [`crate::tracker`]). Thin: the query goes to [`Tracker`] raw, on a
//! blocking thread (it reads the fleet and the store), and its bencoded
//! answer comes back with status 200, as clients expect even for a
//! `failure reason`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, Extensions, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use drover_agent::torrent::tracker::failure;

use super::{Caller, Tracker};

type T = State<Arc<Tracker>>;

/// The tracker's routes, to merge into the server's router.
pub fn routes<S: Clone + Send + Sync + 'static>(tracker: Arc<Tracker>) -> Router<S> {
    Router::new()
        .route("/announce", get(announce_guest))
        .route("/announce/{mac}/{token}", get(announce_node))
        .route("/scrape", get(scrape_guest))
        .route("/scrape/{mac}/{token}", get(scrape_node))
        .with_state(tracker)
}

enum Kind {
    Announce,
    Scrape,
}

async fn answer(
    t: Arc<Tracker>,
    kind: Kind,
    caller: Caller,
    query: Option<String>,
    ext: &Extensions,
) -> Response {
    let query = query.unwrap_or_default();
    let from = ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let done = tokio::task::spawn_blocking(move || match kind {
        Kind::Announce => match from {
            Some(ip) => t.announce(&caller, query.as_bytes(), ip),
            None => failure("the tracker cannot tell the address this request came from"),
        },
        Kind::Scrape => t.scrape(&caller, query.as_bytes()),
    })
    .await;
    match done {
        Ok(body) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/plain"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body,
        )
            .into_response(),
        Err(e) => {
            log::error!("tracker: panicked: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, failure("internal error")).into_response()
        }
    }
}

async fn announce_guest(State(t): T, RawQuery(q): RawQuery, ext: Extensions) -> Response {
    answer(t, Kind::Announce, Caller::Guest, q, &ext).await
}

async fn announce_node(
    State(t): T,
    Path((mac, token)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    ext: Extensions,
) -> Response {
    answer(t, Kind::Announce, Caller::Node { mac, token }, q, &ext).await
}

async fn scrape_guest(State(t): T, RawQuery(q): RawQuery, ext: Extensions) -> Response {
    answer(t, Kind::Scrape, Caller::Guest, q, &ext).await
}

async fn scrape_node(
    State(t): T,
    Path((mac, token)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    ext: Extensions,
) -> Response {
    answer(t, Kind::Scrape, Caller::Node { mac, token }, q, &ext).await
}
