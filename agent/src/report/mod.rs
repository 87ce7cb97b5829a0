//! Telling the server how the deploy goes.
//!
//! [`protocol`] is the wire format, shared with the server.

pub mod protocol;

pub use protocol::{Phase, Report};
