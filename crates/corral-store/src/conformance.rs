//! The contract every [`Store`] implementation passes: each implementation's tests call
//! [`run`] with a way to open it (again) over the same data.

use std::time::Duration;

use crate::{Change, Op, Store, StoreError};

/// Opens the store under test. Each call opens the same data afresh, as a restarted master
/// would (the previous handle is dropped first).
pub trait Fixture {
    fn open(&mut self) -> Box<dyn Store>;
}

/// One check of the contract, by name.
type Check = (&'static str, fn(&mut dyn Fixture));

/// Every check, each on a fresh fixture from `new`.
pub fn run(new: &mut dyn FnMut() -> Box<dyn Fixture>) {
    let checks: [Check; 8] = [
        ("empty", empty),
        ("commit_moves_the_revision", commit_moves_the_revision),
        ("conflict_changes_nothing", conflict_changes_nothing),
        ("ops_apply_in_order_and_together", ops_apply_in_order_and_together),
        ("reload_sees_every_commit", reload_sees_every_commit),
        ("watch_sees_commits_in_order", watch_sees_commits_in_order),
        ("load_takes_only_the_tables_asked", load_takes_only_the_tables_asked),
        ("bad_names_are_refused", bad_names_are_refused),
    ];
    for (name, check) in checks {
        eprintln!("store conformance: {name}");
        let mut f = new();
        check(f.as_mut());
    }
}

fn put(table: &str, key: &str, value: &str) -> Op {
    Op::Put { table: table.into(), key: key.into(), value: value.as_bytes().to_vec() }
}

fn del(table: &str, key: &str) -> Op {
    Op::Delete { table: table.into(), key: key.into() }
}

fn text(v: Option<Vec<u8>>) -> Option<String> {
    v.map(|b| String::from_utf8(b).expect("utf-8"))
}

fn empty(f: &mut dyn Fixture) {
    let s = f.open();
    assert_eq!(s.revision().unwrap(), 0);
    let snap = s.load(&["tasks"]).unwrap();
    assert_eq!(snap.revision, 0);
    assert!(snap.tables.is_empty());
    assert_eq!(s.get("tasks", "t1").unwrap(), None);
    assert_eq!(s.commit(0, &[]).unwrap(), 0, "an empty commit writes nothing");
}

fn commit_moves_the_revision(f: &mut dyn Fixture) {
    let s = f.open();
    assert_eq!(s.commit(0, &[put("tasks", "t1", "a")]).unwrap(), 1);
    assert_eq!(s.commit(1, &[put("tasks", "t2", "b"), put("agents", "a1", "x")]).unwrap(), 2);
    assert_eq!(s.revision().unwrap(), 2);
    assert_eq!(text(s.get("tasks", "t1").unwrap()).as_deref(), Some("a"));
    assert_eq!(s.commit(2, &[]).unwrap(), 2);
}

fn conflict_changes_nothing(f: &mut dyn Fixture) {
    let s = f.open();
    s.commit(0, &[put("tasks", "t1", "a")]).unwrap();
    for stale in [0, 2, 7] {
        match s.commit(stale, &[put("tasks", "t1", "stale"), put("tasks", "t9", "stale")]) {
            Err(StoreError::Conflict { expected, actual, .. }) => {
                assert_eq!((expected, actual), (stale, 1));
            }
            other => panic!("a commit at revision {stale} of a store at 1 must conflict, got {other:?}"),
        }
        assert!(matches!(s.commit(stale, &[]), Err(StoreError::Conflict { .. })), "empty commits are checked too");
    }
    assert_eq!(s.revision().unwrap(), 1);
    assert_eq!(text(s.get("tasks", "t1").unwrap()).as_deref(), Some("a"));
    assert_eq!(s.get("tasks", "t9").unwrap(), None);
}

fn ops_apply_in_order_and_together(f: &mut dyn Fixture) {
    let s = f.open();
    s.commit(0, &[put("t", "k", "1"), put("t", "k", "2"), put("t", "gone", "x"), del("t", "gone"), del("t", "never")])
        .unwrap();
    assert_eq!(text(s.get("t", "k").unwrap()).as_deref(), Some("2"), "later ops win");
    assert_eq!(s.get("t", "gone").unwrap(), None);
    let snap = s.load(&["t"]).unwrap();
    assert_eq!(snap.table("t").map(|(k, _)| k.to_string()).collect::<Vec<_>>(), ["k"]);
}

fn reload_sees_every_commit(f: &mut dyn Fixture) {
    {
        let s = f.open();
        for i in 0..20u64 {
            let mut ops = vec![put("tasks", &format!("t{i:02}"), &i.to_string())];
            if i % 3 == 0 && i > 0 {
                ops.push(del("tasks", &format!("t{:02}", i - 1)));
            }
            assert_eq!(s.commit(i, &ops).unwrap(), i + 1);
        }
    }
    let s = f.open();
    let snap = s.load(&["tasks"]).unwrap();
    assert_eq!(snap.revision, 20);
    let keys: Vec<&str> = snap.table("tasks").map(|(k, _)| k).collect();
    assert_eq!(keys.len(), 14, "{keys:?}");
    assert!(!keys.contains(&"t02") && keys.contains(&"t03") && keys.contains(&"t19"));
    assert_eq!(s.commit(20, &[put("tasks", "t20", "20")]).unwrap(), 21, "a reopened store goes on");
}

fn watch_sees_commits_in_order(f: &mut dyn Fixture) {
    let s = f.open();
    s.commit(0, &[put("t", "before", "x")]).unwrap();
    let rx = s.watch();
    s.commit(1, &[put("t", "a", "1")]).unwrap();
    let _ = s.commit(1, &[put("t", "conflicting", "1")]);
    s.commit(2, &[del("t", "a"), put("t", "b", "2")]).unwrap();
    s.commit(3, &[]).unwrap();
    let got: Vec<Change> = (0..2).map(|_| rx.recv_timeout(Duration::from_secs(5)).expect("a change")).collect();
    assert_eq!(got[0], Change { revision: 2, ops: vec![put("t", "a", "1")] });
    assert_eq!(got[1], Change { revision: 3, ops: vec![del("t", "a"), put("t", "b", "2")] });
    assert!(rx.try_recv().is_err(), "conflicts and empty commits are not changes");
}

fn load_takes_only_the_tables_asked(f: &mut dyn Fixture) {
    let s = f.open();
    s.commit(0, &[put("a", "1", "x"), put("b", "1", "y"), put("c", "1", "z")]).unwrap();
    let snap = s.load(&["a", "c", "missing"]).unwrap();
    assert_eq!(snap.tables.keys().cloned().collect::<Vec<_>>(), ["a", "c"]);
    assert_eq!(snap.revision, 1);
}

fn bad_names_are_refused(f: &mut dyn Fixture) {
    let s = f.open();
    let long = "k".repeat(crate::MAX_NAME + 1);
    for ops in [vec![put("", "k", "x")], vec![put("t", "", "x")], vec![put("t", "ok", "x"), del("t", &long)]] {
        assert!(matches!(s.commit(0, &ops), Err(StoreError::InvalidName { .. })), "{ops:?}");
    }
    assert_eq!(s.revision().unwrap(), 0);
    assert_eq!(s.get("t", "ok").unwrap(), None);
}
