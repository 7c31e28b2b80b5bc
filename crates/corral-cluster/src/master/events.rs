//! What happened in the master, as typed events: raised by the decisions, published by the
//! owner after their command committed, and rendered by whoever subscribes (the Marathon layer
//! as `/v2/events`; a DNS or UI consumer later). Nothing here is a wire format.

use std::sync::Arc;

use corral_services::app::AppId;
use corral_services::wire::AppDefinition;

use super::services::Deployment;
use crate::task::TaskState;
use crate::wire::{AgentId, TaskId};

#[derive(Debug, Clone)]
pub enum Event {
    /// A service task changed state.
    TaskStatus {
        task: TaskId,
        app: AppId,
        agent: Option<AgentId>,
        /// The agent's address, as an IP.
        agent_ip: Option<String>,
        state: TaskState,
        message: String,
        host: String,
        ports: Vec<u64>,
        version: String,
    },
    /// A service task's health flipped (or was first known).
    HealthChanged {
        app: AppId,
        task: TaskId,
        version: String,
        alive: bool,
    },
    /// A health check of a service task failed.
    HealthCheckFailed {
        app: AppId,
        task: TaskId,
    },
    /// A service task failed its health checks too often and is killed.
    UnhealthyKilled {
        app: AppId,
        task: TaskId,
        version: String,
        host: String,
        agent: Option<AgentId>,
    },
    /// An app was created, changed or removed through the API (`None`: removed).
    AppRequested {
        app: AppId,
        definition: Option<Box<AppDefinition>>,
    },
    /// An app is gone.
    AppTerminated {
        app: AppId,
    },
    /// A deployment began.
    DeploymentStarted {
        deployment: Arc<Deployment>,
    },
    /// A step of a deployment is done (`step` is its index).
    DeploymentStepDone {
        deployment: Arc<Deployment>,
        step: usize,
    },
    DeploymentSucceeded {
        deployment: Arc<Deployment>,
    },
    DeploymentFailed {
        deployment: Arc<Deployment>,
        reason: &'static str,
    },
}

/// An event and when it happened (wall-clock milliseconds since the epoch).
#[derive(Debug, Clone)]
pub struct Stamped {
    pub at_ms: u64,
    pub event: Event,
}
