//! Fetching from a drover server over HTTP.

pub mod client;
pub mod response;

pub use client::{is_transient, Client, Response, StatusError};
