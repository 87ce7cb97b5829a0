//! Telling the server how the deploy goes.
//!
//! [`protocol`] is the wire format, shared with the server; [`Reporter`]
//! sends it from a background thread; [`send`] is one POST and what its
//! answer means.

pub mod protocol;
mod reporter;
mod send;

pub use protocol::{Phase, Report};
pub use reporter::{Delivery, Reporter, Settings};
