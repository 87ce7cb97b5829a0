//! The chain's wire protocol: length-prefixed binary frames over TCP, one
//! implementation for the agent's relay and the server's head.
//!
//! ```text
//! frame     = len:u32be kind:u8 body          len = 1 + |body|, 1 ≤ len ≤ limit
//! HELLO     1  "DRVC" version:u8 mac:[6] want:u32 session_len:u16 session
//! WELCOME   2  start:u32 total:u32
//! REFUSE    3  code:u8 oldest:u32 msg_len:u16 msg
//! CHUNK     4  index:u32 bytes…               (the rest of the frame)
//! KEEPALIVE 5  have:u32
//! PART      6  index:u32 offset:u32 bytes…    (version 2)
//! ```
//!
//! A downstream opens the connection and sends HELLO (its session, its MAC
//! and the first chunk it still needs); the upstream answers WELCOME and
//! then the chunks from `want` on, in order, with a KEEPALIVE whenever it
//! has had nothing to send for a while; or REFUSE and closes. The limit is
//! [`CONTROL_LIMIT`] for what an upstream reads (only HELLO) and
//! [`limit_for`] the manifest's largest chunk for what a downstream reads.
//! The decoder never allocates more than the limit and never panics
//! ([`decode`] is the fuzz entry).
//!
//! **Cut-through (version 2).** A version-1 downstream gets each chunk as
//! one CHUNK frame, sent once the upstream has verified it: every hop of a
//! chain then costs a whole chunk's transfer time before the next hop can
//! start (32 nodes, 1 MiB chunks at 16 Mbit/s: 17 s before the last node
//! gets its first byte). A version-2 downstream gets chunks as PART frames
//! of at most [`PART_MAX`] bytes, forwarded as they arrive, before the
//! upstream could check them: the chain fills in one part's time per hop.
//! Verification is unchanged — every node checks every whole chunk against
//! the manifest before using or completing it — because of two rules:
//! an upstream sends the part that *completes* a chunk only once it has
//! verified that chunk itself, and a PART at offset 0 (or a CHUNK) starts
//! the chunk over (the downstream drops what it had of it). An upstream
//! whose own copy of a chunk failed, or whose upstream vanished mid-chunk,
//! starts it over from its next source: its downstreams never complete a
//! chunk it has not verified, so a bad chunk is only ever blamed on the
//! node that really sent it whole.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use kernel_cmdline::MacAddr;

use crate::image::{is_component, Manifest};

/// HELLO's first bytes: a stray connection fails at once.
pub const MAGIC: [u8; 4] = *b"DRVC";
/// The newest protocol version, the one HELLO carries; 1 and 2 are
/// accepted (see the module documentation).
pub const VERSION: u8 = 2;
/// A PART frame's data is at most this long.
pub const PART_MAX: usize = 64 << 10;
/// Bytes before a PART's data: length, kind, index, offset.
pub const PART_HEADER: usize = 13;
/// A PART that does not complete its chunk carries at least this many
/// bytes (a receiver refuses less): what a partial chunk costs in memory
/// stays within a few percent of its bytes, however an upstream slices it.
pub const PART_MIN: usize = 1024;
/// The largest non-CHUNK frame (a REFUSE with its longest message).
pub const CONTROL_LIMIT: usize = 2048;
/// REFUSE messages are cut to this many bytes (on a char boundary).
pub const MAX_MESSAGE: usize = 1024;
/// Bytes before a CHUNK's data: length, kind, index.
pub const CHUNK_HEADER: usize = 9;

const HELLO: u8 = 1;
const WELCOME: u8 = 2;
const REFUSE: u8 = 3;
const CHUNK: u8 = 4;
const KEEPALIVE: u8 = 5;
const PART: u8 = 6;

/// `NAME@VERSION`, both [`is_component`]: which image a connection is
/// about (a chain session is keyed by it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(String);

impl SessionId {
    /// The session of `manifest`'s image.
    pub fn of(manifest: &Manifest) -> Self {
        SessionId(format!("{}@{}", manifest.name, manifest.version))
    }

