//! Layer 1 of the pipeline: a chunk's compressed bytes, as a transport
//! delivered them, checked against the signed chunk table. Only a
//! [`VerifiedChunk`] reaches the inflater, and only this module makes one.

use sha2::{Digest, Sha256};

use super::digest::Sha256Digest;
use super::manifest::ChunkEntry;

/// Compressed bytes whose length and SHA-256 match the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedChunk {
    index: usize,
    size: u64,
    bytes: Vec<u8>,
}

impl VerifiedChunk {
    /// Its index in the chunk table.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Its uncompressed length, from the manifest.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The compressed bytes (e.g. to forward down a chain or seed a swarm).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The compressed bytes, by value.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// A chunk that does not match its manifest entry: a transport error or
/// tampering, never something to write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// Short or long delivery.
    #[error("chunk {index}: got {got} bytes but the manifest says {expected}")]
    Length {
        /// Chunk index.
        index: usize,
        /// From the manifest.
        expected: u64,
        /// Delivered.
        got: u64,
    },
    /// Corrupted or substituted bytes.
    #[error("chunk {index}: SHA-256 is {got} but the manifest says {expected}")]
    Hash {
        /// Chunk index.
        index: usize,
        /// From the manifest.
        expected: Sha256Digest,
        /// Of the delivered bytes.
        got: Sha256Digest,
    },
}

impl ChunkError {
    /// The chunk it is about.
    pub fn index(&self) -> usize {
        match self {
            ChunkError::Length { index, .. } | ChunkError::Hash { index, .. } => *index,
        }
    }
}

/// Check `bytes` against chunk `index`'s `entry`: length first (cheap, and
/// it tells a truncated download from a corrupted one), then SHA-256.
pub fn verify_chunk(
    index: usize,
    entry: &ChunkEntry,
    bytes: Vec<u8>,
) -> Result<VerifiedChunk, ChunkError> {
    let got = bytes.len() as u64;
    if got != entry.length {
        return Err(ChunkError::Length {
            index,
            expected: entry.length,
            got,
        });
    }
    let hash = Sha256Digest::from_hasher(Sha256::new_with_prefix(&bytes));
    if hash != entry.sha256 {
        return Err(ChunkError::Hash {
            index,
            expected: entry.sha256,
            got: hash,
        });
    }
    Ok(VerifiedChunk {
        index,
        size: entry.size,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(bytes: &[u8]) -> ChunkEntry {
        ChunkEntry {
            offset: 0,
            length: bytes.len() as u64,
            size: 100,
            sha256: Sha256Digest::of(bytes),
        }
    }

    #[test]
    fn accepts_matching_bytes() {
        let e = entry(b"compressed");
        let c = verify_chunk(3, &e, b"compressed".to_vec()).unwrap();
        assert_eq!(
            (c.index(), c.size(), c.bytes()),
            (3, 100, &b"compressed"[..])
        );
    }

    #[test]
    fn rejects_wrong_length() {
        let e = entry(b"compressed");
        let err = verify_chunk(17, &e, b"compresse".to_vec()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "chunk 17: got 9 bytes but the manifest says 10"
        );
        assert_eq!(err.index(), 17);
    }

    #[test]
    fn rejects_flipped_bit_naming_both_hashes() {
        let e = entry(b"compressed");
        let err = verify_chunk(2, &e, b"compressee".to_vec()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("chunk 2: SHA-256 is "), "{msg}");
        assert!(msg.contains(&e.sha256.to_string()), "{msg}");
        assert!(
            msg.contains(&Sha256Digest::of(b"compressee").to_string()),
            "{msg}"
        );
    }
}
