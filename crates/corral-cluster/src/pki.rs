//! The cluster's certificates (rcgen) and TLS configurations (rustls).
//!
//! Two authorities, both made by the master the first time it starts (in `<data-dir>/pki`, 0700):
//! - the **masters'** one signs the masters' certificates: their server certificate (what
//!   clients and agents check) and their client certificate (what agents accept calls from);
//! - the **agents'** one signs each agent's certificate (server and client), issued when the
//!   agent joins.
//!
//! Keeping them apart is what makes each side's check mean something: an agent's certificate
//! can never pass for a master's (to a client, or to another agent), and the master knows which
//! agent is calling by its certificate's fingerprint, bound to the agent's id when it joined.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
}

fn invalid(what: impl Into<String>, e: impl std::fmt::Display) -> PkiError {
    PkiError::Invalid { what: what.into(), message: e.to_string() }
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Issued {
    /// The SHA-256 of the certificate (DER), hex: how the master knows an agent.
    pub fn fingerprint(&self) -> Result<String, PkiError> {
        let der = CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).map_err(|e| invalid("certificate", e))?;
        Ok(fingerprint(&der))
    }
}

/// The SHA-256 of a certificate's DER, lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    hex(&Sha256::digest(der))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The fingerprint of the first certificate in a PEM text.
pub fn pem_fingerprint(pem: &str) -> Result<String, PkiError> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| invalid("certificate", e))?;
    Ok(fingerprint(&der))
}

/// One certificate authority: its certificate and what signs with its key.
pub struct Authority {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Authority {
    fn params(name: &str) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.distinguished_name.push(DnType::OrganizationName, "corral");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params
    }

    /// A new authority named `name`; returns it and its key (PEM), to be kept.
    pub fn create(name: &str) -> Result<(Authority, String), PkiError> {
        let key = KeyPair::generate().map_err(|e| invalid(format!("generating the key of {name}"), e))?;
        let params = Authority::params(name);
        let cert = params.self_signed(&key).map_err(|e| invalid(format!("signing {name}"), e))?;
        let key_pem = key.serialize_pem();
        Ok((Authority { cert_pem: cert.pem(), issuer: Issuer::new(params, key) }, key_pem))
    }

    /// The authority named `name` from its certificate and key.
    pub fn load(name: &str, cert_pem: String, key_pem: &str) -> Result<Authority, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| invalid(format!("the key of {name}"), e))?;
        CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| invalid(format!("the certificate of {name}"), e))?;
        Ok(Authority { cert_pem, issuer: Issuer::new(Authority::params(name), key) })
    }

    /// A certificate for `common_name`, valid for the names and addresses in `sans`, for a
    /// server, a client or both.
    pub fn issue(&self, common_name: &str, sans: &[String], server: bool, client: bool) -> Result<Issued, PkiError> {
        let mut params = CertificateParams::new(sans.to_vec()).map_err(|e| invalid(format!("names {sans:?}"), e))?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.distinguished_name.push(DnType::OrganizationName, "corral");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if server {
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if client {
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(|e| invalid("generating a key", e))?;
        let cert = params.signed_by(&key, &self.issuer).map_err(|e| invalid(format!("signing {common_name}"), e))?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    pub fn fingerprint(&self) -> String {
        pem_fingerprint(&self.cert_pem).unwrap_or_default()
    }
}

/// The master's two authorities, kept in a directory.
pub struct Pki {
    pub masters: Authority,
    pub agents: Authority,
}

const MASTERS: &str = "corral masters CA";
const AGENTS: &str = "corral agents CA";

impl Pki {
    /// Loads the authorities from `dir`, making them (and the directory, 0700) the first time.
    pub fn open(dir: &Path) -> Result<Pki, PkiError> {
        create_private_dir(dir)?;
        Ok(Pki {
            masters: open_authority(dir, "masters-ca", MASTERS)?,
            agents: open_authority(dir, "agents-ca", AGENTS)?,
        })
    }
}

fn create_private_dir(dir: &Path) -> Result<(), PkiError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|source| PkiError::Io {
        action: "creating",
        path: dir.into(),
        source,
    })?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|source| PkiError::Io {
        action: "closing",
        path: dir.into(),
        source,
    })
}

fn read(path: &Path) -> Result<Option<String>, PkiError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PkiError::Io { action: "reading", path: path.into(), source }),
    }
}

/// Writes `text` to `path` (mode 0600) through a temporary file, so a crash leaves the old
/// file or the new one.
pub fn write_private(path: &Path, text: &str) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let io = |action, source| PkiError::Io { action, path: path.into(), source };
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io("writing", e))?;
    file.write_all(text.as_bytes()).and_then(|_| file.sync_all()).map_err(|e| io("writing", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("writing", e))
}

fn open_authority(dir: &Path, file: &str, name: &str) -> Result<Authority, PkiError> {
    let cert_path = dir.join(format!("{file}.pem"));
    let key_path = dir.join(format!("{file}.key"));
    match (read(&cert_path)?, read(&key_path)?) {
        (Some(cert), Some(key)) => Authority::load(name, cert, &key),
        (None, None) => {
            let (authority, key) = Authority::create(name)?;
            // The key first: a certificate without its key would be unusable.
            write_private(&key_path, &key)?;
            write_private(&cert_path, &authority.cert_pem)?;
            Ok(authority)
        }
        _ => Err(PkiError::Invalid {
            what: dir.display().to_string(),
            message: format!("{file}.pem and {file}.key must both exist or both be absent"),
        }),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_pem: &str) -> Result<RootCertStore, PkiError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(|e| invalid("CA certificate", e))?).map_err(|e| invalid("CA certificate", e))?;
    }
    if roots.is_empty() {
        return Err(invalid("CA certificate", "no certificate in it"));
    }
    Ok(roots)
}

