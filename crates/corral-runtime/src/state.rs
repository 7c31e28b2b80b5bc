//! What a container is on disk, and how its state is read back by any corral process.
//!
//! Layout under `<root>/containers/<id>/`:
//! `container.json` (the record, written once at create), `bundle/config.json` (the OCI spec),
//! `bundle/rootfs` (the mounted root), `upper/` and `work/` (the overlay's writable part),
//! `etc/` (generated passwd, group, hosts, hostname), `sandbox/` (host tasks' working directory),
//! `netns` (the bind-mounted network namespace), `userns`, `lower/N` and `volumes/N` (its
//! pinned user namespace, idmapped layers and volumes, when it has one), `shim.pid`, `init.pid`, `shim.sock`,
//! `shim.log`, `logs/container.log*` and, once the container has ended, `status.json`.
//! Names are reserved atomically as files under `<root>/names/`, user id ranges under
//! `<root>/userns/`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("no such container: {0:?}")]
    NotFound(String),
    #[error("container name {0:?} is already in use")]
    NameInUse(String),
    #[error("container {id}: {what} is unreadable: {reason}")]
    Corrupt { id: String, what: &'static str, reason: String },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub(crate) fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StateError {
    let path = path.to_path_buf();
    move |source| StateError::Io { action, path, source }
}

/// The on-disk record of a container, written once when it is created. This is a persistence
/// format: fields may be added (with defaults), never renamed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    /// The image as the user named it, and its resolved manifest and layers (bottom first).
    pub image: Option<ImageRecord>,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub hostname: String,
    pub cpus: Option<f64>,
    pub mem_bytes: Option<u64>,
    pub pids: Option<i64>,
    pub volumes: Vec<VolumeRecord>,
    pub created: String,
    /// Seconds between SIGTERM and SIGKILL on a graceful stop.
    pub stop_grace_secs: u64,
    pub log_max_bytes: u64,
    pub log_max_files: u32,
    #[serde(default)]
    pub etc: EtcFiles,
    /// Shares the network namespace of whoever starts it (an agent's), instead of its own.
    #[serde(default)]
    pub host_network: bool,
    /// Disk the container may use (bytes); its shim measures `disk_paths` and kills it past this.
    #[serde(default)]
    pub disk_bytes: Option<u64>,
    /// What counts as its disk use: its root filesystem's writable layer, its sandbox.
    #[serde(default)]
    pub disk_paths: Vec<PathBuf>,
    /// The host id of its root when it has a user namespace of its own: its ids 0 to 65535
    /// are host ids `userns..userns + 65536`. `None`: its ids are the host's.
    #[serde(default)]
    pub userns: Option<u32>,
}

/// Which `/etc` files corral generates and binds (read-only) over the image's.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum EtcFiles {
    /// passwd and group (with an entry for the container's user), hosts and hostname.
    #[default]
    All,
    /// hosts and hostname only: the image's passwd and group stay writable (build steps).
    NetworkOnly,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    pub reference: String,
    pub manifest: String,
    pub layers: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeRecord {
    pub host: PathBuf,
    pub container: PathBuf,
    pub readonly: bool,
}

/// How a container ended, written once by its shim.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitStatus {
    /// The exit code when the process exited on its own.
    pub code: Option<i32>,
    /// The signal that killed it.
    pub signal: Option<i32>,
    /// The kernel's OOM killer acted in the container's memory cgroup.
    pub oom_killed: bool,
    pub finished: String,
    /// Set when the container never ran: why it could not start.
    pub error: Option<String>,
    /// Set when its shim killed it for using more disk than it may.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_exceeded: Option<String>,
}

impl ExitStatus {
    /// The code a shell would report: the exit code, or 128 + the signal.
    pub fn shell_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            (None, None) => 125,
        }
    }

    pub fn describe(&self) -> String {
        if let Some(e) = &self.error {
            return format!("failed to start: {e}");
        }
        let base = match (self.code, self.signal) {
            (Some(c), _) => format!("exited ({c})"),
            (None, Some(s)) => format!("killed by {}", crate::parse::signal_name(s)),
            (None, None) => "ended".to_string(),
        };
        match (&self.disk_exceeded, self.oom_killed) {
            (Some(why), _) => format!("{base}: {why}"),
            (None, true) => format!("{base}, oom-killed"),
            (None, false) => base,
        }
    }
}

/// The lifecycle state of a container as seen from outside its shim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Created on disk; the shim has not reported the start yet.
    Created,
    Running {
        pid: i32,
    },
    Exited(ExitStatus),
    /// The shim is gone without recording an exit: the container's fate is unknown.
    Lost,
}

impl State {
    pub fn label(&self) -> String {
        match self {
            State::Created => "created".into(),
            State::Running { .. } => "running".into(),
            State::Exited(s) => s.describe(),
            State::Lost => "lost (shim gone)".into(),
        }
    }

    pub fn is_running(&self) -> bool {
        matches!(self, State::Running { .. } | State::Created)
    }
}

/// The paths of one container's directory.
#[derive(Debug, Clone)]
pub struct ContainerDir {
    pub dir: PathBuf,
}

