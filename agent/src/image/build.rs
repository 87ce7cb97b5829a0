//! Writing an image (the server's `image import`): partitions are added in
//! disk order, their content streamed through the chunker straight into
//! `DIR/payload` — one batch of chunks in memory, never the image — and
//! [`ImageBuilder::finish`] writes `DIR/manifest.json`. Signing is separate
//! ([`sign::write_signature`](super::sign)).
//!
//! Build into a staging directory and rename it to `NAME/VERSION` once
//! signed: a directory without `manifest.json` is an unfinished build.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::chunker::{ChunkWriter, PayloadWriter};
use super::manifest::{
    partition_name, Attribute, Boot, BootCode, Content, ContentKind, Disk, Filesystem, Manifest,
    ManifestError, PartSize, Partition, Payload, TypeGuid, DEFAULT_CHUNK_SIZE, FORMAT,
    MAX_BOOT_CODE, MAX_PARTITIONS,
};
use super::tar_count::copy_tar;
use super::validate;
use super::{MANIFEST_FILE, PAYLOAD_FILE};

/// How chunks are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildOptions {
    /// Uncompressed bytes per chunk (a multiple of 4096, ≤ 64 MiB).
    pub chunk_size: u64,
    /// Deflate level 0–9 (6: miniz's default, most of 9's ratio at a
    /// fraction of its time).
    pub level: u32,
    /// Chunks compressed at once, one thread each; memory is about twice
    /// `threads × chunk_size`. Output is identical for any value.
    pub threads: usize,
}

impl Default for BuildOptions {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        BuildOptions {
            chunk_size: DEFAULT_CHUNK_SIZE,
            level: 6,
            threads: cpus.min(8),
        }
    }
}

/// A partition as the importer describes it; the builder adds the content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartSpec {
    /// GPT name.
    pub label: String,
    /// GPT type.
    pub type_guid: TypeGuid,
    /// Bytes (multiple of 1 MiB) or `Rest` (last partition only).
    pub size: PartSize,
    /// GPT attribute bits.
    pub attributes: Vec<Attribute>,
    /// What it holds once deployed.
    pub filesystem: Filesystem,
}

