//! `Manifest::parse` on byte slices: a valid sample, then one rule broken at
//! a time, each error checked for naming where and what.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::digest::Sha256Digest;
use super::manifest::*;

/// A consistent manifest: a 1 MiB raw ESP in 2 chunks, a tar root taking
/// the rest in 3 chunks, 4 KiB chunks, BIOS and UEFI boot.
pub(crate) fn sample() -> Value {
    let chunk = |i: u64, size: u64| {
        json!({"offset": i * 100, "length": 100, "size": size,
               "sha256": Sha256Digest::of(&i.to_le_bytes()).to_string()})
    };
    let hash = Sha256Digest::of(b"x").to_string();
    json!({
        "format": 1, "name": "demo", "version": "1", "chunk_size": 4096,
        "payload": {"size": 500, "sha256": hash},
        "disk": {
            "min_size": 4 * MIB,
            "bios_boot_code": "6zyQ",
            "partitions": [
                {"label": "ESP", "type": TypeGuid::ESP, "size": MIB,
                 "attributes": ["legacy-bios-bootable"], "filesystem": "vfat",
                 "content": {"kind": "raw", "first_chunk": 0, "chunks": 2, "size": 6000,
                             "sha256": hash}},
                {"label": "root", "type": TypeGuid::LINUX_FS, "size": "rest",
                 "attributes": [], "filesystem": "ext4",
                 "content": {"kind": "tar", "first_chunk": 2, "chunks": 3, "size": 10240,
                             "sha256": hash, "entries": 4, "file_bytes": 3005}}
            ]
        },
        "boot": {"uefi": true, "bios": true},
        "chunks": [chunk(0, 4096), chunk(1, 1904), chunk(2, 4096), chunk(3, 4096), chunk(4, 2048)]
    })
}

fn parse(v: &Value) -> Result<Manifest, ManifestError> {
    Manifest::parse(&serde_json::to_vec(v).unwrap())
}

/// The error (with its source chain) after `edit`ing the sample.
fn error_after(edit: impl FnOnce(&mut Value)) -> String {
    let mut v = sample();
    edit(&mut v);
    let err = parse(&v).expect_err("should be refused");
    format!("{:#}", anyhow::Error::new(err))
}

