//! Marathon's v2 REST API on the master's port: `/v2/apps`, `/v2/tasks`, `/v2/deployments`,
//! `/v2/groups`, `/v2/queue`, `/v2/info`, `/v2/leader`, `/ping`, `/metrics`. Bodies and status
//! codes follow Marathon's, so its clients work unchanged; the JSON views of apps, tasks and
//! deployments are built here from the controller's state and nowhere else.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use corral_services::wire::AppDefinition;
use serde_json::{json, Value};

use super::controller::{Controller, MasterError, TaskRecord};
use super::events::{Event, Stamped};
use super::services::{marathon_state, service_ports, AppEntry, Deployment, REASONS};
use super::Master;

pub fn routes() -> Router<Master> {
    Router::new()
        .route("/v2/apps", get(list_apps).post(create_app).put(put_apps).patch(put_apps))
        .route("/v2/apps/", get(list_apps).post(create_app))
        .route("/v2/apps/{*rest}", get(app_get).put(app_put).patch(app_patch).delete(app_delete).post(app_post))
        .route("/v2/tasks", get(list_tasks))
        .route("/v2/tasks/delete", post(delete_tasks))
        .route("/v2/deployments", get(list_deployments))
        .route("/v2/deployments/{id}", delete(cancel_deployment))
        .route("/v2/groups", get(root_group).post(create_group).put(put_root_group))
        .route("/v2/groups/{*id}", get(get_group).put(put_group).delete(delete_group))
        .route("/v2/queue", get(queue))
        .route("/v2/queue/{*rest}", delete(reset_delay))
        .route("/v2/events", get(events))
        .route("/v2/info", get(info))
        .route("/v2/leader", get(leader))
        .route("/ping", get(|| async { "pong" }))
        .route("/metrics", get(metrics))
}

/// An error in Marathon's shape: `{"message", ...}`.
pub struct MarathonError(StatusCode, Value);

impl IntoResponse for MarathonError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

impl From<MasterError> for MarathonError {
    fn from(e: MasterError) -> MarathonError {
        match e {
            MasterError::Invalid(details) => MarathonError(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"message": "Object is not valid", "details": details}),
            ),
            MasterError::Conflict { message, deployments } => MarathonError(
                StatusCode::CONFLICT,
                json!({"message": message, "deployments": deployments.iter().map(|d| json!({"id": d})).collect::<Vec<_>>()}),
            ),
            MasterError::NotFound(m) => MarathonError(StatusCode::NOT_FOUND, json!({"message": m})),
            MasterError::Forbidden(m) => MarathonError(StatusCode::FORBIDDEN, json!({"message": m})),
            MasterError::BadRequest(m) => MarathonError(StatusCode::BAD_REQUEST, json!({"message": m})),
            MasterError::Store(e) => MarathonError(StatusCode::SERVICE_UNAVAILABLE, json!({"message": e.to_string()})),
            e @ (MasterError::Corrupt(_) | MasterError::Internal(_)) => {
                MarathonError(StatusCode::INTERNAL_SERVER_ERROR, json!({"message": e.to_string()}))
            }
        }
    }
}

/// Builds a large answer (the JSON of every app or task) on a blocking thread, so that the
/// async workers stay free for other requests, and at most `Master::heavy_reads` at once, so
/// that a core stays free for the owner (a write waits for no reader).
async fn off_worker<R: IntoResponse + Send + 'static>(
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    f: impl FnOnce() -> R + Send + 'static,
) -> Response {
    let Ok(_permit) = permits.acquire_owned().await else {
        return MarathonError::from(MasterError::Internal("the master is stopping".into())).into_response();
    };
    match tokio::task::spawn_blocking(move || f().into_response()).await {
        Ok(r) => r,
        Err(e) => MarathonError::from(MasterError::Internal(e.to_string())).into_response(),
    }
}

fn bad(message: impl Into<String>) -> MarathonError {
    MarathonError(StatusCode::BAD_REQUEST, json!({"message": message.into()}))
}

/// Query parameters, repeated keys kept (`embed=a&embed=b`).
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(q: Option<String>) -> Params {
        Params(form_urlencoded::parse(q.unwrap_or_default().as_bytes()).into_owned().collect())
    }

    fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn get<'a>(&'a self, key: &'a str) -> Option<&'a str> {
        self.all(key).next()
    }

    /// `true`/`True`/`1`; clients send Python's capitalised booleans.
    fn flag(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
    }

    fn embeds(&self, what: &str) -> bool {
        self.all("embed").any(|e| e.split('.').nth(1) == Some(what) || e.ends_with(&format!(".{what}")))
    }
}

fn is_yaml(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("yaml"))
}

/// A definition from a request body, or Marathon's error for it.
fn decode(body: &[u8], headers: &HeaderMap) -> Result<AppDefinition, MarathonError> {
    AppDefinition::decode(body, is_yaml(headers)).map_err(|e| {
        if e.path == "/" {
            MarathonError(StatusCode::BAD_REQUEST, json!({"message": "Invalid JSON", "details": e.message}))
        } else {
            MarathonError(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"message": "Invalid JSON", "details": [{"path": e.path, "errors": [e.message]}]}),
            )
        }
    })
}

fn body_value(body: &[u8], headers: &HeaderMap) -> Result<Value, MarathonError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    corral_services::wire::decode_value(body, is_yaml(headers))
        .map_err(|e| MarathonError(StatusCode::BAD_REQUEST, json!({"message": "Invalid JSON", "details": e.message})))
}

/// 201 for something new, with where it is and the deployment that makes it.
fn created_at(location: String, deployment: String, version: String) -> Response {
    (
        StatusCode::CREATED,
        [(header::LOCATION, location), (header::HeaderName::from_static("marathon-deployment-id"), deployment.clone())],
        Json(json!({"deploymentId": deployment, "version": version})),
    )
        .into_response()
}

