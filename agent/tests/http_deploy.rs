//! The agent's http deploy as a process, against a file-backed disk and a
//! small range-capable HTTP server on loopback serving the committed demo
//! image (agent/src/image/fixtures). Asserts bytes on the disk, `sgdisk -v`,
//! `e2fsck -fn`, the errors for bad input, and the reports the agent POSTs
//! to the same server.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use drover_agent::report::{Phase, Report};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/image/fixtures");
const MIB: u64 = 1 << 20;

/// Serves `root` as `/images/...`: GET with `Range: bytes=a-b`. The first
/// `fail_payload` payload requests get a 503 (a server hiccup to survive).
/// Reports are recorded and answered 204.
fn serve(root: PathBuf, fail_payload: usize) -> (u16, Arc<AtomicUsize>) {
    let (port, counter, _) = serve_reports(root, fail_payload, |_| (204, ""));
    (port, counter)
}

/// A report the server received.
struct Post {
    path: String,
    auth: Option<String>,
    report: Report,
    at: Instant,
}

type Posts = Arc<Mutex<Vec<Post>>>;

/// [`serve`], answering each report as `answer` says.
fn serve_reports(
    root: PathBuf,
    fail_payload: usize,
    answer: fn(&Report) -> (u16, &'static str),
) -> (u16, Arc<AtomicUsize>, Posts) {
    serve_on(
        TcpListener::bind("127.0.0.1:0").unwrap(),
        root,
        fail_payload,
        answer,
    )
}

/// [`serve_reports`] on a given listener.
fn serve_on(
    l: TcpListener,
    root: PathBuf,
    fail_payload: usize,
    answer: fn(&Report) -> (u16, &'static str),
) -> (u16, Arc<AtomicUsize>, Posts) {
    let port = l.local_addr().unwrap().port();
    let payload_requests = Arc::new(AtomicUsize::new(0));
    let counter = payload_requests.clone();
    let posts = Posts::default();
    let record = posts.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
                head.push(b[0]);
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
            if head.starts_with("POST ") {
                let header = |name: &str| {
                    head.lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(|v| v.trim().to_string())
                };
                let len = header("Content-Length:").map_or(0, |l| l.parse().unwrap());
                let mut body = vec![0u8; len];
                let _ = s.read_exact(&mut body);
                let report = Report::from_json(&body).expect("the agent sends valid reports");
                let (status, text) = answer(&report);
                record.lock().unwrap().push(Post {
                    path,
                    auth: header("Authorization:"),
                    report,
                    at: Instant::now(),
                });
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{text}",
                    text.len()
                );
                continue;
            }
            let file = root.join(path.trim_start_matches("/images/"));
            let range = head
                .lines()
                .find_map(|l| l.strip_prefix("Range: bytes="))
                .and_then(|r| r.split_once('-'))
                .map(|(a, b)| (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap()));
            if path.ends_with("/payload") && counter.fetch_add(1, Ordering::SeqCst) < fail_payload {
                let _ = s.write_all(b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy");
                continue;
            }
            let resp = match (fs::read(&file), range) {
                (Ok(data), Some((a, z))) if z < data.len() => {
                    let mut r = format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {a}-{z}/{}\r\n\r\n",
                        z - a + 1,
                        data.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(&data[a..=z]);
                    r
                }
                (Ok(data), None) => {
                    let mut r =
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", data.len())
                            .into_bytes();
                    r.extend_from_slice(&data);
                    r
                }
                _ => {
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 14\r\n\r\nno such image\n".to_vec()
                }
            };
            let _ = s.write_all(&resp);
        }
    });
    (port, payload_requests, posts)
}

/// A copy of the demo image store, to tamper with.
fn store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let v = dir.path().join("demo/1");
    fs::create_dir_all(&v).unwrap();
    for f in ["manifest.json", "manifest.sig", "payload"] {
        fs::copy(Path::new(FIXTURE).join("demo").join(f), v.join(f)).unwrap();
    }
    dir
}

fn blank_disk(dir: &Path, size: u64) -> PathBuf {
    let p = dir.join("disk.img");
    fs::File::create(&p).unwrap().set_len(size).unwrap();
    p
}

fn agent(port: u16, extra: &str, disk: &Path, key: &Path) -> (i32, String) {
    agent_with(port, extra, disk, key, &[])
}

