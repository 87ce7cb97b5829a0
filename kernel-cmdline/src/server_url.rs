//! `deploy.server=URL[,URL…]`: plain `http://` base URLs.
//!
//! Only http: what the agent downloads is verified against an ed25519-signed
//! manifest, so TLS would add no integrity, only a CA bundle, a clock that
//! must be right at boot, and certificates to rotate on every server.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::error::InvalidValue;
use crate::ServerUrl;

impl ServerUrl {
    /// Accepted form of one URL, for messages.
    pub const ACCEPTED: &'static str =
        "http://HOST[:PORT][/PATH] with HOST an IPv4 address, a DNS name or [IPv6]";
    /// Accepted form of `deploy.server`, for messages.
    pub const LIST_ACCEPTED: &'static str =
        "http://HOST[:PORT][/PATH][,http://…] with HOST an IPv4 address, a DNS name or [IPv6]";

    /// `host:port`, with the host in brackets if it is IPv6: what an HTTP
    /// `Host` header carries and what `SocketAddr`/`ToSocketAddrs` parse.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The URL of `rel` (e.g. `"debian/12/manifest.json"`) under this base.
    pub fn join(&self, rel: &str) -> String {
        format!("{self}/{}", rel.trim_start_matches('/'))
    }

    /// Parse the comma-separated list of `deploy.server`.
    pub fn parse_list(s: &str) -> Result<Vec<ServerUrl>, InvalidValue> {
        s.split(',')
            .map(|one| {
                if one.is_empty() {
                    Err(InvalidValue::because(
                        "empty entry in the list",
                        ServerUrl::LIST_ACCEPTED,
                    ))
                } else {
                    one.parse::<ServerUrl>().map_err(|e| InvalidValue {
                        accepted: ServerUrl::LIST_ACCEPTED,
                        ..e
                    })
                }
            })
            .collect()
    }
}

fn bad(reason: &'static str) -> InvalidValue {
    InvalidValue::because(reason, ServerUrl::ACCEPTED)
}

/// A DNS name: dot-separated labels of 1–63 letters, digits, `-` or `_`
/// (seen in internal names), not starting or ending with `-`; 253 at most.
fn is_dns_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A path character of RFC 3986 (`pchar` or `/`) other than `,`, which
/// separates URLs in `deploy.server`. `%` is checked separately.
fn is_path_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+;=:@/".contains(&b)
}

/// Every `%` is followed by two hex digits, and every other byte is allowed.
fn is_path(path: &str) -> bool {
    let b = path.as_bytes();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = |j: usize| b.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 3;
        } else if is_path_char(c) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// `PORT` of `:PORT`: 1–65535, digits only (`u16::from_str` would take `+80`).
fn parse_port(s: &str) -> Result<u16, InvalidValue> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("bad port"));
    }
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad("port must be 1 to 65535")),
        Ok(port) => Ok(port),
    }
}

/// `HOST[:PORT]`, the host without brackets.
fn parse_authority(auth: &str) -> Result<(String, u16), InvalidValue> {
    let (host, port) = if let Some(rest) = auth.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return Err(bad("missing \"]\" after an IPv6 address"));
        };
        if v6.parse::<Ipv6Addr>().is_err() {
            return Err(bad("bad IPv6 address"));
        }
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(p) => Some(p),
                None => return Err(bad("unexpected text after \"]\"")),
            },
        };
        (v6, port)
    } else {
        let (host, port) = match auth.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (auth, None),
        };
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        // All digits and dots reads as an address, so it must be one: a
        // mistyped 10.0.0.256 is an error, not a DNS name.
        if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            if host.parse::<Ipv4Addr>().is_err() {
                return Err(bad("bad IPv4 address"));
            }
        } else if host.contains(':') || !is_dns_name(host) {
            return Err(bad("bad host name"));
        }
        (host, port)
    };
    let port = match port {
        Some(p) => parse_port(p)?,
        None => 80,
    };
    Ok((host.to_owned(), port))
}

