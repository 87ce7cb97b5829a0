//! The BitTorrent HTTP tracker of torrent mode: `announce` (BEP 3, compact
//! peers BEP 23) and `scrape` (BEP 48), for the torrents of the image
//! store's payloads only ([`index`]), peers kept in memory with expiry
//! ([`swarm`]).
//!
//! **Who may join a swarm.** A deployment's swarm is its nodes (and, next,
//! the server's own seeder); strangers on the boot network must not be
//! able to list the nodes or slip into the swarm. A `.torrent` is one file
//! for all nodes and stock clients send only the standard parameters, so
//! the token cannot ride in the torrent or in an extra parameter:
//!
//! - **Nodes** announce to `{server}/announce/{MAC}/{TOKEN}` (and scrape
//!   at `/scrape/{MAC}/{TOKEN}`, BEP 48's rule of replacing `announce`),
//!   a URL the agent builds from `deploy.server`, its MAC and its
//!   `deploy.token`, ignoring the torrent's `announce`. The token must be
//!   the node's current deploy token (as for its reports), and the
//!   info-hash that of its deployment's image: a node is let into its own
//!   deployment's swarm and no other. Its entry is keyed by MAC, so one
//!   node is one peer however often it restarts.
//! - **Anyone else** announces to `{public_url}/announce`, what the served
//!   `.torrent` says, and is answered `failure reason` unless the server's
//!   config says `[torrent] open = true`: then any client may join the
//!   swarm of any image in the store (the interoperability tests with
//!   stock clients, or a site whose boot network is trusted anyway; the
//!   boot entries, tokens included, are served to whoever asks for a MAC).
//!
//! A token is only as secret as the boot network (README, Security): this
//! keeps out the curious and the misconfigured, not someone who can read
//! boot entries. The peer address listed is always the one the request
//! came from (`ip=` is ignored), with the port announced.
//!
//! **Answers.** Always HTTP 200 with a bencoded body (what clients parse);
//! every refusal is a one-line `failure reason` saying what was wrong and
//! what is accepted. `interval` is `[torrent] announce_interval` (30 s: a
//! deploy is short, and nodes arriving must find each other fast); a peer
//! silent for three intervals is dropped.

pub mod index;
pub mod routes;
pub mod swarm;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use drover_agent::torrent::metainfo::InfoHash;
use drover_agent::torrent::tracker::{
    encode_scrape, failure, parse_scrape_query, Announce, AnnounceReply, Event, Peer,
};
use kernel_cmdline::MacAddr;

use crate::store::Store;
use index::TorrentIndex;
use swarm::{Arrival, PeerKey, Swarms};

pub use routes::routes;

/// `[torrent]` settings of the tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackerConfig {
    /// Clients without a node token may announce (module doc).
    pub open: bool,
    /// Seconds between a client's regular announces.
    pub interval: Duration,
    /// Where the seeder listens (`None`: no seeder).
    pub seed_listen: Option<SocketAddr>,
    /// The IP peers reach the seeder at (with the port it bound); `None`:
    /// the tracker cannot list it.
    pub seed_public: Option<IpAddr>,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            open: false,
            interval: Duration::from_secs(30),
            seed_listen: None,
            seed_public: None,
        }
    }
}

/// The most peers in one swarm (a fleet's nodes, plus guests when open).
pub const MAX_PEERS: usize = 5000;
/// Peers returned when the client does not say (`numwant`), and the most
/// returned whatever it says.
pub const DEFAULT_NUMWANT: usize = 50;
pub const MAX_NUMWANT: usize = 200;
/// Clients may announce this often at most (`min interval`).
const MIN_INTERVAL: u32 = 5;

/// Which nodes may join which swarm: the image (`NAME@VERSION`) of a
/// node's current deployment when `token` is its deploy token.
pub trait NodeDeployments: Send + Sync {
    fn image_of(&self, mac: &MacAddr, token: &str) -> Option<String>;

