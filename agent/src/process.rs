//! Process mode: the agent as an ordinary program, taking the command line
//! from an argument or a file and writing to a given disk (a block device
//! or a plain file). The node's data path runs the same code; only PID-1
//! duties (mounts, modules, network, power) are left out.

use std::fs;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::image::sign;
use crate::{deploy, run};

/// What `drover-agent run` was asked to do.
pub struct Job {
    /// The kernel command line text to obey.
    pub cmdline: String,
    /// The target disk.
    pub disk: PathBuf,
    /// The trusted public key file (the initramfs's /etc/drover/trusted.pub).
    pub key: Option<PathBuf>,
}

/// Run the deploy phases; the error is returned for the caller to print.
pub fn run(job: &Job) -> Result<()> {
    let opts = kernel_cmdline::parse(&job.cmdline)?;
    crate::console::set_level(opts.log);
    log::info!("options parsed: {}", opts.summary());
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
        mac: opts.bootif,
    };
    run::deploy(&opts, &env)?;
    Ok(())
}
