//! Safe tar extraction onto a fresh filesystem.
//!
//! The `tar` crate parses (ustar, GNU long names, PAX, GNU sparse); the files
//! are created here, relative to directory file descriptors, never through a
//! path that could cross a symlink:
//!
//! - entry paths must be relative and free of `..` (leading `./` is fine);
//! - every parent directory is opened component by component with
//!   `O_NOFOLLOW | O_DIRECTORY`, so a symlink (or a file) in the middle of a
//!   path is refused instead of followed; missing parents are created 0755;
//! - regular files are created with `O_CREAT | O_EXCL | O_NOFOLLOW` after
//!   unlinking whatever was there, so a write never lands outside the tree;
//! - a symlink's *content* may be absolute (it resolves inside the deployed
//!   system when that boots), but a relative target that climbs above the
//!   root from the link's directory is refused (checked lexically);
//! - a hardlink target must be relative, inside, already extracted and not
//!   a directory;
//! - a directory is never replaced by something else.
//!
//! Kept: numeric owners (names are ignored: the initramfs has no passwd),
//! modes including setuid/setgid/sticky (chmod after chown, which clears
//! them), mtimes (directories last), PAX `SCHILY.xattr.*` extended
//! attributes (what GNU tar and the tar crate's `unpack_xattrs` use; set
//! after chown, which clears `security.capability`), device nodes, FIFOs,
//! symlinks and hardlinks. Without root, ownership is left as is.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use anyhow::{Context, Result};
use rustix::fs::{
    futimens, linkat, makedev, mkdirat, mknodat, openat, symlinkat, unlinkat, AtFlags, FileType,
    Mode, OFlags,
};
use tar::EntryType;

use super::tree::{file_type, open_dir, times, Meta, Tree};

/// What an extraction wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub entries: u64,
    /// Bytes of regular-file data.
    pub file_bytes: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub devices: u64,
    pub fifos: u64,
}

/// An entry that breaks a safety rule.
#[derive(Debug, thiserror::Error)]
#[error("refusing tar entry {path:?}: {rule}")]
pub struct Rejected {
    pub path: String,
    pub rule: String,
}

/// Extract the tar stream `reader` into the existing directory `dest`.
pub fn extract<R: Read>(reader: R, dest: &Path) -> Result<Stats> {
    let mut x = Extractor {
        tree: Tree::open(dest)?,
        stats: Stats::default(),
        dirs: Vec::new(),
    };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().context("reading the tar stream")? {
        let entry = entry.context("reading the tar stream")?;
        let shown = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if let Err(e) = x.entry(entry, &shown) {
            // A rule violation already names the entry.
            return Err(if e.is::<Rejected>() {
                e
            } else {
                e.context(format!("extracting {shown:?}"))
            });
        }
    }
    // Directory modes and mtimes last: creating children changes both.
    for (comps, meta) in std::mem::take(&mut x.dirs) {
        let shown = comps.join(OsStr::new("/")).to_string_lossy().into_owned();
        x.tree
            .finish_dir(&comps, &meta)
            .with_context(|| format!("setting the mode and mtime of {shown:?}"))?;
    }
    Ok(x.stats)
}

struct Extractor {
    tree: Tree,
    stats: Stats,
    /// Directories whose mode and mtime are set at the end.
    dirs: Vec<(Vec<OsString>, Meta)>,
}

pub(super) fn reject<T>(path: &str, rule: impl Into<String>) -> Result<T> {
    Err(Rejected {
        path: path.to_string(),
        rule: rule.into(),
    }
    .into())
}

/// The components of a relative, `..`-free path; `what` names it in errors.
fn clean(path: &[u8], shown: &str, what: &str) -> Result<Vec<OsString>> {
    let mut out = Vec::new();
    for c in Path::new(OsStr::from_bytes(path)).components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::CurDir => {}
            Component::ParentDir => return reject(shown, format!("{what} has a `..` component")),
            Component::RootDir | Component::Prefix(_) => {
                return reject(shown, format!("{what} is absolute"))
            }
        }
    }
    Ok(out)
}

