//! An agent's credentials: joining the cluster with a join token the first time (or when the
//! address the master reaches it at is not in its certificate), and the files that keep what
//! it got under `<work-dir>/tls` (0700): its certificate and key, the masters' CA, the names
//! its certificate covers.
//!
//! Joining trusts nothing it has not checked: the agent fetches the masters' CA certificate,
//! compares its fingerprint with the one in the join token (so a man in the middle cannot pass
//! for the master), and only then sends the token's secret, over TLS to that CA.

use std::path::Path;

use corral_client::{Client, Credentials};

use super::AgentError;
use crate::pki;
use crate::wire;

/// What an agent shows the master and trusts from it.
#[derive(Debug, Clone)]
pub struct Joined {
    pub agent_id: wire::AgentId,
    pub cert_pem: String,
    pub key_pem: String,
    pub masters_ca: String,
}

impl Joined {
    /// Credentials for calls to the master.
    pub fn credentials(&self) -> Credentials {
        Credentials {
            ca_pem: Some(self.masters_ca.clone()),
            identity: Some((self.cert_pem.clone(), self.key_pem.clone())),
            token: None,
        }
    }

    /// The agent's server configuration: its certificate; only masters may call.
    pub fn server_config(&self) -> Result<std::sync::Arc<rustls::ServerConfig>, AgentError> {
        let identity = pki::Issued { cert_pem: self.cert_pem.clone(), key_pem: self.key_pem.clone() };
        pki::server_config(&identity, &self.masters_ca, true).map_err(|e| AgentError::Join(e.to_string()))
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    agent_id: wire::AgentId,
    master: String,
    hosts: Vec<String>,
}

/// The credentials in `work_dir` if they cover `hosts` and were got from `master`; else joins
/// with `token` and keeps what it got (a new agent id with it).
pub fn credentials(work_dir: &Path, master: &str, hosts: &[String], token: Option<&str>) -> Result<Joined, AgentError> {
    let dir = work_dir.join("tls");
    if let Some(joined) = load(&dir, master, hosts) {
        return Ok(joined);
    }
    let Some(token) = token else {
        return Err(AgentError::Join(format!(
            "this agent has not joined the cluster at {master} for {hosts:?}: give it --join-token (the master \
             wrote one to <its data dir>/join-token; `corral token create --join` makes more)"
        )));
    };
    let joined = join(master, hosts, token)?;
    save(&dir, master, hosts, &joined)?;
    Ok(joined)
}

fn load(dir: &Path, master: &str, hosts: &[String]) -> Option<Joined> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let saved: Saved = serde_json::from_str(&read("agent.json")?).ok()?;
    if saved.master != master || !hosts.iter().all(|h| saved.hosts.contains(h)) {
        return None;
    }
    Some(Joined {
        agent_id: saved.agent_id,
        cert_pem: read("agent.pem")?,
        key_pem: read("agent.key")?,
        masters_ca: read("masters-ca.pem")?,
    })
}

fn save(dir: &Path, master: &str, hosts: &[String], joined: &Joined) -> Result<(), AgentError> {
    use std::os::unix::fs::DirBuilderExt;
    let io = |action: &'static str| move |source| AgentError::Io { action, path: dir.to_path_buf(), source };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io("creating"))?;
    let write =
        |name: &str, text: &str| pki::write_private(&dir.join(name), text).map_err(|e| AgentError::Join(e.to_string()));
    write("agent.key", &joined.key_pem)?;
    write("agent.pem", &joined.cert_pem)?;
    write("masters-ca.pem", &joined.masters_ca)?;
    let saved = Saved { agent_id: joined.agent_id.clone(), master: master.to_string(), hosts: hosts.to_vec() };
    write("agent.json", &serde_json::to_string_pretty(&saved).expect("serializes"))
}

fn join(master: &str, hosts: &[String], token: &str) -> Result<Joined, AgentError> {
    let (fingerprint, secret) = pki::parse_join_token(token).map_err(|e| AgentError::Join(e.to_string()))?;
    let ca =
        corral_client::unverified_ca(master).map_err(|e| AgentError::Join(format!("fetching the masters' CA: {e}")))?;
    let got = pki::pem_fingerprint(&ca).map_err(|e| AgentError::Join(format!("the master's CA: {e}")))?;
    if got != fingerprint {
        return Err(AgentError::Join(format!(
            "the master at {master} shows a CA ({got}) other than the join token's ({fingerprint}): not joining"
        )));
    }
    let client = Client::with_credentials(master, Credentials { ca_pem: Some(ca), identity: None, token: None })
        .map_err(|e| AgentError::Join(e.to_string()))?;
    let req = wire::Join { token: secret, hosts: hosts.to_vec() };
    let joined: wire::Joined =
        client.send("POST", "/api/v1/join", Some(&req)).map_err(|e| AgentError::Join(e.to_string()))?;
    tracing::info!(agent = %joined.agent_id, "joined the cluster");
    Ok(Joined { agent_id: joined.agent_id, cert_pem: joined.cert, key_pem: joined.key, masters_ca: joined.masters_ca })
}
