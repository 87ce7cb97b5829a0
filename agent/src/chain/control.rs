//! Talking to the coordinator: join, heartbeats (which double as the long
//! poll for a new assignment), failure reports, leave. The first server of
//! `deploy.server` that answers is kept; a 4xx is an answer (the request
//! itself is wrong), anything else tries the next server.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kernel_cmdline::ServerUrl;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::api::{
    Assignment, DownstreamProgress, FailReason, Heartbeat, Join, Leave, Status, UpstreamFailed,
    HEARTBEAT_PATH, JOIN_PATH, LEAVE_PATH, MAX_BODY, MAX_WAIT_MS, UPSTREAM_FAILED_PATH,
};
use super::relay::Shared;
use crate::fetch::Client;

/// A coordinator call that did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// A server answered 4xx: asking again will not help.
    #[error("{url} answered {status}: {text}")]
    Refused {
        url: String,
        status: u16,
        text: String,
    },
    /// No server gave an answer.
    #[error("no coordinator answered: {0}")]
    Unreachable(String),
}

/// The coordinator's HTTP API, over the servers of `deploy.server`.
pub(crate) struct Coordinator {
    servers: Vec<ServerUrl>,
    token: Option<String>,
    timeout: Duration,
    preferred: AtomicUsize,
}

impl Coordinator {
    pub fn new(servers: Vec<ServerUrl>, token: Option<String>, timeout: Duration) -> Self {
        Coordinator {
            servers,
            token,
            timeout,
            preferred: AtomicUsize::new(0),
        }
    }

    /// POST `req` to `path`; `extra` lengthens the timeout (long polls).
    fn call<Q: Serialize, A: DeserializeOwned>(
        &self,
        path: &str,
        req: &Q,
        extra: Duration,
    ) -> Result<A, CallError> {
        let body = serde_json::to_vec(req).map_err(|e| CallError::Unreachable(e.to_string()))?;
        let first = self.preferred.load(Ordering::Relaxed);
        let order =
            std::iter::once(first).chain((0..self.servers.len()).filter(move |&i| i != first));
        let mut problems = Vec::new();
        for i in order {
            let Some(server) = self.servers.get(i) else {
                continue;
            };
            let mut client = Client::new(server.clone());
            client.timeout = self.timeout + extra;
            client.token = self.token.clone();
            let url = client.url(path);
            match client.post_json(path, &body, MAX_BODY) {
                Ok(r) if (200..300).contains(&r.head.status) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return serde_json::from_slice(&r.body)
                        .map_err(|e| CallError::Unreachable(format!("{url}: bad answer: {e}")));
                }
                Ok(r) if (400..500).contains(&r.head.status) => {
                    let text = String::from_utf8_lossy(&r.body);
                    return Err(CallError::Refused {
                        url,
                        status: r.head.status,
                        text: text.lines().next().unwrap_or_default().trim().to_owned(),
                    });
                }
                Ok(r) => problems.push(format!("{url} answered {}", r.head.status)),
                Err(e) => problems.push(format!("{e:#}")),
            }
        }
        Err(CallError::Unreachable(problems.join("; ")))
    }

    /// Join, retrying an unreachable coordinator for up to `patience`.
    pub fn join(
        &self,
        join: &Join,
        patience: Duration,
        pause: Duration,
    ) -> Result<Assignment, CallError> {
        let deadline = Instant::now() + patience;
        loop {
            match self.call(JOIN_PATH, join, Duration::ZERO) {
                Err(CallError::Unreachable(e)) if Instant::now() < deadline => {
                    log::warn!("chain: joining {}: {e}; retrying", join.session);
                    std::thread::sleep(pause);
                }
                other => return other,
            }
        }
    }

    pub fn heartbeat(&self, hb: &Heartbeat) -> Result<Assignment, CallError> {
        let wait = Duration::from_millis(u64::from(hb.wait_ms.min(MAX_WAIT_MS)));
        self.call(HEARTBEAT_PATH, hb, wait)
    }

    pub fn upstream_failed(
        &self,
        sh: &Shared,
        generation: u64,
        reason: FailReason,
        want: u32,
        detail: &str,
    ) -> Result<Assignment, CallError> {
        let req = UpstreamFailed {
            session: sh.session.to_string(),
            mac: sh.mac.to_string(),
            generation,
            reason,
            want,
            detail: detail.to_owned(),
        };
        self.call(UPSTREAM_FAILED_PATH, &req, Duration::ZERO)
    }

    pub fn leave(&self, sh: &Shared, complete: bool) -> Result<Assignment, CallError> {
        let (received, oldest, written) = {
            let st = sh.lock();
            (st.ring.next(), st.ring.oldest(), st.stats.written)
        };
        let req = Leave {
            session: sh.session.to_string(),
            mac: sh.mac.to_string(),
            complete,
            received: Some(received),
            oldest: Some(oldest),
            written: Some(written),
        };
        self.call(LEAVE_PATH, &req, Duration::ZERO)
    }
}

