//! What the agent does to containers, behind one trait: [`ShimRuntime`] is the real one (each
//! task a corral container with its own shim, created and started by `create::launch`, the same
//! path as `corral run`), [`FakeRuntime`] plays containers in memory for tests that need no
//! root (exit after N ms with code C, or fail to start). Every method blocks: the agent calls them
//! off its async workers.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_runtime::create::{self, CreateRequest};
use corral_runtime::state::{Containers, EtcFiles, State as CState};

use super::gc::{self, GcPolicy};
use super::state::Observed;
use crate::wire;

pub trait Runtime: Send + Sync + 'static {
    /// Gets what a task needs before its container can be made (its image, pulled as its
    /// launch says), telling `progress` how it goes. The error names what is missing and why.
    fn prepare(&self, launch: &wire::Launch, progress: &(dyn Fn(&str) + Sync)) -> Result<(), String>;

    /// Creates and starts a task's container, named by the task's id, with its sandbox (an
    /// existing directory) as its working directory (`/sandbox`) when it has no image, else at
    /// `/mnt/mesos/sandbox`; returns its id.
    fn start(&self, launch: &wire::Launch, sandbox: &Path) -> Result<String, String>;

    /// A container's output so far: stdout and stderr, apart.
    fn output(&self, container: &str) -> std::io::Result<(Vec<u8>, Vec<u8>)>;

    /// Removes an ended container, first writing its output into `keep_output_in` as `stdout`
    /// and `stderr` files.
    fn remove(&self, container: &str, keep_output_in: &Path) -> Result<(), String>;

    /// Removes images as the policy says when the disk is too full; returns those removed.
    fn collect_images(&self, policy: &GcPolicy) -> Result<Vec<String>, String>;

    /// Asks a container to stop (its grace period, then SIGKILL).
    fn stop(&self, container: &str) -> Result<(), String>;

    /// How a container is doing.
    fn observe(&self, container: &str) -> Observed;

    /// The container created for a task, by the task's id, if there is one (the agent may
    /// have stopped between creating it and recording its id).
    fn find(&self, task_id: &str) -> Option<String>;

    /// The container's network namespace, for port forwarding (`None`: it has none).
    fn netns(&self, container: &str) -> Option<PathBuf>;

    /// The pid of its first process, for checks that run in its namespaces.
    fn init_pid(&self, container: &str) -> Option<i32>;

    /// Its output, entry by entry, following it while it runs when `follow`.
    fn logs(
        &self,
        container: &str,
        follow: bool,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()>;
}

/// Tasks as corral containers under a state root, each with its own shim; images not in the
/// store are pulled from their registry first (one pull per image at a time).
pub struct ShimRuntime {
    pub root: PathBuf,
    pub exe: PathBuf,
    pub puller: corral_registry::Puller,
    pub userns: corral_runtime::create::Userns,
}

impl Runtime for ShimRuntime {
    fn prepare(&self, req: &wire::Launch, progress: &(dyn Fn(&str) + Sync)) -> Result<(), String> {
        let Some(image) = &req.image else { return Ok(()) };
        let store = corral_image::Store::open(&self.root).map_err(|e| e.to_string())?;
        let policy = match req.pull {
            wire::Pull::Missing => corral_registry::PullPolicy::Missing,
            wire::Pull::Always => corral_registry::PullPolicy::Always,
            wire::Pull::Never => corral_registry::PullPolicy::Never,
        };
        self.puller.ensure_reporting(&store, image, policy, progress)
    }

    fn start(&self, req: &wire::Launch, sandbox: &Path) -> Result<String, String> {
        let store = corral_image::Store::open(&self.root).map_err(|e| e.to_string())?;
        let image = req
            .image
            .as_deref()
            .map(|i| i.parse::<corral_image::Reference>().map_err(|e| e.to_string()))
            .transpose()?;
        let mut env: Vec<(String, String)> = req.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let at = if req.image.is_some() { MESOS_SANDBOX } else { corral_runtime::spec::SANDBOX_PATH };
        env.push(("MESOS_SANDBOX".into(), at.into()));
        let mut volumes =
            vec![corral_runtime::parse::Volume { host: sandbox.into(), container: at.into(), readonly: false }];
        for v in &req.volumes {
            if !std::path::Path::new(&v.host).exists() {
                return Err(format!("volume host path {} does not exist on this agent", v.host));
            }
            volumes.push(corral_runtime::parse::Volume {
                host: v.host.clone().into(),
                container: v.container.clone().into(),
                readonly: v.read_only,
            });
        }
        let request = CreateRequest {
            name: Some(req.task_id.to_string()),
            image,
            command: req.command.clone(),
            cpus: Some(req.cpus),
            mem_bytes: Some(req.mem_mb.max(6) << 20),
            env,
            user: req.user,
            user_name: req.user_name.clone(),
            volumes,
            host_network: req.host_network,
            stop_grace_secs: req.kill_grace_secs.unwrap_or(10),
            disk_bytes: (req.disk_mb > 0).then_some(req.disk_mb << 20),
            disk_paths: vec![sandbox.to_path_buf()],
            log_max_bytes: 10 << 20,
            log_max_files: 3,
            etc: EtcFiles::All,
            userns: self.userns,
            ..CreateRequest::default()
        };
        let dir = create::launch(&self.exe, &self.root, &store, request, &corral_runtime::now())
            .map_err(|e| e.to_string())?;
        Ok(dir.id())
    }

