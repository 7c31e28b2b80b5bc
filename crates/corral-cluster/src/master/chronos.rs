//! Chronos's REST API on the master's port, as a view: handlers turn requests into commands of
//! the jobs framework and its state into Chronos's JSON. Served under `/v1/scheduler` (Chronos
//! 3) and `/scheduler` (Chronos 2, and `chronos-python` with `scheduler_api_version=None`).
//! Errors are Chronos's: a 400 with `{"message", "status"}` (also for an unknown job, as
//! Chronos answers); empty successes are 204, which clients rely on.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use corral_jobs::job::Trigger;
use corral_jobs::schedule::When;
use corral_jobs::wire::JobDefinition;
use serde::Deserialize;
use serde_json::{json, Value};

use super::controller::{Controller, MasterError};
use super::jobs::{JobEntry, RunRecord};
use super::Master;

pub fn routes() -> Router<Master> {
    let api = Router::new()
        .route("/iso8601", post(iso8601).put(iso8601))
        .route("/dependency", post(dependency).put(dependency))
        .route("/jobs", get(list))
        .route("/jobs/search", get(search))
        .route("/jobs/summary", get(summary))
        .route("/job/{name}", get(show).put(run).delete(delete))
        .route("/task/kill/{name}", axum::routing::delete(kill))
        .route("/job/stat/{name}", get(stat))
        .route("/graph/dot", get(graph_dot))
        .route("/graph/csv", get(graph_csv))
        .route("/leader", get(leader));
    Router::new().nest("/v1/scheduler", api.clone()).nest("/scheduler", api)
}

/// A Chronos error: 400 (or 500/503 for the master's own failures) and a message.
struct ChronosError(StatusCode, String);

impl IntoResponse for ChronosError {
    fn into_response(self) -> Response {
        let status = self.0.canonical_reason().unwrap_or("Error");
        (self.0, Json(json!({"message": self.1, "status": status}))).into_response()
    }
}

