//! The master's state as the owner runs commands on it: the cluster's [`Core`] and the
//! built-in frameworks, and the dispatch between them. Every command runs one entry point
//! here, then [`Controller::settle`]: the core's news goes to each task's framework, and
//! allocation cycles run, each offer handed to its framework, until nobody is offered anything.

use std::sync::Arc;
use std::time::Duration;

use corral_services::wire::AppDefinition;

pub use super::core::{
    AgentCall, AgentRecord, Core, FrameworkId, Health, Ids, MasterError, ServiceTask, TaskRecord, KILL_RETRY_MS,
    OFFER_TIMEOUT_MS, RECONCILE_GRACE_MS,
};
use super::framework::Framework;
use super::jobs::Jobs;
use super::services::Services;
use super::tasks::Tasks;
use super::trust::Trust;
use crate::store::LOADED;
use crate::wire;

/// The master's whole state. Cloning it is cheap (its large maps share structure): the owner
/// runs each command on a copy, keeps the copy only if the command and its commit succeed, and
/// publishes it to readers as an immutable snapshot.
#[derive(Clone)]
pub struct Controller {
    pub core: Core,
    /// The one-off tasks framework (`corral task run`).
    pub one_off: Tasks,
    /// The services framework (the Marathon API's).
    pub services: Services,
    /// The jobs framework (the Chronos API's).
    pub jobs: Jobs,
    /// Tokens and the agents' identities.
    pub trust: Trust,
}

/// The apps and jobs before a command, for [`Controller::refuse_new_privileges`].
pub struct Definitions {
    apps: imbl::OrdMap<corral_services::app::AppId, super::services::AppEntry>,
    jobs: imbl::OrdMap<String, super::jobs::JobEntry>,
}

/// Allocation cycles per command at most (each places at least one task or ends the loop).
const MAX_CYCLES: usize = 100_000;

impl Controller {
    /// Loads the state from the store: the core's tables, then each framework's.
    /// Returns the revision it was loaded at (the owner's commits are conditional on it).
    pub fn recover(
        store: Arc<dyn corral_store::Store>,
        now_ms: u64,
        epoch_ms: u64,
        agent_timeout: Duration,
        ids: Ids,
    ) -> Result<(Controller, corral_store::Revision), MasterError> {
        let snapshot = store.load(&LOADED)?;
        let mut core = Core::recover(&snapshot, store, now_ms, epoch_ms, agent_timeout, ids)?;
        let one_off = Tasks::recover(&mut core)?;
        let mut services = Services::default();
        services.recover_services(&mut core, &snapshot)?;
        let jobs = Jobs::recover(&mut core, &snapshot)?;
        let trust = Trust::recover(&snapshot)?;
        Ok((Controller { core, one_off, services, jobs, trust }, snapshot.revision))
    }

    /// Hands the core's news to each task's framework, and runs allocation cycles until no
    /// offer is made.
    pub fn settle(&mut self, now_ms: u64) -> Result<(), MasterError> {
        self.core.saw(now_ms);
        for _ in 0..MAX_CYCLES {
            for notice in self.core.take_notices() {
                let framework = notice.framework.clone();
                pick(&mut self.one_off, &mut self.services, &mut self.jobs, &framework).notice(
                    &mut self.core,
                    notice,
                    now_ms,
                )?;
            }
            let offers = self.core.offers(now_ms);
            if offers.is_empty() {
                return Ok(());
            }
            for offer in offers {
                match self.core.framework(&offer.framework).cloned() {
                    Some(id) => pick(&mut self.one_off, &mut self.services, &mut self.jobs, &id).offer(
                        &mut self.core,
                        offer,
                        now_ms,
                    ),
                    None => {
                        tracing::error!(framework = %offer.framework, "an offer to a framework the master does not know");
                        self.core.decline(offer.id, u64::MAX / 4, now_ms);
                    }
                }
            }
            // Declined offers carry lasting filters, so the next cycle offers them elsewhere,
            // and the loop ends when nobody is offered anything.
        }
        Ok(())
    }

    /// What the privilege check compares a command's result with: the apps and jobs as they
    /// were (cheap: the maps share structure).
    pub fn definitions(&self) -> Definitions {
        Definitions { apps: self.services.apps.clone(), jobs: self.jobs.jobs.clone() }
    }

