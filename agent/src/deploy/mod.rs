//! The deploy: choose a server, trust its manifest, choose the disk, write.
//!
//! The payload's chunks come from the server over HTTP (`deploy.mode=http`),
//! from a relay chain (`deploy.mode=chain`) or a BitTorrent swarm
//! (`deploy.mode=torrent`), HTTP being the fallback of both; the same
//! verify → inflate → write pipeline takes them either way.

pub mod apply;
pub mod http_source;
pub mod trust;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use kernel_cmdline::{MacAddr, Mode, Options, PublicKey};

use crate::chain::{self, ChainOptions, ChainSource};
use crate::disk;
use crate::fetch::Client;
use crate::image::{ChunkSource, Manifest, PAYLOAD_FILE};
use crate::report::{Phase, Reporter};
use crate::torrent::{self, TorrentOptions, TorrentSource};
use http_source::HttpSource;
use trust::Trust;

/// Where the agent runs and what it knows beyond the options.
pub struct Env {
    /// `Some(path)`: process mode, write there. `None`: select by `deploy.disk`.
    pub disk: Option<PathBuf>,
    /// `/` on a node: sysfs, /dev and the tools are found under it.
    pub root: PathBuf,
    /// The key baked into the initramfs (or given to process mode).
    pub key: Option<PublicKey>,
    /// This node's MAC, seeding the disk's UUIDs.
    pub mac: Option<MacAddr>,
    /// How long to keep trying when no server can be reached for the
    /// manifest ([`PATIENCE`] on a node).
    pub patience: std::time::Duration,
}

/// What was deployed, for the console and the report.
#[derive(Debug)]
pub struct Deployed {
    pub image: String,
    pub disk: PathBuf,
    pub payload_sha256: String,
    pub written: apply::Written,
    /// Chain and torrent mode: the relay or swarm, still serving other
    /// nodes; hand it to [`Relay::linger`] once the success is reported.
    pub relay: Option<Relay>,
}

/// What still serves other nodes after this node's disk is done.
pub enum Relay {
    Chain(ChainSource),
    Torrent(TorrentSource),
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Relay")
    }
}

impl Relay {
    /// Keep serving downstreams until none needs this node (at most
    /// [`chain::DEFAULT_LINGER`]), then leave the session.
    pub fn linger(self) {
        let chain = match self {
            Relay::Chain(c) => c,
            Relay::Torrent(t) => {
                log::info!(
                    "torrent: disk done; seeding while the tracker lists nodes still downloading"
                );
                let s = t.finish(torrent::source::DEFAULT_LINGER);
                log::info!(
                    "torrent: left the swarm: {} MiB downloaded, {} MiB uploaded, {} connections, \
                     {} bad pieces refused, {} peers dropped, {} pieces over HTTP",
                    s.downloaded >> 20,
                    s.uploaded >> 20,
                    s.connections,
                    s.bad_pieces,
                    s.peers_dropped,
                    s.fallback_pieces
                );
                return;
            }
        };
        log::info!("chain: disk done; still serving downstreams while they need this node");
        let s = chain.finish(chain::DEFAULT_LINGER);
        let fallback = match &s.fallback {
            Some(why) => format!("; fell back to HTTP: {why}"),
            None => String::new(),
        };
        log::info!(
            "chain: left the session: {} chunks forwarded, {} upstream connections, \
             {} corrupt chunks refused{fallback}",
            s.forwarded,
            s.connections,
            s.corrupt
        );
    }
}

