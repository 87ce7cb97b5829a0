//! Making filesystems on a [`PartTarget`].
//!
//! ext4 and FAT come from the real tools (`mke2fs`, `mkfs.fat`), which the
//! initramfs must carry in `/bin` (we look in `/bin`, `/sbin`, `/usr/bin`,
//! `/usr/sbin` under the root). Both can write at a byte offset inside the
//! disk file, which is how process mode reaches a partition without loop
//! devices: `mke2fs -E offset=BYTES … SIZEk`, `mkfs.fat --offset SECTORS …
//! KIB`. Swap is a one-page header, written here: `mkswap` before
//! util-linux 2.39 has no offset option, and one tool fewer to carry.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};
use uuid::Uuid;

use super::PartTarget;

/// The filesystems an image can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    Ext4,
    /// FAT32 (FAT16 below 34 MiB, where FAT32 would have too few clusters
    /// for firmware to recognise it as FAT32).
    Vfat,
    Swap,
}

/// What to make.
#[derive(Debug, Clone, Copy)]
pub struct FsSpec<'a> {
    pub kind: FsKind,
    /// At most 16 bytes for ext4 and swap, 11 for FAT.
    pub label: &'a str,
    /// Filesystem UUID (ext4, swap); FAT takes its first 4 bytes as the
    /// volume ID. Derive it ([`super::derive_uuid`]) for reproducible disks.
    pub uuid: Uuid,
}

/// Where the tools are looked for, under the root.
pub const TOOL_DIRS: [&str; 4] = ["bin", "sbin", "usr/bin", "usr/sbin"];

/// Make the filesystem `spec` on `target`; `root` is where to find tools
/// (`/` on a node).
pub fn mkfs(root: &Path, target: &PartTarget, spec: &FsSpec) -> Result<()> {
    let what = format!(
        "making {:?} {:?} on {}",
        spec.kind,
        spec.label,
        describe(target)
    );
    match spec.kind {
        FsKind::Ext4 => ext4(root, target, spec, None),
        FsKind::Vfat => vfat(root, target, spec),
        FsKind::Swap => swap(target, spec),
    }
    .context(what)
}

fn describe(t: &PartTarget) -> String {
    if t.is_offset() {
        format!("{} at byte {}", t.path.display(), t.offset)
    } else {
        t.path.display().to_string()
    }
}

/// Make an ext4 filesystem on `target` already holding the tree at `dir`
/// (`mke2fs -d`: owners, modes, links, device nodes and xattrs are copied).
/// Process mode uses it for tar partitions of a disk image file, which it
/// cannot mount without loop devices.
pub fn ext4_from_dir(root: &Path, target: &PartTarget, spec: &FsSpec, dir: &Path) -> Result<()> {
    ext4(root, target, spec, Some(dir)).with_context(|| {
        format!(
            "making ext4 {:?} from {} on {}",
            spec.label,
            dir.display(),
            describe(target)
        )
    })
}

fn ext4(root: &Path, t: &PartTarget, spec: &FsSpec, populate: Option<&Path>) -> Result<()> {
    ensure!(
        spec.label.len() <= 16,
        "the ext4 label {:?} is longer than 16 bytes",
        spec.label
    );
    let tool = find_tool(root, &["mke2fs", "mkfs.ext4"])?;
    let mut ext = "root_owner=0:0".to_string();
    if t.is_offset() {
        ext.push_str(&format!(",offset={}", t.offset));
    }
    let mut cmd = Command::new(tool);
    cmd.args(["-F", "-q", "-t", "ext4", "-L", spec.label, "-U"])
        .arg(spec.uuid.to_string())
        .args(["-E", &ext]);
    if let Some(dir) = populate {
        cmd.arg("-d").arg(dir);
    }
    cmd.arg(&t.path)
        // The size keeps mke2fs inside the partition when writing at an offset.
        .arg(format!("{}k", t.size / 1024));
    run(cmd)
}

fn vfat(root: &Path, t: &PartTarget, spec: &FsSpec) -> Result<()> {
    ensure!(
        spec.label.len() <= 11,
        "the FAT label {:?} is longer than 11 bytes",
        spec.label
    );
    let tool = find_tool(root, &["mkfs.fat", "mkfs.vfat"])?;
    let volid = &spec.uuid.simple().to_string()[..8];
    let mut cmd = Command::new(tool);
    if t.size >= 34 << 20 {
        cmd.args(["-F", "32"]);
    }
    cmd.args(["-n", spec.label, "-i", volid]);
    if t.is_offset() {
        // 512-byte sectors, mkfs.fat's unit for files. Hidden sectors =
        // the partition's start, as mkfs.fat sets it on a partition node.
        ensure!(
            t.offset.is_multiple_of(512),
            "partition offset {} is not sector-aligned",
            t.offset
        );
        let sectors = (t.offset / 512).to_string();
        cmd.args(["--offset", &sectors, "-h", &sectors]);
    }
    cmd.arg(&t.path).arg((t.size / 1024).to_string());
    run(cmd)
}

/// Run a tool with no stdin; a failure carries its status and stderr.
fn run(mut cmd: Command) -> Result<()> {
    let prog = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {prog}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!("{prog} failed ({}): {}", out.status, stderr.trim());
    }
    Ok(())
}

/// The first of `names` found in [`TOOL_DIRS`] under `root`.
pub fn find_tool(root: &Path, names: &[&str]) -> Result<PathBuf> {
    for name in names {
        for dir in TOOL_DIRS {
            let p = root.join(dir).join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    bail!(
        "{} not found in /bin, /sbin, /usr/bin or /usr/sbin under {}: the initramfs must carry it",
        names.join(" or "),
        root.display()
    )
}

/// A version-1 swap header (`union swap_header` in linux/swap.h), in the
/// node's byte order and page size, as `mkswap` writes it.
pub fn swap_header(size: u64, page: usize, label: &str, uuid: Uuid) -> Result<Vec<u8>> {
    let pages = size / page as u64;
    ensure!(
        pages >= 10,
        "swap needs at least 10 pages, the partition has {pages}"
    );
    ensure!(
        label.len() <= 16,
        "the swap label {label:?} is longer than 16 bytes"
    );
    let last_page = u32::try_from(pages - 1).unwrap_or(u32::MAX);
    let mut h = vec![0u8; page];
    h[1024..1028].copy_from_slice(&1u32.to_ne_bytes()); // version
    h[1028..1032].copy_from_slice(&last_page.to_ne_bytes());
    // 1032..1036: nr_badpages = 0
    h[1036..1052].copy_from_slice(uuid.as_bytes());
    h[1052..1052 + label.len()].copy_from_slice(label.as_bytes());
    h[page - 10..].copy_from_slice(b"SWAPSPACE2");
    Ok(h)
}

fn swap(t: &PartTarget, spec: &FsSpec) -> Result<()> {
    let header = swap_header(t.size, page_size(), spec.label, spec.uuid)?;
    let f = OpenOptions::new()
        .write(true)
        .open(&t.path)
        .with_context(|| format!("opening {}", t.path.display()))?;
    f.write_all_at(&header, t.offset)
        .with_context(|| format!("writing the swap header to {}", t.path.display()))?;
    f.sync_data()
        .with_context(|| format!("syncing {}", t.path.display()))
}

fn page_size() -> usize {
    // SAFETY: sysconf only reads a constant of the running system.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096)
}

#[cfg(test)]
#[path = "mkfs_tests.rs"]
mod tests;
