//! [`TorrentSource`]: the swarm as a [`ChunkSource`] for the usual verify
//! → inflate → write pipeline, and the seeding after the disk is done.
//!
//! A manifest chunk is a byte range of the payload, a piece another: the
//! chunk the pipeline asks for moves the swarm's window to its first
//! piece, waits until every piece it overlaps is verified (SHA-1), cuts
//! the chunk out and checks it against the signed manifest (SHA-256). The
//! `.torrent` is not signed: if its pieces disagree with the manifest, or
//! the swarm brings nothing for `stall_after`, the chunk comes from the
//! fallback (HTTP) instead, and the pieces it covers whole join the swarm.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use kernel_cmdline::ServerUrl;

use super::metainfo::{piece_hash, Info};
use super::store::MemStore;
use super::swarm::{Announcer, Swarm, SwarmConfig, SwarmStats};
use super::wire::PeerId;
use crate::image::{verify_chunk, ChunkEntry, ChunkSource, Manifest};

/// How a node joins a torrent swarm.
pub struct TorrentOptions {
    /// Announce here (a drover node: `{server}/announce/MAC/TOKEN`).
    pub tracker: ServerUrl,
    /// Listen for peers here (port 0: any).
    pub listen: SocketAddr,
    pub peer_id: PeerId,
    /// Memory for pieces: half the window ahead of the disk, half kept
    /// for other peers after the disk took them.
    pub memory: u64,
    /// No piece verified for this long: the chunk comes from the fallback.
    pub stall_after: Duration,
}

/// The default port a node listens on for peers.
pub const DEFAULT_PORT: u16 = 6881;
/// The default memory for pieces.
pub const DEFAULT_MEMORY: u64 = 128 << 20;
/// How long a node seeds after its disk is done, at most, when the
/// tracker keeps listing peers still downloading.
pub const DEFAULT_LINGER: Duration = Duration::from_secs(300);

impl TorrentOptions {
    /// The defaults for a node with this tracker URL and identity seed.
    pub fn new(tracker: ServerUrl, id_seed: &[u8]) -> TorrentOptions {
        TorrentOptions {
            tracker,
            listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            peer_id: peer_id(NODE_PEER_ID, id_seed),
            memory: DEFAULT_MEMORY,
            stall_after: Duration::from_secs(60),
        }
    }
}

/// A node's peer id prefix (Azureus style: drover, version 0.1.0).
pub const NODE_PEER_ID: &[u8; 8] = b"-DR0100-";
/// How a swarm tells a drover node from other peers, whatever its version.
pub const NODE_PEER_ID_PREFIX: &[u8] = b"-DR";
/// The server's seeder's peer id prefix.
pub const SEEDER_PEER_ID: &[u8; 8] = b"-DS0100-";
/// How a node tells the server's seeder (its origin) from other peers,
/// whatever its version: by the id it sends in its handshake, not by
/// where a tracker lists it (a stock tracker lists peers in any order).
pub const SEEDER_PEER_ID_PREFIX: &[u8] = b"-DS";

