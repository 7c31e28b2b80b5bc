//! Images through the CLI: import, list, inspect, remove, and a corrupt store.

use crate::support::Env;

#[test]
fn import_list_inspect_and_remove() {
    crate::support::needs_root!();
    let env = Env::new();
    assert!(env.ok(&["image", "ls"]).contains("busybox:latest"));
    let config: serde_json::Value = serde_json::from_str(&env.ok(&["image", "inspect", "busybox"])).unwrap();
    assert_eq!(config["os"], "linux");
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
    // Import from a tarball, gzipped.
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("rootfs/etc")).unwrap();
    std::fs::write(src.path().join("rootfs/etc/greeting"), "hi\n").unwrap();
    let tgz = src.path().join("root.tar.gz");
    let st = std::process::Command::new("tar")
        .arg("czf")
        .arg(&tgz)
        .arg("-C")
        .arg(src.path().join("rootfs"))
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    env.ok(&["image", "import", tgz.to_str().unwrap(), "greet:v1"]);
    assert!(env.ok(&["image", "ls"]).contains("greet:v1"));
    env.ok(&["image", "rm", "greet:v1"]);
    assert!(!env.ok(&["image", "ls"]).contains("greet:v1"));
    let err = env.fails(&["image", "inspect", "greet:v1"], 125);
    assert!(err.contains("unknown image \"greet:v1\""), "{err}");
}

#[test]
fn a_corrupted_blob_is_reported_not_used() {
    crate::support::needs_root!();
    let env = Env::new();
    let config: serde_json::Value = serde_json::from_str(&env.ok(&["image", "inspect", "busybox"])).unwrap();
    assert!(config.is_object());
    let blobs = env.root.path().join("images/blobs/sha256");
    // Corrupt every small blob (the manifest and config): the image must not resolve.
    for e in std::fs::read_dir(&blobs).unwrap() {
        let p = e.unwrap().path();
        if std::fs::metadata(&p).unwrap().len() < 4096 {
            let mut bytes = std::fs::read(&p).unwrap();
            bytes.push(b' ');
            std::fs::write(&p, bytes).unwrap();
        }
    }
    let err = env.fails(&["run", "--image", "busybox", "--", "true"], 125);
    assert!(err.contains("is corrupt"), "{err}");
}
