//! The BitTorrent peer wire protocol (BEP 3): the handshake and the
//! length-prefixed messages, as a codec with hard bounds.
//!
//! ```text
//! handshake   19 "BitTorrent protocol" reserved:[8] info_hash:[20] peer_id:[20]
//! message     len:u32be (0 = keep-alive) id:u8 payload      len = 1 + |payload|
//!   0 choke  1 unchoke  2 interested  3 not interested       (no payload)
//!   4 have      index:u32
//!   5 bitfield  one bit per piece, high bit first; exactly ⌈pieces/8⌉ bytes,
//!               spare bits zero
//!   6 request   index:u32 begin:u32 length:u32
//!   7 piece     index:u32 begin:u32 block…
//!   8 cancel    index:u32 begin:u32 length:u32
//!   other ids (9 port, 20 extended, …): skipped, within the same bound
//! ```
//!
//! Everything decoded comes from a peer, so [`decode`] checks every
//! message against the torrent ([`Limits`]) before anyone sees it: a
//! length prefix over [`Limits::max_body`] is an error as soon as its 4
//! bytes are in (before any body is read or room made for it), so is a
//! fixed-size message of the wrong size as soon as its id is in; piece
//! indexes must be below the piece count, blocks inside their piece and at
//! most [`Limits::max_block`] (16 KiB, what every client requests), and a
//! bitfield exactly as long as the torrent needs (BEP 3: drop a peer whose
//! bitfield is the wrong size or has spare bits set). Bitfields and blocks
//! borrow from the input. [`FrameBuffer`] is the one buffer a connection
//! needs: allocated once at the bound, never grown.
//!
//! What the codec does not know is the connection's state (a bitfield is
//! only valid right after the handshake, a piece only if requested): that
//! is the session's business.

use std::fmt;
use std::io::{self, Read};

use super::metainfo::{Info, InfoHash};

/// The protocol string a handshake starts with (after its length, 19).
pub const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";
/// A handshake's size in bytes.
pub const HANDSHAKE_LEN: usize = 68;
/// The largest block requested or accepted (BEP 3's customary 16 KiB).
pub const MAX_BLOCK: u32 = 16 << 10;

const CHOKE: u8 = 0;
const UNCHOKE: u8 = 1;
const INTERESTED: u8 = 2;
const NOT_INTERESTED: u8 = 3;
const HAVE: u8 = 4;
const BITFIELD: u8 = 5;
const REQUEST: u8 = 6;
const PIECE: u8 = 7;
const CANCEL: u8 = 8;

/// A peer's 20-byte id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PeerId(pub [u8; 20]);

impl fmt::Debug for PeerId {
    /// Printable bytes as they are (ids often start `-XX1234-`), others
    /// escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId(\"{}\")", self.0.escape_ascii())
    }
}

/// The first 68 bytes each side sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    /// Extension bits; drover sets none and ignores the peer's.
    pub reserved: [u8; 8],
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
}

impl Handshake {
    /// A handshake with no extension bits.
    pub fn new(info_hash: InfoHash, peer_id: PeerId) -> Self {
        Handshake {
            reserved: [0; 8],
            info_hash,
            peer_id,
        }
    }

    /// The 68 bytes.
    pub fn encode(&self) -> [u8; HANDSHAKE_LEN] {
        let mut out = [0u8; HANDSHAKE_LEN];
        out[0] = PROTOCOL.len() as u8;
        out[1..20].copy_from_slice(PROTOCOL);
        out[20..28].copy_from_slice(&self.reserved);
        out[28..48].copy_from_slice(&self.info_hash.0);
        out[48..68].copy_from_slice(&self.peer_id.0);
        out
    }

