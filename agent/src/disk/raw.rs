//! Writing a `raw` partition chunk by chunk, at each chunk's offset.
//!
//! Chunks can arrive in any order (torrent) and from several threads: the
//! writer uses positional I/O only (`pwrite`/`pread`) on one shared fd.
//!
//! Zero skipping: with `zero_skip`, all-zero spans are not written, at the
//! granularity of 4 KiB blocks aligned to the partition start (clipped to
//! the chunk's ends). That is only correct if the partition already reads
//! as zeros, which **the caller must ensure**: a freshly created or
//! truncated image file is sparse and reads as zeros; a real disk must be
//! cleared first with [`zero_target`] (BLKZEROOUT, which the kernel turns
//! into a write-zeroes/unmap command where the device has one). BLKDISCARD
//! alone is not enough: discarded blocks need not read back as zeros. When
//! clearing is too slow for a device, pass `zero_skip: false` and every
//! byte of the image is written.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;

use anyhow::{bail, ensure, Context, Result};
use rustix::fs::{fallocate, FallocateFlags};
use rustix::io::Errno;
use rustix::ioctl::{ioctl, opcode, Opcode, Setter};

use super::{is_block_device, sha256, PartTarget};

/// Zero-skip granularity: the page and filesystem block size.
pub const BLOCK: u64 = 4096;

/// What one `write_chunk` did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    pub written: u64,
    pub skipped: u64,
}

/// A raw partition open for positional writes.
#[derive(Debug)]
pub struct RawWriter {
    file: File,
    target: PartTarget,
    zero_skip: bool,
}

impl RawWriter {
    /// Open `target` for writing; see the module docs for `zero_skip`.
    pub fn open(target: &PartTarget, zero_skip: bool) -> Result<RawWriter> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&target.path)
            .with_context(|| format!("opening {} for writing", target.path.display()))?;
        Ok(RawWriter {
            file,
            target: target.clone(),
            zero_skip,
        })
    }

    /// Write `data` at `offset_in_part`; refuses to cross the partition end.
    pub fn write_chunk(&self, offset_in_part: u64, data: &[u8]) -> Result<WriteStats> {
        self.check_range(offset_in_part, data.len() as u64)?;
        let mut stats = WriteStats::default();
        let mut run: Option<usize> = None; // start of the pending non-zero run
        let mut pos = 0;
        while pos < data.len() {
            let abs = offset_in_part + pos as u64;
            let end = data.len().min(pos + (BLOCK - abs % BLOCK) as usize);
            if self.zero_skip && is_zero(&data[pos..end]) {
                if let Some(start) = run.take() {
                    stats.written += self.put(offset_in_part, start, &data[start..pos])?;
                }
                stats.skipped += (end - pos) as u64;
            } else if run.is_none() {
                run = Some(pos);
            }
            pos = end;
        }
        if let Some(start) = run {
            stats.written += self.put(offset_in_part, start, &data[start..])?;
        }
        Ok(stats)
    }

    fn put(&self, chunk_offset: u64, start: usize, bytes: &[u8]) -> Result<u64> {
        let at = self.target.offset + chunk_offset + start as u64;
        self.file.write_all_at(bytes, at).with_context(|| {
            format!(
                "writing {} bytes to {} at byte {at}",
                bytes.len(),
                self.target.path.display()
            )
        })?;
        Ok(bytes.len() as u64)
    }

    /// Read back `len` bytes at `offset_in_part` and compare their SHA-256
    /// with `expected`. Reads go through the page cache: this checks what
    /// the agent wrote (offsets, zero skipping on a non-zeroed target), not
    /// the medium.
    pub fn verify_chunk(&self, offset_in_part: u64, len: u64, expected: &[u8; 32]) -> Result<()> {
        self.check_range(offset_in_part, len)?;
        let mut buf = vec![0u8; len as usize];
        let at = self.target.offset + offset_in_part;
        let p = self.target.path.display();
        self.file
            .read_exact_at(&mut buf, at)
            .with_context(|| format!("reading back {len} bytes of {p} at byte {at}"))?;
        let got = sha256(&buf);
        if &got != expected {
            bail!(
                "verifying {p} at byte {at} (+{len}): SHA-256 is {}, expected {}",
                hex(&got),
                hex(expected)
            );
        }
        Ok(())
    }

    /// Flush written data to the device.
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .with_context(|| format!("syncing {}", self.target.path.display()))
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        let end = offset.checked_add(len);
        ensure!(
            end.is_some_and(|e| e <= self.target.size),
            "chunk at partition offset {offset} (+{len}) goes past the end of the partition ({} bytes) on {}",
            self.target.size,
            self.target.path.display()
        );
        Ok(())
    }
}

fn is_zero(b: &[u8]) -> bool {
    // OR-folding fixed-size pieces vectorizes; `iter().all` does not.
    b.chunks(64).all(|c| c.iter().fold(0, |a, &x| a | x) == 0)
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .fold(String::with_capacity(2 * b.len()), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

const BLKZEROOUT: Opcode = opcode::none(0x12, 127);

/// Make the partition read as zeros, so that [`RawWriter`] may skip zero
/// blocks: BLKZEROOUT on a block device, a punched hole in a file (zeros
/// written where the filesystem cannot punch).
pub fn zero_target(target: &PartTarget) -> Result<()> {
    let p = target.path.display();
    let file = OpenOptions::new()
        .write(true)
        .open(&target.path)
        .with_context(|| format!("opening {p} for writing"))?;
    let (off, len) = (target.offset, target.size);
    if is_block_device(&target.path).with_context(|| format!("inspecting {p}"))? {
        let range: [u64; 2] = [off, len];
        // SAFETY: BLKZEROOUT is `_IO(0x12, 127)` and reads a `uint64_t[2]`
        // (start, length) through its pointer argument, which `Setter` passes.
        unsafe { ioctl(&file, Setter::<BLKZEROOUT, [u64; 2]>::new(range)) }
            .with_context(|| format!("zeroing {p} (BLKZEROOUT, {len} bytes at {off})"))?;
        return Ok(());
    }
    match fallocate(
        &file,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        off,
        len,
    ) {
        Ok(()) => Ok(()),
        Err(Errno::OPNOTSUPP) => {
            let zeros = vec![0u8; 1 << 20];
            let mut at = off;
            while at < off + len {
                let n = zeros.len().min((off + len - at) as usize);
                file.write_all_at(&zeros[..n], at)
                    .with_context(|| format!("zeroing {p} at byte {at}"))?;
                at += n as u64;
            }
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("punching a hole of {len} bytes at {off} in {p}")),
    }
}

#[cfg(test)]
#[path = "raw_tests.rs"]
mod tests;
