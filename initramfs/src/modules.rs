//! Picks kernel modules and their dependencies out of `/lib/modules/<release>`
//! and writes cut-down `modules.dep`/`modules.alias`/`modules.softdep` that
//! name only what the initramfs carries, so the agent's coldplug never tries
//! to load a module that is not there.
//!
//! Module files are copied exactly as `modules.dep` names them: a
//! `.ko.xz`/`.ko.zst`/`.ko.gz` stays compressed under the same name, and the
//! agent decompresses it before `finit_module` (Debian 12 ships plain `.ko`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Drivers a deploy needs on common virtual and physical servers: NICs, disk
/// controllers, the filesystems the agent creates (ext4 needs crc32c loaded
/// first: mke2fs 1.47 enables metadata_csum; vfat mounts need the default
/// codepage and iocharset), efivarfs for UEFI boot entries, and virtio-rng so
/// early boot has entropy. Names missing from a kernel are skipped with a
/// note; built-in ones need nothing.
pub const DEFAULT_MODULES: &[&str] = &[
    // virtual machines
    "virtio_pci",
    "virtio_net",
    "virtio_blk",
    "virtio_scsi",
    "virtio_rng",
    "vmxnet3",
    "vmw_pvscsi",
    "hv_netvsc",
    "hv_storvsc",
    "xen_netfront",
    "xen_blkfront",
    "ena",
    // NICs
    "e1000",
    "e1000e",
    "igb",
    "igc",
    "ixgbe",
    "ixgbevf",
    "i40e",
    "iavf",
    "ice",
    "bnx2",
    "bnx2x",
    "bnxt_en",
    "tg3",
    "r8169",
    "mlx4_en",
    "mlx5_core",
    // disks
    "nvme",
    "ahci",
    "ata_piix",
    "sd_mod",
    "mpt3sas",
    "megaraid_sas",
    "hpsa",
    // filesystems
    "crc32c_generic",
    "crc32c_intel",
    "ext4",
    "vfat",
    "nls_cp437",
    "nls_iso8859_1",
    "efivarfs",
];

/// The module name the kernel and `modules.alias` use: `-` and `_` are the
/// same to modprobe, and the kernel itself stores `_`.
pub fn canonical_name(name: &str) -> String {
    name.replace('-', "_")
}

/// `kernel/fs/nls/nls_iso8859-1.ko.xz` → `nls_iso8859_1`.
pub fn name_from_path(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|ext| file.strip_suffix(ext))?;
    (!stem.is_empty()).then(|| canonical_name(stem))
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: line {line}: {reason}: {text:?}", file.display())]
    Syntax {
        file: PathBuf,
        line: usize,
        reason: &'static str,
        text: String,
    },
    #[error("{}: {module} depends on {dep}, which has no line of its own", file.display())]
    DanglingDep {
        file: PathBuf,
        module: String,
        dep: String,
    },
    #[error("unknown kernel module(s) {}: neither in {} nor in modules.builtin", names.join(", "), file.display())]
    Unknown { names: Vec<String>, file: PathBuf },
}

struct DepLine {
    path: String,
    deps: Vec<String>,
    /// The line as read, written back unchanged when the module is kept.
    text: String,
}

/// A parsed `modules.dep` plus `modules.builtin`.
pub struct Index {
    file: PathBuf,
    lines: Vec<DepLine>,
    by_name: HashMap<String, usize>,
    by_path: HashMap<String, usize>,
    builtin: HashSet<String>,
}

/// The modules to ship, closed under dependencies.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Paths relative to the modules dir, in `modules.dep` order.
    pub paths: Vec<String>,
    /// Canonical names of `paths`.
    pub names: BTreeSet<String>,
    /// The `modules.dep` lines of `paths`, unchanged.
    pub dep: String,
    /// Requested names that are built into the kernel: nothing to ship.
    pub builtin: Vec<String>,
    /// Optional names this kernel does not have at all.
    pub missing: Vec<String>,
}

impl Index {
    /// `file` names `modules.dep` in error messages only.
    pub fn parse(file: &Path, dep: &str, builtin: &str) -> Result<Self, Error> {
        let mut index = Self {
            file: file.to_owned(),
            lines: Vec::new(),
            by_name: HashMap::new(),
            by_path: HashMap::new(),
            builtin: builtin.lines().filter_map(name_from_path).collect(),
        };
        for (n, text) in dep.lines().enumerate() {
            if text.trim().is_empty() || text.starts_with('#') {
                continue;
            }
            let syntax = |reason| Error::Syntax {
                file: file.to_owned(),
                line: n + 1,
                reason,
                text: text.to_owned(),
            };
            let (path, deps) = text.split_once(':').ok_or_else(|| syntax("no `:`"))?;
            let name = name_from_path(path).ok_or_else(|| syntax("not a .ko path"))?;
            if path.starts_with('/') {
                return Err(syntax("absolute paths are not supported"));
            }
            let i = index.lines.len();
            // depmod writes each module once; if not, the first line wins as
            // it does for modprobe.
            if index.by_name.contains_key(&name) {
                continue;
            }
            index.by_name.insert(name, i);
            index.by_path.insert(path.to_owned(), i);
            index.lines.push(DepLine {
                path: path.to_owned(),
                deps: deps.split_whitespace().map(str::to_owned).collect(),
                text: text.to_owned(),
            });
        }
        Ok(index)
    }

