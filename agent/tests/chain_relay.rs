//! The agent's side of the chain against scripted peers: a fake
//! coordinator (a few lines of HTTP) and a fake upstream that sends a
//! corrupted chunk first. The real coordinator and head are tested with
//! the server (`server/tests/chain_*.rs`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use drover_agent::chain::api::{Assignment, Status};
use drover_agent::chain::frame::{self, Frame};
use drover_agent::chain::{deploy_source, ChainOptions, RelayConfig, RelayStats};
use drover_agent::image::{verify_payload, Manifest};
use kernel_cmdline::MacAddr;

const MANIFEST: &[u8] = include_bytes!("../src/image/fixtures/demo/manifest.json");
const PAYLOAD: &[u8] = include_bytes!("../src/image/fixtures/demo/payload");

fn config() -> RelayConfig {
    RelayConfig {
        connect_timeout: Duration::from_secs(1),
        io_timeout: Duration::from_secs(2),
        keepalive: Duration::from_millis(200),
        fallback_after: Duration::from_secs(1),
        retry_pause: Duration::from_millis(100),
        ..RelayConfig::default()
    }
}

fn options(server: &str) -> ChainOptions {
    ChainOptions {
        servers: vec![server.parse().unwrap()],
        token: Some("t".into()),
        mac: MacAddr([2, 0, 0, 0, 0, 1]),
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise: None,
        relay: config(),
    }
}

fn manifest() -> Arc<Manifest> {
    Arc::new(Manifest::parse(MANIFEST).unwrap())
}

/// Named `chain::…` so that `cargo test chain` selects them.
mod chain {
    use super::*;

