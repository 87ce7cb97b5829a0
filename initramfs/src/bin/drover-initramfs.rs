//! `drover-initramfs`: builds the initrd the drover agent boots from. A shim
//! over `drover_initramfs::build`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use argh::FromArgs;
use drover_initramfs::{build, kib, release, Program, Spec};

/// Build drover's initramfs (gzip newc cpio) with the agent as /init.
#[derive(FromArgs)]
struct Args {
    /// the static agent binary, installed as /init
    #[argh(option)]
    agent: Option<PathBuf>,
    /// where to write the initrd (atomically)
    #[argh(option)]
    output: Option<PathBuf>,
    /// kernel release whose modules to ship, from <sysroot>/lib/modules/REL
    /// (default: the newest release that also has <sysroot>/boot/vmlinuz-REL)
    #[argh(option)]
    kernel_release: Option<String>,
    /// modules dir to use instead (its last component is the release)
    #[argh(option)]
    modules_dir: Option<PathBuf>,
    /// a module to ship with its dependencies (repeatable, or comma-separated)
    #[argh(option)]
    module: Vec<String>,
    /// ship only the --module ones, not the built-in default list
    #[argh(switch)]
    no_default_modules: bool,
    /// an ELF program for /bin, with its shared libraries (repeatable)
    #[argh(option)]
    program: Vec<PathBuf>,
    /// an extra file, DEST=SRC (repeatable), e.g. /etc/drover/trusted.pub=key.pub
    #[argh(option)]
    file: Vec<String>,
    /// where libraries, lib/modules and boot are looked up (default /)
    #[argh(option, default = "PathBuf::from(\"/\")")]
    sysroot: PathBuf,
    /// print the kernel release that would be used, then exit
    #[argh(switch)]
    print_kernel_release: bool,
}

fn main() {
    if let Err(err) = run(argh::from_env()) {
        eprintln!("drover-initramfs: error: {err:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let modules_dir = modules_dir(&args)?;
    if args.print_kernel_release {
        println!("{}", release_of(&modules_dir)?);
        return Ok(());
    }
    let (Some(agent), Some(output)) = (args.agent, args.output) else {
        bail!("--agent and --output are required (or --print-kernel-release)");
    };
    let files = args
        .file
        .iter()
        .map(|spec| parse_file(spec))
        .collect::<Result<_>>()?;
    let spec = Spec {
        agent,
        modules_dir: Some(modules_dir),
        modules: args
            .module
            .iter()
            .flat_map(|m| m.split(','))
            .filter(|m| !m.is_empty())
            .map(str::to_owned)
            .collect(),
        default_modules: !args.no_default_modules,
        programs: args
            .program
            .into_iter()
            .map(|src| Program { src, dest: None })
            .collect(),
        files,
        sysroot: args.sysroot,
    };
    let built = build(&spec).context("building the initramfs")?;
    for note in &built.report.notes {
        eprintln!("drover-initramfs: warning: {note}");
    }
    write_atomically(&output, &built.gzip)
        .with_context(|| format!("writing {}", output.display()))?;
    // The price of the modules: the same build without them.
    let bare = build(&spec.without_modules()).context("building the initramfs without modules")?;
    println!("{}", built.report);
    println!(
        "initramfs without modules: {}",
        kib(bare.report.compressed_bytes)
    );
    println!("output: {}", output.display());
    Ok(())
}

fn modules_dir(args: &Args) -> Result<PathBuf> {
    let under_sysroot = |release: &str| args.sysroot.join("lib/modules").join(release);
    Ok(match (&args.kernel_release, &args.modules_dir) {
        (Some(_), Some(_)) => bail!("give --kernel-release or --modules-dir, not both"),
        (Some(release), None) => under_sysroot(release),
        (None, Some(dir)) => dir.clone(),
        (None, None) => {
            under_sysroot(&release::default_release(&args.sysroot).context("choosing a kernel")?)
        }
    })
}

fn release_of(modules_dir: &Path) -> Result<&str> {
    modules_dir
        .file_name()
        .and_then(|name| name.to_str())
        .with_context(|| {
            format!(
                "{}: no kernel release at the end of the path",
                modules_dir.display()
            )
        })
}

fn parse_file(spec: &str) -> Result<(String, PathBuf)> {
    match spec.split_once('=') {
        Some((dest, src)) if !dest.is_empty() && !src.is_empty() => {
            Ok((dest.to_owned(), src.into()))
        }
        _ => bail!("--file {spec:?}: want DEST=SRC"),
    }
}

/// Writes a temporary file beside `path` and renames it over `path`, so a
/// server or TFTP daemon never serves a half-written initrd.
fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path
        .file_name()
        .context("the output path has no file name")?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(result?)
}
