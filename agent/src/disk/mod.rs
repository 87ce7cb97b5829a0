//! The disk side of a deploy: choose the disk, write the partition table,
//! make filesystems, then fill each partition from the payload.
//!
//! ```text
//! select::select      deploy.disk + sysfs        -> Disk (/dev/NAME, size, sector size)
//! partition::write    Layout + seed              -> GPT + protective MBR, placed partitions
//! partition::reread   BLKRRPART, then wait_for_partitions (devtmpfs makes the nodes)
//! partition::targets  placed partitions          -> PartTarget per partition
//! mkfs::mkfs          PartTarget + FsSpec        -> ext4 / vfat / swap
//! mount::TreeTarget   mounted filesystem, or a plain directory in process mode
//! extract::extract    tar stream                 -> files under the tree target
//! raw::RawWriter      chunk at offset            -> raw partition, zero blocks skipped
//! partition::wipe_table on any failure: no half-valid partition table stays behind
//! ```
//!
//! Two kinds of disk: a block device on a node (PID-1 mode), or a regular
//! file in process mode and in tests. [`PartTarget`] hides the difference:
//! on a block device it names the partition node at offset 0, on a file the
//! disk file itself at the partition's byte offset. Everything that reads the
//! live system takes a root directory so that tests run on fake trees.

pub mod extract;
pub mod mkfs;
pub mod mount;
mod nodes;
pub mod partition;
pub mod raw;
pub mod select;
mod tree;

use std::fs;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Where one partition's bytes live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartTarget {
    /// The partition's block device node (`/dev/vda1`), or the disk image
    /// file when the disk is a regular file.
    pub path: PathBuf,
    /// Byte offset of the partition inside `path`: 0 for a partition node.
    pub offset: u64,
    /// Size of the partition in bytes.
    pub size: u64,
}

impl PartTarget {
    /// Whether the partition is reached through the whole-disk file at an
    /// offset (process mode), so tools need their offset options.
    pub fn is_offset(&self) -> bool {
        self.offset != 0
    }
}

/// Whether `path` is a block device (following symlinks, as opening does).
pub fn is_block_device(path: &Path) -> io::Result<bool> {
    Ok(fs::metadata(path)?.file_type().is_block_device())
}

/// A GUID derived from `seed` for one `purpose` ("disk", "part1", "fs2"…):
/// SHA-256 over both, first 16 bytes, version 4 and RFC 4122 variant bits
/// set. Not random on purpose: `getrandom` can block early in boot before
/// the entropy pool is ready, and a redeploy of the same image to the same
/// machine then gets the same GUIDs. Callers pass e.g. SHA-256 of image
/// name, version and MAC as the seed.
pub fn derive_uuid(seed: &[u8], purpose: &str) -> Uuid {
    let mut h = Sha256::new();
    h.update(b"drover-uuid\0");
    h.update(purpose.as_bytes());
    h.update(b"\0");
    h.update(seed);
    let digest = sha256_finish(h);
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    sha256_finish(Sha256::new_with_prefix(data))
}

fn sha256_finish(h: Sha256) -> [u8; 32] {
    h.finalize().into()
}

/// `bytes` in binary units with one decimal, for messages: `20.0 GiB`.
/// Integer arithmetic: float formatting would add ~12 KB to the agent.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut unit = 0;
    while unit + 1 < UNITS.len() && bytes >= 1024u64 << (10 * unit) {
        unit += 1;
    }
    if unit == 0 {
        return format!("{bytes} B");
    }
    let scale = 1u128 << (10 * unit);
    let tenths = (bytes as u128 * 10 + scale / 2) / scale;
    format!("{}.{} {}", tenths / 10, tenths % 10, UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_uuids_are_stable_v4_and_distinct() {
        let a = derive_uuid(b"seed", "disk");
        assert_eq!(a, derive_uuid(b"seed", "disk"));
        assert_ne!(a, derive_uuid(b"seed", "part1"));
        assert_ne!(a, derive_uuid(b"other", "disk"));
        assert_eq!(a.get_version_num(), 4);
        assert_eq!(a.get_variant(), uuid::Variant::RFC4122);
    }

    #[test]
    fn sha256_known_answer() {
        let d = sha256(b"abc");
        assert_eq!(d[..4], [0xba, 0x78, 0x16, 0xbf]);
        assert_eq!(d[28..], [0xf2, 0x00, 0x15, 0xad]);
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(20 << 30), "20.0 GiB");
        assert_eq!(human_size(3 << 40), "3.0 TiB");
        assert_eq!(human_size((1 << 30) - 1), "1024.0 MiB");
        assert_eq!(human_size(1_000_000_000), "953.7 MiB");
        assert_eq!(human_size(u64::MAX), "16384.0 PiB");
    }
}
