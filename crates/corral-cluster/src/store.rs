//! The master's durable state: an embedded redb database. Every acknowledged change is
//! committed before the API answers, so a master restarted after `kill -9` recovers it.
//! Values are JSON records (a persistence format: fields may be added, never renamed).

use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition, TableHandle};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub const AGENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("agents");
pub const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
pub const ROLES: TableDefinition<&str, &[u8]> = TableDefinition::new("roles");
/// Services: app id to its current definition and version list.
pub const APPS: TableDefinition<&str, &[u8]> = TableDefinition::new("apps");
/// `"{app id} {version}"` to that version's definition.
pub const APP_VERSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("app_versions");
pub const DEPLOYMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("deployments");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store {path}: {message}")]
    Db { path: String, message: String },
    #[error("state store record {table}/{key} is unreadable: {message}")]
    Corrupt { table: String, key: String, message: String },
}

type Table = TableDefinition<'static, &'static str, &'static [u8]>;

pub struct Store {
    db: Database,
    path: String,
    /// Writes held back while a batch is open (see [`Store::begin`]), and the nesting depth.
    batch: std::cell::RefCell<(usize, Vec<(Table, String, Option<Vec<u8>>)>)>,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let p = path.display().to_string();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Db { path: p.clone(), message: e.to_string() })?;
        }
        let db = Database::create(path).map_err(|e| StoreError::Db { path: p.clone(), message: e.to_string() })?;
        let store = Store { db, path: p, batch: Default::default() };
        // Make sure every table exists, so reads of a new store find them empty.
        let tx = store.db.begin_write().map_err(|e| store.err(e))?;
        for t in [AGENTS, TASKS, ROLES, APPS, APP_VERSIONS, DEPLOYMENTS] {
            tx.open_table(t).map_err(|e| store.err(e))?;
        }
        tx.commit().map_err(|e| store.err(e))?;
        Ok(store)
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Db { path: self.path.clone(), message: e.to_string() }
    }

    /// Opens a batch: writes until the matching [`Store::commit`] go into one transaction
    /// (one sync to disk instead of one per record). Batches nest; reads see held writes.
    pub fn begin(&self) {
        self.batch.borrow_mut().0 += 1;
    }

    /// Closes a batch; the outermost one commits what it held.
    pub fn commit(&self) -> Result<(), StoreError> {
        let held = {
            let mut b = self.batch.borrow_mut();
            b.0 = b.0.saturating_sub(1);
            if b.0 > 0 {
                return Ok(());
            }
            std::mem::take(&mut b.1)
        };
        self.apply(&held)
    }

    /// Writes (or with `None`, deletes) records in one transaction (or into the open batch).
    pub fn write<T: Serialize>(&self, table: Table, records: &[(&str, Option<&T>)]) -> Result<(), StoreError> {
        let rows: Vec<(Table, String, Option<Vec<u8>>)> = records
            .iter()
            .map(|(k, v)| (table, k.to_string(), v.map(|v| serde_json::to_vec(v).expect("records serialize"))))
            .collect();
        let mut b = self.batch.borrow_mut();
        if b.0 > 0 {
            b.1.extend(rows);
            return Ok(());
        }
        drop(b);
        self.apply(&rows)
    }

    fn apply(&self, rows: &[(Table, String, Option<Vec<u8>>)]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        for (table, key, value) in rows {
            let mut t = tx.open_table(*table).map_err(|e| self.err(e))?;
            match value {
                Some(bytes) => {
                    t.insert(key.as_str(), bytes.as_slice()).map_err(|e| self.err(e))?;
                }
                None => {
                    t.remove(key.as_str()).map_err(|e| self.err(e))?;
                }
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    pub fn put<T: Serialize>(&self, table: Table, key: &str, value: &T) -> Result<(), StoreError> {
        self.write(table, &[(key, Some(value))])
    }

    pub fn delete(&self, table: Table, key: &str) -> Result<(), StoreError> {
        self.write::<()>(table, &[(key, None)])
    }

    pub fn get<T: DeserializeOwned>(&self, table: Table, key: &str) -> Result<Option<T>, StoreError> {
        let corrupt = |e: serde_json::Error| StoreError::Corrupt {
            table: table.name().to_string(),
            key: key.to_string(),
            message: e.to_string(),
        };
        let held = self.batch.borrow().1.iter().rev().find(|(t, k, _)| t.name() == table.name() && k == key).cloned();
        if let Some((_, _, value)) = held {
            return value.map(|v| serde_json::from_slice(&v).map_err(corrupt)).transpose();
        }
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(table).map_err(|e| self.err(e))?;
        let Some(v) = t.get(key).map_err(|e| self.err(e))? else { return Ok(None) };
        serde_json::from_slice(v.value()).map(Some).map_err(corrupt)
    }

    pub fn all<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<(String, T)>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(table).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            let value = serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt {
                table: table.name().to_string(),
                key: k.value().to_string(),
                message: e.to_string(),
            })?;
            out.push((k.value().to_string(), value));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopening() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state.redb");
        {
            let s = Store::open(&path).unwrap();
            s.put(TASKS, "t1", &serde_json::json!({"state": "RUNNING"})).unwrap();
            s.put(TASKS, "t2", &serde_json::json!({"state": "STAGING"})).unwrap();
            s.write::<serde_json::Value>(TASKS, &[("t2", None)]).unwrap();
        }
        let s = Store::open(&path).unwrap();
        let all: Vec<(String, serde_json::Value)> = s.all(TASKS).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].1["state"], "RUNNING");
        assert!(s.all::<serde_json::Value>(AGENTS).unwrap().is_empty());
    }

    #[test]
    fn a_batch_commits_once_and_reads_its_own_writes() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state.redb");
        let s = Store::open(&path).unwrap();
        s.begin();
        s.put(TASKS, "t1", &serde_json::json!({"n": 1})).unwrap();
        s.begin();
        s.put(TASKS, "t1", &serde_json::json!({"n": 2})).unwrap();
        s.commit().unwrap();
        assert_eq!(s.get::<serde_json::Value>(TASKS, "t1").unwrap().unwrap()["n"], 2, "held writes are read");
        assert!(s.all::<serde_json::Value>(TASKS).unwrap().is_empty(), "nothing committed inside the batch");
        s.delete(TASKS, "gone").unwrap();
        s.commit().unwrap();
        drop(s);
        let s = Store::open(&path).unwrap();
        let all: Vec<(String, serde_json::Value)> = s.all(TASKS).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].1["n"], 2);
    }
}
