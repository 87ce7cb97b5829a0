//! A process registry that always cleans up (cloud-hypervisor `test_infra`
//! style).
//!
//! Every child started through [`Procs`] is tracked; dropping its [`Proc`]
//! guard (or the last handle of the registry) sends SIGTERM, waits up to
//! [`TERM_GRACE`], sends SIGKILL and reaps it. Drops run during unwinding,
//! so a failed assertion cleans up too. As a last resort, children get
//! `PR_SET_PDEATHSIG(SIGKILL)`, so even a test process killed with SIGKILL
//! does not leave QEMU or dnsmasq running.
//!
//! Output goes to `<log dir>/<name>.log` (stdout and stderr interleaved),
//! except for [`Procs::spawn_piped`], whose stdout the caller reads (QEMU's
//! serial console).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use rustix::process::{kill_process, Pid, Signal};

/// How long a child gets to exit after SIGTERM before SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(2);

/// A registry of child processes. Cheap to clone; all clones share the
/// children.
#[derive(Clone)]
pub struct Procs {
    reg: Arc<Registry>,
}

struct Registry {
    log_dir: PathBuf,
    entries: Mutex<Vec<Entry>>,
}

struct Entry {
    name: String,
    pid: u32,
    /// `None` once reaped.
    child: Option<Child>,
    status: Option<ExitStatus>,
}

/// One child; stops it on drop.
pub struct Proc {
    reg: Arc<Registry>,
    idx: usize,
    name: String,
    pid: u32,
    log: PathBuf,
}

