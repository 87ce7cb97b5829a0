//! Chain mode (`deploy.mode=chain`): Ka-deploy's relay chain, self-healing.
//!
//! **Roles.** The server is the head of a session (one per image
//! `NAME@VERSION`) and its coordinator; every node joins, is given an
//! upstream (the head or another node), receives the payload's compressed
//! chunks in order, verifies each against the signed manifest, hands it to
//! its own write pipeline and forwards it to its downstreams. Arity 1 (a
//! chain) by default, k for a tree; the coordinator decides the shape.
//!
//! **Data plane** ([`frame`]): TCP, length-prefixed binary frames, HELLO
//! (version, session, MAC, first chunk wanted) → WELCOME, then the chunks
//! in order — as PART frames forwarded as they arrive (cut-through), or
//! whole CHUNK frames to a version-1 downstream — with KEEPALIVEs in
//! silences, or REFUSE (e.g. `TooOld`: the chunk left the replay buffer). Every frame is bounded (the largest chunk in
//! the manifest + 5 bytes; 2 KiB for HELLO) and every read is under a
//! timeout. The head speaks the same protocol from the payload file: an
//! upstream with an infinite replay buffer.
//!
//! **A node** ([`deploy_source`]) runs three threads and one per
//! downstream:
//! - the receiver ([`relay`]) connects to its upstream, says HELLO with its
//!   next chunk, shares each chunk's parts with the senders as they
//!   arrive, verifies the whole chunk *before* using it, and appends it to
//!   the replay buffer ([`ring`]);
//! - the listener ([`serve`]) gives each downstream a sender that streams
//!   from the replay buffer as chunks arrive;
//! - the control thread ([`control`]) heartbeats the coordinator with the
//!   node's progress; each heartbeat is also a long poll that returns as
//!   soon as the node's assignment changes;
//! - the local pipeline pulls from the same buffer through
//!   [`ChainSource`], a [`ChunkSource`] like the
//!   HTTP one, so the chain feeds the same verify → inflate → write code.
//!
//! The replay buffer is the local queue and the downstreams' history at
//! once (chunks shared, not copied), bounded by `ring_bytes` (64 MiB) plus
//! one chunk. Past that it drops its oldest chunks, except ([`hold`]):
//! those the local disk has not taken, ever; those a connected downstream
//! has not taken, for at most `downstream_grace` (3 s) at a time; and
//! everything, for as long, while a downstream the coordinator assigned
//! has not connected yet (the chain's start, a reattachment). The
//! receiver stops reading only while the buffer is held full: a slow disk
//! slows its subtree once the buffer is full (the coordinator then moves
//! the node to the tail); a slow downstream costs this node at most the
//! grace, then is refused (`TooOld`) and catches up from the head.
//!
//! **Healing.** Any upstream failure — connection refused or broken,
//! silence past `io_timeout`, keep-alives without chunks past
//! `stall_timeout`, a chunk failing its hash, a refusal — is reported to
//! the coordinator (`upstream-failed`), whose answer is the new upstream;
//! the node resumes from its first unverified chunk (the coordinator's
//! rules are in `drover_server::chain::topology`). Failures it cannot fix
//! end in the fallback: if the chain delivers nothing for
//! `fallback_after` (120 s) while attached, or no coordinator answers that
//! long, the rest comes from the fallback source (plain HTTP), verified,
//! and still goes through the replay buffer to the downstreams.
//!
//! **Ending.** [`ChainSource::finish`] keeps serving until the coordinator
//! says no downstream still needs this node (at most a linger time), then
//! leaves; dropping the source leaves at once. A node that vanishes is
//! noticed by its downstream (or by its silence) and bypassed.
//!
//! **Coordinator API** ([`api`]): JSON over HTTP with the node's token as
//! `Authorization: Bearer`: `join`, `heartbeat` (long poll), `upstream-failed`,
//! `leave`, and for admins `start` and the session status. The server side
//! is `drover_server::chain`.

pub mod api;
pub mod control;
pub mod frame;
pub mod hold;
pub mod relay;
pub mod ring;
pub mod serve;
pub mod source;

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use kernel_cmdline::{MacAddr, ServerUrl};

use crate::image::{ChunkSource, Manifest};
pub use api::{Assignment, Status};
pub use frame::SessionId;
pub use relay::{ForwardTap, RelayConfig, RelayStats};
use relay::{Shared, State};
use ring::Ring;
pub use source::{ChainSource, RelayHandle};

