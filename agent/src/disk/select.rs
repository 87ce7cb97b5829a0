//! Choosing the target disk from `deploy.disk`, with sysfs as the only
//! source (no udev, no lsblk in the initramfs).
//!
//! Candidates are the entries of `<root>/sys/block`, minus virtual devices
//! (`loop*`, `ram*`, `zram*`, `dm-*`, `md*`, `sr*`, `fd*`, `nbd*`, anything
//! under `/devices/virtual/`), hidden devices (NVMe multipath paths) and
//! partitions. What each selector matches:
//!
//! - `auto`: the single non-removable, non-USB, writable disk of at least the
//!   image's size. Removable or USB disks (a transport path containing
//!   `/usb`), and SD cards, are never chosen automatically; none or several
//!   qualifying disks is an error that lists every disk seen.
//! - `/dev/NAME`: that disk. `/dev/disk/...` paths follow the symlink when
//!   it exists; `/dev/disk/by-id/ID` falls back to `by-id:ID` without udev.
//! - `by-id:ID`: `<root>/dev/disk/by-id/ID` if udev made it, else the names
//!   udev would make, synthesized from sysfs: `virtio-SERIAL`,
//!   `nvme-MODEL_SERIAL`, `nvme-WWID`, `ata-MODEL_SERIAL` (only exact for
//!   ATA models of at most 16 characters: sysfs holds the SCSI INQUIRY model,
//!   udev the full ATA one) and `wwn-0xHEX` for NAA WWNs; spaces and other
//!   characters udev replaces become `_`. `scsi-`, `usb-` and `-partN` names
//!   are not synthesized.
//! - `serial:S`: `device/serial` (NVMe, MMC), `serial` (virtio-blk) or the
//!   SCSI/ATA unit serial page `device/vpd_pg80`, compared trimmed.
//! - `wwn:W`: `wwid`, `device/wwid` or `wwn`, compared case-insensitively
//!   without `naa.`/`eui.`/`0x` prefixes.
//!
//! An explicitly named disk may be removable; it must still be writable and
//! large enough. A named disk that is missing is an error: never a fallback.

use std::fmt::{self, Write as _};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use kernel_cmdline::DiskSelector;

use super::human_size;

/// The disk chosen for the deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// `<root>/dev/NAME` (`/dev/NAME` on a node).
    pub dev: PathBuf,
    /// Kernel name, `vda`, `nvme0n1`.
    pub name: String,
    pub size_bytes: u64,
    /// `queue/logical_block_size`: the GPT's sector size.
    pub logical_sector_size: u64,
    pub model: String,
    pub serial: String,
}

/// What sysfs says about one whole disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub size_bytes: u64,
    pub logical_sector_size: u64,
    pub removable: bool,
    pub read_only: bool,
    pub usb: bool,
    pub model: String,
    pub serial: String,
    pub wwid: String,
    /// `/dev/disk/by-id` names udev would create (see the module docs).
    pub by_id: Vec<String>,
}

impl Candidate {
    fn auto_eligible(&self) -> bool {
        !self.removable && !self.usb && !self.read_only
    }
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}", self.name, human_size(self.size_bytes))?;
        if !self.model.is_empty() {
            write!(f, ", model {:?}", self.model)?;
        }
        if !self.serial.is_empty() {
            write!(f, ", serial {:?}", self.serial)?;
        }
        for (flag, word) in [
            (self.removable, "removable"),
            (self.usb, "usb"),
            (self.read_only, "read-only"),
        ] {
            if flag {
                write!(f, ", {word}")?;
            }
        }
        f.write_str(")")
    }
}

/// Why no disk was chosen. `seen` lists every disk found, for the console.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("reading {}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("deploy.disk={selector}: no such disk; disks seen: {seen}")]
    NotFound { selector: String, seen: String },
    #[error("deploy.disk={selector} matches {count} disks; disks seen: {seen}")]
    Duplicate {
        selector: String,
        count: usize,
        seen: String,
    },
    #[error(
        "deploy.disk=auto: no usable disk (non-removable, non-USB, writable, at least {min}); \
         disks seen: {seen}; set deploy.disk"
    )]
    NoCandidate { min: String, seen: String },
    #[error("deploy.disk=auto: {count} disks qualify, refusing to guess; disks seen: {seen}; set deploy.disk to one of them")]
    Ambiguous { count: usize, seen: String },
    #[error("disk {name} is too small: {size}, the image needs {min}")]
    TooSmall {
        name: String,
        size: String,
        min: String,
    },
    #[error("disk {name} is read-only")]
    ReadOnly { name: String },
}

