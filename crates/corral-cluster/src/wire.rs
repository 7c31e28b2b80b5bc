//! The JSON of the cluster's HTTP APIs: CLI to master, agent to master, master to agent.
//! Converted by hand to and from the domain types; request bodies refuse unknown fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::task::TaskState;

fn default_role() -> String {
    "*".into()
}

fn one() -> u32 {
    1
}

/// `POST /api/v1/tasks`: one-off tasks for the built-in task framework of `role`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunTasks {
    #[serde(default = "default_role")]
    pub role: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default = "one")]
    pub count: u32,
    pub cpus: f64,
    /// MiB.
    pub mem: f64,
    #[serde(default)]
    pub image: Option<String>,
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskIds {
    pub tasks: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskInfo {
    pub id: String,
    pub name: String,
    pub role: String,
    pub agent: Option<String>,
    pub state: TaskState,
    pub resources: String,
    pub image: Option<String>,
    pub command: Vec<String>,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentInfo {
    pub id: String,
    pub hostname: String,
    pub address: String,
    pub resources: String,
    pub available: String,
    pub attributes: BTreeMap<String, String>,
    /// `active` or `unreachable`.
    pub state: String,
    pub tasks: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleInfo {
    pub role: String,
    pub weight: f64,
    pub quota: Option<String>,
    pub allocated: String,
    pub dominant_share: f64,
}

/// `PUT /api/v1/roles/{role}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetRole {
    #[serde(default)]
    pub weight: Option<f64>,
    /// A resource spec (`cpus:10;mem:4096`), or "" to remove the quota.
    #[serde(default)]
    pub quota: Option<String>,
}

/// `POST /api/v1/agents`: an agent (re)registers, listing the tasks it runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Register {
    #[serde(default)]
    pub agent_id: Option<String>,
    pub hostname: String,
    /// Where the master reaches the agent: `http://10.0.0.2:5051`.
    pub address: String,
    pub resources: String,
    #[serde(default)]
    pub attributes: String,
    #[serde(default)]
    pub tasks: Vec<AgentTask>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentTask {
    pub task_id: String,
    pub state: TaskState,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registered {
    pub agent_id: String,
    pub heartbeat_interval_ms: u64,
    /// Tasks the agent reported that the master does not want: kill them.
    #[serde(default)]
    pub kill: Vec<String>,
}

/// `POST /api/v1/agents/{id}/updates`: status updates, in order per task, retried until acked.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StatusUpdate {
    pub task_id: String,
    pub state: TaskState,
    /// Per agent, increasing: the master acknowledges by it.
    pub seq: u64,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Updates {
    pub updates: Vec<StatusUpdate>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Acked {
    pub acked: Vec<u64>,
}

/// `POST {agent}/api/v1/tasks`: the master asks an agent to run a task.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Launch {
    pub task_id: String,
    pub name: String,
    pub role: String,
    pub cpus: f64,
    pub mem_mb: u64,
    #[serde(default)]
    pub image: Option<String>,
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