impl From<MasterError> for ChronosError {
    fn from(e: MasterError) -> ChronosError {
        let status = match &e {
            MasterError::BadRequest(_) | MasterError::NotFound(_) | MasterError::Invalid(_) => StatusCode::BAD_REQUEST,
            MasterError::Conflict { .. } => StatusCode::CONFLICT,
            MasterError::Forbidden(_) => StatusCode::FORBIDDEN,
            MasterError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            MasterError::Corrupt(_) | MasterError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ChronosError(status, e.to_string())
    }
}

fn bad(message: impl Into<String>) -> ChronosError {
    ChronosError(StatusCode::BAD_REQUEST, message.into())
}

fn time(ms: Option<i64>) -> String {
    ms.and_then(DateTime::<Utc>::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// A job as Chronos shows it: its definition with the defaults filled in, and its counters.
fn job_json(e: &JobEntry) -> Value {
    let d = &e.definition;
    let j = &e.job;
    let mut v = json!({
        "name": j.name,
        "command": d.command.clone().unwrap_or_default(),
        "arguments": d.arguments.clone().unwrap_or_default(),
        "shell": d.shell.unwrap_or(true),
        "retries": j.retries,
        "owner": d.owner.clone().unwrap_or_default(),
        "ownerName": d.owner_name.clone().unwrap_or_default(),
        "description": d.description.clone().unwrap_or_default(),
        "cpus": j.cpus,
        "mem": j.mem,
        "disk": j.disk,
        "disabled": j.disabled,
        "concurrent": j.concurrent,
        "softError": false,
        "highPriority": false,
        "dataProcessingJobType": false,
        "executor": "",
        "executorFlags": "",
        "taskInfoData": "",
        "uris": [],
        "fetch": [],
        "environmentVariables": j.env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
        "constraints": j.constraints,
        "runAsUser": j.user.clone().unwrap_or_default(),
        "successCount": e.stats.success_count,
        "errorCount": e.stats.error_count,
        "errorsSinceLastSuccess": e.stats.errors_since_last_success,
        "lastSuccess": time(e.stats.last_success_ms),
        "lastError": time(e.stats.last_error_ms),
        "maxCompletionTime": 0,
        "missedRuns": super::jobs::missed_policy(e),
    });
    match &j.trigger {
        Trigger::Schedule(When::Iso(s)) => {
            v["schedule"] = json!(s.to_iso());
            v["scheduleTimeZone"] = json!(d.schedule_time_zone.clone().unwrap_or_default());
            v["epsilon"] = json!(d.epsilon.clone().unwrap_or_else(|| "PT60S".into()));
        }
        Trigger::Schedule(When::Cron(c)) => {
            v["cron"] = json!(c.text);
            v["scheduleTimeZone"] = json!(d.schedule_time_zone.clone().unwrap_or_default());
            v["epsilon"] = json!(d.epsilon.clone().unwrap_or_else(|| "PT60S".into()));
        }
        Trigger::Parents(p) => v["parents"] = json!(p),
    }
    if let Some(c) = &d.container {
        v["container"] =
            json!({"type": c.kind.clone().unwrap_or_else(|| "DOCKER".into()), "image": c.image, "network": "HOST"});
    }
    v
}

/// A job's state for summaries and the graph: (status, state). `runs`: the jobs' runs under
/// way (`Jobs::runs_per_job`), counted once per request.
fn status_of(runs: &BTreeMap<&str, (usize, usize)>, e: &JobEntry) -> (&'static str, String) {
    let status = match (e.stats.last_success_ms, e.stats.last_error_ms) {
        (None, None) => "fresh",
        (Some(s), Some(f)) if f > s => "failure",
        (None, Some(_)) => "failure",
        _ => "success",
    };
    let (queued, n) = runs.get(e.job.name.as_str()).copied().unwrap_or_default();
    let state = if n > 0 {
        format!("{n} running")
    } else if queued > 0 {
        "queued".to_string()
    } else {
        "idle".to_string()
    };
    (status, state)
}

async fn put_job(m: Master, body: axum::body::Bytes, dependency: bool) -> Result<StatusCode, ChronosError> {
    let def: JobDefinition = corral_jobs::wire::parse(&body).map_err(bad)?;
    let has_parents = def.parents.as_ref().is_some_and(|p| !p.is_empty());
    if dependency && !has_parents {
        return Err(bad("parents: a dependent job needs parents (use /iso8601 for a scheduled job)"));
    }
    if !dependency && has_parents {
        return Err(bad("parents: a job with parents goes to /dependency"));
    }
    m.call(move |c, now| c.jobs_do(now, |jobs, core| jobs.put_job(core, def, now))).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn iso8601(State(m): State<Master>, body: axum::body::Bytes) -> Result<StatusCode, ChronosError> {
    put_job(m, body, false).await
}

async fn dependency(State(m): State<Master>, body: axum::body::Bytes) -> Result<StatusCode, ChronosError> {
    put_job(m, body, true).await
}

async fn list(State(m): State<Master>) -> Json<Vec<Value>> {
    let c = m.view();
    Json(c.jobs.jobs.values().map(job_json).collect())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchQuery {
    name: Option<String>,
    command: Option<String>,
    any: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

async fn search(State(m): State<Master>, Query(q): Query<SearchQuery>) -> Json<Vec<Value>> {
    let c = m.view();
    let has = |hay: &str, needle: &Option<String>| {
        needle.as_ref().is_none_or(|n| hay.to_lowercase().contains(&n.to_lowercase()))
    };
    let found: Vec<Value> = c
        .jobs
        .jobs
        .values()
        .filter(|e| has(&e.job.name, &q.name))
        .filter(|e| has(e.definition.command.as_deref().unwrap_or(""), &q.command))
        .filter(|e| {
            q.any.as_ref().is_none_or(|a| {
                let a = Some(a.clone());
                has(&e.job.name, &a)
                    || has(e.definition.command.as_deref().unwrap_or(""), &a)
                    || has(e.definition.description.as_deref().unwrap_or(""), &a)
                    || has(e.definition.owner.as_deref().unwrap_or(""), &a)
            })
        })
        .skip(q.offset.unwrap_or(0))
        .take(q.limit.unwrap_or(10))
        .map(job_json)
        .collect();
    Json(found)
}

async fn summary(State(m): State<Master>) -> Json<Value> {
    let c = m.view();
    let runs = c.jobs.runs_per_job(&c.core);
    let jobs: Vec<Value> = c
        .jobs
        .jobs
        .values()
        .map(|e| {
            let (status, state) = status_of(&runs, e);
            let schedule = match &e.job.trigger {
                Trigger::Schedule(When::Iso(s)) => s.to_iso(),
                Trigger::Schedule(When::Cron(c)) => c.text.clone(),
                Trigger::Parents(_) => String::new(),
            };
            json!({"name": e.job.name, "status": status, "state": state, "schedule": schedule,
                   "parents": e.job.parents(), "disabled": e.job.disabled})
        })
        .collect();
    Json(json!({ "jobs": jobs }))
}

async fn show(State(m): State<Master>, Path(name): Path<String>) -> Result<Json<Value>, ChronosError> {
    let c = m.view();
    let e = c.jobs.jobs.get(&name).ok_or_else(|| bad(format!("job {name:?} does not exist")))?;
    Ok(Json(job_json(e)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunQuery {
    arguments: Option<String>,
}

async fn run(
    State(m): State<Master>,
    Path(name): Path<String>,
    Query(q): Query<RunQuery>,
) -> Result<StatusCode, ChronosError> {
    if q.arguments.is_some() {
        return Err(bad("arguments: runs with other arguments are not supported yet"));
    }
    m.call(move |c, now| c.jobs_do(now, |jobs, core| jobs.run_now(core, &name, now))).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete(State(m): State<Master>, Path(name): Path<String>) -> Result<StatusCode, ChronosError> {
    m.call(move |c, now| c.jobs_do(now, |jobs, core| jobs.delete_job(core, &name))).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn kill(State(m): State<Master>, Path(name): Path<String>) -> Result<StatusCode, ChronosError> {
    m.call(move |c, now| c.jobs_do(now, |jobs, core| jobs.kill_job_tasks(core, &name))).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn run_json(c: &Controller, name: &str, r: &RunRecord) -> Value {
    let fmt = |ms: Option<i64>| {
        ms.and_then(DateTime::<Utc>::from_timestamp_millis)
            .map(|t| t.format("%m/%d/%y %H:%M:%S").to_string())
            .unwrap_or_else(|| "N/A".into())
    };
    let duration = r.started_ms.map(|s| (r.ended_ms - s).max(0));
    json!({
        "taskId": r.task, "jobName": name, "slaveId": r.agent.as_ref().map(|a| a.to_string()).unwrap_or_default(),
        "startTime": fmt(r.started_ms), "endTime": fmt(Some(r.ended_ms)), "duration": duration,
        "status": r.state.as_str().to_lowercase(), "scheduledTime": time(Some(r.scheduled_ms)),
        "attempt": r.attempt, "exitCode": r.exit_code, "message": r.message,
        // Where its output is: the agent keeps an ended task's logs.
        "logs": r.agent.as_ref().and_then(|a| c.core.agent_address(a)).map(|addr| format!("{addr}/api/v1/tasks/{}/logs", r.task)),
    })
}

async fn stat(State(m): State<Master>, Path(name): Path<String>) -> Result<Json<Value>, ChronosError> {
    let c = m.view();
    let e = c.jobs.jobs.get(&name).ok_or_else(|| bad(format!("job {name:?} does not exist")))?;
    let mut durations: Vec<i64> =
        e.history.iter().filter_map(|r| r.started_ms.map(|s| (r.ended_ms - s).max(0))).collect();
    durations.sort();
    let pct = |p: f64| -> Value {
        if durations.is_empty() {
            return Value::Null;
        }
        json!(durations[((durations.len() - 1) as f64 * p).round() as usize])
    };
    let mean = (!durations.is_empty()).then(|| durations.iter().sum::<i64>() as f64 / durations.len() as f64);
    Ok(Json(json!({
        "histogram": {"75thPercentile": pct(0.75), "95thPercentile": pct(0.95), "98thPercentile": pct(0.98),
                      "99thPercentile": pct(0.99), "median": pct(0.5), "mean": mean, "count": durations.len()},
        "taskStatHistory": e.history.iter().rev().map(|r| run_json(&c, &name, r)).collect::<Vec<_>>(),
    })))
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

async fn graph_dot(State(m): State<Master>) -> Response {
    let c = m.view();
    let mut out = String::from("digraph G {\n");
    for e in c.jobs.jobs.values() {
        out.push_str(&format!("  \"{}\";\n", e.job.name));
        for p in e.job.parents() {
            out.push_str(&format!("  \"{p}\" -> \"{}\";\n", e.job.name));
        }
    }
    out.push_str("}\n");
    text(out)
}

async fn graph_csv(State(m): State<Master>) -> Response {
    let c = m.view();
    let mut out = String::new();
    let runs = c.jobs.runs_per_job(&c.core);
    for e in c.jobs.jobs.values() {
        let (status, state) = status_of(&runs, e);
        out.push_str(&format!("node,{},{status},{state}\n", e.job.name));
    }
    for e in c.jobs.jobs.values() {
        for p in e.job.parents() {
            out.push_str(&format!("link,{p},{}\n", e.job.name));
        }
    }
    text(out)
}

async fn leader(headers: axum::http::HeaderMap) -> Json<Value> {
    // One master: the leader is the one answering, as the client reached it.
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("").to_string();
    Json(json!({ "leader": host }))
}
