//! The HTTP tracker protocol, both ends: announce requests (BEP 3) as a
//! query string, answers with compact peer lists (BEP 23; IPv6 peers in
//! `peers6`, BEP 7) or the original list of dictionaries, `failure
//! reason`s, and scrape (BEP 48).
//!
//! ```text
//! GET <announce>?info_hash=%..&peer_id=%..&port=6881&uploaded=0&downloaded=0
//!                &left=1234&event=started&compact=1&numwant=50
//! → d8:completei1e10:incompletei2e8:intervali30e12:min intervali5e5:peers6:<ip:4><port:2>e
//! → d14:failure reason<text>e
//! GET <scrape>?info_hash=%..[&info_hash=%..]
//! → d5:filesd20:<info hash>d8:completei1e10:downloadedi0e10:incompletei2eeee
//! ```
//!
//! `info_hash` and `peer_id` are raw bytes, percent-encoded, so queries are
//! parsed as bytes here rather than with a UTF-8 URL parser. Parameters
//! this tracker does not use (`key`, `ip`, `supportcrypto`, …) are
//! ignored: stock clients send many. `ip` in particular is never believed;
//! the tracker uses the address the request came from.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::bencode::{self, Dict, Limits, Value};
use super::metainfo::InfoHash;
use super::wire::PeerId;

/// The longest announce query accepted (clients send about 300 bytes).
pub const MAX_ANNOUNCE_QUERY: usize = 4096;
/// The longest scrape query: about 140 info-hashes.
pub const MAX_SCRAPE_QUERY: usize = 8192;

/// Tracker answers decoded by the agent: a list of 200 peers as
/// dictionaries is ~1000 values and 20 KB.
const RESPONSE_LIMITS: Limits = Limits {
    max_len: 1 << 20,
    max_depth: 8,
    max_values: 20_000,
    sorted_keys: false,
};

/// `event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Event {
    /// A regular announce (absent or empty; BEP 21's `paused` too).
    #[default]
    None,
    Started,
    Stopped,
    Completed,
}

/// An announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    /// Where the peer accepts connections.
    pub port: u16,
    pub uploaded: u64,
    pub downloaded: u64,
    /// Bytes still missing; 0 is a seeder.
    pub left: u64,
    pub event: Event,
    /// BEP 23 compact peers (the default when absent: every current client
    /// asks for it).
    pub compact: bool,
    /// How many peers it wants, if it said.
    pub numwant: Option<u32>,
}

/// A query that is not a valid announce or scrape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(pub String);

/// Percent-decode one query component (`+` is a space, as in forms).
fn unescape(s: &[u8]) -> Result<Vec<u8>, QueryError> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' => {
                let hex = |b: u8| (b as char).to_digit(16);
                let byte = match (
                    s.get(i + 1).and_then(|&b| hex(b)),
                    s.get(i + 2).and_then(|&b| hex(b)),
                ) {
                    (Some(h), Some(l)) => (h * 16 + l) as u8,
                    _ => {
                        let bad = &s[i..s.len().min(i + 3)];
                        return Err(QueryError(format!(
                            "bad percent escape {:?}; expected % and two hex digits",
                            bad.escape_ascii().to_string()
                        )));
                    }
                };
                out.push(byte);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Decoded `name=value` pairs, in order.
pub type QueryPairs = Vec<(Vec<u8>, Vec<u8>)>;

/// The pairs of a raw query string.
pub fn query_pairs(query: &[u8]) -> Result<QueryPairs, QueryError> {
    query
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = match p.iter().position(|&b| b == b'=') {
                Some(i) => (&p[..i], &p[i + 1..]),
                None => (p, &b""[..]),
            };
            Ok((unescape(k)?, unescape(v)?))
        })
        .collect()
}

/// Percent-encode `bytes` for a query (unreserved characters as they are).
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            s.push(b as char);
        } else {
            let _ = write!(s, "%{b:02X}");
        }
    }
    s
}

fn twenty(name: &str, v: &[u8]) -> Result<[u8; 20], QueryError> {
    v.try_into().map_err(|_| {
        QueryError(format!(
            "{name} is {} bytes; expected 20 (percent-encoded)",
            v.len()
        ))
    })
}

fn number<T: std::str::FromStr>(name: &str, v: &[u8], accepted: &str) -> Result<T, QueryError> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            QueryError(format!(
                "{name}={:?}; accepted: {accepted}",
                v.escape_ascii().to_string()
            ))
        })
}

