//! `corral agent`: runs tasks on one machine for the master. It registers (listing the tasks it
//! runs), heartbeats, launches tasks as corral containers (each with its own shim, so tasks
//! outlive the agent), and reports their states as status updates: numbered, kept on disk
//! until the master acknowledges them, retried across disconnects, in order.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
mod forward;
mod health;
mod journal;

use corral_runtime::create::{self, CreateRequest};
use corral_runtime::state::{Containers, EtcFiles, State as CState};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, Notify};

use crate::task::TaskState;
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
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A task this agent runs, as it records it on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TaskEntry {
    task_id: String,
    container_id: String,
    kill_requested: bool,
    /// The last state reported (queued) for it.
    state: TaskState,
    /// Run by the agent while the task runs.
    #[serde(default)]
    health_checks: Vec<wire::HealthCheck>,
    /// Run until they pass once.
    #[serde(default)]
    readiness_checks: Vec<wire::HealthCheck>,
    /// Host ports forwarded into the task's network (BRIDGE).
    #[serde(default)]
    port_forwards: Vec<wire::PortForward>,
}

struct Inner {
    config: AgentConfig,
    agent_id: Option<String>,
    tasks: BTreeMap<String, TaskEntry>,
    /// Status updates not yet acknowledged, in order.
    pending: journal::Pending,
    /// Their log on disk: appended to, never rewritten per update.
    journal: journal::Journal,
}

#[derive(Clone)]
struct Agent {
    inner: Arc<Mutex<Inner>>,
    wake: Arc<Notify>,
    resources: String,
    /// Port forwarders of running tasks, by task id (dropped when the task ends).
    forwards: Arc<std::sync::Mutex<BTreeMap<String, forward::Forwarder>>>,
    /// Permits for container starts in flight.
    starts: Arc<tokio::sync::Semaphore>,
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> AgentError {
    let path = path.to_path_buf();
    move |source| AgentError::Io { action, path, source }
}

impl Inner {
    /// Persists the task records and the agent's id (when they change: not per update).
    fn save(&self) {
        let w = &self.config.work_dir;
        let write = |name: &str, bytes: Vec<u8>| {
            let tmp = w.join(format!("{name}.tmp"));
            if std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, w.join(name))).is_err() {
                tracing::error!(file = name, "could not persist agent state");
            }
        };
        write("tasks.json", serde_json::to_vec(&self.tasks).expect("serializes"));
        if let Some(id) = &self.agent_id {
            write("agent_id", id.clone().into_bytes());
        }
    }

    /// The tasks the master may still care about, for implicit reconciliation: those not
    /// ended, and those whose end the master has not acknowledged yet.
    fn reconcile_list(&self) -> Vec<wire::AgentTask> {
        let unacked: std::collections::HashSet<&str> =
            self.pending.updates.iter().map(|u| u.task_id.as_str()).collect();
        self.tasks
            .values()
            .filter(|t| !t.state.is_terminal() || unacked.contains(t.task_id.as_str()))
            .map(|t| wire::AgentTask { task_id: t.task_id.clone(), state: t.state })
            .collect()
    }

    /// Queues a health check result of a running task.
    fn report_health(&mut self, task_id: &str, healthy: bool, message: Option<String>) {
        self.report_check(task_id, Some(healthy), None, message);
    }

    /// Queues a check result (health or readiness) of a running task.
    fn report_check(&mut self, task_id: &str, healthy: Option<bool>, ready: Option<bool>, message: Option<String>) {
        let seq = self.pending.next_seq;
        self.enqueue(wire::StatusUpdate {
            healthy,
            ready,
            task_id: task_id.to_string(),
            state: TaskState::Running,
            seq,
            exit_code: None,
            message,
        });
    }

    fn enqueue(&mut self, update: wire::StatusUpdate) {
        self.pending.next_seq = update.seq + 1;
        self.journal.queued(&update);
        self.pending.updates.push_back(update);
    }

    /// Queues a status update for a task (once per state).
    fn report(&mut self, task_id: &str, state: TaskState, exit_code: Option<i32>, message: Option<String>) {
        if let Some(t) = self.tasks.get_mut(task_id) {
            if t.state == state {
                return;
            }
            t.state = state;
            self.save();
        }
        self.queue_update(task_id, state, exit_code, message);
    }

    /// Queues a status update even if the state was reported before (the master asks about a
    /// task it has not heard the end of).
    fn queue_update(&mut self, task_id: &str, state: TaskState, exit_code: Option<i32>, message: Option<String>) {
        let seq = self.pending.next_seq;
        self.enqueue(wire::StatusUpdate {
            healthy: None,
            ready: None,
            task_id: task_id.to_string(),
            state,
            seq,
            exit_code,
            message,
        });
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
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| AgentError::Listen { addr: config.listen, source })?;
    serve(listener, config).await
}

