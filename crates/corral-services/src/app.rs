//! An app, validated: what the reconciler and placement work from. Built from a normalized
//! [`AppDefinition`] by [`App::from_definition`], which lists every problem Marathon-style
//! (`path` plus messages) instead of stopping at the first.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::constraints::Constraint;
use crate::wire::AppDefinition;

/// An absolute app path: `/prod/web`.
pub type AppId = String;

/// One problem with a definition, in the shape of Marathon's 422 `details`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Violation {
    pub path: String,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid app definition: {}", .0.iter().map(|v| format!("{}: {}", v.path, v.errors.join("; "))).collect::<Vec<_>>().join(", "))]
pub struct Invalid(pub Vec<Violation>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// The agent's network: host ports are the task's ports.
    Host,
    /// Its own namespace; until CNI lands, with loopback only.
    Bridge,
    None,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `cmd`: run by `/bin/sh -c`.
    Shell(String),
    /// `args`: the argv (after the image's entrypoint, for images).
    Args(Vec<String>),
    /// Neither: the image's own entrypoint and cmd.
    Image,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Port {
    /// A fixed host port, or 0 for any from the offer.
    pub host_port: u64,
    pub name: Option<String>,
    /// BRIDGE: the port inside the task's network that the host port forwards to (0: the same
    /// number as the host port). HOST: unused.
    pub container_port: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VolumeMount {
    pub container_path: String,
    pub host_path: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    Http { path: String, port_index: usize, https: bool },
    Tcp { port_index: usize },
    Command(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    pub probe: Probe,
    pub grace_period_ms: u64,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// 0: never kill for failing.
    pub max_consecutive_failures: u32,
}

/// Marathon's readiness check: an HTTP GET to the named port until it answers one of the
/// ready statuses.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadinessCheck {
    pub port_index: usize,
    pub path: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub ready_statuses: Vec<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillSelection {
    YoungestFirst,
    OldestFirst,
}

#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub id: AppId,
    /// The definition's version (a timestamp); every change makes a new one.
    pub version: String,
    /// When the configuration (not the instance count) last changed: tasks of an older one are
    /// replaced by a rolling upgrade.
    pub config_version: String,
    pub command: Command,
    pub image: Option<String>,
    /// `container.docker.forcePullImage`: agents pull the image at every launch.
    pub force_pull: bool,
    /// `fetch` (and the older `uris`): artifacts downloaded into the sandbox before the start.
    pub fetch: Vec<Fetch>,
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    pub instances: u32,
    pub env: BTreeMap<String, String>,
    pub user: Option<User>,
    pub volumes: Vec<VolumeMount>,
    pub network: Network,
    pub ports: Vec<Port>,
    pub require_ports: bool,
    pub constraints: Vec<Constraint>,
    pub role: String,
    /// Roles whose resources this app may use; `None`: any the framework is offered.
    pub accepted_roles: Option<Vec<String>>,
    pub health_checks: Vec<HealthCheck>,
    /// A new task counts toward the healthy capacity only once these pass.
    pub readiness_checks: Vec<ReadinessCheck>,
    pub min_health_capacity: f64,
    pub max_over_capacity: f64,
    pub backoff_ms: u64,
    pub backoff_factor: f64,
    pub max_launch_delay_ms: u64,
    pub kill_selection: KillSelection,
    pub kill_grace_secs: Option<u64>,
    pub dependencies: Vec<AppId>,
    /// Unreachable tasks are replaced after this long (0: at once).
    pub unreachable_inactive_ms: u64,
}

/// The largest app corral accepts: more instances than this is a typo.
pub const MAX_INSTANCES: i64 = 10_000;

/// The longest app id: a task's id (the id, `/` as `_`, and a UUID) must still name a file.
pub const MAX_ID_LEN: usize = 200;

const DAY_SECS: f64 = 86_400.0;

/// `web` → `/web`; `/a//b/` → `/a/b`.
pub fn absolute_id(id: &str) -> String {
    let parts: Vec<&str> = id.split('/').filter(|p| !p.is_empty()).collect();
    format!("/{}", parts.join("/"))
}

/// Resolves a dependency path against the app's own: relative paths are siblings.
pub fn resolve_id(base: &str, id: &str) -> String {
    if id.starts_with('/') {
        return absolute_id(id);
    }
    let parent = base.rsplit_once('/').map_or("", |(p, _)| p);
    let mut parts: Vec<&str> = parent.split('/').filter(|p| !p.is_empty()).collect();
    for seg in id.split('/').filter(|p| !p.is_empty()) {
        match seg {
            "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

fn valid_segment(s: &str) -> bool {
    // Marathon's path segment: lowercase letters, digits, '-' and '.', starting and ending
    // with a letter or digit.
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars().last().is_some_and(|c| c.is_ascii_alphanumeric())
}

/// Checks an absolute app path; the message names what is wrong.
pub fn check_id(id: &str) -> Result<(), String> {
    if id == "/" || id.is_empty() {
        return Err("an app needs an id".into());
    }
    if id.len() > MAX_ID_LEN {
        return Err(format!("the id is {} characters long; at most {MAX_ID_LEN}", id.len()));
    }
    for seg in id.split('/').skip(1) {
        if seg == "." || seg == ".." {
            return Err(format!("{id:?}: '.' and '..' are not allowed in an app id"));
        }
        if !valid_segment(seg) {
            return Err(format!(
                "{id:?}: path segment {seg:?} must be lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
            ));
        }
    }
    Ok(())
}

/// Who a task runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum User {
    Ids(u32, u32),
    /// Looked up in the image's passwd (the host's for host tasks) when the task starts.
    Name(String),
}

/// Whether a URI's host is the agent itself or link-local (`localhost`, 127/8, ::1, 0.0.0.0,
/// 169.254/16, fe80::/10).
fn uri_host_is_local(uri: &str) -> bool {
    let rest = uri.split_once("://").map_or(uri, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_loopback() || ip.is_link_local() || ip.is_unspecified(),
        Ok(std::net::IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.is_unspecified() || (ip.segments()[0] & 0xffc0) == 0xfe80
        }
        Err(_) => false,
    }
}

fn parse_user(u: &str) -> Result<User, String> {
    let is_name = u.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && u.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c))
        && u.len() <= 32;
    if is_name {
        return Ok(User::Name(u.to_string()));
    }
    let (uid, gid) = match u.split_once(':') {
        Some((a, b)) => (a, Some(b)),
        None => (u, None),
    };
    let uid: u32 = uid.parse().map_err(|_| format!("{u:?}: give a user name or a numeric uid[:gid]"))?;
    let gid: u32 = match gid {
        Some(g) => g.parse().map_err(|_| format!("{u:?}: the gid must be a number"))?,
        None => uid,
    };
    Ok(User::Ids(uid, gid))
}

fn seconds_ms(s: f64) -> u64 {
    (s * 1000.0).round().max(0.0) as u64
}

/// An artifact a task's agent downloads into its sandbox before the task starts (Marathon's
/// `fetch` item; an `uris` entry is one with the defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    pub uri: String,
    /// Unpack it (tar, tar.gz, tgz, zip) instead of keeping the file.
    pub extract: bool,
    /// Mark the file executable.
    pub executable: bool,
    /// Where in the sandbox (default: the URI's last path segment).
    pub dest_path: Option<String>,
}

/// Archives an agent can unpack, by the URI's ending.
const EXTRACTABLE: &[&str] = &[".tar", ".tar.gz", ".tgz", ".zip"];
/// Archives it cannot yet: extracting them is refused rather than silently skipped.
const NOT_EXTRACTABLE: &[&str] = &[".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".bz2", ".xz", ".gz"];

impl Fetch {
    /// Whether the agent unpacks it: asked to, and an archive it knows.
    pub fn unpacks(&self) -> bool {
        let path = self.uri.split(['?', '#']).next().unwrap_or("").to_ascii_lowercase();
        self.extract && EXTRACTABLE.iter().any(|e| path.ends_with(e))
    }
}

/// Reads `fetch` and `uris`, noting what is wrong with each item.
fn fetch_items(fetch: &[Value], uris: &[String], p: &mut Problems) -> Vec<Fetch> {
    let mut out = Vec::new();
    for (i, uri) in uris.iter().enumerate() {
        out.push(Fetch { uri: uri.clone(), extract: true, executable: false, dest_path: None });
        check_fetch(out.last().expect("just pushed"), &format!("/uris({i})"), p);
    }
    for (i, item) in fetch.iter().enumerate() {
        let at = format!("/fetch({i})");
        let Some(o) = item.as_object() else {
            p.add(&at, "expected an object with uri, extract, executable, cache, destPath");
            continue;
        };
        for k in o.keys() {
            if !["uri", "extract", "executable", "cache", "destPath"].contains(&k.as_str()) {
                p.add(&format!("{at}/{k}"), "unknown field");
            }
        }
        let flag = |k: &str, default: bool, p: &mut Problems| match o.get(k) {
            None | Some(Value::Null) => default,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                p.add(&format!("{at}/{k}"), format!("{other}: expected true or false"));
                default
            }
        };
        let (extract, executable) = (flag("extract", true, p), flag("executable", false, p));
        if flag("cache", false, p) {
            p.add(&format!("{at}/cache"), "the fetcher cache is not supported: leave cache false");
        }
        let Some(uri) = o.get("uri").and_then(Value::as_str) else {
            p.add(&format!("{at}/uri"), "a fetch item needs a uri");
            continue;
        };
        let dest_path = match o.get("destPath") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                p.add(&format!("{at}/destPath"), format!("{other}: expected a path"));
                None
            }
        };
        let f = Fetch { uri: uri.to_string(), extract, executable, dest_path };
        check_fetch(&f, &at, p);
        out.push(f);
    }
    out
}

