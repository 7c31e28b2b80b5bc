//! `corral agent`: runs tasks on one machine for the master. It registers (listing the tasks it
//! runs), heartbeats, launches tasks as corral containers (each with its own shim, so tasks
//! outlive the agent), and reports their states as status updates: numbered, kept on disk
//! until the master acknowledges them, retried across disconnects, in order.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
mod fetch;
mod forward;
pub mod gc;
mod health;
pub mod join;
mod journal;
pub mod runtime;
mod sandbox;
mod state;

use serde::Deserialize;
use tokio::sync::{Mutex, Notify};

pub use gc::GcPolicy;
pub use runtime::{FakeRuntime, Runtime, ShimRuntime};
pub use state::Observed;
use state::{AgentState, Checking, Effect, TaskEntry};

use crate::wire;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `http://host:port` of the master.
    pub master: String,
    pub listen: SocketAddr,
    /// How the master reaches this agent (default: `http://<listen>`).
    pub advertise: Option<String>,
    /// A resource spec; what it leaves out is detected (cpus, mem, disk).
    pub resources: Option<String>,
    pub attributes: String,
    /// The name constraints match as `hostname` (default: the machine's).
    pub hostname: Option<String>,
    /// corral's state root: images and containers (shared with the CLI on this machine).
    pub state_root: PathBuf,
    /// The agent's own records: its id, tasks and unacknowledged updates.
    pub work_dir: PathBuf,
    pub corral_exe: PathBuf,
    /// Where task images are pulled from: the search list for references that name no
    /// registry, plain-HTTP registries, credentials.
    pub registries: corral_registry::Registries,
    /// What ended is kept how long: containers, sandboxes, images.
    pub gc: GcPolicy,
    /// Whether tasks with an image get a user namespace of their own (`--userns`).
    pub userns: corral_runtime::create::Userns,
    /// Plain HTTP both ways, no certificates (`--insecure-dev`): only on a loopback address.
    pub dev: bool,
    /// The join token, for the first start (or a new address).
    pub join_token: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid --resources: {0}")]
    Resources(String),
    #[error("invalid --attributes: {0}")]
    Attributes(String),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("joining the cluster: {0}")]
    Join(String),
    #[error("--insecure-dev serves plain HTTP without authentication, so only on a loopback address, not {0}")]
    DevNotLoopback(SocketAddr),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

struct Inner {
    config: AgentConfig,
    agent_id: Option<wire::AgentId>,
    /// The decisions: tasks and the updates not yet acknowledged.
    state: AgentState,
    /// The updates' log on disk: appended to, never rewritten per update.
    journal: journal::Journal,
}

#[derive(Clone)]
struct Agent {
    inner: Arc<Mutex<Inner>>,
    /// The agent's client of its master (calls that take longer than 10 s are retried).
    master: corral_client::Client,
    wake: Arc<Notify>,
    resources: String,
    runtime: Arc<dyn Runtime>,
    /// Port forwarders of running tasks, by task id (dropped when the task ends).
    forwards: Arc<std::sync::Mutex<BTreeMap<String, forward::Forwarder>>>,
    /// Permits for container starts in flight.
    starts: Arc<tokio::sync::Semaphore>,
    /// The agent's work directory (sandboxes live under it).
    work_dir: PathBuf,
    gc: GcPolicy,
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> AgentError {
    let path = path.to_path_buf();
    move |source| AgentError::Io { action, path, source }
}

impl Inner {
    /// Writes down what the last decision changed: new updates are appended to the journal;
    /// the task records are saved only when they changed in a way a restart must see.
    fn flush(&mut self) -> bool {
        let fresh = self.state.take_fresh();
        for u in &fresh {
            self.journal.queued(u);
        }
        if self.state.take_dirty() {
            self.save();
        }
        !fresh.is_empty()
    }

    /// Persists the task records and the agent's id.
    fn save(&self) {
        let w = &self.config.work_dir;
        let write = |name: &str, bytes: Vec<u8>| {
            let tmp = w.join(format!("{name}.tmp"));
            if std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, w.join(name))).is_err() {
                tracing::error!(file = name, "could not persist agent state");
            }
        };
        write("tasks.json", serde_json::to_vec(&self.state.tasks).expect("serializes"));
        if let Some(id) = &self.agent_id {
            write("agent_id", id.to_string().into_bytes());
        }
    }
}