pub async fn serve(listener: tokio::net::TcpListener, config: AgentConfig) -> Result<(), AgentError> {
    std::fs::create_dir_all(&config.work_dir).map_err(io_err("creating", &config.work_dir))?;
    corral_alloc::attributes::parse(&config.attributes).map_err(|e| AgentError::Attributes(e.to_string()))?;
    let resources = machine_resources(config.resources.as_deref(), &config.state_root)?;
    let read = |name: &str| std::fs::read(config.work_dir.join(name)).ok();
    let agent_id = read("agent_id").and_then(|b| String::from_utf8(b).ok());
    let tasks: BTreeMap<String, TaskEntry> =
        read("tasks.json").and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    let (journal, pending) = journal::Journal::open(&config.work_dir);
    let local = listener.local_addr().map_err(|source| AgentError::Listen { addr: config.listen, source })?;
    let mut config = config;
    if config.advertise.is_none() {
        config.advertise = Some(format!("http://{local}"));
    }
    let agent = Agent {
        inner: Arc::new(Mutex::new(Inner { config, agent_id, tasks, pending, journal })),
        wake: Arc::new(Notify::new()),
        resources,
        forwards: Default::default(),
        starts: Arc::new(tokio::sync::Semaphore::new(MAX_STARTS)),
    };
    agent.recover().await;
    tokio::spawn(agent.clone().heartbeats());
    tokio::spawn(agent.clone().send_updates());
    tokio::spawn(agent.clone().watch_all());
    tracing::info!(addr = %local, "agent listening");
    let app = Router::new()
        .route("/api/v1/tasks", post(launch))
        .route("/api/v1/tasks/{id}/kill", post(kill))
        .route("/api/v1/tasks/{id}/logs", get(logs))
        .route("/health", get(|| async { "ok" }))
        .with_state(agent);
    axum::serve(listener, app).await.map_err(|source| AgentError::Listen { addr: local, source })
}

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent()
}

