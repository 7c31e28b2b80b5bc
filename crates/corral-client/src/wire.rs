//! The JSON of the cluster's HTTP APIs: CLI to master, agent to master, master to agent.
//! Converted by hand to and from the domain types; request bodies refuse unknown fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
    /// MiB of disk each may write (0: not limited).
    #[serde(default)]
    pub disk: f64,
    #[serde(default)]
    pub image: Option<String>,
    pub command: Vec<String>,
    /// When its agent pulls the image.
    #[serde(default)]
    pub pull: Pull,
}

/// When an agent pulls a task's image, as Docker's and Podman's `--pull` say it (Marathon's
/// `forcePullImage` is `always`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pull {
    /// When the agent's store lacks it.
    #[default]
    Missing,
    /// Every launch (a tag may have moved).
    Always,
    /// Never: the image must be on the agent.
    Never,
}

impl Pull {
    pub fn is_missing(&self) -> bool {
        *self == Pull::Missing
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// An artifact an agent downloads into a task's sandbox before the task starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fetch {
    /// `http://` or `https://`.
    pub uri: String,
    /// Unpack it (tar, tar.gz, tgz, zip) into the sandbox instead of keeping the file.
    #[serde(default)]
    pub extract: bool,
    #[serde(default)]
    pub executable: bool,
    /// Where in the sandbox (default: the URI's last path segment).
    #[serde(default)]
    pub dest_path: Option<String>,
}

/// A file or directory in a task's sandbox (`GET /api/v1/tasks/{id}/files?path=`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SandboxEntry {
    pub path: String,
    pub size: u64,
    /// `drwxr-xr-x` style.
    pub mode: String,
    /// Seconds since the epoch.
    pub mtime: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskIds {
    pub tasks: Vec<TaskId>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskInfo {
    pub id: TaskId,
    pub name: String,
    pub role: String,
    pub agent: Option<AgentId>,
    pub state: TaskState,
    pub resources: String,
    pub image: Option<String>,
    pub command: Vec<String>,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentInfo {
    pub id: AgentId,
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
    pub agent_id: Option<AgentId>,
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
    pub task_id: TaskId,
    pub state: TaskState,
}

/// `POST /api/v1/agents/{id}/heartbeat`: the agent is alive, and (implicit reconciliation)
/// these are the tasks it has that the master may still care about: those running, and those
/// whose end it has not had acknowledged yet. An empty body is a bare heartbeat.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    #[serde(default)]
    pub tasks: Option<Vec<AgentTask>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registered {
    pub agent_id: AgentId,
    pub heartbeat_interval_ms: u64,
    /// Tasks the agent reported that the master does not want: kill them.
    #[serde(default)]
    pub kill: Vec<TaskId>,
}

/// `POST /api/v1/agents/{id}/updates`: status updates, in order per task, retried until acked.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StatusUpdate {
    pub task_id: TaskId,
    pub state: TaskState,
    /// Per agent, increasing: the master acknowledges by it.
    pub seq: u64,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub message: Option<String>,
    /// A health check result of a running task: `true` when it passes, `false` on each failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    /// The task's readiness checks passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
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

/// `POST {agent}/api/v1/tasks/batch`: several launches in one request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Launches {
    pub launches: Vec<Launch>,
}

/// `POST {agent}/api/v1/tasks`: the master asks an agent to run a task.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Launch {
    pub task_id: TaskId,
    pub name: String,
    pub role: String,
    pub cpus: f64,
    pub mem_mb: u64,
    /// Disk it may write, MiB (0: no limit): the agent measures it and kills it past this.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub disk_mb: u64,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Pull::is_missing")]
    pub pull: Pull,
    /// Artifacts to download into its sandbox before it starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fetch: Vec<Fetch>,
    pub command: Vec<String>,
    /// Environment variables (an app's `env`, plus `PORT0`, `HOST`, ...).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub user: Option<(u32, u32)>,
    /// A user by name, resolved in the task's passwd when it starts.
    #[serde(default)]
    pub user_name: Option<String>,
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
    /// Share the agent's network (Marathon's `HOST`), instead of a namespace of its own.
    #[serde(default)]
    pub host_network: bool,
    #[serde(default)]
    pub kill_grace_secs: Option<u64>,
    /// Run by the agent next to the task; results come back as status updates.
    #[serde(default)]
    pub health_checks: Vec<HealthCheck>,
    /// Run by the agent until they pass once; the result comes back as `ready`.
    #[serde(default)]
    pub readiness_checks: Vec<HealthCheck>,
    /// For a task on its own network: host ports the agent forwards into it (TCP).
    #[serde(default)]
    pub port_forwards: Vec<PortForward>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortForward {
    pub host_port: u16,
    pub container_port: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeMount {
    pub host: String,
    pub container: String,
    pub read_only: bool,
}

/// One health check, its ports already resolved to the task's host ports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// `http`, `tcp` or `command`.
    pub kind: String,
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub command: String,
    pub grace_period_ms: u64,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// HTTP statuses that pass (empty: 200-399).
    #[serde(default)]
    pub statuses: Vec<u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// A task's state, as in Mesos (the lifecycle's one transition function is
/// `corral_cluster::task::transition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskState {
    /// Accepted by the master, waiting for an offer, or sent to an agent.
    Staging,
    /// The agent is preparing it (image, rootfs, shim).
    Starting,
    Running,
    /// A kill was asked for; the task has not ended yet.
    Killing,
    /// Exited with code 0.
    Finished,
    /// Exited with another code, or was killed by a signal it was not asked to take.
    Failed,
    /// Ended because it was killed.
    Killed,
    /// Could not be launched at all.
    Error,
    /// Its agent lost it (the agent came back without it, or was removed).
    Lost,
    /// Its agent stopped answering; it may still run.
    Unreachable,
    /// Its agent is gone for good.
    Gone,
}

impl TaskState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Finished
                | TaskState::Failed
                | TaskState::Killed
                | TaskState::Error
                | TaskState::Lost
                | TaskState::Gone
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Staging => "STAGING",
            TaskState::Starting => "STARTING",
            TaskState::Running => "RUNNING",
            TaskState::Killing => "KILLING",
            TaskState::Finished => "FINISHED",
            TaskState::Failed => "FAILED",
            TaskState::Killed => "KILLED",
            TaskState::Error => "ERROR",
            TaskState::Lost => "LOST",
            TaskState::Unreachable => "UNREACHABLE",
            TaskState::Gone => "GONE",
        }
    }
}

