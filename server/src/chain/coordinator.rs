//! The coordinator: sessions keyed by `NAME@VERSION`, each a
//! [`Session`] behind one lock (held only for
//! pure, short transitions, never across an await), and a watch channel
//! per session that wakes long polls when any assignment changed.
//! Time-based transitions (start on timeout, silence, slow nodes) run on
//! every request and every 250 ms of every long poll, and on
//! [`Coordinator::run_ticker`]'s beat for when no node is polling.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use drover_agent::chain::api::{Assignment, FailReason, SessionStatus, MAX_WAIT_MS};
use drover_agent::chain::SessionId;
use kernel_cmdline::MacAddr;
use tokio::sync::watch;

use super::lookup::{ChainAuth, ImageLookup};
use super::topology::{Progress, Session, SessionConfig, Upstream};

/// How the coordinator is set up.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// The head listener as nodes reach it (a routable address).
    pub head: SocketAddr,
    /// Policy of sessions created by a node's join.
    pub defaults: SessionConfig,
}

/// A request the coordinator will not serve: the HTTP status and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotFound(String),
}

struct Entry {
    session: Session,
    changes: watch::Sender<u64>,
}

impl Entry {
    /// Begin the session anew (a new deployment of an image whose last
    /// session is over); long polls keep their channel.
    fn renew(&mut self, session: Session) {
        self.session = session;
        self.session.version = self.changes.borrow().wrapping_add(1);
        self.changes.send_replace(self.session.version);
    }
}

/// How many nodes a session made by a join (not by a deploy) should
/// expect, e.g. after a server restart: the fleet's deployments of that
/// image in chain mode still in progress.
pub type ExpectedHook = Arc<dyn Fn(&SessionId) -> Option<u32> + Send + Sync>;

/// Told when the coordinator declares a node failed (silent past
/// `dead_after`): the session, the node, why.
pub type FailureHook = Arc<dyn Fn(&SessionId, MacAddr, &str) + Send + Sync>;

/// See the module documentation.
pub struct Coordinator {
    cfg: CoordinatorConfig,
    auth: Arc<dyn ChainAuth>,
    images: Arc<dyn ImageLookup>,
    sessions: Mutex<HashMap<SessionId, Entry>>,
    on_failed: Mutex<Option<FailureHook>>,
    expected: Mutex<Option<ExpectedHook>>,
    /// `cfg.head`, or where the head really listens once bound (a
    /// configured port 0).
    head: Mutex<SocketAddr>,
}

impl Coordinator {
    pub fn new(
        cfg: CoordinatorConfig,
        auth: Arc<dyn ChainAuth>,
        images: Arc<dyn ImageLookup>,
    ) -> Arc<Self> {
        Arc::new(Coordinator {
            auth,
            images,
            sessions: Mutex::new(HashMap::new()),
            on_failed: Mutex::new(None),
            expected: Mutex::new(None),
            head: Mutex::new(cfg.head),
            cfg,
        })
    }

