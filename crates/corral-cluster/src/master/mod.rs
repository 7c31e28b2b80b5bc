//! `corral master`: the control plane. One HTTP port for every API; state in an embedded redb
//! store under `--data-dir`.

mod api;
pub mod controller;
mod marathon;
pub mod services;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::store::Store;
use controller::{AgentCall, Controller};

#[derive(Debug, Clone)]
pub struct MasterConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// An agent silent this long is unreachable.
    pub agent_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Master(#[from] controller::MasterError),
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

/// Shared by the HTTP handlers: the controller behind one lock (it is the only state), and a
/// clock. Handlers parse, call one controller method, and send what it asked to send.
#[derive(Clone)]
pub struct Master {
    pub(crate) controller: Arc<Mutex<Controller>>,
    started: Instant,
    /// Marathon events, to every `/v2/events` subscriber.
    pub(crate) events: tokio::sync::broadcast::Sender<Arc<serde_json::Value>>,
}

impl Master {
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Delivers what the controller queued for agents, off the async threads.
    pub(crate) async fn flush(&self) {
        let (calls, events) = {
            let mut c = self.controller.lock().await;
            (c.take_outbox(), c.take_events())
        };
        for e in events {
            // No subscriber is not an error.
            let _ = self.events.send(Arc::new(e));
        }
        for call in calls {
            let master = self.clone();
            tokio::task::spawn_blocking(move || deliver(master, call));
        }
    }
}

fn deliver(master: Master, call: AgentCall) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent();
    match call {
        AgentCall::Launch { address, launch } => {
            let task_id = launch.task_id.clone();
            let result = agent.post(&format!("{address}/api/v1/tasks")).send_json(&launch);
            let failure = match result {
                Ok(r) if r.status().is_success() => None,
                Ok(mut r) => Some(format!(
                    "agent {address} refused the launch: {}",
                    r.body_mut().read_to_string().unwrap_or_default()
                )),
                Err(e) => Some(format!("agent {address} could not be reached: {e}")),
            };
            if let Some(message) = failure {
                tracing::warn!(task = %task_id, %message, "launch failed");
                let rt = tokio::runtime::Handle::current();
                rt.block_on(async {
                    let mut c = master.controller.lock().await;
                    if let Err(e) = c.launch_failed(&task_id, message) {
                        tracing::error!(error = %e, "recording a failed launch");
                    }
                });
            }
        }
        AgentCall::Kill { address, task_id } => {
            if let Err(e) = agent.post(&format!("{address}/api/v1/tasks/{task_id}/kill")).send_empty() {
                tracing::warn!(task = %task_id, error = %e, "kill could not be delivered; the agent will be asked again when it re-registers");
            }
        }
    }
}

/// Binds, recovers the state, and serves until the process ends.
pub async fn run(config: MasterConfig) -> Result<(), RunError> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| RunError::Listen { addr: config.listen, source })?;
    serve(listener, config).await
}

pub async fn serve(listener: tokio::net::TcpListener, config: MasterConfig) -> Result<(), RunError> {
    let store = Store::open(&config.data_dir.join("master.redb"))?;
    let started = Instant::now();
    let epoch_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let controller = Controller::recover(store, 0, epoch_ms, config.agent_timeout)?;
    let master = Master {
        controller: Arc::new(Mutex::new(controller)),
        started,
        events: tokio::sync::broadcast::channel(4096).0,
    };
    tracing::info!(addr = %listener.local_addr().map_err(RunError::Serve)?, "master listening");
    let ticker = master.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_millis(200));
        loop {
            interval.tick().await;
            let now = ticker.now_ms();
            if let Err(e) = ticker.controller.lock().await.batched(|c| c.tick(now)) {
                tracing::error!(error = %e, "periodic work failed");
            }
            ticker.flush().await;
        }
    });
    axum::serve(listener, api::router(master)).await.map_err(RunError::Serve)
}
