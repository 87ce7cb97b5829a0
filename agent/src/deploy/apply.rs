//! Put a verified image onto a disk: partition table, filesystems, then
//! every partition's content through the pipeline
//!
//!   chunk source → verify (SHA-256 of the compressed bytes, before
//!   anything else sees them) → inflate (bounded) → raw writer (skip zero
//!   blocks, read back and compare) or tar extractor (safe paths only)
//!
//! and the BIOS boot code last. Any failure after the table was written
//! wipes it again: a partial install is never bootable.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::disk::{self, extract, mkfs, partition, raw, PartTarget};
use crate::image::{
    ChunkSource, ContentKind, Filesystem, Manifest, PartSize, SourceProgress, SourceReader,
};
use crate::report::{Phase, Reporter};

/// Where and how to write.
pub struct Target<'a> {
    /// The whole disk: a block device or an image file.
    pub disk: &'a Path,
    /// Where tools (`mke2fs`, `mkfs.fat`) are found: `/` on a node.
    pub root: &'a Path,
    /// Overwrite a disk that already has a partition table.
    pub wipe: bool,
    /// Seeds the disk, partition and filesystem UUIDs (reproducible disks).
    pub seed: &'a [u8],
    /// Scratch space for process mode's tar staging.
    pub scratch: &'a Path,
    /// Phases from partitioning on, and the progress of the payload.
    pub report: &'a Reporter,
}

/// What was written.
#[derive(Debug, Default)]
pub struct Written {
    /// Uncompressed bytes handed to the disk.
    pub bytes: u64,
    /// Tar entries extracted.
    pub entries: u64,
    pub elapsed: Duration,
}

/// Retries of a chunk whose bytes failed verification (a flaky transport).
const VERIFY_RETRIES: usize = 3;

pub fn apply(m: &Manifest, t: &Target, src: &mut dyn ChunkSource) -> Result<Written> {
    let started = Instant::now();
    let d = t.disk.display();
    let block = disk::is_block_device(t.disk).with_context(|| format!("examining {d}"))?;
    let size = disk_size(t.disk)?;
    if size < m.disk.min_size {
        bail!(
            "disk {d} is too small for {}@{}: {} but the image needs at least {}",
            m.name,
            m.version,
            disk::human_size(size),
            disk::human_size(m.disk.min_size)
        );
    }
    if !t.wipe && partition::has_partition_table(t.disk)? {
        bail!("disk {d} already has a partition table; refusing to overwrite it without deploy.wipe=yes");
    }
    let sector_size = if block { sector_size(t.disk)? } else { 512 };
    let layout = partition::Layout {
        partitions: m
            .disk
            .partitions
            .iter()
            .map(|p| partition::PartSpec {
                label: p.label.clone(),
                type_guid: p.type_guid.as_str().to_string(),
                size: match p.size {
                    PartSize::Bytes(b) => partition::Size::Bytes(b),
                    PartSize::Rest => partition::Size::Rest,
                },
                attributes: p.attributes.iter().fold(0u64, |a, x| a | 1 << x.bit()),
            })
            .collect(),
    };
    t.report.phase(
        Phase::Partition,
        format!(
            "{d}: writing a GPT with {} partitions",
            layout.partitions.len()
        ),
    );
    // Boot code comes last, once everything verified.
    let opts = partition::WriteOptions {
        sector_size,
        seed: t.seed,
        boot_code: None,
    };
    let table =
        partition::write(t.disk, &layout, &opts).with_context(|| format!("partitioning {d}"))?;
    log::info!(
        "partitioned {d}: {} partitions (GPT, protective MBR)",
        table.partitions.len()
    );

    let result = (|| {
        if block {
            partition::reread(t.disk)?;
            partition::wait_for_partitions(
                t.disk,
                table.partitions.len() as u32,
                Duration::from_secs(10),
            )?;
        }
        let targets = partition::targets(t.disk, &table)?;
        let total = content_total(m);
        t.report.phase(
            Phase::Write,
            format!(
                "writing {} into {} partitions",
                disk::human_size(total),
                targets.len()
            ),
        );
        let mut written = Written::default();
        for (i, target) in targets.iter().enumerate() {
            fill(m, t, i, target, block, src, &mut written)?;
            t.report.progress(written.bytes, total);
        }
        // Each chunk was checked against the signed table, raw writes were
        // read back and tar entry counts compared as they were written:
        // this phase only marks that all of it passed.
        t.report.phase(
            Phase::Verify,
            format!(
                "{} written and checked: chunk hashes, read-back, entry counts",
                disk::human_size(written.bytes)
            ),
        );
        t.report.phase(Phase::Finish, "boot code, sync");
        if let Some(code) = &m.disk.bios_boot_code {
            partition::write_boot_code(t.disk, &code.0).context("writing the BIOS boot code")?;
        }
        File::open(t.disk)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("syncing {d}"))?;
        written.elapsed = started.elapsed();
        Ok(written)
    })();
    if result.is_err() {
        // Never leave a half-written disk that firmware would try to boot.
        if let Err(e) = partition::wipe_table(t.disk) {
            log::error!("wiping the partial partition table of {d}: {e:#}");
        }
    }
    result
}

