//! The services framework inside the master (Marathon's job): apps and their versions,
//! deployments, the launch queue, and what became of every offer. The decisions are
//! `corral_services`'s (pure); this module keeps the state, persists it, and turns decisions
//! into tasks, launches and kills through the same allocator seams as every framework.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use corral_alloc::attributes::Attributes;
use corral_alloc::{Offer, Operation, Resources, Role};
use corral_services::app::{App, AppId, Network, Probe};
use corral_services::constraints::AgentView;
use corral_services::plan::{self, Action, Backoff, Phase, Reason, TaskView};
use corral_services::wire::{AppDefinition, VersionInfo};
use serde::{Deserialize, Serialize};

use super::core::{Core, FrameworkId, FrameworkKind, Health, MasterError, Placement, ServiceTask, TaskRecord};
use super::events::Event;
use super::framework::{Framework, Notice, NoticeKind};
use crate::store::{decode, APPS, APP_VERSIONS, DEPLOYMENTS};
use crate::task::{transition, TaskEvent, TaskState};
use crate::wire::{self, TaskId};

/// The services framework of a role, by its allocator name.
fn framework_of(role: &str) -> FrameworkId {
    FrameworkId::Services(Role::parse(role).expect("app roles are validated"))
}

/// How many unused offers per app are kept for "why isn't it running".
const UNUSED_OFFERS_KEPT: usize = 20;
/// Declined offers come back this soon, so a changed cluster gets another look.
const DECLINE_MS: u64 = 2_000;
/// Service ports come from here, as in Marathon (`local_port_min`/`max`).
pub const SERVICE_PORTS: std::ops::RangeInclusive<i64> = 10_000..=20_000;
/// Versions of an app kept for rollback.
const VERSIONS_KEPT: usize = 50;

/// An app as persisted: its current definition and the versions that can be restored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredApp {
    definition: AppDefinition,
    versions: Vec<String>,
}

/// A deployment in flight, as persisted: resumed after a master restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub version: String,
    pub affected_apps: Vec<AppId>,
    pub steps: Vec<Vec<(Action, AppId)>>,
    /// Index of the step under way (0-based; `steps.len()` when done).
    pub current_step: usize,
    /// The definitions before the deployment, to roll back to (`None`: the app was new).
    pub original: BTreeMap<AppId, Option<AppDefinition>>,
}

/// One offer an app could not use, and why.
#[derive(Debug, Clone)]
pub struct UnusedOffer {
    pub agent: String,
    pub hostname: String,
    pub resources: String,
    pub reasons: Vec<String>,
    pub at: String,
}

#[derive(Debug, Clone, Default)]
pub struct OfferStats {
    pub processed: u64,
    pub unused: u64,
    pub last_unused_at: Option<String>,
    pub last_used_at: Option<String>,
    /// Offers declined at each reason (the first failing one, in Marathon's order).
    pub declined_by: BTreeMap<&'static str, u64>,
    pub last_unused: VecDeque<UnusedOffer>,
}

#[derive(Clone)]
pub struct AppEntry {
    pub definition: AppDefinition,
    pub app: App,
    pub versions: Vec<String>,
    pub backoff: Backoff,
    pub offers: OfferStats,
    /// Since when instances have been waiting to launch.
    pub waiting_since: Option<String>,
    pub last_failure: Option<LastFailure>,
}

#[derive(Debug, Clone)]
pub struct LastFailure {
    pub task_id: TaskId,
    pub host: String,
    pub agent: String,
    pub state: TaskState,
    pub message: String,
    pub at: String,
    pub version: String,
}

#[derive(Clone, Default)]
pub struct Services {
    pub apps: imbl::OrdMap<AppId, AppEntry>,
    pub deployments: Vec<Deployment>,
    /// Live (non-terminal) tasks per app, including apps being removed.
    pub tasks_of: imbl::OrdMap<AppId, imbl::OrdSet<TaskId>>,
    /// Roles whose services framework is revived: it has instances waiting for offers.
    pub wanting: BTreeSet<String>,
    /// Apps that may need work: something about them changed, or they are not yet where
    /// their definition says (tasks queued, starting, killing or unreachable; a deployment
    /// under way). The tick reconciles these (and the apps of deployments), not every app; an
    /// app reconciled to a settled state leaves the set, any change to it puts it back.
    pub dirty: imbl::OrdSet<AppId>,
}

/// The reasons in Marathon's funnel order: an offer is charged to its first.
pub const REASONS: [&str; 8] = [
    "UnfulfilledRole",
    "UnfulfilledConstraint",
    "NoCorrespondingReservationFound",
    "InsufficientCpus",
    "InsufficientMemory",
    "InsufficientDisk",
    "InsufficientGpus",
    "InsufficientPorts",
];

/// Milliseconds since the epoch as Marathon writes timestamps: `2026-01-02T03:04:05.678Z`.
pub fn timestamp(epoch_ms: u64) -> String {
    let secs = (epoch_ms / 1000) as i64;
    let ms = epoch_ms % 1000;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Marathon's task state names.
pub fn marathon_state(s: TaskState) -> &'static str {
    match s {
        TaskState::Staging => "TASK_STAGING",
        TaskState::Starting => "TASK_STARTING",
        TaskState::Running => "TASK_RUNNING",
        TaskState::Killing => "TASK_KILLING",
        TaskState::Finished => "TASK_FINISHED",
        TaskState::Failed => "TASK_FAILED",
        TaskState::Killed => "TASK_KILLED",
        TaskState::Error => "TASK_ERROR",
        TaskState::Lost => "TASK_LOST",
        TaskState::Unreachable => "TASK_UNREACHABLE",
        TaskState::Gone => "TASK_GONE",
    }
}

fn invalid(path: &str, error: impl Into<String>) -> MasterError {
    MasterError::Invalid(vec![corral_services::Violation { path: path.into(), errors: vec![error.into()] }])
}

fn not_found(id: &str) -> MasterError {
    MasterError::NotFound(format!("App '{id}' does not exist"))
}

/// The configuration of a definition: everything but the instance count and versions.
/// A definition without what scaling and restarting change (instances, versions).
pub(crate) fn config_of(d: &AppDefinition) -> AppDefinition {
    let mut c = d.clone();
    c.instances = None;
    c.version = None;
    c.version_info = None;
    c
}

