//! Builds drover's initrd: a gzip-compressed newc cpio archive whose `/init`
//! is the drover agent, with the kernel modules it loads, helper programs
//! and their shared libraries, and extra files such as the image-signing key.
//!
//! The output depends only on the inputs' contents: entries are sorted,
//! timestamps and owners are zero, and gzip's header is fixed. Building twice
//! gives the same bytes, so an initrd can be checked by rebuilding it.
//!
//! Layout:
//!
//! ```text
//! /init                         the agent, 0755
//! /bin/<program>                helper programs (Spec::programs)
//! /lib…, /usr/lib…              their libraries, where ld.so looks
//! /dev/console, /dev/null       the kernel opens the console for init
//!                               before anyone can mount devtmpfs
//! /proc /sys /run /tmp /mnt /etc   empty mount points and scratch
//! /etc/drover/release           the kernel release the modules are for
//! /lib/modules/<release>/       the modules at their usual relative paths,
//!     modules.dep               only the shipped modules' lines
//!     modules.alias             only aliases of shipped modules
//!     modules.softdep           only soft deps of shipped modules
//!     modules.builtin           whole: tells "built in" from "missing"
//! ```

pub mod cpio;
pub mod elf;
pub mod gzip;
pub mod modules;
pub mod release;
mod report;

use std::path::{Path, PathBuf};

use cpio::{Archive, Entry};
pub use elf::Program;
pub use modules::DEFAULT_MODULES;
pub use report::{kib, Report};

/// Everything that goes into one initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The agent binary, static (musl); it becomes `/init`.
    pub agent: PathBuf,
    /// `/lib/modules/<release>` to take modules from; its last component is
    /// the release. `None` ships no modules and no `/etc/drover/release`.
    pub modules_dir: Option<PathBuf>,
    /// Module names that must be shipped; a name the kernel has neither as
    /// a module nor built in is an error.
    pub modules: Vec<String>,
    /// Also ship those of [`DEFAULT_MODULES`] that the kernel has.
    pub default_modules: bool,
    /// ELF programs, shipped with their interpreter and libraries.
    pub programs: Vec<Program>,
    /// Extra files: (absolute path in the initramfs, host source). Mode 0755
    /// if the source has any execute bit, else 0644.
    pub files: Vec<(String, PathBuf)>,
    /// Where libraries are looked up (program and file paths are host
    /// paths, taken as given).
    pub sysroot: PathBuf,
}

impl Spec {
    /// Just the agent, default modules on, sysroot `/`.
    pub fn new(agent: impl Into<PathBuf>) -> Self {
        Self {
            agent: agent.into(),
            modules_dir: None,
            modules: Vec::new(),
            default_modules: true,
            programs: Vec::new(),
            files: Vec::new(),
            sysroot: PathBuf::from("/"),
        }
    }

    /// The same spec with no modules (the index files stay, empty): building
    /// it shows what the modules cost.
    pub fn without_modules(&self) -> Self {
        Self {
            modules: Vec::new(),
            default_modules: false,
            ..self.clone()
        }
    }
}

