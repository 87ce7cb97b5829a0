//! HTTP routes.
//!
//! - `GET /boot/{mac}.ipxe`: the node's iPXE script, and
//!   `GET /pxelinux.cfg/01-{mac}`: the same entry as a PXELINUX config
//!   (PXELINUX's other names are 404). The fleet decides per MAC
//!   ([`crate::fleet::Fleet::boot`]): a deploy entry while a deployment is
//!   in progress, else localboot saying why ([`crate::boot`]).
//! - `GET /files/vmlinuz`, `GET /files/initrd.img`: the deploy kernel and
//!   initrd (HEAD, Range and Content-Length via tower-http's `ServeFile`).
//! - `GET /images/{name}/{version}/{manifest.json,manifest.sig,payload}`
//!   (ranged) and `GET /images/{name}/latest`: the image store
//!   ([`crate::image_routes`]).
//! - `POST /api/v1/nodes/{mac}/report`: node reports, authenticated by the
//!   deployment's token ([`crate::report_routes`]).
//! - `/api/v1/nodes…`, `/api/v1/deploy`: the admin API, authenticated by
//!   the admin token ([`crate::admin_routes`], bodies in [`crate::api`]).
//! - `GET /announce`, `/announce/{mac}/{token}`, `/scrape…`: the
//!   BitTorrent tracker of the store's torrents ([`crate::tracker`]).
//! - `GET /metrics`: Prometheus text ([`crate::metrics`]).
//! - `GET /healthz`: `ok`.
//!
//! Every request is logged on stderr (peer, method, path, status): when a
//! VM test fails, this log and the serial console are what a human reads.
//! Every error reply is one line of text saying what was wrong.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower_http::services::ServeFile;

use drover_agent::chain::api::HEARTBEAT_PATH;
use kernel_cmdline::MacAddr;

use crate::boot::{self, BootEntry};
use crate::chain::{Coordinator, CoordinatorConfig, FnAuth, StoreImages};
use crate::config::Config;
use crate::fleet::{Fleet, FleetError};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::tokens;
use crate::tracker::{NodeDeployments, Tracker};

/// Shared server state.
pub struct AppState {
    pub config: Config,
    pub fleet: Arc<Fleet>,
    pub metrics: Metrics,
    /// What admin requests must carry.
    pub admin_token: String,
    /// Chain mode's coordinator: present when the server has an image
    /// store (the head serves from it) and a head address nodes can reach.
    pub chain: Option<Arc<Coordinator>>,
    /// The BitTorrent tracker: present when the server has an image store
    /// (its torrents are the only ones it tracks).
    pub tracker: Option<Arc<Tracker>>,
}

impl AppState {
    /// The state of `config`: its state directory (created if missing)
    /// with the fleet database and the admin token (made if missing).
    pub fn open(config: Config) -> anyhow::Result<AppState> {
        let fleet = Arc::new(Fleet::open(&config)?);
        let admin_token = tokens::load_or_create_admin_token(&config.state)?;
        let chain = coordinator(&config, &fleet, &admin_token);
        let tracker = config.store.clone().map(|store| {
            Arc::new(Tracker::new(
                config.torrent,
                Store::new(store),
                Arc::new(FleetDeployments(fleet.clone())),
            ))
        });
        Ok(AppState {
            config,
            fleet,
            metrics: Metrics::default(),
            admin_token,
            chain,
            tracker,
        })
    }
}

/// The tracker's view of the fleet: a node's token and image, and who is
/// still deploying an image in torrent mode.
struct FleetDeployments(Arc<Fleet>);

impl NodeDeployments for FleetDeployments {
    fn image_of(&self, mac: &MacAddr, token: &str) -> Option<String> {
        self.0.deployment_image(mac, token)
    }

    fn unfinished(&self, image: &str) -> Vec<MacAddr> {
        self.0
            .in_progress(image, kernel_cmdline::Mode::Torrent)
            .unwrap_or_else(|e| {
                log::warn!("tracker: reading the fleet: {e}");
                Vec::new()
            })
    }
}

