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

pub struct Store {
    db: Database,
    path: String,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let p = path.display().to_string();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Db { path: p.clone(), message: e.to_string() })?;
        }
        let db = Database::create(path).map_err(|e| StoreError::Db { path: p.clone(), message: e.to_string() })?;
        let store = Store { db, path: p };
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

    /// Writes (or with `None`, deletes) records in one transaction.
    pub fn write<T: Serialize>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        records: &[(&str, Option<&T>)],
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = tx.open_table(table).map_err(|e| self.err(e))?;
            for (key, value) in records {
                match value {
                    Some(v) => {
                        let bytes = serde_json::to_vec(v).expect("records serialize");
                        t.insert(*key, bytes.as_slice()).map_err(|e| self.err(e))?;
                    }
                    None => {
                        t.remove(*key).map_err(|e| self.err(e))?;
                    }
                }
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    pub fn put<T: Serialize>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        self.write(table, &[(key, Some(value))])
    }

    pub fn delete(&self, table: TableDefinition<&str, &[u8]>, key: &str) -> Result<(), StoreError> {
        self.write::<()>(table, &[(key, None)])
    }

    pub fn get<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(table).map_err(|e| self.err(e))?;
        let Some(v) = t.get(key).map_err(|e| self.err(e))? else { return Ok(None) };
        serde_json::from_slice(v.value()).map(Some).map_err(|e| StoreError::Corrupt {
            table: table.name().to_string(),
            key: key.to_string(),
            message: e.to_string(),
        })
    }

    pub fn all<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<(String, T)>, StoreError> {
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
}