/// A typed id: a string on the wire, its own type in the code, so a task's id is never passed
/// where an agent's is meant. Never parsed: what it says is opaque.
macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(id: impl Into<String>) -> $name {
                $name(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        // Hashes and orders as its string does, so maps keyed by it are searched by either.
        impl std::borrow::Borrow<String> for $name {
            fn borrow(&self) -> &String {
                &self.0
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> $name {
                $name(id)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> $name {
                $name(id.to_string())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

id!(
    /// A task's id, unique in the cluster.
    TaskId
);
id!(
    /// An agent's id, given by the master when the agent first registers.
    AgentId
);

// ---- trust: joining, tokens ----------------------------------------------------------------

/// `POST /api/v1/join`: an agent's first call, with a join token. The master answers with
/// the agent's id and a certificate for it (over TLS the agent checked against the join
/// token's CA fingerprint).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Join {
    /// The join token's secret part (`ID.SECRET`).
    pub token: String,
    /// Names and addresses the agent's certificate must cover (where the master reaches it).
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Joined {
    pub agent_id: AgentId,
    /// The agent's certificate and key, PEM.
    pub cert: String,
    pub key: String,
    /// The masters' CA certificate, PEM: what the agent trusts from now on.
    pub masters_ca: String,
}

/// `POST /api/v1/tokens` (admin).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// `api` (default) or `join`.
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    /// `reader`, `writer` or `admin`.
    #[serde(default)]
    pub role: Option<String>,
    /// Seconds until it expires; none: never.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    #[serde(default)]
    pub description: Option<String>,
}

/// A token as lists show it: never its secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub kind: String,
    pub namespace: String,
    pub role: String,
    /// RFC 3339.
    pub created: String,
    #[serde(default)]
    pub expires: Option<String>,
    #[serde(default)]
    pub description: String,
}

/// The answer to `POST /api/v1/tokens`: the only time the secret is shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub info: TokenInfo,
    pub token: String,
}

/// `GET /api/v1/whoami`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WhoAmI {
    pub principal: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
}
