//! Layer 3: a running SHA-256 over one source's uncompressed bytes, checked
//! when the source ends. Each chunk was already verified compressed; this
//! catches what that cannot: an inflater bug, or chunks delivered to the
//! writer out of order or twice.

use sha2::{Digest, Sha256};

use super::digest::Sha256Digest;
use super::manifest::Content;

/// The source's bytes don't match its manifest entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceHashError {
    /// More or fewer bytes than `content.size`.
    #[error("{source_name}: got {got} uncompressed bytes but the manifest says {expected}")]
    Size {
        /// `partition 2 (root)`.
        source_name: String,
        /// From the manifest.
        expected: u64,
        /// Hashed.
        got: u64,
    },
    /// The right length, the wrong bytes.
    #[error("{source_name}: uncompressed SHA-256 is {got} but the manifest says {expected}")]
    Hash {
        /// `partition 2 (root)`.
        source_name: String,
        /// From the manifest.
        expected: Sha256Digest,
        /// Of the bytes seen.
        got: Sha256Digest,
    },
}

/// Running hash of one source. `Clone` so a caller can checkpoint it.
#[derive(Debug, Clone)]
pub struct SourceHasher {
    name: String,
    expected: Sha256Digest,
    expected_size: u64,
    hasher: Sha256,
    seen: u64,
}

impl SourceHasher {
    /// For `content`; `name` is how errors name the source.
    pub fn new(name: String, content: &Content) -> Self {
        SourceHasher {
            name,
            expected: content.sha256,
            expected_size: content.size,
            hasher: Sha256::new(),
            seen: 0,
        }
    }

    /// Feed the next uncompressed bytes, in source order.
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.seen = self.seen.saturating_add(bytes.len() as u64);
    }

    /// Bytes fed so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Check the total; consumes the hasher.
    pub fn finish(self) -> Result<(), SourceHashError> {
        if self.seen != self.expected_size {
            return Err(SourceHashError::Size {
                source_name: self.name,
                expected: self.expected_size,
                got: self.seen,
            });
        }
        let got = Sha256Digest::from_hasher(self.hasher);
        if got != self.expected {
            return Err(SourceHashError::Hash {
                source_name: self.name,
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
    use crate::image::manifest::ContentKind;

    fn content(data: &[u8]) -> Content {
        Content {
            kind: ContentKind::Raw,
            first_chunk: 0,
            chunks: 1,
            size: data.len() as u64,
            sha256: Sha256Digest::of(data),
            entries: None,
            file_bytes: None,
        }
    }

    #[test]
    fn split_updates_match() {
        let c = content(b"hello world");
        let mut h = SourceHasher::new("partition 1".into(), &c);
        h.update(b"hello ");
        h.update(b"");
        h.update(b"world");
        assert_eq!(h.seen(), 11);
        assert_eq!(h.finish(), Ok(()));
    }

    #[test]
    fn reordered_bytes_fail() {
        let c = content(b"hello world");
        let mut h = SourceHasher::new("partition 2 (root)".into(), &c);
        h.update(b"world");
        h.update(b"hello ");
        let msg = h.finish().unwrap_err().to_string();
        assert!(
            msg.starts_with("partition 2 (root): uncompressed SHA-256 is "),
            "{msg}"
        );
    }

    #[test]
    fn short_source_fails() {
        let c = content(b"hello world");
        let mut h = SourceHasher::new("partition 1".into(), &c);
        h.update(b"hello");
        assert_eq!(
            h.finish().unwrap_err().to_string(),
            "partition 1: got 5 uncompressed bytes but the manifest says 11"
        );
    }
}