    /// `NAME@VERSION`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its name and version.
    pub fn parts(&self) -> (&str, &str) {
        self.0.split_once('@').unwrap_or((&self.0, ""))
    }
}

impl FromStr for SessionId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('@') {
            Some((n, v)) if is_component(n) && is_component(v) => Ok(SessionId(s.to_owned())),
            _ => Err(format!(
                "chain session {s:?} is not NAME@VERSION, each {}",
                crate::image::COMPONENT_ACCEPTED
            )),
        }
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A downstream's first frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub session: SessionId,
    pub mac: MacAddr,
    /// The first chunk it still needs.
    pub want: u32,
    /// Its protocol version: 2 takes PART frames.
    pub version: u8,
}

/// Why an upstream will not serve (after HELLO) or stops serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseCode {
    /// `want` is older than the replay buffer (`oldest` is its first
    /// chunk): ask the coordinator for another upstream.
    TooOld,
    /// Not this upstream's image.
    UnknownSession,
    /// Too many downstreams already.
    Busy,
    /// HELLO was wrong (version, `want` past the end, not a HELLO).
    BadHello,
    /// The upstream is going away.
    Leaving,
    /// A code this version does not know.
    Other(u8),
}

impl RefuseCode {
    fn to_u8(self) -> u8 {
        match self {
            RefuseCode::TooOld => 1,
            RefuseCode::UnknownSession => 2,
            RefuseCode::Busy => 3,
            RefuseCode::BadHello => 4,
            RefuseCode::Leaving => 5,
            RefuseCode::Other(c) => c,
        }
    }

    fn from_u8(c: u8) -> Self {
        match c {
            1 => RefuseCode::TooOld,
            2 => RefuseCode::UnknownSession,
            3 => RefuseCode::Busy,
            4 => RefuseCode::BadHello,
            5 => RefuseCode::Leaving,
            c => RefuseCode::Other(c),
        }
    }
}

/// REFUSE's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refuse {
    pub code: RefuseCode,
    /// The oldest chunk the upstream still has (for `TooOld`), else 0.
    pub oldest: u32,
    /// For humans; at most [`MAX_MESSAGE`] bytes.
    pub message: String,
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Hello(Hello),
    /// HELLO accepted: chunks `start..total` follow, in order.
    Welcome {
        start: u32,
        total: u32,
    },
    Refuse(Refuse),
    /// A chunk's compressed bytes, unverified until the receiver checks them.
    Chunk {
        index: u32,
        bytes: Vec<u8>,
    },
    /// Nothing to send for a while; `have` is the upstream's next chunk.
    KeepAlive {
        have: u32,
    },
    /// Bytes `offset..` of chunk `index` (at most [`PART_MAX`]); offset 0
    /// starts the chunk over.
    Part {
        index: u32,
        offset: u32,
        bytes: Vec<u8>,
    },
}

/// Bytes that are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes is over the limit of {limit}")]
    TooLong { len: usize, limit: usize },
    #[error("empty frame")]
    Empty,
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("malformed {kind} frame: {what}")]
    Malformed { kind: &'static str, what: String },
}

/// Why reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading a frame")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// The frame limit a downstream uses for `manifest`'s image: its largest
/// chunk plus the CHUNK header, at least [`CONTROL_LIMIT`] and a whole
/// PART.
pub fn limit_for(manifest: &Manifest) -> usize {
    let largest = manifest.chunks.iter().map(|c| c.length).max().unwrap_or(0);
    let largest = usize::try_from(largest).unwrap_or(usize::MAX);
    largest
        .saturating_add(CHUNK_HEADER - 4)
        .max(CONTROL_LIMIT)
        .max(PART_MAX + PART_HEADER - 4)
}

