//! Writing: canonical order, implicit parents, deterministic headers.

use std::cmp::Ordering;
use std::collections::btree_map;
use std::collections::BTreeMap;
use std::io::{self, Write};

use super::{normalize_path, pad_len, Entry, Error, Kind, HEADER_LEN, MAGIC, TRAILER};

/// Orders paths component by component, so a directory's whole subtree sorts
/// right after it (`a`, `a/b`, `a-b`) and a parent always precedes its children.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PathKey(String);

impl Ord for PathKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.split('/').cmp(other.0.split('/'))
    }
}

impl PartialOrd for PathKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

struct Slot {
    entry: Entry,
    /// Created as a missing parent; an explicit directory may replace it.
    implicit: bool,
}

/// An in-memory set of entries, written out in a canonical order.
#[derive(Default)]
pub struct Archive {
    entries: BTreeMap<PathKey, Slot>,
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds `entry`, creating missing parent directories (0755). Adding an
    /// identical entry twice is a no-op; a different one at the same path is
    /// an error, since silently keeping either would hide a packaging bug.
    pub fn add(&mut self, mut entry: Entry) -> Result<(), Error> {
        entry.path = normalize_path(&entry.path)?;
        entry.mode &= 0o7777;
        if u32::try_from(entry.data().len()).is_err() {
            return Err(Error::TooLarge(entry.path));
        }
        let parents: Vec<&str> = entry
            .path
            .match_indices('/')
            .map(|(i, _)| &entry.path[..i])
            .collect();
        // Check every parent before inserting any, so a failed add changes nothing.
        for parent in &parents {
            if let Some(slot) = self.entries.get(&PathKey((*parent).to_owned())) {
                if slot.entry.kind != Kind::Dir {
                    return Err(Error::ParentNotDir {
                        path: entry.path.clone(),
                        parent: (*parent).to_owned(),
                    });
                }
            }
        }
        match self.entries.entry(PathKey(entry.path.clone())) {
            btree_map::Entry::Vacant(vacant) => {
                vacant.insert(Slot {
                    entry: entry.clone(),
                    implicit: false,
                });
            }
            btree_map::Entry::Occupied(mut occupied) => {
                let slot = occupied.get_mut();
                if slot.implicit && entry.kind == Kind::Dir {
                    *slot = Slot {
                        entry: entry.clone(),
                        implicit: false,
                    };
                } else if slot.entry != entry || slot.implicit {
                    return Err(Error::Duplicate(entry.path));
                }
            }
        }
        for parent in parents {
            self.entries
                .entry(PathKey(parent.to_owned()))
                .or_insert_with(|| Slot {
                    entry: Entry::dir(parent, 0o755),
                    implicit: true,
                });
        }
        Ok(())
    }

    /// The entries in output order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values().map(|slot| &slot.entry)
    }

    /// Writes the archive and its trailer; returns the number of bytes written.
    pub fn write_to<W: Write>(&self, out: &mut W) -> io::Result<u64> {
        let mut written = 0;
        for (ino, entry) in (1..).zip(self.entries()) {
            let (rdev_major, rdev_minor) = entry.rdev();
            let header = Header {
                ino,
                mode: entry.full_mode(),
                nlink: if entry.kind == Kind::Dir { 2 } else { 1 },
                rdev_major,
                rdev_minor,
            };
            written += write_record(out, &header, &entry.path, entry.data())?;
        }
        // GNU cpio and the kernel's gen_init_cpio both give the trailer nlink 1.
        let trailer = Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            rdev_major: 0,
            rdev_minor: 0,
        };
        written += write_record(out, &trailer, TRAILER, &[])?;
        Ok(written)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out)
            .expect("writing into a Vec cannot fail");
        out
    }
}

/// The header fields that vary; uid, gid, mtime, dev and check are always 0.
struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    rdev_major: u32,
    rdev_minor: u32,
}

const PAD: [u8; 3] = [0; 3];

fn write_record<W: Write>(out: &mut W, h: &Header, name: &str, data: &[u8]) -> io::Result<u64> {
    let namesize = name.len() + 1;
    // Upper-case hex as the kernel's own usr/gen_init_cpio.c writes it; `add`
    // has checked the sizes fit in 32 bits.
    let fields = [
        h.ino,
        h.mode,
        0, // uid
        0, // gid
        h.nlink,
        0, // mtime
        data.len() as u32,
        0, // devmajor
        0, // devminor
        h.rdev_major,
        h.rdev_minor,
        namesize as u32,
        0, // check
    ];
    let mut header = Vec::with_capacity(HEADER_LEN + namesize + 3);
    header.extend_from_slice(MAGIC);
    for field in fields {
        write!(header, "{field:08X}")?;
    }
    header.extend_from_slice(name.as_bytes());
    header.push(0);
    header.extend_from_slice(&PAD[..pad_len(header.len())]);
    out.write_all(&header)?;
    out.write_all(data)?;
    let data_pad = pad_len(data.len());
    out.write_all(&PAD[..data_pad])?;
    Ok((header.len() + data.len() + data_pad) as u64)
}