/// A TLS server configuration with `identity` as its certificate. Clients with a certificate
/// from `client_ca` are told apart (their fingerprint reaches the handlers); when `require` is
/// set, a client without one is refused during the handshake.
pub fn server_config(identity: &Issued, client_ca: &str, require: bool) -> Result<Arc<ServerConfig>, PkiError> {
    let chain = CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("certificate", e))?;
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).map_err(|e| invalid("private key", e))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(client_ca)?), provider());
    let verifier = if require { verifier } else { verifier.allow_unauthenticated() };
    let verifier = verifier.build().map_err(|e| invalid("client verifier", e))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("TLS versions", e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| invalid("server certificate", e))?;
    Ok(Arc::new(config))
}

/// The names a server certificate for `listen` covers: its address (unless unspecified, when
/// every address of this machine's interfaces), loopback, `localhost`, the hostname, and
/// `extra`.
pub fn server_names(listen: std::net::IpAddr, extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = vec!["127.0.0.1".into(), "::1".into(), "localhost".into()];
    if listen.is_unspecified() {
        if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
            for a in addrs {
                let ip = a.address.as_ref().and_then(|s| {
                    s.as_sockaddr_in()
                        .map(|v4| std::net::IpAddr::V4(v4.ip()))
                        .or_else(|| s.as_sockaddr_in6().map(|v6| std::net::IpAddr::V6(v6.ip())))
                });
                if let Some(ip) = ip {
                    names.push(ip.to_string());
                }
            }
        }
    } else {
        names.push(listen.to_string());
    }
    if let Ok(host) = nix::unistd::gethostname() {
        if let Some(host) = host.to_str().filter(|h| !h.is_empty()) {
            names.push(host.to_string());
        }
    }
    names.extend(extra.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// The join token's parts: `corral-join.<fingerprint of the masters' CA>.<token>`. The
/// fingerprint lets a new agent check the master it reached before it trusts it with anything.
pub fn join_token(ca_fingerprint: &str, token: &str) -> String {
    format!("corral-join.{ca_fingerprint}.{token}")
}

/// Splits a join token into the CA's fingerprint and the token.
pub fn parse_join_token(text: &str) -> Result<(String, String), PkiError> {
    let bad = |why: &str| PkiError::Invalid { what: "join token".into(), message: why.into() };
    let rest = text.trim().strip_prefix("corral-join.").ok_or_else(|| bad("it does not start with corral-join."))?;
    let (ca, token) = rest.split_once('.').ok_or_else(|| bad("it has no CA fingerprint"))?;
    if ca.len() != 64 || !ca.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("its CA fingerprint is not 64 hex digits"));
    }
    if token.is_empty() {
        return Err(bad("it has no secret"));
    }
    Ok((ca.to_ascii_lowercase(), token.to_string()))
}

/// `n` random bytes from the operating system, hex.
pub fn random_hex(n: usize) -> Result<String, PkiError> {
    let mut bytes = vec![0u8; n];
    getrandom::getrandom(&mut bytes).map_err(|e| invalid("random bytes", e))?;
    Ok(hex(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_authority_survives_a_reload_and_signs_what_rustls_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let first = Pki::open(&dir.path().join("pki")).unwrap();
        let again = Pki::open(&dir.path().join("pki")).unwrap();
        assert_eq!(first.masters.cert_pem, again.masters.cert_pem);
        assert_ne!(first.masters.fingerprint(), first.agents.fingerprint());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("pki/masters-ca.key")).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        // A certificate issued after the reload verifies against the first certificate.
        let leaf = again.masters.issue("master", &["127.0.0.1".into()], true, true).unwrap();
        let der = CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap();
        let roots = roots(&first.masters.cert_pem).unwrap();
        let anchors: Vec<_> = roots.roots.clone();
        let cert = webpki_check(&der, &anchors);
        assert!(cert, "the reloaded authority's certificate does not chain to the stored one");
        assert!(
            !webpki_check(&der, &roots_of(&first.agents.cert_pem)),
            "one authority's leaf passed the other's check"
        );
        server_config(&leaf, &first.agents.cert_pem, true).unwrap();
    }

    fn roots_of(pem: &str) -> Vec<rustls_pki_types::TrustAnchor<'static>> {
        roots(pem).unwrap().roots
    }

    fn webpki_check(der: &CertificateDer<'_>, anchors: &[rustls_pki_types::TrustAnchor<'static>]) -> bool {
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(RootCertStore { roots: anchors.to_vec() }),
            provider(),
        )
        .build()
        .unwrap();
        use rustls::client::danger::ServerCertVerifier;
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        verifier.verify_server_cert(der, &[], &name, &[], rustls_pki_types::UnixTime::now()).is_ok()
    }

    #[test]
    fn join_tokens_name_what_is_wrong() {
        let ca = "ab".repeat(32);
        let t = join_token(&ca, "tok-1.secret");
        assert_eq!(parse_join_token(&t).unwrap(), (ca.clone(), "tok-1.secret".into()));
        for (bad, why) in [
            ("nope", "corral-join."),
            ("corral-join.abc", "no CA fingerprint"),
            ("corral-join.abc.x", "64 hex"),
            (&format!("corral-join.{ca}."), "no secret"),
        ] {
            let e = parse_join_token(bad).unwrap_err().to_string();
            assert!(e.contains(why) && e.starts_with("join token"), "{bad}: {e}");
        }
    }
}
