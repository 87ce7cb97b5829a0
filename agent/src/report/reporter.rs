//! The agent's side of the report protocol.
//!
//! A background thread does the HTTP so a slow or absent server never slows
//! the data path: phases queue up (bounded; they are few), progress only
//! overwrites a "latest" slot that the thread sends at most once per
//! [`Settings::progress_every`], and everything goes out in the order it
//! happened. Phase and progress reports are tried once and dropped on
//! failure: reporting never fails a deploy. Success and failure are what
//! the server acts on (localboot, or not): their caller waits until a server
//! recorded or refused them, retrying with backoff up to a deadline.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kernel_cmdline::{MacAddr, Options};

use super::protocol::{Phase, Report};
use super::send::{Answer, Servers};
use crate::deploy::Deployed;

/// Timing and bounds; [`Settings::default`] on a node.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Per POST: connect, and each read or write.
    pub timeout: Duration,
    /// How long success or failure is retried.
    pub deadline: Duration,
    /// The first pause between retries; it doubles, up to 16 s.
    pub backoff: Duration,
    /// Progress goes out at most this often.
    pub progress_every: Duration,
    /// Phase reports waiting to be sent, at most.
    pub queue: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            timeout: Duration::from_secs(5),
            deadline: Duration::from_secs(60),
            backoff: Duration::from_secs(1),
            progress_every: Duration::from_secs(1),
            queue: 16,
        }
    }
}

/// Retries of success/failure are never further apart than this, so a
/// server that comes back is noticed soon.
const MAX_BACKOFF: Duration = Duration::from_secs(16);

/// What came of a success or failure report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Reports are off.
    Off,
    /// Recorded by the server at this URL.
    Recorded(String),
    /// A server refused it (4xx, final): which, its status and reason.
    Refused(String),
    /// Not recorded before the deadline: the last problem.
    Undelivered(String),
}

/// Sends this node's reports; a no-op when reports are off.
pub struct Reporter {
    on: Option<On>,
}

struct On {
    shared: Arc<Shared>,
    settings: Settings,
    servers: usize,
}

struct Shared {
    state: Mutex<State>,
    /// The thread has something to do.
    wake: Condvar,
    /// A verdict on the final report is in.
    judged: Condvar,
}

struct State {
    /// Where the deploy is, for a failure report.
    phase: Phase,
    queue: VecDeque<Item>,
    /// The latest progress, not sent yet.
    progress: Option<(u64, u64)>,
    /// What came of the final report being delivered (the caller waits,
    /// so there is one at a time).
    verdict: Option<Delivery>,
    /// The reporter is gone: the thread ends.
    closed: bool,
}

enum Item {
    /// Sent once, dropped on failure.
    Note(Report),
    /// Retried until `until`; the outcome becomes the verdict.
    Final { report: Report, until: Instant },
}

impl Reporter {
    /// Reports off, silently: before the options and the network are known.
    pub fn off() -> Reporter {
        Reporter { on: None }
    }

