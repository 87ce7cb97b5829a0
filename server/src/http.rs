//! HTTP routes.
//!
//! - `GET /boot/{mac}.ipxe`: the node's iPXE script ([`crate::boot`]).
//! - `GET /pxelinux.cfg/01-{mac}`: the same entry as a PXELINUX config, for
//!   sites booting `lpxelinux.0`; PXELINUX's other names are 404.
//! - `GET /files/vmlinuz`, `GET /files/initrd.img`: the deploy kernel and
//!   initrd (HEAD, Range and Content-Length via tower-http's `ServeFile`).
//! - `GET /images/{name}/{version}/{manifest.json,manifest.sig,payload}`
//!   (ranged) and `GET /images/{name}/latest`: the image store
//!   ([`crate::image_routes`]).
//! - `GET /healthz`: `ok`.
//!
//! Every request is logged on stderr (peer, method, path, status): when a
//! VM test fails, this log and the serial console are what a human reads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower_http::services::ServeFile;

use kernel_cmdline::MacAddr;

use crate::boot::{self, DeployEntry};
use crate::config::Config;

/// Shared, read-only server state.
#[derive(Debug)]
pub struct AppState {
    pub config: Config,
}

/// The server's routes.
pub fn router(state: Arc<AppState>) -> Router {
    let kernel = ServeFile::new(&state.config.kernel);
    let initrd = ServeFile::new(&state.config.initrd);
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        // One path segment: axum's matcher has no `{mac}.ipxe` suffix
        // patterns, so the handler strips the extension itself.
        .route("/boot/{file}", get(boot_script))
        .route("/pxelinux.cfg/{name}", get(pxelinux_config))
        .route_service("/files/vmlinuz", kernel)
        .route_service(&format!("/files/{}", boot::INITRD_NAME), initrd)
        .merge(crate::image_routes::routes())
        .with_state(state)
        .layer(middleware::from_fn(log_request))
}

/// `GET /boot/{mac}.ipxe`. The `Path` extractor has already URL-decoded the
/// segment: iPXE sends `${net0/mac}` as `52%3A54%3A00%3A12%3A34%3A01`.
async fn boot_script(State(state): State<Arc<AppState>>, Path(file): Path<String>) -> Response {
    let Some(mac) = file.strip_suffix(".ipxe") else {
        return (StatusCode::NOT_FOUND, "boot entries are /boot/MAC.ipxe\n").into_response();
    };
    // `aa:bb:…` or `aa-bb-…`, either case: the crate's own MAC parser.
    let mac = match mac.parse::<MacAddr>() {
        Ok(mac) => mac,
        Err(e) => {
            let msg = format!("bad MAC address {mac:?} in /boot/{file}: {e}\n");
            return (StatusCode::BAD_REQUEST, msg).into_response();
        }
    };
    let entry = DeployEntry::for_mac(&state.config, mac);
    log::info!("boot entry for {mac}: image {}", entry.options.image);
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        entry.ipxe_script(),
    )
        .into_response()
}

/// `GET /pxelinux.cfg/{name}`. PXELINUX tries its UUID, `01-<mac>`, its IP
/// address in hex (shortened a digit at a time) and `default`, in that
/// order, taking the first that exists: every name but `01-<mac>` is 404 so
/// it gets to the per-MAC one, and a node never boots a catch-all entry.
async fn pxelinux_config(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    let Some(mac) = boot::mac_from_pxelinux_name(&name) else {
        let msg = format!(
            "no PXELINUX config {name:?}: drover answers only per-MAC names {}\n",
            boot::PXELINUX_NAME_FORM
        );
        return (StatusCode::NOT_FOUND, msg).into_response();
    };
    let entry = DeployEntry::for_mac(&state.config, mac);
    log::info!("PXELINUX entry for {mac}: image {}", entry.options.image);
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        entry.pxelinux_config(),
    )
        .into_response()
}

/// Log `peer METHOD /path -> status (ms)` for every request. The time is to
/// the response head; file bodies stream after it.
async fn log_request(req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.to_string())
        .unwrap_or_else(|| "-".to_owned());
    let method = req.method().clone();
    let uri = req.uri().clone();
    let start = Instant::now();
    let resp = next.run(req).await;
    log::info!(
        "{peer} {method} {uri} -> {} ({} ms)",
        resp.status().as_u16(),
        start.elapsed().as_millis()
    );
    resp
}

