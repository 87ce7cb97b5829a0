//! Image routes, served from the store (`store = "DIR"` in the config):
//!
//! - `GET|HEAD /images/{name}/{version}/manifest.json`, `…/manifest.sig`,
//!   `…/payload`: the files, streamed from disk, with `Content-Length`
//!   always and single `Range` requests answered 206 (see
//!   [`crate::byte_range`] for exactly which; a node fetches the payload
//!   chunk by chunk and resumes after a drop with ranged GETs);
//! - `GET|HEAD /images/{name}/{version}/payload.torrent`: the payload's
//!   BitTorrent metainfo with `announce` = this server's tracker
//!   (`{public_url}/announce`), filled in per request
//!   ([`crate::torrent_file`]);
//! - `GET|HEAD /images/{name}/latest`: the newest version's name as a line
//!   of text ([`crate::version_order`]).
//!
//! A name or version that is not `[A-Za-z0-9._-]{1,128}` (or is `.`/`..`)
//! is a 400; an image, version or file that is not there, or no store
//! configured, a 404 with a body that says which. Versions appear whole
//! (imports are renamed into place) and never change, so a node may fetch
//! one file's ranges over many requests without a validator.
//!
//! tower-http's `ServeFile` (used for the kernel and initrd) was not used
//! here: it answers 416 to a suffix range longer than the file and to a
//! malformed header it should ignore, and an empty body for every 404.

use std::io::SeekFrom;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use tokio_util::io::{InspectReader, ReaderStream};

use drover_agent::image::{MANIFEST_FILE, PAYLOAD_FILE, SIGNATURE_FILE, TORRENT_FILE};
use kernel_cmdline::ImageRef;

use crate::byte_range::{resolve_range, RangeOutcome};
use crate::http::{text, AppState};
use crate::store::{check_component, LookupError, Store};

/// The files of an image version, and their content types.
const FILES: &[(&str, &str)] = &[
    (MANIFEST_FILE, "application/json"),
    (SIGNATURE_FILE, "application/octet-stream"),
    (PAYLOAD_FILE, "application/octet-stream"),
];

/// Read size when streaming a file: large enough that a 4 MiB chunk is a
/// handful of reads, small enough not to matter per connection.
const STREAM_BUFFER: usize = 256 << 10;

/// The image routes, to merge into the server's router.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/images/{name}/latest", get(latest))
        .route("/images/{name}/{version}/{file}", get(image_file))
}

fn no_store() -> Response {
    text(
        StatusCode::NOT_FOUND,
        "this server has no image store (set store = \"DIR\" in its config)",
    )
}

fn lookup_error(e: LookupError) -> Response {
    match e {
        LookupError::Io { .. } => {
            log::error!("image store: {:#}", anyhow::Error::new(e));
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read the image store",
            )
        }
        // The store's path is the operator's business, not the client's.
        LookupError::NoImage { name, .. } => {
            text(StatusCode::NOT_FOUND, format!("no image named {name:?}"))
        }
        other => text(StatusCode::NOT_FOUND, other.to_string()),
    }
}

