//! The tracker's memory: who is in which swarm. Pure (time is passed in),
//! so every rule is a table test.
//!
//! Invariants: one entry per [`PeerKey`] per swarm (a node is keyed by its
//! MAC, so a restarted agent with a new peer id replaces its old entry and
//! a token cannot be used to fill a swarm); an entry not refreshed within
//! `expire_after` is gone before anything is answered; a swarm never holds
//! more than `max_peers` entries (a newcomer is refused, nobody evicted);
//! an empty swarm is removed. Swarms only exist for info-hashes the caller
//! checked (images of the store), so their number is bounded too.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use drover_agent::torrent::metainfo::InfoHash;
use drover_agent::torrent::tracker::{Event, Peer, ScrapeStats};
use drover_agent::torrent::wire::PeerId;
use kernel_cmdline::MacAddr;

/// Who an entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerKey {
    /// A drover node, authenticated by its deploy token.
    Node(MacAddr),
    /// A client without a token (an open tracker only), by its peer id.
    Guest(PeerId),
}

/// One announce, as the swarm needs it.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub key: PeerKey,
    pub id: PeerId,
    /// Where other peers connect to it (its IP as the tracker saw it, the
    /// port it announced).
    pub addr: SocketAddr,
    pub left: u64,
    pub event: Event,
    /// How many peers to return at most.
    pub numwant: usize,
}

/// What a swarm answers an announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub peers: Vec<Peer>,
    pub stats: ScrapeStats,
}

#[derive(Debug)]
struct Entry {
    key: PeerKey,
    id: PeerId,
    addr: SocketAddr,
    left: u64,
    seen: Instant,
}

#[derive(Debug, Default)]
struct Swarm {
    entries: Vec<Entry>,
    /// `event=completed` announces seen.
    downloaded: u32,
    /// Where the next peer list starts, so that with more peers than a
    /// client wants, successive clients get different ones.
    rotate: usize,
    /// Nodes that were here and left (`stopped`, or expired): a node
    /// still deploying that is not here any more is dead, not late.
    departed: HashSet<MacAddr>,
}

impl Swarm {
    fn expire(&mut self, now: Instant, expire_after: Duration) {
        let departed = &mut self.departed;
        self.entries.retain(|e| {
            let live = now.saturating_duration_since(e.seen) < expire_after;
            if let (false, PeerKey::Node(mac)) = (live, e.key) {
                departed.insert(mac);
            }
            live
        });
    }

    fn stats(&self) -> ScrapeStats {
        let complete = self.entries.iter().filter(|e| e.left == 0).count() as u32;
        ScrapeStats {
            complete,
            downloaded: self.downloaded,
            incomplete: self.entries.len() as u32 - complete,
        }
    }
}

/// Why an announce was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this swarm is full ({max} peers); try again later")]
pub struct Full {
    pub max: usize,
}

/// All swarms.
#[derive(Debug)]
pub struct Swarms {
    swarms: HashMap<InfoHash, Swarm>,
    max_peers: usize,
    expire_after: Duration,
}

impl Swarms {
    /// Swarms of at most `max_peers`, whose entries live `expire_after`
    /// past their last announce.
    pub fn new(max_peers: usize, expire_after: Duration) -> Swarms {
        Swarms {
            swarms: HashMap::new(),
            max_peers,
            expire_after,
        }
    }