impl Procs {
    /// A registry whose children log under `log_dir` (created if needed).
    pub fn new(log_dir: impl Into<PathBuf>) -> Result<Procs> {
        let log_dir = log_dir.into();
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;
        Ok(Procs {
            reg: Arc::new(Registry {
                log_dir,
                entries: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Where the children's logs go.
    pub fn log_dir(&self) -> &Path {
        &self.reg.log_dir
    }

    /// Start `cmd` with stdout and stderr appended to `<log dir>/<name>.log`.
    pub fn spawn(&self, name: &str, mut cmd: Command) -> Result<Proc> {
        let (name, log) = self.reg.claim_name(name);
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdout(out.try_clone()?).stderr(out);
        let (proc, _) = self.reg.start(name, log, cmd)?;
        Ok(proc)
    }

    /// Start `cmd` with stdout piped to the caller and stderr in
    /// `<log dir>/<name>.log`.
    pub fn spawn_piped(&self, name: &str, mut cmd: Command) -> Result<(Proc, ChildStdout)> {
        let (name, log) = self.reg.claim_name(name);
        let err = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdout(Stdio::piped()).stderr(err);
        let (proc, stdout) = self.reg.start(name, log, cmd)?;
        Ok((proc, stdout.expect("stdout was piped")))
    }

    /// `name (pid N)` of every child that is still running (not reaped and
    /// not exited). Empty when everything was cleaned up.
    pub fn running(&self) -> Vec<String> {
        let mut entries = self.reg.lock();
        entries
            .iter_mut()
            .filter_map(|e| {
                let child = e.child.as_mut()?;
                match child.try_wait() {
                    Ok(Some(status)) => {
                        e.status = Some(status);
                        e.child = None;
                        None
                    }
                    _ => Some(format!("{} (pid {})", e.name, e.pid)),
                }
            })
            .collect()
    }

    /// Fail, naming them, if any children are still running.
    pub fn assert_none_running(&self) -> Result<()> {
        let running = self.running();
        if !running.is_empty() {
            bail!("processes still running: {}", running.join(", "));
        }
        Ok(())
    }
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Vec<Entry>> {
        // A panic while holding the lock must not stop the cleanup.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A unique log name: `name`, else `name-2`, `name-3`, …
    fn claim_name(&self, name: &str) -> (String, PathBuf) {
        let entries = self.lock();
        let mut unique = name.to_owned();
        let mut n = 1;
        while entries.iter().any(|e| e.name == unique) {
            n += 1;
            unique = format!("{name}-{n}");
        }
        let log = self.log_dir.join(format!("{unique}.log"));
        (unique, log)
    }

    fn start(
        self: &Arc<Self>,
        name: String,
        log: PathBuf,
        mut cmd: Command,
    ) -> Result<(Proc, Option<ChildStdout>)> {
        cmd.stdin(Stdio::null());
        // SAFETY: the closure runs between fork and exec and only makes one
        // raw prctl syscall, which is async-signal-safe; it touches no locks
        // or allocations of the parent.
        unsafe {
            use std::os::unix::process::CommandExt as _;
            cmd.pre_exec(|| {
                // If the test process dies without running its drops (SIGKILL,
                // abort), the kernel kills the child. The signal is sent when
                // the spawning *thread* exits, which for a test is after its
                // guards already ran.
                rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
                    .map_err(std::io::Error::from)
            });
        }
        let program = cmd.get_program().to_string_lossy().into_owned();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({program})"))?;
        let stdout = child.stdout.take();
        let pid = child.id();
        let mut entries = self.lock();
        let idx = entries.len();
        entries.push(Entry {
            name: name.clone(),
            pid,
            child: Some(child),
            status: None,
        });
        drop(entries);
        let proc = Proc {
            reg: Arc::clone(self),
            idx,
            name,
            pid,
            log,
        };
        Ok((proc, stdout))
    }

    fn try_wait(&self, idx: usize) -> Result<Option<ExitStatus>> {
        let mut entries = self.lock();
        let e = &mut entries[idx];
        if let Some(child) = e.child.as_mut() {
            if let Some(status) = child
                .try_wait()
                .with_context(|| format!("waiting for {}", e.name))?
            {
                e.status = Some(status);
                e.child = None;
            }
        }
        Ok(e.status)
    }

    /// SIGTERM, up to [`TERM_GRACE`], SIGKILL, reap. Idempotent.
    fn stop(&self, idx: usize) -> Option<ExitStatus> {
        let pid = {
            let entries = self.lock();
            entries[idx].child.as_ref()?;
            entries[idx].pid
        };
        if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
            // ESRCH (already exited, not yet reaped) is fine.
            let _ = kill_process(pid, Signal::TERM);
        }
        let deadline = Instant::now() + TERM_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.try_wait(idx) {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut entries = self.lock();
        let e = &mut entries[idx];
        let mut child = e.child.take()?;
        let _ = child.kill();
        let status = child.wait().ok();
        e.status = status;
        status
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Only reached once every `Proc` is gone, and those stop their own
        // child: this is the belt to their braces.
        // (Length first: a guard in the `for` header would live through
        // the loop and deadlock `stop`.)
        let n = self.lock().len();
        for idx in 0..n {
            self.stop(idx);
        }
    }
}

impl Proc {
    /// The name the logs use.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's pid (that of the program itself: `ip netns exec` execs).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `<log dir>/<name>.log`.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The log's contents so far (empty if unreadable).
    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The exit status, if the child has exited (reaping it).
    pub fn try_wait(&self) -> Result<Option<ExitStatus>> {
        self.reg.try_wait(self.idx)
    }

    /// Wait up to `timeout` for the child to exit by itself.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} (pid {}) still running after {timeout:?}",
                    self.name,
                    self.pid
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop the child now (SIGTERM, then SIGKILL) and reap it.
    pub fn stop(&self) -> Option<ExitStatus> {
        self.reg.stop(self.idx)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.reg.stop(self.idx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn procs() -> (tempfile::TempDir, Procs) {
        let dir = tempfile::tempdir().unwrap();
        let procs = Procs::new(dir.path()).unwrap();
        (dir, procs)
    }

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn output_goes_to_the_log() {
        let (_d, procs) = procs();
        let p = procs.spawn("echo", sh("echo out; echo err >&2")).unwrap();
        assert!(p.wait_timeout(Duration::from_secs(10)).unwrap().success());
        assert_eq!(p.log(), "out\nerr\n");
        assert_eq!(p.log_path(), procs.log_dir().join("echo.log"));
        assert!(procs.running().is_empty());
    }

    #[test]
    fn names_are_made_unique() {
        let (_d, procs) = procs();
        let a = procs.spawn("x", sh("true")).unwrap();
        let b = procs.spawn("x", sh("true")).unwrap();
        assert_eq!((a.name(), b.name()), ("x", "x-2"));
    }

    #[test]
    fn drop_terminates_and_reaps() {
        let (_d, procs) = procs();
        let p = procs.spawn("sleeper", sh("exec sleep 600")).unwrap();
        assert_eq!(procs.running(), vec![format!("sleeper (pid {})", p.pid())]);
        assert!(procs.assert_none_running().is_err());
        let start = Instant::now();
        drop(p);
        assert!(
            start.elapsed() < TERM_GRACE,
            "SIGTERM should have been enough"
        );
        procs.assert_none_running().unwrap();
    }

    #[test]
    fn sigterm_ignored_gets_sigkill() {
        let (_d, procs) = procs();
        let p = procs
            .spawn(
                "stubborn",
                sh("trap '' TERM; echo ready; while :; do sleep 0.05; done"),
            )
            .unwrap();
        // Wait until the trap is installed, or SIGTERM would simply work.
        let ready = crate::wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
            p.log().contains("ready")
        });
        assert!(ready);
        let start = Instant::now();
        let status = p.stop().unwrap();
        assert!(start.elapsed() >= TERM_GRACE);
        assert!(!status.success());
        procs.assert_none_running().unwrap();
    }

    #[test]
    fn drop_during_panic_cleans_up() {
        let (_d, procs) = procs();
        let procs2 = procs.clone();
        let r = std::panic::catch_unwind(move || {
            let _p = procs2.spawn("sleeper", sh("exec sleep 600")).unwrap();
            panic!("test failed");
        });
        assert!(r.is_err());
        procs.assert_none_running().unwrap();
    }

    #[test]
    fn spawn_piped_hands_over_stdout() {
        use std::io::Read as _;
        let (_d, procs) = procs();
        let (p, mut out) = procs
            .spawn_piped("piped", sh("echo serial; echo log >&2"))
            .unwrap();
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        p.wait_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!((s.as_str(), p.log().as_str()), ("serial\n", "log\n"));
    }

    #[test]
    fn missing_program_is_a_clear_error() {
        let (_d, procs) = procs();
        let e = procs
            .spawn("nope", Command::new("/nonexistent/prog"))
            .err()
            .unwrap();
        assert!(
            format!("{e:#}").starts_with("starting nope (/nonexistent/prog): "),
            "{e:#}"
        );
    }
}
