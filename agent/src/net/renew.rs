//! Keeping a DHCP lease for as long as the deploy runs (RFC 2131 §4.4.5):
//! at T1 ask the server that granted it to extend it (RENEWING, unicast),
//! from T2 ask any server (REBINDING, broadcast); when a server refuses
//! (NAK) or the lease runs out, drop the address and start over with
//! DISCOVER.
//!
//! The timer arithmetic, the states and the requests are pure functions of
//! the lease and the time since it began; [`spawn`] runs them on a thread.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use kernel_cmdline::MacAddr;

use super::dhcp::{Kind, Lease, Request};
use super::dhcp_client::{Client, Extended, BROADCAST};
use super::{apply, Iface, Network, DHCP_TIMEOUT};

/// Option 51's value for a lease that never ends.
pub const INFINITE: u32 = u32::MAX;
/// The lease assumed when an ACK has no lease time (RFC 2131 requires one;
/// busybox's udhcpc assumes an hour too).
const DEFAULT_LEASE_SECS: u32 = 3600;
/// Shorter leases are treated as this long, so a misconfigured server
/// cannot make us renew in a tight loop. dnsmasq's own minimum is 120 s.
const MIN_LEASE_SECS: u32 = 10;
/// RFC 2131 §4.4.5: retransmit after half the time left in the state, "down
/// to a minimum of 60 seconds". For leases short enough that 60 s would
/// leave few or no retransmissions the floor is a sixteenth of the lease,
/// but not under this.
const MIN_RETRANSMIT: Duration = Duration::from_secs(4);
const MAX_RETRANSMIT_FLOOR: Duration = Duration::from_secs(60);
/// After the socket itself fails, wait this long before using it again.
const SOCKET_RETRY: Duration = Duration::from_secs(5);

/// A lease we hold, and when it began (when its REQUEST was sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    pub lease: Lease,
    pub since: Instant,
}

/// The client's state, from the time since the lease began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before T1: nothing to do.
    Bound,
    /// T1 to T2: ask the granting server, unicast.
    Renewing,
    /// T2 to the end of the lease: ask any server, broadcast.
    Rebinding,
    /// The address is no longer ours.
    Expired,
}

/// When a lease is to be renewed, rebound, and when it ends, counted from
/// its start. Always `t1 <= t2 <= expiry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    pub t1: Duration,
    pub t2: Duration,
    pub expiry: Duration,
}

impl Timers {
    /// The timers of a lease; `None` for an infinite one (nothing to renew).
    pub fn of(lease: &Lease) -> Option<Timers> {
        Timers::new(lease.lease_secs, lease.t1_secs, lease.t2_secs)
    }

    /// From options 51, 58 and 59. Missing or inconsistent T1/T2 (not
    /// `T1 <= T2 <= lease`) get the RFC 2131 defaults, 0.5 and 0.875 of
    /// the lease.
    pub fn new(lease: Option<u32>, t1: Option<u32>, t2: Option<u32>) -> Option<Timers> {
        let lease = lease.unwrap_or(DEFAULT_LEASE_SECS);
        if lease == INFINITE {
            return None;
        }
        let lease = lease.max(MIN_LEASE_SECS);
        let expiry = Duration::from_secs(lease.into());
        let t2 = match t2 {
            Some(t2) if t2 <= lease => Duration::from_secs(t2.into()),
            _ => expiry * 7 / 8,
        };
        let t1 = match t1 {
            Some(t1) if Duration::from_secs(t1.into()) <= t2 => Duration::from_secs(t1.into()),
            _ => (expiry / 2).min(t2),
        };
        Some(Timers { t1, t2, expiry })
    }

    pub fn phase(&self, elapsed: Duration) -> Phase {
        if elapsed < self.t1 {
            Phase::Bound
        } else if elapsed < self.t2 {
            Phase::Renewing
        } else if elapsed < self.expiry {
            Phase::Rebinding
        } else {
            Phase::Expired
        }
    }

    /// How long to wait for an answer to a request sent at `elapsed`
    /// before sending it again: half the time left in the state (until T2
    /// when renewing, until the end of the lease when rebinding), at least
    /// the floor, at most the time left. Zero outside those two states.
    pub fn retransmit_wait(&self, elapsed: Duration) -> Duration {
        let end = match self.phase(elapsed) {
            Phase::Renewing => self.t2,
            Phase::Rebinding => self.expiry,
            Phase::Bound | Phase::Expired => return Duration::ZERO,
        };
        let left = end - elapsed;
        let floor = (self.expiry / 16).clamp(MIN_RETRANSMIT, MAX_RETRANSMIT_FLOOR);
        (left / 2).max(floor).min(left)
    }
}

