//! drover's `.torrent` against stock BitTorrent tools (Debian packages
//! mktorrent, transmission-cli, python3-libtorrent; `make setup` installs
//! them): for the same file and piece length, mktorrent's info dictionary
//! is byte-identical to ours, and transmission-show and libtorrent read
//! the same info-hash and piece hashes from both files. A tool that is not
//! installed fails the test under CI (`CI` set: CI runs `make setup`
//! first), and elsewhere skips it with a printed reason.

use std::path::{Path, PathBuf};
use std::process::Command;

use drover_agent::image::digest::encode_hex;
use drover_agent::torrent::metainfo::{Info, Metainfo};

/// A payload that is not a whole number of pieces.
fn payload() -> Vec<u8> {
    let mut x = 0x2545_f491u32;
    (0..300_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Under CI every tool must be there (`.ci/run` runs `make setup`): a
/// missing one fails the test rather than passing it unseen.
fn missing(what: &str) {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(!ci, "{what} (CI is set: `make setup` installs it)");
    eprintln!("SKIP: {what}");
}

fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        missing(&format!(
            "{tool} is not installed (apt-get install it, or run `make setup`)"
        ));
    }
    found
}

/// Debian's python3, which python3-libtorrent belongs to (a pyenv
/// `python3` first in PATH would not see it).
fn python_with_libtorrent() -> Option<PathBuf> {
    for py in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(py)
            .args(["-c", "import libtorrent"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(py.into());
        }
    }
    missing("no python3 can import libtorrent (apt-get install python3-libtorrent)");
    None
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

struct Case {
    dir: tempfile::TempDir,
    file: PathBuf,
    ours: Metainfo,
    ours_path: PathBuf,
}

fn case(piece_length: u32) -> Case {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("demo-1.0.payload");
    let data = payload();
    std::fs::write(&file, &data).unwrap();
    let info = Info::build(
        "demo-1.0.payload",
        &data[..],
        data.len() as u64,
        Some(piece_length),
    )
    .unwrap();
    let ours = Metainfo::new(info, Some("http://127.0.0.1:1/announce".into()));
    let ours_path = dir.path().join("ours.torrent");
    std::fs::write(&ours_path, ours.to_bytes()).unwrap();
    Case {
        dir,
        file,
        ours,
        ours_path,
    }
}

#[test]
fn mktorrent_writes_the_same_info() {
    if !have("mktorrent") {
        return;
    }
    for log2 in [15, 16, 18] {
        let c = case(1 << log2);
        let theirs_path = c.dir.path().join("theirs.torrent");
        run(Command::new("mktorrent")
            .args([
                "-d",
                "-l",
                &log2.to_string(),
                "-a",
                "http://127.0.0.1:1/announce",
                "-o",
            ])
            .arg(&theirs_path)
            .arg(&c.file));
        let theirs = Metainfo::parse(&std::fs::read(&theirs_path).unwrap()).unwrap();
        assert_eq!(theirs.info, c.ours.info, "piece length 2^{log2}");
        assert_eq!(theirs.info_hash, c.ours.info_hash, "piece length 2^{log2}");
    }
}

/// `Hash: <hex>` from transmission-show's output.
fn transmission_hash(torrent: &Path) -> String {
    let out = run(Command::new("transmission-show").arg(torrent));
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Hash: "))
        .unwrap_or_else(|| panic!("no Hash: line in {out}"))
        .trim()
        .to_owned()
}

#[test]
fn transmission_reads_our_info_hash() {
    if !have("transmission-show") {
        return;
    }
    for log2 in [14, 15, 17] {
        let c = case(1 << log2);
        assert_eq!(
            transmission_hash(&c.ours_path),
            c.ours.info_hash.to_string(),
            "piece length 2^{log2}"
        );
        // The stored form (no announce) is read the same.
        let stored = c.dir.path().join("stored.torrent");
        let bare = Metainfo::new(c.ours.info.clone(), None);
        std::fs::write(&stored, bare.to_bytes()).unwrap();
        assert_eq!(transmission_hash(&stored), c.ours.info_hash.to_string());
    }
}

#[test]
fn libtorrent_reads_our_info_hash_and_pieces() {
    let Some(py) = python_with_libtorrent() else {
        return;
    };
    let script = r#"
import sys, libtorrent as lt
ti = lt.torrent_info(sys.argv[1])
print(str(ti.info_hash()))
print(ti.piece_length(), ti.num_pieces(), ti.total_size(), ti.name())
for i in range(ti.num_pieces()):
    print(ti.hash_for_piece(i).hex())
# The bencoded file parses with libtorrent's own decoder too.
d = lt.bdecode(open(sys.argv[1], 'rb').read())
assert d is not None and b'info' in d, d
"#;
    for log2 in [14, 16, 20] {
        let c = case(1 << log2);
        let out = run(Command::new(&py).args(["-c", script]).arg(&c.ours_path));
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some(c.ours.info_hash.to_string().as_str()));
        let info = &c.ours.info;
        let want = format!(
            "{} {} {} {}",
            info.piece_length,
            info.piece_count(),
            info.length,
            info.name
        );
        assert_eq!(lines.next(), Some(want.as_str()));
        let pieces: Vec<String> = lines.map(str::to_owned).collect();
        let ours: Vec<String> = info.pieces.iter().map(|p| encode_hex(p)).collect();
        assert_eq!(pieces, ours, "piece length 2^{log2}");
    }
}
