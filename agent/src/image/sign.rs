//! `manifest.sig`: a 64-byte raw ed25519 signature over the exact bytes of
//! `manifest.json`.
//!
//! The agent trusts one key (baked into its initramfs, or pinned with
//! `deploy.key=`) and calls [`verify`] on the bytes it received, before
//! [`Manifest::parse`](super::Manifest::parse) sees them. Verification is
//! `verify_strict` (RFC 8032 §5.1.7 plus rejection of small-order keys and
//! non-canonical encodings), so one manifest has exactly one valid signature
//! per key.
//!
//! With feature `sign` (the server): [`SigningKey`] from 32 secret bytes —
//! generating them is the caller's job (`getrandom`), so the agent carries
//! no RNG — plus [`write_signature`] and the secret-key file helpers.

use std::fmt;

use ed25519_dalek::{Signature, VerifyingKey};
use kernel_cmdline::PublicKey;

pub use super::keyfile::{parse_public_key, read_public_key, write_public_key, KeyError};
#[cfg(feature = "sign")]
pub use super::keyfile::{read_secret_key, write_secret_key};

/// Length of `manifest.sig`.
pub const SIGNATURE_LEN: usize = 64;

/// Why `manifest.sig` is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Truncated or padded file.
    #[error("manifest.sig is {0} bytes, not {SIGNATURE_LEN}")]
    WrongLength(usize),
    /// The trusted key itself is unusable (not a point on the curve, or a
    /// weak key), which is a configuration error, not an attack.
    #[error("the trusted key {0} is not a valid ed25519 public key")]
    BadKey(KeyPrefix),
    /// Tampered manifest, another key's signature, or a wrong trusted key.
    #[error("manifest.sig does not match the trusted key {0}")]
    Mismatch(KeyPrefix),
}

/// The first 16 hex digits of a public key: enough to tell which key an
/// operator configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPrefix(pub [u8; 8]);

impl KeyPrefix {
    fn of(key: &PublicKey) -> Self {
        let mut p = [0u8; 8];
        p.copy_from_slice(&key.0[..8]);
        KeyPrefix(p)
    }
}

impl fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&super::digest::encode_hex(&self.0))
    }
}

/// Check `sig` (the bytes of `manifest.sig`) over `manifest` (the bytes of
/// `manifest.json`) against the trusted `key`.
pub fn verify(manifest: &[u8], sig: &[u8], key: &PublicKey) -> Result<(), SignatureError> {
    let sig: &[u8; SIGNATURE_LEN] = sig
        .try_into()
        .map_err(|_| SignatureError::WrongLength(sig.len()))?;
    let prefix = KeyPrefix::of(key);
    let key = VerifyingKey::from_bytes(&key.0).map_err(|_| SignatureError::BadKey(prefix))?;
    if key.is_weak() {
        return Err(SignatureError::BadKey(prefix));
    }
    key.verify_strict(manifest, &Signature::from_bytes(sig))
        .map_err(|_| SignatureError::Mismatch(prefix))
}

#[cfg(feature = "sign")]
pub use signing::{write_signature, SigningKey};

#[cfg(feature = "sign")]
mod signing {
    use std::path::Path;

    use ed25519_dalek::Signer as _;
    use kernel_cmdline::PublicKey;

    use super::super::{MANIFEST_FILE, SIGNATURE_FILE};
    use super::SIGNATURE_LEN;

    /// An ed25519 signing key; its secret is zeroed on drop.
    pub struct SigningKey(pub(crate) ed25519_dalek::SigningKey);

    impl SigningKey {
        /// From 32 secret bytes (RFC 8032 seed), e.g. fresh from `getrandom`.
        pub fn from_bytes(secret: &[u8; 32]) -> Self {
            SigningKey(ed25519_dalek::SigningKey::from_bytes(secret))
        }

        /// The matching public key, what the agent is given.
        pub fn public_key(&self) -> PublicKey {
            PublicKey(self.0.verifying_key().to_bytes())
        }

        /// Sign `bytes` (deterministic, RFC 8032).
        pub fn sign(&self, bytes: &[u8]) -> [u8; SIGNATURE_LEN] {
            self.0.sign(bytes).to_bytes()
        }