/// An edit of the sample and a substring of the error it must cause.
type Case = (Box<dyn FnOnce(&mut Value)>, &'static str);

fn check(cases: Vec<Case>) {
    for (edit, want) in cases {
        let got = error_after(edit);
        assert!(got.contains(want), "got {got:?}, want {want:?}");
    }
}

#[test]
fn sample_is_valid_and_round_trips() {
    let m = parse(&sample()).unwrap();
    assert_eq!(m.disk.partitions.len(), 2);
    assert_eq!(m.disk.partitions[1].size, PartSize::Rest);
    assert_eq!(
        m.disk.bios_boot_code,
        Some(BootCode(vec![0xeb, 0x3c, 0x90]))
    );
    let bytes = m.to_bytes();
    assert_eq!(Manifest::parse(&bytes).unwrap(), m);
    assert_eq!(m.to_bytes(), bytes, "deterministic");
    // Stable field order, pretty, final newline; raw content has no tar fields.
    let text = String::from_utf8(bytes).unwrap();
    let order = [
        "\"format\"",
        "\"name\"",
        "\"version\"",
        "\"chunk_size\"",
        "\"payload\"",
        "\"disk\"",
        "\"boot\"",
        "\"chunks\"",
    ];
    let at: Vec<_> = order
        .iter()
        .map(|k| text.find(&format!("\n  {k}")).unwrap())
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
    assert!(text.starts_with("{\n  \"format\": 1,\n") && text.ends_with("}\n"));
    assert_eq!(text.matches("\"entries\"").count(), 1);
    let sources: Vec<_> = m.sources().map(|(i, p, _)| (i, p.label.as_str())).collect();
    assert_eq!(sources, [(0, "ESP"), (1, "root")]);
    assert_eq!(m.partition_name(1), "partition 2 (root)");
}

#[test]
fn lowercase_hex_and_guid_are_accepted_and_normalized() {
    let mut v = sample();
    v["disk"]["partitions"][1]["type"] = json!(TypeGuid::LINUX_FS.to_lowercase());
    let h = v["payload"]["sha256"].as_str().unwrap().to_uppercase();
    v["payload"]["sha256"] = json!(h);
    let m = parse(&v).unwrap();
    assert_eq!(m.disk.partitions[1].type_guid.as_str(), TypeGuid::LINUX_FS);
    assert_eq!(Manifest::parse(&m.to_bytes()).unwrap(), m);
}

#[test]
fn chunk_table_errors_name_the_chunk() {
    let cases: Vec<Case> = vec![
        (Box::new(|v| v["chunks"][3]["offset"] = json!(303)), "chunk 3: offset 303 but previous chunk ends at 300"),
        (Box::new(|v| v["chunks"][0]["offset"] = json!(1)), "chunk 0: offset 1 but the first chunk starts at 0"),
        (Box::new(|v| v["chunks"][2]["length"] = json!(0)), "chunk 2: length 0 is not between 1 and 5124"),
        (Box::new(|v| v["chunks"][2]["length"] = json!(u64::MAX)), "chunk 2: length 18446744073709551615"),
        (Box::new(|v| v["chunks"][1]["size"] = json!(0)), "chunk 1: size 0 is not between 1 and chunk_size 4096"),
        (Box::new(|v| v["chunks"][1]["size"] = json!(4097)), "chunk 1: size 4097"),
        (Box::new(|v| v["chunks"][0]["size"] = json!(4000)), "chunk 0: size 4000 but partition 1 (ESP) expects 4096 (only a source's last chunk may be short)"),
        (Box::new(|v| v["chunks"][4]["size"] = json!(2000)), "chunk 4: size 2000 but partition 2 (root) expects 2048"),
        (Box::new(|v| v["payload"]["size"] = json!(499)), "payload: size 499 but the chunks add up to 500"),
        (Box::new(|v| v["chunks"][0]["sha256"] = json!("00")), "invalid value: string \"00\", expected 64 hex digits"),
    ];
    check(cases);
}

#[test]
fn content_errors_name_the_partition() {
    let cases: Vec<Case> = vec![
        (Box::new(|v| v["disk"]["partitions"][1]["content"]["first_chunk"] = json!(1)), "partition 2 (root): content starts at chunk 1 but the previous content ends at chunk 2"),
        (Box::new(|v| v["disk"]["partitions"][1]["content"]["chunks"] = json!(2)), "partition 2 (root): content of 10240 bytes at chunk_size 4096 needs 3 chunks, not 2"),
        (Box::new(|v| v["disk"]["partitions"][0]["content"]["size"] = json!(5000)), "chunk 1: size 1904 but partition 1 (ESP) expects 904"),
        (Box::new(|v| v["disk"]["partitions"][1]["content"] = Value::Null), "chunk 2: belongs to no partition's content"),
        (Box::new(|v| { v["disk"]["partitions"][1]["content"]["size"] = json!(20000); v["disk"]["partitions"][1]["content"]["chunks"] = json!(5); }), "content chunks 2+5 run past the 5 chunks"),
        (Box::new(|v| v["disk"]["partitions"][1]["content"]["first_chunk"] = json!(u64::MAX)), "partition 2 (root): content starts at chunk 18446744073709551615"),
        (Box::new(|v| v["disk"]["partitions"][0]["content"]["size"] = json!(0)), "content of size 0"),
        (Box::new(|v| v["disk"]["partitions"][1]["content"]["entries"] = Value::Null), "tar content without entries and file_bytes"),
        (Box::new(|v| v["disk"]["partitions"][1]["content"]["file_bytes"] = json!(10241)), "cannot fit in a 10240-byte tar stream"),
        (Box::new(|v| v["disk"]["partitions"][0]["content"]["entries"] = json!(1)), "partition 1 (ESP): raw content with entries or file_bytes"),
        (Box::new(|v| v["disk"]["partitions"][1]["filesystem"] = json!("swap")), "tar content needs filesystem ext4 or vfat"),
        (Box::new(|v| v["disk"]["partitions"][0]["content"]["kind"] = json!("zip")), "unknown variant `zip`"),
    ];
    check(cases);
}

#[test]
fn layout_and_boot_errors() {
    let cases: Vec<Case> = vec![
        (
            Box::new(|v| v["format"] = json!(2)),
            "format: 2 is not supported (this drover reads 1)",
        ),
        (
            Box::new(|v| v["name"] = json!("..")),
            "name: \"..\" is not 1 to 128 of",
        ),
        (
            Box::new(|v| v["version"] = json!("a/b")),
            "version: \"a/b\" is not",
        ),
        (Box::new(|v| v["name"] = json!("")), "name: \"\" is not"),
        (
            Box::new(|v| v["chunk_size"] = json!(1000)),
            "chunk_size: 1000 is not a multiple of 4096",
        ),
        (
            Box::new(|v| v["chunk_size"] = json!(128 * MIB)),
            "chunk_size: 134217728",
        ),
        (
            Box::new(|v| v["surprise"] = json!(1)),
            "manifest.json is malformed: unknown field `surprise`",
        ),
        (
            Box::new(|v| v["disk"]["partitions"][0]["extra"] = json!(1)),
            "unknown field `extra`",
        ),
        (
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("name");
            }),
            "missing field `name`",
        ),
        (
            Box::new(|v| v["disk"]["partitions"][0]["size"] = json!("rest")),
            "partition 1 (ESP): size \"rest\" is allowed on the last partition only",
        ),
        (
            Box::new(|v| v["disk"]["partitions"][0]["size"] = json!("all")),
            "expected a size in bytes or \"rest\"",
        ),
        (
            Box::new(|v| v["disk"]["partitions"][0]["size"] = json!(MIB + 512)),
            "partition 1 (ESP): size 1049088 is not a non-zero multiple of 1 MiB",
        ),
        (
            Box::new(|v| v["disk"]["partitions"][0]["size"] = json!(0)),
            "size 0 is not a non-zero multiple",
        ),
        (
            Box::new(|v| {
                v["disk"]["partitions"][0]["content"]["size"] = json!(MIB + 4096);
                v["disk"]["partitions"][0]["content"]["chunks"] = json!(257);
            }),
            "raw content of 1052672 bytes is larger than size 1048576",
        ),
        (
            Box::new(|v| v["disk"]["partitions"][1]["label"] = json!("ESP")),
            "partition 2 (ESP): label is used by an earlier partition",
        ),
        (
            Box::new(|v| v["disk"]["partitions"][1]["label"] = json!("x".repeat(37))),
            "label is longer than 36 UTF-16 units",
        ),
        (
            Box::new(|v| v["disk"]["partitions"][1]["label"] = json!("a\nb")),
            "control characters",
        ),
        (
            Box::new(|v| {
                v["disk"]["partitions"][0]["attributes"] = json!(["required", "required"])
            }),
            "partition 1 (ESP): attribute Required is listed twice",
        ),
        (
            Box::new(|v| v["disk"]["partitions"][0]["attributes"] = json!(["bootable"])),
            "unknown variant `bootable`",
        ),
        (
            Box::new(|v| {
                v["disk"]["partitions"][0]["type"] = json!("C12A7328F81F11D2BA4B00A0C93EC93B")
            }),
            "expected a GUID like",
        ),
        (
            Box::new(|v| v["disk"]["partitions"] = json!([])),
            "disk: 0 partitions, not 1 to 128",
        ),
        (
            Box::new(|v| v["disk"]["min_size"] = json!(4 * MIB - 1)),
            "disk.min_size: 4194303 but the partitions and the GPT need at least 4194304",
        ),
        (
            Box::new(|v| v["disk"]["partitions"][0]["size"] = json!(u64::MAX - u64::MAX % MIB)),
            "disk: partition sizes overflow",
        ),
        (
            Box::new(|v| v["disk"]["bios_boot_code"] = Value::Null),
            "boot: bios needs disk.bios_boot_code",
        ),
        (
            Box::new(|v| v["boot"]["bios"] = json!(false)),
            "boot: disk.bios_boot_code is set but bios is false",
        ),
        (
            Box::new(|v| v["disk"]["bios_boot_code"] = json!("6zy")),
            "bios_boot_code: ",
        ),
        (
            Box::new(|v| v["disk"]["bios_boot_code"] = json!("A".repeat(600))),
            "disk.bios_boot_code: 450 bytes, not 1 to 440",
        ),
        (
            Box::new(|v| v["disk"]["partitions"][0]["filesystem"] = json!("ext4")),
            "boot: uefi needs an ESP partition",
        ),
    ];
    check(cases);
}

