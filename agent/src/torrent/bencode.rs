//! Bencode (BEP 3): a bounded decoder and an encoder.
//!
//! ```text
//! integer      i<decimal>e      no leading zeros, no "-0", fits an i64
//! byte string  <length>:<bytes> length in decimal, no leading zeros
//! list         l<values>e
//! dictionary   d(<byte string><value>)*e
//! ```
//!
//! Everything decoded comes from other machines (a `.torrent`, a tracker
//! answer), so [`decode`] is bounded by [`Limits`]: the input length, the
//! nesting depth (the decoder recurses; the depth bounds its stack) and the
//! number of values (each costs a `Value` in memory, ~20 times the 2 input
//! bytes the smallest one takes). Byte strings are borrowed from the input,
//! never copied. Only the canonical form is accepted (what every encoder
//! writes), so `encode(decode(x)) == x`: a dictionary re-encoded hashes the
//! same, and two parsers cannot disagree about which of two `-0`s or
//! duplicate keys counts. With [`Limits::sorted_keys`] dictionary keys must
//! be strictly increasing as raw bytes, as BEP 3 requires (metainfo: the
//! info-hash is only well defined for a canonical dictionary); without it
//! any order is accepted and [`Dict::get`] returns the first match.
//!
//! Errors name the byte offset and what was expected there.

use std::fmt;

/// Bounds on what [`decode`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest input, in bytes.
    pub max_len: usize,
    /// The deepest nesting of lists and dictionaries (a bare integer or
    /// byte string is depth 0, `le` depth 1).
    pub max_depth: usize,
    /// The most values in the whole input (every integer, byte string,
    /// list and dictionary counts one; dictionary keys do not).
    pub max_values: usize,
    /// Dictionary keys must be sorted and unique (BEP 3).
    pub sorted_keys: bool,
}

impl Limits {
    /// A `.torrent`: 8 MiB holds the SHA-1s of 400 000 pieces; a
    /// single-file torrent is a dozen values (more with a `url-list` or a
    /// creator's extra keys).
    pub const METAINFO: Limits = Limits {
        max_len: 8 << 20,
        max_depth: 16,
        max_values: 10_000,
        sorted_keys: true,
    };
}

/// A decoded value; byte strings borrow from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    Int(i64),
    Bytes(&'a [u8]),
    List(Vec<Value<'a>>),
    Dict(Dict<'a>),
}

/// A dictionary: its entries in the order found (sorted when decoded with
/// [`Limits::sorted_keys`] or built with [`Dict::insert`]) and the exact
/// bytes it was decoded from (the info-hash is the SHA-1 of those).
#[derive(Debug, Clone, Default)]
pub struct Dict<'a> {
    entries: Vec<(&'a [u8], Value<'a>)>,
    raw: &'a [u8],
}

/// Equal entries; where they were decoded from does not matter.
impl PartialEq for Dict<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl Eq for Dict<'_> {}

impl<'a> Dict<'a> {
    /// An empty dictionary, to fill with [`Dict::insert`].
    pub fn new() -> Self {
        Dict::default()
    }

    /// Set `key` to `value`, keeping the keys sorted and unique.
    pub fn insert(&mut self, key: &'a [u8], value: Value<'a>) {
        match self.entries.binary_search_by(|(k, _)| (*k).cmp(key)) {
            Ok(i) => self.entries[i].1 = value,
            Err(i) => self.entries.insert(i, (key, value)),
        }
    }

    /// Remove every entry under `key`.
    pub fn remove(&mut self, key: &[u8]) {
        self.entries.retain(|(k, _)| *k != key);
    }

    /// The first value under `key`.
    pub fn get(&self, key: &[u8]) -> Option<&Value<'a>> {
        self.entries.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The entries, in order.
    pub fn entries(&self) -> &[(&'a [u8], Value<'a>)] {
        &self.entries
    }

    /// The bytes this dictionary was decoded from (empty if built).
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }
}

