//! The data path every transport feeds: fetch → verify → inflate → hash →
//! hand over, one chunk at a time (coreos-installer's `write_image`,
//! chunk-shaped). Memory stays at about two chunks whatever the image size.
//!
//! Nothing unverified goes further than [`verify_chunk`]; the source hash is
//! checked *before* a source's last chunk is handed over, so a source that
//! fails it never completes. Progress only advances after the consumer
//! accepted a chunk, so after any error the same [`SourceProgress`] resumes
//! at the first chunk not yet delivered (with the same or another
//! [`ChunkSource`]).

use std::io::{self, Read};

use anyhow::Result;

use super::chunk_verify::{verify_chunk, ChunkError, VerifiedChunk};
use super::inflate::{inflate_into, InflateError};
use super::manifest::Manifest;
use super::payload_hash::{PayloadHashError, PayloadHasher};
use super::source::ChunkSource;
use super::source_hash::{SourceHashError, SourceHasher};

/// Why streaming stopped.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The partition index is out of range or the partition has no content.
    #[error("{0} has no content to stream")]
    NoContent(String),
    /// The transport failed: retry, here or elsewhere.
    #[error("fetching chunk {index}")]
    Fetch {
        /// Chunk index.
        index: usize,
        /// The transport's error.
        #[source]
        source: anyhow::Error,
    },
    /// The transport delivered wrong bytes: retry elsewhere.
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    /// A verified chunk is broken: the image is bad.
    #[error(transparent)]
    Inflate(#[from] InflateError),
    /// The consumer (disk writer, extractor) failed.
    #[error("writing chunk {index} at offset {offset} of {source_name}")]
    Sink {
        /// Chunk index.
        index: usize,
        /// Offset in the source's uncompressed stream.
        offset: u64,
        /// `partition 2 (root)`.
        source_name: String,
        /// The consumer's error.
        #[source]
        source: anyhow::Error,
    },
    /// Every chunk verified but the source as a whole does not: the image
    /// is bad.
    #[error(transparent)]
    SourceHash(#[from] SourceHashError),
    /// The payload as a whole does not match.
    #[error(transparent)]
    PayloadHash(#[from] PayloadHashError),
}

impl StreamError {
    /// The chunk it happened at, if any.
    pub fn chunk(&self) -> Option<usize> {
        match self {
            StreamError::Fetch { index, .. } | StreamError::Sink { index, .. } => Some(*index),
            StreamError::Chunk(e) => Some(e.index()),
            StreamError::Inflate(
                InflateError::Corrupt { index }
                | InflateError::Size { index, .. }
                | InflateError::Trailing { index, .. },
            ) => Some(*index),
            _ => None,
        }
    }

    /// A transport problem: resuming from [`SourceProgress::next_chunk`]
    /// (maybe from another source) can succeed. Anything else is a broken
    /// image or a failing consumer.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StreamError::Fetch { .. } | StreamError::Chunk(_))
    }
}

/// Where a source's streaming stands; keep it across retries to resume.
#[derive(Debug, Clone)]
pub struct SourceProgress {
    partition: usize,
    name: String,
    next: usize,
    end: usize,
    offset: u64,
    hasher: SourceHasher,
}

impl SourceProgress {
    /// At the first chunk of `disk.partitions[partition]`'s content.
    pub fn new(manifest: &Manifest, partition: usize) -> Result<Self, StreamError> {
        let name = manifest.partition_name(partition);
        let part = manifest.disk.partitions.get(partition);
        let Some(content) = part.and_then(|p| p.content.as_ref()) else {
            return Err(StreamError::NoContent(name));
        };
        let range = content.chunk_range();
        Ok(SourceProgress {
            partition,
            hasher: SourceHasher::new(name.clone(), content),
            name,
            next: range.start,
            end: range.end,
            offset: 0,
        })
    }

    /// The partition (0-based index) being filled.
    pub fn partition(&self) -> usize {
        self.partition
    }

    /// The first chunk not yet handed over: where a resume starts.
    pub fn next_chunk(&self) -> usize {
        self.next
    }

    /// Uncompressed bytes handed over so far (the next chunk's offset).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Every chunk handed over and the source hash checked.
    pub fn is_done(&self) -> bool {
        self.next >= self.end
    }
}

/// One step: the next chunk fetched, verified, inflated into `buf` and
/// hashed into a copy of the source hasher (checked if it is the last).
/// `None` when the source is done. The caller hands `buf` over, then
/// calls [`SourceProgress::advance`].
fn next_chunk(
    manifest: &Manifest,
    progress: &SourceProgress,
    chunks: &mut dyn ChunkSource,
    buf: &mut Vec<u8>,
    on_verified: &mut dyn FnMut(&VerifiedChunk) -> Result<()>,
) -> Result<Option<SourceHasher>, StreamError> {
    let index = progress.next;
    if index >= progress.end {
        return Ok(None);
    }
    let Some(entry) = manifest.chunks.get(index) else {
        return Err(StreamError::NoContent(progress.name.clone()));
    };
    // Source: whatever the transport delivered.
    let bytes = chunks
        .fetch(index, entry)
        .map_err(|source| StreamError::Fetch { index, source })?;
    // Verify: length and SHA-256 against the signed table, before anything
    // else looks at the bytes.
    let chunk = verify_chunk(index, entry, bytes)?;
    // Tap: verified compressed bytes (forward down a chain, seed a swarm,
    // hash the payload).
    on_verified(&chunk).map_err(|source| sink_error(progress, index, source))?;
    // Inflate: into exactly entry.size bytes, never more.
    inflate_into(&chunk, buf)?;
    // Source hash: on a copy, committed once the consumer took the chunk,
    // so a failed hand-over can be retried without hashing twice.
    let mut hasher = progress.hasher.clone();
    hasher.update(buf);
    if index + 1 == progress.end {
        hasher.clone().finish()?;
    }
    Ok(Some(hasher))
}

impl SourceProgress {
    fn advance(&mut self, hasher: SourceHasher, len: usize) {
        self.hasher = hasher;
        self.next += 1;
        self.offset = self.offset.saturating_add(len as u64);
    }
}

fn sink_error(progress: &SourceProgress, index: usize, source: anyhow::Error) -> StreamError {
    StreamError::Sink {
        index,
        offset: progress.offset,
        source_name: progress.name.clone(),
        source,
    }
}

/// Stream the rest of `progress`'s source from `chunks`, handing each
/// chunk's uncompressed bytes to `on_chunk(offset_in_source, bytes)` (the
/// raw disk writer or the tar extractor). Returns when the source is done;
/// on error, `progress` is where to resume.
pub fn stream_source(
    manifest: &Manifest,
    progress: &mut SourceProgress,
    chunks: &mut dyn ChunkSource,
    on_chunk: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<(), StreamError> {
    stream_source_with(manifest, progress, chunks, |_| Ok(()), on_chunk)
}

/// [`stream_source`], also handing every verified chunk's *compressed*
/// bytes to `on_verified` before inflating it (a chain node forwards them
/// downstream; a torrent peer seeds them).
pub fn stream_source_with(
    manifest: &Manifest,
    progress: &mut SourceProgress,
    chunks: &mut dyn ChunkSource,
    mut on_verified: impl FnMut(&VerifiedChunk) -> Result<()>,
    mut on_chunk: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<(), StreamError> {
    let mut buf = Vec::new();
    while let Some(hasher) = next_chunk(manifest, progress, chunks, &mut buf, &mut on_verified)? {
        let index = progress.next;
        on_chunk(progress.offset, &buf).map_err(|e| sink_error(progress, index, e))?;
        progress.advance(hasher, buf.len());
    }
    Ok(())
}

/// A source as a [`Read`] stream, for consumers that pull (a tar
/// extractor). Errors are [`StreamError`]s inside `io::Error::other`; the
/// reader cannot resume, so give it a [`ChunkSource`] that retries.
///
/// A tar reader stops at the end-of-archive blocks, before the stream's
/// end: call [`SourceReader::finish`] afterwards, or the source hash is
/// never checked.
pub struct SourceReader<'a> {
    manifest: &'a Manifest,
    progress: SourceProgress,
    chunks: &'a mut dyn ChunkSource,
    buf: Vec<u8>,
    pos: usize,
}

impl<'a> SourceReader<'a> {
    /// Read `disk.partitions[partition]`'s content.
    pub fn new(
        manifest: &'a Manifest,
        partition: usize,
        chunks: &'a mut dyn ChunkSource,
    ) -> Result<Self, StreamError> {
        let progress = SourceProgress::new(manifest, partition)?;
        Ok(SourceReader {
            manifest,
            progress,
            chunks,
            buf: Vec::new(),
            pos: 0,
        })
    }

    /// Where streaming stands.
    pub fn progress(&self) -> &SourceProgress {
        &self.progress
    }

    /// Read (verify, inflate, discard) whatever the consumer left unread
    /// and check the source hash.
    pub fn finish(mut self) -> Result<(), StreamError> {
        let mut nothing = |_: &VerifiedChunk| Ok(());
        let (manifest, chunks) = (self.manifest, &mut *self.chunks);
        while let Some(hasher) = next_chunk(
            manifest,
            &self.progress,
            chunks,
            &mut self.buf,
            &mut nothing,
        )? {
            self.progress.advance(hasher, self.buf.len());
        }
        Ok(())
    }
}

impl Read for SourceReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.buf.len() {
            let step = next_chunk(
                self.manifest,
                &self.progress,
                self.chunks,
                &mut self.buf,
                &mut |_| Ok(()),
            );
            match step.map_err(io::Error::other)? {
                None => return Ok(0),
                Some(hasher) => self.progress.advance(hasher, self.buf.len()),
            }
            self.pos = 0;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Check the whole payload without inflating: every chunk's length and
/// hash, then the payload hash (a complete download, a finished torrent).
pub fn verify_payload(
    manifest: &Manifest,
    chunks: &mut dyn ChunkSource,
) -> Result<(), StreamError> {
    let mut payload = PayloadHasher::new(&manifest.payload);
    for (index, entry) in manifest.chunks.iter().enumerate() {
        let bytes = chunks
            .fetch(index, entry)
            .map_err(|source| StreamError::Fetch { index, source })?;
        payload.update(&verify_chunk(index, entry, bytes)?)?;
    }
    Ok(payload.finish()?)
}

/// Check everything: each source streamed (verified, inflated, hashed) to
/// nowhere, and the payload hash. What the server runs after an import.
pub fn verify_image(manifest: &Manifest, chunks: &mut dyn ChunkSource) -> Result<(), StreamError> {
    let mut payload = PayloadHasher::new(&manifest.payload);
    for (partition, _, _) in manifest.sources() {
        let mut progress = SourceProgress::new(manifest, partition)?;
        let on_verified = |c: &VerifiedChunk| Ok(payload.update(c)?);
        stream_source_with(manifest, &mut progress, chunks, on_verified, |_, _| Ok(()))?;
    }
    Ok(payload.finish()?)
}
