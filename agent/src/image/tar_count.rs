//! Counting a tar stream as it passes into the payload: entries and regular
//! file bytes, for the agent's progress and sizing. The `tar` crate walks
//! the headers (GNU long names, pax records including a pax `size`
//! override, sparse maps); a tee hands every byte it reads to the payload,
//! so the stream is stored exactly as given and never held whole.

use std::io::{self, Read, Write};

use tar::EntryType;

/// What the manifest records about a tar source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TarStats {
    /// Members, not counting pax/GNU metadata headers.
    pub(crate) entries: u64,
    /// Sum of regular files' sizes.
    pub(crate) file_bytes: u64,
}

/// Copy all of `input` to `out`, walking it as a tar archive on the way.
/// A malformed archive (bad checksum, truncated member) is an error.
pub(crate) fn copy_tar(input: &mut dyn Read, out: &mut dyn Write) -> io::Result<TarStats> {
    let mut tee = Tee { input, out };
    let mut stats = TarStats::default();
    {
        let mut archive = tar::Archive::new(&mut tee);
        for entry in archive.entries()? {
            let entry = entry?;
            let kind = entry.header().entry_type();
            // Global pax headers are metadata the crate passes through as
            // members; the extractor skips them too.
            if kind.is_pax_global_extensions() {
                continue;
            }
            stats.entries += 1;
            if matches!(kind, EntryType::Regular | EntryType::Continuous) {
                stats.file_bytes = stats.file_bytes.saturating_add(entry.size());
            }
        }
    }
    // The end-of-archive blocks and any record padding belong to the
    // stream too.
    io::copy(&mut tee, &mut io::sink())?;
    Ok(stats)
}

/// Reads from `input`, writing everything read to `out`.
struct Tee<'a> {
    input: &'a mut dyn Read,
    out: &'a mut dyn Write,
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.input.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tar with a directory, two files (one with a >100-byte name, so a
    /// GNU long-name header), a symlink, and 10 KiB record padding.
    /// A GNU header with the owner and time fields every real tar fills.
    fn header() -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h
    }

    pub(crate) fn sample_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut dir = header();
        dir.set_entry_type(EntryType::Directory);
        dir.set_size(0);
        dir.set_mode(0o755);
        b.append_data(&mut dir, "etc/", io::empty()).unwrap();
        let mut file = header();
        file.set_size(5);
        file.set_mode(0o644);
        b.append_data(&mut file, "etc/hostname", &b"node\n"[..])
            .unwrap();
        let long = format!("usr/share/{}/file", "d".repeat(120));
        let mut file = header();
        file.set_size(3000);
        file.set_mode(0o644);
        b.append_data(&mut file, &long, &vec![7u8; 3000][..])
            .unwrap();
        let mut link = header();
        link.set_entry_type(EntryType::Symlink);
        link.set_size(0);
        link.set_mode(0o777);
        b.append_link(&mut link, "etc/localtime", "/usr/share/zoneinfo/UTC")
            .unwrap();
        let mut bytes = b.into_inner().unwrap();
        bytes.resize(bytes.len().next_multiple_of(10240), 0);
        bytes
    }

    #[test]
    fn counts_and_copies_everything() {
        let tar = sample_tar();
        let mut out = Vec::new();
        let stats = copy_tar(&mut &tar[..], &mut out).unwrap();
        assert_eq!(
            stats,
            TarStats {
                entries: 4,
                file_bytes: 3005
            }
        );
        assert_eq!(out, tar);
    }

    #[test]
    fn pax_headers_are_not_entries() {
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("comment", &b"hi"[..])]).unwrap();
        let mut file = tar::Header::new_ustar();
        file.set_size(2);
        file.set_mode(0o644);
        b.append_data(&mut file, "a", &b"ab"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let stats = copy_tar(&mut &tar[..], &mut Vec::new()).unwrap();
        assert_eq!(
            stats,
            TarStats {
                entries: 1,
                file_bytes: 2
            }
        );
    }

    #[test]
    fn corrupt_header_is_an_error() {
        let mut tar = sample_tar();
        tar[0] ^= 0x20;
        assert!(copy_tar(&mut &tar[..], &mut Vec::new()).is_err());
        let tar = sample_tar();
        // Cut inside the long file's data.
        assert!(copy_tar(&mut &tar[..2500], &mut Vec::new()).is_err());
    }
}