impl Announce {
    /// Parse the raw query string of `GET /announce?…`.
    pub fn parse_query(query: &[u8]) -> Result<Announce, QueryError> {
        if query.len() > MAX_ANNOUNCE_QUERY {
            return Err(QueryError(format!(
                "query of {} bytes; at most {MAX_ANNOUNCE_QUERY} accepted",
                query.len()
            )));
        }
        let (mut info_hash, mut peer_id, mut port, mut left) = (None, None, None, None);
        let mut a = Announce {
            info_hash: InfoHash::default(),
            peer_id: PeerId::default(),
            port: 0,
            uploaded: 0,
            downloaded: 0,
            left: 0,
            event: Event::None,
            compact: true,
            numwant: None,
        };
        const COUNT: &str = "a byte count (decimal)";
        for (k, v) in query_pairs(query)? {
            match &k[..] {
                b"info_hash" => info_hash = Some(InfoHash(twenty("info_hash", &v)?)),
                b"peer_id" => peer_id = Some(PeerId(twenty("peer_id", &v)?)),
                b"port" => {
                    let p: u16 = number("port", &v, "1 to 65535")?;
                    if p == 0 {
                        return Err(QueryError("port=0; accepted: 1 to 65535".into()));
                    }
                    port = Some(p);
                }
                b"uploaded" => a.uploaded = number("uploaded", &v, COUNT)?,
                b"downloaded" => a.downloaded = number("downloaded", &v, COUNT)?,
                b"left" => left = Some(number("left", &v, COUNT)?),
                b"event" => {
                    a.event = match &v[..] {
                        b"" | b"paused" => Event::None,
                        b"started" => Event::Started,
                        b"stopped" => Event::Stopped,
                        b"completed" => Event::Completed,
                        _ => {
                            return Err(QueryError(format!(
                                "event={:?}; accepted: started, stopped, completed, or none",
                                v.escape_ascii().to_string()
                            )))
                        }
                    }
                }
                b"compact" => a.compact = number::<u8>("compact", &v, "0 or 1")? == 1,
                b"numwant" => a.numwant = Some(number("numwant", &v, "a count")?),
                _ => {}
            }
        }
        let need = |what: &str| QueryError(format!("missing {what}"));
        a.info_hash = info_hash.ok_or_else(|| need("info_hash"))?;
        a.peer_id = peer_id.ok_or_else(|| need("peer_id"))?;
        a.port = port.ok_or_else(|| need("port"))?;
        a.left = left.ok_or_else(|| need("left"))?;
        Ok(a)
    }

    /// The query string (without `?`).
    pub fn to_query(&self) -> String {
        let mut q = format!(
            "info_hash={}&peer_id={}&port={}&uploaded={}&downloaded={}&left={}&compact={}",
            escape(&self.info_hash.0),
            escape(&self.peer_id.0),
            self.port,
            self.uploaded,
            self.downloaded,
            self.left,
            u8::from(self.compact),
        );
        let event = match self.event {
            Event::None => "",
            Event::Started => "started",
            Event::Stopped => "stopped",
            Event::Completed => "completed",
        };
        if !event.is_empty() {
            let _ = write!(q, "&event={event}");
        }
        if let Some(n) = self.numwant {
            let _ = write!(q, "&numwant={n}");
        }
        q
    }
}

/// The info-hashes a scrape asks about (none: all the tracker has).
pub fn parse_scrape_query(query: &[u8]) -> Result<Vec<InfoHash>, QueryError> {
    if query.len() > MAX_SCRAPE_QUERY {
        return Err(QueryError(format!(
            "query of {} bytes; at most {MAX_SCRAPE_QUERY} accepted",
            query.len()
        )));
    }
    query_pairs(query)?
        .into_iter()
        .filter(|(k, _)| k == b"info_hash")
        .map(|(_, v)| Ok(InfoHash(twenty("info_hash", &v)?)))
        .collect()
}

/// A peer in an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub addr: SocketAddr,
    /// Sent only in non-compact answers.
    pub id: Option<PeerId>,
}

/// An announce's answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AnnounceReply {
    /// Seconds until the next regular announce.
    pub interval: u32,
    /// Seconds a client must wait at least.
    pub min_interval: Option<u32>,
    /// Seeders.
    pub complete: u32,
    /// Leechers.
    pub incomplete: u32,
    pub peers: Vec<Peer>,
}

