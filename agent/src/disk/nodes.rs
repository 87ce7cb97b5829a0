//! After the table is written: make the kernel re-read it and wait for
//! devtmpfs to create the partition nodes. Both are no-ops on a regular
//! file (process mode), where partitions are byte ranges of the file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rustix::io::Errno;
use rustix::ioctl::{ioctl, opcode, NoArg, Opcode};

use super::is_block_device;

const BLKRRPART: Opcode = opcode::none(0x12, 95);

/// Ask the kernel to re-read the partition table of a block device, which
/// makes devtmpfs create the partition nodes; retried while the device is
/// busy (a just-closed fd, a probing driver), for up to 5 s. A no-op on a
/// regular file.
pub fn reread(dev: &Path) -> Result<()> {
    let d = dev.display();
    if !is_block_device(dev).with_context(|| format!("inspecting {d}"))? {
        return Ok(());
    }
    let file = File::open(dev).with_context(|| format!("opening {d}"))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // SAFETY: BLKRRPART is `_IO(0x12, 95)`, it takes no argument.
        let res = unsafe { ioctl(&file, NoArg::<BLKRRPART>::new()) };
        match res {
            Ok(()) => return Ok(()),
            Err(Errno::BUSY) if Instant::now() < deadline => sleep(Duration::from_millis(100)),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("re-reading the partition table of {d} (BLKRRPART)"))
            }
        }
    }
}

/// The node of partition `n` of `dev`: `sda` → `sda1`, but names ending in
/// a digit get a `p` (`nvme0n1p1`, `mmcblk0p1`, `loop0p1`).
pub fn partition_node(dev: &Path, n: u32) -> PathBuf {
    let name = dev.file_name().unwrap_or_default().to_string_lossy();
    let sep = if name.ends_with(|c: char| c.is_ascii_digit()) {
        "p"
    } else {
        ""
    };
    dev.with_file_name(format!("{name}{sep}{n}"))
}

/// Wait until devtmpfs shows partitions `1..=n` of a block device. A no-op
/// on a regular file.
pub fn wait_for_partitions(dev: &Path, n: u32, timeout: Duration) -> Result<()> {
    if !is_block_device(dev).with_context(|| format!("inspecting {}", dev.display()))? {
        return Ok(());
    }
    let nodes: Vec<PathBuf> = (1..=n).map(|i| partition_node(dev, i)).collect();
    wait_for_paths(&nodes, timeout).with_context(|| {
        format!(
            "waiting for the partitions of {} (is a partition still in use?)",
            dev.display()
        )
    })
}

pub(super) fn wait_for_paths(paths: &[PathBuf], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let missing: Vec<String> = paths
            .iter()
            .filter(|p| !p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{} did not appear within {} ms",
                missing.join(", "),
                timeout.as_millis()
            );
        }
        sleep(Duration::from_millis(50));
    }
}
