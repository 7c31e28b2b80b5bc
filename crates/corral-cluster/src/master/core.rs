//! The cluster's core: agents, tasks, roles and the allocator, and the calls frameworks make
//! on it. The core knows no framework's business: it offers resources, places the tasks a
//! framework accepts offers for, delivers kills, follows what agents report, and tells each
//! task's framework what happened to it ([`Notice`]). Its fields are private: frameworks (in
//! sibling modules) reach it only through the calls below, the interface an external framework
//! will get over the network.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use corral_alloc::allocator::{OfferId, RoleSummary};
use corral_alloc::attributes::{self, Attributes};
use corral_alloc::{AllocError, Allocator, Offer, Operation, Resources, Role, RoleConfig};
use serde::{Deserialize, Serialize};

use serde::de::DeserializeOwned;

use super::events::{Event, Stamped};
use super::framework::{Notice, NoticeKind};
use crate::store::{decode, Corrupt, ReadError, StoreError, Writes, AGENTS, ROLES, TASKS};
use crate::task::{transition, TaskEvent, TaskState};
use crate::wire::{self, AgentId, TaskId};

/// Why the master refused a request; mapped to an HTTP status in one place (`api.rs`).
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// A definition that fails validation (Marathon's 422).
    #[error("{}", corral_services::Invalid(.0.clone()))]
    Invalid(Vec<corral_services::Violation>),
    /// A duplicate, or an app locked by a deployment (409).
    #[error("{message}")]
    Conflict { message: String, deployments: Vec<String> },
    /// The caller may not do this (403): what only an admin may run.
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Corrupt(#[from] Corrupt),
    /// A bug: the command panicked. Nothing it did was kept.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<ReadError> for MasterError {
    fn from(e: ReadError) -> MasterError {
        match e {
            ReadError::Store(e) => MasterError::Store(e),
            ReadError::Corrupt(e) => MasterError::Corrupt(e),
        }
    }
}

/// A task, as the master keeps it (and persists it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: TaskId,
    pub name: String,
    pub role: String,
    pub agent: Option<AgentId>,
    pub state: TaskState,
    pub resources: String,
    pub cpus: f64,
    pub mem_mb: u64,
    /// Disk it may write, MiB (0: not limited).
    #[serde(default)]
    pub disk_mb: u64,
    pub image: Option<String>,
    pub command: Vec<String>,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
    /// When its agent pulls the image (one-off tasks; services and jobs say it in their
    /// definitions).
    #[serde(default, skip_serializing_if = "wire::Pull::is_missing")]
    pub pull: wire::Pull,
    /// Order of submission, for the built-in framework's queue.
    pub seq: u64,
    /// The framework it belongs to (absent in older records: a service's has `service`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework: Option<FrameworkKind>,
    /// Set for the tasks of a service: what the services framework knows of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceTask>,
    /// When a kill was last sent to its agent (not stored: a restarted master sends again).
    #[serde(skip)]
    pub kill_sent_ms: Option<u64>,
    /// When it was placed on its agent, by this master (not stored).
    #[serde(skip)]
    pub placed_ms: Option<u64>,
}

/// A service task's part of its record.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServiceTask {
    pub app: String,
    /// The app version it was launched from, and that version's configuration version.
    pub version: String,
    pub config_version: String,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub ports: Vec<u64>,
    #[serde(default)]
    pub service_ports: Vec<u64>,
    /// Marathon timestamps.
    #[serde(default)]
    pub staged_at: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub health: Option<Health>,
    /// The services framework killed it (a scale-down, an upgrade, a user's kill): its end is
    /// not a failure to back off from.
    #[serde(default)]
    pub kill_intended: bool,
    /// Why the services framework killed it, for the app's `lastTaskFailure`.
    #[serde(default)]
    pub kill_reason: Option<String>,
    /// Wall-clock ms since the epoch when its agent stopped answering (cleared when it returns).
    #[serde(default)]
    pub unreachable_since: Option<u64>,
    /// Its readiness checks passed.
    #[serde(default)]
    pub ready: bool,
}

/// Health check results, as Marathon reports them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Health {
    pub alive: bool,
    pub consecutive_failures: u32,
    pub first_success: Option<String>,
    pub last_success: Option<String>,
    pub last_failure: Option<String>,
}

