//! Values that name something: image, disk, token, MAC address, public key.
//!
//! Every accepted value is printable ASCII without `"`: a `"` cannot be
//! rendered back through the kernel's quoting, and non-ASCII would meet the
//! kernel's Latin-1 word splitting (see [`tokenize`](crate::tokenize)).

use std::fmt;
use std::str::FromStr;

use crate::error::InvalidValue;
use crate::{DiskSelector, ImageRef, MacAddr, PublicKey};

/// `[A-Za-z0-9._-]+`, not `.` or `..`: safe as one path component on the
/// server, which stores an image as `NAME/VERSION/`.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Printable ASCII other than space and `"`.
fn is_word_char(b: u8) -> bool {
    b.is_ascii_graphic() && b != b'"'
}

impl ImageRef {
    /// Accepted forms, for messages.
    pub const ACCEPTED: &'static str =
        "NAME[@VERSION], each made of A-Z a-z 0-9 . _ - and not \".\" or \"..\"";
}

impl FromStr for ImageRef {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, version) = match s.split_once('@') {
            Some((n, v)) => (n, Some(v)),
            None => (s, None),
        };
        if !is_name(name) {
            return Err(InvalidValue::because("bad NAME", ImageRef::ACCEPTED));
        }
        if let Some(v) = version {
            if !is_name(v) {
                return Err(InvalidValue::because("bad VERSION", ImageRef::ACCEPTED));
            }
        }
        Ok(ImageRef {
            name: name.to_owned(),
            version: version.map(str::to_owned),
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        match &self.version {
            Some(v) => write!(f, "@{v}"),
            None => Ok(()),
        }
    }
}

impl DiskSelector {
    /// Accepted forms, for messages.
    pub const ACCEPTED: &'static str = "auto, /dev/NAME, by-id:ID, serial:SERIAL, wwn:WWN";
}

/// `s` minus an ASCII case-insensitive `prefix`.
fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

impl FromStr for DiskSelector {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| Err(InvalidValue::because(reason, DiskSelector::ACCEPTED));
        if s.eq_ignore_ascii_case("auto") {
            return Ok(DiskSelector::Auto);
        }
        if s.starts_with('/') {
            // Only device nodes: `deploy.disk=/etc/passwd` is a mistake,
            // and `..` could climb out of /dev.
            let Some(rest) = s.strip_prefix("/dev/") else {
                return bad("a path must be under /dev/");
            };
            if rest.is_empty() || !s.bytes().all(is_word_char) {
                return bad("bad device path");
            }
            if s.split('/').any(|c| c == "..") {
                return bad("\"..\" is not allowed in a device path");
            }
            return Ok(DiskSelector::Path(s.to_owned()));
        }
        if let Some(id) = strip_prefix_ci(s, "by-id:") {
            // One name inside /dev/disk/by-id/, so no `/` and no `.`/`..`.
            if id.is_empty() || id == "." || id == ".." || !id.bytes().all(is_word_char) {
                return bad("bad by-id name");
            }
            if id.contains('/') {
                return bad("a by-id name has no \"/\"; use /dev/disk/by-id/… for a path");
            }
            return Ok(DiskSelector::ById(id.to_owned()));
        }
        if let Some(serial) = strip_prefix_ci(s, "serial:") {
            // Serials may contain inner spaces (ATA pads them); write them
            // as deploy.disk="serial:A B". Edge spaces are surely a typo.
            let ok = !serial.is_empty()
                && !serial.starts_with(' ')
                && !serial.ends_with(' ')
                && serial.bytes().all(|b| b == b' ' || is_word_char(b));
            if !ok {
                return bad("bad serial");
            }
            return Ok(DiskSelector::Serial(serial.to_owned()));
        }
        if let Some(wwn) = strip_prefix_ci(s, "wwn:") {
            if wwn.is_empty() || !wwn.bytes().all(is_word_char) {
                return bad("bad WWN");
            }
            return Ok(DiskSelector::Wwn(wwn.to_owned()));
        }
        Err(InvalidValue::new(DiskSelector::ACCEPTED))
    }
}

impl fmt::Display for DiskSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskSelector::Auto => f.write_str("auto"),
            DiskSelector::Path(p) => f.write_str(p),
            DiskSelector::ById(id) => write!(f, "by-id:{id}"),
            DiskSelector::Serial(s) => write!(f, "serial:{s}"),
            DiskSelector::Wwn(w) => write!(f, "wwn:{w}"),
        }
    }
}

/// Accepted `deploy.token` values, for messages.
pub const TOKEN_ACCEPTED: &str = "1 to 256 of A-Z a-z 0-9 . _ ~ + / = -";

