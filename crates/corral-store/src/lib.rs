//! The master's durable state, behind one trait. A [`Store`] holds records (bytes) by table and
//! key, at a revision that every commit moves on by one. Commits are conditional on the
//! revision the writer last saw, so a writer that is no longer the only one (a deposed leader, a
//! second master on the same data) gets [`StoreError::Conflict`] instead of overwriting what it
//! has not read.
//!
//! [`RedbStore`] is the embedded implementation (one file, one machine); [`MemoryStore`] is
//! the same contract in memory, with faults on demand, for tests. `conformance` is the suite every
//! implementation must pass (the etcd one of the HA issue included).

pub mod conformance;
mod memory;
mod redb_store;

pub use memory::MemoryStore;
pub use redb_store::RedbStore;

use std::collections::BTreeMap;

/// How many commits a store has seen. 0 is the empty store.
pub type Revision = u64;

/// One change to one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put { table: String, key: String, value: Vec<u8> },
    Delete { table: String, key: String },
}

impl Op {
    pub fn table(&self) -> &str {
        match self {
            Op::Put { table, .. } | Op::Delete { table, .. } => table,
        }
    }

    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key, .. } => key,
        }
    }
}

/// Records by table, then key.
pub type Tables = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

/// The tables asked for, as of one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub revision: Revision,
    pub tables: Tables,
}

impl Snapshot {
    /// The records of one table (none if it was not asked for or is empty).
    pub fn table(&self, name: &str) -> impl Iterator<Item = (&str, &[u8])> {
        self.tables.get(name).into_iter().flatten().map(|(k, v)| (k.as_str(), v.as_slice()))
    }
}

/// A commit, as watchers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub revision: Revision,
    pub ops: Vec<Op>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store could not be read or written (a full disk, a broken file, an unreachable
    /// server). Nothing of the failed call was applied; a later call may succeed.
    #[error("state store {location}: {message}")]
    Unavailable { location: String, message: String },
    /// The store moved on since the writer last read it: nothing was applied.
    #[error("state store {location}: expected revision {expected}, but it is at {actual} (another writer?)")]
    Conflict { location: String, expected: Revision, actual: Revision },
    /// A name the store cannot hold (empty, or too long).
    #[error("state store {location}: invalid {what} {name:?}")]
    InvalidName { location: String, what: &'static str, name: String },
}

/// The contract of a state store. Implementations are shared between threads; each call is
/// atomic on its own.
pub trait Store: Send + Sync {
    /// Every record of `tables`, and the revision they are at.
    fn load(&self, tables: &[&str]) -> Result<Snapshot, StoreError>;

    /// One record, as of the latest commit.
    fn get(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// The latest revision.
    fn revision(&self) -> Result<Revision, StoreError>;

    /// Applies `ops` all together, in order, if the store is at `expected`; returns the new
    /// revision (`expected + 1`). With no ops, nothing is written and `expected` is returned
    /// (after the same check). On any error nothing was applied.
    fn commit(&self, expected: Revision, ops: &[Op]) -> Result<Revision, StoreError>;

    /// Every commit made through this store after the call, in order.
    fn watch(&self) -> std::sync::mpsc::Receiver<Change>;
}

/// Names are non-empty and at most this long (etcd keys are bounded too).
pub const MAX_NAME: usize = 1024;

pub(crate) fn check_names(location: &str, ops: &[Op]) -> Result<(), StoreError> {
    for op in ops {
        for (what, name) in [("table", op.table()), ("key", op.key())] {
            if name.is_empty() || name.len() > MAX_NAME {
                return Err(StoreError::InvalidName {
                    location: location.to_string(),
                    what,
                    name: name.chars().take(64).collect(),
                });
            }
        }
    }
    Ok(())
}

/// Watchers of one store: senders whose receivers are gone are dropped.
#[derive(Default)]
pub(crate) struct Watchers(std::sync::Mutex<Vec<std::sync::mpsc::Sender<Change>>>);

impl Watchers {
    pub(crate) fn add(&self) -> std::sync::mpsc::Receiver<Change> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
        rx
    }

    pub(crate) fn send(&self, change: &Change) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).retain(|tx| tx.send(change.clone()).is_ok());
    }
}
