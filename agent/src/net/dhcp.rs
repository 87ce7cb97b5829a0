//! DHCPv4 messages (RFC 2131/2132): encode what the client sends, decode
//! what servers answer. Pure and bounds-checked: replies come from the
//! network and may be anything.

use std::net::Ipv4Addr;

use kernel_cmdline::MacAddr;

pub const MAGIC: [u8; 4] = [99, 130, 83, 99];
const FIXED_LEN: usize = 236;
const BROADCAST: u16 = 0x8000;

pub mod opt {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOSTNAME: u8 = 12;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAM_LIST: u8 = 55;
    pub const MAX_SIZE: u8 = 57;
    pub const RENEWAL_TIME: u8 = 58;
    pub const REBINDING_TIME: u8 = 59;
    pub const VENDOR_CLASS: u8 = 60;
    pub const CLIENT_ID: u8 = 61;
    pub const END: u8 = 255;
}

/// DHCP message types (option 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Discover = 1,
    Offer = 2,
    Request = 3,
    Decline = 4,
    Ack = 5,
    Nak = 6,
    Release = 7,
    Inform = 8,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Discover,
            2 => Kind::Offer,
            3 => Kind::Request,
            4 => Kind::Decline,
            5 => Kind::Ack,
            6 => Kind::Nak,
            7 => Kind::Release,
            8 => Kind::Inform,
            _ => return None,
        })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("DHCP packet too short ({0} bytes, need at least 240)")]
    TooShort(usize),
    #[error("not a BOOTREPLY (op {0})")]
    NotReply(u8),
    #[error("bad DHCP magic cookie")]
    BadMagic,
    #[error("option {code} runs past the end of the packet")]
    Truncated { code: u8 },
    #[error("no DHCP message type option")]
    NoType,
    #[error("unknown DHCP message type {0}")]
    BadType(u8),
}

/// A decoded server reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub kind: Kind,
    pub xid: u32,
    pub chaddr: [u8; 6],
    pub yiaddr: Ipv4Addr,
    /// `siaddr`: the "next server" (TFTP), often the deploy server.
    pub siaddr: Ipv4Addr,
    pub options: Vec<(u8, Vec<u8>)>,
}

