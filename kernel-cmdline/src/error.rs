//! Errors an operator reads on a serial console: one line each, naming the
//! key as written, the offending value (escaped, shortened) and what is
//! accepted.

use std::fmt;

use crate::KEYS;

/// Why the command line cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A `deploy.*` key this version does not know (often a typo).
    ///
    /// `unknown option deploy.mdoe="chain" (did you mean deploy.mode?); valid options: deploy.server, …`
    #[error(
        "unknown option {}{}{}; valid options: {}",
        ShownKey(key),
        ShowAssign(value.as_deref()),
        Suggest(key),
        KEYS.join(", ")
    )]
    UnknownKey {
        /// The key as written.
        key: String,
        /// The value, `None` for a bare word.
        value: Option<String>,
    },

    /// A known key with a value that does not parse.
    ///
    /// `deploy.mode: invalid value "chian"; accepted: http, chain, torrent`
    #[error("{key}: {}; accepted: {accepted}", Problem(value.as_deref(), *reason))]
    Invalid {
        /// The key as written.
        key: String,
        /// The value as written, `None` for a bare word that needs a value.
        value: Option<String>,
        /// What was wrong, when the accepted forms alone don't make it obvious.
        reason: Option<&'static str>,
        /// The accepted forms.
        accepted: &'static str,
    },

    /// A required key is absent.
    ///
    /// `missing required option deploy.image (accepted: NAME[@VERSION])`
    #[error("missing required option {key} (accepted: {accepted})")]
    Missing {
        /// The canonical key.
        key: &'static str,
        /// The accepted forms.
        accepted: &'static str,
    },
}

impl Error {
    /// The key the error is about, as written on the command line.
    pub fn key(&self) -> &str {
        match self {
            Error::UnknownKey { key, .. } | Error::Invalid { key, .. } => key,
            Error::Missing { key, .. } => key,
        }
    }
}

/// The error of the value types' [`FromStr`](std::str::FromStr): it does not
/// know the key, [`parse`](crate::parse) adds it to make an [`Error::Invalid`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value{}; accepted: {accepted}", Reason(*reason))]
pub struct InvalidValue {
    /// What was wrong, when the accepted forms alone don't make it obvious.
    pub reason: Option<&'static str>,
    /// The accepted forms.
    pub accepted: &'static str,
}

impl InvalidValue {
    pub(crate) const fn new(accepted: &'static str) -> Self {
        InvalidValue {
            reason: None,
            accepted,
        }
    }

    pub(crate) const fn because(reason: &'static str, accepted: &'static str) -> Self {
        InvalidValue {
            reason: Some(reason),
            accepted,
        }
    }

    /// Attach the key and the value as written.
    pub(crate) fn at(self, key: &str, value: Option<&str>) -> Error {
        Error::Invalid {
            key: key.to_owned(),
            value: value.map(str::to_owned),
            reason: self.reason,
            accepted: self.accepted,
        }
    }
}

/// The longest value echoed back: a garbage value can be kilobytes long and
/// the message must stay one readable line.
const MAX_SHOWN: usize = 64;

/// A value as shown in messages: Debug-quoted, so control characters and
/// terminal escapes are printed escaped rather than interpreted by the
/// console, and cut at [`MAX_SHOWN`] characters.
struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Cut on a char boundary (char_indices), never inside a UTF-8 sequence.
        match self.0.char_indices().nth(MAX_SHOWN) {
            Some((cut, _)) => {
                let head = self.0.get(..cut).unwrap_or_default();
                write!(f, "{head:?}… ({} bytes)", self.0.len())
            }
            None => write!(f, "{:?}", self.0),
        }
    }
}

/// An unknown key: as is when it is plain printable ASCII (the usual typo),
/// else quoted and escaped like a value (a quoted word may hold anything).
struct ShownKey<'a>(&'a str);

impl fmt::Display for ShownKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = self.0.len() <= MAX_SHOWN
            && !self.0.is_empty()
            && self.0.bytes().all(|b| b.is_ascii_graphic() && b != b'"');
        if plain {
            f.write_str(self.0)
        } else {
            Shown(self.0).fmt(f)
        }
    }
}

