//! The server's TOML configuration.
//!
//! ```toml
//! listen = "10.77.0.1:8080"            # socket address to bind
//! public_url = "http://10.77.0.1:8080" # how nodes reach this server
//! kernel = "vmlinuz"                   # relative to the config file's directory
//! initrd = "initrd.img"
//! kernel_args = "console=ttyS0"        # appended last (console= must be last)
//! store = "/srv/drover/images"         # optional: serve images from this store
//! state = "state"                      # optional: fleet state (SQLite, admin token)
//! [deploy]                             # deploy.* defaults for every node
//! image = "demo"                       # optional: register unknown MACs with this image
//! mode = "http"                        # or chain, or torrent
//! on_error = "poweroff"
//! [chain]                              # optional: chain mode's head and timers
//! listen = "10.77.0.1:7150"            # the head's TCP port (default: listen's IP, 7150)
//! public = "10.77.0.1:7150"            # where nodes reach it (default: public_url's IP)
//! arity = 1                            # downstreams per node: 1 a chain, k a tree
//! join_timeout = 30                    # seconds after the first join before starting
//! heartbeat = 2                        # seconds between node heartbeats
//! dead_after = 8                       # a node silent this long is failed
//! slow_after = 10                      # a node whose full buffer (its disk) holds back its subtree this long moves to the tail
//! slow_window = 1                      # seconds over which receive rates are compared (a slow link moves to the tail)
//! corrupt_strikes = 2                  # bad chunks blamed on a node before it is cut out
//! [torrent]                            # optional: the tracker (GET /announce) and first seed
//! open = false                         # let clients without a node token announce
//! announce_interval = 30               # seconds between a client's announces (5 to 3600)
//! seed_listen = "10.77.0.1:6881"       # the seeder's TCP port (default: listen's IP, 6881)
//! seed_public = "10.77.0.1"            # the IP peers reach it at (default: public_url's host)
//! ```
//!
//! `[deploy] image` makes the server register every unknown MAC that asks
//! for its boot entry and assign it that image (FOG-style); without it an
//! unknown MAC boots from its disk until an operator adds and deploys it.
//! `deploy.token` is not a key: the server makes one per deployment.
//!
//! Parsing is split in two so it can be unit-tested without files:
//! [`Config::parse`] is pure (text + the directory relative paths are
//! resolved against), [`Config::load`] reads the file and checks that the
//! kernel and initrd exist (and the store, if given, is a directory), so a
//! typo fails at startup rather than when the first node asks for its
//! kernel.
//!
//! Every error names the file, the key and what is accepted. `deploy.*`
//! values are parsed with `kernel_cmdline`'s own `FromStr` impls, so the
//! server accepts exactly what the agent accepts, with the same messages.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use kernel_cmdline::{
    AfterSuccess, DiskSelector, ImageRef, IpConfig, LogLevel, Mode, OnError, Options, PublicKey,
    ServerUrl,
};
use serde::Deserialize;

use crate::chain::{SessionConfig, DEFAULT_HEAD_PORT};
use crate::tracker::TrackerConfig;

/// A loaded, validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the HTTP server binds.
    pub listen: SocketAddr,
    /// Base URL nodes use to reach this server, without a trailing `/`.
    pub public_url: String,
    /// Kernel served as `/files/vmlinuz` (absolute).
    pub kernel: PathBuf,
    /// Initrd served as `/files/initrd.img` (absolute).
    pub initrd: PathBuf,
    /// Extra kernel arguments, appended after the `deploy.*` options.
    pub kernel_args: String,
    /// The image store served under `/images/` (absolute), if any.
    pub store: Option<PathBuf>,
    /// The state directory (absolute): `drover.sqlite`, `admin.token`.
    pub state: PathBuf,
    /// `[deploy] image`: what an unknown MAC is registered with, if anything.
    pub auto_register: Option<ImageRef>,
    /// `deploy.*` defaults for every node: `servers = [public_url]`. The
    /// per-node parts are left empty here and filled in by the boot entry:
    /// `image` (empty name), `wipe` (this is the default a deployment
    /// starts from), `token` and `BOOTIF`.
    pub deploy: Options,
    /// Chain mode's head and session policy (`[chain]`).
    pub chain: ChainConfig,
    /// The tracker's settings (`[torrent]`).
    pub torrent: TrackerConfig,
}

