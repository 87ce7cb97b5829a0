//! Both ends together: images built by [`ImageBuilder`], consumed by the
//! pipeline. Property tests: what goes in comes out; one flipped payload
//! byte stops the pipeline at its chunk before that chunk is handed over.

use std::io::Read as _;
use std::path::Path;

use anyhow::anyhow;
use proptest::prelude::*;

use super::manifest::MIB;
use super::pipeline::{
    stream_source, verify_image, verify_payload, SourceProgress, SourceReader, StreamError,
};
use super::tar_count::tests::sample_tar;
use super::*;

pub(crate) fn spec(label: &str, type_guid: &str, size: PartSize, fs: Filesystem) -> PartSpec {
    PartSpec {
        label: label.into(),
        type_guid: TypeGuid::parse(type_guid).unwrap(),
        size,
        attributes: Vec::new(),
        filesystem: fs,
    }
}

/// Raw sources, one partition each (the last takes the rest).
fn build_raw(dir: &Path, sources: &[Vec<u8>], opts: BuildOptions) -> Manifest {
    let mut b = ImageBuilder::new(dir, "prop", "1", opts).unwrap();
    for (i, data) in sources.iter().enumerate() {
        let size = if i + 1 == sources.len() {
            PartSize::Rest
        } else {
            PartSize::Bytes((data.len() as u64).next_multiple_of(MIB))
        };
        let spec = spec(&format!("p{i}"), TypeGuid::LINUX_FS, size, Filesystem::None);
        b.add_partition(spec, Some((ContentKind::Raw, &mut &data[..])))
            .unwrap();
    }
    b.finish().unwrap()
}

/// Every source streamed in order: (chunk index, offset in source, bytes)
/// per hand-over, and how it ended.
type Seen = Vec<(usize, u64, Vec<u8>)>;
fn stream_all(m: &Manifest, chunks: &mut dyn ChunkSource) -> (Seen, Result<(), StreamError>) {
    let mut seen = Vec::new();
    for (part, _, content) in m.sources() {
        let mut progress = SourceProgress::new(m, part).unwrap();
        let first = content.first_chunk;
        let result = stream_source(m, &mut progress, chunks, |offset, bytes| {
            seen.push((
                first + (offset / m.chunk_size) as usize,
                offset,
                bytes.to_vec(),
            ));
            Ok(())
        });
        if let Err(e) = result {
            return (seen, Err(e));
        }
    }
    (seen, Ok(()))
}

fn opts(chunk_size: u64, threads: usize) -> BuildOptions {
    BuildOptions {
        chunk_size,
        level: 6,
        threads,
    }
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    // Compressible but not trivial: runs with noise.
    (0..len)
        .map(|i| ((i / 7) as u8).wrapping_mul(seed) ^ (i % 3) as u8)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn build_then_stream_yields_the_input(
        lens in proptest::collection::vec(1usize..20_000, 1..4),
        chunk_size in prop_oneof![Just(4096u64), Just(8192)],
        threads in 1usize..4,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let sources: Vec<_> = lens.iter().enumerate().map(|(i, &n)| data(n, i as u8 + 3)).collect();
        let m = build_raw(dir.path(), &sources, opts(chunk_size, threads));
        let payload = std::fs::read(dir.path().join(PAYLOAD_FILE)).unwrap();
        prop_assert_eq!(Manifest::parse(&std::fs::read(dir.path().join(MANIFEST_FILE)).unwrap()).unwrap(), m.clone());
        let (seen, result) = stream_all(&m, &mut MemSource(&payload));
        prop_assert!(result.is_ok());
        let mut got = vec![Vec::new(); sources.len()];
        for (index, offset, bytes) in &seen {
            let part = m.sources().position(|(_, _, c)| c.chunk_range().contains(index)).unwrap();
            prop_assert_eq!(*offset, got[part].len() as u64);
            got[part].extend_from_slice(bytes);
        }
        prop_assert_eq!(got, sources);
        prop_assert!(verify_image(&m, &mut FileSource::open(&dir.path().join(PAYLOAD_FILE)).unwrap()).is_ok());
    }

    #[test]
    fn a_flipped_byte_stops_at_its_chunk_before_handing_it_over(
        lens in proptest::collection::vec(1usize..20_000, 1..3),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let sources: Vec<_> = lens.iter().enumerate().map(|(i, &n)| data(n, i as u8 + 5)).collect();
        let m = build_raw(dir.path(), &sources, opts(4096, 2));
        let mut payload = std::fs::read(dir.path().join(PAYLOAD_FILE)).unwrap();
        let byte = at.index(payload.len());
        payload[byte] ^= 1 << bit;
        let bad = m.chunks.iter().position(|c| c.offset <= byte as u64 && (byte as u64) < c.offset + c.length).unwrap();

        let (seen, result) = stream_all(&m, &mut MemSource(&payload));
        let err = result.unwrap_err();
        prop_assert!(matches!(&err, StreamError::Chunk(ChunkError::Hash { index, .. }) if *index == bad), "{}", err);
        prop_assert!(err.is_retryable());
        let handed: Vec<usize> = seen.iter().map(|s| s.0).collect();
        prop_assert_eq!(handed, (0..bad).collect::<Vec<_>>());
        prop_assert!(verify_payload(&m, &mut MemSource(&payload)).is_err());
    }
}

