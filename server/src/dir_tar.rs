//! A root directory as a tar stream (`content=dir:DIR`), built as it is
//! read, never held whole.
//!
//! What the agent's extractor (`drover_agent::disk::extract`) restores, and
//! so what is recorded here:
//! - entries in a stable order: the root as `./`, then depth first, names
//!   sorted bytewise, a directory before its contents;
//! - numeric owners only (user and group names are left empty: the tree's
//!   names mean nothing on the node), modes including setuid/setgid/sticky,
//!   mtimes;
//! - symlinks as they are (absolute targets resolve on the node);
//! - files with several links as hardlinks to the first path seen with the
//!   same device and inode;
//! - character and block devices, FIFOs; sockets are skipped (tar cannot
//!   hold them, a running program recreates them) with a warning;
//! - extended attributes as PAX `SCHILY.xattr.NAME` records, what GNU tar
//!   and the extractor use (`security.capability` makes `ping` work without
//!   setuid). Names that are not UTF-8 are skipped with a warning.
//!
//! GNU headers: long names and link targets, large sizes, uids and device
//! numbers all fit. Nothing below `DIR` is followed through a symlink; `DIR`
//! itself may be one.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use tar::{EntryType, Header};

/// What went into the stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirTarStats {
    /// Entries written (not counting metadata headers).
    pub entries: u64,
    /// Bytes of regular-file data.
    pub file_bytes: u64,
    /// Paths left out (sockets, …), relative to the root.
    pub skipped: Vec<PathBuf>,
}

/// Write `root` as a tar stream to `out`, ending with the end-of-archive
/// blocks. Errors name the path that failed.
pub fn write_dir_tar(root: &Path, out: impl Write) -> Result<DirTarStats> {
    let meta = std::fs::metadata(root).with_context(|| format!("reading {}", root.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", root.display());
    }
    let mut w = Walker {
        builder: tar::Builder::new(out),
        links: HashMap::new(),
        stats: DirTarStats::default(),
    };
    w.entry(root, Path::new("./"), &meta)?;
    w.dir(root, Path::new(""))?;
    w.builder
        .into_inner()
        .and_then(|mut out| out.flush())
        .context("writing the end of the tar stream")?;
    Ok(w.stats)
}

struct Walker<W: Write> {
    builder: tar::Builder<W>,
    /// (device, inode) of files with several links → their first path.
    links: HashMap<(u64, u64), PathBuf>,
    stats: DirTarStats,
}

impl<W: Write> Walker<W> {
    /// The contents of directory `fs_dir`, stored under `rel` (empty for the
    /// root).
    fn dir(&mut self, fs_dir: &Path, rel: &Path) -> Result<()> {
        let mut names = Vec::new();
        let reading = || format!("reading directory {}", fs_dir.display());
        for entry in std::fs::read_dir(fs_dir).with_context(reading)? {
            names.push(entry.with_context(reading)?.file_name());
        }
        // OsStr orders by bytes on Unix.
        names.sort();
        for name in names {
            let path = fs_dir.join(&name);
            let rel = rel.join(&name);
            let meta = path
                .symlink_metadata()
                .with_context(|| format!("reading {}", path.display()))?;
            self.entry(&path, &rel, &meta)
                .with_context(|| format!("adding {} to the tar stream", path.display()))?;
            if meta.is_dir() {
                self.dir(&path, &rel)?;
            }
        }
        Ok(())
    }

    /// One entry (not its children).
    fn entry(&mut self, path: &Path, rel: &Path, meta: &Metadata) -> Result<()> {
        let ft = meta.file_type();
        if ft.is_socket() {
            log::warn!("skipping socket {}", path.display());
            self.stats.skipped.push(rel.to_owned());
            return Ok(());
        }
        let mut header = Header::new_gnu();
        header.set_mode(meta.mode() & 0o7777);
        header.set_uid(meta.uid().into());
        header.set_gid(meta.gid().into());
        header.set_mtime(meta.mtime().max(0) as u64);
        header.set_size(0);
        self.xattrs(path)?;

        if !ft.is_dir() && meta.nlink() > 1 {
            let id = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&id) {
                header.set_entry_type(EntryType::Link);
                self.builder.append_link(&mut header, rel, first)?;
                self.stats.entries += 1;
                return Ok(());
            }
            self.links.insert(id, rel.to_owned());
        }

        if ft.is_dir() {
            header.set_entry_type(EntryType::Directory);
            // `./` for the root; `etc/` for the others.
            let mut name = rel.as_os_str().to_owned();
            if !rel.as_os_str().as_encoded_bytes().ends_with(b"/") {
                name.push("/");
            }
            self.builder.append_data(&mut header, name, io::empty())?;
        } else if ft.is_file() {
            header.set_entry_type(EntryType::Regular);
            header.set_size(meta.len());
            let file = File::open(path).context("opening the file")?;
            let exact = Exact {
                inner: file.take(meta.len()),
                left: meta.len(),
            };
            self.builder.append_data(&mut header, rel, exact)?;
            self.stats.file_bytes += meta.len();
        } else if ft.is_symlink() {
            header.set_entry_type(EntryType::Symlink);
            let target = std::fs::read_link(path).context("reading the symlink")?;
            self.builder.append_link(&mut header, rel, target)?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            let kind = if ft.is_char_device() {
                EntryType::Char
            } else if ft.is_block_device() {
                EntryType::Block
            } else {
                EntryType::Fifo
            };
            header.set_entry_type(kind);
            if kind != EntryType::Fifo {
                let (major, minor) = dev_major_minor(meta.rdev());
                header.set_device_major(major)?;
                header.set_device_minor(minor)?;
            }
            self.builder.append_data(&mut header, rel, io::empty())?;
        } else {
            bail!("unsupported file type {ft:?}");
        }
        self.stats.entries += 1;
        Ok(())
    }

    /// A PAX header with `path`'s extended attributes, if it has any.
    fn xattrs(&mut self, path: &Path) -> Result<()> {
        let names = match xattr::list(path) {
            Ok(names) => names,
            // Filesystems without xattr support have none to keep.
            Err(e) if e.raw_os_error() == Some(95) => return Ok(()), // EOPNOTSUPP
            Err(e) => return Err(e).context("listing extended attributes"),
        };
        let mut records: Vec<(String, Vec<u8>)> = Vec::new();
        for name in names {
            let Some(text) = name.to_str() else {
                log::warn!(
                    "{}: skipping extended attribute {name:?}: not UTF-8",
                    path.display()
                );
                continue;
            };
            // Removed between list and get: nothing to keep.
            let Some(value) = xattr::get(path, &name)
                .with_context(|| format!("reading extended attribute {text}"))?
            else {
                continue;
            };
            records.push((format!("SCHILY.xattr.{text}"), value));
        }
        records.sort();
        let pairs = records.iter().map(|(k, v)| (k.as_str(), v.as_slice()));
        self.builder.append_pax_extensions(pairs)?;
        Ok(())
    }
}

