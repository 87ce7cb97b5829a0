//! The fleet's SQLite database: schema, and the few queries the server
//! makes. Every change happens in one transaction ([`Db::write`]), so a
//! node and its events never disagree, and an admin deploy to many nodes
//! is all or nothing.
//!
//! One connection behind a mutex: every query is a handful of rows, and
//! SQLite serialises writers anyway. WAL lets `sqlite3` read the file while
//! the server runs.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use rusqlite::{params, Connection, OptionalExtension as _, Row, TransactionBehavior};

use super::node::{Event, NewEvent, Node};

/// The database file in the state directory.
pub const DB_FILE: &str = "drover.sqlite";

/// Events kept per node: its recent history, bounded however often it boots.
pub const MAX_EVENTS_PER_NODE: i64 = 1000;

/// `PRAGMA user_version` of the schema this code creates and reads.
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE nodes (
    mac             TEXT PRIMARY KEY NOT NULL,
    name            TEXT UNIQUE,
    state           TEXT NOT NULL,
    image           TEXT,
    wipe            INTEGER NOT NULL DEFAULT 0,
    mode            TEXT,
    token           TEXT,
    phase           TEXT,
    bytes_done      INTEGER NOT NULL DEFAULT 0,
    bytes_total     INTEGER NOT NULL DEFAULT 0,
    rate            REAL NOT NULL DEFAULT 0,
    progress_ms     INTEGER,
    deployed_image  TEXT,
    deployed_sha256 TEXT,
    deployed_ms     INTEGER,
    last_error      TEXT,
    created_ms      INTEGER NOT NULL,
    updated_ms      INTEGER NOT NULL
) STRICT;
CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    mac     TEXT NOT NULL REFERENCES nodes(mac) ON DELETE CASCADE,
    at_ms   INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    phase   TEXT,
    message TEXT NOT NULL
) STRICT;
CREATE INDEX events_by_node ON events(mac, id);
";

const NODE_COLUMNS: &str =
    "mac, name, state, image, wipe, mode, phase, bytes_done, bytes_total, rate, \
     progress_ms, deployed_image, deployed_sha256, deployed_ms, last_error, created_ms, updated_ms";

/// The database.
#[derive(Debug)]
pub struct Db {
    conn: Mutex<Connection>,
}

/// A transaction, with the queries.
pub struct Tx<'a>(rusqlite::Transaction<'a>);

impl Db {
    /// Open (creating if missing) the database at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Db> {
        let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        Db::init(conn).with_context(|| format!("preparing {}", path.display()))
    }

    /// A private database in memory, for tests.
    #[cfg(test)]
    pub fn in_memory() -> Db {
        Db::init(Connection::open_in_memory().unwrap()).unwrap()
    }

    fn init(mut conn: Connection) -> anyhow::Result<Db> {
        // Another process (sqlite3, a second server) may hold the lock briefly.
        conn.busy_timeout(Duration::from_secs(5))?;
        // WAL: readers never block the writer. NORMAL: a commit is durable
        // once the WAL is checkpointed; a power cut loses at most the last
        // few reports, never consistency.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        match version {
            0 => {
                let tx = conn.transaction()?;
                tx.execute_batch(SCHEMA)?;
                tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
                tx.commit()?;
            }
            // Version 1 had no per-deployment mode (the config's applied).
            1 => {
                let tx = conn.transaction()?;
                tx.execute_batch("ALTER TABLE nodes ADD COLUMN mode TEXT;")?;
                tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
                tx.commit()?;
            }
            SCHEMA_VERSION => {}
            newer => anyhow::bail!(
                "schema version {newer} was written by a newer drover-server; this one reads version {SCHEMA_VERSION}"
            ),
        }
        Ok(Db {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic mid-transaction rolled it back (Transaction's drop): the
        // connection itself is fine.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` in a write transaction, committed when `f` returns `Ok`.
    pub fn write<T, E: From<rusqlite::Error>>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.lock();
        // IMMEDIATE: take the write lock now, so a read-then-write cannot
        // fail halfway on another process's lock.
        let tx = Tx(conn.transaction_with_behavior(TransactionBehavior::Immediate)?);
        let out = f(&tx)?;
        tx.0.commit()?;
        Ok(out)
    }

    /// Run `f` in a read transaction: one consistent view.
    pub fn read<T, E: From<rusqlite::Error>>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.lock();
        let tx = Tx(conn.transaction()?);
        f(&tx)
    }
}

/// SQLite integers are i64: byte counts beyond that (no disk is) saturate.
fn to_sql_u64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn from_sql_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn node_from_row(row: &Row<'_>) -> rusqlite::Result<Node> {
    let state: String = row.get("state")?;
    Ok(Node {
        mac: row.get("mac")?,
        name: row.get("name")?,
        state: state.parse().map_err(|e: String| {
            rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, e.into())
        })?,
        image: row.get("image")?,
        wipe: row.get("wipe")?,
        mode: row.get("mode")?,
        phase: row.get("phase")?,
        bytes_done: from_sql_u64(row.get("bytes_done")?),
        bytes_total: from_sql_u64(row.get("bytes_total")?),
        rate: row.get("rate")?,
        progress_ms: row.get("progress_ms")?,
        deployed_image: row.get("deployed_image")?,
        deployed_sha256: row.get("deployed_sha256")?,
        deployed_ms: row.get("deployed_ms")?,
        last_error: row.get("last_error")?,
        created_ms: row.get("created_ms")?,
        updated_ms: row.get("updated_ms")?,
    })
}

