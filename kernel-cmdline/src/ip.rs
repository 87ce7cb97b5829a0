//! `ip=`, the kernel's own network option (`Documentation/admin-guide/nfs/
//! nfsroot.rst`), restricted to what the agent does itself: DHCP, nothing,
//! or one static IPv4 address.
//!
//! The kernel also knows BOOTP/RARP and "static address plus autoconf";
//! the agent has no client for those, and guessing would leave a node
//! silently unreachable, so they are errors that say what works.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::error::InvalidValue;
use crate::{IpConfig, StaticIp};

impl IpConfig {
    /// Accepted forms, for messages.
    pub const ACCEPTED: &'static str = "dhcp (or on, any), off (or none), or \
        CLIENT:[SERVER]:[GW]:NETMASK:[HOSTNAME]:[DEVICE]:[off|none][:DNS0[:DNS1]]";
}

impl FromStr for IpConfig {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let is = |w: &str| s.eq_ignore_ascii_case(w);
        if is("dhcp") || is("on") || is("any") {
            return Ok(IpConfig::Dhcp);
        }
        if is("off") || is("none") {
            return Ok(IpConfig::Off);
        }
        if is("bootp") || is("rarp") || is("both") {
            return Err(InvalidValue::because(
                "the agent does DHCP or a static address, not BOOTP or RARP",
                IpConfig::ACCEPTED,
            ));
        }
        if s.contains(':') {
            return s.parse().map(IpConfig::Static);
        }
        Err(InvalidValue::new(IpConfig::ACCEPTED))
    }
}

impl fmt::Display for IpConfig {
    /// `dhcp`, `off` or the static form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpConfig::Dhcp => f.write_str("dhcp"),
            IpConfig::Off => f.write_str("off"),
            IpConfig::Static(s) => s.fmt(f),
        }
    }
}

fn bad(reason: &'static str) -> InvalidValue {
    InvalidValue::because(reason, IpConfig::ACCEPTED)
}

/// A required or optional IPv4 field.
fn addr(field: &str, reason: &'static str) -> Result<Option<Ipv4Addr>, InvalidValue> {
    if field.is_empty() {
        return Ok(None);
    }
    field.parse().map(Some).map_err(|_| bad(reason))
}

/// A netmask is contiguous ones then zeros, at least one 1: `255.255.255.0`.
fn is_netmask(mask: Ipv4Addr) -> bool {
    let m = u32::from(mask);
    m != 0 && m.leading_ones() + m.trailing_zeros() == 32
}

/// What the kernel copies into the UTS name: at most 64 bytes; we also keep
/// to the characters a host name can have.
fn is_hostname(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// The kernel's `dev_valid_name()`: under IFNAMSIZ (16) bytes, not `.` or
/// `..`, no `/`, `:` or whitespace; plus no `"` and ASCII only.
fn is_ifname(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b':' | b'"'))
}

impl FromStr for StaticIp {
    type Err = InvalidValue;
    /// `CLIENT:[SERVER]:[GW]:NETMASK[:[HOSTNAME][:[DEVICE][:[AUTOCONF][:DNS0[:DNS1]]]]]`:
    /// fields after NETMASK may be left out; AUTOCONF must be empty, `off`
    /// or `none`; empty DNS fields are skipped.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fields: Vec<&str> = s.split(':').collect();
        let field = |i: usize| fields.get(i).copied().unwrap_or_default();
        if fields.len() < 4 {
            return Err(bad(
                "the static form needs at least CLIENT:SERVER:GW:NETMASK",
            ));
        }
        if fields.len() > 9 {
            return Err(bad("too many fields"));
        }
        let client = match addr(field(0), "bad CLIENT address")? {
            Some(ip) if !(ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast()) => ip,
            Some(_) => return Err(bad("CLIENT must be a unicast address")),
            None => return Err(bad("CLIENT is required in the static form")),
        };
        let server = addr(field(1), "bad SERVER address")?;
        let gateway = addr(field(2), "bad GW address")?;
        let netmask = match addr(
            field(3),
            "NETMASK must be a dotted quad such as 255.255.255.0",
        )? {
            Some(m) if is_netmask(m) => m,
            Some(_) => return Err(bad("NETMASK is not a contiguous mask")),
            None => return Err(bad("NETMASK is required in the static form")),
        };
        let hostname = match field(4) {
            "" => None,
            h if is_hostname(h) => Some(h.to_owned()),
            _ => return Err(bad("bad HOSTNAME")),
        };
        let device = match field(5) {
            "" => None,
            d if is_ifname(d) => Some(d.to_owned()),
            _ => return Err(bad("bad DEVICE name")),
        };
        match field(6) {
            a if a.is_empty()
                || a.eq_ignore_ascii_case("off")
                || a.eq_ignore_ascii_case("none") => {}
            a if ["dhcp", "on", "any", "bootp", "rarp", "both"]
                .iter()
                .any(|w| a.eq_ignore_ascii_case(w)) =>
            {
                return Err(bad(
                    "a static address needs AUTOCONF off or none; for DHCP write ip=dhcp",
                ))
            }
            _ => return Err(bad("bad AUTOCONF")),
        }
        let mut dns = Vec::new();
        for i in 7..fields.len() {
            dns.extend(addr(field(i), "bad DNS address")?);
        }
        Ok(StaticIp {
            client,
            server,
            gateway,
            netmask,
            hostname,
            device,
            dns,
        })
    }
}

impl StaticIp {
    /// The prefix length of the netmask (24 for 255.255.255.0).
    pub fn prefix_len(&self) -> u32 {
        u32::from(self.netmask).leading_ones()
    }
}

