//! `--partition` specs of `image import`: one GPT partition each, as
//! comma-separated `key=value` pairs. Pure: files are only named here,
//! opened by the importer.
//!
//! ```text
//! label=ESP,type=esp,size=64M,fs=vfat,content=raw:/srv/esp.img,attributes=legacy-bios-bootable
//! label=root,type=linux,size=rest,fs=ext4,content=dir:/srv/rootfs
//! ```
//!
//! A literal comma inside a value is written `\,` (and a backslash before
//! a comma or another backslash `\\`); any other backslash is kept as is.

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;

use drover_agent::image::manifest::MIB;
use drover_agent::image::{Attribute, ContentKind, Filesystem, PartSize, PartSpec, TypeGuid};

use crate::size::{parse_size, SIZE_ACCEPTED};

/// The syntax, for `--help` and error messages.
pub const SYNTAX: &str =
    "KEY=VALUE[,KEY=VALUE…] with keys label, type, size (required), fs, content, attributes";

/// Type shorthands and the GUIDs they stand for.
pub const TYPE_NAMES: &[(&str, &str)] = &[
    ("esp", TypeGuid::ESP),
    ("bios-boot", TypeGuid::BIOS_BOOT),
    ("linux", TypeGuid::LINUX_FS),
    ("swap", TypeGuid::LINUX_SWAP),
    ("root-x86-64", TypeGuid::LINUX_ROOT_X86_64),
];

/// The shorthand of a type GUID, if it has one (for `image show`).
pub fn type_name(guid: &TypeGuid) -> Option<&'static str> {
    TYPE_NAMES
        .iter()
        .find(|(_, g)| *g == guid.as_str())
        .map(|(n, _)| *n)
}

const KEYS: &[(&str, &str)] = &[
    ("label", "a GPT name of at most 36 characters (default: none)"),
    (
        "type",
        "esp, bios-boot, linux, swap, root-x86-64, or a GUID like 0FC63DAF-8483-4772-8E79-3D69D8477DE4 (default: linux)",
    ),
    ("size", "whole MiB: 64M, 2G, 1048576, … or rest (last partition only)"),
    ("fs", "ext4, vfat, swap, none (default: none)"),
    ("content", "raw:FILE, tar:FILE (.tar or .tar.gz), dir:DIR, none (default: none)"),
    ("attributes", "required, no-block-io, legacy-bios-bootable, joined with +"),
];

/// Where a partition's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentSource {
    /// Left as the agent creates it.
    None,
    /// A raw disk or partition image, written from the partition's first byte.
    Raw(PathBuf),
    /// A tar archive, gzip-compressed or not (detected by its magic bytes).
    Tar(PathBuf),
    /// A root directory, stored as a tar stream built on the fly.
    Dir(PathBuf),
}

impl ContentSource {
    /// How the manifest stores it.
    pub fn kind(&self) -> Option<ContentKind> {
        match self {
            ContentSource::None => None,
            ContentSource::Raw(_) => Some(ContentKind::Raw),
            ContentSource::Tar(_) | ContentSource::Dir(_) => Some(ContentKind::Tar),
        }
    }
}

impl fmt::Display for ContentSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContentSource::None => f.write_str("none"),
            ContentSource::Raw(p) => write!(f, "raw:{}", p.display()),
            ContentSource::Tar(p) => write!(f, "tar:{}", p.display()),
            ContentSource::Dir(p) => write!(f, "dir:{}", p.display()),
        }
    }
}

/// One parsed `--partition`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSpec {
    /// The partition, as the image builder takes it.
    pub part: PartSpec,
    /// What fills it.
    pub content: ContentSource,
}

/// A spec that cannot be used: which key (if one), and what is wrong and
/// accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    /// The key the problem is about.
    pub key: Option<String>,
    /// What is wrong, with the value as written and what is accepted.
    pub problem: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        f.write_str(&self.problem)
    }
}

