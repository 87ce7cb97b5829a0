//! drover's node agent.
//!
//! On a node it is `/init` of the deploy initramfs ([`init::main`]); on a
//! workstation or in tests it runs as an ordinary process against a
//! file-backed disk ([`process::run`]). Both share the phases in [`run`].

pub mod chain;
pub mod console;
pub mod deploy;
pub mod disk;
pub mod early;
pub mod fetch;
pub mod image;
pub mod init;
pub mod kmod;
pub mod net;
pub mod power;
pub mod process;
pub mod report;
pub mod run;
pub mod torrent;

/// The agent's version, printed first on the console.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
