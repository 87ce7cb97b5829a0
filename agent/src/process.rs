//! Process mode: the agent as an ordinary program, taking the command line
//! from an argument or a file and writing to a given disk (a block device
//! or a plain file). The node's data path runs the same code, reports
//! included; only PID-1 duties (mounts, modules, network, power) are left
//! out.

use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use kernel_cmdline::{MacAddr, Options};

use crate::image::sign;
use crate::report::{self, Reporter};
use crate::{deploy, run};

/// What `drover-agent run` was asked to do.
pub struct Job {
    /// The kernel command line text to obey.
    pub cmdline: String,
    /// The target disk.
    pub disk: PathBuf,
    /// The trusted public key file (the initramfs's /etc/drover/trusted.pub).
    pub key: Option<PathBuf>,
    /// The node's MAC, for reports and the disk's UUIDs; else `BOOTIF=`.
    pub mac: Option<MacAddr>,
    /// How reports are sent.
    pub report: report::Settings,
    /// How long to keep trying to reach a server for the manifest.
    pub patience: std::time::Duration,
}

/// Run the deploy phases as PID 1 would: print an error once, report it,
/// and say how the process should exit: success, 1 for a failed deploy, 2
/// for a bad command line (as for bad usage).
pub fn run(job: &Job) -> ExitCode {
    let opts = match kernel_cmdline::parse(&job.cmdline) {
        Ok(o) => o,
        Err(e) => {
            log::error!("{:#}", anyhow::Error::from(e));
            return ExitCode::from(2);
        }
    };
    crate::console::set_level(opts.log);
    log::info!("options parsed: {}", opts.summary());
    let reporter = Reporter::new(&opts, job.mac.or(opts.bootif), job.report.clone());
    match deploy(job, &opts, &reporter) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            reporter.failure(&e);
            ExitCode::FAILURE
        }
    }
}

fn deploy(job: &Job, opts: &Options, reporter: &Reporter) -> Result<()> {
    let meta =
        fs::metadata(&job.disk).with_context(|| format!("target disk {}", job.disk.display()))?;
    if meta.is_dir() {
        bail!(
            "target disk {} is a directory; give a block device or an image file",
            job.disk.display()
        );
    }
    log::info!("target disk: {}", job.disk.display());
    let key = match &job.key {
        Some(k) => {
            Some(sign::read_public_key(k).with_context(|| format!("reading {}", k.display()))?)
        }
        None => None,
    };
    let env = deploy::Env {
        disk: Some(job.disk.clone()),
        root: "/".into(),
        key,
        mac: job.mac.or(opts.bootif),
        patience: job.patience,
    };
    run::deploy(opts, &env, reporter)?;
    Ok(())
}
