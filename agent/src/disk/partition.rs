//! Writing the GPT from the image's declared layout, and the chores around
//! it: wiping a table, refusing a disk that is not empty, finding where each
//! partition's bytes go; re-reading the table and waiting for the partition
//! nodes live in `nodes.rs` (re-exported here).
//!
//! The `gpt` crate (4.x) serializes the headers (with their CRCs), the
//! entries and the protective MBR. We use those pieces, not `GptDisk`: its
//! create path calls `Uuid::new_v4()` (`getrandom`, which can block early in
//! boot) even when given a GUID, and its open path parses the table back
//! (7 KB of partition-type names in the agent). So we place the partitions
//! ourselves (1 MiB aligned), with GUIDs derived from a seed. Also ours: the
//! sector size (the caller reads `queue/logical_block_size`) and BLKRRPART.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use gpt::disk::LogicalBlockSize;
use gpt::header::Header;
use gpt::mbr::ProtectiveMBR;
use gpt::partition::Partition;
use gpt::partition_types::{OperatingSystem, Type};
use uuid::Uuid;

pub use super::nodes::{partition_node, reread, wait_for_partitions};
use super::{derive_uuid, human_size, is_block_device, PartTarget};

/// Partitions start on 1 MiB boundaries (what every partitioner does).
pub const ALIGN: u64 = 1 << 20;
/// GPT attribute bit 2: "legacy BIOS bootable", which syslinux's gptmbr
/// looks for.
pub const LEGACY_BIOS_BOOTABLE: u64 = 1 << 2;
/// Room for the boot code in LBA0; the disk signature and the partition
/// records follow.
pub const BOOT_CODE_MAX: usize = 440;

/// The partitions of an image, in disk order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub partitions: Vec<PartSpec>,
}

/// One declared partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartSpec {
    /// GPT partition name, at most 36 UTF-16 units.
    pub label: String,
    /// Partition type GUID as text, e.g. `C12A7328-F81F-11D2-BA4B-00A0C93EC93B`.
    pub type_guid: String,
    pub size: Size,
    /// GPT attribute bits ([`LEGACY_BIOS_BOOTABLE`]).
    pub attributes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// At least this many bytes (rounded up to whole sectors).
    Bytes(u64),
    /// Up to the end of the usable area; last partition only.
    Rest,
}

/// How to write the table.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions<'a> {
    /// Logical sector size of the disk: 512 or 4096.
    pub sector_size: u64,
    /// Seed for the disk and partition GUIDs ([`derive_uuid`]).
    pub seed: &'a [u8],
    /// Up to 440 bytes of BIOS boot code for LBA0 (syslinux `gptmbr.bin`).
    pub boot_code: Option<&'a [u8]>,
}

/// The table as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub disk_guid: Uuid,
    pub partitions: Vec<Placed>,
}

/// Where a partition landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// 1-based partition number.
    pub number: u32,
    pub label: String,
    pub guid: Uuid,
    /// Byte offset from the start of the disk.
    pub offset: u64,
    pub size: u64,
}

