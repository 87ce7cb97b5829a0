//! `drover-server key generate`: a fresh ed25519 signing key pair.
//!
//! `DIR/drover.key` holds the 32-byte secret seed as 64 hex digits (mode
//! 0600); `DIR/drover.pub` the public key as 64 hex digits and a newline —
//! what `deploy.key=` takes and what the initramfs carries. The file
//! formats are the image library's (`drover_agent::image::sign`).
//!
//! An existing key is never replaced without `--force`: every node that
//! trusts it would refuse images signed by the new one. The files are
//! written under temporary names and renamed into place, so neither is
//! ever seen half-written; `image import` refuses a secret key whose
//! `.pub` sibling does not match it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use drover_agent::image::sign::{self, SigningKey};
use kernel_cmdline::PublicKey;
use zeroize::Zeroize as _;

/// The secret key's file name.
pub const SECRET_FILE: &str = "drover.key";
/// The public key's file name.
pub const PUBLIC_FILE: &str = "drover.pub";

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// `DIR/drover.key`.
    pub secret: PathBuf,
    /// `DIR/drover.pub`.
    pub public: PathBuf,
    /// The public key.
    pub key: PublicKey,
}

/// Generate a key pair into `dir` (created if missing).
pub fn generate(dir: &Path, force: bool) -> Result<Generated> {
    let secret_path = dir.join(SECRET_FILE);
    let public_path = dir.join(PUBLIC_FILE);
    if !force {
        for path in [&secret_path, &public_path] {
            if path.symlink_metadata().is_ok() {
                bail!(
                    "{} already exists; nodes that trust it would reject images signed by a new key (pass --force to replace it anyway)",
                    path.display()
                );
            }
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;

    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| anyhow::anyhow!("getting 32 random bytes from the OS: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    seed.zeroize();
    let public = key.public_key();

    // Written under temporary names, then renamed into place.
    let secret_tmp = dir.join(format!(".{SECRET_FILE}.new"));
    let public_tmp = dir.join(format!(".{PUBLIC_FILE}.new"));
    for tmp in [&secret_tmp, &public_tmp] {
        match std::fs::remove_file(tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", tmp.display())),
        }
    }
    sign::write_secret_key(&secret_tmp, &key)?;
    sign::write_public_key(&public_tmp, &public)?;
    // Without --force, refuse to clobber a key that appeared meanwhile.
    if !force && (secret_path.symlink_metadata().is_ok() || public_path.symlink_metadata().is_ok())
    {
        let _ = std::fs::remove_file(&secret_tmp);
        let _ = std::fs::remove_file(&public_tmp);
        bail!(
            "a key appeared in {} while generating; not replacing it",
            dir.display()
        );
    }
    for (tmp, path) in [(&secret_tmp, &secret_path), (&public_tmp, &public_path)] {
        std::fs::rename(tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    }
    // Make the renames durable before anyone signs with the key.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(Generated {
        secret: secret_path,
        public: public_path,
        key: public,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn generates_a_matching_pair_and_refuses_to_clobber() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("keys");
        let g = generate(&out, false).unwrap();
        assert_eq!(g.secret, out.join("drover.key"));
        let mode = std::fs::metadata(&g.secret).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(&g.public).unwrap();
        assert_eq!(text, format!("{}\n", g.key));
        assert_eq!(text.len(), 65);
        let secret = sign::read_secret_key(&g.secret).unwrap();
        assert_eq!(secret.public_key(), g.key);
        assert_eq!(sign::read_public_key(&g.public).unwrap(), g.key);

        let e = generate(&out, false).unwrap_err().to_string();
        assert!(e.contains("drover.key already exists"), "{e}");
        assert!(e.contains("--force"), "{e}");
        assert_eq!(sign::read_public_key(&g.public).unwrap(), g.key);

        let again = generate(&out, true).unwrap();
        assert_ne!(again.key, g.key);
        assert_eq!(
            sign::read_secret_key(&again.secret).unwrap().public_key(),
            again.key
        );
        let mode = std::fs::metadata(&again.secret)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn a_lone_public_key_also_blocks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("drover.pub"), b"x").unwrap();
        let e = generate(dir.path(), false).unwrap_err().to_string();
        assert!(e.contains("drover.pub already exists"), "{e}");
    }
}