impl ContainerDir {
    pub fn record(&self) -> PathBuf {
        self.dir.join("container.json")
    }
    pub fn bundle(&self) -> PathBuf {
        self.dir.join("bundle")
    }
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("bundle/rootfs")
    }
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    pub fn etc(&self) -> PathBuf {
        self.dir.join("etc")
    }
    pub fn sandbox(&self) -> PathBuf {
        self.dir.join("sandbox")
    }
    pub fn netns(&self) -> PathBuf {
        self.dir.join("netns")
    }
    /// The pinned user namespace, when it has one.
    pub fn userns(&self) -> PathBuf {
        self.dir.join("userns")
    }
    /// Idmapped binds of its image layers (`lower/0` the bottom), when it has a user namespace.
    pub fn lower(&self) -> PathBuf {
        self.dir.join("lower")
    }
    /// Where volume `i` is bound first when it has a user namespace: its init reaches it by
    /// a path it may walk (see `rootfs::bind_volumes`).
    pub fn volume(&self, i: usize) -> PathBuf {
        self.dir.join("volumes").join(i.to_string())
    }
    pub fn shim_pid(&self) -> PathBuf {
        self.dir.join("shim.pid")
    }
    pub fn init_pid(&self) -> PathBuf {
        self.dir.join("init.pid")
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join("shim.sock")
    }
    pub fn shim_log(&self) -> PathBuf {
        self.dir.join("shim.log")
    }
    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }
    pub fn status(&self) -> PathBuf {
        self.dir.join("status.json")
    }
    /// libcontainer's own state directory (youki's `--root`).
    pub fn youki_root(&self) -> PathBuf {
        self.dir.join("youki")
    }
    /// The bundle libcontainer is given when the shim installs the seccomp filter itself: a
    /// copy of `bundle/config.json` without the profile (corral-shim's `filter` module).
    pub fn runtime_bundle(&self) -> PathBuf {
        self.dir.join("runtime-bundle")
    }

    pub fn read_record(&self) -> Result<ContainerRecord, StateError> {
        let path = self.record();
        let bytes = fs::read(&path).map_err(io_err("reading", &path))?;
        serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
            id: self.id(),
            what: "container.json",
            reason: e.to_string(),
        })
    }

    pub fn read_status(&self) -> Result<Option<ExitStatus>, StateError> {
        let path = self.status();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| StateError::Corrupt {
                id: self.id(),
                what: "status.json",
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("reading", &path)(e)),
        }
    }

    pub fn write_status(&self, status: &ExitStatus) -> Result<(), StateError> {
        write_json_atomic(&self.status(), status)
    }

    /// The state, from the status file and whether the shim still lives.
    pub fn state(&self) -> Result<State, StateError> {
        if let Some(status) = self.read_status()? {
            return Ok(State::Exited(status));
        }
        let shim_alive = read_pid(&self.shim_pid()).is_some_and(|pid| process_alive(pid, &self.dir));
        // Re-check: the shim writes status.json just before it exits.
        if !shim_alive {
            return Ok(match self.read_status()? {
                Some(status) => State::Exited(status),
                None => State::Lost,
            });
        }
        Ok(match read_pid(&self.init_pid()) {
            Some(pid) => State::Running { pid },
            None => State::Created,
        })
    }

    pub fn id(&self) -> String {
        self.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }
}

/// Reads a pid file; a missing or malformed one reads as no pid.
pub fn read_pid(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok().filter(|p| *p > 0)
}

/// Whether `pid` is alive and is a corral shim for this container (guards against pid reuse by
/// checking the process's command line names the container directory's id).
fn process_alive(pid: i32, dir: &Path) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let id = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let is_shim = cmdline.split(|b| *b == 0).any(|arg| arg == id.as_bytes());
    // A zombie has an empty cmdline; it is gone for our purposes.
    is_shim && !cmdline.is_empty()
}

pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let bytes = serde_json::to_vec_pretty(value).expect("our records serialize");
    write_atomic(path, &bytes)
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(io_err("creating", &tmp))?;
    f.write_all(bytes).map_err(io_err("writing", &tmp))?;
    f.sync_all().map_err(io_err("syncing", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("renaming", &tmp))
}

/// All containers under a state root.
#[derive(Debug, Clone)]
pub struct Containers {
    root: PathBuf,
}

impl Containers {
    pub fn new(state_root: &Path) -> Containers {
        Containers { root: state_root.to_path_buf() }
    }

    pub fn dir_of(&self, id: &str) -> ContainerDir {
        ContainerDir { dir: self.root.join("containers").join(id) }
    }

    fn names_dir(&self) -> PathBuf {
        self.root.join("names")
    }