/// An agent, as the master keeps it (and persists it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentRecord {
    pub id: AgentId,
    pub hostname: String,
    pub address: String,
    pub resources: String,
    pub attributes: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RoleRecord {
    weight: f64,
    quota: Option<String>,
}

/// Something the controller must do outside itself: talk to an agent.
#[derive(Debug, Clone)]
pub enum AgentCall {
    Launch { address: String, launch: Box<wire::Launch> },
    Kill { address: String, task_id: TaskId },
}

#[derive(Clone)]
pub(super) struct AgentLive {
    pub(super) record: AgentRecord,
    pub(super) attributes: Attributes,
    pub(super) last_seen_ms: u64,
    pub(super) reachable: bool,
}

/// The core's state. Cloning it is cheap (its large maps share structure).
#[derive(Clone)]
pub struct Core {
    /// This command's writes, committed by the owner.
    store: Writes,
    alloc: Allocator,
    agents: imbl::OrdMap<AgentId, AgentLive>,
    tasks: imbl::OrdMap<TaskId, TaskRecord>,
    /// The frameworks the allocator knows, by the name it knows them by.
    frameworks: BTreeMap<String, FrameworkId>,
    roles: BTreeMap<String, RoleRecord>,
    next_seq: u64,
    agent_timeout_ms: u64,
    heartbeat_interval_ms: u64,
    outbox: Vec<AgentCall>,
    /// Wall-clock milliseconds at `now_ms == 0`: the clock the master passes in, for the
    /// timestamps the APIs show.
    epoch_ms: u64,
    /// The latest `now_ms` any entry point was given.
    last_now_ms: u64,
    /// Events raised by this command, published by the owner once it has committed.
    events: Vec<Stamped>,
    /// Where new ids come from: seeded once, so ids never depend on the clock.
    ids: Ids,
    /// What happened to frameworks' tasks by the core's doing (a report, a lost agent), in
    /// order, for the controller to hand to each task's framework.
    notices: Vec<Notice>,
}

/// Tables only the core writes; a framework owns every other table it writes.
const CORE_TABLES: [&str; 3] = [AGENTS, TASKS, ROLES];

/// A source of random ids (the owner seeds it; tests seed it with a constant).
#[derive(Clone)]
pub struct Ids(fastrand::Rng);

impl Ids {
    pub fn seeded(seed: u64) -> Ids {
        Ids(fastrand::Rng::with_seed(seed))
    }

    /// `{prefix}-` and 12 hex digits.
    pub fn id(&mut self, prefix: &str) -> String {
        format!("{prefix}-{:012x}", self.0.u64(..) & 0xffff_ffff_ffff)
    }

    /// A random (version 4) UUID.
    pub fn uuid(&mut self) -> String {
        let (a, b) = (self.0.u64(..), self.0.u64(..));
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48) & 0x3fff,
            b & 0xffff_ffff_ffff
        )
    }
}

/// How long an offer may stay unanswered before it is rescinded.
pub const OFFER_TIMEOUT_MS: u64 = 30_000;
/// A kill not answered by the task's end within this long is sent again.
pub const KILL_RETRY_MS: u64 = 3_000;
/// A task placed this recently may not have reached its agent yet: a heartbeat that does not
/// list it does not make it lost (a launch is delivered within 10 s or fails).
pub const RECONCILE_GRACE_MS: u64 = 30_000;

/// A task as the API shows it.
fn task_info(t: &TaskRecord) -> wire::TaskInfo {
    wire::TaskInfo {
        id: t.id.clone(),
        name: t.name.clone(),
        role: t.role.clone(),
        agent: t.agent.clone(),
        state: t.state,
        resources: t.resources.clone(),
        image: t.image.clone(),
        command: t.command.clone(),
        exit_code: t.exit_code,
        message: t.message.clone(),
    }
}

/// What an agent is told to run for a one-off task.
pub(super) fn launch_of(t: &TaskRecord) -> wire::Launch {
    wire::Launch {
        task_id: t.id.clone(),
        name: t.name.clone(),
        role: t.role.clone(),
        cpus: t.cpus,
        mem_mb: t.mem_mb,
        disk_mb: t.disk_mb,
        image: t.image.clone(),
        pull: t.pull,
        command: t.command.clone(),
        ..wire::Launch::default()
    }
}

