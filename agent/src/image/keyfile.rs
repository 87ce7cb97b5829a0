//! Key files: 64 hex digits and a newline, for the public key (what
//! `deploy.key=` takes and what the initramfs carries) and, with feature
//! `sign`, for the 32-byte secret seed (mode 0600, never overwritten).

use std::io;
use std::path::{Path, PathBuf};

use kernel_cmdline::PublicKey;

/// Why a key file or key text cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("reading key file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file could not be written.
    #[error("writing key file {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Not 64 hex digits (and one optional trailing newline).
    #[error("{what} is not 64 hex digits and a newline")]
    Format {
        /// The file, or `key text`.
        what: String,
    },
}

/// Parse public key text: 64 hex digits, either case, optionally followed
/// by one newline (`\n` or `\r\n`). Nothing else — a key file with stray
/// content is more likely the wrong file than a sloppy right one.
pub fn parse_public_key(text: &str) -> Result<PublicKey, KeyError> {
    parse_hex32(text.as_bytes())
        .map(PublicKey)
        .ok_or_else(|| KeyError::Format {
            what: "key text".into(),
        })
}

/// Read a public key file.
pub fn read_public_key(path: &Path) -> Result<PublicKey, KeyError> {
    let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.into(),
        source,
    })?;
    parse_hex32(&bytes)
        .map(PublicKey)
        .ok_or_else(|| KeyError::Format {
            what: path.display().to_string(),
        })
}

/// Write a public key file (replacing any).
pub fn write_public_key(path: &Path, key: &PublicKey) -> Result<(), KeyError> {
    std::fs::write(path, format!("{key}\n")).map_err(|source| KeyError::Write {
        path: path.into(),
        source,
    })
}

/// 32 bytes from 64 hex digits plus at most one line ending.
fn parse_hex32(bytes: &[u8]) -> Option<[u8; 32]> {
    let hex = bytes
        .strip_suffix(b"\r\n")
        .or_else(|| bytes.strip_suffix(b"\n"))
        .unwrap_or(bytes);
    let hex = std::str::from_utf8(hex).ok()?;
    let mut out = [0u8; 32];
    super::digest::decode_hex(hex, &mut out)?;
    Some(out)
}

#[cfg(feature = "sign")]
pub use secret::{read_secret_key, write_secret_key};

#[cfg(feature = "sign")]
mod secret {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    use std::path::Path;

    use zeroize::Zeroize as _;

    use super::super::sign::SigningKey;
    use super::KeyError;

    /// Read a secret key file (64 hex digits of the 32-byte seed).
    pub fn read_secret_key(path: &Path) -> Result<SigningKey, KeyError> {
        let mut bytes = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.into(),
            source,
        })?;
        let secret = super::parse_hex32(&bytes);
        bytes.zeroize();
        let mut secret = secret.ok_or_else(|| KeyError::Format {
            what: path.display().to_string(),
        })?;
        let key = SigningKey::from_bytes(&secret);
        secret.zeroize();
        Ok(key)
    }

    /// Create a secret key file, mode 0600. Fails if `path` exists: losing
    /// a signing key strands every node that trusts it.
    pub fn write_secret_key(path: &Path, key: &SigningKey) -> Result<(), KeyError> {
        let err = |source| KeyError::Write {
            path: path.into(),
            source,
        };
        let mut text = super::super::digest::encode_hex(key.secret());
        text.push('\n');
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()));
        text.zeroize();
        written.map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";

    #[test]
    fn public_key_text() {
        let key = parse_public_key(&format!("{HEX}\n")).unwrap();
        assert_eq!(key.to_string(), HEX);
        assert_eq!(parse_public_key(HEX).unwrap(), key);
        assert_eq!(parse_public_key(&format!("{HEX}\r\n")).unwrap(), key);
        assert_eq!(parse_public_key(&HEX.to_uppercase()).unwrap(), key);
        for bad in [
            "",
            "\n",
            &HEX[2..],
            &format!("{HEX}\n\n"),
            &format!(" {HEX}"),
            &format!("{HEX}00"),
        ] {
            let err = parse_public_key(bad).unwrap_err();
            assert_eq!(
                err.to_string(),
                "key text is not 64 hex digits and a newline"
            );
        }
    }

    #[test]
    fn public_key_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("drover.pub");
        let key = parse_public_key(HEX).unwrap();
        write_public_key(&path, &key).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{HEX}\n"));
        assert_eq!(read_public_key(&path).unwrap(), key);
        let missing = read_public_key(&dir.path().join("nope")).unwrap_err();
        assert!(missing.to_string().starts_with("reading key file "));
    }

    #[cfg(feature = "sign")]
    #[test]
    fn secret_key_file_round_trip_and_no_clobber() {
        use std::os::unix::fs::PermissionsExt as _;

        use super::super::sign::SigningKey;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("drover.key");
        let key = SigningKey::from_bytes(&[9; 32]);
        write_secret_key(&path, &key).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", "09".repeat(32))
        );
        assert_eq!(
            read_secret_key(&path).unwrap().public_key(),
            key.public_key()
        );
        let again = write_secret_key(&path, &SigningKey::from_bytes(&[1; 32]));
        assert!(again.is_err());
        assert_eq!(
            read_secret_key(&path).unwrap().public_key(),
            key.public_key()
        );
    }
}
