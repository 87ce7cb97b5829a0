//! A relay node's shared state and its receiver: connect to the upstream
//! the coordinator named, say HELLO with the next chunk needed, verify
//! every chunk against the signed table, add it to the replay buffer.
//! Any failure is reported to the coordinator, whose answer says where to
//! resume (the same upstream or another) — always from the first chunk
//! not yet verified. The parts of the chunk being received are shared
//! with the downstream senders as they arrive ([`Partial`]; cut-through,
//! see `frame`), but only a verified chunk enters the replay buffer.

use std::io::{BufReader, Read, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kernel_cmdline::MacAddr;

use super::api::{Assignment, FailReason, Status};
use super::control::Coordinator;
use super::frame::{self, Frame, Hello, RefuseCode, SessionId};
use super::hold;
use super::ring::{Bytes, Ring};
use crate::image::{verify_chunk, Manifest};

/// A hook on the bytes this node forwards (chunk index, offset in the
/// chunk, the bytes): fault injection for tests (a node that corrupts
/// what it forwards). `None` in real use.
pub type ForwardTap = Arc<dyn Fn(u32, usize, &mut Vec<u8>) + Send + Sync>;

/// Limits and timers of a relay node.
#[derive(Clone)]
pub struct RelayConfig {
    /// Replay buffer (shared with the local pipeline's queue), bytes; at
    /// least two of the image's largest chunks are always allowed.
    pub ring_bytes: usize,
    /// Connecting to an upstream or the coordinator.
    pub connect_timeout: Duration,
    /// Any read or write on a chain connection: an upstream silent this
    /// long (not even a keep-alive) is dead, a downstream that takes
    /// nothing this long is dropped.
    pub io_timeout: Duration,
    /// Send a KEEPALIVE downstream after this long without a chunk.
    pub keepalive: Duration,
    /// Keep-alives but no chunk for this long: the upstream is reported
    /// stalled (the coordinator decides whether it is at fault).
    pub stall_timeout: Duration,
    /// No chunk received for this long while attached, or the coordinator
    /// unreachable this long: stop receiving from the chain and fetch the
    /// rest from the fallback source (plain HTTP), still serving
    /// downstreams from the replay buffer.
    pub fallback_after: Duration,
    /// Concurrent downstream connections served.
    pub max_downstreams: usize,
    /// How long the replay buffer, once full, waits for a downstream that
    /// has not taken its oldest chunk (or, when one is assigned, has not
    /// connected yet) before dropping chunks anyway.
    pub downstream_grace: Duration,
    /// Pause before reconnecting after a failure the coordinator did not
    /// answer with a new assignment.
    pub retry_pause: Duration,
    /// The largest PART sent to a version-2 downstream (clamped to
    /// `frame::PART_MIN..=PART_MAX`): how far ahead of verification each
    /// hop forwards.
    pub part_bytes: usize,
    /// See [`ForwardTap`].
    pub forward_tap: Option<ForwardTap>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            ring_bytes: 64 << 20,
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(15),
            keepalive: Duration::from_secs(3),
            stall_timeout: Duration::from_secs(30),
            fallback_after: Duration::from_secs(120),
            max_downstreams: 8,
            downstream_grace: Duration::from_secs(3),
            retry_pause: Duration::from_secs(1),
            part_bytes: frame::PART_MAX,
            forward_tap: None,
        }
    }
}

impl std::fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayConfig")
            .field("ring_bytes", &self.ring_bytes)
            .field("io_timeout", &self.io_timeout)
            .field("keepalive", &self.keepalive)
            .field("stall_timeout", &self.stall_timeout)
            .field("fallback_after", &self.fallback_after)
            .field("max_downstreams", &self.max_downstreams)
            .field("downstream_grace", &self.downstream_grace)
            .field("forward_tap", &self.forward_tap.is_some())
            .finish_non_exhaustive()
    }
}

/// How a node stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Leave the coordinator a note, close connections.
    Graceful,
    /// Vanish (a crash, for tests): close everything, tell no one.
    Kill,
}

/// One connected downstream.
#[derive(Debug)]
pub(crate) struct Downstream {
    pub id: u64,
    pub mac: MacAddr,
    pub stream: TcpStream,
    /// The next chunk it will be sent.
    pub pos: u32,
    /// The buffer keeps what it has not taken (see `hold`).
    pub protected: bool,
}