    /// The head's address as nodes are told it.
    pub fn head(&self) -> SocketAddr {
        *self.head.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The head listener is bound: with a configured port 0, tell nodes
    /// the port it got.
    pub fn head_bound(&self, port: u16) {
        let mut head = self.head.lock().unwrap_or_else(|e| e.into_inner());
        if head.port() == 0 {
            head.set_port(port);
        }
    }

    /// Call `hook` for every node declared failed from now on.
    pub fn on_failed(&self, hook: FailureHook) {
        *self.on_failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }

    /// Ask `hook` how many nodes a session made by a join should expect.
    pub fn on_new_session(&self, hook: ExpectedHook) {
        *self.expected.lock().unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }

    /// The policy of a session made by a join: the defaults, expecting
    /// what the hook says (so it starts as soon as they are all back
    /// rather than after the join timeout).
    async fn join_config(&self, id: &SessionId) -> SessionConfig {
        let mut cfg = self.cfg.defaults.clone();
        let hook = self
            .expected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(hook) = hook {
            let key = id.clone();
            cfg.expected = tokio::task::spawn_blocking(move || hook(&key))
                .await
                .ok()
                .flatten()
                .filter(|&n| n > 0);
        }
        if let Some(n) = cfg.expected {
            log::info!("chain session {id}: expecting {n} nodes (deployments in progress)");
        }
        cfg
    }

    /// Take the sessions' newly failed nodes and tell the hook, outside
    /// the sessions' lock.
    fn tell_failures(&self, failed: Vec<(SessionId, MacAddr, String)>) {
        if failed.is_empty() {
            return;
        }
        let hook = self
            .on_failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(hook) = hook {
            for (id, mac, why) in failed {
                hook(&id, mac, &why);
            }
        }
    }

    pub fn auth(&self) -> &dyn ChainAuth {
        &*self.auth
    }

    /// The image lookup (the head serves from the same one).
    pub fn images(&self) -> Arc<dyn ImageLookup> {
        self.images.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Entry>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Create `id`'s session with `cfg` (e.g. the expected node count of
    /// a deploy); a running session keeps its nodes and takes `cfg`, one
    /// that is over is replaced.
    pub async fn open_session(&self, id: &SessionId, cfg: SessionConfig) -> Result<(), ApiError> {
        let total = self.chunk_count(id).await?;
        let mut sessions = self.lock();
        match sessions.get_mut(id) {
            Some(e) if e.session.is_over() => {
                log::info!("chain session {id}: the last one is over; a new one begins");
                e.renew(Session::new(id.clone(), total, cfg));
            }
            Some(e) => e.session.cfg = cfg,
            None => {
                sessions.insert(id.clone(), new_entry(id, total, cfg));
            }
        }
        Ok(())
    }

    async fn chunk_count(&self, id: &SessionId) -> Result<u32, ApiError> {
        let images = self.images.clone();
        let key = id.clone();
        let info = tokio::task::spawn_blocking(move || images.image(&key))
            .await
            .map_err(|e| ApiError::NotFound(format!("looking up {id}: {e}")))?
            .map_err(ApiError::NotFound)?;
        u32::try_from(info.manifest.chunks.len())
            .map_err(|_| ApiError::BadRequest(format!("{id} has too many chunks")))
    }

    /// Run `f` on the session (created from the image on first use when
    /// `create`), publish any change, and answer for `mac`.
    async fn with_session<R>(
        &self,
        id: &SessionId,
        create: bool,
        f: impl FnOnce(&mut Session, Instant) -> R,
    ) -> Result<R, ApiError> {
        let usable =
            |s: &HashMap<SessionId, Entry>| s.get(id).is_some_and(|e| !e.session.is_over());
        if create && !usable(&self.lock()) {
            let total = self.chunk_count(id).await?;
            let cfg = self.join_config(id).await;
            let mut sessions = self.lock();
            match sessions.get_mut(id) {
                Some(e) if e.session.is_over() => {
                    log::info!("chain session {id}: the last one is over; a new one begins");
                    e.renew(Session::new(id.clone(), total, cfg));
                }
                Some(_) => {}
                None => {
                    sessions.insert(id.clone(), new_entry(id, total, cfg));
                }
            }
        }
        let mut sessions = self.lock();
        let e = sessions
            .get_mut(id)
            .ok_or_else(|| ApiError::NotFound(format!("no chain session {id}")))?;
        let before = e.session.version;
        let r = f(&mut e.session, Instant::now());
        if e.session.version != before {
            e.changes.send_replace(e.session.version);
        }
        let failed = take_failed(id, &mut e.session);
        drop(sessions);
        self.tell_failures(failed);
        Ok(r)
    }

    /// What `mac` should do, with addresses.
    fn answer(&self, s: &Session, mac: &MacAddr, now: Instant) -> Result<Assignment, ApiError> {
        let p = s
            .placement(mac)
            .ok_or_else(|| ApiError::NotFound(format!("{mac} has not joined {}", s.id)))?;
        let upstream = p.upstream.and_then(|u| match u {
            Upstream::Head => Some(self.head().to_string()),
            Upstream::Node(m) => s.node(&m).map(|n| n.listen.to_string()),
        });
        Ok(Assignment {
            session: s.id.to_string(),
            status: p.status,
            generation: p.generation,
            upstream,
            heartbeat_ms: u32::try_from(s.heartbeat_for(mac, now).as_millis()).unwrap_or(u32::MAX),
            downstreams_pending: p.downstreams_pending,
        })
    }

    pub async fn join(
        &self,
        id: &SessionId,
        mac: MacAddr,
        listen: SocketAddr,
        next: u32,
    ) -> Result<Assignment, ApiError> {
        self.with_session(id, true, |s, now| {
            s.join(mac, listen, next, now);
            self.answer(s, &mac, now)
        })
        .await?
    }

    /// Record a heartbeat; if the node's assignment is still `generation`,
    /// hold the answer until it changes or `wait` passes.
    pub async fn heartbeat(
        &self,
        id: &SessionId,
        mac: MacAddr,
        generation: u64,
        progress: Progress,
        wait: Duration,
    ) -> Result<Assignment, ApiError> {
        let deadline = Instant::now() + wait.min(Duration::from_millis(MAX_WAIT_MS.into()));
        // Subscribed before the first look, so no change is missed.
        let mut changes = self.subscribe(id);
        let mut answer = self
            .with_session(id, false, |s, now| {
                s.heartbeat(mac, progress, now)
                    .map_err(|e| ApiError::NotFound(e.to_string()))?;
                self.answer(s, &mac, now)
            })
            .await??;
        loop {
            let now = Instant::now();
            if answer.generation != generation || now >= deadline {
                return Ok(answer);
            }
            let nap = (deadline - now).min(Duration::from_millis(250));
            if let Some(rx) = changes.as_mut() {
                // Woken by a change or the nap's end; either way look again.
                let _ = tokio::time::timeout(nap, rx.changed()).await;
            } else {
                tokio::time::sleep(nap).await;
            }
            answer = self
                .with_session(id, false, |s, now| {
                    s.tick(now);
                    self.answer(s, &mac, now)
                })
                .await??;
        }
    }

    fn subscribe(&self, id: &SessionId) -> Option<watch::Receiver<u64>> {
        self.lock().get(id).map(|e| e.changes.subscribe())
    }

    pub async fn upstream_failed(
        &self,
        id: &SessionId,
        mac: MacAddr,
        generation: u64,
        reason: FailReason,
        want: u32,
        detail: &str,
    ) -> Result<Assignment, ApiError> {
        self.with_session(id, false, |s, now| {
            s.report(mac, generation, reason, want, detail, now)
                .map_err(|e| ApiError::NotFound(e.to_string()))?;
            self.answer(s, &mac, now)
        })
        .await?
    }

    /// `mac` leaves, with its last progress if it said it.
    pub async fn leave(
        &self,
        id: &SessionId,
        mac: MacAddr,
        complete: bool,
        last: Option<Progress>,
    ) -> Result<Assignment, ApiError> {
        self.with_session(id, false, |s, now| {
            s.leave(mac, complete, last, now)
                .map_err(|e| ApiError::NotFound(e.to_string()))?;
            self.answer(s, &mac, now)
        })
        .await?
    }

    /// Start `id` now, whoever has joined.
    pub async fn start(&self, id: &SessionId) -> Result<SessionStatus, ApiError> {
        self.with_session(id, false, |s, now| {
            s.start(now);
            s.status()
        })
        .await
    }

    /// `id`'s session as it stands now (the clock applied first).
    pub fn status(&self, id: &SessionId) -> Option<SessionStatus> {
        self.tick();
        self.lock().get(id).map(|e| e.session.status())
    }

    /// Tick every `period` forever: failures are noticed and sessions start
    /// on time even while no node polls. Spawn it beside the routes.
    pub async fn run_ticker(self: Arc<Self>, period: Duration) {
        let mut every = tokio::time::interval(period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            self.tick();
        }
    }

    /// Apply the clock to every session.
    pub fn tick(&self) {
        let now = Instant::now();
        let mut failed = Vec::new();
        for (id, e) in self.lock().iter_mut() {
            let before = e.session.version;
            e.session.tick(now);
            if e.session.version != before {
                e.changes.send_replace(e.session.version);
            }
            failed.extend(take_failed(id, &mut e.session));
        }
        self.tell_failures(failed);
    }
}

fn take_failed(id: &SessionId, s: &mut Session) -> Vec<(SessionId, MacAddr, String)> {
    s.newly_failed
        .drain(..)
        .map(|(mac, why)| (id.clone(), mac, why))
        .collect()
}

fn new_entry(id: &SessionId, total: u32, cfg: SessionConfig) -> Entry {
    log::info!("chain session {id}: {total} chunks, arity {}", cfg.arity);
    Entry {
        session: Session::new(id.clone(), total, cfg),
        changes: watch::channel(0).0,
    }
}
