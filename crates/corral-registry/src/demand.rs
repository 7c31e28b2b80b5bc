//! Images pulled on demand, as an agent (and `corral run`) needs them: a reference that is not
//! in the local store is pulled from the registry it names, or, when it names none, from the
//! first registry of a search list that has it. Concurrent launches of one image share one pull;
//! a pull that fails for a reason that may pass (the registry unreachable, or failing on its
//! side) is tried again with a doubling wait; progress and the cause of a failure are reported in
//! words a task's status can carry. Registries on loopback are spoken to over plain HTTP (as
//! Docker does), others only when listed as insecure. Credentials never appear in a message.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use corral_image::{Digest, Reference, Store};

use crate::auth::{unbase64, Credentials};
use crate::{ClientConfig, RegistryError, Target};

/// When to pull, as Docker and Podman users know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Pull every time (a tag may have moved).
    Always,
    /// Pull when the store does not have the image (the default).
    #[default]
    Missing,
    /// Never pull: the image must be in the store.
    Never,
}

impl std::str::FromStr for PullPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<PullPolicy, String> {
        match s {
            "always" => Ok(PullPolicy::Always),
            "missing" => Ok(PullPolicy::Missing),
            "never" => Ok(PullPolicy::Never),
            other => Err(format!("pull policy {other:?} must be always, missing or never")),
        }
    }
}

/// Where images come from: an agent's registries file and flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registries {
    /// Tried in order for a reference that names no registry (`app:v1`, `team/app`).
    pub search: Vec<String>,
    /// Spoken to over plain HTTP (loopback registries always are).
    pub insecure: Vec<String>,
    /// Credentials per registry (`host[:port]`).
    pub auths: BTreeMap<String, Credentials>,
}

/// The registries file, in the keys Docker and Podman users know: `unqualified-search-registries`
/// (registries.conf), `insecure-registries` (daemon.json) and `auths` (an auth file:
/// `{"HOST": {"auth": base64("user:password")}}`, or `username` and `password`).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistriesFile {
    #[serde(default, rename = "unqualified-search-registries")]
    search: Vec<String>,
    #[serde(default, rename = "insecure-registries")]
    insecure: Vec<String>,
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

impl Registries {
    /// Parses a registries file; the error names the key that is wrong (never a password).
    pub fn parse(text: &str) -> Result<Registries, String> {
        let file: RegistriesFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut auths = BTreeMap::new();
        for (host, entry) in file.auths {
            let bad = |why: &str| format!("auths.{host}: {why}");
            let credentials = match entry {
                AuthEntry { auth: Some(auth), username: None, password: None } => {
                    let plain = unbase64(auth.trim()).and_then(|b| String::from_utf8(b).ok());
                    let (username, password) = plain
                        .as_deref()
                        .and_then(|p| p.split_once(':'))
                        .ok_or_else(|| bad("auth must be base64 of user:password"))?;
                    Credentials { username: username.into(), password: password.into() }
                }
                AuthEntry { auth: None, username: Some(username), password: Some(password) } => {
                    Credentials { username, password }
                }
                _ => return Err(bad("give either auth, or username and password")),
            };
            auths.insert(strip_scheme(&host).to_string(), credentials);
        }
        for r in file.search.iter().chain(&file.insecure) {
            if r.is_empty() || r.contains('/') {
                return Err(format!("registry {r:?} must be a host[:port], without a path"));
            }
        }
        Ok(Registries { search: file.search, insecure: file.insecure, auths })
    }

    /// Reads a registries file; the error names it.
    pub fn load(path: &Path) -> Result<Registries, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        Registries::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn client_config(&self, registry: &str) -> ClientConfig {
        ClientConfig {
            insecure: loopback(registry) || self.insecure.iter().any(|r| r == registry),
            credentials: self.auths.get(registry).cloned(),
            ..ClientConfig::default()
        }
    }
}

/// Auth files often key registries by URL (`https://index.docker.io/v1/`): the host is what counts.
fn strip_scheme(host: &str) -> &str {
    let host = host.split_once("://").map_or(host, |(_, rest)| rest);
    host.split('/').next().unwrap_or(host)
}