/// `GET /images/{name}/latest`.
async fn latest(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    if let Err(msg) = check_component("image name", &name) {
        return text(StatusCode::BAD_REQUEST, msg);
    }
    let Some(root) = state.config.store.clone() else {
        return no_store();
    };
    let found = tokio::task::spawn_blocking(move || Store::new(root).latest(&name)).await;
    match found {
        Ok(Ok(version)) => (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                // It changes with every import.
                (header::CACHE_CONTROL, "no-cache"),
            ],
            format!("{version}\n"),
        )
            .into_response(),
        Ok(Err(e)) => lookup_error(e),
        Err(e) => {
            log::error!("image store lookup panicked: {e}");
            text(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

/// `GET /images/{name}/{version}/{file}`.
async fn image_file(
    State(state): State<Arc<AppState>>,
    method: Method,
    Path((name, version, file)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    for (what, value) in [("image name", &name), ("version", &version)] {
        if let Err(msg) = check_component(what, value) {
            return text(StatusCode::BAD_REQUEST, msg);
        }
    }
    if file == TORRENT_FILE {
        return torrent(&state, &method, name, version).await;
    }
    let Some(&(_, content_type)) = FILES.iter().find(|(f, _)| *f == file) else {
        let mut names: Vec<&str> = FILES.iter().map(|(f, _)| *f).collect();
        names.push(TORRENT_FILE);
        let msg = format!(
            "no file {file:?} in an image; there are: {}",
            names.join(", ")
        );
        return text(StatusCode::NOT_FOUND, msg);
    };
    let Some(root) = state.config.store.clone() else {
        return no_store();
    };
    let store = Store::new(root);
    // The store's own entries (`.staging`, …) are never served.
    let hidden = name.starts_with('.') || version.starts_with('.');
    let path = store.version_path(&name, &version).join(&file);
    let opened = if hidden {
        Err(std::io::ErrorKind::NotFound.into())
    } else {
        tokio::fs::File::open(&path).await
    };
    let mut f = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return missing(store, name, version, file).await;
        }
        Err(e) => {
            log::error!("opening {}: {e}", path.display());
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read {file}"),
            );
        }
    };
    let size = match f.metadata().await {
        Ok(m) => m.len(),
        Err(e) => {
            log::error!("reading {}: {e}", path.display());
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read {file}"),
            );
        }
    };

    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let outcome = resolve_range(range_header, size);
    let (status, start) = match outcome {
        RangeOutcome::Full => (StatusCode::OK, 0),
        RangeOutcome::Partial { start, .. } => (StatusCode::PARTIAL_CONTENT, start),
        RangeOutcome::Unsatisfiable => {
            let msg = format!(
                "range {:?} is not satisfiable: {file} is {size} bytes",
                range_header.unwrap_or_default()
            );
            let mut resp = text(StatusCode::RANGE_NOT_SATISFIABLE, msg);
            resp.headers_mut().insert(
                header::CONTENT_RANGE,
                header_value(format!("bytes */{size}")),
            );
            return resp;
        }
    };
    let len = outcome.body_len(size);

    let mut resp = if method == Method::HEAD {
        Response::new(Body::empty())
    } else {
        if start > 0 {
            if let Err(e) = f.seek(SeekFrom::Start(start)).await {
                log::error!("seeking {}: {e}", path.display());
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot read {file}"),
                );
            }
        }
        // Counted as read into the response: what was sent, near enough
        // (a client that hangs up leaves at most a buffer uncounted).
        let counted = (file == PAYLOAD_FILE).then(|| state.clone());
        let reader = InspectReader::new(f.take(len), move |bytes: &[u8]| {
            if let Some(state) = &counted {
                state.metrics.payload_bytes(bytes.len() as u64);
            }
        });
        let stream = ReaderStream::with_capacity(reader, STREAM_BUFFER);
        Response::new(Body::from_stream(stream))
    };
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let RangeOutcome::Partial { start, end } = outcome {
        h.insert(
            header::CONTENT_RANGE,
            header_value(format!("bytes {start}-{end}/{size}")),
        );
    }
    resp
}

