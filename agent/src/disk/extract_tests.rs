//! Extraction of a realistic tree, symlink replacement and error messages;
//! the hostile archives are in `extract_hostile_tests.rs`.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;

use tar::{Builder, Header};

use super::*;

/// One archive member, written with raw header fields (no sanitizing).
#[derive(Debug, Clone)]
enum E {
    Dir(&'static str, u32),
    File(String, u32, &'static [u8]),
    Sym(String, String),
    Hard(String, String),
    Node(&'static str, EntryType, u32, u32),
    /// PAX records, then a regular file.
    Pax(Vec<(&'static str, Vec<u8>)>, &'static str, &'static [u8]),
    /// A GNU long name, then a regular file.
    LongName(String, &'static [u8]),
    /// A regular file with this uid and gid.
    Owned(&'static str, u64, u64, &'static [u8]),
}

fn header(kind: EntryType, path: &[u8], link: &[u8], mode: u32, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.as_old_mut().name[..path.len()].copy_from_slice(path);
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(size);
    h.set_cksum();
    h
}

fn put(
    b: &mut Builder<Vec<u8>>,
    kind: EntryType,
    path: &[u8],
    link: &[u8],
    mode: u32,
    data: &[u8],
) {
    let h = header(kind, path, link, mode, data.len() as u64);
    b.append(&h, data).unwrap();
}

/// PAX records: `LEN key=value\n`, where LEN counts its own digits.
fn pax_records(records: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut data = Vec::new();
    for (k, v) in records {
        let body = [format!(" {k}=").as_bytes(), v, b"\n"].concat();
        let len = (1..=4)
            .map(|d| body.len() + d)
            .find(|l| l.to_string().len() + body.len() == *l)
            .unwrap();
        data.extend_from_slice(len.to_string().as_bytes());
        data.extend_from_slice(&body);
    }
    data
}

fn tar(entries: &[E]) -> Vec<u8> {
    use EntryType::*;
    let mut b = Builder::new(Vec::new());
    for e in entries {
        match e {
            E::Dir(p, m) => put(&mut b, Directory, p.as_bytes(), b"", *m, b""),
            E::File(p, m, d) => put(&mut b, Regular, p.as_bytes(), b"", *m, d),
            E::Sym(p, t) => put(&mut b, Symlink, p.as_bytes(), t.as_bytes(), 0o777, b""),
            E::Hard(p, t) => put(&mut b, Link, p.as_bytes(), t.as_bytes(), 0o644, b""),
            E::Node(p, k, maj, min) => {
                let mut h = header(*k, p.as_bytes(), b"", 0o620, 0);
                h.set_device_major(*maj).unwrap();
                h.set_device_minor(*min).unwrap();
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            E::Pax(records, p, d) => {
                put(
                    &mut b,
                    XHeader,
                    b"PaxHeader",
                    b"",
                    0o644,
                    &pax_records(records),
                );
                put(&mut b, Regular, p.as_bytes(), b"", 0o644, d);
            }
            E::Owned(p, uid, gid, d) => {
                let mut h = header(Regular, p.as_bytes(), b"", 0o640, d.len() as u64);
                h.set_uid(*uid);
                h.set_gid(*gid);
                h.set_cksum();
                b.append(&h, *d).unwrap();
            }
            E::LongName(p, d) => {
                let name = [p.as_bytes(), b"\0"].concat();
                put(&mut b, GNULongName, b"././@LongLink", b"", 0o644, &name);
                put(&mut b, Regular, b"truncated", b"", 0o644, d);
            }
        }
    }
    b.into_inner().unwrap()
}

/// `dir/root` to extract into, `dir/outside` with a sentinel file.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("root")).unwrap();
        fs::create_dir(dir.path().join("outside")).unwrap();
        fs::write(dir.path().join("outside/secret"), "keep").unwrap();
        Sandbox { dir }
    }
    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    fn outside(&self) -> String {
        self.dir.path().join("outside").display().to_string()
    }
    fn run(&self, entries: &[E]) -> Result<Stats> {
        extract(&tar(entries)[..], &self.root())
    }
    /// Everything outside `root` is as it was.
    fn assert_outside_untouched(&self) {
        let mut names: Vec<_> = fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["outside", "root"]);
        let inside: Vec<_> = fs::read_dir(self.dir.path().join("outside"))
            .unwrap()
            .collect();
        assert_eq!(inside.len(), 1);
        assert_eq!(
            fs::read_to_string(self.dir.path().join("outside/secret")).unwrap(),
            "keep"
        );
    }
}

fn root_user() -> bool {
    rustix::process::geteuid().is_root()
}

#[test]
fn extracts_a_system_tree() {
    let sb = Sandbox::new();
    let mut entries = vec![
        E::Dir("./", 0o755),
        E::Dir("./usr/", 0o755),
        E::Dir("./usr/bin/", 0o750),
        E::File("./usr/bin/su".into(), 0o4755, b"#!su"),
        E::Hard("./usr/bin/su-again".into(), "./usr/bin/su".into()),
        E::Sym("./bin".into(), "usr/bin".into()),
        E::Sym("./usr/bin/sh".into(), "/bin/busybox".into()),
        E::Sym("./usr/bin/up".into(), "../../usr".into()),
        E::Node("./run/initctl", EntryType::Fifo, 0, 0),
        E::Pax(
            vec![("SCHILY.xattr.user.drover", b"yes".to_vec())],
            "./etc/labelled",
            b"data",
        ),
        E::LongName(format!("./var/{}/deep", "long".repeat(40)), b"deep"),
        E::Owned("home/user/.profile", 1000, 100, b"x=1"),
    ];
    if root_user() {
        entries.push(E::Node("./dev/null", EntryType::Char, 1, 3));
        entries.push(E::Node("./dev/vda", EntryType::Block, 254, 0));
    }
    let stats = sb.run(&entries).unwrap();
    let r = sb.root();
    let devices = if root_user() { 2 } else { 0 };
    assert_eq!(
        stats,
        Stats {
            entries: 12 + devices,
            file_bytes: 4 + 4 + 4 + 3,
            files: 4,
            dirs: 3,
            symlinks: 3,
            hardlinks: 1,
            devices,
            fifos: 1,
        }
    );
    let meta = |p: &str| fs::symlink_metadata(r.join(p)).unwrap();
    assert_eq!(meta("usr/bin/su").mode() & 0o7777, 0o4755);
    assert_eq!(meta("usr/bin/su").nlink(), 2);
    assert_eq!(meta("usr/bin/su").ino(), meta("usr/bin/su-again").ino());
    assert_eq!(meta("usr/bin").mode() & 0o7777, 0o750);
    assert_eq!(
        meta("usr/bin").mtime(),
        1_700_000_000,
        "directory mtimes are set last"
    );
    assert_eq!(meta("usr/bin/su").mtime(), 1_700_000_000);
    assert_eq!(meta("usr/bin/sh").mtime(), 1_700_000_000);
    assert_eq!(
        fs::read_link(r.join("usr/bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    assert_eq!(fs::read_link(r.join("bin")).unwrap(), Path::new("usr/bin"));
    assert!(meta("run/initctl").file_type().is_fifo());
    assert_eq!(
        fs::read(r.join(format!("var/{}/deep", "long".repeat(40)))).unwrap(),
        b"deep"
    );
    let mut buf = [0u8; 16];
    let n = rustix::fs::getxattr(r.join("etc/labelled"), "user.drover", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"yes");
    if root_user() {
        assert_eq!(
            (
                meta("home/user/.profile").uid(),
                meta("home/user/.profile").gid()
            ),
            (1000, 100)
        );
        assert_eq!(meta("usr/bin/su").uid(), 0);
        let null = meta("dev/null");
        assert!(null.file_type().is_char_device());
        assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
        assert_eq!(null.mode() & 0o777, 0o620);
        assert!(meta("dev/vda").file_type().is_block_device());
    }
    // Parents created implicitly are plain 0755 directories.
    assert!(meta("var").is_dir());
    sb.assert_outside_untouched();
}

#[test]
fn replacing_a_symlink_never_writes_through_it() {
    let sb = Sandbox::new();
    let target = format!("{}/secret", sb.outside());
    let stats = sb
        .run(&[
            E::Sym("f".into(), target),
            E::File("f".into(), 0o600, b"mine"),
        ])
        .unwrap();
    assert_eq!((stats.symlinks, stats.files), (1, 1));
    assert!(fs::symlink_metadata(sb.root().join("f")).unwrap().is_file());
    assert_eq!(fs::read(sb.root().join("f")).unwrap(), b"mine");
    sb.assert_outside_untouched();
}

#[test]
fn io_errors_name_the_entry() {
    let sb = Sandbox::new();
    fs::set_permissions(sb.root(), fs::Permissions::from_mode(0o755)).unwrap();
    let bad = [E::Pax(
        vec![("SCHILY.xattr.bogus.ns", b"1".to_vec())],
        "f",
        b"x",
    )];
    let err = format!("{:#}", sb.run(&bad).unwrap_err());
    assert!(
        err.starts_with("extracting \"f\": setting the extended attribute \"bogus.ns\""),
        "{err}"
    );
    let err = format!(
        "{:#}",
        extract(&b"not a tar archive at all"[..], &sb.root())
            .map(|_| ())
            .unwrap_err()
    );
    assert!(err.starts_with("reading the tar stream"), "{err}");
    let err = format!(
        "{:#}",
        extract(&tar(&[])[..], &sb.root().join("missing")).unwrap_err()
    );
    assert!(err.starts_with("opening "), "{err}");
}

#[path = "extract_hostile_tests.rs"]
mod hostile;
