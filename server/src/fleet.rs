//! The fleet: what the server does when a node boots or reports and when
//! an operator adds, deploys or removes nodes. Each operation is one
//! database transaction over the rules of [`crate::state::node`].
//!
//! Images are pinned when assigned: `NAME` becomes the store's newest
//! `NAME@VERSION` at that moment, so an import during a rollout does not
//! give half the fleet another version, and a node's success report is
//! checked against exactly the manifest it was given. A server without an
//! image store (a boot-path test setup) hands out the configured image as
//! written and cannot pin or check; admin deploys need a store.
//!
//! Blocking (SQLite, the store): the HTTP layer calls these from
//! `spawn_blocking`.

use std::path::Path;

use anyhow::Context as _;
use drover_agent::report::Report;
use kernel_cmdline::{ImageRef, MacAddr, Mode};

use crate::boot::{BootDecision, Deployment, Localboot};
use crate::clock::now_ms;
use crate::config::Config;
use crate::image_report::read_manifest;
use crate::state::db::{Db, Tx, DB_FILE};
use crate::state::node::{apply_report, check_name, kind, Event, NewEvent, Node, NodeState};
use crate::store::{LookupError, Store};
use crate::tokens;

/// Events `node show` gets.
pub const SHOWN_EVENTS: i64 = 100;

/// Why an operation was refused; the HTTP layer maps each to a status.
/// Every message says what was wrong and what is accepted.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// Malformed input (400).
    #[error("{0}")]
    BadRequest(String),
    /// No or the wrong token (401).
    #[error("{0}")]
    Unauthorized(String),
    /// No such node or image (404).
    #[error("{0}")]
    NotFound(String),
    /// Does not fit the node's or the server's state (409).
    #[error("{0}")]
    Conflict(String),
    /// The server's own failure (500), logged; not the client's business.
    #[error("{0:#}")]
    Internal(anyhow::Error),
}

impl From<rusqlite::Error> for FleetError {
    fn from(e: rusqlite::Error) -> Self {
        FleetError::Internal(anyhow::Error::new(e).context("fleet state database"))
    }
}

/// What a report did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    /// The node's state after it.
    pub state: NodeState,
    /// Recorded, but refused (409) for this reason.
    pub refused: Option<String>,
}

/// The fleet's state and what it needs from the config.
#[derive(Debug)]
pub struct Fleet {
    db: Db,
    store: Option<Store>,
    auto_register: Option<ImageRef>,
    default_wipe: bool,
    default_mode: Mode,
}

/// Make the state directory (mode 0700: it holds the admin token) if missing.
fn create_state_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the state directory {}", dir.display()))
}

impl Fleet {
    /// The fleet of `config`'s state directory, created if missing.
    pub fn open(config: &Config) -> anyhow::Result<Fleet> {
        create_state_dir(&config.state)?;
        let db = Db::open(&config.state.join(DB_FILE))?;
        Ok(Fleet {
            db,
            store: config.store.clone().map(Store::new),
            auto_register: config.auto_register.clone(),
            default_wipe: config.deploy.wipe,
            default_mode: config.deploy.mode,
        })
    }