/// `[chain]`: where the head listens, where nodes reach it, and how
/// sessions behave (durations in whole seconds in the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainConfig {
    /// The head's TCP listener (`listen`; default: the HTTP listen address
    /// with port 7150).
    pub listen: SocketAddr,
    /// The head as nodes reach it (`public`; default: `public_url`'s host
    /// when it is an IP address, with the listen port — the bound one when
    /// that is 0). `None`: chain mode is off (nodes asking for it fall
    /// back to HTTP).
    pub public: Option<SocketAddr>,
    /// Policy of every session; `expected` is set per deploy.
    pub session: SessionConfig,
}

/// Where the state lives when the config does not say: next to the config.
pub const DEFAULT_STATE_DIR: &str = "state";

/// A configuration problem, naming the file and, when known, the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The config file (or `<inline>` for text without a file).
    pub file: PathBuf,
    /// The key, dotted for tables (`deploy.mode`); `None` when the problem
    /// is not about one key (TOML syntax, I/O).
    pub key: Option<String>,
    /// What is wrong and what is accepted.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        f.write_str(&self.problem)
    }
}

/// The file as written. Only the shape is checked by serde (unknown and
/// missing keys, types); the values are checked in [`Config::parse`], which
/// knows what to say about each key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: String,
    public_url: String,
    kernel: PathBuf,
    initrd: PathBuf,
    #[serde(default)]
    kernel_args: String,
    #[serde(default)]
    store: Option<PathBuf>,
    #[serde(default)]
    state: Option<PathBuf>,
    #[serde(default)]
    deploy: toml::Table,
    #[serde(default)]
    chain: RawChain,
    #[serde(default)]
    torrent: RawTorrent,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTorrent {
    open: Option<bool>,
    announce_interval: Option<u64>,
    seed_listen: Option<String>,
    seed_public: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawChain {
    listen: Option<String>,
    public: Option<String>,
    arity: Option<u32>,
    join_timeout: Option<u64>,
    heartbeat: Option<u64>,
    dead_after: Option<u64>,
    slow_after: Option<u64>,
    slow_window: Option<u64>,
    corrupt_strikes: Option<u32>,
}

/// `[deploy]` keys, as written in the config (`_` or `-`), and what each takes.
/// `deploy.server` is not here: it comes from `public_url`; nor is
/// `deploy.token`, which the server makes per deployment. `BOOTIF` is per
/// node, from the MAC that asks.
const DEPLOY_KEYS: &[(&str, &str)] = &[
    ("image", "NAME[@VERSION] (optional: registers unknown MACs)"),
    ("mode", "http, chain, torrent"),
    ("disk", "auto, /dev/…, by-id:ID, serial:S, wwn:W"),
    ("wipe", "true/false or 1/0, yes/no, true/false, on/off"),
    ("reboot", "yes, poweroff, no"),
    ("on_error", "reboot, poweroff, halt"),
    ("key", "64 hex digits (ed25519 public key)"),
    ("insecure", "true/false or 1/0, yes/no, true/false, on/off"),
    ("log", "info, debug"),
];

impl Config {
    /// Read and validate `path`; also checks that the kernel and initrd exist.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            key: None,
            problem: format!("cannot read: {e}"),
        })?;
        // Relative paths are relative to the config file, not to the
        // server's working directory, so a config and its files move together.
        let dir = path.parent().unwrap_or(Path::new("."));
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
        let config = Config::parse(&text, &dir, path)?;
        for (key, file) in [("kernel", &config.kernel), ("initrd", &config.initrd)] {
            match std::fs::metadata(file) {
                Ok(m) if m.is_file() => {}
                Ok(_) => return Err(error(path, key, format!("{}: not a file", file.display()))),
                Err(e) => return Err(error(path, key, format!("{}: {e}", file.display()))),
            }
        }
        // Created by `serve` when missing; something else in its place is a mistake.
        if let Ok(m) = std::fs::metadata(&config.state) {
            if !m.is_dir() {
                let msg = format!(
                    "{}: not a directory (the state directory)",
                    config.state.display()
                );
                return Err(error(path, "state", msg));
            }
        }
        if let Some(store) = &config.store {
            match std::fs::metadata(store) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    let msg = format!("{}: not a directory (an image store)", store.display());
                    return Err(error(path, "store", msg));
                }
                Err(e) => return Err(error(path, "store", format!("{}: {e}", store.display()))),
            }
        }
        Ok(config)
    }

    /// Validate the config `text`; relative paths are resolved against `dir`.
    /// `file` is only used in error messages.
    pub fn parse(text: &str, dir: &Path, file: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            file: file.to_owned(),
            key: None,
            // toml's message is multi-line with a snippet pointing at the key.
            problem: e.to_string().trim_end().to_owned(),
        })?;

        let listen = raw.listen.parse::<SocketAddr>().map_err(|_| {
            error(
                file,
                "listen",
                format!(
                    "invalid value {:?}; accepted: IP:PORT, e.g. \"10.77.0.1:8080\" or \"[::]:8080\"",
                    raw.listen
                ),
            )
        })?;

        let public_url = raw.public_url.trim_end_matches('/').to_owned();
        let server =
            parse_value::<ServerUrl>(file, "public_url", &public_url, "http://HOST[:PORT][/PATH]")?;

        let kernel_args = raw.kernel_args.trim().to_owned();
        if kernel_args.contains(['\n', '\r']) {
            // A newline would end the iPXE `kernel` line and start a command.
            return Err(error(file, "kernel_args", "must be one line".to_owned()));
        }

        let mut deploy = Options {
            servers: vec![server],
            image: ImageRef {
                name: String::new(),
                version: None,
            },
            mode: Mode::default(),
            disk: DiskSelector::default(),
            wipe: false,
            reboot: AfterSuccess::default(),
            on_error: OnError::default(),
            token: None,
            key: None,
            insecure: false,
            log: LogLevel::default(),
            bootif: None,
            ip: IpConfig::Dhcp,
        };
        let mut auto_register = None;
        for (written, value) in &raw.deploy {
            let name = written.replace('-', "_");
            let key = format!("deploy.{written}");
            let Some((_, accepted)) = DEPLOY_KEYS.iter().find(|(k, _)| *k == name) else {
                let valid: Vec<&str> = DEPLOY_KEYS.iter().map(|(k, _)| *k).collect();
                let hint = match name.as_str() {
                    "server" => " (deploy.server is always public_url)",
                    "token" => " (deploy.token is made by the server for each deployment)",
                    _ => "",
                };
                return Err(error(
                    file,
                    &key,
                    format!(
                        "unknown option{hint}; valid [deploy] keys: {}",
                        valid.join(", ")
                    ),
                ));
            };
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Boolean(b) if matches!(name.as_str(), "wipe" | "insecure") => {
                    b.to_string()
                }
                other => {
                    return Err(error(
                        file,
                        &key,
                        format!(
                            "expected a string, got {}; accepted: {accepted}",
                            other.type_str()
                        ),
                    ))
                }
            };
            match name.as_str() {
                "image" => auto_register = Some(parse_value(file, &key, &text, accepted)?),
                "mode" => deploy.mode = parse_value(file, &key, &text, accepted)?,
                "disk" => deploy.disk = parse_value(file, &key, &text, accepted)?,
                "wipe" => deploy.wipe = parse_bool(file, &key, &text)?,
                "reboot" => deploy.reboot = parse_value(file, &key, &text, accepted)?,
                "on_error" => deploy.on_error = parse_value(file, &key, &text, accepted)?,
                "key" => deploy.key = Some(parse_value::<PublicKey>(file, &key, &text, accepted)?),
                "insecure" => deploy.insecure = parse_bool(file, &key, &text)?,
                "log" => deploy.log = parse_value(file, &key, &text, accepted)?,
                _ => unreachable!("every DEPLOY_KEYS entry is handled above"),
            }
        }
        let chain = parse_chain(file, raw.chain, listen, &deploy)?;
        let torrent = parse_torrent(file, raw.torrent, listen, &deploy)?;
        Ok(Config {
            listen,
            public_url,
            kernel: dir.join(raw.kernel),
            initrd: dir.join(raw.initrd),
            kernel_args,
            store: raw.store.map(|s| dir.join(s)),
            state: dir.join(raw.state.unwrap_or_else(|| DEFAULT_STATE_DIR.into())),
            auto_register,
            deploy,
            chain,
            torrent,
        })
    }
}