/// Counters for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Chunks received and verified (`0..received`).
    pub received: u32,
    /// Chunks taken by the local pipeline.
    pub written: u32,
    /// The oldest chunk in the replay buffer.
    pub oldest: u32,
    /// The current assignment's generation.
    pub generation: u64,
    /// Upstream connections made.
    pub connections: u32,
    /// Chunks refused because they failed verification.
    pub corrupt: u32,
    /// Upstream failures reported to the coordinator.
    pub reports: u32,
    /// Downstreams currently connected.
    pub downstreams: u32,
    /// Chunks sent downstream.
    pub forwarded: u64,
    /// Parts sent downstream before this node had the whole chunk
    /// (cut-through).
    pub parts_ahead: u64,
    /// Chunks whose parts were dropped before they were complete (their
    /// upstream failed or the chunk did not verify); downstreams were sent
    /// them again from the start.
    pub restarts: u64,
    /// Why the chain stopped feeding this node, if it did.
    pub fallback: Option<String>,
}

pub(crate) struct State {
    pub ring: Ring,
    /// The local pipeline's next chunk.
    pub local: u32,
    /// Since when an assigned downstream has not connected.
    pub missing_since: Option<Instant>,
    pub assignment: Assignment,
    /// The upstream connection, to cut it when the assignment changes.
    pub upstream: Option<TcpStream>,
    pub downstreams: Vec<Downstream>,
    pub next_id: u64,
    pub stop: Option<Stop>,
    /// Set once the chain cannot feed this node; the source fetches the
    /// rest elsewhere.
    pub fallback: Option<String>,
    pub backpressured: bool,
    /// The chunk being received, as far as it came (unverified).
    pub partial: Option<Partial>,
    /// Bumped whenever a partial chunk is dropped: a sender that sent part
    /// of it must start that chunk over.
    pub restarts: u64,
    pub last_progress: Instant,
    pub stats: RelayStats,
}

/// The parts received so far of chunk `index` (`ring.next()`): what
/// cut-through forwards before the chunk can be verified. Its last part is
/// never here — the chunk goes to the replay buffer once verified instead
/// — so a downstream never completes a chunk from it.
#[derive(Debug)]
pub(crate) struct Partial {
    pub index: u32,
    /// (offset in the chunk, bytes), contiguous from 0.
    pub parts: Vec<(usize, Bytes)>,
    pub len: usize,
}

impl Partial {
    /// The parts holding bytes `from..`.
    pub fn from(&self, from: usize) -> Vec<(usize, Bytes)> {
        self.parts
            .iter()
            .filter(|(at, b)| at + b.len() > from)
            .cloned()
            .collect()
    }
}

/// Everything the relay's threads share.
pub(crate) struct Shared {
    pub manifest: Arc<Manifest>,
    pub session: SessionId,
    pub mac: MacAddr,
    pub cfg: RelayConfig,
    /// Frame limit for what upstreams send.
    pub limit: usize,
    pub total: u32,
    pub coordinator: Coordinator,
    /// Bytes read from upstreams, counted as they arrive (heartbeats
    /// report it: the coordinator's measure of this node's link).
    pub bytes_in: AtomicU64,
    pub state: Mutex<State>,
    pub cond: Condvar,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panicked relay thread must not take the deploy with it; no
        // update of the state can be cut in half by a panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn wait<'a>(&self, g: MutexGuard<'a, State>, d: Duration) -> MutexGuard<'a, State> {
        match self.cond.wait_timeout(g, d) {
            Ok((g, _)) => g,
            Err(e) => e.into_inner().0,
        }
    }

    /// Take a coordinator answer. Older generations are stale (answers
    /// can cross); `force` takes any (after a re-join).
    pub fn apply(&self, a: Assignment, force: bool) {
        let mut st = self.lock();
        if st.stop.is_some() {
            return;
        }
        let cur = st.assignment.clone();
        if force || a.generation > cur.generation {
            if a.upstream != cur.upstream || a.status != cur.status {
                log::info!("chain: assignment {}: {}", a.generation, describe(&a));
            }
            if let Some(up) = st.upstream.take() {
                let _ = up.shutdown(Shutdown::Both);
            }
            if a.status == Status::Attached && cur.status != Status::Attached {
                // The no-progress watchdog counts from the attachment.
                st.last_progress = Instant::now();
            }
            st.stats.generation = a.generation;
            st.assignment = a;
        } else if a.generation == cur.generation {
            st.assignment.heartbeat_ms = a.heartbeat_ms;
            st.assignment.downstreams_pending = a.downstreams_pending;
        } else {
            return;
        }
        // The expected downstreams may have changed.
        st.refloor(Instant::now(), self.cfg.downstream_grace);
        self.cond.notify_all();
    }

    /// Stop every thread; close every connection.
    pub fn stop(&self, how: Stop) {
        let mut st = self.lock();
        st.stop.get_or_insert(how);
        if let Some(up) = st.upstream.take() {
            let _ = up.shutdown(Shutdown::Both);
        }
        for d in &st.downstreams {
            let _ = d.stream.shutdown(Shutdown::Both);
        }
        self.cond.notify_all();
    }
}

