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
//! - [`session_text`]: a session as the `chain status` command prints it.
//!
//! Wiring (`crate::http`): the server builds a [`Coordinator`] over its
//! fleet (node tokens, failures recorded) when it has a store and a head
//! address (`[chain]` in the config), merges [`routes()`], and spawns
//! [`serve_head()`] on its own port beside `axum::serve`.

pub mod coordinator;
pub mod head;
pub mod lookup;
pub mod routes;
pub mod session_text;
pub mod topology;

pub use coordinator::{ApiError, Coordinator, CoordinatorConfig};
pub use head::{serve_head, HeadConfig};
pub use lookup::{ChainAuth, FnAuth, ImageInfo, ImageLookup, StaticTokens, StoreImages};
pub use routes::routes;
pub use topology::{SessionConfig, Upstream};

/// The head's default TCP port (the HTTP API stays on the server's port).
pub const DEFAULT_HEAD_PORT: u16 = 7150;
