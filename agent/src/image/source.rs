//! Where chunks come from. HTTP (ranged GETs), the chain and the torrent
//! swarm each implement [`ChunkSource`]; the files here serve tests, the
//! server (its own store) and a node reading a local copy.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use anyhow::{ensure, Context as _, Result};

use super::manifest::ChunkEntry;

/// Delivers a chunk's compressed bytes. Implementations return what they
/// got — the pipeline verifies length and hash, so a source need not (but
/// must not allocate more than `entry.length`, which the signed manifest
/// bounds by [`max_chunk_length`](super::manifest::max_chunk_length)).
pub trait ChunkSource {
    /// Chunk `index`, whose table entry is `entry`.
    fn fetch(&mut self, index: usize, entry: &ChunkEntry) -> Result<Vec<u8>>;
}

impl<T: ChunkSource + ?Sized> ChunkSource for &mut T {
    fn fetch(&mut self, index: usize, entry: &ChunkEntry) -> Result<Vec<u8>> {
        (**self).fetch(index, entry)
    }
}

/// A payload in memory (tests, small images).
#[derive(Debug, Clone)]
pub struct MemSource<T>(pub T);

impl<T: AsRef<[u8]>> ChunkSource for MemSource<T> {
    fn fetch(&mut self, index: usize, entry: &ChunkEntry) -> Result<Vec<u8>> {
        let payload = self.0.as_ref();
        let range = usize::try_from(entry.offset)
            .ok()
            .zip(usize::try_from(entry.length).ok())
            .and_then(|(start, len)| payload.get(start..start.checked_add(len)?));
        let bytes = range.with_context(|| {
            format!(
                "chunk {index}: bytes {}+{} are past the end of the {}-byte payload",
                entry.offset,
                entry.length,
                payload.len()
            )
        })?;
        Ok(bytes.to_vec())
    }
}

/// A `payload` file, read by offset (positioned reads: no shared cursor).
#[derive(Debug)]
pub struct FileSource {
    file: File,
}

impl FileSource {
    /// Open `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        Ok(FileSource { file })
    }

    /// Use an open file.
    pub fn new(file: File) -> Self {
        FileSource { file }
    }
}

impl ChunkSource for FileSource {
    fn fetch(&mut self, index: usize, entry: &ChunkEntry) -> Result<Vec<u8>> {
        let len = usize::try_from(entry.length).context("chunk length")?;
        // The file size bounds the allocation even if `entry` was not
        // validated.
        let file_len = self.file.metadata().context("reading payload size")?.len();
        let end = entry.offset.checked_add(entry.length);
        ensure!(
            end.is_some_and(|end| end <= file_len),
            "chunk {index}: bytes {}+{} are past the end of the {file_len}-byte payload",
            entry.offset,
            entry.length
        );
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, entry.offset)
            .with_context(|| format!("reading chunk {index} at offset {}", entry.offset))?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::digest::Sha256Digest;

    fn entry(offset: u64, length: u64) -> ChunkEntry {
        ChunkEntry {
            offset,
            length,
            size: 1,
            sha256: Sha256Digest::default(),
        }
    }

    #[test]
    fn mem_source_by_offset() {
        let mut s = MemSource(b"0123456789".to_vec());
        assert_eq!(s.fetch(0, &entry(2, 3)).unwrap(), b"234");
        assert_eq!(s.fetch(1, &entry(10, 0)).unwrap(), b"");
        let err = s.fetch(4, &entry(8, 3)).unwrap_err().to_string();
        assert_eq!(
            err,
            "chunk 4: bytes 8+3 are past the end of the 10-byte payload"
        );
        assert!(s.fetch(4, &entry(u64::MAX, 3)).is_err());
    }

    #[test]
    fn file_source_by_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("payload");
        std::fs::write(&path, b"0123456789").unwrap();
        let mut s = FileSource::open(&path).unwrap();
        assert_eq!(s.fetch(0, &entry(7, 3)).unwrap(), b"789");
        assert!(s.fetch(1, &entry(8, 3)).is_err());
        // A huge length must fail, not allocate.
        assert!(s.fetch(1, &entry(0, u64::MAX)).is_err());
    }
}
