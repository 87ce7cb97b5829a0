//! The builder's write side: a source stream is cut into `chunk_size`
//! slices, each raw-deflated on its own (a batch in parallel), and appended
//! to the payload with its chunk table entry. Memory: one batch of chunks.

use std::fs::File;
use std::io::{self, BufWriter, Write};

use flate2::{Compress, Compression, FlushCompress, Status};
use sha2::{Digest, Sha256};

use super::digest::Sha256Digest;
use super::manifest::{max_chunk_length, ChunkEntry};

/// The payload file being written, and its chunk table so far.
pub(crate) struct PayloadWriter {
    file: BufWriter<File>,
    offset: u64,
    hasher: Sha256,
    pub(crate) chunks: Vec<ChunkEntry>,
}

impl PayloadWriter {
    pub(crate) fn new(file: File) -> Self {
        PayloadWriter {
            // Chunks are written whole; the buffer only merges small ones.
            file: BufWriter::with_capacity(1 << 20, file),
            offset: 0,
            hasher: Sha256::new(),
            chunks: Vec::new(),
        }
    }

    fn append(&mut self, compressed: &[u8], size: u64) -> io::Result<()> {
        self.file.write_all(compressed)?;
        self.hasher.update(compressed);
        let length = compressed.len() as u64;
        self.chunks.push(ChunkEntry {
            offset: self.offset,
            length,
            size,
            sha256: Sha256Digest::of(compressed),
        });
        self.offset += length;
        Ok(())
    }

    /// Flush and fsync; the payload's size and SHA-256.
    pub(crate) fn finish(self) -> io::Result<(u64, Sha256Digest)> {
        let file = self.file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok((self.offset, Sha256Digest::from_hasher(self.hasher)))
    }
}

/// What a finished source contributed.
pub(crate) struct SourceSummary {
    pub(crate) first_chunk: usize,
    pub(crate) chunks: usize,
    pub(crate) size: u64,
    pub(crate) sha256: Sha256Digest,
}

/// A `Write` that chunks, compresses and appends one source.
pub(crate) struct ChunkWriter<'p> {
    out: &'p mut PayloadWriter,
    chunk_size: usize,
    level: u32,
    batch: usize,
    /// Full chunks waiting to be compressed together.
    pending: Vec<Vec<u8>>,
    current: Vec<u8>,
    hasher: Sha256,
    size: u64,
    first_chunk: usize,
}

impl<'p> ChunkWriter<'p> {
    /// `chunk_size` was validated (≤ 64 MiB); `batch` ≥ 1 chunks are
    /// compressed at once, one thread each.
    pub(crate) fn new(
        out: &'p mut PayloadWriter,
        chunk_size: usize,
        level: u32,
        batch: usize,
    ) -> Self {
        let first_chunk = out.chunks.len();
        ChunkWriter {
            out,
            chunk_size,
            level,
            batch: batch.max(1),
            pending: Vec::new(),
            current: Vec::with_capacity(chunk_size),
            hasher: Sha256::new(),
            size: 0,
            first_chunk,
        }
    }

    fn flush_batch(&mut self) -> io::Result<()> {
        let pending = std::mem::take(&mut self.pending);
        let level = self.level;
        let compressed: Vec<io::Result<Vec<u8>>> = if pending.len() <= 1 {
            pending.iter().map(|c| deflate(c, level)).collect()
        } else {
            std::thread::scope(|s| {
                let jobs: Vec<_> = pending
                    .iter()
                    .map(|c| s.spawn(move || deflate(c, level)))
                    .collect();
                jobs.into_iter()
                    .map(|j| {
                        j.join()
                            .unwrap_or_else(|_| Err(io::Error::other("compressor panicked")))
                    })
                    .collect()
            })
        };
        for (raw, z) in pending.iter().zip(compressed) {
            self.out.append(&z?, raw.len() as u64)?;
        }
        Ok(())
    }

    /// Compress what is left (the short last chunk) and sum up.
    pub(crate) fn finish(mut self) -> io::Result<SourceSummary> {
        if !self.current.is_empty() {
            let last = std::mem::take(&mut self.current);
            self.pending.push(last);
        }
        self.flush_batch()?;
        Ok(SourceSummary {
            first_chunk: self.first_chunk,
            chunks: self.out.chunks.len() - self.first_chunk,
            size: self.size,
            sha256: Sha256Digest::from_hasher(self.hasher),
        })
    }
}

impl Write for ChunkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.chunk_size - self.current.len();
        let n = buf.len().min(room);
        self.current.extend_from_slice(&buf[..n]);
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        if self.current.len() == self.chunk_size {
            let full = std::mem::replace(&mut self.current, Vec::with_capacity(self.chunk_size));
            self.pending.push(full);
            if self.pending.len() >= self.batch {
                self.flush_batch()?;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Raw deflate of one chunk, in one call: the output buffer is sized for
/// the worst case, so `Finish` always reaches the end of the stream.
pub(crate) fn deflate(data: &[u8], level: u32) -> io::Result<Vec<u8>> {
    let bound = usize::try_from(max_chunk_length(data.len() as u64)).unwrap_or(usize::MAX);
    let mut out = Vec::with_capacity(bound);
    let mut z = Compress::new(Compression::new(level), false);
    match z.compress_vec(data, &mut out, FlushCompress::Finish) {
        Ok(Status::StreamEnd) => Ok(out),
        Ok(_) => Err(io::Error::other(
            "a compressed chunk exceeds its size bound",
        )),
        Err(e) => Err(io::Error::other(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::chunk_verify::verify_chunk;
    use crate::image::inflate::inflate;

    fn write_source(data: &[u8], chunk_size: usize, batch: usize) -> (Vec<u8>, Vec<ChunkEntry>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("payload");
        let mut out = PayloadWriter::new(File::create(&path).unwrap());
        let mut w = ChunkWriter::new(&mut out, chunk_size, 6, batch);
        // Odd-sized writes cross chunk boundaries.
        for piece in data.chunks(1000) {
            w.write_all(piece).unwrap();
        }
        let s = w.finish().unwrap();
        assert_eq!((s.first_chunk, s.size), (0, data.len() as u64));
        assert_eq!(s.sha256, Sha256Digest::of(data));
        let chunks = out.chunks.clone();
        let (size, sha) = out.finish().unwrap();
        let payload = std::fs::read(&path).unwrap();
        assert_eq!(
            (size, sha),
            (payload.len() as u64, Sha256Digest::of(&payload))
        );
        (payload, chunks)
    }

    #[test]
    fn chunks_inflate_back_and_batching_is_deterministic() {
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 97) as u8).collect();
        let (payload, chunks) = write_source(&data, 4096, 1);
        assert_eq!(chunks.len(), 5);
        assert_eq!(chunks.last().unwrap().size, 20_000 - 4 * 4096);
        let mut back = Vec::new();
        for (i, e) in chunks.iter().enumerate() {
            let z = payload[e.offset as usize..][..e.length as usize].to_vec();
            back.extend(inflate(&verify_chunk(i, e, z).unwrap()).unwrap());
        }
        assert_eq!(back, data);
        assert_eq!(write_source(&data, 4096, 3), (payload, chunks));
    }

    #[test]
    fn incompressible_chunk_fits_the_bound() {
        // xorshift noise does not compress; stored blocks must fit.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let data: Vec<u8> = (0..65536 * 3)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for level in [0, 1, 6, 9] {
            let z = deflate(&data, level).unwrap();
            assert!(z.len() as u64 <= max_chunk_length(data.len() as u64));
        }
        assert_eq!(deflate(b"", 6).map(|z| z.is_empty()).ok(), Some(false));
    }
}