impl<'a> Value<'a> {
    /// What kind of value this is, for messages: `integer`, `byte
    /// string`, `list`, `dictionary`.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Int(_) => "integer",
            Value::Bytes(_) => "byte string",
            Value::List(_) => "list",
            Value::Dict(_) => "dictionary",
        }
    }

    /// [`Value::kind`] with its article: `an integer`, `a list`, …
    pub fn described(&self) -> &'static str {
        match self {
            Value::Int(_) => "an integer",
            Value::Bytes(_) => "a byte string",
            Value::List(_) => "a list",
            Value::Dict(_) => "a dictionary",
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_list(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    pub fn as_dict(&self) -> Option<&Dict<'a>> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// Append the encoding (dictionaries in their stored order).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Int(i) => encode_int(out, *i),
            Value::Bytes(b) => encode_bytes(out, b),
            Value::List(items) => {
                out.push(b'l');
                for v in items {
                    v.encode(out);
                }
                out.push(b'e');
            }
            Value::Dict(d) => {
                out.push(b'd');
                for (k, v) in &d.entries {
                    encode_bytes(out, k);
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }

    /// The encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// Append `i<n>e`.
pub fn encode_int(out: &mut Vec<u8>, n: i64) {
    out.push(b'i');
    out.extend_from_slice(n.to_string().as_bytes());
    out.push(b'e');
}

/// Append `<len>:<bytes>`.
pub fn encode_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(bytes);
}

/// Why bencode did not decode, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bencode at byte {offset}: {problem}")]
pub struct DecodeError {
    /// Offset in the input of the byte that was wrong.
    pub offset: usize,
    pub problem: Problem,
}

/// What was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The input ended where `expected` should be.
    End { expected: &'static str },
    /// `found` where `expected` should be.
    Unexpected { found: u8, expected: &'static str },
    /// An integer or length with a leading zero, or `-0`.
    NotCanonical,
    /// An integer beyond i64, or a length beyond the address space.
    Overflow,
    /// A byte string longer than what is left of the input.
    ShortString { len: u64, left: usize },
    /// Input longer than [`Limits::max_len`].
    TooLong { len: usize, max: usize },
    /// Nesting deeper than [`Limits::max_depth`].
    TooDeep { max: usize },
    /// More values than [`Limits::max_values`].
    TooManyValues { max: usize },
    /// A key not greater than the one before it (sorted keys required).
    UnsortedKey { key: Vec<u8>, previous: Vec<u8> },
    /// A key equal to the one before it.
    DuplicateKey { key: Vec<u8> },
    /// Bytes after the value.
    Trailing { len: usize },
}

/// At most this much of a key is kept and shown in errors.
const KEY_SHOWN: usize = 40;

fn shown(key: &[u8]) -> String {
    let cut = &key[..key.len().min(KEY_SHOWN)];
    let more = if key.len() > KEY_SHOWN { "…" } else { "" };
    format!("\"{}{more}\"", cut.escape_ascii())
}

fn shown_byte(b: u8) -> String {
    format!("'{}' (0x{b:02x})", [b].escape_ascii())
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::End { expected } => write!(f, "input ends where {expected} was expected"),
            Problem::Unexpected { found, expected } => {
                write!(f, "expected {expected}, found {}", shown_byte(*found))
            }
            Problem::NotCanonical => f.write_str(
                "number with a leading zero or \"-0\" (only the canonical form is accepted)",
            ),
            Problem::Overflow => f.write_str("number too large (accepted: a signed 64-bit value)"),
            Problem::ShortString { len, left } => {
                write!(f, "byte string of {len} bytes but only {left} bytes follow")
            }
            Problem::TooLong { len, max } => {
                write!(f, "input is {len} bytes; accepted: at most {max}")
            }
            Problem::TooDeep { max } => write!(f, "nested deeper than {max} lists/dictionaries"),
            Problem::TooManyValues { max } => write!(f, "more than {max} values"),
            Problem::UnsortedKey { key, previous } => write!(
                f,
                "dictionary key {} comes after {}; keys must be sorted as raw bytes",
                shown(key),
                shown(previous)
            ),
            Problem::DuplicateKey { key } => write!(f, "dictionary key {} repeated", shown(key)),
            Problem::Trailing { len: 1 } => f.write_str("1 byte after the value"),
            Problem::Trailing { len } => write!(f, "{len} bytes after the value"),
        }
    }
}

/// Decode one value that must fill `input` exactly.
pub fn decode<'a>(input: &'a [u8], limits: &Limits) -> Result<Value<'a>, DecodeError> {
    let (value, used) = decode_prefix(input, limits)?;
    if used != input.len() {
        return Err(DecodeError {
            offset: used,
            problem: Problem::Trailing {
                len: input.len() - used,
            },
        });
    }
    Ok(value)
}

/// Decode the value at the start of `input`; returns it and the bytes it
/// took.
pub fn decode_prefix<'a>(
    input: &'a [u8],
    limits: &Limits,
) -> Result<(Value<'a>, usize), DecodeError> {
    if input.len() > limits.max_len {
        return Err(DecodeError {
            offset: limits.max_len,
            problem: Problem::TooLong {
                len: input.len(),
                max: limits.max_len,
            },
        });
    }
    let mut d = Decoder {
        input,
        pos: 0,
        values: 0,
        limits,
    };
    let v = d.value(0)?;
    Ok((v, d.pos))
}

struct Decoder<'a, 'l> {
    input: &'a [u8],
    pos: usize,
    values: usize,
    limits: &'l Limits,
}

const VALUE: &str = "a value ('i', a digit, 'l' or 'd')";

