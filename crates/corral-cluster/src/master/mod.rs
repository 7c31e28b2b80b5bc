//! `corral master`: the control plane. One HTTP port for every API; state in a
//! [`corral_store::Store`] (the embedded redb one under `--data-dir` by default).
//!
//! The state has one owner: a thread fed by a channel of commands. Each command runs on a copy
//! of the [`Controller`] (cheap: its maps share structure) and collects its store writes, agent
//! calls and events. The owner commits the writes (on its own thread, never an async worker),
//! then keeps the copy and publishes it as the snapshot readers use, then sends the calls and
//! events. A command that fails, panics, or whose commit fails is dropped whole: nothing it did
//! is kept, stored, sent or seen. Reads never wait for a write or for the tick.

mod api;
mod chronos;
pub mod controller;
pub mod core;
mod delivery;
pub mod events;
pub mod framework;
#[cfg(test)]
mod harness;
pub mod jobs;
mod marathon;
pub mod secure;
pub mod services;
pub mod tasks;
pub mod trust;

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_store::{Revision, Store};
use tokio::sync::{broadcast, oneshot, watch};

use controller::{Controller, Ids, MasterError};

#[derive(Debug, Clone)]
pub struct MasterConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// An agent silent this long is unreachable.
    pub agent_timeout: Duration,
    pub security: SecurityConfig,
}