/// Whether a registry host is on this machine's loopback.
fn loopback(registry: &str) -> bool {
    let host = registry.rsplit_once(':').map_or(registry, |(h, p)| if p.parse::<u16>().is_ok() { h } else { registry });
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}

/// Pulls images on demand, one pull per image at a time.
pub struct Puller {
    registries: Registries,
    /// Tries for a pull that fails for a reason that may pass.
    pub attempts: u32,
    /// The wait before the second try; it doubles after each.
    pub backoff: Duration,
    pulling: Mutex<HashMap<String, Weak<Mutex<()>>>>,
}

impl Default for Puller {
    fn default() -> Puller {
        Puller::new(Registries::default())
    }
}

impl Puller {
    pub fn new(registries: Registries) -> Puller {
        Puller { registries, attempts: 3, backoff: Duration::from_secs(1), pulling: Mutex::default() }
    }

    /// Makes sure `image` is in `store`, pulling it as `policy` says.
    pub fn ensure(&self, store: &Store, image: &str, policy: PullPolicy) -> Result<(), String> {
        self.ensure_reporting(store, image, policy, &|_| {})
    }

    /// As [`Puller::ensure`], telling `progress` how the pull goes ("pulling IMAGE: 42/118 MiB",
    /// at most twice a second). The error names the image, the registry and the cause
    /// (unauthorized, not found, unreachable, digest mismatch). A reference that names no
    /// registry, with no search list, is not pulled: the store says what is wrong with it when
    /// the container is made (unknown, or corrupt).
    pub fn ensure_reporting(
        &self,
        store: &Store,
        image: &str,
        policy: PullPolicy,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<(), String> {
        let Ok(reference) = image.parse::<Reference>() else { return Ok(()) };
        let candidates = self.candidates(image, &reference);
        let have = || store.resolve(&reference).is_ok();
        if policy != PullPolicy::Always && have() {
            return Ok(());
        }
        if policy == PullPolicy::Never {
            return Err(format!("unknown image {image:?}: not in the store, and the pull policy is never"));
        }
        if candidates.is_empty() {
            return Ok(());
        }
        // One pull of an image at a time; who waited finds it there.
        let lock = {
            let mut pulling = self.pulling.lock().unwrap_or_else(|p| p.into_inner());
            pulling.retain(|_, w| w.strong_count() > 0);
            let entry = pulling.entry(image.to_string()).or_default();
            entry.upgrade().unwrap_or_else(|| {
                let lock = Arc::new(Mutex::new(()));
                *entry = Arc::downgrade(&lock);
                lock
            })
        };
        let _pulling = lock.lock().unwrap_or_else(|p| p.into_inner());
        if policy == PullPolicy::Missing && have() {
            return Ok(());
        }
        let mut failures = Vec::new();
        for target in &candidates {
            match self.pull_retrying(store, image, target, progress) {
                Ok(manifest) => {
                    // Found through the search list: also known by the name the task gave.
                    if target.local_reference() != reference {
                        store.tag(&reference, &manifest).map_err(|e| format!("tagging {image}: {e}"))?;
                    }
                    return Ok(());
                }
                Err(e) => failures.push((target.registry.clone(), e)),
            }
        }
        Err(describe(image, &failures))
    }

    /// Where a reference may be pulled from: the registry it names, or each of the search list.
    fn candidates(&self, image: &str, reference: &Reference) -> Vec<Target> {
        if let Ok(target) = Target::parse(image) {
            return vec![target];
        }
        let path = reference.tagged();
        self.registries
            .search
            .iter()
            .filter_map(|r| {
                let docker_hub = matches!(r.as_str(), "docker.io" | "registry-1.docker.io" | "index.docker.io");
                let path = if docker_hub && !path.contains('/') { format!("library/{path}") } else { path.clone() };
                Target::parse(&format!("{r}/{path}")).ok()
            })
            .collect()
    }

    /// Pulls from one registry, trying again (after a doubling wait) while the failure may pass.
    fn pull_retrying(
        &self,
        store: &Store,
        image: &str,
        target: &Target,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<Digest, RegistryError> {
        let mut wait = self.backoff;
        let mut attempt = 1;
        loop {
            tracing::info!(image, registry = %target.registry, attempt, "pulling");
            let events = Progress::new(image, progress);
            match crate::pull::pull(store, target, self.registries.client_config(&target.registry), &events) {
                Ok(pulled) => {
                    events.finished();
                    return Ok(pulled.manifest_digest);
                }
                Err(e) if e.transient() && attempt < self.attempts => {
                    tracing::warn!(image, registry = %target.registry, error = %e, "pull failed; trying again");
                    progress(&format!(
                        "pulling {image}: {} ({e}); try {} of {} in {} s",
                        e.cause(),
                        attempt + 1,
                        self.attempts,
                        wait.as_secs_f64()
                    ));
                    pause(wait);
                    wait *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// One message for every registry tried: `pulling IMAGE from REGISTRY: CAUSE: DETAIL`.
fn describe(image: &str, failures: &[(String, RegistryError)]) -> String {
    let each = |(registry, e): &(String, RegistryError)| {
        let detail = match e {
            RegistryError::Unauthorized { what, .. } => {
                format!("{what}: the registry wants credentials, and those given (the registries file's auths) are missing or wrong")
            }
            other => other.to_string(),
        };
        format!("pulling {image} from {registry}: {}: {detail}", e.cause())
    };
    failures.iter().map(each).collect::<Vec<_>>().join("; ")
}

/// Waits out `d` on this thread (a retry's back-off; unparks are spurious, so it parks until
/// the time is up).
pub fn pause(d: Duration) {
    let until = Instant::now() + d;
    while let Some(left) = until.checked_duration_since(Instant::now()).filter(|l| !l.is_zero()) {
        std::thread::park_timeout(left);
    }
}

/// Adds up a pull's blobs for a progress message, at most twice a second.
struct Progress<'a> {
    image: &'a str,
    report: &'a (dyn Fn(&str) + Sync),
    state: Mutex<ProgressState>,
}

#[derive(Default)]
struct ProgressState {
    blobs: HashMap<Digest, (u64, u64)>,
    last: Option<Instant>,
}

impl<'a> Progress<'a> {
    fn new(image: &'a str, report: &'a (dyn Fn(&str) + Sync)) -> Progress<'a> {
        Progress { image, report, state: Mutex::default() }
    }

    fn set(&self, digest: &Digest, done: u64, size: u64, force: bool) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.blobs.insert(digest.clone(), (done, size));
        if !force && s.last.is_some_and(|at| at.elapsed() < Duration::from_millis(500)) {
            return;
        }
        s.last = Some(Instant::now());
        let (done, total) = s.blobs.values().fold((0, 0), |(d, t), (bd, bs)| (d + bd, t + bs));
        drop(s);
        (self.report)(&format!("pulling {}: {}", self.image, mib(done, total)));
    }

    fn finished(&self) {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let total = s.blobs.values().map(|(_, size)| size).sum::<u64>();
        drop(s);
        (self.report)(&format!("pulled {}: {}", self.image, mib(total, total)));
    }
}

fn mib(done: u64, total: u64) -> String {
    let m = |b: u64| b.div_ceil(1 << 20);
    format!("{}/{} MiB", m(done), m(total))
}

impl crate::Events for Progress<'_> {
    fn planned(&self, blobs: &[(Digest, u64)]) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for (d, size) in blobs {
            s.blobs.insert(d.clone(), (0, *size));
        }
    }
    fn blob_skipped(&self, digest: &Digest, size: u64) {
        self.set(digest, size, size, false);
    }
    fn blob_progress(&self, digest: &Digest, done: u64, size: u64) {
        self.set(digest, done, size, false);
    }
    fn blob_done(&self, digest: &Digest, size: u64) {
        self.set(digest, size, size, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_and_loopback() {
        assert_eq!("always".parse::<PullPolicy>(), Ok(PullPolicy::Always));
        assert!("sometimes".parse::<PullPolicy>().unwrap_err().contains("always, missing or never"));
        assert!(loopback("127.0.0.1:5000") && loopback("localhost:5000") && loopback("localhost"));
        assert!(!loopback("registry.example.com:5000") && !loopback("10.0.0.1:5000"));
    }

    #[test]
    fn registries_files_in_the_keys_users_know() {
        let r = Registries::parse(
            r#"{"unqualified-search-registries": ["10.0.0.5:5000", "docker.io"],
                "insecure-registries": ["10.0.0.5:5000"],
                "auths": {"10.0.0.5:5000": {"auth": "Y29ycmFsOnMzY3JldA=="},
                          "https://registry.example/v1/": {"username": "u", "password": "p:w"}}}"#,
        )
        .unwrap();
        assert_eq!(r.search, ["10.0.0.5:5000", "docker.io"]);
        assert_eq!(r.auths["10.0.0.5:5000"], Credentials { username: "corral".into(), password: "s3cret".into() });
        assert_eq!(r.auths["registry.example"].password, "p:w");
        let c = r.client_config("10.0.0.5:5000");
        assert!(c.insecure && c.credentials.is_some());
        assert!(!r.client_config("registry.example").insecure);

        for (bad, says) in [
            (r#"{"mirrors": []}"#, "unknown field `mirrors`"),
            (r#"{"auths": {"h": {"auth": "!!"}}}"#, "auths.h: auth must be base64"),
            (r#"{"auths": {"h": {"username": "u"}}}"#, "auths.h: give either auth"),
            (r#"{"unqualified-search-registries": ["h/path"]}"#, "without a path"),
        ] {
            let e = Registries::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let e = Registries::parse(r#"{"auths": {"h": {"username": "u", "password": "hunter2", "x": 1}}}"#).unwrap_err();
        assert!(!e.contains("hunter2"), "a password never appears in an error: {e}");
        assert!(!format!("{r:?}").contains("s3cret"), "nor in a debug print");
    }

    #[test]
    fn references_without_a_registry_go_through_the_search_list() {
        let p = Puller::new(Registries {
            search: vec!["10.0.0.5:5000".into(), "docker.io".into()],
            ..Registries::default()
        });
        let at = |image: &str| -> Vec<String> {
            p.candidates(image, &image.parse().unwrap()).iter().map(|t| t.to_string()).collect()
        };
        assert_eq!(at("busybox"), ["10.0.0.5:5000/busybox:latest", "docker.io/library/busybox:latest"]);
        assert_eq!(at("team/app:v1"), ["10.0.0.5:5000/team/app:v1", "docker.io/team/app:v1"]);
        assert_eq!(at("127.0.0.1:5000/app:v2"), ["127.0.0.1:5000/app:v2"], "a named registry only");
    }

    #[test]
    fn what_cannot_be_pulled_says_why() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let p = Puller { backoff: Duration::from_millis(10), ..Puller::default() };
        assert_eq!(p.ensure(&store, "busybox:latest", PullPolicy::Missing), Ok(()), "no registry: the store's to say");
        let e = p.ensure(&store, "127.0.0.1:1/team/app:v1", PullPolicy::Never).unwrap_err();
        assert!(e.contains("pull policy is never"), "{e}");
        let said = Mutex::new(Vec::new());
        let e = p
            .ensure_reporting(&store, "127.0.0.1:1/team/app:v1", PullPolicy::Missing, &|m| {
                said.lock().unwrap().push(m.to_string())
            })
            .unwrap_err();
        assert!(e.starts_with("pulling 127.0.0.1:1/team/app:v1 from 127.0.0.1:1: unreachable: "), "{e}");
        let said = said.into_inner().unwrap();
        assert_eq!(said.len(), 2, "tried three times, saying so before each retry: {said:?}");
        assert!(said[0].contains("try 2 of 3"), "{said:?}");
    }
}
