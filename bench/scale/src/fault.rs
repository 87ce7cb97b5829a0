//! Helpers of the fault tests: reproducible random choices, polling a
//! fleet until a moment or a log line, killing processes as a power cut
//! would.
//!
//! (`tests/faults.rs`, the chain's fault tests, has its own copies of the
//! first three; `tests/torrent_faults.rs` uses these.)

use std::time::Duration;

use anyhow::{bail, Result};

use crate::fleet::Fleet;

/// xorshift64*, seeded from `DROVER_FAULT_SEED` or the clock; the seed is
/// printed so a failure can be replayed.
pub struct Rng(u64);

impl Rng {
    /// The generator of `test` (which names the printed seed).
    pub fn new(test: &str) -> Rng {
        let seed = std::env::var("DROVER_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("{test}: DROVER_FAULT_SEED={seed}");
        Rng::seeded(seed)
    }

    /// A generator with this seed.
    pub fn seeded(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `k` distinct indices below `n` (`k <= n`).
    pub fn pick(&mut self, k: usize, n: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..n).collect();
        for i in 0..k.min(n) {
            let j = i + (self.next_u64() % (n - i) as u64) as usize;
            all.swap(i, j);
        }
        all.truncate(k);
        all
    }
}

/// Poll the fleet (recording who finished when) until `secs` after launch
/// or until every agent has exited.
pub fn run_until(fleet: &mut Fleet, secs: f64) {
    while fleet.elapsed() < secs && !fleet.poll() {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait until every agent's log has a line containing `needle`; the time
/// since the launch then.
pub fn wait_all_logged(fleet: &mut Fleet, needle: &str, timeout: Duration) -> Result<f64> {
    let ok = drover_qemu_tests::wait_until(timeout, Duration::from_millis(50), || {
        fleet.poll();
        (0..fleet.len()).all(|i| fleet.agent_log(i).contains(needle))
    });
    if !ok {
        let missing: Vec<usize> = (0..fleet.len())
            .filter(|&i| !fleet.agent_log(i).contains(needle))
            .collect();
        bail!("agents {missing:?} never logged {needle:?}");
    }
    Ok(fleet.elapsed())
}

/// SIGKILL process `pid` (ESRCH, already gone, is not an error).
pub fn sigkill(pid: u32) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_are_distinct_and_replayable() {
        let mut a = Rng::seeded(42);
        let mut b = Rng::seeded(42);
        let pa = a.pick(3, 16);
        assert_eq!(pa, b.pick(3, 16));
        let mut sorted = pa.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 3);
        assert!(pa.iter().all(|&i| i < 16));
        for _ in 0..100 {
            let x = a.range(0.25, 0.5);
            assert!((0.25..0.5).contains(&x), "{x}");
        }
        assert_eq!(a.pick(5, 3).len(), 3);
    }
}
