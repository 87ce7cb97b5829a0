//! A node's tracker client: `started`, regular announces (every 15 s at
//! most while downloading, so nodes arriving late are found; every 5 s
//! once complete, so the node learns soon that nobody needs it any
//! more), `completed` as soon as the last piece is verified, `stopped`
//! on the way out. Every peer listed becomes a dial candidate.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use kernel_cmdline::ServerUrl;

use super::Swarm;
use crate::fetch::Client;
use crate::torrent::tracker::{Announce, AnnounceReply, Event};

/// The most an announce answer may weigh (200 peers are 1.2 KiB compact;
/// the list form is larger).
const MAX_REPLY: usize = 256 << 10;

/// Where and how a node announces.
#[derive(Debug, Clone)]
pub struct Announcer {
    /// The announce URL (for a drover node `{server}/announce/MAC/TOKEN`).
    pub url: ServerUrl,
    /// The port peers connect to.
    pub port: u16,
    /// Each request's time limit.
    pub timeout: Duration,
}

impl Swarm {
    /// Announce to the tracker until the swarm stops, then say `stopped`.
    pub fn spawn_announcer(self: &Arc<Self>, a: Announcer) -> std::io::Result<JoinHandle<()>> {
        let sw = self.clone();
        thread::Builder::new()
            .name("torrent-announce".into())
            .spawn(move || sw.announce_loop(&a))
    }

    fn announce_loop(&self, a: &Announcer) {
        let mut client = Client::new(a.url.clone());
        client.timeout = a.timeout;
        let mut event = Event::Started;
        let mut failures = 0u32;
        let mut told_complete = false;
        loop {
            let complete = self.is_complete();
            if complete && !told_complete && event != Event::Started {
                event = Event::Completed;
            }
            let next = match self.announce_once(&client, a.port, event) {
                Ok(reply) => {
                    failures = 0;
                    told_complete |= complete;
                    event = Event::None;
                    let every = if complete { 5 } else { 15 };
                    Duration::from_secs(u64::from(reply.interval.clamp(1, every)))
                }
                Err(e) => {
                    log::warn!("torrent: tracker {}: {e}", a.url);
                    self.lock().tracker.error = Some(e);
                    failures += 1;
                    Duration::from_secs(1u64 << failures.min(4))
                }
            };
            // Sleep until the next announce, the last piece or the stop.
            let deadline = Instant::now() + next;
            let mut st = self.lock();
            loop {
                if st.stopped {
                    drop(st);
                    client.timeout = Duration::from_secs(2);
                    let _ = self.announce_once(&client, a.port, Event::Stopped);
                    return;
                }
                let now = Instant::now();
                if now >= deadline || (st.picker.have.is_full() && !told_complete) {
                    break;
                }
                st = self.wait(st, deadline - now);
            }
        }
    }

    fn announce_once(
        &self,
        client: &Client,
        port: u16,
        event: Event,
    ) -> Result<AnnounceReply, String> {
        let (uploaded, downloaded) = {
            let st = self.lock();
            (st.stats.uploaded, st.stats.downloaded)
        };
        let q = Announce {
            info_hash: self.info_hash,
            peer_id: self.cfg.peer_id,
            port,
            uploaded,
            downloaded,
            left: self.left(),
            event,
            compact: true,
            numwant: Some(200),
        };
        let body = client
            .get(&format!("?{}", q.to_query()), MAX_REPLY)
            .map_err(|e| format!("{e:#}"))?;
        let reply = AnnounceReply::parse(&body).map_err(|e| e.to_string())?;
        self.add_known(reply.peers.iter().map(|p| p.addr));
        let mut st = self.lock();
        st.tracker.incomplete = Some(reply.incomplete);
        st.tracker.at = Some((Instant::now(), q.left == 0));
        st.tracker.error = None;
        Ok(reply)
    }
}