/// Deploy as the options say, reporting each phase and the progress.
pub fn run(opts: &Options, env: &Env, report: &Reporter) -> Result<Deployed> {
    let trust = Trust {
        key: opts.key.or(env.key),
        insecure: opts.insecure,
    };
    report.phase(
        Phase::Manifest,
        format!("fetching the manifest of {}", opts.image),
    );
    let (client, manifest) = first_manifest(opts, trust, env.patience)?;
    let image = format!("{}@{}", manifest.name, manifest.version);
    log::info!(
        "image {image}: {} partitions, payload {} in {} chunks",
        manifest.disk.partitions.len(),
        disk::human_size(manifest.payload.size),
        manifest.chunks.len()
    );

    report.phase(
        Phase::Disk,
        format!(
            "{image}: needs a disk of at least {}",
            disk::human_size(manifest.disk.min_size)
        ),
    );
    let disk_path = match &env.disk {
        Some(p) => p.clone(),
        None => {
            let d = disk::select::select(&env.root, &opts.disk, manifest.disk.min_size)?;
            log::info!(
                "disk: {} ({}, model {:?}, serial {:?})",
                d.dev.display(),
                disk::human_size(d.size_bytes),
                d.model,
                d.serial
            );
            d.dev
        }
    };
    let seed = seed(&manifest, env.mac, &disk_path);
    let scratch = if env.disk.is_some() {
        apply::scratch_dir()
    } else {
        env.root.join("run/drover")
    };
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let http = HttpSource {
        client,
        path: format!(
            "{}/{PAYLOAD_FILE}",
            trust::image_path(&manifest.name, &manifest.version)
        ),
        attempts: 8,
    };
    let mut source = source(opts, env, &manifest, http)?;
    let target = apply::Target {
        disk: &disk_path,
        root: &env.root,
        wipe: opts.wipe,
        seed: &seed,
        scratch: &scratch,
        report,
    };
    let written = match &mut source {
        Source::Http(s) => apply::apply(&manifest, &target, s),
        Source::Chain(s) => apply::apply(&manifest, &target, s),
        Source::Torrent(s) => apply::apply(&manifest, &target, s),
    };
    let _ = std::fs::remove_dir_all(&scratch);
    // On an error the chain source is dropped here: the node leaves its
    // session at once and its downstreams are moved on.
    let written =
        written.with_context(|| format!("deploying {image} to {}", disk_path.display()))?;
    Ok(Deployed {
        image,
        disk: disk_path,
        payload_sha256: manifest.payload.sha256.to_string(),
        written,
        relay: match source {
            Source::Http(_) => None,
            Source::Chain(c) => Some(Relay::Chain(c)),
            Source::Torrent(t) => Some(Relay::Torrent(t)),
        },
    })
}

enum Source {
    Http(HttpSource),
    Chain(ChainSource),
    Torrent(TorrentSource),
}

/// Where the payload's chunks come from. Chain mode joins the image's
/// session with the manifest's server as coordinator and plain HTTP as the
/// fallback; when no coordinator takes the node (an old server, chain
/// disabled) the whole payload comes over HTTP instead.
fn source(opts: &Options, env: &Env, manifest: &Manifest, http: HttpSource) -> Result<Source> {
    match opts.mode {
        Mode::Http => return Ok(Source::Http(http)),
        Mode::Torrent => return Ok(torrent_source(opts, env, manifest, http)),
        Mode::Chain => {}
    }
    let Some(mac) = env.mac else {
        bail!(
            "deploy.mode=chain needs this node's MAC to join a session (BOOTIF= on the command \
             line, or --mac in process mode)"
        );
    };
    let coordinator = http.client.server.clone();
    let mut servers = vec![coordinator.clone()];
    servers.extend(opts.servers.iter().filter(|s| **s != coordinator).cloned());
    let chain_opts = ChainOptions::new(servers, opts.token.clone(), mac);
    let fallback: Box<dyn ChunkSource + Send> = Box::new(http.clone());
    match chain::deploy_source(chain_opts, Arc::new(manifest.clone()), Some(fallback)) {
        Ok(c) => Ok(Source::Chain(c)),
        Err(e) => {
            log::warn!("chain: {e:#}; fetching the whole payload over HTTP instead");
            Ok(Source::Http(http))
        }
    }
}