fn key_error(key: &str, problem: String) -> SpecError {
    SpecError {
        key: Some(key.to_owned()),
        problem,
    }
}

/// What `key` accepts.
fn accepted(key: &str) -> &'static str {
    KEYS.iter().find(|(k, _)| *k == key).map_or("", |(_, a)| a)
}

fn bad_value(key: &str, value: &str, why: &str) -> SpecError {
    key_error(
        key,
        format!("{value:?}: {why}; accepted: {}", accepted(key)),
    )
}

/// Split at unescaped commas, unescaping `\,` and `\\`.
fn split_pairs(text: &str) -> Vec<String> {
    let mut pieces = vec![String::new()];
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let current = pieces.last_mut().expect("never empty");
        match c {
            '\\' if matches!(chars.peek(), Some(',' | '\\')) => {
                current.push(chars.next().expect("peeked"));
            }
            ',' => pieces.push(String::new()),
            c => current.push(c),
        }
    }
    pieces
}

/// Parse one `--partition` value.
pub fn parse_partition(text: &str) -> Result<PartitionSpec, SpecError> {
    let mut seen = HashSet::new();
    let mut label = String::new();
    let mut type_guid = TypeGuid::parse(TypeGuid::LINUX_FS).expect("a valid constant");
    let mut size = None;
    let mut filesystem = Filesystem::None;
    let mut content = ContentSource::None;
    let mut attributes = Vec::new();
    for pair in split_pairs(text) {
        let Some((key, value)) = pair.split_once('=') else {
            let problem = if pair.is_empty() {
                format!("empty KEY=VALUE pair (a stray comma?); expected {SYNTAX}")
            } else {
                format!("{pair:?} is not KEY=VALUE; expected {SYNTAX}")
            };
            return Err(SpecError { key: None, problem });
        };
        let Some((key, _)) = KEYS.iter().find(|(k, _)| *k == key) else {
            let valid: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
            let problem = format!("unknown key; valid keys: {}", valid.join(", "));
            return Err(key_error(key, problem));
        };
        if !seen.insert(*key) {
            return Err(key_error(key, "given twice".into()));
        }
        match *key {
            "label" => label = parse_label(value)?,
            "type" => type_guid = parse_type(value)?,
            "size" => size = Some(parse_part_size(value)?),
            "fs" => filesystem = parse_fs(value)?,
            "content" => content = parse_content(value)?,
            "attributes" => attributes = parse_attributes(value)?,
            _ => unreachable!("every KEYS entry is handled"),
        }
    }
    let Some(size) = size else {
        return Err(key_error(
            "size",
            format!("missing; accepted: {}", accepted("size")),
        ));
    };
    if content.kind() == Some(ContentKind::Tar)
        && !matches!(filesystem, Filesystem::Ext4 | Filesystem::Vfat)
    {
        let problem = format!(
            "content {content} is extracted onto a new filesystem, so fs must be ext4 or vfat, not {}",
            fs_name(filesystem)
        );
        return Err(key_error("fs", problem));
    }
    Ok(PartitionSpec {
        part: PartSpec {
            label,
            type_guid,
            size,
            attributes,
            filesystem,
        },
        content,
    })
}

/// Parse every `--partition`, in disk order, and check what involves more
/// than one: `rest` only last, labels unique. Errors name the spec by its
/// number (from 1, as on the disk) and text.
pub fn parse_layout(specs: &[String]) -> anyhow::Result<Vec<PartitionSpec>> {
    if specs.is_empty() {
        anyhow::bail!("no --partition given; each takes {SYNTAX}");
    }
    let mut out: Vec<PartitionSpec> = Vec::new();
    for (i, text) in specs.iter().enumerate() {
        let at = format!("--partition {} ({text:?})", i + 1);
        let spec = parse_partition(text).map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
        if let Some(prev) = out.last().filter(|p| p.part.size == PartSize::Rest) {
            anyhow::bail!(
                "{at}: follows partition {i} ({:?}) whose size is rest; only the last partition may take the rest of the disk",
                prev.part.label
            );
        }
        let label = &spec.part.label;
        if !label.is_empty() {
            if let Some(j) = out.iter().position(|p| p.part.label == *label) {
                anyhow::bail!(
                    "{at}: label {label:?} is already used by partition {}",
                    j + 1
                );
            }
        }
        out.push(spec);
    }
    Ok(out)
}