/// A framework, as the master knows it: one of the built-in ones of a role. The allocator
/// knows frameworks by [`FrameworkId::name`]; the core keeps the map back and never parses a
/// name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FrameworkId {
    /// One-off tasks (`corral task run`).
    Tasks(Role),
    /// Long-running services (the Marathon API).
    Services(Role),
    /// Scheduled jobs (the Chronos API).
    Jobs(Role),
}

/// Which built-in framework a task belongs to, as its record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FrameworkKind {
    Tasks,
    Services,
    Jobs,
}

impl FrameworkId {
    pub fn role(&self) -> &Role {
        match self {
            FrameworkId::Tasks(r) | FrameworkId::Services(r) | FrameworkId::Jobs(r) => r,
        }
    }

    /// Its name in the allocator (and in logs).
    pub fn name(&self) -> String {
        match self {
            FrameworkId::Tasks(r) => format!("corral-tasks/{r}"),
            FrameworkId::Services(r) => format!("corral-services/{r}"),
            FrameworkId::Jobs(r) => format!("corral-jobs/{r}"),
        }
    }
}

impl FrameworkId {
    /// The framework a task belongs to: the services framework of its role, or the task
    /// framework's.
    pub fn of_task(t: &TaskRecord) -> FrameworkId {
        let role = Role::parse(&t.role).expect("stored roles were validated");
        match (t.framework, t.service.is_some()) {
            (Some(FrameworkKind::Jobs), _) => FrameworkId::Jobs(role),
            (Some(FrameworkKind::Services), _) | (None, true) => FrameworkId::Services(role),
            (Some(FrameworkKind::Tasks), _) | (None, false) => FrameworkId::Tasks(role),
        }
    }
}

/// A role read back from a record: it was validated before it was stored.
pub(super) fn stored_role(role: &str) -> Result<Role, MasterError> {
    Role::parse(role).map_err(|e| MasterError::Internal(format!("stored role {role:?}: {e}")))
}

fn framework_of_task(t: &TaskRecord) -> String {
    FrameworkId::of_task(t).name()
}

/// A task a framework places with an accepted offer: its record as the framework wants it
/// stored (the core sets its agent) and what the agent is told to run.
pub struct Placement {
    pub task: TaskRecord,
    pub launch: wire::Launch,
}

impl Core {
    /// Loads the core's tables from a snapshot: agents come back unreachable until they
    /// re-register. Frameworks load their own tables and register themselves.
    pub fn recover(
        snapshot: &corral_store::Snapshot,
        store: Arc<dyn corral_store::Store>,
        now_ms: u64,
        epoch_ms: u64,
        agent_timeout: Duration,
        ids: Ids,
    ) -> Result<Core, MasterError> {
        let mut c = Core {
            store: Writes::new(store),
            alloc: Allocator::new(),
            agents: imbl::OrdMap::new(),
            tasks: imbl::OrdMap::new(),
            frameworks: BTreeMap::new(),
            roles: BTreeMap::new(),
            next_seq: 0,
            agent_timeout_ms: agent_timeout.as_millis() as u64,
            heartbeat_interval_ms: (agent_timeout.as_millis() as u64 / 5).clamp(100, 5000),
            outbox: Vec::new(),
            epoch_ms: epoch_ms.saturating_sub(now_ms),
            last_now_ms: now_ms,
            events: Vec::new(),
            ids,
            notices: Vec::new(),
        };
        for (name, r) in snapshot.table(ROLES) {
            let r: RoleRecord = decode(ROLES, name, r)?;
            let name = name.to_string();
            let role = Role::parse(&name).map_err(|e| MasterError::BadRequest(e.to_string()))?;
            let quota = r
                .quota
                .as_deref()
                .map(Resources::parse)
                .transpose()
                .map_err(|e| MasterError::BadRequest(e.to_string()))?;
            let _ = c.alloc.set_role(&role, RoleConfig { weight: r.weight, quota });
            c.roles.insert(name, r);
        }
        for (id, a) in snapshot.table(AGENTS) {
            let a: AgentRecord = decode(AGENTS, id, a)?;
            let id = id.to_string();
            let attributes = attributes::parse(&a.attributes).unwrap_or_default();
            // Known, but not reachable until it says so; its resources are not offered yet.
            c.agents.insert(id.into(), AgentLive { record: a, attributes, last_seen_ms: now_ms, reachable: false });
        }
        for (k, v) in snapshot.table(TASKS) {
            let t: TaskRecord = decode(TASKS, k, v)?;
            stored_role(&t.role)?;
            c.next_seq = c.next_seq.max(t.seq + 1);
            c.tasks.insert(t.id.clone(), t);
        }
        Ok(c)
    }