impl Phase {
    /// The DHCPREQUEST to send in this state and where to (RFC 2131
    /// §4.3.2): `ciaddr` is our address, no requested-IP or server-id
    /// option; unicast to the lease's server when renewing (broadcast if
    /// it named none), broadcast when rebinding. `None` when there is
    /// nothing to send. `secs` is left 0 for the caller.
    pub fn request(self, lease: &Lease, mac: MacAddr, xid: u32) -> Option<(Request, SocketAddrV4)> {
        let to = match self {
            Phase::Renewing => lease
                .server
                .map_or(BROADCAST, |s| SocketAddrV4::new(s, BROADCAST.port())),
            Phase::Rebinding => BROADCAST,
            Phase::Bound | Phase::Expired => return None,
        };
        let req = Request {
            kind: Kind::Request,
            xid,
            mac,
            secs: 0,
            ciaddr: lease.address,
            selecting: None,
        };
        Some((req, to))
    }
}

/// Keep `bound` (already applied to `iface`) alive on a background thread
/// that owns `sock`, for the rest of the agent's life. Logs and carries on
/// if the thread cannot be started: the deploy may well finish within the
/// lease.
pub fn spawn(sock: UdpSocket, iface: Iface, bound: Bound) {
    if Timers::of(&bound.lease).is_none() {
        log::debug!("infinite DHCP lease on {}: no renewal", bound.lease.address);
        return;
    }
    let started = std::thread::Builder::new()
        .name("dhcp-renew".into())
        .spawn(move || maintain(&sock, &iface, bound));
    if let Err(e) = started {
        log::warn!("cannot start DHCP lease renewal: {e}; the lease will not be renewed");
    }
}

fn maintain(sock: &UdpSocket, iface: &Iface, mut bound: Bound) {
    while let Some(timers) = Timers::of(&bound.lease) {
        let client = Client {
            sock,
            mac: iface.mac,
            deadline: bound.since + timers.expiry,
        };
        let address = bound.lease.address;
        match client.extend(&bound, &timers) {
            Ok(Extended::Acked(new)) => {
                let (old, lease) = (&bound.lease, &new.lease);
                if (lease.address, lease.netmask, lease.gateway, &lease.dns)
                    != (old.address, old.netmask, old.gateway, &old.dns)
                {
                    let net = Network::leased(iface.clone(), lease);
                    log::warn!(
                        "DHCP renewal changed the lease, reconfiguring {}: {} (was {})",
                        iface.name,
                        net.describe(),
                        Network::leased(iface.clone(), old).describe()
                    );
                    if let Err(e) = apply(&net) {
                        log::error!("reconfiguring {} after DHCP renewal: {e:#}", iface.name);
                    }
                }
                log::info!("{}", renewed_line(&new.lease));
                bound = new;
            }
            Ok(Extended::Refused(server)) => {
                log::error!(
                    "DHCP server {server} refused to extend the lease on {address} (NAK): dropping the address, starting over with DISCOVER"
                );
                bound = rediscover(sock, iface, address);
            }
            Ok(Extended::Expired) => {
                log::error!(
                    "DHCP lease on {address} expired with no answer from any server: dropping the address, starting over with DISCOVER"
                );
                bound = rediscover(sock, iface, address);
            }
            Err(e) => {
                log::error!("DHCP lease renewal on {}: {e:#}", iface.name);
                std::thread::sleep(SOCKET_RETRY);
            }
        }
    }
    log::info!(
        "DHCP lease on {} is now infinite: no more renewals",
        bound.lease.address
    );
}

/// The console line for a renewal.
fn renewed_line(lease: &Lease) -> String {
    let secs = match lease.lease_secs {
        Some(INFINITE) => "ever".to_string(),
        Some(s) => format!("{s} s"),
        None => format!("{DEFAULT_LEASE_SECS} s (assumed)"),
    };
    let from = lease
        .server
        .map_or_else(|| "an unnamed server".to_string(), |s| s.to_string());
    format!("lease renewed: {} for {secs} from {from}", lease.address)
}

