//! Opening a partition's content as the byte stream the image builder
//! chunks: a raw image as is, a tar archive inflated on the fly if it is
//! gzip-compressed, a directory as a tar stream written by a second thread
//! into a pipe ([`crate::dir_tar`]).

use std::fs::File;
use std::io::{self, BufRead as _, BufReader, BufWriter, Read};

use anyhow::{bail, Context as _, Result};
use drover_agent::image::{ContentKind, PartSize};
use flate2::bufread::MultiGzDecoder;

use crate::dir_tar::write_dir_tar;
use crate::partition_spec::{ContentSource, PartitionSpec};
use crate::size::exact;

/// The gzip magic (RFC 1952 §2.3.1).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Run `consume` on `spec`'s content stream (`None` for no content). The
/// stream is only valid inside `consume`; a directory's tar writer runs
/// alongside it and its error, if any, is the one reported.
pub fn with_content<T>(
    spec: &PartitionSpec,
    consume: impl FnOnce(Option<(ContentKind, &mut dyn Read)>) -> Result<T>,
) -> Result<T> {
    match &spec.content {
        ContentSource::None => consume(None),
        ContentSource::Raw(path) => {
            let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let meta = file
                .metadata()
                .with_context(|| format!("reading {}", path.display()))?;
            if meta.is_dir() {
                bail!("{} is a directory; use content=dir:{0}", path.display());
            }
            if let PartSize::Bytes(size) = spec.part.size {
                // Block devices report 0 here; the builder checks them after.
                if meta.is_file() && meta.len() > size {
                    bail!(
                        "{} is {} bytes, larger than the partition (size={})",
                        path.display(),
                        meta.len(),
                        exact(size)
                    );
                }
            }
            let mut reader = BufReader::with_capacity(1 << 20, file);
            consume(Some((ContentKind::Raw, &mut reader)))
        }
        ContentSource::Tar(path) => {
            let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let mut reader = BufReader::with_capacity(1 << 20, file);
            let head = reader
                .fill_buf()
                .with_context(|| format!("reading {}", path.display()))?;
            let gzip = head.starts_with(&GZIP_MAGIC);
            let mut stream: Box<dyn Read> = if gzip {
                Box::new(MultiGzDecoder::new(reader))
            } else {
                Box::new(reader)
            };
            // A wrong file fails here with a clear message, not deep in
            // the tar parser with a dump of binary garbage.
            let mut first = Vec::with_capacity(TAR_BLOCK);
            (&mut stream)
                .take(TAR_BLOCK as u64)
                .read_to_end(&mut first)
                .with_context(|| format!("reading {}", path.display()))?;
            if let Err(why) = check_tar_start(&first) {
                let what = if gzip { "gzip-compressed tar" } else { "tar" };
                bail!("{} is not a {what} archive: {why}", path.display());
            }
            let mut whole = io::Cursor::new(first).chain(stream);
            consume(Some((ContentKind::Tar, &mut whole)))
        }
        ContentSource::Dir(root) => {
            let (reader, writer) = io::pipe().context("creating a pipe")?;
            std::thread::scope(|s| {
                let tar =
                    s.spawn(move || write_dir_tar(root, BufWriter::with_capacity(1 << 20, writer)));
                let mut reader = reader;
                let consumed = consume(Some((ContentKind::Tar, &mut reader)));
                // Unblock the writer if the consumer stopped early.
                drop(reader);
                let written = tar
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("the tar writer panicked")));
                match (consumed, written) {
                    (Ok(v), Ok(_)) => Ok(v),
                    // A tar stream cut short may still look complete to
                    // the reader: the writer's error is the truth.
                    (Ok(_), Err(e)) => Err(e),
                    // The writer only failed because the reader went away.
                    (Err(e), Err(w)) if is_broken_pipe(&w) => Err(e),
                    (Err(_), Err(w)) => Err(w),
                    (Err(e), Ok(_)) => Err(e),
                }
            })
        }
    }
}

/// A tar header block.
const TAR_BLOCK: usize = 512;

