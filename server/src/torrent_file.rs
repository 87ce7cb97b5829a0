//! An image's `payload.torrent`: written by `image import`, checked by
//! `image verify`, served with the tracker's URL filled in.
//!
//! The stored file is a complete v1 metainfo without `announce`
//! (`d4:infod…ee`; stock tools read it as is). The tracker's URL depends on
//! the server's `public_url`, which an import does not know and which may
//! change, while the info-hash does not depend on it: so the route adds
//! `announce = {public_url}/announce` when it serves the file
//! ([`with_announce`]), and one stored file serves any server.
//!
//! The torrent is not covered by the manifest's signature (it is made
//! after signing, from the signed payload). It need not be: an agent
//! checks each piece's SHA-1 from it only to catch a bad peer early, and
//! every chunk against the signed manifest's SHA-256 before using it, so a
//! forged torrent can waste a node's time but not get a byte written.

use std::fs::File;
use std::io::{BufReader, Read as _};
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use drover_agent::image::{Manifest, PAYLOAD_FILE, TORRENT_FILE};
use drover_agent::torrent::bencode::Limits;
use drover_agent::torrent::metainfo::{
    hash_pieces, payload_name, with_announce, Info, InfoHash, Metainfo,
};

use crate::store::ImageDir;

/// The path of the tracker on a server: `{public_url}/announce`.
pub const ANNOUNCE_PATH: &str = "/announce";

/// Write `dir/payload.torrent` for the payload of `name@version` in `dir`
/// (piece length as given, else chosen from its size). An empty payload
/// has no torrent: there is nothing to share.
pub fn write(
    dir: &Path,
    name: &str,
    version: &str,
    piece_length: Option<u32>,
) -> Result<Option<Metainfo>> {
    let payload = dir.join(PAYLOAD_FILE);
    let f = File::open(&payload).with_context(|| format!("opening {}", payload.display()))?;
    let size = f
        .metadata()
        .with_context(|| format!("reading {}", payload.display()))?
        .len();
    if size == 0 {
        return Ok(None);
    }
    let info = Info::build(
        &payload_name(name, version),
        BufReader::new(f),
        size,
        piece_length,
    )
    .with_context(|| format!("hashing {} into pieces", payload.display()))?;
    let torrent = Metainfo::new(info, None);
    let path = dir.join(TORRENT_FILE);
    std::fs::write(&path, torrent.to_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(Some(torrent))
}

/// Read and parse a stored torrent (at most the metainfo size limit).
pub fn read(path: &Path) -> Result<(Vec<u8>, Metainfo)> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut bytes = Vec::new();
    // One byte over the limit, so the parser reports the size.
    f.take(Limits::METAINFO.max_len as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    let m = Metainfo::parse(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    Ok((bytes, m))
}

/// A stored torrent that matches its payload.
#[derive(Debug, Clone)]
pub struct Checked {
    pub info_hash: InfoHash,
    pub pieces: u32,
    pub piece_length: u32,
}

/// Check `image`'s torrent against its (verified) manifest and payload:
/// the name and length it must have, and every piece's SHA-1. `None`: the
/// image has no torrent (imported before drover made them, or empty).
pub fn check(image: &ImageDir, manifest: &Manifest) -> Result<Option<Checked>> {
    let path = image.file(TORRENT_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let (_, m) = read(&path)?;
    let info = &m.info;
    let want_name = payload_name(&image.name, &image.version);
    if info.name != want_name {
        bail!(
            "{TORRENT_FILE} names the file {:?}, not {want_name:?}",
            info.name
        );
    }
    if info.length != manifest.payload.size {
        bail!(
            "{TORRENT_FILE} is for {} bytes but the payload is {}",
            info.length,
            manifest.payload.size
        );
    }
    let payload = image.file(PAYLOAD_FILE);
    let f = File::open(&payload).with_context(|| format!("opening {}", payload.display()))?;
    let (pieces, _) = hash_pieces(BufReader::new(f), info.piece_length)
        .with_context(|| format!("reading {}", payload.display()))?;
    if let Some(i) =
        (0..info.piece_count()).find(|&i| pieces.get(i as usize) != Some(&info.pieces[i as usize]))
    {
        let r = info.piece_range(i);
        bail!(
            "{TORRENT_FILE}: piece {i} of {} (payload bytes {}-{}) does not match the payload's SHA-1",
            info.piece_count(),
            r.start,
            r.end - 1
        );
    }
    Ok(Some(Checked {
        info_hash: m.info_hash,
        pieces: info.piece_count(),
        piece_length: info.piece_length,
    }))
}

/// The stored torrent as served by the server at `public_url`.
pub fn served(stored: &[u8], public_url: &str) -> Result<Vec<u8>> {
    Ok(with_announce(
        stored,
        &format!("{public_url}{ANNOUNCE_PATH}"),
    )?)
}