fn parse_label(value: &str) -> Result<String, SpecError> {
    if value.encode_utf16().count() > 36 || value.chars().any(char::is_control) {
        return Err(bad_value(
            "label",
            value,
            "longer than 36 UTF-16 units or has control characters",
        ));
    }
    Ok(value.to_owned())
}

fn parse_type(value: &str) -> Result<TypeGuid, SpecError> {
    let lower = value.to_ascii_lowercase();
    if let Some((_, guid)) = TYPE_NAMES.iter().find(|(n, _)| *n == lower) {
        return Ok(TypeGuid::parse(guid).expect("a valid constant"));
    }
    TypeGuid::parse(value)
        .ok_or_else(|| bad_value("type", value, "neither a known type nor a GUID"))
}

fn parse_part_size(value: &str) -> Result<PartSize, SpecError> {
    if value.eq_ignore_ascii_case("rest") {
        return Ok(PartSize::Rest);
    }
    let bytes = parse_size(value).map_err(|why| {
        key_error(
            "size",
            format!("{value:?}: {why}; accepted: {SIZE_ACCEPTED}, or rest"),
        )
    })?;
    if bytes == 0 || !bytes.is_multiple_of(MIB) {
        let why = format!(
            "{bytes} bytes is not a non-zero whole number of MiB (partitions are 1 MiB aligned)"
        );
        return Err(bad_value("size", value, &why));
    }
    Ok(PartSize::Bytes(bytes))
}

fn parse_fs(value: &str) -> Result<Filesystem, SpecError> {
    match value.to_ascii_lowercase().as_str() {
        "ext4" => Ok(Filesystem::Ext4),
        "vfat" | "fat" | "fat32" => Ok(Filesystem::Vfat),
        "swap" => Ok(Filesystem::Swap),
        "none" => Ok(Filesystem::None),
        _ => Err(bad_value("fs", value, "unknown filesystem")),
    }
}

/// The name `fs=` takes for `fs`.
pub fn fs_name(fs: Filesystem) -> &'static str {
    match fs {
        Filesystem::Ext4 => "ext4",
        Filesystem::Vfat => "vfat",
        Filesystem::Swap => "swap",
        Filesystem::None => "none",
    }
}

fn parse_content(value: &str) -> Result<ContentSource, SpecError> {
    if value.eq_ignore_ascii_case("none") {
        return Ok(ContentSource::None);
    }
    let Some((kind, path)) = value.split_once(':') else {
        return Err(bad_value("content", value, "no KIND: prefix"));
    };
    if path.is_empty() {
        return Err(bad_value("content", value, "empty path"));
    }
    let path = PathBuf::from(path);
    match kind {
        "raw" => Ok(ContentSource::Raw(path)),
        "tar" => Ok(ContentSource::Tar(path)),
        "dir" => Ok(ContentSource::Dir(path)),
        _ => Err(bad_value(
            "content",
            value,
            &format!("unknown kind {kind:?}"),
        )),
    }
}

fn parse_attributes(value: &str) -> Result<Vec<Attribute>, SpecError> {
    let mut out = Vec::new();
    for name in value.split('+') {
        let attribute = match name.to_ascii_lowercase().as_str() {
            "required" => Attribute::Required,
            "no-block-io" => Attribute::NoBlockIo,
            "legacy-bios-bootable" => Attribute::LegacyBiosBootable,
            _ => {
                let why = format!("unknown attribute {name:?}");
                return Err(bad_value("attributes", value, &why));
            }
        };
        if out.contains(&attribute) {
            let why = format!("{name} is listed twice");
            return Err(bad_value("attributes", value, &why));
        }
        out.push(attribute);
    }
    Ok(out)
}