    pub fn take_events(&mut self) -> Vec<Stamped> {
        std::mem::take(&mut self.events)
    }

    pub fn take_outbox(&mut self) -> Vec<AgentCall> {
        std::mem::take(&mut self.outbox)
    }

    /// The store writes of this command, for the owner to commit.
    pub fn take_writes(&mut self) -> Vec<corral_store::Op> {
        self.store.take()
    }

    pub(super) fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    // ---- reads ----------------------------------------------------------------------------

    /// The latest clock reading any entry point was given.
    pub fn now(&self) -> u64 {
        self.last_now_ms
    }

    /// Notes the time an entry point was given.
    pub(super) fn saw(&mut self, now_ms: u64) {
        self.last_now_ms = self.last_now_ms.max(now_ms);
    }

    /// Wall-clock milliseconds since the epoch at `now_ms`.
    pub fn wall_ms(&self, now_ms: u64) -> u64 {
        self.epoch_ms + now_ms
    }

    /// `now_ms` as the Marathon API writes timestamps.
    pub fn wall(&self, now_ms: u64) -> String {
        super::services::timestamp(self.epoch_ms + now_ms)
    }

    pub fn task(&self, id: &str) -> Option<&TaskRecord> {
        self.tasks.get(id)
    }

    pub fn all_tasks(&self) -> impl Iterator<Item = &TaskRecord> {
        self.tasks.values()
    }

    pub(super) fn agent(&self, id: &str) -> Option<&AgentLive> {
        self.agents.get(id)
    }

    pub(super) fn all_agents(&self) -> impl Iterator<Item = &AgentLive> {
        self.agents.values()
    }

    pub fn agent_count(&self) -> usize {
        self.agents.len()
    }

    pub fn framework(&self, name: &str) -> Option<&FrameworkId> {
        self.frameworks.get(name)
    }

    /// A role's allocation, weight and quota.
    pub fn role_summary(&self, role: &str) -> Option<RoleSummary> {
        self.alloc.roles().into_iter().find(|s| s.role.as_str() == role)
    }

    /// A record of a framework's table (this command's own writes first).
    pub fn get<T: DeserializeOwned>(&self, table: &str, key: &str) -> Result<Option<T>, MasterError> {
        Ok(self.store.get(table, key)?)
    }

    pub fn tasks(&self) -> Vec<wire::TaskInfo> {
        let mut v: Vec<&TaskRecord> = self.tasks.values().collect();
        v.sort_by_key(|t| t.seq);
        v.into_iter().map(task_info).collect()
    }

    pub fn task_info(&self, id: &str) -> Option<wire::TaskInfo> {
        self.tasks.get(id).map(task_info)
    }

    pub fn agent_address(&self, id: &str) -> Option<String> {
        self.agents.get(id).map(|a| a.record.address.clone())
    }

    pub fn agents(&self) -> Vec<wire::AgentInfo> {
        self.agents
            .values()
            .map(|a| wire::AgentInfo {
                id: a.record.id.clone(),
                hostname: a.record.hostname.clone(),
                address: a.record.address.clone(),
                resources: a.record.resources.clone(),
                available: self.alloc.agent_available(&a.record.id).map(|r| r.to_string()).unwrap_or_default(),
                attributes: a.attributes.clone(),
                state: if a.reachable { "active".into() } else { "unreachable".into() },
                tasks: self
                    .tasks
                    .values()
                    .filter(|t| t.agent.as_deref() == Some(&a.record.id) && !t.state.is_terminal())
                    .count(),
            })
            .collect()
    }

    pub fn roles(&self) -> Vec<wire::RoleInfo> {
        self.alloc
            .roles()
            .into_iter()
            .map(|s| wire::RoleInfo {
                role: s.role.to_string(),
                weight: s.weight,
                quota: s.quota.map(|q| q.to_string()),
                allocated: s.allocated.to_string(),
                dominant_share: s.dominant_share,
            })
            .collect()
    }

    // ---- the calls frameworks make ----------------------------------------------------------