/// Why a tracker's answer is of no use.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    #[error("the tracker refused: {0}")]
    Failure(String),
    #[error("tracker answer: {0}")]
    Bencode(#[from] bencode::DecodeError),
    #[error("tracker answer: {0}")]
    Invalid(String),
}

/// `d14:failure reason<reason>e`.
pub fn failure(reason: &str) -> Vec<u8> {
    let mut d = Dict::new();
    d.insert(b"failure reason", Value::Bytes(reason.as_bytes()));
    Value::Dict(d).to_bytes()
}

fn count(n: u32) -> Value<'static> {
    Value::Int(n.into())
}

impl AnnounceReply {
    /// The bencoded answer: compact (`peers` of 6-byte IPv4 entries,
    /// `peers6` of 18-byte IPv6 ones) or a list of dictionaries.
    pub fn encode(&self, compact: bool) -> Vec<u8> {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        let mut listed = Vec::new();
        let ips: Vec<String> = self.peers.iter().map(|p| p.addr.ip().to_string()).collect();
        for (p, ip) in self.peers.iter().zip(&ips) {
            if compact {
                match p.addr {
                    SocketAddr::V4(a) => {
                        v4.extend_from_slice(&a.ip().octets());
                        v4.extend_from_slice(&a.port().to_be_bytes());
                    }
                    SocketAddr::V6(a) => {
                        v6.extend_from_slice(&a.ip().octets());
                        v6.extend_from_slice(&a.port().to_be_bytes());
                    }
                }
            } else {
                let mut d = Dict::new();
                d.insert(b"ip", Value::Bytes(ip.as_bytes()));
                d.insert(b"port", Value::Int(p.addr.port().into()));
                if let Some(id) = &p.id {
                    d.insert(b"peer id", Value::Bytes(&id.0));
                }
                listed.push(Value::Dict(d));
            }
        }
        let mut d = Dict::new();
        d.insert(b"complete", count(self.complete));
        d.insert(b"incomplete", count(self.incomplete));
        d.insert(b"interval", count(self.interval));
        if let Some(m) = self.min_interval {
            d.insert(b"min interval", count(m));
        }
        if compact {
            d.insert(b"peers", Value::Bytes(&v4));
            if !v6.is_empty() {
                d.insert(b"peers6", Value::Bytes(&v6));
            }
        } else {
            d.insert(b"peers", Value::List(listed));
        }
        Value::Dict(d).to_bytes()
    }

    /// Decode a tracker's answer; a `failure reason` is an error.
    pub fn parse(bytes: &[u8]) -> Result<AnnounceReply, ReplyError> {
        let top = bencode::decode(bytes, &RESPONSE_LIMITS)?;
        let d = top
            .as_dict()
            .ok_or_else(|| ReplyError::Invalid(format!("{}, not a dictionary", top.described())))?;
        if let Some(reason) = d.get(b"failure reason") {
            let reason = reason.as_bytes().unwrap_or(b"(not a string)");
            return Err(ReplyError::Failure(
                String::from_utf8_lossy(reason).into_owned(),
            ));
        }
        let interval =
            reply_u32(d, "interval")?.ok_or_else(|| ReplyError::Invalid("no interval".into()))?;
        let mut reply = AnnounceReply {
            interval,
            min_interval: reply_u32(d, "min interval")?,
            complete: reply_u32(d, "complete")?.unwrap_or(0),
            incomplete: reply_u32(d, "incomplete")?.unwrap_or(0),
            peers: Vec::new(),
        };
        match d.get(b"peers") {
            None => {}
            Some(Value::Bytes(b)) => compact_peers(b, 6, &mut reply.peers)?,
            Some(Value::List(items)) => {
                for item in items {
                    reply.peers.push(listed_peer(item)?);
                }
            }
            Some(v) => {
                return Err(ReplyError::Invalid(format!("peers is {}", v.described())));
            }
        }
        match d.get(b"peers6") {
            None => {}
            Some(Value::Bytes(b)) => compact_peers(b, 18, &mut reply.peers)?,
            Some(v) => return Err(ReplyError::Invalid(format!("peers6 is {}", v.described()))),
        }
        Ok(reply)
    }
}