impl Reply {
    pub fn option(&self, code: u8) -> Option<&[u8]> {
        self.options
            .iter()
            .rev()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_slice())
    }

    fn addr(&self, code: u8) -> Option<Ipv4Addr> {
        let v = self.option(code)?;
        let b: [u8; 4] = v.get(..4)?.try_into().ok()?;
        Some(Ipv4Addr::from(b))
    }

    fn addrs(&self, code: u8) -> Vec<Ipv4Addr> {
        self.option(code)
            .map(|v| {
                v.chunks_exact(4)
                    .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn secs(&self, code: u8) -> Option<u32> {
        let b: [u8; 4] = self.option(code)?.get(..4)?.try_into().ok()?;
        Some(u32::from_be_bytes(b))
    }

    pub fn server_id(&self) -> Option<Ipv4Addr> {
        self.addr(opt::SERVER_ID)
    }
}

/// What an ACK grants, in the form the interface is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub server: Option<Ipv4Addr>,
    pub next_server: Option<Ipv4Addr>,
    /// Option 51; `u32::MAX` is an infinite lease.
    pub lease_secs: Option<u32>,
    /// Options 58 and 59 (T1, T2): when to renew and rebind, in seconds
    /// from the start of the lease.
    pub t1_secs: Option<u32>,
    pub t2_secs: Option<u32>,
    pub hostname: Option<String>,
}

impl Lease {
    pub fn from_ack(ack: &Reply) -> Lease {
        let netmask = ack
            .addr(opt::SUBNET_MASK)
            .unwrap_or_else(|| classful_mask(ack.yiaddr));
        Lease {
            address: ack.yiaddr,
            netmask,
            gateway: ack.addrs(opt::ROUTER).into_iter().next(),
            dns: ack.addrs(opt::DNS),
            server: ack.server_id(),
            next_server: (!ack.siaddr.is_unspecified()).then_some(ack.siaddr),
            lease_secs: ack.secs(opt::LEASE_TIME),
            t1_secs: ack.secs(opt::RENEWAL_TIME),
            t2_secs: ack.secs(opt::REBINDING_TIME),
            hostname: ack
                .option(opt::HOSTNAME)
                .map(|v| String::from_utf8_lossy(v).into_owned()),
        }
    }

    /// The lease an ACK to a renewal (RENEWING or REBINDING) grants: the
    /// ACK's values, but what it leaves out is kept from `self` rather than
    /// defaulted (a classful mask or no router would reconfigure the
    /// interface wrongly in the middle of a deploy).
    pub fn renewed_by(&self, ack: &Reply) -> Lease {
        let mut new = Lease::from_ack(ack);
        if ack.yiaddr.is_unspecified() {
            new.address = self.address;
        }
        if ack.option(opt::SUBNET_MASK).is_none() {
            new.netmask = self.netmask;
        }
        if ack.option(opt::ROUTER).is_none() {
            new.gateway = self.gateway;
        }
        if ack.option(opt::DNS).is_none() {
            new.dns.clone_from(&self.dns);
        }
        new.server = new.server.or(self.server);
        new.next_server = new.next_server.or(self.next_server);
        new.hostname = new.hostname.or_else(|| self.hostname.clone());
        new
    }

    pub fn prefix_len(&self) -> u32 {
        u32::from(self.netmask).count_ones()
    }
}

/// RFC 950 default when a server omits option 1.
fn classful_mask(a: Ipv4Addr) -> Ipv4Addr {
    match a.octets()[0] {
        0..=127 => Ipv4Addr::new(255, 0, 0, 0),
        128..=191 => Ipv4Addr::new(255, 255, 0, 0),
        _ => Ipv4Addr::new(255, 255, 255, 0),
    }
}

/// A client message: DISCOVER, REQUEST for an offered address
/// (SELECTING), or REQUEST to extend a lease (RENEWING, REBINDING).
pub struct Request {
    pub kind: Kind,
    pub xid: u32,
    pub mac: MacAddr,
    pub secs: u16,
    /// `ciaddr`: our address while we hold a lease (RENEWING, REBINDING),
    /// else unspecified.
    pub ciaddr: Ipv4Addr,
    /// For REQUEST in SELECTING: (offered address, server identifier).
    pub selecting: Option<(Ipv4Addr, Ipv4Addr)>,
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        let mut p = vec![0u8; FIXED_LEN];
        p[0] = 1; // BOOTREQUEST
        p[1] = 1; // Ethernet
        p[2] = 6; // hardware address length
        p[4..8].copy_from_slice(&self.xid.to_be_bytes());
        p[8..10].copy_from_slice(&self.secs.to_be_bytes());
        if self.ciaddr.is_unspecified() {
            // We have no address yet, so ask for broadcast replies: the
            // kernel would drop a unicast to an address it does not own.
            p[10..12].copy_from_slice(&BROADCAST.to_be_bytes());
        } else {
            // Bound: the server answers unicast to ciaddr (RFC 2131 §4.1).
            p[12..16].copy_from_slice(&self.ciaddr.octets());
        }
        p[28..34].copy_from_slice(&self.mac.0);
        p.extend_from_slice(&MAGIC);
        let mut put = |code: u8, val: &[u8]| {
            p.push(code);
            p.push(val.len() as u8);
            p.extend_from_slice(val);
        };
        put(opt::MESSAGE_TYPE, &[self.kind as u8]);
        let mut client_id = vec![1u8];
        client_id.extend_from_slice(&self.mac.0);
        put(opt::CLIENT_ID, &client_id);
        if let Some((addr, server)) = self.selecting {
            put(opt::REQUESTED_IP, &addr.octets());
            put(opt::SERVER_ID, &server.octets());
        }
        put(opt::MAX_SIZE, &1500u16.to_be_bytes());
        put(opt::VENDOR_CLASS, b"drover");
        put(
            opt::PARAM_LIST,
            &[
                opt::SUBNET_MASK,
                opt::ROUTER,
                opt::DNS,
                opt::HOSTNAME,
                opt::LEASE_TIME,
                opt::SERVER_ID,
                opt::RENEWAL_TIME,
                opt::REBINDING_TIME,
            ],
        );
        p.push(opt::END);
        // Some old relays drop BOOTP packets shorter than 300 bytes.
        if p.len() < 300 {
            p.resize(300, 0);
        }
        p
    }
}

