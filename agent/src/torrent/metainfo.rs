//! BitTorrent v1 metainfo (BEP 3) for one file: an image's payload.
//!
//! ```text
//! d
//!   8:announce  <tracker URL>            (optional here: the server adds it)
//!   4:info d
//!     6:length        i<payload bytes>e
//!     4:name          <NAME-VERSION.payload>
//!     12:piece length i<power of two, 16 KiB to 16 MiB>e
//!     6:pieces        <20-byte SHA-1 of each piece, in order>
//!   e
//! e
//! ```
//!
//! The info-hash, which names the torrent to trackers and peers, is the
//! SHA-1 of the info dictionary's bytes exactly as they appear in the file
//! ([`Metainfo::parse`] hashes the raw span, so foreign keys such as
//! `private` or `source` count as they must). It does not depend on
//! `announce`, so one stored file serves every tracker URL
//! ([`with_announce`]).
//!
//! Piece length ([`choose_piece_length`]): the smallest power of two of at
//! least 16 KiB (one request block, so every piece is whole blocks) that
//! keeps the payload within 2000 pieces (a 250-byte bitfield, a 40 KB
//! `pieces`), but never above 16 MiB: an agent holds a window of whole
//! pieces in memory while it verifies them, so bigger images get more
//! pieces rather than bigger ones. The same bounds are checked on parse.
//!
//! Only single-file torrents are accepted (`length`, no `files`); v2-only
//! torrents (BEP 52, no `pieces`) are refused, hybrid ones are read as v1.

use std::fmt;
use std::io::{self, Read};
use std::ops::Range;

use sha1::{Digest as _, Sha1};

use super::bencode::{self, Dict, Limits, Value};

/// The smallest piece: one request block (BEP 3's customary 16 KiB).
pub const MIN_PIECE_LENGTH: u32 = 16 << 10;
/// The largest piece: bounds what an agent holds per piece in memory.
pub const MAX_PIECE_LENGTH: u32 = 16 << 20;
/// [`choose_piece_length`] grows pieces until there are at most this many.
pub const TARGET_PIECES: u64 = 2000;
/// The longest `name`, in bytes (a file name on every filesystem).
pub const MAX_NAME: usize = 255;

/// The SHA-1 of a torrent's info dictionary.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct InfoHash(pub [u8; 20]);

impl InfoHash {
    /// The info-hash of an encoded info dictionary.
    pub fn of(info_bytes: &[u8]) -> Self {
        InfoHash(Sha1::digest(info_bytes).into())
    }

    /// Parse 40 hex digits, either case.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 20];
        crate::image::digest::decode_hex(s, &mut out)?;
        Some(InfoHash(out))
    }
}

impl fmt::Display for InfoHash {
    /// 40 lowercase hex digits, as clients show it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::image::digest::encode_hex(&self.0))
    }
}

impl fmt::Debug for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InfoHash({self})")
    }
}

/// The info dictionary of a single-file torrent (the keys drover uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The file's name.
    pub name: String,
    /// The file's size in bytes (at least 1).
    pub length: u64,
    /// Bytes per piece (the last piece may be shorter).
    pub piece_length: u32,
    /// The SHA-1 of every piece.
    pub pieces: Vec<[u8; 20]>,
}

/// The name of an image's payload in its torrent: `NAME-VERSION.payload`
/// (what a stock client saves it as).
pub fn payload_name(name: &str, version: &str) -> String {
    format!("{name}-{version}.payload")
}

/// The piece length for a payload of `length` bytes (module doc).
pub fn choose_piece_length(length: u64) -> u32 {
    let mut piece = MIN_PIECE_LENGTH;
    while piece < MAX_PIECE_LENGTH && length.div_ceil(u64::from(piece)) > TARGET_PIECES {
        piece *= 2;
    }
    piece
}

/// Whether `piece_length` is one [`Info`] accepts.
pub fn check_piece_length(piece_length: u64) -> Result<u32, String> {
    match u32::try_from(piece_length) {
        Ok(p) if p.is_power_of_two() && (MIN_PIECE_LENGTH..=MAX_PIECE_LENGTH).contains(&p) => {
            Ok(p)
        }
        _ => Err(format!(
            "{piece_length} bytes; accepted: a power of two from {MIN_PIECE_LENGTH} (16 KiB) to {MAX_PIECE_LENGTH} (16 MiB)"
        )),
    }
}

/// Hash `reader` into pieces of `piece_length` bytes (the last may be
/// shorter); returns the hashes and the bytes read.
pub fn hash_pieces(mut reader: impl Read, piece_length: u32) -> io::Result<(Vec<[u8; 20]>, u64)> {
    let mut pieces = Vec::new();
    let mut total = 0u64;
    let mut hasher = Sha1::new();
    let mut in_piece = 0u32;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total += n as u64;
        let mut data = &buf[..n];
        while !data.is_empty() {
            let take = data.len().min((piece_length - in_piece) as usize);
            hasher.update(&data[..take]);
            in_piece += take as u32;
            data = &data[take..];
            if in_piece == piece_length {
                pieces.push(hasher.finalize_reset().into());
                in_piece = 0;
            }
        }
    }
    if in_piece > 0 {
        pieces.push(hasher.finalize().into());
    }
    Ok((pieces, total))
}

