//! A whole server in a temporary directory for the router tests: kernel,
//! initrd, optionally a store with a real signed image `demo@1.0`, and the
//! state directory next to the config, as `serve` would have it.

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use drover_agent::image::BuildOptions;
use tower::ServiceExt as _;

use crate::config::Config;
use crate::http::{router, AppState};
use crate::import::{import, ImportRequest};
use crate::partition_spec::parse_layout;

pub const MAC: &str = "52:54:00:12:34:01";

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub state: Arc<AppState>,
    pub app: Router,
    /// demo@1.0's payload sha256, when there is a store.
    pub sha256: String,
}

/// What the server is set up with.
pub struct Setup<'a> {
    /// `[deploy] image`.
    pub auto_register: Option<&'a str>,
    /// A store holding demo@1.0.
    pub store: bool,
}

/// Import `name@version` (a small raw partition) into `store`; its payload sha256.
pub fn import_image(dir: &Path, store: &Path, name: &str, version: &str) -> String {
    let keys = dir.join("keys");
    if !keys.join(crate::key_generate::SECRET_FILE).exists() {
        crate::key_generate::generate(&keys, false).unwrap();
    }
    let content = dir.join("content.img");
    std::fs::write(&content, vec![7u8; 64 << 10]).unwrap();
    let req = ImportRequest {
        store: store.to_owned(),
        name: name.into(),
        version: version.into(),
        key: keys.join(crate::key_generate::SECRET_FILE),
        build: BuildOptions::default(),
        layout: parse_layout(&[format!("size=1M,content=raw:{}", content.display())]).unwrap(),
        bios_boot_code: None,
        piece_length: None,
    };
    let imported = import(&req, &mut |_| {}).unwrap();
    imported.manifest.payload.sha256.to_string()
}

pub fn fixture(setup: Setup<'_>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vmlinuz"), b"KERNEL").unwrap();
    std::fs::write(dir.path().join("initrd.img"), b"INITRD!").unwrap();
    let mut sha256 = String::new();
    let mut text = String::from(
        "listen = \"127.0.0.1:0\"\npublic_url = \"http://10.77.0.1:8080\"\nkernel = \"vmlinuz\"\ninitrd = \"initrd.img\"\nkernel_args = \"console=ttyS0\"\n",
    );
    if setup.store {
        sha256 = import_image(dir.path(), &dir.path().join("store"), "demo", "1.0");
        text.push_str("store = \"store\"\n");
    }
    text.push_str("[deploy]\non_error = \"poweroff\"\n");
    if let Some(image) = setup.auto_register {
        text.push_str(&format!("image = \"{image}\"\n"));
    }
    let path = dir.path().join("server.toml");
    std::fs::write(&path, text).unwrap();
    let state = Arc::new(AppState::open(Config::load(&path).unwrap()).unwrap());
    Fixture {
        app: router(state.clone()),
        state,
        dir,
        sha256,
    }
}

/// An answer.
pub struct Got {
    pub status: StatusCode,
    pub content_type: String,
    pub body: String,
}

impl Fixture {
    /// A request with an optional bearer token and JSON body.
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        json: Option<&str>,
    ) -> Got {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if json.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let body = json.map_or_else(Body::empty, |j| Body::from(j.to_owned()));
        self.send(req.body(body).unwrap()).await
    }

    pub async fn send(&self, req: Request<Body>) -> Got {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = axum::body::to_bytes(resp.into_body(), 16 << 20)
            .await
            .unwrap();
        Got {
            status,
            content_type,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    pub async fn get(&self, uri: &str) -> Got {
        self.call(Method::GET, uri, None, None).await
    }

    /// An admin request.
    pub async fn admin(&self, method: Method, uri: &str, json: Option<&str>) -> Got {
        let token = self.state.admin_token.clone();
        self.call(method, uri, Some(&token), json).await
    }

    /// A report from `mac` with `token`.
    pub async fn report(&self, mac: &str, token: &str, json: &str) -> Got {
        self.call(
            Method::POST,
            &format!("/api/v1/nodes/{mac}/report"),
            Some(token),
            Some(json),
        )
        .await
    }

    /// The node as the admin API shows it.
    pub async fn node(&self, node: &str) -> crate::api::NodeDetail {
        let got = self
            .admin(Method::GET, &crate::api::node_path(node), None)
            .await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.body);
        serde_json::from_str(&got.body).unwrap()
    }

    /// `mac`'s iPXE entry, which must be served.
    pub async fn ipxe(&self, mac: &str) -> String {
        let got = self.get(&format!("/boot/{mac}.ipxe")).await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.body);
        got.body
    }
}

/// The `deploy.token=` of a boot entry.
pub fn token_of(entry: &str) -> String {
    entry
        .split_whitespace()
        .find_map(|w| w.strip_prefix("deploy.token="))
        .unwrap_or_else(|| panic!("no token in {entry}"))
        .to_owned()
}
