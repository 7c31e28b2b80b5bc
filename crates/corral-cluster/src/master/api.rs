//! The master's HTTP API. Each handler parses, then either reads the published snapshot or
//! sends the owner one command, and answers. Errors map to HTTP statuses here and nowhere else.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Extension, Json, Router};
use serde::Deserialize;

use super::controller::MasterError;
use super::trust::{self, Denied, Kind, Principal, Role};
use super::Master;
use crate::https::Peer;
use crate::wire;

pub fn router(master: Master) -> Router {
    Router::new()
        .route("/api/v1/ca", get(ca))
        .route("/api/v1/join", post(join))
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{id}", delete(revoke_token))
        .route("/api/v1/tasks", get(list_tasks).post(run_tasks))
        .route("/api/v1/tasks/{id}", get(get_task))
        .route("/api/v1/tasks/{id}/kill", post(kill_task))
        .route("/api/v1/tasks/{id}/logs", get(task_logs))
        .route("/api/v1/tasks/{id}/files", get(task_files))
        .route("/api/v1/agents", get(list_agents).post(register))
        .route("/api/v1/agents/{id}", delete(revoke_agent))
        .route("/api/v1/agents/{id}/heartbeat", post(heartbeat))
        .route("/api/v1/agents/{id}/updates", post(updates))
        .route("/api/v1/roles", get(list_roles))
        .route("/api/v1/roles/{role}", put(set_role))
        .route("/health", get(|| async { "ok" }))
        .merge(super::marathon::routes())
        .merge(super::chronos::routes())
        .layer(axum::middleware::from_fn_with_state(master.clone(), authenticate))
        .with_state(master)
}

/// Who made the request: the master in development mode lets anyone be [`Principal::Dev`];
/// else an agent by its certificate, or a user by the token in `Authorization` (bearer, or
/// basic auth's password).
fn principal(m: &Master, peer: &Peer, headers: &HeaderMap) -> Result<Principal, Denied> {
    if m.security.is_dev() {
        return Ok(Principal::Dev);
    }
    let view = m.view();
    if let Some(id) = peer.fingerprint.as_deref().and_then(|f| view.trust.agent(f)) {
        return Ok(Principal::Agent { id: id.to_string() });
    }
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(Principal::Anonymous) };
    let wall = view.core.wall_ms(m.now_ms());
    let value = value.to_str().unwrap_or("");
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        view.trust.user(rest, wall)
    } else if scheme.eq_ignore_ascii_case("basic") {
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                Denied::Unauthenticated("Authorization: Basic credentials are not base64 of USER:PASSWORD".into())
            })?;
        let (_, password) = decoded.split_once(':').unwrap_or(("", &decoded));
        view.trust.user(password, wall)
    } else {
        Err(Denied::Unauthenticated("Authorization: give Bearer TOKEN, or Basic with the token as the password".into()))
    }
}

/// Every request: who made it, whether it may, and (for writes) the audit log.
async fn authenticate(
    State(m): State<Master>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let peer = req.extensions().get::<Peer>().cloned().unwrap_or_default();
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let who = principal(&m, &peer, req.headers()).and_then(|who| {
        trust::authorize(&who, trust::need(&method, &path))?;
        Ok(who)
    });
    let who = match who {
        Ok(who) => who,
        Err(denied) => {
            tracing::info!(target: "corral::audit", %method, %path, refused = %denied, "request refused");
            // Read what the client sent (up to a bound) before answering: a client that
            // answers a 401 challenge sends the request again on the same connection (httplib2
            // does), which an unread body would make the server close.
            let _ = axum::body::to_bytes(req.into_body(), 1 << 20).await;
            return refusal(&path, &denied);
        }
    };
    req.extensions_mut().insert(who.clone());
    let response = super::CALLER.scope(who.clone(), next.run(req)).await;
    let write = !(method == Method::GET || method == Method::HEAD);
    if write && !matches!(who, Principal::Agent { .. }) {
        tracing::info!(target: "corral::audit", who = %who.name(), %method, %path, status = response.status().as_u16(), "api write");
    }
    response
}