    /// Registers a framework with the allocator (suppressed: it wants nothing yet).
    pub fn add_framework(&mut self, id: FrameworkId) {
        let name = id.name();
        if self.frameworks.contains_key(&name) {
            return;
        }
        self.alloc.add_framework(&name, std::slice::from_ref(id.role()));
        self.alloc.suppress(&name, id.role());
        self.frameworks.insert(name, id);
    }

    /// The framework wants offers (again): its filters are dropped.
    pub fn revive(&mut self, id: &FrameworkId) {
        self.add_framework(id.clone());
        self.alloc.revive(&id.name(), id.role());
    }

    /// The framework wants no offers until it revives.
    pub fn suppress(&mut self, id: &FrameworkId) {
        self.add_framework(id.clone());
        self.alloc.suppress(&id.name(), id.role());
    }

    /// Declines an offer; its resources are not offered to the framework again for
    /// `refuse_ms`.
    pub fn decline(&mut self, offer: OfferId, refuse_ms: u64, now_ms: u64) {
        let _ = self.alloc.decline(offer, refuse_ms, now_ms);
    }

    /// Accepts an offer with operations, and places tasks with it: each task is stored as
    /// given, on the offer's agent, and its launch is sent. On an error nothing is placed.
    pub fn accept(
        &mut self,
        offer: &Offer,
        operations: &[Operation],
        placements: Vec<Placement>,
        refuse_ms: u64,
        now_ms: u64,
    ) -> Result<(), AllocError> {
        let Some(address) = self.agents.get(&offer.agent).map(|a| a.record.address.clone()) else {
            let _ = self.alloc.decline(offer.id, refuse_ms, now_ms);
            return Err(AllocError::UnknownAgent(offer.agent.clone()));
        };
        self.alloc.accept(offer.id, operations, refuse_ms, now_ms)?;
        for Placement { mut task, launch } in placements {
            debug_assert_eq!(task.id, launch.task_id);
            task.agent = Some(offer.agent.as_str().into());
            task.placed_ms = Some(now_ms);
            self.store.put(TASKS, &task.id, &task);
            self.tasks.insert(task.id.clone(), task);
            self.outbox.push(AgentCall::Launch { address: address.clone(), launch: Box::new(launch) });
        }
        Ok(())
    }

    /// A new task, waiting to be placed (its sequence number is assigned here).
    pub fn add_task(&mut self, mut task: TaskRecord) {
        task.seq = self.next_seq;
        self.next_seq += 1;
        self.store.put(TASKS, &task.id, &task);
        self.tasks.insert(task.id.clone(), task);
    }

    /// Changes a task's record (its framework's part of it), and stores it.
    pub fn update_task(&mut self, id: &str, f: impl FnOnce(&mut TaskRecord)) {
        let Some(t) = self.tasks.get_mut(id) else { return };
        f(t);
        let t = t.clone();
        self.store.put(TASKS, id, &t);
    }

    /// Forgets an ended task.
    pub fn remove_task(&mut self, id: &str) {
        debug_assert!(self.tasks.get(id).is_none_or(|t| t.state.is_terminal()), "only ended tasks are forgotten");
        self.tasks.remove(id);
        self.store.delete(TASKS, id);
    }

    /// Writes a record of one of the framework's own tables.
    pub fn put<T: serde::Serialize>(&mut self, table: &str, key: &str, value: &T) {
        assert!(!CORE_TABLES.contains(&table), "frameworks do not write the core's table {table}");
        self.store.put(table, key, value);
    }

    pub fn delete(&mut self, table: &str, key: &str) {
        assert!(!CORE_TABLES.contains(&table), "frameworks do not write the core's table {table}");
        self.store.delete(table, key);
    }

    /// Raises an event, stamped now; the owner publishes it once the command has committed.
    pub fn emit(&mut self, event: Event) {
        self.events.push(Stamped { at_ms: self.epoch_ms + self.last_now_ms, event });
    }

    pub fn ids(&mut self) -> &mut Ids {
        &mut self.ids
    }

    /// Asks the task's agent to kill it (now, and again on later ticks until it reports the
    /// end), if its agent is reachable; an unreachable one is asked when it returns.
    pub fn kill(&mut self, id: &str) {
        let now = self.last_now_ms;
        let Some(t) = self.tasks.get_mut(id) else { return };
        let Some(a) = t.agent.as_ref().and_then(|a| self.agents.get(a)).filter(|a| a.reachable) else { return };
        t.kill_sent_ms = Some(now);
        self.outbox.push(AgentCall::Kill { address: a.record.address.clone(), task_id: id.into() });
    }

