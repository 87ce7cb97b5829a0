//! Where verified pieces live while they can be uploaded.
//!
//! - [`MemStore`] (a node): pieces in memory, bounded. A piece the local
//!   pipeline has consumed is kept for other peers until the store is over
//!   its `retain` budget, then the oldest consumed pieces go first; pieces
//!   not yet consumed are never dropped (the picker's window bounds them).
//!   A request for a dropped piece is not answered: the asker times out
//!   and asks someone else (BEP 3 has no "no longer have").
//! - [`FileStore`] (the server's seeder): the payload file, read by offset.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::sync::{Arc, Mutex};

use super::metainfo::Info;

/// Reads blocks of verified pieces for uploads.
pub trait PieceStore: Send + Sync {
    /// Bytes `begin..begin+len` of piece `index`, if held.
    fn read(&self, index: u32, begin: u32, len: u32) -> Option<Vec<u8>>;
}

/// Verified pieces in memory (module doc).
#[derive(Debug)]
pub struct MemStore {
    inner: Mutex<MemInner>,
    /// Bytes of consumed pieces kept for uploads.
    retain: u64,
}

#[derive(Debug, Default)]
struct MemInner {
    pieces: BTreeMap<u32, Arc<[u8]>>,
    /// Pieces below this index were consumed by the local pipeline.
    consumed_below: u32,
    consumed_bytes: u64,
    dropped: u64,
}

impl MemStore {
    /// A store that keeps up to `retain` bytes of consumed pieces.
    pub fn new(retain: u64) -> MemStore {
        MemStore {
            inner: Mutex::new(MemInner::default()),
            retain,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keep verified piece `index`.
    pub fn insert(&self, index: u32, data: Arc<[u8]>) {
        let mut m = self.lock();
        let consumed = index < m.consumed_below;
        let len = data.len() as u64;
        if m.pieces.insert(index, data).is_none() && consumed {
            m.consumed_bytes += len;
        }
        self.trim(&mut m);
    }

    /// Piece `index`, if held.
    pub fn get(&self, index: u32) -> Option<Arc<[u8]>> {
        self.lock().pieces.get(&index).cloned()
    }

    /// The local pipeline no longer needs pieces below `index`.
    pub fn consumed_below(&self, index: u32) {
        let mut m = self.lock();
        if index <= m.consumed_below {
            return;
        }
        let newly: u64 = m
            .pieces
            .range(m.consumed_below..index)
            .map(|(_, d)| d.len() as u64)
            .sum();
        m.consumed_below = index;
        m.consumed_bytes += newly;
        self.trim(&mut m);
    }

    /// Pieces dropped so far.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Bytes held.
    pub fn held_bytes(&self) -> u64 {
        self.lock().pieces.values().map(|d| d.len() as u64).sum()
    }

    fn trim(&self, m: &mut MemInner) {
        while m.consumed_bytes > self.retain {
            let Some((&i, _)) = m.pieces.range(..m.consumed_below).next() else {
                break;
            };
            let d = m.pieces.remove(&i).expect("present");
            m.consumed_bytes -= d.len() as u64;
            m.dropped += 1;
        }
    }
}

impl PieceStore for MemStore {
    fn read(&self, index: u32, begin: u32, len: u32) -> Option<Vec<u8>> {
        let piece = self.get(index)?;
        piece
            .get(begin as usize..(begin as usize).checked_add(len as usize)?)
            .map(<[u8]>::to_vec)
    }
}

/// The whole payload in a file (the server's seeder).
#[derive(Debug)]
pub struct FileStore {
    file: File,
    piece_length: u64,
    length: u64,
}

impl FileStore {
    /// `file` holds the payload `info` describes (checked at import).
    pub fn new(file: File, info: &Info) -> FileStore {
        FileStore {
            file,
            piece_length: info.piece_length.into(),
            length: info.length,
        }
    }
}

impl PieceStore for FileStore {
    fn read(&self, index: u32, begin: u32, len: u32) -> Option<Vec<u8>> {
        let start = u64::from(index) * self.piece_length;
        let end_of_piece = (start + self.piece_length).min(self.length);
        let offset = start + u64::from(begin);
        if offset.checked_add(len.into())? > end_of_piece {
            return None;
        }
        let mut buf = vec![0u8; len as usize];
        self.file.read_exact_at(&mut buf, offset).ok()?;
        Some(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumed_pieces_are_dropped_oldest_first_past_the_budget() {
        let s = MemStore::new(20);
        for i in 0..5 {
            s.insert(i, vec![i as u8; 10].into());
        }
        // Nothing consumed: nothing dropped, whatever the budget.
        assert_eq!(s.held_bytes(), 50);
        s.consumed_below(4);
        // 40 consumed bytes, 20 kept: pieces 0 and 1 go.
        assert!(s.get(0).is_none() && s.get(1).is_none());
        assert!(s.get(2).is_some() && s.get(4).is_some());
        assert_eq!(s.dropped(), 2);
        assert_eq!(s.read(2, 3, 4), Some(vec![2; 4]));
        assert_eq!(s.read(2, 8, 4), None);
        assert_eq!(s.read(0, 0, 1), None);
        // A late piece below the line counts as consumed at once.
        s.insert(0, vec![0; 10].into());
        assert!(s.get(0).is_none() || s.get(2).is_none());
        assert_eq!(s.held_bytes(), 30);
    }

    #[test]
    fn file_store_stays_inside_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let data: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let info = Info::build("p", &data[..], data.len() as u64, Some(16 << 10)).unwrap();
        let s = FileStore::new(File::open(&path).unwrap(), &info);
        assert_eq!(s.read(1, 0, 4).unwrap(), data[16384..16388]);
        // Piece 2 is 40000 - 32768 = 7232 bytes.
        assert!(s.read(2, 7000, 232).is_some());
        assert!(s.read(2, 7000, 233).is_none());
        assert!(s.read(0, 16383, 2).is_none());
        assert!(s.read(9, 0, 1).is_none());
    }
}
