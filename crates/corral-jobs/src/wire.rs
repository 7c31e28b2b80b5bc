//! Chronos's job JSON, as clients send it and as `GET /v1/scheduler/jobs` shows it. Fields are
//! `Option` so that absent can be told from given; unknown fields are refused. The counters and
//! times Chronos reports (`successCount`, `lastSuccess`, ...) are accepted on input, as Chronos
//! accepts them (clients post back what they read), and never taken from it: they are the
//! scheduler's.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobDefinition {
    pub name: String,
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub arguments: Option<Vec<String>>,
    #[serde(default)]
    pub shell: Option<bool>,
    #[serde(default)]
    pub schedule: Option<String>,
    #[serde(default)]
    pub schedule_time_zone: Option<String>,
    /// corral's own: a crontab schedule (`*/5 * * * *`).
    #[serde(default)]
    pub cron: Option<String>,
    #[serde(default)]
    pub parents: Option<Vec<String>>,
    #[serde(default)]
    pub retries: Option<i64>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub owner_name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub cpus: Option<f64>,
    #[serde(default)]
    pub mem: Option<f64>,
    #[serde(default)]
    pub disk: Option<f64>,
    #[serde(default)]
    pub disabled: Option<bool>,
    #[serde(default)]
    pub concurrent: Option<bool>,
    #[serde(default)]
    pub run_as_user: Option<String>,
    #[serde(default)]
    pub container: Option<Container>,
    #[serde(default)]
    pub environment_variables: Option<Vec<EnvVar>>,
    #[serde(default)]
    pub constraints: Option<Vec<Vec<String>>>,
    /// How late a run may start before it counts as missed (ISO 8601 duration).
    #[serde(default)]
    pub epsilon: Option<String>,
    /// corral's own: what runs missed while nothing ran become, `runOnce` (default) or `skip`.
    #[serde(default)]
    pub missed_runs: Option<String>,
    // Fields Chronos has that corral does not do yet: refused when set to anything but their
    // default, never silently ignored.
    #[serde(default, rename = "async")]
    pub async_: Option<bool>,
    #[serde(default)]
    pub soft_error: Option<bool>,
    #[serde(default)]
    pub high_priority: Option<bool>,
    #[serde(default)]
    pub data_processing_job_type: Option<bool>,
    #[serde(default)]
    pub uris: Option<Vec<String>>,
    #[serde(default)]
    pub fetch: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    pub executor: Option<String>,
    #[serde(default)]
    pub executor_flags: Option<String>,
    #[serde(default)]
    pub task_info_data: Option<String>,
    // The scheduler's own state, as GET shows it (ignored on input, as Chronos does).
    #[serde(default)]
    pub success_count: Option<u64>,
    #[serde(default)]
    pub error_count: Option<u64>,
    #[serde(default)]
    pub last_success: Option<String>,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub errors_since_last_success: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Container {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    pub image: String,
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default)]
    pub volumes: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    pub force_pull_image: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

/// Parses a job body; a serde error names the field, as Chronos's 400 does.
pub fn parse(body: &[u8]) -> Result<JobDefinition, String> {
    serde_json::from_slice(body).map_err(|e| format!("invalid job: {e}"))
}