impl Frame {
    /// The whole frame, length prefix included.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; 4];
        match self {
            Frame::Hello(h) => {
                b.push(HELLO);
                b.extend_from_slice(&MAGIC);
                b.push(h.version);
                b.extend_from_slice(&h.mac.0);
                b.extend_from_slice(&h.want.to_be_bytes());
                let s = h.session.as_str().as_bytes();
                // SessionId is at most 257 bytes.
                b.extend_from_slice(&(s.len() as u16).to_be_bytes());
                b.extend_from_slice(s);
            }
            Frame::Welcome { start, total } => {
                b.push(WELCOME);
                b.extend_from_slice(&start.to_be_bytes());
                b.extend_from_slice(&total.to_be_bytes());
            }
            Frame::Refuse(r) => {
                b.push(REFUSE);
                b.push(r.code.to_u8());
                b.extend_from_slice(&r.oldest.to_be_bytes());
                let msg = truncate(&r.message, MAX_MESSAGE).as_bytes();
                b.extend_from_slice(&(msg.len() as u16).to_be_bytes());
                b.extend_from_slice(msg);
            }
            Frame::Chunk { index, bytes } => {
                b.truncate(0);
                b.extend_from_slice(&chunk_header(*index, bytes.len()));
                b.extend_from_slice(bytes);
            }
            Frame::KeepAlive { have } => {
                b.push(KEEPALIVE);
                b.extend_from_slice(&have.to_be_bytes());
            }
            Frame::Part {
                index,
                offset,
                bytes,
            } => {
                b.truncate(0);
                b.extend_from_slice(&part_header(*index, *offset, bytes.len()));
                b.extend_from_slice(bytes);
            }
        }
        let len = (b.len() - 4) as u32;
        b[..4].copy_from_slice(&len.to_be_bytes());
        b
    }
}

/// A CHUNK frame's first bytes; its `len` data bytes follow (so a chunk is
/// written without copying it into a frame).
pub fn chunk_header(index: u32, len: usize) -> [u8; CHUNK_HEADER] {
    let mut h = [0u8; CHUNK_HEADER];
    let frame_len = u32::try_from(len.saturating_add(5)).unwrap_or(u32::MAX);
    h[..4].copy_from_slice(&frame_len.to_be_bytes());
    h[4] = CHUNK;
    h[5..].copy_from_slice(&index.to_be_bytes());
    h
}

