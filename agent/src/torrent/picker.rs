//! Which block to ask which peer for: pure bookkeeping, no I/O.
//!
//! **Window.** Only pieces in `[write_pos, write_pos + window)` are
//! started: the local pipeline consumes the payload in order from
//! `write_pos`, so memory stays at about `window` pieces however large
//! the image, and the piece the disk waits for is always among those
//! being fetched.
//!
//! **Order inside the window.** Pieces already started come first (to
//! finish what is in memory), then new pieces rarest first (fewest
//! connected non-seed peers have them), which spreads pieces over the
//! swarm as BEP 3 intends. On a tie the nearest [`SPREAD_BYTES`] to
//! `write_pos` come first, and inside those each node starts at its
//! stripe rank: with the nearest piece first, every node of a 32-node
//! swarm asked the one node that held it (the seeder shows each piece to
//! one node), then the holder of the next, and the other links idled:
//! no node wrote its first chunk for 20 s.
//!
//! **Seeds are the last resort.** The server's seeder must not upload the
//! image once per node: from a seed a node only asks for pieces that no
//! connected non-seed peer has, and among those first its own *stripe*
//! (`index % n == rank`, with `n` the non-seed peers it knows and `rank`
//! its place among their peer ids), so nodes that start together fetch
//! different pieces from the seed and trade the rest.
//!
//! **Stealing.** A block asked of one peer for longer than `steal_after`
//! may be asked of a second one once nothing new can be started (the
//! window's end game); whichever answers first wins and the other request
//! is cancelled. Only blocks of the piece the disk waits for are stolen
//! that soon; those of other pieces after [`STEAL_FAR_FACTOR`] times as
//! long. (A busy peer's queue of uploads easily holds a few seconds' worth,
//! and a cancel comes too late for what it already wrote to its socket:
//! stealing every block after 3 s made nodes of a 16-node swarm on 2
//! loaded cores download 1.10 × the payload, one 1.4 ×; with this, the
//! bytes received are the payload and its headers.)

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::bitfield::Bitfield;
use super::wire::{BlockRef, MAX_BLOCK};

/// Blocks of pieces other than the one the disk waits for are stolen
/// after this many times `steal_after` (module doc).
pub const STEAL_FAR_FACTOR: u32 = 4;

/// Pieces equally rare and within this many bytes of each other are
/// started in an order that differs from node to node (module doc).
pub const SPREAD_BYTES: u64 = 2 << 20;

/// A connection, as the picker knows it.
pub type PeerKey = u64;

/// One piece being downloaded.
#[derive(Debug)]
pub struct Partial {
    /// The piece's bytes as they arrive: already the shared buffer the
    /// store keeps, so a verified piece is not copied (a copy was one
    /// more fresh 256 KiB mapping, page-faulted in, per piece per node).
    pub data: Arc<[u8]>,
    blocks: Vec<BlockState>,
    remaining: u32,
    /// The peers that sent at least one of its blocks.
    pub contributors: Vec<PeerKey>,
}

#[derive(Debug, Default, Clone)]
struct BlockState {
    got: bool,
    /// Who sent it (when `got`).
    from: Option<PeerKey>,
    /// Who was asked, when (at most two: the first and a thief).
    asked: Vec<(PeerKey, Instant)>,
}

/// What [`Picker::received`] made of a block.
#[derive(Debug)]
pub enum Received {
    /// Stored; cancel these duplicate requests at other peers.
    Stored { cancel: Vec<(PeerKey, BlockRef)> },
    /// Stored and the piece is whole: hash it, then call
    /// [`Picker::verified`]. The piece is out of the picker until then.
    Complete {
        index: u32,
        piece: Partial,
        cancel: Vec<(PeerKey, BlockRef)>,
    },
    /// Not asked for, or already had (a late duplicate): ignore.
    Unwanted,
    /// Not a block of this torrent's layout: a protocol violation.
    Malformed,
}

/// How one peer looks to the picker.
#[derive(Debug, Clone, Copy)]
pub struct PeerView<'a> {
    pub key: PeerKey,
    pub has: &'a Bitfield,
    /// It has every piece (the server's seeder, a finished node).
    pub seed: bool,
}