/// Why an image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Reading content or writing the image files.
    #[error("{what}")]
    Io {
        /// `writing /srv/…/payload`, `streaming the content of partition 2 (root)`.
        what: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A source with no bytes: give `None` as content instead.
    #[error("{0}: the content is empty (add the partition without content instead)")]
    EmptyContent(String),
    /// Options or layout the format does not allow.
    #[error("the image would not be valid")]
    Invalid(#[source] ManifestError),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> BuildError {
    let what = what.into();
    move |source| BuildError::Io { what, source }
}

/// Builds one image directory.
pub struct ImageBuilder {
    dir: PathBuf,
    name: String,
    version: String,
    opts: BuildOptions,
    payload: PayloadWriter,
    partitions: Vec<Partition>,
    bios_boot_code: Option<BootCode>,
    boot: Option<Boot>,
    min_size: u64,
}

impl ImageBuilder {
    /// Start an image in `dir` (created if missing), creating `dir/payload`;
    /// fails if that file exists.
    pub fn new(
        dir: &Path,
        name: &str,
        version: &str,
        opts: BuildOptions,
    ) -> Result<Self, BuildError> {
        validate::ident("name", name).map_err(BuildError::Invalid)?;
        validate::ident("version", version).map_err(BuildError::Invalid)?;
        validate::chunk_size(opts.chunk_size).map_err(BuildError::Invalid)?;
        if opts.level > 9 {
            let err =
                ManifestError::invalid("compression level", format!("{} is not 0–9", opts.level));
            return Err(BuildError::Invalid(err));
        }
        std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let path = dir.join(PAYLOAD_FILE);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err(format!("creating {}", path.display())))?;
        Ok(ImageBuilder {
            dir: dir.to_path_buf(),
            name: name.into(),
            version: version.into(),
            opts,
            payload: PayloadWriter::new(file),
            partitions: Vec::new(),
            bios_boot_code: None,
            boot: None,
            min_size: 0,
        })
    }

    /// Add the next partition, streaming `content` (if any) into the
    /// payload. Tar content is walked as it passes to count its entries.
    pub fn add_partition(
        &mut self,
        spec: PartSpec,
        content: Option<(ContentKind, &mut dyn Read)>,
    ) -> Result<(), BuildError> {
        let index = self.partitions.len();
        let name = partition_name(index, &spec.label);
        // Cheap layout checks now rather than after streaming gigabytes.
        if index >= MAX_PARTITIONS {
            let msg = format!("more than {MAX_PARTITIONS} partitions");
            return Err(BuildError::Invalid(ManifestError::invalid(name, msg)));
        }
        if let Some(prev) = self.partitions.last().filter(|p| p.size == PartSize::Rest) {
            let msg = format!("follows {}, which takes the rest of the disk", prev.label);
            return Err(BuildError::Invalid(ManifestError::invalid(name, msg)));
        }
        let content = match content {
            None => None,
            Some((kind, input)) => Some(self.stream(&name, kind, input)?),
        };
        self.partitions.push(Partition {
            label: spec.label,
            type_guid: spec.type_guid,
            size: spec.size,
            attributes: spec.attributes,
            filesystem: spec.filesystem,
            content,
        });
        Ok(())
    }

    fn stream(
        &mut self,
        name: &str,
        kind: ContentKind,
        input: &mut dyn Read,
    ) -> Result<Content, BuildError> {
        // chunk_size was validated ≤ 64 MiB in `new`.
        let chunk_size = usize::try_from(self.opts.chunk_size).unwrap_or(usize::MAX);
        let mut writer = ChunkWriter::new(
            &mut self.payload,
            chunk_size,
            self.opts.level,
            self.opts.threads,
        );
        let what = format!("streaming the content of {name}");
        let (entries, file_bytes) = match kind {
            ContentKind::Raw => {
                io::copy(input, &mut writer).map_err(io_err(&what))?;
                (None, None)
            }
            ContentKind::Tar => {
                let stats = copy_tar(input, &mut writer).map_err(io_err(&what))?;
                (Some(stats.entries), Some(stats.file_bytes))
            }
        };
        let summary = writer.finish().map_err(io_err(&what))?;
        if summary.size == 0 {
            return Err(BuildError::EmptyContent(name.into()));
        }
        Ok(Content {
            kind,
            first_chunk: summary.first_chunk,
            chunks: summary.chunks,
            size: summary.size,
            sha256: summary.sha256,
            entries,
            file_bytes,
        })
    }

    /// MBR boot code for BIOS boot (at most 440 bytes); sets `boot.bios`
    /// unless [`ImageBuilder::set_boot`] says otherwise.
    pub fn set_bios_boot_code(&mut self, code: &[u8]) -> Result<(), BuildError> {
        if code.is_empty() || code.len() > MAX_BOOT_CODE {
            let msg = format!("{} bytes, not 1 to {MAX_BOOT_CODE}", code.len());
            return Err(BuildError::Invalid(ManifestError::invalid(
                "bios boot code",
                msg,
            )));
        }
        self.bios_boot_code = Some(BootCode(code.to_vec()));
        Ok(())
    }

    /// Override the boot style. By default `uefi` is set when there is an
    /// ESP with vfat, `bios` when there is boot code.
    pub fn set_boot(&mut self, boot: Boot) {
        self.boot = Some(boot);
    }

    /// Require a disk at least this large (the layout's own minimum is
    /// always enforced).
    pub fn set_min_size(&mut self, bytes: u64) {
        self.min_size = bytes;
    }

    /// Finish the payload and write `manifest.json`; returns the manifest,
    /// which has passed the same checks as [`Manifest::parse`].
    pub fn finish(mut self) -> Result<Manifest, BuildError> {
        let payload_path = self.dir.join(PAYLOAD_FILE);
        let chunks = std::mem::take(&mut self.payload.chunks);
        let (size, sha256) = self
            .payload
            .finish()
            .map_err(io_err(format!("writing {}", payload_path.display())))?;
        let boot = self.boot.unwrap_or_else(|| Boot {
            uefi: self
                .partitions
                .iter()
                .any(|p| p.type_guid.as_str() == TypeGuid::ESP && p.filesystem == Filesystem::Vfat),
            bios: self.bios_boot_code.is_some(),
        });
        // Overflow is reported by validate() below.
        let layout = validate::required_disk_size(&self.partitions).unwrap_or(0);
        let manifest = Manifest {
            format: FORMAT,
            name: self.name,
            version: self.version,
            chunk_size: self.opts.chunk_size,
            payload: Payload { size, sha256 },
            disk: Disk {
                min_size: layout.max(self.min_size),
                bios_boot_code: self.bios_boot_code,
                partitions: self.partitions,
            },
            boot,
            chunks,
        };
        // Exactly what the agent will run on these bytes.
        let bytes = manifest.to_bytes();
        Manifest::parse(&bytes).map_err(BuildError::Invalid)?;
        let path = self.dir.join(MANIFEST_FILE);
        let tmp = self.dir.join(format!("{MANIFEST_FILE}.tmp"));
        std::fs::write(&tmp, &bytes)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(io_err(format!("writing {}", path.display())))?;
        Ok(manifest)
    }
}