    /// Record `a` in the swarm of `hash` and answer it: up to `numwant`
    /// other peers (a seeder gets only leechers: it needs nothing) and the
    /// swarm's counts after the announce.
    pub fn announce(&mut self, hash: InfoHash, a: Arrival, now: Instant) -> Result<Answer, Full> {
        let expire_after = self.expire_after;
        let swarm = self.swarms.entry(hash).or_default();
        swarm.expire(now, expire_after);
        let at = swarm.entries.iter().position(|e| e.key == a.key);
        if let PeerKey::Node(mac) = a.key {
            if a.event == Event::Stopped {
                swarm.departed.insert(mac);
            } else {
                swarm.departed.remove(&mac);
            }
        }
        match (a.event, at) {
            (Event::Stopped, Some(i)) => {
                swarm.entries.swap_remove(i);
            }
            (Event::Stopped, None) => {}
            (_, Some(i)) => {
                let e = &mut swarm.entries[i];
                (e.id, e.addr, e.left, e.seen) = (a.id, a.addr, a.left, now);
            }
            (_, None) if swarm.entries.len() >= self.max_peers => {
                return Err(Full {
                    max: self.max_peers,
                })
            }
            (_, None) => swarm.entries.push(Entry {
                key: a.key,
                id: a.id,
                addr: a.addr,
                left: a.left,
                seen: now,
            }),
        }
        if a.event == Event::Completed {
            swarm.downloaded = swarm.downloaded.saturating_add(1);
        }
        let mut peers = Vec::new();
        if a.event != Event::Stopped {
            let candidates: Vec<&Entry> = swarm
                .entries
                .iter()
                .filter(|e| e.key != a.key && (a.left > 0 || e.left > 0))
                .collect();
            let n = candidates.len();
            let start = if n > a.numwant { swarm.rotate % n } else { 0 };
            peers = (0..n.min(a.numwant))
                .map(|i| candidates[(start + i) % n])
                .map(|e| Peer {
                    addr: e.addr,
                    id: Some(e.id),
                })
                .collect();
            swarm.rotate = swarm.rotate.wrapping_add(peers.len());
        }
        let stats = swarm.stats();
        if swarm.entries.is_empty() && swarm.downloaded == 0 {
            self.swarms.remove(&hash);
        }
        Ok(Answer { peers, stats })
    }

    /// The counts of the swarm of `hash` (zero if there is none).
    pub fn stats(&mut self, hash: &InfoHash, now: Instant) -> ScrapeStats {
        match self.swarms.get_mut(hash) {
            Some(s) => {
                s.expire(now, self.expire_after);
                s.stats()
            }
            None => ScrapeStats::default(),
        }
    }

    /// Whether node `mac` was in the swarm of `hash` and left it.
    pub fn departed(&self, hash: &InfoHash, mac: &MacAddr) -> bool {
        self.swarms
            .get(hash)
            .is_some_and(|s| s.departed.contains(mac))
    }

