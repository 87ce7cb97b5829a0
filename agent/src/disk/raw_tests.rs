//! Raw writes on sparse temp files.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use proptest::prelude::*;

use super::*;

const MIB: u64 = 1 << 20;

/// A sparse 8 MiB disk file with a 4 MiB partition at 1 MiB.
fn setup(dir: &tempfile::TempDir) -> PartTarget {
    let path = dir.path().join("disk.img");
    File::create(&path).unwrap().set_len(8 * MIB).unwrap();
    PartTarget {
        path,
        offset: MIB,
        size: 4 * MIB,
    }
}

fn read_part(t: &PartTarget) -> Vec<u8> {
    let data = fs::read(&t.path).unwrap();
    data[t.offset as usize..(t.offset + t.size) as usize].to_vec()
}

fn fill(path: &Path, byte: u8) {
    let len = fs::metadata(path).unwrap().len() as usize;
    fs::write(path, vec![byte; len]).unwrap();
}

#[test]
fn zero_blocks_are_skipped_and_stay_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let t = setup(&dir);
    let w = RawWriter::open(&t, true).unwrap();
    let mut chunk = vec![0u8; 2 * MIB as usize + 8192];
    chunk[..4096].fill(0xAA);
    chunk[2 * MIB as usize + 4096..].fill(0xBB);
    let stats = w.write_chunk(MIB, &chunk).unwrap();
    assert_eq!(
        stats,
        WriteStats {
            written: 8192,
            skipped: 2 * MIB
        }
    );
    w.sync().unwrap();
    let part = read_part(&t);
    assert_eq!(part[MIB as usize..MIB as usize + chunk.len()], chunk[..]);
    // Only the two written blocks (plus filesystem slack) are allocated.
    assert!(fs::metadata(&t.path).unwrap().blocks() * 512 < 256 * 1024);
    w.verify_chunk(MIB, chunk.len() as u64, &sha256(&chunk))
        .unwrap();
}

#[test]
fn unaligned_chunks_split_at_partition_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let t = setup(&dir);
    let w = RawWriter::open(&t, true).unwrap();
    // 100 data bytes at 1000, then zeros to 16384, then data.
    let mut chunk = vec![0u8; 20_000];
    chunk[..100].fill(1);
    chunk[15_384..].fill(2);
    let stats = w.write_chunk(1000, &chunk).unwrap();
    // Block 0 (1000..4096) holds data: written whole. Blocks 1..3 are zero.
    // Block 4 (16384..) holds data.
    assert_eq!(
        stats,
        WriteStats {
            written: 3096 + 4616,
            skipped: 3 * 4096
        }
    );
    assert_eq!(read_part(&t)[1000..21_000], chunk[..]);
}

#[test]
fn without_zero_skip_every_byte_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let t = setup(&dir);
    fill(&t.path, 0xFF);
    let w = RawWriter::open(&t, false).unwrap();
    let chunk = vec![0u8; 3 * 4096];
    assert_eq!(
        w.write_chunk(4096, &chunk).unwrap(),
        WriteStats {
            written: 3 * 4096,
            skipped: 0
        }
    );
    assert!(read_part(&t)[4096..4 * 4096].iter().all(|&b| b == 0));
    w.verify_chunk(4096, chunk.len() as u64, &sha256(&chunk))
        .unwrap();
}

#[test]
fn skipping_on_a_dirty_target_is_caught_until_zeroed() {
    let dir = tempfile::tempdir().unwrap();
    let t = setup(&dir);
    fill(&t.path, 0xFF);
    let w = RawWriter::open(&t, true).unwrap();
    let chunk = vec![0u8; 8192];
    w.write_chunk(0, &chunk).unwrap();
    let err = w
        .verify_chunk(0, 8192, &sha256(&chunk))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "verifying {} at byte {MIB} (+8192): SHA-256 is ",
            t.path.display()
        )),
        "{err}"
    );
    assert!(
        err.ends_with(&format!("expected {}", hex(&sha256(&chunk)))),
        "{err}"
    );

    zero_target(&t).unwrap();
    let data = fs::read(&t.path).unwrap();
    assert!(
        data[..MIB as usize].iter().all(|&b| b == 0xFF),
        "before the partition"
    );
    assert!(
        data[MIB as usize..5 * MIB as usize].iter().all(|&b| b == 0),
        "the partition"
    );
    assert!(
        data[5 * MIB as usize..].iter().all(|&b| b == 0xFF),
        "after the partition"
    );
    w.write_chunk(0, &chunk).unwrap();
    w.verify_chunk(0, 8192, &sha256(&chunk)).unwrap();
}

#[test]
fn refuses_to_cross_the_partition_end() {
    let dir = tempfile::tempdir().unwrap();
    let t = setup(&dir);
    let w = RawWriter::open(&t, true).unwrap();
    w.write_chunk(4 * MIB - 10, &[1; 10]).unwrap();
    let err = w
        .write_chunk(4 * MIB - 10, &[1; 11])
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("chunk at partition offset 4194294 (+11) goes past the end of the partition (4194304 bytes)"), "{err}");
    assert!(w.write_chunk(u64::MAX, &[1]).is_err());
    assert!(w.verify_chunk(4 * MIB, 1, &[0; 32]).is_err());
    // Nothing beyond the partition was touched.
    assert!(fs::read(&t.path).unwrap()[5 * MIB as usize..]
        .iter()
        .all(|&b| b == 0));
}

#[test]
fn parallel_writers_share_one_fd() {
    let dir = tempfile::tempdir().unwrap();
    let t = setup(&dir);
    let w = RawWriter::open(&t, true).unwrap();
    let chunk = |i: u64| vec![(i as u8) | 1; 64 * 1024];
    std::thread::scope(|s| {
        for part in 0..4u64 {
            let w = &w;
            s.spawn(move || {
                for i in (0..16).rev().map(|k| part + 4 * k) {
                    w.write_chunk(i * 64 * 1024, &chunk(i)).unwrap();
                }
            });
        }
    });
    let back = read_part(&t);
    for i in 0..64 {
        let at = (i * 64 * 1024) as usize;
        assert_eq!(back[at..at + 64 * 1024], chunk(i)[..], "chunk {i}");
    }
}

#[test]
fn open_names_the_path() {
    let t = PartTarget {
        path: "/nonexistent/disk".into(),
        offset: 0,
        size: 1,
    };
    let err = RawWriter::open(&t, true).unwrap_err().to_string();
    assert_eq!(err, "opening /nonexistent/disk for writing");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Whatever mix of zero and data blocks, at whatever offset: the
    /// partition reads back as written and every byte is accounted for.
    #[test]
    fn readback_matches(
        offset in 0u64..20_000,
        blocks in prop::collection::vec((any::<bool>(), 1usize..5000), 1..12),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let t = setup(&dir);
        let w = RawWriter::open(&t, true).unwrap();
        let data: Vec<u8> = blocks
            .iter()
            .flat_map(|&(zero, len)| std::iter::repeat_n(if zero { 0 } else { 0x5A }, len))
            .collect();
        let stats = w.write_chunk(offset, &data).unwrap();
        prop_assert_eq!(stats.written + stats.skipped, data.len() as u64);
        let back = read_part(&t);
        prop_assert!(back[offset as usize..offset as usize + data.len()] == data[..]);
        w.verify_chunk(offset, data.len() as u64, &sha256(&data)).unwrap();
    }
}