/// Whether `block`, a stream's first 512 bytes, starts a tar archive: a
/// header whose checksum (POSIX: the byte sum with the checksum field read
/// as spaces) matches, or the zero block of an empty archive.
fn check_tar_start(block: &[u8]) -> Result<(), String> {
    if block.len() < TAR_BLOCK {
        return Err(format!(
            "{} bytes, shorter than one tar header ({TAR_BLOCK})",
            block.len()
        ));
    }
    if block.iter().all(|&b| b == 0) {
        return Ok(());
    }
    let field = &block[148..156];
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                u32::from(b' ')
            } else {
                u32::from(b)
            }
        })
        .sum();
    let stored = std::str::from_utf8(field)
        .ok()
        .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' '))
        .and_then(|s| u32::from_str_radix(s, 8).ok());
    match stored {
        Some(stored) if stored == sum => Ok(()),
        _ => Err("its first header's checksum does not match".into()),
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use drover_agent::image::{Filesystem, PartSpec, TypeGuid};

    use super::*;

    fn spec(content: ContentSource, size: PartSize) -> PartitionSpec {
        PartitionSpec {
            part: PartSpec {
                label: String::new(),
                type_guid: TypeGuid::parse(TypeGuid::LINUX_FS).unwrap(),
                size,
                attributes: Vec::new(),
                filesystem: Filesystem::Ext4,
            },
            content,
        }
    }

    fn read_all(spec: &PartitionSpec) -> Result<(Option<ContentKind>, Vec<u8>)> {
        with_content(spec, |c| {
            let Some((kind, r)) = c else {
                return Ok((None, Vec::new()));
            };
            let mut out = Vec::new();
            r.read_to_end(&mut out)?;
            Ok((Some(kind), out))
        })
    }

    fn small_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        b.append_data(&mut h, "a", &b"hi"[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn raw_tar_gz_dir_none() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw.img");
        std::fs::write(&raw, b"raw bytes").unwrap();
        let got = read_all(&spec(ContentSource::Raw(raw.clone()), PartSize::Rest)).unwrap();
        assert_eq!(got, (Some(ContentKind::Raw), b"raw bytes".to_vec()));

        let tar = small_tar();
        let plain = dir.path().join("root.tar");
        std::fs::write(&plain, &tar).unwrap();
        let got = read_all(&spec(ContentSource::Tar(plain), PartSize::Rest)).unwrap();
        assert_eq!(got, (Some(ContentKind::Tar), tar.clone()));

        // Gzip by content, whatever the name; concatenated members too.
        let gz = dir.path().join("root.tar.whatever");
        let half = tar.len() / 2;
        let mut bytes = Vec::new();
        for part in [&tar[..half], &tar[half..]] {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(part).unwrap();
            bytes.extend(e.finish().unwrap());
        }
        std::fs::write(&gz, bytes).unwrap();
        let got = read_all(&spec(ContentSource::Tar(gz), PartSize::Rest)).unwrap();
        assert_eq!(got, (Some(ContentKind::Tar), tar));

        let tree = dir.path().join("tree");
        std::fs::create_dir(&tree).unwrap();
        std::fs::write(tree.join("f"), b"x").unwrap();
        let (kind, bytes) =
            read_all(&spec(ContentSource::Dir(tree.clone()), PartSize::Rest)).unwrap();
        assert_eq!(kind, Some(ContentKind::Tar));
        let mut direct = Vec::new();
        write_dir_tar(&tree, &mut direct).unwrap();
        assert_eq!(bytes, direct);

        assert_eq!(
            read_all(&spec(ContentSource::None, PartSize::Rest)).unwrap(),
            (None, vec![])
        );
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("big.img");
        std::fs::write(&raw, vec![0u8; (1 << 20) + 1]).unwrap();
        let e = read_all(&spec(
            ContentSource::Raw(raw.clone()),
            PartSize::Bytes(1 << 20),
        ))
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            format!(
                "{} is 1048577 bytes, larger than the partition (size=1M)",
                raw.display()
            )
        );
        let missing = dir.path().join("missing.tar");
        let e = read_all(&spec(ContentSource::Tar(missing.clone()), PartSize::Rest)).unwrap_err();
        assert_eq!(e.to_string(), format!("opening {}", missing.display()));
        let e = read_all(&spec(ContentSource::Dir(missing.clone()), PartSize::Rest)).unwrap_err();
        assert_eq!(e.to_string(), format!("reading {}", missing.display()));
        let e = read_all(&spec(
            ContentSource::Raw(dir.path().to_owned()),
            PartSize::Rest,
        ))
        .unwrap_err();
        let d = dir.path().display();
        assert_eq!(
            e.to_string(),
            format!("{d} is a directory; use content=dir:{d}")
        );
    }

    #[test]
    fn not_a_tar() {
        let dir = tempfile::tempdir().unwrap();
        let tar = small_tar();
        assert_eq!(check_tar_start(&tar[..512]), Ok(()));
        assert_eq!(check_tar_start(&[0; 512]), Ok(()));
        let mut bad = tar[..512].to_vec();
        bad[0] ^= 1;
        assert_eq!(
            check_tar_start(&bad),
            Err("its first header's checksum does not match".into())
        );
        assert_eq!(
            check_tar_start(&[1; 100]),
            Err("100 bytes, shorter than one tar header (512)".into())
        );

        let img = dir.path().join("disk.img");
        std::fs::write(&img, vec![0x55; 4096]).unwrap();
        let e = read_all(&spec(ContentSource::Tar(img.clone()), PartSize::Rest)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{} is not a tar archive: its first header's checksum does not match",
                img.display()
            )
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"hello").unwrap();
        std::fs::write(&img, gz.finish().unwrap()).unwrap();
        let e = read_all(&spec(ContentSource::Tar(img.clone()), PartSize::Rest)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{} is not a gzip-compressed tar archive: 5 bytes, shorter than one tar header (512)", img.display())
        );
    }

    #[test]
    fn a_consumer_that_stops_early_reports_its_own_error() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir(&tree).unwrap();
        // More than a pipe's buffer, so the writer blocks until the reader
        // goes away.
        std::fs::write(tree.join("big"), vec![1u8; 4 << 20]).unwrap();
        let e = with_content(
            &spec(ContentSource::Dir(tree), PartSize::Rest),
            |c| -> Result<()> {
                let (_, r) = c.unwrap();
                let mut buf = [0u8; 512];
                r.read_exact(&mut buf)?;
                anyhow::bail!("consumer gave up")
            },
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "consumer gave up");
    }
}
