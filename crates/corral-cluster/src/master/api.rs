//! The master's HTTP API. Each handler parses, then either reads the published snapshot or
//! sends the owner one command, and answers. Errors map to HTTP statuses here and nowhere else.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;

use super::controller::MasterError;
use super::Master;
use crate::wire;

pub fn router(master: Master) -> Router {
    Router::new()
        .route("/api/v1/tasks", get(list_tasks).post(run_tasks))
        .route("/api/v1/tasks/{id}", get(get_task))
        .route("/api/v1/tasks/{id}/kill", post(kill_task))
        .route("/api/v1/tasks/{id}/logs", get(task_logs))
        .route("/api/v1/tasks/{id}/files", get(task_files))
        .route("/api/v1/agents", get(list_agents).post(register))
        .route("/api/v1/agents/{id}/heartbeat", post(heartbeat))
        .route("/api/v1/agents/{id}/updates", post(updates))
        .route("/api/v1/roles", get(list_roles))
        .route("/api/v1/roles/{role}", put(set_role))
        .route("/health", get(|| async { "ok" }))
        .merge(super::marathon::routes())
        .merge(super::chronos::routes())
        .with_state(master)
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(wire::ErrorBody { error: self.1 })).into_response()
    }
}

impl From<MasterError> for ApiError {
    fn from(e: MasterError) -> ApiError {
        let status = match &e {
            MasterError::BadRequest(_) => StatusCode::BAD_REQUEST,
            MasterError::NotFound(_) => StatusCode::NOT_FOUND,
            MasterError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            MasterError::Conflict { .. } => StatusCode::CONFLICT,
            MasterError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            MasterError::Corrupt(_) | MasterError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

/// A JSON body, or a 400 that says what was wrong with it.
struct Body<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
        serde_json::from_slice(&bytes)
            .map(Body)
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid request body: {e}")))
    }
}

async fn list_tasks(State(m): State<Master>) -> Json<Vec<wire::TaskInfo>> {
    Json(m.view().core.tasks())
}

async fn get_task(State(m): State<Master>, Path(id): Path<String>) -> Result<Json<wire::TaskInfo>, ApiError> {
    let c = m.view();
    c.core.task_info(&id).map(Json).ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no such task: {id:?}")))
}

async fn run_tasks(
    State(m): State<Master>,
    Body(req): Body<wire::RunTasks>,
) -> Result<(StatusCode, Json<wire::TaskIds>), ApiError> {
    let (ids, _) = m.call(move |c, now| c.run_tasks(req, now)).await?;
    Ok((StatusCode::CREATED, Json(wire::TaskIds { tasks: ids })))
}

async fn kill_task(State(m): State<Master>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    m.call(move |c, _| c.kill_task(&id)).await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize)]
struct LogsQuery {
    #[serde(default)]
    follow: bool,
}

/// Sends the client to the agent that runs the task, which serves its logs.
async fn task_logs(
    State(m): State<Master>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    to_agent(&m, &id, &format!("logs?follow={}", q.follow))
}

/// Sends the client to the agent that has the task's sandbox, which serves its files.
async fn task_files(
    State(m): State<Master>,
    Path(id): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Response, ApiError> {
    to_agent(&m, &id, &format!("files?{}", query.unwrap_or_default()))
}

/// A redirect to `what` under the task's path on its agent.
fn to_agent(m: &Master, id: &str, what: &str) -> Result<Response, ApiError> {
    let c = m.view();
    let t = c.core.task(id).ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no such task: {id:?}")))?;
    let agent = t
        .agent
        .clone()
        .ok_or_else(|| ApiError(StatusCode::CONFLICT, format!("task {id} has not been placed on an agent yet")))?;
    let address = c
        .core
        .agent_address(&agent)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("agent {agent} is unknown")))?;
    let location = format!("{address}/api/v1/tasks/{id}/{what}");
    Ok((StatusCode::TEMPORARY_REDIRECT, [(axum::http::header::LOCATION, location)]).into_response())
}

async fn list_agents(State(m): State<Master>) -> Json<Vec<wire::AgentInfo>> {
    Json(m.view().core.agents())
}

async fn register(
    State(m): State<Master>,
    Body(req): Body<wire::Register>,
) -> Result<Json<wire::Registered>, ApiError> {
    let (reply, _) = m.call(move |c, now| c.register(req, now)).await?;
    Ok(Json(reply))
}

async fn heartbeat(State(m): State<Master>, Path(id): Path<String>, body: axum::body::Bytes) -> Response {
    let beat: wire::Heartbeat = if body.is_empty() {
        wire::Heartbeat::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => return ApiError(StatusCode::BAD_REQUEST, format!("invalid heartbeat: {e}")).into_response(),
        }
    };
    let status = match m.call(move |c, now| c.heartbeat(&id, now, beat.tasks)).await {
        Ok((true, _)) => StatusCode::OK,
        Ok((false, _)) => StatusCode::NOT_FOUND,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    status.into_response()
}

async fn updates(
    State(m): State<Master>,
    Path(id): Path<String>,
    Body(req): Body<wire::Updates>,
) -> Result<Json<wire::Acked>, ApiError> {
    let (acked, _) = m.call(move |c, now| c.updates(&id, req.updates, now)).await?;
    Ok(Json(wire::Acked { acked }))
}

async fn list_roles(State(m): State<Master>) -> Json<Vec<wire::RoleInfo>> {
    Json(m.view().core.roles())
}

async fn set_role(
    State(m): State<Master>,
    Path(role): Path<String>,
    Body(req): Body<wire::SetRole>,
) -> Result<StatusCode, ApiError> {
    m.call(move |c, now| c.set_role(&role, req, now)).await?;
    Ok(StatusCode::NO_CONTENT)
}