pub(crate) fn describe(a: &Assignment) -> String {
    match (a.status, &a.upstream) {
        (Status::Attached, Some(u)) => format!("receive from {u}"),
        (Status::Attached, None) => "attached without an upstream".into(),
        (Status::Waiting, _) => "wait for an upstream (the session has not started)".into(),
        (Status::Fallback, _) => "leave the chain, fetch over HTTP".into(),
    }
}

/// Why one upstream connection ended.
enum Outcome {
    /// Every chunk received.
    Done,
    /// The assignment changed or the node is stopping: no report.
    Interrupted,
    /// Report this.
    Failed(FailReason, String),
}

/// The receiver thread.
pub(crate) fn receive_loop(sh: &Shared) {
    loop {
        let (generation, upstream, want) = {
            let mut st = sh.lock();
            loop {
                if st.stop.is_some() || st.fallback.is_some() {
                    return;
                }
                if st.ring.next() >= sh.total {
                    return;
                }
                let a = &st.assignment;
                match (a.status, &a.upstream) {
                    (Status::Attached, Some(u)) => break (a.generation, u.clone(), st.ring.next()),
                    (Status::Fallback, _) => {
                        st.fallback =
                            Some("the coordinator took this node out of the chain".into());
                        st.stats.fallback = st.fallback.clone();
                        sh.cond.notify_all();
                        return;
                    }
                    _ => st = sh.wait(st, Duration::from_millis(500)),
                }
            }
        };
        match receive(sh, generation, &upstream, want) {
            Outcome::Done => {
                log::info!("chain: received all {} chunks", sh.total);
                return;
            }
            Outcome::Interrupted => {}
            Outcome::Failed(reason, detail) => {
                if sh.lock().stop.is_some() {
                    return;
                }
                let want = sh.lock().ring.next();
                log::warn!("chain: upstream {upstream}: {detail}");
                sh.lock().stats.reports += 1;
                let moved = match sh
                    .coordinator
                    .upstream_failed(sh, generation, reason, want, &detail)
                {
                    Ok(a) => {
                        let moved = a.generation != generation;
                        sh.apply(a, false);
                        moved
                    }
                    Err(e) => {
                        log::warn!("chain: reporting it: {e:#}");
                        false
                    }
                };
                if !moved {
                    // Same upstream again (first strike, the head, or no
                    // coordinator): not in a tight loop.
                    let st = sh.lock();
                    drop(sh.wait(st, sh.cfg.retry_pause));
                }
            }
        }
    }
}

/// One upstream connection, from HELLO to the last chunk or a failure.
fn receive(sh: &Shared, generation: u64, upstream: &str, want: u32) -> Outcome {
    let outcome = receive_from(sh, generation, upstream, want);
    // Whatever came of the chunk in progress is dropped: the next
    // connection starts it over, and so must the downstreams.
    drop_partial(&mut sh.lock());
    sh.cond.notify_all();
    outcome
}

fn drop_partial(st: &mut State) {
    if st.partial.take().is_some() {
        st.restarts += 1;
        st.stats.restarts += 1;
    }
}