    /// The nodes deploying `image` in torrent mode that have not finished
    /// (reported neither success nor failure). Until each has come and
    /// gone, the swarm is not done: `incomplete` counts them even before
    /// they first announce, so nodes that finish early keep seeding for
    /// those that boot late.
    fn unfinished(&self, _image: &str) -> Vec<MacAddr> {
        Vec::new()
    }
}

impl<F> NodeDeployments for F
where
    F: Fn(&MacAddr, &str) -> Option<String> + Send + Sync,
{
    fn image_of(&self, mac: &MacAddr, token: &str) -> Option<String> {
        self(mac, token)
    }
}

/// Who is asking: the path said.
#[derive(Debug, Clone)]
pub enum Caller {
    /// `/announce/{mac}/{token}`: `mac` as written in the path.
    Node { mac: String, token: String },
    /// `/announce`.
    Guest,
}

/// The tracker.
pub struct Tracker {
    config: TrackerConfig,
    nodes: Arc<dyn NodeDeployments>,
    index: TorrentIndex,
    swarms: Mutex<Swarms>,
    /// The server's seeder, listed first to every peer (it is in every
    /// swarm of the store's images).
    seeder: Mutex<Option<SocketAddr>>,
}

impl Tracker {
    /// A tracker for the torrents of `store`.
    pub fn new(config: TrackerConfig, store: Store, nodes: Arc<dyn NodeDeployments>) -> Tracker {
        Tracker {
            config,
            nodes,
            index: TorrentIndex::new(store),
            swarms: Mutex::new(Swarms::new(MAX_PEERS, config.interval * 3)),
            seeder: Mutex::new(None),
        }
    }

    /// The seeder is reachable at `addr`: list it in every answer.
    pub fn set_seeder(&self, addr: SocketAddr) {
        *self.seeder.lock().unwrap_or_else(|e| e.into_inner()) = Some(addr);
    }

    /// The paths of the payload and torrent of the image whose torrent
    /// has info-hash `hash`, for the seeder.
    pub fn find_torrent(&self, hash: &InfoHash) -> Option<String> {
        self.index.image_of(hash)
    }

    fn swarms(&self) -> std::sync::MutexGuard<'_, Swarms> {
        self.swarms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answer an announce (`query` raw, as in the URL) from `from`: the
    /// bencoded body. Blocking (the fleet and the store).
    pub fn announce(&self, caller: &Caller, query: &[u8], from: IpAddr) -> Vec<u8> {
        match self.try_announce(caller, query, from, Instant::now()) {
            Ok(body) => body,
            Err(reason) => {
                log::info!("tracker: refused an announce from {from}: {reason}");
                failure(&reason)
            }
        }
    }