    fn output(&self, container: &str) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
        output_of(&Containers::new(&self.root).dir_of(container))
    }

    fn remove(&self, container: &str, keep_output_in: &Path) -> Result<(), String> {
        let containers = Containers::new(&self.root);
        let dir = containers.dir_of(container);
        let record = dir.read_record().map_err(|e| e.to_string())?;
        if matches!(dir.state(), Ok(CState::Running { .. } | CState::Created)) {
            return Err(format!("container {container} still runs"));
        }
        keep_output(&dir, keep_output_in).map_err(|e| format!("keeping the output of {container}: {e}"))?;
        create::remove(&containers, &dir, &record.name);
        Ok(())
    }

    fn collect_images(&self, policy: &GcPolicy) -> Result<Vec<String>, String> {
        let disk = nix::sys::statvfs::statvfs(&self.root).map_err(|e| e.to_string())?;
        #[allow(clippy::unnecessary_cast)]
        let (total, free) = (
            disk.blocks() as u64 * disk.fragment_size() as u64,
            disk.blocks_available() as u64 * disk.fragment_size() as u64,
        );
        // Most of the time there is room: nothing to read.
        if !gc::above_high_water(total.saturating_sub(free), total, policy) {
            return Ok(Vec::new());
        }
        let store = corral_image::Store::open(&self.root).map_err(|e| e.to_string())?;
        let containers = Containers::new(&self.root);
        let used_manifests = create::manifests_in_use(&containers).map_err(|e| e.to_string())?;
        let mut images = Vec::new();
        for t in store.tags().map_err(|e| e.to_string())? {
            let last_used_ms = store
                .last_used(&t.manifest)
                .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as u64);
            // Compressed layers, and about as much again unpacked.
            let bytes = store.image(&t.manifest).and_then(|i| i.layers()).map_or(0, |layers| {
                layers.iter().filter_map(|l| std::fs::metadata(store.blob_path(l)).ok()).map(|m| 2 * m.len()).sum()
            });
            let in_use = used_manifests.contains(&t.manifest);
            images.push(gc::ImageUse { reference: t.name, last_used_ms, bytes, in_use });
        }
        let chosen = gc::images_to_remove(&images, total.saturating_sub(free), total, policy);
        if chosen.is_empty() {
            return Ok(chosen);
        }
        let layers = create::layers_in_use(&containers).map_err(|e| e.to_string())?;
        for r in &chosen {
            let reference = r.parse::<corral_image::Reference>().map_err(|e| e.to_string())?;
            store.remove(&reference, &layers).map_err(|e| format!("removing image {r}: {e}"))?;
            tracing::info!(image = %r, "removed an unused image: the disk passed its high-water mark");
        }
        Ok(chosen)
    }

    fn stop(&self, container: &str) -> Result<(), String> {
        corral_runtime::control::send(&Containers::new(&self.root).dir_of(container), "stop").map_err(|e| e.to_string())
    }

    fn observe(&self, container: &str) -> Observed {
        match Containers::new(&self.root).dir_of(container).state() {
            Ok(CState::Running { .. } | CState::Created) => Observed::Running,
            Ok(CState::Exited(s)) => {
                Observed::Exited { start_failed: s.error.is_some(), code: s.shell_code(), message: s.describe() }
            }
            Ok(CState::Lost) => {
                // Reported lost, its task is replaced: what its shim left running must not go on.
                if !corral_runtime::rootfs::kill_cgroup(container) {
                    tracing::warn!(container, "processes of a lost container outlived SIGKILL");
                }
                Observed::Lost("its shim is gone".into())
            }
            Err(e) => Observed::Lost(e.to_string()),
        }
    }

    fn find(&self, task_id: &str) -> Option<String> {
        Containers::new(&self.root)
            .find(task_id)
            .ok()
            .filter(|d| d.read_record().is_ok_and(|r| r.name == task_id))
            .map(|d| d.id())
    }

    fn netns(&self, container: &str) -> Option<PathBuf> {
        Some(Containers::new(&self.root).dir_of(container).netns())
    }

    fn init_pid(&self, container: &str) -> Option<i32> {
        super::health::read_pid(&Containers::new(&self.root).dir_of(container).init_pid())
    }

    fn logs(
        &self,
        container: &str,
        follow: bool,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let dir = Containers::new(&self.root).dir_of(container);
        let done = || !matches!(dir.state(), Ok(CState::Running { .. } | CState::Created));
        let mut each = |e: &corral_runtime::logs::Entry| sink(&e.content);
        corral_runtime::logs::read(&dir.logs(), follow, done, &dir.dir, &mut each).map(|_| ())
    }
}

