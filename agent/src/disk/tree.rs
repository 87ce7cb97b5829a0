//! File-descriptor-relative operations below an extraction root that never
//! follow a symlink, for [`super::extract`].

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rustix::fs::{
    chmodat, chownat, fchmod, fchown, fsetxattr, futimens, lsetxattr, mkdirat, openat, statat,
    utimensat, AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags, CWD,
};
use rustix::io::Errno;

use super::extract::reject;

/// Owner, mode, mtime and extended attributes of an entry.
pub(super) struct Meta {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub mtime: i64,
    pub xattrs: Vec<(OsString, Vec<u8>)>,
}

/// The extraction root.
pub(super) struct Tree {
    root: OwnedFd,
    dest: PathBuf,
    /// Root may chown; others leave ownership as is.
    privileged: bool,
}

impl Tree {
    pub fn open(dest: &Path) -> Result<Tree> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let root = openat(CWD, dest, flags, Mode::empty())
            .with_context(|| format!("opening {}", dest.display()))?;
        Ok(Tree {
            root,
            dest: dest.to_path_buf(),
            privileged: rustix::process::geteuid().is_root(),
        })
    }

    /// Open the directory `comps` below the root without following any
    /// symlink; with `create`, make missing ones (0755). A symlink or a
    /// non-directory on the way is a rule violation of entry `shown`.
    pub fn walk(&self, comps: &[OsString], create: bool, shown: &str) -> Result<OwnedFd> {
        let mut fd = open_dir(&self.root, ".").context("opening the root directory")?;
        for (i, c) in comps.iter().enumerate() {
            let here = || {
                comps[..=i]
                    .join(OsStr::new("/"))
                    .to_string_lossy()
                    .into_owned()
            };
            fd = match open_dir(&fd, c.as_os_str()) {
                Ok(next) => next,
                Err(Errno::NOENT) if create => {
                    mkdirat(&fd, c.as_os_str(), Mode::from_raw_mode(0o755))
                        .with_context(|| format!("creating the parent directory {:?}", here()))?;
                    open_dir(&fd, c.as_os_str())
                        .with_context(|| format!("opening the parent directory {:?}", here()))?
                }
                // With O_DIRECTORY, a symlink gives ENOTDIR rather than ELOOP.
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    let is_link = file_type(&fd, c).ok().flatten() == Some(FileType::Symlink);
                    let rule = if is_link {
                        format!("the path goes through the symlink {:?}", here())
                    } else {
                        format!("{:?} is not a directory", here())
                    };
                    return reject(shown, rule);
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("opening the parent directory {:?}", here()))
                }
            };
        }
        Ok(fd)
    }

    /// The root directory itself.
    pub fn root(&self) -> &OwnedFd {
        &self.root
    }

    /// Owner, then mode (chown clears setuid), then xattrs (chown clears
    /// `security.capability`), on an open file or directory. Directories
    /// get their mode at the end ([`Tree::finish_dir`]), so `chmod: false`.
    pub fn set_fd(&self, fd: impl AsFd, chmod: bool, meta: &Meta) -> Result<()> {
        let fd = fd.as_fd();
        if self.privileged {
            fchown(fd, Some(uid(meta)), Some(gid(meta))).context("setting the owner")?;
        }
        if chmod {
            fchmod(fd, Mode::from_raw_mode(meta.mode)).context("setting the mode")?;
        }
        for (name, value) in &meta.xattrs {
            fsetxattr(fd, name.as_os_str(), value, XattrFlags::empty())
                .with_context(|| format!("setting the extended attribute {name:?}"))?;
        }
        Ok(())
    }

    /// The same plus the mtime, by name, for a symlink (`chmod: false`) or
    /// a device node or FIFO we just created.
    pub fn set_at(
        &self,
        parent: &OwnedFd,
        comps: &[OsString],
        chmod: bool,
        meta: &Meta,
    ) -> Result<()> {
        let name = comps.last().expect("an entry below the root").as_os_str();
        let nofollow = AtFlags::SYMLINK_NOFOLLOW;
        if self.privileged {
            chownat(parent, name, Some(uid(meta)), Some(gid(meta)), nofollow)
                .context("setting the owner")?;
        }
        if chmod {
            // Linux has no fchmodat(AT_SYMLINK_NOFOLLOW); this is never a symlink.
            chmodat(
                parent,
                name,
                Mode::from_raw_mode(meta.mode),
                AtFlags::empty(),
            )
            .context("setting the mode")?;
        }
        if !meta.xattrs.is_empty() {
            // lsetxattr does not follow the last component, and `walk` just
            // opened every parent as a real directory.
            let path = comps.iter().fold(self.dest.clone(), |p, c| p.join(c));
            for (xname, value) in &meta.xattrs {
                lsetxattr(&path, xname.as_os_str(), value, XattrFlags::empty())
                    .with_context(|| format!("setting the extended attribute {xname:?}"))?;
            }
        }
        utimensat(parent, name, &times(meta.mtime), nofollow).context("setting the mtime")
    }

    /// A directory's mode and mtime, once all its children exist.
    pub fn finish_dir(&self, comps: &[OsString], meta: &Meta) -> Result<()> {
        let fd = match comps.split_last() {
            None => open_dir(&self.root, ".")?,
            Some((name, parents)) => open_dir(self.walk(parents, false, "")?, name.as_os_str())?,
        };
        fchmod(&fd, Mode::from_raw_mode(meta.mode))?;
        futimens(&fd, &times(meta.mtime))?;
        Ok(())
    }
}

/// The type of `name` in `dir` without following it; `None` if absent.
pub(super) fn file_type(dir: impl AsFd, name: &OsStr) -> Result<Option<FileType>> {
    match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("inspecting {name:?}")),
    }
}

/// Open a directory below `dirfd`, refusing a symlink or a non-directory.
pub(super) fn open_dir<P: rustix::path::Arg>(
    dirfd: impl AsFd,
    name: P,
) -> rustix::io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    openat(dirfd, name, flags, Mode::empty())
}

pub(super) fn times(mtime: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn uid(meta: &Meta) -> Uid {
    Uid::from_raw(meta.uid)
}

fn gid(meta: &Meta) -> Gid {
    Gid::from_raw(meta.gid)
}