/// Torrent mode: the swarm of the image's `payload.torrent`, announcing
/// to the manifest's server as this node (`/announce/MAC/TOKEN`, so the
/// tracker lets it into its deployment's swarm only), plain HTTP as the
/// fallback; when the torrent cannot be had or joined, HTTP alone.
fn torrent_source(opts: &Options, env: &Env, manifest: &Manifest, http: HttpSource) -> Source {
    let path = format!(
        "{}/{}",
        trust::image_path(&manifest.name, &manifest.version),
        crate::image::TORRENT_FILE
    );
    let joined = (|| {
        let bytes = http
            .client
            .get(&path, torrent::bencode::Limits::METAINFO.max_len)
            .context("fetching the payload.torrent")?;
        let meta = torrent::metainfo::Metainfo::parse(&bytes)
            .with_context(|| format!("{}: not a usable torrent", http.client.url(&path)))?;
        let server = &http.client.server;
        let tracker = match (env.mac, &opts.token) {
            (Some(mac), Some(token)) => format!("{server}/announce/{mac}/{token}"),
            _ => format!("{server}/announce"),
        };
        let tracker = tracker
            .parse()
            .map_err(|e| anyhow::anyhow!("the tracker URL {tracker}: {e}"))?;
        let seed: Vec<u8> = match env.mac {
            Some(mac) => mac.0.to_vec(),
            None => env
                .disk
                .iter()
                .flat_map(|d| d.as_os_str().as_encoded_bytes().to_vec())
                .collect(),
        };
        let o = TorrentOptions::new(tracker, &seed);
        let fallback: Box<dyn ChunkSource + Send> = Box::new(http.clone());
        torrent::join(o, manifest, meta.info, Some(fallback))
    })();
    match joined {
        Ok(t) => Source::Torrent(t),
        Err(e) => {
            log::warn!("torrent: {e:#}; fetching the whole payload over HTTP instead");
            Source::Http(http)
        }
    }
}

/// How long a node keeps trying to reach a server for the manifest: a
/// node that boots while its server restarts still deploys.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// The first server that hands over a trustworthy manifest serves the
/// payload. When every server failed only for transient reasons
/// (unreachable, connection broken, 5xx), try them all again after a
/// pause; a refusal (4xx, a bad signature) is final at once.
fn first_manifest(
    opts: &Options,
    trust: Trust,
    patience: std::time::Duration,
) -> Result<(Client, Manifest)> {
    let started = std::time::Instant::now();
    let mut round = 0;
    loop {
        let mut errors = Vec::new();
        let mut transient = true;
        for s in &opts.servers {
            let mut client = Client::new(s.clone());
            client.token = opts.token.clone();
            let got = trust::resolve_version(&client, &opts.image)
                .and_then(|v| trust::fetch_manifest(&client, &opts.image.name, &v, trust));
            match got {
                Ok(m) => return Ok((client, m)),
                Err(e) => {
                    log::warn!("server {s}: {e:#}");
                    transient &= crate::fetch::is_transient(&e);
                    errors.push(format!("{s}: {e:#}"));
                }
            }
        }
        let wait = std::time::Duration::from_secs(
            http_source::BACKOFF[round.min(http_source::BACKOFF.len() - 1)],
        );
        round += 1;
        match started.elapsed() + wait {
            spent if transient && spent <= patience => {
                log::info!("no server reachable; trying again in {}s", wait.as_secs());
                std::thread::sleep(wait);
            }
            _ => {
                let retried = match started.elapsed().as_secs() {
                    0 => String::new(),
                    s => format!(" (retried for {s}s)"),
                };
                bail!(
                    "no server could provide {}{retried}: {}",
                    opts.image,
                    errors.join("; ")
                )
            }
        }
    }
}

/// Reproducible identity for this node's copy of the image: the same image
/// on the same node always yields the same GUIDs; different nodes differ.
fn seed(m: &Manifest, mac: Option<MacAddr>, disk: &Path) -> Vec<u8> {
    let mut s = format!("{}@{}", m.name, m.version).into_bytes();
    match mac {
        Some(mac) => s.extend_from_slice(&mac.0),
        None => s.extend_from_slice(disk.as_os_str().as_encoded_bytes()),
    }
    s
}