/// Fails chunk `fail_at` once (transport error, then bad bytes if `corrupt`).
struct Flaky<'a> {
    inner: MemSource<&'a [u8]>,
    fail_at: usize,
    corrupt: bool,
    failed: bool,
    fetches: Vec<usize>,
}

impl ChunkSource for Flaky<'_> {
    fn fetch(&mut self, index: usize, entry: &ChunkEntry) -> anyhow::Result<Vec<u8>> {
        self.fetches.push(index);
        if index == self.fail_at && !self.failed {
            self.failed = true;
            if !self.corrupt {
                return Err(anyhow!("connection reset"));
            }
            let mut bytes = self.inner.fetch(index, entry)?;
            bytes[0] ^= 1;
            return Ok(bytes);
        }
        self.inner.fetch(index, entry)
    }
}

#[test]
fn resume_after_a_drop_or_bad_bytes_from_the_last_verified_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let input = data(30_000, 9);
    let m = build_raw(dir.path(), std::slice::from_ref(&input), opts(4096, 1));
    let payload = std::fs::read(dir.path().join(PAYLOAD_FILE)).unwrap();
    for corrupt in [false, true] {
        let mut src = Flaky {
            inner: MemSource(&payload[..]),
            fail_at: 4,
            corrupt,
            failed: false,
            fetches: vec![],
        };
        let mut progress = SourceProgress::new(&m, 0).unwrap();
        let mut out = Vec::new();
        let mut sink = |offset: u64, bytes: &[u8]| {
            assert_eq!(offset, out.len() as u64);
            out.extend_from_slice(bytes);
            Ok(())
        };
        let err = stream_source(&m, &mut progress, &mut src, &mut sink).unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert_eq!(
            (err.chunk(), progress.next_chunk(), progress.offset()),
            (Some(4), 4, 4 * 4096)
        );
        let msg = format!("{:#}", anyhow::Error::new(err));
        let want = if corrupt {
            "chunk 4: SHA-256 is "
        } else {
            "fetching chunk 4: connection reset"
        };
        assert!(msg.starts_with(want), "{msg}");
        stream_source(&m, &mut progress, &mut src, &mut sink).unwrap();
        assert!(progress.is_done());
        assert_eq!(src.fetches, [0, 1, 2, 3, 4, 4, 5, 6, 7]);
        assert_eq!(out, input);
    }
}