/// The join request of this node.
pub(crate) fn join_request(sh: &Shared, listen: &str) -> Join {
    Join {
        session: sh.session.to_string(),
        mac: sh.mac.to_string(),
        listen: listen.to_owned(),
        next: sh.lock().ring.next(),
    }
}

/// The control thread: heartbeats (long polls) until the node stops, and
/// the watchdog that gives up on the chain.
pub(crate) fn control_loop(sh: &Shared, listen: &str) {
    let mut unreachable_since: Option<Instant> = None;
    loop {
        let hb = {
            let st = sh.lock();
            if st.stop.is_some() {
                return;
            }
            Heartbeat {
                session: sh.session.to_string(),
                mac: sh.mac.to_string(),
                generation: st.assignment.generation,
                received: st.ring.next(),
                oldest: st.ring.oldest(),
                written: st.stats.written,
                backpressured: st.backpressured,
                bytes: Some(sh.bytes_in.load(Ordering::Relaxed)),
                downstreams: st
                    .downstreams
                    .iter()
                    .map(|d| DownstreamProgress {
                        mac: d.mac.to_string(),
                        next: d.pos,
                    })
                    .collect(),
                wait_ms: st.assignment.heartbeat_ms,
            }
        };
        let asked = Instant::now();
        match sh.coordinator.heartbeat(&hb) {
            Ok(a) => {
                unreachable_since = None;
                let same = a.generation == hb.generation;
                sh.apply(a, false);
                // A coordinator that does not hold long polls is not
                // hammered: at most one heartbeat per interval.
                let interval = Duration::from_millis(hb.wait_ms.into());
                if same {
                    let mut st = sh.lock();
                    while st.stop.is_none() && asked.elapsed() < interval {
                        st = sh.wait(st, interval.saturating_sub(asked.elapsed()));
                    }
                }
            }
            Err(CallError::Refused { status, text, .. }) if status == 404 || status == 409 => {
                // The coordinator does not know this node (it restarted,
                // or dropped the session): join again.
                log::warn!("chain: coordinator: {text}; joining again");
                match sh
                    .coordinator
                    .join(&join_request(sh, listen), Duration::ZERO, Duration::ZERO)
                {
                    Ok(a) => sh.apply(a, true),
                    Err(e) => log::warn!("chain: joining again: {e}"),
                }
                pause(sh);
            }
            Err(e) => {
                if unreachable_since.is_none() {
                    log::warn!("chain: heartbeat: {e}");
                }
                unreachable_since.get_or_insert_with(Instant::now);
                pause(sh);
            }
        }
        watchdog(sh, unreachable_since);
    }
}

fn pause(sh: &Shared) {
    let st = sh.lock();
    if st.stop.is_none() {
        drop(sh.wait(st, sh.cfg.retry_pause));
    }
}

/// Give up on the chain when it has not delivered for `fallback_after`
/// while attached (and not because the local disk is the slow part), or
/// when no coordinator has answered for that long.
fn watchdog(sh: &Shared, unreachable_since: Option<Instant>) {
    let limit = sh.cfg.fallback_after;
    let mut st = sh.lock();
    if st.fallback.is_some() || st.ring.next() >= sh.total {
        return;
    }
    let stuck = st.assignment.status == Status::Attached
        && !st.backpressured
        && st.last_progress.elapsed() > limit;
    let lost = unreachable_since.is_some_and(|t| t.elapsed() > limit);
    let why = if stuck {
        format!("no chunk from the chain for {}s", limit.as_secs())
    } else if lost {
        format!("no coordinator answered for {}s", limit.as_secs())
    } else {
        return;
    };
    log::warn!("chain: {why}: fetching the rest without the chain");
    st.stats.fallback = Some(why.clone());
    st.fallback = Some(why);
    if let Some(up) = st.upstream.take() {
        let _ = up.shutdown(std::net::Shutdown::Both);
    }
    sh.cond.notify_all();
}