/// Whether `s` is a valid `deploy.token`: `[A-Za-z0-9._~+/=-]{1,256}`
/// (covers hex, base64 and base64url tokens).
pub fn is_valid_token(s: &str) -> bool {
    (1..=256).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~+/=-".contains(&b))
}

fn hex_digit(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Two hex digits, either case, as one byte.
fn hex_byte(s: &str) -> Option<u8> {
    match s.as_bytes() {
        [hi, lo] => Some(hex_digit(*hi)? << 4 | hex_digit(*lo)?),
        _ => None,
    }
}

impl MacAddr {
    /// Accepted forms, for messages.
    pub const ACCEPTED: &'static str = "aa:bb:cc:dd:ee:ff (hex, \":\" or \"-\")";
    /// Accepted `BOOTIF` forms, for messages.
    pub const BOOTIF_ACCEPTED: &'static str = "01-aa-bb-cc-dd-ee-ff (01 = Ethernet, then the MAC)";

    /// Six hex pairs separated by `sep`.
    fn from_pairs(s: &str, sep: char) -> Option<MacAddr> {
        let mut mac = [0u8; 6];
        let mut parts = s.split(sep);
        for byte in &mut mac {
            *byte = hex_byte(parts.next()?)?;
        }
        match parts.next() {
            Some(_) => None,
            None => Some(MacAddr(mac)),
        }
    }

    /// Parse the PXELINUX/iPXE `BOOTIF` form, `01-aa-bb-cc-dd-ee-ff`: the
    /// ARP hardware type (01, Ethernet) then the MAC, hex in either case.
    pub fn from_bootif(s: &str) -> Result<MacAddr, InvalidValue> {
        let Some(mac) = s.strip_prefix("01-") else {
            return Err(InvalidValue::because(
                "must start with the hardware type 01-",
                MacAddr::BOOTIF_ACCEPTED,
            ));
        };
        MacAddr::from_pairs(mac, '-').ok_or(InvalidValue::new(MacAddr::BOOTIF_ACCEPTED))
    }

    /// The `BOOTIF` form, `01-aa-bb-cc-dd-ee-ff`.
    pub fn to_bootif(&self) -> String {
        let [a, b, c, d, e, f] = self.0;
        format!("01-{a:02x}-{b:02x}-{c:02x}-{d:02x}-{e:02x}-{f:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = InvalidValue;
    /// `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff`, hex in either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MacAddr::from_pairs(s, ':')
            .or_else(|| MacAddr::from_pairs(s, '-'))
            .ok_or(InvalidValue::new(MacAddr::ACCEPTED))
    }
}

impl fmt::Display for MacAddr {
    /// `aa:bb:cc:dd:ee:ff`, lowercase.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl PublicKey {
    /// Accepted forms, for messages.
    pub const ACCEPTED: &'static str = "64 hex digits (an ed25519 public key)";
}

impl FromStr for PublicKey {
    type Err = InvalidValue;
    /// 64 hex digits, either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(InvalidValue::because(
                "not 64 characters long",
                PublicKey::ACCEPTED,
            ));
        }
        let mut key = [0u8; 32];
        for (out, pair) in key.iter_mut().zip(bytes.chunks_exact(2)) {
            let [hi, lo] = pair else {
                return Err(InvalidValue::new(PublicKey::ACCEPTED));
            };
            *out = match (hex_digit(*hi), hex_digit(*lo)) {
                (Some(hi), Some(lo)) => hi << 4 | lo,
                _ => return Err(InvalidValue::because("not hex", PublicKey::ACCEPTED)),
            };
        }
        Ok(PublicKey(key))
    }
}