/// The picker of one torrent.
#[derive(Debug)]
pub struct Picker {
    piece_length: u32,
    length: u64,
    /// Pieces verified here.
    pub have: Bitfield,
    /// How many connected non-seed peers have each piece.
    pub avail: Vec<u16>,
    partial: BTreeMap<u32, Partial>,
    /// Whole pieces being hashed.
    verifying: HashSet<u32>,
    /// Blocks asked of each peer and not yet received.
    inflight: HashMap<PeerKey, usize>,
    /// The first piece the local pipeline still needs.
    pub write_pos: u32,
    /// Pieces from `write_pos` that may be in memory at once.
    pub window: u32,
    /// This node's stripe of the seed's pieces: `(rank, n)`.
    pub stripe: (u32, u32),
    /// See the module doc.
    pub steal_after: Duration,
}

impl Picker {
    /// A picker for a torrent of `length` bytes in pieces of `piece_length`.
    pub fn new(length: u64, piece_length: u32, window: u32) -> Picker {
        let count = u32::try_from(length.div_ceil(piece_length.into())).unwrap_or(u32::MAX);
        Picker {
            piece_length,
            length,
            have: Bitfield::new(count),
            avail: vec![0; count as usize],
            partial: BTreeMap::new(),
            verifying: HashSet::new(),
            inflight: HashMap::new(),
            write_pos: 0,
            window: window.max(1),
            stripe: (0, 1),
            steal_after: Duration::from_secs(3),
        }
    }

    /// Pieces in the torrent.
    pub fn piece_count(&self) -> u32 {
        self.have.len()
    }

    /// Bytes of piece `index`.
    pub fn piece_size(&self, index: u32) -> u32 {
        let start = u64::from(index) * u64::from(self.piece_length);
        self.length
            .saturating_sub(start)
            .min(self.piece_length.into()) as u32
    }

    /// Pieces started and not yet whole.
    pub fn in_progress(&self) -> usize {
        self.partial.len() + self.verifying.len()
    }

    /// Ask `peer` for up to `max` blocks; each returned block is recorded
    /// as asked of it.
    pub fn pick(&mut self, peer: PeerView<'_>, max: usize, now: Instant) -> Vec<BlockRef> {
        let mut out = Vec::new();
        if max == 0 || self.have.is_full() {
            return out;
        }
        // 1. Pieces in memory, nearest first.
        for (&index, p) in self.partial.iter_mut() {
            if out.len() >= max {
                return out;
            }
            if peer.has.get(index) {
                take_blocks(index, p, peer.key, max, now, &mut out, |b| {
                    b.asked.is_empty()
                });
            }
        }
        // 2. New pieces.
        while out.len() < max {
            let Some(index) = self.choose_new(peer) else {
                break;
            };
            let size = self.piece_size(index);
            let blocks = size.div_ceil(MAX_BLOCK) as usize;
            let p = self.partial.entry(index).or_insert(Partial {
                // One allocation (the iterator's length is known).
                data: std::iter::repeat_n(0, size as usize).collect(),
                blocks: vec![BlockState::default(); blocks],
                remaining: blocks as u32,
                contributors: Vec::new(),
            });
            take_blocks(index, p, peer.key, max, now, &mut out, |b| {
                b.asked.is_empty()
            });
        }
        // 3. Steal slow blocks once nothing new can start. A seed is only
        // asked for the pieces the disk waits for.
        let nearest = self.first_missing();
        let steal_near = now.checked_sub(self.steal_after);
        let steal_far = now.checked_sub(self.steal_after * STEAL_FAR_FACTOR);
        for (&index, p) in self.partial.iter_mut() {
            if out.len() >= max {
                break;
            }
            let near = Some(index) == nearest;
            let Some(before) = (if near { steal_near } else { steal_far }) else {
                continue;
            };
            if !peer.has.get(index) || (peer.seed && !near) {
                continue;
            }
            take_blocks(index, p, peer.key, max, now, &mut out, |b| {
                b.asked.len() == 1 && b.asked[0].0 != peer.key && b.asked[0].1 <= before
            });
        }
        *self.inflight.entry(peer.key).or_default() += out.len();
        out
    }