/// A 401 or 403, with the body each API's clients read (Marathon's and Chronos's `message`,
/// the native `error`).
fn refusal(path: &str, denied: &Denied) -> Response {
    let status = match denied {
        Denied::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        Denied::Forbidden(_) => StatusCode::FORBIDDEN,
    };
    let message = denied.to_string();
    let body = if path.starts_with("/v2/") || path.starts_with("/v1/scheduler") || path.starts_with("/scheduler") {
        serde_json::json!({ "message": message })
    } else {
        serde_json::json!({ "error": message })
    };
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Basic realm=\"corral\""));
    }
    response
}

/// The masters' CA certificate (PEM), for an agent to check against its join token.
async fn ca(State(m): State<Master>) -> Result<String, ApiError> {
    match &m.security.pki {
        Some(pki) => Ok(pki.masters.cert_pem.clone()),
        None => Err(ApiError(StatusCode::NOT_FOUND, "this master runs in development mode: it has no CA".into())),
    }
}

/// An agent joins: its join token checked, a certificate issued and bound to its id.
async fn join(State(m): State<Master>, Body(req): Body<wire::Join>) -> Result<Json<wire::Joined>, ApiError> {
    let Some(pki) = &m.security.pki else {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "this master runs in development mode: agents do not join".into(),
        ));
    };
    let wall = m.view().core.wall_ms(m.now_ms());
    m.view()
        .trust
        .check(&req.token, Kind::Join, wall)
        .map_err(|d| ApiError(StatusCode::UNAUTHORIZED, format!("join token: {d}")))?;
    if req.hosts.is_empty() || req.hosts.len() > 64 || req.hosts.iter().any(|h| h.is_empty() || h.len() > 253) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "hosts: 1 to 64 names or addresses, each at most 253 characters".into(),
        ));
    }
    let issued = pki
        .agents
        .issue("corral agent", &req.hosts, true, true)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("hosts: {e}")))?;
    let print = issued.fingerprint().map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let identity = trust::Identity { fingerprint: print, hosts: req.hosts.clone() };
    let (id, _) = m.call(move |c, _| Ok(c.trust.bind_agent(&mut c.core, identity))).await?;
    tracing::info!(target: "corral::audit", agent = %id, hosts = ?req.hosts, "an agent joined");
    Ok(Json(wire::Joined {
        agent_id: id.into(),
        cert: issued.cert_pem,
        key: issued.key_pem,
        masters_ca: pki.masters.cert_pem.clone(),
    }))
}

async fn whoami(Extension(who): Extension<Principal>) -> Json<wire::WhoAmI> {
    let (namespace, role) = match &who {
        Principal::User { namespace, role, .. } => (Some(namespace.clone()), Some(role.to_string())),
        _ => (None, None),
    };
    Json(wire::WhoAmI { principal: who.name(), namespace, role })
}

fn token_info(r: &trust::TokenRecord) -> wire::TokenInfo {
    wire::TokenInfo {
        id: r.id.clone(),
        kind: match r.kind {
            Kind::Api => "api".into(),
            Kind::Join => "join".into(),
        },
        namespace: r.namespace.clone(),
        role: if r.kind == Kind::Join { "-".into() } else { r.role.to_string() },
        created: super::services::timestamp(r.created),
        expires: r.expires.map(super::services::timestamp),
        description: r.description.clone(),
    }
}

async fn list_tokens(State(m): State<Master>) -> Json<Vec<wire::TokenInfo>> {
    Json(m.view().trust.tokens().map(token_info).collect())
}

