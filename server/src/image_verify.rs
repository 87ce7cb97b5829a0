//! `image verify`: check a stored image the way a node will, with the
//! agent's own code: the signature over the exact `manifest.json` bytes,
//! the manifest's rules, then every chunk streamed through the pipeline
//! (compressed SHA-256, inflate, each source's uncompressed SHA-256) and
//! the whole payload's SHA-256. `image import` runs it before publishing.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use drover_agent::image::{
    sign, verify_image, FileSource, Manifest, MANIFEST_FILE, PAYLOAD_FILE, SIGNATURE_FILE,
};
use kernel_cmdline::PublicKey;

use crate::store::ImageDir;

/// A stored image that passed every check.
#[derive(Debug)]
pub struct Verified {
    /// The parsed manifest.
    pub manifest: Manifest,
    /// How long the payload took.
    pub elapsed: Duration,
}

/// Verify `image` against the trusted `key`. The error names the first
/// thing found wrong: the signature, the manifest, or the first bad chunk
/// with its payload byte range and partition.
pub fn verify_dir(image: &ImageDir, key: &PublicKey) -> Result<Verified> {
    let at = format!(
        "{}@{} ({})",
        image.name,
        image.version,
        image.path.display()
    );
    let manifest_path = image.file(MANIFEST_FILE);
    let bytes = std::fs::read(&manifest_path)
        .with_context(|| format!("reading {}", manifest_path.display()))?;
    let sig_path = image.file(SIGNATURE_FILE);
    let sig =
        std::fs::read(&sig_path).with_context(|| format!("reading {}", sig_path.display()))?;
    // Signature first: nothing unsigned is parsed, as on a node.
    sign::verify(&bytes, &sig, key).with_context(|| format!("{at}: bad signature"))?;
    let manifest =
        Manifest::parse(&bytes).with_context(|| format!("{at}: signed but invalid manifest"))?;
    if (manifest.name.as_str(), manifest.version.as_str())
        != (image.name.as_str(), image.version.as_str())
    {
        bail!(
            "{at}: the manifest is for {}@{}, not for the directory it is in",
            manifest.name,
            manifest.version
        );
    }

    let start = Instant::now();
    let payload_path = image.file(PAYLOAD_FILE);
    let mut source = FileSource::open(&payload_path)?;
    if let Err(e) = verify_image(&manifest, &mut source) {
        let Some(index) = e.chunk() else {
            return Err(anyhow::Error::new(e).context(format!("{at}: damaged")));
        };
        let where_ = chunk_location(&manifest, index);
        return Err(anyhow::Error::new(e).context(format!("{at}: damaged at {where_}")));
    }
    // The chunks cover `payload.size` bytes; anything after them is not
    // part of the image.
    let len = std::fs::metadata(&payload_path)
        .with_context(|| format!("reading {}", payload_path.display()))?
        .len();
    if len != manifest.payload.size {
        bail!(
            "{at}: {} is {len} bytes but the manifest says {}",
            payload_path.display(),
            manifest.payload.size
        );
    }
    Ok(Verified {
        manifest,
        elapsed: start.elapsed(),
    })
}

/// `chunk 3 of 7 (payload bytes 4096-8191, partition 2 (root))`.
pub fn chunk_location(manifest: &Manifest, index: usize) -> String {
    let count = manifest.chunks.len();
    let Some(entry) = manifest.chunks.get(index) else {
        return format!("chunk {index} of {count}");
    };
    let last = (entry.offset + entry.length).saturating_sub(1);
    let partition = manifest
        .sources()
        .find(|(_, _, c)| c.chunk_range().contains(&index))
        .map(|(i, _, _)| format!(", {}", manifest.partition_name(i)))
        .unwrap_or_default();
    format!(
        "chunk {index} of {count} (payload bytes {}-{last}{partition})",
        entry.offset
    )
}
