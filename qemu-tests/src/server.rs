//! `drover-server serve` inside a test namespace.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use crate::netns::Netns;
use crate::procs::{Proc, Procs};
use crate::wait_until;

/// What goes into the server's TOML config.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub public_url: String,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub kernel_args: String,
    /// `[deploy]` entries, e.g. `("image", "demo")`, `("on_error", "poweroff")`.
    pub deploy: Vec<(String, String)>,
    /// The image store (`drover-server image import --store`), if any.
    pub store: Option<PathBuf>,
    /// TOML appended after the `[deploy]` table as written (more tables,
    /// e.g. `[chain]`).
    pub extra_toml: String,
}

impl ServerConfig {
    /// Listen on port 8080 of the namespace's bridge address, serving
    /// `kernel`/`initrd`, image `demo`, `console=ttyS0`.
    pub fn new(netns: &Netns, kernel: &Path, initrd: &Path) -> ServerConfig {
        let listen = SocketAddr::from((netns.subnet().host, 8080));
        ServerConfig {
            listen,
            public_url: format!("http://{listen}"),
            kernel: kernel.to_owned(),
            initrd: initrd.to_owned(),
            kernel_args: "console=ttyS0".to_owned(),
            deploy: vec![("image".to_owned(), "demo".to_owned())],
            store: None,
            extra_toml: String::new(),
        }
    }

    /// Serve images from `store`.
    pub fn store(mut self, store: &Path) -> Self {
        self.store = Some(store.to_owned());
        self
    }

    /// Set a `[deploy]` key (replacing an earlier value).
    pub fn deploy(mut self, key: &str, value: &str) -> Self {
        self.deploy.retain(|(k, _)| k != key);
        self.deploy.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The config file's text.
    pub fn to_toml(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "listen = {}", toml_str(&self.listen.to_string()));
        let _ = writeln!(t, "public_url = {}", toml_str(&self.public_url));
        let _ = writeln!(
            t,
            "kernel = {}",
            toml_str(&self.kernel.display().to_string())
        );
        let _ = writeln!(
            t,
            "initrd = {}",
            toml_str(&self.initrd.display().to_string())
        );
        let _ = writeln!(t, "kernel_args = {}", toml_str(&self.kernel_args));
        if let Some(store) = &self.store {
            let _ = writeln!(t, "store = {}", toml_str(&store.display().to_string()));
        }
        let _ = writeln!(t, "[deploy]");
        for (k, v) in &self.deploy {
            let _ = writeln!(t, "{k} = {}", toml_str(v));
        }
        t.push_str(&self.extra_toml);
        t
    }

    /// The URL iPXE should chain to: this server's per-MAC boot entry.
    pub fn chain_url(&self) -> String {
        format!("{}/boot/${{net0/mac}}.ipxe", self.public_url)
    }
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A running `drover-server serve`; stopped on drop.
pub struct Server {
    proc: Proc,
    config: ServerConfig,
    bin: PathBuf,
    /// The config file; its directory also holds the server's state
    /// (SQLite, admin token), which survives [`Server::restart`].
    path: PathBuf,
    netns: String,
}

/// What a `drover-server` CLI command printed and how it ended.
#[derive(Debug)]
pub struct CliOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Server {
    /// Write `<log dir>/server.toml` and start `bin serve` in `netns`; wait
    /// until it listens.
    pub fn start(procs: &Procs, netns: &Netns, bin: &Path, config: ServerConfig) -> Result<Server> {
        let path = procs.log_dir().join("server.toml");
        std::fs::write(&path, config.to_toml())
            .with_context(|| format!("writing {}", path.display()))?;
        let proc = Self::spawn(procs, netns.name(), bin, &path)?;
        Ok(Server {
            proc,
            config,
            bin: bin.to_owned(),
            path,
            netns: netns.name().to_owned(),
        })
    }

    fn spawn(procs: &Procs, netns: &str, bin: &Path, config: &Path) -> Result<Proc> {
        let mut cmd = Command::new(bin);
        cmd.arg("serve").arg("--config").arg(config);
        let proc = procs.spawn("drover-server", crate::netns::exec_in(netns, &cmd))?;
        let up = wait_until(Duration::from_secs(20), Duration::from_millis(20), || {
            proc.log().contains("listening on") || !matches!(proc.try_wait(), Ok(None))
        });
        if !up || !matches!(proc.try_wait(), Ok(None)) {
            bail!(
                "drover-server did not start listening; its log {}:\n{}",
                proc.log_path().display(),
                proc.log()
            );
        }
        Ok(proc)
    }

    /// Stop the server (the namespace and its state stay).
    pub fn stop(&self) {
        self.proc.stop();
    }

    /// Start it again with the same config and state, as after a crash or
    /// an upgrade. The new process logs to a new file.
    pub fn restart(&mut self, procs: &Procs) -> Result<()> {
        self.proc.stop();
        self.proc = Self::spawn(procs, &self.netns, &self.bin, &self.path)?;
        Ok(())
    }

    /// Run `drover-server ARGS --config <this server's config>` in the
    /// namespace, as an operator on the server host would.
    pub fn cli(&self, args: &[&str]) -> Result<CliOutput> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args).arg("--config").arg(&self.path);
        let out = crate::netns::exec_in(&self.netns, &cmd)
            .output()
            .with_context(|| format!("running drover-server {}", args.join(" ")))?;
        Ok(CliOutput {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// `node show NODE`'s output, which must succeed.
    pub fn node_show(&self, node: &str) -> Result<String> {
        let out = self.cli(&["node", "show", node])?;
        if out.code != Some(0) {
            bail!("drover-server node show {node} failed: {out:?}");
        }
        Ok(out.stdout)
    }

    /// Wait until `node show NODE` contains `needle`; returns the output.
    pub fn wait_for_node(&self, node: &str, needle: &str, timeout: Duration) -> Result<String> {
        let mut last = String::new();
        let found = wait_until(timeout, Duration::from_millis(500), || {
            match self.node_show(node) {
                Ok(out) => last = out,
                Err(e) => last = format!("{e:#}"),
            }
            last.contains(needle)
        });
        if !found {
            bail!("`drover-server node show {node}` never contained {needle:?} within {timeout:?}; last:\n{last}");
        }
        Ok(last)
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The request log so far.
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// Wait for a log line containing `needle`; returns it.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<String> {
        let mut found = None;
        wait_until(timeout, Duration::from_millis(50), || {
            found = self
                .log()
                .lines()
                .find(|l| l.contains(needle))
                .map(str::to_owned);
            found.is_some()
        });
        found.with_context(|| {
            format!(
                "no drover-server log line containing {needle:?} within {timeout:?}; log {}:\n{}",
                self.proc.log_path().display(),
                self.log()
            )
        })
    }

    pub fn proc(&self) -> &Proc {
        &self.proc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_str(r#"a "b" \c"#), r#""a \"b\" \\c""#);
        assert_eq!(toml_str("x\ny"), r#""x\u000Ay""#);
    }
}
