//! The deploy phases shared by PID-1 and process mode.

use std::path::Path;

use anyhow::{Context, Result};
use kernel_cmdline::{Options, PublicKey};

use crate::deploy::{self, Deployed, Env};
use crate::image::sign;
use crate::report::{Phase, Reporter};

/// Where the initramfs carries the image-signing public key.
pub const TRUSTED_KEY: &str = "etc/drover/trusted.pub";

/// The trusted key under `root`, if the initramfs has one.
pub fn baked_in_key(root: &Path) -> Result<Option<PublicKey>> {
    let path = root.join(TRUSTED_KEY);
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(
        sign::read_public_key(&path).with_context(|| format!("reading {}", path.display()))?,
    ))
}

/// Fetch, verify and write the image, and say what was done: on the
/// console, and to the server before returning, so a node reboots only
/// once the server knows (or the report's deadline passed). A failure is
/// the caller's to report: it prints the error first.
pub fn deploy(opts: &Options, env: &Env, report: &Reporter) -> Result<Deployed> {
    report.phase(
        Phase::Start,
        format!("agent {}: {}", crate::VERSION, opts.summary()),
    );
    let mut d = deploy::run(opts, env, report)?;
    log::info!(
        "deployed {} to {}: {} written, {} files, in {:.1}s; payload sha256 {}",
        d.image,
        d.disk.display(),
        crate::disk::human_size(d.written.bytes),
        d.written.entries,
        d.written.elapsed.as_secs_f64(),
        d.payload_sha256
    );
    // Not recorded is no reason to fail: the disk is good, and the server
    // will simply offer this deploy again.
    report.success(&d);
    // A chain node's downstreams may still need it: the machine stays up
    // serving them (the server already knows this disk is done).
    if let Some(relay) = d.relay.take() {
        relay.linger();
    }
    Ok(d)
}
