//! The image store on disk: `STORE/NAME/VERSION/` holding `manifest.json`,
//! `manifest.sig` and `payload` (the format: `drover_agent::image`).
//!
//! Entries whose name starts with `.` are the store's own: imports are built
//! in `STORE/.staging/` and renamed into place when complete, so a version
//! directory is either absent or whole. Such entries are never listed or
//! served. A version counts once its `manifest.json` exists.

use std::io;
use std::path::{Path, PathBuf};

use kernel_cmdline::ImageRef;

use crate::version_order::{newest, sort_versions};

/// Where imports are built before they are renamed into place.
pub const STAGING_DIR: &str = ".staging";

/// What a name or version may be, for messages.
pub use drover_agent::image::COMPONENT_ACCEPTED;

/// Check a name or version as one path component: `[A-Za-z0-9._-]{1,128}`,
/// not `.` or `..` (the manifest's own rule). `what` names it in the
/// message (`image name`, `version`).
pub fn check_component(what: &str, s: &str) -> Result<(), String> {
    if drover_agent::image::is_component(s) {
        Ok(())
    } else {
        Err(format!("{what} {s:?} is not {COMPONENT_ACCEPTED}"))
    }
}

/// Valid, and not one of the store's own (`.`-prefixed) entries.
fn is_public(s: &str) -> bool {
    check_component("", s).is_ok() && !s.starts_with('.')
}

/// An image or version that is not in the store, or the store unreadable.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// No `STORE/NAME`.
    #[error("no image named {name:?} in the store {}", store.display())]
    NoImage {
        /// The name asked for.
        name: String,
        /// The store root.
        store: PathBuf,
    },
    /// `STORE/NAME` exists, `STORE/NAME/VERSION` does not.
    #[error(
        "image {name:?} has no version {version:?}; it has: {}",
        list(versions)
    )]
    NoVersion {
        /// The name.
        name: String,
        /// The version asked for.
        version: String,
        /// What there is, oldest first.
        versions: Vec<String>,
    },
    /// `STORE/NAME` holds no complete version.
    #[error("image {name:?} has no complete version yet")]
    Empty {
        /// The name.
        name: String,
    },
    /// Reading the store failed.
    #[error("reading {}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

fn list(versions: &[String]) -> String {
    if versions.is_empty() {
        "none".into()
    } else {
        versions.join(", ")
    }
}

/// One version's directory in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDir {
    /// Image name.
    pub name: String,
    /// Version.
    pub version: String,
    /// `STORE/NAME/VERSION`.
    pub path: PathBuf,
}

impl ImageDir {
    /// A file in it (`manifest.json`, `manifest.sig`, `payload`).
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

/// A store rooted at a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// The store at `root` (not checked).
    pub fn new(root: impl Into<PathBuf>) -> Store {
        Store { root: root.into() }
    }

    /// Its root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `STORE/NAME/VERSION`, whether it exists or not.
    pub fn version_path(&self, name: &str, version: &str) -> PathBuf {
        self.root.join(name).join(version)
    }

    /// Image names, sorted.
    pub fn names(&self) -> Result<Vec<String>, LookupError> {
        let mut names = subdirs(&self.root)?;
        names.sort();
        Ok(names)
    }

    /// Complete versions of `name`, oldest first.
    pub fn versions(&self, name: &str) -> Result<Vec<String>, LookupError> {
        let dir = self.root.join(name);
        if !is_public(name) || !dir.is_dir() {
            return Err(LookupError::NoImage {
                name: name.into(),
                store: self.root.clone(),
            });
        }
        let mut versions: Vec<String> = subdirs(&dir)?
            .into_iter()
            .filter(|v| {
                dir.join(v)
                    .join(drover_agent::image::MANIFEST_FILE)
                    .is_file()
            })
            .collect();
        sort_versions(&mut versions);
        Ok(versions)
    }

