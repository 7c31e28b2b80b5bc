//! Marathon's app definition JSON (`/v2/apps`), as clients send it and as the API shows it.
//! Absent fields stay `None` here so that partial updates can tell them from defaults;
//! [`AppDefinition::normalized`] fills in Marathon's documented defaults. Unknown fields are
//! ignored, as Marathon ignores them: clients echo back read-only fields such as `tasksRunning`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const DEFAULT_INSTANCES: u32 = 1;
pub const DEFAULT_CPUS: f64 = 1.0;
pub const DEFAULT_MEM: f64 = 128.0;
pub const DEFAULT_BACKOFF_SECONDS: f64 = 1.0;
pub const DEFAULT_BACKOFF_FACTOR: f64 = 1.15;
pub const DEFAULT_MAX_LAUNCH_DELAY_SECONDS: f64 = 300.0;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppDefinition {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub cmd: Option<String>,
    #[serde(default)]
    pub args: Option<Vec<String>>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<Vec<Vec<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uris: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_launch_delay_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_checks: Option<Vec<HealthCheck>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_checks: Option<Vec<ReadinessCheck>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependencies: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_strategy: Option<UpgradeStrategy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_resource_roles: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_info: Option<VersionInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_kill_grace_period_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// `{"inactiveAfterSeconds", "expungeAfterSeconds"}`, or `"disabled"`.
    pub unreachable_strategy: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_selection: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_definitions: Option<Vec<PortDefinition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_ports: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// `DOCKER` or `MESOS`: both run a corral container from the image.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<Docker>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<Volume>>,
    /// Marathon 1.5+ keeps port mappings here; older clients put them under `docker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_mappings: Option<Vec<PortMapping>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Docker {
    #[serde(default)]
    pub image: String,
    /// `HOST` (the default), `BRIDGE` or `NONE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_mappings: Option<Vec<PortMapping>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_pull_image: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    #[serde(default)]
    pub container_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// `RO` or `RW`.
    #[serde(default)]
    pub mode: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    #[serde(default)]
    pub container_port: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortDefinition {
    #[serde(default)]
    pub port: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// `HTTP`, `HTTPS`, `TCP`, `COMMAND` (and the `MESOS_` forms of the first three).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_index: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<HealthCommand>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_consecutive_failures: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_http1xx: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthCommand {
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status_codes_for_ready: Option<Vec<u16>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preserve_last_response: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStrategy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_health_capacity: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_over_capacity: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    pub last_scaling_at: String,
    pub last_config_change_at: String,
}

/// A body that is not an app definition at all (bad JSON, or a field of the wrong type).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct DecodeError {
    /// JSON pointer style, as Marathon's `details[].path`: `/cpus`, `/container/volumes(0)/mode`.
    pub path: String,
    pub message: String,
}

impl AppDefinition {
    /// Parses JSON, or YAML when `yaml` is set.
    pub fn decode(body: &[u8], yaml: bool) -> Result<AppDefinition, DecodeError> {
        decode(body, yaml)
    }

