//! A relay node's listener: every downstream gets its own thread, which
//! reads HELLO, checks the session and that the replay buffer still holds
//! the chunk asked for, then sends chunks from the buffer as they arrive —
//! never waiting for the local disk, only for the upstream. A downstream
//! that falls behind the buffer is refused (`TooOld`) and asks the
//! coordinator for another upstream; one that stops reading is dropped
//! after the I/O timeout. Neither slows this node or its other
//! downstreams. A version-2 downstream is also sent the parts of the chunk
//! still arriving (cut-through: see `frame` for why that is safe).

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::frame::{self, Frame, Refuse, RefuseCode, CONTROL_LIMIT};
use super::relay::{Downstream, Shared};
use super::ring::{Bytes, Slot};

/// Accept downstreams until the node stops.
pub(crate) fn listen_loop(sh: Arc<Shared>, listener: TcpListener) {
    // Non-blocking accept, polled: the loop notices a stop without a
    // connection to wake it.
    if let Err(e) = listener.set_nonblocking(true) {
        log::error!("chain: listener: {e}");
        return;
    }
    loop {
        if sh.lock().stop.is_some() {
            return;
        }
        match listener.accept() {
            Ok((stream, peer)) => {
                let sh = sh.clone();
                let spawned = std::thread::Builder::new()
                    .name("chain-downstream".into())
                    .spawn(move || serve_one(&sh, stream, peer));
                if let Err(e) = spawned {
                    log::warn!("chain: no thread for downstream {peer}: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                log::warn!("chain: accepting a downstream: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn refuse(mut s: &TcpStream, code: RefuseCode, oldest: u32, message: String) {
    log::info!("chain: refusing a downstream: {message}");
    let f = Frame::Refuse(Refuse {
        code,
        oldest,
        message,
    });
    let _ = s.write_all(&f.encode());
    let _ = s.shutdown(Shutdown::Write);
}

/// Serve one downstream connection to its end.
fn serve_one(sh: &Shared, stream: TcpStream, peer: SocketAddr) {
    let setup = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(sh.cfg.io_timeout)))
        .and_then(|()| stream.set_write_timeout(Some(sh.cfg.io_timeout)))
        .and_then(|()| stream.set_nodelay(true))
        .and_then(|()| stream.try_clone());
    let Ok(handle) = setup else {
        return;
    };
    // Only a HELLO is read from a downstream, under the control limit.
    let hello = match frame::read_frame(&mut &stream, CONTROL_LIMIT) {
        Ok(Frame::Hello(h)) => h,
        Ok(_) => return refuse(&stream, RefuseCode::BadHello, 0, "expected HELLO".into()),
        Err(e) => {
            let msg = format!("{peer}: bad HELLO: {:#}", anyhow::Error::from(e));
            return refuse(&stream, RefuseCode::BadHello, 0, msg);
        }
    };
    if hello.session != sh.session {
        let msg = format!("this node serves {}, not {}", sh.session, hello.session);
        return refuse(&stream, RefuseCode::UnknownSession, 0, msg);
    }
    if hello.want > sh.total {
        let msg = format!("chunk {} is past the end ({})", hello.want, sh.total);
        return refuse(&stream, RefuseCode::BadHello, 0, msg);
    }
    let id = {
        let mut st = sh.lock();
        if st.stop.is_some() {
            drop(st);
            return refuse(
                &stream,
                RefuseCode::Leaving,
                0,
                "this node is leaving".into(),
            );
        }
        if let Slot::Evicted { oldest } = st.ring.get(hello.want) {
            drop(st);
            let msg = format!(
                "{}: chunk {} is no longer in the replay buffer (oldest {oldest})",
                hello.mac, hello.want
            );
            return refuse(&stream, RefuseCode::TooOld, oldest, msg);
        }
        // A reconnecting downstream replaces its old connection.
        st.downstreams.retain(|d| {
            let same = d.mac == hello.mac;
            if same {
                let _ = d.stream.shutdown(Shutdown::Both);
            }
            !same
        });
        if st.downstreams.len() >= sh.cfg.max_downstreams {
            drop(st);
            let msg = format!("already serving {} downstreams", sh.cfg.max_downstreams);
            return refuse(&stream, RefuseCode::Busy, 0, msg);
        }
        let id = st.next_id;
        st.next_id += 1;
        st.downstreams.push(Downstream {
            id,
            mac: hello.mac,
            stream: handle,
            pos: hello.want,
            protected: true,
        });
        st.stats.downstreams = st.downstreams.len() as u32;
        st.refloor(Instant::now(), sh.cfg.downstream_grace);
        id
    };
    log::info!(
        "chain: serving {} ({peer}) from chunk {}",
        hello.mac,
        hello.want
    );
    let end = send(sh, &stream, id, hello.want, hello.version >= 2);
    if end.is_ok() {
        // Let the downstream close first, so nothing sent is lost to a reset.
        let _ = stream.shutdown(Shutdown::Write);
        let deadline = Instant::now() + sh.cfg.io_timeout;
        let mut sink = [0u8; 64];
        while Instant::now() < deadline {
            match (&stream).read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    } else if let Err(e) = end {
        log::info!("chain: downstream {} ({peer}): {e}", hello.mac);
    }
    let mut st = sh.lock();
    st.downstreams.retain(|d| d.id != id);
    st.stats.downstreams = st.downstreams.len() as u32;
    st.refloor(Instant::now(), sh.cfg.downstream_grace);
    sh.cond.notify_all();
}

/// What a sender does next.
enum Step {
    /// Send the rest of the verified chunk.
    Whole(Bytes),
    /// Send these parts of the chunk still arriving (offset, bytes).
    Ahead(Vec<(usize, Bytes)>),
    Evicted(u32),
    /// Nothing new for a keep-alive period.
    Idle,
}

/// Send chunks `pos..` as they arrive (and, with `cut_through`, their
/// parts as they arrive). `Ok` once the last was sent.
fn send(
    sh: &Shared,
    mut stream: &TcpStream,
    id: u64,
    mut pos: u32,
    cut_through: bool,
) -> Result<(), String> {
    let welcome = Frame::Welcome {
        start: pos,
        total: sh.total,
    };
    stream
        .write_all(&welcome.encode())
        .map_err(|e| e.to_string())?;
    // Bytes of chunk `pos` sent ahead of its verification, and the
    // receiver's restart count when they were.
    let (mut sent, mut seen) = (0usize, 0u64);
    while pos < sh.total {
        let step = {
            let mut st = sh.lock();
            let started = Instant::now();
            loop {
                if st.stop.is_some() {
                    return Err("this node stopped".into());
                }
                let Some(me) = st.downstreams.iter_mut().find(|d| d.id == id) else {
                    return Err("replaced by a newer connection".into());
                };
                me.pos = pos;
                if sent == 0 || st.restarts != seen {
                    // What was sent of it may not be the chunk: the
                    // downstream drops it when the chunk starts over.
                    sent = 0;
                    seen = st.restarts;
                }
                match st.ring.get(pos) {
                    Slot::Have(bytes) => break Step::Whole(bytes),
                    Slot::Evicted { oldest } => break Step::Evicted(oldest),
                    Slot::NotYet => {}
                }
                let ahead = st
                    .partial
                    .as_ref()
                    .filter(|p| cut_through && p.index == pos && p.len > sent);
                if let Some(p) = ahead {
                    break Step::Ahead(p.from(sent));
                }
                if started.elapsed() >= sh.cfg.keepalive {
                    break Step::Idle;
                }
                st = sh.wait(st, sh.cfg.keepalive.saturating_sub(started.elapsed()));
            }
        };
        match step {
            Step::Whole(bytes) => {
                put(sh, stream, pos, sent, &bytes[sent..], cut_through)
                    .map_err(|e| format!("sending chunk {pos}: {e}"))?;
                pos += 1;
                sent = 0;
                let mut st = sh.lock();
                st.stats.forwarded += 1;
                if let Some(me) = st.downstreams.iter_mut().find(|d| d.id == id) {
                    me.pos = pos;
                }
                // That chunk may now go: the receiver may be waiting for room.
                st.refloor(Instant::now(), sh.cfg.downstream_grace);
                sh.cond.notify_all();
            }
            Step::Ahead(parts) => {
                for (at, bytes) in &parts {
                    let skip = sent.saturating_sub(*at);
                    put(sh, stream, pos, at + skip, &bytes[skip..], true)
                        .map_err(|e| format!("sending part of chunk {pos}: {e}"))?;
                    sent = at + bytes.len();
                }
                sh.lock().stats.parts_ahead += parts.len() as u64;
            }
            Step::Evicted(oldest) => {
                let msg = format!("chunk {pos} left the replay buffer (oldest {oldest}) before this downstream took it");
                refuse(stream, RefuseCode::TooOld, oldest, msg.clone());
                return Err(msg);
            }
            Step::Idle => {
                let have = sh.lock().ring.next();
                frame::write_frame(&mut stream, &Frame::KeepAlive { have })
                    .map_err(|e| format!("sending a keep-alive: {e}"))?;
            }
        }
    }
    if let Some(me) = sh.lock().downstreams.iter_mut().find(|d| d.id == id) {
        me.pos = pos;
    }
    Ok(())
}

/// Send `bytes`, from `offset` of chunk `index`: as PART frames to a
/// version-2 downstream, else as one CHUNK (then `offset` is 0). Through
/// the forward tap, if a test set one.
fn put(
    sh: &Shared,
    mut stream: &TcpStream,
    index: u32,
    offset: usize,
    bytes: &[u8],
    parts: bool,
) -> std::io::Result<()> {
    let tapped;
    let bytes = match &sh.cfg.forward_tap {
        Some(tap) => {
            let mut copy = bytes.to_vec();
            tap(index, offset, &mut copy);
            tapped = copy;
            &tapped[..]
        }
        None => bytes,
    };
    if parts && !(offset == 0 && bytes.is_empty()) {
        frame::write_parts(&mut stream, index, offset, bytes, sh.cfg.part_bytes)
    } else {
        frame::write_chunk(&mut stream, index, bytes)
    }
}
