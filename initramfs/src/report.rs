//! What went into an initramfs and how big it came out.

use std::fmt;

/// Counts and sizes of one build. Sizes are bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The kernel release the modules belong to, when modules were asked for.
    pub release: Option<String>,
    pub agent_bytes: u64,
    /// Module files (`.ko*`) shipped, dependencies included.
    pub modules: usize,
    /// Their bytes, without the index files.
    pub modules_bytes: u64,
    /// Requested modules that are built into the kernel (nothing shipped).
    pub builtin: Vec<String>,
    /// Default modules this kernel does not have (skipped).
    pub missing_defaults: Vec<String>,
    pub programs: usize,
    /// Shared libraries and the ELF interpreter, copies and links.
    pub libraries: usize,
    /// Programs and libraries together.
    pub programs_bytes: u64,
    /// Extra files from `Spec::files`.
    pub files: usize,
    pub files_bytes: u64,
    /// Archive members, directories and device nodes included.
    pub entries: usize,
    /// The cpio archive.
    pub uncompressed_bytes: u64,
    /// The gzip file: what the node downloads.
    pub compressed_bytes: u64,
    /// Things worth a warning that did not stop the build.
    pub notes: Vec<String>,
}

/// KiB with one decimal, as the report prints sizes.
pub fn kib(bytes: u64) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

/// One line per item, `name: value`, stable for scripts to grep.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(release) = &self.release {
            writeln!(f, "kernel release: {release}")?;
        }
        writeln!(f, "agent: {}", kib(self.agent_bytes))?;
        writeln!(
            f,
            "modules: {} files, {}",
            self.modules,
            kib(self.modules_bytes)
        )?;
        writeln!(
            f,
            "programs+libs: {} programs, {} libraries, {}",
            self.programs,
            self.libraries,
            kib(self.programs_bytes)
        )?;
        writeln!(f, "files: {} files, {}", self.files, kib(self.files_bytes))?;
        writeln!(
            f,
            "initramfs uncompressed: {} ({} entries)",
            kib(self.uncompressed_bytes),
            self.entries
        )?;
        write!(f, "initramfs compressed: {}", kib(self.compressed_bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_one_line_per_item() {
        let report = Report {
            release: Some("6.1.0-56-amd64".into()),
            agent_bytes: 2048,
            modules: 3,
            modules_bytes: 1536,
            uncompressed_bytes: 10 * 1024,
            compressed_bytes: 4 * 1024 + 512,
            entries: 12,
            ..Report::default()
        };
        assert_eq!(
            report.to_string(),
            "kernel release: 6.1.0-56-amd64\n\
             agent: 2.0 KiB\n\
             modules: 3 files, 1.5 KiB\n\
             programs+libs: 0 programs, 0 libraries, 0.0 KiB\n\
             files: 0 files, 0.0 KiB\n\
             initramfs uncompressed: 10.0 KiB (12 entries)\n\
             initramfs compressed: 4.5 KiB"
        );
    }
}