impl Agent {
    /// After a restart: tasks whose containers still run are watched again; those that ended
    /// meanwhile are reported with their real exit status.
    async fn recover(&self) {
        let (root, entries) = {
            let i = self.inner.lock().await;
            (i.config.state_root.clone(), i.tasks.values().cloned().collect::<Vec<_>>())
        };
        let containers = Containers::new(&root);
        for mut t in entries.into_iter().filter(|t| !t.state.is_terminal()) {
            if t.container_id.is_empty() {
                // The agent stopped between recording the launch and the container's id: the
                // container, if it was created, carries the task's id as its name.
                let found =
                    containers.find(&t.task_id).ok().filter(|d| d.read_record().is_ok_and(|r| r.name == t.task_id));
                match found {
                    Some(dir) => {
                        tracing::info!(task = %t.task_id, container = %dir.id(), "found the container of a task whose start was cut short");
                        t.container_id = dir.id();
                        let mut i = self.inner.lock().await;
                        if let Some(e) = i.tasks.get_mut(&t.task_id) {
                            e.container_id = t.container_id.clone();
                        }
                        i.save();
                    }
                    None => {
                        let mut i = self.inner.lock().await;
                        i.report(
                            &t.task_id,
                            TaskState::Lost,
                            None,
                            Some("the agent restarted before the task started".into()),
                        );
                        continue;
                    }
                }
            }
            let dir = containers.dir_of(&t.container_id);
            if t.kill_requested && matches!(dir.state(), Ok(CState::Running { .. } | CState::Created)) {
                // Killed, but the agent stopped before the container was: finish the kill.
                tracing::info!(task = %t.task_id, "stopping a task that was being killed");
                let stop_dir = dir.clone();
                let _ = tokio::task::spawn_blocking(move || corral_runtime::control::send(&stop_dir, "stop")).await;
                continue;
            }
            match dir.state() {
                // The watcher loop reports these when they end (or, for those that ended while
                // the agent was away, on its first pass).
                Ok(CState::Running { .. } | CState::Created) => {
                    tracing::info!(task = %t.task_id, "reattached to a running task");
                    if t.state != TaskState::Running {
                        // It started while the agent was away (or before it could say so).
                        self.inner.lock().await.report(&t.task_id, TaskState::Running, None, None);
                    }
                    if let Err(e) = self.start_forwarding(&t.task_id, &dir.netns(), &t.port_forwards) {
                        tracing::warn!(task = %t.task_id, error = %e, "could not forward the task's ports again");
                    }
                    if !t.health_checks.is_empty() {
                        tokio::spawn(self.clone().health_loop(t.task_id.clone(), t.health_checks.clone()));
                    }
                }
                Ok(CState::Exited(_)) => {}
                _ => {
                    let mut i = self.inner.lock().await;
                    i.report(&t.task_id, TaskState::Lost, None, Some("its container is gone".into()));
                }
            }
        }
        self.wake.notify_one();
    }

