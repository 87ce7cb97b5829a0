//! The deploy phases shared by PID-1 and process mode.

use std::path::Path;

use anyhow::{Context, Result};
use kernel_cmdline::{Options, PublicKey};

use crate::deploy::{self, Deployed, Env};
use crate::image::sign;

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

/// Fetch, verify and write the image, and say what was done.
pub fn deploy(opts: &Options, env: &Env) -> Result<Deployed> {
    let d = deploy::run(opts, env)?;
    log::info!(
        "deployed {} to {}: {} written, {} files, in {:.1}s; payload sha256 {}",
        d.image,
        d.disk.display(),
        crate::disk::human_size(d.written.bytes),
        d.written.entries,
        d.written.elapsed.as_secs_f64(),
        d.payload_sha256
    );
    Ok(d)
}