#[test]
fn size_bounds_are_checked_before_parsing() {
    let big = vec![b' '; MAX_MANIFEST_BYTES + 1];
    let err = Manifest::parse(&big).unwrap_err();
    assert_eq!(
        err.to_string(),
        "manifest.json is 16777217 bytes, more than the limit of 16777216"
    );
    let mut v = sample();
    let parts = v["disk"]["partitions"].as_array().unwrap().clone();
    let mut many = vec![parts[0].clone(); 129];
    for (i, p) in many.iter_mut().enumerate() {
        p["label"] = json!(format!("p{i}"));
        p["content"] = Value::Null;
    }
    v["disk"]["partitions"] = json!(many);
    let err = parse(&v).unwrap_err().to_string();
    assert!(err.contains("129 partitions"), "{err}");
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    for bytes in [
        &b""[..],
        b"{",
        b"null",
        b"[]",
        b"{\"format\":1}",
        b"\xff\xfe",
        b"{\"format\":-1}",
    ] {
        assert!(Manifest::parse(bytes).is_err());
    }
    // Deep nesting stops at serde_json's recursion limit.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(Manifest::parse(deep.as_bytes()).is_err());
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Manifest::parse(&bytes);
    }

    /// Small edits of a valid manifest: refused cleanly, or accepted and
    /// round-tripping.
    #[test]
    fn mutated_manifests_parse_or_fail_cleanly(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)
    ) {
        let mut bytes = parse(&sample()).unwrap().to_bytes();
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        if let Ok(m) = Manifest::parse(&bytes) {
            prop_assert_eq!(Manifest::parse(&m.to_bytes()).unwrap(), m);
        }
    }
}