/// Bind `config.listen` and serve until the process is killed.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    log::info!(
        "listening on {} as {}; kernel {}, initrd {}, image store {}",
        listener.local_addr()?,
        config.public_url,
        config.kernel.display(),
        config.initrd.display(),
        config
            .store
            .as_deref()
            .map_or("none".into(), |s| s.display().to_string())
    );
    let app = router(Arc::new(AppState { config }));
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
    use tower::ServiceExt as _;

    use super::*;

    struct Fixture {
        _dir: tempfile::TempDir,
        app: Router,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vmlinuz"), b"KERNEL").unwrap();
        std::fs::write(dir.path().join("initrd.img"), b"INITRD!").unwrap();
        let path = dir.path().join("server.toml");
        std::fs::write(
            &path,
            r#"
listen = "127.0.0.1:0"
public_url = "http://10.77.0.1:8080"
kernel = "vmlinuz"
initrd = "initrd.img"
kernel_args = "console=ttyS0"
[deploy]
image = "demo"
on_error = "poweroff"
"#,
        )
        .unwrap();
        let config = Config::load(&path).unwrap();
        Fixture {
            _dir: dir,
            app: router(Arc::new(AppState { config })),
        }
    }

    async fn request(
        app: &Router,
        method: Method,
        uri: &str,
    ) -> (StatusCode, String, Option<String>) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
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

    #[tokio::test]
    async fn boot_script_for_url_encoded_mac() {
        let f = fixture();
        for uri in [
            "/boot/52%3A54%3A00%3A12%3A34%3A01.ipxe",
            "/boot/52:54:00:12:34:01.ipxe",
            "/boot/52-54-00-12-34-01.ipxe",
            "/boot/52%3a54%3a00%3a12%3a34%3a01.ipxe",
        ] {
            let (status, body, _) = request(&f.app, Method::GET, uri).await;
            assert_eq!(status, StatusCode::OK, "{uri}: {body}");
            assert!(
                body.starts_with("#!ipxe\necho drover: deploying 52:54:00:12:34:01 (image demo)\n")
            );
            assert!(body.contains(" BOOTIF=01-52-54-00-12-34-01 "), "{body}");
            assert!(body.contains("deploy.on-error=poweroff"), "{body}");
        }
        let (status, body, _) = request(&f.app, Method::GET, "/boot/AA-BB-cc-dd-EE-ff.ipxe").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains(" BOOTIF=01-aa-bb-cc-dd-ee-ff "), "{body}");
    }

    #[tokio::test]
    async fn bad_mac_is_400_with_reason() {
        let f = fixture();
        let (status, body, _) = request(&f.app, Method::GET, "/boot/not-a-mac.ipxe").await;
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
            let (status, _, _) = request(&f.app, Method::GET, uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        }
        let (status, _, _) = request(&f.app, Method::GET, "/boot/52:54:00:12:34:01.cfg").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn pxelinux_config_per_mac() {
        let f = fixture();
        let (status, body, _) =
            request(&f.app, Method::GET, "/pxelinux.cfg/01-52-54-00-12-34-01").await;
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
        // The same command line as the iPXE entry.
        let (_, script, _) = request(&f.app, Method::GET, "/boot/52:54:00:12:34:01.ipxe").await;
        assert!(
            script.contains(&format!("initrd=initrd.img {append}\n")),
            "{script}"
        );
    }

    #[tokio::test]
    async fn pxelinux_other_names_are_404_with_reason() {
        let f = fixture();
        for name in ["default", "0A4D0001", "0A4D", "01-52-54-00-12-34", "01-zz"] {
            let (status, body, _) =
                request(&f.app, Method::GET, &format!("/pxelinux.cfg/{name}")).await;
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
        let f = fixture();
        let (status, body, len) = request(&f.app, Method::GET, "/files/vmlinuz").await;
        assert_eq!(
            (status, body.as_str(), len.as_deref()),
            (StatusCode::OK, "KERNEL", Some("6"))
        );
        let (status, body, len) = request(&f.app, Method::HEAD, "/files/initrd.img").await;
        assert_eq!(
            (status, body.as_str(), len.as_deref()),
            (StatusCode::OK, "", Some("7"))
        );
        let (status, _, _) = request(&f.app, Method::GET, "/files/other").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn healthz() {
        let f = fixture();
        let (status, body, _) = request(&f.app, Method::GET, "/healthz").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));
    }
}