/// Choose the disk for `selector` among `<root>/sys/block`.
pub fn select(root: &Path, selector: &DiskSelector, min_size: u64) -> Result<Disk, SelectError> {
    let all = scan(root)?;
    let chosen = match selector {
        DiskSelector::Auto => auto(&all, min_size)?,
        named => {
            let c = find_named(root, &all, named)?;
            if c.read_only {
                return Err(SelectError::ReadOnly {
                    name: c.name.clone(),
                });
            }
            if c.removable || c.usb {
                log::warn!("deploy.disk={named} is a removable/USB disk: using it as asked");
            }
            check_size(c, min_size)?;
            c
        }
    };
    Ok(Disk {
        dev: root.join("dev").join(&chosen.name),
        name: chosen.name.clone(),
        size_bytes: chosen.size_bytes,
        logical_sector_size: chosen.logical_sector_size,
        model: chosen.model.clone(),
        serial: chosen.serial.clone(),
    })
}

fn auto(all: &[Candidate], min_size: u64) -> Result<&Candidate, SelectError> {
    let eligible: Vec<&Candidate> = all.iter().filter(|c| c.auto_eligible()).collect();
    let big: Vec<&Candidate> = eligible
        .iter()
        .copied()
        .filter(|c| c.size_bytes >= min_size)
        .collect();
    match (big.as_slice(), eligible.as_slice()) {
        ([one], _) => Ok(one),
        ([], [only]) => check_size(only, min_size).map(|_| *only),
        ([], _) => Err(SelectError::NoCandidate {
            min: human_size(min_size),
            seen: seen(all),
        }),
        (many, _) => Err(SelectError::Ambiguous {
            count: many.len(),
            seen: seen(all),
        }),
    }
}

fn check_size(c: &Candidate, min_size: u64) -> Result<(), SelectError> {
    if c.size_bytes < min_size {
        return Err(SelectError::TooSmall {
            name: c.name.clone(),
            size: human_size(c.size_bytes),
            min: human_size(min_size),
        });
    }
    Ok(())
}

fn find_named<'a>(
    root: &Path,
    all: &'a [Candidate],
    selector: &DiskSelector,
) -> Result<&'a Candidate, SelectError> {
    let matches: Vec<&Candidate> = match selector {
        DiskSelector::Auto => unreachable!("auto is not a named disk"),
        DiskSelector::Path(p) => match p.strip_prefix("/dev/disk/by-id/") {
            Some(id) => by_id(root, all, id),
            None => {
                let name = resolve_dev_link(root, Path::new(p));
                all.iter()
                    .filter(|c| Some(&c.name) == name.as_ref())
                    .collect()
            }
        },
        DiskSelector::ById(id) => by_id(root, all, id),
        DiskSelector::Serial(s) => all
            .iter()
            .filter(|c| !c.serial.is_empty() && c.serial == s.trim())
            .collect(),
        DiskSelector::Wwn(w) => all
            .iter()
            .filter(|c| !c.wwid.is_empty() && norm_wwn(&c.wwid) == norm_wwn(w))
            .collect(),
    };
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(SelectError::NotFound {
            selector: selector.to_string(),
            seen: seen(all),
        }),
        many => Err(SelectError::Duplicate {
            selector: selector.to_string(),
            count: many.len(),
            seen: seen(all),
        }),
    }
}

fn by_id<'a>(root: &Path, all: &'a [Candidate], id: &str) -> Vec<&'a Candidate> {
    let link = Path::new("/dev/disk/by-id").join(id);
    if fs::symlink_metadata(under(root, &link)).is_ok() {
        let name = resolve_dev_link(root, &link);
        return all
            .iter()
            .filter(|c| Some(&c.name) == name.as_ref())
            .collect();
    }
    all.iter()
        .filter(|c| c.by_id.iter().any(|n| n == id))
        .collect()
}

/// The kernel name a `/dev/...` path stands for: the last component of its
/// symlink target if it is a symlink (udev's `../../sda`), else its own.
fn resolve_dev_link(root: &Path, dev: &Path) -> Option<String> {
    let target = fs::read_link(under(root, dev)).unwrap_or_else(|_| dev.to_path_buf());
    Some(target.file_name()?.to_str()?.to_string())
}

fn under(root: &Path, abs: &Path) -> PathBuf {
    root.join(abs.strip_prefix("/").unwrap_or(abs))
}

fn norm_wwn(w: &str) -> String {
    let w = w.trim().to_ascii_lowercase();
    let w = ["naa.", "eui.", "wwn-"]
        .iter()
        .fold(w.as_str(), |s, p| s.strip_prefix(p).unwrap_or(s));
    w.strip_prefix("0x").unwrap_or(w).to_string()
}

