//! The store contract in memory: for tests, with faults on demand. Clones share the data, so a
//! clone is the same store "reopened".

use std::sync::{Arc, Mutex};

use crate::{check_names, Change, Op, Revision, Snapshot, Store, StoreError, Tables, Watchers};

#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    data: Mutex<(Revision, Tables)>,
    /// Commits still to fail, as a full disk would.
    failing: Mutex<u32>,
    /// Forked away: its process is dead, and no commit of it lands any more.
    dead: std::sync::atomic::AtomicBool,
    watchers: Watchers,
}

const LOCATION: &str = "memory";

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// The next `n` commits fail with [`StoreError::Unavailable`] and change nothing.
    pub fn fail_commits(&self, n: u32) {
        *self.inner.failing.lock().unwrap_or_else(|p| p.into_inner()) = n;
    }

    /// What a process killed now leaves behind: a copy of the data for the next process to
    /// open, while this store, the dead one's, refuses every later commit (a killed process
    /// writes nothing after its death, whatever it had under way).
    pub fn fork(&self) -> MemoryStore {
        let data = self.inner.data.lock().unwrap_or_else(|p| p.into_inner());
        self.inner.dead.store(true, std::sync::atomic::Ordering::SeqCst);
        let copy = MemoryStore::new();
        *copy.inner.data.lock().unwrap_or_else(|p| p.into_inner()) = data.clone();
        copy
    }

    /// Everything, for comparisons in tests.
    pub fn dump(&self) -> (Revision, Tables) {
        self.inner.data.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Store for MemoryStore {
    fn load(&self, tables: &[&str]) -> Result<Snapshot, StoreError> {
        let data = self.inner.data.lock().unwrap_or_else(|p| p.into_inner());
        Ok(Snapshot {
            revision: data.0,
            tables: data
                .1
                .iter()
                .filter(|(t, _)| tables.contains(&t.as_str()))
                .map(|(t, r)| (t.clone(), r.clone()))
                .collect(),
        })
    }

    fn get(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let data = self.inner.data.lock().unwrap_or_else(|p| p.into_inner());
        Ok(data.1.get(table).and_then(|t| t.get(key)).cloned())
    }

    fn revision(&self) -> Result<Revision, StoreError> {
        Ok(self.inner.data.lock().unwrap_or_else(|p| p.into_inner()).0)
    }

    fn commit(&self, expected: Revision, ops: &[Op]) -> Result<Revision, StoreError> {
        check_names(LOCATION, ops)?;
        let mut data = self.inner.data.lock().unwrap_or_else(|p| p.into_inner());
        if self.inner.dead.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Unavailable {
                location: LOCATION.into(),
                message: "its process was killed".into(),
            });
        }
        if data.0 != expected {
            return Err(StoreError::Conflict { location: LOCATION.into(), expected, actual: data.0 });
        }
        if ops.is_empty() {
            return Ok(expected);
        }
        {
            let mut failing = self.inner.failing.lock().unwrap_or_else(|p| p.into_inner());
            if *failing > 0 {
                *failing -= 1;
                return Err(StoreError::Unavailable { location: LOCATION.into(), message: "injected failure".into() });
            }
        }
        for op in ops {
            match op {
                Op::Put { table, key, value } => {
                    data.1.entry(table.clone()).or_default().insert(key.clone(), value.clone());
                }
                Op::Delete { table, key } => {
                    if let Some(t) = data.1.get_mut(table) {
                        t.remove(key);
                        if t.is_empty() {
                            data.1.remove(table);
                        }
                    }
                }
            }
        }
        data.0 += 1;
        let revision = data.0;
        // Under the lock, so watchers see commits in order.
        self.inner.watchers.send(&Change { revision, ops: ops.to_vec() });
        Ok(revision)
    }

    fn watch(&self) -> std::sync::mpsc::Receiver<Change> {
        self.inner.watchers.add()
    }
}