impl FromStr for ServerUrl {
    type Err = InvalidValue;
    /// `http://HOST[:PORT][/PATH]`; the scheme is case-insensitive, trailing
    /// `/` are dropped, query and fragment are not accepted.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(bad("must start with http://"));
        };
        if scheme.eq_ignore_ascii_case("https") {
            return Err(bad(
                "https is not used: integrity comes from signed manifests, only http is accepted",
            ));
        }
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(bad("only http:// is accepted"));
        }
        let (auth, path) = match rest.find('/') {
            Some(slash) => (
                rest.get(..slash).unwrap_or_default(),
                rest.get(slash..).unwrap_or_default(),
            ),
            None => (rest, ""),
        };
        let (host, port) = parse_authority(auth)?;
        let path = path.trim_end_matches('/');
        if !is_path(path) {
            return Err(bad("bad path (no query, fragment, \",\" or spaces)"));
        }
        Ok(ServerUrl {
            host,
            port,
            path: path.to_owned(),
        })
    }
}

impl fmt::Display for ServerUrl {
    /// `http://HOST[:PORT]PATH`, the port only when it is not 80.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("http://")?;
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if self.port != 80 {
            write!(f, ":{}", self.port)?;
        }
        f.write_str(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(host: &str, port: u16, path: &str) -> ServerUrl {
        ServerUrl {
            host: host.into(),
            port,
            path: path.into(),
        }
    }

    #[test]
    fn valid() {
        let cases: &[(&str, ServerUrl, &str)] = &[
            (
                "http://10.0.0.1",
                url("10.0.0.1", 80, ""),
                "http://10.0.0.1",
            ),
            (
                "http://10.0.0.1/",
                url("10.0.0.1", 80, ""),
                "http://10.0.0.1",
            ),
            (
                "HTTP://boot:8080//",
                url("boot", 8080, ""),
                "http://boot:8080",
            ),
            ("http://boot:80/x", url("boot", 80, "/x"), "http://boot/x"),
            (
                "http://drover.example.com:8080/a/b/",
                url("drover.example.com", 8080, "/a/b"),
                "http://drover.example.com:8080/a/b",
            ),
            (
                "http://[fd00::1]:81/d",
                url("fd00::1", 81, "/d"),
                "http://[fd00::1]:81/d",
            ),
            ("http://[::1]", url("::1", 80, ""), "http://[::1]"),
            (
                "http://h/%41~x@y:z",
                url("h", 80, "/%41~x@y:z"),
                "http://h/%41~x@y:z",
            ),
            ("http://a_b.c-d", url("a_b.c-d", 80, ""), "http://a_b.c-d"),
        ];
        for (s, want, shown) in cases {
            let got: ServerUrl = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(&got, want, "{s}");
            assert_eq!(got.to_string(), *shown);
            assert_eq!(shown.parse::<ServerUrl>().as_ref(), Ok(want));
        }
    }

    #[test]
    fn invalid() {
        for s in [
            "",
            "10.0.0.1",
            "ftp://x",
            "http://",
            "http:///x",
            "http://:80",
            "http://h:",
            "http://h:0",
            "http://h:65536",
            "http://h:+80",
            "http://h:80:81",
            "http://10.0.0.256",
            "http://1.2.3",
            "http://user@h",
            "http://-h",
            "http://h-",
            "http://a..b",
            "http://h.",
            "http://[::1",
            "http://[nope]",
            "http://[::1]x",
            "http://::1",
            "http://h/a?b",
            "http://h/a#b",
            "http://h/a,b",
            "http://h/a b",
            "http://h/%4",
            "http://h/%zz",
            "http://h/é",
            "http://h/\"",
        ] {
            assert!(s.parse::<ServerUrl>().is_err(), "{s:?}");
        }
    }

    #[test]
    fn https_says_why() {
        let e = "https://boot".parse::<ServerUrl>().unwrap_err();
        assert!(e.to_string().contains("signed manifests"), "{e}");
    }

    #[test]
    fn helpers() {
        let u: ServerUrl = "http://[fd00::1]:8080/drover/".parse().unwrap();
        assert_eq!(u.authority(), "[fd00::1]:8080");
        assert_eq!(
            u.join("/img/1/manifest.json"),
            "http://[fd00::1]:8080/drover/img/1/manifest.json"
        );
        let u: ServerUrl = "http://boot".parse().unwrap();
        assert_eq!(u.authority(), "boot:80");
        assert_eq!(u.join("x"), "http://boot/x");
    }

    #[test]
    fn list() {
        let l = ServerUrl::parse_list("http://a,http://b:81/p").unwrap();
        assert_eq!(l, vec![url("a", 80, ""), url("b", 81, "/p")]);
        assert!(ServerUrl::parse_list("").is_err());
        assert!(ServerUrl::parse_list("http://a,").is_err());
        assert!(ServerUrl::parse_list("http://a,,http://b").is_err());
    }
}
