//! The one client of corral's HTTP APIs, and their JSON (`wire`): the master's native API
//! (tasks, agents, roles), the agent-to-master calls, the master-to-agent calls, and the
//! Marathon v2 API (as JSON values). The CLI, the agent, the master's delivery, the benchmarks
//! and the tests all use it, so there is one place that knows URLs, timeouts and how an error
//! body becomes a message.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

pub mod wire;

/// An answer as it came.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// The `Location` header (a created resource, a redirect).
    pub location: Option<String>,
    pub text: String,
}

impl Answer {
    /// The body as JSON (a string when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|_| Value::String(self.text.clone()))
    }
}

/// Where clients find the master when `CORRAL_MASTER` is not set.
pub const DEFAULT_MASTER: &str = "http://127.0.0.1:5050";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("reaching {base}: {source}")]
    Unreachable {
        base: String,
        #[source]
        source: Box<ureq::Error>,
    },
    /// The server answered with an error status; `message` is its error body, made one line.
    #[error("{method} {path}: {message} (HTTP {status})")]
    Refused { method: &'static str, path: String, status: u16, message: String, body: Value },
    #[error("decoding the answer to {method} {path}: {message}")]
    Decode { method: &'static str, path: String, message: String },
}

impl ClientError {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A client of one server (a master, or an agent), by its base URL.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: ureq::Agent,
}

/// `host:port` or a URL, as a base URL without a trailing slash.
pub fn base_url(address: &str) -> String {
    let address = address.trim().trim_end_matches('/');
    if address.starts_with("http://") || address.starts_with("https://") {
        address.to_string()
    } else {
        format!("http://{address}")
    }
}

impl Client {
    /// A client of the server at `address` (`host:port` or a URL). Connections time out after
    /// 5 s; whole calls after 30 s (see [`Client::timeout`]).
    pub fn new(address: &str) -> Client {
        Client::build(base_url(address), Some(Duration::from_secs(30)))
    }

    /// The master `CORRAL_MASTER` names, else [`DEFAULT_MASTER`].
    pub fn from_env() -> Client {
        Client::new(&std::env::var("CORRAL_MASTER").unwrap_or_else(|_| DEFAULT_MASTER.into()))
    }

    /// The same server, with whole calls limited to `limit` (`None`: no limit, for streams).
    pub fn timeout(&self, limit: Option<Duration>) -> Client {
        Client::build(self.base.clone(), limit)
    }

    fn build(base: String, limit: Option<Duration>) -> Client {
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_global(limit)
            .build()
            .new_agent();
        Client { base, http }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    // ---- the plumbing --------------------------------------------------------------------------

    /// One call as it went: any status is an answer (only an unreachable server is an error).
    /// The body is sent as JSON text, as given, so tests can send what a careless client would.
    pub fn exchange(&self, method: &'static str, path: &str, body: Option<&str>) -> Result<Answer> {
        let url = format!("{}{path}", self.base);
        let json = |r: ureq::RequestBuilder<ureq::typestate::WithBody>| r.header("Content-Type", "application/json");
        let sent = match (method, body) {
            ("GET", _) => self.http.get(&url).call(),
            ("DELETE", _) => self.http.delete(&url).call(),
            ("POST", Some(b)) => json(self.http.post(&url)).send(b),
            ("POST", None) => self.http.post(&url).send_empty(),
            ("PUT", Some(b)) => json(self.http.put(&url)).send(b),
            ("PUT", None) => self.http.put(&url).send_empty(),
            ("PATCH", Some(b)) => json(self.http.patch(&url)).send(b),
            ("PATCH", None) => self.http.patch(&url).send_empty(),
            _ => panic!("the client does not send {method}"),
        };
        let mut resp =
            sent.map_err(|source| ClientError::Unreachable { base: self.base.clone(), source: Box::new(source) })?;
        let status = resp.status().as_u16();
        let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string);
        let text = resp.body_mut().read_to_string().map_err(|e| ClientError::Decode {
            method,
            path: path.to_string(),
            message: e.to_string(),
        })?;
        Ok(Answer { status, location, text })
    }

    /// One call with an optional JSON body; the answer's body as text, or the error.
    fn call(&self, method: &'static str, path: &str, body: Option<&Value>) -> Result<String> {
        let body = body.map(Value::to_string);
        let Answer { status, text, .. } = self.exchange(method, path, body.as_deref())?;
        if (200..300).contains(&status) {
            return Ok(text);
        }
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        Err(ClientError::Refused { method, path: path.to_string(), status, message: error_message(&body, &text), body })
    }

    fn decode<T: DeserializeOwned>(method: &'static str, path: &str, text: &str) -> Result<T> {
        serde_json::from_str(text).map_err(|e| ClientError::Decode {
            method,
            path: path.to_string(),
            message: e.to_string(),
        })
    }

    /// `GET path`, decoded.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        Client::decode("GET", path, &self.call("GET", path, None)?)
    }

    /// `GET path`, its body as it came (for benchmarks: nothing is decoded).
    pub fn get_bytes(&self, path: &str) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut self.stream(path)?, &mut body).map_err(|e| ClientError::Decode {
            method: "GET",
            path: path.to_string(),
            message: e.to_string(),
        })?;
        Ok(body)
    }

    /// A call with a JSON body (or none), its answer decoded (an empty answer is JSON `null`).
    pub fn send<T: DeserializeOwned>(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        let body = body.map(|b| serde_json::to_value(b).expect("request bodies serialize"));
        let text = self.call(method, path, body.as_ref())?;
        if text.trim().is_empty() {
            return Client::decode(method, path, "null");
        }
        Client::decode(method, path, &text)
    }

    /// A call whose answer is streamed (logs, events): the response's body, to read.
    pub fn stream(&self, path: &str) -> Result<impl std::io::Read> {
        let url = format!("{}{path}", self.base);
        let mut resp = self
            .http
            .get(&url)
            .call()
            .map_err(|source| ClientError::Unreachable { base: self.base.clone(), source: Box::new(source) })?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
            return Err(ClientError::Refused {
                method: "GET",
                path: path.to_string(),
                status: status.as_u16(),
                message: error_message(&body, &text),
                body,
            });
        }
        Ok(resp.into_body().into_reader())
    }

    // ---- the master's native API ---------------------------------------------------------------

    pub fn run_tasks(&self, req: &wire::RunTasks) -> Result<Vec<wire::TaskId>> {
        Ok(self.send::<wire::TaskIds>("POST", "/api/v1/tasks", Some(req))?.tasks)
    }

    pub fn tasks(&self) -> Result<Vec<wire::TaskInfo>> {
        self.get("/api/v1/tasks")
    }

    pub fn task(&self, id: &str) -> Result<wire::TaskInfo> {
        self.get(&format!("/api/v1/tasks/{id}"))
    }

    pub fn kill_task(&self, id: &str) -> Result<()> {
        self.send::<Value>("POST", &format!("/api/v1/tasks/{id}/kill"), None::<&()>).map(drop)
    }

    /// A task's output, following it while it runs when `follow`.
    pub fn task_logs(&self, id: &str, follow: bool) -> Result<impl std::io::Read> {
        self.timeout(None).stream(&format!("/api/v1/tasks/{id}/logs?follow={follow}"))
    }

    /// What is at `path` in a task's sandbox: a directory's entries, or a file's own.
    pub fn task_files(&self, id: &str, path: &str) -> Result<Vec<wire::SandboxEntry>> {
        self.get(&format!("/api/v1/tasks/{id}/files?path={}", encode(path)))
    }

    /// A file of a task's sandbox, its bytes to read.
    pub fn task_file(&self, id: &str, path: &str) -> Result<impl std::io::Read> {
        self.timeout(None).stream(&format!("/api/v1/tasks/{id}/files?download=true&path={}", encode(path)))
    }

    pub fn agents(&self) -> Result<Vec<wire::AgentInfo>> {
        self.get("/api/v1/agents")
    }

    pub fn roles(&self) -> Result<Vec<wire::RoleInfo>> {
        self.get("/api/v1/roles")
    }

    pub fn set_role(&self, role: &str, req: &wire::SetRole) -> Result<()> {
        self.send::<Value>("PUT", &format!("/api/v1/roles/{role}"), Some(req)).map(drop)
    }

    // ---- what agents tell the master -----------------------------------------------------------

    pub fn register(&self, req: &wire::Register) -> Result<wire::Registered> {
        self.send("POST", "/api/v1/agents", Some(req))
    }

    /// A heartbeat; `false` when the master does not know the agent (it must register again).
    pub fn heartbeat(&self, agent: &str, beat: &wire::Heartbeat) -> Result<bool> {
        match self.send::<Value>("POST", &format!("/api/v1/agents/{agent}/heartbeat"), Some(beat)) {
            Ok(_) => Ok(true),
            Err(e) if e.status() == Some(404) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub fn updates(&self, agent: &str, updates: &wire::Updates) -> Result<wire::Acked> {
        self.send("POST", &format!("/api/v1/agents/{agent}/updates"), Some(updates))
    }

    // ---- what the master tells agents ----------------------------------------------------------

    /// Asks an agent (this client's server) to run a task.
    pub fn launch(&self, launch: &wire::Launch) -> Result<()> {
        self.call("POST", "/api/v1/tasks", Some(&serde_json::to_value(launch).expect("serializes"))).map(drop)
    }

    /// Asks an agent (this client's server) to run several tasks, in one request.
    pub fn launch_batch(&self, launches: &[wire::Launch]) -> Result<()> {
        let body = serde_json::to_value(wire::Launches { launches: launches.to_vec() }).expect("serializes");
        self.call("POST", "/api/v1/tasks/batch", Some(&body)).map(drop)
    }

    /// Asks an agent to kill a task.
    pub fn kill_on_agent(&self, task: &str) -> Result<()> {
        self.call("POST", &format!("/api/v1/tasks/{task}/kill"), None).map(drop)
    }

    // ---- Marathon's v2 API -----------------------------------------------------------------------

    /// A Marathon call with a JSON body (or none); its answer as JSON (`null` when empty).
    pub fn marathon(&self, method: &'static str, path: &str, body: Option<&Value>) -> Result<Value> {
        let text = self.call(method, path, body)?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}

/// An error body as one line: the native API's `error`, or Marathon's `message` with its
/// `details` (`path: errors`), or the text itself.
pub fn error_message(body: &Value, text: &str) -> String {
    if let Some(e) = body.get("error").and_then(Value::as_str) {
        return e.to_string();
    }
    let Some(message) = body.get("message").and_then(Value::as_str) else { return text.trim().to_string() };
    let details: Vec<String> = body
        .get("details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|d| {
            let errors: Vec<&str> = d["errors"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            format!("{}: {}", d["path"].as_str().unwrap_or("/"), errors.join("; "))
        })
        .collect();
    if details.is_empty() {
        message.to_string()
    } else {
        format!("{message}: {}", details.join(", "))
    }
}

/// Percent-encodes a query parameter's value.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn addresses_become_base_urls() {
        assert_eq!(base_url("127.0.0.1:5050"), "http://127.0.0.1:5050");
        assert_eq!(base_url("http://m:5050/"), "http://m:5050");
        assert_eq!(base_url(" https://m "), "https://m");
    }

    #[test]
    fn error_bodies_become_one_line() {
        let check = |body: Value, want: &str| assert_eq!(error_message(&body, "raw text"), want, "{body}");
        check(json!({"error": "no such task: \"x\""}), "no such task: \"x\"");
        check(json!({"message": "App '/a' does not exist"}), "App '/a' does not exist");
        check(
            json!({"message": "Object is not valid", "details": [{"path": "/cpus", "errors": ["must be positive", "too big"]}]}),
            "Object is not valid: /cpus: must be positive; too big",
        );
        check(Value::String("raw text".into()), "raw text");
    }

    #[test]
    fn an_unreachable_server_is_named() {
        let e = Client::new("127.0.0.1:1").tasks().unwrap_err();
        assert!(matches!(e, ClientError::Unreachable { .. }), "{e}");
        assert!(e.to_string().starts_with("reaching http://127.0.0.1:1"), "{e}");
    }
}
