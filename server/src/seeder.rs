//! Torrent mode's first seed: [`drover_agent::torrent::seeder`] on the
//! `[torrent] seed_listen` port, serving the payload of every image in the
//! store whose torrent the tracker knows, and listed by the tracker to
//! every peer. It super-seeds (each piece shown to a few peers at a time,
//! rarest first), so the server uploads each piece about once and the
//! nodes trade the rest.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use drover_agent::image::{PAYLOAD_FILE, TORRENT_FILE};
use drover_agent::torrent::metainfo::{Info, InfoHash};
use drover_agent::torrent::seeder::Seeder;

use crate::store::Store;
use crate::tracker::Tracker;

/// Bind the seeder at `listen`, serve the store's torrents, and tell the
/// tracker to list it as `public` with the bound port (if known).
pub fn start(
    listen: SocketAddr,
    public: Option<std::net::IpAddr>,
    store: Store,
    tracker: Arc<Tracker>,
) -> Result<Arc<Seeder>> {
    // Peers learn the seeder's port from the tracker, so a taken port (a
    // second server on the host, a test) costs nothing but a warning.
    let l = TcpListener::bind(listen)
        .or_else(|e| {
            log::warn!("torrent seeder: cannot bind {listen} ({e}); binding any free port");
            TcpListener::bind(SocketAddr::new(listen.ip(), 0))
        })
        .with_context(|| format!("binding the seeder's {listen}"))?;
    let bound = l.local_addr()?;
    let finder = tracker.clone();
    let find = move |hash: &InfoHash| torrent_of(&store, &finder, hash);
    let (seeder, _thread) = Seeder::start(l, Arc::new(find))?;
    match public {
        Some(ip) => {
            let addr = SocketAddr::new(ip, bound.port());
            tracker.set_seeder(addr);
            log::info!("torrent seeder on {bound}, listed by the tracker as {addr}");
        }
        None => log::warn!(
            "torrent seeder on {bound}, but the tracker cannot list it: public_url's host is \
             not an IP address; set [torrent] seed_public"
        ),
    }
    Ok(seeder)
}

/// The torrent and payload file of the image whose torrent is `hash`.
fn torrent_of(
    store: &Store,
    tracker: &Tracker,
    hash: &InfoHash,
) -> Option<(Info, std::path::PathBuf)> {
    let image = tracker.find_torrent(hash)?;
    let (name, version) = image.split_once('@')?;
    let dir = store.version_path(name, version);
    match crate::torrent_file::read(&dir.join(TORRENT_FILE)) {
        Ok((_, m)) if m.info_hash == *hash => Some((m.info, dir.join(PAYLOAD_FILE))),
        Ok(_) => None,
        Err(e) => {
            log::warn!("seeder: {e:#}");
            None
        }
    }
}