    fn try_announce(
        &self,
        caller: &Caller,
        query: &[u8],
        from: IpAddr,
        now: Instant,
    ) -> Result<Vec<u8>, String> {
        let a = Announce::parse_query(query).map_err(|e| format!("bad announce: {e}"))?;
        let (key, image) = match caller {
            Caller::Node { mac, token } => {
                let (mac, image) = self.node_image(mac, token)?;
                let want = self
                    .index
                    .hash_of(&image)
                    .ok_or_else(|| no_torrent(&image))?;
                if a.info_hash != want {
                    return Err(format!(
                        "node {mac} is deploying {image}, whose info_hash is {want}, not {}",
                        a.info_hash
                    ));
                }
                (PeerKey::Node(mac), image)
            }
            Caller::Guest => {
                self.guest_allowed()?;
                let image = self
                    .index
                    .image_of(&a.info_hash)
                    .ok_or_else(|| unknown(&a.info_hash))?;
                (PeerKey::Guest(a.peer_id), image)
            }
        };
        let numwant = a
            .numwant
            .map_or(DEFAULT_NUMWANT, |n| (n as usize).min(MAX_NUMWANT));
        let arrival = Arrival {
            key,
            id: a.peer_id,
            addr: SocketAddr::new(from.to_canonical(), a.port),
            left: a.left,
            event: a.event,
            numwant,
        };
        let unfinished = self.nodes.unfinished(&image);
        let (answer, waiting) = {
            let mut swarms = self.swarms();
            let answer = swarms
                .announce(a.info_hash, arrival, now)
                .map_err(|e| e.to_string())?;
            // Unfinished nodes not yet gone from the swarm (a node that
            // left or fell silent unfinished is dead, not late).
            let waiting = unfinished
                .iter()
                .filter(|m| !swarms.departed(&a.info_hash, m))
                .count() as u32;
            (answer, waiting)
        };
        if a.event != Event::None {
            log::info!(
                "tracker: {image}: {:?} from {} ({} left); swarm {} seeding, {} leeching",
                a.event,
                arrival.addr,
                a.left,
                answer.stats.complete,
                answer.stats.incomplete
            );
        }
        let interval = self.config.interval.as_secs().min(u32::MAX.into()) as u32;
        let mut peers = answer.peers;
        let mut complete = answer.stats.complete;
        if let Some(seed) = *self.seeder.lock().unwrap_or_else(|e| e.into_inner()) {
            peers.insert(
                0,
                Peer {
                    addr: seed,
                    id: None,
                },
            );
            complete += 1;
        }
        let reply = AnnounceReply {
            interval,
            min_interval: Some(MIN_INTERVAL.min(interval)),
            complete,
            incomplete: answer.stats.incomplete.max(waiting),
            peers,
        };
        Ok(reply.encode(a.compact))
    }

    /// Answer a scrape: the counts of each info-hash asked about that is
    /// an image's torrent (others are left out), or of every swarm.
    pub fn scrape(&self, caller: &Caller, query: &[u8]) -> Vec<u8> {
        let result = (|| {
            match caller {
                Caller::Node { mac, token } => {
                    self.node_image(mac, token)?;
                }
                Caller::Guest => self.guest_allowed()?,
            }
            let asked = parse_scrape_query(query).map_err(|e| format!("bad scrape: {e}"))?;
            let now = Instant::now();
            let hashes = if asked.is_empty() {
                self.swarms().hashes()
            } else {
                asked
                    .into_iter()
                    .filter(|h| self.index.image_of(h).is_some())
                    .collect()
            };
            let mut swarms = self.swarms();
            let files: Vec<_> = hashes.iter().map(|h| (*h, swarms.stats(h, now))).collect();
            Ok::<_, String>(encode_scrape(&files))
        })();
        result.unwrap_or_else(|reason| failure(&reason))
    }

    fn node_image(&self, mac: &str, token: &str) -> Result<(MacAddr, String), String> {
        let mac: MacAddr = mac
            .parse()
            .map_err(|e| format!("the announce path's node {mac:?}: {e}"))?;
        let image = self.nodes.image_of(&mac, token).ok_or_else(|| {
            format!(
                "wrong token for node {mac}; accepted: /announce/MAC/TOKEN with the deploy.token of its current deployment"
            )
        })?;
        Ok((mac, image))
    }

    fn guest_allowed(&self) -> Result<(), String> {
        if self.config.open {
            Ok(())
        } else {
            Err(
                "this tracker serves drover nodes only: they announce to /announce/MAC/TOKEN \
                 with their deploy.token (to let any client in, set [torrent] open = true in \
                 the server's config)"
                    .into(),
            )
        }
    }
}

fn no_torrent(image: &str) -> String {
    format!("image {image} has no payload.torrent (imported by an older drover-server; import it again under a new version)")
}

fn unknown(hash: &InfoHash) -> String {
    format!(
        "unknown torrent: info_hash {hash} is not the payload of an image in this server's store"
    )
}

#[cfg(test)]
mod tests;