/// The seeder's port when `[torrent] seed_listen` is not given (BitTorrent's
/// customary first port).
pub const DEFAULT_SEED_PORT: u16 = 6881;

/// `[torrent]`, checked: the seeder's addresses, and one peers can reach
/// whenever `[deploy] mode = "torrent"`.
fn parse_torrent(
    file: &Path,
    raw: RawTorrent,
    listen: SocketAddr,
    deploy: &Options,
) -> Result<TrackerConfig, ConfigError> {
    let d = TrackerConfig::default();
    let seed_listen = match &raw.seed_listen {
        Some(t) => t.parse::<SocketAddr>().map_err(|_| {
            error(
                file,
                "torrent.seed_listen",
                format!("invalid value {t:?}; accepted: IP:PORT, e.g. \"10.77.0.1:6881\""),
            )
        })?,
        // An ephemeral HTTP port (tests) gets an ephemeral seeder too.
        None if listen.port() == 0 => SocketAddr::new(listen.ip(), 0),
        None => SocketAddr::new(listen.ip(), DEFAULT_SEED_PORT),
    };
    let server = &deploy.servers[0];
    let seed_public = match &raw.seed_public {
        Some(t) => Some(t.parse::<std::net::IpAddr>().map_err(|_| {
            error(
                file,
                "torrent.seed_public",
                format!("invalid value {t:?}; accepted: an IP address, e.g. \"10.77.0.1\""),
            )
        })?),
        None => server.host.parse::<std::net::IpAddr>().ok(),
    };
    if seed_public.is_none() && deploy.mode == Mode::Torrent {
        return Err(error(
            file,
            "torrent.seed_public",
            format!(
                "[deploy] mode is torrent but public_url's host {:?} is not an IP address; \
                 set [torrent] seed_public = \"IP\" (where peers reach the seeder)",
                server.host
            ),
        ));
    }
    let interval = match raw.announce_interval {
        None => d.interval,
        Some(s @ 5..=3600) => std::time::Duration::from_secs(s),
        Some(s) => {
            return Err(error(
                file,
                "torrent.announce_interval",
                format!("{s}: accepted 5 to 3600 (seconds)"),
            ))
        }
    };
    Ok(TrackerConfig {
        open: raw.open.unwrap_or(d.open),
        interval,
        seed_listen: Some(seed_listen),
        seed_public,
    })
}