    /// The definition with every default Marathon documents filled in. `version` is left as is.
    pub fn normalized(&self) -> AppDefinition {
        let mut d = self.clone();
        d.id = crate::app::absolute_id(&d.id);
        d.env.get_or_insert_with(BTreeMap::new);
        d.instances.get_or_insert(DEFAULT_INSTANCES as i64);
        d.cpus.get_or_insert(DEFAULT_CPUS);
        d.mem.get_or_insert(DEFAULT_MEM);
        d.disk.get_or_insert(0.0);
        d.gpus.get_or_insert(0);
        d.executor.get_or_insert_with(String::new);
        d.constraints.get_or_insert_with(Vec::new);
        d.uris.get_or_insert_with(Vec::new);
        d.fetch.get_or_insert_with(Vec::new);
        d.store_urls.get_or_insert_with(Vec::new);
        d.backoff_seconds.get_or_insert(DEFAULT_BACKOFF_SECONDS);
        d.backoff_factor.get_or_insert(DEFAULT_BACKOFF_FACTOR);
        d.max_launch_delay_seconds.get_or_insert(DEFAULT_MAX_LAUNCH_DELAY_SECONDS);
        if let Some(c) = &mut d.container {
            c.kind.get_or_insert_with(|| "DOCKER".into());
            c.volumes.get_or_insert_with(Vec::new);
            if let Some(docker) = &mut c.docker {
                // Older clients put port mappings under docker; keep them in one place.
                if c.port_mappings.is_none() {
                    c.port_mappings = docker.port_mappings.take();
                } else {
                    docker.port_mappings = None;
                }
                docker.network.get_or_insert_with(|| "HOST".into());
                docker.privileged.get_or_insert(false);
                docker.parameters.get_or_insert_with(Vec::new);
                docker.force_pull_image.get_or_insert(false);
            }
            for m in c.port_mappings.iter_mut().flatten() {
                m.host_port.get_or_insert(0);
                m.service_port.get_or_insert(0);
                m.protocol.get_or_insert_with(|| "tcp".into());
                m.labels.get_or_insert_with(BTreeMap::new);
            }
        }
        for h in d.health_checks.get_or_insert_with(Vec::new) {
            let protocol = h.protocol.get_or_insert_with(|| "HTTP".into()).clone();
            if protocol.contains("HTTP") {
                h.path.get_or_insert_with(|| "/".into());
                h.ignore_http1xx.get_or_insert(false);
            }
            if protocol != "COMMAND" && h.port.is_none() {
                h.port_index.get_or_insert(0);
            }
            h.grace_period_seconds.get_or_insert(300.0);
            h.interval_seconds.get_or_insert(60.0);
            h.timeout_seconds.get_or_insert(20.0);
            h.max_consecutive_failures.get_or_insert(3);
            h.delay_seconds.get_or_insert(15.0);
        }
        for r in d.readiness_checks.get_or_insert_with(Vec::new) {
            r.name.get_or_insert_with(|| "readinessCheck".into());
            r.protocol.get_or_insert_with(|| "HTTP".into());
            r.path.get_or_insert_with(|| "/".into());
            r.port_name.get_or_insert_with(|| "http-api".into());
            r.interval_seconds.get_or_insert(30.0);
            r.timeout_seconds.get_or_insert(10.0);
            r.http_status_codes_for_ready.get_or_insert_with(|| vec![200]);
            r.preserve_last_response.get_or_insert(false);
        }
        let base = d.id.clone();
        for dep in d.dependencies.get_or_insert_with(Vec::new) {
            *dep = crate::app::resolve_id(&base, dep);
        }
        let us = d.upgrade_strategy.get_or_insert_with(UpgradeStrategy::default);
        us.minimum_health_capacity.get_or_insert(1.0);
        us.maximum_over_capacity.get_or_insert(1.0);
        d.labels.get_or_insert_with(BTreeMap::new);
        let ur = d.unreachable_strategy.get_or_insert_with(|| serde_json::json!({}));
        if let Value::Object(o) = ur {
            o.entry("inactiveAfterSeconds").or_insert(0.into());
            o.entry("expungeAfterSeconds").or_insert(0.into());
        }
        d.kill_selection.get_or_insert_with(|| "YOUNGEST_FIRST".into());
        d.require_ports.get_or_insert(false);
        let mappings = d.container.as_ref().and_then(|c| c.port_mappings.as_ref()).is_some_and(|m| !m.is_empty());
        let bridged = d.network() != "HOST";
        if d.port_definitions.is_none() {
            d.port_definitions = Some(match (&d.ports, mappings || bridged) {
                (Some(ports), _) => {
                    ports.iter().map(|p| PortDefinition { port: *p, ..PortDefinition::default() }).collect()
                }
                // Without ports or mappings, a host-networked app gets one port.
                (None, false) => vec![PortDefinition::default()],
                (None, true) => Vec::new(),
            });
        }
        for p in d.port_definitions.iter_mut().flatten() {
            p.protocol.get_or_insert_with(|| "tcp".into());
            p.labels.get_or_insert_with(BTreeMap::new);
        }
        d.ports = Some(d.port_definitions.iter().flatten().map(|p| p.port).collect());
        d
    }

    /// `HOST`, `BRIDGE` or `NONE`.
    pub fn network(&self) -> &str {
        self.container.as_ref().and_then(|c| c.docker.as_ref()).and_then(|d| d.network.as_deref()).unwrap_or("HOST")
    }

