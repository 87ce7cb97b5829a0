//! Command-line interface: argh structs and the dispatch `main` calls.

use std::path::PathBuf;

use anyhow::Context as _;
use argh::FromArgs;

use crate::config::Config;

/// drover server: boot entries and images for network deploys.
#[derive(FromArgs, Debug)]
pub struct Args {
    #[argh(subcommand)]
    pub command: Command,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    Serve(ServeArgs),
}

/// Serve boot entries (/boot/MAC.ipxe) and the kernel/initrd over HTTP.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "serve")]
pub struct ServeArgs {
    /// the TOML config file
    #[argh(option)]
    pub config: PathBuf,
}

/// Run a parsed command line to completion.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Serve(serve) => {
            let config = Config::load(&serve.config)?;
            tokio::runtime::Runtime::new()
                .context("starting the async runtime")?
                .block_on(crate::http::serve(config))
        }
    }
}
