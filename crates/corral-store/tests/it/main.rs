//! The conformance suite against each implementation, and what is particular to each.

use corral_store::conformance::{self, Fixture};
use corral_store::{MemoryStore, Op, RedbStore, Store, StoreError};

struct Memory(MemoryStore);

impl Fixture for Memory {
    fn open(&mut self) -> Box<dyn Store> {
        Box::new(self.0.clone())
    }
}

struct Redb(tempfile::TempDir);

impl Fixture for Redb {
    fn open(&mut self) -> Box<dyn Store> {
        Box::new(RedbStore::open(&self.0.path().join("state").join("master.redb")).expect("opens"))
    }
}

#[test]
fn memory_store_conforms() {
    conformance::run(&mut || Box::new(Memory(MemoryStore::new())));
}

#[test]
fn redb_store_conforms() {
    conformance::run(&mut || Box::new(Redb(tempfile::tempdir().unwrap())));
}

#[test]
fn injected_failures_change_nothing() {
    let s = MemoryStore::new();
    s.commit(0, &[Op::Put { table: "t".into(), key: "a".into(), value: b"1".to_vec() }]).unwrap();
    let before = s.dump();
    s.fail_commits(1);
    let op = Op::Put { table: "t".into(), key: "b".into(), value: b"2".to_vec() };
    assert!(matches!(s.commit(1, std::slice::from_ref(&op)), Err(StoreError::Unavailable { .. })));
    assert_eq!(s.dump(), before);
    assert_eq!(s.commit(1, &[op]).unwrap(), 2, "the next commit works");
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A full disk: the commit that does not fit fails and changes nothing; once there is room
/// again the next one works, without reopening the store by hand. Needs root (a small tmpfs).
#[test]
fn a_full_disk_fails_one_commit_and_the_store_recovers() {
    if !is_root() {
        eprintln!("skipped: needs root to mount a small tmpfs");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&mnt)
        .status()
        .expect("mount runs");
    assert!(status.success(), "mounting a tmpfs");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let store = RedbStore::open(&mnt.join("master.redb")).unwrap();
    let mut rev =
        store.commit(0, &[Op::Put { table: "t".into(), key: "kept".into(), value: b"yes".to_vec() }]).unwrap();
    // Fill the disk but for a little.
    let filler = mnt.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![7u8; 64 << 10];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    drop(f);
    let big = vec![1u8; 1 << 20];
    let mut failed = None;
    for i in 0..8 {
        let op = Op::Put { table: "t".into(), key: format!("big{i}"), value: big.clone() };
        match store.commit(rev, &[op]) {
            Ok(r) => rev = r,
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let failed = failed.expect("a commit fails on a full disk");
    assert!(matches!(failed, StoreError::Unavailable { .. }), "{failed}");
    assert!(failed.to_string().contains("master.redb"), "the error names the store: {failed}");
    std::fs::remove_file(&filler).unwrap();
    let after = store.commit(rev, &[Op::Put { table: "t".into(), key: "after".into(), value: b"1".to_vec() }]);
    let after = after.expect("with room again, the next commit works");
    assert_eq!(after, rev + 1);
    assert_eq!(store.get("t", "kept").unwrap().as_deref(), Some(&b"yes"[..]));
    drop(store);
    let reopened = RedbStore::open(&mnt.join("master.redb")).unwrap();
    assert_eq!(reopened.revision().unwrap(), after);
    assert_eq!(reopened.get("t", "after").unwrap().as_deref(), Some(&b"1"[..]));
}