impl Tx<'_> {
    /// The node with this (canonical) MAC.
    pub fn node(&self, mac: &str) -> rusqlite::Result<Option<Node>> {
        self.0
            .query_row(
                &format!("SELECT {NODE_COLUMNS} FROM nodes WHERE mac = ?1"),
                [mac],
                node_from_row,
            )
            .optional()
    }

    /// The node with this name.
    pub fn node_named(&self, name: &str) -> rusqlite::Result<Option<Node>> {
        self.0
            .query_row(
                &format!("SELECT {NODE_COLUMNS} FROM nodes WHERE name = ?1"),
                [name],
                node_from_row,
            )
            .optional()
    }

    /// Every node, by name (unnamed ones last), then MAC.
    pub fn nodes(&self) -> rusqlite::Result<Vec<Node>> {
        let mut stmt = self.0.prepare(&format!(
            "SELECT {NODE_COLUMNS} FROM nodes ORDER BY name IS NULL, name, mac"
        ))?;
        let rows = stmt.query_map([], node_from_row)?;
        rows.collect()
    }

    /// The node's current report token, if it has one.
    pub fn token(&self, mac: &str) -> rusqlite::Result<Option<String>> {
        Ok(self
            .0
            .query_row("SELECT token FROM nodes WHERE mac = ?1", [mac], |r| {
                r.get::<_, Option<String>>(0)
            })
            .optional()?
            .flatten())
    }

    /// Add a new node.
    pub fn insert(&self, node: &Node) -> rusqlite::Result<()> {
        self.0.execute(
            "INSERT INTO nodes (mac, name, state, created_ms, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![node.mac, node.name, node.state.as_str(), node.created_ms, node.updated_ms],
        )?;
        self.update(node)
    }

    /// Store every field of an existing node (not its token).
    pub fn update(&self, n: &Node) -> rusqlite::Result<()> {
        self.0.execute(
            "UPDATE nodes SET name = ?2, state = ?3, image = ?4, wipe = ?5, phase = ?6, \
             bytes_done = ?7, bytes_total = ?8, rate = ?9, progress_ms = ?10, deployed_image = ?11, \
             deployed_sha256 = ?12, deployed_ms = ?13, last_error = ?14, updated_ms = ?15, \
             mode = ?16 WHERE mac = ?1",
            params![
                n.mac,
                n.name,
                n.state.as_str(),
                n.image,
                n.wipe,
                n.phase,
                to_sql_u64(n.bytes_done),
                to_sql_u64(n.bytes_total),
                n.rate,
                n.progress_ms,
                n.deployed_image,
                n.deployed_sha256,
                n.deployed_ms,
                n.last_error,
                n.updated_ms,
                n.mode,
            ],
        )?;
        Ok(())
    }

    /// Replace the node's report token.
    pub fn set_token(&self, mac: &str, token: &str) -> rusqlite::Result<()> {
        self.0
            .execute("UPDATE nodes SET token = ?2 WHERE mac = ?1", [mac, token])?;
        Ok(())
    }

    /// Remove a node and its events; whether it existed.
    pub fn delete(&self, mac: &str) -> rusqlite::Result<bool> {
        Ok(self.0.execute("DELETE FROM nodes WHERE mac = ?1", [mac])? > 0)
    }

    /// Record an event, dropping the node's oldest beyond
    /// [`MAX_EVENTS_PER_NODE`].
    pub fn add_event(&self, mac: &str, at_ms: i64, e: &NewEvent) -> rusqlite::Result<()> {
        self.0.execute(
            "INSERT INTO events (mac, at_ms, kind, phase, message) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![mac, at_ms, e.kind, e.phase, e.message],
        )?;
        self.0.execute(
            "DELETE FROM events WHERE mac = ?1 AND id <= \
             (SELECT id FROM events WHERE mac = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            params![mac, MAX_EVENTS_PER_NODE],
        )?;
        Ok(())
    }

    /// The node's last `limit` events, oldest first.
    pub fn events(&self, mac: &str, limit: i64) -> rusqlite::Result<Vec<Event>> {
        let mut stmt = self.0.prepare(
            "SELECT id, at_ms, kind, phase, message FROM \
             (SELECT * FROM events WHERE mac = ?1 ORDER BY id DESC LIMIT ?2) ORDER BY id",
        )?;
        let rows = stmt.query_map(params![mac, limit], |r| {
            Ok(Event {
                id: r.get(0)?,
                at_ms: r.get(1)?,
                kind: r.get(2)?,
                phase: r.get(3)?,
                message: r.get(4)?,
            })
        })?;
        rows.collect()
    }
}

#[cfg(test)]
mod tests {
    use kernel_cmdline::MacAddr;