/// `GET|HEAD /images/{name}/{version}/payload.torrent`: small (40 bytes a
/// piece), so read whole, given this server's announce URL, and sent
/// without ranges.
async fn torrent(
    state: &Arc<AppState>,
    method: &Method,
    name: String,
    version: String,
) -> Response {
    let Some(root) = state.config.store.clone() else {
        return no_store();
    };
    let store = Store::new(root);
    let hidden = name.starts_with('.') || version.starts_with('.');
    let path = store.version_path(&name, &version).join(TORRENT_FILE);
    if hidden || !tokio::fs::try_exists(&path).await.unwrap_or(false) {
        return missing(store, name, version, TORRENT_FILE.into()).await;
    }
    let public_url = state.config.public_url.clone();
    let made = tokio::task::spawn_blocking(move || {
        let (stored, _) = crate::torrent_file::read(&path)?;
        crate::torrent_file::served(&stored, &public_url)
    })
    .await;
    let bytes = match made {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            log::error!("serving {name}@{version}'s {TORRENT_FILE}: {e:#}");
            let msg = format!("cannot read {TORRENT_FILE} (the server's log says why)");
            return text(StatusCode::INTERNAL_SERVER_ERROR, msg);
        }
        Err(e) => {
            log::error!("serving {TORRENT_FILE} panicked: {e}");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
    };
    let len = bytes.len();
    let body = if *method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(bytes)
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-bittorrent"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

fn header_value(s: String) -> HeaderValue {
    HeaderValue::try_from(s).expect("digits, spaces, '-', '/' and '*' are valid in a header")
}

/// A 404 that says what is missing: the image, the version, or the file.
async fn missing(store: Store, name: String, version: String, file: String) -> Response {
    let image = ImageRef {
        name: name.clone(),
        version: Some(version.clone()),
    };
    let found = tokio::task::spawn_blocking(move || store.resolve(&image)).await;
    match found {
        Ok(Ok(_)) => text(
            StatusCode::NOT_FOUND,
            format!("image {name}@{version} has no {file}"),
        ),
        Ok(Err(e)) => lookup_error(e),
        Err(e) => {
            log::error!("image store lookup panicked: {e}");
            text(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Request;
    use tower::ServiceExt as _;

    use super::*;
    use crate::config::Config;

    struct Fixture {
        _dir: tempfile::TempDir,
        payload: Vec<u8>,
        app: Router,
    }

    /// A server whose store holds demo@1.9 and demo@1.10 (files need not
    /// be valid images to be served), or no store at all.
    fn fixture(with_store: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let payload: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        for v in ["1.9", "1.10"] {
            let d = dir.path().join("store/demo").join(v);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("manifest.json"), format!("{{\"v\":\"{v}\"}}\n")).unwrap();
            std::fs::write(d.join("payload"), &payload).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("store/.staging/x")).unwrap();
        std::fs::write(dir.path().join("store/.staging/x/payload"), b"partial").unwrap();
        std::fs::write(dir.path().join("k"), b"K").unwrap();
        let store = if with_store {
            "store = \"store\"\n"
        } else {
            ""
        };
        let text = format!(
            "listen = \"127.0.0.1:0\"\npublic_url = \"http://10.0.0.1\"\nkernel = \"k\"\ninitrd = \"k\"\n{store}[deploy]\nimage = \"demo\"\n"
        );
        let path = dir.path().join("server.toml");
        std::fs::write(&path, text).unwrap();
        let config = Config::load(&path).unwrap();
        let app = crate::http::router(Arc::new(AppState::open(config).unwrap()));
        Fixture {
            _dir: dir,
            payload,
            app,
        }
    }

    struct Got {
        status: StatusCode,
        headers: HeaderMap,
        body: Vec<u8>,
    }

    impl Got {
        fn header(&self, name: header::HeaderName) -> Option<&str> {
            self.headers.get(name).map(|v| v.to_str().unwrap())
        }
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }
    }

    async fn request(app: &Router, method: Method, uri: &str, range: Option<&str>) -> Got {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(r) = range {
            req = req.header(header::RANGE, r);
        }
        let resp = app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec();
        Got {
            status,
            headers,
            body,
        }
    }

    async fn get(app: &Router, uri: &str, range: Option<&str>) -> Got {
        request(app, Method::GET, uri, range).await
    }

    #[tokio::test]
    async fn whole_files_and_head() {
        let f = fixture(true);
        let got = get(&f.app, "/images/demo/1.10/payload", None).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.body, f.payload);
        assert_eq!(got.header(header::CONTENT_LENGTH), Some("1000"));
        assert_eq!(got.header(header::ACCEPT_RANGES), Some("bytes"));
        assert_eq!(
            got.header(header::CONTENT_TYPE),
            Some("application/octet-stream")
        );

        let got = get(&f.app, "/images/demo/1.9/manifest.json", None).await;
        assert_eq!(
            (got.status, got.text().as_str()),
            (StatusCode::OK, "{\"v\":\"1.9\"}\n")
        );
        assert_eq!(got.header(header::CONTENT_TYPE), Some("application/json"));

        let got = request(&f.app, Method::HEAD, "/images/demo/1.10/payload", None).await;
        assert_eq!(got.status, StatusCode::OK);
        assert!(got.body.is_empty());
        assert_eq!(got.header(header::CONTENT_LENGTH), Some("1000"));
        let got = request(
            &f.app,
            Method::HEAD,
            "/images/demo/1.10/payload",
            Some("bytes=10-19"),
        )
        .await;
        assert_eq!(got.status, StatusCode::PARTIAL_CONTENT);
        assert!(got.body.is_empty());
        assert_eq!(got.header(header::CONTENT_LENGTH), Some("10"));
        assert_eq!(got.header(header::CONTENT_RANGE), Some("bytes 10-19/1000"));
    }

    #[tokio::test]
    async fn ranges() {
        let f = fixture(true);
        let uri = "/images/demo/1.10/payload";
        for (range, start, end) in [
            ("bytes=0-0", 0, 0),
            ("bytes=100-299", 100, 299),
            ("bytes=900-", 900, 999),
            ("bytes=-10", 990, 999),
            ("bytes=990-5000", 990, 999),
            ("bytes=-5000", 0, 999),
        ] {
            let got = get(&f.app, uri, Some(range)).await;
            assert_eq!(got.status, StatusCode::PARTIAL_CONTENT, "{range}");
            assert_eq!(got.body, f.payload[start..=end], "{range}");
            let len = (end - start + 1).to_string();
            assert_eq!(
                got.header(header::CONTENT_LENGTH),
                Some(len.as_str()),
                "{range}"
            );
            let cr = format!("bytes {start}-{end}/1000");
            assert_eq!(
                got.header(header::CONTENT_RANGE),
                Some(cr.as_str()),
                "{range}"
            );
        }
        for range in ["bytes=1000-", "bytes=5-2", "bytes=-0", "bytes=x-"] {
            let got = get(&f.app, uri, Some(range)).await;
            assert_eq!(got.status, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
            assert_eq!(got.header(header::CONTENT_RANGE), Some("bytes */1000"));
            assert_eq!(
                got.text(),
                format!("range {range:?} is not satisfiable: payload is 1000 bytes\n")
            );
        }
        // Ignored: several ranges, another unit.
        for range in ["bytes=0-1,5-6", "items=0-1"] {
            let got = get(&f.app, uri, Some(range)).await;
            assert_eq!(got.status, StatusCode::OK, "{range}");
            assert_eq!(got.body, f.payload);
        }
    }

    #[tokio::test]
    async fn latest() {
        let f = fixture(true);
        let got = get(&f.app, "/images/demo/latest", None).await;
        assert_eq!(
            (got.status, got.text().as_str()),
            (StatusCode::OK, "1.10\n")
        );
        let got = get(&f.app, "/images/nope/latest", None).await;
        assert_eq!(
            (got.status, got.text().as_str()),
            (StatusCode::NOT_FOUND, "no image named \"nope\"\n")
        );
    }

    #[tokio::test]
    async fn bad_names_are_400() {
        let f = fixture(true);
        for uri in [
            "/images/../1/payload",
            "/images/demo/../payload",
            "/images/demo/%2E%2E/payload",
            "/images/a%2Fb/1/payload",
            "/images/a%20b/latest",
            "/images/./latest",
        ] {
            let got = get(&f.app, uri, None).await;
            assert_eq!(got.status, StatusCode::BAD_REQUEST, "{uri}: {}", got.text());
            assert!(
                got.text().contains("is not 1 to 128 of A-Z a-z 0-9 . _ -"),
                "{uri}: {}",
                got.text()
            );
        }
    }

    #[tokio::test]
    async fn missing_things_are_404_saying_what() {
        let f = fixture(true);
        let cases = [
            ("/images/nope/1/payload", "no image named \"nope\"\n"),
            (
                "/images/demo/2/payload",
                "image \"demo\" has no version \"2\"; it has: 1.9, 1.10\n",
            ),
            (
                "/images/demo/1.9/manifest.sig",
                "image demo@1.9 has no manifest.sig\n",
            ),
            (
                "/images/demo/1.9/other",
                "no file \"other\" in an image; there are: manifest.json, manifest.sig, payload, payload.torrent\n",
            ),
            (
                "/images/.staging/x/payload",
                "no image named \".staging\"\n",
            ),
        ];
        for (uri, want) in cases {
            let got = get(&f.app, uri, None).await;
            assert_eq!(
                (got.status, got.text().as_str()),
                (StatusCode::NOT_FOUND, want),
                "{uri}"
            );
        }

        let f = fixture(false);
        for uri in ["/images/demo/1.9/payload", "/images/demo/latest"] {
            let got = get(&f.app, uri, None).await;
            assert_eq!(got.status, StatusCode::NOT_FOUND);
            assert!(
                got.text().starts_with("this server has no image store"),
                "{}",
                got.text()
            );
        }
    }
}