/// The chain coordinator over the fleet: nodes authenticate with their
/// deployment's token, admins with the admin token, and a node the
/// coordinator declares dead is recorded failed in the fleet.
fn coordinator(config: &Config, fleet: &Arc<Fleet>, admin: &str) -> Option<Arc<Coordinator>> {
    let store = config.store.clone()?;
    let head = config.chain.public?;
    let nodes = fleet.clone();
    let admin = admin.to_owned();
    let auth = FnAuth {
        node: move |mac: &MacAddr, token: Option<&str>| nodes.token_ok(mac, token),
        admin: move |token: Option<&str>| token.is_some_and(|t| tokens::matches(&admin, t)),
    };
    let c = Coordinator::new(
        CoordinatorConfig {
            head,
            defaults: config.chain.session.clone(),
        },
        Arc::new(auth),
        Arc::new(StoreImages::new(Store::new(store))),
    );
    let fleet_now = fleet.clone();
    c.on_new_session(Arc::new(move |id| {
        fleet_now.chain_in_progress(&id.to_string()).ok()
    }));
    let failed = fleet.clone();
    c.on_failed(Arc::new(move |id, mac, why| {
        let fleet = failed.clone();
        let (image, why) = (id.to_string(), why.to_owned());
        let record = move || {
            if let Err(e) = fleet.chain_failed(mac, &image, &why) {
                log::warn!("recording {mac}'s chain failure: {e}");
            }
        };
        // Called from the coordinator's async tasks: SQLite waits elsewhere.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(record)),
            Err(_) => record(),
        }
    }));
    Some(c)
}

/// The server's routes.
pub fn router(state: Arc<AppState>) -> Router {
    let kernel = ServeFile::new(&state.config.kernel);
    let initrd = ServeFile::new(&state.config.initrd);
    let chain = match &state.chain {
        Some(c) => crate::chain::routes(c.clone()),
        None => Router::new(),
    };
    let tracker = match &state.tracker {
        Some(t) => crate::tracker::routes(t.clone()),
        None => Router::new(),
    };
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        // One path segment: axum's matcher has no `{mac}.ipxe` suffix
        // patterns, so the handler strips the extension itself.
        .route("/boot/{file}", get(boot_script))
        .route("/pxelinux.cfg/{name}", get(pxelinux_config))
        .route("/metrics", get(metrics))
        .route_service("/files/vmlinuz", kernel)
        .route_service(&format!("/files/{}", boot::INITRD_NAME), initrd)
        .merge(crate::image_routes::routes())
        .merge(crate::report_routes::routes())
        .merge(crate::admin_routes::routes(state.clone()))
        .merge(chain)
        .merge(tracker)
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .with_state(state.clone())
        .layer(middleware::from_fn_with_state(state, log_request))
}

/// A one-line text reply.
pub fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut body = body.into();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

impl IntoResponse for FleetError {
    fn into_response(self) -> Response {
        let status = match &self {
            FleetError::BadRequest(_) => StatusCode::BAD_REQUEST,
            FleetError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            FleetError::NotFound(_) => StatusCode::NOT_FOUND,
            FleetError::Conflict(_) => StatusCode::CONFLICT,
            FleetError::Internal(e) => {
                log::error!("{e:#}");
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error (the server's log says more)",
                );
            }
        };
        text(status, self.to_string())
    }
}

/// Run a fleet operation off the async threads (SQLite and the store are
/// blocking); its error as the reply.
pub async fn blocking<T: Send + 'static>(
    state: &Arc<AppState>,
    f: impl FnOnce(&AppState) -> Result<T, FleetError> + Send + 'static,
) -> Result<T, Response> {
    let state = state.clone();
    match tokio::task::spawn_blocking(move || f(&state)).await {
        Ok(result) => result.map_err(IntoResponse::into_response),
        Err(e) => {
            log::error!("fleet operation panicked: {e}");
            Err(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error (the server's log says more)",
            ))
        }
    }
}

/// Whether the request says its body is JSON.
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// The fleet's entry for `mac`, logged.
async fn entry(
    state: &Arc<AppState>,
    mac: MacAddr,
    via: &'static str,
) -> Result<BootEntry, Response> {
    let decision = blocking(state, move |s| s.fleet.boot(mac, via)).await?;
    let entry = BootEntry::new(&state.config, mac, decision);
    log::info!("{via} entry for {mac}: {}", entry.summary());
    Ok(entry)
}

