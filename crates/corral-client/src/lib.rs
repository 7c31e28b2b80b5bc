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

/// Where clients find the master when neither `CORRAL_MASTER` nor the config names one.
pub const DEFAULT_MASTER: &str = "127.0.0.1:5050";

/// What a client shows the server and what it trusts.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// The CA certificates (PEM) the server's certificate must chain to. With them, an address
    /// without a scheme is `https://`.
    pub ca_pem: Option<String>,
    /// A client certificate and its private key (PEM): what agents and masters show each other.
    pub identity: Option<(String, String)>,
    /// An API token, sent as `Authorization: Bearer TOKEN`.
    pub token: Option<String>,
}

/// The CLI's configuration file (`CORRAL_CONFIG`, else `$XDG_CONFIG_HOME/corral/config.json`,
/// else `~/.config/corral/config.json`): which master, the cluster's CA, a token. `corral up`
/// and `corral master` write one.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// The masters' CA certificate, PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl Config {
    /// Where the configuration is read from.
    pub fn path() -> Option<std::path::PathBuf> {
        if let Some(p) = std::env::var_os("CORRAL_CONFIG").filter(|p| !p.is_empty()) {
            return Some(p.into());
        }
        let base =
            std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()).map(std::path::PathBuf::from).or_else(
                || std::env::var_os("HOME").filter(|p| !p.is_empty()).map(|h| std::path::Path::new(&h).join(".config")),
            )?;
        Some(base.join("corral").join("config.json"))
    }

    /// The configuration at `path`; none when there is no file.
    pub fn load(path: &std::path::Path) -> Result<Config> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(ClientError::Config { path: path.into(), message: e.to_string() }),
        };
        serde_json::from_str(&text).map_err(|e| ClientError::Config { path: path.into(), message: e.to_string() })
    }
}

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
    #[error("client configuration {path}: {message}")]
    Config { path: std::path::PathBuf, message: String },
    #[error("invalid {what}: {message}")]
    Tls { what: &'static str, message: String },
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
    credentials: std::sync::Arc<Credentials>,
}

/// The masters' CA certificate (PEM) from the master at `address`, without checking the
/// server's certificate: for an agent that joins, which checks the answer against its join
/// token's fingerprint before it trusts it.
pub fn unverified_ca(address: &str) -> Result<String> {
    let address = address.trim();
    let base = if address.contains("://") { base_url(address) } else { base_url(&format!("https://{address}")) };
    let http = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(5)))
        .timeout_global(Some(Duration::from_secs(10)))
        .tls_config(ureq::tls::TlsConfig::builder().disable_verification(true).build())
        .build()
        .new_agent();
    let client = Client { base, http, credentials: Default::default() };
    client.call("GET", "/api/v1/ca", None)
}

fn tls_config(credentials: &Credentials) -> Result<ureq::tls::TlsConfig> {
    use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};
    let bad = |what: &'static str| move |e: ureq::Error| ClientError::Tls { what, message: e.to_string() };
    let mut tls = TlsConfig::builder();
    if let Some(ca) = &credentials.ca_pem {
        let mut certs = Vec::new();
        for item in ureq::tls::parse_pem(ca.as_bytes()) {
            if let PemItem::Certificate(c) = item.map_err(bad("CA certificate"))? {
                certs.push(c);
            }
        }
        if certs.is_empty() {
            return Err(ClientError::Tls { what: "CA certificate", message: "no certificate in it".into() });
        }
        tls = tls.root_certs(RootCerts::new_with_certs(&certs));
    }
    if let Some((cert, key)) = &credentials.identity {
        let cert: Certificate<'static> = Certificate::from_pem(cert.as_bytes()).map_err(bad("client certificate"))?;
        let key: PrivateKey<'static> = PrivateKey::from_pem(key.as_bytes()).map_err(bad("client key"))?;
        tls = tls.client_cert(Some(ClientCert::new_with_certs(&[cert], key)));
    }
    Ok(tls.build())
}

/// The host of a URL or of `host[:port]`, an IPv6 address without its brackets:
/// `https://user@[::1]:5051/x` is `::1`.
pub fn url_host(address: &str) -> &str {
    let rest = address.split_once("://").map_or(address, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    }
}

