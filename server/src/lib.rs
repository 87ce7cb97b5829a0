//! drover's server.
//!
//! Today: the image store (`image import`/`list`/`show`/`verify`, signing
//! keys); the fleet's state in SQLite (nodes, their deployments, events);
//! per-MAC iPXE/PXELINUX boot entries that deploy a node or send it to its
//! disk; node reports, the admin API and `/metrics` over HTTP; and the
//! `node`/`deploy`/`status` commands that talk to a running server; chain
//! mode's coordinator and head ([`chain`]); torrent mode's foundations:
//! each image's `payload.torrent` ([`torrent_file`]) and the tracker
//! ([`tracker`]) (the seeder and the agent's peer come next). Each concern
//! is one module; `main.rs` only dispatches.

pub mod admin_client;
pub mod admin_routes;
pub mod api;
pub mod boot;
pub mod byte_range;
pub mod chain;
pub mod cli;
pub mod clock;
pub mod config;
pub mod content_reader;
pub mod dir_tar;
pub mod dnsmasq;
pub mod fleet;
pub mod fleet_text;
pub mod http;
pub mod image_report;
pub mod image_routes;
pub mod image_verify;
pub mod import;
pub mod key_generate;
pub mod metrics;
pub mod partition_spec;
pub mod report_routes;
pub mod seeder;
pub mod size;
pub mod state;
pub mod status;
pub mod store;
#[cfg(test)]
mod test_fixture;
pub mod tokens;
pub mod torrent_file;
pub mod tracker;
pub mod version_order;