    /// Ids of every container, sorted by creation (oldest first).
    pub fn ids(&self) -> Result<Vec<String>, StateError> {
        let dir = self.root.join("containers");
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("listing", &dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("listing", &dir))?;
            let created = entry.metadata().and_then(|m| m.modified()).ok();
            out.push((created, entry.file_name().to_string_lossy().into_owned()));
        }
        out.sort();
        Ok(out.into_iter().map(|(_, id)| id).collect())
    }

    /// Finds a container by name, full id or unique id prefix.
    pub fn find(&self, key: &str) -> Result<ContainerDir, StateError> {
        if !key.is_empty() && !key.contains('/') && !key.starts_with('.') {
            if let Ok(id) = fs::read_to_string(self.names_dir().join(key)) {
                let dir = self.dir_of(id.trim());
                if dir.dir.is_dir() {
                    return Ok(dir);
                }
            }
            let ids = self.ids()?;
            let matches: Vec<&String> = ids.iter().filter(|id| id.starts_with(key)).collect();
            if let [one] = matches.as_slice() {
                return Ok(self.dir_of(one));
            }
        }
        Err(StateError::NotFound(key.to_string()))
    }

    /// Reserves `name` for container `id`, atomically: a second reservation fails.
    pub fn reserve_name(&self, name: &str, id: &str) -> Result<(), StateError> {
        match Self::reserve(&self.names_dir(), name, id, self)? {
            true => Ok(()),
            false => Err(StateError::NameInUse(name.to_string())),
        }
    }

    pub fn release_name(&self, name: &str, id: &str) {
        Self::release(&self.names_dir().join(name), id);
    }

    /// Reserves the user id range starting at host id `base` for container `id`, atomically;
    /// false when another container has it.
    pub fn reserve_id_range(&self, base: u32, id: &str) -> Result<bool, StateError> {
        Self::reserve(&self.id_ranges_dir(), &base.to_string(), id, self)
    }

    pub fn release_id_range(&self, base: u32, id: &str) {
        Self::release(&self.id_ranges_dir().join(base.to_string()), id);
    }

    fn id_ranges_dir(&self) -> PathBuf {
        self.root.join("userns")
    }

    /// Creates `dir/key` holding `id` unless it exists; a reservation whose container is gone
    /// (a crash mid-create) is stale and taken over.
    fn reserve(dir: &Path, key: &str, id: &str, containers: &Containers) -> Result<bool, StateError> {
        fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        let path = dir.join(key);
        match fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                use std::io::Write;
                f.write_all(id.as_bytes()).map_err(io_err("writing", &path))?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let owner = fs::read_to_string(&path).unwrap_or_default();
                if !owner.trim().is_empty() && !containers.dir_of(owner.trim()).dir.exists() {
                    fs::remove_file(&path).map_err(io_err("removing", &path))?;
                    return Self::reserve(dir, key, id, containers);
                }
                Ok(false)
            }
            Err(e) => Err(io_err("creating", &path)(e)),
        }
    }

    fn release(path: &Path, id: &str) {
        if fs::read_to_string(path).is_ok_and(|owner| owner.trim() == id) {
            let _ = fs::remove_file(path);
        }
    }
}

/// A fresh container id: 16 hex digits.
pub fn new_id() -> String {
    format!("{:016x}", fastrand::u64(..))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: Option<i32>, signal: Option<i32>, oom: bool) -> ExitStatus {
        ExitStatus { code, signal, oom_killed: oom, finished: String::new(), error: None, disk_exceeded: None }
    }

    #[test]
    fn exit_status_maps_to_shell_codes() {
        assert_eq!(status(Some(3), None, false).shell_code(), 3);
        assert_eq!(status(None, Some(9), true).shell_code(), 137);
        assert_eq!(status(None, Some(9), true).describe(), "killed by SIGKILL, oom-killed");
        assert_eq!(status(Some(0), None, false).describe(), "exited (0)");
    }

    #[test]
    fn names_are_reserved_once_and_stale_ones_reclaimed() {
        let tmp = tempfile::tempdir().unwrap();
        let c = Containers::new(tmp.path());
        fs::create_dir_all(c.dir_of("a1").dir).unwrap();
        c.reserve_name("web", "a1").unwrap();
        assert!(matches!(c.reserve_name("web", "b2"), Err(StateError::NameInUse(n)) if n == "web"));
        assert_eq!(c.find("web").unwrap().id(), "a1");
        assert_eq!(c.find("a").unwrap().id(), "a1");
        assert!(matches!(c.find("zz"), Err(StateError::NotFound(_))));
        fs::remove_dir_all(c.dir_of("a1").dir).unwrap();
        c.reserve_name("web", "b2").unwrap();
        c.release_name("web", "a1");
        assert!(c.names_dir().join("web").exists(), "only the owner releases a name");
        c.release_name("web", "b2");
        assert!(!c.names_dir().join("web").exists());
    }

    #[test]
    fn a_container_without_a_shim_or_status_is_lost() {
        let tmp = tempfile::tempdir().unwrap();
        let c = Containers::new(tmp.path());
        let d = c.dir_of("abc");
        fs::create_dir_all(&d.dir).unwrap();
        assert_eq!(d.state().unwrap(), State::Lost);
        d.write_status(&status(Some(0), None, false)).unwrap();
        assert_eq!(d.state().unwrap(), State::Exited(status(Some(0), None, false)));
    }
}
