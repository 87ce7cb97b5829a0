//! Which torrents the tracker knows: the `payload.torrent` of each image
//! in the store, by info-hash and by `NAME@VERSION`.
//!
//! Published versions never change, so what was read is cached for good.
//! A miss by info-hash (a new import, or a stranger's torrent) rescans the
//! store, at most once per [`RESCAN_EVERY`], so a flood of made-up
//! info-hashes costs at most that many directory listings; a miss by name
//! reads that one file. All of it is blocking I/O: call from a blocking
//! thread.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use drover_agent::image::{is_component, TORRENT_FILE};
use drover_agent::torrent::metainfo::InfoHash;

use crate::store::Store;

/// The shortest time between two rescans of the store.
pub const RESCAN_EVERY: Duration = Duration::from_secs(5);

/// The store's torrents.
#[derive(Debug)]
pub struct TorrentIndex {
    store: Store,
    known: Mutex<Known>,
}

#[derive(Debug, Default)]
struct Known {
    by_image: HashMap<String, InfoHash>,
    by_hash: HashMap<InfoHash, String>,
    scanned: Option<Instant>,
}

impl Known {
    fn add(&mut self, image: String, hash: InfoHash) {
        self.by_hash.insert(hash, image.clone());
        self.by_image.insert(image, hash);
    }
}

impl TorrentIndex {
    pub fn new(store: Store) -> TorrentIndex {
        TorrentIndex {
            store,
            known: Mutex::new(Known::default()),
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The info-hash of `NAME@VERSION`'s torrent; `None` if the image or
    /// its torrent is not there (or is unreadable: logged).
    pub fn hash_of(&self, image: &str) -> Option<InfoHash> {
        if let Some(h) = self.known().by_image.get(image) {
            return Some(*h);
        }
        let (name, version) = image.split_once('@')?;
        let public = |c: &str| is_component(c) && !c.starts_with('.');
        if !public(name) || !public(version) {
            return None;
        }
        let hash = self.read(name, version)?;
        self.known().add(image.to_owned(), hash);
        Some(hash)
    }

    /// The image (`NAME@VERSION`) whose torrent has `hash`.
    pub fn image_of(&self, hash: &InfoHash) -> Option<String> {
        if let Some(image) = self.known().by_hash.get(hash) {
            return Some(image.clone());
        }
        self.rescan();
        self.known().by_hash.get(hash).cloned()
    }

    /// Read every version not known yet, unless the last scan was recent.
    fn rescan(&self) {
        let now = Instant::now();
        {
            let mut k = self.known();
            if k.scanned
                .is_some_and(|t| now.duration_since(t) < RESCAN_EVERY)
            {
                return;
            }
            k.scanned = Some(now);
        }
        let names = match self.store.names() {
            Ok(n) => n,
            Err(e) => {
                log::warn!("tracker: listing the image store: {e}");
                return;
            }
        };
        for name in names {
            let Ok(versions) = self.store.versions(&name) else {
                continue;
            };
            for version in versions {
                let image = format!("{name}@{version}");
                if self.known().by_image.contains_key(&image) {
                    continue;
                }
                if let Some(hash) = self.read(&name, &version) {
                    self.known().add(image, hash);
                }
            }
        }
    }

    fn read(&self, name: &str, version: &str) -> Option<InfoHash> {
        let path = self.store.version_path(name, version).join(TORRENT_FILE);
        if !path.exists() {
            return None;
        }
        match crate::torrent_file::read(&path) {
            Ok((_, m)) => Some(m.info_hash),
            Err(e) => {
                log::warn!("tracker: {e:#}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_agent::image::MANIFEST_FILE;
    use drover_agent::torrent::metainfo::{Info, Metainfo};

    fn put(root: &std::path::Path, name: &str, version: &str, content: &[u8]) -> InfoHash {
        let dir = root.join(name).join(version);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(MANIFEST_FILE), b"{}").unwrap();
        let info = Info::build("x", content, content.len() as u64, None).unwrap();
        let m = Metainfo::new(info, None);
        std::fs::write(dir.join(TORRENT_FILE), m.to_bytes()).unwrap();
        m.info_hash
    }

    #[test]
    fn finds_torrents_by_name_and_by_hash() {
        let dir = tempfile::tempdir().unwrap();
        let h1 = put(dir.path(), "demo", "1.0", b"one");
        let index = TorrentIndex::new(Store::new(dir.path()));
        assert_eq!(index.hash_of("demo@1.0"), Some(h1));
        assert_eq!(index.hash_of("demo@2.0"), None);
        assert_eq!(index.hash_of("nonsense"), None);
        assert_eq!(index.hash_of("..@1.0"), None);
        assert_eq!(index.image_of(&h1).as_deref(), Some("demo@1.0"));
        // A stranger's torrent: not there, after a scan.
        assert_eq!(index.image_of(&InfoHash([0; 20])), None);

        // A new import is found by name at once, by hash after the next
        // rescan (the miss above scanned the store just now).
        let h2 = put(dir.path(), "demo", "2.0", b"two");
        let h3 = put(dir.path(), "other", "1", b"three");
        assert_eq!(index.image_of(&h3), None, "scanned less than 5 s ago");
        assert_eq!(index.hash_of("demo@2.0"), Some(h2));
        assert_eq!(index.image_of(&h2).as_deref(), Some("demo@2.0"));
        index.known().scanned = None;
        assert_eq!(index.image_of(&h3).as_deref(), Some("other@1"));

        // A version without a torrent, or a broken one, is not a torrent.
        std::fs::create_dir_all(dir.path().join("old/1")).unwrap();
        std::fs::create_dir_all(dir.path().join("bad/1")).unwrap();
        std::fs::write(dir.path().join("bad/1").join(TORRENT_FILE), b"junk").unwrap();
        assert_eq!(index.hash_of("old@1"), None);
        assert_eq!(index.hash_of("bad@1"), None);
    }
}