/// `[chain]`, checked: sane timers, and a head address nodes can reach
/// whenever `[deploy] mode = "chain"`.
fn parse_chain(
    file: &Path,
    raw: RawChain,
    listen: SocketAddr,
    deploy: &Options,
) -> Result<ChainConfig, ConfigError> {
    let addr = |key: &str, text: &str| {
        text.parse::<SocketAddr>().map_err(|_| {
            error(
                file,
                key,
                format!("invalid value {text:?}; accepted: IP:PORT, e.g. \"10.77.0.1:7150\""),
            )
        })
    };
    let head_listen = match &raw.listen {
        Some(t) => addr("chain.listen", t)?,
        // An ephemeral HTTP port (tests) gets an ephemeral head too.
        None if listen.port() == 0 => SocketAddr::new(listen.ip(), 0),
        None => SocketAddr::new(listen.ip(), DEFAULT_HEAD_PORT),
    };
    let server = &deploy.servers[0];
    let public = match &raw.public {
        Some(t) => Some(addr("chain.public", t)?),
        None => server
            .host
            .parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, head_listen.port())),
    };
    if public.is_none() && deploy.mode == Mode::Chain {
        return Err(error(
            file,
            "chain.public",
            format!(
                "[deploy] mode is chain but public_url's host {:?} is not an IP address; \
                 set [chain] public = \"IP:PORT\" (where nodes reach the head)",
                server.host
            ),
        ));
    }
    let d = SessionConfig::default();
    let secs = |key: &str, v: Option<u64>, default: std::time::Duration| match v {
        None => Ok(default),
        Some(0) => Err(error(file, key, "must be at least 1 (seconds)".into())),
        Some(n) => Ok(std::time::Duration::from_secs(n)),
    };
    let session = SessionConfig {
        arity: match raw.arity {
            None => d.arity,
            Some(a @ 1..=16) => a,
            Some(a) => {
                return Err(error(
                    file,
                    "chain.arity",
                    format!(
                        "{a}: accepted 1 (a chain) to 16 (a tree with 16 downstreams per node)"
                    ),
                ))
            }
        },
        expected: None,
        join_timeout: secs("chain.join_timeout", raw.join_timeout, d.join_timeout)?,
        heartbeat: secs("chain.heartbeat", raw.heartbeat, d.heartbeat)?,
        dead_after: secs("chain.dead_after", raw.dead_after, d.dead_after)?,
        slow_after: secs("chain.slow_after", raw.slow_after, d.slow_after)?,
        slow_window: secs("chain.slow_window", raw.slow_window, d.slow_window)?,
        corrupt_strikes: match raw.corrupt_strikes {
            Some(0) => {
                return Err(error(
                    file,
                    "chain.corrupt_strikes",
                    "must be at least 1".into(),
                ))
            }
            v => v.unwrap_or(d.corrupt_strikes),
        },
    };
    if session.dead_after < 2 * session.heartbeat {
        return Err(error(
            file,
            "chain.dead_after",
            format!(
                "{}s is less than two heartbeats ({}s each): live nodes would be declared dead",
                session.dead_after.as_secs(),
                session.heartbeat.as_secs()
            ),
        ));
    }
    Ok(ChainConfig {
        listen: head_listen,
        public,
        session,
    })
}

