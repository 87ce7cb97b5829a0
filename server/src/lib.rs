//! drover's server.
//!
//! Today: the image store (`image import`/`list`/`show`/`verify`, signing
//! keys), per-MAC iPXE boot entries, and HTTP for the deploy kernel/initrd
//! and the images. Later: chain coordinator, tracker, fleet state in
//! SQLite. Each concern is one module; `main.rs` only dispatches.

pub mod boot;
pub mod byte_range;
pub mod cli;
pub mod config;
pub mod content_reader;
pub mod dir_tar;
pub mod dnsmasq;
pub mod http;
pub mod image_report;
pub mod image_routes;
pub mod image_verify;
pub mod import;
pub mod key_generate;
pub mod partition_spec;
pub mod size;
pub mod store;
pub mod version_order;
