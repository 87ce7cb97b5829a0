//! A running SHA-256 over the whole payload (every chunk's compressed
//! bytes, in chunk order), checked at the end. Per-chunk hashes already
//! protect what is written; this one proves a *complete* payload, e.g. a
//! downloaded `payload` file, a finished torrent, or the server's store.

use sha2::{Digest, Sha256};

use super::chunk_verify::VerifiedChunk;
use super::digest::Sha256Digest;
use super::manifest::Payload;

/// The payload as a whole does not match.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadHashError {
    /// Chunks must be fed in order, each once.
    #[error("payload hash: got chunk {got} but expected chunk {expected} next")]
    OutOfOrder {
        /// The next index in order.
        expected: usize,
        /// The index fed.
        got: usize,
    },
    /// Fewer or more bytes than `payload.size`.
    #[error("payload: got {got} bytes but the manifest says {expected}")]
    Size {
        /// From the manifest.
        expected: u64,
        /// Hashed.
        got: u64,
    },
    /// The right length, the wrong bytes.
    #[error("payload: SHA-256 is {got} but the manifest says {expected}")]
    Hash {
        /// From the manifest.
        expected: Sha256Digest,
        /// Of the bytes seen.
        got: Sha256Digest,
    },
}

/// Running whole-payload hash.
#[derive(Debug, Clone)]
pub struct PayloadHasher {
    expected: Sha256Digest,
    expected_size: u64,
    hasher: Sha256,
    seen: u64,
    next: usize,
}

impl PayloadHasher {
    /// For the manifest's `payload`.
    pub fn new(payload: &Payload) -> Self {
        PayloadHasher {
            expected: payload.sha256,
            expected_size: payload.size,
            hasher: Sha256::new(),
            seen: 0,
            next: 0,
        }
    }

    /// Feed the next chunk (index 0, 1, 2, … in turn).
    pub fn update(&mut self, chunk: &VerifiedChunk) -> Result<(), PayloadHashError> {
        if chunk.index() != self.next {
            return Err(PayloadHashError::OutOfOrder {
                expected: self.next,
                got: chunk.index(),
            });
        }
        self.hasher.update(chunk.bytes());
        self.seen = self.seen.saturating_add(chunk.bytes().len() as u64);
        self.next += 1;
        Ok(())
    }

    /// The index expected next.
    pub fn next_chunk(&self) -> usize {
        self.next
    }

    /// Check the total; consumes the hasher.
    pub fn finish(self) -> Result<(), PayloadHashError> {
        if self.seen != self.expected_size {
            return Err(PayloadHashError::Size {
                expected: self.expected_size,
                got: self.seen,
            });
        }
        let got = Sha256Digest::from_hasher(self.hasher);
        if got != self.expected {
            return Err(PayloadHashError::Hash {
                expected: self.expected,
                got,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::chunk_verify::verify_chunk;
    use crate::image::manifest::ChunkEntry;

    fn chunk(index: usize, bytes: &[u8]) -> VerifiedChunk {
        let entry = ChunkEntry {
            offset: 0,
            length: bytes.len() as u64,
            size: 1,
            sha256: Sha256Digest::of(bytes),
        };
        verify_chunk(index, &entry, bytes.to_vec()).unwrap()
    }

    fn payload(bytes: &[u8]) -> Payload {
        Payload {
            size: bytes.len() as u64,
            sha256: Sha256Digest::of(bytes),
        }
    }

    #[test]
    fn in_order_matches() {
        let mut h = PayloadHasher::new(&payload(b"abcdef"));
        h.update(&chunk(0, b"ab")).unwrap();
        h.update(&chunk(1, b"cdef")).unwrap();
        assert_eq!(h.next_chunk(), 2);
        assert_eq!(h.finish(), Ok(()));
    }

    #[test]
    fn out_of_order_is_refused() {
        let mut h = PayloadHasher::new(&payload(b"abcdef"));
        let err = h.update(&chunk(1, b"cdef")).unwrap_err();
        assert_eq!(
            err,
            PayloadHashError::OutOfOrder {
                expected: 0,
                got: 1
            }
        );
    }

    #[test]
    fn missing_tail_and_wrong_bytes() {
        let mut h = PayloadHasher::new(&payload(b"abcdef"));
        h.update(&chunk(0, b"ab")).unwrap();
        assert_eq!(
            h.finish().unwrap_err().to_string(),
            "payload: got 2 bytes but the manifest says 6"
        );
        let mut h = PayloadHasher::new(&payload(b"abcdef"));
        h.update(&chunk(0, b"abcdeg")).unwrap();
        assert!(matches!(h.finish(), Err(PayloadHashError::Hash { .. })));
    }
}
