//! The SQLite backend: one table `kv(tbl, key, value)`, WAL journal, full fsync.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::{Backend, ReadTx, StoreError, StoreResult, Table, WriteTx};

/// Bumped whenever the schema below changes; `open` migrates older files.
const SCHEMA_VERSION: i64 = 1;

pub struct SqliteBackend {
    // One connection: SQLite serializes writers anyway, and services read mostly from
    // their in-memory caches, so a pool would buy nothing but complexity.
    conn: Mutex<Connection>,
}

/// Creates the database file readable by its owner only; SQLite gives its WAL and shared
/// memory files the same permissions.
fn create_private(path: &Path) -> StoreResult<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(backend_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(backend_error)
}

fn backend_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl SqliteBackend {
    pub fn open(path: &Path) -> StoreResult<Self> {
        create_private(path)?;
        let conn = Connection::open(path).map_err(backend_error)?;
        // WAL lets readers proceed during a write; synchronous=FULL fsyncs the WAL at every
        // commit, so an acknowledged call survives a crash of the process or the machine.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(backend_error)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(backend_error)?;
        Self::init(conn)
    }

    pub fn in_memory() -> StoreResult<Self> {
        Self::init(Connection::open_in_memory().map_err(backend_error)?)
    }

    fn init(conn: Connection) -> StoreResult<Self> {
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(backend_error)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(backend_error)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Backend(format!(
                "the store was written by a newer kura (schema {version}, this build knows {SCHEMA_VERSION})"
            )));
        }
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS kv (
                tbl   TEXT NOT NULL,
                key   TEXT NOT NULL,
                value BLOB NOT NULL,
                PRIMARY KEY (tbl, key)
             ) WITHOUT ROWID;",
        )
        .map_err(backend_error)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(backend_error)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn connection(&self) -> StoreResult<std::sync::MutexGuard<'_, Connection>> {
        // A poisoned lock means a panic happened mid-call elsewhere; SQLite itself rolled
        // back the unfinished transaction, so the connection is still consistent.
        Ok(self
            .conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

impl Backend for SqliteBackend {
    fn read(&self, body: &mut dyn FnMut(&dyn ReadTx) -> StoreResult<()>) -> StoreResult<()> {
        let mut conn = self.connection()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(backend_error)?;
        body(&SqliteTx { tx: &tx })
        // Dropping a read transaction rolls it back, which is all a reader needs.
    }

    fn write(&self, body: &mut dyn FnMut(&mut dyn WriteTx) -> StoreResult<()>) -> StoreResult<()> {
        let mut conn = self.connection()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend_error)?;
        body(&mut SqliteTx { tx: &tx })?;
        tx.commit().map_err(backend_error)
    }
}

struct SqliteTx<'c> {
    tx: &'c rusqlite::Transaction<'c>,
}

/// The smallest string greater than every string starting with `prefix`, or `None` when
/// no upper bound is needed (empty prefix).
fn prefix_upper_bound(prefix: &str) -> Option<String> {
    if prefix.is_empty() {
        None
    } else {
        // U+10FFFF encodes as the greatest UTF-8 sequence, and SQLite compares TEXT with
        // memcmp under the default BINARY collation.
        Some(format!("{prefix}\u{10FFFF}"))
    }
}

impl ReadTx for SqliteTx<'_> {
    fn get(&self, table: Table, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.tx
            .prepare_cached("SELECT value FROM kv WHERE tbl = ?1 AND key = ?2")
            .map_err(backend_error)?
            .query_row(params![table.0, key], |row| row.get(0))
            .optional()
            .map_err(backend_error)
    }

    fn scan(
        &self,
        table: Table,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<(String, Vec<u8>)>> {
        let lower = match start_after {
            Some(after) if after >= prefix => after,
            _ => prefix,
        };
        let inclusive = start_after.is_none_or(|after| after < prefix);
        let upper = prefix_upper_bound(prefix);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = match (inclusive, upper.is_some()) {
            (true, true) => {
                "SELECT key, value FROM kv WHERE tbl = ?1 AND key >= ?2 AND key < ?3 ORDER BY key LIMIT ?4"
            }
            (false, true) => {
                "SELECT key, value FROM kv WHERE tbl = ?1 AND key > ?2 AND key < ?3 ORDER BY key LIMIT ?4"
            }
            (true, false) => {
                "SELECT key, value FROM kv WHERE tbl = ?1 AND key >= ?2 AND ?3 IS NULL ORDER BY key LIMIT ?4"
            }
            (false, false) => {
                "SELECT key, value FROM kv WHERE tbl = ?1 AND key > ?2 AND ?3 IS NULL ORDER BY key LIMIT ?4"
            }
        };
        let mut stmt = self.tx.prepare_cached(sql).map_err(backend_error)?;
        let rows = stmt
            .query_map(params![table.0, lower, upper, limit], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?))
            })
            .map_err(backend_error)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(backend_error)
    }
}

impl WriteTx for SqliteTx<'_> {
    fn put(&mut self, table: Table, key: &str, value: &[u8]) -> StoreResult<()> {
        self.tx
            .prepare_cached("INSERT OR REPLACE INTO kv (tbl, key, value) VALUES (?1, ?2, ?3)")
            .map_err(backend_error)?
            .execute(params![table.0, key, value])
            .map_err(backend_error)?;
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &str) -> StoreResult<bool> {
        let changed = self
            .tx
            .prepare_cached("DELETE FROM kv WHERE tbl = ?1 AND key = ?2")
            .map_err(backend_error)?
            .execute(params![table.0, key])
            .map_err(backend_error)?;
        Ok(changed > 0)
    }
}
