//! newc ("070701") cpio archives, the format the kernel's initramfs unpacker
//! reads (Documentation/driver-api/early-userspace/buffer-format.rst).
//!
//! The writer is reproducible by construction (u-root `MakeReproducible`):
//! mtime 0, uid/gid 0, inode numbers assigned 1, 2, 3… in output order, entries
//! sorted by path component by component, and every parent directory emitted
//! before its children (u-root `WriteRecordsAndDirs`) because the kernel
//! creates each entry with a plain `mkdir`/`open` and never creates parents.

mod read;
mod write;

pub use read::list;
pub use write::Archive;

/// The newc magic; `070702` (with checksums) is neither written nor read.
pub const MAGIC: &[u8; 6] = b"070701";
/// Magic plus 13 fields of 8 hex digits.
const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";

const S_IFMT: u32 = 0o170_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFBLK: u32 = 0o060_000;

/// What an archive entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File(Vec<u8>),
    /// The target, stored as the entry's data like `ln -s` would.
    Symlink(String),
    CharDev {
        major: u32,
        minor: u32,
    },
    BlockDev {
        major: u32,
        minor: u32,
    },
}

/// One archive member. `path` has no leading `/` once it is in an archive;
/// `mode` holds only the permission bits (the type comes from `kind`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub mode: u32,
    pub kind: Kind,
}

impl Entry {
    pub fn dir(path: &str, mode: u32) -> Self {
        Self::new(path, mode, Kind::Dir)
    }

    pub fn file(path: &str, mode: u32, data: Vec<u8>) -> Self {
        Self::new(path, mode, Kind::File(data))
    }

    /// Symlinks are always 0777, as on Linux.
    pub fn symlink(path: &str, target: &str) -> Self {
        Self::new(path, 0o777, Kind::Symlink(target.to_owned()))
    }

    pub fn char_dev(path: &str, mode: u32, major: u32, minor: u32) -> Self {
        Self::new(path, mode, Kind::CharDev { major, minor })
    }

    pub fn block_dev(path: &str, mode: u32, major: u32, minor: u32) -> Self {
        Self::new(path, mode, Kind::BlockDev { major, minor })
    }

    fn new(path: &str, mode: u32, kind: Kind) -> Self {
        Self {
            path: path.to_owned(),
            mode,
            kind,
        }
    }

    /// `st_mode` as stored in the header: type bits plus permissions.
    pub fn full_mode(&self) -> u32 {
        let kind = match self.kind {
            Kind::Dir => S_IFDIR,
            Kind::File(_) => S_IFREG,
            Kind::Symlink(_) => S_IFLNK,
            Kind::CharDev { .. } => S_IFCHR,
            Kind::BlockDev { .. } => S_IFBLK,
        };
        kind | (self.mode & 0o7777)
    }

    fn data(&self) -> &[u8] {
        match &self.kind {
            Kind::File(data) => data,
            Kind::Symlink(target) => target.as_bytes(),
            _ => &[],
        }
    }

    fn rdev(&self) -> (u32, u32) {
        match self.kind {
            Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => (major, minor),
            _ => (0, 0),
        }
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid archive path {0:?}: want `a/b/c` without empty, `.` or `..` parts")]
    BadPath(String),
    #[error("{0}: added twice with different type, mode or contents")]
    Duplicate(String),
    #[error("{path}: its parent {parent} is not a directory")]
    ParentNotDir { path: String, parent: String },
    #[error("{0}: larger than the 4 GiB a newc header can describe")]
    TooLarge(String),
    #[error("cpio: truncated at byte {0}")]
    Truncated(usize),
    #[error("cpio: bad magic at byte {0} (only newc 070701 is supported)")]
    BadMagic(usize),
    #[error("cpio: bad hex digits in the header at byte {0}")]
    BadHex(usize),
    #[error("cpio: name at byte {0} is not NUL-terminated UTF-8")]
    BadName(usize),
    #[error("cpio: {path}: unsupported file type in mode {mode:o}")]
    UnsupportedType { path: String, mode: u32 },
    #[error("cpio: no TRAILER!!! record")]
    NoTrailer,
}

/// Strips leading slashes and checks the rest is a plain relative path.
pub fn normalize_path(path: &str) -> Result<String, Error> {
    let rel = path.trim_start_matches('/');
    let bad = rel.is_empty()
        || rel.contains('\0')
        || rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(Error::BadPath(path.to_owned()));
    }
    Ok(rel.to_owned())
}

/// Header+name and data are each padded to a multiple of 4 bytes.
fn pad_len(len: usize) -> usize {
    (4 - len % 4) % 4
}

#[cfg(test)]
mod tests;
