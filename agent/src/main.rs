//! `drover-agent`: `/init` of the deploy initramfs, or a normal command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;
use drover_agent::{console, init, process, report};
use kernel_cmdline::MacAddr;

/// drover's node agent. As PID 1 (the initramfs /init) it reads its options
/// from /proc/cmdline and deploys this machine; as a command it runs the same
/// data path against a disk or image file you name.
#[derive(FromArgs)]
struct Cli {
    #[argh(subcommand)]
    cmd: Cmd,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Cmd {
    Run(Run),
}

/// deploy to DISK as the given kernel command line says (process mode)
#[derive(FromArgs)]
#[argh(subcommand, name = "run")]
struct Run {
    /// the kernel command line text, e.g. "deploy.server=http://10.0.0.1 deploy.image=demo"
    #[argh(option)]
    cmdline: Option<String>,
    /// read the command line from this file (e.g. /proc/cmdline)
    #[argh(option)]
    cmdline_file: Option<PathBuf>,
    /// the target: a block device or a disk image file
    #[argh(option)]
    disk: PathBuf,
    /// the trusted image-signing public key (64 hex digits in a file)
    #[argh(option)]
    key: Option<PathBuf>,
    /// this node's MAC (aa:bb:cc:dd:ee:ff), for reports to the server and
    /// the disk's UUIDs; default: BOOTIF= from the command line
    #[argh(option)]
    mac: Option<MacAddr>,
    /// how long the success or failure report is retried, in seconds
    /// (default 60)
    #[argh(option, default = "60")]
    report_deadline: u64,
    /// how long to keep trying when no server can be reached for the
    /// manifest, in seconds (default 60, as on a node)
    #[argh(option, default = "60")]
    server_patience: u64,
}

fn main() -> ExitCode {
    // The kernel passes unknown bare words of its command line to init as
    // arguments: as PID 1, arguments mean nothing.
    if std::process::id() == 1 {
        init::main();
    }
    let cli: Cli = argh::from_env();
    console::init();
    let Cmd::Run(r) = cli.cmd;
    let cmdline = match (r.cmdline, r.cmdline_file) {
        (Some(c), None) => c,
        (None, Some(f)) => match std::fs::read_to_string(&f) {
            Ok(c) => c,
            Err(e) => {
                log::error!("reading {}: {e}", f.display());
                return ExitCode::from(2);
            }
        },
        _ => {
            log::error!("give exactly one of --cmdline and --cmdline-file");
            return ExitCode::from(2);
        }
    };
    process::run(&process::Job {
        cmdline,
        disk: r.disk,
        key: r.key,
        mac: r.mac,
        patience: Duration::from_secs(r.server_patience),
        report: report::Settings {
            deadline: Duration::from_secs(r.report_deadline),
            ..report::Settings::default()
        },
    })
}
