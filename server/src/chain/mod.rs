//! Chain mode, server side: the coordinator and the head (the data plane
//! and the design are described in `drover_agent::chain`).
//!
//! - [`routes()`]: the coordinator's HTTP API (`/api/v1/chain/…`), an axum
//!   router to merge into the server's.
//! - [`serve_head()`]: the head's TCP listener, serving chunks from the
//!   image store's payload files.
//! - [`Coordinator`]: sessions keyed by `NAME@VERSION` (spawn its
//!   [`Coordinator::run_ticker`] too); each session's
//!   shape and healing rules are pure code in [`topology`].
//! - [`ChainAuth`] and [`ImageLookup`]: what the coordinator needs from
//!   the rest of the server (node tokens, the store), as traits.
//!
//! Wiring (not done here): build a [`Coordinator`] with the head's public
//! address, merge [`routes()`] into `http::router`, and spawn
//! [`serve_head()`] on its own port beside `axum::serve`.

pub mod coordinator;
pub mod head;
pub mod lookup;
pub mod routes;
pub mod topology;

pub use coordinator::{ApiError, Coordinator, CoordinatorConfig};
pub use head::{serve_head, HeadConfig};
pub use lookup::{ChainAuth, FnAuth, ImageInfo, ImageLookup, StaticTokens, StoreImages};
pub use routes::routes;
pub use topology::{SessionConfig, Upstream};

/// The head's default TCP port (the HTTP API stays on the server's port).
pub const DEFAULT_HEAD_PORT: u16 = 7150;
