//! The DHCP exchange (DISCOVER → OFFER → REQUEST → ACK) over a socket, with
//! retransmission backoff and an overall deadline.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kernel_cmdline::MacAddr;

use super::dhcp::{self, Kind, Lease, Request};

/// Retransmission timeouts (RFC 2131 §4.1 suggests 4 s doubling; a deploy
/// network is local, so start faster), capped at the last value.
const BACKOFF: &[u64] = &[1, 2, 4, 8];

pub struct Client<'a> {
    pub sock: &'a UdpSocket,
    pub mac: MacAddr,
    pub deadline: Instant,
}

impl Client<'_> {
    /// Run the exchange until an ACK or the deadline. A NAK restarts it.
    pub fn obtain(&self) -> Result<Lease> {
        let started = Instant::now();
        let mut attempt = 0usize;
        let xid = transaction_id(self.mac);
        loop {
            let wait = Duration::from_secs(BACKOFF[attempt.min(BACKOFF.len() - 1)]);
            attempt += 1;
            let secs = started.elapsed().as_secs().min(u16::MAX as u64) as u16;
            let xid = xid.wrapping_add(attempt as u32);
            self.send(&Request {
                kind: Kind::Discover,
                xid,
                mac: self.mac,
                secs,
                selecting: None,
            })?;
            let Some(offer) = self.receive(xid, &[Kind::Offer], wait)? else {
                self.check_deadline()?;
                log::debug!("no DHCP offer after {}s, retrying", wait.as_secs());
                continue;
            };
            let server = offer.server_id().unwrap_or(offer.siaddr);
            log::debug!("DHCP offer {} from {server}", offer.yiaddr);
            self.send(&Request {
                kind: Kind::Request,
                xid,
                mac: self.mac,
                secs,
                selecting: Some((offer.yiaddr, server)),
            })?;
            match self.receive(xid, &[Kind::Ack, Kind::Nak], wait)? {
                Some(r) if r.kind == Kind::Ack => return Ok(Lease::from_ack(&r)),
                Some(_) => log::warn!(
                    "DHCP server {server} refused {} (NAK), starting over",
                    offer.yiaddr
                ),
                None => log::debug!("no DHCP ack after {}s, starting over", wait.as_secs()),
            }
            self.check_deadline()?;
        }
    }

    fn check_deadline(&self) -> Result<()> {
        if Instant::now() >= self.deadline {
            bail!("no DHCP lease: no server answered (is a DHCP server on this network segment?)");
        }
        Ok(())
    }

    fn send(&self, req: &Request) -> Result<()> {
        let to = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
        self.sock
            .send_to(&req.encode(), to)
            .context("sending DHCP request")?;
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