    /// The handshake at the start of `buf`: `None` until all 68 bytes are
    /// in, but an error as soon as the bytes in are not the protocol's.
    pub fn decode(buf: &[u8]) -> Result<Option<Handshake>, WireError> {
        let mut want = [0u8; 20];
        want[0] = PROTOCOL.len() as u8;
        want[1..].copy_from_slice(PROTOCOL);
        let seen = buf.len().min(20);
        if buf[..seen] != want[..seen] {
            return Err(WireError::NotBitTorrent {
                start: buf[..seen].to_vec(),
            });
        }
        if buf.len() < HANDSHAKE_LEN {
            return Ok(None);
        }
        let mut h = Handshake::new(InfoHash::default(), PeerId::default());
        h.reserved.copy_from_slice(&buf[20..28]);
        h.info_hash.0.copy_from_slice(&buf[28..48]);
        h.peer_id.0.copy_from_slice(&buf[48..68]);
        Ok(Some(h))
    }
}

/// A block of a piece: what `request` and `cancel` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockRef {
    pub index: u32,
    pub begin: u32,
    pub length: u32,
}

/// One message after the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    KeepAlive,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have(u32),
    Bitfield(&'a [u8]),
    Request(BlockRef),
    Piece {
        index: u32,
        begin: u32,
        block: &'a [u8],
    },
    Cancel(BlockRef),
    /// An id this codec does not use (9 port, 20 extended, …): to skip.
    Unknown {
        id: u8,
        payload: &'a [u8],
    },
}

impl Message<'_> {
    /// Append the encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let simple = |out: &mut Vec<u8>, id: u8| {
            out.extend_from_slice(&1u32.to_be_bytes());
            out.push(id);
        };
        let block_ref = |out: &mut Vec<u8>, id: u8, b: &BlockRef| {
            out.extend_from_slice(&13u32.to_be_bytes());
            out.push(id);
            for n in [b.index, b.begin, b.length] {
                out.extend_from_slice(&n.to_be_bytes());
            }
        };
        let with_payload = |out: &mut Vec<u8>, id: u8, payload: &[u8]| {
            out.extend_from_slice(&(1 + payload.len() as u32).to_be_bytes());
            out.push(id);
            out.extend_from_slice(payload);
        };
        match self {
            Message::KeepAlive => out.extend_from_slice(&[0; 4]),
            Message::Choke => simple(out, CHOKE),
            Message::Unchoke => simple(out, UNCHOKE),
            Message::Interested => simple(out, INTERESTED),
            Message::NotInterested => simple(out, NOT_INTERESTED),
            Message::Have(i) => with_payload(out, HAVE, &i.to_be_bytes()),
            Message::Bitfield(bits) => with_payload(out, BITFIELD, bits),
            Message::Request(b) => block_ref(out, REQUEST, b),
            Message::Piece {
                index,
                begin,
                block,
            } => {
                out.extend_from_slice(&piece_header(*index, *begin, block.len() as u32));
                out.extend_from_slice(block);
            }
            Message::Cancel(b) => block_ref(out, CANCEL, b),
            Message::Unknown { id, payload } => with_payload(out, *id, payload),
        }
    }

    /// The encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// The 13 bytes before a piece message's block, so a seeder can write the
/// block from wherever it is without copying it into a message.
pub fn piece_header(index: u32, begin: u32, block_len: u32) -> [u8; 13] {
    let mut h = [0u8; 13];
    h[..4].copy_from_slice(&(9 + block_len).to_be_bytes());
    h[4] = PIECE;
    h[5..9].copy_from_slice(&index.to_be_bytes());
    h[9..13].copy_from_slice(&begin.to_be_bytes());
    h
}

/// What a connection's messages are checked against: one torrent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub piece_count: u32,
    pub piece_length: u32,
    /// The file's size (the last piece is what is left of it).
    pub length: u64,
    /// The largest block in a request, cancel or piece.
    pub max_block: u32,
}

impl Limits {
    /// The limits of `info` with 16 KiB blocks.
    pub fn for_info(info: &Info) -> Limits {
        Limits {
            piece_count: info.piece_count(),
            piece_length: info.piece_length,
            length: info.length,
            max_block: MAX_BLOCK,
        }
    }

    /// A bitfield's exact size.
    pub fn bitfield_len(&self) -> u32 {
        self.piece_count.div_ceil(8)
    }