/// The name `attributes=` takes for `a`.
pub fn attribute_name(a: Attribute) -> &'static str {
    match a {
        Attribute::Required => "required",
        Attribute::NoBlockIo => "no-block-io",
        Attribute::LegacyBiosBootable => "legacy-bios-bootable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> PartitionSpec {
        parse_partition(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn err(text: &str) -> String {
        parse_partition(text).unwrap_err().to_string()
    }

    #[test]
    fn full_specs() {
        let esp = parse("label=ESP,type=esp,size=64M,fs=vfat,content=raw:/srv/esp.img,attributes=legacy-bios-bootable");
        assert_eq!(esp.part.label, "ESP");
        assert_eq!(esp.part.type_guid.as_str(), TypeGuid::ESP);
        assert_eq!(esp.part.size, PartSize::Bytes(64 * MIB));
        assert_eq!(esp.part.filesystem, Filesystem::Vfat);
        assert_eq!(esp.part.attributes, vec![Attribute::LegacyBiosBootable]);
        assert_eq!(esp.content, ContentSource::Raw("/srv/esp.img".into()));

        let root =
            parse("label=drover-root,type=linux,size=rest,fs=ext4,content=tar:/r/root.tar.gz");
        assert_eq!(root.part.size, PartSize::Rest);
        assert_eq!(root.part.type_guid.as_str(), TypeGuid::LINUX_FS);
        assert_eq!(root.content, ContentSource::Tar("/r/root.tar.gz".into()));
        assert_eq!(root.content.kind(), Some(ContentKind::Tar));

        let dir = parse("size=1G,content=dir:/srv/root,fs=vfat,attributes=required+no-block-io");
        assert_eq!(dir.content, ContentSource::Dir("/srv/root".into()));
        assert_eq!(
            dir.part.attributes,
            vec![Attribute::Required, Attribute::NoBlockIo]
        );
    }

    #[test]
    fn defaults_and_spellings() {
        let p = parse("size=1048576");
        assert_eq!(p.part.label, "");
        assert_eq!(p.part.type_guid.as_str(), TypeGuid::LINUX_FS);
        assert_eq!(p.part.size, PartSize::Bytes(MIB));
        assert_eq!(p.part.filesystem, Filesystem::None);
        assert!(p.part.attributes.is_empty());
        assert_eq!(p.content, ContentSource::None);
        assert_eq!(p.content.kind(), None);

        let p = parse("type=0657fd6d-a4ab-43c4-84e5-0933c84b4f4f,size=REST,fs=swap,content=none");
        assert_eq!(p.part.type_guid.as_str(), TypeGuid::LINUX_SWAP);
        assert_eq!(type_name(&p.part.type_guid), Some("swap"));
        assert_eq!(p.part.size, PartSize::Rest);
        for (name, guid) in TYPE_NAMES {
            let p = parse(&format!("type={},size=1M", name.to_uppercase()));
            assert_eq!(p.part.type_guid.as_str(), *guid);
        }
        assert_eq!(
            type_name(&TypeGuid::parse("00000000-0000-0000-0000-000000000001").unwrap()),
            None
        );
    }

    #[test]
    fn escaped_commas() {
        let p = parse(r"label=a\,b,size=1M,content=raw:/x/a\,b\\c\d");
        assert_eq!(p.part.label, "a,b");
        assert_eq!(p.content, ContentSource::Raw(r"/x/a,b\c\d".into()));
        // `=` inside a value is fine: only the first one splits.
        let p = parse("size=1M,content=raw:/x=y");
        assert_eq!(p.content, ContentSource::Raw("/x=y".into()));
    }

    #[test]
    fn errors_name_key_value_and_accepted() {
        let e = err("size=12X");
        assert_eq!(
            e,
            format!(
                "key `size`: \"12X\": unknown suffix \"X\"; accepted: {SIZE_ACCEPTED}, or rest"
            )
        );
        let e = err("size=1000000");
        assert!(
            e.starts_with(
                "key `size`: \"1000000\": 1000000 bytes is not a non-zero whole number of MiB"
            ),
            "{e}"
        );
        assert!(e.contains("accepted: whole MiB"), "{e}");
        assert!(err("size=0").contains("not a non-zero whole number"));
        let e = err("label=x");
        assert!(
            e.starts_with("key `size`: missing; accepted: whole MiB"),
            "{e}"
        );
        let e = err("size=1M,colour=red");
        assert_eq!(
            e,
            "key `colour`: unknown key; valid keys: label, type, size, fs, content, attributes"
        );
        let e = err("size=1M,type=efi");
        assert!(
            e.starts_with(
                "key `type`: \"efi\": neither a known type nor a GUID; accepted: esp, bios-boot"
            ),
            "{e}"
        );
        let e = err("size=1M,fs=xfs");
        assert!(
            e.starts_with("key `fs`: \"xfs\": unknown filesystem; accepted: ext4, vfat"),
            "{e}"
        );
        let e = err("size=1M,content=/srv/x.img");
        assert!(
            e.starts_with("key `content`: \"/srv/x.img\": no KIND: prefix; accepted: raw:FILE"),
            "{e}"
        );
        let e = err("size=1M,content=zip:/x");
        assert!(e.contains("unknown kind \"zip\""), "{e}");
        assert!(err("size=1M,content=raw:").contains("empty path"));
        let e = err("size=1M,attributes=required+hidden");
        assert!(e.starts_with("key `attributes`: \"required+hidden\": unknown attribute \"hidden\"; accepted: required, no-block-io, legacy-bios-bootable"), "{e}");
        assert!(err("size=1M,attributes=required+required").contains("required is listed twice"));
        assert_eq!(err("size=1M,size=2M"), "key `size`: given twice");
        assert!(err("size=1M,")
            .starts_with("empty KEY=VALUE pair (a stray comma?); expected KEY=VALUE"));
        assert!(err("size=1M,esp").starts_with("\"esp\" is not KEY=VALUE"));
        let e = err(&format!("size=1M,label={}", "x".repeat(37)));
        assert!(e.contains("longer than 36"), "{e}");
        let e = err("size=1M,content=dir:/srv/root");
        assert_eq!(e, "key `fs`: content dir:/srv/root is extracted onto a new filesystem, so fs must be ext4 or vfat, not none");
        assert!(err("size=1M,fs=swap,content=tar:/x.tar").contains("not swap"));
        // Raw content may describe any filesystem, or none.
        parse("size=1M,fs=ext4,content=raw:/x.img");
    }

    #[test]
    fn layout_checks_rest_and_labels() {
        let specs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let layout = parse_layout(&specs(&["label=a,size=1M", "label=b,size=rest"])).unwrap();
        assert_eq!(layout.len(), 2);
        let e = parse_layout(&specs(&["label=a,size=rest", "label=b,size=1M"]))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "--partition 2 (\"label=b,size=1M\"): follows partition 1 (\"a\") whose size is rest; only the last partition may take the rest of the disk");
        let e = parse_layout(&specs(&["label=a,size=1M", "label=a,size=1M"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("label \"a\" is already used by partition 1"),
            "{e}"
        );
        // Unlabelled partitions may repeat.
        parse_layout(&specs(&["size=1M", "size=1M"])).unwrap();
        let e = parse_layout(&specs(&["size=1M", "size=2"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--partition 2 (\"size=2\"): key `size`: "),
            "{e}"
        );
        assert!(parse_layout(&[])
            .unwrap_err()
            .to_string()
            .starts_with("no --partition given"));
    }
}