/// A PART frame's first bytes; its `len` data bytes follow.
pub fn part_header(index: u32, offset: u32, len: usize) -> [u8; PART_HEADER] {
    let mut h = [0u8; PART_HEADER];
    let frame_len = u32::try_from(len.saturating_add(PART_HEADER - 4)).unwrap_or(u32::MAX);
    h[..4].copy_from_slice(&frame_len.to_be_bytes());
    h[4] = PART;
    h[5..9].copy_from_slice(&index.to_be_bytes());
    h[9..].copy_from_slice(&offset.to_be_bytes());
    h
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The frame length a 4-byte prefix announces, checked against `limit`.
pub fn frame_len(prefix: [u8; 4], limit: usize) -> Result<usize, FrameError> {
    let len = usize::try_from(u32::from_be_bytes(prefix)).unwrap_or(usize::MAX);
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > limit {
        return Err(FrameError::TooLong { len, limit });
    }
    Ok(len)
}

/// The first frame in `buf`: `Ok(None)` if `buf` holds only part of it,
/// else the frame and the bytes it took. Pure; the fuzz target's entry.
pub fn decode(buf: &[u8], limit: usize) -> Result<Option<(Frame, usize)>, FrameError> {
    let Some((prefix, rest)) = buf.split_first_chunk::<4>() else {
        return Ok(None);
    };
    let len = frame_len(*prefix, limit)?;
    let Some(body) = rest.get(..len) else {
        return Ok(None);
    };
    Ok(Some((decode_body(body.to_vec())?, 4 + len)))
}

/// A frame from its kind byte and body (what follows the length prefix).
pub fn decode_body(mut body: Vec<u8>) -> Result<Frame, FrameError> {
    let Some(&kind) = body.first() else {
        return Err(FrameError::Empty);
    };
    if kind == CHUNK {
        // The data is most of the frame: keep its allocation.
        let index = Cursor::new("CHUNK", &body[1..]).u32()?;
        body.drain(..5);
        return Ok(Frame::Chunk { index, bytes: body });
    }
    if kind == PART {
        let mut c = Cursor::new("PART", &body[1..]);
        let (index, offset) = (c.u32()?, c.u32()?);
        if c.rest.len() > PART_MAX {
            return Err(c.bad(format!("{} data bytes, at most {PART_MAX}", c.rest.len())));
        }
        body.drain(..PART_HEADER - 4);
        return Ok(Frame::Part {
            index,
            offset,
            bytes: body,
        });
    }
    let name = match kind {
        HELLO => "HELLO",
        WELCOME => "WELCOME",
        REFUSE => "REFUSE",
        KEEPALIVE => "KEEPALIVE",
        k => return Err(FrameError::UnknownKind(k)),
    };
    let mut c = Cursor::new(name, &body[1..]);
    let frame = match kind {
        HELLO => {
            if c.take(4)? != MAGIC {
                return Err(c.bad("not a drover chain HELLO (magic)"));
            }
            let version = c.u8()?;
            if !(1..=VERSION).contains(&version) {
                return Err(c.bad(format!(
                    "protocol version {version}, this side speaks 1 to {VERSION}"
                )));
            }
            let mac = MacAddr(c.take(6)?.try_into().unwrap_or_default());
            let want = c.u32()?;
            let len = usize::from(c.u16()?);
            let session = std::str::from_utf8(c.take(len)?)
                .map_err(|_| c.bad("session is not UTF-8"))?
                .parse()
                .map_err(|e: String| c.bad(e))?;
            Frame::Hello(Hello {
                session,
                mac,
                want,
                version,
            })
        }
        WELCOME => Frame::Welcome {
            start: c.u32()?,
            total: c.u32()?,
        },
        REFUSE => {
            let code = RefuseCode::from_u8(c.u8()?);
            let oldest = c.u32()?;
            let len = usize::from(c.u16()?);
            if len > MAX_MESSAGE {
                return Err(c.bad(format!("message of {len} bytes")));
            }
            let message = String::from_utf8_lossy(c.take(len)?).into_owned();
            Frame::Refuse(Refuse {
                code,
                oldest,
                message,
            })
        }
        _ => Frame::KeepAlive { have: c.u32()? },
    };
    c.end()?;
    Ok(frame)
}

/// Reads fields off a body, naming the frame in errors.
struct Cursor<'a> {
    kind: &'static str,
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(kind: &'static str, rest: &'a [u8]) -> Self {
        Cursor { kind, rest }
    }

    fn bad(&self, what: impl Into<String>) -> FrameError {
        FrameError::Malformed {
            kind: self.kind,
            what: what.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.rest.len() < n {
            return Err(self.bad("truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, FrameError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn end(&self) -> Result<(), FrameError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.bad(format!("{} trailing bytes", self.rest.len())))
        }
    }
}

/// Read one frame of at most `limit` bytes (blocking, under whatever
/// timeout the stream has).
pub fn read_frame(r: &mut impl Read, limit: usize) -> Result<Frame, ReadError> {
    let mut prefix = [0u8; 4];
    r.read_exact(&mut prefix)?;
    let len = frame_len(prefix, limit)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(decode_body(body)?)
}

/// Write one frame.
pub fn write_frame(w: &mut impl Write, f: &Frame) -> io::Result<()> {
    w.write_all(&f.encode())
}

/// Write a CHUNK frame without copying `bytes`.
pub fn write_chunk(w: &mut impl Write, index: u32, bytes: &[u8]) -> io::Result<()> {
    w.write_all(&chunk_header(index, bytes.len()))?;
    w.write_all(bytes)
}

/// Write `bytes`, which start at `offset` of chunk `index`, as PART frames
/// of at most `max` bytes (clamped to [`PART_MIN`]..=[`PART_MAX`]), without copying
/// them.
pub fn write_parts(
    w: &mut impl Write,
    index: u32,
    offset: usize,
    bytes: &[u8],
    max: usize,
) -> io::Result<()> {
    let max = max.clamp(PART_MIN, PART_MAX);
    for (i, part) in bytes.chunks(max).enumerate() {
        let at = offset + i * max;
        let at = u32::try_from(at).map_err(|_| io::Error::other("chunk offset past 4 GiB"))?;
        w.write_all(&part_header(index, at, part.len()))?;
        w.write_all(part)?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
