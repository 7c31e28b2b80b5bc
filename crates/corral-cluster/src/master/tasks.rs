//! The one-off tasks framework (`corral task run`): per role, a queue of tasks in submission
//! order. Each offer places the oldest queued task that fits it, one task per offer, so each
//! placement goes to the role with the lowest dominant share at that moment (DRF by
//! progressive filling); an offer nothing fits is declined until the queue changes.

use std::collections::{BTreeMap, HashMap};

use corral_alloc::{Offer, Operation, Resources, Role};

use super::core::{launch_of, stored_role, Core, FrameworkId, FrameworkKind, MasterError, Placement, TaskRecord};
use super::framework::{Framework, Notice};
use crate::task::{transition, TaskEvent, TaskState};
use crate::wire::{self, TaskId};

/// Declined offers stay away until the queue changes (a revive drops the filter).
const FOREVER_MS: u64 = u64::MAX / 4;

#[derive(Clone, Default)]
pub struct Tasks {
    /// Per role, the tasks waiting for an offer, in order.
    queues: BTreeMap<Role, imbl::Vector<TaskId>>,
}

impl Tasks {
    /// Rebuilds the queues from the core's tasks.
    pub fn recover(core: &mut Core) -> Result<Tasks, MasterError> {
        let mut me = Tasks::default();
        let mut ours: Vec<&TaskRecord> = core.all_tasks().filter(|t| t.service.is_none()).collect();
        ours.sort_by_key(|t| t.seq);
        let mut roles = Vec::new();
        for t in ours {
            let role = stored_role(&t.role)?;
            roles.push(role.clone());
            if t.state == TaskState::Staging && t.agent.is_none() {
                me.queues.entry(role).or_default().push_back(t.id.clone());
            }
        }
        for role in roles {
            core.add_framework(FrameworkId::Tasks(role.clone()));
            me.queues.entry(role).or_default();
        }
        for role in me.queues.keys().cloned().collect::<Vec<_>>() {
            me.sync_demand(core, &role);
        }
        Ok(me)
    }

    /// Suppresses the framework of a role with nothing queued; revives one with work.
    fn sync_demand(&self, core: &mut Core, role: &Role) {
        let id = FrameworkId::Tasks(role.clone());
        if self.queues.get(role).is_some_and(|q| !q.is_empty()) {
            core.revive(&id);
        } else {
            core.suppress(&id);
        }
    }

    /// `corral task run`: queues `count` tasks.
    pub fn run(&mut self, core: &mut Core, req: wire::RunTasks) -> Result<Vec<TaskId>, MasterError> {
        let role = Role::parse(&req.role).map_err(|e| MasterError::BadRequest(e.to_string()))?;
        if req.command.is_empty() {
            return Err(MasterError::BadRequest("command: a task needs a command".into()));
        }
        use corral_alloc::resources::{MAX_TASK_CPUS, MAX_TASK_MEM_MIB};
        if !(req.cpus.is_finite() && req.cpus > 0.0 && req.cpus <= MAX_TASK_CPUS) {
            return Err(MasterError::BadRequest(format!(
                "cpus: must be a positive number up to {MAX_TASK_CPUS}, not {}",
                corral_alloc::resources::show(req.cpus)
            )));
        }
        if !(req.mem.is_finite() && (1.0..=MAX_TASK_MEM_MIB).contains(&req.mem)) {
            return Err(MasterError::BadRequest(format!(
                "mem: must be 1 to {MAX_TASK_MEM_MIB} (MiB), not {}",
                corral_alloc::resources::show(req.mem)
            )));
        }
        if req.name.as_ref().is_some_and(|n| n.len() > 200) {
            return Err(MasterError::BadRequest("name: at most 200 characters".into()));
        }
        if req.count == 0 || req.count > 10_000 {
            return Err(MasterError::BadRequest(format!("count: must be 1 to 10000, not {}", req.count)));
        }
        if !(req.disk.is_finite() && (0.0..=corral_alloc::resources::MAX_TASK_DISK_MIB).contains(&req.disk)) {
            return Err(MasterError::BadRequest(format!(
                "disk: must be 0 to {} (MiB), not {}",
                corral_alloc::resources::MAX_TASK_DISK_MIB,
                corral_alloc::resources::show(req.disk)
            )));
        }
        let mut spec = format!("cpus:{:.3};mem:{}", req.cpus, req.mem.ceil() as u64);
        if req.disk > 0.0 {
            spec.push_str(&format!(";disk:{}", req.disk.ceil() as u64));
        }
        let resources = Resources::parse(&spec).map_err(|e| MasterError::BadRequest(e.to_string()))?;
        let name = req.name.clone().unwrap_or_else(|| req.command[0].rsplit('/').next().unwrap_or("task").to_string());
        let prefix: String = name.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(20).collect();
        core.add_framework(FrameworkId::Tasks(role.clone()));
        let queue = self.queues.entry(role.clone()).or_default();
        let mut ids = Vec::new();
        for _ in 0..req.count {
            let id = TaskId::from(core.ids().id(&prefix));
            core.add_task(TaskRecord {
                id: id.clone(),
                name: name.clone(),
                role: role.to_string(),
                agent: None,
                state: TaskState::Staging,
                resources: resources.to_string(),
                cpus: req.cpus,
                mem_mb: req.mem.ceil() as u64,
                disk_mb: req.disk.ceil() as u64,
                image: req.image.clone(),
                command: req.command.clone(),
                exit_code: None,
                message: None,
                pull: req.pull,
                seq: 0,
                framework: Some(FrameworkKind::Tasks),
                service: None,
                kill_sent_ms: None,
                placed_ms: None,
            });
            queue.push_back(id.clone());
            ids.push(id);
        }
        self.sync_demand(core, &role);
        Ok(ids)
    }
}