/// [`agent`] with more arguments to `drover-agent run`.
fn agent_with(port: u16, extra: &str, disk: &Path, key: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_drover-agent"))
        .args(["run", "--cmdline"])
        .arg(format!(
            "deploy.server=http://127.0.0.1:{port} deploy.image=demo@1 {extra}"
        ))
        .arg("--disk")
        .arg(disk)
        .arg("--key")
        .arg(key)
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn test_key() -> PathBuf {
    Path::new(FIXTURE).join("test.pub")
}

fn sgdisk(args: &[&str], disk: &Path) -> String {
    let out = Command::new("sgdisk")
        .args(args)
        .arg(disk)
        .output()
        .expect("sgdisk (package gdisk)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// First sector of partition `n`, from `sgdisk -i`.
fn first_sector(disk: &Path, n: u32) -> u64 {
    let info = sgdisk(&[&format!("-i{n}")], disk);
    info.lines()
        .find_map(|l| l.strip_prefix("First sector: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no partition {n}: {info}"))
}

fn read_at(disk: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    fs::File::open(disk)
        .unwrap()
        .read_exact_at(&mut b, offset)
        .unwrap();
    b
}

#[test]
fn deploys_the_demo_image_onto_a_blank_disk() {
    let s = store();
    let (port, _) = serve(s.path().to_path_buf(), 1);
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), 80 * MIB);
    let (code, text) = agent(port, "", &disk, &test_key());
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("signed by the trusted key"), "{text}");
    assert!(text.contains("retrying"), "the 503 was retried: {text}");
    assert!(text.contains("drover: deployed demo@1 to "), "{text}");

    // The table is sound, with the declared partitions and attribute.
    assert!(
        sgdisk(&["-v"], &disk).contains("No problems found"),
        "{}",
        sgdisk(&["-v"], &disk)
    );
    let table = sgdisk(&["-p"], &disk);
    for name in ["ESP", "root", "swap"] {
        assert!(table.contains(name), "{table}");
    }
    assert!(sgdisk(&["-A", "1:show"], &disk).contains("legacy BIOS bootable"));
    // BIOS boot code in LBA0, the raw ESP bytes at partition 1.
    assert_eq!(&read_at(&disk, 0, 16), b"\xeb\x63\x90drover-demo\0\0");
    let esp = read_at(&disk, first_sector(&disk, 1) * 512, 6000);
    let want: Vec<u8> = b"drover demo ESP\n"
        .iter()
        .copied()
        .cycle()
        .take(6000)
        .collect();
    assert_eq!(esp, want);
    // The root filesystem is clean and holds the tar's files.
    let root_off = first_sector(&disk, 2) * 512;
    let root = dir.path().join("root.ext4");
    fs::write(&root, read_at(&disk, root_off, (64 * MIB) as usize)).unwrap();
    let fsck = Command::new("e2fsck")
        .args(["-fn"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let cat = Command::new("debugfs")
        .args(["-R", "cat /etc/hostname"])
        .arg(&root)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&cat.stdout), "node\n");
}

#[test]
fn a_corrupted_chunk_is_refused_and_the_table_wiped() {
    let s = store();
    let payload = s.path().join("demo/1/payload");
    let mut p = fs::read(&payload).unwrap();
    let m = drover_agent::image::Manifest::parse(
        &fs::read(s.path().join("demo/1/manifest.json")).unwrap(),
    )
    .unwrap();
    // One bit of chunk 3 (the root tar's second chunk).
    p[m.chunks[3].offset as usize + 5] ^= 0x40;
    fs::write(&payload, p).unwrap();
    let (port, _) = serve(s.path().to_path_buf(), 0);
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), 80 * MIB);
    let (code, text) = agent(port, "", &disk, &test_key());
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("chunk 3"), "names the bad chunk: {text}");
    // Nothing bootable is left: no MBR signature, no GPT header.
    let lba0_1 = read_at(&disk, 0, 1024);
    assert!(lba0_1.iter().all(|&b| b == 0), "partition table not wiped");
}

#[test]
fn a_wrong_key_is_refused_before_the_disk_is_touched() {
    let s = store();
    let (port, _) = serve(s.path().to_path_buf(), 0);
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), 80 * MIB);
    let other = dir.path().join("other.pub");
    fs::write(&other, format!("{}\n", "11".repeat(32))).unwrap();
    let (code, text) = agent(port, "", &disk, &other);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("does not match the trusted key"), "{text}");
    assert!(read_at(&disk, 0, 1 << 20).iter().all(|&b| b == 0));
}

#[test]
fn a_non_empty_disk_needs_deploy_wipe() {
    let s = store();
    let (port, _) = serve(s.path().to_path_buf(), 0);
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), 80 * MIB);
    let (code, text) = agent(port, "", &disk, &test_key());
    assert_eq!(code, 0, "{text}");
    let before = read_at(&disk, 0, 1 << 20);
    let (code, text) = agent(port, "", &disk, &test_key());
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(
            "already has a partition table; refusing to overwrite it without deploy.wipe=yes"
        ),
        "{text}"
    );
    assert_eq!(
        read_at(&disk, 0, 1 << 20),
        before,
        "the refused disk was changed"
    );
    let (code, text) = agent(port, "deploy.wipe=yes", &disk, &test_key());
    assert_eq!(code, 0, "{text}");
}