    fn answered(&mut self, peer: PeerKey) {
        if let Some(n) = self.inflight.get_mut(&peer) {
            *n = n.saturating_sub(1);
        }
    }

    /// The first piece not verified here, from `write_pos`.
    pub fn first_missing(&self) -> Option<u32> {
        (self.write_pos..self.piece_count()).find(|&i| !self.have.get(i))
    }

    fn choose_new(&self, peer: PeerView<'_>) -> Option<u32> {
        let end = self
            .write_pos
            .saturating_add(self.window)
            .min(self.piece_count());
        let (rank, n) = self.stripe;
        let n = n.max(1);
        let fresh = (self.write_pos..end).filter(|&i| {
            peer.has.get(i)
                && !self.have.get(i)
                && !self.partial.contains_key(&i)
                && !self.verifying.contains(&i)
        });
        if peer.seed {
            // Only what no non-seed peer here has; this node's stripe first.
            fresh
                .filter(|&i| self.avail[i as usize] == 0)
                .min_by_key(|&i| (i % n != rank, i))
        } else {
            // Ties: nearest group of SPREAD_BYTES first, and inside it
            // each node from its own place (rank), so that the nodes do
            // not all ask the holder of the nearest piece at once.
            let group = u32::try_from(SPREAD_BYTES / u64::from(self.piece_length.max(1)))
                .unwrap_or(u32::MAX)
                .max(1);
            fresh.min_by_key(|&i| {
                let d = i - self.write_pos;
                (self.avail[i as usize], d / group, (d + rank) % group)
            })
        }
    }

    /// A block arrived from `from`.
    pub fn received(&mut self, from: PeerKey, index: u32, begin: u32, data: &[u8]) -> Received {
        let size = self.piece_size(index);
        if index >= self.piece_count() || !begin.is_multiple_of(MAX_BLOCK) || begin >= size {
            return Received::Malformed;
        }
        let expected = (size - begin).min(MAX_BLOCK);
        if data.len() != expected as usize {
            return Received::Malformed;
        }
        let Some(p) = self.partial.get_mut(&index) else {
            return Received::Unwanted;
        };
        let b = &mut p.blocks[(begin / MAX_BLOCK) as usize];
        if b.got {
            return Received::Unwanted;
        }
        let block = BlockRef {
            index,
            begin,
            length: expected,
        };
        b.got = true;
        b.from = Some(from);
        let asked: Vec<PeerKey> = b.asked.drain(..).map(|(k, _)| k).collect();
        let cancel = asked
            .iter()
            .filter(|k| **k != from)
            .map(|&k| (k, block))
            .collect();
        for k in asked {
            // A cancelled duplicate is no longer in flight either.
            if let Some(n) = self.inflight.get_mut(&k) {
                *n = n.saturating_sub(1);
            }
        }
        let p = self.partial.get_mut(&index).expect("present");
        // Only the picker holds a partial piece's buffer.
        let buf = Arc::get_mut(&mut p.data).expect("a partial piece is not shared");
        buf[begin as usize..][..data.len()].copy_from_slice(data);
        p.remaining -= 1;
        if !p.contributors.contains(&from) {
            p.contributors.push(from);
        }
        if p.remaining > 0 {
            return Received::Stored { cancel };
        }
        let piece = self.partial.remove(&index).expect("present");
        self.verifying.insert(index);
        Received::Complete {
            index,
            piece,
            cancel,
        }
    }

    /// A whole piece was hashed: `ok` it is had, else it is fetched again.
    pub fn verified(&mut self, index: u32, ok: bool) {
        self.verifying.remove(&index);
        if ok {
            self.have.set(index);
        }
    }

