//! Whole builds against the committed fake modules dir
//! (tests/fixtures/modules/6.1.0-test) and a fake agent.

use std::path::{Path, PathBuf};

use drover_initramfs::cpio::{self, Entry, Kind};
use drover_initramfs::{build, gzip, Program, Spec};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/modules/6.1.0-test"
);

/// An ELF64 x86-64 header with no program headers: what a static binary
/// looks like to the agent check, and small.
fn agent() -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    (h[4], h[5], h[6], h[16], h[18], h[20], h[52]) = (2, 1, 1, 2, 62, 1, 64);
    h
}

/// A workspace with the agent, a key file and a copy of the fixture modules
/// dir, so two of them differ in every absolute path and mtime.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("agent"), agent()).unwrap();
        std::fs::write(dir.path().join("trusted.pub"), "key\n").unwrap();
        copy_dir(Path::new(FIXTURE), &dir.path().join("modules/6.1.0-test"));
        Self { dir }
    }

    fn spec(&self) -> Spec {
        let mut spec = Spec::new(self.dir.path().join("agent"));
        spec.modules_dir = Some(self.dir.path().join("modules/6.1.0-test"));
        spec.modules = vec!["virtio-net".into(), "ext4".into()];
        spec.default_modules = false;
        spec.files = vec![(
            "/etc/drover/trusted.pub".into(),
            self.dir.path().join("trusted.pub"),
        )];
        spec
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn unpack(gz: &[u8]) -> Vec<Entry> {
    cpio::list(&gzip::decompress(gz).unwrap()).unwrap()
}

fn get<'a>(entries: &'a [Entry], path: &str) -> &'a Entry {
    entries
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("{path} missing"))
}

fn text(entry: &Entry) -> &str {
    match &entry.kind {
        Kind::File(data) => std::str::from_utf8(data).unwrap(),
        other => panic!("{} is {other:?}", entry.path),
    }
}

#[test]
fn same_inputs_give_identical_bytes() {
    let a = Setup::new();
    let first = build(&a.spec()).unwrap();
    // Different paths, later mtimes: nothing of that may leak in.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = Setup::new();
    let second = build(&b.spec()).unwrap();
    assert_eq!(first.gzip, second.gzip);
    assert_eq!(first.report, second.report);
    assert_eq!(build(&a.spec()).unwrap().gzip, first.gzip);
}

#[test]
fn layout_is_complete() {
    let setup = Setup::new();
    let built = build(&setup.spec()).unwrap();
    let entries = unpack(&built.gzip);

    let init = get(&entries, "init");
    assert_eq!(init.full_mode(), 0o100755);
    assert_eq!(init.kind, Kind::File(agent()));
    assert_eq!(
        get(&entries, "dev/console").kind,
        Kind::CharDev { major: 5, minor: 1 }
    );
    assert_eq!(get(&entries, "dev/console").full_mode(), 0o020600);
    assert_eq!(
        get(&entries, "dev/null").kind,
        Kind::CharDev { major: 1, minor: 3 }
    );
    for dir in ["bin", "dev", "etc", "mnt", "proc", "run", "sys", "tmp"] {
        assert_eq!(get(&entries, dir).kind, Kind::Dir, "{dir}");
    }
    assert_eq!(get(&entries, "tmp").mode, 0o1777);
    assert_eq!(text(get(&entries, "etc/drover/release")), "6.1.0-test\n");
    assert_eq!(text(get(&entries, "etc/drover/trusted.pub")), "key\n");
    assert_eq!(get(&entries, "etc/drover/trusted.pub").mode, 0o644);

    let base = "lib/modules/6.1.0-test";
    let ko: Vec<&str> = entries
        .iter()
        .filter_map(|e| e.path.strip_prefix(&format!("{base}/kernel/")))
        .filter(|p| p.contains(".ko"))
        .collect();
    assert_eq!(
        ko,
        [
            "drivers/net/net_failover.ko",
            "drivers/net/virtio_net.ko",
            "drivers/virtio/virtio.ko",
            "drivers/virtio/virtio_ring.ko",
            "fs/ext4/ext4.ko",
            "fs/jbd2/jbd2.ko",
            "lib/crc16.ko",
            "net/core/failover.ko",
        ]
    );
    assert_eq!(
        text(get(&entries, &format!("{base}/kernel/lib/crc16.ko"))),
        "dummy crc16.ko\n"
    );
    let dep = text(get(&entries, &format!("{base}/modules.dep")));
    assert_eq!(dep.lines().count(), 8);
    assert!(!dep.contains("unused"));
    assert_eq!(
        text(get(&entries, &format!("{base}/modules.alias"))),
        "alias virtio:d00000001v* virtio_net\nalias fs-ext4 ext4\n"
    );
    assert_eq!(
        text(get(&entries, &format!("{base}/modules.softdep"))),
        "softdep ext4 pre: crypto-crc32c\n"
    );
    assert!(text(get(&entries, &format!("{base}/modules.builtin"))).contains("af_packet"));

    // Parents first, and no path twice.
    let mut seen = std::collections::HashSet::new();
    for entry in &entries {
        if let Some((parent, _)) = entry.path.rsplit_once('/') {
            assert!(seen.contains(parent), "{} before {parent}", entry.path);
        }
        assert!(seen.insert(entry.path.as_str()), "{} twice", entry.path);
    }

    let report = &built.report;
    assert_eq!(report.release.as_deref(), Some("6.1.0-test"));
    assert_eq!(report.agent_bytes, agent().len() as u64);
    assert_eq!((report.modules, report.files, report.programs), (8, 1, 0));
    assert_eq!(report.entries, entries.len());
    assert_eq!(report.compressed_bytes, built.gzip.len() as u64);
    assert_eq!(report.notes, Vec::<String>::new());
}