    /// Report to `deploy.server` as node `mac`, authenticated by
    /// `deploy.token`; off (said once on the console) without either.
    pub fn new(opts: &Options, mac: Option<MacAddr>, settings: Settings) -> Reporter {
        let (token, mac) = match (&opts.token, mac) {
            (None, _) => {
                log::info!("reports: off (no deploy.token)");
                return Reporter::off();
            }
            (Some(_), None) => {
                log::info!("reports: off (no MAC: give BOOTIF= or --mac)");
                return Reporter::off();
            }
            (Some(t), Some(m)) => (t, m),
        };
        let servers = Servers::new(&opts.servers, token, &mac, settings.timeout);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                phase: Phase::Start,
                queue: VecDeque::new(),
                progress: None,
                verdict: None,
                closed: false,
            }),
            wake: Condvar::new(),
            judged: Condvar::new(),
        });
        let worker = Worker {
            shared: shared.clone(),
            servers,
            backoff: settings.backoff,
            progress_every: settings.progress_every,
            last_progress: None,
            warned: false,
        };
        if let Err(e) = std::thread::Builder::new()
            .name("report".into())
            .spawn(move || worker.run())
        {
            log::warn!("reports: off (cannot start the report thread: {e})");
            return Reporter::off();
        }
        log::info!("reports: on, as node {mac}");
        Reporter {
            on: Some(On {
                shared,
                settings,
                servers: opts.servers.len(),
            }),
        }
    }

    /// The deploy entered `phase`.
    pub fn phase(&self, phase: Phase, message: impl Into<String>) {
        let Some(on) = &self.on else { return };
        let mut st = on.shared.lock();
        st.phase = phase;
        let note = Item::Note(Report::Phase {
            phase,
            message: message.into(),
        });
        st.push(note, on.settings.queue);
        on.shared.wake.notify_one();
    }

    /// `done` of `total` payload bytes are verified and written. Cheap:
    /// call it as often as convenient.
    pub fn progress(&self, done: u64, total: u64) {
        let Some(on) = &self.on else { return };
        let mut st = on.shared.lock();
        // The thread only needs waking when it is not already timing a send.
        if st.progress.replace((done, total)).is_none() {
            on.shared.wake.notify_one();
        }
    }

    /// Report the deploy done, and wait until a server recorded it or the
    /// deadline passed. The console says which; if it was not recorded, the
    /// disk is still good but the server will offer this deploy again.
    pub fn success(&self, d: &Deployed) -> Delivery {
        let report = Report::Success {
            image: d.image.clone(),
            disk: d.disk.display().to_string(),
            payload_sha256: d.payload_sha256.clone(),
            bytes_written: d.written.bytes,
            elapsed_ms: u64::try_from(d.written.elapsed.as_millis()).unwrap_or(u64::MAX),
        };
        let outcome = self.deliver(report);
        tell("success", &outcome);
        if matches!(outcome, Delivery::Refused(_) | Delivery::Undelivered(_)) {
            log::warn!(
                "the server did not record this deploy; at the next netboot it will offer the deploy again"
            );
        }
        outcome
    }

    /// Report the deploy failed in the current phase with `error` (its
    /// whole chain), and wait until a server recorded it or the deadline
    /// passed.
    pub fn failure(&self, error: &anyhow::Error) -> Delivery {
        let Some(on) = &self.on else {
            return Delivery::Off;
        };
        let phase = on.shared.lock().phase;
        let outcome = self.deliver(Report::Failure {
            phase,
            error: format!("{error:#}"),
        });
        tell("failure", &outcome);
        outcome
    }

    /// Queue a final report behind everything before it and wait for the
    /// thread's verdict.
    fn deliver(&self, report: Report) -> Delivery {
        let Some(on) = &self.on else {
            return Delivery::Off;
        };
        let deadline = on.settings.deadline;
        let mut st = on.shared.lock();
        st.verdict = None;
        let until = Instant::now() + deadline;
        st.push(Item::Final { report, until }, on.settings.queue);
        on.shared.wake.notify_one();
        // The thread starts no attempt after the deadline; one already
        // under way may take a timeout per server.
        let grace = on.settings.timeout * (on.servers as u32 + 1);
        let (mut st, _) = on
            .shared
            .judged
            .wait_timeout_while(st, deadline + grace, |st| st.verdict.is_none())
            .unwrap_or_else(|e| e.into_inner());
        st.verdict
            .take()
            .unwrap_or_else(|| Delivery::Undelivered(format!("no answer within {deadline:?}")))
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if let Some(on) = &self.on {
            on.shared.lock().closed = true;
            on.shared.wake.notify_one();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not silence the reports.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// Queue `item`, after the pending progress (it happened first).
    /// Notes beyond `cap` are dropped; a final report is always queued.
    fn push(&mut self, item: Item, cap: usize) {
        if let Some((done, total)) = self.progress.take() {
            if self.queue.len() < cap {
                self.queue
                    .push_back(Item::Note(Report::Progress { done, total }));
            }
        }
        if matches!(item, Item::Note(_)) && self.queue.len() >= cap {
            log::debug!("report: {cap} reports waiting, dropping one");
            return;
        }
        self.queue.push_back(item);
    }
}

/// The report thread.
struct Worker {
    shared: Arc<Shared>,
    servers: Servers,
    backoff: Duration,
    progress_every: Duration,
    last_progress: Option<Instant>,
    /// A note went undelivered and the console said so.
    warned: bool,
}

impl Worker {
    fn run(mut self) {
        while let Some(item) = self.next() {
            match item {
                Item::Note(r) => self.note(&r),
                Item::Final { report, until } => {
                    let verdict = self.deliver(&report, until);
                    self.shared.lock().verdict = Some(verdict);
                    self.shared.judged.notify_all();
                }
            }
        }
    }

    /// The next report to send, in order, waiting as needed; `None` once
    /// the reporter is gone.
    fn next(&mut self) -> Option<Item> {
        let mut st = self.shared.lock();
        loop {
            if let Some(item) = st.queue.pop_front() {
                // Behind an unreachable server, notes would only delay the
                // final report waiting after them.
                let final_waits = st.queue.iter().any(|i| matches!(i, Item::Final { .. }));
                if matches!(item, Item::Note(_)) && final_waits && !self.servers.reachable {
                    continue;
                }
                return Some(item);
            }
            if st.closed {
                return None;
            }
            let Some((done, total)) = st.progress else {
                st = self.shared.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            };
            let now = Instant::now();
            let due = self.last_progress.map_or(now, |t| t + self.progress_every);
            if due <= now {
                st.progress = None;
                return Some(Item::Note(Report::Progress { done, total }));
            }
            st = self
                .shared
                .wake
                .wait_timeout(st, due - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Send a phase or progress once; a problem is said once, then only at
    /// debug level.
    fn note(&mut self, r: &Report) {
        if matches!(r, Report::Progress { .. }) {
            self.last_progress = Some(Instant::now());
        }
        let why = match self.servers.post(&r.to_json()) {
            Answer::Recorded(_) => return,
            Answer::Refused(why) | Answer::Failed(why) => why,
        };
        let what = what(r);
        if self.warned {
            log::debug!("report: the {what} report was not delivered: {why}");
        } else {
            self.warned = true;
            log::warn!(
                "report: the {what} report was not delivered: {why} (the deploy goes on; further report problems are logged at debug level)"
            );
        }
    }

    /// Send a success or failure until a server records or refuses it, or
    /// `until` passes.
    fn deliver(&mut self, r: &Report, until: Instant) -> Delivery {
        let body = r.to_json();
        let mut wait = self.backoff;
        loop {
            let why = match self.servers.post(&body) {
                Answer::Recorded(url) => return Delivery::Recorded(url),
                Answer::Refused(why) => return Delivery::Refused(why),
                Answer::Failed(why) => why,
            };
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Delivery::Undelivered(why);
            }
            let pause = wait.min(left);
            log::warn!(
                "report: the {} report was not delivered: {why}; retrying in {:.1}s",
                what(r),
                pause.as_secs_f64()
            );
            std::thread::sleep(pause);
            wait = (wait * 2).min(MAX_BACKOFF);
        }
    }
}

/// Say on the console what came of the `what` report.
fn tell(what: &str, outcome: &Delivery) {
    match outcome {
        Delivery::Off => {}
        Delivery::Recorded(url) => log::info!("report: {what} recorded by {url}"),
        Delivery::Refused(why) => log::warn!("report: server refused the {what} report: {why}"),
        Delivery::Undelivered(why) => {
            log::warn!("report: the {what} report was not delivered: {why}")
        }
    }
}

/// Which report, for messages: `write phase`, `success`.
fn what(r: &Report) -> String {
    match r {
        Report::Phase { phase, .. } => format!("{phase} phase"),
        Report::Progress { .. } => "progress".into(),
        Report::Success { .. } => "success".into(),
        Report::Failure { .. } => "failure".into(),
    }
}

#[cfg(test)]
#[path = "reporter_tests.rs"]
mod tests;
