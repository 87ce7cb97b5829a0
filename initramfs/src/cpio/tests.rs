use super::*;
use proptest::prelude::*;

/// Every entry's ancestors appear before it in the output.
fn assert_parents_first(entries: &[Entry]) {
    let mut seen = std::collections::HashSet::new();
    for entry in entries {
        for (i, _) in entry.path.match_indices('/') {
            let parent = &entry.path[..i];
            assert!(
                seen.contains(parent),
                "{} emitted before its parent {parent}",
                entry.path
            );
        }
        seen.insert(entry.path.as_str());
    }
}

fn hex_header(fields: [u32; 13]) -> Vec<u8> {
    let mut out = b"070701".to_vec();
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out
}

#[test]
fn headers_are_byte_exact() {
    let mut archive = Archive::new();
    archive
        .add(Entry::file("/init", 0o755, b"hi".to_vec()))
        .unwrap();
    archive.add(Entry::dir("/dev", 0o755)).unwrap();
    let bytes = archive.to_bytes();

    let mut want = Vec::new();
    // ino mode uid gid nlink mtime size devmaj devmin rdevmaj rdevmin namesize check
    want.extend(hex_header([1, 0o40755, 0, 0, 2, 0, 0, 0, 0, 0, 0, 4, 0]));
    want.extend(b"dev\0\0\0"); // 110 + 4 → pad to 116
    want.extend(hex_header([2, 0o100755, 0, 0, 1, 0, 2, 0, 0, 0, 0, 5, 0]));
    want.extend(b"init\0\0"); // 110 + 5 → pad to 116
    want.extend(b"hi\0\0"); // data padded to 4
    want.extend(hex_header([0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 11, 0]));
    want.extend(b"TRAILER!!!\0\0\0\0"); // 110 + 11 → pad to 124
    assert_eq!(
        String::from_utf8_lossy(&bytes),
        String::from_utf8_lossy(&want)
    );
    assert_eq!(bytes, want);
    assert_eq!(bytes.len(), 360);
    assert_eq!(archive.write_to(&mut Vec::new()).unwrap(), 360);
}

#[test]
fn device_header_carries_rdev() {
    let mut archive = Archive::new();
    archive
        .add(Entry::char_dev("console", 0o600, 5, 1))
        .unwrap();
    let bytes = archive.to_bytes();
    assert_eq!(
        &bytes[..110],
        &hex_header([1, 0o20600, 0, 0, 1, 0, 0, 0, 0, 5, 1, 8, 0])[..]
    );
}

#[test]
fn round_trip_all_kinds() {
    let input = vec![
        Entry::dir("dev", 0o755),
        Entry::char_dev("dev/console", 0o600, 5, 1),
        Entry::block_dev("dev/vda", 0o660, 254, 0),
        Entry::file("etc/empty", 0o644, Vec::new()),
        Entry::file("etc/odd", 0o640, b"12345".to_vec()),
        Entry::symlink("lib64", "lib"),
        Entry::dir("tmp", 0o1777),
    ];
    let mut archive = Archive::new();
    for entry in input.iter().rev() {
        archive.add(entry.clone()).unwrap();
    }
    let listed = list(&archive.to_bytes()).unwrap();
    // `etc` was created as an implicit parent.
    let mut want = input.clone();
    want.insert(3, Entry::dir("etc", 0o755));
    assert_eq!(listed, want);
    assert_eq!(listed[1].full_mode(), 0o020600);
}

#[test]
fn parents_are_created_and_emitted_first() {
    let mut archive = Archive::new();
    archive
        .add(Entry::file(
            "lib/modules/6.1/kernel/fs/ext4.ko",
            0o644,
            vec![1],
        ))
        .unwrap();
    archive.add(Entry::file("a-b", 0o644, vec![])).unwrap();
    archive.add(Entry::file("a/b", 0o644, vec![])).unwrap();
    let listed = list(&archive.to_bytes()).unwrap();
    let paths: Vec<&str> = listed.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "a",
            "a/b",
            "a-b",
            "lib",
            "lib/modules",
            "lib/modules/6.1",
            "lib/modules/6.1/kernel",
            "lib/modules/6.1/kernel/fs",
            "lib/modules/6.1/kernel/fs/ext4.ko"
        ]
    );
    assert_parents_first(&listed);
}