    /// The longest message body (after the length prefix) accepted: a
    /// piece message with the largest block, or the bitfield if longer.
    pub fn max_body(&self) -> u32 {
        (9 + self.max_block).max(1 + self.bitfield_len())
    }

    /// The bytes of piece `index` (< `piece_count`).
    pub fn piece_size(&self, index: u32) -> u64 {
        let start = u64::from(index) * u64::from(self.piece_length);
        self.length
            .saturating_sub(start)
            .min(self.piece_length.into())
    }
}

/// Why a peer's bytes were refused; any of these drops the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error(
        "not a BitTorrent handshake: starts {:?}; expected 19 \"BitTorrent protocol\"",
        start.escape_ascii().to_string()
    )]
    NotBitTorrent { start: Vec<u8> },
    #[error("message of {len} bytes; at most {max} accepted (a piece of a 16 KiB block, or this torrent's bitfield)")]
    TooLong { len: u32, max: u32 },
    #[error("{what} message of {len} bytes; expected {expected}")]
    BadLength {
        what: &'static str,
        len: u32,
        expected: String,
    },
    #[error("{what} message for piece {index}; the torrent has {count} pieces (0 to {})", count.saturating_sub(1))]
    NoSuchPiece {
        what: &'static str,
        index: u32,
        count: u32,
    },
    #[error(
        "{what} message for bytes {begin}+{length} of piece {index}, which has {piece_size} bytes"
    )]
    OutsidePiece {
        what: &'static str,
        index: u32,
        begin: u32,
        length: u32,
        piece_size: u64,
    },
    #[error("{what} message for {length} bytes; accepted: 1 to {max}")]
    BadBlockLength {
        what: &'static str,
        length: u32,
        max: u32,
    },
    #[error("bitfield has bits set past the torrent's {pieces} pieces")]
    SpareBits { pieces: u32 },
}

fn name(id: u8) -> &'static str {
    match id {
        CHOKE => "choke",
        UNCHOKE => "unchoke",
        INTERESTED => "interested",
        NOT_INTERESTED => "not interested",
        HAVE => "have",
        BITFIELD => "bitfield",
        REQUEST => "request",
        PIECE => "piece",
        CANCEL => "cancel",
        _ => "unknown",
    }
}

/// The message at the start of `buf`, and the bytes it took; `None` while
/// it is incomplete. Errors as early as the bytes in allow (module doc).
pub fn decode<'a>(
    buf: &'a [u8],
    limits: &Limits,
) -> Result<Option<(Message<'a>, usize)>, WireError> {
    let Some(prefix) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(prefix.try_into().expect("4 bytes"));
    if len == 0 {
        return Ok(Some((Message::KeepAlive, 4)));
    }
    let max = limits.max_body();
    if len > max {
        return Err(WireError::TooLong { len, max });
    }
    let Some(&id) = buf.get(4) else {
        return Ok(None);
    };
    check_length(id, len, limits)?;
    let Some(body) = buf.get(5..4 + len as usize) else {
        return Ok(None);
    };
    let u32_at = |i: usize| u32::from_be_bytes(body[i..i + 4].try_into().expect("4 bytes"));
    let msg = match id {
        CHOKE => Message::Choke,
        UNCHOKE => Message::Unchoke,
        INTERESTED => Message::Interested,
        NOT_INTERESTED => Message::NotInterested,
        HAVE => Message::Have(check_index("have", u32_at(0), limits)?),
        BITFIELD => {
            let pieces = limits.piece_count;
            let spare = (body.len() as u64 * 8 - u64::from(pieces)) as u32;
            // The last byte's low `spare` bits must be clear.
            if spare > 0
                && body
                    .last()
                    .is_some_and(|b| b & ((1u16 << spare) - 1) as u8 != 0)
            {
                return Err(WireError::SpareBits { pieces });
            }
            Message::Bitfield(body)
        }
        REQUEST | CANCEL => {
            let b = BlockRef {
                index: u32_at(0),
                begin: u32_at(4),
                length: u32_at(8),
            };
            check_block(name(id), b, limits)?;
            if id == REQUEST {
                Message::Request(b)
            } else {
                Message::Cancel(b)
            }
        }
        PIECE => {
            let (index, begin, block) = (u32_at(0), u32_at(4), &body[8..]);
            let b = BlockRef {
                index,
                begin,
                length: block.len() as u32,
            };
            check_block("piece", b, limits)?;
            Message::Piece {
                index,
                begin,
                block,
            }
        }
        id => Message::Unknown { id, payload: body },
    };
    Ok(Some((msg, 4 + len as usize)))
}

