//! Who may do what. API tokens (bearer, or basic auth's password), join tokens (an agent's
//! first call), the agents' identities (the fingerprint of the certificate each got when it
//! joined), and the one policy that says what a request needs ([`need`]) and whether a
//! principal has it ([`authorize`]). Pure: the owner stores the records, the API asks.

use axum::http::Method;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::core::{Core, MasterError};
use crate::store::{decode, IDENTITIES, TOKENS};

/// What a token's holder may do, each level including the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read everything of its namespace.
    Reader,
    /// Also create, change, scale and kill.
    Writer,
    /// Also tokens, roles (weights, quotas) and what only an admin may run (host tasks, root,
    /// host networking, host paths).
    Admin,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "reader" => Ok(Role::Reader),
            "writer" => Ok(Role::Writer),
            "admin" => Ok(Role::Admin),
            other => Err(format!("role {other:?} is not one of reader, writer, admin")),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// For the APIs.
    Api,
    /// For an agent's first call (`POST /api/v1/join`), nothing else.
    Join,
}

/// A stored token (a persistence format: fields may be added, never renamed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    /// SHA-256 of the secret, hex.
    pub hash: String,
    pub kind: Kind,
    pub namespace: String,
    pub role: Role,
    /// Wall clock, milliseconds since the epoch.
    pub created: u64,
    #[serde(default)]
    pub expires: Option<u64>,
    #[serde(default)]
    pub description: String,
}

/// The namespace every record lives in unless said otherwise.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Whether `name` can be a namespace. Until every record carries its namespace, only the
/// default one exists: a token for another would see and change the default one's.
pub fn check_namespace(name: &str) -> Result<(), String> {
    if name != DEFAULT_NAMESPACE {
        return Err(format!("namespace {name:?}: only {DEFAULT_NAMESPACE:?} exists so far"));
    }
    Ok(())
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Nobody showed anything.
    Anonymous,
    /// The master runs in development mode (`--insecure-dev`, loopback only): anything goes.
    Dev,
    /// The holder of an API token.
    User { token: String, namespace: String, role: Role },
    /// An agent, by the certificate it joined with.
    Agent { id: String },
}

impl Principal {
    /// May this principal run what only an admin may (host tasks, root, host networking and
    /// host paths)?
    pub fn privileged(&self) -> bool {
        matches!(self, Principal::Dev | Principal::User { role: Role::Admin, .. })
    }

    /// Are this principal's commands checked for what only an admin may run? A user's who is
    /// not an admin. (Agents only register, heartbeat and report: they change no definition.)
    pub fn checked(&self) -> bool {
        matches!(self, Principal::User { role, .. } if *role != Role::Admin)
    }

    /// Who, for the audit log.
    pub fn name(&self) -> String {
        match self {
            Principal::Anonymous => "anonymous".into(),
            Principal::Dev => "dev".into(),
            Principal::User { token, namespace, role } => format!("token {token} ({role} of {namespace})"),
            Principal::Agent { id } => format!("agent {id}"),
        }
    }
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: health, the masters' CA certificate, joining (which checks its own token).
    Public,
    /// A joined agent's certificate.
    Agent,
    Read,
    Write,
    Admin,
}