#[test]
fn explicit_dir_replaces_implicit_parent() {
    let mut archive = Archive::new();
    archive.add(Entry::file("tmp/x", 0o644, vec![])).unwrap();
    archive.add(Entry::dir("tmp", 0o1777)).unwrap();
    assert_eq!(
        archive.entries().next().unwrap(),
        &Entry::dir("tmp", 0o1777)
    );
    // Once explicit, another mode is a conflict.
    assert_eq!(
        archive.add(Entry::dir("tmp", 0o755)),
        Err(Error::Duplicate("tmp".into()))
    );
}

#[test]
fn duplicates_are_deduped_or_rejected() {
    let mut archive = Archive::new();
    archive.add(Entry::file("/bin/x", 0o755, vec![1])).unwrap();
    archive.add(Entry::file("bin/x", 0o755, vec![1])).unwrap();
    assert_eq!(archive.len(), 2);
    assert_eq!(
        archive.add(Entry::file("bin/x", 0o755, vec![2])),
        Err(Error::Duplicate("bin/x".into()))
    );
    assert_eq!(
        archive.add(Entry::file("bin", 0o755, vec![])),
        Err(Error::Duplicate("bin".into()))
    );
    assert_eq!(
        archive.add(Entry::file("bin/x/y", 0o644, vec![])),
        Err(Error::ParentNotDir {
            path: "bin/x/y".into(),
            parent: "bin/x".into()
        })
    );
    // The failed add created no stray parents.
    assert_eq!(archive.len(), 2);
}

#[test]
fn bad_paths_are_rejected() {
    for path in ["", "/", "a//b", "a/./b", "../x", "a/..", "a/", "nul\0"] {
        assert_eq!(
            Archive::new().add(Entry::dir(path, 0o755)),
            Err(Error::BadPath(path.into())),
            "{path:?}"
        );
    }
}

#[test]
fn reader_rejects_damage() {
    let mut archive = Archive::new();
    archive
        .add(Entry::file("init", 0o755, b"data".to_vec()))
        .unwrap();
    let bytes = archive.to_bytes();
    for cut in [0, 50, 110, 116, 118, bytes.len() - 10] {
        assert!(list(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut bad = bytes.clone();
    bad[0] = b'1';
    assert_eq!(list(&bad), Err(Error::BadMagic(0)));
    let mut bad = bytes.clone();
    bad[20] = b'g';
    assert_eq!(list(&bad), Err(Error::BadHex(0)));
    // Data (not NUL-terminated name) where a name should end.
    let mut bad = bytes;
    bad[110 + 4] = b'x';
    assert_eq!(list(&bad), Err(Error::BadName(0)));
    assert_eq!(list(&Archive::new().to_bytes()), Ok(vec![]));
}

fn arb_entry() -> impl Strategy<Value = Entry> {
    let path = prop::collection::vec("[a-c]{1,2}", 1..4).prop_map(|parts| parts.join("/"));
    let kind = prop_oneof![
        Just(Kind::Dir),
        prop::collection::vec(any::<u8>(), 0..9).prop_map(Kind::File),
        "[a-z/]{1,6}".prop_map(Kind::Symlink),
        (any::<u32>(), any::<u32>()).prop_map(|(major, minor)| Kind::CharDev { major, minor }),
    ];
    (path, 0u32..0o7777, kind).prop_map(|(path, mode, kind)| Entry { path, mode, kind })
}

proptest! {
    #[test]
    fn any_accepted_set_round_trips(entries in prop::collection::vec(arb_entry(), 0..12)) {
        let mut archive = Archive::new();
        for entry in entries {
            // Conflicts are expected with random paths; skip those entries.
            let _ = archive.add(entry);
        }
        let bytes = archive.to_bytes();
        prop_assert_eq!(bytes.len() % 4, 0);
        let listed = list(&bytes).unwrap();
        let want: Vec<Entry> = archive.entries().cloned().collect();
        prop_assert_eq!(&listed, &want);
        assert_parents_first(&listed);
    }

    #[test]
    fn reader_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = list(&bytes);
    }
}
