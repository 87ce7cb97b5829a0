//! One torrent's swarm as seen from here: the connected peers, what each
//! has and was asked, the pieces in progress. Threads (see [`conn`]) feed
//! it peer messages; it answers with messages to send, all under one lock
//! (a deployment swarm is tens of peers, and every decision — interest,
//! the picker, uploads — wants the whole picture).
//!
//! The same swarm serves a node (a [`MemStore`], pieces picked and
//! downloaded, see [`crate::torrent::TorrentSource`]) and the server's
//! seeder (a [`FileStore`] holding every piece, upload only, see
//! [`crate::torrent::seeder`]).
//!
//! **Policy.** Everyone connected is unchoked (a deployment swarm is one
//! operator's machines: no tit-for-tat to play), so a peer's upload is
//! shared by whoever asks. Bounded: at most `max_peers` connections; asked
//! of a peer at once, what it sends us in [`QUEUE_TIME`] (at least
//! [`MIN_DEPTH`], at most `pipeline` blocks): a peer many others ask at
//! once sends each of them less, so each asks it for less and more of the
//! others (32 nodes at 16 Mbit/s each asking 32 blocks of each of 31
//! peers queued 8 s of requests on the busiest links). A cap on what is in
//! flight over all peers, tried too, starved the swarm: a node's rate fell
//! with the delays at the busiest peers and its cap with it. At most `max_queued_uploads` blocks a peer may have
//! asked of us and not cancelled (more are ignored: it asks again
//! elsewhere when they time out), one receive buffer of one message per
//! connection. Timed: a peer silent for `idle_timeout` is dropped
//! (keep-alives every 60 s keep ours alive), a request unanswered for
//! `request_timeout` is asked elsewhere (three of those in a row, with no
//! block from it in between, and the peer is dropped). A piece failing its SHA-1
//! gets its sender dropped and its address banned (with several senders,
//! each gets a strike; two strikes drop), and the blocks a dropped peer
//! sent to other pieces still in memory are fetched again. A peer sending
//! more pieces than it was asked for, or a message the decoder refuses, is
//! dropped too. A bitfield after the first message is taken as a batch of
//! haves (stock clients send one again).

mod announce;
mod conn;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::bitfield::Bitfield;
use super::metainfo::{piece_hash, Info, InfoHash};
use super::picker::{PeerKey, PeerView, Picker, Received};
use super::store::{MemStore, PieceStore};
use super::wire::{BlockRef, Limits, Message, PeerId};

pub use announce::Announcer;

/// Super-seeding: how far past a peer's first missing piece a piece may
/// be shown, in bytes: half of a node's window ahead of its disk (the
/// window is half of [`super::source::DEFAULT_MEMORY`]), so a node can
/// fetch at once what it is shown.
const REVEAL_SPAN_BYTES: u64 = 32 << 20;
/// Super-seeding: bytes shown and not yet had over all peers, at most
/// (and at least two pieces). Little, so each piece shown arrives soon
/// and the nodes can trade it while the server sends the next: shown to
/// 16 peers × 4 pieces of 256 KiB at once, a piece took 16 MiB at the
/// server's rate to arrive anywhere. Enough that the flows it takes
/// (a piece or two each) fill the server's link though each gets only a
/// part of its node's link: with 2 MiB, 16 nodes took 1.34 × the ideal
/// time, with 4 MiB 1.28 × (32 nodes 1.45 and 1.40).
const IN_FLIGHT_BYTES: u64 = 4 << 20;
/// Super-seeding: a piece nobody has yet that has not moved for this
/// long, or a peer's first missing piece it has waited this long for and
/// nobody got for as long, may be shown again (to a peer with nothing
/// else shown).
const RESHOW_AFTER: Duration = Duration::from_secs(5);
/// Super-seeding: a piece shown to a peer that has not asked for it this
/// long is taken back (see [`Swarm::take_back_ignored`]). A drover node
/// asks the origin for what it is shown at once; long, so a request held
/// up on its way is not mistaken for none.
const IGNORED_AFTER: Duration = Duration::from_secs(10);
pub use conn::{read_handshake, Out};

/// Blocks asked of a peer at once: what it sends us in this long.
pub const QUEUE_TIME: Duration = Duration::from_secs(2);
/// Blocks asked of one peer at once, at least: before its rate is
/// measured (4 blocks answered in 50 ms is already 1.3 MB/s), and so a
/// slow peer is still asked for something.
pub const MIN_DEPTH: usize = 4;

/// Tunables of a swarm.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    pub peer_id: PeerId,
    /// Connections at most (both directions).
    pub max_peers: usize,
    /// Blocks asked of one peer at once.
    pub pipeline: usize,
    /// Peers other than the origin asked for blocks at once. Each flow
    /// into a node shares its link: with every peer asked, the server's
    /// flow, where every piece enters the swarm, got a 32nd of each
    /// node's link at 32 nodes.
    pub max_sources: usize,
    /// Pieces ahead of the write position that may be in memory.
    pub window: u32,
    /// A request unanswered this long is asked elsewhere.
    pub request_timeout: Duration,
    /// A peer silent this long is dropped.
    pub idle_timeout: Duration,
    /// Connect and handshake within this.
    pub connect_timeout: Duration,
    /// Blocks a peer may have asked of us and not yet received.
    pub max_queued_uploads: usize,
}

impl SwarmConfig {
    /// The defaults, with `peer_id`.
    pub fn new(peer_id: PeerId) -> SwarmConfig {
        SwarmConfig {
            peer_id,
            max_peers: 50,
            pipeline: 32,
            max_sources: 8,
            window: 256,
            request_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(150),
            connect_timeout: Duration::from_secs(5),
            max_queued_uploads: 512,
        }
    }
}

