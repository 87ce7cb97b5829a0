//! The server's first seed: one listening port for every torrent it has;
//! a peer's handshake names the torrent, whose swarm (upload only, pieces
//! read from the payload file) takes the connection. Swarms are made on
//! first use and live as long as the seeder.

use std::collections::HashMap;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::metainfo::{Info, InfoHash};
use super::store::FileStore;
use super::swarm::{read_handshake as conn_read_handshake, Swarm, SwarmConfig, SwarmStats};
use super::wire::PeerId;

/// Finds the torrent of an info-hash: its info and payload file.
pub trait Torrents: Send + Sync {
    fn find(&self, hash: &InfoHash) -> Option<(Info, PathBuf)>;
}

impl<F> Torrents for F
where
    F: Fn(&InfoHash) -> Option<(Info, PathBuf)> + Send + Sync,
{
    fn find(&self, hash: &InfoHash) -> Option<(Info, PathBuf)> {
        self(hash)
    }
}

/// Connections a seeder keeps at most, over all torrents.
pub const MAX_SEEDER_PEERS: usize = 500;

/// The seeder (module doc).
pub struct Seeder {
    torrents: Arc<dyn Torrents>,
    swarms: Mutex<HashMap<InfoHash, Arc<Swarm>>>,
    peer_id: PeerId,
    listen: SocketAddr,
}

impl Seeder {
    /// Listen on `listener` and serve the torrents `torrents` finds.
    pub fn start(
        listener: TcpListener,
        torrents: Arc<dyn Torrents>,
    ) -> std::io::Result<(Arc<Seeder>, JoinHandle<()>)> {
        let listen = listener.local_addr()?;
        let seeder = Arc::new(Seeder {
            torrents,
            swarms: Mutex::new(HashMap::new()),
            peer_id: super::source::peer_id(
                super::source::SEEDER_PEER_ID,
                &listen.to_string().into_bytes(),
            ),
            listen,
        });
        let s = seeder.clone();
        let t = thread::Builder::new()
            .name("seeder".into())
            .spawn(move || s.accept_loop(listener))?;
        Ok((seeder, t))
    }

    /// Where it listens.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// Its peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Counters of the swarm of `hash`, if a peer asked for it.
    pub fn stats(&self, hash: &InfoHash) -> Option<SwarmStats> {
        self.lock().get(hash).map(|s| s.stats())
    }

    /// Bytes uploaded over all torrents.
    pub fn uploaded(&self) -> u64 {
        self.lock().values().map(|s| s.stats().uploaded).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<InfoHash, Arc<Swarm>>> {
        self.swarms.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn peers(&self) -> usize {
        self.lock().values().map(|s| s.peer_count()).sum()
    }

    fn swarm(&self, hash: &InfoHash) -> Option<Arc<Swarm>> {
        if let Some(s) = self.lock().get(hash) {
            return Some(s.clone());
        }
        let (info, path) = self.torrents.find(hash)?;
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                log::warn!("seeder: opening {}: {e}", path.display());
                return None;
            }
        };
        let store = Arc::new(FileStore::new(file, &info));
        let mut cfg = SwarmConfig::new(self.peer_id);
        cfg.max_peers = MAX_SEEDER_PEERS;
        let swarm = Swarm::seeder(Arc::new(info), cfg, store);
        // Only its ticker: the seeder dials nobody and announces nowhere
        // (the tracker lists it), but time-outs apply.
        let _ = swarm.spawn_ticker();
        Some(self.lock().entry(*hash).or_insert(swarm).clone())
    }

    fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        for conn in listener.incoming() {
            let mut s = match conn {
                Ok(s) => s,
                Err(e) => {
                    log::warn!("seeder: accepting: {e}");
                    thread::sleep(Duration::from_millis(200));
                    continue;
                }
            };
            let Ok(addr) = s.peer_addr() else { continue };
            if self.peers() >= MAX_SEEDER_PEERS {
                log::warn!("seeder: {MAX_SEEDER_PEERS} peers already; refusing {addr}");
                continue;
            }
            let me = self.clone();
            let _ = thread::Builder::new()
                .name("seeder-rx".into())
                .spawn(move || {
                    let h = match conn_read_handshake(&mut s, Duration::from_secs(10)) {
                        Ok(h) => h,
                        Err(e) => return log::debug!("seeder: {addr}: {e}"),
                    };
                    match me.swarm(&h.info_hash) {
                        Some(sw) => sw.adopt(s, addr, h),
                        None => log::info!(
                            "seeder: {addr} asked for torrent {}, which is not in the store",
                            h.info_hash
                        ),
                    }
                });
        }
    }
}
