//! Where the things under test are: the deploy kernel and initrd, and the
//! `drover-server` binary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, Context as _, Result};

/// The workspace root (this crate's parent).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("qemu-tests lives inside the workspace")
        .to_owned()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` (relative paths taken from
/// the workspace root), else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// The deploy kernel and initrd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifacts {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

impl Artifacts {
    /// `$DROVER_ARTIFACTS/{vmlinuz,initrd.img}`, else
    /// `<target>/drover/{vmlinuz,initrd.img}` as `make initramfs` leaves them.
    pub fn locate() -> Result<Artifacts> {
        match std::env::var_os("DROVER_ARTIFACTS") {
            // One message, not a context chain: test harnesses print only
            // the top of a chain in some modes.
            Some(dir) => Artifacts::in_dir(Path::new(&dir)).map_err(|e| {
                anyhow::anyhow!(
                    "{e:#} (directory from DROVER_ARTIFACTS={})",
                    Path::new(&dir).display()
                )
            }),
            None => Artifacts::in_dir(&target_dir().join("drover")),
        }
    }

    /// `dir/vmlinuz` and `dir/initrd.img`, which must exist.
    pub fn in_dir(dir: &Path) -> Result<Artifacts> {
        let a = Artifacts {
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.img"),
        };
        let missing: Vec<String> = [&a.kernel, &a.initrd]
            .into_iter()
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        if !missing.is_empty() {
            bail!(
                "missing {}: run `make initramfs` first (it builds the static musl agent and \
                 the initrd with drover-initramfs), or point DROVER_ARTIFACTS at a directory \
                 holding vmlinuz and initrd.img",
                missing.join(" and ")
            );
        }
        Ok(a)
    }
}

/// The `drover-server` binary: `$DROVER_SERVER_BIN`, else built now with
/// `cargo build -p drover-server` in the test binary's own profile (once
/// per test process).
///
/// Building from the test (escargot style) rather than looking for a
/// leftover `target/*/drover-server` means a test never runs a stale server:
/// cargo makes it current, which costs well under a second when it already is.
pub fn server_bin() -> Result<PathBuf> {
    static BUILT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    workspace_bin("drover-server", "DROVER_SERVER_BIN", &BUILT)
}

/// The `drover-agent` binary (process mode, for the scale harness):
/// `$DROVER_AGENT_BIN`, else built now like [`server_bin`].
pub fn agent_bin() -> Result<PathBuf> {
    static BUILT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    workspace_bin("drover-agent", "DROVER_AGENT_BIN", &BUILT)
}

/// `$var` if set, else `name` (package and binary) built once per process.
fn workspace_bin(
    name: &str,
    var: &str,
    built: &OnceLock<std::result::Result<PathBuf, String>>,
) -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os(var) {
        // Relative to the workspace, not to the test's crate directory.
        let bin = workspace_root().join(bin);
        if !bin.is_file() {
            bail!("{var}={} does not exist", bin.display());
        }
        return Ok(bin);
    }
    built
        .get_or_init(|| build_bin(name, var).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build_bin(name: &str, var: &str) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // A test binary is `<target>/<profile>/deps/<name>-<hash>`, a program
    // such as drover-demo `<target>/<profile>/<name>`: build the server with
    // the same profile so `cargo test --release` tests release.
    let exe = std::env::current_exe().context("locating the test binary")?;
    let mut dir = exe.parent();
    if dir.and_then(Path::file_name).is_some_and(|d| d == "deps") {
        dir = dir.and_then(Path::parent);
    }
    let profile = dir
        .and_then(Path::file_name)
        .and_then(|p| p.to_str())
        .unwrap_or("debug")
        .to_owned();
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "-p", name, "--bin", name])
        .arg("--message-format=json-render-diagnostics");
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    eprintln!("building {name}: {cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("running {}", Path::new(&cargo).display()))?;
    if !out.status.success() {
        bail!(
            "`cargo build -p {name}` failed ({}); set {var} to use a prebuilt binary:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    executable_from_json(&stdout, name)
        .with_context(|| format!("cargo did not report the {name} executable"))
}

/// The `"executable"` of the compiler-artifact message for binary `name`,
/// from cargo's JSON messages (one object per line). A string search is
/// enough: cargo's JSON is compact and the paths we build need no escapes.
fn executable_from_json(json_lines: &str, name: &str) -> Option<PathBuf> {
    const KEY: &str = "\"executable\":\"";
    json_lines
        .lines()
        .filter(|l| l.contains("\"reason\":\"compiler-artifact\""))
        .filter_map(|l| {
            let start = l.find(KEY)? + KEY.len();
            let end = start + l[start..].find('"')?;
            Some(PathBuf::from(&l[start..end]))
        })
        .find(|p| p.file_name().is_some_and(|f| f == name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executable_is_found_in_cargo_json() {
        let json = concat!(
            r#"{"reason":"compiler-artifact","target":{"name":"kernel_cmdline"},"executable":null}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"name":"drover-server"},"executable":"/w/target/debug/drover-server","fresh":true}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
        );
        assert_eq!(
            executable_from_json(json, "drover-server"),
            Some(PathBuf::from("/w/target/debug/drover-server"))
        );
        assert_eq!(executable_from_json(json, "other"), None);
    }

    #[test]
    fn missing_artifacts_say_how_to_build_them() {
        let dir = tempfile::tempdir().unwrap();
        let e = Artifacts::in_dir(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("vmlinuz and ") && e.contains("make initramfs"),
            "{e}"
        );
        std::fs::write(dir.path().join("vmlinuz"), b"").unwrap();
        std::fs::write(dir.path().join("initrd.img"), b"").unwrap();
        assert!(Artifacts::in_dir(dir.path()).is_ok());
    }
}