fn check_fetch(f: &Fetch, at: &str, p: &mut Problems) {
    let (scheme, rest) = f.uri.split_once("://").unwrap_or(("", ""));
    if !matches!(scheme, "http" | "https") || rest.is_empty() {
        p.add(&format!("{at}/uri"), format!("{:?}: only http:// and https:// URIs are fetched", f.uri));
    }
    if f.uri.len() > 4096 {
        p.add(&format!("{at}/uri"), "longer than 4096 characters");
    }
    let path = f.uri.split(['?', '#']).next().unwrap_or("").to_ascii_lowercase();
    if f.extract && !f.unpacks() && NOT_EXTRACTABLE.iter().any(|e| path.ends_with(e)) {
        p.add(
            &format!("{at}/extract"),
            "only tar, tar.gz, tgz and zip archives are unpacked: set extract to false to keep the file",
        );
    }
    let name = f.dest_path.clone().unwrap_or_else(|| path.rsplit('/').next().unwrap_or("").to_string());
    let bad = name.is_empty()
        || name.len() > 255 * 4
        || name.starts_with('/')
        || name.split('/').any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        let field = if f.dest_path.is_some() { "destPath" } else { "uri" };
        p.add(
            &format!("{at}/{field}"),
            format!("{name:?}: the file needs a relative name inside the sandbox, without . or .. (set destPath)"),
        );
    }
}