/// Counters, for logs, reports and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SwarmStats {
    /// Payload bytes received in piece messages.
    pub downloaded: u64,
    /// Payload bytes sent in piece messages.
    pub uploaded: u64,
    /// Pieces that failed their SHA-1.
    pub bad_pieces: u64,
    /// Peers dropped for misbehaving (bad data, protocol errors).
    pub peers_dropped: u64,
    /// Connections made (both directions).
    pub connections: u64,
    /// Pieces fetched over HTTP instead.
    pub fallback_pieces: u64,
    /// Requests ignored because the peer already had
    /// `max_queued_uploads` waiting.
    pub requests_ignored: u64,
}

/// What the tracker last said.
#[derive(Debug, Clone, Default)]
pub struct TrackerView {
    /// Peers still downloading, as of the last successful announce.
    pub incomplete: Option<u32>,
    /// When that announce was made, and whether this node was complete.
    pub at: Option<(Instant, bool)>,
    /// The last failure, if the last announce failed.
    pub error: Option<String>,
}

/// A piece whose blocks are all in: index, bytes, senders.
type WholePiece = (u32, Arc<[u8]>, Vec<PeerKey>);

/// A connected peer.
pub(crate) struct Peer {
    pub addr: SocketAddr,
    pub id: PeerId,
    /// The server's seeder (its peer id says so: see
    /// [`super::source::SEEDER_PEER_ID_PREFIX`]): it holds every piece
    /// for good, and is asked for `pipeline` blocks whatever its rate
    /// (see [`Swarm::refill`]). Taken before from the tracker's first
    /// listed peer, which only drover's tracker makes the seeder: behind
    /// another tracker a node taken for the origin was asked again and
    /// again for pieces it had dropped (a choke each time, 170 × the
    /// payload sent in 20 s on loopback).
    pub origin: bool,
    pub outbound: bool,
    pub has: Bitfield,
    /// Full at its first message: spared by the picker (module doc of
    /// [`super::picker`]) and not counted in availability.
    pub seed: bool,
    /// Pieces it has that we lack.
    pub lacking: u32,
    pub peer_choking: bool,
    pub am_interested: bool,
    pub tx: Sender<Out>,
    /// Blocks it asked for, not cancelled, that the writer has not sent
    /// yet, in the order asked: what counts against `max_queued_uploads`,
    /// and what the writer sends next. A cancel takes its block out.
    pub uploads: VecDeque<BlockRef>,
    /// The writer was told there are uploads ([`Out::Uploads`]) and has
    /// not yet found the queue empty: no need to tell it again.
    pub woken: bool,
    pub stream: TcpStream,
    pub last_heard: Instant,
    pub strikes: u32,
    pub timeouts: u32,
    /// Blocks asked of it, ever; it may send no more pieces than that.
    pub requested: u64,
    /// Piece messages it sent.
    pub pieces_in: u64,
    /// Payload bytes it sent, and that count at the last rate update.
    pub bytes_in: u64,
    pub rate_mark: u64,
    /// Its upload to us, bytes/s, smoothed over about two seconds.
    pub rate: f64,
    /// Super-seeding: the pieces announced to it one by one.
    pub revealed: HashSet<u32>,
    /// Super-seeding: those of `revealed` it does not have yet, and when
    /// each was shown.
    pub shown: HashMap<u32, Instant>,
    /// Super-seeding: pieces past its first missing piece it may be shown
    /// ([`reveal_span`] at first; less once it ignored a piece shown:
    /// see [`Swarm::take_back_ignored`]).
    pub span: u32,
    /// Super-seeding: its first missing piece, and since when.
    pub waiting: Option<(u32, Instant)>,
    /// Super-seeding: it was shown what it lacks because it waited for
    /// its first missing piece or could not trade, and has not had the
    /// piece it waits for from anyone else since: the pieces it lacks
    /// next count as waited for too (if nobody got them lately). A node
    /// that came after the others had written and dropped the first
    /// pieces was otherwise served in bursts, each once it had traded
    /// nothing for [`RESHOW_AFTER`], though it traded only pieces later
    /// than those it waited for (6 MiB on loopback took 40 s, 3.5 s for
    /// the others).
    pub behind: bool,
    /// Super-seeding: when it last had a piece it was not shown here (it
    /// trades), or joined.
    pub traded_at: Instant,
    /// Super-seeding: pieces shown to it first of all peers (see
    /// [`Swarm::reveal`]: no peer gets far more of them than the others).
    pub firsts: u32,
    /// Super-seeding: bytes of shown pieces sent to it, while short of
    /// the piece (a piece sent whole counts as had: see
    /// [`Swarm::sent_block`]).
    pub sent: HashMap<u32, u32>,
}

impl Peer {
    fn send(&self, m: &Message<'_>) {
        let _ = self.tx.send(Out::Bytes(m.to_bytes()));
    }
}

pub(crate) struct State {
    pub picker: Picker,
    pub peers: HashMap<PeerKey, Peer>,
    next_key: PeerKey,
    /// Addresses to connect to (from the tracker): when next to try.
    pub known: BTreeMap<SocketAddr, (Instant, u32)>,
    pub banned: HashSet<SocketAddr>,
    pub connecting: usize,
    pub stats: SwarmStats,
    pub tracker: TrackerView,
    /// When a piece was last verified (a stall is judged from it).
    pub last_progress: Instant,
    pub stopped: bool,
    /// Super-seeding: how often each piece was announced to a peer.
    pub given: Vec<u16>,
    /// Super-seeding: when each piece last moved: announced, a block of
    /// it sent to a peer it was shown to, or a peer got it. A piece that
    /// moved lately is on its way, not to be shown again.
    pub moved_at: Vec<Option<Instant>>,
    /// When the peers' rates were last updated.
    pub rate_mark: Instant,
}

/// One torrent's swarm (module doc).
pub struct Swarm {
    pub info: Arc<Info>,
    pub info_hash: InfoHash,
    pub limits: Limits,
    pub cfg: SwarmConfig,
    store: Arc<dyn PieceStore>,
    /// A node's store, where verified pieces go; `None` for a seeder.
    mem: Option<Arc<MemStore>>,
    /// The seeder announces pieces one by one (module doc).
    superseed: bool,
    st: Mutex<State>,
    cv: Condvar,
}