    /// Resolves `required` (unknown names are an error) and `optional`
    /// (unknown names are listed in `missing`), then adds every dependency.
    pub fn select(&self, required: &[String], optional: &[&str]) -> Result<Selection, Error> {
        let mut selection = Selection::default();
        let mut unknown = Vec::new();
        let mut todo = Vec::new();
        let wanted = required
            .iter()
            .map(|n| (n.as_str(), true))
            .chain(optional.iter().map(|n| (*n, false)));
        for (name, is_required) in wanted {
            let canonical = canonical_name(name);
            if let Some(&i) = self.by_name.get(&canonical) {
                todo.push(i);
            } else if self.builtin.contains(&canonical) {
                push_unique(&mut selection.builtin, canonical);
            } else if is_required {
                push_unique(&mut unknown, name.to_owned());
            } else {
                push_unique(&mut selection.missing, name.to_owned());
            }
        }
        if !unknown.is_empty() {
            return Err(Error::Unknown {
                names: unknown,
                file: self.file.clone(),
            });
        }
        // modules.dep already lists the full closure, but follow it anyway so
        // a hand-written or partial index still yields a loadable set.
        let mut chosen = vec![false; self.lines.len()];
        while let Some(i) = todo.pop() {
            if std::mem::replace(&mut chosen[i], true) {
                continue;
            }
            for dep in &self.lines[i].deps {
                let &d = self.by_path.get(dep).ok_or_else(|| Error::DanglingDep {
                    file: self.file.clone(),
                    module: self.lines[i].path.clone(),
                    dep: dep.clone(),
                })?;
                todo.push(d);
            }
        }
        for (line, _) in self.lines.iter().zip(&chosen).filter(|(_, &c)| c) {
            selection.paths.push(line.path.clone());
            selection.names.extend(name_from_path(&line.path));
            writeln!(selection.dep, "{}", line.text).expect("writing to a String cannot fail");
        }
        Ok(selection)
    }
}

fn push_unique(list: &mut Vec<String>, item: String) {
    if !list.contains(&item) {
        list.push(item);
    }
}

/// Keeps the `alias PATTERN MODULE` lines whose module is in `names`.
pub fn filter_alias(alias: &str, names: &BTreeSet<String>) -> String {
    filter_lines(alias, "alias", 2, names)
}

/// Keeps the `softdep MODULE pre: … post: …` lines whose module is in `names`.
pub fn filter_softdep(softdep: &str, names: &BTreeSet<String>) -> String {
    filter_lines(softdep, "softdep", 1, names)
}

fn filter_lines(text: &str, keyword: &str, field: usize, names: &BTreeSet<String>) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some(keyword) {
            continue;
        }
        if let Some(module) = words.nth(field - 1) {
            if names.contains(&canonical_name(module)) {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// What [`resolve`] read from a modules dir.
pub struct Resolved {
    /// The kernel release: the modules dir's last component.
    pub release: String,
    pub selection: Selection,
    pub alias: String,
    pub softdep: String,
    /// `modules.builtin`, shipped whole so the agent can tell "built in"
    /// from "missing".
    pub builtin: String,
}

/// Reads the indexes in `dir` (`/lib/modules/<release>`) and selects modules.
/// `modules.builtin`, `modules.alias` and `modules.softdep` may be absent.
pub fn resolve(dir: &Path, required: &[String], optional: &[&str]) -> Result<Resolved, Error> {
    let release = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Read {
            path: dir.to_owned(),
            source: std::io::Error::other("the modules dir must end in the kernel release"),
        })?
        .to_owned();
    let dep_file = dir.join("modules.dep");
    let dep = read(&dep_file, false)?;
    let builtin = read(&dir.join("modules.builtin"), true)?;
    let index = Index::parse(&dep_file, &dep, &builtin)?;
    let selection = index.select(required, optional)?;
    let alias = filter_alias(&read(&dir.join("modules.alias"), true)?, &selection.names);
    let softdep = filter_softdep(&read(&dir.join("modules.softdep"), true)?, &selection.names);
    Ok(Resolved {
        release,
        selection,
        alias,
        softdep,
        builtin,
    })
}

fn read(path: &Path, optional: bool) -> Result<String, Error> {
    match std::fs::read_to_string(path) {
        Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        result => result.map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
#[path = "modules_tests.rs"]
mod tests;