    /// Sets a task's state at its framework's request (no notice: the framework knows).
    pub fn set_state(
        &mut self,
        id: &str,
        state: TaskState,
        exit_code: Option<i32>,
        message: Option<String>,
    ) -> Result<(), MasterError> {
        let Some(t) = self.tasks.get_mut(id) else { return Ok(()) };
        let was_running_somewhere = t.agent.is_some() && !t.state.is_terminal() && t.state != TaskState::Unreachable;
        t.state = state;
        if exit_code.is_some() {
            t.exit_code = exit_code;
        }
        if message.is_some() {
            t.message = message;
        }
        let t = t.clone();
        self.store.put(TASKS, id, &t);
        if state.is_terminal() && was_running_somewhere {
            if let Some(agent) = &t.agent {
                let res = Resources::parse(&t.resources).expect("stored resources parse");
                self.alloc.recover_task(&framework_of_task(&t), &Role::parse(&t.role).expect("valid"), agent, &res);
            }
        }
        Ok(())
    }

    /// Sets a task's state by the core's doing, and tells its framework.
    fn change_state(
        &mut self,
        id: &str,
        state: TaskState,
        exit_code: Option<i32>,
        message: Option<String>,
    ) -> Result<(), MasterError> {
        self.set_state(id, state, exit_code, message)?;
        self.notice(id, NoticeKind::State);
        Ok(())
    }

    fn notice(&mut self, id: &str, kind: NoticeKind) {
        if let Some(t) = self.tasks.get(id) {
            self.notices.push(Notice { framework: FrameworkId::of_task(t), task: id.into(), kind });
        }
    }

    // ---- roles ----------------------------------------------------------------------------

    pub fn set_role(&mut self, name: &str, req: wire::SetRole) -> Result<(), MasterError> {
        let role = Role::parse(name).map_err(|e| MasterError::BadRequest(e.to_string()))?;
        let mut rec = self.roles.get(name).cloned().unwrap_or(RoleRecord { weight: 1.0, quota: None });
        if let Some(w) = req.weight {
            rec.weight = w;
        }
        if let Some(q) = req.quota {
            rec.quota = if q.trim().is_empty() { None } else { Some(q) };
        }
        let quota = rec
            .quota
            .as_deref()
            .map(Resources::parse)
            .transpose()
            .map_err(|e| MasterError::BadRequest(format!("quota: {e}")))?;
        self.alloc
            .set_role(&role, RoleConfig { weight: rec.weight, quota })
            .map_err(|e| MasterError::BadRequest(e.to_string()))?;
        self.store.put(ROLES, name, &rec);
        self.roles.insert(name.to_string(), rec);
        Ok(())
    }