    /// A piece came from elsewhere (the HTTP fallback), verified.
    pub fn got_elsewhere(&mut self, index: u32) {
        if let Some(p) = self.partial.remove(&index) {
            // What was asked of peers for it is no longer in flight.
            for (k, _) in p.blocks.iter().flat_map(|b| &b.asked) {
                if let Some(n) = self.inflight.get_mut(k) {
                    *n = n.saturating_sub(1);
                }
            }
        }
        self.have.set(index);
    }

    /// Forget what was asked of `peer` (it choked us or left): those
    /// blocks are free to ask of others.
    pub fn forget_peer(&mut self, peer: PeerKey) {
        self.inflight.remove(&peer);
        for p in self.partial.values_mut() {
            for b in &mut p.blocks {
                b.asked.retain(|(k, _)| *k != peer);
            }
        }
    }

    /// `peer` sent a bad piece: the blocks it sent to pieces not yet whole
    /// are dropped and asked of others. Kept, they would fail those pieces
    /// later and blame their other senders (two such strikes drop an
    /// honest peer, the server's seeder included). Returns how many.
    pub fn discard_from(&mut self, peer: PeerKey) -> usize {
        let mut n = 0;
        for p in self.partial.values_mut() {
            for b in &mut p.blocks {
                if b.got && b.from == Some(peer) {
                    b.got = false;
                    b.from = None;
                    p.remaining += 1;
                    n += 1;
                }
            }
            p.contributors.retain(|k| *k != peer);
        }
        n
    }

    /// Forget one request (cancelled, or the peer will not serve it).
    pub fn forget(&mut self, peer: PeerKey, block: BlockRef) {
        if let Some(p) = self.partial.get_mut(&block.index) {
            if let Some(b) = p.blocks.get_mut((block.begin / MAX_BLOCK) as usize) {
                let before = b.asked.len();
                b.asked.retain(|(k, _)| *k != peer);
                if b.asked.len() < before {
                    self.answered(peer);
                }
            }
        }
    }

    /// Requests older than `limit`, forgotten: the caller cancels them
    /// and holds it against their peers.
    pub fn expire(&mut self, now: Instant, limit: Duration) -> Vec<(PeerKey, BlockRef)> {
        let mut out = Vec::new();
        for (&index, p) in self.partial.iter_mut() {
            for (n, b) in p.blocks.iter_mut().enumerate() {
                b.asked.retain(|&(k, at)| {
                    let old = now.saturating_duration_since(at) > limit;
                    if old {
                        let begin = n as u32 * MAX_BLOCK;
                        let length = (p.data.len() as u32 - begin).min(MAX_BLOCK);
                        out.push((
                            k,
                            BlockRef {
                                index,
                                begin,
                                length,
                            },
                        ));
                    }
                    !old
                });
            }
        }
        for &(k, _) in &out {
            self.answered(k);
        }
        out
    }

    /// Pieces with a block asked of `peer` and not yet received.
    pub fn pieces_asked_of(&self, peer: PeerKey) -> Vec<u32> {
        self.partial
            .iter()
            .filter(|(_, p)| {
                p.blocks
                    .iter()
                    .any(|b| b.asked.iter().any(|(k, _)| *k == peer))
            })
            .map(|(&i, _)| i)
            .collect()
    }

    /// Blocks asked of `peer` and not yet received.
    pub fn asked_of(&self, peer: PeerKey) -> usize {
        self.inflight.get(&peer).copied().unwrap_or(0)
    }
}

/// Ask `peer` for the blocks of piece `index` that `eligible` accepts.
fn take_blocks(
    index: u32,
    p: &mut Partial,
    peer: PeerKey,
    max: usize,
    now: Instant,
    out: &mut Vec<BlockRef>,
    eligible: impl Fn(&BlockState) -> bool,
) {
    let size = p.data.len() as u32;
    for (n, b) in p.blocks.iter_mut().enumerate() {
        if out.len() >= max {
            return;
        }
        if b.got || !eligible(b) {
            continue;
        }
        b.asked.push((peer, now));
        let begin = n as u32 * MAX_BLOCK;
        out.push(BlockRef {
            index,
            begin,
            length: (size - begin).min(MAX_BLOCK),
        });
    }
}

#[cfg(test)]
#[path = "picker_tests.rs"]
mod tests;