/// Make partition `i`'s filesystem and write its content.
fn fill(
    m: &Manifest,
    t: &Target,
    i: usize,
    target: &PartTarget,
    block: bool,
    src: &mut dyn ChunkSource,
    written: &mut Written,
) -> Result<()> {
    let p = &m.disk.partitions[i];
    let name = m.partition_name(i);
    let uuid = disk::derive_uuid(t.seed, &format!("fs-{i}"));
    let fs_kind = match p.filesystem {
        Filesystem::Ext4 => Some(mkfs::FsKind::Ext4),
        Filesystem::Vfat => Some(mkfs::FsKind::Vfat),
        Filesystem::Swap => Some(mkfs::FsKind::Swap),
        Filesystem::None => None,
    };
    let label = fs_label(&p.label, p.filesystem);
    let spec = |kind| mkfs::FsSpec {
        kind,
        label: &label,
        uuid,
    };
    let started = Instant::now();
    match (p.content.as_ref(), fs_kind) {
        (None, None) => {}
        (None, Some(kind)) => mkfs::mkfs(t.root, target, &spec(kind))?,
        (Some(c), _) if c.kind == ContentKind::Raw => {
            raw::zero_target(target).with_context(|| format!("zeroing {name}"))?;
            let w = raw::RawWriter::open(target, true)?;
            let mut progress = SourceProgress::new(m, i)?;
            let mut failures = 0;
            let (before, total) = (written.bytes, content_total(m));
            loop {
                let r = crate::image::stream_source(m, &mut progress, src, |off, data| {
                    w.write_chunk(off, data)?;
                    // Read back what landed: a lying disk fails here, not at boot.
                    w.verify_chunk(off, data.len() as u64, &disk::sha256(data))?;
                    t.report.progress(before + off + data.len() as u64, total);
                    Ok(())
                });
                match r {
                    Ok(()) => break,
                    Err(e) if e.is_retryable() && failures < VERIFY_RETRIES => {
                        failures += 1;
                        log::warn!(
                            "{name}: {e:#}; fetching chunk {} again",
                            progress.next_chunk()
                        );
                    }
                    Err(e) => return Err(e).with_context(|| format!("writing {name}")),
                }
            }
            w.sync()?;
            written.bytes += c.size;
        }
        (Some(c), kind) => {
            let kind = kind.filter(|k| *k != mkfs::FsKind::Swap).with_context(|| {
                format!(
                    "{name}: a tar content needs an ext4 or vfat filesystem, not {:?}",
                    p.filesystem
                )
            })?;
            let stats = if block {
                mkfs::mkfs(t.root, target, &spec(kind))?;
                let dir = t.scratch.join(format!("mnt-{}", i + 1));
                let fstype = if kind == mkfs::FsKind::Ext4 {
                    "ext4"
                } else {
                    "vfat"
                };
                let mount = disk::mount::Mount::new(&target.path, &dir, fstype)?;
                let stats = extract_source(m, t, i, src, mount.path(), written.bytes)?;
                mount.finish()?;
                stats
            } else {
                // A disk image file cannot be mounted without loop devices:
                // extract to scratch, then let mke2fs copy the tree in.
                ensure!(
                    kind == mkfs::FsKind::Ext4,
                    "{name}: tar content on vfat needs a block device (process mode on an image file supports ext4)"
                );
                let dir = t.scratch.join(format!("tree-{}", i + 1));
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                let stats = extract_source(m, t, i, src, &dir, written.bytes)?;
                mkfs::ext4_from_dir(t.root, target, &spec(kind), &dir)?;
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing {}", dir.display()))?;
                stats
            };
            if let (Some(e), Some(b)) = (c.entries, c.file_bytes) {
                ensure!(
                    stats.entries == e && stats.file_bytes == b,
                    "{name}: extracted {} entries with {} file bytes, the manifest says {e} and {b}",
                    stats.entries,
                    stats.file_bytes
                );
            }
            written.bytes += c.size;
            written.entries += stats.entries;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    match &p.content {
        Some(c) => log::info!(
            "wrote {name}: {:?} {} in {secs:.1}s ({:.1} MB/s), verified",
            c.kind,
            disk::human_size(c.size),
            c.size as f64 / 1e6 / secs.max(1e-3)
        ),
        None => log::info!("made {name}: {:?}", p.filesystem),
    }
    Ok(())
}

/// Stream a tar source into `dir`, then finish the source so its hash is
/// checked even though tar stops reading at its end-of-archive blocks.
/// `before`: payload bytes written by earlier partitions, for the progress.
fn extract_source(
    m: &Manifest,
    t: &Target,
    i: usize,
    src: &mut dyn ChunkSource,
    dir: &Path,
    before: u64,
) -> Result<extract::Stats> {
    let name = m.partition_name(i);
    let total = content_total(m);
    let mut reader = Progressing {
        reader: SourceReader::new(m, i, src)?,
        on_consumed: &|done| t.report.progress(before + done, total),
    };
    let stats = extract::extract(&mut reader, dir).with_context(|| format!("extracting {name}"))?;
    reader
        .reader
        .finish()
        .with_context(|| format!("checking {name}"))?;
    Ok(stats)
}

/// A tar source that tells how much of it the extractor has consumed:
/// when it asks for the next chunk, it has taken every byte before it.
struct Progressing<'a, 'b> {
    reader: SourceReader<'a>,
    on_consumed: &'b dyn Fn(u64),
}

impl Read for Progressing<'_, '_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let before = self.reader.progress().offset();
        let n = self.reader.read(out)?;
        if self.reader.progress().offset() != before {
            (self.on_consumed)(before);
        }
        Ok(n)
    }
}