    /// Nodes with a deployment of `image` (`NAME@VERSION`) in progress in
    /// chain mode: who a chain session of it should wait for.
    pub fn chain_in_progress(&self, image: &str) -> Result<u32, FleetError> {
        let n = self.in_progress(image, Mode::Chain)?.len();
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// The nodes deploying `image` in `mode` that have not finished.
    pub fn in_progress(&self, image: &str, mode: Mode) -> Result<Vec<MacAddr>, FleetError> {
        let nodes = self.db.read(|tx| tx.nodes())?;
        Ok(nodes
            .iter()
            .filter(|n| {
                let m = n.chosen_mode().map(|m| m.unwrap_or(self.default_mode));
                n.state.in_progress() && n.image.as_deref() == Some(image) && m == Ok(mode)
            })
            .filter_map(|n| n.mac.parse().ok())
            .collect())
    }

    /// Node `mac` asks for its boot entry (`via`: iPXE or PXELINUX).
    pub fn boot(&self, mac: MacAddr, via: &str) -> Result<BootDecision, FleetError> {
        let now = now_ms();
        let key = mac.to_string();
        self.db.write(|tx| {
            let mut node = match tx.node(&key)? {
                Some(node) => node,
                None => match &self.auto_register {
                    None => return Ok(BootDecision::Localboot(Localboot::Unknown)),
                    Some(image) => match self.register(tx, mac, image, now)? {
                        Ok(node) => node,
                        Err(why) => return Ok(BootDecision::Localboot(why)),
                    },
                },
            };
            if let Some(why) = Localboot::for_node(&node) {
                let message = format!("localboot entry served ({via}): {}", why.reason(&mac));
                tx.add_event(&key, now, &NewEvent::new(kind::LOCALBOOT, message))?;
                return Ok(BootDecision::Localboot(why));
            }
            let image = node.image.clone().unwrap_or_default();
            let image: ImageRef = image.parse().map_err(|e| {
                FleetError::Internal(anyhow::anyhow!("node {key}: stored image {image:?}: {e}"))
            })?;
            let token = tx.token(&key)?.ok_or_else(|| {
                FleetError::Internal(anyhow::anyhow!("node {key}: deployment without a token"))
            })?;
            node.boot(now);
            tx.update(&node)?;
            let message = format!("deploy entry served ({via}): {image}");
            tx.add_event(&key, now, &NewEvent::new(kind::BOOT, message))?;
            let mode = node
                .chosen_mode()
                .map_err(|e| FleetError::Internal(anyhow::anyhow!(e)))?;
            Ok(BootDecision::Deploy(Deployment {
                image,
                wipe: node.wipe,
                mode,
                token,
            }))
        })
    }

    /// Register an unknown MAC with the configured image. `Err` inside:
    /// the image cannot be assigned; the node is recorded as failed so the
    /// operator sees it, and boots from its disk.
    fn register(
        &self,
        tx: &Tx<'_>,
        mac: MacAddr,
        image: &ImageRef,
        now: i64,
    ) -> Result<Result<Node, Localboot>, FleetError> {
        let mut node = Node::new(mac, None, now);
        tx.insert(&node)?;
        tx.add_event(
            &node.mac,
            now,
            &NewEvent::new(
                kind::REGISTERED,
                "registered automatically (it asked for its boot entry)",
            ),
        )?;
        let pinned = match &self.store {
            None => Ok(image.to_string()),
            Some(store) => pin(store, image),
        };
        match pinned {
            Ok(pinned) => {
                assign(
                    tx,
                    &mut node,
                    pinned,
                    self.default_wipe,
                    None,
                    "automatically ([deploy] image)",
                    now,
                )?;
                Ok(Ok(node))
            }
            Err(FleetError::NotFound(why)) => {
                let error = format!("cannot assign the configured image {image}: {why}");
                node.fail(error.clone(), now);
                tx.update(&node)?;
                tx.add_event(&node.mac, now, &NewEvent::new(kind::FAILURE, error.clone()))?;
                Ok(Err(Localboot::CannotRegister(error)))
            }
            Err(other) => Err(other),
        }
    }

    /// A report from `mac`, authenticated by `token`.
    pub fn report(
        &self,
        mac: MacAddr,
        token: &str,
        report: &Report,
    ) -> Result<Reported, FleetError> {
        let now = now_ms();
        let key = mac.to_string();
        self.db.write(|tx| {
            // An unknown MAC is refused like a wrong token: reports do not
            // reveal which MACs are registered.
            let current = tx.token(&key)?;
            if !current.is_some_and(|t| tokens::matches(&t, token)) {
                return Err(FleetError::Unauthorized(format!(
                    "wrong token for node {key}; accepted: the deploy.token of its current deployment (each deploy makes a new one)"
                )));
            }
            let mut node = tx
                .node(&key)?
                .ok_or_else(|| FleetError::Internal(anyhow::anyhow!("node {key} has a token but no row")))?;
            let image = node.image.clone();
            let applied = apply_report(&mut node, report, || self.payload_sha256(image.as_deref()), now)
                .map_err(FleetError::Conflict)?;
            tx.update(&node)?;
            if let Some(event) = &applied.event {
                tx.add_event(&key, now, event)?;
            }
            Ok(Reported {
                state: node.state,
                refused: applied.refused,
            })
        })
    }

    /// Is `token` the deploy token of `mac`'s current deployment? (The
    /// chain coordinator's check: the same token as the node's reports.)
    pub fn token_ok(&self, mac: &MacAddr, token: Option<&str>) -> bool {
        let Some(token) = token else { return false };
        let key = mac.to_string();
        self.db
            .read(|tx| tx.token(&key))
            .ok()
            .flatten()
            .is_some_and(|t| tokens::matches(&t, token))
    }

    /// The image (`NAME@VERSION`) of `mac`'s current deployment, if
    /// `token` is its deploy token: the swarm the tracker lets it into. A
    /// node that is done keeps it (it may seed until released).
    pub fn deployment_image(&self, mac: &MacAddr, token: &str) -> Option<String> {
        let key = mac.to_string();
        let (current, node) = self
            .db
            .read(|tx| Ok::<_, rusqlite::Error>((tx.token(&key)?, tx.node(&key)?)))
            .ok()?;
        if !current.is_some_and(|t| tokens::matches(&t, token)) {
            return None;
        }
        node?.image
    }

    /// The chain coordinator declared `mac` failed in the session of
    /// `image` (`NAME@VERSION`): record it as the node's failure, as if
    /// it had reported it, if that is still its deployment. A node that
    /// was only silent and finishes after all may still report success.
    pub fn chain_failed(&self, mac: MacAddr, image: &str, why: &str) -> Result<(), FleetError> {
        let now = now_ms();
        let key = mac.to_string();
        self.db.write(|tx| {
            let Some(mut node) = tx.node(&key)? else {
                return Ok(());
            };
            if !node.state.in_progress() || node.image.as_deref() != Some(image) {
                return Ok(());
            }
            let report = Report::Failure {
                phase: drover_agent::report::Phase::Write,
                error: format!("chain session {image}: {why} (declared by the coordinator)"),
            };
            let applied = apply_report(&mut node, &report, || Err(String::new()), now)
                .map_err(FleetError::Conflict)?;
            tx.update(&node)?;
            if let Some(event) = &applied.event {
                tx.add_event(&key, now, event)?;
            }
            Ok(())
        })
    }

    /// The payload hash in the manifest of the pinned `image`.
    fn payload_sha256(&self, image: Option<&str>) -> Result<String, String> {
        let image = image.ok_or("no image is assigned")?;
        let Some(store) = &self.store else {
            return Err(format!(
                "this server has no image store to read {image}'s manifest from"
            ));
        };
        let image: ImageRef = image.parse().map_err(|e| format!("image {image:?}: {e}"))?;
        let dir = store.resolve(&image).map_err(|e| e.to_string())?;
        let manifest = read_manifest(&dir).map_err(|e| format!("{e:#}"))?;
        Ok(manifest.payload.sha256.to_string())
    }

    /// Register `mac` (idle), optionally named.
    pub fn add(&self, mac: &str, name: Option<&str>) -> Result<Node, FleetError> {
        let mac: MacAddr = mac
            .parse()
            .map_err(|e| FleetError::BadRequest(format!("bad MAC address {mac:?}: {e}")))?;
        if let Some(name) = name {
            check_name(name).map_err(FleetError::BadRequest)?;
        }
        let now = now_ms();
        self.db.write(|tx| {
            let key = mac.to_string();
            if tx.node(&key)?.is_some() {
                return Err(FleetError::Conflict(format!(
                    "node {key} already exists (drover-server node show {key})"
                )));
            }
            if let Some(name) = name {
                if let Some(other) = tx.node_named(name)? {
                    return Err(FleetError::Conflict(format!(
                        "the name {name:?} is already node {}'s; names are unique",
                        other.mac
                    )));
                }
            }
            let node = Node::new(mac, name.map(str::to_owned), now);
            tx.insert(&node)?;
            tx.add_event(
                &key,
                now,
                &NewEvent::new(kind::REGISTERED, "added by admin"),
            )?;
            Ok(node)
        })
    }

    /// Assign `image` to every node of `nodes` (MACs or names), or to none
    /// if one is unknown or the image is not in the store. `wipe`: the
    /// config's `[deploy] wipe` when not given; `mode`: `deploy.mode` for
    /// this deployment, the config's `[deploy] mode` when not given.
    pub fn deploy(
        &self,
        image: &str,
        nodes: &[String],
        wipe: Option<bool>,
        mode: Option<&str>,
    ) -> Result<Vec<Node>, FleetError> {
        let mode = mode
            .map(|m| {
                m.parse::<Mode>()
                    .map_err(|e| FleetError::BadRequest(format!("bad mode {m:?}: {e}")))
            })
            .transpose()?;
        let image: ImageRef = image
            .parse()
            .map_err(|e| FleetError::BadRequest(format!("bad image {image:?}: {e}")))?;
        if nodes.is_empty() {
            return Err(FleetError::BadRequest(
                "no nodes to deploy to; accepted: one or more MACs or node names".into(),
            ));
        }
        let Some(store) = &self.store else {
            return Err(FleetError::Conflict(
                "this server has no image store (set store = \"DIR\" in its config): a deploy pins the image's version from it".into(),
            ));
        };
        let pinned = pin(store, &image)?;
        let wipe = wipe.unwrap_or(self.default_wipe);
        let now = now_ms();
        self.db.write(|tx| {
            let mut found: Vec<Node> = Vec::new();
            let mut unknown = Vec::new();
            for key in nodes {
                match find(tx, key)? {
                    Some(node) if found.iter().any(|n| n.mac == node.mac) => {}
                    Some(node) => found.push(node),
                    None => unknown.push(format!("{key:?}")),
                }
            }
            if !unknown.is_empty() {
                return Err(FleetError::NotFound(format!(
                    "no node {}: nothing was deployed; nodes are named by MAC or by the name given at node add",
                    unknown.join(", ")
                )));
            }
            for node in &mut found {
                assign(tx, node, pinned.clone(), wipe, mode, "by admin", now)?;
            }
            Ok(found)
        })
    }

    /// Every node.
    pub fn nodes(&self) -> Result<Vec<Node>, FleetError> {
        Ok(self.db.read(|tx| tx.nodes())?)
    }

    /// A node (MAC or name) and its last [`SHOWN_EVENTS`] events.
    pub fn show(&self, key: &str) -> Result<(Node, Vec<Event>), FleetError> {
        self.db.read(|tx| {
            let node = find(tx, key)?.ok_or_else(|| not_found(key))?;
            let events = tx.events(&node.mac, SHOWN_EVENTS)?;
            Ok((node, events))
        })
    }

    /// Forget a node (MAC or name) and its history.
    pub fn remove(&self, key: &str) -> Result<Node, FleetError> {
        self.db.write(|tx| {
            let node = find(tx, key)?.ok_or_else(|| not_found(key))?;
            tx.delete(&node.mac)?;
            Ok(node)
        })
    }
}

/// `NAME[@VERSION]` as the store's `NAME@VERSION` (the newest version for a
/// bare name).
fn pin(store: &Store, image: &ImageRef) -> Result<String, FleetError> {
    match store.resolve(image) {
        Ok(dir) => Ok(format!("{}@{}", dir.name, dir.version)),
        Err(e @ LookupError::Io { .. }) => Err(FleetError::Internal(anyhow::Error::new(e))),
        Err(LookupError::NoImage { name, .. }) => Err(FleetError::NotFound(format!(
            "no image named {name:?} in the store (drover-server image list shows what there is)"
        ))),
        Err(e) => Err(FleetError::NotFound(e.to_string())),
    }
}

/// A node by MAC (any accepted spelling) or by name.
fn find(tx: &Tx<'_>, key: &str) -> Result<Option<Node>, FleetError> {
    Ok(match key.parse::<MacAddr>() {
        Ok(mac) => tx.node(&mac.to_string())?,
        Err(_) => tx.node_named(key)?,
    })
}

fn not_found(key: &str) -> FleetError {
    FleetError::NotFound(format!(
        "no node {key:?}; nodes are named by MAC (aa:bb:cc:dd:ee:ff) or by the name given at node add"
    ))
}

/// Give `node` a deployment of the pinned image with a fresh token.
fn assign(
    tx: &Tx<'_>,
    node: &mut Node,
    pinned: String,
    wipe: bool,
    mode: Option<Mode>,
    by: &str,
    now: i64,
) -> Result<(), FleetError> {
    let token = tokens::new_token().map_err(FleetError::Internal)?;
    let mode_note = match mode {
        Some(m) => format!(", mode {m}"),
        None => String::new(),
    };
    let message = format!(
        "deploy assigned {by}: {pinned}, wipe {}{mode_note}",
        kernel_cmdline::bool_str(wipe)
    );
    node.assign(pinned, wipe, mode, now);
    tx.update(node)?;
    tx.set_token(&node.mac, &token)?;
    tx.add_event(&node.mac, now, &NewEvent::new(kind::ASSIGNED, message))?;
    Ok(())
}