#[test]
fn default_modules_missing_from_the_kernel_are_skipped_with_a_note() {
    let setup = Setup::new();
    let mut spec = setup.spec();
    spec.default_modules = true;
    let report = build(&spec).unwrap().report;
    // virtio_net, ext4, crc32c_intel and nls_iso8859_1 exist in the fixture.
    assert_eq!(report.modules, 10);
    assert!(report.missing_defaults.contains(&"e1000".to_owned()));
    assert!(!report.missing_defaults.contains(&"crc32c_intel".to_owned()));
    assert!(report.notes[0].starts_with("default module(s) not in kernel 6.1.0-test, skipped: "));

    let without = build(&spec.without_modules()).unwrap().report;
    assert_eq!(without.modules, 0);
    assert!(without.compressed_bytes < report.compressed_bytes);
}

#[test]
fn requested_modules_must_exist() {
    let setup = Setup::new();
    let mut spec = setup.spec();
    spec.modules.push("af_packet".into()); // built in: fine
    assert_eq!(build(&spec).unwrap().report.builtin, ["af_packet"]);
    spec.modules.push("nosuch_driver".into());
    let err = build(&spec).unwrap_err();
    let dep = setup.dir.path().join("modules/6.1.0-test/modules.dep");
    assert_eq!(
        err.to_string(),
        format!(
            "unknown kernel module(s) nosuch_driver: neither in {} nor in modules.builtin",
            dep.display()
        )
    );
}

#[test]
fn file_conflicts_and_missing_inputs_name_the_path() {
    let setup = Setup::new();
    let mut spec = setup.spec();
    spec.files
        .push(("/init".into(), setup.dir.path().join("trusted.pub")));
    assert_eq!(
        build(&spec).unwrap_err().to_string(),
        "init: added twice with different type, mode or contents"
    );
    let mut spec = setup.spec();
    spec.agent = PathBuf::from("/nonexistent/agent");
    assert_eq!(
        build(&spec).unwrap_err().to_string(),
        "reading /nonexistent/agent"
    );
}

#[test]
fn programs_bring_their_libraries() {
    if !Path::new("/lib64/ld-linux-x86-64.so.2").exists() {
        eprintln!("skipping: no x86-64 glibc userland here");
        return;
    }
    let setup = Setup::new();
    let mut spec = setup.spec();
    spec.programs = vec![Program {
        src: "/bin/ls".into(),
        dest: None,
    }];
    let built = build(&spec).unwrap();
    let entries = unpack(&built.gzip);
    assert_eq!(get(&entries, "bin/ls").full_mode(), 0o100755);
    assert!(matches!(
        get(&entries, "lib/x86_64-linux-gnu/libc.so.6").kind,
        Kind::File(_)
    ));
    assert!(matches!(
        get(&entries, "lib64/ld-linux-x86-64.so.2").kind,
        Kind::File(_)
    ));
    assert_eq!(built.report.programs, 1);
    assert!(built.report.libraries >= 3, "{:?}", built.report);
}

/// Cross-checks the archive with GNU cpio when it is installed; the rest of
/// the suite does not need it.
#[test]
fn gnu_cpio_agrees_when_installed() {
    let setup = Setup::new();
    let built = build(&setup.spec()).unwrap();
    let cpio_bytes = gzip::decompress(&built.gzip).unwrap();
    let child = std::process::Command::new("cpio")
        .args(["-t", "--quiet"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("skipping: no cpio here");
        return;
    };
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&cpio_bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let listed: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let ours: Vec<String> = cpio::list(&cpio_bytes)
        .unwrap()
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(listed, ours);
}

#[test]
fn a_dynamic_agent_gets_a_warning() {
    if !Path::new("/bin/true").exists() {
        return;
    }
    let setup = Setup::new();
    let mut spec = setup.spec();
    spec.agent = PathBuf::from("/bin/true");
    let notes = build(&spec).unwrap().report.notes;
    assert_eq!(notes.len(), 1);
    assert!(
        notes[0].starts_with("agent /bin/true is dynamically linked (needs /lib64/"),
        "{notes:?}"
    );
}
