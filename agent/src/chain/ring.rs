//! The replay buffer: the newest verified chunks, in order, held once and
//! shared (by `Arc`) by the local write pipeline and every downstream
//! sender.
//!
//! Invariants: it holds exactly the chunks `oldest()..next()`; chunks are
//! only added at `next()` and only dropped at `oldest()`; a chunk at or
//! after the *pin* (the local pipeline's next chunk) is never dropped, so
//! the local disk never loses data to the buffer. Past its capacity the
//! oldest unpinned chunks go first; if everything left is pinned the
//! receiver must wait ([`Ring::has_room`]) — that is where a slow disk
//! finally slows its own upstream. Memory: at most `capacity` plus one
//! chunk.

use std::collections::VecDeque;
use std::sync::Arc;

/// A verified chunk's compressed bytes, shared without copying.
pub type Bytes = Arc<Vec<u8>>;

/// What the buffer says about a chunk index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// Here it is.
    Have(Bytes),
    /// Dropped already; the oldest chunk still held is `oldest`.
    Evicted { oldest: u32 },
    /// Not received yet.
    NotYet,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Ring {
    oldest: u32,
    chunks: VecDeque<Bytes>,
    bytes: usize,
    capacity: usize,
    pin: u32,
}

impl Ring {
    /// An empty buffer of `capacity` bytes whose next chunk is `start`,
    /// pinned at `start` (a local pipeline will read from there).
    pub fn new(capacity: usize, start: u32) -> Self {
        Ring {
            oldest: start,
            chunks: VecDeque::new(),
            bytes: 0,
            capacity,
            pin: start,
        }
    }

    /// The next chunk to be added: how far this node has received.
    pub fn next(&self) -> u32 {
        self.oldest + self.chunks.len() as u32
    }

    /// The oldest chunk held (equal to `next()` when empty).
    pub fn oldest(&self) -> u32 {
        self.oldest
    }

    /// The local pipeline's next chunk (see [`Ring::set_pin`]).
    pub fn pin(&self) -> u32 {
        self.pin
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether another chunk may be added without waiting for the pin.
    pub fn has_room(&self) -> bool {
        self.bytes <= self.capacity
    }

    /// Add chunk `index`, which must be `next()`.
    pub fn push(&mut self, index: u32, bytes: Bytes) -> Result<(), String> {
        if index != self.next() {
            return Err(format!(
                "chunk {index} arrived but chunk {} is next",
                self.next()
            ));
        }
        self.bytes += bytes.len();
        self.chunks.push_back(bytes);
        self.evict();
        Ok(())
    }

    /// Chunk `index`, if held.
    pub fn get(&self, index: u32) -> Slot {
        if index < self.oldest {
            Slot::Evicted {
                oldest: self.oldest,
            }
        } else if index >= self.next() {
            Slot::NotYet
        } else {
            Slot::Have(self.chunks[(index - self.oldest) as usize].clone())
        }
    }

    /// The local pipeline's next chunk: everything before it may go.
    /// `u32::MAX` unpins everything (no local pipeline, or it is done).
    pub fn set_pin(&mut self, pin: u32) {
        self.pin = pin;
        self.evict();
    }

    fn evict(&mut self) {
        while self.bytes > self.capacity && self.oldest < self.pin {
            let Some(c) = self.chunks.pop_front() else {
                break;
            };
            self.bytes -= c.len();
            self.oldest += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn chunk(n: usize) -> Bytes {
        Arc::new(vec![7u8; n])
    }

    #[test]
    fn keeps_the_newest_within_capacity() {
        let mut r = Ring::new(250, 0);
        r.set_pin(u32::MAX);
        for i in 0..5 {
            r.push(i, chunk(100)).unwrap();
        }
        // 300 > 250: chunks 0..3 dropped one by one until ≤ 250.
        assert_eq!((r.oldest(), r.next(), r.bytes()), (3, 5, 200));
        assert_eq!(r.get(2), Slot::Evicted { oldest: 3 });
        assert_eq!(r.get(4), Slot::Have(chunk(100)));
        assert_eq!(r.get(5), Slot::NotYet);
        assert!(r.push(7, chunk(1)).unwrap_err().contains("chunk 5 is next"));
    }

    #[test]
    fn the_pin_holds_chunks_and_makes_the_receiver_wait() {
        let mut r = Ring::new(250, 10);
        for i in 10..13 {
            assert!(r.has_room());
            r.push(i, chunk(100)).unwrap();
        }
        // Nothing consumed locally: all three stay, the receiver waits.
        assert_eq!((r.oldest(), r.bytes(), r.has_room()), (10, 300, false));
        r.set_pin(11);
        assert_eq!((r.oldest(), r.bytes(), r.has_room()), (11, 200, true));
        assert_eq!(r.get(10), Slot::Evicted { oldest: 11 });
    }

    #[test]
    fn a_chunk_larger_than_the_capacity_still_passes() {
        let mut r = Ring::new(10, 0);
        r.push(0, chunk(50)).unwrap();
        assert!(!r.has_room());
        r.set_pin(1);
        assert_eq!((r.oldest(), r.next(), r.bytes()), (1, 1, 0));
        assert!(r.has_room());
    }

    proptest! {
        /// Random pushes and local reads: memory stays within capacity +
        /// one chunk, nothing at or after the pin is ever dropped, and
        /// every held chunk is where `get` says.
        #[test]
        fn bounded_and_never_drops_unread(ops in proptest::collection::vec((any::<bool>(), 1usize..120), 1..200)) {
            let cap = 300;
            let mut r = Ring::new(cap, 0);
            let mut local = 0u32;
            let mut sizes = Vec::new();
            for (push, size) in ops {
                if push && r.has_room() {
                    let i = r.next();
                    r.push(i, chunk(size)).unwrap();
                    sizes.push(size);
                } else if local < r.next() {
                    prop_assert!(matches!(r.get(local), Slot::Have(_)));
                    local += 1;
                    r.set_pin(local);
                }
                prop_assert!(r.bytes() <= cap + 120);
                prop_assert!(r.oldest() <= local);
                let held: usize = sizes[r.oldest() as usize..].iter().sum();
                prop_assert_eq!(held, r.bytes());
                if r.bytes() > cap {
                    prop_assert_eq!(r.oldest(), local);
                }
            }
        }
    }
}
