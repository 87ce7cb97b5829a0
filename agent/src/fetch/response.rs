//! HTTP/1.1 response heads and chunked bodies, parsed from bytes. Pure and
//! bounded: a hostile or broken server can make a fetch fail, never make the
//! agent panic or allocate without limit.

use thiserror::Error;

/// Largest response head accepted (status line + headers).
pub const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum HeadError {
    #[error("response head larger than {MAX_HEAD} bytes")]
    TooLarge,
    #[error("more than {MAX_HEADERS} response headers")]
    TooManyHeaders,
    #[error("malformed status line {0:?}")]
    StatusLine(String),
    #[error("malformed header line {0:?}")]
    Header(String),
    #[error("malformed Content-Length {0:?}")]
    ContentLength(String),
    #[error("malformed Content-Range {0:?}")]
    ContentRange(String),
    #[error("malformed chunked encoding: {0}")]
    Chunked(&'static str),
}

/// What the agent needs from a response head.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Head {
    pub status: u16,
    pub reason: String,
    pub content_length: Option<u64>,
    pub chunked: bool,
    /// `Content-Range: bytes FIRST-LAST/TOTAL` (TOTAL may be `*`).
    pub content_range: Option<(u64, u64, Option<u64>)>,
}

/// Index just past the `\r\n\r\n` ending the head, if `buf` holds it all.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Parse a complete head (as delimited by [`head_end`]).
pub fn parse_head(head: &[u8]) -> Result<Head, HeadError> {
    if head.len() > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(HeadError::StatusLine(clip(status_line)));
    }
    let status = code
        .parse()
        .map_err(|_| HeadError::StatusLine(clip(status_line)))?;
    let mut h = Head {
        status,
        reason: clip(parts.next().unwrap_or("")),
        ..Head::default()
    };
    for (n, line) in lines.filter(|l| !l.is_empty()).enumerate() {
        if n >= MAX_HEADERS {
            return Err(HeadError::TooManyHeaders);
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| HeadError::Header(clip(line)))?;
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                let len = value
                    .parse()
                    .map_err(|_| HeadError::ContentLength(clip(value)))?;
                // Two different lengths would let a proxy and us disagree.
                if h.content_length.is_some_and(|l| l != len) {
                    return Err(HeadError::ContentLength(clip(value)));
                }
                h.content_length = Some(len);
            }
            "transfer-encoding" => {
                h.chunked = value
                    .to_ascii_lowercase()
                    .split(',')
                    .any(|t| t.trim() == "chunked")
            }
            "content-range" => h.content_range = Some(parse_content_range(value)?),
            _ => {}
        }
    }
    Ok(h)
}

fn parse_content_range(v: &str) -> Result<(u64, u64, Option<u64>), HeadError> {
    let bad = || HeadError::ContentRange(clip(v));
    let rest = v.strip_prefix("bytes ").ok_or_else(bad)?;
    let (range, total) = rest.split_once('/').ok_or_else(bad)?;
    let (first, last) = range.split_once('-').ok_or_else(bad)?;
    let first: u64 = first.trim().parse().map_err(|_| bad())?;
    let last: u64 = last.trim().parse().map_err(|_| bad())?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse::<u64>().map_err(|_| bad())?),
    };
    if last < first || total.is_some_and(|t| last >= t) {
        return Err(bad());
    }
    Ok((first, last, total))
}

/// Decode a complete chunked body, refusing to produce more than `limit`
/// bytes.
pub fn dechunk(mut body: &[u8], limit: usize) -> Result<Vec<u8>, HeadError> {
    let mut out = Vec::new();
    loop {
        let eol = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or(HeadError::Chunked("no chunk size line"))?;
        let size_text = std::str::from_utf8(&body[..eol])
            .map_err(|_| HeadError::Chunked("chunk size is not text"))?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| HeadError::Chunked("bad chunk size"))?;
        body = &body[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if size > limit.saturating_sub(out.len()) {
            return Err(HeadError::Chunked("body larger than expected"));
        }
        let data = body
            .get(..size)
            .ok_or(HeadError::Chunked("chunk runs past the end"))?;
        out.extend_from_slice(data);
        body = body
            .get(size..)
            .and_then(|b| b.strip_prefix(b"\r\n"))
            .ok_or(HeadError::Chunked("chunk not followed by CRLF"))?;
    }
}

/// Keep error messages one short line.
fn clip(s: &str) -> String {
    s.chars().take(80).flat_map(char::escape_default).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_ranged_response() {
        let raw = b"HTTP/1.1 206 Partial Content\r\ncontent-length: 100\r\nContent-Range: bytes 100-199/1000\r\n\r\nBODY";
        let end = head_end(raw).unwrap();
        assert_eq!(&raw[end..], b"BODY");
        let h = parse_head(&raw[..end]).unwrap();
        assert_eq!(h.status, 206);
        assert_eq!(h.reason, "Partial Content");
        assert_eq!(h.content_length, Some(100));
        assert_eq!(h.content_range, Some((100, 199, Some(1000))));
        assert!(!h.chunked);
    }

    #[test]
    fn rejects_malformed_heads() {
        let cases: &[(&[u8], HeadError)] = &[
            (
                b"HTP/1.1 200 OK\r\n\r\n",
                HeadError::StatusLine("HTP/1.1 200 OK".into()),
            ),
            (
                b"HTTP/1.1 2000 OK\r\n\r\n",
                HeadError::StatusLine("HTTP/1.1 2000 OK".into()),
            ),
            (
                b"HTTP/1.1 200 OK\r\nnocolon\r\n\r\n",
                HeadError::Header("nocolon".into()),
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                HeadError::ContentLength("-1".into()),
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                HeadError::ContentLength("2".into()),
            ),
            (
                b"HTTP/1.1 206 OK\r\nContent-Range: bytes 9-1/100\r\n\r\n",
                HeadError::ContentRange("bytes 9-1/100".into()),
            ),
            (
                b"HTTP/1.1 206 OK\r\nContent-Range: bytes 0-100/100\r\n\r\n",
                HeadError::ContentRange("bytes 0-100/100".into()),
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(
                parse_head(raw).unwrap_err(),
                *want,
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        let many = format!("HTTP/1.1 200 OK\r\n{}\r\n", "X: y\r\n".repeat(65));
        assert_eq!(
            parse_head(many.as_bytes()).unwrap_err(),
            HeadError::TooManyHeaders
        );
    }

    #[test]
    fn dechunks_and_bounds() {
        let body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\n\r\n";
        assert_eq!(dechunk(body, 100).unwrap(), b"Wikipedia");
        assert_eq!(
            dechunk(body, 5).unwrap_err(),
            HeadError::Chunked("body larger than expected")
        );
        assert!(dechunk(b"ffffffffffffffffffff\r\n", 100).is_err());
        assert!(dechunk(b"4\r\nWi", 100).is_err());
    }

    proptest! {
        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_head(&b);
            let _ = dechunk(&b, 1 << 20);
            let _ = head_end(&b);
        }
    }
}
