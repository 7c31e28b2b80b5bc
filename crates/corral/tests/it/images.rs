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

#[test]
fn host_users_cannot_reach_setuid_binaries_or_open_directories_in_the_store() {
    crate::support::needs_root!();
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    // The state root itself is open, as /var/lib/corral usually is.
    std::fs::set_permissions(env.root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let src = tempfile::tempdir().unwrap();
    std::fs::copy("/usr/bin/id", src.path().join("suid-id")).unwrap();
    std::fs::set_permissions(src.path().join("suid-id"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::create_dir(src.path().join("open")).unwrap();
    std::fs::set_permissions(src.path().join("open"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    env.ok(&["image", "import", src.path().to_str().unwrap(), "suid:v1"]);
    env.ok(&["run", "--image", "busybox", "--", "true"]);
    let unpacked: Vec<std::path::PathBuf> = std::fs::read_dir(env.root.path().join("layers/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path().join("suid-id"))
        .filter(|p| p.exists())
        .collect();
    assert_eq!(unpacked.len(), 1);
    let mode = std::fs::metadata(&unpacked[0]).unwrap().permissions().mode();
    assert_eq!(mode & 0o4000, 0o4000, "the layer keeps its setuid bit, for containers");
    // A host user walking in by path gets nowhere: not the setuid binary, not the open directory.
    // (Not setpriv: it keeps its capabilities until after the exec's path lookup.)
    let as_nobody = |program: &str, args: &[&str]| {
        use std::os::unix::process::CommandExt;
        std::process::Command::new(program).args(args).uid(65534).gid(65534).output()
    };
    let ran = as_nobody(unpacked[0].to_str().unwrap(), &["-u"]);
    assert!(ran.as_ref().map_or(true, |o| !o.status.success()), "ran it: {ran:?}");
    let open = unpacked[0].with_file_name("open").join("planted");
    let out = as_nobody("touch", &[open.to_str().unwrap()]).unwrap();
    assert!(!out.status.success(), "wrote into the store's open directory");
    for dir in ["layers", "images", "tmp"] {
        let mode = std::fs::metadata(env.root.path().join(dir)).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{dir} is {mode:o}");
    }
    // Containers' directories may be walked into by their own root (a host id of their own) but
    // not listed; each is closed to everyone else.
    let containers = env.root.path().join("containers");
    let mode = std::fs::metadata(&containers).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0o011, "containers is {mode:o}");
    env.ok(&["run", "--name", "kept", "--image", "busybox", "--", "true"]);
    for entry in std::fs::read_dir(&containers).unwrap() {
        let mode = entry.unwrap().metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o007, 0, "a container's directory is {mode:o}");
    }
    let out = as_nobody("ls", &[containers.to_str().unwrap()]).unwrap();
    assert!(!out.status.success(), "listed the containers");
}