    /// Refuses (the command is then dropped whole) if an app or job only an admin may run was
    /// created or reconfigured since `before`. Scaling or restarting one an admin made is not a
    /// change of its configuration.
    pub fn refuse_new_privileges(&self, before: &Definitions) -> Result<(), MasterError> {
        let refuse = |what: String, needs: Vec<&'static str>| {
            Err(MasterError::Forbidden(format!(
                "{what}: only an admin may run {}; this token is not an admin's",
                needs.join(", ")
            )))
        };
        for (id, entry) in self.services.apps.iter() {
            let needs = entry.app.privileges();
            if needs.is_empty() {
                continue;
            }
            let unchanged = before.apps.get(id).is_some_and(|old| {
                old.definition == entry.definition
                    || super::services::config_of(&old.definition) == super::services::config_of(&entry.definition)
            });
            if !unchanged {
                return refuse(format!("app {id}"), needs);
            }
        }
        for (name, entry) in self.jobs.jobs.iter() {
            let needs = entry.job.privileges();
            if needs.is_empty() {
                continue;
            }
            if before.jobs.get(name).is_none_or(|old| old.definition != entry.definition) {
                return refuse(format!("job {name}"), needs);
            }
        }
        Ok(())
    }

    pub fn take_events(&mut self) -> Vec<super::events::Stamped> {
        self.core.take_events()
    }

    pub fn take_outbox(&mut self) -> Vec<AgentCall> {
        self.core.take_outbox()
    }

    /// `now_ms` as the Marathon API writes timestamps.
    pub fn wall(&self, now_ms: u64) -> String {
        self.core.wall(now_ms)
    }

    // ---- the core's entry points ------------------------------------------------------------

    pub fn register(&mut self, req: wire::Register, now_ms: u64) -> Result<wire::Registered, MasterError> {
        let reply = self.core.register(req, now_ms)?;
        self.settle(now_ms)?;
        Ok(reply)
    }

    pub fn heartbeat(
        &mut self,
        id: &str,
        now_ms: u64,
        tasks: Option<Vec<wire::AgentTask>>,
    ) -> Result<bool, MasterError> {
        let known = self.core.heartbeat(id, now_ms, tasks)?;
        self.settle(now_ms)?;
        Ok(known)
    }

    pub fn updates(
        &mut self,
        agent: &str,
        updates: Vec<wire::StatusUpdate>,
        now_ms: u64,
    ) -> Result<Vec<u64>, MasterError> {
        let acked = self.core.updates(agent, updates, now_ms)?;
        self.settle(now_ms)?;
        Ok(acked)
    }

    pub fn launch_failed(&mut self, task_id: &str, message: String) -> Result<(), MasterError> {
        self.core.launch_failed(task_id, message)?;
        let now = self.core.now();
        self.settle(now)
    }

    pub fn set_role(&mut self, name: &str, req: wire::SetRole, now_ms: u64) -> Result<(), MasterError> {
        self.core.set_role(name, req)?;
        self.settle(now_ms)
    }

    /// Periodic work: each framework's, then the core's (offer timeouts, silent agents, kill
    /// retries).
    pub fn tick(&mut self, now_ms: u64) -> Result<(), MasterError> {
        self.core.saw(now_ms);
        self.services.tick(&mut self.core, now_ms)?;
        self.one_off.tick(&mut self.core, now_ms)?;
        self.jobs.tick(&mut self.core, now_ms)?;
        self.core.tick(now_ms)?;
        self.settle(now_ms)
    }

    /// A user's kill of any task, handed to its framework.
    pub fn kill_task(&mut self, id: &str) -> Result<(), MasterError> {
        let t = self.core.task(id).ok_or_else(|| MasterError::NotFound(format!("no such task: {id:?}")))?;
        let framework = FrameworkId::of_task(t);
        let now = self.core.now();
        pick(&mut self.one_off, &mut self.services, &mut self.jobs, &framework).kill(&mut self.core, id, now)?;
        self.settle(now)
    }

    // ---- the one-off tasks framework ----------------------------------------------------------

    pub fn run_tasks(&mut self, req: wire::RunTasks, now_ms: u64) -> Result<Vec<wire::TaskId>, MasterError> {
        self.core.saw(now_ms);
        let ids = self.one_off.run(&mut self.core, req)?;
        self.settle(now_ms)?;
        Ok(ids)
    }

    // ---- the services framework (the Marathon API's commands) ---------------------------------

    /// Runs a request of the services framework, then settles.
    fn services_do<T>(
        &mut self,
        now_ms: u64,
        f: impl FnOnce(&mut Services, &mut Core) -> Result<T, MasterError>,
    ) -> Result<T, MasterError> {
        self.core.saw(now_ms);
        let value = f(&mut self.services, &mut self.core)?;
        self.settle(now_ms)?;
        Ok(value)
    }

    pub fn create_app(&mut self, def: AppDefinition, now_ms: u64) -> Result<(AppDefinition, String), MasterError> {
        self.services_do(now_ms, |s, core| s.create_app(core, def, now_ms))
    }

    pub fn update_app(
        &mut self,
        id: &str,
        patch: serde_json::Value,
        partial: bool,
        force: bool,
        now_ms: u64,
    ) -> Result<(bool, String, String), MasterError> {
        self.services_do(now_ms, |s, core| s.update_app(core, id, patch, partial, force, now_ms))
    }

    pub fn update_apps(
        &mut self,
        items: Vec<serde_json::Value>,
        force: bool,
        now_ms: u64,
    ) -> Result<(String, String), MasterError> {
        self.services_do(now_ms, |s, core| s.update_apps(core, items, force, now_ms))
    }

    pub fn change_apps(
        &mut self,
        items: Vec<serde_json::Value>,
        partial: bool,
        removals: Vec<corral_services::app::AppId>,
        force: bool,
        now_ms: u64,
    ) -> Result<(String, String), MasterError> {
        self.services_do(now_ms, |s, core| s.change_apps(core, items, partial, removals, force, now_ms))
    }

    pub fn delete_app(&mut self, id: &str, force: bool, now_ms: u64) -> Result<(String, String), MasterError> {
        self.services_do(now_ms, |s, core| s.delete_app(core, id, force, now_ms))
    }

    pub fn kill_app_tasks(
        &mut self,
        ids: &[String],
        scale: bool,
        now_ms: u64,
    ) -> Result<Option<(String, String)>, MasterError> {
        self.services_do(now_ms, |s, core| s.kill_app_tasks(core, ids, scale, now_ms))
    }

    pub fn restart_app(&mut self, id: &str, force: bool, now_ms: u64) -> Result<(String, String), MasterError> {
        self.services_do(now_ms, |s, core| s.restart_app(core, id, force, now_ms))
    }

    pub fn cancel_deployment(
        &mut self,
        id: &str,
        force: bool,
        now_ms: u64,
    ) -> Result<Option<(String, String)>, MasterError> {
        self.services_do(now_ms, |s, core| s.cancel_deployment(core, id, force, now_ms))
    }

    // ---- the jobs framework (the Chronos API's commands) ------------------------------------------

    /// Runs a request of the jobs framework, then settles.
    pub fn jobs_do<T>(
        &mut self,
        now_ms: u64,
        f: impl FnOnce(&mut Jobs, &mut Core) -> Result<T, MasterError>,
    ) -> Result<T, MasterError> {
        self.core.saw(now_ms);
        let value = f(&mut self.jobs, &mut self.core)?;
        self.settle(now_ms)?;
        Ok(value)
    }

    /// Why a role gets no offers, when its quota is the reason.
    pub fn quota_note(&self, role: &str, one_instance: &str) -> Option<String> {
        self.services.quota_note(&self.core, role, one_instance)
    }
}

/// The built-in framework an id names.
fn pick<'a>(
    one_off: &'a mut Tasks,
    services: &'a mut Services,
    jobs: &'a mut Jobs,
    id: &FrameworkId,
) -> &'a mut dyn Framework {
    match id {
        FrameworkId::Tasks(_) => one_off,
        FrameworkId::Services(_) => services,
        FrameworkId::Jobs(_) => jobs,
    }
}