/// Whether the host of `address` is this machine's loopback.
fn loopback(address: &str) -> bool {
    let host = url_host(address);
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
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
        Client::build(base_url(address), Some(Duration::from_secs(30)), Default::default())
            .expect("a client without credentials builds")
    }

    /// A client of the server at `address` that trusts, shows and sends `credentials`.
    pub fn with_credentials(address: &str, credentials: Credentials) -> Result<Client> {
        let address = address.trim();
        let base = if credentials.ca_pem.is_some() && !address.contains("://") {
            base_url(&format!("https://{address}"))
        } else {
            base_url(address)
        };
        if credentials.token.is_some() && base.starts_with("http://") && !loopback(&base) {
            return Err(ClientError::Tls {
                what: "master address",
                message: format!("{base}: a token is not sent over plain http to another machine; use https://"),
            });
        }
        Client::build(base, Some(Duration::from_secs(30)), std::sync::Arc::new(credentials))
    }

    /// The master and credentials the environment gives: `CORRAL_MASTER`, `CORRAL_TOKEN` and
    /// `CORRAL_CA` (a PEM file) over what the configuration file says ([`Config::path`]), else
    /// [`DEFAULT_MASTER`] without credentials.
    pub fn from_env() -> Result<Client> {
        let config = match Config::path() {
            Some(path) => Config::load(&path)?,
            None => Config::default(),
        };
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let master = env("CORRAL_MASTER").or(config.master).unwrap_or_else(|| DEFAULT_MASTER.into());
        let ca_pem =
            match env("CORRAL_CA") {
                Some(path) => Some(std::fs::read_to_string(&path).map_err(|e| ClientError::Config {
                    path: path.clone().into(),
                    message: format!("CORRAL_CA: {e}"),
                })?),
                None => config.ca,
            };
        let token = env("CORRAL_TOKEN").or(config.token);
        Client::with_credentials(&master, Credentials { ca_pem, identity: None, token })
    }

    /// The same server, with whole calls limited to `limit` (`None`: no limit, for streams).
    pub fn timeout(&self, limit: Option<Duration>) -> Client {
        Client::build(self.base.clone(), limit, self.credentials.clone())
            .expect("these credentials built a client before")
    }

    fn build(base: String, limit: Option<Duration>, credentials: std::sync::Arc<Credentials>) -> Result<Client> {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_global(limit);
        if credentials.ca_pem.is_some() || credentials.identity.is_some() {
            config = config.tls_config(tls_config(&credentials)?);
        }
        if let Some(token) = &credentials.token {
            let value = ureq::http::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                .map_err(|e| ClientError::Tls { what: "token", message: e.to_string() })?;
            config = config.middleware(
                move |mut req: ureq::http::Request<ureq::SendBody>, next: ureq::middleware::MiddlewareNext| {
                    req.headers_mut().insert(ureq::http::header::AUTHORIZATION, value.clone());
                    next.handle(req)
                },
            );
        }
        Ok(Client { base, http: config.build().new_agent(), credentials })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
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
    fn a_token_never_goes_over_plain_http_to_another_machine() {
        let with_token = Credentials { token: Some("t.s".into()), ..Default::default() };
        let e = Client::with_credentials("http://10.0.0.1:5050", with_token.clone()).err().unwrap().to_string();
        assert!(e.contains("plain http") && e.contains("10.0.0.1"), "{e}");
        for fine in ["http://127.0.0.1:5050", "localhost:5050", "http://[::1]:5050", "https://10.0.0.1:5050"] {
            assert!(Client::with_credentials(fine, with_token.clone()).is_ok(), "{fine}");
        }
        assert!(Client::with_credentials("http://10.0.0.1:5050", Credentials::default()).is_ok());
    }

    #[test]
    fn hosts_of_urls() {
        for (address, host) in [
            ("https://user@[::1]:5051/x", "::1"),
            ("http://10.0.0.1:5050", "10.0.0.1"),
            ("node2:5051", "node2"),
            ("https://m/api?x=1", "m"),
        ] {
            assert_eq!(url_host(address), host, "{address}");
        }
    }

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