#[test]
fn a_failed_hand_over_is_retried_without_hashing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let input = data(10_000, 11);
    let m = build_raw(dir.path(), std::slice::from_ref(&input), opts(4096, 1));
    let payload = std::fs::read(dir.path().join(PAYLOAD_FILE)).unwrap();
    let mut progress = SourceProgress::new(&m, 0).unwrap();
    let mut out = Vec::new();
    let mut fail = true;
    let mut sink = |offset: u64, bytes: &[u8]| {
        if offset == 4096 && std::mem::take(&mut fail) {
            return Err(anyhow!("disk full"));
        }
        out.extend_from_slice(bytes);
        Ok(())
    };
    let err = stream_source(&m, &mut progress, &mut MemSource(&payload), &mut sink).unwrap_err();
    assert!(!err.is_retryable());
    assert_eq!(
        format!("{:#}", anyhow::Error::new(err)),
        "writing chunk 1 at offset 4096 of partition 1 (p0): disk full"
    );
    stream_source(&m, &mut progress, &mut MemSource(&payload), &mut sink).unwrap();
    assert_eq!(out, input);
}

#[test]
fn a_bad_source_hash_withholds_the_last_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = build_raw(dir.path(), &[data(10_000, 13)], opts(4096, 1));
    let payload = std::fs::read(dir.path().join(PAYLOAD_FILE)).unwrap();
    // Chunks verify, the source as a whole does not (a broken build).
    m.disk.partitions[0].content.as_mut().unwrap().sha256 = Sha256Digest::of(b"other");
    let mut progress = SourceProgress::new(&m, 0).unwrap();
    let mut offsets = Vec::new();
    let err = stream_source(&m, &mut progress, &mut MemSource(&payload), |o, _| {
        offsets.push(o);
        Ok(())
    })
    .unwrap_err();
    assert!(matches!(err, StreamError::SourceHash(_)), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(offsets, [0, 4096]);
    assert!(err
        .to_string()
        .starts_with("partition 1 (p0): uncompressed SHA-256 is "));
}

#[test]
fn tar_source_reads_back_through_source_reader() {
    let dir = tempfile::tempdir().unwrap();
    let tar = sample_tar();
    let mut b = ImageBuilder::new(dir.path(), "t", "1", opts(4096, 2)).unwrap();
    let root = spec("root", TypeGuid::LINUX_FS, PartSize::Rest, Filesystem::Ext4);
    b.add_partition(root, Some((ContentKind::Tar, &mut &tar[..])))
        .unwrap();
    let m = b.finish().unwrap();
    let c = m.disk.partitions[0].content.as_ref().unwrap();
    assert_eq!(
        (c.entries, c.file_bytes, c.size),
        (Some(4), Some(3005), tar.len() as u64)
    );

    let mut src = FileSource::open(&dir.path().join(PAYLOAD_FILE)).unwrap();
    let mut reader = SourceReader::new(&m, 0, &mut src).unwrap();
    let mut back = Vec::new();
    reader.read_to_end(&mut back).unwrap();
    assert_eq!(back, tar);
    assert!(reader.progress().is_done());

    let mut src = FileSource::open(&dir.path().join(PAYLOAD_FILE)).unwrap();
    let mut reader = SourceReader::new(&m, 0, &mut src).unwrap();
    let names: Vec<String> = tar::Archive::new(&mut reader)
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    // tar stopped at the end-of-archive block; the padding is still unread.
    assert!(!reader.progress().is_done());
    reader.finish().unwrap();
    assert_eq!(names.len(), 4);
    assert_eq!(names[0], "etc/");
    assert!(names[2].ends_with("/file") && names[2].len() > 100);
}

