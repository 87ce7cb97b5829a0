//! The DHCP exchanges over a socket: obtaining a lease (DISCOVER → OFFER →
//! REQUEST → ACK, retransmission backoff, an overall deadline) and
//! extending one (RENEWING/REBINDING REQUEST → ACK or NAK, RFC 2131 §4.4.5).
//!
//! One socket serves both: port 68 on the wildcard address, bound to the
//! interface. Before we have an address it sends and receives broadcasts;
//! once bound, the kernel gives it our address as the source of unicasts
//! to the server, and delivers the server's unicast replies to it.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kernel_cmdline::MacAddr;

use super::dhcp::{self, Kind, Request};
use super::renew::{Bound, Phase, Timers};

/// Retransmission timeouts (RFC 2131 §4.1 suggests 4 s doubling; a deploy
/// network is local, so start faster), capped at the last value.
const BACKOFF: &[u64] = &[1, 2, 4, 8];

/// Where requests go while we have no lease.
pub const BROADCAST: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);

pub struct Client<'a> {
    pub sock: &'a UdpSocket,
    pub mac: MacAddr,
    pub deadline: Instant,
}

/// How an attempt to extend a lease ended.
#[derive(Debug)]
pub enum Extended {
    /// ACK: the lease as extended (possibly with other values).
    Acked(Bound),
    /// NAK from this server: the address is no longer ours.
    Refused(Ipv4Addr),
    /// No server answered before the lease ran out.
    Expired,
}

impl Client<'_> {
    /// Run the exchange until an ACK or the deadline. A NAK restarts it.
    pub fn obtain(&self) -> Result<Bound> {
        let started = Instant::now();
        let mut attempt = 0usize;
        let xid = transaction_id(self.mac);
        loop {
            let wait = Duration::from_secs(BACKOFF[attempt.min(BACKOFF.len() - 1)]);
            attempt += 1;
            let discover = Request {
                kind: Kind::Discover,
                xid: xid.wrapping_add(attempt as u32),
                mac: self.mac,
                secs: secs_since(started),
                ciaddr: Ipv4Addr::UNSPECIFIED,
                selecting: None,
            };
            let xid = discover.xid;
            self.send(&discover, BROADCAST)?;
            let Some(offer) = self.receive(xid, &[Kind::Offer], wait)? else {
                self.check_deadline()?;
                log::debug!("no DHCP offer after {}s, retrying", wait.as_secs());
                continue;
            };
            let server = offer.server_id().unwrap_or(offer.siaddr);
            log::debug!("DHCP offer {} from {server}", offer.yiaddr);
            // Lease times count from the REQUEST (RFC 2131 §4.4.1).
            let since = Instant::now();
            let request = Request {
                kind: Kind::Request,
                selecting: Some((offer.yiaddr, server)),
                ..discover
            };
            self.send(&request, BROADCAST)?;
            match self.receive(xid, &[Kind::Ack, Kind::Nak], wait)? {
                Some(r) if r.kind == Kind::Ack => {
                    return Ok(Bound {
                        lease: dhcp::Lease::from_ack(&r),
                        since,
                    })
                }
                Some(_) => log::warn!(
                    "DHCP server {server} refused {} (NAK), starting over",
                    offer.yiaddr
                ),
                None => log::debug!("no DHCP ack after {}s, starting over", wait.as_secs()),
            }
            self.check_deadline()?;
        }
    }

    /// Extend `bound` (whose timers are `timers`): wait for T1, then ask
    /// its server (RENEWING), from T2 any server (REBINDING), until an ACK,
    /// a NAK, or the end of the lease. Only the socket failing is an error.
    pub fn extend(&self, bound: &Bound, timers: &Timers) -> Result<Extended> {
        let xid = transaction_id(self.mac);
        let mut started = None;
        let mut rebinding_said = false;
        loop {
            let elapsed = bound.since.elapsed();
            let phase = timers.phase(elapsed);
            let Some((req, to)) = phase.request(&bound.lease, self.mac, xid) else {
                match phase {
                    Phase::Bound => {
                        std::thread::sleep(timers.t1.saturating_sub(elapsed));
                        continue;
                    }
                    _ => return Ok(Extended::Expired),
                }
            };
            if phase == Phase::Rebinding && !rebinding_said {
                rebinding_said = true;
                let asked = bound
                    .lease
                    .server
                    .map_or_else(|| "the DHCP server".into(), |s| format!("DHCP server {s}"));
                log::warn!(
                    "no answer from {asked} since T1: asking any server to extend the lease on {} (rebinding)",
                    bound.lease.address
                );
            }
            let req = Request {
                secs: secs_since(*started.get_or_insert_with(Instant::now)),
                ..req
            };
            let sent = Instant::now();
            // A failed send (no route to the server, say) is one more
            // unanswered attempt: the next one may go another way.
            if let Err(e) = self.send(&req, to) {
                log::debug!("{e:#}");
            }
            let wait = timers.retransmit_wait(elapsed);
            match self.receive(xid, &[Kind::Ack, Kind::Nak], wait)? {
                Some(r) if r.kind == Kind::Ack => {
                    return Ok(Extended::Acked(Bound {
                        lease: bound.lease.renewed_by(&r),
                        since: sent,
                    }))
                }
                Some(r) => return Ok(Extended::Refused(r.server_id().unwrap_or(*to.ip()))),
                None => log::debug!(
                    "no DHCP answer to {phase:?} after {:.1}s",
                    wait.as_secs_f64()
                ),
            }
        }
    }

    fn check_deadline(&self) -> Result<()> {
        if Instant::now() >= self.deadline {
            bail!("no DHCP lease: no server answered (is a DHCP server on this network segment?)");
        }
        Ok(())
    }

    fn send(&self, req: &Request, to: SocketAddrV4) -> Result<()> {
        self.sock
            .send_to(&req.encode(), to)
            .with_context(|| format!("sending DHCP request to {to}"))?;
        Ok(())
    }

    /// The next reply for us of one of `kinds`, or None after `wait` (or at
    /// the deadline). Replies for other clients and garbage are skipped.
    fn receive(&self, xid: u32, kinds: &[Kind], wait: Duration) -> Result<Option<dhcp::Reply>> {
        let until = (Instant::now() + wait).min(self.deadline);
        let mut buf = [0u8; 1500];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.sock
                .set_read_timeout(Some(left))
                .context("setting DHCP socket timeout")?;
            let n = match self.sock.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("receiving DHCP reply"),
            };
            match dhcp::decode(&buf[..n]) {
                Ok(r) if r.xid == xid && r.chaddr == self.mac.0 && kinds.contains(&r.kind) => {
                    return Ok(Some(r))
                }
                Ok(_) => {}
                Err(e) => log::debug!("ignoring malformed DHCP packet: {e}"),
            }
        }
    }
}

/// The `secs` field: seconds since the client began the exchange.
fn secs_since(started: Instant) -> u16 {
    started.elapsed().as_secs().min(u16::MAX.into()) as u16
}

/// A transaction id that differs between machines booting at the same
/// instant (their MACs differ) without needing the entropy pool, which may
/// not be ready this early.
fn transaction_id(mac: MacAddr) -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let m = mac.0;
    u32::from_be_bytes([m[2], m[3], m[4], m[5]]) ^ nanos.rotate_left(16)
}