/// What `method` on `path` needs. One table for every API (native, Marathon, Chronos).
pub fn need(method: &Method, path: &str) -> Need {
    let read = *method == Method::GET || *method == Method::HEAD;
    match path {
        "/health" | "/ping" | "/api/v1/ca" => return Need::Public,
        "/api/v1/join" if *method == Method::POST => return Need::Public,
        "/api/v1/agents" if *method == Method::POST => return Need::Agent,
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("/api/v1/agents/") {
        if !read && (rest.ends_with("/heartbeat") || rest.ends_with("/updates")) {
            return Need::Agent;
        }
    }
    if path.starts_with("/api/v1/tokens") || path.starts_with("/api/v1/roles/") && !read {
        return Need::Admin;
    }
    if path.starts_with("/api/v1/agents/") && *method == Method::DELETE {
        return Need::Admin;
    }
    if read {
        Need::Read
    } else {
        Need::Write
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// 401: no credentials, or ones that are not valid.
    #[error("{0}")]
    Unauthenticated(String),
    /// 403: valid credentials that do not allow this.
    #[error("{0}")]
    Forbidden(String),
}

/// Whether `who` may make a request that needs `need`.
pub fn authorize(who: &Principal, need: Need) -> Result<(), Denied> {
    let role = match (who, need) {
        (_, Need::Public) | (Principal::Dev, _) => return Ok(()),
        (Principal::Agent { .. }, Need::Agent) => return Ok(()),
        (Principal::Anonymous, Need::Agent) => {
            return Err(Denied::Unauthenticated(
                "this call is for agents: it needs the client certificate an agent gets when it joins".into(),
            ))
        }
        (Principal::Anonymous, _) => {
            return Err(Denied::Unauthenticated(
                "authentication required: send a token (Authorization: Bearer TOKEN, or basic auth with the \
                 token as the password; the CLI takes --token or CORRAL_TOKEN)"
                    .into(),
            ))
        }
        (Principal::Agent { id }, _) => {
            return Err(Denied::Forbidden(format!("agent {id} may only register, heartbeat and report updates")))
        }
        (Principal::User { .. }, Need::Agent) => {
            return Err(Denied::Forbidden(
                "this call is for agents, with the certificate they got when they joined".into(),
            ))
        }
        (Principal::User { role, .. }, _) => *role,
    };
    let wanted = match need {
        Need::Read => Role::Reader,
        Need::Write => Role::Writer,
        _ => Role::Admin,
    };
    if role >= wanted {
        Ok(())
    } else {
        Err(Denied::Forbidden(format!("a {role} token may not do this: it needs a {wanted} token")))
    }
}

/// The SHA-256 of a token's secret, hex.
pub fn hash_secret(secret: &str) -> String {
    crate::pki::hex(&Sha256::digest(secret.as_bytes()))
}

/// Compares without stopping at the first difference.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An agent's identity (a persistence format): the certificate it joined with and the names
/// and addresses that certificate covers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    pub fingerprint: String,
    pub hosts: Vec<String>,
}

/// The tokens and the agents' identities, as the master holds them.
#[derive(Clone, Default)]
pub struct Trust {
    tokens: imbl::OrdMap<String, TokenRecord>,
    /// Agent id to its identity.
    agents: imbl::HashMap<String, Identity>,
    /// The reverse.
    prints: imbl::HashMap<String, String>,
}

impl Trust {
    pub fn recover(snapshot: &corral_store::Snapshot) -> Result<Trust, MasterError> {
        let mut trust = Trust::default();
        for (id, bytes) in snapshot.table(TOKENS) {
            let record: TokenRecord = decode(TOKENS, id, bytes)?;
            trust.tokens.insert(id.to_string(), record);
        }
        for (id, bytes) in snapshot.table(IDENTITIES) {
            let identity: Identity = decode(IDENTITIES, id, bytes)?;
            trust.prints.insert(identity.fingerprint.clone(), id.to_string());
            trust.agents.insert(id.to_string(), identity);
        }
        Ok(trust)
    }

    /// The token `presented` (`ID.SECRET`) of kind `kind`, if it is one and valid at `wall_ms`.
    pub fn check(&self, presented: &str, kind: Kind, wall_ms: u64) -> Result<&TokenRecord, Denied> {
        let invalid = || Denied::Unauthenticated("the token is not valid (unknown, revoked or mistyped)".into());
        let (id, secret) = presented.trim().split_once('.').ok_or_else(invalid)?;
        let record = self.tokens.get(id).filter(|r| r.kind == kind).ok_or_else(invalid)?;
        if !same(&record.hash, &hash_secret(secret)) {
            return Err(invalid());
        }
        if record.expires.is_some_and(|e| e <= wall_ms) {
            return Err(Denied::Unauthenticated(format!("token {id} has expired")));
        }
        Ok(record)
    }

    /// The principal an API token stands for.
    pub fn user(&self, presented: &str, wall_ms: u64) -> Result<Principal, Denied> {
        let r = self.check(presented, Kind::Api, wall_ms)?;
        Ok(Principal::User { token: r.id.clone(), namespace: r.namespace.clone(), role: r.role })
    }

    /// The agent whose certificate has this fingerprint.
    pub fn agent(&self, fingerprint: &str) -> Option<&str> {
        self.prints.get(fingerprint).map(String::as_str)
    }

    /// An agent's identity.
    pub fn identity(&self, id: &str) -> Option<&Identity> {
        self.agents.get(id)
    }

    pub fn tokens(&self) -> impl Iterator<Item = &TokenRecord> {
        self.tokens.values()
    }

    pub fn token(&self, id: &str) -> Option<&TokenRecord> {
        self.tokens.get(id)
    }

    // ---- changes (owner commands) ------------------------------------------------------------

    pub fn put_token(&mut self, core: &mut Core, record: TokenRecord) {
        core.put(TOKENS, &record.id, &record);
        self.tokens.insert(record.id.clone(), record);
    }

    pub fn revoke(&mut self, core: &mut Core, id: &str) -> Result<TokenRecord, MasterError> {
        let record = self.tokens.remove(id).ok_or_else(|| MasterError::NotFound(format!("token {id}")))?;
        core.delete(TOKENS, id);
        Ok(record)
    }

    /// Forgets an agent's identity: its certificate no longer stands for it.
    pub fn revoke_agent(&mut self, core: &mut Core, id: &str) -> Result<(), MasterError> {
        let identity = self.agents.remove(id).ok_or_else(|| MasterError::NotFound(format!("no joined agent {id}")))?;
        self.prints.remove(&identity.fingerprint);
        core.delete(IDENTITIES, id);
        Ok(())
    }

    /// A new agent id, bound to the certificate it was just issued (its fingerprint and the
    /// hosts it covers). Ids are never handed over: an agent that joins again (a lost
    /// certificate, a new address) is a new agent, and its old id's tasks are lost.
    pub fn bind_agent(&mut self, core: &mut Core, identity: Identity) -> String {
        let id = core.ids().id("agent");
        core.put(IDENTITIES, &id, &identity);
        self.prints.insert(identity.fingerprint.clone(), id.clone());
        self.agents.insert(id.clone(), identity);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_needs_what_the_table_says() {
        let cases = [
            ("GET", "/health", Need::Public),
            ("GET", "/ping", Need::Public),
            ("GET", "/api/v1/ca", Need::Public),
            ("POST", "/api/v1/join", Need::Public),
            ("GET", "/api/v1/join", Need::Read),
            ("POST", "/api/v1/agents", Need::Agent),
            ("GET", "/api/v1/agents", Need::Read),
            ("POST", "/api/v1/agents/agent-1/heartbeat", Need::Agent),
            ("POST", "/api/v1/agents/agent-1/updates", Need::Agent),
            ("GET", "/api/v1/tokens", Need::Admin),
            ("POST", "/api/v1/tokens", Need::Admin),
            ("DELETE", "/api/v1/tokens/tok-1", Need::Admin),
            ("GET", "/api/v1/roles", Need::Read),
            ("DELETE", "/api/v1/agents/agent-1", Need::Admin),
            ("PUT", "/api/v1/roles/ads", Need::Admin),
            ("GET", "/v2/apps", Need::Read),
            ("GET", "/v2/events", Need::Read),
            ("POST", "/v2/apps", Need::Write),
            ("DELETE", "/v2/apps/web", Need::Write),
            ("PUT", "/v1/scheduler/iso8601", Need::Write),
            ("POST", "/api/v1/tasks", Need::Write),
            ("POST", "/api/v1/tasks/t/kill", Need::Write),
        ];
        for (method, path, want) in cases {
            assert_eq!(need(&method.parse().unwrap(), path), want, "{method} {path}");
        }
    }

    #[test]
    fn roles_are_ordered_and_agents_only_agents() {
        let user = |role| Principal::User { token: "t".into(), namespace: "default".into(), role };
        let agent = Principal::Agent { id: "a".into() };
        assert!(authorize(&user(Role::Reader), Need::Read).is_ok());
        assert!(
            matches!(authorize(&user(Role::Reader), Need::Write), Err(Denied::Forbidden(m)) if m.contains("writer"))
        );
        assert!(authorize(&user(Role::Writer), Need::Write).is_ok());
        assert!(authorize(&user(Role::Writer), Need::Admin).is_err());
        assert!(authorize(&user(Role::Admin), Need::Admin).is_ok());
        assert!(authorize(&user(Role::Admin), Need::Agent).is_err());
        assert!(authorize(&agent, Need::Agent).is_ok());
        assert!(authorize(&agent, Need::Read).is_err());
        assert!(matches!(authorize(&Principal::Anonymous, Need::Read), Err(Denied::Unauthenticated(_))));
        assert!(authorize(&Principal::Anonymous, Need::Public).is_ok());
        assert!(authorize(&Principal::Dev, Need::Admin).is_ok());
        assert!(user(Role::Admin).privileged() && !user(Role::Writer).privileged());
    }

    #[test]
    fn a_token_is_checked_by_its_secret_kind_and_expiry() {
        let mut trust = Trust::default();
        let record = |id: &str, kind, expires| TokenRecord {
            id: id.into(),
            hash: hash_secret("s3cret"),
            kind,
            namespace: "default".into(),
            role: Role::Writer,
            created: 0,
            expires,
            description: String::new(),
        };
        trust.tokens.insert("a".into(), record("a", Kind::Api, None));
        trust.tokens.insert("j".into(), record("j", Kind::Join, None));
        trust.tokens.insert("old".into(), record("old", Kind::Api, Some(1000)));
        assert!(matches!(trust.user("a.s3cret", 5), Ok(Principal::User { role: Role::Writer, .. })));
        for bad in ["a.wrong", "a", "nobody.s3cret", "j.s3cret", ""] {
            assert!(matches!(trust.user(bad, 5), Err(Denied::Unauthenticated(_))), "{bad}");
        }
        assert!(trust.check("j.s3cret", Kind::Join, 5).is_ok());
        assert!(trust.user("old.s3cret", 999).is_ok());
        assert!(matches!(trust.user("old.s3cret", 1000), Err(Denied::Unauthenticated(m)) if m.contains("expired")));
    }
}
