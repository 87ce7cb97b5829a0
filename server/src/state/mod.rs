//! The fleet's state: node records and the rules by which they change
//! ([`node`], pure), stored in SQLite ([`db`]).

pub mod db;
pub mod node;
