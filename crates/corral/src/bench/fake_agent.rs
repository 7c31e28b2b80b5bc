//! A simulated agent for the master's benchmarks: it registers, heartbeats, reports every
//! launch RUNNING and every kill KILLED at once, and has resources for everything. What is
//! measured is the master.

use std::collections::VecDeque;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use corral_client::Client;
use corral_cluster::task::TaskState;
use corral_cluster::wire;

/// What the simulated agent has been asked and not yet answered, and every launch it received
/// (task id, wall-clock ms).
#[derive(Default)]
pub struct Pending(Mutex<VecDeque<(String, TaskState)>>, Mutex<Vec<(String, i64)>>);

impl Pending {
    /// The launches received so far: task id and when (wall-clock ms).
    pub fn launched(&self) -> Vec<(String, i64)> {
        self.1.lock().expect("not poisoned").clone()
    }
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

async fn launch(State(p): State<Arc<Pending>>, Json(req): Json<wire::Launch>) -> &'static str {
    p.1.lock().expect("not poisoned").push((req.task_id.to_string(), wall_ms()));
    p.0.lock().expect("not poisoned").push_back((req.task_id.to_string(), TaskState::Running));
    "launched"
}

async fn launch_batch(State(p): State<Arc<Pending>>, Json(req): Json<wire::Launches>) -> &'static str {
    let at = wall_ms();
    for l in req.launches {
        p.1.lock().expect("not poisoned").push((l.task_id.to_string(), at));
        p.0.lock().expect("not poisoned").push_back((l.task_id.to_string(), TaskState::Running));
    }
    "launched"
}

async fn kill(State(p): State<Arc<Pending>>, Path(id): Path<String>) -> &'static str {
    p.0.lock().expect("not poisoned").push_back((id, TaskState::Killed));
    "killed"
}

/// Serves the agent API on `rt`, registers with the master at `base`, and answers from a
/// thread of its own until the process ends.
pub fn start(rt: &tokio::runtime::Runtime, master: &Client, resources: &str) -> Result<Arc<Pending>> {
    start_joined(rt, master, resources, None)
}

/// The same, joined to a master that runs with TLS (`join`: its address, a join token and a
/// directory for the agent's certificate): mutual TLS both ways, as a real agent.
pub fn start_joined(
    rt: &tokio::runtime::Runtime,
    master: &Client,
    resources: &str,
    join: Option<(&str, &str, &std::path::Path)>,
) -> Result<Arc<Pending>> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let (master, tls, scheme) = match join {
        Some((address, token, dir)) => {
            let joined =
                corral_cluster::agent::join::credentials(dir, address, &["127.0.0.1".to_string()], Some(token))?;
            let client =
                Client::with_credentials(address, joined.credentials())?.timeout(Some(Duration::from_secs(120)));
            (client, Some(joined.server_config()?), "https")
        }
        None => (master.clone(), None, "http"),
    };
    let master = &master;
    let pending = Arc::new(Pending::default());
    let router = Router::new()
        .route("/api/v1/tasks", post(launch))
        .route("/api/v1/tasks/batch", post(launch_batch))
        .route("/api/v1/tasks/{id}/kill", post(kill))
        .with_state(pending.clone());
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("a free port");
        corral_cluster::https::serve(listener, tls, router).await.expect("the fake agent serves");
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let registered: wire::Registered = loop {
        let reg = wire::Register {
            agent_id: None,
            hostname: "bench".into(),
            address: format!("{scheme}://127.0.0.1:{port}"),
            resources: resources.to_string(),
            attributes: String::new(),
            tasks: Vec::new(),
        };
        match master.register(&reg) {
            Ok(r) => break r,
            Err(e) if Instant::now() > deadline => bail!("the master did not start: {e}"),
            Err(_) => std::thread::yield_now(),
        }
    };
    let agent_id = registered.agent_id;
    let master = master.clone();
    let seen = pending.clone();
    std::thread::spawn(move || {
        let mut seq = 0u64;
        let mut last_beat = Instant::now();
        loop {
            let batch: Vec<(String, TaskState)> = {
                let mut l = pending.0.lock().expect("not poisoned");
                let n = l.len().min(2000);
                l.drain(..n).collect()
            };
            if last_beat.elapsed() > Duration::from_secs(2) {
                let _ = master.heartbeat(&agent_id, &wire::Heartbeat { tasks: None });
                last_beat = Instant::now();
            }
            if batch.is_empty() {
                std::thread::park_timeout(Duration::from_millis(20));
                continue;
            }
            let updates = batch
                .into_iter()
                .map(|(task_id, state)| {
                    seq += 1;
                    wire::StatusUpdate {
                        task_id: task_id.into(),
                        state,
                        seq,
                        exit_code: None,
                        message: None,
                        healthy: None,
                        ready: None,
                    }
                })
                .collect();
            let _ = master.updates(&agent_id, &wire::Updates { updates });
        }
    });
    Ok(seen)
}