/// Give up the address and obtain a new lease, however long it takes:
/// without one the deploy cannot go on anyway.
fn rediscover(sock: &UdpSocket, iface: &Iface, address: Ipv4Addr) -> Bound {
    if let Err(e) = super::iface::clear_address(&iface.name) {
        log::warn!("removing {address} from {}: {e}", iface.name);
    }
    loop {
        let client = Client {
            sock,
            mac: iface.mac,
            deadline: Instant::now() + DHCP_TIMEOUT,
        };
        let applied = client.obtain().and_then(|b| {
            let net = Network::leased(iface.clone(), &b.lease);
            apply(&net)?;
            Ok((b, net))
        });
        match applied {
            Ok((b, net)) => {
                log::info!("new {}", net.describe());
                return b;
            }
            Err(e) => {
                log::error!("{e:#}; still trying");
                std::thread::sleep(SOCKET_RETRY);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    const fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }
    const fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn lease(server: Option<Ipv4Addr>) -> Lease {
        Lease {
            address: Ipv4Addr::new(10, 77, 0, 100),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            gateway: Some(Ipv4Addr::new(10, 77, 0, 1)),
            dns: vec![],
            server,
            next_server: None,
            lease_secs: Some(120),
            t1_secs: None,
            t2_secs: None,
            hostname: None,
        }
    }

    #[test]
    fn timers_from_lease_options() {
        type Opts = (Option<u32>, Option<u32>, Option<u32>);
        let t = |t1, t2, expiry| Some(Timers { t1, t2, expiry });
        let table: &[(Opts, Option<Timers>)] = &[
            // Defaults: 0.5 and 0.875 of the lease.
            ((Some(120), None, None), t(s(60), s(105), s(120))),
            ((Some(86400), None, None), t(s(43200), s(75600), s(86400))),
            // Odd seconds keep sub-second precision.
            ((Some(121), None, None), t(ms(60500), ms(105875), s(121))),
            // The server's T1/T2 when consistent.
            ((Some(120), Some(10), Some(20)), t(s(10), s(20), s(120))),
            ((Some(120), Some(120), Some(120)), t(s(120), s(120), s(120))),
            ((Some(120), Some(0), Some(0)), t(s(0), s(0), s(120))),
            // Only one of them given.
            ((Some(120), Some(30), None), t(s(30), s(105), s(120))),
            ((Some(120), None, Some(40)), t(s(40), s(40), s(120))),
            ((Some(120), None, Some(100)), t(s(60), s(100), s(120))),
            // Inconsistent ones are replaced by the defaults.
            ((Some(120), Some(50), Some(200)), t(s(50), s(105), s(120))),
            ((Some(120), Some(110), Some(100)), t(s(60), s(100), s(120))),
            ((Some(120), Some(200), None), t(s(60), s(105), s(120))),
            // Infinite: nothing to renew.
            ((Some(INFINITE), None, None), None),
            ((Some(INFINITE), Some(10), Some(20)), None),
            // No lease time: an hour assumed.
            ((None, None, None), t(s(1800), s(3150), s(3600))),
            // Absurdly short leases are stretched to the minimum.
            ((Some(0), None, None), t(s(5), ms(8750), s(10))),
            ((Some(1), Some(1), Some(1)), t(s(1), s(1), s(10))),
        ];
        for ((l, t1, t2), want) in table {
            assert_eq!(
                Timers::new(*l, *t1, *t2),
                *want,
                "lease {l:?} t1 {t1:?} t2 {t2:?}"
            );
        }
    }

    #[test]
    fn timers_of_a_lease_use_its_options() {
        let mut l = lease(None);
        l.t1_secs = Some(10);
        l.t2_secs = Some(20);
        assert_eq!(Timers::of(&l), Timers::new(Some(120), Some(10), Some(20)));
        l.lease_secs = Some(INFINITE);
        assert_eq!(Timers::of(&l), None);
    }

    #[test]
    fn phases() {
        let t = Timers::new(Some(120), None, None).unwrap();
        let table = [
            (s(0), Phase::Bound),
            (ms(59_999), Phase::Bound),
            (s(60), Phase::Renewing),
            (ms(104_999), Phase::Renewing),
            (s(105), Phase::Rebinding),
            (ms(119_999), Phase::Rebinding),
            (s(120), Phase::Expired),
            (s(100_000), Phase::Expired),
        ];
        for (elapsed, want) in table {
            assert_eq!(t.phase(elapsed), want, "at {elapsed:?}");
        }
        // T1 = T2: straight to rebinding.
        let t = Timers::new(Some(120), Some(30), Some(30)).unwrap();
        assert_eq!(t.phase(s(30)), Phase::Rebinding);
    }

    #[test]
    fn retransmit_waits() {
        let day = Timers::new(Some(86400), None, None).unwrap();
        let two_min = Timers::new(Some(120), None, None).unwrap();
        let test = Timers::new(Some(120), Some(10), Some(20)).unwrap();
        let table = [
            // A day: half the time to T2, down to 60 s, never past T2.
            (day, s(43200), s(16200)),
            (day, s(75000), s(300)),
            (day, s(75500), s(60)),
            (day, s(75590), s(10)),
            // ... and half the time to the end when rebinding.
            (day, s(75600), s(5400)),
            (day, s(86350), s(50)),
            // Two minutes: floor 7.5 s.
            (two_min, s(60), ms(22500)),
            (two_min, ms(82500), ms(11250)),
            (two_min, ms(93750), ms(7500)),
            (two_min, ms(101250), ms(3750)),
            (two_min, s(105), ms(7500)),
            (two_min, ms(112500), ms(7500)),
            (two_min, s(119), s(1)),
            // T1 10 s, T2 20 s.
            (test, s(10), ms(7500)),
            (test, ms(17500), ms(2500)),
            (test, s(20), s(50)),
            // Nothing to send outside renewing and rebinding.
            (test, s(5), s(0)),
            (test, s(120), s(0)),
        ];
        for (t, elapsed, want) in table {
            assert_eq!(t.retransmit_wait(elapsed), want, "{t:?} at {elapsed:?}");
        }
    }

    /// Following the waits from T1 with no answer: requests go out at T1,
    /// keep to the state they are sent in, switch to rebinding at T2 and
    /// stop at the end of the lease, each wait at least the floor unless
    /// cut by a state change.
    #[test]
    fn retransmission_schedule_without_answers() {
        for (lease, t1, t2) in [
            (120, None, None),
            (120, Some(10), Some(20)),
            (3600, None, None),
            (86400, None, None),
        ] {
            let t = Timers::new(Some(lease), t1, t2).unwrap();
            let mut at = t.t1;
            let mut sends = vec![];
            while matches!(t.phase(at), Phase::Renewing | Phase::Rebinding) {
                let wait = t.retransmit_wait(at);
                assert!(!wait.is_zero(), "lease {lease}: zero wait at {at:?}");
                sends.push((at, t.phase(at)));
                at += wait;
            }
            assert_eq!(at, t.expiry, "lease {lease}: the last wait ends the lease");
            assert_eq!(sends[0], (t.t1, Phase::Renewing));
            assert!(
                sends.contains(&(t.t2, Phase::Rebinding)),
                "lease {lease}: {sends:?}"
            );
            assert!(sends.len() < 30, "lease {lease}: {} requests", sends.len());
        }
    }

    #[test]
    fn renewal_requests() {
        let server = Ipv4Addr::new(10, 77, 0, 1);
        let to_server = SocketAddrV4::new(server, 67);
        let table = [
            (Phase::Bound, Some(server), None),
            (Phase::Renewing, Some(server), Some(to_server)),
            (Phase::Renewing, None, Some(BROADCAST)),
            (Phase::Rebinding, Some(server), Some(BROADCAST)),
            (Phase::Expired, Some(server), None),
        ];
        for (phase, server, want) in table {
            let l = lease(server);
            let got = phase.request(&l, MAC, 0x1234_5678);
            assert_eq!(got.as_ref().map(|(_, to)| *to), want, "{phase:?}");
            let Some((req, _)) = got else { continue };
            assert_eq!(
                (req.kind, req.xid, req.mac),
                (Kind::Request, 0x1234_5678, MAC)
            );
            let p = req.encode();
            assert_eq!(&p[4..8], &0x1234_5678u32.to_be_bytes());
            // No broadcast flag; ciaddr is ours; yiaddr, siaddr, giaddr 0.
            assert_eq!(&p[10..12], &[0, 0], "{phase:?}");
            assert_eq!(&p[12..16], &[10, 77, 0, 100], "{phase:?}");
            assert_eq!(&p[16..28], &[0; 12]);
            assert_eq!(&p[28..34], &MAC.0);
            // Options: REQUEST, and neither requested-IP nor server-id.
            let opts = options(&p);
            assert_eq!(opts[0], (53, vec![3]));
            let codes: Vec<u8> = opts.iter().map(|(c, _)| *c).collect();
            assert!(!codes.contains(&50) && !codes.contains(&54), "{codes:?}");
            // Asks for T1 and T2 among the parameters.
            let params = &opts.iter().find(|(c, _)| *c == 55).unwrap().1;
            assert!(params.contains(&58) && params.contains(&59));
        }
    }

    fn options(p: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = vec![];
        let mut i = 240;
        while i < p.len() && p[i] != 255 {
            if p[i] == 0 {
                i += 1;
                continue;
            }
            let len = p[i + 1] as usize;
            out.push((p[i], p[i + 2..i + 2 + len].to_vec()));
            i += 2 + len;
        }
        out
    }

    #[test]
    fn renewal_console_line() {
        let l = lease(Some(Ipv4Addr::new(10, 77, 0, 1)));
        assert_eq!(
            renewed_line(&l),
            "lease renewed: 10.77.0.100 for 120 s from 10.77.0.1"
        );
        let mut l = lease(None);
        l.lease_secs = None;
        assert_eq!(
            renewed_line(&l),
            "lease renewed: 10.77.0.100 for 3600 s (assumed) from an unnamed server"
        );
    }
}