        /// The 32 secret bytes, for writing the key file.
        pub(crate) fn secret(&self) -> &[u8; 32] {
            self.0.as_bytes()
        }
    }

    impl std::fmt::Debug for SigningKey {
        /// Never prints the secret.
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "SigningKey(public {})", self.public_key())
        }
    }

    /// Sign `dir/manifest.json` as it is on disk into `dir/manifest.sig`
    /// (via a temporary file and a rename, so a reader never sees a partial
    /// signature).
    pub fn write_signature(dir: &Path, key: &SigningKey) -> std::io::Result<()> {
        let manifest = std::fs::read(dir.join(MANIFEST_FILE))?;
        let tmp = dir.join(format!("{SIGNATURE_FILE}.tmp"));
        std::fs::write(&tmp, key.sign(&manifest))?;
        std::fs::rename(&tmp, dir.join(SIGNATURE_FILE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 8032 §7.1, TEST 2: a one-byte message.
    const RFC_PUBLIC: &str = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";
    const RFC_MESSAGE: &[u8] = &[0x72];
    const RFC_SIG: &str = "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da\
                           085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00";

    fn rfc() -> (PublicKey, Vec<u8>) {
        let key: PublicKey = RFC_PUBLIC.parse().unwrap();
        let mut sig = vec![0u8; 64];
        super::super::digest::decode_hex(RFC_SIG, &mut sig).unwrap();
        (key, sig)
    }

    #[test]
    fn rfc8032_vector_verifies() {
        let (key, sig) = rfc();
        assert_eq!(verify(RFC_MESSAGE, &sig, &key), Ok(()));
    }

    #[test]
    fn tampering_is_a_mismatch_naming_the_key() {
        let (key, mut sig) = rfc();
        let err = verify(b"s", &sig, &key).unwrap_err();
        assert_eq!(
            err.to_string(),
            "manifest.sig does not match the trusted key 3d4017c3e843895a"
        );
        sig[10] ^= 1;
        assert!(matches!(
            verify(RFC_MESSAGE, &sig, &key),
            Err(SignatureError::Mismatch(_))
        ));
    }

    #[test]
    fn wrong_length() {
        let (key, sig) = rfc();
        let err = verify(RFC_MESSAGE, &sig[..63], &key).unwrap_err();
        assert_eq!(err, SignatureError::WrongLength(63));
        assert_eq!(err.to_string(), "manifest.sig is 63 bytes, not 64");
        assert!(verify(RFC_MESSAGE, &[], &key).is_err());
        assert!(verify(RFC_MESSAGE, &[0; 65], &key).is_err());
    }

    #[test]
    fn weak_or_invalid_trusted_key() {
        let (_, sig) = rfc();
        // The identity point is small-order: anyone could "sign" for it.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let err = verify(RFC_MESSAGE, &sig, &PublicKey(identity)).unwrap_err();
        assert!(matches!(err, SignatureError::BadKey(_)), "{err}");
        // An all-zero signature must never pass, whatever the key.
        let (key, _) = rfc();
        assert!(verify(RFC_MESSAGE, &[0; 64], &key).is_err());
    }

    #[cfg(feature = "sign")]
    #[test]
    fn sign_then_verify() {
        // RFC 8032 TEST 2's secret key: signing reproduces the vector.
        let mut secret = [0u8; 32];
        super::super::digest::decode_hex(
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
            &mut secret,
        )
        .unwrap();
        let key = SigningKey::from_bytes(&secret);
        let (public, sig) = rfc();
        assert_eq!(key.public_key(), public);
        assert_eq!(key.sign(RFC_MESSAGE).to_vec(), sig);
        assert_eq!(verify(b"other", &key.sign(b"other"), &public), Ok(()));
        assert!(!format!("{key:?}").contains("4ccd089b"));
    }

    #[cfg(feature = "sign")]
    #[test]
    fn write_signature_signs_the_file_bytes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("manifest.json"), b"{}\n").unwrap();
        let key = SigningKey::from_bytes(&[7; 32]);
        write_signature(dir.path(), &key).unwrap();
        let sig = std::fs::read(dir.path().join("manifest.sig")).unwrap();
        assert_eq!(verify(b"{}\n", &sig, &key.public_key()), Ok(()));
        assert!(!dir.path().join("manifest.sig.tmp").exists());
    }
}