fn changed(deployment: String, version: String) -> Response {
    (
        StatusCode::OK,
        [("Marathon-Deployment-Id", deployment.clone())],
        Json(json!({"deploymentId": deployment, "version": version})),
    )
        .into_response()
}

// ---- views ------------------------------------------------------------------------------------

/// A task in Marathon's JSON.
pub fn task_json(c: &Controller, t: &TaskRecord) -> Value {
    let s = t.service.as_ref().expect("service tasks only");
    let mut v = json!({
        "id": t.id,
        "appId": s.app,
        "host": s.host.clone().unwrap_or_default(),
        "ports": s.ports,
        "servicePorts": s.service_ports,
        "slaveId": t.agent,
        "state": marathon_state(t.state),
        "stagedAt": s.staged_at,
        "startedAt": s.started_at,
        "version": s.version,
        "ipAddresses": [],
    });
    if let Some(ip) = t.agent.as_ref().and_then(|a| c.core.agent(a)).and_then(|a| host_of(&a.record.address)) {
        v["ipAddresses"] = json!([{"ipAddress": ip, "protocol": "IPv4"}]);
    }
    if let Some(h) = &s.health {
        v["healthCheckResults"] = json!([{
            "alive": h.alive,
            "consecutiveFailures": h.consecutive_failures,
            "firstSuccess": h.first_success,
            "lastSuccess": h.last_success,
            "lastFailure": h.last_failure,
            "lastFailureCause": if h.alive { Value::Null } else { json!("health check failed") },
            "taskId": t.id,
        }]);
    }
    v
}

pub(super) fn host_of(address: &str) -> Option<String> {
    let rest = address.split("://").nth(1)?;
    let host = rest.split('/').next()?.rsplit_once(':').map_or(rest, |(h, _)| h);
    Some(host.trim_matches(['[', ']']).to_string())
}

fn app_tasks<'a>(c: &'a Controller, id: &str) -> Vec<&'a TaskRecord> {
    let mut v: Vec<&TaskRecord> =
        c.services.tasks_of.get(id).into_iter().flatten().filter_map(|t| c.core.task(t)).collect();
    v.sort_by_key(|t| t.seq);
    v
}

/// Which optional parts of an app to show.
#[derive(Default, Clone, Copy)]
struct Embed {
    tasks: bool,
    last_failure: bool,
    readiness: bool,
    task_stats: bool,
}

impl Embed {
    /// From `embed=app.X` (one app) or `embed=apps.X` (lists); `tasks` and the last failure
    /// are in a single app's view whatever is asked, as in Marathon.
    fn from(p: &Params, single: bool) -> Embed {
        Embed {
            tasks: single || p.embeds("tasks") || p.embeds("failures"),
            last_failure: single || p.embeds("lastTaskFailure") || p.embeds("failures"),
            readiness: p.embeds("readiness"),
            task_stats: p.embeds("taskStats"),
        }
    }
}

/// Marathon's task counts: staged, running, healthy, unhealthy (health only with checks).
fn counts(tasks: &[&TaskRecord], with_checks: bool) -> Value {
    let health = |alive: bool| {
        tasks
            .iter()
            .filter(|t| {
                with_checks && t.service.as_ref().and_then(|s| s.health.as_ref()).is_some_and(|h| h.alive == alive)
            })
            .count()
    };
    json!({
        "staged": tasks.iter().filter(|t| matches!(t.state, crate::task::TaskState::Staging | crate::task::TaskState::Starting)).count(),
        "running": tasks.iter().filter(|t| t.state == crate::task::TaskState::Running).count(),
        "healthy": health(true),
        "unhealthy": health(false),
    })
}

/// An app in Marathon's JSON: the definition, counts and deployments (always), tasks and
/// the last failure when asked.
fn app_json(c: &Controller, e: &AppEntry, embed: Embed) -> Value {
    let mut v = serde_json::to_value(&e.definition).expect("definitions serialize");
    let tasks = app_tasks(c, &e.app.id);
    let with_checks = !e.app.health_checks.is_empty();
    let all = counts(&tasks, with_checks);
    v["tasksStaged"] = all["staged"].clone();
    v["tasksRunning"] = all["running"].clone();
    v["tasksHealthy"] = all["healthy"].clone();
    v["tasksUnhealthy"] = all["unhealthy"].clone();
    if embed.task_stats {
        let mut stats = serde_json::Map::new();
        let config = |t: &&TaskRecord| t.service.as_ref().is_some_and(|s| s.config_version == e.app.config_version);
        let latest: Vec<&TaskRecord> = tasks.iter().copied().filter(config).collect();
        let outdated: Vec<&TaskRecord> = tasks.iter().copied().filter(|t| !config(t)).collect();
        for (key, group) in [("withLatestConfig", &latest), ("withOutdatedConfig", &outdated), ("totalSummary", &tasks)]
        {
            if !group.is_empty() {
                stats.insert(key.into(), json!({"stats": {"counts": counts(group, with_checks)}}));
            }
        }
        v["taskStats"] = Value::Object(stats);
    }
    if embed.readiness && !e.app.readiness_checks.is_empty() {
        v["readinessCheckResults"] = json!(tasks
            .iter()
            .map(|t| json!({
                "name": "readinessCheck",
                "taskId": t.id,
                "ready": t.service.as_ref().is_some_and(|s| s.ready),
                "lastResponse": null,
            }))
            .collect::<Vec<_>>());
    }
    v["deployments"] = json!(c
        .services
        .deployments
        .iter()
        .filter(|d| d.affected_apps.contains(&e.app.id))
        .map(|d| json!({"id": d.id}))
        .collect::<Vec<_>>());
    if embed.tasks {
        v["tasks"] = json!(tasks.iter().map(|t| task_json(c, t)).collect::<Vec<_>>());
    }
    if embed.last_failure {
        if let Some(f) = &e.last_failure {
            v["lastTaskFailure"] = json!({
                "appId": e.app.id, "host": f.host, "message": f.message, "state": marathon_state(f.state),
                "taskId": f.task_id, "timestamp": f.at, "version": f.version, "slaveId": f.agent,
            });
        }
    }
    v
}

