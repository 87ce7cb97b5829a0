//! Torrent mode (`deploy.mode=torrent`): the node is a BitTorrent v1 peer
//! that writes while it downloads; the server is the tracker and the
//! first seed.
//!
//! Codecs (pure, fuzzed), shared by the agent and the server:
//! - [`bencode`]: the bounded decoder and the encoder everything else
//!   uses;
//! - [`metainfo`]: the payload's `.torrent` (build, parse, info-hash);
//! - [`wire`]: the peer wire protocol (BEP 3), an incremental decoder with
//!   hard bounds, checked against the torrent;
//! - [`tracker`]: the HTTP tracker protocol (BEP 3 announce, BEP 23
//!   compact peers, scrape), requests and answers for both ends.
//!
//! The peer:
//! - [`picker`]: which block to ask whom for (rarest first inside a window
//!   ahead of the disk; the server's seed spared);
//! - [`store`]: where verified pieces live for uploads (bounded memory on
//!   a node, the payload file on the server);
//! - [`swarm`]: connections, messages, time-outs, the tracker client;
//! - [`source`]: [`TorrentSource`], the swarm as the pipeline's chunk
//!   source, and the seeding after the disk is done;
//! - [`seeder`]: the server's first seed, every torrent on one port.
//!
//! Trust: a piece is checked against the torrent's SHA-1 before use, and
//! the chunks it completes against the signed manifest's SHA-256, so
//! neither a peer nor an unsigned `.torrent` can get a wrong byte written;
//! at worst they waste time, and the peer that sent a bad piece is dropped.

pub mod bencode;
pub mod bitfield;
pub mod metainfo;
pub mod picker;
pub mod seeder;
pub mod source;
pub mod store;
pub mod swarm;
pub mod tracker;
pub mod wire;

pub use source::{join, TorrentOptions, TorrentSource};