/// Where a task is, for the reconciler; `now` and `inactive_after_ms` decide when an
/// unreachable task stops counting.
fn phase_of(t: &TaskRecord, now: u64, inactive_after_ms: u64) -> Phase {
    match t.state {
        TaskState::Staging if t.agent.is_none() => Phase::Queued,
        TaskState::Staging | TaskState::Starting => Phase::Staging,
        TaskState::Running => Phase::Running,
        TaskState::Killing => Phase::Killing,
        _ => {
            let since = t.service.as_ref().and_then(|s| s.unreachable_since).unwrap_or(now);
            if now.saturating_sub(since) >= inactive_after_ms {
                Phase::Inactive
            } else {
                Phase::Unreachable
            }
        }
    }
}

impl Services {
    fn api_post_event(&mut self, core: &mut Core, id: &str, definition: Option<&AppDefinition>) {
        core.emit(Event::AppRequested { app: id.to_string(), definition: definition.cloned().map(Box::new) });
    }

    /// Loads apps and deployments; tasks were loaded by the caller.
    pub(super) fn recover_services(
        &mut self,
        core: &mut Core,
        snapshot: &corral_store::Snapshot,
    ) -> Result<(), MasterError> {
        for (id, stored) in snapshot.table(APPS) {
            let stored: StoredApp = decode(APPS, id, stored)?;
            let id = id.to_string();
            let app = App::from_definition(&stored.definition)
                .map_err(|e| MasterError::BadRequest(format!("stored app {id} no longer validates: {e}")))?;
            self.ensure_service_framework(core, &app.role);
            self.apps.insert(
                id,
                AppEntry {
                    definition: stored.definition,
                    app,
                    versions: stored.versions,
                    backoff: Backoff::default(),
                    offers: OfferStats::default(),
                    waiting_since: None,
                    last_failure: None,
                },
            );
        }
        let mut deployments: Vec<Deployment> =
            snapshot.table(DEPLOYMENTS).map(|(k, v)| decode(DEPLOYMENTS, k, v)).collect::<Result<_, _>>()?;
        deployments.sort_by(|a, b| a.version.cmp(&b.version));
        self.deployments = deployments;
        let live: Vec<(String, TaskId, String)> = core
            .all_tasks()
            .filter(|t| !t.state.is_terminal())
            .filter_map(|t| t.service.as_ref().map(|s| (s.app.clone(), t.id.clone(), t.role.clone())))
            .collect();
        for (app, id, role) in live {
            self.ensure_service_framework(core, &role);
            self.tasks_of.entry(app).or_default().insert(id);
        }
        // Every app gets a look on the first tick.
        self.dirty = self.apps.keys().cloned().collect();
        Ok(())
    }

    fn ensure_service_framework(&mut self, core: &mut Core, role: &str) {
        core.add_framework(FrameworkId::Services(Role::parse(role).expect("validated roles")));
    }

    // ---- changes: every one is a deployment ------------------------------------------------

    /// `POST /v2/apps`.
    pub fn create_app(
        &mut self,
        core: &mut Core,
        def: AppDefinition,
        now_ms: u64,
    ) -> Result<(AppDefinition, String), MasterError> {
        let mut d = def.normalized();
        if self.apps.contains_key(&d.id) {
            return Err(MasterError::Conflict {
                message: format!("An app with id [{}] already exists.", d.id),
                deployments: Vec::new(),
            });
        }
        let wall = core.wall(now_ms);
        d.version = Some(wall.clone());
        d.version_info = Some(VersionInfo { last_scaling_at: wall.clone(), last_config_change_at: wall.clone() });
        self.assign_service_ports(&mut d, None);
        let id = d.id.clone();
        let (deployment, _) = self.deploy(core, vec![(id.clone(), Some(d.clone()))], false, now_ms)?;
        self.api_post_event(core, &id, Some(&d));
        Ok((d, deployment))
    }

    /// `PUT`/`PATCH /v2/apps/{id}`: creates or changes an app. `patch` is the request body;
    /// with `partial` its fields replace the current definition's. A body of only a
    /// `version` restores that version. Returns (created, deployment id, version).
    pub fn update_app(
        &mut self,
        core: &mut Core,
        id: &str,
        patch: serde_json::Value,
        partial: bool,
        force: bool,
        now_ms: u64,
    ) -> Result<(bool, String, String), MasterError> {
        let (id, created, d) = self.updated_definition(core, id, patch, partial, now_ms)?;
        let (deployment, version) = self.deploy(core, vec![(id.clone(), Some(d.clone()))], force, now_ms)?;
        self.api_post_event(core, &id, Some(&d));
        Ok((created, deployment, version))
    }

    /// `PUT /v2/apps`: several apps changed (or created) in one deployment, so dependencies
    /// among them order its steps.
    pub fn update_apps(
        &mut self,
        core: &mut Core,
        items: Vec<serde_json::Value>,
        force: bool,
        now_ms: u64,
    ) -> Result<(String, String), MasterError> {
        self.change_apps(core, items, true, Vec::new(), force, now_ms)
    }