async fn create_token(
    State(m): State<Master>,
    Body(req): Body<wire::CreateToken>,
) -> Result<(StatusCode, Json<wire::CreatedToken>), ApiError> {
    let invalid = |m: String| ApiError(StatusCode::UNPROCESSABLE_ENTITY, m);
    let kind = match req.kind.as_deref().unwrap_or("api") {
        "api" => Kind::Api,
        "join" => Kind::Join,
        other => return Err(invalid(format!("kind: {other:?} is not api or join"))),
    };
    let role: Role = match req.role.as_deref() {
        Some(r) => r.parse().map_err(invalid)?,
        None if kind == Kind::Join => Role::Reader,
        None => return Err(invalid("role: required (reader, writer or admin)".into())),
    };
    let namespace = req.namespace.unwrap_or_else(|| trust::DEFAULT_NAMESPACE.into());
    trust::check_namespace(&namespace).map_err(invalid)?;
    let ttl_ms = match req.ttl_seconds {
        Some(0) => return Err(invalid("ttl_seconds: must be at least 1".into())),
        Some(s) if s > 100 * 365 * 86_400 => return Err(invalid("ttl_seconds: at most 100 years".into())),
        Some(s) => Some(s * 1000),
        None => None,
    };
    let description = req.description.unwrap_or_default();
    if description.len() > 1024 {
        return Err(invalid("description: at most 1024 characters".into()));
    }
    let (record, mut token) = super::secure::mint(&m, kind, namespace, role, ttl_ms, description).await?;
    if kind == Kind::Join {
        if let Some(pki) = &m.security.pki {
            token = crate::pki::join_token(&pki.masters.fingerprint(), &token);
        }
    }
    Ok((StatusCode::CREATED, Json(wire::CreatedToken { info: token_info(&record), token })))
}

async fn revoke_token(State(m): State<Master>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    m.call(move |c, _| c.trust.revoke(&mut c.core, &id).map(drop)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A joined agent's address: `https://HOST:PORT`, nothing more, and HOST one its certificate
/// covers, so the master calls it only where its certificate says it is.
fn check_agent_address(address: &str, hosts: &[String]) -> Result<(), ApiError> {
    let bad = |why: String| ApiError(StatusCode::BAD_REQUEST, format!("address {address:?}: {why}"));
    let rest = address.strip_prefix("https://").ok_or_else(|| bad("a joined agent is reached over https://".into()))?;
    if rest.contains(['/', '?', '#', '@']) {
        return Err(bad("give https://HOST:PORT and nothing more".into()));
    }
    let host = corral_client::url_host(rest);
    if !hosts.iter().any(|h| h == host) {
        return Err(bad(format!("{host} is not one of the names its certificate covers ({})", hosts.join(", "))));
    }
    Ok(())
}

/// An agent's certificate no longer stands for it (admin).
async fn revoke_agent(State(m): State<Master>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    m.call(move |c, _| c.trust.revoke_agent(&mut c.core, &id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An agent may speak only for itself.
fn same_agent(who: &Principal, id: &str) -> Result<(), ApiError> {
    match who {
        Principal::Agent { id: own } if own != id => {
            Err(ApiError(StatusCode::FORBIDDEN, format!("agent {own} may not speak for agent {id}")))
        }
        _ => Ok(()),
    }
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
            MasterError::Forbidden(_) => StatusCode::FORBIDDEN,
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
    Extension(who): Extension<Principal>,
    Body(req): Body<wire::RunTasks>,
) -> Result<(StatusCode, Json<wire::TaskIds>), ApiError> {
    if req.image.is_none() && !who.privileged() {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "image: a task without an image runs on the host; only an admin may run one (give --image)".into(),
        ));
    }
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
    to_agent(&m, &id, &format!("logs?follow={}", q.follow)).await
}

/// Sends the client to the agent that has the task's sandbox, which serves its files.
async fn task_files(
    State(m): State<Master>,
    Path(id): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Response, ApiError> {
    to_agent(&m, &id, &format!("files?{}", query.unwrap_or_default())).await
}

/// `what` under the task's path on its agent, fetched by the master (with its certificate:
/// agents answer nobody else) and streamed to the client.
async fn to_agent(m: &Master, id: &str, what: &str) -> Result<Response, ApiError> {
    let c = m.view();
    let t = c.core.task(id).ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no such task: {id:?}")))?;
    let agent_id = t
        .agent
        .clone()
        .ok_or_else(|| ApiError(StatusCode::CONFLICT, format!("task {id} has not been placed on an agent yet")))?;
    let address = c
        .core
        .agent_address(&agent_id)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("agent {agent_id} is unknown")))?;
    let agent = corral_client::Client::with_credentials(&address, m.security.agent_credentials())
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .timeout(None);
    let path = format!("/api/v1/tasks/{id}/{what}");
    let permit = m.relays.clone().try_acquire_owned().map_err(|_| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{} task logs and files are being relayed already; try again later", super::MAX_RELAYS),
        )
    })?;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<Result<(), corral_client::ClientError>>();
    std::thread::Builder::new()
        .name("corral-proxy".into())
        .spawn(move || {
            let _permit = permit;
            let mut body = match agent.stream(&path) {
                Ok(body) => {
                    let _ = first_tx.send(Ok(()));
                    body
                }
                Err(e) => {
                    let _ = first_tx.send(Err(e));
                    return;
                }
            };
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match std::io::Read::read(&mut body, &mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        if tx.blocking_send(Ok(buf[..n].to_vec())).is_err() {
                            return; // The client went away.
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        })
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("starting a proxy thread: {e}")))?;
    match first_rx.await {
        Ok(Ok(())) => Ok(Response::new(axum::body::Body::from_stream(crate::chunks::ChunkStream(rx)))),
        Ok(Err(corral_client::ClientError::Refused { status, message, .. })) => {
            Err(ApiError(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY), message))
        }
        Ok(Err(e)) => Err(ApiError(StatusCode::BAD_GATEWAY, format!("agent {agent_id}: {e}"))),
        Err(_) => Err(ApiError(StatusCode::BAD_GATEWAY, format!("agent {agent_id}: no answer"))),
    }
}