    // ---- agents ---------------------------------------------------------------------------
    pub fn register(&mut self, req: wire::Register, now_ms: u64) -> Result<wire::Registered, MasterError> {
        let total = Resources::parse(&req.resources).map_err(|e| MasterError::BadRequest(e.to_string()))?;
        let attrs = attributes::parse(&req.attributes).map_err(|e| MasterError::BadRequest(e.to_string()))?;
        if !(req.address.starts_with("http://") || req.address.starts_with("https://")) {
            return Err(MasterError::BadRequest(format!("address: {:?} is not an http(s) URL", req.address)));
        }
        let id = match &req.agent_id {
            Some(id) if !id.is_empty() => id.clone(),
            _ => self.ids.id("agent").into(),
        };
        let record = AgentRecord {
            id: id.clone(),
            hostname: req.hostname.clone(),
            address: req.address.clone(),
            resources: total.to_string(),
            attributes: req.attributes.clone(),
        };
        self.store.put(AGENTS, &id, &record);
        if self.agents.get(&id).is_some_and(|a| a.reachable) {
            // A re-registration of an agent we think is up (it restarted quickly).
            let _ = self.alloc.remove_agent(&id);
        }
        self.alloc.add_agent(&id, total).map_err(|e| MasterError::BadRequest(e.to_string()))?;
        self.agents.insert(id.clone(), AgentLive { record, attributes: attrs, last_seen_ms: now_ms, reachable: true });

        // Reconcile: tasks the agent runs and we know of stay (and are charged again); tasks
        // we placed there that it does not report are lost; tasks it runs that we do not want
        // are killed.
        let reported: HashMap<&str, TaskState> = req.tasks.iter().map(|t| (t.task_id.as_str(), t.state)).collect();
        let mut kill = Vec::new();
        for t in &req.tasks {
            let known = self
                .tasks
                .get(&t.task_id)
                .is_some_and(|k| k.agent.as_deref() == Some(id.as_str()) && !k.state.is_terminal());
            if !known && !t.state.is_terminal() {
                kill.push(t.task_id.clone());
            }
        }
        let ours: Vec<TaskRecord> = self
            .tasks
            .values()
            .filter(|t| t.agent.as_deref() == Some(id.as_str()) && !t.state.is_terminal())
            .cloned()
            .collect();
        for t in ours {
            let res = Resources::parse(&t.resources).expect("stored resources parse");
            let role = Role::parse(&t.role).expect("stored roles parse");
            match reported.get(t.id.as_str()) {
                Some(s) if !s.is_terminal() => {
                    let _ = self.alloc.restore_task(&framework_of_task(&t), &role, &id, &res);
                    if t.state == TaskState::Unreachable {
                        let next = transition(t.state, TaskEvent::AgentReturned).unwrap_or(TaskState::Running);
                        self.change_state(&t.id, next, None, None)?;
                    }
                }
                // Ended while we did not hear: its status update is on its way.
                Some(_) => {
                    let _ = self.alloc.restore_task(&framework_of_task(&t), &role, &id, &res);
                }
                None => {
                    self.change_state(&t.id, TaskState::Lost, None, Some("the agent came back without it".into()))?;
                }
            }
        }
        Ok(wire::Registered { agent_id: id, heartbeat_interval_ms: self.heartbeat_interval_ms, kill })
    }

    /// A heartbeat; false if the agent must register again. With the agent's tasks, it is
    /// also implicit reconciliation: a task the agent runs that the master does not want is
    /// killed, and a task the master placed there long enough ago that the agent does not have
    /// is LOST (and its framework replaces it).
    pub fn heartbeat(
        &mut self,
        id: &str,
        now_ms: u64,
        tasks: Option<Vec<wire::AgentTask>>,
    ) -> Result<bool, MasterError> {
        match self.agents.get_mut(id) {
            Some(a) if a.reachable => a.last_seen_ms = now_ms,
            _ => return Ok(false),
        }
        let Some(reported) = tasks else { return Ok(true) };
        self.saw(now_ms);
        let reported: HashMap<&str, TaskState> = reported.iter().map(|t| (t.task_id.as_str(), t.state)).collect();
        let unwanted: Vec<TaskId> = reported
            .iter()
            .filter(|(_, s)| !s.is_terminal())
            .filter(|(t, _)| {
                !self.tasks.get(**t).is_some_and(|k| k.agent.as_deref() == Some(id) && !k.state.is_terminal())
            })
            .map(|(t, _)| TaskId::from(*t))
            .collect();
        if let Some(a) = self.agents.get(id) {
            for task_id in unwanted {
                tracing::warn!(agent = %id, task = %task_id, "the agent runs a task nobody wants: killing it");
                self.outbox.push(AgentCall::Kill { address: a.record.address.clone(), task_id });
            }
        }
        let missing: Vec<TaskId> = self
            .tasks
            .values()
            .filter(|t| t.agent.as_deref() == Some(id) && !t.state.is_terminal() && t.state != TaskState::Unreachable)
            .filter(|t| !reported.contains_key(t.id.as_str()))
            .filter(|t| t.placed_ms.is_none_or(|at| now_ms.saturating_sub(at) >= RECONCILE_GRACE_MS))
            .map(|t| t.id.clone())
            .collect();
        for task_id in missing {
            tracing::warn!(agent = %id, task = %task_id, "the agent does not have a task it should: lost");
            self.change_state(&task_id, TaskState::Lost, None, Some("its agent does not have it".into()))?;
        }
        Ok(true)
    }