/// The length (id included) each id must have.
fn check_length(id: u8, len: u32, limits: &Limits) -> Result<(), WireError> {
    let bad = |expected: String| {
        Err(WireError::BadLength {
            what: name(id),
            len,
            expected,
        })
    };
    match id {
        CHOKE..=NOT_INTERESTED if len != 1 => bad("1 (no payload)".into()),
        HAVE if len != 5 => bad("5".into()),
        BITFIELD if len != 1 + limits.bitfield_len() => bad(format!(
            "{} (one bit for each of the torrent's {} pieces)",
            1 + limits.bitfield_len(),
            limits.piece_count
        )),
        REQUEST | CANCEL if len != 13 => bad("13".into()),
        PIECE if len < 10 => bad(format!(
            "10 to {} (a block of 1 to {} bytes)",
            9 + limits.max_block,
            limits.max_block
        )),
        _ => Ok(()),
    }
}

fn check_index(what: &'static str, index: u32, limits: &Limits) -> Result<u32, WireError> {
    if index < limits.piece_count {
        Ok(index)
    } else {
        Err(WireError::NoSuchPiece {
            what,
            index,
            count: limits.piece_count,
        })
    }
}

fn check_block(what: &'static str, b: BlockRef, limits: &Limits) -> Result<(), WireError> {
    check_index(what, b.index, limits)?;
    if b.length == 0 || b.length > limits.max_block {
        return Err(WireError::BadBlockLength {
            what,
            length: b.length,
            max: limits.max_block,
        });
    }
    let piece_size = limits.piece_size(b.index);
    if u64::from(b.begin) + u64::from(b.length) > piece_size {
        return Err(WireError::OutsidePiece {
            what,
            index: b.index,
            begin: b.begin,
            length: b.length,
            piece_size,
        });
    }
    Ok(())
}

/// A connection's receive buffer: room for exactly one largest message
/// (or the handshake), allocated once; reads never make it grow.
#[derive(Debug)]
pub struct FrameBuffer {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    limits: Limits,
}

impl FrameBuffer {
    /// A buffer for messages within `limits`.
    pub fn new(limits: Limits) -> Self {
        let size = (4 + limits.max_body() as usize).max(HANDSHAKE_LEN);
        FrameBuffer {
            buf: vec![0u8; size].into_boxed_slice(),
            start: 0,
            end: 0,
            limits,
        }
    }

    /// Its size in bytes (the most it ever holds).
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Bytes received and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// One `read` from `r` into the free room; `Ok(0)` is the peer's end
    /// of stream. Call after [`FrameBuffer::message`] said `None`.
    pub fn read_from(&mut self, r: &mut impl Read) -> io::Result<usize> {
        if self.end == self.buf.len() {
            // Room only at the front: move the undecoded tail there.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // `message` errors on anything longer than the buffer, so a full
            // buffer always holds a whole message.
            return Err(io::Error::other("frame buffer full: call message() first"));
        }
        let n = r.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// The peer's handshake, once all of it is in.
    pub fn handshake(&mut self) -> Result<Option<Handshake>, WireError> {
        let h = Handshake::decode(&self.buf[self.start..self.end])?;
        if h.is_some() {
            self.start += HANDSHAKE_LEN;
        }
        Ok(h)
    }

    /// The next whole message, if it is in.
    pub fn message(&mut self) -> Result<Option<Message<'_>>, WireError> {
        match decode(&self.buf[self.start..self.end], &self.limits)? {
            None => Ok(None),
            Some((msg, used)) => {
                self.start += used;
                if self.start == self.end {
                    (self.start, self.end) = (0, 0);
                }
                Ok(Some(msg))
            }
        }
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