/// The uncompressed size of every partition's content: what the progress
/// counts to.
fn content_total(m: &Manifest) -> u64 {
    m.disk
        .partitions
        .iter()
        .filter_map(|p| p.content.as_ref())
        .map(|c| c.size)
        .sum()
}

/// Filesystem labels are shorter than GPT names: ext4 16 bytes, FAT 11
/// (upper case by convention).
fn fs_label(gpt_label: &str, fs: Filesystem) -> String {
    let max = if fs == Filesystem::Vfat { 11 } else { 16 };
    let mut l: String = gpt_label.chars().filter(|c| c.is_ascii_graphic()).collect();
    if fs == Filesystem::Vfat {
        l = l.to_ascii_uppercase();
    }
    l.truncate(max);
    l
}

/// Bytes on the disk: seeking to the end works for files and block devices.
fn disk_size(path: &Path) -> Result<u64> {
    let mut f = OpenOptions::new()
        .read(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.seek(SeekFrom::End(0))
        .with_context(|| format!("measuring {}", path.display()))
}

fn sector_size(path: &Path) -> Result<u64> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let s = rustix::fs::ioctl_blksszget(&f)
        .with_context(|| format!("BLKSSZGET on {}", path.display()))?;
    Ok(u64::from(s))
}

/// Scratch directory for a deploy (process mode: next to nothing the user owns).
pub fn scratch_dir() -> PathBuf {
    std::env::temp_dir().join(format!("drover-agent-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_fit_their_filesystem() {
        assert_eq!(fs_label("ESP", Filesystem::Vfat), "ESP");
        assert_eq!(fs_label("efi system", Filesystem::Vfat), "EFISYSTEM");
        assert_eq!(
            fs_label("a-very-long-root-label", Filesystem::Ext4),
            "a-very-long-root"
        );
    }
}
