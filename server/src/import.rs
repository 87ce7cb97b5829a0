//! `image import`: build, sign, verify and publish one image version.
//!
//! The image is built in `STORE/.staging/NAME@VERSION.XXXXXX/` (the builder
//! streams each partition's content through the chunker into `payload`),
//! signed, given its `payload.torrent` ([`crate::torrent_file`]), verified exactly as a node would verify it, and only then
//! renamed to `STORE/NAME/VERSION`: readers of the store (the HTTP routes,
//! `image list`) see a version whole or not at all. A failed import leaves
//! nothing behind; a killed one leaves a directory in `.staging` that is
//! safe to delete.
//!
//! Published versions are immutable: nodes may be halfway through fetching
//! one, and its signature is what they trust. Importing an existing version
//! is refused.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use drover_agent::image::manifest::MAX_BOOT_CODE;
use drover_agent::image::sign::SigningKey;
use drover_agent::image::{sign, BuildOptions, ImageBuilder, Manifest};
use kernel_cmdline::PublicKey;

use crate::content_reader::with_content;
use crate::image_verify::verify_dir;
use crate::key_generate::SECRET_FILE;
use crate::partition_spec::PartitionSpec;
use crate::store::{check_component, ImageDir, Store, STAGING_DIR};
use crate::torrent_file;

/// Everything `image import` was asked to do.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    /// The store's root directory (created if missing).
    pub store: PathBuf,
    /// Image name.
    pub name: String,
    /// Image version; must not exist yet.
    pub version: String,
    /// The secret key file (`key generate`'s `drover.key`).
    pub key: PathBuf,
    /// Chunking and compression.
    pub build: BuildOptions,
    /// Partitions in disk order.
    pub layout: Vec<PartitionSpec>,
    /// MBR boot code for BIOS boot (at most 440 bytes).
    pub bios_boot_code: Option<PathBuf>,
    /// The torrent's piece length; `None`: chosen from the payload's size
    /// ([`drover_agent::torrent::metainfo::choose_piece_length`]).
    pub piece_length: Option<u32>,
}

/// What an import produced.
#[derive(Debug)]
pub struct Imported {
    /// Where it was published.
    pub dir: ImageDir,
    /// Its manifest.
    pub manifest: Manifest,
    /// The key it was signed with.
    pub signer: PublicKey,
    /// Building (reading, chunking, compressing, writing).
    pub build_time: Duration,
    /// Verifying before publishing.
    pub verify_time: Duration,
    /// Its `payload.torrent` (none for an empty payload).
    pub torrent: Option<torrent_file::Checked>,
}

