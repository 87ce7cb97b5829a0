//! Machine CPU use during a run, from `/proc/stat`: every simulated node,
//! the server and the kernel's network stack share the same cores, so a
//! row is only meaningful if the machine was not saturated.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Busy and total jiffies of all CPUs together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Ticks {
    busy: u64,
    total: u64,
}

/// Parse the aggregate `cpu ` line of `/proc/stat`. Idle and iowait are
/// idle time; everything else (user, nice, system, irq, softirq, steal) busy.
fn parse_stat(text: &str) -> Option<Ticks> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 5 {
        return None;
    }
    let total: u64 = v.iter().sum();
    let idle = v[3] + v[4];
    Some(Ticks {
        busy: total - idle,
        total,
    })
}

fn read() -> Ticks {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|t| parse_stat(&t))
        .unwrap_or_default()
}

fn share(a: Ticks, b: Ticks) -> f64 {
    let total = b.total.saturating_sub(a.total);
    if total == 0 {
        return 0.0;
    }
    b.busy.saturating_sub(a.busy) as f64 / total as f64
}

/// CPU use over a run, as a fraction of the whole machine (1.0 = every
/// core busy).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuUse {
    pub mean: f64,
    /// The busiest one-second interval.
    pub peak: f64,
}

/// Samples `/proc/stat` once a second on a thread until [`Sampler::stop`].
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<CpuUse>>,
}

impl Sampler {
    pub fn start() -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let first = read();
            let mut last = first;
            let mut peak: f64 = 0.0;
            let mut since = std::time::Instant::now();
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                if since.elapsed() >= Duration::from_secs(1) {
                    let now = read();
                    peak = peak.max(share(last, now));
                    last = now;
                    since = std::time::Instant::now();
                }
            }
            let end = read();
            let mean = share(first, end);
            CpuUse {
                mean,
                peak: peak.max(mean),
            }
        });
        Sampler {
            stop,
            thread: Some(thread),
        }
    }

    pub fn stop(mut self) -> CpuUse {
        self.finish()
    }

    fn finish(&mut self) -> CpuUse {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat() {
        let text = "cpu  100 5 50 800 20 3 7 15 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(
            parse_stat(text),
            Some(Ticks {
                busy: 180,
                total: 1000
            })
        );
        assert_eq!(parse_stat("intr 1 2\n"), None);
        let a = Ticks {
            busy: 100,
            total: 1000,
        };
        let b = Ticks {
            busy: 150,
            total: 1200,
        };
        assert_eq!(share(a, b), 0.25);
        assert_eq!(share(b, b), 0.0);
    }

    #[test]
    fn sampler_reports_something_sane() {
        let s = Sampler::start();
        std::thread::sleep(Duration::from_millis(120));
        let u = s.stop();
        assert!((0.0..=1.0).contains(&u.mean), "{u:?}");
        assert!(u.peak >= u.mean, "{u:?}");
    }
}