fn receive_from(sh: &Shared, generation: u64, upstream: &str, want: u32) -> Outcome {
    let interrupted = |sh: &Shared| {
        let st = sh.lock();
        st.stop.is_some() || st.assignment.generation != generation
    };
    let dead = |what: String| Outcome::Failed(FailReason::Dead, what);
    let addr: SocketAddr = match upstream.parse() {
        Ok(a) => a,
        Err(_) => return dead(format!("{upstream:?} is not IP:PORT")),
    };
    let stream = match TcpStream::connect_timeout(&addr, sh.cfg.connect_timeout) {
        Ok(s) => s,
        Err(e) => return dead(format!("connecting: {e}")),
    };
    let setup = stream
        .set_read_timeout(Some(sh.cfg.io_timeout))
        .and_then(|()| stream.set_write_timeout(Some(sh.cfg.io_timeout)))
        .and_then(|()| stream.set_nodelay(true))
        .and_then(|()| stream.try_clone());
    let handle = match setup {
        Ok(h) => h,
        Err(e) => return dead(format!("setting up the connection: {e}")),
    };
    {
        let mut st = sh.lock();
        if st.stop.is_some() || st.assignment.generation != generation {
            return Outcome::Interrupted;
        }
        st.upstream = Some(handle);
        st.stats.connections += 1;
    }
    let hello = Frame::Hello(Hello {
        session: sh.session.clone(),
        mac: sh.mac,
        want,
        version: frame::VERSION,
    });
    if let Err(e) = (&stream).write_all(&hello.encode()) {
        return dead(format!("sending HELLO: {e}"));
    }
    // Frames are read through a buffer: one syscall per many small frames.
    let counted = Counted {
        inner: &stream,
        count: &sh.bytes_in,
    };
    let mut reader = BufReader::with_capacity(256 << 10, counted);
    let mut next = want;
    let mut welcomed = false;
    let mut last_chunk = Instant::now();
    // Time spent not reading because the buffer was full: an upstream
    // may drop a connection that took nothing for that long, which is
    // then no fault of the upstream.
    let mut waited = Duration::ZERO;
    loop {
        let frame = match frame::read_frame(&mut reader, sh.limit) {
            Ok(f) => f,
            Err(_) if interrupted(sh) => return Outcome::Interrupted,
            Err(_) if waited >= sh.cfg.io_timeout / 2 => {
                log::info!("chain: the upstream dropped this node after it stopped reading for a while; reconnecting");
                return Outcome::Interrupted;
            }
            Err(e) => return dead(format!("{:#}", anyhow::Error::from(e))),
        };
        match frame {
            Frame::Welcome { start, total } if !welcomed => {
                if start != want || total != sh.total {
                    return Outcome::Failed(
                        FailReason::Refused,
                        format!(
                            "WELCOME for chunks {start}..{total}, asked for {want}..{}",
                            sh.total
                        ),
                    );
                }
                welcomed = true;
                log::debug!("chain: receiving from {upstream} from chunk {want}");
            }
            Frame::Refuse(r) => {
                let reason = if r.code == RefuseCode::TooOld {
                    FailReason::TooOld
                } else {
                    FailReason::Refused
                };
                return Outcome::Failed(
                    reason,
                    format!(
                        "refused chunk {next}: {:?} (oldest {}): {}",
                        r.code, r.oldest, r.message
                    ),
                );
            }
            Frame::KeepAlive { have } if welcomed => {
                if last_chunk.elapsed() > sh.cfg.stall_timeout {
                    return Outcome::Failed(
                        FailReason::Stalled,
                        format!(
                            "no chunk for {}s (it has received {have}, this node needs {next})",
                            last_chunk.elapsed().as_secs()
                        ),
                    );
                }
            }
            Frame::Chunk { index, bytes } if welcomed => {
                // A whole chunk: it starts over whatever part came before.
                drop_partial(&mut sh.lock());
                if let Err(out) = check_index(sh, index, next) {
                    return out;
                }
                match complete(sh, generation, index, Vec::new(), bytes) {
                    Ok(done) => {
                        next += 1;
                        last_chunk = Instant::now();
                        waited += done.waited;
                        if done.last {
                            return Outcome::Done;
                        }
                        if done.moved {
                            return Outcome::Interrupted;
                        }
                    }
                    Err(out) => return out,
                }
            }
            Frame::Part {
                index,
                offset,
                bytes,
            } if welcomed => {
                if let Err(out) = check_index(sh, index, next) {
                    return out;
                }
                let length = sh.manifest.chunks[index as usize].length;
                let got = {
                    let mut st = sh.lock();
                    if offset == 0 {
                        drop_partial(&mut st);
                    }
                    st.partial.as_ref().map_or(0, |p| p.len)
                };
                if offset as usize != got {
                    return Outcome::Failed(
                        FailReason::Refused,
                        format!("sent part of chunk {index} at {offset}, expected {got}"),
                    );
                }
                let end = got as u64 + bytes.len() as u64;
                if end > length {
                    sh.lock().stats.corrupt += 1;
                    return Outcome::Failed(
                        FailReason::Corrupt,
                        format!("sent {end} bytes of chunk {index}, which has {length}"),
                    );
                }
                if end < length && bytes.len() < frame::PART_MIN {
                    return Outcome::Failed(
                        FailReason::Refused,
                        format!(
                            "sent a part of {} bytes that does not end chunk {index} (at least {})",
                            bytes.len(),
                            frame::PART_MIN
                        ),
                    );
                }
                last_chunk = Instant::now();
                if end < length {
                    // Not whole yet: downstreams may have it already.
                    let mut st = sh.lock();
                    let p = st.partial.get_or_insert_with(|| Partial {
                        index,
                        parts: Vec::new(),
                        len: 0,
                    });
                    p.parts.push((got, Arc::new(bytes)));
                    p.len = end as usize;
                    sh.cond.notify_all();
                    continue;
                }
                let parts = {
                    let mut st = sh.lock();
                    st.partial.take().map(|p| p.parts).unwrap_or_default()
                };
                match complete(sh, generation, index, parts, bytes) {
                    Ok(done) => {
                        next += 1;
                        waited += done.waited;
                        if done.last {
                            return Outcome::Done;
                        }
                        if done.moved {
                            return Outcome::Interrupted;
                        }
                    }
                    Err(out) => {
                        // Its parts were forwarded: start them over.
                        let mut st = sh.lock();
                        st.restarts += 1;
                        st.stats.restarts += 1;
                        return out;
                    }
                }
            }
            other => {
                return Outcome::Failed(
                    FailReason::Refused,
                    format!("unexpected {} frame", frame_name(&other)),
                )
            }
        }
    }
}

