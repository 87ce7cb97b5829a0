//! Mounting a fresh filesystem for extraction, and the directory fallback.
//!
//! On a node, a `tar` partition is mounted ([`Mount`]) and the archive is
//! extracted into it. In process mode the disk is a regular file and a
//! partition is only a byte range in it: mounting that would need a loop
//! device, which the agent does not use. There the tree goes into a plain
//! directory instead ([`TreeTarget::Directory`]) and the caller turns it into
//! the filesystem (e.g. `mke2fs -d DIR -E offset=…`) or just inspects it.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::Duration;

use anyhow::{Context, Result};
use rustix::io::Errno;
use rustix::mount::{mount, unmount, MountFlags, UnmountFlags};

/// How often and how long to retry a busy unmount (a file still being
/// closed, writeback in progress).
const UMOUNT_TRIES: u32 = 20;
const UMOUNT_PAUSE: Duration = Duration::from_millis(100);

/// A mounted filesystem, unmounted on drop (coreos-installer's `Mount`).
///
/// Drop syncs, unmounts with retries and removes the mount point (if
/// [`Mount::new`] created it), logging failures; call [`Mount::finish`] to
/// get them as errors instead.
#[derive(Debug)]
pub struct Mount {
    device: PathBuf,
    target: PathBuf,
    created: bool,
    done: bool,
}

impl Mount {
    /// Create `target` (and parents) and mount `device` there as `fstype`.
    pub fn new(device: &Path, target: &Path, fstype: &str) -> Result<Mount> {
        let what = || {
            format!(
                "mounting {} ({fstype}) on {}",
                device.display(),
                target.display()
            )
        };
        let created = !target.exists();
        fs::create_dir_all(target).with_context(what)?;
        if let Err(e) = mount(device, target, fstype, MountFlags::NOATIME, None) {
            if created {
                let _ = fs::remove_dir(target);
            }
            return Err(e).with_context(what);
        }
        Ok(Mount {
            device: device.to_path_buf(),
            target: target.to_path_buf(),
            created,
            done: false,
        })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.target
    }

    /// Sync, unmount and remove the mount point we made, reporting errors.
    pub fn finish(mut self) -> Result<()> {
        self.done = true;
        self.teardown()
    }

    fn teardown(&self) -> Result<()> {
        let t = self.target.display();
        rustix::fs::sync();
        let mut tries = 0;
        loop {
            match unmount(&self.target, UnmountFlags::empty()) {
                Ok(()) => break,
                Err(Errno::BUSY) if tries + 1 < UMOUNT_TRIES => {
                    tries += 1;
                    sleep(UMOUNT_PAUSE);
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "unmounting {} from {t} after {} tries",
                            self.device.display(),
                            tries + 1
                        )
                    })
                }
            }
        }
        if self.created {
            fs::remove_dir(&self.target)
                .with_context(|| format!("removing the mount point {t}"))?;
        }
        Ok(())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = self.teardown() {
                log::warn!("{e:#}");
            }
        }
    }
}

/// Where a partition's file tree goes.
#[derive(Debug)]
pub enum TreeTarget {
    /// The partition's filesystem, mounted (node).
    Mounted(Mount),
    /// A plain directory (process mode: no loop devices); left in place.
    Directory(PathBuf),
}

impl TreeTarget {
    /// The directory to extract into.
    pub fn path(&self) -> &Path {
        match self {
            TreeTarget::Mounted(m) => m.path(),
            TreeTarget::Directory(d) => d,
        }
    }

    /// Unmount (reporting errors), or sync a plain directory's files.
    pub fn finish(self) -> Result<()> {
        match self {
            TreeTarget::Mounted(m) => m.finish(),
            TreeTarget::Directory(_) => {
                rustix::fs::sync();
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mount a tmpfs: needs root, not loop devices. Skips without privileges.
    fn tmpfs(target: &Path) -> Option<Mount> {
        let existed = target.exists();
        match Mount::new(Path::new("none"), target, "tmpfs") {
            Ok(m) => Some(m),
            Err(e) => {
                eprintln!("cannot mount tmpfs here ({e:#}): skipping");
                let msg = "a failed mount leaves no new directory behind";
                assert_eq!(target.exists(), existed, "{msg}");
                None
            }
        }
    }

    #[test]
    fn finish_unmounts_and_removes_the_mount_point() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a/root");
        let Some(m) = tmpfs(&target) else { return };
        fs::write(m.path().join("hello"), "hi").unwrap();
        let t = TreeTarget::Mounted(m);
        assert_eq!(t.path(), target);
        t.finish().unwrap();
        assert!(!target.exists());
    }

    #[test]
    fn an_existing_mount_point_stays() {
        let dir = tempfile::tempdir().unwrap();
        let Some(m) = tmpfs(dir.path()) else { return };
        m.finish().unwrap();
        assert!(dir.path().is_dir());
    }

    #[test]
    fn drop_unmounts_too() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("root");
        let Some(m) = tmpfs(&target) else { return };
        fs::write(m.path().join("f"), "x").unwrap();
        drop(m);
        assert!(!target.exists());
    }

    #[test]
    fn busy_unmount_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("root");
        let Some(m) = tmpfs(&target) else { return };
        // A nested mount keeps the outer one busy for good.
        let inner = tmpfs(&target.join("inner")).expect("outer tmpfs mounted, inner must too");
        let err = format!("{:#}", clone_of(&m).teardown().unwrap_err());
        assert!(err.starts_with("unmounting none from "), "{err}");
        assert!(
            err.contains(&format!("after {UMOUNT_TRIES} tries")),
            "{err}"
        );
        inner.finish().unwrap();
        m.finish().unwrap();
    }

    fn clone_of(m: &Mount) -> Mount {
        Mount {
            device: m.device.clone(),
            target: m.target.clone(),
            created: false,
            done: true,
        }
    }

    #[test]
    fn failed_mount_names_everything() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("root");
        let missing = dir.path().join("no-such-device");
        let err = format!("{:#}", Mount::new(&missing, &target, "ext4").unwrap_err());
        assert!(
            err.starts_with(&format!(
                "mounting {} (ext4) on {}",
                missing.display(),
                target.display()
            )),
            "{err}"
        );
        assert!(!target.exists());
    }

    #[test]
    fn directory_target() {
        let dir = tempfile::tempdir().unwrap();
        let t = TreeTarget::Directory(dir.path().to_path_buf());
        assert_eq!(t.path(), dir.path());
        t.finish().unwrap();
        assert!(dir.path().exists());
    }
}