/// Detects cpus, mem (MiB, less 512 for the system) and disk (MiB free under the state root),
/// offers host ports 31000-32000 (as Mesos agents do),
/// then applies what `spec` says.
fn machine_resources(spec: Option<&str>, root: &Path) -> Result<String, AgentError> {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| {
                l.strip_prefix("MemTotal:").map(|v| v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0))
            })
        })
        .unwrap_or(0);
    let disk_mb = nix::sys::statvfs::statvfs(root)
        // The field types differ between platforms; u64 holds them all.
        .map(|s| {
            #[allow(clippy::unnecessary_cast)]
            let (blocks, size) = (s.blocks_available() as u64, s.fragment_size() as u64);
            (blocks * size) >> 20
        })
        .unwrap_or(0);
    let detected =
        format!("cpus:{cpus};mem:{};disk:{disk_mb};ports:[31000-32000]", (mem_kb / 1024).saturating_sub(512));
    let given = corral_alloc::Resources::parse(spec.unwrap_or("")).map_err(|e| AgentError::Resources(e.to_string()))?;
    let mut out = given.clone();
    for item in detected.split(';') {
        let name = item.split(':').next().unwrap_or("");
        if !given.iter().any(|(n, _, _)| n == name) {
            out = out.plus(&corral_alloc::Resources::parse(item).map_err(|e| AgentError::Resources(e.to_string()))?);
        }
    }
    Ok(out.to_string())
}

pub async fn run(config: AgentConfig) -> Result<(), AgentError> {
    if config.dev && !config.listen.ip().is_loopback() {
        return Err(AgentError::DevNotLoopback(config.listen));
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| AgentError::Listen { addr: config.listen, source })?;
    serve(listener, config).await
}

pub async fn serve(listener: tokio::net::TcpListener, config: AgentConfig) -> Result<(), AgentError> {
    let runtime = ShimRuntime {
        root: config.state_root.clone(),
        exe: config.corral_exe.clone(),
        puller: corral_registry::Puller::new(config.registries.clone()),
        userns: config.userns,
    };
    serve_with(listener, config, Arc::new(runtime)).await
}

/// Serves with any runtime (the shim, or a fake in tests).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    config: AgentConfig,
    runtime: Arc<dyn Runtime>,
) -> Result<(), AgentError> {
    std::fs::create_dir_all(&config.work_dir).map_err(io_err("creating", &config.work_dir))?;
    corral_alloc::attributes::parse(&config.attributes).map_err(|e| AgentError::Attributes(e.to_string()))?;
    let resources = machine_resources(config.resources.as_deref(), &config.state_root)?;
    let read = |name: &str| std::fs::read(config.work_dir.join(name)).ok();
    let agent_id = read("agent_id").and_then(|b| String::from_utf8(b).ok()).map(wire::AgentId::from);
    let tasks: BTreeMap<wire::TaskId, TaskEntry> =
        read("tasks.json").and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    let (journal, pending) = journal::Journal::open(&config.work_dir);
    let local = listener.local_addr().map_err(|source| AgentError::Listen { addr: config.listen, source })?;
    let mut config = config;
    let scheme = if config.dev { "http" } else { "https" };
    if config.advertise.is_none() {
        config.advertise = Some(format!("{scheme}://{local}"));
    }
    let (master, tls, agent_id) = if config.dev {
        (corral_client::Client::new(&config.master), None, agent_id)
    } else {
        let advertised = config.advertise.clone().unwrap_or_default();
        let host = corral_client::url_host(&advertised).to_string();
        let mut hosts = crate::pki::server_names(local.ip(), &[]);
        if !host.is_empty() && !hosts.contains(&host) {
            hosts.push(host);
        }
        let (work, master, token) = (config.work_dir.clone(), config.master.clone(), config.join_token.clone());
        let joined = tokio::task::spawn_blocking(move || join::credentials(&work, &master, &hosts, token.as_deref()))
            .await
            .map_err(|e| AgentError::Join(e.to_string()))??;
        let client = corral_client::Client::with_credentials(&config.master, joined.credentials())
            .map_err(|e| AgentError::Join(e.to_string()))?;
        (client, Some(joined.server_config()?), Some(joined.agent_id))
    };
    let master = master.timeout(Some(Duration::from_secs(10)));
    let state = AgentState::new(tasks, pending);
    let (work_dir, gc) = (config.work_dir.clone(), config.gc);
    let agent = Agent {
        work_dir,
        gc,
        inner: Arc::new(Mutex::new(Inner { config, agent_id, state, journal })),
        master,
        wake: Arc::new(Notify::new()),
        resources,
        runtime,
        forwards: Default::default(),
        starts: Arc::new(tokio::sync::Semaphore::new(MAX_STARTS)),
    };
    agent.recover().await;
    tokio::spawn(agent.clone().heartbeats());
    tokio::spawn(agent.clone().send_updates());
    tokio::spawn(agent.clone().watch_all());
    tokio::spawn(agent.clone().collect_garbage());
    tracing::info!(addr = %local, "agent listening");
    let app = Router::new()
        .route("/api/v1/tasks", post(launch))
        .route("/api/v1/tasks/batch", post(launch_batch))
        .route("/api/v1/tasks/{id}/kill", post(kill))
        .route("/api/v1/tasks/{id}/logs", get(logs))
        .route("/api/v1/tasks/{id}/files", get(files))
        .route("/health", get(|| async { "ok" }))
        .with_state(agent);
    crate::https::serve(listener, tls, app).await.map_err(|source| AgentError::Listen { addr: local, source })
}

