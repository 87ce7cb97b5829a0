//! The benchmark image and the disks it lands on.
//!
//! The image is one raw partition of seeded pseudo-random bytes: it does
//! not compress, so the payload drover sends is as large as the raw file
//! udpcast sends, and both are compared with the same ideal time. Every
//! node writes to its own sparse file disk, and each disk is checked
//! afterwards by hashing the partition's bytes against the raw file.

use std::fs::File;
use std::io::{BufWriter, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context as _, Result};
use sha2::{Digest as _, Sha256};

/// The image's name in the store.
pub const NAME: &str = "bench";
/// Its version.
pub const VERSION: &str = "1";

/// An imported image and what is needed to deploy and check it.
#[derive(Debug, Clone)]
pub struct Image {
    /// The raw partition content (what udpcast sends).
    pub raw: PathBuf,
    pub raw_len: u64,
    pub raw_sha256: [u8; 32],
    /// The image store holding `bench@1`.
    pub store: PathBuf,
    /// `drover.key` and `drover.pub`.
    pub keys: PathBuf,
    /// Bytes of the payload blob (what drover sends).
    pub payload_len: u64,
    /// Placeholder kernel and initrd: the server needs files to point
    /// boot entries at, process-mode agents never fetch them.
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

impl Image {
    /// Generate `size_mib` MiB of data under `dir` (emptied first), make a
    /// signing key and import the image with `server_bin`, in chunks of
    /// `chunk_kib` KiB (`None`: the importer's default, 4 MiB).
    ///
    /// The chunk size matters for chain mode: a node verifies a whole
    /// chunk before forwarding it, so the chain's tail starts one chunk
    /// time per hop after the head.
    pub fn build(
        dir: &Path,
        server_bin: &Path,
        size_mib: u64,
        chunk_kib: Option<u64>,
    ) -> Result<Image> {
        Image::build_with_pieces(dir, server_bin, size_mib, chunk_kib, None)
    }

    /// [`Image::build`], with the `payload.torrent`'s pieces of
    /// `piece_kib` KiB (`None`: the importer's choice, the smallest power
    /// of two that keeps the payload within 2000 pieces: 32 KiB for
    /// 32 MiB, 256 KiB for 256 MiB).
    pub fn build_with_pieces(
        dir: &Path,
        server_bin: &Path,
        size_mib: u64,
        chunk_kib: Option<u64>,
        piece_kib: Option<u64>,
    ) -> Result<Image> {
        ensure!(size_mib >= 1, "the image needs at least 1 MiB");
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let raw = dir.join("raw.img");
        let raw_len = size_mib << 20;
        let raw_sha256 = write_random(&raw, raw_len, 0x5eed_d20e)?;
        let keys = dir.join("keys");
        run(Command::new(server_bin)
            .args(["key", "generate", "--out"])
            .arg(&keys))?;
        let store = dir.join("store");
        let mut import = Command::new(server_bin);
        import
            .args(["image", "import", "--store"])
            .arg(&store)
            .args(["--name", NAME, "--version", VERSION, "--key"])
            .arg(keys.join("drover.key"))
            .arg("--partition")
            .arg(format!(
                "label=root,type=linux,size=rest,fs=none,content=raw:{}",
                raw.display()
            ));
        if let Some(kib) = chunk_kib {
            import.args(["--chunk-size", &format!("{kib}K")]);
        }
        if let Some(kib) = piece_kib {
            import.args(["--piece-length", &format!("{kib}K")]);
        }
        run(&mut import)?;
        let payload = store.join(NAME).join(VERSION).join("payload");
        let payload_len = std::fs::metadata(&payload)
            .with_context(|| format!("reading {}", payload.display()))?
            .len();
        let kernel = dir.join("vmlinuz");
        let initrd = dir.join("initrd.img");
        std::fs::write(&kernel, b"not a kernel: process-mode benchmark\n")?;
        std::fs::write(&initrd, b"not an initrd: process-mode benchmark\n")?;
        Ok(Image {
            raw,
            raw_len,
            raw_sha256,
            store,
            keys,
            payload_len,
            kernel,
            initrd,
        })
    }

    /// `NAME@VERSION`.
    pub fn reference(&self) -> String {
        format!("{NAME}@{VERSION}")
    }

    pub fn public_key(&self) -> PathBuf {
        self.keys.join("drover.pub")
    }

    /// How large a node's disk is: the raw content, the GPT's 1 MiB
    /// alignment in front and its backup at the end, and slack.
    pub fn disk_len(&self) -> u64 {
        self.raw_len + (8 << 20)
    }

    /// Create (or replace) a sparse, all-zero disk file at `path`.
    pub fn new_disk(&self, path: &Path) -> Result<()> {
        let _ = std::fs::remove_file(path);
        let f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        f.set_len(self.disk_len())
            .with_context(|| format!("sizing {}", path.display()))?;
        Ok(())
    }