impl fmt::Display for PublicKey {
    /// 64 lowercase hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image() {
        let ok: &[(&str, &str, Option<&str>)] = &[
            ("debian", "debian", None),
            ("debian@12.5", "debian", Some("12.5")),
            ("a-b_c.d@v1-rc.2_x", "a-b_c.d", Some("v1-rc.2_x")),
            ("...", "...", None),
        ];
        for (s, name, version) in ok {
            let img: ImageRef = s.parse().unwrap();
            assert_eq!(
                (img.name.as_str(), img.version.as_deref()),
                (*name, *version)
            );
            assert_eq!(img.to_string(), *s);
        }
        for s in [
            "", "@1", "a@", "a@b@c", ".", "..", "a@..", "a/b", "a b", "é", "a@1/2", "a\"",
        ] {
            assert!(s.parse::<ImageRef>().is_err(), "{s:?}");
        }
    }

    #[test]
    fn disk() {
        use DiskSelector::*;
        let ok: &[(&str, DiskSelector, &str)] = &[
            ("auto", Auto, "auto"),
            ("AUTO", Auto, "auto"),
            ("/dev/sda", Path("/dev/sda".into()), "/dev/sda"),
            ("/dev/nvme0n1", Path("/dev/nvme0n1".into()), "/dev/nvme0n1"),
            (
                "/dev/disk/by-id/ata-X_1",
                Path("/dev/disk/by-id/ata-X_1".into()),
                "/dev/disk/by-id/ata-X_1",
            ),
            (
                "by-id:nvme-eui.1",
                ById("nvme-eui.1".into()),
                "by-id:nvme-eui.1",
            ),
            (
                "serial:S3Z 1234",
                Serial("S3Z 1234".into()),
                "serial:S3Z 1234",
            ),
            ("Serial:x", Serial("x".into()), "serial:x"),
            (
                "wwn:0x5000c500a1b2c3d4",
                Wwn("0x5000c500a1b2c3d4".into()),
                "wwn:0x5000c500a1b2c3d4",
            ),
        ];
        for (s, want, shown) in ok {
            let got: DiskSelector = s.parse().unwrap();
            assert_eq!(&got, want, "{s}");
            assert_eq!(got.to_string(), *shown);
            assert_eq!(shown.parse::<DiskSelector>().as_ref(), Ok(want));
        }
        for s in [
            "",
            "sda",
            "/dev/",
            "/dev",
            "/etc/passwd",
            "/dev/../etc/x",
            "/dev/a b",
            "by-id:",
            "by-id:..",
            "by-id:a/b",
            "serial:",
            "serial: x",
            "serial:x ",
            "serial:a\"b",
            "serial:a\tb",
            "wwn:",
            "wwn:a b",
            "uuid:1234",
        ] {
            assert!(s.parse::<DiskSelector>().is_err(), "{s:?}");
        }
    }

    #[test]
    fn token() {
        assert!(is_valid_token("abc"));
        assert!(is_valid_token("aGVsbG8=/+_-.~"));
        assert!(is_valid_token(&"a".repeat(256)));
        assert!(!is_valid_token(&"a".repeat(257)));
        assert!(!is_valid_token(""));
        assert!(!is_valid_token("a b"));
        assert!(!is_valid_token("a\"b"));
        assert!(!is_valid_token("a:b"));
    }

    #[test]
    fn mac() {
        let mac = MacAddr([0xaa, 0xbb, 0xcc, 0x01, 0x02, 0xff]);
        assert_eq!(mac.to_string(), "aa:bb:cc:01:02:ff");
        assert_eq!(mac.to_bootif(), "01-aa-bb-cc-01-02-ff");
        assert_eq!("AA:bb:CC:01:02:fF".parse(), Ok(mac));
        assert_eq!("aa-bb-cc-01-02-ff".parse(), Ok(mac));
        assert_eq!(MacAddr::from_bootif("01-AA-BB-CC-01-02-FF"), Ok(mac));
        assert_eq!(MacAddr::from_bootif(&mac.to_bootif()), Ok(mac));
        for s in [
            "aa-bb-cc-01-02-ff",
            "06-aa-bb-cc-01-02-ff",
            "01-aa-bb-cc-01-02",
            "01-aa-bb-cc-01-02-ff-00",
            "01-aa:bb:cc:01:02:ff",
            "01-a-bb-cc-01-02-fff",
            "01-+a-bb-cc-01-02-ff",
            "01-éa-bb-cc-01-02-ff",
        ] {
            assert!(MacAddr::from_bootif(s).is_err(), "{s}");
        }
        for s in [
            "",
            "aa:bb:cc:01:02",
            "aa:bb-cc:01:02:ff",
            "aabbcc0102ff",
            "gg:bb:cc:01:02:ff",
        ] {
            assert!(s.parse::<MacAddr>().is_err(), "{s}");
        }
    }

    #[test]
    fn key() {
        let hex = "00112233445566778899AABBCCDDEEFF00112233445566778899aabbccddeeff";
        let key: PublicKey = hex.parse().unwrap();
        assert_eq!(key.0[0..2], [0x00, 0x11]);
        assert_eq!(key.to_string(), hex.to_ascii_lowercase());
        assert_eq!(key.to_string().parse(), Ok(key));
        assert!(hex[1..].parse::<PublicKey>().is_err());
        assert!(format!("{hex}0").parse::<PublicKey>().is_err());
        assert!(hex.replace('A', "g").parse::<PublicKey>().is_err());
        // 64 bytes but not 64 chars: must not panic or accept.
        let multibyte = format!("é{}", &hex[2..]);
        assert!(multibyte.parse::<PublicKey>().is_err());
    }
}
