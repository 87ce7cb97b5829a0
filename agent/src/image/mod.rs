//! drover's image format, used by both ends: the server builds and signs
//! images ([`build`], [`sign`] with feature `sign`), the agent verifies and
//! consumes them ([`sign::verify`], [`Manifest::parse`], [`pipeline`]).
//!
//! An image is a directory `NAME/VERSION/` holding three files:
//! - `payload`: one blob, the concatenation of chunks. Each chunk is a fixed
//!   `chunk_size` slice (the last of a source may be shorter) of one
//!   uncompressed *source* stream, raw-deflate compressed on its own, so any
//!   chunk can be verified and inflated alone. A source is what fills one
//!   partition (a raw partition image or a tar stream); its chunks are
//!   contiguous and in partition order, and no chunk spans two sources.
//! - `manifest.json` ([`Manifest`]): layout, boot style, the chunk table with
//!   a SHA-256 of every chunk's *compressed* bytes (checked before
//!   inflating, so nothing unverified reaches the inflater or the disk), a
//!   SHA-256 of each source's uncompressed stream (checked at its end) and of
//!   the whole payload.
//! - `manifest.sig`: the 64-byte raw ed25519 signature of the exact
//!   `manifest.json` bytes ([`sign`]).
//!
//! Trust chain: the agent's key → `manifest.sig` → `manifest.json` → every
//! chunk's hash → the bytes written. The agent must verify the signature on
//! the bytes it received *before* parsing them, and never re-serialize.
//!
//! Numbering in messages: chunks are 0-based, as indices into `chunks`;
//! partitions are numbered from 1 as on the disk (`partition 1 (ESP)` is
//! `/dev/sda1` and `disk.partitions[0]`). API indices are always 0-based.

pub mod build;
pub mod chunk_verify;
pub mod digest;
pub mod guid;
pub mod inflate;
pub mod manifest;
pub mod payload_hash;
pub mod pipeline;
pub mod sign;
pub mod source;
pub mod source_hash;

mod chunker;
mod keyfile;
mod tar_count;
mod validate;

pub use validate::{is_component, COMPONENT_ACCEPTED};

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod manifest_tests;
#[cfg(test)]
mod tests;

pub use build::{BuildError, BuildOptions, ImageBuilder, PartSpec};
pub use chunk_verify::{verify_chunk, ChunkError, VerifiedChunk};
pub use digest::Sha256Digest;
pub use manifest::{
    Attribute, Boot, BootCode, ChunkEntry, Content, ContentKind, Disk, Filesystem, Manifest,
    ManifestError, PartSize, Partition, Payload, TypeGuid,
};
pub use pipeline::{
    stream_source, stream_source_with, verify_image, verify_payload, SourceProgress, SourceReader,
    StreamError,
};
pub use source::{ChunkSource, FileSource, MemSource};

/// File names inside an image directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// See [`MANIFEST_FILE`].
pub const SIGNATURE_FILE: &str = "manifest.sig";
/// See [`MANIFEST_FILE`].
pub const PAYLOAD_FILE: &str = "payload";
/// The payload's BitTorrent metainfo, info dictionary only (the server
/// adds its tracker's URL when it serves it): [`crate::torrent::metainfo`].
pub const TORRENT_FILE: &str = "payload.torrent";