impl Agent {
    /// Runs one decision on the state, writes down what it changed, and wakes the update
    /// sender if it queued any.
    async fn decide<T>(&self, f: impl FnOnce(&mut AgentState) -> T) -> T {
        let mut i = self.inner.lock().await;
        let value = f(&mut i.state);
        let queued = i.flush();
        drop(i);
        if queued {
            self.wake.notify_one();
        }
        value
    }

    /// Runs a blocking runtime call off the async workers.
    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&dyn Runtime) -> T + Send + 'static) -> Option<T> {
        let runtime = self.runtime.clone();
        tokio::task::spawn_blocking(move || f(&*runtime)).await.ok()
    }

    /// Carries out what a decision asked for. (Boxed: a start's effects may start more work
    /// that carries out effects.)
    fn carry_out(&self, effects: Vec<Effect>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            for effect in effects {
                match effect {
                    Effect::Start(launch) => {
                        tokio::spawn(start_task(self.clone(), *launch));
                    }
                    Effect::Stop { task, container } => {
                        tracing::info!(task = %task, container = %container, "stopping a task");
                        if let Some(Err(e)) = self.blocking(move |r| r.stop(&container)).await {
                            tracing::warn!(task = %task, error = %e, "could not stop the task's container");
                        }
                    }
                    Effect::Forward { task, container } => {
                        let mappings = self.mappings(&task).await;
                        let runtime = self.runtime.clone();
                        let netns = runtime.netns(&container);
                        let result = match netns {
                            Some(netns) => self.start_forwarding(&task, &netns, &mappings),
                            None => Err(std::io::Error::other("the task has no network namespace of its own")),
                        };
                        if let Err(e) = result {
                            let message = format!("forwarding host ports {mappings:?}: {e}");
                            tracing::warn!(task = %task, %message, "stopping the task");
                            let stop = self.decide(|s| s.forward_failed(&task, &container, message)).await;
                            self.carry_out(stop).await;
                        }
                    }
                    Effect::Unforward { task } => {
                        self.forwards.lock().expect("not poisoned").remove(&task);
                    }
                    Effect::HealthChecks { task } => {
                        let checks = self.inner.lock().await.state.tasks.get(&task).map(|t| t.health_checks.clone());
                        tokio::spawn(self.clone().health_loop(task, checks.unwrap_or_default()));
                    }
                    Effect::Remove { task, container } => {
                        let Some(sandbox) = sandbox::of(&self.work_dir, &task) else { continue };
                        if container.is_empty() {
                            continue;
                        }
                        let removed = self
                            .blocking(move |r| {
                                std::fs::create_dir_all(&sandbox).map_err(|e| e.to_string())?;
                                r.remove(&container, &sandbox)
                            })
                            .await;
                        match removed {
                            Some(Ok(())) => tracing::info!(task = %task, "removed the ended task's container"),
                            other => {
                                tracing::warn!(task = %task, result = ?other, "could not remove the ended task's container")
                            }
                        }
                    }
                    Effect::ReadinessChecks { task } => {
                        let checks = self.inner.lock().await.state.tasks.get(&task).map(|t| t.readiness_checks.clone());
                        tokio::spawn(self.clone().readiness_loop(task, checks.unwrap_or_default()));
                    }
                }
            }
        })
    }

    /// Every few seconds: ended tasks past their retention are forgotten and their containers
    /// removed, old sandboxes deleted, and images removed if the disk is too full.
    async fn collect_garbage(self) {
        loop {
            tokio::time::sleep(GC_INTERVAL).await;
            let now_ms =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            let policy = self.gc;
            let effects = self.decide(|s| s.collect(now_ms, &policy)).await;
            self.carry_out(effects).await;
            let known: std::collections::HashSet<String> =
                self.inner.lock().await.state.tasks.keys().map(|k| k.to_string()).collect();
            let root = sandbox::root(&self.work_dir);
            self.blocking(move |r| {
                let mut old = Vec::new();
                for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
                    let name = e.file_name().to_string_lossy().to_string();
                    let modified = e.metadata().and_then(|m| m.modified()).ok();
                    let at = modified.and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok());
                    if !known.contains(&name) {
                        old.push((e.path(), at.map_or(0, |d| d.as_millis() as u64)));
                    }
                }
                for dir in gc::expired(&old, now_ms, policy.sandbox_retention, policy.max_sandboxes) {
                    if let Err(e) = std::fs::remove_dir_all(&dir) {
                        tracing::warn!(sandbox = %dir.display(), error = %e, "could not remove an old sandbox");
                    }
                }
                if let Err(e) = r.collect_images(&policy) {
                    tracing::warn!(error = %e, "could not collect unused images");
                }
            })
            .await;
        }
    }

    async fn mappings(&self, task: &str) -> Vec<wire::PortForward> {
        self.inner.lock().await.state.tasks.get(task).map(|t| t.port_forwards.clone()).unwrap_or_default()
    }

    /// After a restart: tasks whose containers still run are watched again; those that ended
    /// meanwhile are reported with their real exit status (by the watcher).
    async fn recover(&self) {
        let entries: Vec<(wire::TaskId, String)> = {
            let i = self.inner.lock().await;
            i.state
                .tasks
                .values()
                .filter(|t| !t.state.is_terminal())
                .map(|t| (t.task_id.clone(), t.container_id.clone()))
                .collect()
        };
        for (task, container) in entries {
            let looked = self
                .blocking(move |r| {
                    let found = if container.is_empty() { r.find(&task) } else { None };
                    let container = found.clone().unwrap_or(container);
                    let observed = (!container.is_empty()).then(|| r.observe(&container));
                    (task, found, observed)
                })
                .await;
            let Some((task, found, observed)) = looked else { continue };
            if let Some(c) = &found {
                tracing::info!(task = %task, container = %c, "found the container of a task whose start was cut short");
            }
            if observed == Some(Observed::Running) {
                tracing::info!(task = %task, "reattached to a running task");
            }
            let effects = self.decide(|s| s.recovered(&task, found, observed)).await;
            self.carry_out(effects).await;
        }
        self.wake.notify_one();
    }

    /// Watches every task's container, in one loop: a task whose container ended is reported
    /// with how it ended; one whose monitor vanished without a word is lost. (One loop, not a
    /// waiter per task: inotify instances are limited per user, and an agent may run thousands
    /// of tasks.)
    async fn watch_all(self) {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tick.tick().await;
            let live: Vec<(wire::TaskId, String)> = {
                let i = self.inner.lock().await;
                i.state
                    .tasks
                    .values()
                    .filter(|t| !t.state.is_terminal() && !t.container_id.is_empty())
                    .map(|t| (t.task_id.clone(), t.container_id.clone()))
                    .collect()
            };
            if live.is_empty() {
                continue;
            }
            let ended = self
                .blocking(move |r| {
                    live.into_iter()
                        .map(|(task, container)| (task, r.observe(&container)))
                        .filter(|(_, o)| *o != Observed::Running)
                        .collect::<Vec<_>>()
                })
                .await
                .unwrap_or_default();
            if ended.is_empty() {
                continue;
            }
            let effects =
                self.decide(|s| ended.into_iter().flat_map(|(task, o)| s.observed(&task, o)).collect::<Vec<_>>()).await;
            self.carry_out(effects).await;
        }
    }

    async fn register(&self) -> Option<(wire::AgentId, u64, Vec<wire::TaskId>)> {
        let req = {
            let i = self.inner.lock().await;
            wire::Register {
                agent_id: i.agent_id.clone(),
                hostname: i.config.hostname.clone().unwrap_or_else(|| {
                    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default()
                }),
                address: i.config.advertise.clone().unwrap_or_default(),
                resources: self.resources.clone(),
                attributes: i.config.attributes.clone(),
                tasks: i.state.all_tasks(),
            }
        };
        let master = self.master.clone();
        let reply = tokio::task::spawn_blocking(move || master.register(&req)).await.ok()?;
        match reply {
            Ok(r) => {
                let mut i = self.inner.lock().await;
                i.agent_id = Some(r.agent_id.clone());
                i.save();
                tracing::info!(agent = %r.agent_id, "registered with the master");
                Some((r.agent_id, r.heartbeat_interval_ms, r.kill))
            }
            Err(e) => {
                tracing::warn!(error = %e, "registration failed; retrying");
                None
            }
        }
    }

    /// Registers, then heartbeats; registers again whenever the master does not know us.
    async fn heartbeats(self) {
        let mut registered: Option<(wire::AgentId, u64)> = None;
        let mut retry = tokio::time::interval(Duration::from_millis(500));
        let mut beat = tokio::time::interval(Duration::from_millis(1000));
        loop {
            match &registered {
                None => {
                    if let Some((id, interval, kill)) = self.register().await {
                        for t in kill {
                            self.kill_task(&t).await;
                        }
                        beat = tokio::time::interval(Duration::from_millis(interval));
                        beat.tick().await;
                        registered = Some((id, interval));
                        self.wake.notify_one();
                    } else {
                        retry.tick().await;
                    }
                }
                Some((id, _)) => {
                    beat.tick().await;
                    let beat = {
                        let i = self.inner.lock().await;
                        wire::Heartbeat { tasks: Some(i.state.reconcile_list()) }
                    };
                    let (id, master) = (id.clone(), self.master.clone());
                    let known = tokio::task::spawn_blocking(move || master.heartbeat(&id, &beat)).await;
                    match known {
                        Ok(Ok(true)) => {}
                        Ok(Ok(false)) => registered = None,
                        _ => tracing::debug!("heartbeat failed; the master may be away"),
                    }
                }
            }
        }
    }

    /// Sends queued status updates, oldest first, until each is acknowledged.
    async fn send_updates(self) {
        loop {
            let batch = {
                let i = self.inner.lock().await;
                match &i.agent_id {
                    Some(id) if !i.state.pending.updates.is_empty() => Some((
                        (self.master.clone(), id.clone()),
                        i.state.pending.updates.iter().cloned().collect::<Vec<_>>(),
                    )),
                    _ => None,
                }
            };
            let Some(((master, id), updates)) = batch else {
                let _ = tokio::time::timeout(Duration::from_millis(500), self.wake.notified()).await;
                continue;
            };
            let body = wire::Updates { updates };
            let result = tokio::task::spawn_blocking(move || master.updates(&id, &body)).await;
            match result {
                Ok(Ok(acked)) => {
                    tracing::debug!(acked = ?acked.acked, "status updates acknowledged");
                    let mut i = self.inner.lock().await;
                    i.state.acked(&acked.acked);
                    let Inner { state, journal, .. } = &mut *i;
                    journal.acked(&acked.acked, &state.pending);
                }
                _ => {
                    let _ = tokio::time::timeout(Duration::from_millis(500), self.wake.notified()).await;
                }
            }
        }
    }

    /// Runs a task's health checks until it stops running. Failures before the first success
    /// and within the grace period do not count (Marathon's rule).
    async fn health_loop(self, task_id: String, checks: Vec<wire::HealthCheck>) {
        let started = std::time::Instant::now();
        let interval = Duration::from_millis(checks.iter().map(|c| c.interval_ms).min().unwrap_or(1000).max(100));
        let grace = Duration::from_millis(checks.iter().map(|c| c.grace_period_ms).max().unwrap_or(0));
        let mut ever_passed = false;
        let mut last_passed = false;
        let mut every = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            every.tick().await;
            let container = {
                let i = self.inner.lock().await;
                match i.state.checking(&task_id) {
                    Checking::Yes => i.state.tasks[&task_id].container_id.clone(),
                    Checking::NotYet => continue,
                    Checking::Done => return,
                }
            };
            let probes = checks.clone();
            let result = self
                .blocking(move |r| {
                    let pid = r.init_pid(&container);
                    probes.iter().try_for_each(|c| health::probe(c, pid))
                })
                .await
                .unwrap_or_else(|| Err("the check did not finish".into()));
            if result.is_err() && !ever_passed && started.elapsed() < grace {
                continue;
            }
            ever_passed |= result.is_ok();
            // Passing is reported when it starts; every failure is reported (the master counts).
            if result.is_ok() && last_passed {
                continue;
            }
            last_passed = result.is_ok();
            if let Err(why) = &result {
                tracing::info!(task = %task_id, reason = %why, "health check failed");
            }
            self.decide(|s| s.health(&task_id, result.is_ok(), result.err())).await;
        }
    }

    /// Forwards a task's mapped host ports into its network namespace.
    fn start_forwarding(&self, task_id: &str, netns: &Path, mappings: &[wire::PortForward]) -> std::io::Result<()> {
        if mappings.is_empty() {
            return Ok(());
        }
        let f = forward::start(netns, mappings)?;
        self.forwards.lock().expect("not poisoned").insert(task_id.to_string(), f);
        Ok(())
    }

    /// Runs a task's readiness checks until they all pass once, then reports it ready.
    async fn readiness_loop(self, task_id: String, checks: Vec<wire::HealthCheck>) {
        let interval = Duration::from_millis(checks.iter().map(|c| c.interval_ms).min().unwrap_or(1000).max(100));
        let mut every = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            every.tick().await;
            match self.inner.lock().await.state.checking(&task_id) {
                Checking::Yes => {}
                Checking::NotYet => continue,
                Checking::Done => return,
            }
            let probes = checks.clone();
            let ready = tokio::task::spawn_blocking(move || probes.iter().try_for_each(|c| health::probe(c, None)))
                .await
                .is_ok_and(|r| r.is_ok());
            if ready {
                self.decide(|s| s.ready(&task_id)).await;
                return;
            }
        }
    }

    /// Kills a task (see [`AgentState::kill`]).
    async fn kill_task(&self, task_id: &str) {
        let effects = self.decide(|s| s.kill(task_id)).await;
        self.carry_out(effects).await;
    }
}