fn seen(all: &[Candidate]) -> String {
    if all.is_empty() {
        return "none".to_string();
    }
    let mut s = String::new();
    for (i, c) in all.iter().enumerate() {
        let sep = if i == 0 { "" } else { "; " };
        let _ = write!(s, "{sep}{c}");
    }
    s
}

const VIRTUAL_PREFIXES: [&str; 8] = ["loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd"];

/// Every whole, non-virtual disk under `<root>/sys/block`, sorted by name.
pub fn scan(root: &Path) -> Result<Vec<Candidate>, SelectError> {
    let block = root.join("sys/block");
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SelectError::Io { path, source }
    };
    let root_canon = fs::canonicalize(root).map_err(io_err(root))?;
    let mut out = Vec::new();
    for entry in fs::read_dir(&block).map_err(io_err(&block))? {
        let entry = entry.map_err(io_err(&block))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let dir = entry.path();
        if VIRTUAL_PREFIXES.iter().any(|p| name.starts_with(p))
            || dir.join("partition").exists()
            || read(&dir, "hidden") == "1"
        {
            continue;
        }
        // The device's place in the hardware tree, relative to root.
        let real = |p: PathBuf| {
            fs::canonicalize(p).ok().and_then(|c| {
                c.strip_prefix(&root_canon)
                    .ok()
                    .map(|c| format!("/{}", c.display()))
            })
        };
        let block_path = real(dir.clone()).unwrap_or_default();
        if block_path.contains("/devices/virtual/") {
            continue;
        }
        let device_path = real(dir.join("device")).unwrap_or(block_path);
        out.push(candidate(&dir, name, &device_path));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn candidate(dir: &Path, name: String, device_path: &str) -> Candidate {
    let sectors: u64 = read(dir, "size").parse().unwrap_or(0);
    let lbs = read(dir, "queue/logical_block_size").parse().unwrap_or(512);
    let model = read(dir, "device/model");
    let vendor = read(dir, "device/vendor");
    let serial = first_of(dir, &["device/serial", "serial"])
        .or_else(|| vpd_serial(&dir.join("device/vpd_pg80")))
        .unwrap_or_default();
    let wwid = first_of(dir, &["wwid", "device/wwid", "wwn", "device/wwn"]).unwrap_or_default();
    // SD cards sit on an internal bus and often claim removable=0.
    let sd_card = name.starts_with("mmcblk") && read(dir, "device/type") == "SD";
    let mut c = Candidate {
        size_bytes: sectors.saturating_mul(512),
        logical_sector_size: lbs,
        removable: read(dir, "removable") == "1" || sd_card,
        read_only: read(dir, "ro") == "1",
        usb: device_path.contains("/usb"),
        model,
        serial,
        wwid,
        by_id: Vec::new(),
        name,
    };
    c.by_id = synthesize_by_id(&c, &vendor);
    c
}

/// The `/dev/disk/by-id` names udev's 60-persistent-storage.rules would give.
fn synthesize_by_id(c: &Candidate, vendor: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let (model, serial) = (udev_escape(&c.model), udev_escape(&c.serial));
    if c.name.starts_with("vd") && !serial.is_empty() {
        ids.push(format!("virtio-{serial}"));
    }
    if c.name.starts_with("nvme") {
        if !serial.is_empty() {
            ids.push(format!("nvme-{model}_{serial}"));
        }
        if !c.wwid.is_empty() {
            ids.push(format!("nvme-{}", udev_escape(&c.wwid)));
        }
    }
    if c.name.starts_with("sd") && vendor == "ATA" && !serial.is_empty() {
        ids.push(format!("ata-{model}_{serial}"));
    }
    if let Some(naa) = c.wwid.trim().strip_prefix("naa.") {
        ids.push(format!("wwn-0x{}", naa.to_ascii_lowercase()));
    }
    ids
}

/// Trim, then replace what udev does not keep in a link name with `_`.
fn udev_escape(s: &str) -> String {
    s.trim()
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || "#+-.:=@_".contains(ch) {
                ch
            } else {
                '_'
            }
        })
        .collect()
}

/// SCSI VPD page 0x80: 4-byte header (byte 3 = length), then the serial.
fn vpd_serial(path: &Path) -> Option<String> {
    let page = fs::read(path).ok()?;
    let len = *page.get(3)? as usize;
    let serial = page.get(4..4 + len)?;
    let s = String::from_utf8_lossy(serial).trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn first_of(dir: &Path, files: &[&str]) -> Option<String> {
    files.iter().map(|f| read(dir, f)).find(|s| !s.is_empty())
}

/// A sysfs attribute, trimmed; empty when absent.
fn read(dir: &Path, file: &str) -> String {
    fs::read_to_string(dir.join(file))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
#[path = "select_tests.rs"]
mod tests;
