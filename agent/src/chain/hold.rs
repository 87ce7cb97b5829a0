//! Who holds chunks in the replay buffer, and for how long.
//!
//! The buffer drops its oldest chunks once full, except those someone
//! still needs: the local pipeline, always (it is this node's disk); a
//! connected downstream, for at most `downstream_grace` at a time (a
//! jittery link gets slack, a slow one cannot pace this node); and, when
//! the coordinator says a downstream is assigned that has not connected
//! yet, everything for at most `downstream_grace` (the chain's start and a
//! reattachment would otherwise race the buffer). When only the local
//! pipeline holds the buffer full, the node reports itself backpressured:
//! the coordinator's sign of a slow disk.

use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use super::relay::{Shared, State};

/// Who holds the oldest chunk of a full buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Holders {
    /// The local pipeline.
    pub local: bool,
    /// A downstream, or the wait for one.
    pub others: bool,
}

/// The first chunk the buffer must keep: the lowest of the local
/// pipeline's position, protected downstreams' positions, and `freeze`
/// (the oldest held, while waiting for a downstream to connect).
pub fn floor(local: u32, protected: impl IntoIterator<Item = u32>, freeze: Option<u32>) -> u32 {
    protected.into_iter().chain(freeze).fold(local, u32::min)
}

impl State {
    /// Recompute the buffer's floor; say who holds its oldest chunk.
    pub(crate) fn refloor(&mut self, now: Instant, grace: Duration) -> Holders {
        let missing = self.assignment.downstreams_pending as usize > self.downstreams.len();
        let since = self.missing_since.unwrap_or(now);
        self.missing_since = missing.then_some(since);
        let oldest = self.ring.oldest();
        let freeze = self
            .missing_since
            .filter(|t| now.saturating_duration_since(*t) < grace)
            .map(|_| oldest);
        let protected = self
            .downstreams
            .iter()
            .filter(|d| d.protected)
            .map(|d| d.pos);
        let others = floor(u32::MAX, protected, freeze);
        self.ring.set_pin(others.min(self.local));
        Holders {
            local: self.local <= oldest,
            others: others <= oldest,
        }
    }
}

/// Wait until the buffer has room for another chunk (or the node stops),
/// taking protection away from downstreams that held it full for
/// `downstream_grace`.
pub(crate) fn wait_for_room<'a>(
    sh: &'a Shared,
    mut st: MutexGuard<'a, State>,
) -> MutexGuard<'a, State> {
    let grace = sh.cfg.downstream_grace;
    let mut blocked_since: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let holders = st.refloor(now, grace);
        if st.ring.has_room() || st.stop.is_some() {
            break;
        }
        st.backpressured = holders.local && !holders.others;
        if holders.others {
            let since = *blocked_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= grace {
                let oldest = st.ring.oldest();
                for d in st
                    .downstreams
                    .iter_mut()
                    .filter(|d| d.protected && d.pos <= oldest)
                {
                    log::info!(
                        "chain: downstream {} has held the buffer full for {}s at chunk {}: no longer waiting for it",
                        d.mac,
                        grace.as_secs_f32(),
                        d.pos
                    );
                    d.protected = false;
                }
                blocked_since = None;
                continue;
            }
        } else {
            blocked_since = None;
        }
        st = sh.wait(st, Duration::from_millis(100));
    }
    st.backpressured = false;
    st
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_holder_wins() {
        let cases: &[(u32, &[u32], Option<u32>, u32)] = &[
            (5, &[], None, 5),
            (5, &[7, 9], None, 5),
            (5, &[3, 9], None, 3),
            (5, &[7], Some(2), 2),
            (u32::MAX, &[], None, u32::MAX),
            (u32::MAX, &[40], None, 40),
        ];
        for (local, downs, freeze, want) in cases {
            assert_eq!(floor(*local, downs.iter().copied(), *freeze), *want);
        }
    }
}
