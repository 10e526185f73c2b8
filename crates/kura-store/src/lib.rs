//! kura's metadata store: one narrow, transactional key-value seam.
//!
//! Owns: durability of service metadata (keys, aliases, grants, users, databases...), the
//! transaction boundary of each API call, and the on-disk schema of the store itself.
//! Must not: hold business rules. Services define their own tables (a [`Table`] is a name)
//! and record types (serde JSON values); this crate only stores bytes under
//! `(table, key)` and scans them in key order.
//!
//! The seam is [`Backend`]; the shipped implementation is SQLite in WAL mode with
//! `synchronous=FULL`, so a call acknowledged after its write transaction committed
//! survives `kill -9` and power loss. A replicated store for several servers would be a
//! second `Backend`; nothing above this crate sees SQLite.

mod sqlite;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use sqlite::SqliteBackend;

/// The name of a table of records, declared by the service that owns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Table(pub &'static str);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage backend error: {0}")]
    Backend(String),
    #[error("record {table}/{key} cannot be decoded: {reason}")]
    Corrupt {
        table: &'static str,
        key: String,
        reason: String,
    },
    #[error("record {table}/{key} cannot be encoded: {reason}")]
    Encode {
        table: &'static str,
        key: String,
        reason: String,
    },
    /// The transaction's body returned an error; it was rolled back.
    #[error("transaction aborted")]
    Aborted,
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Read access inside a transaction.
pub trait ReadTx {
    fn get(&self, table: Table, key: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Records whose key starts with `prefix`, in ascending key order, after
    /// `start_after` if given, at most `limit` of them.
    fn scan(
        &self,
        table: Table,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<(String, Vec<u8>)>>;
}

/// Write access inside a transaction. Nothing is visible to others before commit.
pub trait WriteTx: ReadTx {
    fn put(&mut self, table: Table, key: &str, value: &[u8]) -> StoreResult<()>;
    /// Returns whether a record was deleted.
    fn delete(&mut self, table: Table, key: &str) -> StoreResult<bool>;
}

/// A storage engine. Each call runs `body` in one transaction; a write transaction is
/// durable when `write` returns `Ok`, and rolled back entirely when `body` fails.
pub trait Backend: Send + Sync + 'static {
    fn read(&self, body: &mut dyn FnMut(&dyn ReadTx) -> StoreResult<()>) -> StoreResult<()>;
    fn write(&self, body: &mut dyn FnMut(&mut dyn WriteTx) -> StoreResult<()>) -> StoreResult<()>;
}

/// The handle services use: typed JSON records over any [`Backend`].
pub struct Store {
    backend: Box<dyn Backend>,
}

impl Store {
    pub fn new(backend: impl Backend) -> Self {
        Self {
            backend: Box::new(backend),
        }
    }

    /// Opens (or creates) the SQLite store at `path`.
    pub fn open_sqlite(path: &std::path::Path) -> StoreResult<Self> {
        Ok(Self::new(SqliteBackend::open(path)?))
    }

    /// A store in memory only; for unit tests of services.
    pub fn in_memory() -> StoreResult<Self> {
        Ok(Self::new(SqliteBackend::in_memory()?))
    }

