//! GPT partition type GUIDs as the manifest writes them.

use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A GPT partition type GUID, kept uppercase (`C12A7328-F81F-11D2-…`);
/// JSON accepts either case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TypeGuid(String);

impl TypeGuid {
    /// EFI System Partition.
    pub const ESP: &'static str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
    /// BIOS boot partition (GRUB's core.img on GPT).
    pub const BIOS_BOOT: &'static str = "21686148-6449-6E6F-744E-656564454649";
    /// Linux filesystem data.
    pub const LINUX_FS: &'static str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
    /// Linux swap.
    pub const LINUX_SWAP: &'static str = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F";
    /// Linux root (x86-64), Discoverable Partitions Specification.
    pub const LINUX_ROOT_X86_64: &'static str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";

    /// Parse `8-4-4-4-12` hex digits, either case.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = s.len() == 36
            && s.bytes().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => b == b'-',
                _ => b.is_ascii_hexdigit(),
            });
        ok.then(|| TypeGuid(s.to_ascii_uppercase()))
    }

    /// The canonical (uppercase) text, e.g. for `uuid::Uuid::parse_str`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TypeGuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for TypeGuid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TypeGuid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        TypeGuid::parse(&s).ok_or_else(|| {
            de::Error::invalid_value(
                de::Unexpected::Str(&s),
                &"a GUID like C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_normalizes_case_and_checks_shape() {
        let g = TypeGuid::parse("c12a7328-f81f-11d2-ba4b-00a0c93ec93b").unwrap();
        assert_eq!(g.as_str(), TypeGuid::ESP);
        assert_eq!(g.to_string(), TypeGuid::ESP);
        for bad in [
            "",
            "C12A7328F81F11D2BA4B00A0C93EC93B",
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93",
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93G",
            "C12A7328-F81F-11D2-BA4B_00A0C93EC93B",
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93BB",
        ] {
            assert_eq!(TypeGuid::parse(bad), None, "{bad}");
        }
        for known in [
            TypeGuid::ESP,
            TypeGuid::BIOS_BOOT,
            TypeGuid::LINUX_FS,
            TypeGuid::LINUX_SWAP,
            TypeGuid::LINUX_ROOT_X86_64,
        ] {
            assert_eq!(TypeGuid::parse(known).unwrap().as_str(), known);
        }
    }
}