async fn list_agents(State(m): State<Master>) -> Json<Vec<wire::AgentInfo>> {
    Json(m.view().core.agents())
}

async fn register(
    State(m): State<Master>,
    Extension(who): Extension<Principal>,
    Body(mut req): Body<wire::Register>,
) -> Result<Json<wire::Registered>, ApiError> {
    if let Principal::Agent { id } = &who {
        match &req.agent_id {
            Some(asked) if !asked.is_empty() => same_agent(&who, asked)?,
            _ => req.agent_id = Some(id.clone().into()),
        }
        let hosts = m.view().trust.identity(id).map(|i| i.hosts.clone()).unwrap_or_default();
        check_agent_address(&req.address, &hosts)?;
    }
    let (reply, _) = m.call(move |c, now| c.register(req, now)).await?;
    Ok(Json(reply))
}

async fn heartbeat(
    State(m): State<Master>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(e) = same_agent(&who, &id) {
        return e.into_response();
    }
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
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    Body(req): Body<wire::Updates>,
) -> Result<Json<wire::Acked>, ApiError> {
    same_agent(&who, &id)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_is_reached_only_where_its_certificate_says() {
        let hosts = vec!["10.0.0.2".to_string(), "node2".into(), "::1".into()];
        for ok in ["https://10.0.0.2:5051", "https://node2:5051", "https://[::1]:5051"] {
            assert!(check_agent_address(ok, &hosts).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("http://10.0.0.2:5051", "https://"),
            ("https://10.0.0.9:5051", "not one of the names"),
            ("https://10.0.0.2:5051/admin?x=", "nothing more"),
            ("https://evil@10.0.0.2:5051", "nothing more"),
        ] {
            let e = check_agent_address(bad, &hosts).err().unwrap();
            assert!(e.1.contains(why), "{bad}: {}", e.1);
        }
    }
}
