//! SHA-256 digests as the manifest writes them: 64 lowercase hex digits.

use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// A SHA-256 digest. `Display` and JSON are 64 lowercase hex digits; JSON
/// input also accepts uppercase (so `parse(to_bytes(m)) == m`, not byte
/// equality of the text, which the signature covers anyway).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// Finish a running hash.
    pub fn from_hasher(hasher: Sha256) -> Self {
        Self(hasher.finalize().into())
    }

    /// Parse 64 hex digits, either case.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        decode_hex(s, &mut out)?;
        Some(Self(out))
    }

    /// The first 16 hex digits, enough to tell digests apart in a message.
    pub fn short(&self) -> String {
        encode_hex(&self.0[..8])
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&encode_hex(&self.0))
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({self})")
    }
}

impl Serialize for Sha256Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Sha256Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::from_hex(&s)
            .ok_or_else(|| de::Error::invalid_value(de::Unexpected::Str(&s), &"64 hex digits"))
    }
}

/// Lowercase hex of `bytes`.
pub fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// Fill `out` from exactly `2 * out.len()` hex digits, either case.
pub fn decode_hex(s: &str, out: &mut [u8]) -> Option<()> {
    if s.len() != out.len() * 2 {
        return None;
    }
    for (o, pair) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
        let hi = char::from(pair[0]).to_digit(16)?;
        let lo = char::from(pair[1]).to_digit(16)?;
        // Both are < 16, so the byte cannot overflow.
        *o = (hi * 16 + lo) as u8;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest_and_round_trip() {
        // FIPS 180-2 test vector.
        let d = Sha256Digest::of(b"abc");
        let hex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(d.to_string(), hex);
        assert_eq!(d.short(), "ba7816bf8f01cfea");
        assert_eq!(Sha256Digest::from_hex(hex), Some(d));
        assert_eq!(Sha256Digest::from_hex(&hex.to_uppercase()), Some(d));
        assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{hex}\""));
    }

    #[test]
    fn rejects_bad_hex() {
        let hex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(Sha256Digest::from_hex(&hex[1..]), None);
        assert_eq!(Sha256Digest::from_hex(&format!("{hex}0")), None);
        assert_eq!(Sha256Digest::from_hex(&hex.replace('b', "g")), None);
        // Multi-byte characters of the right byte length must not panic.
        assert_eq!(Sha256Digest::from_hex(&"é".repeat(32)), None);
        assert_eq!(Sha256Digest::from_hex("+0".repeat(32).as_str()), None);
        assert!(serde_json::from_str::<Sha256Digest>("\"00\"").is_err());
    }
}