    /// A partial update (PATCH, or PUT with `partialUpdate`): the fields the patch names replace
    /// this definition's.
    pub fn merged(&self, patch: &Value) -> Result<AppDefinition, DecodeError> {
        let mut base = serde_json::to_value(self).expect("definitions serialize");
        if let (Value::Object(b), Value::Object(p)) = (&mut base, patch) {
            for (k, v) in p {
                b.insert(k.clone(), v.clone());
            }
        }
        from_value(base)
    }
}

fn decode(body: &[u8], yaml: bool) -> Result<AppDefinition, DecodeError> {
    let value: Value = if yaml {
        serde_yaml::from_slice(body)
            .map_err(|e| DecodeError { path: "/".into(), message: format!("invalid YAML: {e}") })?
    } else {
        serde_json::from_slice(body)
            .map_err(|e| DecodeError { path: "/".into(), message: format!("invalid JSON: {e}") })?
    };
    if !value.is_object() {
        return Err(DecodeError { path: "/".into(), message: "an app definition must be a JSON object".into() });
    }
    from_value(value)
}

/// Parses a body (JSON, or YAML when `yaml` is set) as a JSON value, for partial updates.
pub fn decode_value(body: &[u8], yaml: bool) -> Result<Value, DecodeError> {
    if yaml {
        serde_yaml::from_slice(body)
            .map_err(|e| DecodeError { path: "/".into(), message: format!("invalid YAML: {e}") })
    } else {
        serde_json::from_slice(body)
            .map_err(|e| DecodeError { path: "/".into(), message: format!("invalid JSON: {e}") })
    }
}

/// Parses a JSON value as a definition; a mistyped field is named by its path.
pub fn from_value(value: Value) -> Result<AppDefinition, DecodeError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { "/".to_string() } else { format!("/{}", path.replace('.', "/")) };
        DecodeError { path, message: e.into_inner().to_string() }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UBUNTU: &str = r#"{"container":{"type":"DOCKER","docker":{"image":"libmesos/ubuntu"},"volumes":[{"containerPath":"/etc/a","hostPath":"/var/data/a","mode":"RO"},{"containerPath":"/etc/b","hostPath":"/var/data/b","mode":"RW"}]},"id":"ubuntu","instances":1,"cpus":0.5,"mem":512,"cmd":"while sleep 10; do date -u +%T; done"}"#;

    #[test]
    fn the_ubuntu_example_decodes_and_gets_defaults() {
        let d = AppDefinition::decode(UBUNTU.as_bytes(), false).unwrap().normalized();
        assert_eq!(d.id, "/ubuntu");
        assert_eq!(d.cpus, Some(0.5));
        assert_eq!(d.mem, Some(512.0));
        assert_eq!(d.disk, Some(0.0));
        assert_eq!(d.backoff_factor, Some(DEFAULT_BACKOFF_FACTOR));
        assert_eq!(d.kill_selection.as_deref(), Some("YOUNGEST_FIRST"));
        let c = d.container.as_ref().unwrap();
        assert_eq!(c.docker.as_ref().unwrap().network.as_deref(), Some("HOST"));
        assert_eq!(c.volumes.as_ref().unwrap()[1].mode, "RW");
        assert_eq!(d.port_definitions.as_ref().unwrap().len(), 1, "a host-networked app gets one port");
        assert_eq!(d.normalized(), d, "normalizing twice changes nothing");
    }

    #[test]
    fn yaml_is_accepted() {
        let d = AppDefinition::decode(b"id: /web\ncmd: sleep 100\ninstances: 2\n", true).unwrap();
        assert_eq!(d.instances, Some(2));
    }

    #[test]
    fn a_mistyped_field_is_named() {
        let e = AppDefinition::decode(br#"{"id":"x","cpus":"lots"}"#, false).unwrap_err();
        assert_eq!(e.path, "/cpus");
        let e = AppDefinition::decode(br#"{"id":"x","container":{"volumes":[{"mode":7}]}}"#, false).unwrap_err();
        assert!(e.path.starts_with("/container/volumes"), "{e:?}");
        let e = AppDefinition::decode(b"[1]", false).unwrap_err();
        assert_eq!(e.path, "/");
    }

    #[test]
    fn merging_replaces_named_fields_only() {
        let d = AppDefinition::decode(UBUNTU.as_bytes(), false).unwrap().normalized();
        let m = d.merged(&serde_json::json!({"instances": 3})).unwrap();
        assert_eq!(m.instances, Some(3));
        assert_eq!(m.cmd, d.cmd);
    }
}
