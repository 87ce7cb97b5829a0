use super::*;

const DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/modules/6.1.0-test"
);
const DEP: &str = include_str!("../tests/fixtures/modules/6.1.0-test/modules.dep");
const BUILTIN: &str = include_str!("../tests/fixtures/modules/6.1.0-test/modules.builtin");
const ALIAS: &str = include_str!("../tests/fixtures/modules/6.1.0-test/modules.alias");

fn index() -> Index {
    Index::parse(Path::new("modules.dep"), DEP, BUILTIN).unwrap()
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn names_from_paths() {
    assert_eq!(
        name_from_path("kernel/fs/nls/nls_iso8859-1.ko.xz").as_deref(),
        Some("nls_iso8859_1")
    );
    assert_eq!(
        name_from_path("a/b/virtio_net.ko").as_deref(),
        Some("virtio_net")
    );
    assert_eq!(name_from_path("x.ko.zst").as_deref(), Some("x"));
    assert_eq!(name_from_path("kernel/x.o"), None);
    assert_eq!(name_from_path("kernel/.ko"), None);
}

#[test]
fn dependencies_are_transitive_and_deduplicated() {
    let selection = index()
        .select(&names(&["ext4", "virtio-net", "virtio_net"]), &[])
        .unwrap();
    assert_eq!(
        selection.paths,
        [
            "kernel/drivers/virtio/virtio_ring.ko",
            "kernel/drivers/virtio/virtio.ko",
            "kernel/drivers/net/virtio_net.ko",
            "kernel/drivers/net/net_failover.ko",
            "kernel/net/core/failover.ko",
            "kernel/fs/ext4/ext4.ko",
            "kernel/fs/jbd2/jbd2.ko",
            "kernel/lib/crc16.ko",
        ]
    );
    assert!(selection.names.contains("crc16"));
    assert!(!selection.dep.contains("unused"));
    assert_eq!(selection.dep.lines().count(), 8);
    assert!(selection
        .dep
        .contains("kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko\n"));
}

#[test]
fn dash_and_underscore_are_the_same() {
    let selection = index()
        .select(
            &names(&["nls_iso8859_1", "crc32c_intel"]),
            &["nls-iso8859-1"],
        )
        .unwrap();
    assert_eq!(
        selection.paths,
        [
            "kernel/fs/nls/nls_iso8859-1.ko.xz",
            "kernel/arch/x86/crypto/crc32c-intel.ko.zst"
        ]
    );
    assert_eq!(
        selection.names.iter().collect::<Vec<_>>(),
        ["crc32c_intel", "nls_iso8859_1"]
    );
}

#[test]
fn unknown_required_names_are_an_error_naming_them() {
    let err = index()
        .select(&names(&["ext4", "nosuch", "other-one"]), &["alsomissing"])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown kernel module(s) nosuch, other-one: neither in modules.dep nor in modules.builtin"
    );
}

#[test]
fn builtin_and_missing_optional_names_are_reported() {
    let selection = index()
        .select(&names(&["af_packet"]), &["libata_core", "nosuch", "ext4"])
        .unwrap();
    assert_eq!(selection.builtin, ["af_packet", "libata_core"]);
    assert_eq!(selection.missing, ["nosuch"]);
    assert_eq!(selection.paths.len(), 3);
}

#[test]
fn aliases_and_softdeps_are_filtered() {
    let selection = index()
        .select(&names(&["ext4", "crc32c-intel"]), &[])
        .unwrap();
    assert_eq!(
        filter_alias(ALIAS, &selection.names),
        "alias fs-ext4 ext4\nalias crc32c crc32c_intel\nalias crypto-crc32c crc32c_intel\n"
    );
    let softdep = "softdep ext4 pre: crypto-crc32c\nsoftdep unused pre: crc16\n# x\n";
    assert_eq!(
        filter_softdep(softdep, &selection.names),
        "softdep ext4 pre: crypto-crc32c\n"
    );
}

#[test]
fn malformed_indexes_name_the_line() {
    let err = Index::parse(Path::new("m.dep"), "a.ko:\nno colon here\n", "")
        .err()
        .unwrap();
    assert_eq!(err.to_string(), "m.dep: line 2: no `:`: \"no colon here\"");
    let err = Index::parse(Path::new("m.dep"), "/abs/a.ko:\n", "")
        .err()
        .unwrap();
    assert!(err.to_string().contains("absolute"), "{err}");
    let index = Index::parse(Path::new("m.dep"), "a.ko: b.ko\n", "").unwrap();
    let err = index.select(&names(&["a"]), &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "m.dep: a.ko depends on b.ko, which has no line of its own"
    );
}

#[test]
fn resolve_reads_a_modules_dir() {
    let resolved = resolve(Path::new(DIR), &names(&["virtio_net"]), &["ext4", "nosuch"]).unwrap();
    assert_eq!(resolved.release, "6.1.0-test");
    assert_eq!(resolved.selection.paths.len(), 8);
    assert_eq!(resolved.selection.missing, ["nosuch"]);
    assert_eq!(
        resolved.alias,
        "alias virtio:d00000001v* virtio_net\nalias fs-ext4 ext4\n"
    );
    assert_eq!(resolved.softdep, "softdep ext4 pre: crypto-crc32c\n");
    assert_eq!(resolved.builtin, BUILTIN);

    let err = resolve(Path::new("/nonexistent/6.1"), &[], &[])
        .err()
        .unwrap();
    assert_eq!(err.to_string(), "reading /nonexistent/6.1/modules.dep");
}
