//! The shared-library closure of helper programs (mke2fs, mkfs.vfat…): the
//! ELF interpreter (PT_INTERP) and every DT_NEEDED library, recursively, found
//! the way ld.so would find them in an initramfs that has no `ld.so.cache`.
//!
//! Each library is placed at the path ld.so will look at: the search
//! directory it was found in plus the name it was asked for (so a symlink
//! such as `/lib/x86_64-linux-gnu/libc.so.6` becomes a regular file holding
//! the target's bytes). A file already included under another name (the
//! interpreter is both `/lib64/ld-linux-x86-64.so.2` and a DT_NEEDED of libc)
//! becomes a symlink to the first copy rather than a second copy.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use goblin::elf::header::{EI_CLASS, ELFCLASS64};
use goblin::elf::Elf;

/// Searched after the object's own DT_RUNPATH (or DT_RPATH); these are
/// glibc's trusted directories on Debian plus the other common layouts.
pub const LIBRARY_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// A program to ship. `src` is a host path (taken as given, not under the
/// sysroot); `dest` defaults to `/bin/<file name of src>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub src: PathBuf,
    pub dest: Option<String>,
}

/// One file to put in the initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Absolute path inside the initramfs.
    pub dest: String,
    pub source: Source,
    /// A requested program rather than a library it needs.
    pub is_program: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The bytes of `path` (after following symlinks).
    File { path: PathBuf, data: Vec<u8> },
    /// The same file is already shipped at this absolute path.
    Link(String),
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not an ELF file (ship other files with `files`)", path.display())]
    NotElf {
        path: PathBuf,
        #[source]
        source: goblin::error::Error,
    },
    #[error("{}: no file name to place it under /bin", path.display())]
    NoFileName { path: PathBuf },
    #[error("library {name} needed by {}: not found in {}", needed_by.display(), searched.join(", "))]
    NotFound {
        name: String,
        needed_by: PathBuf,
        searched: Vec<String>,
    },
    #[error("{dest}: wanted for both {} and {}", first.display(), second.display())]
    Conflict {
        dest: String,
        first: PathBuf,
        second: PathBuf,
    },
}

/// The ELF facts that matter for loading.
struct Object {
    machine: u16,
    is_64: bool,
    interpreter: Option<String>,
    needed: Vec<String>,
    search: Vec<String>,
}