impl<'a> Decoder<'a, '_> {
    fn err<T>(&self, offset: usize, problem: Problem) -> Result<T, DecodeError> {
        Err(DecodeError { offset, problem })
    }

    fn peek(&self, expected: &'static str) -> Result<u8, DecodeError> {
        match self.input.get(self.pos) {
            Some(&b) => Ok(b),
            None => self.err(self.pos, Problem::End { expected }),
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, DecodeError> {
        let start = self.pos;
        let b = self.peek(VALUE)?;
        self.values += 1;
        if self.values > self.limits.max_values {
            let max = self.limits.max_values;
            return self.err(start, Problem::TooManyValues { max });
        }
        if matches!(b, b'l' | b'd') && depth >= self.limits.max_depth {
            let max = self.limits.max_depth;
            return self.err(start, Problem::TooDeep { max });
        }
        match b {
            b'i' => {
                self.pos += 1;
                let n = self.int(b'e', "a digit or '-'")?;
                Ok(Value::Int(n))
            }
            b'0'..=b'9' => Ok(Value::Bytes(self.bytes()?)),
            b'l' => {
                self.pos += 1;
                let mut items = Vec::new();
                while self.peek("a value or 'e'")? != b'e' {
                    items.push(self.value(depth + 1)?);
                }
                self.pos += 1;
                Ok(Value::List(items))
            }
            b'd' => {
                self.pos += 1;
                let mut entries: Vec<(&'a [u8], Value<'a>)> = Vec::new();
                loop {
                    let b = self.peek("a key (a byte string) or 'e'")?;
                    if b == b'e' {
                        break;
                    }
                    if !b.is_ascii_digit() {
                        let expected = "a key (a byte string) or 'e'";
                        return self.err(self.pos, Problem::Unexpected { found: b, expected });
                    }
                    let key_at = self.pos;
                    let key = self.bytes()?;
                    if self.limits.sorted_keys {
                        if let Some((prev, _)) = entries.last() {
                            // One byte more than shown, so `shown` knows to add "…".
                            let cut = |k: &[u8]| k[..k.len().min(KEY_SHOWN + 1)].to_vec();
                            if key == *prev {
                                let key = cut(key);
                                return self.err(key_at, Problem::DuplicateKey { key });
                            }
                            if key < *prev {
                                let (key, previous) = (cut(key), cut(prev));
                                return self.err(key_at, Problem::UnsortedKey { key, previous });
                            }
                        }
                    }
                    let v = self.value(depth + 1)?;
                    entries.push((key, v));
                }
                self.pos += 1;
                Ok(Value::Dict(Dict {
                    entries,
                    raw: &self.input[start..self.pos],
                }))
            }
            found => self.err(
                start,
                Problem::Unexpected {
                    found,
                    expected: VALUE,
                },
            ),
        }
    }

    /// `<length>:<bytes>` at the current position.
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        // Callers saw a digit first, so the length is never negative.
        let at = self.pos;
        let len = self.int(b':', "a digit")?;
        let left = self.input.len() - self.pos;
        let len = len as u64;
        if len > left as u64 {
            return self.err(at, Problem::ShortString { len, left });
        }
        let s = &self.input[self.pos..self.pos + len as usize];
        self.pos += len as usize;
        Ok(s)
    }

    /// A canonical decimal i64 ending with `end` (consumed).
    fn int(&mut self, end: u8, first: &'static str) -> Result<i64, DecodeError> {
        let start = self.pos;
        let negative = self.input.get(self.pos) == Some(&b'-');
        if negative {
            self.pos += 1;
        }
        let digits_at = self.pos;
        let more = if end == b'e' {
            "a digit or 'e'"
        } else {
            "a digit or ':'"
        };
        let mut n: i64 = 0;
        loop {
            let first_digit = self.pos == digits_at;
            let b = self.peek(if first_digit { first } else { more })?;
            if b == end && !first_digit {
                break;
            }
            if !b.is_ascii_digit() {
                let expected = if first_digit { "a digit" } else { more };
                return self.err(self.pos, Problem::Unexpected { found: b, expected });
            }
            // Accumulate negatively so i64::MIN fits.
            let d = i64::from(b - b'0');
            n = match n.checked_mul(10).and_then(|n| n.checked_sub(d)) {
                Some(n) => n,
                None => return self.err(start, Problem::Overflow),
            };
            self.pos += 1;
        }
        let digits = &self.input[digits_at..self.pos];
        self.pos += 1;
        if (digits.len() > 1 && digits[0] == b'0') || (negative && digits == b"0") {
            return self.err(start, Problem::NotCanonical);
        }
        match (negative, n.checked_neg()) {
            (true, _) => Ok(n),
            (false, Some(n)) => Ok(n),
            (false, None) => self.err(start, Problem::Overflow),
        }
    }
}

#[cfg(test)]
#[path = "bencode_tests.rs"]
mod tests;