    /// Watches every task's container, in one loop: a task whose shim recorded an exit is
    /// reported with how it ended; one whose shim vanished without a word is lost. (One loop,
    /// not a waiter per task: inotify instances are limited per user, and an agent may run
    /// thousands of tasks.)
    async fn watch_all(self) {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tick.tick().await;
            let (root, live) = {
                let i = self.inner.lock().await;
                let live: Vec<(String, String, bool)> = i
                    .tasks
                    .values()
                    .filter(|t| !t.state.is_terminal() && !t.container_id.is_empty())
                    .map(|t| (t.task_id.clone(), t.container_id.clone(), t.kill_requested))
                    .collect();
                (i.config.state_root.clone(), live)
            };
            if live.is_empty() {
                continue;
            }
            let ended = tokio::task::spawn_blocking(move || {
                let containers = Containers::new(&root);
                live.into_iter()
                    .filter_map(|(task, container, killed)| match containers.dir_of(&container).state() {
                        Ok(CState::Exited(s)) => {
                            let state = crate::task::ended_state(killed, s.error.is_some(), s.shell_code());
                            Some((task, state, Some(s.shell_code()), Some(s.describe())))
                        }
                        Ok(CState::Lost) => Some((task, TaskState::Lost, None, Some("its shim is gone".to_string()))),
                        Ok(_) => None,
                        Err(e) => Some((task, TaskState::Lost, None, Some(e.to_string()))),
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            if ended.is_empty() {
                continue;
            }
            let mut i = self.inner.lock().await;
            for (task, state, code, message) in ended {
                self.forwards.lock().expect("not poisoned").remove(&task);
                i.report(&task, state, code, message);
            }
            drop(i);
            self.wake.notify_one();
        }
    }

    async fn register(&self) -> Option<(String, u64, Vec<String>)> {
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
                tasks: i
                    .tasks
                    .values()
                    .map(|t| wire::AgentTask { task_id: t.task_id.clone(), state: t.state })
                    .collect(),
            }
        };
        let url = format!("{}/api/v1/agents", self.inner.lock().await.config.master);
        let reply = tokio::task::spawn_blocking(move || -> Result<wire::Registered, String> {
            let mut r = http().post(&url).send_json(&req).map_err(|e| e.to_string())?;
            if !r.status().is_success() {
                return Err(r.body_mut().read_to_string().unwrap_or_default());
            }
            r.body_mut().read_json().map_err(|e| e.to_string())
        })
        .await
        .ok()?;
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
        let mut registered: Option<(String, u64)> = None;
        let mut retry = tokio::time::interval(Duration::from_millis(500));
        let mut beat = tokio::time::interval(Duration::from_millis(1000));
        loop {
            match &registered {
                None => {
                    if let Some((id, interval, kill)) = self.register().await {
                        for t in kill {
                            let _ = self.kill_task(&t).await;
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
                    let (url, beat) = {
                        let i = self.inner.lock().await;
                        let url = format!("{}/api/v1/agents/{id}/heartbeat", i.config.master);
                        (url, wire::Heartbeat { tasks: Some(i.reconcile_list()) })
                    };
                    let status = tokio::task::spawn_blocking(move || {
                        http().post(&url).send_json(&beat).map(|r| r.status().as_u16())
                    })
                    .await;
                    match status {
                        Ok(Ok(200)) => {}
                        Ok(Ok(404)) => registered = None,
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
                    Some(id) if !i.pending.updates.is_empty() => Some((
                        format!("{}/api/v1/agents/{id}/updates", i.config.master),
                        i.pending.updates.iter().cloned().collect::<Vec<_>>(),
                    )),
                    _ => None,
                }
            };
            let Some((url, updates)) = batch else {
                let _ = tokio::time::timeout(Duration::from_millis(500), self.wake.notified()).await;
                continue;
            };
            let body = wire::Updates { updates };
            let result = tokio::task::spawn_blocking(move || -> Result<wire::Acked, String> {
                let mut r = http().post(&url).send_json(&body).map_err(|e| e.to_string())?;
                if !r.status().is_success() {
                    return Err(format!("status {}", r.status()));
                }
                r.body_mut().read_json().map_err(|e| e.to_string())
            })
            .await;
            match result {
                Ok(Ok(acked)) => {
                    tracing::debug!(acked = ?acked.acked, "status updates acknowledged");
                    let mut i = self.inner.lock().await;
                    let Inner { pending, journal, .. } = &mut *i;
                    pending.updates.retain(|u| !acked.acked.contains(&u.seq));
                    journal.acked(&acked.acked, pending);
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
            let (root, container) = {
                let i = self.inner.lock().await;
                match i.tasks.get(&task_id) {
                    Some(t) if t.state == TaskState::Running && !t.kill_requested => {
                        (i.config.state_root.clone(), t.container_id.clone())
                    }
                    Some(t) if !t.state.is_terminal() && !t.kill_requested => continue,
                    _ => return,
                }
            };
            let probes = checks.clone();
            let result = tokio::task::spawn_blocking(move || {
                let pid = health::read_pid(&Containers::new(&root).dir_of(&container).init_pid());
                probes.iter().try_for_each(|c| health::probe(c, pid))
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            if result.is_err() && !ever_passed && started.elapsed() < grace {
                continue;
            }
            ever_passed |= result.is_ok();
            // Passing is reported when it starts; every failure is reported (the master counts).
            if result.is_ok() && last_passed {
                continue;
            }
            last_passed = result.is_ok();
            let mut i = self.inner.lock().await;
            if !i.tasks.get(&task_id).is_some_and(|t| t.state == TaskState::Running && !t.kill_requested) {
                return;
            }
            if let Err(why) = &result {
                tracing::info!(task = %task_id, reason = %why, "health check failed");
            }
            i.report_health(&task_id, result.is_ok(), result.err());
            drop(i);
            self.wake.notify_one();
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
            {
                let i = self.inner.lock().await;
                match i.tasks.get(&task_id) {
                    Some(t) if t.state == TaskState::Running && !t.kill_requested => {}
                    Some(t) if !t.state.is_terminal() && !t.kill_requested => continue,
                    _ => return,
                }
            }
            let probes = checks.clone();
            let ready = tokio::task::spawn_blocking(move || probes.iter().try_for_each(|c| health::probe(c, None)))
                .await
                .is_ok_and(|r| r.is_ok());
            if ready {
                self.inner.lock().await.report_check(&task_id, None, Some(true), None);
                self.wake.notify_one();
                return;
            }
        }
    }

    /// Kills a task. A task this agent has not heard of is recorded as killed (its launch may
    /// still be on its way: it will not start); one that already ended is reported again, so
    /// a master that missed the end hears it.
    async fn kill_task(&self, task_id: &str) -> Result<(), String> {
        let (root, container) = {
            let mut i = self.inner.lock().await;
            let root = i.config.state_root.clone();
            let Some(t) = i.tasks.get_mut(task_id) else {
                i.tasks.insert(
                    task_id.to_string(),
                    TaskEntry {
                        task_id: task_id.to_string(),
                        container_id: String::new(),
                        kill_requested: true,
                        state: TaskState::Staging,
                        health_checks: Vec::new(),
                        readiness_checks: Vec::new(),
                        port_forwards: Vec::new(),
                    },
                );
                i.report(task_id, TaskState::Killed, None, Some("killed before it was launched".into()));
                drop(i);
                self.wake.notify_one();
                return Ok(());
            };
            if t.state.is_terminal() {
                let state = t.state;
                i.queue_update(task_id, state, None, Some("it had already ended".into()));
                drop(i);
                self.wake.notify_one();
                return Ok(());
            }
            t.kill_requested = true;
            let c = t.container_id.clone();
            i.save();
            if c.is_empty() {
                // Still starting: `start_task` sees the kill before or after the start.
                return Ok(());
            }
            (root, c)
        };
        tokio::task::spawn_blocking(move || {
            let dir = Containers::new(&root).dir_of(&container);
            corral_runtime::control::send(&dir, "stop").map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

/// Records the task and answers at once; the container starts on a task of its own (at most
/// `MAX_STARTS` at a time), so a busy agent never makes the master's call time out, and a
/// master that disconnects (or dies) cannot cancel a launch half done. How it went comes back
/// as status updates.
async fn launch(State(agent): State<Agent>, Json(req): Json<wire::Launch>) -> (StatusCode, String) {
    {
        let mut i = agent.inner.lock().await;
        if i.tasks.contains_key(&req.task_id) {
            return (StatusCode::OK, "already launched".to_string());
        }
        i.tasks.insert(
            req.task_id.clone(),
            TaskEntry {
                task_id: req.task_id.clone(),
                container_id: String::new(),
                kill_requested: false,
                state: TaskState::Staging,
                health_checks: req.health_checks.clone(),
                readiness_checks: req.readiness_checks.clone(),
                port_forwards: req.port_forwards.clone(),
            },
        );
        i.report(&req.task_id, TaskState::Starting, None, None);
    }
    agent.wake.notify_one();
    tokio::spawn(start_task(agent, req));
    (StatusCode::ACCEPTED, "launching".to_string())
}

/// Container starts at once per agent: more only thrash a small machine.
const MAX_STARTS: usize = 4;

async fn start_task(agent: Agent, req: wire::Launch) {
    let Ok(_permit) = agent.starts.clone().acquire_owned().await else { return };
    if agent.inner.lock().await.tasks.get(&req.task_id).is_some_and(|t| t.kill_requested) {
        let mut i = agent.inner.lock().await;
        i.report(&req.task_id, TaskState::Killed, None, Some("killed before it started".into()));
        drop(i);
        agent.wake.notify_one();
        return;
    }
    let (root, exe) = {
        let i = agent.inner.lock().await;
        (i.config.state_root.clone(), i.config.corral_exe.clone())
    };
    let task_id = req.task_id.clone();
    let started = tokio::task::spawn_blocking(move || -> Result<String, String> {
        let store = corral_image::Store::open(&root).map_err(|e| e.to_string())?;
        let image = req
            .image
            .as_deref()
            .map(|i| i.parse::<corral_image::Reference>().map_err(|e| e.to_string()))
            .transpose()?;
        let mut volumes = Vec::new();
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
            name: Some(req.task_id.clone()),
            image,
            command: req.command.clone(),
            cpus: Some(req.cpus),
            mem_bytes: Some(req.mem_mb.max(6) << 20),
            env: req.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            user: req.user,
            user_name: req.user_name.clone(),
            volumes,
            host_network: req.host_network,
            stop_grace_secs: req.kill_grace_secs.unwrap_or(10),
            log_max_bytes: 10 << 20,
            log_max_files: 3,
            etc: EtcFiles::All,
            ..CreateRequest::default()
        };
        let dir = create::launch(&exe, &root, &store, request, &corral_runtime::now()).map_err(|e| e.to_string())?;
        Ok(dir.id())
    })
    .await;
    let started = started.unwrap_or_else(|e| Err(e.to_string()));
    let mut i = agent.inner.lock().await;
    match started {
        Ok(container) => {
            tracing::info!(task = %task_id, container = %container, "task started");
            let forwards = i.tasks.get(&task_id).map(|t| t.port_forwards.clone()).unwrap_or_default();
            let netns = Containers::new(&i.config.state_root).dir_of(&container).netns();
            if let Err(e) = agent.start_forwarding(&task_id, &netns, &forwards) {
                let message = format!("forwarding host ports {forwards:?}: {e}");
                tracing::warn!(task = %task_id, %message, "stopping the task");
                if let Some(t) = i.tasks.get_mut(&task_id) {
                    t.container_id = container.clone();
                    t.kill_requested = true;
                }
                i.report(&task_id, TaskState::Error, None, Some(message.clone()));
                let root = i.config.state_root.clone();
                drop(i);
                let _ = corral_runtime::control::send(&Containers::new(&root).dir_of(&container), "stop");
                agent.wake.notify_one();
                return;
            }
            let mut killed_meanwhile = false;
            if let Some(t) = i.tasks.get_mut(&task_id) {
                t.container_id = container.clone();
                killed_meanwhile = t.kill_requested;
            }
            i.report(&task_id, TaskState::Running, None, None);
            if killed_meanwhile {
                // The kill came while the container was starting and had nothing to signal.
                let root = i.config.state_root.clone();
                drop(i);
                let _ = corral_runtime::control::send(&Containers::new(&root).dir_of(&container), "stop");
                agent.wake.notify_one();
                return;
            }
            let (checks, readiness) = i
                .tasks
                .get(&task_id)
                .map(|t| (t.health_checks.clone(), t.readiness_checks.clone()))
                .unwrap_or_default();
            drop(i);
            if !checks.is_empty() {
                tokio::spawn(agent.clone().health_loop(task_id.clone(), checks));
            }
            if !readiness.is_empty() {
                tokio::spawn(agent.clone().readiness_loop(task_id.clone(), readiness));
            }
        }
        Err(message) => {
            i.report(&task_id, TaskState::Error, None, Some(message));
            drop(i);
        }
    }
    agent.wake.notify_one();
}

async fn kill(State(agent): State<Agent>, UrlPath(id): UrlPath<String>) -> impl IntoResponse {
    match agent.kill_task(&id).await {
        Ok(()) => (StatusCode::ACCEPTED, String::new()),
        Err(e) => (StatusCode::NOT_FOUND, e),
    }
}

#[derive(Deserialize)]
struct LogsQuery {
    #[serde(default)]
    follow: bool,
}

/// The task's output (stdout and stderr interleaved), following it when asked.
async fn logs(
    State(agent): State<Agent>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<LogsQuery>,
) -> axum::response::Response {
    let (root, container) = {
        let i = agent.inner.lock().await;
        match i.tasks.get(&id) {
            Some(t) if !t.container_id.is_empty() => (i.config.state_root.clone(), t.container_id.clone()),
            _ => return (StatusCode::NOT_FOUND, format!("no such task on this agent: {id:?}")).into_response(),
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(64);
    tokio::task::spawn_blocking(move || {
        let dir = Containers::new(&root).dir_of(&container);
        let done = || !matches!(dir.state(), Ok(CState::Running { .. } | CState::Created));
        let mut sink = |e: &corral_runtime::logs::Entry| -> std::io::Result<()> {
            tx.blocking_send(Ok(e.content.clone())).map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        };
        let _ = corral_runtime::logs::read(&dir.logs(), q.follow, done, &dir.dir, &mut sink);
    });
    axum::response::Response::new(axum::body::Body::from_stream(crate::chunks::ChunkStream(rx)))
}