/// A peer id: `prefix` (Azureus style, 8 bytes) and 12 bytes derived from
/// `seed` and the clock (no getrandom: it can block early in boot).
pub fn peer_id(prefix: &[u8; 8], seed: &[u8]) -> PeerId {
    use sha1::{Digest as _, Sha1};
    let mut h = Sha1::new();
    h.update(seed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.update(t.as_nanos().to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    let d: [u8; 20] = h.finalize().into();
    let mut id = [0u8; 20];
    id[..8].copy_from_slice(prefix);
    id[8..].copy_from_slice(&d[..12]);
    PeerId(id)
}

/// The swarm feeding the local pipeline (module doc).
pub struct TorrentSource {
    swarm: Arc<Swarm>,
    fallback: Option<Box<dyn ChunkSource + Send>>,
    threads: Vec<JoinHandle<()>>,
    listen: SocketAddr,
    stall_after: Duration,
    done: bool,
}

/// Join the swarm of `info` (whose length the manifest's payload must
/// have): listen, announce, dial. The pipeline then pulls chunks.
pub fn join(
    opts: TorrentOptions,
    manifest: &Manifest,
    info: Info,
    fallback: Option<Box<dyn ChunkSource + Send>>,
) -> Result<TorrentSource> {
    if info.length != manifest.payload.size {
        bail!(
            "the payload.torrent describes {} bytes but the manifest's payload has {}",
            info.length,
            manifest.payload.size
        );
    }
    let max_chunk = manifest.chunks.iter().map(|c| c.length).max().unwrap_or(0);
    let piece = u64::from(info.piece_length);
    // Half the memory ahead of the disk, and always room for the largest
    // chunk twice over (its pieces must all be in at once).
    let window = (opts.memory / 2 / piece).max(2 * max_chunk.div_ceil(piece) + 2);
    let mut cfg = SwarmConfig::new(opts.peer_id);
    cfg.window = u32::try_from(window).unwrap_or(u32::MAX);
    let mem = Arc::new(MemStore::new(opts.memory / 2));
    let listener = TcpListener::bind(opts.listen)
        .or_else(|e| {
            log::warn!(
                "torrent: cannot listen on {}: {e}; on any port",
                opts.listen
            );
            TcpListener::bind(SocketAddr::new(opts.listen.ip(), 0))
        })
        .context("listening for peers")?;
    let listen = listener.local_addr()?;
    let swarm = Swarm::leecher(Arc::new(info), cfg, mem);
    let mut threads = vec![swarm.spawn_listener(listener)?, swarm.spawn_ticker()?];
    threads.push(swarm.spawn_announcer(Announcer {
        url: opts.tracker,
        port: listen.port(),
        timeout: Duration::from_secs(10),
    })?);
    log::info!(
        "torrent: joined the swarm of {} ({} pieces of {} KiB), listening on {listen}",
        swarm.info_hash,
        swarm.info.piece_count(),
        piece >> 10
    );
    Ok(TorrentSource {
        swarm,
        fallback,
        threads,
        listen,
        stall_after: opts.stall_after,
        done: false,
    })
}

impl TorrentSource {
    /// The swarm (counters, tests).
    pub fn swarm(&self) -> &Arc<Swarm> {
        &self.swarm
    }

    /// Where peers connect.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The disk is done: seed until the tracker lists nobody still
    /// downloading, or `linger` at most; then leave.
    pub fn finish(mut self, linger: Duration) -> SwarmStats {
        let sw = self.swarm.clone();
        sw.set_write_pos(sw.info.piece_count());
        let start = Instant::now();
        let deadline = start + linger;
        let mut st = sw.lock();
        loop {
            let released = matches!(
                (st.tracker.incomplete, st.tracker.at),
                (Some(0), Some((_, true)))
            );
            if released || st.stopped || Instant::now() >= deadline {
                break;
            }
            st = sw.wait(st, Duration::from_millis(500));
        }
        drop(st);
        log::info!(
            "torrent: seeded for {:.0}s after the disk was done",
            start.elapsed().as_secs_f64()
        );
        self.stop()
    }

    fn stop(&mut self) -> SwarmStats {
        self.done = true;
        self.swarm.stop();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.swarm.stats()
    }

    /// Chunk `entry`'s bytes from the pieces, waiting for them.
    fn wait_swarm(&self, index: usize, entry: &ChunkEntry) -> Result<Option<Vec<u8>>> {
        let pl = u64::from(self.swarm.info.piece_length);
        let first = (entry.offset / pl) as u32;
        let last = ((entry.offset + entry.length).saturating_sub(1) / pl) as u32;
        self.swarm.set_write_pos(first);
        {
            let mut st = self.swarm.lock();
            loop {
                if (first..=last).all(|i| st.picker.have.get(i)) {
                    break;
                }
                if st.stopped {
                    bail!("the swarm stopped");
                }
                if st.last_progress.elapsed() >= self.stall_after && self.fallback.is_some() {
                    log::warn!(
                        "torrent: nothing verified for {}s; chunk {index} from the fallback",
                        self.stall_after.as_secs()
                    );
                    return Ok(None);
                }
                st = self.swarm.wait(st, Duration::from_secs(1));
            }
        }
        let mut out = Vec::with_capacity(entry.length as usize);
        for i in first..=last {
            let piece = self
                .swarm
                .piece(i)
                .with_context(|| format!("piece {i} was verified but is no longer held"))?;
            let start = u64::from(i) * pl;
            let from = entry.offset.max(start) - start;
            let to = (entry.offset + entry.length).min(start + piece.len() as u64) - start;
            out.extend_from_slice(&piece[from as usize..to as usize]);
        }
        Ok(Some(out))
    }

    /// Chunk `index` from the fallback; the pieces it covers whole join
    /// the swarm.
    fn use_fallback(&mut self, index: usize, entry: &ChunkEntry) -> Result<Vec<u8>> {
        let fb = self.fallback.as_mut().context("no fallback source")?;
        let bytes = verify_chunk(index, entry, fb.fetch(index, entry)?)?.into_bytes();
        let info = &self.swarm.info;
        let pl = u64::from(info.piece_length);
        let end = entry.offset + entry.length;
        for i in (entry.offset.div_ceil(pl) as u32)..info.piece_count() {
            let r = info.piece_range(i);
            if r.end > end {
                break;
            }
            let piece = &bytes[(r.start - entry.offset) as usize..(r.end - entry.offset) as usize];
            if piece_hash(piece) == info.pieces[i as usize] {
                self.swarm.add_piece(i, piece.into());
            }
        }
        Ok(bytes)
    }
}

impl ChunkSource for TorrentSource {
    fn fetch(&mut self, index: usize, entry: &ChunkEntry) -> Result<Vec<u8>> {
        if entry.length == 0 {
            return Ok(Vec::new());
        }
        match self.wait_swarm(index, entry)? {
            Some(bytes) => match verify_chunk(index, entry, bytes) {
                Ok(v) => Ok(v.into_bytes()),
                Err(e) => {
                    // Every piece passed SHA-1: the torrent itself is wrong.
                    log::warn!(
                        "torrent: {e}; the payload.torrent disagrees with the signed manifest; \
                         chunk {index} from the fallback"
                    );
                    if self.fallback.is_none() {
                        return Err(e.into());
                    }
                    self.use_fallback(index, entry)
                }
            },
            None => self.use_fallback(index, entry),
        }
    }
}

impl Drop for TorrentSource {
    fn drop(&mut self) {
        if !self.done {
            self.stop();
        }
    }
}