    /// Changes (`items`, merged into the current definitions when `partial`) and removals in
    /// one deployment: `PUT /v2/apps` and the group endpoints.
    pub fn change_apps(
        &mut self,
        core: &mut Core,
        items: Vec<serde_json::Value>,
        partial: bool,
        removals: Vec<AppId>,
        force: bool,
        now_ms: u64,
    ) -> Result<(String, String), MasterError> {
        let mut changes = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let id = item.get("id").and_then(serde_json::Value::as_str).unwrap_or_default().to_string();
            if id.is_empty() {
                return Err(invalid(&format!("/({i})/id"), "an app needs an id"));
            }
            let (id, _, d) = self.updated_definition(core, &id, item, partial, now_ms)?;
            changes.push((id, Some(d)));
        }
        changes.extend(removals.into_iter().filter(|id| self.apps.contains_key(id)).map(|id| (id, None)));
        if changes.is_empty() {
            return Err(MasterError::BadRequest("no apps given".into()));
        }
        let defs: Vec<(AppId, AppDefinition)> =
            changes.iter().filter_map(|(id, d)| d.clone().map(|d| (id.clone(), d))).collect();
        let result = self.deploy(core, changes, force, now_ms)?;
        for (id, d) in defs {
            self.api_post_event(core, &id, Some(&d));
        }
        Ok(result)
    }

    /// The definition a PUT or PATCH makes: merged (when `partial`), or restored from a
    /// version (a body of only `version`), normalized and versioned. Returns (id, created, it).
    fn updated_definition(
        &mut self,
        core: &mut Core,
        id: &str,
        patch: serde_json::Value,
        partial: bool,
        now_ms: u64,
    ) -> Result<(AppId, bool, AppDefinition), MasterError> {
        let id = corral_services::app::absolute_id(id);
        let wall = core.wall(now_ms);
        let current = self.apps.get(&id).map(|e| e.definition.clone());
        let body_keys: Vec<&str> = patch
            .as_object()
            .map(|o| o.keys().map(String::as_str).filter(|k| *k != "id").collect())
            .unwrap_or_default();
        let mut d = if body_keys == ["version"] {
            let v = patch["version"].as_str().unwrap_or_default().to_string();
            let current = current.as_ref().ok_or_else(|| not_found(&id))?;
            let mut old: AppDefinition = core
                .get(APP_VERSIONS, &format!("{id} {v}"))?
                .ok_or_else(|| MasterError::NotFound(format!("App '{id}' has no version {v}")))?;
            // Restoring is a change of configuration, made now.
            old.version_info = Some(VersionInfo {
                last_scaling_at: wall.clone(),
                last_config_change_at: if config_of(&old) == config_of(current) {
                    current.version_info.clone().map_or(wall.clone(), |v| v.last_config_change_at)
                } else {
                    wall.clone()
                },
            });
            old
        } else {
            let merged = match (&current, partial) {
                (Some(c), true) => c.merged(&patch),
                _ => corral_services::wire::from_value(patch),
            }
            .map_err(|e| invalid(&e.path, e.message))?;
            let mut d = merged.normalized();
            d.id = id.clone();
            let config_changed = current.as_ref().is_none_or(|c| config_of(c) != config_of(&d));
            let last_config = match (&current, config_changed) {
                (Some(c), false) => c.version_info.clone().map_or(wall.clone(), |v| v.last_config_change_at),
                _ => wall.clone(),
            };
            d.version_info = Some(VersionInfo { last_scaling_at: wall.clone(), last_config_change_at: last_config });
            d
        };
        d.id = id.clone();
        d.version = Some(wall);
        self.assign_service_ports(&mut d, current.as_ref());
        Ok((id, current.is_none(), d))
    }

    /// `DELETE /v2/apps/{id}`.
    pub fn delete_app(
        &mut self,
        core: &mut Core,
        id: &str,
        force: bool,
        now_ms: u64,
    ) -> Result<(String, String), MasterError> {
        let id = corral_services::app::absolute_id(id);
        if !self.apps.contains_key(&id) {
            return Err(not_found(&id));
        }
        let result = self.deploy(core, vec![(id.clone(), None)], force, now_ms)?;
        self.api_post_event(core, &id, None);
        Ok(result)
    }

    /// Kills tasks (`DELETE /v2/apps/{id}/tasks`, `POST /v2/tasks/delete`); with `scale`, each
    /// app's instance count goes down by as many of its tasks as were killed, as a deployment
    /// (the last one's id and version are returned).
    pub fn kill_app_tasks(
        &mut self,
        core: &mut Core,
        ids: &[String],
        scale: bool,
        now_ms: u64,
    ) -> Result<Option<(String, String)>, MasterError> {
        let mut per_app: BTreeMap<String, i64> = BTreeMap::new();
        if scale {
            for id in ids {
                if let Some(s) = core.task(id).and_then(|t| t.service.as_ref()) {
                    *per_app.entry(s.app.clone()).or_default() += 1;
                }
            }
        }
        for id in ids {
            self.kill(core, id, now_ms)?;
        }
        let mut last = None;
        for (app, n) in per_app {
            let current = self.apps.get(&app).and_then(|e| e.definition.instances).unwrap_or(0);
            let (_, d, v) = self.update_app(
                core,
                &app,
                serde_json::json!({"instances": (current - n).max(0)}),
                true,
                true,
                now_ms,
            )?;
            last = Some((d, v));
        }
        Ok(last)
    }

    /// `POST /v2/apps/{id}/restart`: a new version with the same configuration, rolled out.
    pub fn restart_app(
        &mut self,
        core: &mut Core,
        id: &str,
        force: bool,
        now_ms: u64,
    ) -> Result<(String, String), MasterError> {
        let id = corral_services::app::absolute_id(id);
        let mut d = self.apps.get(&id).ok_or_else(|| not_found(&id))?.definition.clone();
        let wall = core.wall(now_ms);
        d.version = Some(wall.clone());
        d.version_info = Some(VersionInfo { last_scaling_at: wall.clone(), last_config_change_at: wall });
        let result = self.deploy(core, vec![(id.clone(), Some(d.clone()))], force, now_ms)?;
        self.api_post_event(core, &id, Some(&d));
        Ok(result)
    }

    /// Applies changes (a new definition, or `None` to remove) as one deployment.
    fn deploy(
        &mut self,
        core: &mut Core,
        changes: Vec<(AppId, Option<AppDefinition>)>,
        force: bool,
        now_ms: u64,
    ) -> Result<(String, String), MasterError> {
        let ids: Vec<&AppId> = changes.iter().map(|(id, _)| id).collect();
        let locking: Vec<String> = self
            .deployments
            .iter()
            .filter(|d| d.affected_apps.iter().any(|a| ids.contains(&a)))
            .map(|d| d.id.clone())
            .collect();
        if !locking.is_empty() && !force {
            return Err(MasterError::Conflict {
                message: format!(
                    "App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/{}'.",
                    locking[0]
                ),
                deployments: locking,
            });
        }
        // Validate everything before changing anything.
        let mut apps: Vec<(AppId, Option<(AppDefinition, App)>)> = Vec::new();
        for (id, d) in &changes {
            let parsed = match d {
                Some(d) => Some((d.clone(), App::from_definition(d).map_err(|e| MasterError::Invalid(e.0))?)),
                None => None,
            };
            apps.push((id.clone(), parsed));
        }
        for (_, a) in &apps {
            let Some((_, app)) = a else { continue };
            for (j, dep) in app.dependencies.iter().enumerate() {
                let known = self.apps.contains_key(dep) || apps.iter().any(|(id, a)| id == dep && a.is_some());
                if !known {
                    return Err(invalid(&format!("/dependencies({j})"), format!("dependency {dep} does not exist")));
                }
            }
        }
        for id in &locking {
            if let Some(d) = self.deployments.iter().find(|d| &d.id == id) {
                let deployment = Arc::new(d.clone());
                core.emit(Event::DeploymentFailed { deployment, reason: "superseded by a forced change" });
            }
            self.deployments.retain(|d| &d.id != id);
            core.delete(DEPLOYMENTS, id);
        }
        let wall = core.wall(now_ms);
        let version = apps
            .iter()
            .find_map(|(_, a)| a.as_ref().and_then(|(d, _)| d.version.clone()))
            .unwrap_or_else(|| wall.clone());
        let olds: BTreeMap<AppId, Option<App>> =
            apps.iter().map(|(id, _)| (id.clone(), self.apps.get(id).map(|e| e.app.clone()))).collect();
        let plan_changes: Vec<plan::Change> = apps
            .iter()
            .map(|(id, a)| plan::Change { id: id.clone(), from: olds[id].as_ref(), to: a.as_ref().map(|(_, app)| app) })
            .filter(|c| c.from != c.to || c.to.is_some_and(|t| c.from.is_some_and(|f| f.version != t.version)))
            .collect();
        let steps = plan::steps(&plan_changes);
        let deployment = Deployment {
            id: core.ids().uuid(),
            version: version.clone(),
            affected_apps: plan_changes.iter().map(|c| c.id.clone()).collect(),
            steps,
            current_step: 0,
            original: apps
                .iter()
                .map(|(id, _)| (id.clone(), self.apps.get(id).map(|e| e.definition.clone())))
                .collect(),
        };
        for (id, a) in apps {
            match a {
                Some((d, app)) => {
                    let v = d.version.clone().unwrap_or_default();
                    core.put(APP_VERSIONS, &format!("{id} {v}"), &d);
                    let (mut versions, config_changed, old_backoff) = match self.apps.get(&id) {
                        Some(e) => (e.versions.clone(), e.app.config_version != app.config_version, e.backoff),
                        None => (Vec::new(), true, Backoff::default()),
                    };
                    versions.push(v);
                    if versions.len() > VERSIONS_KEPT {
                        let gone = versions.remove(0);
                        core.delete(APP_VERSIONS, &format!("{id} {gone}"));
                    }
                    core.put(APPS, &id, &StoredApp { definition: d.clone(), versions: versions.clone() });
                    self.ensure_service_framework(core, &app.role);
                    let entry = self.apps.entry(id.clone()).or_insert_with(|| AppEntry {
                        definition: d.clone(),
                        app: app.clone(),
                        versions: Vec::new(),
                        backoff: Backoff::default(),
                        offers: OfferStats::default(),
                        waiting_since: None,
                        last_failure: None,
                    });
                    entry.definition = d;
                    entry.app = app;
                    entry.versions = versions;
                    // A new configuration starts without the old one's launch delay.
                    entry.backoff = if config_changed { Backoff::default() } else { old_backoff };
                }
                None => {
                    if let Some(e) = self.apps.remove(&id) {
                        for v in e.versions {
                            core.delete(APP_VERSIONS, &format!("{id} {v}"));
                        }
                    }
                    core.delete(APPS, &id);
                    core.emit(Event::AppTerminated { app: id.clone() });
                }
            }
        }
        let id = deployment.id.clone();
        core.put(DEPLOYMENTS, &id, &deployment);
        core.emit(Event::DeploymentStarted { deployment: Arc::new(deployment.clone()) });
        tracing::info!(deployment = %id, apps = ?deployment.affected_apps, steps = deployment.steps.len(), "deployment started");
        let affected: Vec<AppId> =
            deployment.affected_apps.iter().filter(|a| self.apps.contains_key(*a)).cloned().collect();
        self.deployments.push(deployment);
        self.reconcile_apps(core, affected, now_ms)?;
        Ok((id, version))
    }

    /// `DELETE /v2/deployments/{id}`: with `force`, stops it where it is; without, rolls its
    /// apps back to where they were (a new deployment, whose id and version are returned).
    pub fn cancel_deployment(
        &mut self,
        core: &mut Core,
        id: &str,
        force: bool,
        now_ms: u64,
    ) -> Result<Option<(String, String)>, MasterError> {
        let d = self
            .deployments
            .iter()
            .find(|d| d.id == id)
            .cloned()
            .ok_or_else(|| MasterError::NotFound(format!("DeploymentPlan {id} does not exist")))?;
        if force {
            core.emit(Event::DeploymentFailed { deployment: Arc::new(d.clone()), reason: "cancelled" });
            self.deployments.retain(|x| x.id != id);
            core.delete(DEPLOYMENTS, id);
            return Ok(None);
        }
        let wall = core.wall(now_ms);
        let changes: Vec<(AppId, Option<AppDefinition>)> = d
            .original
            .iter()
            .map(|(app, def)| {
                let def = def.clone().map(|mut x| {
                    x.version = Some(wall.clone());
                    x
                });
                (app.clone(), def)
            })
            .collect();
        self.deploy(core, changes, true, now_ms).map(Some)
    }

    /// Picks service ports for ports given as 0: the old definition's, else free ones.
    fn assign_service_ports(&self, d: &mut AppDefinition, old: Option<&AppDefinition>) {
        let mut used: BTreeSet<i64> =
            self.apps.values().filter(|e| e.definition.id != d.id).flat_map(|e| service_ports(&e.definition)).collect();
        let previous = old.map(service_ports).unwrap_or_default();
        let next = |i: usize, used: &mut BTreeSet<i64>| -> i64 {
            if let Some(p) = previous.get(i).filter(|p| **p != 0 && !used.contains(p)) {
                used.insert(*p);
                return *p;
            }
            let p = SERVICE_PORTS.clone().find(|p| !used.contains(p)).unwrap_or(0);
            used.insert(p);
            p
        };
        for p in d.port_definitions.iter().flatten() {
            if p.port != 0 {
                used.insert(p.port);
            }
        }
        let mut i = 0;
        if d.network() == "HOST" {
            for p in d.port_definitions.iter_mut().flatten() {
                if p.port == 0 {
                    p.port = next(i, &mut used);
                }
                i += 1;
            }
            d.ports = Some(d.port_definitions.iter().flatten().map(|p| p.port).collect());
        } else if let Some(c) = &mut d.container {
            for m in c.port_mappings.iter_mut().flatten() {
                if m.service_port.unwrap_or(0) == 0 {
                    m.service_port = Some(next(i, &mut used));
                }
                i += 1;
            }
        }
    }

    // ---- the reconciler loop --------------------------------------------------------------

    /// The apps that wait for an earlier step of their deployment.
    fn held_apps(&self) -> BTreeSet<&str> {
        let mut held = BTreeSet::new();
        for d in &self.deployments {
            let mut seen: BTreeSet<&str> = BTreeSet::new();
            for (i, step) in d.steps.iter().enumerate() {
                for (_, app) in step {
                    if seen.insert(app) && i > d.current_step {
                        held.insert(app.as_str());
                    }
                }
            }
        }
        held
    }

    fn task_views(&self, core: &Core, app: &str) -> Vec<TaskView> {
        let Some(ids) = self.tasks_of.get(app) else { return Vec::new() };
        let now = core.wall_ms(core.now());
        let inactive_after = self.apps.get(app).map_or(0, |e| e.app.unreachable_inactive_ms);
        ids.iter()
            .filter_map(|id| core.task(id))
            .filter_map(|t| {
                let s = t.service.as_ref()?;
                Some(TaskView {
                    id: t.id.to_string(),
                    config_version: s.config_version.clone(),
                    phase: phase_of(t, now, inactive_after),
                    healthy: s.health.as_ref().map(|h| h.alive),
                    ready: s.ready,
                    seq: t.seq,
                })
            })
            .collect()
    }

    /// The periodic pass: brings the apps that may need work toward their definitions (queues
    /// launches, kills extra or outdated tasks) and moves deployments on.
    pub(super) fn reconcile_services(&mut self, core: &mut Core, now_ms: u64) -> Result<(), MasterError> {
        let mut ids: BTreeSet<AppId> = self.dirty.iter().cloned().collect();
        ids.extend(self.deployments.iter().flat_map(|d| d.affected_apps.iter().cloned()));
        self.reconcile_apps(core, ids.into_iter().collect(), now_ms)
    }

    /// Reconciles some apps (a change touches only its own), then moves deployments on.
    fn reconcile_apps(&mut self, core: &mut Core, ids: Vec<AppId>, now_ms: u64) -> Result<(), MasterError> {
        let held_apps: BTreeSet<String> = self.held_apps().into_iter().map(str::to_string).collect();
        let mut converged: BTreeSet<AppId> = BTreeSet::new();
        for id in ids {
            if !self.apps.contains_key(&id) {
                self.dirty.remove(&id);
                continue;
            }
            let views = self.task_views(core, &id);
            let held = held_apps.contains(&id);
            let entry = &self.apps[&id];
            let p = plan::reconcile(&entry.app, &views, held);
            // Held apps are asked again unheld, to know whether their step is done.
            let done = if held { plan::reconcile(&entry.app, &views, false).converged } else { p.converged };
            if done {
                converged.insert(id.clone());
            }
            let settled = done && p.kill.is_empty() && p.launch == 0 && views.iter().all(|v| v.phase == Phase::Running);
            if settled {
                self.dirty.remove(&id);
            } else {
                self.dirty.insert(id.clone());
            }
            for k in &p.kill {
                tracing::info!(app = %id, task = %k.task, reason = k.reason, "killing a task");
                self.kill_service_task(core, &k.task, true, Some(k.reason))?;
            }
            let waiting = views.iter().any(|v| v.phase == Phase::Queued) || p.launch > 0;
            let wall = core.wall(now_ms);
            let entry = self.apps.get_mut(&id).expect("listed");
            if !waiting {
                entry.waiting_since = None;
            } else if entry.waiting_since.is_none() {
                entry.waiting_since = Some(wall);
            }
            if p.launch > 0 && !entry.backoff.blocks(now_ms) {
                self.queue_instances(core, &id, p.launch, now_ms)?;
            }
        }
        // Tasks of removed apps.
        let orphans: Vec<TaskId> = self
            .tasks_of
            .iter()
            .filter(|(app, _)| !self.apps.contains_key(*app))
            .flat_map(|(_, ids)| ids.iter().cloned())
            .collect();
        for t in orphans {
            if core.task(&t).is_some_and(|t| t.state != TaskState::Killing) {
                self.kill_service_task(core, &t, true, Some("its app was removed"))?;
            }
        }
        self.advance_deployments(core, &converged)?;
        self.sync_service_demand(core);
        Ok(())
    }

    /// Revives the services framework of each role with queued instances, suppresses the rest.
    fn sync_service_demand(&mut self, core: &mut Core) {
        // An app with queued instances is never settled, so only unsettled apps are looked at.
        let wanting: BTreeSet<String> = self
            .dirty
            .iter()
            .filter(|id| self.has_queued(core, id))
            .filter_map(|id| self.apps.get(id))
            .map(|e| e.app.role.clone())
            .collect();
        for role in wanting.difference(&self.wanting) {
            core.revive(&framework_of(role));
        }
        for role in self.wanting.difference(&wanting) {
            core.suppress(&framework_of(role));
        }
        self.wanting = wanting;
    }

    fn advance_deployments(&mut self, core: &mut Core, converged: &BTreeSet<AppId>) -> Result<(), MasterError> {
        let mut done = Vec::new();
        for i in 0..self.deployments.len() {
            let mut changed = false;
            loop {
                let d = &self.deployments[i];
                let Some(step) = d.steps.get(d.current_step) else { break };
                let finished = step.iter().all(|(action, app)| match action {
                    Action::StopApplication => {
                        !self.apps.contains_key(app) && self.tasks_of.get(app).is_none_or(|t| t.is_empty())
                    }
                    _ => converged.contains(app) || !self.apps.contains_key(app),
                });
                if !finished {
                    break;
                }
                let (deployment, step) = (Arc::new(d.clone()), d.current_step);
                core.emit(Event::DeploymentStepDone { deployment, step });
                self.deployments[i].current_step += 1;
                changed = true;
            }
            let d = &self.deployments[i];
            if d.current_step >= d.steps.len() {
                done.push(d.id.clone());
            } else if changed {
                core.put(DEPLOYMENTS, &d.id, d);
            }
        }
        for id in done {
            tracing::info!(deployment = %id, "deployment finished");
            if let Some(d) = self.deployments.iter().find(|d| d.id == id) {
                let deployment = Arc::new(d.clone());
                core.emit(Event::DeploymentSucceeded { deployment });
            }
            self.deployments.retain(|d| d.id != id);
            core.delete(DEPLOYMENTS, &id);
        }
        Ok(())
    }

    /// Adds `count` tasks of the app to the launch queue.
    fn queue_instances(&mut self, core: &mut Core, app_id: &str, count: u32, now_ms: u64) -> Result<(), MasterError> {
        let entry = &self.apps[app_id];
        let app = entry.app.clone();
        let service_ports: Vec<u64> = service_ports(&entry.definition).into_iter().map(|p| p as u64).collect();
        let prefix = app_id.trim_start_matches('/').replace('/', "_");
        let wall = core.wall(now_ms);
        let mut records = Vec::new();
        for _ in 0..count {
            let t = TaskRecord {
                id: format!("{prefix}.{}", core.ids().uuid()).into(),
                name: prefix.clone(),
                role: app.role.clone(),
                agent: None,
                state: TaskState::Staging,
                resources: app.resources_spec(),
                cpus: app.cpus,
                mem_mb: app.mem.ceil() as u64,
                disk_mb: app.disk.ceil() as u64,
                image: app.image.clone(),
                command: app.argv(),
                exit_code: None,
                message: None,
                pull: wire::Pull::Missing,
                seq: 0,
                framework: Some(FrameworkKind::Services),
                service: Some(ServiceTask {
                    app: app_id.to_string(),
                    version: app.version.clone(),
                    config_version: app.config_version.clone(),
                    service_ports: service_ports.clone(),
                    staged_at: Some(wall.clone()),
                    ..ServiceTask::default()
                }),
                kill_sent_ms: None,
                placed_ms: None,
            };
            records.push(t);
        }
        for t in records {
            self.tasks_of.entry(app_id.to_string()).or_default().insert(t.id.clone());
            core.add_task(t);
        }
        core.revive(&framework_of(&app.role));
        Ok(())
    }

    /// Kills a service task; `intended` kills (scale-down, upgrade, user) are not failures.
    pub(super) fn kill_service_task(
        &mut self,
        core: &mut Core,
        id: &str,
        intended: bool,
        reason: Option<&str>,
    ) -> Result<(), MasterError> {
        let Some(t) = core.task(id) else { return Ok(()) };
        if t.state.is_terminal() {
            return Ok(());
        }
        let (state, placed) = (t.state, t.agent.is_some());
        core.update_task(id, |t| {
            if let Some(s) = &mut t.service {
                s.kill_intended = intended;
                s.kill_reason = reason.map(str::to_string);
            }
        });
        if !placed {
            let message = reason.map_or("killed before it was placed".to_string(), |r| format!("{r}; never placed"));
            core.set_state(id, TaskState::Killed, None, Some(message))?;
            return self.service_task_changed(core, id);
        }
        let next = transition(state, TaskEvent::KillRequested).unwrap_or(TaskState::Killing);
        core.set_state(id, next, None, reason.map(str::to_string))?;
        self.service_task_changed(core, id)?;
        core.kill(id);
        Ok(())
    }

    /// After a service task's state changed: its start time, failures, and its end.
    pub(super) fn service_task_changed(&mut self, core: &mut Core, id: &str) -> Result<(), MasterError> {
        let Some(t) = core.task(id).cloned() else { return Ok(()) };
        let Some(s) = t.service.clone() else { return Ok(()) };
        self.dirty.insert(s.app.clone());
        let now_ms = core.now();
        let ip = t.agent.as_ref().and_then(|a| core.agent(a)).and_then(|a| super::marathon::host_of(&a.record.address));
        core.emit(Event::TaskStatus {
            task: t.id.clone(),
            app: s.app.clone(),
            agent: t.agent.clone(),
            agent_ip: ip,
            state: t.state,
            message: t.message.clone().unwrap_or_default(),
            host: s.host.clone().unwrap_or_default(),
            ports: s.ports.clone(),
            version: s.version.clone(),
        });
        if t.state == TaskState::Running && s.started_at.is_none() {
            let wall = core.wall(now_ms);
            core.update_task(id, |t| {
                if let Some(svc) = t.service.as_mut() {
                    svc.started_at = Some(wall);
                }
            });
        }
        // Unreachable: note since when. Back: if it was replaced meanwhile, it is one too many
        // (Marathon expunges it); the replacement stays.
        let now = core.wall_ms(now_ms);
        let inactive_after = self.apps.get(&s.app).map_or(0, |e| e.app.unreachable_inactive_ms);
        match (t.state, s.unreachable_since) {
            (TaskState::Unreachable, None) => {
                core.update_task(id, |t| {
                    if let Some(svc) = t.service.as_mut() {
                        svc.unreachable_since = Some(now);
                    }
                });
            }
            (TaskState::Running, Some(since)) => {
                core.update_task(id, |t| {
                    if let Some(svc) = t.service.as_mut() {
                        svc.unreachable_since = None;
                    }
                });
                if now.saturating_sub(since) >= inactive_after {
                    tracing::info!(task = %id, app = %s.app, "a replaced task came back: killing it");
                    self.kill_service_task(core, id, true, Some("came back after it was replaced"))?;
                }
            }
            _ => {}
        }
        if !t.state.is_terminal() {
            return Ok(());
        }
        if let Some(set) = self.tasks_of.get_mut(&s.app) {
            set.remove(id);
            if set.is_empty() {
                self.tasks_of.remove(&s.app);
            }
        }
        let failed = !s.kill_intended && t.agent.is_some();
        // The launch delay is for apps that crash. A task lost with its agent (or never
        // started because the agent restarted) says nothing about the app: it is replaced at
        // once, and the loss is still the app's lastTaskFailure.
        let app_failed = failed && !matches!(t.state, TaskState::Lost | TaskState::Gone);
        if let Some(entry) = self.apps.get_mut(&s.app) {
            if app_failed {
                entry.backoff.failed(&entry.app, now_ms);
            }
            if failed {
                entry.last_failure = Some(LastFailure {
                    task_id: t.id.clone(),
                    host: s.host.clone().unwrap_or_default(),
                    agent: t.agent.as_deref().unwrap_or_default().to_string(),
                    state: t.state,
                    message: s.kill_reason.clone().or_else(|| t.message.clone()).unwrap_or_default(),
                    at: core.wall(now_ms),
                    version: s.version.clone(),
                });
                tracing::info!(app = %s.app, task = %t.id, state = t.state.as_str(), delay_ms = entry.backoff.delay_ms, "a task of the app ended unasked");
            }
        }
        // Ended tasks of services are not kept: the app's lastTaskFailure remembers failures.
        core.remove_task(id);
        Ok(())
    }

    /// The agent says a task passed its readiness checks.
    pub(super) fn service_ready(&mut self, core: &mut Core, id: &str, now_ms: u64) -> Result<(), MasterError> {
        let Some(app) = core.task(id).and_then(|t| t.service.as_ref()).map(|s| s.app.clone()) else { return Ok(()) };
        core.update_task(id, |t| {
            if let Some(s) = t.service.as_mut() {
                s.ready = true;
            }
        });
        self.dirty.insert(app);
        self.reconcile_services(core, now_ms)
    }

    /// A health check result from the agent.
    pub(super) fn service_health(
        &mut self,
        core: &mut Core,
        id: &str,
        healthy: bool,
        now_ms: u64,
    ) -> Result<(), MasterError> {
        let wall = core.wall(now_ms);
        let Some(mut t) = core.task(id).cloned() else { return Ok(()) };
        let Some(s) = &mut t.service else { return Ok(()) };
        let h = s.health.get_or_insert_with(Health::default);
        let flipped = h.alive != healthy || h.first_success.is_none() && h.last_failure.is_none();
        if healthy {
            h.alive = true;
            h.consecutive_failures = 0;
            h.first_success.get_or_insert_with(|| wall.clone());
            h.last_success = Some(wall);
        } else {
            h.alive = false;
            h.consecutive_failures += 1;
            h.last_failure = Some(wall);
        }
        let failures = h.consecutive_failures;
        let app = s.app.clone();
        let version = s.version.clone();
        let service = t.service.clone();
        core.update_task(id, |x| x.service = service);
        if flipped {
            core.emit(Event::HealthChanged {
                app: app.clone(),
                task: id.into(),
                version: version.clone(),
                alive: healthy,
            });
        }
        if !healthy {
            core.emit(Event::HealthCheckFailed { app: app.clone(), task: id.into() });
        }
        let max = self.apps.get(&app).and_then(|e| e.app.health_checks.first()).map(|h| h.max_consecutive_failures);
        if let Some(max) = max.filter(|m| *m > 0 && failures >= *m) {
            tracing::warn!(app = %app, task = %id, failures, max, "task is unhealthy: killing it");
            let host = t.service.as_ref().and_then(|s| s.host.clone()).unwrap_or_default();
            core.emit(Event::UnhealthyKilled {
                app: app.clone(),
                task: id.into(),
                version: version.clone(),
                host,
                agent: t.agent.clone(),
            });
            self.kill_service_task(core, id, false, Some("unhealthy: failed its health check"))?;
        }
        self.dirty.insert(app);
        self.reconcile_services(core, now_ms)
    }

    // ---- offers ---------------------------------------------------------------------------

    /// Uses an offer for as many queued instances as fit; records why the rest did not.
    fn use_offer(&mut self, core: &mut Core, o: Offer, now_ms: u64) {
        let Some(agent) = core.agent(&o.agent) else {
            core.decline(o.id, DECLINE_MS, now_ms);
            return;
        };
        let hostname = agent.record.hostname.clone();
        let attributes = agent.attributes.clone();
        let role = o.role.to_string();
        let wall = core.wall(now_ms);
        let mut remaining = o.resources.clone();
        let mut ops = Vec::new();
        let mut placements = Vec::new();
        let waiting: Vec<AppId> = self
            .apps
            .iter()
            .filter(|(_, e)| e.app.role == role || (role == "*" && e.app.role == "*"))
            .map(|(id, _)| id.clone())
            .filter(|id| self.has_queued(core, id))
            .collect();
        for app_id in waiting {
            let queued: Vec<TaskId> = self.queued_of(core, &app_id).collect();
            // Instances placed with this offer, so the next one's constraints see them.
            let mut placed_here = 0;
            for task_id in queued {
                let entry = &self.apps[&app_id];
                let mut placed_attrs: Vec<(String, Attributes)> = self
                    .tasks_of
                    .get(&app_id)
                    .into_iter()
                    .flatten()
                    .filter_map(|id| core.task(id))
                    .filter_map(|t| t.agent.as_ref())
                    .filter_map(|a| core.agent(a))
                    .map(|a| (a.record.hostname.clone(), a.attributes.clone()))
                    .collect();
                placed_attrs.extend(std::iter::repeat_n((hostname.clone(), attributes.clone()), placed_here));
                let placed: Vec<AgentView> =
                    placed_attrs.iter().map(|(h, a)| AgentView { hostname: h, attributes: a }).collect();
                let candidate = AgentView { hostname: &hostname, attributes: &attributes };
                let known = |field: &str| -> Vec<String> {
                    let mut v: Vec<String> = core
                        .all_agents()
                        .filter(|a| a.reachable)
                        .filter_map(|a| {
                            if field == "hostname" {
                                Some(a.record.hostname.clone())
                            } else {
                                a.attributes.get(field).cloned()
                            }
                        })
                        .collect();
                    v.sort();
                    v.dedup();
                    v
                };
                let result = plan::fit(&entry.app, &remaining, &candidate, &placed, &known);
                let entry = self.apps.get_mut(&app_id).expect("listed");
                entry.offers.processed += 1;
                match result {
                    Ok(fit) => {
                        entry.offers.last_used_at = Some(wall.clone());
                        remaining = remaining.minus(&fit.resources).expect("fit takes from the offer");
                        ops.push(Operation::Launch(fit.resources.clone()));
                        placed_here += 1;
                        let Some(mut task) = core.task(&task_id).cloned() else { continue };
                        task.resources = fit.resources.to_string();
                        let s = task.service.as_mut().expect("service tasks");
                        s.host = Some(hostname.clone());
                        s.ports = fit.ports.clone();
                        let launch = launch_of(&entry.app, &task, &hostname);
                        placements.push(Placement { task, launch });
                    }
                    Err(reasons) => {
                        record_unused(entry, &o.agent, &hostname, &o.resources, &reasons, &wall);
                        break;
                    }
                }
            }
        }
        if ops.is_empty() {
            core.decline(o.id, DECLINE_MS, now_ms);
            return;
        }
        if let Err(e) = core.accept(&o, &ops, placements, DECLINE_MS, now_ms) {
            tracing::error!(error = %e, "accepting an offer failed");
        }
    }

    /// Why a role gets no offers, when its quota is the reason.
    pub(super) fn quota_note(&self, core: &Core, role: &str, one_instance: &str) -> Option<String> {
        let need = Resources::parse(one_instance).ok()?;
        let summary = core.role_summary(role)?;
        let quota = summary.quota?;
        let after = summary.allocated.unreserved_view().plus(&need);
        (!quota.unreserved_view().contains(&after)).then(|| {
            format!(
                "role {role} is at its quota {quota} (allocated {}, one more instance needs {need})",
                summary.allocated
            )
        })
    }

    /// The app's instances waiting for an offer, in no order.
    fn queued_tasks<'a>(&'a self, core: &'a Core, app: &str) -> impl Iterator<Item = &'a TaskRecord> + 'a {
        self.tasks_of
            .get(app)
            .into_iter()
            .flatten()
            .filter_map(|id| core.task(id))
            .filter(|t| t.agent.is_none() && t.state == TaskState::Staging)
    }

    fn has_queued(&self, core: &Core, app: &str) -> bool {
        self.queued_tasks(core, app).next().is_some()
    }

    /// The app's instances waiting for an offer, oldest first.
    fn queued_of<'a>(&'a self, core: &'a Core, app: &str) -> impl Iterator<Item = TaskId> + 'a {
        let mut ids: Vec<&TaskRecord> = self.queued_tasks(core, app).collect();
        ids.sort_by_key(|t| t.seq);
        ids.into_iter().map(|t| t.id.clone())
    }
}