pub use secure::{Security, SecurityConfig};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] corral_store::StoreError),
    #[error(transparent)]
    Master(#[from] MasterError),
    #[error("serving: {0}")]
    Serve(std::io::Error),
    #[error("the cluster's certificates: {0}")]
    Pki(#[from] crate::pki::PkiError),
    #[error("--insecure-dev serves plain HTTP without authentication, so only on a loopback address, not {0}")]
    DevNotLoopback(SocketAddr),
    #[error("making the master's first tokens: {0}")]
    Bootstrap(String),
}

tokio::task_local! {
    /// Who made the API request being served (set around each request by the API's
    /// authentication): [`Master::call`] refuses a command of someone who is not an admin that
    /// leaves an app or job only an admin may run.
    pub(crate) static CALLER: trust::Principal;
}

/// How often the periodic work runs (offer timeouts, silent agents, reconciliation, retries).
pub const TICK: Duration = Duration::from_millis(200);

type Job = Box<dyn FnOnce(&mut Owner) + Send>;

/// Milliseconds since the master started.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Where the owner sends calls to agents. The real one speaks HTTP ([`delivery`]); tests
/// record them and play the agents themselves.
pub trait AgentLink: Send {
    fn send(&mut self, call: controller::AgentCall);
}

/// What a master is built from besides its store: the real ones by default, fakes in tests.
pub struct Seams {
    pub clock: Clock,
    /// Given a way back to the master (to report failed launches).
    pub agents: Box<dyn FnOnce(Master) -> Box<dyn AgentLink>>,
    /// Seeds the ids (tasks, deployments, agents).
    pub seed: u64,
    /// Certificates and what they are for; development mode (none) by default.
    pub security: Arc<Security>,
}

impl Seams {
    /// The wall clock, HTTP to agents, random ids, development mode.
    pub fn real() -> Seams {
        Seams::real_with(Arc::new(Security::dev()))
    }

    /// The same, with certificates.
    pub fn real_with(security: Arc<Security>) -> Seams {
        let started = Instant::now();
        let seed = {
            use std::hash::{BuildHasher, RandomState};
            RandomState::new().hash_one(started)
        };
        Seams {
            clock: Arc::new(move || started.elapsed().as_millis() as u64),
            agents: Box::new(|master| Box::new(delivery::Delivery::new(master))),
            seed,
            security,
        }
    }
}

/// What the HTTP handlers share: a way to send the owner commands, the latest snapshot, and
/// the event stream.
#[derive(Clone)]
pub struct Master {
    jobs: std::sync::mpsc::Sender<Job>,
    view: watch::Receiver<Arc<Controller>>,
    clock: Clock,
    /// Events, to every subscriber (`/v2/events` renders them as Marathon's).
    pub(crate) events: broadcast::Sender<Arc<events::Stamped>>,
    /// How long the periodic work takes (`/metrics`).
    pub(crate) ticks: Arc<TickTimes>,
    /// Large answers (every app, every task) built at once: one core fewer than the machine
    /// has, so readers can never take every core from the owner and the writes it serves.
    pub(crate) heavy_reads: Arc<tokio::sync::Semaphore>,
    /// The master's certificates (none in development mode).
    pub(crate) security: Arc<Security>,
    /// Task logs and files being relayed from agents, each on a thread of its own: at most
    /// [`MAX_RELAYS`] at once.
    pub(crate) relays: Arc<tokio::sync::Semaphore>,
}

/// Task logs and files relayed from agents at once, at most.
pub const MAX_RELAYS: usize = 256;

/// The last and the longest tick, in microseconds.
#[derive(Default)]
pub(crate) struct TickTimes {
    pub(crate) last_us: std::sync::atomic::AtomicU64,
    pub(crate) max_us: std::sync::atomic::AtomicU64,
}

impl Master {
    /// Recovers the state from `store` and starts its owner thread.
    pub fn start(store: Arc<dyn Store>, agent_timeout: Duration, seams: Seams) -> Result<Master, MasterError> {
        let epoch_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let now = (seams.clock)();
        let (controller, revision) =
            Controller::recover(store.clone(), now, epoch_ms, agent_timeout, Ids::seeded(seams.seed))?;
        let current = Arc::new(controller);
        let (publish, view) = watch::channel(current.clone());
        let events = broadcast::channel(4096).0;
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let master = Master {
            jobs,
            view,
            clock: seams.clock.clone(),
            events: events.clone(),
            ticks: Arc::default(),
            heavy_reads: Arc::new(tokio::sync::Semaphore::new(cores.saturating_sub(1).max(1))),
            security: seams.security.clone(),
            relays: Arc::new(tokio::sync::Semaphore::new(MAX_RELAYS)),
        };
        let mut seeds = fastrand::Rng::with_seed(seams.seed ^ 0x5eed);
        let reload_from = store.clone();
        let reload: Reload = Box::new(move |now| {
            Controller::recover(reload_from.clone(), now, epoch_ms, agent_timeout, Ids::seeded(seeds.u64(..)))
        });
        let mut owner = Owner {
            current,
            store,
            revision,
            clock: seams.clock,
            publish,
            events,
            agents: (seams.agents)(master.clone()),
            reload,
        };
        std::thread::Builder::new()
            .name("corral-master".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job(&mut owner);
                }
            })
            .map_err(|e| MasterError::Internal(format!("starting the owner thread: {e}")))?;
        Ok(master)
    }

    pub fn now_ms(&self) -> u64 {
        (self.clock)()
    }

    /// The latest committed state. Never waits for a command.
    pub fn view(&self) -> Arc<Controller> {
        self.view.borrow().clone()
    }

    /// Runs a command on the owner (`f` gets the state and the time) and waits for it: its
    /// result, and the state right after it.
    pub async fn call<T, F>(&self, f: F) -> Result<(T, Arc<Controller>), MasterError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Controller, u64) -> Result<T, MasterError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let guarded = CALLER.try_with(|who| who.checked()).unwrap_or(false);
        let job: Job = Box::new(move |owner: &mut Owner| {
            let _ = tx.send(owner.apply(move |c: &mut Controller, now| {
                let before = guarded.then(|| c.definitions());
                let value = f(c, now)?;
                if let Some(before) = before {
                    c.refuse_new_privileges(&before)?;
                }
                Ok(value)
            }));
        });
        self.jobs.send(job).map_err(|_| MasterError::Internal("the master's owner has stopped".into()))?;
        rx.await.map_err(|_| MasterError::Internal("the master's owner dropped a command".into()))?
    }

    /// Runs a command on the owner without waiting for it (delivery results).
    pub(crate) fn send<F>(&self, f: F)
    where
        F: FnOnce(&mut Controller, u64) -> Result<(), MasterError> + Send + 'static,
    {
        let _ = self.jobs.send(Box::new(move |owner: &mut Owner| {
            if let Err(e) = owner.apply(f) {
                tracing::error!(error = %e, "a command from delivery failed");
            }
        }));
    }
}

/// Loads the state again from the store (after someone else wrote to it), with fresh ids.
type Reload = Box<dyn FnMut(u64) -> Result<(Controller, Revision), MasterError> + Send>;

/// The one owner of the state (see the module's doc).
struct Owner {
    current: Arc<Controller>,
    store: Arc<dyn Store>,
    /// The store's revision that `current` reflects.
    revision: Revision,
    clock: Clock,
    publish: watch::Sender<Arc<Controller>>,
    events: broadcast::Sender<Arc<events::Stamped>>,
    agents: Box<dyn AgentLink>,
    reload: Reload,
}