/// Write a fresh GPT for `layout` onto `dev` (block device or image file):
/// wipe the old table areas, write entries and headers (primary and
/// backup), the protective MBR and optionally boot code, then sync. Does
/// not re-read: see [`reread`].
pub fn write(dev: &Path, layout: &Layout, opts: &WriteOptions) -> Result<Table> {
    let d = dev.display();
    let lb = LogicalBlockSize::try_from(opts.sector_size)
        .with_context(|| format!("writing the partition table on {d}"))?;
    let mut file = open_rw(dev)?;
    let len = file
        .seek(SeekFrom::End(0))
        .with_context(|| format!("reading the size of {d}"))?;
    // Everything that can be refused is checked before the disk is touched.
    let disk_guid = derive_uuid(opts.seed, "disk");
    let (mut primary, mut backup) = headers(lb, len, disk_guid)
        .with_context(|| format!("creating a GPT on {d} ({})", human_size(len)))?;
    let (first, last) = (primary.first_usable, primary.last_usable);
    let spans = plan(first, last, opts.sector_size, layout)
        .with_context(|| format!("placing partitions on {d} ({})", human_size(len)))?;
    let mut entries = Vec::new();
    let mut placed = Vec::new();
    for (i, (spec, &(first_lba, last_lba))) in layout.partitions.iter().zip(&spans).enumerate() {
        let number = i as u32 + 1;
        let type_guid = Uuid::parse_str(&spec.type_guid).with_context(|| {
            format!(
                "parsing the type GUID {:?} of partition {:?}",
                spec.type_guid, spec.label
            )
        })?;
        let guid = derive_uuid(opts.seed, &format!("part{number}"));
        entries.push(Partition {
            // Not `type_guid.into()`: its lookup of the OS name is a 7 KB table.
            part_type_guid: Type {
                guid: type_guid,
                os: OperatingSystem::None,
            },
            part_guid: guid,
            first_lba,
            last_lba,
            flags: spec.attributes,
            name: spec.label.clone(),
        });
        placed.push(Placed {
            number,
            label: spec.label.clone(),
            guid,
            offset: first_lba * opts.sector_size,
            size: (last_lba - first_lba + 1) * opts.sector_size,
        });
    }
    if let Some(code) = opts.boot_code {
        check_boot_code(code)?;
    }

    wipe(&file, len, dev)?;
    for (i, entry) in entries.iter().enumerate() {
        for array in [primary.part_start, backup.part_start] {
            entry
                .write_to_device(&mut file, i as u64, array, lb, primary.part_size)
                .with_context(|| format!("writing partition entry {} on {d}", i + 1))?;
        }
    }
    // The headers checksum the entry arrays just written; backup first, so
    // that a torn write leaves no valid primary.
    backup
        .write_backup(&mut file, lb)
        .with_context(|| format!("writing the backup GPT header on {d}"))?;
    primary
        .write_primary(&mut file, lb)
        .with_context(|| format!("writing the primary GPT header on {d}"))?;
    let lbas = len / opts.sector_size;
    ProtectiveMBR::with_lb_size(u32::try_from(lbas - 1).unwrap_or(u32::MAX))
        .overwrite_lba0(&mut file)
        .with_context(|| format!("writing the protective MBR on {d}"))?;
    if let Some(code) = opts.boot_code {
        write_boot_code_to(&file, dev, code)?;
    }
    file.sync_all().with_context(|| format!("syncing {d}"))?;
    Ok(Table {
        disk_guid,
        partitions: placed,
    })
}

/// Primary and backup headers for a disk of `len` bytes: 128 entries of
/// 128 bytes after the primary header and before the backup one, as every
/// partitioner lays them out. Built here rather than by `GptConfig::create`,
/// which first makes a header with `Uuid::new_v4()` (then replaces the
/// GUID): a `getrandom` call that can block early in boot.
fn headers(lb: LogicalBlockSize, len: u64, disk_guid: Uuid) -> Result<(Header, Header)> {
    let sector = lb.as_u64();
    let entry_lbas = (128 * 128u64).div_ceil(sector);
    let last_lba = (len / sector).saturating_sub(1);
    ensure!(
        last_lba > 2 * (entry_lbas + 1),
        "the disk has only {} sectors",
        last_lba + 1
    );
    let primary = Header {
        signature: "EFI PART".to_string(),
        revision: (1, 0),
        header_size_le: 92,
        crc32: 0,
        reserved: 0,
        current_lba: 1,
        backup_lba: last_lba,
        first_usable: 2 + entry_lbas,
        last_usable: last_lba - entry_lbas - 1,
        disk_guid,
        part_start: 2,
        num_parts: 128,
        part_size: 128,
        crc32_parts: 0,
    };
    let backup = Header {
        current_lba: last_lba,
        backup_lba: 1,
        part_start: last_lba - entry_lbas,
        ..primary.clone()
    };
    Ok((primary, backup))
}