    #[test]
    fn no_coordinator_is_an_error_after_the_patience() {
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let started = Instant::now();
        let e = deploy_source(options(&format!("http://{addr}")), manifest(), None)
            .err()
            .unwrap();
        let msg = format!("{e:#}");
        assert!(
            msg.starts_with("joining chain session demo@1: no coordinator answered"),
            "{msg}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    /// One HTTP request: (path, body).
    fn read_request(s: &mut TcpStream) -> (String, Vec<u8>) {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte).unwrap();
            buf.push(byte[0]);
        }
        let head = String::from_utf8(buf).unwrap();
        let path = head.split(' ').nth(1).unwrap().to_owned();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map_or(0, |v| v.trim().parse().unwrap());
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).unwrap();
        (path, body)
    }

    fn respond(s: &mut TcpStream, status: &str, body: &[u8]) {
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
    }

    /// The requests a fake coordinator saw: (path, body).
    type Requests = Arc<Mutex<Vec<(String, String)>>>;

    /// A coordinator that answers every request with `answer(path)` and
    /// records the requests.
    fn fake_coordinator(
        answer: impl Fn(&str) -> (String, Vec<u8>) + Send + 'static,
    ) -> (String, Requests) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        thread::spawn(move || {
            for s in l.incoming() {
                let mut s = s.unwrap();
                let (path, body) = read_request(&mut s);
                log.lock()
                    .unwrap()
                    .push((path.clone(), String::from_utf8_lossy(&body).into_owned()));
                let (status, body) = answer(&path);
                respond(&mut s, &status, &body);
            }
        });
        (url, seen)
    }

    #[test]
    fn a_refusing_coordinator_is_an_error_at_once() {
        let (url, _) = fake_coordinator(|_| ("401 Unauthorized".into(), b"wrong token\n".to_vec()));
        let started = Instant::now();
        let e = deploy_source(options(&url), manifest(), None)
            .err()
            .unwrap();
        let msg = format!("{e:#}");
        assert!(msg.contains("answered 401: wrong token"), "{msg}");
        assert!(started.elapsed() < Duration::from_millis(900));
    }

    /// What the fake upstream does wrong on its first connection.
    #[derive(Clone, Copy)]
    enum Fault {
        /// Chunk 0 with a flipped bit.
        Corrupt,
        /// A PART of 10 bytes at the start of chunk 0 (not completing it).
        TinyPart,
    }

    /// An upstream that does `fault` on its first connection, then serves
    /// honestly; it returns the `want` of every HELLO.
    fn fake_upstream(m: Arc<Manifest>, fault: Fault) -> (SocketAddr, Arc<Mutex<Vec<u32>>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let hellos = Arc::new(Mutex::new(Vec::new()));
        let seen = hellos.clone();
        thread::spawn(move || {
            for (n, s) in l.incoming().enumerate() {
                let mut s = s.unwrap();
                let Frame::Hello(h) = frame::read_frame(&mut s, frame::CONTROL_LIMIT).unwrap()
                else {
                    panic!("not a HELLO")
                };
                seen.lock().unwrap().push(h.want);
                let total = m.chunks.len() as u32;
                let welcome = Frame::Welcome {
                    start: h.want,
                    total,
                };
                s.write_all(&welcome.encode()).unwrap();
                for i in h.want..total {
                    let e = &m.chunks[i as usize];
                    let mut bytes =
                        PAYLOAD[e.offset as usize..(e.offset + e.length) as usize].to_vec();
                    if n == 0 && i == 0 {
                        match fault {
                            Fault::Corrupt => bytes[0] ^= 0x40,
                            Fault::TinyPart => {
                                let part = frame::part_header(0, 0, 10);
                                let _ = s.write_all(&part).and_then(|()| s.write_all(&bytes[..10]));
                                break;
                            }
                        }
                    }
                    if frame::write_chunk(&mut s, i, &bytes).is_err() {
                        break;
                    }
                }
                // Wait for the downstream to hang up.
                let _ = s.read(&mut [0u8; 16]);
            }
        });
        (addr, hellos)
    }

    /// A coordinator whose every answer attaches the node to `upstream`.
    fn attached_to(upstream: SocketAddr) -> (String, Requests) {
        let assignment = move |generation| {
            serde_json::to_vec(&Assignment {
                session: "demo@1".into(),
                status: Status::Attached,
                generation,
                upstream: Some(upstream.to_string()),
                heartbeat_ms: 100,
                downstreams_pending: 0,
            })
            .unwrap()
        };
        fake_coordinator(move |_| ("200 OK".into(), assignment(1)))
    }

    /// A node attached to a fake upstream that commits `fault`: it
    /// verifies the whole payload all the same (the pipeline's own
    /// check). Its counters, the chunks it said HELLO from, and the
    /// requests its coordinator saw.
    fn relay_through(fault: Fault) -> (RelayStats, Vec<u32>, Vec<(String, String)>) {
        let m = manifest();
        let (upstream, hellos) = fake_upstream(m.clone(), fault);
        let (url, seen) = attached_to(upstream);
        let mut source = deploy_source(options(&url), m.clone(), None).unwrap();
        verify_payload(&m, &mut source).unwrap();
        let stats = source.finish(Duration::ZERO);
        let hellos = hellos.lock().unwrap().clone();
        let seen = seen.lock().unwrap().clone();
        (stats, hellos, seen)
    }

    /// The body of the node's failure report.
    fn failure_report(seen: &[(String, String)]) -> &str {
        &seen
            .iter()
            .find(|(p, _)| p == "/api/v1/chain/upstream-failed")
            .expect("a failure report")
            .1
    }

    #[test]
    fn a_corrupt_chunk_is_refused_reported_and_fetched_again() {
        let (stats, hellos, seen) = relay_through(Fault::Corrupt);
        assert_eq!((stats.received, stats.corrupt, stats.reports), (5, 1, 1));
        // Resumed from the chunk that failed.
        assert_eq!(hellos, [0, 0]);
        let report = failure_report(&seen);
        assert!(report.contains(r#""reason":"corrupt""#), "{report}");
        assert!(report.contains(r#""want":0"#), "{report}");
        assert!(report.contains("chunk 0: SHA-256 is"), "{report}");
        assert!(seen
            .iter()
            .any(|(p, b)| p == "/api/v1/chain/leave" && b.contains(r#""complete":true"#)));
    }

    /// A PART that does not complete its chunk carries at least PART_MIN
    /// bytes: sliced thinner, a chunk in parts would cost far more memory
    /// than its bytes. Refused (not blamed as corrupt), fetched again.
    #[test]
    fn a_tiny_part_is_refused_and_the_chunk_fetched_again() {
        assert!(manifest().chunks[0].length > 10);
        let (stats, hellos, seen) = relay_through(Fault::TinyPart);
        assert_eq!((stats.received, stats.corrupt, stats.reports), (5, 0, 1));
        assert_eq!(hellos, [0, 0]);
        let report = failure_report(&seen);
        assert!(report.contains(r#""reason":"refused""#), "{report}");
        assert!(
            report.contains("a part of 10 bytes that does not end chunk 0 (at least 1024)"),
            "{report}"
        );
    }
}