impl Owner {
    fn apply<T>(
        &mut self,
        f: impl FnOnce(&mut Controller, u64) -> Result<T, MasterError>,
    ) -> Result<(T, Arc<Controller>), MasterError> {
        let now = (self.clock)();
        let mut next = (*self.current).clone();
        let value = match std::panic::catch_unwind(AssertUnwindSafe(|| f(&mut next, now))) {
            Ok(result) => result?,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                tracing::error!(%message, "a command panicked; its changes were dropped");
                return Err(MasterError::Internal(format!("a command panicked: {message}")));
            }
        };
        let ops = next.core.take_writes();
        if !ops.is_empty() {
            match self.store.commit(self.revision, &ops) {
                Ok(revision) => self.revision = revision,
                Err(e) => {
                    tracing::error!(error = %e, ops = ops.len(), "commit failed; the command changed nothing");
                    if matches!(e, corral_store::StoreError::Conflict { .. }) {
                        // Someone else wrote: what this master holds is stale. It loads the
                        // store again, as a restart would (agents register again), so the next
                        // command works on what is stored. (A deposed leader's fencing is the HA
                        // issue's; this keeps one master from failing every write after it.)
                        self.reload_state(now);
                    }
                    return Err(e.into());
                }
            }
        }
        let calls = next.take_outbox();
        let events = next.take_events();
        let next = Arc::new(next);
        self.current = next.clone();
        self.publish.send_replace(next.clone());
        for e in events {
            // No subscriber is not an error.
            let _ = self.events.send(Arc::new(e));
        }
        for call in calls {
            self.agents.send(call);
        }
        Ok((value, next))
    }
}

impl Owner {
    fn reload_state(&mut self, now: u64) {
        match (self.reload)(now) {
            Ok((controller, revision)) => {
                tracing::warn!(revision, "the store changed underneath: state loaded again");
                let controller = Arc::new(controller);
                self.current = controller.clone();
                self.revision = revision;
                self.publish.send_replace(controller);
            }
            Err(e) => tracing::error!(error = %e, "loading the state again failed; the next command tries again"),
        }
    }
}

/// Binds, recovers the state, and serves until the process ends.
pub async fn run(config: MasterConfig) -> Result<(), RunError> {
    if matches!(config.security, SecurityConfig::Dev) && !config.listen.ip().is_loopback() {
        return Err(RunError::DevNotLoopback(config.listen));
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| RunError::Listen { addr: config.listen, source })?;
    serve(listener, config).await
}

pub async fn serve(listener: tokio::net::TcpListener, config: MasterConfig) -> Result<(), RunError> {
    let data_dir = config.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || corral_store::RedbStore::open(&data_dir.join("master.redb")))
        .await
        .map_err(|e| RunError::Master(MasterError::Internal(e.to_string())))??;
    let local = listener.local_addr().map_err(RunError::Serve)?;
    let security = match &config.security {
        SecurityConfig::Dev => Security::dev(),
        SecurityConfig::Secure { names } => {
            let (dir, names) = (config.data_dir.clone(), names.clone());
            tokio::task::spawn_blocking(move || Security::open(&dir, local, &names))
                .await
                .map_err(|e| RunError::Master(MasterError::Internal(e.to_string())))??
        }
    };
    serve_secured(listener, Arc::new(store), config.agent_timeout, Arc::new(security), Some(&config.data_dir)).await
}

/// Serves on any store (the embedded one, or another implementation of the trait), in
/// development mode.
pub async fn serve_store(
    listener: tokio::net::TcpListener,
    store: Arc<dyn Store>,
    agent_timeout: Duration,
) -> Result<(), RunError> {
    serve_secured(listener, store, agent_timeout, Arc::new(Security::dev()), None).await
}

/// Serves on any store with `security`; the first tokens and the CLI configuration go to
/// `data_dir` (when secured).
pub async fn serve_secured(
    listener: tokio::net::TcpListener,
    store: Arc<dyn Store>,
    agent_timeout: Duration,
    security: Arc<Security>,
    data_dir: Option<&std::path::Path>,
) -> Result<(), RunError> {
    let tls = security.server_config()?;
    let master = tokio::task::spawn_blocking(move || Master::start(store, agent_timeout, Seams::real_with(security)))
        .await
        .map_err(|e| RunError::Master(MasterError::Internal(e.to_string())))??;
    let local = listener.local_addr().map_err(RunError::Serve)?;
    if let Some(dir) = data_dir.filter(|_| tls.is_some()) {
        let host = if local.ip().is_unspecified() { "127.0.0.1".to_string() } else { local.ip().to_string() };
        let url = format!("https://{}", SocketAddr::new(host.parse().unwrap_or(local.ip()), local.port()));
        secure::bootstrap(&master, dir, &url).await.map_err(RunError::Bootstrap)?;
    }
    tracing::info!(addr = %local, tls = tls.is_some(), "master listening");
    let ticker = master.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            // Waits for the tick to be done, so ticks never pile up behind a slow one.
            let started = Instant::now();
            let result = ticker.call(|c, now| c.tick(now)).await;
            let us = started.elapsed().as_micros() as u64;
            ticker.ticks.last_us.store(us, std::sync::atomic::Ordering::Relaxed);
            ticker.ticks.max_us.fetch_max(us, std::sync::atomic::Ordering::Relaxed);
            if let Err(e) = result {
                tracing::error!(error = %e, "periodic work failed");
            }
        }
    });
    crate::https::serve(listener, tls, api::router(master)).await.map_err(RunError::Serve)
}
