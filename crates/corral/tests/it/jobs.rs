//! Scheduled jobs through the real binary: Chronos's API driven by `chronos-python` from PyPI,
//! unchanged (a master alone: no root needed), and, with real containers, a master killed
//! repeatedly while jobs are due, every run counted from the tasks' own output.

use std::process::Command;

use crate::cluster::Cluster;
use crate::support::repo_root;

#[test]
fn the_chronos_python_client_works_unchanged() {
    let c = Cluster::new("5");
    let server = format!("{}:{}", c.master_host(), c.master_port);
    let out = Command::new("python3")
        .arg(repo_root().join("crates/corral/tests/it/chronos_client.py"))
        .arg(&server)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chronos client test failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