#[test]
fn small_disks_and_missing_images_are_clear_errors() {
    let s = store();
    let (port, _) = serve(s.path().to_path_buf(), 0);
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), 8 * MIB);
    let (code, text) = agent(port, "", &disk, &test_key());
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("is too small for demo@1"), "{text}");
    assert!(text.contains("MiB"), "{text}");

    let out = Command::new(env!("CARGO_BIN_EXE_drover-agent"))
        .args(["run", "--cmdline"])
        .arg(format!(
            "deploy.server=http://127.0.0.1:{port} deploy.image=nosuch@1"
        ))
        .arg("--disk")
        .arg(&disk)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("404 Not Found: no such image"), "{text}");
}

const MAC: &str = "52:54:00:12:34:56";
/// The same MAC as the kernel command line's `BOOTIF=`.
const REPORTS_ON: &str = "deploy.token=tok-1 BOOTIF=01-52-54-00-12-34-56";

fn reports(posts: &Posts) -> Vec<Report> {
    posts
        .lock()
        .unwrap()
        .iter()
        .map(|p| p.report.clone())
        .collect()
}

fn demo_manifest(store: &Path) -> drover_agent::image::Manifest {
    drover_agent::image::Manifest::parse(&fs::read(store.join("demo/1/manifest.json")).unwrap())
        .unwrap()
}

/// Where `needle` is in the console text, which must hold it.
fn line_at(text: &str, needle: &str) -> usize {
    text.find(needle)
        .unwrap_or_else(|| panic!("no {needle:?} in:\n{text}"))
}

#[test]
fn a_deploy_reports_its_phases_progress_and_success() {
    let s = store();
    let (port, _, posts) = serve_reports(s.path().to_path_buf(), 0, |_| (204, ""));
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), 80 * MIB);
    // The MAC from --mac, not BOOTIF.
    let (code, text) = agent_with(
        port,
        "deploy.token=tok-1",
        &disk,
        &test_key(),
        &["--mac", MAC],
    );
    assert_eq!(code, 0, "{text}");
    let recorded = format!("drover: report: success recorded by http://127.0.0.1:{port}\n");
    assert!(
        line_at(&text, "drover: deployed demo@1 to ") < line_at(&text, &recorded),
        "{text}"
    );

    for p in posts.lock().unwrap().iter() {
        assert_eq!(p.path, format!("/api/v1/nodes/{MAC}/report"));
        assert_eq!(p.auth.as_deref(), Some("Bearer tok-1"));
    }
    let got = reports(&posts);
    let phases: Vec<Phase> = got
        .iter()
        .filter_map(|r| match r {
            Report::Phase { phase, .. } => Some(*phase),
            _ => None,
        })
        .collect();
    assert_eq!(phases, Phase::ALL, "{got:#?}");

    // Progress: during the write phase only, growing to its total, which is
    // every partition's content.
    let m = demo_manifest(s.path());
    let total: u64 = m
        .disk
        .partitions
        .iter()
        .filter_map(|p| p.content.as_ref())
        .map(|c| c.size)
        .sum();
    let at = |want: Phase| {
        got.iter()
            .position(|r| matches!(r, Report::Phase { phase, .. } if *phase == want))
            .unwrap()
    };
    let progress: Vec<(usize, u64, u64)> = got
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            Report::Progress { done, total } => Some((i, *done, *total)),
            _ => None,
        })
        .collect();
    assert!(!progress.is_empty(), "{got:#?}");
    for &(i, _, t) in &progress {
        assert!(at(Phase::Write) < i && i < at(Phase::Verify), "{got:#?}");
        assert_eq!(t, total);
    }
    assert!(
        progress.windows(2).all(|w| w[0].1 <= w[1].1),
        "{progress:?}"
    );
    assert_eq!(progress.last().unwrap().1, total);

    // Last, the success, with the signed manifest's payload hash.
    let Some(Report::Success {
        image,
        disk: on,
        payload_sha256,
        bytes_written,
        ..
    }) = got.last()
    else {
        panic!("no success last: {got:#?}")
    };
    assert_eq!(image, "demo@1");
    assert_eq!(on, &disk.display().to_string());
    assert_eq!(payload_sha256, &m.payload.sha256.to_string());
    assert_eq!(*bytes_written, total);
}