    /// Runs `body` in a read transaction.
    pub fn read<T, E>(&self, body: impl FnOnce(&Reader<'_>) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let mut body = Some(body);
        let mut outcome: Option<Result<T, E>> = None;
        let result = self.backend.read(&mut |tx| {
            let Some(body) = body.take() else {
                return Err(StoreError::Aborted);
            };
            let value = body(&Reader { tx });
            let failed = value.is_err();
            outcome = Some(value);
            if failed {
                Err(StoreError::Aborted)
            } else {
                Ok(())
            }
        });
        finish(result, outcome)
    }

    /// Runs `body` in a write transaction; commits (durably) if it returns `Ok`.
    pub fn write<T, E>(&self, body: impl FnOnce(&mut Writer<'_>) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let mut body = Some(body);
        let mut outcome: Option<Result<T, E>> = None;
        let result = self.backend.write(&mut |tx| {
            let Some(body) = body.take() else {
                return Err(StoreError::Aborted);
            };
            let value = body(&mut Writer { tx });
            let failed = value.is_err();
            outcome = Some(value);
            if failed {
                Err(StoreError::Aborted)
            } else {
                Ok(())
            }
        });
        finish(result, outcome)
    }
}

/// Combines the backend's result with the body's own: the body's error wins, then a
/// backend failure (e.g. the commit itself failed), then the body's value.
fn finish<T, E: From<StoreError>>(
    backend_result: StoreResult<()>,
    outcome: Option<Result<T, E>>,
) -> Result<T, E> {
    match (backend_result, outcome) {
        (_, Some(Err(e))) => Err(e),
        (Err(e), _) => Err(E::from(e)),
        (Ok(()), Some(Ok(value))) => Ok(value),
        (Ok(()), None) => Err(E::from(StoreError::Aborted)),
    }
}

/// Typed read access to one transaction.
pub struct Reader<'t> {
    tx: &'t dyn ReadTx,
}

/// Typed read-write access to one transaction.
pub struct Writer<'t> {
    tx: &'t mut dyn WriteTx,
}

fn decode<T: DeserializeOwned>(table: Table, key: &str, bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        table: table.0,
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

macro_rules! typed_reads {
    ($ty:ident) => {
        impl $ty<'_> {
            /// The record at `key`, if any.
            pub fn get<T: DeserializeOwned>(
                &self,
                table: Table,
                key: &str,
            ) -> StoreResult<Option<T>> {
                match self.tx.get(table, key)? {
                    Some(bytes) => decode(table, key, &bytes).map(Some),
                    None => Ok(None),
                }
            }

            /// Records whose key starts with `prefix`, in key order, after `start_after`.
            pub fn scan<T: DeserializeOwned>(
                &self,
                table: Table,
                prefix: &str,
                start_after: Option<&str>,
                limit: usize,
            ) -> StoreResult<Vec<(String, T)>> {
                self.tx
                    .scan(table, prefix, start_after, limit)?
                    .into_iter()
                    .map(|(key, bytes)| decode(table, &key, &bytes).map(|value| (key, value)))
                    .collect()
            }

            /// Every record whose key starts with `prefix`.
            pub fn scan_all<T: DeserializeOwned>(
                &self,
                table: Table,
                prefix: &str,
            ) -> StoreResult<Vec<(String, T)>> {
                self.scan(table, prefix, None, usize::MAX)
            }
        }
    };
}

typed_reads!(Reader);
typed_reads!(Writer);

impl Writer<'_> {
    pub fn put<T: Serialize>(&mut self, table: Table, key: &str, value: &T) -> StoreResult<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Encode {
            table: table.0,
            key: key.to_owned(),
            reason: e.to_string(),
        })?;
        self.tx.put(table, key, &bytes)
    }

    pub fn delete(&mut self, table: Table, key: &str) -> StoreResult<bool> {
        self.tx.delete(table, key)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const T: Table = Table("things");
    const OTHER: Table = Table("other");

    #[derive(Debug, PartialEq)]
    enum TestError {
        Store,
        Refused,
    }

    impl From<StoreError> for TestError {
        fn from(_: StoreError) -> Self {
            TestError::Store
        }
    }

    /// The conformance suite every backend must pass.
    pub(crate) fn conformance(store: &Store) {
        store
            .write(|w| {
                w.put(T, "a/1", &1u32)?;
                w.put(T, "a/2", &2u32)?;
                w.put(T, "b/1", &3u32)?;
                w.put(OTHER, "a/1", &9u32)?;
                Ok::<_, TestError>(())
            })
            .unwrap();

        let got: Option<u32> = store
            .read(|r| r.get(T, "a/2").map_err(TestError::from))
            .unwrap();
        assert_eq!(got, Some(2));

        let scanned: Vec<(String, u32)> = store
            .read(|r| r.scan_all(T, "a/").map_err(TestError::from))
            .unwrap();
        assert_eq!(scanned, vec![("a/1".into(), 1), ("a/2".into(), 2)]);

        let page: Vec<(String, u32)> = store
            .read(|r| r.scan(T, "", Some("a/1"), 1).map_err(TestError::from))
            .unwrap();
        assert_eq!(page, vec![("a/2".into(), 2)]);

        // A failing body rolls back everything it wrote.
        let refused = store.write(|w| {
            w.put(T, "a/3", &3u32)?;
            w.delete(T, "a/1")?;
            Err::<(), _>(TestError::Refused)
        });
        assert_eq!(refused, Err(TestError::Refused));
        let after: Vec<(String, u32)> = store
            .read(|r| r.scan_all(T, "a/").map_err(TestError::from))
            .unwrap();
        assert_eq!(after.len(), 2);

        let deleted = store
            .write(|w| w.delete(T, "a/1").map_err(TestError::from))
            .unwrap();
        assert!(deleted);
        let deleted_again = store
            .write(|w| w.delete(T, "a/1").map_err(TestError::from))
            .unwrap();
        assert!(!deleted_again);

        // Records of another type read back as a decode error, not a panic.
        store
            .write(|w| w.put(T, "s", &"text").map_err(TestError::from))
            .unwrap();
        let wrong: Result<Option<u32>, _> = store.read(|r| r.get(T, "s").map_err(TestError::from));
        assert_eq!(wrong, Err(TestError::Store));
    }

    #[test]
    fn sqlite_in_memory_passes_conformance() {
        conformance(&Store::in_memory().unwrap());
    }

    #[test]
    fn sqlite_file_passes_conformance_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        conformance(&Store::open_sqlite(&path).unwrap());
        let reopened = Store::open_sqlite(&path).unwrap();
        let got: Option<u32> = reopened
            .read(|r| r.get(T, "a/2").map_err(TestError::from))
            .unwrap();
        assert_eq!(got, Some(2));
    }
}
