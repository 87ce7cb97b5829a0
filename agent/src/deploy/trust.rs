//! Fetch the manifest and decide whether to trust it: the signature is
//! checked on the exact bytes received, before they are parsed.

use anyhow::{bail, ensure, Context, Result};
use kernel_cmdline::{ImageRef, PublicKey};

use crate::fetch::Client;
use crate::image::{sign, Manifest, MANIFEST_FILE, SIGNATURE_FILE};

/// Manifests above this are refused before parsing (the format's own cap).
const MAX_MANIFEST: usize = 16 << 20;

/// What the agent trusts.
#[derive(Debug, Clone, Copy)]
pub struct Trust {
    /// The key from `deploy.key` or the initramfs.
    pub key: Option<PublicKey>,
    /// `deploy.insecure`: accept a manifest that cannot be verified.
    pub insecure: bool,
}

/// `/images/NAME/VERSION`, the image's directory on the server.
pub fn image_path(name: &str, version: &str) -> String {
    format!("/images/{name}/{version}")
}

/// The version to deploy: the one asked for, or the server's newest.
pub fn resolve_version(client: &Client, image: &ImageRef) -> Result<String> {
    if let Some(v) = &image.version {
        return Ok(v.clone());
    }
    let body = client.get(&format!("/images/{}/latest", image.name), 256)?;
    let v = String::from_utf8_lossy(&body).trim().to_string();
    ensure!(
        crate::image::is_component(&v),
        "server named {v:?} as the newest version of {}: not a version ({})",
        image.name,
        crate::image::COMPONENT_ACCEPTED
    );
    Ok(v)
}

/// Fetch, verify and parse the manifest of `name`/`version`.
pub fn fetch_manifest(
    client: &Client,
    name: &str,
    version: &str,
    trust: Trust,
) -> Result<Manifest> {
    let dir = image_path(name, version);
    let bytes = client.get(&format!("{dir}/{MANIFEST_FILE}"), MAX_MANIFEST)?;
    match trust.key {
        Some(key) => {
            let sig = client.get(&format!("{dir}/{SIGNATURE_FILE}"), 1024)?;
            sign::verify(&bytes, &sig, &key).with_context(|| format!("checking {name}@{version}'s signature"))?;
            log::info!("manifest: {name}@{version} signed by the trusted key {}", short_key(&key));
        }
        None if trust.insecure => {
            log::warn!("deploy.insecure=yes and no trusted key: {name}@{version}'s manifest is NOT verified");
        }
        None => bail!(
            "no trusted key: the initramfs has no /etc/drover/trusted.pub and deploy.key is not set; \
             refusing an image that cannot be verified (deploy.insecure=yes accepts it)"
        ),
    }
    let m =
        Manifest::parse(&bytes).with_context(|| format!("parsing {name}@{version}'s manifest"))?;
    ensure!(
        m.name == name && m.version == version,
        "the server sent the manifest of {}@{} when asked for {name}@{version}",
        m.name,
        m.version
    );
    Ok(m)
}

fn short_key(k: &PublicKey) -> String {
    k.0[..8].iter().map(|b| format!("{b:02x}")).collect()
}