/// How a node takes part in a chain.
#[derive(Debug, Clone)]
pub struct ChainOptions {
    /// The coordinators (`deploy.server`), tried in order.
    pub servers: Vec<ServerUrl>,
    /// `deploy.token`, sent as `Authorization: Bearer`.
    pub token: Option<String>,
    /// This node.
    pub mac: MacAddr,
    /// Where to listen for downstreams (`0.0.0.0:0`: any port).
    pub listen: SocketAddr,
    /// What to tell the coordinator instead of the bound address. An
    /// unspecified IP lets the coordinator use the address it sees.
    pub advertise: Option<SocketAddr>,
    pub relay: RelayConfig,
}

/// The port a node listens on for downstreams by default.
pub const DEFAULT_PORT: u16 = 7151;

impl ChainOptions {
    /// A node's usual options: listen on every address at
    /// [`DEFAULT_PORT`], let the coordinator see which one it is, default
    /// timers and buffer.
    pub fn new(servers: Vec<ServerUrl>, token: Option<String>, mac: MacAddr) -> Self {
        ChainOptions {
            servers,
            token,
            mac,
            listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            advertise: None,
            relay: RelayConfig::default(),
        }
    }
}

/// Join `manifest`'s session and start relaying; the returned source
/// delivers the payload's chunks in order. `fallback` (an HTTP source)
/// serves whatever the chain cannot. Fails if no coordinator answers
/// within `fallback_after` or one refuses the node: the caller can then
/// deploy over HTTP instead.
pub fn deploy_source(
    opts: ChainOptions,
    manifest: Arc<Manifest>,
    fallback: Option<Box<dyn ChunkSource + Send>>,
) -> Result<ChainSource> {
    let listener = TcpListener::bind(opts.listen)
        .with_context(|| format!("listening for chain downstreams on {}", opts.listen))?;
    let bound = listener
        .local_addr()
        .context("reading the listen address")?;
    let mut advertise = opts.advertise.unwrap_or(bound);
    if advertise.port() == 0 {
        advertise.set_port(bound.port());
    }
    let session = SessionId::of(&manifest);
    let total = u32::try_from(manifest.chunks.len()).context("chunk count")?;
    let largest = frame::limit_for(&manifest);
    let cfg = opts.relay;
    let coordinator = control::Coordinator::new(opts.servers, opts.token, cfg.connect_timeout * 2);
    let listen = advertise.to_string();
    let join = api::Join {
        session: session.to_string(),
        mac: opts.mac.to_string(),
        listen: listen.clone(),
        next: 0,
    };
    let assignment = coordinator
        .join(&join, cfg.fallback_after, cfg.retry_pause)
        .with_context(|| format!("joining chain session {session}"))?;
    log::info!(
        "chain: joined {session} as {} listening on {listen}: {}",
        opts.mac,
        relay::describe(&assignment)
    );
    let state = State {
        // Room for two of the largest chunks whatever the configuration.
        ring: Ring::new(cfg.ring_bytes.max(2 * largest), 0),
        local: 0,
        missing_since: None,
        assignment: assignment.clone(),
        upstream: None,
        downstreams: Vec::new(),
        next_id: 0,
        stop: None,
        fallback: None,
        backpressured: false,
        partial: None,
        restarts: 0,
        last_progress: Instant::now(),
        stats: RelayStats {
            generation: assignment.generation,
            ..RelayStats::default()
        },
    };
    let sh = Arc::new(Shared {
        limit: largest,
        total,
        manifest,
        session,
        mac: opts.mac,
        cfg,
        coordinator,
        bytes_in: std::sync::atomic::AtomicU64::new(0),
        state: Mutex::new(state),
        cond: Condvar::new(),
    });
    // From here on, dropping `source` stops whatever was started.
    let mut source = ChainSource {
        sh: sh.clone(),
        fallback,
        threads: Vec::new(),
        listen: bound,
        ended: false,
    };
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .with_context(|| format!("starting the {name} thread"))
    };
    let s = sh.clone();
    let t = spawn(
        "chain-listen",
        Box::new(move || serve::listen_loop(s, listener)),
    )?;
    source.threads.push(t);
    let s = sh.clone();
    let t = spawn("chain-receive", Box::new(move || relay::receive_loop(&s)))?;
    source.threads.push(t);
    let t = spawn(
        "chain-control",
        Box::new(move || control::control_loop(&sh, &listen)),
    )?;
    source.threads.push(t);
    Ok(source)
}

/// How long a finished node keeps serving its downstreams by default.
pub const DEFAULT_LINGER: Duration = Duration::from_secs(300);
