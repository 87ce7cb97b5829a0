//! drover's server.
//!
//! Today: per-MAC iPXE boot entries and the deploy kernel/initrd over HTTP.
//! Later: image store, signed manifests, chain coordinator, tracker, fleet
//! state in SQLite. Each concern is one module; `main.rs` only dispatches.

pub mod boot;
pub mod cli;
pub mod config;
pub mod http;
