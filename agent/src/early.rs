//! Early boot for PID 1: the mounts an initramfs needs, as a table.
//!
//! Each step logs itself (at debug) like the shell command it replaces, as
//! u-root's `libinit` does, so a boot log shows exactly what happened.

use std::fs::{self, OpenOptions};

use anyhow::{Context, Result};
use rustix::mount::{mount, MountFlags};

struct Mount {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: MountFlags,
    data: &'static str,
}

const NOSUID_NODEV_NOEXEC: MountFlags = MountFlags::NOSUID
    .union(MountFlags::NODEV)
    .union(MountFlags::NOEXEC);

/// In order: `/dev` first so the console exists before anything is printed
/// to it on kernels that gave init no console.
const MOUNTS: &[Mount] = &[
    Mount {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MountFlags::NOSUID,
        data: "mode=0755",
    },
    Mount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
    },
    Mount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
    },
    Mount {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: MountFlags::NOSUID.union(MountFlags::NODEV),
        data: "mode=0755",
    },
    Mount {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: MountFlags::NOSUID.union(MountFlags::NODEV),
        data: "mode=1777",
    },
];

/// Mount `/dev`, `/proc`, `/sys`, `/run`, `/tmp` and point fds 0–2 at the
/// console. A filesystem that is already mounted (EBUSY) is fine: the agent
/// may be restarted by hand from a debug shell.
pub fn setup() -> Result<()> {
    for m in MOUNTS {
        log::debug!(
            "mount -t {} {} {} -o {}",
            m.fstype,
            m.source,
            m.target,
            m.data
        );
        fs::create_dir_all(m.target).with_context(|| format!("creating {}", m.target))?;
        let data = std::ffi::CString::new(m.data).expect("static mount data has no NUL");
        match mount(m.source, m.target, m.fstype, m.flags, data.as_c_str()) {
            Ok(()) | Err(rustix::io::Errno::BUSY) => {}
            Err(e) => {
                return Err(e).with_context(|| format!("mounting {} on {}", m.fstype, m.target))
            }
        }
    }
    reopen_console()
}

/// The kernel hands init `/dev/console` from the initramfs as fds 0–2 when
/// that node exists; open the devtmpfs one anyway so output works with any
/// initramfs.
fn reopen_console() -> Result<()> {
    let console = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
        .context("opening /dev/console")?;
    rustix::stdio::dup2_stdin(&console).context("dup2 console to stdin")?;
    rustix::stdio::dup2_stdout(&console).context("dup2 console to stdout")?;
    rustix::stdio::dup2_stderr(&console).context("dup2 console to stderr")?;
    Ok(())
}