    /// Applies status updates in order; returns the sequence numbers acknowledged.
    pub fn updates(
        &mut self,
        agent: &str,
        updates: Vec<wire::StatusUpdate>,
        now_ms: u64,
    ) -> Result<Vec<u64>, MasterError> {
        if !self.agents.get(agent).is_some_and(|a| a.reachable) {
            return Err(MasterError::NotFound(format!("agent {agent:?} is not registered")));
        }
        if let Some(a) = self.agents.get_mut(agent) {
            a.last_seen_ms = now_ms;
        }
        self.saw(now_ms);
        let mut acked = Vec::new();
        for u in updates {
            acked.push(u.seq);
            let Some(t) = self.tasks.get(&u.task_id).cloned() else { continue };
            if t.agent.as_deref() != Some(agent) {
                continue;
            }
            if let Some(healthy) = u.healthy {
                self.notice(&u.task_id, NoticeKind::Health(healthy));
                continue;
            }
            if u.ready == Some(true) {
                self.notice(&u.task_id, NoticeKind::Ready);
                continue;
            }
            // Still staging (its image is being pulled): the reason changes, not the state.
            if u.state == TaskState::Staging {
                if t.state == TaskState::Staging && u.message.is_some() && u.message != t.message {
                    self.set_state(&u.task_id, TaskState::Staging, None, u.message.clone())?;
                }
                continue;
            }
            // Duplicates and stale updates (already applied, or out of date) are acknowledged
            // and ignored: delivery is at least once.
            let Ok(next) = transition(t.state, TaskEvent::Reported(u.state)) else { continue };
            if next == t.state {
                continue;
            }
            // What it waited for (its image) is behind it.
            if matches!(next, TaskState::Starting | TaskState::Running) && u.message.is_none() {
                if let Some(t) = self.tasks.get_mut(&u.task_id) {
                    t.message = None;
                }
            }
            self.change_state(&u.task_id, next, u.exit_code, u.message.clone())?;
        }
        Ok(acked)
    }

    /// The core's periodic work: offers outstanding too long are rescinded; agents silent past
    /// the timeout become unreachable; unanswered kills are sent again.
    pub fn tick(&mut self, now_ms: u64) -> Result<(), MasterError> {
        self.saw(now_ms);
        for o in self.alloc.expire_offers(now_ms, OFFER_TIMEOUT_MS) {
            tracing::info!(offer = o.id, framework = %o.framework, agent = %o.agent, "offer rescinded after its timeout");
        }
        let silent: Vec<AgentId> = self
            .agents
            .values()
            .filter(|a| a.reachable && now_ms.saturating_sub(a.last_seen_ms) > self.agent_timeout_ms)
            .map(|a| a.record.id.clone())
            .collect();
        for id in silent {
            tracing::warn!(agent = %id, "agent silent past the timeout: its tasks are unreachable");
            self.agents.get_mut(&id).expect("listed").reachable = false;
            let _ = self.alloc.remove_agent(&id);
            let tasks: Vec<TaskRecord> = self
                .tasks
                .values()
                .filter(|t| t.agent.as_deref() == Some(id.as_str()) && !t.state.is_terminal())
                .cloned()
                .collect();
            for t in tasks {
                let res = Resources::parse(&t.resources).expect("stored resources parse");
                self.alloc.recover_task(&framework_of_task(&t), &Role::parse(&t.role).expect("valid"), &id, &res);
                if let Ok(next) = transition(t.state, TaskEvent::AgentUnreachable) {
                    self.change_state(&t.id, next, None, Some("its agent stopped answering".into()))?;
                }
            }
        }
        self.retry_kills(now_ms);
        Ok(())
    }

    /// A launch could not be delivered to its agent.
    pub fn launch_failed(&mut self, task_id: &str, message: String) -> Result<(), MasterError> {
        let Some(t) = self.tasks.get(task_id).cloned() else { return Ok(()) };
        if t.state.is_terminal() {
            return Ok(());
        }
        self.change_state(task_id, TaskState::Error, None, Some(message))
    }

    /// Kills not yet answered by an end are sent again.
    fn retry_kills(&mut self, now_ms: u64) {
        let due: Vec<TaskId> = self
            .tasks
            .values()
            .filter(|t| t.state == TaskState::Killing)
            .filter(|t| t.kill_sent_ms.is_none_or(|at| now_ms.saturating_sub(at) >= KILL_RETRY_MS))
            .map(|t| t.id.clone())
            .collect();
        for id in due {
            self.kill(&id);
        }
    }

    // ---- the allocation loop's half ----------------------------------------------------------

    /// One allocation cycle: the offers it makes, each for its framework to answer.
    pub(super) fn offers(&mut self, now_ms: u64) -> Vec<Offer> {
        self.saw(now_ms);
        self.alloc.allocate(now_ms)
    }
}