#[derive(Default)]
struct Problems(Vec<Violation>);

impl Problems {
    fn add(&mut self, path: &str, error: impl Into<String>) {
        let error = error.into();
        match self.0.iter_mut().find(|v| v.path == path) {
            Some(v) => v.errors.push(error),
            None => self.0.push(Violation { path: path.to_string(), errors: vec![error] }),
        }
    }
}

impl App {
    /// What of this app only an admin may run: a command on the host (no image), root, the
    /// host's network, paths of the host. Empty for an ordinary app.
    pub fn privileges(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.image.is_none() {
            out.push("a command without an image runs on the host (give container.docker.image)");
        }
        let root = match &self.user {
            Some(User::Ids(uid, _)) => *uid == 0,
            Some(User::Name(n)) => n.split(':').next() == Some("root"),
            None => false,
        };
        if root {
            out.push("user 0 (root)");
        }
        if self.network == Network::Host {
            out.push("host networking (give container.docker.network BRIDGE)");
        }
        if !self.volumes.is_empty() {
            out.push("host path volumes");
        }
        if self.fetch.iter().any(|f| uri_host_is_local(&f.uri)) {
            // The agent downloads them: from its own loopback or the cloud's metadata address.
            out.push("fetch from loopback or link-local addresses");
        }
        let command_check = self.health_checks.iter().any(|h| matches!(h.probe, Probe::Command(_)));
        if command_check {
            // They run through nsenter from the agent, as the agent's user, not confined as the
            // task is.
            out.push("COMMAND health checks");
        }
        out
    }