impl Framework for Services {
    fn offer(&mut self, core: &mut Core, offer: Offer, now_ms: u64) {
        self.use_offer(core, offer, now_ms);
    }

    fn notice(&mut self, core: &mut Core, notice: Notice, now_ms: u64) -> Result<(), MasterError> {
        match notice.kind {
            NoticeKind::State => self.service_task_changed(core, &notice.task),
            NoticeKind::Health(healthy) => self.service_health(core, &notice.task, healthy, now_ms),
            NoticeKind::Ready => self.service_ready(core, &notice.task, now_ms),
        }
    }

    fn tick(&mut self, core: &mut Core, now_ms: u64) -> Result<(), MasterError> {
        self.reconcile_services(core, now_ms)
    }

    fn kill(&mut self, core: &mut Core, task: &str, _now_ms: u64) -> Result<(), MasterError> {
        self.kill_service_task(core, task, true, None)
    }
}

fn record_unused(
    entry: &mut AppEntry,
    agent: &str,
    hostname: &str,
    offered: &Resources,
    reasons: &[Reason],
    wall: &str,
) {
    entry.offers.unused += 1;
    entry.offers.last_unused_at = Some(wall.to_string());
    let first = REASONS.iter().find(|r| reasons.iter().any(|x| x.name() == **r)).copied().unwrap_or("UnfulfilledRole");
    *entry.offers.declined_by.entry(first).or_default() += 1;
    let app = &entry.app;
    entry.offers.last_unused.push_back(UnusedOffer {
        agent: agent.to_string(),
        hostname: hostname.to_string(),
        resources: offered.to_string(),
        reasons: reasons.iter().map(|r| r.describe(app)).collect(),
        at: wall.to_string(),
    });
    while entry.offers.last_unused.len() > UNUSED_OFFERS_KEPT {
        entry.offers.last_unused.pop_front();
    }
}

