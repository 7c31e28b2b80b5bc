//! The master's side of trust at its edges: its certificates, the TLS configuration it serves
//! with, the credentials its deliveries show agents, and the tokens it makes for itself the
//! first time (`<data-dir>/admin-token`, `<data-dir>/join-token`, and `<data-dir>/client.json`,
//! a CLI configuration with the admin token; all 0600).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use corral_client::Credentials;

use super::trust::{Kind, Role, TokenRecord, DEFAULT_NAMESPACE};
use super::Master;
use crate::pki::{self, Issued, Pki, PkiError};

/// How a master proves who it is and checks who calls.
#[derive(Debug, Clone)]
pub enum SecurityConfig {
    /// Plain HTTP and no authentication (`--insecure-dev`): only on a loopback address.
    Dev,
    /// TLS with the cluster's authorities under `<data-dir>/pki`, tokens, agents' certificates.
    /// `names`: more names and addresses the master's certificate covers (`--tls-san`).
    Secure { names: Vec<String> },
}

/// What a running master holds of the above.
pub struct Security {
    pub pki: Option<Pki>,
    /// The master's own certificate: its server certificate, and its client certificate
    /// towards agents.
    pub identity: Option<Issued>,
}

impl Security {
    pub fn dev() -> Security {
        Security { pki: None, identity: None }
    }

    pub fn is_dev(&self) -> bool {
        self.pki.is_none()
    }

    /// Opens (or makes) the authorities and issues the master's certificate for `listen`.
    pub fn open(data_dir: &Path, listen: SocketAddr, names: &[String]) -> Result<Security, PkiError> {
        let pki = Pki::open(&data_dir.join("pki"))?;
        let names = pki::server_names(listen.ip(), names);
        let identity = pki.masters.issue("corral master", &names, true, true)?;
        Ok(Security { pki: Some(pki), identity: Some(identity) })
    }

    /// The TLS configuration the master serves with: its certificate; agents' certificates are
    /// told apart, clients need none (they show tokens).
    pub fn server_config(&self) -> Result<Option<Arc<rustls::ServerConfig>>, PkiError> {
        match (&self.pki, &self.identity) {
            (Some(pki), Some(identity)) => Ok(Some(pki::server_config(identity, &pki.agents.cert_pem, false)?)),
            _ => Ok(None),
        }
    }

    /// What the master shows an agent and trusts from it.
    pub fn agent_credentials(&self) -> Credentials {
        match (&self.pki, &self.identity) {
            (Some(pki), Some(identity)) => Credentials {
                ca_pem: Some(pki.agents.cert_pem.clone()),
                identity: Some((identity.cert_pem.clone(), identity.key_pem.clone())),
                token: None,
            },
            _ => Credentials::default(),
        }
    }
}

/// Makes a token (its secret from the operating system) on the owner, and returns it with its
/// record.
pub async fn mint(
    master: &Master,
    kind: Kind,
    namespace: String,
    role: Role,
    ttl_ms: Option<u64>,
    description: String,
) -> Result<(TokenRecord, String), super::MasterError> {
    let secret = pki::random_hex(32).map_err(|e| super::MasterError::Internal(e.to_string()))?;
    let hash = super::trust::hash_secret(&secret);
    let (record, _) = master
        .call(move |c, now| {
            let wall = c.core.wall_ms(now);
            let id = c.core.ids().id("tok");
            let record = TokenRecord {
                id,
                hash,
                kind,
                namespace,
                role,
                created: wall,
                expires: ttl_ms.map(|t| wall.saturating_add(t)),
                description,
            };
            c.trust.put_token(&mut c.core, record.clone());
            Ok(record)
        })
        .await?;
    let token = format!("{}.{secret}", record.id);
    Ok((record, token))
}

/// The first time (or when a file is missing or its token no longer valid): an admin token in
/// `<data-dir>/admin-token`, a join token in `<data-dir>/join-token`, and a CLI configuration
/// in `<data-dir>/client.json` naming `url`.
pub async fn bootstrap(master: &Master, data_dir: &Path, url: &str) -> Result<(), String> {
    let security = master.security.clone();
    let Some(pki) = &security.pki else { return Ok(()) };
    let wall = || {
        let view = master.view();
        view.core.wall_ms(master.now_ms())
    };
    let read = |name: &str| std::fs::read_to_string(data_dir.join(name)).ok().map(|t| t.trim().to_string());

    let admin = match read("admin-token") {
        Some(t) if master.view().trust.user(&t, wall()).is_ok_and(|p| p.privileged()) => t,
        _ => {
            let (_, token) = mint(
                master,
                Kind::Api,
                DEFAULT_NAMESPACE.into(),
                Role::Admin,
                None,
                "made by the master at its first start".into(),
            )
            .await
            .map_err(|e| e.to_string())?;
            pki::write_private(&data_dir.join("admin-token"), &format!("{token}\n")).map_err(|e| e.to_string())?;
            token
        }
    };
    let ca = pki.masters.fingerprint();
    let join_ok = |t: &str| {
        pki::parse_join_token(t)
            .is_ok_and(|(fp, secret)| fp == ca && master.view().trust.check(&secret, Kind::Join, wall()).is_ok())
    };
    if !read("join-token").is_some_and(|t| join_ok(&t)) {
        let (_, token) = mint(
            master,
            Kind::Join,
            DEFAULT_NAMESPACE.into(),
            Role::Reader,
            None,
            "made by the master at its first start".into(),
        )
        .await
        .map_err(|e| e.to_string())?;
        pki::write_private(&data_dir.join("join-token"), &format!("{}\n", pki::join_token(&ca, &token)))
            .map_err(|e| e.to_string())?;
    }
    let config =
        corral_client::Config { master: Some(url.into()), ca: Some(pki.masters.cert_pem.clone()), token: Some(admin) };
    let text = serde_json::to_string_pretty(&config).map_err(|e| e.to_string())?;
    pki::write_private(&data_dir.join("client.json"), &format!("{text}\n")).map_err(|e| e.to_string())?;
    Ok(())
}