impl Framework for Tasks {
    fn offer(&mut self, core: &mut Core, o: Offer, now_ms: u64) {
        let role = o.role.clone();
        let queue = self.queues.get(&role).cloned().unwrap_or_default();
        // Queued tasks mostly share a few shapes: each is parsed and compared once.
        let mut fits: HashMap<&str, bool> = HashMap::new();
        let fitting = queue.iter().find(|id| {
            core.task(id).is_some_and(|t| {
                *fits
                    .entry(t.resources.as_str())
                    .or_insert_with(|| Resources::parse(&t.resources).is_ok_and(|r| o.resources.contains(&r)))
            })
        });
        let Some(task_id) = fitting.cloned() else {
            // Nothing of ours fits here: do not offer these again until our queue changes.
            core.decline(o.id, FOREVER_MS, now_ms);
            return;
        };
        let task = core.task(&task_id).expect("queued tasks exist").clone();
        let res = Resources::parse(&task.resources).expect("stored");
        let launch = launch_of(&task);
        if core.accept(&o, &[Operation::Launch(res)], vec![Placement { task, launch }], 0, now_ms).is_err() {
            return;
        }
        let queue = self.queues.get_mut(&role).expect("exists");
        queue.retain(|x| *x != task_id);
        if queue.is_empty() {
            // Only suppress: a revive would drop the framework's filters, and every agent's
            // leftovers would be offered (and searched, and declined) again.
            core.suppress(&FrameworkId::Tasks(role));
        }
    }

    fn notice(&mut self, _core: &mut Core, _notice: Notice, _now_ms: u64) -> Result<(), MasterError> {
        // One-off tasks are not replaced: their record is their history.
        Ok(())
    }

    fn tick(&mut self, _core: &mut Core, _now_ms: u64) -> Result<(), MasterError> {
        Ok(())
    }

    fn kill(&mut self, core: &mut Core, id: &str, _now_ms: u64) -> Result<(), MasterError> {
        let Some(t) = core.task(id).cloned() else { return Ok(()) };
        if t.state.is_terminal() {
            return Ok(());
        }
        if t.agent.is_none() {
            // Still queued: it never ran.
            let role = stored_role(&t.role)?;
            if let Some(q) = self.queues.get_mut(&role) {
                q.retain(|x| x != id);
            }
            self.sync_demand(core, &role);
            return core.set_state(id, TaskState::Killed, None, Some("killed before it was placed".into()));
        }
        let next = transition(t.state, TaskEvent::KillRequested).map_err(|e| MasterError::BadRequest(e.to_string()))?;
        core.set_state(id, next, None, None)?;
        core.kill(id);
        Ok(())
    }
}