/// The service ports of a definition, in port order.
pub fn service_ports(d: &AppDefinition) -> Vec<i64> {
    if d.network() == "HOST" {
        d.port_definitions.iter().flatten().map(|p| p.port).collect()
    } else {
        d.container.iter().flat_map(|c| c.port_mappings.iter().flatten()).map(|m| m.service_port.unwrap_or(0)).collect()
    }
}

/// What the agent is told to run for a placed task.
fn launch_of(app: &App, t: &TaskRecord, hostname: &str) -> wire::Launch {
    let s = t.service.as_ref().expect("service tasks");
    let mut env = app.env.clone();
    env.insert("HOST".into(), hostname.to_string());
    env.insert("MARATHON_APP_ID".into(), app.id.clone());
    env.insert("MARATHON_APP_VERSION".into(), app.version.clone());
    env.insert("MESOS_TASK_ID".into(), t.id.to_string());
    if let Some(i) = &app.image {
        env.insert("MARATHON_APP_DOCKER_IMAGE".into(), i.clone());
    }
    for (i, p) in s.ports.iter().enumerate() {
        env.insert(format!("PORT{i}"), p.to_string());
        if let Some(name) = app.ports.get(i).and_then(|p| p.name.as_ref()) {
            env.insert(format!("PORT_{}", name.to_uppercase().replace('-', "_")), p.to_string());
        }
    }
    if let Some(p) = s.ports.first() {
        env.insert("PORT".into(), p.to_string());
    }
    let port_forwards: Vec<wire::PortForward> = if app.network == Network::Bridge {
        s.ports
            .iter()
            .zip(&app.ports)
            .map(|(host, p)| {
                let container = if p.container_port == 0 { *host } else { p.container_port };
                env.insert(format!("PORT_{container}"), host.to_string());
                wire::PortForward { host_port: *host as u16, container_port: container as u16 }
            })
            .collect()
    } else {
        Vec::new()
    };
    if !s.ports.is_empty() {
        env.insert("PORTS".into(), s.ports.iter().map(u64::to_string).collect::<Vec<_>>().join(","));
    }
    let health_checks = app
        .health_checks
        .iter()
        .map(|h| {
            let port_of = |i: usize| s.ports.get(i).copied().unwrap_or(0) as u16;
            let (kind, port, path, command) = match &h.probe {
                Probe::Http { path, port_index, https } => {
                    (if *https { "https" } else { "http" }, port_of(*port_index), path.clone(), String::new())
                }
                Probe::Tcp { port_index } => ("tcp", port_of(*port_index), String::new(), String::new()),
                Probe::Command(c) => ("command", 0, String::new(), c.clone()),
            };
            wire::HealthCheck {
                kind: kind.into(),
                port,
                path,
                command,
                grace_period_ms: h.grace_period_ms,
                interval_ms: h.interval_ms,
                timeout_ms: h.timeout_ms,
                statuses: Vec::new(),
            }
        })
        .collect();
    let readiness_checks = app
        .readiness_checks
        .iter()
        .map(|r| wire::HealthCheck {
            kind: "http".into(),
            port: s.ports.get(r.port_index).copied().unwrap_or(0) as u16,
            path: r.path.clone(),
            command: String::new(),
            grace_period_ms: 0,
            interval_ms: r.interval_ms,
            timeout_ms: r.timeout_ms,
            statuses: r.ready_statuses.clone(),
        })
        .collect();
    wire::Launch {
        env,
        pull: if app.force_pull { wire::Pull::Always } else { wire::Pull::Missing },
        disk_mb: t.disk_mb,
        fetch: app
            .fetch
            .iter()
            .map(|f| wire::Fetch {
                uri: f.uri.clone(),
                extract: f.unpacks(),
                executable: f.executable,
                dest_path: f.dest_path.clone(),
            })
            .collect(),
        user: match &app.user {
            Some(corral_services::app::User::Ids(u, g)) => Some((*u, *g)),
            _ => None,
        },
        user_name: match &app.user {
            Some(corral_services::app::User::Name(n)) => Some(n.clone()),
            _ => None,
        },
        volumes: app
            .volumes
            .iter()
            .map(|v| wire::VolumeMount {
                host: v.host_path.clone(),
                container: v.container_path.clone(),
                read_only: v.read_only,
            })
            .collect(),
        host_network: app.network == Network::Host,
        kill_grace_secs: app.kill_grace_secs,
        health_checks,
        readiness_checks,
        port_forwards,
        ..super::core::launch_of(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_marathons() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn uuids_look_like_uuids() {
        let mut ids = super::super::controller::Ids::seeded(7);
        let u = ids.uuid();
        let parts: Vec<usize> = u.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12], "{u}");
        assert_ne!(ids.uuid(), ids.uuid());
        assert_eq!(super::super::controller::Ids::seeded(7).uuid(), u, "the same seed gives the same ids");
    }
}
