//! The deploy phases shared by PID-1 and process mode.

use std::path::PathBuf;

use anyhow::{bail, Result};
use kernel_cmdline::Options;

/// Where the image goes and what the node knows about itself.
#[derive(Debug, Clone)]
pub struct Target {
    /// The disk chosen by the caller (process mode); `None` means select it
    /// from `deploy.disk` on the node.
    pub disk: Option<PathBuf>,
}

/// Fetch, verify and write the image. No transport exists yet: say so
/// clearly instead of pretending.
pub fn deploy(opts: &Options, _target: &Target) -> Result<()> {
    bail!(
        "no deploy transport yet: deploy.mode={} is not implemented in agent {} (it lands with the deploy issue)",
        opts.mode,
        crate::VERSION
    )
}