/// The SHA-1 of one piece's bytes.
pub fn piece_hash(bytes: &[u8]) -> [u8; 20] {
    Sha1::digest(bytes).into()
}

impl Info {
    /// The info of the file read from `reader`; `piece_length` as given or
    /// else [`choose_piece_length`] of `length`, which must be what
    /// `reader` holds.
    pub fn build(
        name: &str,
        reader: impl Read,
        length: u64,
        piece_length: Option<u32>,
    ) -> Result<Info, MetainfoError> {
        let piece_length = piece_length.unwrap_or_else(|| choose_piece_length(length));
        let (pieces, read) = hash_pieces(reader, piece_length).map_err(MetainfoError::Read)?;
        if read != length {
            return Err(MetainfoError::Read(io::Error::other(format!(
                "read {read} bytes where {length} were expected (did the file change?)"
            ))));
        }
        let info = Info {
            name: name.to_owned(),
            length,
            piece_length,
            pieces,
        };
        info.check()?;
        Ok(info)
    }

    /// How many pieces there are.
    pub fn piece_count(&self) -> u32 {
        self.pieces.len() as u32
    }

    /// The payload bytes of piece `index` (< [`Info::piece_count`]).
    pub fn piece_range(&self, index: u32) -> Range<u64> {
        let start = u64::from(index) * u64::from(self.piece_length);
        start..(start + u64::from(self.piece_length)).min(self.length)
    }

    /// The size of piece `index` (< [`Info::piece_count`]).
    pub fn piece_size(&self, index: u32) -> u32 {
        let r = self.piece_range(index);
        (r.end - r.start) as u32
    }

    /// The info dictionary, bencoded as drover writes it.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.value(&self.pieces.concat()).to_bytes()
    }

    /// The info-hash of [`Info::to_bytes`].
    pub fn info_hash(&self) -> InfoHash {
        InfoHash::of(&self.to_bytes())
    }

    fn value<'a>(&'a self, pieces: &'a [u8]) -> Value<'a> {
        let mut d = Dict::new();
        d.insert(b"length", Value::Int(self.length as i64));
        d.insert(b"name", Value::Bytes(self.name.as_bytes()));
        d.insert(b"piece length", Value::Int(self.piece_length.into()));
        d.insert(b"pieces", Value::Bytes(pieces));
        Value::Dict(d)
    }

    /// The rules [`Metainfo::parse`] enforces, for built values too.
    fn check(&self) -> Result<(), MetainfoError> {
        check_name(&self.name).map_err(|p| invalid("info.name", p))?;
        check_piece_length(self.piece_length.into())
            .map_err(|p| invalid("info.piece length", p))?;
        if self.length == 0 {
            let problem = "0 bytes; an empty file has no pieces to share".into();
            return Err(invalid("info.length", problem));
        }
        let want = self.length.div_ceil(self.piece_length.into());
        if want > u64::from(u32::MAX) {
            let problem = format!("{} bytes need more than 2^32 pieces", self.length);
            return Err(invalid("info.length", problem));
        }
        if self.pieces.len() as u64 != want {
            return Err(invalid(
                "info.pieces",
                format!(
                    "{} SHA-1s, but {} bytes in pieces of {} need {want}",
                    self.pieces.len(),
                    self.length,
                    self.piece_length
                ),
            ));
        }
        Ok(())
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0']);
    if ok {
        Ok(())
    } else {
        let shown: String = name.chars().take(64).collect();
        let more = if shown.len() < name.len() { "…" } else { "" };
        Err(format!(
            "{shown:?}{more}; accepted: 1 to {MAX_NAME} bytes of UTF-8, not \".\" or \"..\", without '/', '\\' or NUL"
        ))
    }
}

/// A parsed (or built) `.torrent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metainfo {
    /// The tracker URL, if the file names one.
    pub announce: Option<String>,
    pub info: Info,
    /// The SHA-1 of the info dictionary as found in the file (as built,
    /// for a built one).
    pub info_hash: InfoHash,
}

/// Why a `.torrent` was refused.
#[derive(Debug, thiserror::Error)]
pub enum MetainfoError {
    #[error("metainfo: {0}")]
    Bencode(#[from] bencode::DecodeError),
    #[error("metainfo: `{field}`: {problem}")]
    Invalid {
        /// Dotted: `info.piece length`.
        field: &'static str,
        problem: String,
    },
    #[error("reading the file to hash: {0}")]
    Read(io::Error),
}

impl Metainfo {
    /// A torrent of `info`, announcing to `announce` if given.
    pub fn new(info: Info, announce: Option<String>) -> Metainfo {
        let info_hash = info.info_hash();
        Metainfo {
            announce,
            info,
            info_hash,
        }
    }