    use super::super::node::{kind, NodeState};
    use super::*;

    const MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x01]);

    #[test]
    fn nodes_round_trip_with_tokens_and_events() {
        let db = Db::in_memory();
        let mut n = Node::new(MAC, Some("web1".into()), 10);
        n.assign(
            "demo@1.0".into(),
            true,
            Some(kernel_cmdline::Mode::Chain),
            20,
        );
        n.bytes_total = u64::MAX >> 1;
        n.bytes_done = 12;
        n.rate = 12.5;
        n.progress_ms = Some(30);
        db.write(|tx| {
            tx.insert(&n)?;
            tx.set_token(&n.mac, "t0k")?;
            tx.add_event(&n.mac, 20, &NewEvent::new(kind::ASSIGNED, "demo@1.0"))
        })
        .unwrap();
        let (got, named, token, all) = db
            .read(|tx| {
                Ok::<_, rusqlite::Error>((
                    tx.node(&n.mac)?,
                    tx.node_named("web1")?,
                    tx.token(&n.mac)?,
                    tx.nodes()?,
                ))
            })
            .unwrap();
        assert_eq!(got.as_ref(), Some(&n));
        assert_eq!(named.as_ref(), Some(&n));
        assert_eq!(token.as_deref(), Some("t0k"));
        assert_eq!(all, [n.clone()]);
        let events = db.read(|tx| tx.events(&n.mac, 10)).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].kind.as_str(), events[0].at_ms), ("assigned", 20));

        // Names are unique.
        let other = Node::new(MacAddr([2; 6]), Some("web1".into()), 10);
        assert!(db.write(|tx| tx.insert(&other)).is_err());
        // Deleting takes the events along.
        assert!(db.write(|tx| tx.delete(&n.mac)).unwrap());
        assert!(!db.write(|tx| tx.delete(&n.mac)).unwrap());
        assert_eq!(db.read(|tx| tx.events(&n.mac, 10)).unwrap(), []);
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let db = Db::in_memory();
        let n = Node::new(MAC, None, 10);
        let r: Result<(), rusqlite::Error> = db.write(|tx| {
            tx.insert(&n)?;
            tx.insert(&n)
        });
        assert!(r.is_err());
        assert_eq!(db.read(|tx| tx.nodes()).unwrap(), []);
    }

    #[test]
    fn events_are_bounded_per_node_and_listed_oldest_first() {
        let db = Db::in_memory();
        let a = Node::new(MAC, None, 0);
        let b = Node::new(MacAddr([2; 6]), None, 0);
        db.write(|tx| {
            tx.insert(&a)?;
            tx.insert(&b)?;
            tx.add_event(&b.mac, 0, &NewEvent::new(kind::BOOT, "b"))?;
            for i in 0..MAX_EVENTS_PER_NODE + 5 {
                tx.add_event(&a.mac, i, &NewEvent::new(kind::BOOT, format!("{i}")))?;
            }
            Ok::<_, rusqlite::Error>(())
        })
        .unwrap();
        let all = db.read(|tx| tx.events(&a.mac, 10_000)).unwrap();
        assert_eq!(all.len() as i64, MAX_EVENTS_PER_NODE);
        assert_eq!(all[0].message, "5");
        let last = db.read(|tx| tx.events(&a.mac, 3)).unwrap();
        let msgs: Vec<_> = last.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(msgs, ["1002", "1003", "1004"]);
        assert_eq!(db.read(|tx| tx.events(&b.mac, 10)).unwrap().len(), 1);
    }

    #[test]
    fn a_version_1_database_gains_the_mode_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        {
            let conn = Connection::open(&path).unwrap();
            // Version 1's nodes table: no `mode`.
            let v1 = SCHEMA.replace("    mode            TEXT,\n", "");
            assert_ne!(v1, SCHEMA);
            conn.execute_batch(&v1).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO nodes (mac, state, image, created_ms, updated_ms) \
                 VALUES ('52:54:00:12:34:01', 'pending', 'demo@1.0', 1, 2)",
                [],
            )
            .unwrap();
        }
        let db = Db::open(&path).unwrap();
        let n = db.read(|tx| tx.node("52:54:00:12:34:01")).unwrap().unwrap();
        assert_eq!((n.image.as_deref(), n.mode), (Some("demo@1.0"), None));
        let version: i64 = db
            .lock()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn file_database_keeps_state_and_refuses_newer_schemas() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let db = Db::open(&path).unwrap();
        db.write(|tx| tx.insert(&Node::new(MAC, None, 1))).unwrap();
        drop(db);
        let db = Db::open(&path).unwrap();
        let n = db.read(|tx| tx.node(&MAC.to_string())).unwrap().unwrap();
        assert_eq!(n.state, NodeState::Idle);
        let mode: String = db
            .lock()
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        db.lock().pragma_update(None, "user_version", 99).unwrap();
        drop(db);
        let e = format!("{:#}", Db::open(&path).unwrap_err());
        assert!(
            e.contains("schema version 99 was written by a newer drover-server"),
            "{e}"
        );
    }
}