/// A built initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// The gzip file to serve as the initrd.
    pub gzip: Vec<u8>,
    pub report: Report,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("modules {} requested but no modules dir given", .0.join(", "))]
    NoModulesDir(Vec<String>),
    #[error(transparent)]
    Cpio(#[from] cpio::Error),
    #[error(transparent)]
    Modules(#[from] modules::Error),
    #[error(transparent)]
    Elf(#[from] elf::Error),
}

/// Directories made up front: the agent mounts proc, sysfs, devtmpfs and
/// tmpfs on them, or needs them to exist (`/tmp` is world-writable sticky as
/// usual, `/proc` and `/sys` read-only mount points).
const DIRS: &[(&str, u32)] = &[
    ("bin", 0o755),
    ("dev", 0o755),
    ("etc", 0o755),
    ("mnt", 0o755),
    ("proc", 0o555),
    ("run", 0o755),
    ("sys", 0o555),
    ("tmp", 0o1777),
];

/// The kernel opens `/dev/console` as init's stdin/stdout/stderr before
/// init runs, i.e. before devtmpfs can be mounted; without the node init has
/// no console ("Warning: unable to open an initial console").
const DEVICES: &[(&str, u32, u32, u32)] =
    &[("dev/console", 0o600, 5, 1), ("dev/null", 0o666, 1, 3)];

pub const RELEASE_FILE: &str = "etc/drover/release";

/// Builds the initramfs described by `spec`.
pub fn build(spec: &Spec) -> Result<Built, Error> {
    let mut archive = Archive::new();
    let mut report = Report::default();
    for (path, mode) in DIRS {
        archive.add(Entry::dir(path, *mode))?;
    }
    for (path, mode, major, minor) in DEVICES {
        archive.add(Entry::char_dev(path, *mode, *major, *minor))?;
    }

    let agent = read(&spec.agent)?;
    report.agent_bytes = agent.len() as u64;
    report.notes.extend(check_agent(&spec.agent, &agent));
    archive.add(Entry::file("init", 0o755, agent))?;

    match &spec.modules_dir {
        Some(dir) => add_modules(&mut archive, &mut report, spec, dir)?,
        None if !spec.modules.is_empty() => return Err(Error::NoModulesDir(spec.modules.clone())),
        None => {}
    }

    for item in elf::resolve(&spec.sysroot, &spec.programs)? {
        if item.is_program {
            report.programs += 1;
        } else {
            report.libraries += 1;
        }
        match item.source {
            elf::Source::File { data, .. } => {
                report.programs_bytes += data.len() as u64;
                archive.add(Entry::file(&item.dest, 0o755, data))?;
            }
            elf::Source::Link(target) => archive.add(Entry::symlink(&item.dest, &target))?,
        }
    }

    for (dest, src) in &spec.files {
        let data = read(src)?;
        let executable = std::fs::metadata(src)
            .map(|m| is_executable(&m))
            .unwrap_or(false);
        report.files += 1;
        report.files_bytes += data.len() as u64;
        archive.add(Entry::file(
            dest,
            if executable { 0o755 } else { 0o644 },
            data,
        ))?;
    }

    let cpio = archive.to_bytes();
    let gzip = gzip::compress(&cpio);
    report.entries = archive.len();
    report.uncompressed_bytes = cpio.len() as u64;
    report.compressed_bytes = gzip.len() as u64;
    Ok(Built { gzip, report })
}

fn add_modules(
    archive: &mut Archive,
    report: &mut Report,
    spec: &Spec,
    dir: &Path,
) -> Result<(), Error> {
    let optional = if spec.default_modules {
        DEFAULT_MODULES
    } else {
        &[]
    };
    let resolved = modules::resolve(dir, &spec.modules, optional)?;
    let base = format!("lib/modules/{}", resolved.release);
    for rel in &resolved.selection.paths {
        let data = read(&dir.join(rel))?;
        report.modules += 1;
        report.modules_bytes += data.len() as u64;
        archive.add(Entry::file(&format!("{base}/{rel}"), 0o644, data))?;
    }
    let index = [
        ("modules.dep", resolved.selection.dep),
        ("modules.alias", resolved.alias),
        ("modules.softdep", resolved.softdep),
        ("modules.builtin", resolved.builtin),
    ];
    for (name, text) in index {
        archive.add(Entry::file(
            &format!("{base}/{name}"),
            0o644,
            text.into_bytes(),
        ))?;
    }
    // One line; the agent trims it. It also has uname(2), but this names the
    // modules actually shipped even if a mismatched kernel boots.
    let release_line = format!("{}\n", resolved.release);
    archive.add(Entry::file(RELEASE_FILE, 0o644, release_line.into_bytes()))?;
    if !resolved.selection.missing.is_empty() {
        report.notes.push(format!(
            "default module(s) not in kernel {}, skipped: {}",
            resolved.release,
            resolved.selection.missing.join(", ")
        ));
    }
    report.release = Some(resolved.release);
    report.builtin = resolved.selection.builtin;
    report.missing_defaults = resolved.selection.missing;
    Ok(())
}

/// `/init` must run with nothing else present: a dynamically linked agent
/// would die at once and the kernel would panic.
fn check_agent(path: &Path, data: &[u8]) -> Option<String> {
    match goblin::elf::Elf::parse(data) {
        Ok(elf) => elf.interpreter.map(|interp| {
            format!(
                "agent {} is dynamically linked (needs {interp}); as /init it will not start",
                path.display()
            )
        }),
        Err(_) => Some(format!("agent {} is not an ELF executable", path.display())),
    }
}

fn is_executable(metadata: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    metadata.permissions().mode() & 0o111 != 0
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}
