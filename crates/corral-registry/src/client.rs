//! An OCI distribution API client: manifests and blobs over HTTP(S), with basic and bearer
//! authentication.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

use ureq::http::{Response, StatusCode};
use ureq::Body;

use crate::auth::{parse_challenge, Challenge, Credentials};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry {registry}: {what}: {message}")]
    Http { registry: String, what: String, message: String },
    #[error("registry {registry}: {what}: unexpected status {status}: {body}")]
    Status { registry: String, what: String, status: u16, body: String },
    #[error("registry {registry} requires authentication for {what} (pass --username and --password)")]
    Unauthorized { registry: String, what: String },
    #[error("registry {registry}: {what}: no such image in the registry")]
    NotFound { registry: String, what: String },
    #[error("registry {registry}: {what}: timed out ({detail})")]
    Timeout { registry: String, what: String, detail: String },
    #[error("registry {registry}: {what}: {message}")]
    Protocol { registry: String, what: String, message: String },
    #[error(transparent)]
    Store(#[from] corral_image::store::StoreError),
}

impl RegistryError {
    /// What went wrong, in a word or two, for a task's status: `unauthorized`, `not found`,
    /// `unreachable`, `digest mismatch`, `registry error` or `failed`.
    pub fn cause(&self) -> &'static str {
        use corral_image::store::StoreError;
        match self {
            RegistryError::Unauthorized { .. } => "unauthorized",
            RegistryError::NotFound { .. } => "not found",
            RegistryError::Http { .. } | RegistryError::Timeout { .. } => "unreachable",
            RegistryError::Store(StoreError::CorruptBlob { .. }) => "digest mismatch",
            RegistryError::Protocol { message, .. } if message.contains("hashes to") => "digest mismatch",
            RegistryError::Status { status, .. } if *status >= 500 => "registry error",
            _ => "failed",
        }
    }

    /// Whether trying again later may succeed: the registry was unreachable, slow, or failed
    /// on its side.
    pub fn transient(&self) -> bool {
        matches!(self.cause(), "unreachable" | "registry error")
    }
}

/// How a client connects.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Plain HTTP instead of HTTPS.
    pub insecure: bool,
    pub credentials: Option<Credentials>,
    /// How long a transfer may go without receiving any data.
    pub stall_timeout: Duration,
    /// How long one whole request (a blob transfer included) may take.
    pub request_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            insecure: false,
            credentials: None,
            stall_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30 * 60),
        }
    }
}

pub struct Client {
    agent: ureq::Agent,
    base: String,
    registry: String,
    config: ClientConfig,
    /// The Authorization header to send, once a challenge told us which.
    authorization: Mutex<HashMap<String, String>>,
}

/// A request method and what it is for, for errors.
#[derive(Clone, Copy)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
}

pub type HttpResponse = Response<Body>;

/// A request body that can be sent again (after an authentication challenge).
pub enum Payload<'a> {
    Bytes(&'a [u8]),
    /// `len` bytes of a file from `offset`.
    File {
        path: &'a std::path::Path,
        offset: u64,
        len: u64,
    },
}