fn reply_u32(d: &Dict, key: &str) -> Result<Option<u32>, ReplyError> {
    match d.get(key.as_bytes()) {
        None => Ok(None),
        Some(v) => v
            .as_int()
            .and_then(|i| u32::try_from(i).ok())
            .map(Some)
            .ok_or_else(|| ReplyError::Invalid(format!("{key} is not a count: {v:?}"))),
    }
}

fn compact_peers(b: &[u8], size: usize, out: &mut Vec<Peer>) -> Result<(), ReplyError> {
    if !b.len().is_multiple_of(size) {
        return Err(ReplyError::Invalid(format!(
            "compact peers of {} bytes, not a multiple of {size}",
            b.len()
        )));
    }
    for e in b.chunks_exact(size) {
        let (ip, port) = e.split_at(size - 2);
        let ip = match ip.len() {
            4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(ip).expect("4"))),
            _ => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(ip).expect("16"))),
        };
        let port = u16::from_be_bytes([port[0], port[1]]);
        out.push(Peer {
            addr: SocketAddr::new(ip, port),
            id: None,
        });
    }
    Ok(())
}

fn listed_peer(item: &Value) -> Result<Peer, ReplyError> {
    let bad = |what: &str| ReplyError::Invalid(format!("a peer in the list: {what}"));
    let d = item.as_dict().ok_or_else(|| bad("not a dictionary"))?;
    let ip = d
        .get(b"ip")
        .and_then(Value::as_bytes)
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| s.parse::<IpAddr>().ok())
        .ok_or_else(|| bad("no ip address (names are not resolved)"))?;
    let port = d
        .get(b"port")
        .and_then(Value::as_int)
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| bad("no port"))?;
    let id = d
        .get(b"peer id")
        .and_then(Value::as_bytes)
        .and_then(|b| <[u8; 20]>::try_from(b).ok())
        .map(PeerId);
    Ok(Peer {
        addr: SocketAddr::new(ip, port),
        id,
    })
}

/// One torrent's numbers in a scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScrapeStats {
    /// Seeders.
    pub complete: u32,
    /// Completed downloads reported (`event=completed`).
    pub downloaded: u32,
    /// Leechers.
    pub incomplete: u32,
}

/// `d5:filesd<info hash>d…e…ee`, info-hashes in order.
pub fn encode_scrape(files: &[(InfoHash, ScrapeStats)]) -> Vec<u8> {
    let mut f = Dict::new();
    for (hash, s) in files {
        let mut d = Dict::new();
        d.insert(b"complete", count(s.complete));
        d.insert(b"downloaded", count(s.downloaded));
        d.insert(b"incomplete", count(s.incomplete));
        f.insert(&hash.0, Value::Dict(d));
    }
    let mut top = Dict::new();
    top.insert(b"files", Value::Dict(f));
    Value::Dict(top).to_bytes()
}

/// Decode a scrape answer.
pub fn parse_scrape(bytes: &[u8]) -> Result<Vec<(InfoHash, ScrapeStats)>, ReplyError> {
    let top = bencode::decode(bytes, &RESPONSE_LIMITS)?;
    let d = top
        .as_dict()
        .ok_or_else(|| ReplyError::Invalid(format!("{}, not a dictionary", top.described())))?;
    if let Some(reason) = d.get(b"failure reason") {
        let reason = reason.as_bytes().unwrap_or(b"(not a string)");
        return Err(ReplyError::Failure(
            String::from_utf8_lossy(reason).into_owned(),
        ));
    }
    let files = d
        .get(b"files")
        .and_then(Value::as_dict)
        .ok_or_else(|| ReplyError::Invalid("no files dictionary".into()))?;
    files
        .entries()
        .iter()
        .map(|(k, v)| {
            let hash = <[u8; 20]>::try_from(*k)
                .map_err(|_| ReplyError::Invalid(format!("a key of {} bytes in files", k.len())))?;
            let s = v
                .as_dict()
                .ok_or_else(|| ReplyError::Invalid("a file entry is not a dictionary".into()))?;
            Ok((
                InfoHash(hash),
                ScrapeStats {
                    complete: reply_u32(s, "complete")?.unwrap_or(0),
                    downloaded: reply_u32(s, "downloaded")?.unwrap_or(0),
                    incomplete: reply_u32(s, "incomplete")?.unwrap_or(0),
                },
            ))
        })
        .collect()
}

#[cfg(test)]
#[path = "tracker_tests.rs"]
mod tests;