/// Decode a server reply. Any malformation is an error, never a panic.
pub fn decode(b: &[u8]) -> Result<Reply, DecodeError> {
    if b.len() < FIXED_LEN + 4 {
        return Err(DecodeError::TooShort(b.len()));
    }
    if b[0] != 2 {
        return Err(DecodeError::NotReply(b[0]));
    }
    if b[FIXED_LEN..FIXED_LEN + 4] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let ip = |o: usize| Ipv4Addr::new(b[o], b[o + 1], b[o + 2], b[o + 3]);
    let mut options = Vec::new();
    let mut i = FIXED_LEN + 4;
    while i < b.len() {
        let code = b[i];
        i += 1;
        match code {
            opt::PAD => continue,
            opt::END => break,
            _ => {
                let len = *b.get(i).ok_or(DecodeError::Truncated { code })? as usize;
                let val = b
                    .get(i + 1..i + 1 + len)
                    .ok_or(DecodeError::Truncated { code })?;
                options.push((code, val.to_vec()));
                i += 1 + len;
            }
        }
    }
    let t = options
        .iter()
        .rev()
        .find(|(c, _)| *c == opt::MESSAGE_TYPE)
        .and_then(|(_, v)| v.first().copied())
        .ok_or(DecodeError::NoType)?;
    let mut chaddr = [0u8; 6];
    chaddr.copy_from_slice(&b[28..34]);
    Ok(Reply {
        kind: Kind::from_u8(t).ok_or(DecodeError::BadType(t))?,
        xid: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        chaddr,
        yiaddr: ip(16),
        siaddr: ip(20),
        options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]);

    /// Build a server reply the way dnsmasq lays it out.
    fn reply(kind: Kind, opts: &[(u8, &[u8])]) -> Vec<u8> {
        let mut p = vec![0u8; FIXED_LEN];
        p[0] = 2;
        p[1] = 1;
        p[2] = 6;
        p[4..8].copy_from_slice(&0xdead_beefu32.to_be_bytes());
        p[16..20].copy_from_slice(&[10, 0, 2, 15]);
        p[20..24].copy_from_slice(&[10, 0, 2, 2]);
        p[28..34].copy_from_slice(&MAC.0);
        p.extend_from_slice(&MAGIC);
        p.extend_from_slice(&[opt::MESSAGE_TYPE, 1, kind as u8]);
        for (c, v) in opts {
            p.push(*c);
            p.push(v.len() as u8);
            p.extend_from_slice(v);
        }
        p.push(opt::END);
        p
    }

    #[test]
    fn discover_layout() {
        let p = Request {
            kind: Kind::Discover,
            xid: 7,
            mac: MAC,
            secs: 3,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            selecting: None,
        }
        .encode();
        assert_eq!(p.len(), 300);
        assert_eq!(&p[..4], &[1, 1, 6, 0]);
        assert_eq!(&p[4..8], &7u32.to_be_bytes());
        assert_eq!(&p[8..10], &[0, 3]);
        assert_eq!(&p[10..12], &[0x80, 0]);
        assert_eq!(&p[28..34], &MAC.0);
        assert_eq!(&p[236..240], &MAGIC);
        assert_eq!(&p[240..243], &[opt::MESSAGE_TYPE, 1, 1]);
    }

    #[test]
    fn request_carries_selection() {
        let p = Request {
            kind: Kind::Request,
            xid: 7,
            mac: MAC,
            secs: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            selecting: Some((Ipv4Addr::new(10, 0, 2, 15), Ipv4Addr::new(10, 0, 2, 2))),
        }
        .encode();
        let s = &p[240..];
        let find = |code: u8| {
            s.windows(6)
                .find(|w| w[0] == code && w[1] == 4)
                .map(|w| w[2..6].to_vec())
        };
        assert_eq!(find(opt::REQUESTED_IP).unwrap(), [10, 0, 2, 15]);
        assert_eq!(find(opt::SERVER_ID).unwrap(), [10, 0, 2, 2]);
    }

    #[test]
    fn ack_becomes_lease() {
        let b = reply(
            Kind::Ack,
            &[
                (opt::SUBNET_MASK, &[255, 255, 255, 0]),
                (opt::ROUTER, &[10, 0, 2, 2, 10, 0, 2, 9]),
                (opt::DNS, &[10, 0, 2, 3]),
                (opt::SERVER_ID, &[10, 0, 2, 2]),
                (opt::LEASE_TIME, &86400u32.to_be_bytes()),
                (opt::RENEWAL_TIME, &40000u32.to_be_bytes()),
                (opt::REBINDING_TIME, &70000u32.to_be_bytes()),
                (opt::HOSTNAME, b"node1"),
            ],
        );
        let r = decode(&b).unwrap();
        assert_eq!(r.kind, Kind::Ack);
        assert_eq!(r.xid, 0xdead_beef);
        assert_eq!(r.chaddr, MAC.0);
        let l = Lease::from_ack(&r);
        assert_eq!(l.address, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(l.prefix_len(), 24);
        assert_eq!(l.gateway, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(l.dns, [Ipv4Addr::new(10, 0, 2, 3)]);
        assert_eq!(l.server, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(l.lease_secs, Some(86400));
        assert_eq!((l.t1_secs, l.t2_secs), (Some(40000), Some(70000)));
        assert_eq!(l.hostname.as_deref(), Some("node1"));
    }

    #[test]
    fn renewal_ack_keeps_what_it_leaves_out() {
        let full = Lease::from_ack(
            &decode(&reply(
                Kind::Ack,
                &[
                    (opt::SUBNET_MASK, &[255, 255, 255, 128]),
                    (opt::ROUTER, &[10, 0, 2, 2]),
                    (opt::DNS, &[10, 0, 2, 3]),
                    (opt::SERVER_ID, &[10, 0, 2, 2]),
                    (opt::LEASE_TIME, &120u32.to_be_bytes()),
                ],
            ))
            .unwrap(),
        );
        // (options of the renewal ACK, what the renewed lease must be)
        type Options<'a> = Vec<(u8, &'a [u8])>;
        let table: Vec<(Options, Lease)> = vec![
            // Only a lease time: all else kept.
            (
                vec![(opt::LEASE_TIME, &[0, 0, 2, 88])],
                Lease {
                    lease_secs: Some(600),
                    ..full.clone()
                },
            ),
            // New values win; T1/T2 are the ACK's (none here).
            (
                vec![
                    (opt::SUBNET_MASK, &[255, 255, 0, 0]),
                    (opt::ROUTER, &[10, 0, 2, 9]),
                    (opt::SERVER_ID, &[10, 0, 2, 9]),
                    (opt::LEASE_TIME, &[0, 0, 0, 60]),
                    (opt::RENEWAL_TIME, &[0, 0, 0, 20]),
                ],
                Lease {
                    netmask: Ipv4Addr::new(255, 255, 0, 0),
                    gateway: Some(Ipv4Addr::new(10, 0, 2, 9)),
                    server: Some(Ipv4Addr::new(10, 0, 2, 9)),
                    lease_secs: Some(60),
                    t1_secs: Some(20),
                    ..full.clone()
                },
            ),
        ];
        for (opts, want) in table {
            let ack = decode(&reply(Kind::Ack, &opts)).unwrap();
            assert_eq!(full.renewed_by(&ack), want, "{opts:?}");
        }
        // A new address is taken; none (yiaddr 0) keeps ours.
        let mut b = reply(Kind::Ack, &[]);
        b[16..20].copy_from_slice(&[10, 0, 2, 16]);
        let ack = decode(&b).unwrap();
        assert_eq!(full.renewed_by(&ack).address, Ipv4Addr::new(10, 0, 2, 16));
        b[16..20].copy_from_slice(&[0; 4]);
        let ack = decode(&b).unwrap();
        assert_eq!(full.renewed_by(&ack).address, full.address);
    }

    #[test]
    fn bound_requests_carry_ciaddr_and_no_broadcast_flag() {
        for (ciaddr, flags, ci) in [
            (Ipv4Addr::UNSPECIFIED, [0x80, 0], [0; 4]),
            (Ipv4Addr::new(10, 0, 2, 15), [0, 0], [10, 0, 2, 15]),
        ] {
            let p = Request {
                kind: Kind::Request,
                xid: 7,
                mac: MAC,
                secs: 0,
                ciaddr,
                selecting: None,
            }
            .encode();
            assert_eq!(&p[10..12], &flags);
            assert_eq!(&p[12..16], &ci);
        }
    }

    #[test]
    fn malformed_replies_are_errors() {
        assert_eq!(decode(&[2; 10]), Err(DecodeError::TooShort(10)));
        let mut b = reply(Kind::Offer, &[]);
        b[0] = 1;
        assert_eq!(decode(&b), Err(DecodeError::NotReply(1)));
        let mut b = reply(Kind::Offer, &[]);
        b[236] = 0;
        assert_eq!(decode(&b), Err(DecodeError::BadMagic));
        let mut b = reply(Kind::Offer, &[]);
        b.pop();
        b.extend_from_slice(&[opt::DNS, 200, 1, 2]);
        assert_eq!(decode(&b), Err(DecodeError::Truncated { code: opt::DNS }));
        let mut b = reply(Kind::Offer, &[]);
        b[242] = 99;
        assert_eq!(decode(&b), Err(DecodeError::BadType(99)));
        // A short mask option is ignored rather than trusted.
        let r = decode(&reply(Kind::Ack, &[(opt::SUBNET_MASK, &[255])])).unwrap();
        assert_eq!(Lease::from_ack(&r).netmask, Ipv4Addr::new(255, 0, 0, 0));
    }

    proptest! {
        #[test]
        fn decode_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut b = reply(Kind::Offer, &[]);
            b.truncate(240);
            b.extend_from_slice(&tail);
            if let Ok(r) = decode(&b) { let _ = Lease::from_ack(&r); }
            let _ = decode(&tail);
        }
    }
}