/// `index` must be the next chunk and in the manifest.
fn check_index(sh: &Shared, index: u32, next: u32) -> Result<(), Outcome> {
    if index != next {
        return Err(Outcome::Failed(
            FailReason::Refused,
            format!("sent chunk {index}, expected {next}"),
        ));
    }
    if index as usize >= sh.manifest.chunks.len() {
        return Err(Outcome::Failed(
            FailReason::Refused,
            format!("sent chunk {index}, past the end"),
        ));
    }
    Ok(())
}

/// A chunk added to the replay buffer.
struct Completed {
    /// Time spent waiting for room in the buffer.
    waited: Duration,
    /// It was the last chunk.
    last: bool,
    /// The assignment changed meanwhile.
    moved: bool,
}

/// Chunk `index` is whole: `parts` (received before) then `rest`. Verify
/// it before anything else sees it whole, then add it to the buffer.
fn complete(
    sh: &Shared,
    generation: u64,
    index: u32,
    parts: Vec<(usize, Bytes)>,
    rest: Vec<u8>,
) -> Result<Completed, Outcome> {
    let whole = if parts.is_empty() {
        rest
    } else {
        let len = parts.iter().map(|(_, b)| b.len()).sum::<usize>() + rest.len();
        let mut whole = Vec::with_capacity(len);
        for (_, b) in &parts {
            whole.extend_from_slice(b);
        }
        whole.extend_from_slice(&rest);
        whole
    };
    let entry = &sh.manifest.chunks[index as usize];
    let chunk = match verify_chunk(index as usize, entry, whole) {
        Ok(c) => c,
        Err(e) => {
            sh.lock().stats.corrupt += 1;
            return Err(Outcome::Failed(FailReason::Corrupt, e.to_string()));
        }
    };
    let bytes = Arc::new(chunk.into_bytes());
    // Only a full buffer stops this node reading upstream.
    let waiting = Instant::now();
    let mut st = hold::wait_for_room(sh, sh.lock());
    let waited = waiting.elapsed();
    if st.stop.is_some() {
        return Err(Outcome::Interrupted);
    }
    if let Err(e) = st.ring.push(index, bytes) {
        // Only this thread pushes while attached.
        return Err(Outcome::Failed(FailReason::Refused, e));
    }
    st.last_progress = Instant::now();
    st.stats.received = st.ring.next();
    st.stats.oldest = st.ring.oldest();
    sh.cond.notify_all();
    let last = index + 1 >= sh.total;
    if last {
        st.upstream = None;
    }
    Ok(Completed {
        waited,
        last,
        moved: st.assignment.generation != generation,
    })
}

/// Counts the bytes read through it.
struct Counted<'a, R> {
    inner: R,
    count: &'a AtomicU64,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

fn frame_name(f: &Frame) -> &'static str {
    match f {
        Frame::Hello(_) => "HELLO",
        Frame::Welcome { .. } => "WELCOME",
        Frame::Refuse(_) => "REFUSE",
        Frame::Chunk { .. } => "CHUNK",
        Frame::KeepAlive { .. } => "KEEPALIVE",
        Frame::Part { .. } => "PART",
    }
}
