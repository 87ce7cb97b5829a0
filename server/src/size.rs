//! Byte sizes as operators write them (`64M`, `4096`, `1G`) and as the
//! server prints them (`64.0 MiB`). Pure.
//!
//! Suffixes are binary (K = 1024), like `sgdisk` and `truncate`: partition
//! sizes must be whole MiB, and `1M` meaning 10^6 would never be.

use std::fmt;

/// What [`parse_size`] accepts, for error messages.
pub const SIZE_ACCEPTED: &str =
    "a byte count, or a number with a K, M, G or T suffix (powers of 1024), e.g. 4096, 64M, 2G";

/// Parse `N`, `NK`, `NM`, `NG` or `NT` (suffix in either case, an optional
/// `iB`/`B` after it: `64MiB`, `64MB` and `64M` are all 64 × 2^20).
/// The message says what is wrong, not what was given.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err("no number".into());
    }
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("unknown suffix {suffix:?}")),
    };
    let n: u64 = digits.parse().map_err(|_| "too large".to_owned())?;
    n.checked_mul(1 << shift).ok_or_else(|| "too large".into())
}

/// A size for people: `512 B`, `3.5 KiB`, `64.0 MiB`, `1.2 GiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Human(pub u64);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
        if self.0 < 1024 {
            return write!(f, "{} B", self.0);
        }
        let mut value = self.0 as f64 / 1024.0;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        write!(f, "{value:.1} {}", UNITS[unit])
    }
}

/// The shortest exact spelling of `bytes` that [`parse_size`] reads back:
/// `64M`, `1G`, `4096`.
pub fn exact(bytes: u64) -> String {
    for (shift, suffix) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if bytes != 0 && bytes.is_multiple_of(1 << shift) {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let ok: &[(&str, u64)] = &[
            ("0", 0),
            ("4096", 4096),
            ("1K", 1024),
            ("1k", 1024),
            ("64M", 64 << 20),
            ("64MiB", 64 << 20),
            ("64mb", 64 << 20),
            ("2G", 2 << 30),
            ("3T", 3 << 40),
            ("16777215T", 16_777_215 << 40),
        ];
        for (text, want) in ok {
            assert_eq!(parse_size(text), Ok(*want), "{text}");
        }
    }

    #[test]
    fn bad_sizes_say_why() {
        let bad: &[(&str, &str)] = &[
            ("", "no number"),
            ("M", "no number"),
            ("-1", "no number"),
            (" 1", "no number"),
            ("1.5G", "unknown suffix \".5G\""),
            ("1 M", "unknown suffix \" M\""),
            ("12X", "unknown suffix \"X\""),
            ("1MM", "unknown suffix \"MM\""),
            ("16777216T", "too large"),
            ("99999999999999999999", "too large"),
        ];
        for (text, why) in bad {
            assert_eq!(parse_size(text), Err(why.to_string()), "{text}");
        }
    }

    #[test]
    fn human_and_exact() {
        assert_eq!(Human(0).to_string(), "0 B");
        assert_eq!(Human(1023).to_string(), "1023 B");
        assert_eq!(Human(1536).to_string(), "1.5 KiB");
        assert_eq!(Human(64 << 20).to_string(), "64.0 MiB");
        assert_eq!(Human(u64::MAX).to_string(), "16384.0 PiB");
        for n in [0, 1, 4096, 1000, 64 << 20, 3 << 30, (1 << 20) + 1024] {
            assert_eq!(parse_size(&exact(n)), Ok(n), "{n}");
        }
        assert_eq!(exact(64 << 20), "64M");
        assert_eq!(exact(4096), "4K");
        assert_eq!(exact(1000), "1000");
    }
}