fn boot_text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// `GET /boot/{mac}.ipxe`. The `Path` extractor has already URL-decoded the
/// segment: iPXE sends `${net0/mac}` as `52%3A54%3A00%3A12%3A34%3A01`.
async fn boot_script(State(state): State<Arc<AppState>>, Path(file): Path<String>) -> Response {
    let Some(mac) = file.strip_suffix(".ipxe") else {
        return text(StatusCode::NOT_FOUND, "boot entries are /boot/MAC.ipxe");
    };
    // `aa:bb:…` or `aa-bb-…`, either case: the crate's own MAC parser.
    let mac = match mac.parse::<MacAddr>() {
        Ok(mac) => mac,
        Err(e) => {
            let msg = format!("bad MAC address {mac:?} in /boot/{file}: {e}");
            return text(StatusCode::BAD_REQUEST, msg);
        }
    };
    match entry(&state, mac, "iPXE").await {
        Ok(entry) => boot_text(entry.ipxe_script()),
        Err(resp) => resp,
    }
}

/// `GET /pxelinux.cfg/{name}`. PXELINUX tries its UUID, `01-<mac>`, its IP
/// address in hex (shortened a digit at a time) and `default`, in that
/// order, taking the first that exists: every name but `01-<mac>` is 404 so
/// it gets to the per-MAC one, and a node never boots a catch-all entry.
async fn pxelinux_config(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    let Some(mac) = boot::mac_from_pxelinux_name(&name) else {
        let msg = format!(
            "no PXELINUX config {name:?}: drover answers only per-MAC names {}",
            boot::PXELINUX_NAME_FORM
        );
        return text(StatusCode::NOT_FOUND, msg);
    };
    match entry(&state, mac, "PXELINUX").await {
        Ok(entry) => boot_text(entry.pxelinux_config()),
        Err(resp) => resp,
    }
}

/// `GET /metrics`.
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let nodes = match blocking(&state, |s| s.fleet.nodes()).await {
        Ok(nodes) => nodes,
        Err(resp) => return resp,
    };
    let body = crate::metrics::render(&state.metrics.counters(), &nodes);
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response()
}

async fn no_route(uri: Uri) -> Response {
    text(
        StatusCode::NOT_FOUND,
        format!(
            "no such path {}: see the README for drover-server's routes",
            uri.path()
        ),
    )
}

async fn wrong_method(req: Request) -> Response {
    text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not accepted on {}", req.method(), req.uri().path()),
    )
}

/// Log `peer METHOD /path -> status (ms)` for every request, and count it.
/// The time is to the response head; file bodies stream after it.
async fn log_request(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.to_string())
        .unwrap_or_else(|| "-".to_owned());
    let method = req.method().clone();
    let uri = req.uri().clone();
    let start = Instant::now();
    let resp = next.run(req).await;
    state.metrics.request();
    // Chain heartbeats come every few seconds from every node: routine
    // ones only at debug level, failures always.
    let routine = resp.status().is_success() && uri.path() == HEARTBEAT_PATH;
    let level = if routine {
        log::Level::Debug
    } else {
        log::Level::Info
    };
    log::log!(
        level,
        "{peer} {method} {uri} -> {} ({} ms)",
        resp.status().as_u16(),
        start.elapsed().as_millis()
    );
    resp
}