/// First and last LBA of each partition: each starts on the next 1 MiB
/// boundary inside `first_usable..=last_usable`.
pub fn plan(
    first_usable: u64,
    last_usable: u64,
    sector: u64,
    layout: &Layout,
) -> Result<Vec<(u64, u64)>> {
    let align = (ALIGN / sector).max(1);
    let mut next = first_usable;
    let mut spans = Vec::new();
    let n = layout.partitions.len();
    ensure!(n > 0, "the layout has no partitions");
    ensure!(n <= 128, "the layout has {n} partitions, a GPT holds 128");
    for (i, p) in layout.partitions.iter().enumerate() {
        let units = p.label.encode_utf16().count();
        ensure!(
            units <= 36,
            "partition label {:?} is longer than 36 characters",
            p.label
        );
        let start = next.div_ceil(align) * align;
        let end = match p.size {
            Size::Bytes(0) => bail!("partition {:?} has size 0", p.label),
            Size::Bytes(b) => start + b.div_ceil(sector) - 1,
            Size::Rest if i + 1 == n => last_usable,
            Size::Rest => bail!(
                "partition {:?}: only the last partition can take the rest",
                p.label
            ),
        };
        if start > last_usable || end > last_usable {
            let need = match p.size {
                Size::Bytes(b) => human_size(b),
                Size::Rest => "at least 1 sector".to_string(),
            };
            let free = (last_usable + 1).saturating_sub(start) * sector;
            bail!(
                "partition {} {:?} does not fit: needs {need}, {} left",
                i + 1,
                p.label,
                human_size(free)
            );
        }
        spans.push((start, end));
        next = end + 1;
    }
    Ok(spans)
}

/// Put BIOS boot code into LBA0 bytes `0..code.len()` (at most 440), leaving
/// the disk signature, partition records and 0x55AA alone.
pub fn write_boot_code(dev: &Path, code: &[u8]) -> Result<()> {
    let file = open_rw(dev)?;
    write_boot_code_to(&file, dev, code)?;
    file.sync_all()
        .with_context(|| format!("syncing {}", dev.display()))
}

fn check_boot_code(code: &[u8]) -> Result<()> {
    ensure!(
        code.len() <= BOOT_CODE_MAX,
        "boot code is {} bytes, LBA0 has room for {BOOT_CODE_MAX}",
        code.len()
    );
    Ok(())
}

fn write_boot_code_to(file: &File, dev: &Path, code: &[u8]) -> Result<()> {
    check_boot_code(code)?;
    file.write_all_at(code, 0)
        .with_context(|| format!("writing boot code to {}", dev.display()))
}

/// Zero the first and last MiB of `dev`: MBR, primary and backup GPT. A
/// failed deploy calls this so that no half-valid table is left to boot
/// from (coreos-installer resets the table on failure, too).
pub fn wipe_table(dev: &Path) -> Result<()> {
    let mut file = open_rw(dev)?;
    let len = file
        .seek(SeekFrom::End(0))
        .with_context(|| format!("reading the size of {}", dev.display()))?;
    wipe(&file, len, dev)?;
    file.sync_all()
        .with_context(|| format!("syncing {}", dev.display()))
}

fn wipe(file: &File, len: u64, dev: &Path) -> Result<()> {
    let zeros = vec![0u8; ALIGN.min(len) as usize];
    for at in [0, len - zeros.len() as u64] {
        file.write_all_at(&zeros, at).with_context(|| {
            format!(
                "wiping the partition table of {} at byte {at}",
                dev.display()
            )
        })?;
    }
    Ok(())
}

/// Whether `dev` starts with a partition table: the MBR signature 0x55AA
/// at byte 510, or "EFI PART" in LBA1 for 512- or 4096-byte sectors. The
/// agent refuses such a disk unless `deploy.wipe` is set.
pub fn has_partition_table(dev: &Path) -> Result<bool> {
    let file = File::open(dev).with_context(|| format!("opening {}", dev.display()))?;
    let mut head = vec![0u8; 4096 + 512];
    let mut got = 0;
    while got < head.len() {
        let n = file
            .read_at(&mut head[got..], got as u64)
            .with_context(|| format!("reading the first sectors of {}", dev.display()))?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let at = |o: usize, sig: &[u8]| head.get(o..o + sig.len()) == Some(sig) && o + sig.len() <= got;
    Ok(at(510, &[0x55, 0xAA]) || at(512, b"EFI PART") || at(4096, b"EFI PART"))
}

/// Where each partition's bytes go: the partition node on a block device,
/// the disk file at the partition's offset otherwise.
pub fn targets(dev: &Path, table: &Table) -> Result<Vec<PartTarget>> {
    let block = is_block_device(dev).with_context(|| format!("inspecting {}", dev.display()))?;
    Ok(table
        .partitions
        .iter()
        .map(|p| PartTarget {
            path: if block {
                partition_node(dev, p.number)
            } else {
                dev.to_path_buf()
            },
            offset: if block { 0 } else { p.offset },
            size: p.size,
        })
        .collect())
}

fn open_rw(dev: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .with_context(|| format!("opening {} for writing", dev.display()))
}

#[cfg(test)]
#[path = "partition_tests.rs"]
mod tests;