/// Where an image task finds its sandbox, as Mesos's Docker containerizer puts it.
pub const MESOS_SANDBOX: &str = "/mnt/mesos/sandbox";

/// Writes a container's output into `dir` as `stdout` and `stderr`.
fn keep_output(container: &corral_runtime::state::ContainerDir, dir: &Path) -> std::io::Result<()> {
    let (out, err) = output_of(container)?;
    std::fs::write(dir.join("stdout"), out)?;
    std::fs::write(dir.join("stderr"), err)
}

/// A container's output so far, stdout and stderr apart.
fn output_of(container: &corral_runtime::state::ContainerDir) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut each = |e: &corral_runtime::logs::Entry| {
        match e.stream {
            corral_runtime::logs::Stream::Stdout => out.extend_from_slice(&e.content),
            corral_runtime::logs::Stream::Stderr => err.extend_from_slice(&e.content),
        }
        Ok(())
    };
    corral_runtime::logs::read(&container.logs(), false, || true, &container.dir, &mut each)?;
    Ok((out, err))
}

/// How a fake container behaves (Nomad's mock driver has the same knobs).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FakeRun {
    /// It exits this long after it started (`None`: it runs until stopped).
    pub run_for: Option<Duration>,
    pub exit_code: i32,
    /// It fails to start with this message.
    pub start_error: Option<String>,
}

impl FakeRun {
    /// Reads the behaviour from a task's command, so a test says it where a user would:
    /// `fake exit C after MS`, `fake fail MESSAGE` (as words, or as one `/bin/sh -c` script);
    /// anything else runs until stopped.
    pub fn from_command(command: &[String]) -> FakeRun {
        let mut words: Vec<&str> = command.iter().map(String::as_str).collect();
        if let ["/bin/sh", "-c", script] = words[..] {
            words = script.split_whitespace().collect();
        }
        match words[..] {
            ["fake", "exit", code, "after", ms] => FakeRun {
                run_for: Some(Duration::from_millis(ms.parse().unwrap_or(0))),
                exit_code: code.parse().unwrap_or(1),
                start_error: None,
            },
            ["fake", "fail", ref rest @ ..] => FakeRun { start_error: Some(rest.join(" ")), ..FakeRun::default() },
            _ => FakeRun::default(),
        }
    }
}

struct FakeContainer {
    name: String,
    run: FakeRun,
    started: Instant,
    /// When it was asked to stop: it ends as if by SIGTERM.
    stopped: Option<Instant>,
}

/// How fake image pulls go: images held (a pull that waits until released) or failing.
#[derive(Default)]
struct FakePulls {
    held: HashSet<String>,
    failing: HashMap<String, String>,
}

/// Containers in memory, for tests that need no root. Clones share the containers (an agent
/// restarted in a test finds them again, as a real agent finds its shims).
#[derive(Clone, Default)]
pub struct FakeRuntime {
    pulls: Arc<Mutex<FakePulls>>,
    containers: Arc<Mutex<HashMap<String, FakeContainer>>>,
    next: Arc<Mutex<u64>>,
    /// Every task started, in order (its id).
    started: Arc<Mutex<Vec<String>>>,
}

impl FakeRuntime {
    pub fn new() -> FakeRuntime {
        FakeRuntime::default()
    }

