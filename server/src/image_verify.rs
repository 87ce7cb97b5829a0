//! `image verify`: check a stored image the way a node will, with the
//! agent's own code: the signature over the exact `manifest.json` bytes,
//! the manifest's rules, then every chunk streamed through the pipeline
//! (compressed SHA-256, inflate, each source's uncompressed SHA-256) and
//! the whole payload's SHA-256; then `payload.torrent`, if there is one,
//! against the payload (name, length, every piece's SHA-1). `image import`
//! runs it before publishing.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use drover_agent::image::{
    sign, verify_image, FileSource, Manifest, MANIFEST_FILE, PAYLOAD_FILE, SIGNATURE_FILE,
};
use kernel_cmdline::PublicKey;

use crate::store::ImageDir;
use crate::torrent_file;

/// A stored image that passed every check.
#[derive(Debug)]
pub struct Verified {
    /// The parsed manifest.
    pub manifest: Manifest,
    /// How long the payload took.
    pub elapsed: Duration,
    /// The torrent, when the image has one (images imported before drover
    /// made torrents have none).
    pub torrent: Option<torrent_file::Checked>,
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
    let torrent =
        torrent_file::check(image, &manifest).with_context(|| format!("{at}: damaged"))?;
    Ok(Verified {
        manifest,
        elapsed: start.elapsed(),
        torrent,
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

#[cfg(test)]
mod tests {
    use drover_agent::image::TORRENT_FILE;
    use drover_agent::torrent::metainfo::Metainfo;

    use super::*;
    use crate::test_fixture::import_image;

    fn image(dir: &std::path::Path) -> (ImageDir, PublicKey) {
        import_image(dir, &dir.join("store"), "demo", "1");
        let key = sign::read_public_key(&dir.join("keys/drover.pub")).unwrap();
        let image = ImageDir {
            name: "demo".into(),
            version: "1".into(),
            path: dir.join("store/demo/1"),
        };
        (image, key)
    }

    #[test]
    fn checks_the_torrent_against_the_payload() {
        let dir = tempfile::tempdir().unwrap();
        let (image, key) = image(dir.path());
        let v = verify_dir(&image, &key).unwrap();
        let t = v.torrent.expect("import made payload.torrent");
        assert_eq!(t.piece_length, 16 << 10);

        let path = image.file(TORRENT_FILE);
        let good = std::fs::read(&path).unwrap();
        let m = Metainfo::parse(&good).unwrap();
        let rewrite = |f: &dyn Fn(&mut Metainfo)| {
            let mut m = m.clone();
            f(&mut m);
            std::fs::write(&path, Metainfo::new(m.info, None).to_bytes()).unwrap();
            format!("{:#}", verify_dir(&image, &key).unwrap_err())
        };
        let e = rewrite(&|m| m.info.pieces[0][0] ^= 1);
        let (count, end) = (m.info.piece_count(), m.info.piece_range(0).end - 1);
        assert!(
            e.contains(&format!("damaged: payload.torrent: piece 0 of {count} (payload bytes 0-{end}) does not match the payload's SHA-1")),
            "{e}"
        );
        let e = rewrite(&|m| m.info.name = "other.payload".into());
        assert!(
            e.contains("payload.torrent names the file \"other.payload\", not \"demo-1.payload\""),
            "{e}"
        );
        std::fs::write(&path, b"d4:infodee").unwrap();
        let e = format!("{:#}", verify_dir(&image, &key).unwrap_err());
        assert!(
            e.contains("parsing") && e.contains("`info.pieces`: missing"),
            "{e}"
        );

        // An image from before torrents: verified, without one.
        std::fs::remove_file(&path).unwrap();
        assert!(verify_dir(&image, &key).unwrap().torrent.is_none());
    }
}