    /// The newest complete version of `name`.
    pub fn latest(&self, name: &str) -> Result<String, LookupError> {
        let versions = self.versions(name)?;
        newest(versions.iter().map(String::as_str))
            .map(str::to_owned)
            .ok_or_else(|| LookupError::Empty { name: name.into() })
    }

    /// `NAME@VERSION`, or `NAME`'s newest version.
    pub fn resolve(&self, image: &ImageRef) -> Result<ImageDir, LookupError> {
        let version = match &image.version {
            None => self.latest(&image.name)?,
            Some(v) => {
                let versions = self.versions(&image.name)?;
                if !versions.contains(v) {
                    return Err(LookupError::NoVersion {
                        name: image.name.clone(),
                        version: v.clone(),
                        versions,
                    });
                }
                v.clone()
            }
        };
        Ok(ImageDir {
            path: self.version_path(&image.name, &version),
            name: image.name.clone(),
            version,
        })
    }
}

/// The public subdirectories of `dir` (following symlinks).
fn subdirs(dir: &Path) -> Result<Vec<String>, LookupError> {
    let io_err = |source| LookupError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if is_public(&name) && entry.path().is_dir() {
            out.push(name);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(s: &str) -> ImageRef {
        s.parse().unwrap()
    }

    #[test]
    fn components() {
        for ok in ["demo", "1.10", "a_b-c.d", ".hidden", "..."] {
            assert_eq!(check_component("x", ok), Ok(()), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", "a%2F", &"x".repeat(129)] {
            let e = check_component("image name", bad).unwrap_err();
            assert_eq!(
                e,
                format!(
                    "image name {bad:?} is not 1 to 128 of A-Z a-z 0-9 . _ - (and not . or ..)"
                )
            );
        }
    }

    #[test]
    fn versions_latest_and_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        for v in ["1.9", "1.10", "1.2"] {
            let d = store.version_path("demo", v);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("manifest.json"), b"{}").unwrap();
        }
        // Incomplete, hidden, and not-a-directory entries don't count.
        std::fs::create_dir_all(store.version_path("demo", "2")).unwrap();
        std::fs::create_dir_all(store.version_path("demo", ".3")).unwrap();
        std::fs::write(dir.path().join("demo/4"), b"").unwrap();
        std::fs::create_dir_all(dir.path().join(STAGING_DIR).join("x")).unwrap();
        std::fs::create_dir_all(dir.path().join("empty")).unwrap();

        assert_eq!(store.names().unwrap(), ["demo", "empty"]);
        assert_eq!(store.versions("demo").unwrap(), ["1.2", "1.9", "1.10"]);
        assert_eq!(store.latest("demo").unwrap(), "1.10");
        let d = store.resolve(&image("demo")).unwrap();
        assert_eq!((d.name.as_str(), d.version.as_str()), ("demo", "1.10"));
        assert_eq!(d.file("payload"), dir.path().join("demo/1.10/payload"));
        assert_eq!(store.resolve(&image("demo@1.2")).unwrap().version, "1.2");

        let e = store.resolve(&image("demo@2")).unwrap_err().to_string();
        assert_eq!(
            e,
            "image \"demo\" has no version \"2\"; it has: 1.2, 1.9, 1.10"
        );
        let e = store.resolve(&image("nope")).unwrap_err().to_string();
        assert!(
            e.starts_with("no image named \"nope\" in the store "),
            "{e}"
        );
        let e = store.resolve(&image(".staging")).unwrap_err();
        assert!(matches!(e, LookupError::NoImage { .. }), "{e}");
        let e = store.latest("empty").unwrap_err().to_string();
        assert_eq!(e, "image \"empty\" has no complete version yet");
    }

    #[test]
    fn missing_store_is_an_io_error_naming_it() {
        let store = Store::new("/nonexistent/drover-store");
        let e = store.names().unwrap_err().to_string();
        assert_eq!(e, "reading /nonexistent/drover-store");
    }
}
