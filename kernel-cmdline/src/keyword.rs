//! Values that are one keyword: booleans and the small enums.
//!
//! Keywords match ASCII case-insensitively (firmware menus and IPMI consoles
//! sometimes upcase what is typed); `Display` gives the canonical lowercase
//! spelling, which is what [`render`](crate::render) writes.

use std::fmt;
use std::str::FromStr;

use crate::error::InvalidValue;
use crate::{AfterSuccess, LogLevel, Mode, OnError};

/// The first entry of `table` whose spelling matches `s`.
fn lookup<T: Copy>(s: &str, table: &[(&str, T)]) -> Option<T> {
    table
        .iter()
        .find(|(word, _)| word.eq_ignore_ascii_case(s))
        .map(|(_, v)| *v)
}

/// Accepted boolean spellings, for messages.
pub const BOOL_ACCEPTED: &str = "1/0, yes/no, true/false, on/off";

const BOOLS: &[(&str, bool)] = &[
    ("1", true),
    ("yes", true),
    ("true", true),
    ("on", true),
    ("0", false),
    ("no", false),
    ("false", false),
    ("off", false),
];

/// Parse a boolean: `1/0 yes/no true/false on/off`, case-insensitive.
///
/// A bare key (no `=`) means true; that is decided by [`parse`](crate::parse),
/// not here.
pub fn parse_bool(s: &str) -> Result<bool, InvalidValue> {
    lookup(s, BOOLS).ok_or(InvalidValue::new(BOOL_ACCEPTED))
}

/// The canonical spelling [`render`](crate::render) uses for booleans.
pub fn bool_str(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

impl Mode {
    /// Accepted spellings, for messages.
    pub const ACCEPTED: &'static str = "http, chain, torrent";

    /// The canonical spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Http => "http",
            Mode::Chain => "chain",
            Mode::Torrent => "torrent",
        }
    }
}

impl FromStr for Mode {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const TABLE: &[(&str, Mode)] = &[
            ("http", Mode::Http),
            ("chain", Mode::Chain),
            ("torrent", Mode::Torrent),
        ];
        lookup(s, TABLE).ok_or(InvalidValue::new(Mode::ACCEPTED))
    }
}

impl AfterSuccess {
    /// Accepted spellings, for messages.
    pub const ACCEPTED: &'static str = "yes (or reboot), poweroff, no; or a boolean";

    /// The canonical spelling: `yes`, `poweroff`, `no`.
    pub fn as_str(self) -> &'static str {
        match self {
            AfterSuccess::Reboot => "yes",
            AfterSuccess::Poweroff => "poweroff",
            AfterSuccess::None => "no",
        }
    }
}

impl FromStr for AfterSuccess {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("reboot") {
            return Ok(AfterSuccess::Reboot);
        }
        if s.eq_ignore_ascii_case("poweroff") {
            return Ok(AfterSuccess::Poweroff);
        }
        // "deploy.reboot=no" reads as a boolean, so every boolean spelling works.
        match parse_bool(s) {
            Ok(true) => Ok(AfterSuccess::Reboot),
            Ok(false) => Ok(AfterSuccess::None),
            Err(_) => Err(InvalidValue::new(AfterSuccess::ACCEPTED)),
        }
    }
}

impl OnError {
    /// Accepted spellings, for messages.
    pub const ACCEPTED: &'static str = "reboot, poweroff, halt";

    /// The canonical spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OnError::Reboot => "reboot",
            OnError::Poweroff => "poweroff",
            OnError::Halt => "halt",
        }
    }
}

impl FromStr for OnError {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const TABLE: &[(&str, OnError)] = &[
            ("reboot", OnError::Reboot),
            ("poweroff", OnError::Poweroff),
            ("halt", OnError::Halt),
        ];
        lookup(s, TABLE).ok_or(InvalidValue::new(OnError::ACCEPTED))
    }
}

impl LogLevel {
    /// Accepted spellings, for messages.
    pub const ACCEPTED: &'static str = "info, debug";

    /// The canonical spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        }
    }
}

impl FromStr for LogLevel {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const TABLE: &[(&str, LogLevel)] = &[("info", LogLevel::Info), ("debug", LogLevel::Debug)];
        lookup(s, TABLE).ok_or(InvalidValue::new(LogLevel::ACCEPTED))
    }
}

macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}
display_as_str!(Mode, AfterSuccess, OnError, LogLevel);

#[cfg(test)]
mod tests {
    use super::*;

    /// `Display` then `FromStr` gives the value back, for every variant.
    fn round_trip<T>(all: &[T])
    where
        T: FromStr + fmt::Display + PartialEq + fmt::Debug,
        T::Err: fmt::Debug + PartialEq,
    {
        for v in all {
            assert_eq!(v.to_string().parse::<T>().as_ref(), Ok(v));
        }
    }

    #[test]
    fn round_trips() {
        round_trip(&[Mode::Http, Mode::Chain, Mode::Torrent]);
        round_trip(&[
            AfterSuccess::Reboot,
            AfterSuccess::Poweroff,
            AfterSuccess::None,
        ]);
        round_trip(&[OnError::Reboot, OnError::Poweroff, OnError::Halt]);
        round_trip(&[LogLevel::Info, LogLevel::Debug]);
        for b in [true, false] {
            assert_eq!(parse_bool(bool_str(b)), Ok(b));
        }
    }

    #[test]
    fn spellings() {
        for s in ["1", "yes", "YES", "True", "on", "ON"] {
            assert_eq!(parse_bool(s), Ok(true), "{s}");
        }
        for s in ["0", "no", "No", "FALSE", "off"] {
            assert_eq!(parse_bool(s), Ok(false), "{s}");
        }
        for s in ["", "2", "y", "n", "yes ", "enable"] {
            assert!(parse_bool(s).is_err(), "{s}");
        }
        assert_eq!("Chain".parse(), Ok(Mode::Chain));
        assert_eq!(
            "chian".parse::<Mode>(),
            Err(InvalidValue::new("http, chain, torrent"))
        );
        assert_eq!("reboot".parse(), Ok(AfterSuccess::Reboot));
        assert_eq!("1".parse(), Ok(AfterSuccess::Reboot));
        assert_eq!("off".parse(), Ok(AfterSuccess::None));
        assert_eq!("PowerOff".parse(), Ok(AfterSuccess::Poweroff));
        assert!("halt".parse::<AfterSuccess>().is_err());
        assert_eq!("poweroff".parse(), Ok(OnError::Poweroff));
        assert!("yes".parse::<OnError>().is_err());
        assert_eq!("DEBUG".parse(), Ok(LogLevel::Debug));
        assert!("trace".parse::<LogLevel>().is_err());
    }
}