impl Client {
    pub fn new(registry: &str, config: ClientConfig) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_per_read(Some(config.stall_timeout))
            .timeout_per_write(Some(config.stall_timeout))
            .timeout_global(Some(config.request_timeout))
            .max_redirects(5)
            .build()
            .into();
        let scheme = if config.insecure { "http" } else { "https" };
        Client {
            agent,
            base: format!("{scheme}://{registry}"),
            registry: registry.to_string(),
            config,
            authorization: Mutex::new(HashMap::new()),
        }
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// An absolute URL for a path or a `Location` the registry gave.
    pub fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_string()
        } else {
            format!("{}{}", self.base, path_or_url)
        }
    }

    pub fn error(&self, what: &str, message: impl Into<String>) -> RegistryError {
        RegistryError::Protocol { registry: self.registry.clone(), what: what.to_string(), message: message.into() }
    }

    /// Sends a request, answering one authentication challenge if the registry makes it.
    /// `scope` is the token scope to ask for (`repository:NAME:pull[,push]`).
    pub fn send(
        &self,
        method: Method,
        url: &str,
        scope: &str,
        headers: &[(&str, String)],
        body: Option<&Payload<'_>>,
        what: &str,
    ) -> Result<HttpResponse, RegistryError> {
        let mut answered = false;
        loop {
            let auth = self.authorization.lock().expect("not poisoned").get(scope).cloned();
            let mut all: Vec<(&str, String)> = headers.to_vec();
            if let Some(a) = &auth {
                all.push(("Authorization", a.clone()));
            }
            let result = match method {
                Method::Get => with_headers(self.agent.get(url), &all).call(),
                Method::Head => with_headers(self.agent.head(url), &all).call(),
                Method::Post | Method::Put | Method::Patch => {
                    let builder = match method {
                        Method::Post => self.agent.post(url),
                        Method::Put => self.agent.put(url),
                        _ => self.agent.patch(url),
                    };
                    match body {
                        Some(Payload::Bytes(bytes)) => {
                            all.push(("Content-Length", bytes.len().to_string()));
                            with_headers(builder, &all).send(*bytes)
                        }
                        Some(Payload::File { path, offset, len }) => {
                            all.push(("Content-Length", len.to_string()));
                            let mut f = std::fs::File::open(path)
                                .map_err(|e| self.error(what, format!("{}: {e}", path.display())))?;
                            std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(*offset))
                                .map_err(|e| self.error(what, format!("{}: {e}", path.display())))?;
                            let mut reader = f.take(*len);
                            with_headers(builder, &all).send(ureq::SendBody::from_reader(&mut reader))
                        }
                        None => with_headers(builder, &all).send_empty(),
                    }
                }
            };
            let resp = result.map_err(|e| self.transport_error(what, e))?;
            if resp.status() != StatusCode::UNAUTHORIZED || answered {
                if resp.status() == StatusCode::UNAUTHORIZED {
                    return Err(RegistryError::Unauthorized {
                        registry: self.registry.clone(),
                        what: what.to_string(),
                    });
                }
                return Ok(resp);
            }
            answered = true;
            let challenge = resp
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_challenge)
                .ok_or_else(|| RegistryError::Unauthorized {
                    registry: self.registry.clone(),
                    what: what.to_string(),
                })?;
            let header = match challenge {
                Challenge::Basic => match &self.config.credentials {
                    Some(c) => c.basic_header(),
                    None => {
                        return Err(RegistryError::Unauthorized {
                            registry: self.registry.clone(),
                            what: what.to_string(),
                        })
                    }
                },
                Challenge::Bearer { realm, service, scope: challenge_scope } => {
                    let token = self.fetch_token(
                        &realm,
                        service.as_deref(),
                        challenge_scope.as_deref().unwrap_or(scope),
                        what,
                    )?;
                    format!("Bearer {token}")
                }
            };
            self.authorization.lock().expect("not poisoned").insert(scope.to_string(), header);
        }
    }

    fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        what: &str,
    ) -> Result<String, RegistryError> {
        let mut url = format!("{realm}{}scope={}", if realm.contains('?') { '&' } else { '?' }, encode(scope));
        if let Some(s) = service {
            url.push_str(&format!("&service={}", encode(s)));
        }
        let mut req = self.agent.get(&url);
        if let Some(c) = &self.config.credentials {
            req = req.header("Authorization", c.basic_header());
        }
        let mut resp = req.call().map_err(|e| self.transport_error(&format!("{what} (token)"), e))?;
        if resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN {
            return Err(RegistryError::Unauthorized { registry: self.registry.clone(), what: what.to_string() });
        }
        let body = read_small(&mut resp).map_err(|e| self.error(what, format!("reading the token: {e}")))?;
        if !resp.status().is_success() {
            return Err(RegistryError::Status {
                registry: self.registry.clone(),
                what: format!("{what} (token from {realm})"),
                status: resp.status().as_u16(),
                body,
            });
        }
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| self.error(what, format!("token response: {e}")))?;
        v.get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .map(String::from)
            .ok_or_else(|| self.error(what, "the token response has no token"))
    }

    pub fn transport_error(&self, what: &str, e: ureq::Error) -> RegistryError {
        match e {
            ureq::Error::Timeout(t) => RegistryError::Timeout {
                registry: self.registry.clone(),
                what: what.to_string(),
                detail: t.to_string(),
            },
            other => RegistryError::Http {
                registry: self.registry.clone(),
                what: what.to_string(),
                message: other.to_string(),
            },
        }
    }

    /// Turns a non-success response into an error, with the start of its body.
    pub fn unexpected(&self, what: &str, mut resp: HttpResponse) -> RegistryError {
        let body = read_small(&mut resp).unwrap_or_default();
        RegistryError::Status {
            registry: self.registry.clone(),
            what: what.to_string(),
            status: resp.status().as_u16(),
            body,
        }
    }
}

fn with_headers<B>(mut b: ureq::RequestBuilder<B>, headers: &[(&str, String)]) -> ureq::RequestBuilder<B> {
    for (k, v) in headers {
        b = b.header(*k, v.as_str());
    }
    b
}

/// Reads at most 64 KiB of a response body as text.
pub fn read_small(resp: &mut HttpResponse) -> std::io::Result<String> {
    let mut buf = Vec::new();
    resp.body_mut().as_reader().take(64 * 1024).read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Percent-encodes a query parameter value.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