fn meta<R: Read>(entry: &mut tar::Entry<R>) -> io::Result<Meta> {
    let h = entry.header();
    let mut meta = Meta {
        uid: h.uid()? as u32,
        gid: h.gid()? as u32,
        mode: h.mode()? & 0o7777,
        mtime: h.mtime()? as i64,
        xattrs: Vec::new(),
    };
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                let name = OsStr::from_bytes(name).to_os_string();
                meta.xattrs.push((name, ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(meta)
}

impl Extractor {
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<R>, shown: &str) -> Result<()> {
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            return Ok(());
        }
        let comps = clean(&entry.path_bytes(), shown, "the path")?;
        let meta = meta(&mut entry)?;
        self.stats.entries += 1;
        if comps.is_empty() {
            // `./`: the root directory itself.
            if kind != EntryType::Directory {
                return reject(shown, "empty path");
            }
            self.tree.set_fd(self.tree.root(), false, &meta)?;
            self.dirs.push((comps, meta));
            self.stats.dirs += 1;
            return Ok(());
        }
        // Check link targets before touching anything.
        let link = entry.link_name_bytes().unwrap_or_default().into_owned();
        match kind {
            EntryType::Symlink => check_symlink(&link, comps.len() - 1, shown)?,
            EntryType::Link => {
                let target = clean(&link, shown, "the hardlink target")?;
                if target.is_empty() {
                    return reject(shown, "the hardlink target is empty");
                }
                if target == comps {
                    return reject(shown, "the hardlink points to itself");
                }
                return self.hardlink(&comps, &target, shown);
            }
            _ => {}
        }
        let parent = self.replace(&comps, kind == EntryType::Directory, shown)?;
        let name = comps.last().expect("not the root").as_os_str();
        match kind {
            EntryType::Directory => {
                if file_type(&parent, name)?.is_none() {
                    mkdirat(&parent, name, Mode::from_raw_mode(0o700))
                        .context("creating the directory")?;
                }
                let fd = open_dir(&parent, name).context("opening the new directory")?;
                self.tree.set_fd(&fd, false, &meta)?;
                self.dirs.push((comps, meta));
                self.stats.dirs += 1;
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let flags = OFlags::WRONLY
                    | OFlags::CREATE
                    | OFlags::EXCL
                    | OFlags::NOFOLLOW
                    | OFlags::CLOEXEC;
                let fd = openat(&parent, name, flags, Mode::from_raw_mode(0o600))
                    .context("creating the file")?;
                let mut file = File::from(fd);
                self.stats.file_bytes +=
                    io::copy(&mut entry, &mut file).context("writing the file")?;
                self.tree.set_fd(file.as_fd(), true, &meta)?;
                futimens(&file, &times(meta.mtime)).context("setting the mtime")?;
                self.stats.files += 1;
            }
            EntryType::Symlink => {
                symlinkat(OsStr::from_bytes(&link), &parent, name)
                    .context("creating the symlink")?;
                self.tree.set_at(&parent, &comps, false, &meta)?;
                self.stats.symlinks += 1;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let h = entry.header();
                let dev = makedev(
                    h.device_major()?.unwrap_or(0),
                    h.device_minor()?.unwrap_or(0),
                );
                let (ft, counter) = match kind {
                    EntryType::Char => (FileType::CharacterDevice, &mut self.stats.devices),
                    EntryType::Block => (FileType::BlockDevice, &mut self.stats.devices),
                    _ => (FileType::Fifo, &mut self.stats.fifos),
                };
                *counter += 1;
                mknodat(&parent, name, ft, Mode::from_raw_mode(0o600), dev)
                    .context("creating the node")?;
                self.tree.set_at(&parent, &comps, true, &meta)?;
            }
            other => return reject(shown, format!("unsupported entry type {other:?}")),
        }
        Ok(())
    }

    /// Open the parent of `comps` (creating missing directories) and clear
    /// the way: remove a non-directory there, refuse to replace a directory
    /// unless the new entry is one too.
    fn replace(&self, comps: &[OsString], is_dir: bool, shown: &str) -> Result<OwnedFd> {
        let (name, parents) = comps.split_last().expect("not the root");
        let parent = self.tree.walk(parents, true, shown)?;
        match file_type(&parent, name)? {
            Some(FileType::Directory) if !is_dir => reject(shown, "it would replace a directory"),
            Some(FileType::Directory) | None => Ok(parent),
            Some(_) => {
                unlinkat(&parent, name.as_os_str(), AtFlags::empty())
                    .context("removing the existing entry")?;
                Ok(parent)
            }
        }
    }

    fn hardlink(&mut self, comps: &[OsString], target: &[OsString], shown: &str) -> Result<()> {
        let (tname, tparents) = target.split_last().expect("checked non-empty");
        let tparent = self.tree.walk(tparents, false, shown)?;
        match file_type(&tparent, tname)? {
            Some(FileType::Directory) => {
                return reject(shown, "the hardlink target is a directory")
            }
            None => return reject(shown, "the hardlink target does not exist (yet)"),
            Some(_) => {}
        }
        let parent = self.replace(comps, false, shown)?;
        let name = comps.last().expect("not the root").as_os_str();
        linkat(&tparent, tname.as_os_str(), &parent, name, AtFlags::empty())
            .context("creating the hardlink")?;
        self.stats.hardlinks += 1;
        Ok(())
    }
}

/// A relative symlink target must stay inside the root, seen from the
/// link's directory (`depth` levels below the root). Absolute targets are
/// fine: they resolve inside the deployed system when it boots.
fn check_symlink(target: &[u8], depth: usize, shown: &str) -> Result<()> {
    if target.is_empty() {
        return reject(shown, "the symlink target is empty");
    }
    if target.starts_with(b"/") {
        return Ok(());
    }
    let mut level = depth as i64;
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                level -= 1;
                if level < 0 {
                    return reject(shown, "the symlink target escapes the root");
                }
            }
            _ => level += 1,
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "extract_tests.rs"]
mod tests;