impl Swarm {
    /// A node's swarm: nothing yet, verified pieces kept in `mem`.
    pub fn leecher(info: Arc<Info>, cfg: SwarmConfig, mem: Arc<MemStore>) -> Arc<Swarm> {
        Swarm::new(info, cfg, mem.clone(), Some(mem), false)
    }

    /// A seeder's swarm: every piece, read from `store`.
    pub fn seeder(info: Arc<Info>, cfg: SwarmConfig, store: Arc<dyn PieceStore>) -> Arc<Swarm> {
        Swarm::new(info, cfg, store, None, true)
    }

    fn new(
        info: Arc<Info>,
        cfg: SwarmConfig,
        store: Arc<dyn PieceStore>,
        mem: Option<Arc<MemStore>>,
        full: bool,
    ) -> Arc<Swarm> {
        let count = info.piece_count();
        let mut picker = Picker::new(info.length, info.piece_length, cfg.window);
        if full {
            picker.have = Bitfield::full(info.piece_count());
        }
        Arc::new(Swarm {
            superseed: full,
            info_hash: info.info_hash(),
            limits: Limits::for_info(&info),
            info,
            cfg,
            store,
            mem,
            st: Mutex::new(State {
                picker,
                peers: HashMap::new(),
                next_key: 1,
                known: BTreeMap::new(),
                banned: HashSet::new(),
                connecting: 0,
                stats: SwarmStats::default(),
                tracker: TrackerView::default(),
                last_progress: Instant::now(),
                rate_mark: Instant::now(),
                stopped: false,
                given: vec![0; if full { count as usize } else { 0 }],
                moved_at: vec![None; if full { count as usize } else { 0 }],
            }),
            cv: Condvar::new(),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn wait<'a>(&self, g: MutexGuard<'a, State>, d: Duration) -> MutexGuard<'a, State> {
        self.cv
            .wait_timeout(g, d)
            .unwrap_or_else(|e| e.into_inner())
            .0
    }

    pub(crate) fn notify(&self) {
        self.cv.notify_all();
    }

    /// Counters.
    pub fn stats(&self) -> SwarmStats {
        self.lock().stats.clone()
    }

    /// What the tracker last said.
    pub fn tracker_view(&self) -> TrackerView {
        self.lock().tracker.clone()
    }

    /// Connected peers.
    pub fn peer_count(&self) -> usize {
        self.lock().peers.len()
    }

    /// Pieces verified here.
    pub fn have_count(&self) -> u32 {
        self.lock().picker.have.count()
    }

    /// Every piece is here.
    pub fn is_complete(&self) -> bool {
        self.lock().picker.have.is_full()
    }

    /// Bytes of the payload not yet verified here.
    pub fn left(&self) -> u64 {
        let st = self.lock();
        (0..self.info.piece_count())
            .filter(|&i| !st.picker.have.get(i))
            .map(|i| u64::from(self.info.piece_size(i)))
            .sum()
    }

    /// Piece `index` if it is here (a node's swarm).
    pub fn piece(&self, index: u32) -> Option<Arc<[u8]>> {
        self.mem.as_ref()?.get(index)
    }

    /// Stopped: every connection closed, every thread on its way out.
    pub fn is_stopped(&self) -> bool {
        self.lock().stopped
    }

    /// Close every connection and stop every thread of this swarm.
    pub fn stop(&self) {
        let mut st = self.lock();
        st.stopped = true;
        for p in st.peers.values() {
            let _ = p.stream.shutdown(std::net::Shutdown::Both);
        }
        drop(st);
        self.notify();
    }

    /// Addresses to connect to (the tracker's answer).
    pub fn add_known(&self, addrs: impl IntoIterator<Item = SocketAddr>) {
        let now = Instant::now();
        let mut st = self.lock();
        for a in addrs {
            if !st.banned.contains(&a) {
                st.known.entry(a).or_insert((now, 0));
            }
        }
    }

    /// The local pipeline needs pieces from `index` on: move the window.
    pub fn set_write_pos(&self, index: u32) {
        let mut st = self.lock();
        if index <= st.picker.write_pos {
            return;
        }
        st.picker.write_pos = index.min(self.info.piece_count());
        if let Some(m) = &self.mem {
            m.consumed_below(index);
        }
        self.refill_all(&mut st);
    }

    /// A verified piece from elsewhere (the HTTP fallback).
    pub fn add_piece(&self, index: u32, data: Arc<[u8]>) {
        let mut st = self.lock();
        if st.picker.have.get(index) {
            return;
        }
        st.picker.got_elsewhere(index);
        st.stats.fallback_pieces += 1;
        if let Some(m) = &self.mem {
            m.insert(index, data);
        }
        self.after_verified(&mut st, index);
    }

    /// Everyone's view changed after `index` was verified here: tell the
    /// peers, update interest, wake the pipeline.
    fn after_verified(&self, st: &mut State, index: u32) {
        st.last_progress = Instant::now();
        for p in st.peers.values_mut() {
            // Not to another drover node that has it: it needs nothing
            // from us for that piece, and at 32 nodes the haves were about
            // half of the messages (each a writer woken here and a reader
            // there, on two busy cores). To every other
            // peer, even those that have it: a super-seeding seeder
            // learns from it that its piece arrived (module doc of
            // `reveal`), and stock clients expect every have.
            let has = p.has.get(index);
            if !(has && is_drover_node(p)) {
                p.send(&Message::Have(index));
            }
            if has {
                p.lacking -= 1;
                if p.lacking == 0 && p.am_interested {
                    p.am_interested = false;
                    p.send(&Message::NotInterested);
                }
            }
        }
        self.notify();
    }

    /// Ask every peer that can serve us for more.
    pub(crate) fn refill_all(&self, st: &mut State) {
        let keys: Vec<PeerKey> = st.peers.keys().copied().collect();
        for k in keys {
            self.refill(st, k);
        }
    }

    /// Ask peer `key` for blocks up to its pipeline.
    pub(crate) fn refill(&self, st: &mut State, key: PeerKey) {
        let State { picker, peers, .. } = st;
        let asked = picker.asked_of(key);
        // A peer not asked for anything yet may start only if fewer than
        // `max_sources` others are; one whose requests are all answered
        // (or void) frees its place.
        let from_origin = peers.get(&key).is_some_and(|p| p.origin);
        if asked == 0 && !from_origin {
            let busy = peers
                .iter()
                .filter(|(&k, q)| !q.origin && picker.asked_of(k) > 0)
                .count();
            if busy >= self.cfg.max_sources {
                return;
            }
        }
        let Some(p) = peers.get_mut(&key) else {
            return;
        };
        if p.peer_choking || !p.am_interested || picker.have.is_full() {
            return;
        }
        // The seeder is where every piece first enters the swarm: the
        // swarm is as fast as it sends. Asked by its rate like any peer, it
        // got no more than its share of each node's link and was never
        // kept busy (0.9 of its 2 MB/s at 32 nodes): each node keeps a
        // full pipeline at it instead (it shows a node a piece or two at a
        // time, so that is what a node can ask of it anyway).
        let depth = if from_origin {
            self.cfg.pipeline
        } else {
            peer_depth(p.rate, self.cfg.pipeline)
        };
        let room = depth.saturating_sub(asked);
        // Topped up by half a pipeline at a time, not a block per block
        // received: each top-up is a message and a woken thread at both
        // ends, and half a pipeline is still a second of its sending.
        if room == 0 || (asked > 0 && room < depth.div_ceil(2)) {
            return;
        }
        let view = PeerView {
            key,
            has: &p.has,
            seed: p.seed,
        };
        let blocks = picker.pick(view, room, Instant::now());
        p.requested += blocks.len() as u64;
        for b in blocks {
            p.send(&Message::Request(b));
        }
    }

    /// Recompute this node's stripe of the seed's pieces (picker doc).
    fn restripe(&self, st: &mut State) {
        let mut ids: Vec<[u8; 20]> = st
            .peers
            .values()
            .filter(|p| !p.seed)
            .map(|p| p.id.0)
            .collect();
        ids.push(self.cfg.peer_id.0);
        ids.sort_unstable();
        ids.dedup();
        let rank = ids
            .iter()
            .position(|i| *i == self.cfg.peer_id.0)
            .unwrap_or(0);
        st.picker.stripe = (rank as u32, ids.len() as u32);
    }

    /// Register a connection whose handshake is done; `None` if it is not
    /// wanted (stopped, full, a duplicate of a connection we keep).
    pub(crate) fn register(
        &self,
        stream: &TcpStream,
        addr: SocketAddr,
        id: PeerId,
        outbound: bool,
        tx: Sender<Out>,
    ) -> Result<PeerKey, String> {
        let mut st = self.lock();
        if st.stopped {
            return Err("swarm stopped".into());
        }
        if id == self.cfg.peer_id {
            st.banned.insert(addr);
            st.known.remove(&addr);
            return Err("that is this node itself".into());
        }
        // Two nodes that dial each other at once: keep the connection
        // dialed by the smaller peer id, on both ends.
        let dialer_of = |outbound: bool| {
            if outbound {
                self.cfg.peer_id.0
            } else {
                id.0
            }
        };
        if let Some((&old, p)) = st.peers.iter().find(|(_, p)| p.id == id) {
            if dialer_of(outbound) < dialer_of(p.outbound) {
                let _ = p.stream.shutdown(std::net::Shutdown::Both);
                let _ = old;
            } else {
                return Err("already connected to that peer".into());
            }
        }
        if st.peers.len() >= self.cfg.max_peers {
            return Err(format!("{} peers already", self.cfg.max_peers));
        }
        let key = st.next_key;
        st.next_key += 1;
        st.stats.connections += 1;
        let peer = Peer {
            addr,
            id,
            origin: id.0.starts_with(super::source::SEEDER_PEER_ID_PREFIX),
            outbound,
            has: Bitfield::new(self.info.piece_count()),
            seed: false,
            lacking: 0,
            peer_choking: true,
            am_interested: false,
            tx,
            uploads: VecDeque::new(),
            woken: false,
            revealed: HashSet::new(),
            shown: HashMap::new(),
            span: reveal_span(self.info.piece_length),
            waiting: None,
            behind: false,
            traded_at: Instant::now(),
            firsts: 0,
            sent: HashMap::new(),
            stream: stream.try_clone().map_err(|e| e.to_string())?,
            last_heard: Instant::now(),
            strikes: 0,
            timeouts: 0,
            requested: 0,
            pieces_in: 0,
            bytes_in: 0,
            rate_mark: 0,
            rate: 0.0,
        };
        // Our pieces, then unchoke: everyone may ask (module doc).
        if st.picker.have.count() > 0 && !self.superseed {
            peer.send(&Message::Bitfield(st.picker.have.as_wire()));
        }
        peer.send(&Message::Unchoke);
        st.peers.insert(key, peer);
        self.restripe(&mut st);
        self.reveal(&mut st, key, Instant::now());
        Ok(key)
    }

    /// The connection of `key` ended (`why`, if it was dropped for a
    /// fault: then its address is banned).
    pub(crate) fn unregister(&self, key: PeerKey, fault: Option<&str>) {
        let mut st = self.lock();
        let Some(p) = st.peers.remove(&key) else {
            return;
        };
        let _ = p.stream.shutdown(std::net::Shutdown::Both);
        if !p.seed {
            for i in p.has.iter() {
                st.picker.avail[i as usize] -= 1;
                // Super-seeding: the only copy left; fresh again unless
                // it is on its way to someone.
                if self.superseed && st.picker.avail[i as usize] == 0 {
                    st.given[i as usize] = st
                        .peers
                        .values()
                        .filter(|q| q.shown.contains_key(&i))
                        .count()
                        .try_into()
                        .unwrap_or(u16::MAX);
                }
            }
        }
        // What it was shown and did not get is to be shown to others.
        for &i in p.shown.keys() {
            st.given[i as usize] = st.given[i as usize].saturating_sub(1);
        }
        st.picker.forget_peer(key);
        if fault.is_some() {
            st.picker.discard_from(key);
        }
        if let Some(why) = fault {
            log::warn!("torrent: dropped peer {} ({why})", p.addr);
            st.stats.peers_dropped += 1;
            st.banned.insert(p.addr);
            st.known.remove(&p.addr);
        } else {
            log::debug!("torrent: peer {} left", p.addr);
        }
        self.restripe(&mut st);
        self.refill_all(&mut st);
        self.notify();
    }

    /// Handle one message from peer `key`. An error drops the peer.
    pub(crate) fn on_message(&self, key: PeerKey, m: Message<'_>) -> Result<(), String> {
        let whole = {
            let mut st = self.lock();
            self.handle(&mut st, key, m)?
        };
        // Hash a whole piece outside the lock: other connections go on.
        match whole {
            Some((index, data, contributors)) => self.complete(key, index, data, contributors),
            None => Ok(()),
        }
    }

    /// [`Swarm::on_message`] under the lock; a whole piece to hash.
    fn handle(
        &self,
        st: &mut State,
        key: PeerKey,
        m: Message<'_>,
    ) -> Result<Option<WholePiece>, String> {
        let Some(p) = st.peers.get_mut(&key) else {
            return Err("gone".into());
        };
        p.last_heard = Instant::now();
        match m {
            Message::KeepAlive | Message::Unknown { .. } => {}
            Message::Choke => {
                p.peer_choking = true;
                // A node chokes us when it no longer holds a piece we
                // asked for (its store keeps a bounded window; BEP 3
                // cannot take a have back), even a finished one that sent
                // a whole bitfield: ask others for what we were waiting
                // for from it.
                let mut demoted = false;
                for i in st.picker.pieces_asked_of(key) {
                    demoted |= lost_piece(&mut st.picker, p, i);
                }
                st.picker.forget_peer(key);
                if demoted {
                    self.restripe(st);
                }
            }
            Message::Unchoke => {
                p.peer_choking = false;
                self.refill(st, key);
            }
            Message::Interested | Message::NotInterested => {}
            Message::Have(i) => {
                let freed = p.shown.contains_key(&i);
                if self.peer_got(st, key, i) {
                    self.refill(st, key);
                }
                let now = Instant::now();
                self.reveal(st, key, now);
                if freed {
                    // Its place among the pieces in flight is free now,
                    // not at the next tick.
                    self.reveal_idle(st, now);
                }
            }
            // BEP 3 sends a bitfield first or not at all, but stock
            // clients send one again later instead of many haves (aria2c
            // does): the pieces it adds are had, as if announced one by
            // one (a peer never loses a piece).
            Message::Bitfield(bits) if p.has.count() > 0 => {
                let bits = Bitfield::from_wire(self.info.piece_count(), bits);
                let mut added = false;
                for i in bits.iter() {
                    added |= self.peer_got(st, key, i);
                }
                if added {
                    self.refill(st, key);
                }
                self.reveal(st, key, Instant::now());
            }
            Message::Bitfield(bits) => {
                p.has = Bitfield::from_wire(self.info.piece_count(), bits);
                let has = &p.has;
                p.shown.retain(|&i, _| !has.get(i));
                p.seed = p.has.is_full();
                if !p.seed {
                    for i in p.has.iter() {
                        st.picker.avail[i as usize] += 1;
                    }
                    self.restripe(st);
                }
                let p = st.peers.get_mut(&key).expect("present");
                p.lacking = p.has.iter().filter(|&i| !st.picker.have.get(i)).count() as u32;
                if p.lacking > 0 {
                    p.am_interested = true;
                    p.send(&Message::Interested);
                }
                self.refill(st, key);
                self.reveal(st, key, Instant::now());
            }
            Message::Request(b) => {
                if !st.picker.have.get(b.index) {
                    // Not announced (or raced with our own announce): ignore.
                    return Ok(None);
                }
                // The queue holds requests not yet sent nor cancelled, so
                // what counts is what the requester has in flight, however
                // far behind the writer is (a peer asks again as soon as it
                // cancels: a steal answered elsewhere, a time-out).
                if p.uploads.contains(&b) {
                    return Ok(None);
                }
                if p.uploads.len() >= self.cfg.max_queued_uploads {
                    // Bounded either way; dropping the peer would cost
                    // everything it was sending us.
                    st.stats.requests_ignored += 1;
                    return Ok(None);
                }
                p.uploads.push_back(b);
                if !p.woken {
                    p.woken = true;
                    let _ = p.tx.send(Out::Uploads);
                }
            }
            Message::Cancel(b) => {
                if let Some(at) = p.uploads.iter().position(|q| *q == b) {
                    p.uploads.remove(at);
                }
            }
            Message::Piece {
                index,
                begin,
                block,
            } => {
                // Each request gets one answer at most (even a cancelled
                // one): more is a block never asked for.
                p.pieces_in += 1;
                if p.pieces_in > p.requested {
                    return Err(format!(
                        "sent piece {index} at {begin}, a block it was never asked for"
                    ));
                }
                st.stats.downloaded += block.len() as u64;
                p.bytes_in += block.len() as u64;
                p.timeouts = 0;
                match st.picker.received(key, index, begin, block) {
                    Received::Malformed => {
                        return Err(format!(
                        "sent {} bytes at {begin} of piece {index}: not a block of this torrent",
                        block.len()
                    ))
                    }
                    Received::Unwanted => {}
                    Received::Stored { cancel } => self.cancel(st, cancel),
                    Received::Complete {
                        index,
                        piece,
                        cancel,
                    } => {
                        self.cancel(st, cancel);
                        self.refill(st, key);
                        return Ok(Some((index, piece.data, piece.contributors)));
                    }
                }
                self.refill(st, key);
            }
        }
        Ok(None)
    }

    /// Piece `index` is whole: check its SHA-1, keep it or blame its
    /// senders.
    fn complete(
        &self,
        from: PeerKey,
        index: u32,
        data: Arc<[u8]>,
        contributors: Vec<PeerKey>,
    ) -> Result<(), String> {
        let ok = piece_hash(&data) == self.info.pieces[index as usize];
        let mut guard = self.lock();
        let st = &mut *guard;
        st.picker.verified(index, ok);
        if ok {
            if let Some(m) = &self.mem {
                m.insert(index, data);
            }
            self.after_verified(st, index);
            self.refill_all(st);
            return Ok(());
        }
        st.stats.bad_pieces += 1;
        log::warn!("torrent: piece {index} failed its SHA-1 check; fetching it again");
        let alone = contributors.len() == 1;
        let mut drop_from = false;
        for k in contributors {
            if let Some(p) = st.peers.get_mut(&k) {
                p.strikes += 1;
                if alone || p.strikes >= 2 {
                    // Its blocks of other pieces are not to be trusted.
                    st.picker.discard_from(k);
                    if k == from {
                        drop_from = true;
                    } else {
                        let _ = p.stream.shutdown(std::net::Shutdown::Both);
                        st.banned.insert(p.addr);
                        st.stats.peers_dropped += 1;
                    }
                }
            }
        }
        self.refill_all(st);
        if drop_from {
            return Err(format!("sent piece {index}, which failed its SHA-1 check"));
        }
        Ok(())
    }

    /// Super-seeding (BEP 16's idea): instead of a bitfield, the seeder
    /// shows peers pieces one by one. A piece nobody has and nobody was
    /// shown comes first, the first such in the payload's order within the
    /// peer's reach ([`reveal_span`] past its first missing piece): so
    /// each piece leaves the server about once, in the order the disks
    /// consume them, and the nodes trade the rest; no peer is shown more
    /// of those than [`fair_firsts`] allows. Little is shown at once
    /// ([`max_in_flight`] pieces not yet had over all peers, at most two
    /// per peer), so a piece shown arrives soon and can be traded while
    /// the server sends the next. A peer with nothing shown and no fresh
    /// piece within reach is shown a piece again after [`RESHOW_AFTER`]:
    /// one nobody has yet that has not moved for that long (shown, asked
    /// for, or a block of it sent: its holder is stuck or gone), else the
    /// piece its disk has waited for that long if nobody got it for as
    /// long. Pieces shown and
    /// never fetched go back to the pool when the peer leaves, and so do
    /// pieces whose only holder left. A peer that has not had a piece from
    /// anyone else for [`RESHOW_AFTER`] while others hold pieces it lacks
    /// cannot trade (its peers are unreachable or banned it): it is shown
    /// what it lacks, in order, as a plain seed would. A lone client
    /// still gets everything.
    ///
    /// (Before, a piece was chosen fewest-shown-first within 64 pieces of
    /// the peer's first missing piece, 4 per peer: that piece lags the
    /// pieces being given out by everything in flight, so every piece in
    /// reach had been shown already and the server sent pieces twice, 1.8
    /// × the payload for 16 nodes in the scale harness; and 64 pieces in
    /// flight at once each arrived late.)
    fn reveal(&self, st: &mut State, key: PeerKey, now: Instant) {
        if !self.superseed {
            return;
        }
        let count = self.info.piece_count();
        // 4 MiB in flight in all, one or two pieces per peer. A node asks
        // at most `max_sources` peers besides the server at once, so the
        // server's flow to a node gets a fair part of that node's link and
        // a few flows fill the server's. (Two per peer for every peer, as
        // before that limit, were 64 pieces at 32 nodes, each 9 s on its
        // way; and a peer that joined first was shown 8 pieces, the first
        // ones every node needs, which then took 30 s to arrive through
        // its flow, a 32nd of the server's link: no node wrote anything
        // for the first 30 s.)
        let cap = max_in_flight(self.info.piece_length);
        let mut in_flight: usize = st.peers.values().map(|p| p.shown.len()).sum();
        let ahead = (cap / st.peers.len().max(1)).clamp(1, 2);
        let fair = fair_firsts(st.peers.values().map(|p| p.firsts), ahead);
        // Pieces a peer asked for that wait in its queue here: on their
        // way, however slow the flow (the server's flow to a node is a
        // part of that node's link, and a piece shown second waits for
        // the first). Only wanted to show a piece again, for a peer with
        // nothing shown.
        let queued: HashSet<u32> = match st.peers.get(&key) {
            Some(p) if p.shown.is_empty() => st
                .peers
                .values()
                .flat_map(|q| q.uploads.iter().map(|b| b.index))
                .collect(),
            _ => HashSet::new(),
        };
        let State {
            peers,
            picker,
            given,
            moved_at,
            ..
        } = st;
        let Some(p) = peers.get_mut(&key) else { return };
        let Some(first) = p.has.first_missing() else {
            return;
        };
        let mut waited = match p.waiting {
            Some((i, since)) if i == first => now.saturating_duration_since(since),
            _ => {
                p.waiting = Some((first, now));
                Duration::ZERO
            }
        };
        if p.behind {
            waited = waited.max(RESHOW_AFTER);
        }
        let end = first.saturating_add(p.span).min(count);
        // Cannot trade: nothing from the others for a while, though they
        // hold pieces it lacks. A node ahead of everyone has nothing to
        // trade for either, but fed in order as if isolated it ran away
        // with the server's link (16 nodes: one took 109 MiB in 35 s
        // while the others crawled, then was the only holder of pieces it
        // later dropped from its store).
        let isolated = now.saturating_duration_since(p.traded_at) >= RESHOW_AFTER
            && (first..end).any(|i| !p.has.get(i) && picker.avail[i as usize] > 0);
        while p.shown.len() < ahead {
            let unseen = |i: u32| !p.has.get(i) && !p.revealed.contains(&i);
            let fresh = (first..end)
                .find(|&i| unseen(i) && picker.avail[i as usize] == 0 && given[i as usize] == 0);
            let i = match fresh {
                Some(i) if in_flight < cap && p.firsts < fair => {
                    p.firsts += 1;
                    i
                }
                // It cannot trade: what it lacks, in order.
                _ if isolated => match (first..end).find(|&i| unseen(i)) {
                    Some(i) => {
                        p.behind = true;
                        i
                    }
                    None => break,
                },
                // Enough pieces on their way from here: it trades.
                Some(_) => break,
                None if p.shown.is_empty() => {
                    let stale = |i: u32| {
                        !queued.contains(&i)
                            && moved_at[i as usize]
                                .is_none_or(|t| now.saturating_duration_since(t) >= RESHOW_AFTER)
                    };
                    let stuck = (first..end)
                        .filter(|&i| unseen(i) && picker.avail[i as usize] == 0 && stale(i))
                        .min_by_key(|&i| (given[i as usize], i));
                    // Shown before or not: it waits for it, and nobody
                    // got it lately (its holders do not serve it). A
                    // piece spreading from node to node is not stuck: 32
                    // nodes that all waited over 5 s for the piece after
                    // their first chunk (its holder's link shared by all
                    // of them) were each sent it by the server.
                    let waits = Some(first)
                        .filter(|&i| !p.has.get(i) && waited >= RESHOW_AFTER && stale(i));
                    match (stuck, waits) {
                        (Some(i), _) => i,
                        (None, Some(i)) => {
                            p.behind = true;
                            i
                        }
                        (None, None) => break,
                    }
                }
                None => break,
            };
            given[i as usize] = given[i as usize].saturating_add(1);
            moved_at[i as usize] = Some(now);
            p.revealed.insert(i);
            p.shown.insert(i, now);
            in_flight += 1;
            p.send(&Message::Have(i));
        }
    }

    /// Peer `key` has piece `i` (a have, a later bitfield, or a shown
    /// piece sent whole): counted, and we are interested if we lack it.
    /// Whether it is news.
    fn peer_got(&self, st: &mut State, key: PeerKey, i: u32) -> bool {
        let Some(p) = st.peers.get_mut(&key) else {
            return false;
        };
        p.shown.remove(&i);
        p.sent.remove(&i);
        if !p.revealed.contains(&i) {
            p.traded_at = Instant::now();
            if p.waiting.is_some_and(|(w, _)| w == i) {
                p.behind = false;
            }
        }
        if !p.has.set(i) {
            return false;
        }
        if let Some(t) = st.moved_at.get_mut(i as usize) {
            *t = Some(Instant::now());
        }
        if !p.seed {
            st.picker.avail[i as usize] += 1;
        }
        if !st.picker.have.get(i) {
            p.lacking += 1;
            if !p.am_interested {
                p.am_interested = true;
                p.send(&Message::Interested);
            }
        }
        true
    }

    /// Block `b` (`len` bytes) went out to peer `key`: counted; and when
    /// super-seeding, a shown piece sent whole is had by the peer, and the
    /// next is shown. Stock clients batch their haves (transmission every
    /// 10 s): a seeder waiting for them would leave a lone client with
    /// nothing to fetch meanwhile.
    pub(crate) fn sent_block(&self, key: PeerKey, b: BlockRef, len: usize) {
        self.sent_block_at(key, b, len, Instant::now());
    }

    /// [`Swarm::sent_block`] at `now`.
    fn sent_block_at(&self, key: PeerKey, b: BlockRef, len: usize, now: Instant) {
        let mut guard = self.lock();
        let st = &mut *guard;
        st.stats.uploaded += len as u64;
        if !self.superseed {
            return;
        }
        let Some(p) = st.peers.get_mut(&key) else {
            return;
        };
        if !p.shown.contains_key(&b.index) {
            return;
        }
        // On its way: not to be shown again as stale (at 32 nodes a
        // piece shown took over 5 s to arrive at the server's share of a
        // busy node's link, and a third of the pieces left it twice).
        st.moved_at[b.index as usize] = Some(now);
        let sent = p.sent.entry(b.index).or_insert(0);
        *sent = sent.saturating_add(len as u32);
        if *sent < self.info.piece_size(b.index) {
            return;
        }
        p.sent.remove(&b.index);
        self.peer_got(st, key, b.index);
        self.reveal(st, key, now);
        // The piece's place among those in flight is free: to a peer with
        // nothing shown if this one may not have more, now rather than at
        // the next tick (a quarter of a second, with a few pieces in
        // flight that each take about a second).
        self.reveal_idle(st, now);
    }

    /// Super-seeding: show pieces to the peers that have nothing shown
    /// (from the ticker: a slot freed elsewhere, a piece to show again
    /// after [`RESHOW_AFTER`]).
    pub(crate) fn reveal_idle(&self, st: &mut State, now: Instant) {
        if !self.superseed {
            return;
        }
        let idle: Vec<PeerKey> = st
            .peers
            .iter()
            .filter(|(_, p)| p.shown.is_empty())
            .map(|(&k, _)| k)
            .collect();
        for k in idle {
            self.reveal(st, k, now);
        }
    }

    /// Super-seeding: pieces shown to a peer that it has not asked for in
    /// [`IGNORED_AFTER`] (no request waiting here, no block of it sent)
    /// are taken back: the peer may be shown others, and a piece nobody
    /// else has is fresh again. They lie past what it fetches (a node's
    /// window ahead of its disk, when that is shorter than the span), so
    /// its span is halved to below the nearest of them. Its two places
    /// held by pieces it would never fetch, a node was shown nothing
    /// else, and it waited for ever for the pieces it needed (the swarm
    /// test's nodes fetch 4 MiB ahead; the span is 32 MiB). The peer may
    /// still ask for them: it was told we have them, and we do. From the
    /// ticker only: a 10 s rule needs no look at every peer's queue each
    /// time a piece is sent whole.
    pub(crate) fn take_back_ignored(&self, st: &mut State, now: Instant) {
        if !self.superseed {
            return;
        }
        let count = self.info.piece_count();
        let State { peers, given, .. } = st;
        for p in peers.values_mut() {
            let ignored: Vec<u32> = p
                .shown
                .iter()
                .filter(|&(i, &at)| {
                    now.saturating_duration_since(at) >= IGNORED_AFTER
                        && !p.sent.contains_key(i)
                        && !p.uploads.iter().any(|b| b.index == *i)
                })
                .map(|(&i, _)| i)
                .collect();
            if ignored.is_empty() {
                continue;
            }
            let first = p.has.first_missing().unwrap_or(count);
            for i in ignored {
                p.shown.remove(&i);
                given[i as usize] = given[i as usize].saturating_sub(1);
                let ahead = i.saturating_sub(first);
                p.span = p.span.min((ahead / 2).max(2));
            }
        }
    }

    fn cancel(&self, st: &mut State, cancel: Vec<(PeerKey, BlockRef)>) {
        for (k, b) in cancel {
            if let Some(p) = st.peers.get(&k) {
                p.send(&Message::Cancel(b));
            }
        }
    }
}

/// A drover node (peer id `-DR…`, see [`super::source`]): it sends haves
/// of its own and needs none for pieces it has.
fn is_drover_node(p: &Peer) -> bool {
    p.id.0.starts_with(super::source::NODE_PEER_ID_PREFIX)
}

/// Super-seeding: the fresh pieces a peer may have been shown first, at
/// most: `slack` more than the median peer. The server's flow to a node
/// whose link is idle (it is ahead: nobody has what it lacks) is faster
/// than its flows to nodes busy trading, so a node that got ahead got
/// most of the fresh pieces, and the others had to fetch them all from
/// it: its one link fed the swarm (16 nodes: it uploaded 2.9 × the
/// payload, the others crawled in step). The median, not the slowest, so
/// that a slow node holds nobody back.
fn fair_firsts(firsts: impl Iterator<Item = u32>, slack: usize) -> u32 {
    let mut v: Vec<u32> = firsts.collect();
    v.sort_unstable();
    let median = v.get(v.len() / 2).copied().unwrap_or(0);
    median.saturating_add(u32::try_from(slack).unwrap_or(u32::MAX))
}

/// Super-seeding: pieces past a peer's first missing piece that may be
/// shown to it ([`REVEAL_SPAN_BYTES`], at least 8).
fn reveal_span(piece_length: u32) -> u32 {
    let pieces = REVEAL_SPAN_BYTES / u64::from(piece_length.max(1));
    u32::try_from(pieces).unwrap_or(u32::MAX).max(8)
}

/// Super-seeding: pieces shown and not yet had over all peers, at most
/// ([`IN_FLIGHT_BYTES`], at least 2).
fn max_in_flight(piece_length: u32) -> usize {
    let pieces = IN_FLIGHT_BYTES / u64::from(piece_length.max(1));
    usize::try_from(pieces).unwrap_or(usize::MAX).max(2)
}

#[cfg(test)]
mod tests;

/// `p` may no longer hold piece `index`: stop asking it for that one.
/// Not the origin (the server's seeder never drops a piece): a piece the
/// seeder showed us and we stopped asking it for was never shown again
/// (it waits for us to have it), and 7 of 8 nodes stalled until their
/// connections to it timed out (150 s). A drover node that was a seed (a
/// finished node: its bitfield was whole, its store is a window) is one
/// no longer, and its pieces count as available from it like any peer's
/// (kept a seed, it was asked again at once for the piece it had just
/// said it lacked, round after round). Nor another client's seed: it
/// keeps its pieces, and may choke us for its own reasons (its unchoke
/// slots). Whether it was demoted.
fn lost_piece(picker: &mut Picker, p: &mut Peer, index: u32) -> bool {
    if p.origin || (p.seed && !is_drover_node(p)) || !p.has.get(index) {
        return false;
    }
    let demoted = p.seed;
    if demoted {
        p.seed = false;
        for i in p.has.iter() {
            picker.avail[i as usize] += 1;
        }
    }
    p.has.clear(index);
    picker.avail[index as usize] -= 1;
    if !picker.have.get(index) {
        p.lacking -= 1;
    }
    demoted
}

/// Blocks to keep asked of a peer that sends us `rate` bytes/s: what it
/// sends in [`QUEUE_TIME`], within `MIN_DEPTH..=pipeline`. A peer that
/// many others ask at once sends each of them less, so each asks it for
/// less and more of others, instead of queueing seconds of requests at
/// its link until they time out.
fn peer_depth(rate: f64, pipeline: usize) -> usize {
    let blocks = rate * QUEUE_TIME.as_secs_f64() / f64::from(super::wire::MAX_BLOCK);
    (blocks.ceil() as usize).clamp(MIN_DEPTH.min(pipeline), pipeline)
}

/// Fold the bytes each peer sent since the last mark into its smoothed
/// rate, once a second.
fn update_rate(st: &mut State, now: Instant) {
    let dt = now.saturating_duration_since(st.rate_mark).as_secs_f64();
    if dt < 1.0 {
        return;
    }
    let smooth = |old: f64, new: f64| {
        if old == 0.0 {
            new
        } else {
            0.5 * old + 0.5 * new
        }
    };
    st.rate_mark = now;
    for p in st.peers.values_mut() {
        p.rate = smooth(p.rate, p.bytes_in.saturating_sub(p.rate_mark) as f64 / dt);
        p.rate_mark = p.bytes_in;
    }
}
