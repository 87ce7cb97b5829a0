//! Reading, for tests, verification and fuzzing: strict and panic-free.

use super::{pad_len, Entry, Error, Kind, HEADER_LEN, MAGIC, TRAILER};
use super::{S_IFBLK, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};

/// Parses a newc archive up to its trailer. Paths are returned as stored.
/// Never panics on bad input (it is fuzzed).
pub fn list(bytes: &[u8]) -> Result<Vec<Entry>, Error> {
    let mut entries = Vec::new();
    let mut off = 0usize;
    loop {
        let header = bytes
            .get(off..off.saturating_add(HEADER_LEN))
            .ok_or(Error::Truncated(off))?;
        if &header[..6] != MAGIC {
            return Err(Error::BadMagic(off));
        }
        let field = |i: usize| -> Result<u32, Error> {
            let digits = &header[6 + 8 * i..6 + 8 * (i + 1)];
            std::str::from_utf8(digits)
                .ok()
                .filter(|s| s.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|s| u32::from_str_radix(s, 16).ok())
                .ok_or(Error::BadHex(off))
        };
        let mode = field(1)?;
        let filesize = field(6)? as usize;
        let (rdev_major, rdev_minor) = (field(9)?, field(10)?);
        let namesize = field(11)? as usize;

        let name_start = off + HEADER_LEN;
        let name_end = name_start
            .checked_add(namesize)
            .ok_or(Error::Truncated(name_start))?;
        let name = bytes
            .get(name_start..name_end)
            .ok_or(Error::Truncated(name_start))?;
        let name = match name.split_last() {
            Some((0, name)) if !name.contains(&0) => {
                std::str::from_utf8(name).map_err(|_| Error::BadName(off))?
            }
            _ => return Err(Error::BadName(off)),
        };
        let data_start = name_end + pad_len(name_end);
        let data_end = data_start
            .checked_add(filesize)
            .ok_or(Error::Truncated(data_start))?;
        let data = bytes
            .get(data_start..data_end)
            .ok_or(Error::Truncated(data_start))?;
        if name == TRAILER {
            return Ok(entries);
        }
        let kind = match mode & S_IFMT {
            S_IFDIR => Kind::Dir,
            S_IFREG => Kind::File(data.to_vec()),
            S_IFLNK => {
                Kind::Symlink(String::from_utf8(data.to_vec()).map_err(|_| Error::BadName(off))?)
            }
            S_IFCHR => Kind::CharDev {
                major: rdev_major,
                minor: rdev_minor,
            },
            S_IFBLK => Kind::BlockDev {
                major: rdev_major,
                minor: rdev_minor,
            },
            _ => {
                return Err(Error::UnsupportedType {
                    path: name.to_owned(),
                    mode,
                })
            }
        };
        entries.push(Entry::new(name, mode & 0o7777, kind));
        off = data_end + pad_len(data_end);
        if off >= bytes.len() {
            return Err(Error::NoTrailer);
        }
    }
}
