//! A throwaway corral state root with the busybox image, and helpers to drive the binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub struct Env {
    pub root: tempfile::TempDir,
}

pub fn corral_exe() -> &'static str {
    env!("CARGO_BIN_EXE_corral")
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

impl Env {
    /// A fresh root with `busybox:latest` imported by the repository's script.
    pub fn new() -> Env {
        assert!(nix::unistd::geteuid().is_root(), "these tests run real containers and need root");
        let root = tempfile::Builder::new().prefix("corral-it").tempdir_in("/tmp").unwrap();
        let env = Env { root };
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/make-busybox-image.sh"))
            .env("CORRAL", corral_exe())
            .env("CORRAL_ROOT", env.root.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "making the busybox image failed: {}", String::from_utf8_lossy(&out.stderr));
        env
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(corral_exe());
        c.args(args).env("CORRAL_ROOT", self.root.path()).env_remove("CORRAL_LOG");
        c
    }

    pub fn corral(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs corral, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.corral(args);
        assert!(
            out.status.success(),
            "corral {args:?} failed ({:?}): {}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs corral, asserts it failed with `code`, returns stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.corral(args);
        assert_eq!(out.status.code(), Some(code), "corral {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn containers_dir(&self) -> PathBuf {
        self.root.path().join("containers")
    }

    /// Container ids on disk.
    pub fn container_ids(&self) -> Vec<String> {
        std::fs::read_dir(self.containers_dir())
            .map(|d| d.map(|e| e.unwrap().file_name().into_string().unwrap()).collect())
            .unwrap_or_default()
    }

    /// `corral ps --json`, one value per container.
    pub fn ps(&self) -> Vec<serde_json::Value> {
        self.ok(&["ps", "--json"]).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    pub fn ps_of(&self, id: &str) -> serde_json::Value {
        self.ps().into_iter().find(|c| c["id"] == id).unwrap_or_else(|| panic!("no container {id} in ps"))
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Leave no container running behind a failed test.
        for id in self.container_ids() {
            let _ = self.cmd(&["rm", "--force", &id]).output();
        }
    }
}

/// Polls `cond` until it holds or `timeout` passes; panics with `what` on timeout.
pub fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::yield_now();
        // Poll gently: block on something cheap instead of spinning the CPU.
        let _ = nix::poll::poll(&mut [], nix::poll::PollTimeout::from(20u16));
    }
    panic!("timed out waiting for: {what}");
}

/// Cgroup directories of a container, in every hierarchy, that still exist.
pub fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let base = Path::new("/sys/fs/cgroup");
    let mut candidates = vec![base.join("corral").join(id)];
    for e in std::fs::read_dir(base).unwrap().flatten() {
        candidates.push(e.path().join("corral").join(id));
    }
    for c in candidates {
        if c.exists() {
            out.push(c);
        }
    }
    out
}

/// Mounts whose mount point lies under `dir`.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let d = dir.to_string_lossy().into_owned();
    info.lines().filter(|l| l.split(' ').nth(4).is_some_and(|mp| mp.starts_with(&d))).map(String::from).collect()
}

pub fn cgroup_v1() -> bool {
    Path::new("/sys/fs/cgroup/memory").is_dir()
}

/// Skips the calling test, saying so, when not run as root: it runs real containers (CI runs
/// every test as root).
macro_rules! needs_root {
    () => {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: this test runs real containers and needs root");
            return;
        }
    };
}
pub(crate) use needs_root;

/// Whether containers here can have user namespaces (idmapped mounts on the temporary
/// directory's filesystem, where the tests' state roots live).
pub fn idmapped_mounts() -> bool {
    corral_runtime::userns::supported(&std::env::temp_dir())
}
