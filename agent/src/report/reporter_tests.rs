//! The reporter against a small recording HTTP server on loopback.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::deploy::apply::Written;

/// One request the server received.
struct Post {
    path: String,
    auth: Option<String>,
    report: Report,
}

struct Recorder {
    url: String,
    posts: Arc<Mutex<Vec<Post>>>,
}

impl Recorder {
    fn reports(&self) -> Vec<Report> {
        self.posts
            .lock()
            .unwrap()
            .iter()
            .map(|p| p.report.clone())
            .collect()
    }
}

/// Serve on loopback, one connection at a time; `answer(report, n)` (n
/// counts requests from 0) gives the status and body, and may sleep to
/// play a slow server.
fn serve(answer: impl Fn(&Report, usize) -> (u16, &'static str) + Send + 'static) -> Recorder {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}", l.local_addr().unwrap().port());
    let posts = Arc::new(Mutex::new(Vec::new()));
    let record = posts.clone();
    std::thread::spawn(move || {
        for (n, s) in l.incoming().enumerate() {
            let Ok(mut s) = s else { continue };
            let Some((path, auth, body)) = read_request(&mut s) else {
                continue;
            };
            let report = Report::from_json(&body).expect("the agent sends valid reports");
            let (status, text) = answer(&report, n);
            record.lock().unwrap().push(Post { path, auth, report });
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{text}",
                text.len()
            );
        }
    });
    Recorder { url, posts }
}

/// Path, Authorization header and body of one request.
fn read_request(s: &mut TcpStream) -> Option<(String, Option<String>, Vec<u8>)> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).ok()? == 0 {
            return None;
        }
        head.push(b[0]);
    }
    let head = String::from_utf8(head).ok()?;
    let path = head.split_whitespace().nth(1)?.to_string();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    let len: usize = header("Content-Length:")?.parse().ok()?;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some((path, header("Authorization:"), body))
}

const MAC: &str = "52:54:00:12:34:56";

fn options(servers: &[&str], extra: &str) -> Options {
    kernel_cmdline::parse(&format!(
        "deploy.server={} deploy.image=demo {extra}",
        servers.join(",")
    ))
    .unwrap()
}

/// Fast settings for tests.
fn quick() -> Settings {
    Settings {
        timeout: Duration::from_secs(2),
        deadline: Duration::from_secs(2),
        backoff: Duration::from_millis(50),
        progress_every: Duration::from_millis(200),
        queue: 4,
    }
}

fn reporter(servers: &[&str], s: Settings) -> Reporter {
    Reporter::new(
        &options(servers, "deploy.token=tok-1"),
        Some(MAC.parse().unwrap()),
        s,
    )
}

fn deployed() -> Deployed {
    Deployed {
        image: "demo@1".into(),
        disk: PathBuf::from("/dev/vda"),
        payload_sha256: "ab".repeat(32),
        written: Written {
            bytes: 1000,
            entries: 3,
            elapsed: Duration::from_millis(1500),
        },
        relay: None,
    }
}

fn ok(_: &Report, _: usize) -> (u16, &'static str) {
    (204, "")
}

#[test]
fn reports_go_in_order_with_the_token_to_the_nodes_path() {
    let srv = serve(ok);
    let r = reporter(&[&srv.url], quick());
    r.phase(Phase::Start, "starting");
    r.phase(Phase::Write, "writing");
    r.progress(10, 1000);
    r.phase(Phase::Verify, "checking");
    assert_eq!(r.success(&deployed()), Delivery::Recorded(srv.url.clone()));
    let posts = srv.posts.lock().unwrap();
    for p in posts.iter() {
        assert_eq!(p.path, format!("/api/v1/nodes/{MAC}/report"));
        assert_eq!(p.auth.as_deref(), Some("Bearer tok-1"));
    }
    let got: Vec<Report> = posts.iter().map(|p| p.report.clone()).collect();
    assert_eq!(
        got,
        [
            Report::Phase {
                phase: Phase::Start,
                message: "starting".into()
            },
            Report::Phase {
                phase: Phase::Write,
                message: "writing".into()
            },
            // Pending progress goes out before the phase that follows it.
            Report::Progress {
                done: 10,
                total: 1000
            },
            Report::Phase {
                phase: Phase::Verify,
                message: "checking".into()
            },
            Report::Success {
                image: "demo@1".into(),
                disk: "/dev/vda".into(),
                payload_sha256: "ab".repeat(32),
                bytes_written: 1000,
                elapsed_ms: 1500,
            },
        ]
    );
}