    /// The `.torrent` bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let pieces = self.info.pieces.concat();
        let mut d = Dict::new();
        if let Some(a) = &self.announce {
            d.insert(b"announce", Value::Bytes(a.as_bytes()));
        }
        d.insert(b"info", self.info.value(&pieces));
        Value::Dict(d).to_bytes()
    }

    /// Parse and validate a `.torrent` (module doc for what is accepted).
    pub fn parse(bytes: &[u8]) -> Result<Metainfo, MetainfoError> {
        let top = bencode::decode(bytes, &Limits::METAINFO)?;
        let top = as_dict(&top, "(the file)")?;
        let announce = match top.get(b"announce") {
            None => None,
            Some(v) => Some(utf8(v, "announce")?.to_owned()),
        };
        let info_value = top.get(b"info").ok_or_else(|| missing("info"))?;
        let d = as_dict(info_value, "info")?;
        if d.get(b"files").is_some() {
            return Err(invalid(
                "info.files",
                "a multi-file torrent; accepted: one file (`length`), as drover's payloads are"
                    .into(),
            ));
        }
        let Some(pieces) = d.get(b"pieces") else {
            let problem = if d.get(b"meta version").is_some() {
                "missing: a BitTorrent v2-only torrent; accepted: v1 or hybrid"
            } else {
                "missing"
            };
            return Err(invalid("info.pieces", problem.into()));
        };
        let pieces = pieces
            .as_bytes()
            .ok_or_else(|| wrong_kind(pieces, "info.pieces", "a byte string"))?;
        if pieces.len() % 20 != 0 {
            let problem = format!(
                "{} bytes, not a multiple of 20 (one SHA-1 per piece)",
                pieces.len()
            );
            return Err(invalid("info.pieces", problem));
        }
        let name = utf8(
            d.get(b"name").ok_or_else(|| missing("info.name"))?,
            "info.name",
        )?;
        let length = int(
            d.get(b"length").ok_or_else(|| missing("info.length"))?,
            "info.length",
        )?;
        let piece_length = d
            .get(b"piece length")
            .ok_or_else(|| missing("info.piece length"))?;
        let piece_length = int(piece_length, "info.piece length")?;
        let piece_length =
            check_piece_length(piece_length).map_err(|p| invalid("info.piece length", p))?;
        let info = Info {
            name: name.to_owned(),
            length,
            piece_length,
            pieces: pieces
                .chunks_exact(20)
                .map(|c| c.try_into().expect("chunks of 20"))
                .collect(),
        };
        info.check()?;
        Ok(Metainfo {
            announce,
            info,
            info_hash: InfoHash::of(d.raw()),
        })
    }
}

/// `torrent` with `announce` set to `url` and any `announce-list` (BEP 12,
/// which clients prefer) removed; everything else, the info dictionary
/// above all, byte for byte as it was. `torrent` must be valid.
pub fn with_announce(torrent: &[u8], url: &str) -> Result<Vec<u8>, MetainfoError> {
    Metainfo::parse(torrent)?;
    let top = bencode::decode(torrent, &Limits::METAINFO)?;
    let mut d = top.as_dict().expect("checked by parse").clone();
    d.remove(b"announce-list");
    d.insert(b"announce", Value::Bytes(url.as_bytes()));
    // Canonical input re-encodes to the same bytes (bencode's module doc).
    Ok(Value::Dict(d).to_bytes())
}

fn invalid(field: &'static str, problem: String) -> MetainfoError {
    MetainfoError::Invalid { field, problem }
}

fn missing(field: &'static str) -> MetainfoError {
    invalid(field, "missing".into())
}

fn wrong_kind(v: &Value, field: &'static str, expected: &str) -> MetainfoError {
    invalid(field, format!("{}; expected {expected}", v.described()))
}

fn as_dict<'v, 'a>(v: &'v Value<'a>, field: &'static str) -> Result<&'v Dict<'a>, MetainfoError> {
    v.as_dict()
        .ok_or_else(|| wrong_kind(v, field, "a dictionary"))
}

fn utf8<'a>(v: &Value<'a>, field: &'static str) -> Result<&'a str, MetainfoError> {
    let b = v
        .as_bytes()
        .ok_or_else(|| wrong_kind(v, field, "a byte string"))?;
    std::str::from_utf8(b).map_err(|_| {
        invalid(
            field,
            format!("{:?} is not UTF-8", b.escape_ascii().to_string()),
        )
    })
}

fn int(v: &Value, field: &'static str) -> Result<u64, MetainfoError> {
    let i = v
        .as_int()
        .ok_or_else(|| wrong_kind(v, field, "an integer"))?;
    u64::try_from(i).map_err(|_| invalid(field, format!("{i}; expected a non-negative integer")))
}

#[cfg(test)]
#[path = "metainfo_tests.rs"]
mod tests;
