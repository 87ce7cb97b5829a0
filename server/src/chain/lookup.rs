//! What the coordinator asks of the rest of the server: may this node (or
//! admin) do this ([`ChainAuth`]), and which image is a session about
//! ([`ImageLookup`]). Traits, so the fleet state can answer later; fixed
//! implementations for tests and small sites.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use drover_agent::chain::SessionId;
use drover_agent::image::manifest::MAX_MANIFEST_BYTES;
use drover_agent::image::{Manifest, MANIFEST_FILE, PAYLOAD_FILE};
use kernel_cmdline::MacAddr;

use crate::store::Store;

/// Who may use the chain API. `token` is the `Authorization: Bearer`
/// value, `None` without one.
pub trait ChainAuth: Send + Sync {
    /// May `mac` join, heartbeat, report and leave?
    fn node(&self, mac: &MacAddr, token: Option<&str>) -> bool;
    /// May this caller start sessions and read their status?
    fn admin(&self, token: Option<&str>) -> bool;
}

/// A fixed token per MAC and one admin token.
#[derive(Debug, Clone, Default)]
pub struct StaticTokens {
    pub nodes: HashMap<MacAddr, String>,
    pub admin: Option<String>,
}

impl ChainAuth for StaticTokens {
    fn node(&self, mac: &MacAddr, token: Option<&str>) -> bool {
        matches!((self.nodes.get(mac), token), (Some(want), Some(got)) if same(want, got))
    }

    fn admin(&self, token: Option<&str>) -> bool {
        matches!((&self.admin, token), (Some(want), Some(got)) if same(want, got))
    }
}

/// Checks by closures: `node(mac, token)` and `admin(token)` (e.g. over
/// the fleet state).
pub struct FnAuth<N, A> {
    pub node: N,
    pub admin: A,
}

impl<N, A> ChainAuth for FnAuth<N, A>
where
    N: Fn(&MacAddr, Option<&str>) -> bool + Send + Sync,
    A: Fn(Option<&str>) -> bool + Send + Sync,
{
    fn node(&self, mac: &MacAddr, token: Option<&str>) -> bool {
        (self.node)(mac, token)
    }

    fn admin(&self, token: Option<&str>) -> bool {
        (self.admin)(token)
    }
}

/// Compare without an early exit on the first differing byte.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A session's image.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub manifest: Arc<Manifest>,
    pub payload: PathBuf,
}

/// Find the image of a session.
pub trait ImageLookup: Send + Sync {
    /// `Err` says why not, for the node (e.g. no such image).
    fn image(&self, session: &SessionId) -> Result<ImageInfo, String>;
}

/// Images from the server's store (verified when they were imported, so
/// the signature is not checked again), manifests parsed once.
#[derive(Debug)]
pub struct StoreImages {
    store: Store,
    cache: Mutex<HashMap<SessionId, ImageInfo>>,
}

impl StoreImages {
    pub fn new(store: Store) -> Self {
        StoreImages {
            store,
            cache: Mutex::new(HashMap::new()),
        }
    }
}

impl ImageLookup for StoreImages {
    fn image(&self, session: &SessionId) -> Result<ImageInfo, String> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(info) = cache.get(session) {
            return Ok(info.clone());
        }
        // SessionId's parts are safe path components.
        let (name, version) = session.parts();
        let dir = self.store.version_path(name, version);
        let path = dir.join(MANIFEST_FILE);
        let mut bytes = Vec::new();
        std::fs::File::open(&path)
            .and_then(|f| {
                f.take(MAX_MANIFEST_BYTES as u64 + 1)
                    .read_to_end(&mut bytes)
            })
            .map_err(|e| format!("no image {session} in the store ({}: {e})", path.display()))?;
        let manifest = Manifest::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        let info = ImageInfo {
            manifest: Arc::new(manifest),
            payload: dir.join(PAYLOAD_FILE),
        };
        cache.insert(session.clone(), info.clone());
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_tokens() {
        let m = MacAddr([1, 2, 3, 4, 5, 6]);
        let auth = StaticTokens {
            nodes: HashMap::from([(m, "s3cret".to_owned())]),
            admin: Some("boss".into()),
        };
        let other = MacAddr([1, 2, 3, 4, 5, 7]);
        let cases = [
            (m, Some("s3cret"), true),
            (m, Some("s3cre"), false),
            (m, Some("s3creT"), false),
            (m, None, false),
            (other, Some("s3cret"), false),
        ];
        for (mac, token, ok) in cases {
            assert_eq!(auth.node(&mac, token), ok, "{mac} {token:?}");
        }
        assert!(auth.admin(Some("boss")));
        assert!(!auth.admin(Some("s3cret")) && !auth.admin(None));
        assert!(!StaticTokens::default().admin(Some("")));
        let by_fn = FnAuth {
            node: |m: &MacAddr, t: Option<&str>| m.0[5] == 6 && t == Some("x"),
            admin: |_: Option<&str>| false,
        };
        assert!(by_fn.node(&m, Some("x")) && !by_fn.node(&other, Some("x")));
        assert!(!by_fn.admin(Some("x")));
    }
}