fn parse(path: &Path, data: &[u8]) -> Result<Object, Error> {
    let elf = Elf::parse(data).map_err(|source| Error::NotElf {
        path: path.to_owned(),
        source,
    })?;
    // DT_RPATH is ignored by ld.so when DT_RUNPATH is present.
    let paths = if elf.runpaths.is_empty() {
        &elf.rpaths
    } else {
        &elf.runpaths
    };
    Ok(Object {
        machine: elf.header.e_machine,
        is_64: elf.is_64,
        interpreter: elf.interpreter.map(str::to_owned),
        needed: elf.libraries.iter().map(|s| (*s).to_owned()).collect(),
        search: paths
            .iter()
            .flat_map(|p| p.split(':'))
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

/// `/a/./b/../c` → `/a/c`, without touching the filesystem: these are paths
/// inside the initramfs, not on the host.
fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            _ => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Where an object lives: a host path as the user gave it, or a path inside
/// the sysroot whose symlinks resolve inside the sysroot, as in a chroot.
#[derive(Clone)]
enum Loc {
    Host(PathBuf),
    Root(String),
}

/// ELOOP's limit in Linux path resolution.
const MAX_SYMLINKS: usize = 40;

impl Loc {
    /// The path shown in messages.
    fn shown(&self, sysroot: &Path) -> PathBuf {
        match self {
            Loc::Host(path) => path.clone(),
            Loc::Root(path) => sysroot.join(path.trim_start_matches('/')),
        }
    }

    /// The real host path, every symlink followed: the key that tells two
    /// names of one file apart from two files.
    fn real(&self, sysroot: &Path) -> std::io::Result<PathBuf> {
        let path = match self {
            Loc::Host(path) => return std::fs::canonicalize(path),
            Loc::Root(path) => path,
        };
        let mut todo: Vec<OsString> = Path::new(path).iter().rev().map(OsString::from).collect();
        let mut done = PathBuf::new();
        let mut hops = 0;
        while let Some(part) = todo.pop() {
            match part.to_str() {
                Some("/" | ".") => continue,
                Some("..") => {
                    done.pop();
                    continue;
                }
                _ => {}
            }
            let candidate = sysroot.join(&done).join(&part);
            if !std::fs::symlink_metadata(&candidate)?
                .file_type()
                .is_symlink()
            {
                done.push(part);
                continue;
            }
            hops += 1;
            if hops > MAX_SYMLINKS {
                return Err(std::io::Error::other("too many levels of symbolic links"));
            }
            let target = std::fs::read_link(&candidate)?;
            if target.is_absolute() {
                done.clear();
            }
            todo.extend(target.iter().rev().map(OsString::from));
        }
        Ok(sysroot.join(done))
    }

    /// `$ORIGIN`-relative `rest` next to this object.
    fn sibling(&self, rest: &str) -> Loc {
        match self {
            Loc::Host(path) => Loc::Host(
                path.parent()
                    .unwrap_or(Path::new(""))
                    .join(format!(".{rest}")),
            ),
            Loc::Root(path) => Loc::Root(clean(&format!("{}/{rest}", parent(path)))),
        }
    }
}

/// The directory part of an absolute initramfs or sysroot path.
fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("/", |(dir, _)| dir)
}

struct Resolver<'a> {
    sysroot: &'a Path,
    items: Vec<Item>,
    /// dest → the real host path it came from.
    by_dest: HashMap<String, PathBuf>,
    /// real host path → first dest.
    by_file: HashMap<PathBuf, String>,
}

impl Resolver<'_> {
    /// Adds `loc` at `dest` unless already there; returns the object to scan
    /// when it is new content.
    fn add(&mut self, loc: &Loc, dest: String, is_program: bool) -> Result<Option<Object>, Error> {
        let shown = loc.shown(self.sysroot);
        let real = loc.real(self.sysroot).map_err(|source| Error::Read {
            path: shown.clone(),
            source,
        })?;
        if let Some(first) = self.by_dest.get(&dest) {
            if *first == real {
                return Ok(None);
            }
            return Err(Error::Conflict {
                dest,
                first: first.clone(),
                second: real,
            });
        }
        self.by_dest.insert(dest.clone(), real.clone());
        if let Some(first) = self.by_file.get(&real) {
            let source = Source::Link(first.clone());
            self.items.push(Item {
                dest,
                source,
                is_program,
            });
            return Ok(None);
        }
        let data = read(&real)?;
        let object = parse(&shown, &data)?;
        self.by_file.insert(real, dest.clone());
        let source = Source::File { path: shown, data };
        self.items.push(Item {
            dest,
            source,
            is_program,
        });
        Ok(Some(object))
    }

    /// Adds the interpreter and libraries of `object` (found at `loc`, placed
    /// at `dest`), then theirs in turn.
    fn add_deps(&mut self, loc: &Loc, dest: &str, object: &Object) -> Result<(), Error> {
        let mut todo = Vec::new();
        let interp = object
            .interpreter
            .iter()
            .map(|i| (Loc::Root(clean(i)), clean(i)));
        let libs: Vec<(Loc, String)> = object
            .needed
            .iter()
            .map(|name| self.find(name, loc, dest, object))
            .collect::<Result<_, _>>()?;
        for (dep_loc, dep_dest) in interp.chain(libs) {
            if let Some(dep) = self.add(&dep_loc, dep_dest.clone(), false)? {
                todo.push((dep_loc, dep_dest, dep));
            }
        }
        for (dep_loc, dep_dest, dep) in todo {
            self.add_deps(&dep_loc, &dep_dest, &dep)?;
        }
        Ok(())
    }

    /// Finds library `name` for `object` as (location, initramfs path).
    fn find(
        &self,
        name: &str,
        loc: &Loc,
        dest: &str,
        object: &Object,
    ) -> Result<(Loc, String), Error> {
        if name.contains('/') {
            return Ok((Loc::Root(clean(name)), clean(name)));
        }
        let mut searched = Vec::new();
        for dir in object
            .search
            .iter()
            .map(String::as_str)
            .chain(LIBRARY_DIRS.iter().copied())
        {
            // $ORIGIN is the object's own directory: where it came from, to
            // find the file, and where it goes, to place the library where
            // ld.so will look.
            let origin_rest = dir
                .strip_prefix("$ORIGIN")
                .or_else(|| dir.strip_prefix("${ORIGIN}"));
            let (candidate, at) = match origin_rest {
                Some(rest) => (
                    loc.sibling(&format!("{rest}/{name}")),
                    clean(&format!("{}/{rest}/{name}", parent(dest))),
                ),
                None => (
                    Loc::Root(clean(&format!("{dir}/{name}"))),
                    clean(&format!("{dir}/{name}")),
                ),
            };
            searched.push(dir.to_owned());
            if self.loadable(&candidate, object) {
                return Ok((candidate, at));
            }
        }
        Err(Error::NotFound {
            name: name.to_owned(),
            needed_by: loc.shown(self.sysroot),
            searched,
        })
    }

    /// ld.so skips files of another class or machine (a 32-bit libc in
    /// /usr/lib) and keeps searching; so do we.
    fn loadable(&self, candidate: &Loc, object: &Object) -> bool {
        let mut header = [0u8; 64];
        let read = candidate
            .real(self.sysroot)
            .and_then(std::fs::File::open)
            .and_then(|mut file| file.read(&mut header));
        let Ok(len) = read else {
            return false;
        };
        matches!(Elf::parse_header(&header[..len]), Ok(h) if h.e_machine == object.machine
            && (h.e_ident[EI_CLASS] == ELFCLASS64) == object.is_64)
    }
}

/// The programs and every library they load, in discovery order. Static
/// programs bring nothing else.
pub fn resolve(sysroot: &Path, programs: &[Program]) -> Result<Vec<Item>, Error> {
    let mut resolver = Resolver {
        sysroot,
        items: Vec::new(),
        by_dest: HashMap::new(),
        by_file: HashMap::new(),
    };
    for program in programs {
        let dest = match &program.dest {
            Some(dest) => clean(dest),
            None => {
                let name = program.src.file_name().and_then(|n| n.to_str());
                let name = name.ok_or_else(|| Error::NoFileName {
                    path: program.src.clone(),
                })?;
                format!("/bin/{name}")
            }
        };
        let loc = Loc::Host(program.src.clone());
        if let Some(object) = resolver.add(&loc, dest.clone(), true)? {
            resolver.add_deps(&loc, &dest, &object)?;
        }
    }
    Ok(resolver.items)
}

#[cfg(test)]
#[path = "elf_tests.rs"]
mod tests;
