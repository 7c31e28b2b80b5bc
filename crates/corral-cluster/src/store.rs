//! The master's records in a [`corral_store::Store`]: JSON values (a persistence format:
//! fields may be added, never renamed) in named tables. The controller never writes to the
//! store itself: its changes collect in [`Writes`], which the master's owner commits once per
//! command, or drops when the command fails.

use std::sync::Arc;

use corral_store::{Op, Store};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use corral_store::StoreError;

pub const AGENTS: &str = "agents";
pub const TASKS: &str = "tasks";
pub const ROLES: &str = "roles";
/// Services: app id to its current definition and version list.
pub const APPS: &str = "apps";
/// `"{app id} {version}"` to that version's definition (read one at a time, never loaded whole).
pub const APP_VERSIONS: &str = "app_versions";
pub const DEPLOYMENTS: &str = "deployments";
/// Jobs: name to its definition, the index of its next scheduled run, its counters and history.
pub const JOBS: &str = "jobs";
/// Runs of jobs under way: task id to the run (its job, scheduled time, attempt).
pub const JOB_RUNS: &str = "job_runs";

/// API and join tokens: id to the record, whose secret is only a hash (`master::trust`).
pub const TOKENS: &str = "tokens";
/// Agent id to the fingerprint of the certificate it joined with.
pub const IDENTITIES: &str = "agent_identities";

/// The tables a master loads when it starts.
pub const LOADED: [&str; 9] = [AGENTS, TASKS, ROLES, APPS, DEPLOYMENTS, JOBS, JOB_RUNS, TOKENS, IDENTITIES];

/// A record that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("state store record {table}/{key} is unreadable: {message}")]
pub struct Corrupt {
    pub table: String,
    pub key: String,
    pub message: String,
}

/// Parses one stored record.
pub fn decode<T: DeserializeOwned>(table: &str, key: &str, bytes: &[u8]) -> Result<T, Corrupt> {
    serde_json::from_slice(bytes).map_err(|e| Corrupt { table: table.into(), key: key.into(), message: e.to_string() })
}

/// The writes of one command, not yet committed, and a way to read records that are not kept
/// in memory (old app versions).
#[derive(Clone)]
pub struct Writes {
    backend: Arc<dyn Store>,
    pending: Vec<Op>,
}

impl Writes {
    pub fn new(backend: Arc<dyn Store>) -> Writes {
        Writes { backend, pending: Vec::new() }
    }

    pub fn put<T: Serialize>(&mut self, table: &str, key: &str, value: &T) {
        let value = serde_json::to_vec(value).expect("records serialize");
        self.pending.push(Op::Put { table: table.into(), key: key.into(), value });
    }

    pub fn delete(&mut self, table: &str, key: &str) {
        self.pending.push(Op::Delete { table: table.into(), key: key.into() });
    }

    /// A record as this command sees it: its own writes first, then the store.
    pub fn get<T: DeserializeOwned>(&self, table: &str, key: &str) -> Result<Option<T>, ReadError> {
        let held = self.pending.iter().rev().find(|op| op.table() == table && op.key() == key);
        let bytes = match held {
            Some(Op::Put { value, .. }) => Some(value.clone()),
            Some(Op::Delete { .. }) => None,
            None => self.backend.get(table, key)?,
        };
        Ok(bytes.map(|b| decode(table, key, &b)).transpose()?)
    }

    /// Takes the writes collected so far.
    pub fn take(&mut self) -> Vec<Op> {
        std::mem::take(&mut self.pending)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Corrupt(#[from] Corrupt),
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_store::MemoryStore;

    #[test]
    fn reads_see_the_commands_own_writes_first() {
        let backend = MemoryStore::new();
        backend.commit(0, &[Op::Put { table: TASKS.into(), key: "t1".into(), value: b"{\"n\":1}".to_vec() }]).unwrap();
        let mut w = Writes::new(Arc::new(backend.clone()));
        assert_eq!(w.get::<serde_json::Value>(TASKS, "t1").unwrap().unwrap()["n"], 1);
        w.put(TASKS, "t1", &serde_json::json!({"n": 2}));
        assert_eq!(w.get::<serde_json::Value>(TASKS, "t1").unwrap().unwrap()["n"], 2);
        w.delete(TASKS, "t1");
        assert!(w.get::<serde_json::Value>(TASKS, "t1").unwrap().is_none());
        assert_eq!(w.take().len(), 2);
        assert!(w.take().is_empty(), "taken once");
        assert_eq!(backend.dump().0, 1, "nothing reaches the store until the owner commits");
    }

    #[test]
    fn an_unreadable_record_names_itself() {
        let backend = MemoryStore::new();
        backend.commit(0, &[Op::Put { table: TASKS.into(), key: "t1".into(), value: b"{oops".to_vec() }]).unwrap();
        let w = Writes::new(Arc::new(backend));
        let e = w.get::<serde_json::Value>(TASKS, "t1").unwrap_err().to_string();
        assert!(e.contains("tasks/t1"), "{e}");
    }
}
