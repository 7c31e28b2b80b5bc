//! The embedded store: one redb file. Every commit is one write transaction, synced to disk
//! before it returns. After an I/O error (a full disk) redb refuses every later transaction
//! until the database is opened again, so the store reopens it on the next call: a failed
//! commit changes nothing, and the one after it works once there is room again.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use redb::{Database, ReadableTable, TableDefinition, TableHandle};

use crate::{check_names, Change, Op, Revision, Snapshot, Store, StoreError, Watchers};

/// The revision lives here, under [`REVISION_KEY`].
const META: TableDefinition<&str, u64> = TableDefinition::new("corral.meta");
const REVISION_KEY: &str = "revision";

pub struct RedbStore {
    path: PathBuf,
    location: String,
    /// `None` after an I/O error: reopened by the next call.
    db: Mutex<Option<Database>>,
    watchers: Watchers,
}

fn table(name: &str) -> TableDefinition<'_, &'static str, &'static [u8]> {
    TableDefinition::new(name)
}

impl RedbStore {
    /// Opens (or creates) the store at `path`, creating its directory.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        let store = RedbStore {
            path: path.to_path_buf(),
            location: path.display().to_string(),
            db: Mutex::new(None),
            watchers: Watchers::default(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| store.err(e))?;
        }
        *store.db.lock().unwrap_or_else(|p| p.into_inner()) = Some(store.open_db()?);
        Ok(store)
    }

    fn open_db(&self) -> Result<Database, StoreError> {
        let db = Database::create(&self.path).map_err(|e| self.err(e))?;
        let tx = db.begin_write().map_err(|e| self.err(e))?;
        tx.open_table(META).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(db)
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Unavailable { location: self.location.clone(), message: e.to_string() }
    }

    /// Runs `f` on the database, opening it again first if an earlier call failed. A failure
    /// drops the handle, so the next call starts from a fresh one (redb refuses all work
    /// after an I/O error until then).
    fn with_db<T>(&self, f: impl FnOnce(&Database) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut guard = self.db.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(self.open_db()?);
        }
        let result = f(guard.as_ref().expect("opened above"));
        if matches!(result, Err(StoreError::Unavailable { .. })) {
            tracing::warn!(store = %self.location, "state store failed; it will be opened again");
            *guard = None;
        }
        result
    }
}

fn revision_of(t: &impl ReadableTable<&'static str, u64>) -> Result<Revision, redb::StorageError> {
    Ok(t.get(REVISION_KEY)?.map(|v| v.value()).unwrap_or(0))
}

impl Store for RedbStore {
    fn load(&self, tables: &[&str]) -> Result<Snapshot, StoreError> {
        self.with_db(|db| {
            let tx = db.begin_read().map_err(|e| self.err(e))?;
            let revision = revision_of(&tx.open_table(META).map_err(|e| self.err(e))?).map_err(|e| self.err(e))?;
            let mut snapshot = Snapshot { revision, tables: Default::default() };
            let present: Vec<String> =
                tx.list_tables().map_err(|e| self.err(e))?.map(|h| h.name().to_string()).collect();
            for name in tables {
                if !present.iter().any(|p| p == name) {
                    continue;
                }
                let t = tx.open_table(table(name)).map_err(|e| self.err(e))?;
                let records = snapshot.tables.entry(name.to_string()).or_default();
                for row in t.iter().map_err(|e| self.err(e))? {
                    let (k, v) = row.map_err(|e| self.err(e))?;
                    records.insert(k.value().to_string(), v.value().to_vec());
                }
            }
            snapshot.tables.retain(|_, r| !r.is_empty());
            Ok(snapshot)
        })
    }

    fn get(&self, name: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.with_db(|db| {
            let tx = db.begin_read().map_err(|e| self.err(e))?;
            let t = match tx.open_table(table(name)) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(self.err(e)),
            };
            Ok(t.get(key).map_err(|e| self.err(e))?.map(|v| v.value().to_vec()))
        })
    }

    fn revision(&self) -> Result<Revision, StoreError> {
        self.with_db(|db| {
            let tx = db.begin_read().map_err(|e| self.err(e))?;
            revision_of(&tx.open_table(META).map_err(|e| self.err(e))?).map_err(|e| self.err(e))
        })
    }

    fn commit(&self, expected: Revision, ops: &[Op]) -> Result<Revision, StoreError> {
        check_names(&self.location, ops)?;
        self.with_db(|db| {
            let tx = db.begin_write().map_err(|e| self.err(e))?;
            let revision = {
                let mut meta = tx.open_table(META).map_err(|e| self.err(e))?;
                let actual = revision_of(&meta).map_err(|e| self.err(e))?;
                if actual != expected {
                    return Err(StoreError::Conflict { location: self.location.clone(), expected, actual });
                }
                if ops.is_empty() {
                    return Ok(expected);
                }
                meta.insert(REVISION_KEY, expected + 1).map_err(|e| self.err(e))?;
                expected + 1
            };
            for op in ops {
                let mut t = tx.open_table(table(op.table())).map_err(|e| self.err(e))?;
                match op {
                    Op::Put { key, value, .. } => {
                        t.insert(key.as_str(), value.as_slice()).map_err(|e| self.err(e))?;
                    }
                    Op::Delete { key, .. } => {
                        t.remove(key.as_str()).map_err(|e| self.err(e))?;
                    }
                }
            }
            tx.commit().map_err(|e| self.err(e))?;
            // Still under the database lock, so watchers see commits in order.
            self.watchers.send(&Change { revision, ops: ops.to_vec() });
            Ok(revision)
        })
    }

    fn watch(&self) -> std::sync::mpsc::Receiver<Change> {
        self.watchers.add()
    }
}