#[test]
fn failed_deploys_report_the_phase_and_the_error() {
    let s = store();
    let payload = s.path().join("demo/1/payload");
    let mut p = fs::read(&payload).unwrap();
    let m = demo_manifest(s.path());
    p[m.chunks[3].offset as usize + 5] ^= 0x40;
    fs::write(&payload, p).unwrap();
    let (port, _, posts) = serve_reports(s.path().to_path_buf(), 0, |_| (204, ""));
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("", 80 * MIB, Phase::Write, "chunk 3"),
        (
            "deploy.image=nosuch@1",
            80 * MIB,
            Phase::Manifest,
            "404 Not Found: no such image",
        ),
        ("", 8 * MIB, Phase::Disk, "is too small for demo@1"),
    ];
    for (extra, size, phase, error) in cases {
        posts.lock().unwrap().clear();
        let disk = blank_disk(dir.path(), size);
        let (code, text) = agent(port, &format!("{REPORTS_ON} {extra}"), &disk, &test_key());
        assert_eq!(code, 1, "{text}");
        // The operator reads the error first; the report follows.
        assert!(
            line_at(&text, "drover: error: ")
                < line_at(&text, "drover: report: failure recorded by"),
            "{text}"
        );
        let got = reports(&posts);
        match got.last() {
            Some(Report::Failure { phase: p, error: e }) => {
                assert_eq!(*p, phase, "{e}");
                assert!(e.contains(error), "{e}");
                // The full chain, as on the console.
                assert!(text.contains(&format!("drover: error: {e}\n")), "{text}");
            }
            other => panic!("{other:?} instead of a failure; {got:#?}"),
        }
        assert!(!got.iter().any(|r| matches!(r, Report::Success { .. })));
    }
}

#[test]
fn a_refused_success_does_not_fail_the_deploy() {
    let s = store();
    let (port, _, posts) = serve_reports(s.path().to_path_buf(), 0, |r| match r {
        Report::Success { .. } => (401, "unknown token for this node\n"),
        _ => (204, ""),
    });
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), 80 * MIB);
    let (code, text) = agent(port, REPORTS_ON, &disk, &test_key());
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("report: server refused the success report: ")
            && text.contains("answered 401 X: unknown token for this node"),
        "{text}"
    );
    assert!(
        text.contains("the server did not record this deploy; at the next netboot it will offer the deploy again"),
        "{text}"
    );
    let successes = reports(&posts)
        .iter()
        .filter(|r| matches!(r, Report::Success { .. }))
        .count();
    assert_eq!(successes, 1, "a refusal is not retried");
}

#[test]
fn a_broken_report_server_costs_the_deadline_and_no_more() {
    let s = store();
    // Images are served; reports all get a 503.
    let (port, _, posts) = serve_reports(s.path().to_path_buf(), 0, |_| (503, "busy"));
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), 80 * MIB);
    let (code, text) = agent_with(
        port,
        REPORTS_ON,
        &disk,
        &test_key(),
        &["--report-deadline", "2"],
    );
    let ended = Instant::now();
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("report: the success report was not delivered: "),
        "{text}"
    );
    assert!(text.contains("did not record this deploy"), "{text}");
    let posts = posts.lock().unwrap();
    let tries: Vec<Instant> = posts
        .iter()
        .filter(|p| matches!(p.report, Report::Success { .. }))
        .map(|p| p.at)
        .collect();
    assert!(tries.len() >= 2, "retried: {text}");
    let waited = ended - tries[0];
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
}

#[test]
fn a_server_that_is_gone_ends_the_failed_deploy_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), 8 * MIB);
    let started = Instant::now();
    // Port 1 on loopback: nothing listens, for images or reports.
    let (code, text) = agent_with(
        1,
        REPORTS_ON,
        &disk,
        &test_key(),
        &["--report-deadline", "1", "--server-patience", "0"],
    );
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("report: the failure report was not delivered: ")
            && text.contains("connecting to 127.0.0.1:1"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_server_that_comes_up_late_is_waited_for() {
    let s = store();
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), 80 * MIB);
    // A free port, with nothing listening on it for the first 2 seconds:
    // the server is restarting while the node boots.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let root = s.path().to_path_buf();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        serve_on(
            TcpListener::bind(("127.0.0.1", port)).unwrap(),
            root,
            0,
            |_| (204, ""),
        );
    });
    let (code, text) = agent_with(port, "", &disk, &test_key(), &["--server-patience", "30"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("no server reachable; trying again in 1s"),
        "{text}"
    );
    assert!(text.contains("drover: deployed demo@1 to "), "{text}");
}

#[test]
fn a_refusal_is_not_retried() {
    let s = store();
    let (port, _) = serve(s.path().to_path_buf(), 0);
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), 64 * MIB);
    let started = Instant::now();
    // A 404 for demo@2 is an answer, not an outage: no waiting.
    let out = Command::new(env!("CARGO_BIN_EXE_drover-agent"))
        .args(["run", "--cmdline"])
        .arg(format!(
            "deploy.server=http://127.0.0.1:{port} deploy.image=demo@2"
        ))
        .arg("--disk")
        .arg(&disk)
        .arg("--key")
        .arg(test_key())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("server answered 404"), "{text}");
    assert!(!text.contains("trying again"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(10));
}