#[test]
fn builds_are_deterministic_across_thread_counts() {
    let inputs = [data(50_000, 3), data(7, 4)];
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    build_raw(a.path(), &inputs, opts(4096, 1));
    build_raw(b.path(), &inputs, opts(4096, 4));
    for f in [PAYLOAD_FILE, MANIFEST_FILE] {
        assert_eq!(
            std::fs::read(a.path().join(f)).unwrap(),
            std::fs::read(b.path().join(f)).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn builder_refuses_what_the_format_does_not_allow() {
    let dir = tempfile::tempdir().unwrap();
    let bad = |o: BuildOptions| {
        ImageBuilder::new(&dir.path().join("x"), "n", "1", o)
            .err()
            .map(|e| format!("{:#}", anyhow::Error::new(e)))
    };
    assert!(bad(opts(1000, 1)).unwrap().contains("chunk_size: 1000"));
    assert!(bad(BuildOptions {
        level: 10,
        ..opts(4096, 1)
    })
    .unwrap()
    .contains("compression level: 10"));
    assert!(ImageBuilder::new(dir.path(), "..", "1", opts(4096, 1)).is_err());

    let mut b = ImageBuilder::new(dir.path(), "n", "1", opts(4096, 1)).unwrap();
    let again = ImageBuilder::new(dir.path(), "n", "1", opts(4096, 1))
        .err()
        .unwrap();
    assert!(
        format!("{:#}", anyhow::Error::new(again)).contains("payload"),
        "payload exists"
    );
    let empty = b.add_partition(
        spec(
            "e",
            TypeGuid::LINUX_FS,
            PartSize::Bytes(MIB),
            Filesystem::None,
        ),
        Some((ContentKind::Raw, &mut &[][..])),
    );
    assert_eq!(
        empty.unwrap_err().to_string(),
        "partition 1 (e): the content is empty (add the partition without content instead)"
    );
    let big = data(MIB as usize + 1, 1);
    b.add_partition(
        spec(
            "big",
            TypeGuid::LINUX_FS,
            PartSize::Bytes(MIB),
            Filesystem::None,
        ),
        Some((ContentKind::Raw, &mut &big[..])),
    )
    .unwrap();
    b.add_partition(
        spec("rest", TypeGuid::LINUX_FS, PartSize::Rest, Filesystem::Ext4),
        None,
    )
    .unwrap();
    let after_rest = b.add_partition(
        spec(
            "late",
            TypeGuid::LINUX_FS,
            PartSize::Bytes(MIB),
            Filesystem::None,
        ),
        None,
    );
    assert!(format!("{:#}", anyhow::Error::new(after_rest.unwrap_err())).contains("follows rest"));
    let err = format!("{:#}", anyhow::Error::new(b.finish().unwrap_err()));
    assert!(
        err.contains("partition 1 (big): raw content of 1048577 bytes is larger than size 1048576"),
        "{err}"
    );
    assert!(!dir.path().join(MANIFEST_FILE).exists());
}

#[test]
fn bad_tar_is_refused_at_import() {
    let dir = tempfile::tempdir().unwrap();
    let mut tar = sample_tar();
    tar[100] ^= 1;
    let mut b = ImageBuilder::new(dir.path(), "n", "1", opts(4096, 1)).unwrap();
    let root = spec("root", TypeGuid::LINUX_FS, PartSize::Rest, Filesystem::Ext4);
    let err = b
        .add_partition(root, Some((ContentKind::Tar, &mut &tar[..])))
        .unwrap_err();
    let msg = format!("{:#}", anyhow::Error::new(err));
    assert!(
        msg.starts_with("streaming the content of partition 1 (root): "),
        "{msg}"
    );
}

#[test]
fn source_reader_reports_a_bad_source_hash_before_the_last_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = build_raw(dir.path(), &[data(9000, 17)], opts(4096, 1));
    m.disk.partitions[0].content.as_mut().unwrap().sha256 = Sha256Digest::of(b"other");
    let payload = std::fs::read(dir.path().join(PAYLOAD_FILE)).unwrap();
    let mut src = MemSource(&payload);
    let mut reader = SourceReader::new(&m, 0, &mut src).unwrap();
    let mut out = Vec::new();
    let err = reader.read_to_end(&mut out).unwrap_err();
    assert_eq!(out.len(), 8192, "the last chunk is withheld");
    let inner = err.into_inner().unwrap().downcast::<StreamError>().unwrap();
    assert!(matches!(*inner, StreamError::SourceHash(_)), "{inner}");
}
