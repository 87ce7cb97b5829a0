//! Bearer tokens: the per-deployment report token a node gets on its
//! command line, and the admin token the CLI sends.
//!
//! Both are 32 bytes from the OS's random source written as 64 hex digits
//! (within `deploy.token`'s accepted characters), and both are compared in
//! constant time so a client cannot learn a token byte by byte from how
//! long a refusal takes.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use subtle::ConstantTimeEq as _;

/// Random bytes in a token.
pub const TOKEN_BYTES: usize = 32;

/// The admin token's file in the state directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// A fresh token: [`TOKEN_BYTES`] random bytes as lower-case hex.
pub fn new_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("reading the OS's randomness: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether `given` is `expected`, in time that depends only on the lengths.
pub fn matches(expected: &str, given: &str) -> bool {
    expected.as_bytes().ct_eq(given.as_bytes()).into()
}

/// The token of an `Authorization: Bearer TOKEN` header value; the error
/// says what was wrong and what is accepted.
pub fn bearer(header: Option<&str>) -> Result<&str, &'static str> {
    let value =
        header.ok_or("missing Authorization header; accepted: Authorization: Bearer TOKEN")?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err("malformed Authorization header; accepted: Authorization: Bearer TOKEN"),
    }
}

/// The admin token file of a state directory.
pub fn admin_token_path(state_dir: &Path) -> PathBuf {
    state_dir.join(ADMIN_TOKEN_FILE)
}

/// The admin token of `state_dir`, made (mode 0600) if there is none yet.
pub fn load_or_create_admin_token(state_dir: &Path) -> anyhow::Result<String> {
    let path = admin_token_path(state_dir);
    let token = new_token()?;
    // create_new: two servers starting at once cannot both write a token.
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut f) => {
            f.write_all(format!("{token}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            log::info!("made the admin token {}", path.display());
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_admin_token(&path),
        Err(e) => Err(anyhow::Error::new(e).context(format!("creating {}", path.display()))),
    }
}

/// Read an admin token file: one line, the token.
pub fn read_admin_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading the admin token {} (it is made by `drover-server serve`; run as its user or pass --token-file)",
            path.display()
        )
    })?;
    let token = text.trim();
    if !kernel_cmdline::is_valid_token(token) {
        anyhow::bail!(
            "{}: not a token; accepted: one line of {}",
            path.display(),
            kernel_cmdline::TOKEN_ACCEPTED
        );
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn tokens_are_fresh_hex_and_valid_on_the_command_line() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 2 * TOKEN_BYTES);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "{a}"
        );
        assert!(kernel_cmdline::is_valid_token(&a));
    }

    #[test]
    fn matching() {
        assert!(matches("abc", "abc"));
        assert!(!matches("abc", "abd"));
        assert!(!matches("abc", "ab"));
        assert!(!matches("abc", "abcd"));
        assert!(!matches("abc", ""));
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer(Some("Bearer t0k")), Ok("t0k"));
        assert_eq!(bearer(Some("bearer  t0k ")), Ok("t0k"));
        for bad in ["t0k", "Basic dXNlcg==", "Bearer ", "Bearer"] {
            let e = bearer(Some(bad)).unwrap_err();
            assert!(
                e.starts_with("malformed Authorization header; accepted: "),
                "{bad}: {e}"
            );
        }
        assert!(bearer(None)
            .unwrap_err()
            .starts_with("missing Authorization header"));
    }

    #[test]
    fn admin_token_is_made_once_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let made = load_or_create_admin_token(dir.path()).unwrap();
        let path = admin_token_path(dir.path());
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(load_or_create_admin_token(dir.path()).unwrap(), made);
        assert_eq!(read_admin_token(&path).unwrap(), made);

        std::fs::write(&path, "two words\n").unwrap();
        let e = format!("{:#}", read_admin_token(&path).unwrap_err());
        assert!(e.ends_with("admin.token: not a token; accepted: one line of 1 to 256 of A-Z a-z 0-9 . _ ~ + / = -"), "{e}");
        let e = format!(
            "{:#}",
            read_admin_token(&dir.path().join("none")).unwrap_err()
        );
        assert!(e.contains("pass --token-file"), "{e}");
    }
}
