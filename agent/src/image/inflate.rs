//! Layer 2: a verified chunk → its uncompressed bytes. Raw deflate (no zlib
//! header: the manifest already carries a stronger checksum), inflated into
//! a buffer of exactly the manifest's size, so a hostile stream cannot make
//! the agent allocate more than `chunk_size` (a "deflate bomb" stops at the
//! buffer's end and is an error).

use flate2::{Decompress, FlushDecompress, Status};

use super::chunk_verify::VerifiedChunk;
use super::manifest::MAX_CHUNK_SIZE;

/// A verified chunk that does not inflate to its declared size. The chunk
/// matched the signed manifest, so the image itself is broken: retrying
/// another transport will not help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// Not a deflate stream.
    #[error("chunk {index}: invalid deflate data")]
    Corrupt {
        /// Chunk index.
        index: usize,
    },
    /// Ends early, or has bytes after its end.
    #[error("chunk {index}: inflates to {got} bytes{more} but the manifest says {expected}")]
    Size {
        /// Chunk index.
        index: usize,
        /// From the manifest.
        expected: u64,
        /// Produced (a lower bound when `more` is set).
        got: u64,
        /// `" or more"` when the stream went past the declared size, else "".
        more: &'static str,
    },
    /// The compressed bytes continue after the deflate stream's end.
    #[error("chunk {index}: {extra} bytes after the end of the deflate stream")]
    Trailing {
        /// Chunk index.
        index: usize,
        /// How many.
        extra: u64,
    },
}

/// Inflate `chunk` into `out` (cleared first; reusing one buffer avoids a
/// large allocation per chunk). On success `out.len() == chunk.size()`.
pub fn inflate_into(chunk: &VerifiedChunk, out: &mut Vec<u8>) -> Result<(), InflateError> {
    let index = chunk.index();
    let expected = chunk.size();
    // A parsed manifest bounds size by chunk_size (≤ 64 MiB); check again
    // so an entry that skipped validation cannot make us allocate more.
    let size = usize::try_from(expected)
        .ok()
        .filter(|_| expected <= MAX_CHUNK_SIZE)
        .ok_or(InflateError::Size {
            index,
            expected,
            got: 0,
            more: "",
        })?;
    out.clear();
    out.resize(size, 0);

    let input = chunk.bytes();
    let mut z = Decompress::new(false);
    // FlushDecompress::None, not Finish: miniz_oxide treats Finish as "the
    // output buffer holds everything" and fails for good when it does not,
    // which would hide the difference between "too long" and "corrupt".
    let corrupt = |_| InflateError::Corrupt { index };
    let status = z
        .decompress(input, out, FlushDecompress::None)
        .map_err(corrupt)?;
    let produced = z.total_out();
    let ended = match status {
        Status::StreamEnd => true,
        // Output full (or input exhausted) without the end marker: probe
        // one more byte to tell "longer than declared" from "truncated".
        Status::Ok | Status::BufError => {
            let mut probe = [0u8; 1];
            let before = z.total_in();
            let rest = input.get(usize::try_from(before).unwrap_or(usize::MAX)..);
            let rest = rest.unwrap_or_default();
            let status = z
                .decompress(rest, &mut probe, FlushDecompress::None)
                .map_err(corrupt)?;
            if z.total_out() > produced {
                return Err(InflateError::Size {
                    index,
                    expected,
                    got: z.total_out(),
                    more: " or more",
                });
            }
            status == Status::StreamEnd
        }
    };
    if !ended || produced != expected {
        return Err(InflateError::Size {
            index,
            expected,
            got: produced,
            more: "",
        });
    }
    let extra = (input.len() as u64).saturating_sub(z.total_in());
    if extra != 0 {
        return Err(InflateError::Trailing { index, extra });
    }
    Ok(())
}

/// [`inflate_into`] a fresh buffer.
pub fn inflate(chunk: &VerifiedChunk) -> Result<Vec<u8>, InflateError> {
    let mut out = Vec::new();
    inflate_into(chunk, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use flate2::{Compress, Compression, FlushCompress};

    use super::*;
    use crate::image::chunk_verify::verify_chunk;
    use crate::image::digest::Sha256Digest;
    use crate::image::manifest::ChunkEntry;

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut z = Compress::new(Compression::new(6), false);
        let mut out = Vec::with_capacity(data.len() + 64);
        z.compress_vec(data, &mut out, FlushCompress::Finish)
            .unwrap();
        out
    }

    /// A chunk verified against an entry claiming `size` uncompressed bytes.
    fn chunk(compressed: Vec<u8>, size: u64) -> VerifiedChunk {
        let entry = ChunkEntry {
            offset: 0,
            length: compressed.len() as u64,
            size,
            sha256: Sha256Digest::of(&compressed),
        };
        verify_chunk(5, &entry, compressed).unwrap()
    }

    #[test]
    fn round_trip_exact_size() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let out = inflate(&chunk(deflate(&data), 10_000)).unwrap();
        assert_eq!(out, data);
        let mut buf = vec![1, 2, 3];
        inflate_into(&chunk(deflate(b"abc"), 3), &mut buf).unwrap();
        assert_eq!(buf, b"abc");
    }

    #[test]
    fn longer_than_declared_stops_at_the_bound() {
        // 1 MiB of zeros compresses to ~1 KiB: a bomb if unbounded.
        let data = vec![0u8; 1 << 20];
        let err = inflate(&chunk(deflate(&data), 4096)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "chunk 5: inflates to 4097 bytes or more but the manifest says 4096"
        );
    }

    #[test]
    fn shorter_than_declared() {
        let err = inflate(&chunk(deflate(b"hello"), 6)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "chunk 5: inflates to 5 bytes but the manifest says 6"
        );
    }

    #[test]
    fn truncated_stream() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 13 % 256) as u8).collect();
        let mut z = deflate(&data);
        z.truncate(z.len() / 2);
        assert!(inflate(&chunk(z, 5000)).is_err());
    }

    #[test]
    fn trailing_garbage() {
        let mut z = deflate(b"hello");
        z.extend_from_slice(b"xx");
        let err = inflate(&chunk(z, 5)).unwrap_err();
        assert_eq!(err, InflateError::Trailing { index: 5, extra: 2 });
    }

    #[test]
    fn oversized_entry_is_refused_without_allocating() {
        let err = inflate(&chunk(deflate(b"x"), u64::MAX)).unwrap_err();
        assert!(matches!(err, InflateError::Size { got: 0, .. }), "{err}");
    }

    #[test]
    fn not_deflate() {
        // Block type 3 is reserved: invalid from the first byte.
        assert!(inflate(&chunk(vec![0xff; 16], 16)).is_err());
        assert!(inflate(&chunk(vec![0x07], 16)).is_err());
    }
}