    /// Validates a normalized definition (see [`AppDefinition::normalized`]) whose `version`
    /// and `versionInfo` are set.
    pub fn from_definition(d: &AppDefinition) -> Result<App, Invalid> {
        let mut p = Problems::default();
        if let Err(e) = check_id(&d.id) {
            p.add("/id", e);
        }
        let num = |p: &mut Problems, path: &str, v: f64, min: f64, max: f64, what: &str| {
            if !v.is_finite() || v < min || v > max {
                p.add(path, format!("got {}, expected {min} to {max} ({what})", corral_alloc::resources::show(v)));
            }
        };
        let cpus = d.cpus.unwrap_or(crate::wire::DEFAULT_CPUS);
        let mem = d.mem.unwrap_or(crate::wire::DEFAULT_MEM);
        let disk = d.disk.unwrap_or(0.0);
        use corral_alloc::resources::{MAX_TASK_CPUS, MAX_TASK_DISK_MIB, MAX_TASK_MEM_MIB};
        num(&mut p, "/cpus", cpus, 0.001, MAX_TASK_CPUS, "cpus");
        num(&mut p, "/mem", mem, 4.0, MAX_TASK_MEM_MIB, "MiB");
        num(&mut p, "/disk", disk, 0.0, MAX_TASK_DISK_MIB, "MiB");
        let instances = d.instances.unwrap_or(1);
        if !(0..=MAX_INSTANCES).contains(&instances) {
            p.add("/instances", format!("got {instances}, expected 0 to {MAX_INSTANCES}"));
        }
        if d.gpus.unwrap_or(0) != 0 {
            p.add("/gpus", "this cluster offers no GPUs");
        }
        let image = d.container.as_ref().and_then(|c| c.docker.as_ref()).map(|d| d.image.trim().to_string());
        if let Some(c) = &d.container {
            match c.kind.as_deref().unwrap_or("DOCKER") {
                "DOCKER" | "MESOS" => {}
                other => p.add("/container/type", format!("{other:?}: expected DOCKER or MESOS")),
            }
            if c.kind.as_deref() == Some("DOCKER") && image.as_deref().is_none_or(str::is_empty) {
                p.add("/container/docker/image", "a DOCKER container needs an image");
            }
        }
        let command = match (&d.cmd, &d.args) {
            (Some(_), Some(a)) if !a.is_empty() => {
                p.add("/", "give cmd or args, not both");
                Command::Image
            }
            (Some(c), _) if !c.trim().is_empty() => Command::Shell(c.clone()),
            (_, Some(a)) if !a.is_empty() => Command::Args(a.clone()),
            _ => {
                if image.as_deref().is_none_or(str::is_empty) {
                    p.add("/", "an app needs cmd, args or a container image");
                }
                Command::Image
            }
        };
        let network = match d.network() {
            "HOST" => Network::Host,
            "BRIDGE" => Network::Bridge,
            "NONE" => Network::None,
            other => {
                p.add("/container/docker/network", format!("{other:?}: expected HOST, BRIDGE or NONE"));
                Network::Host
            }
        };
        let mut volumes = Vec::new();
        for (i, v) in d.container.iter().flat_map(|c| c.volumes.iter().flatten()).enumerate() {
            let path = format!("/container/volumes({i})");
            if !v.container_path.starts_with('/') {
                p.add(&format!("{path}/containerPath"), format!("{:?} must be an absolute path", v.container_path));
            }
            let read_only = match v.mode.as_str() {
                "RO" => true,
                "RW" => false,
                m => {
                    p.add(&format!("{path}/mode"), format!("{m:?}: expected RO or RW"));
                    false
                }
            };
            match &v.host_path {
                Some(h) if h.starts_with('/') => volumes.push(VolumeMount {
                    container_path: v.container_path.clone(),
                    host_path: h.clone(),
                    read_only,
                }),
                Some(h) => p.add(&format!("{path}/hostPath"), format!("{h:?} must be an absolute path")),
                None => p.add(&format!("{path}/hostPath"), "only host volumes are supported; give a hostPath"),
            }
        }
        let mut ports = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        let mappings = d.container.as_ref().and_then(|c| c.port_mappings.clone()).unwrap_or_default();
        if network == Network::Host {
            for (i, pd) in d.port_definitions.iter().flatten().enumerate() {
                if !(0..=65535).contains(&pd.port) {
                    p.add(&format!("/portDefinitions({i})/port"), format!("{} is not a port", pd.port));
                    continue;
                }
                if pd.port != 0 && !seen.insert(pd.port) {
                    p.add(&format!("/portDefinitions({i})/port"), format!("port {} is given twice", pd.port));
                }
                ports.push(Port {
                    host_port: if d.require_ports == Some(true) { pd.port as u64 } else { 0 },
                    name: pd.name.clone(),
                    container_port: 0,
                });
            }
        } else if network == Network::None && !mappings.is_empty() {
            p.add("/container/portMappings", "a task with NONE networking has no ports to map");
        } else {
            for (i, m) in mappings.iter().enumerate() {
                let hp = m.host_port.unwrap_or(0);
                if !(0..=65535).contains(&hp) || !(0..=65535).contains(&m.container_port) {
                    p.add(&format!("/container/portMappings({i})"), "ports must be 0 to 65535");
                    continue;
                }
                if m.protocol.as_deref().is_some_and(|p| p != "tcp") {
                    p.add(&format!("/container/portMappings({i})/protocol"), "only tcp port mappings are forwarded");
                }
                ports.push(Port {
                    host_port: hp as u64,
                    name: m.name.clone(),
                    container_port: m.container_port as u64,
                });
            }
        }
        let mut constraints = Vec::new();
        for (i, c) in d.constraints.iter().flatten().enumerate() {
            match Constraint::parse(c) {
                Ok(c) => constraints.push(c),
                Err(e) => p.add(&format!("/constraints({i})"), e.to_string()),
            }
        }
        let role = d.role.clone().unwrap_or_else(|| "*".into());
        if let Err(e) = corral_alloc::Role::parse(&role) {
            p.add("/role", e.to_string());
        }
        if let Some(roles) = &d.accepted_resource_roles {
            if roles.is_empty() {
                p.add("/acceptedResourceRoles", "give at least one role, or leave it out");
            }
            for r in roles {
                if r != "*" && r != &role {
                    p.add(
                        "/acceptedResourceRoles",
                        format!("{r:?}: only \"*\" and the app's role {role:?} can be used"),
                    );
                }
            }
        }
        let mut health_checks = Vec::new();
        for (i, h) in d.health_checks.iter().flatten().enumerate() {
            let path = format!("/healthChecks({i})");
            let port_index = h.port_index.unwrap_or(0);
            let out_of_range = port_index < 0 || port_index as usize >= ports.len();
            if h.port.is_none() && out_of_range && h.protocol.as_deref() != Some("COMMAND") {
                p.add(
                    &format!("{path}/portIndex"),
                    format!("{port_index} is not the index of one of the app's {} ports", ports.len()),
                );
            }
            let port_index = port_index.max(0) as usize;
            let probe = match h.protocol.as_deref().unwrap_or("HTTP") {
                "HTTP" | "MESOS_HTTP" => {
                    Probe::Http { path: h.path.clone().unwrap_or_else(|| "/".into()), port_index, https: false }
                }
                "HTTPS" | "MESOS_HTTPS" => {
                    Probe::Http { path: h.path.clone().unwrap_or_else(|| "/".into()), port_index, https: true }
                }
                "TCP" | "MESOS_TCP" => Probe::Tcp { port_index },
                "COMMAND" => match &h.command {
                    Some(c) if !c.value.trim().is_empty() => Probe::Command(c.value.clone()),
                    _ => {
                        p.add(&format!("{path}/command"), "a COMMAND health check needs command.value");
                        continue;
                    }
                },
                other => {
                    p.add(&format!("{path}/protocol"), format!("{other:?}: expected HTTP, HTTPS, TCP or COMMAND"));
                    continue;
                }
            };
            let secs = |v: Option<f64>, name: &str, p: &mut Problems| -> u64 {
                let v = v.unwrap_or(0.0);
                if !v.is_finite() || !(0.0..=DAY_SECS).contains(&v) {
                    p.add(&format!("{path}/{name}"), format!("got {v}, expected 0 to {DAY_SECS} (seconds)"));
                }
                seconds_ms(v)
            };
            let interval_ms = secs(h.interval_seconds, "intervalSeconds", &mut p).max(100);
            let timeout_ms = secs(h.timeout_seconds, "timeoutSeconds", &mut p).max(100);
            let grace_period_ms = secs(h.grace_period_seconds, "gracePeriodSeconds", &mut p);
            health_checks.push(HealthCheck {
                probe,
                grace_period_ms,
                interval_ms,
                timeout_ms,
                max_consecutive_failures: h.max_consecutive_failures.unwrap_or(3).clamp(0, u32::MAX as i64) as u32,
            });
        }
        let us = d.upgrade_strategy.clone().unwrap_or_default();
        let min_health_capacity = us.minimum_health_capacity.unwrap_or(1.0);
        let max_over_capacity = us.maximum_over_capacity.unwrap_or(1.0);
        for (v, name) in [(min_health_capacity, "minimumHealthCapacity"), (max_over_capacity, "maximumOverCapacity")] {
            if !(0.0..=1.0).contains(&v) {
                p.add(&format!("/upgradeStrategy/{name}"), format!("got {v}, expected 0.0 to 1.0"));
            }
        }
        let backoff = d.backoff_seconds.unwrap_or(1.0);
        let factor = d.backoff_factor.unwrap_or(1.15);
        let max_delay = d.max_launch_delay_seconds.unwrap_or(300.0);
        num(&mut p, "/backoffSeconds", backoff, 0.0, DAY_SECS, "seconds");
        num(&mut p, "/backoffFactor", factor, 1.0, 100.0, "a factor");
        num(&mut p, "/maxLaunchDelaySeconds", max_delay, 0.0, 7.0 * DAY_SECS, "seconds");
        let kill_selection = match d.kill_selection.as_deref().unwrap_or("YOUNGEST_FIRST") {
            "YOUNGEST_FIRST" => KillSelection::YoungestFirst,
            "OLDEST_FIRST" => KillSelection::OldestFirst,
            other => {
                p.add("/killSelection", format!("{other:?}: expected YOUNGEST_FIRST or OLDEST_FIRST"));
                KillSelection::YoungestFirst
            }
        };
        if let Some(g) = d.task_kill_grace_period_seconds {
            num(&mut p, "/taskKillGracePeriodSeconds", g, 0.0, DAY_SECS, "seconds");
        }
        let mut env = BTreeMap::new();
        for (k, v) in d.env.iter().flatten() {
            match v {
                serde_json::Value::String(s) => {
                    env.insert(k.clone(), s.clone());
                }
                _ => p.add(&format!("/env({k})"), "environment values must be strings (secrets are not supported yet)"),
            }
        }
        let user = match d.user.as_deref() {
            None | Some("") => None,
            Some(u) => match parse_user(u) {
                Ok(u) => Some(u),
                Err(e) => {
                    p.add("/user", e);
                    None
                }
            },
        };
        let mut dependencies = Vec::new();
        for (i, dep) in d.dependencies.iter().flatten().enumerate() {
            let dep = resolve_id(&d.id, dep);
            match check_id(&dep) {
                Ok(()) if dep == d.id => p.add(&format!("/dependencies({i})"), "an app cannot depend on itself"),
                Ok(()) => dependencies.push(dep),
                Err(e) => p.add(&format!("/dependencies({i})"), e),
            }
        }
        let mut readiness_checks = Vec::new();
        for (i, r) in d.readiness_checks.iter().flatten().enumerate() {
            let path = format!("/readinessChecks({i})");
            let name = r.port_name.clone().unwrap_or_else(|| "http-api".into());
            let Some(port_index) = ports.iter().position(|p| p.name.as_deref() == Some(name.as_str())) else {
                p.add(&format!("{path}/portName"), format!("no port of the app is named {name:?}"));
                continue;
            };
            if r.protocol.as_deref().unwrap_or("HTTP") != "HTTP" {
                p.add(&format!("{path}/protocol"), "only HTTP readiness checks are supported");
            }
            readiness_checks.push(ReadinessCheck {
                port_index,
                path: r.path.clone().unwrap_or_else(|| "/".into()),
                interval_ms: seconds_ms(r.interval_seconds.unwrap_or(30.0)).max(100),
                timeout_ms: seconds_ms(r.timeout_seconds.unwrap_or(10.0)).max(100),
                ready_statuses: r.http_status_codes_for_ready.clone().unwrap_or_else(|| vec![200]),
            });
        }
        let unreachable_inactive_ms = match &d.unreachable_strategy {
            None => 0,
            Some(serde_json::Value::String(s)) if s == "disabled" => u64::MAX,
            Some(serde_json::Value::Object(o)) => match o.get("inactiveAfterSeconds").map(|v| v.as_f64()) {
                None => 0,
                Some(Some(v)) if v >= 0.0 && v.is_finite() => seconds_ms(v),
                Some(_) => {
                    p.add("/unreachableStrategy/inactiveAfterSeconds", "expected a number of seconds, 0 or more");
                    0
                }
            },
            Some(other) => {
                p.add("/unreachableStrategy", format!("{other}: expected an object or \"disabled\""));
                0
            }
        };
        let fetch = fetch_items(d.fetch.as_deref().unwrap_or_default(), d.uris.as_deref().unwrap_or_default(), &mut p);
        if !p.0.is_empty() {
            return Err(Invalid(p.0));
        }
        let version = d.version.clone().unwrap_or_default();
        let config_version =
            d.version_info.as_ref().map_or_else(|| version.clone(), |v| v.last_config_change_at.clone());
        Ok(App {
            id: d.id.clone(),
            version,
            config_version,
            command,
            image: image.filter(|i| !i.is_empty()),
            fetch,
            force_pull: d
                .container
                .as_ref()
                .and_then(|c| c.docker.as_ref())
                .and_then(|d| d.force_pull_image)
                .unwrap_or(false),
            cpus,
            mem,
            disk,
            instances: instances as u32,
            env,
            user,
            volumes,
            network,
            ports,
            require_ports: d.require_ports.unwrap_or(false),
            constraints,
            role,
            accepted_roles: d.accepted_resource_roles.clone(),
            health_checks,
            readiness_checks,
            min_health_capacity,
            max_over_capacity,
            backoff_ms: seconds_ms(backoff),
            backoff_factor: factor,
            max_launch_delay_ms: seconds_ms(max_delay),
            kill_selection,
            kill_grace_secs: d.task_kill_grace_period_seconds.map(|g| g.round() as u64),
            dependencies,
            unreachable_inactive_ms,
        })
    }