/// `="value"` or nothing for a bare word.
struct ShowAssign<'a>(Option<&'a str>);

impl fmt::Display for ShowAssign<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => write!(f, "={}", Shown(v)),
            None => Ok(()),
        }
    }
}

/// `invalid value "v" (reason)` or `missing value (reason)`.
struct Problem<'a>(Option<&'a str>, Option<&'static str>);

impl fmt::Display for Problem<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => write!(f, "invalid value {}", Shown(v))?,
            None => f.write_str("missing value")?,
        }
        Reason(self.1).fmt(f)
    }
}

/// ` (reason)` or nothing.
struct Reason(Option<&'static str>);

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(reason) => write!(f, " ({reason})"),
            None => Ok(()),
        }
    }
}

/// ` (did you mean deploy.mode?)` for a near miss, so a typo is one glance
/// away from its fix; empty otherwise.
struct Suggest<'a>(&'a str);

impl fmt::Display for Suggest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match closest_key(self.0) {
            Some(k) => write!(f, " (did you mean {k}?)"),
            None => Ok(()),
        }
    }
}

/// The valid key within edit distance 2 of `key`, if any.
fn closest_key(key: &str) -> Option<&'static str> {
    // Keys are short; bail out on long junk rather than spend time on it.
    if key.len() > 64 {
        return None;
    }
    KEYS.iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over chars (two-row dynamic programming).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_message() {
        let e = InvalidValue::new("http, chain, torrent").at("deploy.mode", Some("chian"));
        assert_eq!(
            e.to_string(),
            r#"deploy.mode: invalid value "chian"; accepted: http, chain, torrent"#
        );
    }

    #[test]
    fn invalid_with_reason_and_bare() {
        let e = InvalidValue::because("too short", "X").at("deploy.key", Some("ab"));
        assert_eq!(
            e.to_string(),
            r#"deploy.key: invalid value "ab" (too short); accepted: X"#
        );
        let e = InvalidValue::new("NAME[@VERSION]").at("deploy.image", None);
        assert_eq!(
            e.to_string(),
            "deploy.image: missing value; accepted: NAME[@VERSION]"
        );
    }

    #[test]
    fn value_is_escaped_and_cut() {
        let e = InvalidValue::new("X").at("deploy.log", Some("\u{1b}[2Jx"));
        assert_eq!(
            e.to_string(),
            r#"deploy.log: invalid value "\u{1b}[2Jx"; accepted: X"#
        );
        let long = "é".repeat(100);
        let msg = InvalidValue::new("X")
            .at("deploy.log", Some(&long))
            .to_string();
        assert!(msg.contains("… (200 bytes)"), "{msg}");
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn unknown_key_lists_all_keys() {
        let e = Error::UnknownKey {
            key: "deploy.mdoe".into(),
            value: Some("chain".into()),
        };
        let msg = e.to_string();
        assert!(
            msg.starts_with(
                r#"unknown option deploy.mdoe="chain" (did you mean deploy.mode?); valid options: deploy.server, deploy.image,"#
            ),
            "{msg}"
        );
        for k in KEYS {
            assert!(msg.contains(k), "{msg} lacks {k}");
        }
        let e = Error::UnknownKey {
            key: "deploy.frobnicate".into(),
            value: None,
        };
        assert!(e
            .to_string()
            .starts_with("unknown option deploy.frobnicate; valid options: deploy.server, "));
    }

    #[test]
    fn unknown_key_is_escaped() {
        let e = Error::UnknownKey {
            key: "deploy.a\nb\u{1b}".into(),
            value: None,
        };
        assert!(e
            .to_string()
            .starts_with(r#"unknown option "deploy.a\nb\u{1b}"; valid"#));
    }

    #[test]
    fn missing_message() {
        let e = Error::Missing {
            key: "deploy.image",
            accepted: "NAME[@VERSION]",
        };
        assert_eq!(
            e.to_string(),
            "missing required option deploy.image (accepted: NAME[@VERSION])"
        );
    }

    #[test]
    fn distance() {
        assert_eq!(edit_distance("deploy.mdoe", "deploy.mode"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", "abc"), 0);
    }
}