    /// The info-hashes that have a swarm, in order.
    pub fn hashes(&self) -> Vec<InfoHash> {
        let mut v: Vec<InfoHash> = self.swarms.keys().copied().collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: InfoHash = InfoHash([7; 20]);
    const EXPIRE: Duration = Duration::from_secs(90);

    fn node(n: u8, left: u64, event: Event) -> Arrival {
        Arrival {
            key: PeerKey::Node(MacAddr([0x52, 0x54, 0, 0, 0, n])),
            id: PeerId([n; 20]),
            addr: SocketAddr::from(([10, 0, 0, n], 6881)),
            left,
            event,
            numwant: 50,
        }
    }

    fn ports(a: &Answer) -> Vec<u8> {
        a.peers
            .iter()
            .map(|p| match p.addr {
                SocketAddr::V4(v4) => v4.ip().octets()[3],
                SocketAddr::V6(_) => 0,
            })
            .collect()
    }

    #[test]
    fn peers_see_each_other_but_not_themselves() {
        let mut s = Swarms::new(100, EXPIRE);
        let t = Instant::now();
        let a = s.announce(H, node(1, 100, Event::Started), t).unwrap();
        assert!(a.peers.is_empty());
        assert_eq!(
            a.stats,
            ScrapeStats {
                complete: 0,
                downloaded: 0,
                incomplete: 1
            }
        );
        let a = s.announce(H, node(2, 100, Event::Started), t).unwrap();
        assert_eq!(ports(&a), [1]);
        assert_eq!(a.peers[0].id, Some(PeerId([1; 20])));
        let a = s.announce(H, node(1, 50, Event::None), t).unwrap();
        assert_eq!(ports(&a), [2]);
        assert_eq!(a.stats.incomplete, 2);
        // Another torrent is another swarm.
        let a = s
            .announce(InfoHash([8; 20]), node(3, 1, Event::Started), t)
            .unwrap();
        assert!(a.peers.is_empty());
        assert_eq!(s.hashes(), [H, InfoHash([8; 20])]);
    }

    #[test]
    fn one_entry_per_node_and_a_new_peer_id_replaces_it() {
        let mut s = Swarms::new(100, EXPIRE);
        let t = Instant::now();
        s.announce(H, node(1, 100, Event::Started), t).unwrap();
        let mut again = node(1, 100, Event::Started);
        again.id = PeerId([0xee; 20]);
        again.addr.set_port(7000);
        s.announce(H, again, t).unwrap();
        let a = s.announce(H, node(2, 100, Event::Started), t).unwrap();
        assert_eq!(a.peers.len(), 1);
        assert_eq!(a.peers[0].id, Some(PeerId([0xee; 20])));
        assert_eq!(a.peers[0].addr.port(), 7000);
    }

    #[test]
    fn stopped_leaves_completed_counts_seeders_get_leechers() {
        let mut s = Swarms::new(100, EXPIRE);
        let t = Instant::now();
        s.announce(H, node(1, 0, Event::Started), t).unwrap();
        s.announce(H, node(2, 0, Event::Started), t).unwrap();
        let a = s.announce(H, node(3, 10, Event::Started), t).unwrap();
        assert_eq!(ports(&a), [1, 2]);
        // A seeder is not sent seeders.
        let a = s.announce(H, node(1, 0, Event::None), t).unwrap();
        assert_eq!(ports(&a), [3]);
        let a = s.announce(H, node(3, 0, Event::Completed), t).unwrap();
        assert!(a.peers.is_empty(), "only seeders left");
        assert_eq!(
            a.stats,
            ScrapeStats {
                complete: 3,
                downloaded: 1,
                incomplete: 0
            }
        );
        let a = s.announce(H, node(2, 0, Event::Stopped), t).unwrap();
        assert!(a.peers.is_empty());
        assert_eq!(a.stats.complete, 2);
        assert_eq!(s.stats(&H, t).complete, 2);
    }

    #[test]
    fn silent_peers_expire_and_empty_swarms_go() {
        let mut s = Swarms::new(100, EXPIRE);
        let t = Instant::now();
        s.announce(H, node(1, 10, Event::Started), t).unwrap();
        s.announce(H, node(2, 10, Event::Started), t + Duration::from_secs(60))
            .unwrap();
        let later = t + Duration::from_secs(100);
        let a = s.announce(H, node(3, 10, Event::Started), later).unwrap();
        assert_eq!(ports(&a), [2], "node 1 expired");
        assert_eq!(s.stats(&H, t + Duration::from_secs(1000)).incomplete, 0);
        s.announce(
            H,
            node(3, 10, Event::Stopped),
            t + Duration::from_secs(1000),
        )
        .unwrap();
        assert!(s.hashes().is_empty());
    }

    #[test]
    fn full_swarms_refuse_newcomers_not_members() {
        let mut s = Swarms::new(2, EXPIRE);
        let t = Instant::now();
        s.announce(H, node(1, 10, Event::Started), t).unwrap();
        s.announce(H, node(2, 10, Event::Started), t).unwrap();
        let e = s.announce(H, node(3, 10, Event::Started), t).unwrap_err();
        assert_eq!(
            e.to_string(),
            "this swarm is full (2 peers); try again later"
        );
        assert!(s.announce(H, node(1, 5, Event::None), t).is_ok());
    }

    #[test]
    fn numwant_rotates_through_the_swarm() {
        let mut s = Swarms::new(100, EXPIRE);
        let t = Instant::now();
        for n in 1..=10 {
            s.announce(H, node(n, 10, Event::Started), t).unwrap();
        }
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..3 {
            let mut a = node(11, 10, Event::None);
            a.numwant = 4;
            let got = s.announce(H, a, t).unwrap();
            assert_eq!(got.peers.len(), 4);
            seen.extend(ports(&got));
        }
        assert_eq!(seen.len(), 10, "every peer handed out: {seen:?}");
    }
}
