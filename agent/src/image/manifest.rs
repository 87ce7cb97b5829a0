//! `manifest.json`: the types, their JSON form, and the entry points
//! [`Manifest::parse`] (bounded, strict, fully validated) and
//! [`Manifest::to_bytes`] (deterministic). The rules live in `validate.rs`.

use std::fmt;
use std::ops::Range;

use base64::Engine as _;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use super::digest::Sha256Digest;
pub use super::guid::TypeGuid;
use super::validate;

/// The only format version this code reads and writes.
pub const FORMAT: u32 = 1;
/// One mebibyte: partition sizes are multiples of it (partitions are 1 MiB
/// aligned, so the layout and `min_size` arithmetic are exact).
pub const MIB: u64 = 1 << 20;
/// Default uncompressed chunk size: large enough that per-chunk overhead
/// (a hash, a request, a table entry) is noise, small enough to hold a
/// handful in memory on a node.
pub const DEFAULT_CHUNK_SIZE: u64 = 4 * MIB;
/// Chunk sizes are multiples of 4096 so raw chunks land sector-aligned on
/// 512-byte and 4Kn disks alike.
pub const CHUNK_ALIGN: u64 = 4096;
/// Bounds the agent's memory: it holds a few chunks at a time.
pub const MAX_CHUNK_SIZE: u64 = 64 * MIB;
/// Larger `manifest.json` files are refused before parsing.
pub const MAX_MANIFEST_BYTES: usize = 16 << 20;
/// At most this many chunks (the 16 MiB bound allows ~85,000 pretty-printed
/// entries in practice, i.e. ~340 GiB of uncompressed data at 4 MiB chunks).
pub const MAX_CHUNKS: usize = 1_000_000;
/// A GPT holds 128 entries by default; the agent writes a default one.
pub const MAX_PARTITIONS: usize = 128;
/// Disk space outside the partitions: the first MiB (protective MBR,
/// primary GPT, alignment) and one at the end (backup GPT).
pub const GPT_OVERHEAD: u64 = 2 * MIB;
/// The MBR boot code area, before the disk signature.
pub const MAX_BOOT_CODE: usize = 440;

/// `manifest.json`. Field order here is the JSON order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: u32,
    /// `[A-Za-z0-9._-]+`, not `.`/`..`: a directory on the server.
    pub name: String,
    /// Same rules as `name`.
    pub version: String,
    /// Uncompressed bytes per chunk (the last chunk of a source may be less).
    pub chunk_size: u64,
    /// The whole blob.
    pub payload: Payload,
    /// Partition table and what fills it.
    pub disk: Disk,
    /// How the installed system boots.
    pub boot: Boot,
    /// One entry per chunk, in payload order.
    pub chunks: Vec<ChunkEntry>,
}

/// The `payload` file as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    /// Its length: the sum of all chunk lengths.
    pub size: u64,
    /// SHA-256 of all of it (the compressed chunks, in order).
    pub sha256: Sha256Digest,
}

/// The disk layout: a GPT with a protective MBR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    /// The smallest disk the image fits on, in bytes.
    pub min_size: u64,
    /// MBR boot code (first 440 bytes of sector 0) for BIOS boot, e.g.
    /// GRUB's `boot.img` or syslinux's `gptmbr.bin`.
    pub bios_boot_code: Option<BootCode>,
    /// In disk order; the agent numbers them from 1.
    pub partitions: Vec<Partition>,
}

/// One GPT partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// GPT name: at most 36 UTF-16 code units, no control characters;
    /// non-empty labels are unique.
    pub label: String,
    /// GPT partition type.
    #[serde(rename = "type")]
    pub type_guid: TypeGuid,
    /// Bytes (a multiple of 1 MiB) or the rest of the disk (last only).
    pub size: PartSize,
    /// GPT attribute bits to set.
    #[serde(default)]
    pub attributes: Vec<Attribute>,
    /// What the partition holds once deployed. With `raw` content it only
    /// describes the image; with `tar` content the agent creates it.
    pub filesystem: Filesystem,
    /// What fills it from the payload; `None` leaves it as created.
    pub content: Option<Content>,
}

/// A partition size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PartSize {
    /// Exactly this many bytes.
    Bytes(u64),
    /// Whatever remains of the disk (`"rest"`).
    Rest,
}

/// GPT attribute bits drover knows by name (UEFI 2.10 §5.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attribute {
    /// Bit 0: required for the platform to function.
    Required,
    /// Bit 1: firmware must not produce a block I/O protocol for it.
    NoBlockIo,
    /// Bit 2: legacy BIOS bootable (syslinux `gptmbr.bin` boots this one).
    LegacyBiosBootable,
}

impl Attribute {
    /// The bit number in the GPT entry's attribute field.
    pub fn bit(self) -> u8 {
        match self {
            Attribute::Required => 0,
            Attribute::NoBlockIo => 1,
            Attribute::LegacyBiosBootable => 2,
        }
    }
}

/// The filesystem on a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filesystem {
    /// FAT (the ESP).
    Vfat,
    /// ext4.
    Ext4,
    /// Linux swap.
    Swap,
    /// Nothing (e.g. a BIOS boot partition, or a raw image of something else).
    None,
}

/// How a source's bytes become a partition's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentKind {
    /// Written as-is from the partition's first byte.
    Raw,
    /// A tar stream extracted onto a fresh filesystem.
    Tar,
}