impl fmt::Display for StaticIp {
    /// All seven fields, AUTOCONF written `off`, then the DNS servers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn opt<T: fmt::Display>(v: &Option<T>) -> String {
            v.as_ref().map(T::to_string).unwrap_or_default()
        }
        write!(
            f,
            "{}:{}:{}:{}:{}:{}:off",
            self.client,
            opt(&self.server),
            opt(&self.gateway),
            self.netmask,
            opt(&self.hostname),
            opt(&self.device),
        )?;
        self.dns.iter().try_for_each(|d| write!(f, ":{d}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn keywords() {
        for s in ["dhcp", "DHCP", "on", "any"] {
            assert_eq!(s.parse(), Ok(IpConfig::Dhcp), "{s}");
        }
        for s in ["off", "none", "Off"] {
            assert_eq!(s.parse(), Ok(IpConfig::Off), "{s}");
        }
        for s in ["", "bootp", "rarp", "both", "dhcp6", "10.0.0.5", "eth0"] {
            assert!(s.parse::<IpConfig>().is_err(), "{s}");
        }
        assert_eq!(IpConfig::Dhcp.to_string(), "dhcp");
        assert_eq!(IpConfig::Off.to_string(), "off");
    }

    #[test]
    fn static_forms() {
        let full = StaticIp {
            client: ip("10.0.0.5"),
            server: Some(ip("10.0.0.1")),
            gateway: Some(ip("10.0.0.254")),
            netmask: ip("255.255.255.0"),
            hostname: Some("node-1.lab".into()),
            device: Some("eth0".into()),
            dns: vec![ip("10.0.0.2"), ip("10.0.0.3")],
        };
        let minimal = StaticIp {
            client: ip("10.0.0.5"),
            server: None,
            gateway: None,
            netmask: ip("255.255.255.0"),
            hostname: None,
            device: None,
            dns: vec![],
        };
        let cases: &[(&str, &StaticIp, &str)] = &[
            (
                "10.0.0.5:10.0.0.1:10.0.0.254:255.255.255.0:node-1.lab:eth0:off:10.0.0.2:10.0.0.3",
                &full,
                "10.0.0.5:10.0.0.1:10.0.0.254:255.255.255.0:node-1.lab:eth0:off:10.0.0.2:10.0.0.3",
            ),
            (
                "10.0.0.5:10.0.0.1:10.0.0.254:255.255.255.0:node-1.lab:eth0:none:10.0.0.2:10.0.0.3",
                &full,
                "10.0.0.5:10.0.0.1:10.0.0.254:255.255.255.0:node-1.lab:eth0:off:10.0.0.2:10.0.0.3",
            ),
            (
                "10.0.0.5:::255.255.255.0",
                &minimal,
                "10.0.0.5:::255.255.255.0:::off",
            ),
            (
                "10.0.0.5:::255.255.255.0:::",
                &minimal,
                "10.0.0.5:::255.255.255.0:::off",
            ),
            (
                "10.0.0.5:::255.255.255.0:::off",
                &minimal,
                "10.0.0.5:::255.255.255.0:::off",
            ),
            (
                "10.0.0.5:::255.255.255.0:::off::",
                &minimal,
                "10.0.0.5:::255.255.255.0:::off",
            ),
        ];
        for (s, want, shown) in cases {
            let got: StaticIp = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(&&got, want, "{s}");
            assert_eq!(got.to_string(), *shown);
            assert_eq!(shown.parse::<StaticIp>().as_ref(), Ok(*want));
            assert_eq!(s.parse::<IpConfig>(), Ok(IpConfig::Static((*want).clone())));
        }
        let one_dns: StaticIp = "10.0.0.5:::255.255.255.0:::off::1.1.1.1".parse().unwrap();
        assert_eq!(one_dns.dns, vec![ip("1.1.1.1")]);
        assert_eq!(full.prefix_len(), 24);
    }

    #[test]
    fn static_errors() {
        let cases: &[(&str, &str)] = &[
            (
                "10.0.0.5:::255.255.255.0::eth0:dhcp",
                "AUTOCONF off or none",
            ),
            ("10.0.0.5:::255.255.255.0::eth0:on", "AUTOCONF off or none"),
            ("10.0.0.5:::255.255.255.0::eth0:foo", "bad AUTOCONF"),
            (":::255.255.255.0::eth0:off", "CLIENT is required"),
            ("0.0.0.0:::255.255.255.0", "unicast"),
            ("224.0.0.1:::255.255.255.0", "unicast"),
            ("10.0.0.5:::", "NETMASK is required"),
            ("10.0.0.5:::24", "dotted quad"),
            ("10.0.0.5:::255.0.255.0", "contiguous"),
            ("10.0.0.5:::0.0.0.0", "contiguous"),
            ("10.0.0.5::", "at least"),
            ("10.0.0.256:::255.255.255.0", "bad CLIENT"),
            ("10.0.0.5:x::255.255.255.0", "bad SERVER"),
            ("10.0.0.5::x:255.255.255.0", "bad GW"),
            ("10.0.0.5:::255.255.255.0:a_b", "bad HOSTNAME"),
            ("10.0.0.5:::255.255.255.0::a/b", "bad DEVICE"),
            ("10.0.0.5:::255.255.255.0::0123456789abcdef", "bad DEVICE"),
            ("10.0.0.5:::255.255.255.0:::off:x", "bad DNS"),
            (
                "10.0.0.5:::255.255.255.0:::off:1.1.1.1:1.0.0.1:9.9.9.9",
                "too many",
            ),
        ];
        for (s, needle) in cases {
            let e = s.parse::<IpConfig>().unwrap_err();
            assert!(e.to_string().contains(needle), "{s}: {e}");
        }
        assert!(is_netmask(ip("255.255.255.255")));
        assert!(is_netmask(ip("128.0.0.0")));
    }
}