fn deployment_json(d: &Deployment) -> Value {
    let action = |(a, app): &(corral_services::plan::Action, String)| json!({"action": a, "app": app});
    let current: Vec<Value> = d
        .steps
        .get(d.current_step)
        .map(|s| s.iter().map(|x| json!({"action": x.0, "app": x.1, "readinessCheckResults": []})).collect())
        .unwrap_or_default();
    json!({
        "id": d.id,
        "version": d.version,
        "affectedApps": d.affected_apps,
        "affectedPods": [],
        "steps": d.steps.iter().map(|s| json!({"actions": s.iter().map(action).collect::<Vec<_>>()})).collect::<Vec<_>>(),
        "currentActions": current,
        "currentStep": (d.current_step + 1).min(d.steps.len().max(1)),
        "totalSteps": d.steps.len(),
    })
}

// ---- /v2/apps ---------------------------------------------------------------------------------

async fn list_apps(State(m): State<Master>, RawQuery(q): RawQuery) -> Response {
    off_worker(m.heavy_reads.clone(), move || list_apps_view(m, q)).await
}

fn list_apps_view(m: Master, q: Option<String>) -> Json<Value> {
    let p = Params::parse(q);
    let embed = Embed::from(&p, false);
    let id_filter = p.get("id").map(str::to_lowercase);
    let cmd_filter = p.get("cmd").map(str::to_lowercase);
    let label = p.get("label").map(str::to_string);
    let c = m.view();
    let apps: Vec<Value> = c
        .services
        .apps
        .values()
        .filter(|e| id_filter.as_ref().is_none_or(|f| e.app.id.to_lowercase().contains(f)))
        .filter(|e| {
            cmd_filter.as_ref().is_none_or(|f| e.definition.cmd.as_deref().unwrap_or("").to_lowercase().contains(f))
        })
        .filter(|e| label.as_ref().is_none_or(|l| label_matches(e.definition.labels.as_ref(), l)))
        .map(|e| app_json(&c, e, embed))
        .collect();
    Json(json!({ "apps": apps }))
}

/// Marathon's label selector, the common forms: `k`, `k==v`, `k!=v`, comma meaning and.
fn label_matches(labels: Option<&BTreeMap<String, String>>, selector: &str) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    selector.split(',').map(str::trim).filter(|s| !s.is_empty()).all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            labels.get(k.trim()).is_none_or(|x| x != v.trim())
        } else if let Some((k, v)) = term.split_once("==") {
            labels.get(k.trim()).is_some_and(|x| x == v.trim())
        } else {
            labels.contains_key(term)
        }
    })
}

