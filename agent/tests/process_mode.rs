//! The agent as an ordinary process: exit codes and the console text an
//! operator reads.

use std::process::Command;

fn agent(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_drover-agent"))
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn help_describes_both_modes() {
    let (code, text) = agent(&["--help"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("PID 1"), "{text}");
    assert!(text.contains("run"), "{text}");
}

#[test]
fn bad_option_is_named_with_what_is_accepted() {
    let disk = tempfile::NamedTempFile::new().unwrap();
    let (code, text) = agent(&[
        "run",
        "--cmdline",
        "deploy.server=http://127.0.0.1:1 deploy.image=demo deploy.bogus=1",
        "--disk",
        disk.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("drover: error: "), "{text}");
    assert!(text.contains("deploy.bogus"), "{text}");
    assert!(
        text.contains("deploy.image"),
        "lists the valid keys: {text}"
    );
}

#[test]
fn missing_disk_is_an_error_naming_it() {
    let (code, text) = agent(&[
        "run",
        "--cmdline",
        "deploy.server=http://127.0.0.1:1 deploy.image=demo",
        "--disk",
        "/nonexistent/disk.img",
    ]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("/nonexistent/disk.img"), "{text}");
}

#[test]
fn unreachable_server_is_a_clear_error() {
    let disk = tempfile::NamedTempFile::new().unwrap();
    let cmdline = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        cmdline.path(),
        // Port 1 on loopback: nothing listens, the connection is refused.
        "vmlinuz initrd=initrd.img deploy.server=http://127.0.0.1:1 deploy.image=demo@1 console=ttyS0\n",
    )
    .unwrap();
    let (code, text) = agent(&[
        "run",
        "--cmdline-file",
        cmdline.path().to_str().unwrap(),
        "--disk",
        disk.path().to_str().unwrap(),
        "--server-patience",
        "0",
    ]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("drover: options parsed: image=demo@1 mode=http"),
        "{text}"
    );
    assert!(
        text.contains("drover: error: no server could provide demo@1: http://127.0.0.1:1"),
        "{text}"
    );
    assert!(text.contains("connecting to 127.0.0.1:1"), "{text}");
}

#[test]
fn cmdline_source_must_be_exactly_one() {
    let (code, text) = agent(&["run", "--disk", "/dev/null"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("--cmdline"), "{text}");
}
