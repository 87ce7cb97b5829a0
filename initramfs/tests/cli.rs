//! The `drover-initramfs` binary against the fixture modules dir.

use std::process::{Command, Output};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/modules/6.1.0-test"
);

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_drover-initramfs"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn builds_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let agent = dir.path().join("agent");
    // Not ELF: the build goes through with a warning.
    std::fs::write(&agent, "not a binary").unwrap();
    let key = dir.path().join("key.pub");
    std::fs::write(&key, "k").unwrap();
    let output = dir.path().join("out/initrd.img");
    let out = run(&[
        "--agent",
        agent.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--modules-dir",
        FIXTURE,
        "--no-default-modules",
        "--module",
        "virtio_net,ext4",
        "--file",
        &format!("/etc/drover/trusted.pub={}", key.display()),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = stdout(&out);
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines[0], "kernel release: 6.1.0-test");
    assert_eq!(lines[1], "agent: 0.0 KiB");
    assert_eq!(lines[2], "modules: 8 files, 0.1 KiB");
    assert!(lines[3].starts_with("programs+libs: 0 programs, 0 libraries"));
    assert_eq!(lines[4], "files: 1 files, 0.0 KiB");
    assert!(lines[5].starts_with("initramfs uncompressed: "));
    assert!(lines[6].starts_with("initramfs compressed: "));
    assert!(lines[7].starts_with("initramfs without modules: "));
    assert_eq!(lines[8], format!("output: {}", output.display()));
    assert!(stderr(&out).contains("warning: agent "), "{}", stderr(&out));

    let gz = std::fs::read(&output).unwrap();
    let entries =
        drover_initramfs::cpio::list(&drover_initramfs::gzip::decompress(&gz).unwrap()).unwrap();
    assert!(entries.iter().any(|e| e.path == "etc/drover/trusted.pub"));
    // No temporary file left beside the output.
    assert_eq!(
        std::fs::read_dir(output.parent().unwrap()).unwrap().count(),
        1
    );
}

#[test]
fn prints_the_kernel_release() {
    let out = run(&["--modules-dir", FIXTURE, "--print-kernel-release"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "6.1.0-test\n");

    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("lib/modules/6.1.0-9-amd64")).unwrap();
    std::fs::create_dir_all(root.path().join("boot")).unwrap();
    std::fs::write(root.path().join("boot/vmlinuz-6.1.0-9-amd64"), "").unwrap();
    let out = run(&[
        "--sysroot",
        root.path().to_str().unwrap(),
        "--print-kernel-release",
    ]);
    assert_eq!(stdout(&out), "6.1.0-9-amd64\n", "{}", stderr(&out));
}

#[test]
fn errors_are_one_clear_line() {
    let out = run(&[
        "--modules-dir",
        FIXTURE,
        "--kernel-release",
        "x",
        "--print-kernel-release",
    ]);
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out),
        "drover-initramfs: error: give --kernel-release or --modules-dir, not both\n"
    );

    let out = run(&[
        "--agent",
        "/nonexistent",
        "--output",
        "/tmp/never-written",
        "--modules-dir",
        FIXTURE,
    ]);
    assert_eq!(
        stderr(&out),
        "drover-initramfs: error: building the initramfs: reading /nonexistent: No such file or directory (os error 2)\n"
    );

    let out = run(&[
        "--modules-dir",
        FIXTURE,
        "--agent",
        "a",
        "--output",
        "b",
        "--file",
        "nodest",
    ]);
    assert_eq!(
        stderr(&out),
        "drover-initramfs: error: --file \"nodest\": want DEST=SRC\n"
    );
}