/// Records the task and answers at once; the container starts on a task of its own (at most
/// `MAX_STARTS` at a time), so a busy agent never makes the master's call time out, and a
/// master that disconnects (or dies) cannot cancel a launch half done. How it went comes back
/// as status updates.
async fn launch(State(agent): State<Agent>, Json(req): Json<wire::Launch>) -> (StatusCode, String) {
    match agent.decide(|s| s.launch(req)).await {
        Some(start) => {
            agent.carry_out(vec![start]).await;
            (StatusCode::ACCEPTED, "launching".to_string())
        }
        None => (StatusCode::OK, "already launched".to_string()),
    }
}

/// Several launches in one request, each as `launch` does it.
async fn launch_batch(State(agent): State<Agent>, Json(req): Json<wire::Launches>) -> StatusCode {
    for launch in req.launches {
        if let Some(start) = agent.decide(|s| s.launch(launch)).await {
            agent.carry_out(vec![start]).await;
        }
    }
    StatusCode::ACCEPTED
}

/// Container starts at once per agent: more only thrash a small machine.
const MAX_STARTS: usize = 4;

/// How often ended tasks, sandboxes and images are looked at.
const GC_INTERVAL: Duration = Duration::from_secs(5);

async fn start_task(agent: Agent, req: wire::Launch) {
    let Ok(_permit) = agent.starts.clone().acquire_owned().await else { return };
    let task_id = req.task_id.clone();
    if !agent.decide(|s| s.may_start(&task_id)).await {
        return;
    }
    let sandbox = match sandbox::create(&agent.work_dir, &task_id) {
        Ok(dir) => dir,
        Err(e) => {
            let message = format!("creating the task's sandbox: {e}");
            agent.decide(|s| s.prepare_failed(&task_id, message)).await;
            return;
        }
    };
    // Its image and artifacts first: progress comes back as STAGING with a reason; a failure
    // fails the task.
    let (progress_tx, mut progress_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let reporter = {
        let (agent, task_id) = (agent.clone(), task_id.clone());
        tokio::spawn(async move {
            while let Some(message) = progress_rx.recv().await {
                agent.decide(|s| s.preparing(&task_id, message)).await;
            }
        })
    };
    let launch = Arc::new(req);
    let prepared = {
        let (launch, sandbox) = (launch.clone(), sandbox.clone());
        agent
            .blocking(move |r| {
                let progress = |m: &str| {
                    let _ = progress_tx.send(m.to_string());
                };
                r.prepare(&launch, &progress)?;
                fetch::fetch_all(&launch.fetch, &sandbox, &progress)
            })
            .await
            .unwrap_or_else(|| Err("getting the task's image and artifacts panicked".into()))
    };
    let _ = reporter.await;
    if let Err(message) = prepared {
        tracing::info!(task = %task_id, %message, "task could not get what it needs");
        agent.decide(|s| s.prepare_failed(&task_id, message)).await;
        return;
    }
    if !agent.decide(|s| s.prepared(&task_id)).await {
        return;
    }
    let started =
        agent.blocking(move |r| r.start(&launch, &sandbox)).await.unwrap_or_else(|| Err("the start panicked".into()));
    let effects = match started {
        Ok(container) => {
            tracing::info!(task = %task_id, container = %container, "task started");
            agent.decide(|s| s.started(&task_id, &container)).await
        }
        Err(message) => {
            tracing::info!(task = %task_id, %message, "task did not start");
            agent.decide(|s| s.start_failed(&task_id, message)).await;
            Vec::new()
        }
    };
    agent.carry_out(effects).await;
}

async fn kill(State(agent): State<Agent>, UrlPath(id): UrlPath<String>) -> impl IntoResponse {
    agent.kill_task(&id).await;
    (StatusCode::ACCEPTED, String::new())
}

/// A response whose body `produce` writes, off the async workers, as it goes; an error ends
/// the body.
fn streamed(
    produce: impl FnOnce(&mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> + Send + 'static,
) -> axum::response::Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(64);
    tokio::task::spawn_blocking(move || {
        let mut sink = |bytes: &[u8]| -> std::io::Result<()> {
            tx.blocking_send(Ok(bytes.to_vec())).map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        };
        if let Err(e) = produce(&mut sink) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    axum::response::Response::new(axum::body::Body::from_stream(crate::chunks::ChunkStream(rx)))
}

/// What a sandbox request is answered with.
enum Served {
    Entries(Vec<wire::SandboxEntry>),
    File(std::fs::File),
    Bytes(Vec<u8>),
}

#[derive(Deserialize)]
struct FilesQuery {
    #[serde(default)]
    path: String,
    /// A file's bytes, instead of its entry.
    #[serde(default)]
    download: bool,
}

/// What is in a task's sandbox, as Mesos's `files/browse` and `files/download` serve it: a
/// directory's entries or a file's own (JSON), or with `download=true` a file's bytes.
async fn files(
    State(agent): State<Agent>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<FilesQuery>,
) -> axum::response::Response {
    let Some(dir) = sandbox::of(&agent.work_dir, &id).filter(|d| d.is_dir()) else {
        return (StatusCode::NOT_FOUND, format!("no sandbox for task {id:?} on this agent")).into_response();
    };
    // While its container is there, its output is `stdout` and `stderr` (as Mesos sandboxes
    // have them); once removed, those files are in the sandbox itself.
    let container =
        agent.inner.lock().await.state.tasks.get(&id).map(|t| t.container_id.clone()).filter(|c| !c.is_empty());
    let runtime = agent.runtime.clone();
    let found = tokio::task::spawn_blocking(move || -> std::io::Result<Served> {
        let path = q.path.trim_matches('/');
        let output = match &container {
            Some(c) if matches!(path, "" | "stdout" | "stderr") => Some(runtime.output(c)?),
            _ => None,
        };
        let virtual_entry = |name: &str, size: usize| wire::SandboxEntry {
            path: name.to_string(),
            size: size as u64,
            mode: "-r--r--r--".into(),
            mtime: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64),
        };
        if let Some((out, err)) = &output {
            if matches!(path, "stdout" | "stderr") && dir.join(path).symlink_metadata().is_err() {
                let bytes = if path == "stdout" { out.clone() } else { err.clone() };
                return Ok(if q.download {
                    Served::Bytes(bytes)
                } else {
                    Served::Entries(vec![virtual_entry(path, bytes.len())])
                });
            }
        }
        Ok(match sandbox::open(&dir, &q.path)? {
            sandbox::Found::Dir(_) if q.download => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "a directory has no bytes to download",
                ))
            }
            sandbox::Found::Dir(mut entries) => {
                if let (Some((out, err)), "") = (&output, path) {
                    for (name, bytes) in [("stdout", out), ("stderr", err)] {
                        if !entries.iter().any(|e| e.path == name) {
                            entries.push(virtual_entry(name, bytes.len()));
                        }
                    }
                    entries.sort_by(|a, b| a.path.cmp(&b.path));
                }
                Served::Entries(entries)
            }
            sandbox::Found::File(_, entry) if !q.download => Served::Entries(vec![entry]),
            sandbox::Found::File(f, _) => Served::File(f),
        })
    })
    .await;
    match found {
        Ok(Ok(Served::Entries(entries))) => Json(entries).into_response(),
        Ok(Ok(Served::Bytes(bytes))) => (StatusCode::OK, bytes).into_response(),
        Ok(Ok(Served::File(mut file))) => streamed(move |sink| {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match std::io::Read::read(&mut file, &mut buf)? {
                    0 => return Ok(()),
                    n => sink(&buf[..n])?,
                }
            }
        }),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            (StatusCode::NOT_FOUND, format!("no such file in the sandbox of {id}")).into_response()
        }
        Ok(Err(e)) => (StatusCode::BAD_REQUEST, format!("sandbox of {id}: {e}")).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "reading the sandbox failed".to_string()).into_response(),
    }
}

#[derive(Deserialize)]
struct LogsQuery {
    #[serde(default)]
    follow: bool,
}

/// The task's output (stdout and stderr interleaved), following it when asked; once its
/// container is removed, what its sandbox kept (stdout, then stderr).
async fn logs(
    State(agent): State<Agent>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<LogsQuery>,
) -> axum::response::Response {
    let container = {
        let i = agent.inner.lock().await;
        match i.state.tasks.get(&id) {
            Some(t) if !t.container_id.is_empty() => Some(t.container_id.clone()),
            _ => None,
        }
    };
    let Some(container) = container else {
        let kept = sandbox::of(&agent.work_dir, &id).and_then(|dir| {
            let out = std::fs::read(dir.join("stdout")).ok()?;
            let err = std::fs::read(dir.join("stderr")).unwrap_or_default();
            Some([out, err].concat())
        });
        return match kept {
            Some(bytes) => (StatusCode::OK, bytes).into_response(),
            None => (StatusCode::NOT_FOUND, format!("no such task on this agent: {id:?}")).into_response(),
        };
    };
    let runtime = agent.runtime.clone();
    streamed(move |sink| runtime.logs(&container, q.follow, sink))
}