/// Bind `state.config.listen` and serve until the process is killed.
pub async fn serve(state: AppState) -> anyhow::Result<()> {
    let config = &state.config;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    log::info!(
        "listening on {} as {}; kernel {}, initrd {}, image store {}, state {}",
        listener.local_addr()?,
        config.public_url,
        config.kernel.display(),
        config.initrd.display(),
        config
            .store
            .as_deref()
            .map_or("none".into(), |s| s.display().to_string()),
        config.state.display()
    );
    let state = Arc::new(state);
    let config = &state.config;
    if let Some(c) = &state.chain {
        let head = tokio::net::TcpListener::bind(config.chain.listen)
            .await
            .with_context(|| format!("binding the chain head's {}", config.chain.listen))?;
        c.head_bound(head.local_addr()?.port());
        log::info!(
            "chain head on {}, reached by nodes as {}",
            head.local_addr()?,
            c.head()
        );
        tokio::spawn(crate::chain::serve_head(
            head,
            c.images(),
            crate::chain::HeadConfig::default(),
        ));
        tokio::spawn(c.clone().run_ticker(std::time::Duration::from_secs(1)));
    } else {
        log::info!("chain mode off: it needs an image store and a head address nodes can reach ([chain] public)");
    }
    if let (Some(t), Some(listen), Some(store)) =
        (&state.tracker, config.torrent.seed_listen, &config.store)
    {
        crate::seeder::start(
            listen,
            config.torrent.seed_public,
            Store::new(store.clone()),
            t.clone(),
        )?;
    }
    let app = router(state.clone());
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
    .context("serving HTTP")
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Method;
    use axum::http::Request as HttpRequest;

    use super::*;
    use crate::api::NodeState;
    use crate::test_fixture::{fixture, token_of, Fixture, Setup, MAC};

    /// Today's boot-path setup: every MAC is registered with `demo`, and
    /// there is no store to pin it in.
    fn boot_path() -> Fixture {
        fixture(Setup {
            auto_register: Some("demo"),
            store: false,
        })
    }

    async fn request(
        f: &Fixture,
        method: Method,
        uri: &str,
    ) -> (StatusCode, String, Option<String>) {
        let req = HttpRequest::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let resp = f.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let len = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned(), len)
    }

    use tower::ServiceExt as _;

    #[tokio::test]
    async fn boot_script_for_url_encoded_mac() {
        let f = boot_path();
        for uri in [
            "/boot/52%3A54%3A00%3A12%3A34%3A01.ipxe",
            "/boot/52:54:00:12:34:01.ipxe",
            "/boot/52-54-00-12-34-01.ipxe",
            "/boot/52%3a54%3a00%3a12%3a34%3a01.ipxe",
        ] {
            let (status, body, _) = request(&f, Method::GET, uri).await;
            assert_eq!(status, StatusCode::OK, "{uri}: {body}");
            assert!(
                body.starts_with("#!ipxe\necho drover: deploying 52:54:00:12:34:01 (image demo)\n")
            );
            assert!(body.contains(" BOOTIF=01-52-54-00-12-34-01 "), "{body}");
            assert!(
                body.contains("deploy.server=http://10.77.0.1:8080 deploy.image=demo deploy.on-error=poweroff deploy.token="),
                "{body}"
            );
        }
        let (status, body, _) = request(&f, Method::GET, "/boot/AA-BB-cc-dd-EE-ff.ipxe").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains(" BOOTIF=01-aa-bb-cc-dd-ee-ff "), "{body}");
    }

    #[tokio::test]
    async fn bad_mac_is_400_with_reason() {
        let f = boot_path();
        let (status, body, _) = request(&f, Method::GET, "/boot/not-a-mac.ipxe").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            body.starts_with("bad MAC address \"not-a-mac\" in /boot/not-a-mac.ipxe: "),
            "{body}"
        );
        assert!(body.contains("accepted"), "{body}");
        for uri in [
            "/boot/52:54:00:12:34.ipxe",
            "/boot/52:54:00:12:34:01:02.ipxe",
            "/boot/${net0%2Fmac}.ipxe",
        ] {
            let (status, _, _) = request(&f, Method::GET, uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        }
        let (status, _, _) = request(&f, Method::GET, "/boot/52:54:00:12:34:01.cfg").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn pxelinux_config_per_mac() {
        let f = boot_path();
        let (status, body, _) =
            request(&f, Method::GET, "/pxelinux.cfg/01-52-54-00-12-34-01").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("\nDEFAULT drover\nLABEL drover\n"), "{body}");
        assert!(
            body.contains("\n  KERNEL http://10.77.0.1:8080/files/vmlinuz\n"),
            "{body}"
        );
        assert!(
            body.contains("\n  INITRD http://10.77.0.1:8080/files/initrd.img\n"),
            "{body}"
        );
        let append = body
            .lines()
            .find_map(|l| l.strip_prefix("  APPEND "))
            .unwrap();
        assert!(append.contains("BOOTIF=01-52-54-00-12-34-01 "), "{append}");
        assert!(append.contains("deploy.on-error=poweroff"), "{append}");
        assert!(append.ends_with(" console=ttyS0"), "{append}");
        // The same command line as the iPXE entry (same deployment, same token).
        let (_, script, _) = request(&f, Method::GET, "/boot/52:54:00:12:34:01.ipxe").await;
        assert!(
            script.contains(&format!("initrd=initrd.img {append}\n")),
            "{script}"
        );
    }

    #[tokio::test]
    async fn pxelinux_other_names_are_404_with_reason() {
        let f = boot_path();
        for name in ["default", "0A4D0001", "0A4D", "01-52-54-00-12-34", "01-zz"] {
            let (status, body, _) =
                request(&f, Method::GET, &format!("/pxelinux.cfg/{name}")).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{name}");
            assert!(
                body.starts_with(&format!(
                    "no PXELINUX config {name:?}: drover answers only per-MAC names 01-<mac>"
                )),
                "{body}"
            );
        }
    }

    #[tokio::test]
    async fn files_with_length_and_head() {
        let f = boot_path();
        let (status, body, len) = request(&f, Method::GET, "/files/vmlinuz").await;
        assert_eq!(
            (status, body.as_str(), len.as_deref()),
            (StatusCode::OK, "KERNEL", Some("6"))
        );
        let (status, body, len) = request(&f, Method::HEAD, "/files/initrd.img").await;
        assert_eq!(
            (status, body.as_str(), len.as_deref()),
            (StatusCode::OK, "", Some("7"))
        );
        let (status, _, _) = request(&f, Method::GET, "/files/other").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn healthz_unknown_paths_and_methods() {
        let f = boot_path();
        let (status, body, _) = request(&f, Method::GET, "/healthz").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));
        let (status, body, _) = request(&f, Method::GET, "/nowhere").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.starts_with("no such path /nowhere: "), "{body}");
        let (status, body, _) = request(&f, Method::POST, "/healthz").await;
        assert_eq!(
            (status, body.as_str()),
            (
                StatusCode::METHOD_NOT_ALLOWED,
                "POST is not accepted on /healthz\n"
            )
        );
    }

    #[tokio::test]
    async fn state_directory_is_private_and_holds_the_admin_token() {
        use std::os::unix::fs::PermissionsExt as _;
        let f = boot_path();
        let state = f.dir.path().join("state");
        let mode = std::fs::metadata(&state).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(state.join("drover.sqlite").is_file());
        let token = std::fs::read_to_string(state.join("admin.token")).unwrap();
        assert_eq!(token.trim(), f.state.admin_token);
        assert_eq!(f.state.admin_token.len(), 64);
    }

    #[tokio::test]
    async fn auto_registration_pins_the_newest_version_and_serves_the_deploy_entry() {
        let f = fixture(Setup {
            auto_register: Some("demo"),
            store: true,
        });
        crate::test_fixture::import_image(f.dir.path(), &f.dir.path().join("store"), "demo", "0.9");
        let script = f.ipxe(MAC).await;
        assert!(
            script
                .starts_with("#!ipxe\necho drover: deploying 52:54:00:12:34:01 (image demo@1.0)\n"),
            "{script}"
        );
        assert!(script.contains(" deploy.image=demo@1.0 "), "{script}");
        let token = token_of(&script);
        assert!(kernel_cmdline::is_valid_token(&token) && token.len() == 64);

        let shown = f.node(MAC).await;
        assert_eq!(shown.node.state, NodeState::Booting);
        assert_eq!(shown.node.image.as_deref(), Some("demo@1.0"));
        let events: Vec<(&str, &str)> = shown
            .events
            .iter()
            .map(|e| (e.kind.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(
            events,
            [
                (
                    "registered",
                    "registered automatically (it asked for its boot entry)"
                ),
                (
                    "assigned",
                    "deploy assigned automatically ([deploy] image): demo@1.0, wipe no"
                ),
                ("boot", "deploy entry served (iPXE): demo@1.0"),
            ]
        );
        // Asking again (a reboot mid-deploy) serves the same deployment.
        assert_eq!(token_of(&f.ipxe(MAC).await), token);
    }

    #[tokio::test]
    async fn auto_registration_of_a_missing_image_boots_from_disk_and_records_why() {
        let f = fixture(Setup {
            auto_register: Some("nope"),
            store: true,
        });
        let script = f.ipxe(MAC).await;
        assert_eq!(
            script,
            "#!ipxe\necho drover: 52:54:00:12:34:01: cannot assign the configured image nope: no image named \"nope\" in the store (drover-server image list shows what there is); booting from disk; import the image, then drover-server deploy --image NAME 52:54:00:12:34:01\nexit 1\n"
        );
        let shown = f.node(MAC).await;
        assert_eq!(shown.node.state, NodeState::Failed);
        assert!(
            shown
                .node
                .last_error
                .as_deref()
                .unwrap()
                .starts_with("cannot assign the configured image nope: "),
            "{:?}",
            shown.node.last_error
        );
        assert_eq!(shown.events.last().unwrap().kind, "failure");
        // Next time: the failed node's localboot, which says how to retry.
        let script = f.ipxe(MAC).await;
        assert!(
            script.contains(
                "; drover-server deploy --image NAME 52:54:00:12:34:01 retries\nexit 1\n"
            ),
            "{script}"
        );
    }

    #[tokio::test]
    async fn unknown_mac_without_a_default_image_boots_from_disk() {
        let f = fixture(Setup {
            auto_register: None,
            store: true,
        });
        let script = f.ipxe(MAC).await;
        assert_eq!(
            script,
            "#!ipxe\necho drover: 52:54:00:12:34:01: unknown machine, booting from disk; to deploy it: drover-server node add 52:54:00:12:34:01, then drover-server deploy --image NAME 52:54:00:12:34:01\nexit 1\n"
        );
        let pxe = f.get("/pxelinux.cfg/01-52-54-00-12-34-01").await;
        assert_eq!(pxe.status, StatusCode::OK);
        assert!(
            pxe.body
                .starts_with("# drover: 52:54:00:12:34:01: unknown machine"),
            "{}",
            pxe.body
        );
        assert!(
            pxe.body
                .ends_with("\nDEFAULT local\nLABEL local\n  LOCALBOOT 0\n"),
            "{}",
            pxe.body
        );
        // Not registered by asking.
        let list = f.admin(Method::GET, "/api/v1/nodes", None).await;
        assert_eq!(list.body, r#"{"nodes":[]}"#);
    }

    #[tokio::test]
    async fn metrics_count_nodes_reports_payload_and_requests() {
        let f = fixture(Setup {
            auto_register: Some("demo"),
            store: true,
        });
        let token = token_of(&f.ipxe(MAC).await);
        let got = f
            .report(
                MAC,
                &token,
                r#"{"event":"progress","done":1024,"total":4096}"#,
            )
            .await;
        assert_eq!(got.status, StatusCode::NO_CONTENT, "{}", got.body);
        let req = HttpRequest::builder()
            .uri("/images/demo/1.0/payload")
            .header(header::RANGE, "bytes=0-9")
            .body(Body::empty())
            .unwrap();
        let payload = f.send(req).await;
        assert_eq!(payload.status, StatusCode::PARTIAL_CONTENT);
        let got = f.get("/metrics").await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.content_type, "text/plain; version=0.0.4; charset=utf-8");
        for want in [
            "drover_nodes{state=\"deploying\"} 1\n",
            "drover_nodes{state=\"idle\"} 0\n",
            "drover_node_bytes_done{mac=\"52:54:00:12:34:01\",name=\"\"} 1024\n",
            "drover_node_bytes_total{mac=\"52:54:00:12:34:01\",name=\"\"} 4096\n",
            "drover_reports_total{event=\"progress\"} 1\n",
            "drover_deploys_total{result=\"success\"} 0\n",
            "drover_payload_bytes_served_total 10\n",
            // The boot entry, the report and the payload.
            "drover_http_requests_total 3\n",
        ] {
            assert!(got.body.contains(want), "{want} in\n{}", got.body);
        }
    }
}