/// glibc's `major()`/`minor()` for a Linux `dev_t`.
fn dev_major_minor(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as u32, minor as u32)
}

/// A reader of exactly `left` bytes: the file shrinking while it is read
/// is an error, not a silently corrupt archive (the header already
/// promised its size).
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the file shrank while being read ({} bytes short)",
                    self.left
                ),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{symlink, PermissionsExt};

    use super::*;

    fn sample_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc/ssh")).unwrap();
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::write(root.join("etc/hostname"), b"node\n").unwrap();
        std::fs::write(root.join("etc/ssh/sshd_config"), b"PermitRootLogin no\n").unwrap();
        std::fs::write(root.join("usr/bin/tool"), vec![0x7f; 3000]).unwrap();
        std::fs::set_permissions(root.join("usr/bin/tool"), PermissionsExt::from_mode(0o4755))
            .unwrap();
        std::fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool2")).unwrap();
        symlink("/usr/share/zoneinfo/UTC", root.join("etc/localtime")).unwrap();
        let long = "d".repeat(120);
        std::fs::create_dir_all(root.join(&long)).unwrap();
        std::fs::write(root.join(&long).join("f"), b"x").unwrap();
        dir
    }

    /// (path, type, size, link target, mode, contents) per entry.
    type Listed = Vec<(String, EntryType, u64, Option<String>, u32, Vec<u8>)>;

    fn list(tar: &[u8]) -> Listed {
        let mut out = Vec::new();
        let mut archive = tar::Archive::new(tar);
        for entry in archive.entries().unwrap() {
            let mut e = entry.unwrap();
            let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
            let link = e
                .link_name_bytes()
                .map(|l| String::from_utf8(l.into_owned()).unwrap());
            let h = e.header().clone();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.push((
                path,
                h.entry_type(),
                h.size().unwrap(),
                link,
                h.mode().unwrap(),
                data,
            ));
        }
        out
    }

    #[test]
    fn tree_as_sorted_tar() {
        let dir = sample_tree();
        let mut tar = Vec::new();
        let stats = write_dir_tar(dir.path(), &mut tar).unwrap();
        let entries = list(&tar);
        let paths: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        let long = "d".repeat(120);
        assert_eq!(
            paths,
            [
                "./",
                &format!("{long}/"),
                &format!("{long}/f"),
                "etc/",
                "etc/hostname",
                "etc/localtime",
                "etc/ssh/",
                "etc/ssh/sshd_config",
                "usr/",
                "usr/bin/",
                "usr/bin/tool",
                "usr/bin/tool2",
            ]
        );
        assert_eq!(stats.entries, 12);
        assert_eq!(stats.file_bytes, 5 + 19 + 3000 + 1);
        assert!(stats.skipped.is_empty());
        let by = |p: &str| entries.iter().find(|e| e.0 == p).unwrap();
        assert_eq!(by("etc/hostname").5, b"node\n");
        let link = by("etc/localtime");
        assert_eq!(link.1, EntryType::Symlink);
        assert_eq!(link.3.as_deref(), Some("/usr/share/zoneinfo/UTC"));
        let tool = by("usr/bin/tool");
        assert_eq!((tool.1, tool.2, tool.4), (EntryType::Regular, 3000, 0o4755));
        let hard = by("usr/bin/tool2");
        assert_eq!((hard.1, hard.2), (EntryType::Link, 0));
        assert_eq!(hard.3.as_deref(), Some("usr/bin/tool"));
        assert_eq!(by("./").1, EntryType::Directory);

        // Numeric owners only.
        let mut archive = tar::Archive::new(&tar[..]);
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            assert_eq!(e.header().username_bytes(), Some(&b""[..]));
        }

        // Deterministic.
        let mut again = Vec::new();
        write_dir_tar(dir.path(), &mut again).unwrap();
        assert_eq!(again, tar);
    }

    #[test]
    fn fifo_and_socket() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status();
        let _sock = std::os::unix::net::UnixListener::bind(dir.path().join("sock")).unwrap();
        let mut tar = Vec::new();
        let stats = write_dir_tar(dir.path(), &mut tar).unwrap();
        assert_eq!(stats.skipped, [PathBuf::from("sock")]);
        let entries = list(&tar);
        if status.is_ok_and(|s| s.success()) {
            assert_eq!(entries[1].0, "fifo");
            assert_eq!(entries[1].1, EntryType::Fifo);
        }
        assert!(entries.iter().all(|e| e.0 != "sock"));
    }

    #[test]
    fn xattrs_become_pax_records() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        if xattr::set(&file, "user.drover", b"yes").is_err() {
            // The temp filesystem has no user xattrs (e.g. tmpfs without
            // them): nothing to test here.
            return;
        }
        let mut tar = Vec::new();
        write_dir_tar(dir.path(), &mut tar).unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let mut found = false;
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            if let Some(exts) = e.pax_extensions().unwrap() {
                for ext in exts {
                    let ext = ext.unwrap();
                    if ext.key().unwrap() == "SCHILY.xattr.user.drover" {
                        assert_eq!(ext.value_bytes(), b"yes");
                        found = true;
                    }
                }
            }
        }
        assert!(found);
    }

    #[test]
    fn device_numbers() {
        // /dev/null is 1:3, /dev/sda would be 8:0; a large minor spills into
        // the high bits.
        assert_eq!(dev_major_minor(0x0103), (1, 3));
        assert_eq!(dev_major_minor(0x0800), (8, 0));
        let dev = (259u64 << 8) | (0x12345 & 0xff) | ((0x12345u64 & !0xff) << 12);
        assert_eq!(dev_major_minor(dev), (259, 0x12345));
    }

    #[test]
    fn not_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let e = write_dir_tar(&file, Vec::new()).unwrap_err().to_string();
        assert!(e.ends_with("/f is not a directory"), "{e}");
        let e = write_dir_tar(&dir.path().join("missing"), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("reading "), "{e}");
    }

    #[test]
    fn exact_reader_refuses_short_files() {
        let mut r = Exact {
            inner: &b"abc"[..],
            left: 5,
        };
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).unwrap_err();
        assert!(e.to_string().contains("2 bytes short"), "{e}");
    }
}
