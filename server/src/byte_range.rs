//! The `Range` request header (RFC 9110 §14.1.2, §14.2), single byte
//! ranges only. Pure: the route handler turns the outcome into a 200, 206
//! or 416.
//!
//! - no header, or another unit (`items=…`): the whole file (a recipient
//!   must ignore a unit it does not understand);
//! - several ranges (`bytes=0-1,5-6`): the whole file. The RFC lets a
//!   server ignore `Range`; answering 200 beats a `multipart/byteranges`
//!   body no drover client reads;
//! - `bytes=A-B` (B clamped to the last byte), `bytes=A-`, `bytes=-N` (the
//!   last N bytes, all of them if the file is shorter): that range;
//! - a single range that is malformed (`bytes=5-2`, `bytes=x`) or starts
//!   past the end (including any range of an empty file, and `bytes=-0`):
//!   not satisfiable (416).

/// What to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeOutcome {
    /// 200 with the whole file.
    Full,
    /// 206 with bytes `start..=end` (inclusive, as in `Content-Range`).
    Partial {
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
    },
    /// 416 with `Content-Range: bytes */SIZE`.
    Unsatisfiable,
}

impl RangeOutcome {
    /// The body length this outcome sends for a file of `size` bytes.
    pub fn body_len(&self, size: u64) -> u64 {
        match *self {
            RangeOutcome::Full => size,
            RangeOutcome::Partial { start, end } => end - start + 1,
            RangeOutcome::Unsatisfiable => 0,
        }
    }
}

/// Decide what to send for a `Range` header value (`None`: no header) on a
/// file of `size` bytes.
pub fn resolve_range(header: Option<&str>, size: u64) -> RangeOutcome {
    let Some(header) = header else {
        return RangeOutcome::Full;
    };
    let header = header.trim();
    let Some((unit, set)) = header.split_once('=') else {
        return RangeOutcome::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeOutcome::Full;
    }
    if set.contains(',') {
        return RangeOutcome::Full;
    }
    let Some((first, last)) = set.trim().split_once('-') else {
        return RangeOutcome::Unsatisfiable;
    };
    match (parse_number(first), parse_number(last)) {
        // `-N`: the last N bytes.
        (None, Some(n)) if first.is_empty() => {
            if n == 0 || size == 0 {
                RangeOutcome::Unsatisfiable
            } else {
                RangeOutcome::Partial {
                    start: size.saturating_sub(n),
                    end: size - 1,
                }
            }
        }
        // `A-`: from A to the end.
        (Some(start), None) if last.is_empty() => partial(start, u64::MAX, size),
        // `A-B`.
        (Some(start), Some(end)) if start <= end => partial(start, end, size),
        _ => RangeOutcome::Unsatisfiable,
    }
}

fn partial(start: u64, end: u64, size: u64) -> RangeOutcome {
    if start >= size {
        return RangeOutcome::Unsatisfiable;
    }
    RangeOutcome::Partial {
        start,
        end: end.min(size - 1),
    }
}

/// 1*DIGIT that fits a u64.
fn parse_number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::RangeOutcome::{Full, Partial, Unsatisfiable};
    use super::*;

    fn p(start: u64, end: u64) -> RangeOutcome {
        Partial { start, end }
    }

    #[test]
    fn table() {
        let size = 1000;
        let cases: &[(Option<&str>, RangeOutcome)] = &[
            (None, Full),
            (Some("bytes=0-0"), p(0, 0)),
            (Some("bytes=0-499"), p(0, 499)),
            (Some("bytes=500-999"), p(500, 999)),
            (Some("bytes=500-5000"), p(500, 999)),
            (Some("bytes=999-999"), p(999, 999)),
            (Some("bytes=500-"), p(500, 999)),
            (Some("bytes=0-"), p(0, 999)),
            (Some("bytes=-1"), p(999, 999)),
            (Some("bytes=-500"), p(500, 999)),
            (Some("bytes=-5000"), p(0, 999)),
            (Some("BYTES=1-2"), p(1, 2)),
            (Some(" bytes = 1-2 "), p(1, 2)),
            (Some("bytes=18446744073709551614-"), Unsatisfiable),
            (Some("bytes=1000-"), Unsatisfiable),
            (Some("bytes=1000-1000"), Unsatisfiable),
            (Some("bytes=5-2"), Unsatisfiable),
            (Some("bytes=-0"), Unsatisfiable),
            (Some("bytes=-"), Unsatisfiable),
            (Some("bytes="), Unsatisfiable),
            (Some("bytes=abc"), Unsatisfiable),
            (Some("bytes=1-x"), Unsatisfiable),
            (Some("bytes=+1-2"), Unsatisfiable),
            (Some("bytes=1 - 2"), Unsatisfiable),
            (Some("bytes=99999999999999999999-"), Unsatisfiable),
            // Ignored: other units, garbage without a unit, several ranges.
            (Some("items=0-1"), Full),
            (Some("0-1"), Full),
            (Some("bytes=0-1,5-6"), Full),
            (Some(""), Full),
        ];
        for (header, want) in cases {
            assert_eq!(resolve_range(*header, size), *want, "{header:?}");
        }
    }

    #[test]
    fn empty_file() {
        assert_eq!(resolve_range(None, 0), Full);
        for h in ["bytes=0-", "bytes=0-0", "bytes=-1"] {
            assert_eq!(resolve_range(Some(h), 0), Unsatisfiable, "{h}");
        }
    }

    #[test]
    fn lengths() {
        assert_eq!(Full.body_len(10), 10);
        assert_eq!(p(3, 3).body_len(10), 1);
        assert_eq!(p(0, 9).body_len(10), 10);
        assert_eq!(Unsatisfiable.body_len(10), 0);
    }
}
