//! The agent's http deploy as a process, against a file-backed disk and a
//! small range-capable HTTP server on loopback serving the committed demo
//! image (agent/src/image/fixtures). Asserts bytes on the disk, `sgdisk -v`,
//! `e2fsck -fn`, and the errors for bad input.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/image/fixtures");
const MIB: u64 = 1 << 20;

/// Serves `root` as `/images/...`: GET with `Range: bytes=a-b`. The first
/// `fail_payload` payload requests get a 503 (a server hiccup to survive).
fn serve(root: PathBuf, fail_payload: usize) -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let payload_requests = Arc::new(AtomicUsize::new(0));
    let counter = payload_requests.clone();
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
    (port, payload_requests)
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
    let out = Command::new(env!("CARGO_BIN_EXE_drover-agent"))
        .args(["run", "--cmdline"])
        .arg(format!(
            "deploy.server=http://127.0.0.1:{port} deploy.image=demo@1 {extra}"
        ))
        .arg("--disk")
        .arg(disk)
        .arg("--key")
        .arg(key)
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