    /// The argv a task of this app runs (empty: the image's own).
    pub fn argv(&self) -> Vec<String> {
        match &self.command {
            Command::Shell(c) => vec!["/bin/sh".into(), "-c".into(), c.clone()],
            Command::Args(a) => a.clone(),
            Command::Image => Vec::new(),
        }
    }

    /// The resources one instance asks for, in the allocator's grammar (ports apart).
    pub fn resources_spec(&self) -> String {
        let mut s = format!("cpus:{:.3};mem:{}", self.cpus, self.mem.ceil() as u64);
        if self.disk > 0.0 {
            s.push_str(&format!(";disk:{}", self.disk.ceil() as u64));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str) -> Result<App, Invalid> {
        let mut d = AppDefinition::decode(json.as_bytes(), false).unwrap().normalized();
        d.version = Some("2026-01-01T00:00:00.000Z".into());
        App::from_definition(&d)
    }

    fn paths(json: &str) -> Vec<String> {
        check(json).unwrap_err().0.into_iter().map(|v| v.path).collect()
    }

    #[test]
    fn what_only_an_admin_may_run_is_named() {
        let image = r#""container":{"docker":{"image":"busybox","network":"BRIDGE"}}"#;
        let needs = |extra: &str| check(&format!(r#"{{"id":"x","cmd":"c",{image}{extra}}}"#)).unwrap().privileges();
        assert!(needs("").is_empty(), "{:?}", needs(""));
        assert!(needs(r#","user":"nobody""#).is_empty());
        for (extra, want) in [
            (r#","user":"0""#, "user 0"),
            (r#","user":"0:5""#, "user 0"),
            (r#","user":"+0""#, "user 0"),
            (r#","user":"root""#, "user 0"),
            (r#","healthChecks":[{"protocol":"COMMAND","command":{"value":"true"}}]"#, "COMMAND"),
            (r#","fetch":[{"uri":"http://127.0.0.1:8080/x"}]"#, "loopback"),
            (r#","fetch":[{"uri":"http://user@[::1]/x"}]"#, "loopback"),
            (r#","fetch":[{"uri":"http://169.254.169.254/latest/meta-data"}]"#, "link-local"),
            (r#","fetch":[{"uri":"https://LOCALHOST./x"}]"#, "loopback"),
        ] {
            let got = needs(extra);
            assert!(got.iter().any(|n| n.contains(want)), "{extra}: {got:?}");
        }
        assert!(needs(r#","fetch":[{"uri":"https://artifacts.example.com/x.tgz"}]"#).is_empty());
        let host = check(r#"{"id":"x","cmd":"c"}"#).unwrap().privileges();
        assert!(host.iter().any(|n| n.contains("on the host")) && host.iter().any(|n| n.contains("host networking")));
    }

    #[test]
    fn ids() {
        assert_eq!(absolute_id("web"), "/web");
        assert_eq!(absolute_id("/a//b/"), "/a/b");
        assert_eq!(resolve_id("/prod/web", "db"), "/prod/db");
        assert_eq!(resolve_id("/prod/web", "../shared/db"), "/shared/db");
        assert_eq!(resolve_id("/prod/web", "/x"), "/x");
        assert!(check_id("/prod/web-1").is_ok());
        assert!(check_id("/Prod").is_err());
        assert!(check_id("/a/-b").is_err());
        assert!(check_id("/").is_err());
    }

    #[test]
    fn valid_definitions() {
        let a = check(r#"{"id":"web","cmd":"python3 -m http.server $PORT0"}"#).unwrap();
        assert_eq!(a.argv(), ["/bin/sh", "-c", "python3 -m http.server $PORT0"]);
        assert_eq!(a.ports.len(), 1);
        assert_eq!(a.instances, 1);
        let a =
            check(r#"{"id":"/a/b","args":["sleep","1"],"user":"1000","constraints":[["hostname","UNIQUE"]]}"#).unwrap();
        assert_eq!(a.argv(), ["sleep", "1"]);
        assert_eq!(a.user, Some(User::Ids(1000, 1000)));
        assert_eq!(
            check(r#"{"id":"x","cmd":"a","user":"www-data"}"#).unwrap().user,
            Some(User::Name("www-data".into()))
        );
        assert_eq!(a.constraints.len(), 1);
        let a = check(r#"{"id":"img","container":{"type":"MESOS","docker":{"image":"busybox"}}}"#).unwrap();
        assert_eq!(a.command, Command::Image);
        assert_eq!(a.image.as_deref(), Some("busybox"));
        assert!(!a.force_pull);
        let a = check(r#"{"id":"img","container":{"docker":{"image":"busybox","forcePullImage":true}}}"#).unwrap();
        assert!(a.force_pull, "forcePullImage is honoured, not ignored");
    }

    #[test]
    fn absurd_values_are_refused_naming_the_field() {
        for (field, value, path) in [
            ("cpus", "1e300", "/cpus"),
            ("mem", "1e20", "/mem"),
            ("disk", "1e300", "/disk"),
            ("backoffFactor", "1e9", "/backoffFactor"),
            ("backoffSeconds", "1e12", "/backoffSeconds"),
            ("maxLaunchDelaySeconds", "1e12", "/maxLaunchDelaySeconds"),
            ("taskKillGracePeriodSeconds", "1e12", "/taskKillGracePeriodSeconds"),
        ] {
            assert_eq!(paths(&format!(r#"{{"id":"a","cmd":"x","{field}":{value}}}"#)), [path], "{field}");
        }
        let long = format!("/{}", "a".repeat(300));
        let e = check(&format!(r#"{{"id":"{long}","cmd":"x"}}"#)).unwrap_err();
        assert_eq!(e.0[0].path, "/id");
        assert!(e.0[0].errors[0].contains("at most 200"), "{:?}", e.0);
        assert!(check(&format!(r#"{{"id":"/{}","cmd":"x"}}"#, "a".repeat(199))).is_ok(), "200 is fine");
        assert_eq!(
            paths(r#"{"id":"a","cmd":"x","healthChecks":[{"protocol":"TCP","intervalSeconds":1e12}]}"#),
            ["/healthChecks(0)/intervalSeconds"]
        );
    }

    #[test]
    fn fetch_and_uris_are_artifacts_or_refused_naming_the_item() {
        let a = check(
            r#"{"id":"f","cmd":"x","uris":["http://h/app.tgz"],
                "fetch":[{"uri":"https://h/tool?v=1","executable":true,"extract":false,"destPath":"bin/tool"},
                         {"uri":"http://h/data.zip"},{"uri":"http://h/notes.txt","extract":true}]}"#,
        )
        .unwrap();
        let uris: Vec<(&str, bool)> = a.fetch.iter().map(|f| (f.uri.as_str(), f.unpacks())).collect();
        assert_eq!(
            uris,
            [
                ("http://h/app.tgz", true),
                ("https://h/tool?v=1", false),
                ("http://h/data.zip", true),
                ("http://h/notes.txt", false)
            ]
        );
        assert!(a.fetch[1].executable && a.fetch[1].dest_path.as_deref() == Some("bin/tool"));
        for (item, path) in [
            (r#"{"uri":"file:///etc/shadow"}"#, "/fetch(0)/uri"),
            (r#"{"uri":"http://h/x","cache":true}"#, "/fetch(0)/cache"),
            (r#"{"uri":"http://h/x.tar.xz"}"#, "/fetch(0)/extract"),
            (r#"{"uri":"http://h/x","destPath":"../x"}"#, "/fetch(0)/destPath"),
            (r#"{"uri":"http://h/"}"#, "/fetch(0)/uri"),
            (r#"{"uri":"http://h/x","outputFile":"y"}"#, "/fetch(0)/outputFile"),
            (r#"{"extract":false}"#, "/fetch(0)/uri"),
            (r#""http://h/x""#, "/fetch(0)"),
        ] {
            assert_eq!(paths(&format!(r#"{{"id":"f","cmd":"x","fetch":[{item}]}}"#)), [path], "{item}");
        }
        assert_eq!(paths(r#"{"id":"f","cmd":"x","uris":["ftp://h/x"]}"#), ["/uris(0)/uri"]);
    }

    #[test]
    fn invalid_definitions_name_every_problem() {
        assert_eq!(paths(r#"{"id":"Bad","cmd":"x","cpus":0,"mem":-1}"#), ["/id", "/cpus", "/mem"]);
        assert_eq!(paths(r#"{"id":"x"}"#), ["/"]);
        assert_eq!(paths(r#"{"id":"x","cmd":"a","args":["b"]}"#), ["/"]);
        assert_eq!(paths(r#"{"id":"x","cmd":"a","instances":-1}"#), ["/instances"]);
        assert_eq!(paths(r#"{"id":"x","cmd":"a","constraints":[["hostname","SOMETIMES"]]}"#), ["/constraints(0)"]);
        assert_eq!(
            paths(
                r#"{"id":"x","container":{"type":"DOCKER","docker":{"image":"i"},"volumes":[{"containerPath":"c","hostPath":"/h","mode":"XX"}]}}"#
            ),
            ["/container/volumes(0)/containerPath", "/container/volumes(0)/mode"]
        );
        assert_eq!(
            paths(r#"{"id":"x","cmd":"a","healthChecks":[{"protocol":"COMMAND"}]}"#),
            ["/healthChecks(0)/command"]
        );
        assert_eq!(
            paths(r#"{"id":"x","cmd":"a","upgradeStrategy":{"minimumHealthCapacity":2}}"#),
            ["/upgradeStrategy/minimumHealthCapacity"]
        );
        assert_eq!(paths(r#"{"id":"x","cmd":"a","killSelection":"RANDOM"}"#), ["/killSelection"]);
        assert_eq!(paths(r#"{"id":"x","cmd":"a","user":"Alice!"}"#), ["/user"]);
        assert_eq!(paths(r#"{"id":"x","cmd":"a","dependencies":["x"]}"#), ["/dependencies(0)"]);
        assert_eq!(paths(r#"{"id":"x","cmd":"a","unreachableStrategy":"sometimes"}"#), ["/unreachableStrategy"]);
        assert_eq!(
            paths(r#"{"id":"x","cmd":"a","readinessChecks":[{"portName":"web"}]}"#),
            ["/readinessChecks(0)/portName"]
        );
        let a = check(r#"{"id":"x","cmd":"a","portDefinitions":[{"port":0},{"port":0,"name":"web"}],"readinessChecks":[{"portName":"web","path":"/ready"}]}"#).unwrap();
        assert_eq!((a.readiness_checks[0].port_index, a.readiness_checks[0].path.as_str()), (1, "/ready"));
        assert_eq!(
            check(r#"{"id":"x","cmd":"a","unreachableStrategy":"disabled"}"#).unwrap().unreachable_inactive_ms,
            u64::MAX
        );
        assert_eq!(
            check(r#"{"id":"x","cmd":"a","unreachableStrategy":{"inactiveAfterSeconds":30}}"#)
                .unwrap()
                .unreachable_inactive_ms,
            30_000
        );
    }
}