    /// Check a disk drover deployed: its first GPT partition holds exactly
    /// the raw image.
    pub fn verify_gpt_disk(&self, disk: &Path) -> Result<()> {
        let start = first_partition_offset(disk)?;
        self.verify_at(disk, start)
    }

    /// Check a file that holds the raw image from byte `offset` (udpcast
    /// receivers write it from byte 0).
    pub fn verify_at(&self, disk: &Path, offset: u64) -> Result<()> {
        let got = sha256_range(disk, offset, self.raw_len)?;
        if got != self.raw_sha256 {
            bail!(
                "{}: the {} bytes at offset {offset} do not match the image (sha256 {} ≠ {})",
                disk.display(),
                self.raw_len,
                hex(&got),
                hex(&self.raw_sha256)
            );
        }
        Ok(())
    }
}

/// Run a command; its output is the error when it fails.
fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("{cmd:?} failed ({}):\n{text}", out.status);
    }
    Ok(text)
}

/// Write `len` bytes of xorshift64* output seeded with `seed`; their SHA-256.
fn write_random(path: &Path, len: u64, seed: u64) -> Result<[u8; 32]> {
    let f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let mut hash = Sha256::new();
    let mut state = seed | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left.min(buf.len() as u64)).expect("at most 1 MiB");
        for word in buf[..n].chunks_mut(8) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let v = state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            word.copy_from_slice(&v[..word.len()]);
        }
        w.write_all(&buf[..n])?;
        hash.update(&buf[..n]);
        left -= n as u64;
    }
    w.flush()?;
    Ok(hash.finalize().into())
}

/// SHA-256 of `len` bytes of `path` from `offset`.
fn sha256_range(path: &Path, offset: u64, len: u64) -> Result<[u8; 32]> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    f.seek(SeekFrom::Start(offset))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left.min(buf.len() as u64)).expect("at most 1 MiB");
        f.read_exact(&mut buf[..n])
            .with_context(|| format!("reading {} at {}", path.display(), offset + len - left))?;
        hash.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(hash.finalize().into())
}

/// Byte offset of the first partition of a GPT disk with 512-byte sectors:
/// the header at LBA 1 says where the entries are; an entry's first LBA
/// is at bytes 32..40.
pub fn first_partition_offset(disk: &Path) -> Result<u64> {
    let mut f = File::open(disk).with_context(|| format!("opening {}", disk.display()))?;
    let mut header = [0u8; 92];
    f.seek(SeekFrom::Start(512))?;
    f.read_exact(&mut header)?;
    if &header[..8] != b"EFI PART" {
        bail!("{}: no GPT header at LBA 1", disk.display());
    }
    let entries_lba = u64::from_le_bytes(header[72..80].try_into().expect("8 bytes"));
    let mut entry = [0u8; 48];
    f.seek(SeekFrom::Start(entries_lba * 512))?;
    f.read_exact(&mut entry)?;
    if entry[..16].iter().all(|&b| b == 0) {
        bail!("{}: the first GPT entry is empty", disk.display());
    }
    let first_lba = u64::from_le_bytes(entry[32..40].try_into().expect("8 bytes"));
    Ok(first_lba * 512)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_data_is_seeded_and_hashed() {
        let dir = std::env::temp_dir().join(format!("drover-bench-img-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a");
        let h = write_random(&a, 3 << 20 | 5, 7).unwrap();
        let data = std::fs::read(&a).unwrap();
        assert_eq!(data.len(), 3 << 20 | 5);
        assert_eq!(<[u8; 32]>::from(Sha256::digest(&data)), h);
        assert_eq!(sha256_range(&a, 0, data.len() as u64).unwrap(), h);
        assert_eq!(write_random(&dir.join("b"), 3 << 20 | 5, 7).unwrap(), h);
        assert_ne!(write_random(&dir.join("c"), 3 << 20 | 5, 8).unwrap(), h);
        // Not compressible: no byte value dominates.
        let zeros = data.iter().filter(|&&b| b == 0).count();
        assert!(zeros < data.len() / 128, "{zeros}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn finds_the_first_partition() {
        let dir = std::env::temp_dir().join(format!("drover-bench-gpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let disk = dir.join("disk");
        let mut d = vec![0u8; 4096];
        d[512..520].copy_from_slice(b"EFI PART");
        d[512 + 72..512 + 80].copy_from_slice(&2u64.to_le_bytes());
        d[1024] = 0xaf; // type GUID, not empty
        d[1024 + 32..1024 + 40].copy_from_slice(&2048u64.to_le_bytes());
        std::fs::write(&disk, &d).unwrap();
        assert_eq!(first_partition_offset(&disk).unwrap(), 2048 * 512);
        std::fs::write(&disk, vec![0u8; 4096]).unwrap();
        assert!(first_partition_offset(&disk).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