/// Run an import; `progress` gets one line per step.
pub fn import(req: &ImportRequest, progress: &mut dyn FnMut(String)) -> Result<Imported> {
    for (what, value) in [("image name", &req.name), ("version", &req.version)] {
        check_component(what, value).map_err(anyhow::Error::msg)?;
        if value.starts_with('.') {
            bail!("{what} {value:?} starts with '.', which the store keeps for its own entries");
        }
    }
    let store = Store::new(&req.store);
    let target = store.version_path(&req.name, &req.version);
    if target.symlink_metadata().is_ok() {
        bail!(
            "{}@{} already exists ({}); published versions never change, import under a new version",
            req.name,
            req.version,
            target.display()
        );
    }
    // Everything that can fail cheaply, before the expensive part.
    let key = read_signing_key(&req.key)?;
    let boot_code = match &req.bios_boot_code {
        None => None,
        Some(path) => Some(read_boot_code(path)?),
    };

    let staging_root = req.store.join(STAGING_DIR);
    std::fs::create_dir_all(&staging_root)
        .with_context(|| format!("creating {}", staging_root.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(&format!("{}@{}.", req.name, req.version))
        .tempdir_in(&staging_root)
        .with_context(|| format!("creating a directory in {}", staging_root.display()))?;

    let start = Instant::now();
    let mut builder = ImageBuilder::new(staging.path(), &req.name, &req.version, req.build)?;
    for (i, spec) in req.layout.iter().enumerate() {
        let name = partition_label(i, &spec.part.label);
        progress(format!("{name}: reading {}", spec.content));
        with_content(spec, |content| {
            Ok(builder.add_partition(spec.part.clone(), content)?)
        })
        .with_context(|| format!("importing {name} from {}", spec.content))?;
    }
    if let Some(code) = &boot_code {
        builder.set_bios_boot_code(code)?;
    }
    builder.finish()?;
    sign::write_signature(staging.path(), &key).context("signing the manifest")?;
    torrent_file::write(staging.path(), &req.name, &req.version, req.piece_length)
        .context("making payload.torrent")?;
    let build_time = start.elapsed();

    progress("verifying".into());
    let staged = ImageDir {
        name: req.name.clone(),
        version: req.version.clone(),
        path: staging.path().to_owned(),
    };
    let verified = verify_dir(&staged, &key.public_key()).context("verifying the new image")?;

    // tempfile makes the directory 0700; the server may run as another user.
    std::fs::set_permissions(staging.path(), PermissionsExt::from_mode(0o755))
        .with_context(|| format!("setting the mode of {}", staging.path().display()))?;
    let parent = req.store.join(&req.name);
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    // rename(2) fails on an existing non-empty directory: a concurrent
    // import of the same version cannot be overwritten.
    if let Err(e) = std::fs::rename(staging.path(), &target) {
        if target.symlink_metadata().is_ok() {
            bail!(
                "{}@{} was published by someone else meanwhile ({}); this import is discarded",
                req.name,
                req.version,
                target.display()
            );
        }
        return Err(e).with_context(|| {
            format!(
                "renaming {} to {}",
                staging.path().display(),
                target.display()
            )
        });
    }
    // Renamed away: nothing left for the guard to clean up.
    let _ = staging.keep();
    if let Ok(dir) = std::fs::File::open(&parent) {
        let _ = dir.sync_all();
    }
    Ok(Imported {
        dir: ImageDir {
            name: req.name.clone(),
            version: req.version.clone(),
            path: target,
        },
        manifest: verified.manifest,
        signer: key.public_key(),
        build_time,
        verify_time: verified.elapsed,
        torrent: verified.torrent,
    })
}

/// `partition 2 (root)`: how the manifest's messages name partitions.
fn partition_label(index: usize, label: &str) -> String {
    if label.is_empty() {
        format!("partition {}", index + 1)
    } else {
        format!("partition {} ({label})", index + 1)
    }
}

/// Read the secret key, refusing the likely mix-up: both key files are 64
/// hex digits, so a public key given as `--key` would sign with a key
/// nobody trusts.
fn read_signing_key(path: &Path) -> Result<SigningKey> {
    if path.extension().is_some_and(|e| e == "pub") {
        bail!(
            "--key {}: this looks like a public key; --key takes the secret key ({SECRET_FILE})",
            path.display()
        );
    }
    let key = sign::read_secret_key(path)?;
    let public_path = path.with_extension("pub");
    if public_path != path {
        if let Ok(public) = sign::read_public_key(&public_path) {
            if public != key.public_key() {
                bail!(
                    "--key {}: its public key is {} but {} beside it holds {public}; they are not a pair",
                    path.display(),
                    key.public_key(),
                    public_path.display()
                );
            }
        }
    }
    Ok(key)
}

fn read_boot_code(path: &Path) -> Result<Vec<u8>> {
    let code = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if code.is_empty() || code.len() > MAX_BOOT_CODE {
        bail!(
            "--bios-boot-code {}: {} bytes; accepted: 1 to {MAX_BOOT_CODE} bytes (the MBR boot code area, e.g. syslinux's gptmbr.bin; cut a 512-byte MBR image with `head -c 440`)",
            path.display(),
            code.len()
        );
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_generate::generate;
    use crate::partition_spec::parse_layout;

    struct Setup {
        dir: tempfile::TempDir,
        req: ImportRequest,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let keys = generate(&dir.path().join("keys"), false).unwrap();
        let raw = dir.path().join("esp.img");
        std::fs::write(&raw, vec![7u8; 10_000]).unwrap();
        let layout = parse_layout(&[format!(
            "label=ESP,type=esp,size=1M,fs=vfat,content=raw:{}",
            raw.display()
        )])
        .unwrap();
        let req = ImportRequest {
            store: dir.path().join("store"),
            name: "demo".into(),
            version: "1".into(),
            key: keys.secret,
            build: BuildOptions {
                chunk_size: 4096,
                level: 6,
                threads: 2,
            },
            layout,
            bios_boot_code: None,
            piece_length: None,
        };
        Setup { dir, req }
    }

    fn staging_is_empty(store: &Path) -> bool {
        std::fs::read_dir(store.join(STAGING_DIR))
            .unwrap()
            .next()
            .is_none()
    }

    #[test]
    fn imports_once_and_reports_progress() {
        let s = setup();
        let mut lines = Vec::new();
        let done = import(&s.req, &mut |l| lines.push(l)).unwrap();
        assert_eq!(done.dir.path, s.req.store.join("demo/1"));
        assert_eq!(done.manifest.chunks.len(), 3);
        let torrent = done.torrent.as_ref().expect("a payload.torrent");
        assert_eq!(torrent.pieces, 1);
        let stored = done.dir.path.join(drover_agent::image::TORRENT_FILE);
        assert!(stored.is_file());
        assert!(done.manifest.boot.uefi);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with("partition 1 (ESP): reading raw:"),
            "{lines:?}"
        );
        let mode = std::fs::metadata(&done.dir.path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(staging_is_empty(&s.req.store));

        let e = import(&s.req, &mut |_| {}).unwrap_err().to_string();
        assert!(e.starts_with("demo@1 already exists ("), "{e}");
    }

    #[test]
    fn failures_leave_nothing_behind() {
        let mut s = setup();
        s.req.layout = parse_layout(&[format!(
            "size=1M,fs=ext4,content=tar:{}",
            s.dir.path().join("esp.img").display()
        )])
        .unwrap();
        let e = import(&s.req, &mut |_| {}).unwrap_err();
        assert!(format!("{e:#}").contains("is not a tar archive"), "{e:#}");
        assert!(staging_is_empty(&s.req.store));
        assert!(!s.req.store.join("demo").exists());
    }

    #[test]
    fn refuses_bad_names_keys_and_boot_code() {
        let mut s = setup();
        s.req.version = ".hidden".into();
        let e = import(&s.req, &mut |_| {}).unwrap_err().to_string();
        assert!(e.contains("starts with '.'"), "{e}");
        s.req.version = "a/b".into();
        let e = import(&s.req, &mut |_| {}).unwrap_err().to_string();
        assert!(e.starts_with("version \"a/b\" is not 1 to 128"), "{e}");
        s.req.version = "1".into();

        let secret = s.req.key.clone();
        s.req.key = secret.with_extension("pub");
        let e = import(&s.req, &mut |_| {}).unwrap_err().to_string();
        assert!(e.contains("this looks like a public key"), "{e}");
        // A secret key whose .pub sibling belongs to another key.
        let other = generate(&s.dir.path().join("other"), false).unwrap();
        std::fs::copy(&other.public, secret.with_extension("pub")).unwrap();
        s.req.key = secret;
        let e = import(&s.req, &mut |_| {}).unwrap_err().to_string();
        assert!(e.contains("they are not a pair"), "{e}");
        std::fs::remove_file(s.req.key.with_extension("pub")).unwrap();

        let mbr = s.dir.path().join("mbr.bin");
        std::fs::write(&mbr, vec![0u8; 441]).unwrap();
        s.req.bios_boot_code = Some(mbr);
        let e = import(&s.req, &mut |_| {}).unwrap_err().to_string();
        assert!(e.contains("441 bytes; accepted: 1 to 440 bytes"), "{e}");
    }
}