#[test]
fn off_without_a_token_or_a_mac() {
    let srv = serve(ok);
    let no_token = Reporter::new(
        &options(&[&srv.url], ""),
        Some(MAC.parse().unwrap()),
        quick(),
    );
    let no_mac = Reporter::new(&options(&[&srv.url], "deploy.token=t"), None, quick());
    for r in [no_token, no_mac, Reporter::off()] {
        r.phase(Phase::Start, "x");
        r.progress(1, 2);
        assert_eq!(r.success(&deployed()), Delivery::Off);
        assert_eq!(r.failure(&anyhow::anyhow!("boom")), Delivery::Off);
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(srv.reports().is_empty());
}

#[test]
fn progress_is_throttled_and_its_last_value_sent() {
    let srv = serve(ok);
    let r = reporter(&[&srv.url], quick());
    let started = Instant::now();
    let mut done = 0;
    // About 1 s of progress, every millisecond.
    while started.elapsed() < Duration::from_secs(1) {
        done += 1;
        r.progress(done, 1_000_000);
        std::thread::sleep(Duration::from_millis(1));
    }
    r.progress(1_000_000, 1_000_000);
    r.success(&deployed());
    let got = srv.reports();
    let progress: Vec<u64> = got
        .iter()
        .filter_map(|r| match r {
            Report::Progress { done, .. } => Some(*done),
            _ => None,
        })
        .collect();
    // One per 200 ms over ~1 s, plus the final value.
    assert!(
        (3..=7).contains(&progress.len()),
        "{} progress reports: {progress:?}",
        progress.len()
    );
    assert!(progress.windows(2).all(|w| w[0] < w[1]), "{progress:?}");
    assert_eq!(progress.last(), Some(&1_000_000));
    assert!(matches!(got.last(), Some(Report::Success { .. })));
}

#[test]
fn the_queue_is_bounded_and_keeps_the_oldest() {
    // The first request stalls once it has arrived: everything else has
    // to wait in the queue.
    let (arrived, stalled) = std::sync::mpsc::channel();
    let arrived = Mutex::new(arrived);
    let srv = serve(move |_, n| {
        if n == 0 {
            arrived.lock().unwrap().send(()).unwrap();
            std::thread::sleep(Duration::from_millis(300));
        }
        (204, "")
    });
    let r = reporter(&[&srv.url], quick());
    r.phase(Phase::Write, "0");
    stalled.recv().unwrap();
    for i in 1..50 {
        r.phase(Phase::Write, i.to_string());
    }
    assert!(matches!(r.success(&deployed()), Delivery::Recorded(_)));
    let got = srv.reports();
    let phases: Vec<String> = got
        .iter()
        .filter_map(|r| match r {
            Report::Phase { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect();
    // The one in flight, then a queue of 4; the success is never dropped.
    assert_eq!(phases, ["0", "1", "2", "3", "4"]);
    assert!(matches!(got.last(), Some(Report::Success { .. })));
}

#[test]
fn failure_carries_the_phase_and_the_error_chain() {
    let srv = serve(ok);
    let r = reporter(&[&srv.url], quick());
    r.phase(Phase::Disk, "choosing");
    let e = anyhow::anyhow!("no disk large enough").context("choosing a disk");
    assert!(matches!(r.failure(&e), Delivery::Recorded(_)));
    assert_eq!(
        srv.reports().last(),
        Some(&Report::Failure {
            phase: Phase::Disk,
            error: "choosing a disk: no disk large enough".into()
        })
    );
}

#[test]
fn a_refusal_is_final_and_names_the_reason() {
    let srv = serve(|r, _| match r {
        Report::Success { .. } => (409, "payload_sha256 is not the assigned image's\n"),
        _ => (204, ""),
    });
    let r = reporter(&[&srv.url], quick());
    let started = Instant::now();
    let Delivery::Refused(why) = r.success(&deployed()) else {
        panic!("not refused")
    };
    assert!(why.contains("409"), "{why}");
    assert!(why.contains("is not the assigned image's"), "{why}");
    assert!(started.elapsed() < Duration::from_secs(1), "it was retried");
    assert_eq!(srv.reports().len(), 1, "sent once");
}

#[test]
fn server_errors_are_retried_with_backoff() {
    let srv = serve(|_, n| if n < 2 { (503, "busy") } else { (204, "") });
    let r = reporter(&[&srv.url], quick());
    assert_eq!(
        r.failure(&anyhow::anyhow!("x")),
        Delivery::Recorded(srv.url.clone())
    );
    assert_eq!(srv.reports().len(), 3);
}

#[test]
fn an_absent_server_costs_the_deadline_and_no_more() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!("http://127.0.0.1:{}", l.local_addr().unwrap().port());
    drop(l);
    let r = reporter(&[&down], quick());
    // Phases before it are not worth the wait once the server is known down.
    for p in Phase::ALL {
        r.phase(p, "x");
    }
    let started = Instant::now();
    let Delivery::Undelivered(why) = r.success(&deployed()) else {
        panic!("delivered to nowhere?")
    };
    let took = started.elapsed();
    assert!(why.contains("connecting to 127.0.0.1"), "{why}");
    assert!(
        took >= quick().deadline && took < quick().deadline + Duration::from_secs(1),
        "{took:?}"
    );
}

#[test]
fn the_server_that_answered_is_asked_first() {
    let busy = serve(|_, _| (503, "busy"));
    let good = serve(ok);
    let r = reporter(&[&busy.url, &good.url], quick());
    assert_eq!(
        r.failure(&anyhow::anyhow!("x")),
        Delivery::Recorded(good.url.clone())
    );
    r.phase(Phase::Write, "later");
    assert!(matches!(r.success(&deployed()), Delivery::Recorded(_)));
    assert_eq!(busy.reports().len(), 1, "only the first report tried it");
    assert_eq!(good.reports().len(), 3);
}

#[test]
fn notes_do_not_delay_a_final_report_behind_a_silent_server() {
    // Accepts connections and never answers: every request times out.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = format!("http://127.0.0.1:{}", l.local_addr().unwrap().port());
    std::thread::spawn(move || {
        let held: Vec<_> = l.incoming().collect();
        drop(held);
    });
    let s = Settings {
        timeout: Duration::from_millis(500),
        queue: 16,
        ..quick()
    };
    let r = reporter(&[&silent], s.clone());
    for p in Phase::ALL {
        r.phase(p, "x");
    }
    let started = Instant::now();
    let Delivery::Undelivered(why) = r.success(&deployed()) else {
        panic!("delivered to a silent server?")
    };
    let took = started.elapsed();
    // Sending the 7 phases first would take 3.5 s: past the deadline and
    // its grace, the caller would have given up on the thread.
    assert!(!why.contains("no answer within"), "{why}");
    assert!(took < s.deadline + 2 * s.timeout, "{took:?}");
}