fn error(file: &Path, key: &str, problem: String) -> ConfigError {
    ConfigError {
        file: file.to_owned(),
        key: Some(key.to_owned()),
        problem,
    }
}

/// Parse with the value type's own `FromStr`; its message says what is
/// accepted, we add the value as written.
fn parse_value<T>(file: &Path, key: &str, text: &str, accepted: &str) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    text.parse::<T>().map_err(|e| {
        let mut problem = format!("{text:?}: {e}");
        // Some value types' messages omit the accepted forms; never leave
        // the operator guessing.
        if !problem.contains("accepted") {
            problem.push_str(&format!("; accepted: {accepted}"));
        }
        error(file, key, problem)
    })
}

/// Booleans: a TOML `true`/`false`, or any spelling the kernel command line
/// accepts (`yes`, `on`, `1`, …), parsed by the same function.
fn parse_bool(file: &Path, key: &str, text: &str) -> Result<bool, ConfigError> {
    kernel_cmdline::parse_bool(text).map_err(|e| error(file, key, format!("{text:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
listen = "10.77.0.1:8080"
public_url = "http://10.77.0.1:8080/"
kernel = "vmlinuz"
initrd = "/srv/initrd.img"
[deploy]
image = "demo"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(
            text,
            Path::new("/etc/drover"),
            Path::new("/etc/drover/server.toml"),
        )
    }

    fn parse_err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn chain_table_defaults_and_values() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.chain.listen, "10.77.0.1:7150".parse().unwrap());
        assert_eq!(c.chain.public, Some("10.77.0.1:7150".parse().unwrap()));
        assert_eq!(c.chain.session, SessionConfig::default());

        let c = parse(&format!(
            "{MINIMAL}[chain]\nlisten = \"0.0.0.0:7000\"\npublic = \"192.0.2.1:7001\"\narity = 2\n\
             join_timeout = 5\nheartbeat = 1\ndead_after = 3\nslow_after = 4\nslow_window = 2\n\
             corrupt_strikes = 3\n"
        ))
        .unwrap();
        assert_eq!(c.chain.listen, "0.0.0.0:7000".parse().unwrap());
        assert_eq!(c.chain.public, Some("192.0.2.1:7001".parse().unwrap()));
        let s = &c.chain.session;
        assert_eq!(
            (s.arity, s.join_timeout.as_secs(), s.heartbeat.as_secs()),
            (2, 5, 1)
        );
        assert_eq!(
            (
                s.dead_after.as_secs(),
                s.slow_after.as_secs(),
                s.slow_window.as_secs(),
                s.corrupt_strikes
            ),
            (3, 4, 2, 3)
        );
    }

    #[test]
    fn chain_table_errors_say_what_is_accepted() {
        let cases: &[(&str, &str)] = &[
            (
                "[chain]\narity = 0\n",
                "key `chain.arity`: 0: accepted 1 (a chain) to 16",
            ),
            (
                "[chain]\nheartbeat = 0\n",
                "key `chain.heartbeat`: must be at least 1",
            ),
            (
                "[chain]\nheartbeat = 5\ndead_after = 9\n",
                "key `chain.dead_after`: 9s is less than two heartbeats",
            ),
            (
                "[chain]\npublic = \"head:7150\"\n",
                "key `chain.public`: invalid value \"head:7150\"; accepted: IP:PORT",
            ),
            ("[chain]\nbogus = 1\n", "unknown field `bogus`"),
        ];
        for (extra, want) in cases {
            let e = parse_err(&format!("{MINIMAL}{extra}"));
            assert!(e.contains(want), "{extra:?}: {e}");
        }
        // Chain mode with a public_url host nodes cannot use as the head.
        let e = parse_err(
            "listen = \"0.0.0.0:80\"\npublic_url = \"http://boot.example\"\nkernel = \"k\"\n\
             initrd = \"i\"\n[deploy]\nmode = \"chain\"\n",
        );
        assert!(e.contains("key `chain.public`: [deploy] mode is chain but public_url's host \"boot.example\" is not an IP address"), "{e}");
    }

    #[test]
    fn torrent_table() {
        let c = parse(MINIMAL).unwrap();
        let seeder = (
            Some("10.77.0.1:6881".parse().unwrap()),
            Some("10.77.0.1".parse().unwrap()),
        );
        assert_eq!(
            c.torrent,
            TrackerConfig {
                seed_listen: seeder.0,
                seed_public: seeder.1,
                ..TrackerConfig::default()
            }
        );
        assert!(!c.torrent.open);
        let c = parse(&format!(
            "{MINIMAL}[torrent]\nseed_listen = \"0.0.0.0:7000\"\nseed_public = \"192.0.2.1\"\n"
        ))
        .unwrap();
        assert_eq!(c.torrent.seed_listen, Some("0.0.0.0:7000".parse().unwrap()));
        assert_eq!(c.torrent.seed_public, Some("192.0.2.1".parse().unwrap()));
        // Torrent mode needs an address peers can reach the seeder at.
        let e = parse(
            "listen = \"0.0.0.0:80\"\npublic_url = \"http://boot.example/\"\nkernel = \"k\"\n\
             initrd = \"i\"\n[deploy]\nmode = \"torrent\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("key `torrent.seed_public`: [deploy] mode is torrent but public_url's host \"boot.example\" is not an IP address"),
            "{e}"
        );
        let c = parse(&format!(
            "{MINIMAL}[torrent]\nopen = true\nannounce_interval = 10\n"
        ))
        .unwrap();
        assert!(c.torrent.open);
        assert_eq!(c.torrent.interval, std::time::Duration::from_secs(10));
        for (extra, want) in [
            (
                "announce_interval = 1",
                "key `torrent.announce_interval`: 1: accepted 5 to 3600 (seconds)",
            ),
            (
                "open = \"yes\"",
                "invalid type: string \"yes\", expected a boolean",
            ),
            ("bogus = 1", "unknown field `bogus`"),
            (
                "seed_listen = \"6881\"",
                "key `torrent.seed_listen`: invalid value \"6881\"; accepted: IP:PORT",
            ),
            (
                "seed_public = \"seed.example\"",
                "key `torrent.seed_public`: invalid value \"seed.example\"; accepted: an IP address",
            ),
        ] {
            let e = parse_err(&format!("{MINIMAL}[torrent]\n{extra}\n"));
            assert!(e.contains(want), "{extra:?}: {e}");
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.listen, "10.77.0.1:8080".parse().unwrap());
        // Trailing slash dropped: URLs are built as `{public_url}/files/…`.
        assert_eq!(c.public_url, "http://10.77.0.1:8080");
        assert_eq!(c.kernel, Path::new("/etc/drover/vmlinuz"));
        assert_eq!(c.initrd, Path::new("/srv/initrd.img"));
        assert_eq!(c.kernel_args, "");
        assert_eq!(c.store, None);
        assert_eq!(c.state, Path::new("/etc/drover/state"));
        assert_eq!(c.auto_register, Some("demo".parse().unwrap()));
        assert_eq!(c.deploy.servers.len(), 1);
        assert_eq!(c.deploy.servers[0].host, "10.77.0.1");
        assert_eq!(c.deploy.servers[0].port, 8080);
        assert_eq!(c.deploy.mode, Mode::Http);
        assert_eq!(c.deploy.on_error, OnError::Halt);
        assert_eq!(c.deploy.bootif, None);
    }

    #[test]
    fn all_deploy_keys() {
        let key = "ab".repeat(32);
        let text = format!(
            r#"
listen = "0.0.0.0:80"
public_url = "http://boot.example:80/drover"
kernel = "k"
initrd = "i"
kernel_args = "  quiet console=ttyS0  "
state = "/var/lib/drover"
[deploy]
image = "debian@12.1"
mode = "torrent"
disk = "serial:XYZ"
wipe = true
reboot = "poweroff"
on-error = "poweroff"
key = "{key}"
insecure = "yes"
log = "debug"
[torrent]
seed_public = "192.0.2.7"
"#
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.kernel_args, "quiet console=ttyS0");
        assert_eq!(c.state, Path::new("/var/lib/drover"));
        assert_eq!(c.auto_register, Some("debian@12.1".parse().unwrap()));
        let d = &c.deploy;
        assert_eq!(d.servers[0].path, "/drover");
        assert_eq!(d.mode, Mode::Torrent);
        assert_eq!(d.disk, DiskSelector::Serial("XYZ".into()));
        assert!(d.wipe);
        assert_eq!(d.reboot, AfterSuccess::Poweroff);
        assert_eq!(d.on_error, OnError::Poweroff);
        assert_eq!(d.token, None);
        assert_eq!(d.key, Some(PublicKey([0xab; 32])));
        assert!(d.insecure);
        assert_eq!(d.log, LogLevel::Debug);
    }

    #[test]
    fn bad_deploy_value_names_file_key_and_accepted() {
        let e =
            parse_err(&MINIMAL.replace("image = \"demo\"", "image = \"demo\"\nmode = \"chian\""));
        assert!(
            e.starts_with("/etc/drover/server.toml: key `deploy.mode`: \"chian\""),
            "{e}"
        );
        assert!(e.contains("http, chain, torrent"), "{e}");
    }

    #[test]
    fn unknown_deploy_key_lists_valid_ones() {
        let e = parse_err(&format!("{MINIMAL}bogus = \"1\"\n"));
        assert!(e.contains("key `deploy.bogus`: unknown option"), "{e}");
        assert!(e.contains("image, mode, disk, wipe"), "{e}");
        let e = parse_err(&format!("{MINIMAL}server = \"http://x\"\n"));
        assert!(e.contains("deploy.server is always public_url"), "{e}");
        let e = parse_err(&format!("{MINIMAL}token = \"t0k\"\n"));
        assert!(e.contains("key `deploy.token`: unknown option (deploy.token is made by the server for each deployment)"), "{e}");
    }

    #[test]
    fn deploy_value_of_wrong_type() {
        let e = parse_err(&format!("{MINIMAL}mode = 3\n"));
        assert!(
            e.contains("key `deploy.mode`: expected a string, got integer"),
            "{e}"
        );
        let e = parse_err(&format!("{MINIMAL}wipe = \"maybe\"\n"));
        assert!(e.contains("key `deploy.wipe`: \"maybe\""), "{e}");
        assert!(e.contains("yes/no"), "{e}");
    }

    #[test]
    fn image_and_deploy_table_are_optional() {
        let c = parse(&MINIMAL.replace("image = \"demo\"", "mode = \"chain\"")).unwrap();
        assert_eq!(c.auto_register, None);
        assert_eq!(c.deploy.mode, Mode::Chain);
        let c = parse(&MINIMAL.replace("[deploy]\nimage = \"demo\"\n", "")).unwrap();
        assert_eq!(c.auto_register, None);
        let e = parse_err(&MINIMAL.replace("\"demo\"", "\"de mo\""));
        assert!(e.contains("key `deploy.image`: \"de mo\""), "{e}");
    }

    #[test]
    fn bad_listen_and_url() {
        let e = parse_err(&MINIMAL.replace("10.77.0.1:8080\"\npublic", "nope\"\npublic"));
        assert!(
            e.contains("key `listen`: invalid value \"nope\"; accepted: IP:PORT"),
            "{e}"
        );
        let e = parse_err(&MINIMAL.replace("http://10.77.0.1:8080/", "ftp://x"));
        assert!(e.contains("key `public_url`: \"ftp://x\""), "{e}");
    }

    #[test]
    fn shape_errors_come_from_toml_with_the_file() {
        let e = parse_err(&format!("colour = \"blue\"\n{MINIMAL}"));
        assert!(e.starts_with("/etc/drover/server.toml: "), "{e}");
        assert!(e.contains("unknown field `colour`"), "{e}");
        let e = parse_err(&MINIMAL.replace("kernel = \"vmlinuz\"", ""));
        assert!(e.contains("missing field `kernel`"), "{e}");
        let e = parse_err("listen = ");
        assert!(
            e.starts_with("/etc/drover/server.toml: TOML parse error"),
            "{e}"
        );
    }

    #[test]
    fn multi_line_kernel_args_rejected() {
        let e = parse_err(&MINIMAL.replace("[deploy]", "kernel_args = \"a\\nshell\"\n[deploy]"));
        assert!(e.contains("key `kernel_args`: must be one line"), "{e}");
    }

    #[test]
    fn load_resolves_relative_paths_and_checks_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.toml");
        std::fs::write(&path, MINIMAL).unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(e.contains("key `kernel`:"), "{e}");
        assert!(e.contains("vmlinuz"), "{e}");

        std::fs::write(dir.path().join("vmlinuz"), b"k").unwrap();
        std::fs::write(dir.path().join("initrd.img"), b"i").unwrap();
        std::fs::write(&path, MINIMAL.replace("/srv/initrd.img", "initrd.img")).unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.kernel, dir.path().join("vmlinuz"));
        assert_eq!(c.initrd, dir.path().join("initrd.img"));

        let with_store = |store: &str| {
            let text = MINIMAL
                .replace("/srv/initrd.img", "initrd.img")
                .replace("[deploy]", &format!("store = \"{store}\"\n[deploy]"));
            std::fs::write(&path, text).unwrap();
            Config::load(&path)
        };
        let e = with_store("images").unwrap_err().to_string();
        assert!(e.contains("key `store`: "), "{e}");
        assert!(e.contains("/images: No such file"), "{e}");
        let e = with_store("vmlinuz").unwrap_err().to_string();
        assert!(e.contains("key `store`: "), "{e}");
        assert!(
            e.ends_with("vmlinuz: not a directory (an image store)"),
            "{e}"
        );
        std::fs::create_dir(dir.path().join("images")).unwrap();
        let c = with_store("images").unwrap();
        assert_eq!(c.store, Some(dir.path().join("images")));
        assert_eq!(c.state, dir.path().join("state"));

        std::fs::write(dir.path().join("state"), b"").unwrap();
        let e = with_store("images").unwrap_err().to_string();
        assert!(e.contains("key `state`: "), "{e}");
        assert!(
            e.ends_with("state: not a directory (the state directory)"),
            "{e}"
        );
    }
}
