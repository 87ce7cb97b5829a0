//! Torrent mode's foundations (`deploy.mode=torrent`, not wired into the
//! deploy path yet): BitTorrent v1 as pure codecs, shared by the agent
//! (a peer) and the server (tracker and first seeder).
//!
//! - [`bencode`]: the bounded decoder and the encoder everything else
//!   uses;
//! - [`metainfo`]: the payload's `.torrent` (build, parse, info-hash);
//! - [`wire`]: the peer wire protocol (BEP 3), an incremental decoder with
//!   hard bounds, checked against the torrent;
//! - [`tracker`]: the HTTP tracker protocol (BEP 3 announce, BEP 23
//!   compact peers, scrape), requests and answers for both ends.
//!
//! Trust: a piece is checked against the torrent's SHA-1 before use, and
//! the chunks it completes against the signed manifest's SHA-256, so
//! neither a peer nor an unsigned `.torrent` can get a wrong byte written;
//! at worst they waste time, and the peer that sent a bad piece is dropped.

pub mod bencode;
pub mod metainfo;
pub mod tracker;
pub mod wire;
