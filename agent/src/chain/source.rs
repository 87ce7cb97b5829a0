//! [`ChainSource`]: the chain as a [`ChunkSource`] for the usual verify →
//! inflate → write pipeline, and the handle that ends the relay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use super::hold;
use super::relay::{RelayStats, Shared, Stop};
use super::ring::Slot;
use crate::image::{verify_chunk, ChunkEntry, ChunkSource};

/// Chunks from the chain, in order, already verified (the pipeline checks
/// them again, which costs a hash and buys one rule for every source).
///
/// Dropping it stops the relay and tells the coordinator this node left;
/// [`ChainSource::finish`] first keeps serving downstreams for a while.
pub struct ChainSource {
    pub(crate) sh: Arc<Shared>,
    pub(crate) fallback: Option<Box<dyn ChunkSource + Send>>,
    pub(crate) threads: Vec<JoinHandle<()>>,
    pub(crate) listen: SocketAddr,
    pub(crate) ended: bool,
}

/// Controls a running relay from another thread.
#[derive(Clone)]
pub struct RelayHandle(Arc<Shared>);

impl RelayHandle {
    /// Vanish as a crashed node would: close every connection, stop every
    /// thread, tell the coordinator nothing. The local pipeline's next
    /// fetch fails.
    pub fn kill(&self) {
        self.0.stop(Stop::Kill);
    }

    /// Counters.
    pub fn stats(&self) -> RelayStats {
        self.0.lock().stats.clone()
    }
}

impl ChainSource {
    /// The address downstreams connect to.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// A handle for other threads.
    pub fn handle(&self) -> RelayHandle {
        RelayHandle(self.sh.clone())
    }

    /// Counters.
    pub fn stats(&self) -> RelayStats {
        self.sh.lock().stats.clone()
    }

    /// The local pipeline is done: keep serving downstreams until the
    /// coordinator says none still needs this node and none connected is
    /// unfinished, at most `linger`; then leave and stop.
    pub fn finish(mut self, linger: Duration) -> RelayStats {
        let deadline = Instant::now() + linger;
        {
            let mut st = self.sh.lock();
            st.local = u32::MAX;
            st.refloor(Instant::now(), self.sh.cfg.downstream_grace);
            loop {
                let pending = st.assignment.downstreams_pending > 0
                    || st.downstreams.iter().any(|d| d.pos < self.sh.total);
                if !pending || Instant::now() >= deadline || st.stop.is_some() {
                    break;
                }
                st = self.sh.wait(st, Duration::from_millis(100));
            }
        }
        self.end();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.stats()
    }

    fn end(&mut self) {
        if self.ended {
            return;
        }
        self.ended = true;
        let (killed, complete) = {
            let st = self.sh.lock();
            (st.stop == Some(Stop::Kill), st.ring.next() >= self.sh.total)
        };
        self.sh.stop(Stop::Graceful);
        if !killed {
            if let Err(e) = self.sh.coordinator.leave(&self.sh, complete) {
                log::warn!("chain: leaving: {e}");
            }
        }
    }

    /// The chain cannot deliver chunk `i`: the fallback source (verified
    /// here, before it is shared with downstreams), fed into the replay
    /// buffer when it is the next one, so this node keeps relaying.
    fn fetch_elsewhere(&mut self, i: u32, entry: &ChunkEntry, why: &str) -> Result<Vec<u8>> {
        let Some(fallback) = self.fallback.as_mut() else {
            bail!("chunk {i}: {why}, and there is no fallback source");
        };
        let bytes = fallback
            .fetch(i as usize, entry)
            .with_context(|| format!("chunk {i} from the fallback source ({why})"))?;
        let bytes = verify_chunk(i as usize, entry, bytes)?.into_bytes();
        let mut st = self.sh.lock();
        st.local = st.local.max(i + 1);
        st.stats.written = st.local;
        if st.ring.next() == i {
            // Downstreams still get it, within the buffer's bounds.
            st = hold::wait_for_room(&self.sh, st);
            if st.ring.push(i, Arc::new(bytes.clone())).is_ok() {
                st.stats.received = st.ring.next();
                st.stats.oldest = st.ring.oldest();
            }
        }
        st.refloor(Instant::now(), self.sh.cfg.downstream_grace);
        self.sh.cond.notify_all();
        Ok(bytes)
    }
}

impl ChunkSource for ChainSource {
    fn fetch(&mut self, index: usize, entry: &ChunkEntry) -> Result<Vec<u8>> {
        let i = u32::try_from(index).context("chunk index")?;
        let mut st = self.sh.lock();
        loop {
            if let Some(how) = st.stop {
                bail!("chunk {i}: the chain relay was stopped ({how:?})");
            }
            match st.ring.get(i) {
                Slot::Have(bytes) => {
                    st.local = st.local.max(i + 1);
                    st.stats.written = st.local;
                    st.refloor(Instant::now(), self.sh.cfg.downstream_grace);
                    self.sh.cond.notify_all();
                    return Ok(bytes.to_vec());
                }
                Slot::Evicted { oldest } => {
                    drop(st);
                    let why = format!("it left the replay buffer (oldest {oldest})");
                    return self.fetch_elsewhere(i, entry, &why);
                }
                Slot::NotYet => {
                    if let Some(why) = st.fallback.clone() {
                        drop(st);
                        return self.fetch_elsewhere(i, entry, &why);
                    }
                    st = self.sh.wait(st, Duration::from_secs(1));
                }
            }
        }
    }
}

impl Drop for ChainSource {
    fn drop(&mut self) {
        self.end();
    }
}