    /// Pulls of `image` wait (reporting progress) until [`FakeRuntime::release_pulls`].
    pub fn hold_pulls(&self, image: &str) {
        self.pulls.lock().expect("not poisoned").held.insert(image.into());
    }

    pub fn release_pulls(&self, image: &str) {
        self.pulls.lock().expect("not poisoned").held.remove(image);
    }

    /// Pulls of `image` fail with `message` (`None`: they succeed again).
    pub fn fail_pulls(&self, image: &str, message: Option<&str>) {
        let mut p = self.pulls.lock().expect("not poisoned");
        match message {
            Some(m) => p.failing.insert(image.into(), m.into()),
            None => p.failing.remove(image),
        };
    }

    /// The tasks started so far, in order.
    pub fn started(&self) -> Vec<String> {
        self.started.lock().expect("not poisoned").clone()
    }

    /// How many fake containers run now.
    pub fn running(&self) -> usize {
        let ids: Vec<String> = self.containers.lock().expect("not poisoned").keys().cloned().collect();
        ids.iter().filter(|id| self.observe(id) == Observed::Running).count()
    }
}

impl Runtime for FakeRuntime {
    fn output(&self, container: &str) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
        Ok((format!("fake container {container}\n").into_bytes(), Vec::new()))
    }

    fn remove(&self, container: &str, keep_output_in: &Path) -> Result<(), String> {
        if self.observe(container) == Observed::Running {
            return Err(format!("container {container} still runs"));
        }
        std::fs::write(keep_output_in.join("stdout"), format!("fake container {container}\n"))
            .map_err(|e| e.to_string())?;
        self.containers.lock().expect("not poisoned").remove(container);
        Ok(())
    }

    fn collect_images(&self, _policy: &GcPolicy) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }

    fn prepare(&self, req: &wire::Launch, progress: &(dyn Fn(&str) + Sync)) -> Result<(), String> {
        let Some(image) = &req.image else { return Ok(()) };
        let held = || self.pulls.lock().expect("not poisoned").held.contains(image);
        if held() {
            progress(&format!("pulling {image}: 0/1 MiB"));
        }
        let until = Instant::now() + Duration::from_secs(60);
        while held() && Instant::now() < until {
            std::thread::park_timeout(Duration::from_millis(10));
        }
        match self.pulls.lock().expect("not poisoned").failing.get(image) {
            Some(m) => Err(m.clone()),
            None => Ok(()),
        }
    }

    fn start(&self, req: &wire::Launch, sandbox: &Path) -> Result<String, String> {
        if !sandbox.is_dir() {
            return Err(format!("no sandbox at {}", sandbox.display()));
        }
        let run = FakeRun::from_command(&req.command);
        if let Some(e) = run.start_error {
            return Err(e);
        }
        let id = {
            let mut next = self.next.lock().expect("not poisoned");
            *next += 1;
            format!("fake-{next}")
        };
        let c = FakeContainer { name: req.task_id.to_string(), run, started: Instant::now(), stopped: None };
        self.containers.lock().expect("not poisoned").insert(id.clone(), c);
        self.started.lock().expect("not poisoned").push(req.task_id.to_string());
        Ok(id)
    }

    fn stop(&self, container: &str) -> Result<(), String> {
        let mut all = self.containers.lock().expect("not poisoned");
        let c = all.get_mut(container).ok_or_else(|| format!("no such container: {container}"))?;
        c.stopped.get_or_insert_with(Instant::now);
        Ok(())
    }

    fn observe(&self, container: &str) -> Observed {
        let all = self.containers.lock().expect("not poisoned");
        let Some(c) = all.get(container) else { return Observed::Lost("its container is gone".into()) };
        if c.stopped.is_some() {
            return Observed::Exited { start_failed: false, code: 143, message: "killed by signal 15".into() };
        }
        match c.run.run_for {
            Some(d) if c.started.elapsed() >= d => Observed::Exited {
                start_failed: false,
                code: c.run.exit_code,
                message: format!("exited with code {}", c.run.exit_code),
            },
            _ => Observed::Running,
        }
    }

    fn find(&self, task_id: &str) -> Option<String> {
        let all = self.containers.lock().expect("not poisoned");
        all.iter().find(|(_, c)| c.name == task_id).map(|(id, _)| id.clone())
    }

    fn netns(&self, _container: &str) -> Option<PathBuf> {
        None
    }

    fn init_pid(&self, _container: &str) -> Option<i32> {
        None
    }

    fn logs(
        &self,
        container: &str,
        _follow: bool,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        sink(format!("fake container {container}\n").as_bytes())
    }
}