/// The source that fills a partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Content {
    /// Raw image or tar stream.
    pub kind: ContentKind,
    /// Index of its first chunk.
    pub first_chunk: usize,
    /// Number of chunks, `ceil(size / chunk_size)`.
    pub chunks: usize,
    /// Uncompressed bytes.
    pub size: u64,
    /// SHA-256 of the uncompressed stream.
    pub sha256: Sha256Digest,
    /// Tar only: entries (members other than pax/GNU metadata headers), for
    /// progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
    /// Tar only: total bytes of regular files, for progress and sizing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_bytes: Option<u64>,
}

impl Content {
    /// Its chunk indices (saturating: only meaningful once validated).
    pub fn chunk_range(&self) -> Range<usize> {
        self.first_chunk..self.first_chunk.saturating_add(self.chunks)
    }
}

/// How the installed system boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Boot {
    /// From the ESP (requires an ESP partition with vfat).
    pub uefi: bool,
    /// From the MBR boot code (requires `bios_boot_code`).
    pub bios: bool,
}

/// One chunk of the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkEntry {
    /// Where its compressed bytes start in the payload.
    pub offset: u64,
    /// Compressed length.
    pub length: u64,
    /// Uncompressed length.
    pub size: u64,
    /// SHA-256 of the *compressed* bytes, so a chunk is checked before it is
    /// inflated.
    pub sha256: Sha256Digest,
}

/// Why a `manifest.json` is refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Refused before parsing.
    #[error("manifest.json is {0} bytes, more than the limit of {MAX_MANIFEST_BYTES}")]
    TooLarge(usize),
    /// Not JSON, or not the shape of a manifest (the source names the line).
    #[error("manifest.json is malformed")]
    Json(#[source] serde_json::Error),
    /// Well-formed but inconsistent: `at` says where, `msg` what is wrong.
    #[error("{at}: {msg}")]
    Invalid {
        /// `chunk 17`, `partition 2 (root)`, `disk`, …
        at: String,
        /// What is wrong.
        msg: String,
    },
}

impl ManifestError {
    pub(crate) fn invalid(at: impl fmt::Display, msg: impl fmt::Display) -> Self {
        ManifestError::Invalid {
            at: at.to_string(),
            msg: msg.to_string(),
        }
    }
}

impl Manifest {
    /// Parse and validate `manifest.json` bytes (verify their signature
    /// first). Never panics; every rule of the format is checked here, so
    /// code handling a parsed `Manifest` may rely on them.
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge(bytes.len()));
        }
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(ManifestError::Json)?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Check every rule of the format (what [`Manifest::parse`] does after
    /// decoding; the builder runs it too).
    pub fn validate(&self) -> Result<(), ManifestError> {
        validate::manifest(self)
    }

    /// Deterministic JSON: fields in declaration order, two-space pretty
    /// printing, a final newline. Sign exactly these bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing these types cannot fail: no maps, no non-string keys,
        // no fallible custom serializers.
        let mut out = serde_json::to_vec_pretty(self).expect("manifest types always serialize");
        out.push(b'\n');
        out
    }

    /// The partitions that have content, in payload order, with their
    /// 0-based partition index.
    pub fn sources(&self) -> impl Iterator<Item = (usize, &Partition, &Content)> {
        let parts = self.disk.partitions.iter().enumerate();
        parts.filter_map(|(i, p)| p.content.as_ref().map(|c| (i, p, c)))
    }

    /// `partition 2 (root)` for index 1: how messages name a partition.
    pub fn partition_name(&self, index: usize) -> String {
        match self.disk.partitions.get(index) {
            Some(p) => partition_name(index, &p.label),
            None => format!("partition {}", index.saturating_add(1)),
        }
    }

    /// The largest compressed length a chunk may have, see
    /// [`max_chunk_length`].
    pub fn max_chunk_length(&self) -> u64 {
        max_chunk_length(self.chunk_size)
    }
}

pub(crate) fn partition_name(index: usize, label: &str) -> String {
    let number = index.saturating_add(1);
    if label.is_empty() {
        format!("partition {number}")
    } else {
        format!("partition {number} ({label})")
    }
}

/// Upper bound of a chunk's compressed length: deflate's stored-block worst
/// case (5 bytes per 64 KiB block) with room to spare. It bounds what a
/// transport must buffer before the chunk can be verified.
pub fn max_chunk_length(chunk_size: u64) -> u64 {
    chunk_size
        .saturating_add(chunk_size / 1024)
        .saturating_add(1024)
}

/// The MBR boot code, base64 in JSON.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BootCode(pub Vec<u8>);

impl fmt::Debug for BootCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BootCode({} bytes)", self.0.len())
    }
}

impl Serialize for BootCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for BootCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        // Bound before decoding: 440 bytes are 588 base64 characters.
        if s.len() > 600 {
            return Err(de::Error::invalid_length(s.len(), &"at most 440 bytes"));
        }
        // STANDARD is canonical (padding required, no stray bits), so the
        // encoding round-trips.
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map_err(|e| de::Error::custom(format_args!("bios_boot_code: {e}")))?;
        Ok(BootCode(bytes))
    }
}

impl Serialize for PartSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PartSize::Bytes(n) => s.serialize_u64(*n),
            PartSize::Rest => s.serialize_str("rest"),
        }
    }
}

impl<'de> Deserialize<'de> for PartSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = PartSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size in bytes or \"rest\"")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<PartSize, E> {
                Ok(PartSize::Bytes(n))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<PartSize, E> {
                match s {
                    "rest" => Ok(PartSize::Rest),
                    _ => Err(E::invalid_value(de::Unexpected::Str(s), &self)),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}
