//! Which installed kernel to build for when none is named.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no kernel found: no directory in {} has a matching {}/vmlinuz-<release>", modules.display(), boot.display())]
    NoKernel { modules: PathBuf, boot: PathBuf },
}

/// The newest release with both `<sysroot>/lib/modules/<release>/` and
/// `<sysroot>/boot/vmlinuz-<release>`: a modules dir without its kernel
/// (left behind by an uninstall) or a kernel without modules is useless to
/// a netboot, which needs the pair. "Newest" compares the numbers inside the
/// release strings numerically (`6.1.0-56` > `6.1.0-9`).
pub fn default_release(sysroot: &Path) -> Result<String, Error> {
    let modules = sysroot.join("lib/modules");
    let boot = sysroot.join("boot");
    let entries = std::fs::read_dir(&modules).map_err(|source| Error::Read {
        path: modules.clone(),
        source,
    })?;
    let mut releases = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Read {
            path: modules.clone(),
            source,
        })?;
        let Some(release) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if entry.path().is_dir() && boot.join(format!("vmlinuz-{release}")).is_file() {
            releases.push(release);
        }
    }
    releases
        .into_iter()
        .max_by(|a, b| compare_versions(a, b))
        .ok_or(Error::NoKernel { modules, boot })
}

/// Compares runs of digits as numbers and everything else as text; ties
/// (`01` vs `1`) fall back to plain string order so the result is total.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a, b);
    loop {
        let (Some(cx), Some(cy)) = (x.chars().next(), y.chars().next()) else {
            return x.len().cmp(&y.len()).then_with(|| a.cmp(b));
        };
        let order = if cx.is_ascii_digit() && cy.is_ascii_digit() {
            let (nx, rx) = split_digits(x);
            let (ny, ry) = split_digits(y);
            (x, y) = (rx, ry);
            let (nx, ny) = (nx.trim_start_matches('0'), ny.trim_start_matches('0'));
            nx.len().cmp(&ny.len()).then_with(|| nx.cmp(ny))
        } else {
            (x, y) = (&x[cx.len_utf8()..], &y[cy.len_utf8()..]);
            cx.cmp(&cy)
        };
        if order != Ordering::Equal {
            return order;
        }
    }
}

fn split_digits(s: &str) -> (&str, &str) {
    s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(
            compare_versions("6.1.0-56-amd64", "6.1.0-9-amd64"),
            Ordering::Greater
        );
        assert_eq!(compare_versions("6.10.0", "6.9.12"), Ordering::Greater);
        assert_eq!(compare_versions("6.1.0", "6.1.0-1"), Ordering::Less);
        assert_eq!(compare_versions("6.1", "6.1"), Ordering::Equal);
        assert_ne!(compare_versions("6.01", "6.1"), Ordering::Equal);
    }

    #[test]
    fn picks_the_newest_release_that_has_a_kernel() {
        let root = tempfile::tempdir().unwrap();
        let at = |p: &str| root.path().join(p);
        std::fs::create_dir_all(at("boot")).unwrap();
        let err = default_release(root.path()).unwrap_err();
        assert!(err.to_string().starts_with("reading "), "{err}");
        for release in ["6.1.0-9-amd64", "6.1.0-56-amd64", "6.12.0-1-amd64"] {
            std::fs::create_dir_all(at(&format!("lib/modules/{release}"))).unwrap();
        }
        assert!(matches!(
            default_release(root.path()),
            Err(Error::NoKernel { .. })
        ));
        // 6.12 has modules but no kernel: not a candidate.
        for release in ["6.1.0-9-amd64", "6.1.0-56-amd64"] {
            std::fs::write(at(&format!("boot/vmlinuz-{release}")), "").unwrap();
        }
        assert_eq!(default_release(root.path()).unwrap(), "6.1.0-56-amd64");
    }
}