async fn create_app(
    State(m): State<Master>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, MarathonError> {
    let def = decode(&body, &headers)?;
    let ((d, deployment), c) = m.call(move |c, now| c.create_app(def, now)).await?;
    let entry = c.services.apps.get(&d.id).expect("just created");
    let mut v = app_json(&c, entry, Embed { last_failure: false, ..Embed::from(&Params(Vec::new()), true) });
    v["deployments"] = json!([{"id": deployment}]);
    Ok((
        StatusCode::CREATED,
        [
            (header::LOCATION, format!("/v2/apps{}", d.id)),
            (header::HeaderName::from_static("marathon-deployment-id"), deployment),
        ],
        Json(v),
    )
        .into_response())
}

/// `PUT /v2/apps`: several apps at once, one deployment.
async fn put_apps(
    State(m): State<Master>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, MarathonError> {
    let p = Params::parse(q);
    let list = body_value(&body, &headers)?;
    let Value::Array(items) = list else { return Err(bad("expected a JSON array of app definitions")) };
    let force = p.flag("force");
    let ((d, v), _) = m.call(move |c, now| c.update_apps(items, force, now)).await?;
    Ok(changed(d, v))
}

/// Splits `/v2/apps/{rest}` into the app id and what follows it.
enum AppPath {
    App(String),
    Restart(String),
    Tasks(String),
    Task(String, String),
    Versions(String),
    Version(String, String),
}

fn app_path(rest: &str) -> AppPath {
    let rest = rest.trim_end_matches('/');
    if let Some(id) = rest.strip_suffix("/restart") {
        return AppPath::Restart(id.to_string());
    }
    if let Some(id) = rest.strip_suffix("/tasks") {
        return AppPath::Tasks(id.to_string());
    }
    if let Some(id) = rest.strip_suffix("/versions") {
        return AppPath::Versions(id.to_string());
    }
    if let Some((id, task)) = rest.rsplit_once("/tasks/") {
        return AppPath::Task(id.to_string(), task.to_string());
    }
    if let Some((id, v)) = rest.rsplit_once("/versions/") {
        return AppPath::Version(id.to_string(), v.to_string());
    }
    AppPath::App(rest.to_string())
}

/// The app id of a path that must name an app and nothing under it.
fn app_only(rest: &str) -> Result<String, MarathonError> {
    match app_path(rest) {
        AppPath::App(id) => Ok(id),
        _ => Err(MarathonError(StatusCode::NOT_FOUND, json!({"message": format!("URI not found: /v2/apps/{rest}")}))),
    }
}

fn norm(id: &str) -> String {
    corral_services::app::absolute_id(id)
}

async fn app_get(
    State(m): State<Master>,
    Path(rest): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, MarathonError> {
    let p = Params::parse(q);
    let c = m.view();
    let missing = |id: &str| MarathonError::from(MasterError::NotFound(format!("App '{id}' does not exist")));
    match app_path(&rest) {
        AppPath::App(id) => {
            let id = norm(&id);
            if id.ends_with("/*") {
                let group = id.trim_end_matches("/*");
                let apps: Vec<Value> = c
                    .services
                    .apps
                    .values()
                    .filter(|e| e.app.id.starts_with(&format!("{group}/")) || group.is_empty())
                    .map(|e| app_json(&c, e, Embed::default()))
                    .collect();
                return Ok(Json(json!({ "*": apps })).into_response());
            }
            let e = c.services.apps.get(&id).ok_or_else(|| missing(&id))?;
            Ok(Json(json!({"app": app_json(&c, e, Embed::from(&p, true))})).into_response())
        }
        AppPath::Tasks(id) => {
            let id = norm(&id);
            c.services.apps.get(&id).ok_or_else(|| missing(&id))?;
            let tasks = app_tasks(&c, &id);
            if wants_text(&headers) {
                return Ok(tasks_text(&c, &tasks).into_response());
            }
            Ok(Json(json!({"tasks": tasks.iter().map(|t| task_json(&c, t)).collect::<Vec<_>>()})).into_response())
        }
        AppPath::Task(id, task) => {
            let id = norm(&id);
            let t =
                c.core.task(&task).filter(|t| t.service.as_ref().is_some_and(|s| s.app == id)).ok_or_else(|| {
                    MarathonError::from(MasterError::NotFound(format!("Task '{task}' does not exist")))
                })?;
            Ok(Json(json!({"task": task_json(&c, t)})).into_response())
        }
        AppPath::Versions(id) => {
            let id = norm(&id);
            let e = c.services.apps.get(&id).ok_or_else(|| missing(&id))?;
            let mut versions = e.versions.clone();
            versions.reverse();
            Ok(Json(json!({ "versions": versions })).into_response())
        }
        AppPath::Version(id, v) => {
            let id = norm(&id);
            c.services.apps.get(&id).ok_or_else(|| missing(&id))?;
            let d: AppDefinition = c
                .core
                .get(crate::store::APP_VERSIONS, &format!("{id} {v}"))?
                .ok_or_else(|| MarathonError::from(MasterError::NotFound(format!("App '{id}' has no version {v}"))))?;
            Ok(Json(serde_json::to_value(d).expect("definitions serialize")).into_response())
        }
        AppPath::Restart(_) => Err(MarathonError(StatusCode::METHOD_NOT_ALLOWED, json!({"message": "use POST"}))),
    }
}

fn wants_text(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/plain") && !a.contains("json"))
}

/// Marathon's plain-text task list: `app<TAB>servicePort<TAB>host:port...`.
fn tasks_text(c: &Controller, tasks: &[&TaskRecord]) -> String {
    let mut by_app: BTreeMap<&str, Vec<&TaskRecord>> = BTreeMap::new();
    for t in tasks.iter().filter(|t| t.state == crate::task::TaskState::Running) {
        by_app.entry(t.service.as_ref().expect("service").app.as_str()).or_default().push(t);
    }
    let mut out = String::new();
    for (app, ts) in by_app {
        let safe = app.trim_start_matches('/').replace('/', "_");
        let ports = c.services.apps.get(app).map(|e| service_ports(&e.definition)).unwrap_or_default();
        for (i, sp) in ports.iter().enumerate() {
            let hosts: Vec<String> = ts
                .iter()
                .filter_map(|t| {
                    let s = t.service.as_ref()?;
                    Some(format!("{}:{}", s.host.clone().unwrap_or_default(), s.ports.get(i)?))
                })
                .collect();
            out.push_str(&format!("{safe}\t{sp}\t{}\n", hosts.join("\t")));
        }
    }
    out
}

async fn app_put(
    State(m): State<Master>,
    Path(rest): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, MarathonError> {
    let p = Params::parse(q);
    let id = app_only(&rest)?;
    let patch = body_value(&body, &headers)?;
    let partial = p.get("partialUpdate").is_none_or(|v| !v.eq_ignore_ascii_case("false"));
    change_app(m, &id, patch, partial, false, p.flag("force")).await
}

async fn app_patch(
    State(m): State<Master>,
    Path(rest): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, MarathonError> {
    let p = Params::parse(q);
    let id = app_only(&rest)?;
    let id = norm(&id);
    let patch = body_value(&body, &headers)?;
    change_app(m, &id, patch, true, true, p.flag("force")).await
}

/// PUT and PATCH of one app; `must_exist` (PATCH) refuses to create it.
async fn change_app(
    m: Master,
    id: &str,
    patch: Value,
    partial: bool,
    must_exist: bool,
    force: bool,
) -> Result<Response, MarathonError> {
    if !patch.is_object() {
        return Err(bad("an app definition must be a JSON object"));
    }
    let app = id.to_string();
    let ((created, deployment, version), _) = m
        .call(move |c, now| {
            if must_exist && !c.services.apps.contains_key(&norm(&app)) {
                return Err(MasterError::NotFound(format!("App '{app}' does not exist")));
            }
            c.update_app(&app, patch, partial, force, now)
        })
        .await?;
    if created {
        return Ok(created_at(format!("/v2/apps{}", norm(id)), deployment, version));
    }
    Ok(changed(deployment, version))
}

async fn app_delete(
    State(m): State<Master>,
    Path(rest): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, MarathonError> {
    let p = Params::parse(q);
    match app_path(&rest) {
        AppPath::App(id) => {
            let force = p.flag("force");
            let ((d, v), _) = m.call(move |c, now| c.delete_app(&id, force, now)).await?;
            Ok(changed(d, v))
        }
        AppPath::Tasks(id) => {
            let id = norm(&id);
            let host = p.get("host").map(str::to_string);
            let ids: Vec<String> = {
                let c = m.view();
                c.services
                    .apps
                    .get(&id)
                    .ok_or_else(|| MarathonError::from(MasterError::NotFound(format!("App '{id}' does not exist"))))?;
                app_tasks(&c, &id)
                    .into_iter()
                    .filter(|t| {
                        host.as_deref()
                            .is_none_or(|h| h == "*" || t.service.as_ref().and_then(|s| s.host.as_deref()) == Some(h))
                    })
                    .map(|t| t.id.to_string())
                    .collect()
            };
            kill_tasks(m, ids, p.flag("scale"), true).await
        }
        AppPath::Task(id, task) => {
            let id = norm(&id);
            {
                let c = m.view();
                c.core.task(&task).filter(|t| t.service.as_ref().is_some_and(|s| s.app == id)).ok_or_else(|| {
                    MarathonError::from(MasterError::NotFound(format!("Task '{task}' does not exist")))
                })?;
            }
            kill_tasks(m, vec![task], p.flag("scale"), false).await
        }
        _ => Err(MarathonError(StatusCode::METHOD_NOT_ALLOWED, json!({"message": "method not allowed"}))),
    }
}

/// Kills service tasks; with `scale`, lowers their apps' instance counts by as many (one
/// deployment).
async fn kill_tasks(m: Master, ids: Vec<String>, scale: bool, many: bool) -> Result<Response, MarathonError> {
    let ((views, deployment), _) = m
        .call(move |c, now| {
            let views: Vec<Value> = ids.iter().filter_map(|id| c.core.task(id)).map(|t| task_json(c, t)).collect();
            let deployment = c.kill_app_tasks(&ids, scale, now)?;
            Ok((views, deployment))
        })
        .await?;
    if scale {
        let (d, v) = deployment.ok_or_else(|| bad("no tasks given"))?;
        return Ok(changed(d, v));
    }
    if many {
        Ok(Json(json!({ "tasks": views })).into_response())
    } else {
        Ok(Json(json!({"task": views.into_iter().next()})).into_response())
    }
}

async fn app_post(
    State(m): State<Master>,
    Path(rest): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, MarathonError> {
    let p = Params::parse(q);
    let AppPath::Restart(id) = app_path(&rest) else {
        return Err(MarathonError(StatusCode::METHOD_NOT_ALLOWED, json!({"message": "method not allowed"})));
    };
    let force = p.flag("force");
    let ((d, v), _) = m.call(move |c, now| c.restart_app(&id, force, now)).await?;
    Ok(changed(d, v))
}

// ---- /v2/tasks --------------------------------------------------------------------------------

async fn list_tasks(State(m): State<Master>, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    off_worker(m.heavy_reads.clone(), move || list_tasks_view(m, q, headers)).await
}

fn list_tasks_view(m: Master, q: Option<String>, headers: HeaderMap) -> Response {
    let p = Params::parse(q);
    let wanted: Vec<String> =
        p.all("status").chain(p.all("status[]")).map(|s| format!("TASK_{}", s.to_uppercase())).collect();
    let c = m.view();
    let mut tasks: Vec<&TaskRecord> = c
        .core
        .all_tasks()
        .filter(|t| t.service.is_some())
        .filter(|t| wanted.is_empty() || wanted.iter().any(|w| w == marathon_state(t.state)))
        .collect();
    tasks.sort_by_key(|t| t.seq);
    if wants_text(&headers) {
        return tasks_text(&c, &tasks).into_response();
    }
    Json(json!({"tasks": tasks.iter().map(|t| task_json(&c, t)).collect::<Vec<_>>()})).into_response()
}

async fn delete_tasks(
    State(m): State<Master>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, MarathonError> {
    let p = Params::parse(q);
    if p.flag("scale") && p.flag("wipe") {
        return Err(bad("You cannot use scale and wipe at the same time."));
    }
    let v = body_value(&body, &headers)?;
    let ids: Vec<String> = v
        .get("ids")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("expected {\"ids\": [task ids]}"))?
        .iter()
        .map(|x| x.as_str().map(str::to_string).ok_or_else(|| bad("task ids must be strings")))
        .collect::<Result<_, _>>()?;
    {
        let c = m.view();
        if let Some(unknown) = ids.iter().find(|id| c.core.task(id).is_none_or(|t| t.service.is_none())) {
            return Err(bad(format!("Invalid task id '{unknown}'.")));
        }
    }
    kill_tasks(m, ids, p.flag("scale"), true).await
}

// ---- /v2/deployments ------------------------------------------------------------------------

async fn list_deployments(State(m): State<Master>) -> Json<Value> {
    let c = m.view();
    Json(json!(c.services.deployments.iter().map(deployment_json).collect::<Vec<_>>()))
}

async fn cancel_deployment(
    State(m): State<Master>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, MarathonError> {
    let p = Params::parse(q);
    let force = p.flag("force");
    let (result, _) = m.call(move |c, now| c.cancel_deployment(&id, force, now)).await?;
    Ok(match result {
        Some((d, v)) => changed(d, v),
        None => StatusCode::ACCEPTED.into_response(),
    })
}

// ---- /v2/groups ---------------------------------------------------------------------------------

/// The group tree of the apps under `id` (`/` for all): groups are the paths' directories.
fn group_json(c: &Controller, id: &str) -> Option<Value> {
    let prefix = if id == "/" { "/".to_string() } else { format!("{id}/") };
    let apps: Vec<&AppEntry> = c.services.apps.values().filter(|e| e.app.id.starts_with(&prefix)).collect();
    if apps.is_empty() && id != "/" {
        return None;
    }
    let direct: Vec<Value> = apps
        .iter()
        .filter(|e| !e.app.id[prefix.len()..].contains('/'))
        .map(|e| serde_json::to_value(&e.definition).expect("definitions serialize"))
        .collect();
    let mut children: Vec<String> = apps
        .iter()
        .filter_map(|e| e.app.id[prefix.len()..].split_once('/').map(|(g, _)| format!("{prefix}{g}")))
        .collect();
    children.dedup();
    let version =
        apps.iter().filter_map(|e| e.definition.version.clone()).max().unwrap_or_else(|| c.wall(c.core.now()));
    Some(json!({
        "id": id,
        "apps": direct,
        "groups": children.iter().filter_map(|g| group_json(c, g)).collect::<Vec<_>>(),
        "pods": [],
        "dependencies": [],
        "version": version,
    }))
}

/// The apps of a group definition, nested groups flattened: ids made absolute (relative to
/// their group), and the group's dependencies (on apps or groups) added to every app in it.
fn flatten_group(parent: &str, g: &Value, known: &[String], out: &mut Vec<Value>) -> Result<String, MarathonError> {
    let invalid = |path: &str, e: &str| {
        MarathonError::from(MasterError::Invalid(vec![corral_services::Violation {
            path: path.into(),
            errors: vec![e.into()],
        }]))
    };
    let raw = g.get("id").and_then(Value::as_str).unwrap_or("");
    let id = if raw.starts_with('/') { norm(raw) } else { norm(&format!("{parent}/{raw}")) };
    if let Err(e) = corral_services::app::check_id(&id) {
        if id != "/" {
            return Err(invalid("/id", &e));
        }
    }
    let deps: Vec<String> = g
        .get("dependencies")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|d| corral_services::app::resolve_id(&id, d))
        .flat_map(|d| {
            // A group dependency means every app in it.
            let apps: Vec<String> = known.iter().filter(|k| k.starts_with(&format!("{d}/"))).cloned().collect();
            if apps.is_empty() {
                vec![d]
            } else {
                apps
            }
        })
        .collect();
    for (i, app) in g.get("apps").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let mut app = app.clone();
        let Some(obj) = app.as_object_mut() else {
            return Err(invalid(&format!("/apps({i})"), "an app must be an object"));
        };
        let raw = obj.get("id").and_then(Value::as_str).unwrap_or("").to_string();
        if raw.is_empty() {
            return Err(invalid(&format!("/apps({i})/id"), "an app needs an id"));
        }
        let app_id = if raw.starts_with('/') { norm(&raw) } else { norm(&format!("{id}/{raw}")) };
        obj.insert("id".into(), app_id.clone().into());
        let mut all: Vec<Value> = obj.get("dependencies").and_then(Value::as_array).cloned().unwrap_or_default();
        all.extend(deps.iter().filter(|d| **d != app_id).map(|d| Value::String(d.clone())));
        obj.insert("dependencies".into(), Value::Array(all));
        out.push(app);
    }
    for sub in g.get("groups").and_then(Value::as_array).into_iter().flatten() {
        flatten_group(&id, sub, known, out)?;
    }
    Ok(id)
}

/// Every app id a group change can refer to: those that exist and those in the body.
fn known_ids(c: &Controller, body: &Value, base: &str) -> Vec<String> {
    let mut ids: Vec<String> = c.services.apps.keys().cloned().collect();
    let mut out = Vec::new();
    if flatten_group(base, body, &[], &mut out).is_ok() {
        ids.extend(out.iter().filter_map(|a| a["id"].as_str().map(str::to_string)));
    }
    ids
}

/// `POST /v2/groups`: creates a group's apps in one deployment (409 if the group exists).
async fn create_group(
    State(m): State<Master>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, MarathonError> {
    let p = Params::parse(q);
    let g = body_value(&body, &headers)?;
    let force = p.flag("force");
    let (result, _) = m
        .call(move |c, now| {
            let known = known_ids(c, &g, "/");
            let mut apps = Vec::new();
            let id = match flatten_group("/", &g, &known, &mut apps) {
                Ok(id) => id,
                Err(e) => return Ok(Err(e)),
            };
            if c.services.apps.keys().any(|a| a.starts_with(&format!("{id}/"))) {
                return Err(MasterError::Conflict {
                    message: format!("Group {id} is already created. Use PUT to change this group."),
                    deployments: Vec::new(),
                });
            }
            let (d, v) = c.change_apps(apps, false, Vec::new(), force, now)?;
            Ok(Ok((id, d, v)))
        })
        .await?;
    let (id, d, v) = result?;
    Ok(created_at(format!("/v2/groups{id}"), d, v))
}

async fn put_root_group(
    State(m): State<Master>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, MarathonError> {
    change_group(m, "/".into(), q, headers, body).await
}

async fn put_group(
    State(m): State<Master>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, MarathonError> {
    change_group(m, norm(&id), q, headers, body).await
}

/// `PUT /v2/groups/{id}`: `{"scaleBy": f}` scales every app in it; a group definition replaces
/// the group (its apps not in the body are removed), in one deployment.
async fn change_group(
    m: Master,
    id: String,
    q: Option<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, MarathonError> {
    let p = Params::parse(q);
    let g = body_value(&body, &headers)?;
    let force = p.flag("force");
    let (result, _) = m.call(move |c, now| Ok(group_change(c, id, g, force, now))).await?;
    let (d, v) = result?;
    Ok(changed(d, v))
}

/// `PUT /v2/groups/{id}` on the owner: the apps to change and remove, as one deployment.
fn group_change(
    c: &mut Controller,
    id: String,
    mut g: Value,
    force: bool,
    now: u64,
) -> Result<(String, String), MarathonError> {
    let prefix = if id == "/" { "/".to_string() } else { format!("{id}/") };
    let members: Vec<String> = c.services.apps.keys().filter(|a| a.starts_with(&prefix)).cloned().collect();
    let (items, removals) = if let Some(factor) = g.get("scaleBy").and_then(Value::as_f64) {
        let items = members
            .iter()
            .map(|a| {
                let n = c.services.apps[a].definition.instances.unwrap_or(1) as f64;
                json!({"id": a, "instances": (n * factor).ceil() as i64})
            })
            .collect();
        (items, Vec::new())
    } else {
        if let Some(o) = g.as_object_mut() {
            o.insert("id".into(), id.clone().into());
        }
        let known = known_ids(c, &g, "/");
        let mut apps = Vec::new();
        flatten_group("/", &g, &known, &mut apps)?;
        let named: Vec<&str> = apps.iter().filter_map(|a| a["id"].as_str()).collect();
        let removals = members.iter().filter(|a| !named.contains(&a.as_str())).cloned().collect();
        (apps, removals)
    };
    let partial = g.get("scaleBy").is_some();
    Ok(c.change_apps(items, partial, removals, force, now)?)
}

/// `DELETE /v2/groups/{id}`: removes every app in it, in one deployment.
async fn delete_group(
    State(m): State<Master>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, MarathonError> {
    let p = Params::parse(q);
    let id = norm(&id);
    let force = p.flag("force");
    let ((d, v), _) = m
        .call(move |c, now| {
            let members: Vec<String> =
                c.services.apps.keys().filter(|a| a.starts_with(&format!("{id}/"))).cloned().collect();
            if members.is_empty() {
                return Err(MasterError::NotFound(format!("Group '{id}' does not exist")));
            }
            c.change_apps(Vec::new(), false, members, force, now)
        })
        .await?;
    Ok(changed(d, v))
}

async fn root_group(State(m): State<Master>) -> Response {
    off_worker(m.heavy_reads.clone(), move || root_group_view(m)).await
}

fn root_group_view(m: Master) -> Json<Value> {
    let c = m.view();
    Json(group_json(&c, "/").expect("the root group always exists"))
}

async fn get_group(State(m): State<Master>, Path(id): Path<String>) -> Result<Json<Value>, MarathonError> {
    let c = m.view();
    let id = norm(&id);
    group_json(&c, &id)
        .map(Json)
        .ok_or_else(|| MarathonError(StatusCode::NOT_FOUND, json!({"message": format!("Group '{id}' does not exist")})))
}

// ---- /v2/queue: the launch queue, and why offers went unused ------------------------------------

async fn queue(State(m): State<Master>, RawQuery(q): RawQuery) -> Response {
    off_worker(m.heavy_reads.clone(), move || queue_view(m, q)).await
}

fn queue_view(m: Master, q: Option<String>) -> Json<Value> {
    let p = Params::parse(q);
    let with_offers = p.all("embed").any(|e| e == "lastUnusedOffers");
    let now = m.now_ms();
    let c = m.view();
    let mut items = Vec::new();
    for (id, e) in &c.services.apps {
        let tasks = app_tasks(&c, id);
        let queued = tasks.iter().filter(|t| t.agent.is_none() && t.state == crate::task::TaskState::Staging).count();
        let live = tasks.iter().filter(|t| !matches!(t.state, crate::task::TaskState::Killing)).count();
        let missing = (e.app.instances as usize).saturating_sub(live);
        let count = queued + missing;
        if count == 0 {
            continue;
        }
        let time_left = e.backoff.until_ms.saturating_sub(now) as f64 / 1000.0;
        let mut processed = e.offers.processed;
        let mut summary = Vec::new();
        for r in REASONS {
            let declined = e.offers.declined_by.get(r).copied().unwrap_or(0);
            summary.push(json!({"reason": r, "declined": declined, "processed": processed}));
            processed = processed.saturating_sub(declined);
        }
        let mut item = json!({
            "app": app_json(&c, e, Embed::default()),
            "count": count,
            "delay": {"timeLeftSeconds": time_left.ceil() as u64, "overdue": time_left <= 0.0},
            "since": e.waiting_since.clone().unwrap_or_else(|| c.wall(now)),
            "processedOffersSummary": {
                "processedOffersCount": e.offers.processed,
                "unusedOffersCount": e.offers.unused,
                "lastUnusedOfferAt": e.offers.last_unused_at,
                "lastUsedOfferAt": e.offers.last_used_at,
                "rejectSummaryLastOffers": summary.clone(),
                "rejectSummaryLaunchAttempt": summary,
            },
        });
        if with_offers {
            item["lastUnusedOffers"] = json!(e
                .offers
                .last_unused
                .iter()
                .map(|o| json!({
                    "offer": {"hostname": o.hostname, "agentId": o.agent, "resources": o.resources},
                    "reason": o.reasons.iter().map(|r| r.split(':').next().unwrap_or(r).to_string()).collect::<Vec<_>>(),
                    "details": o.reasons,
                    "timestamp": o.at,
                }))
                .collect::<Vec<_>>());
            // Inside the summary, which clients keep as it is (their queue item model takes no
            // new keys).
            item["processedOffersSummary"]["roleQuota"] = json!(c.quota_note(&e.app.role, &e.app.resources_spec()));
        }
        items.push(item);
    }
    Json(json!({ "queue": items }))
}

async fn reset_delay(State(m): State<Master>, Path(rest): Path<String>) -> Result<StatusCode, MarathonError> {
    let id = norm(rest.trim_end_matches('/').strip_suffix("/delay").unwrap_or(&rest));
    m.call(move |c, _| {
        let e = c
            .services
            .apps
            .get_mut(&id)
            .ok_or_else(|| MasterError::NotFound(format!("Application {id} not found in tasks queue.")))?;
        e.backoff.reset();
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- /v2/events: server-sent events ---------------------------------------------------------------

/// Marathon's event stream: `event: TYPE` and `data: JSON` per event, filtered by
/// `event_type`; `event_stream_attached` first, a comment line every 15 s to keep it open.
async fn events(State(m): State<Master>, RawQuery(q): RawQuery) -> Response {
    let p = Params::parse(q);
    let filter: Vec<String> = p.all("event_type").map(str::to_string).collect();
    let mut rx = m.events.subscribe();
    let attached =
        json!({"remoteAddress": "", "eventType": "event_stream_attached", "timestamp": m.view().wall(m.now_ms())});
    let (tx, out) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(256);
    let frame = move |e: &Value| -> Option<Vec<u8>> {
        let kind = e["eventType"].as_str().unwrap_or("");
        (filter.is_empty() || filter.iter().any(|f| f == kind))
            .then(|| format!("event: {kind}\ndata: {e}\n\n").into_bytes())
    };
    tokio::spawn(async move {
        if let Some(f) = frame(&attached) {
            if tx.send(Ok(f)).await.is_err() {
                return;
            }
        }
        let mut keepalive = tokio::time::interval(std::time::Duration::from_secs(15));
        loop {
            let chunk = tokio::select! {
                e = rx.recv() => match e {
                    Ok(e) => match frame(&event_json(&e)) {
                        Some(f) => f,
                        None => continue,
                    },
                    // A slow reader misses events, as with Marathon.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = keepalive.tick() => b":\n\n".to_vec(),
            };
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
    });
    (
        [(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")],
        axum::body::Body::from_stream(crate::chunks::ChunkStream(out)),
    )
        .into_response()
}

/// A deployment plan as Marathon's events carry it.
fn plan_json(d: &Deployment) -> Value {
    let empty = |v: &str| json!({"id": "/", "apps": [], "groups": [], "dependencies": [], "version": v});
    json!({
        "id": d.id,
        "version": d.version,
        "original": empty(&d.version),
        "target": empty(&d.version),
        "steps": d.steps.iter().map(|s| step_json(s)).collect::<Vec<_>>(),
    })
}

fn step_json(step: &[(corral_services::plan::Action, String)]) -> Value {
    json!({"actions": step.iter().map(|(a, app)| json!({"action": a, "app": app})).collect::<Vec<_>>()})
}

/// An event as Marathon's event stream shows it: its type, its fields, its timestamp.
fn event_json(e: &Stamped) -> Value {
    let (kind, mut v) = match &e.event {
        Event::TaskStatus { task, app, agent, agent_ip, state, message, host, ports, version } => (
            "status_update_event",
            json!({
                "slaveId": agent, "taskId": task, "taskStatus": marathon_state(*state), "message": message,
                "appId": app, "host": host, "ports": ports, "version": version,
                "ipAddresses": agent_ip.iter().map(|ip| json!({"ipAddress": ip, "protocol": "IPv4"})).collect::<Vec<_>>(),
            }),
        ),
        Event::HealthChanged { app, task, version, alive } => (
            "health_status_changed_event",
            json!({"appId": app, "taskId": task, "instanceId": task, "version": version, "alive": alive}),
        ),
        Event::HealthCheckFailed { app, task } => {
            ("failed_health_check_event", json!({"appId": app, "taskId": task, "healthCheck": {}}))
        }
        Event::UnhealthyKilled { app, task, version, host, agent } => (
            "unhealthy_task_kill_event",
            json!({"appId": app, "taskId": task, "version": version, "reason": "health check failed", "host": host, "slaveId": agent}),
        ),
        Event::AppRequested { app, definition } => {
            ("api_post_event", json!({"clientIp": "", "uri": format!("/v2/apps{app}"), "appDefinition": definition}))
        }
        Event::AppTerminated { app } => ("app_terminated_event", json!({ "appId": app })),
        Event::DeploymentStarted { deployment: d } => {
            let first = d.steps.first().map(|s| step_json(s)).unwrap_or_else(|| json!({"actions": []}));
            ("deployment_info", json!({"plan": plan_json(d), "currentStep": first}))
        }
        Event::DeploymentStepDone { deployment: d, step } => {
            let current = d.steps.get(*step).map(|s| step_json(s)).unwrap_or_else(|| json!({"actions": []}));
            ("deployment_step_success", json!({"plan": plan_json(d), "currentStep": current}))
        }
        Event::DeploymentSucceeded { deployment: d } => {
            ("deployment_success", json!({"id": d.id, "plan": plan_json(d)}))
        }
        Event::DeploymentFailed { deployment: d, reason } => {
            ("deployment_failed", json!({"id": d.id, "plan": plan_json(d), "reason": reason}))
        }
    };
    v["eventType"] = kind.into();
    v["timestamp"] = super::services::timestamp(e.at_ms).into();
    v
}

// ---- info, leader, metrics --------------------------------------------------------------------

async fn info(headers: HeaderMap) -> Json<Value> {
    let leader = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost").to_string();
    Json(json!({
        "name": "corral",
        "version": env!("CARGO_PKG_VERSION"),
        "buildref": "",
        "elected": true,
        "leader": leader,
        "frameworkId": "corral-services",
        "marathon_config": {
            "framework_name": "corral-services",
            "hostname": leader,
            "local_port_min": super::services::SERVICE_PORTS.start(),
            "local_port_max": super::services::SERVICE_PORTS.end(),
            "ha": false,
            "checkpoint": true,
            "features": [],
        },
        "zookeeper_config": {},
        "http_config": {},
        "event_subscriber": null,
    }))
}

async fn leader(headers: HeaderMap) -> Json<Value> {
    let leader = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost").to_string();
    Json(json!({ "leader": leader }))
}

async fn metrics(State(m): State<Master>) -> Json<Value> {
    let c = m.view();
    let service_tasks = || c.core.all_tasks().filter(|t| t.service.is_some());
    let running = service_tasks().filter(|t| t.state == crate::task::TaskState::Running).count();
    let gauge = |v: usize| json!({ "value": v });
    Json(json!({
        "version": "4.0.0",
        "counters": {},
        "gauges": {
            "marathon.apps.active.gauge": gauge(c.services.apps.len()),
            "marathon.deployments.active.gauge": gauge(c.services.deployments.len()),
            "marathon.instances.running.gauge": gauge(running),
            "marathon.instances.launched.gauge": gauge(service_tasks().count()),
            "corral.agents.gauge": gauge(c.core.agent_count()),
            "corral.master.tick.last.ms": json!({"value": m.ticks.last_us.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1000.0}),
            "corral.master.tick.max.ms": json!({"value": m.ticks.max_us.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1000.0}),
        },
        "histograms": {},
        "meters": {},
        "timers": {},
    }))
}
