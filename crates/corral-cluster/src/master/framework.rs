//! The interface between the cluster's core and a framework: offers in, accept (with
//! operations and the tasks they place) or decline (with a refuse time) out; news of the
//! framework's tasks in; kills, revives and suppressions out. The one-off tasks framework
//! (`tasks.rs`) and the services framework (`services.rs`) implement it; nothing in the core
//! knows either. It is the shape the Mesos scheduler API gives an external framework over the
//! network, and the one the jobs framework will implement.
//!
//! A framework's calls are [`Core`]'s public methods (`accept`, `decline`, `revive`,
//! `suppress`, `kill`, `add_task`, `update_task`, `set_state`, `put` and `delete` on its own
//! tables, `emit`); the core's fields are private to it.

use corral_alloc::Offer;

use super::core::{Core, FrameworkId, MasterError};

/// A framework of the cluster.
pub trait Framework {
    /// An offer made to the framework. It answers with [`Core::accept`] or [`Core::decline`];
    /// an offer left unanswered is rescinded after `OFFER_TIMEOUT_MS`.
    fn offer(&mut self, core: &mut Core, offer: Offer, now_ms: u64);

    /// News of one of its tasks, from its agent or the core.
    fn notice(&mut self, core: &mut Core, notice: Notice, now_ms: u64) -> Result<(), MasterError>;

    /// Periodic work: timers, and bringing what runs toward what it wants.
    fn tick(&mut self, core: &mut Core, now_ms: u64) -> Result<(), MasterError>;

    /// A user asks to kill one of its tasks.
    fn kill(&mut self, core: &mut Core, task: &str, now_ms: u64) -> Result<(), MasterError>;
}

/// What the core tells a framework about one of its tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub framework: FrameworkId,
    pub task: crate::wire::TaskId,
    pub kind: NoticeKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NoticeKind {
    /// Its state changed (its agent reported, its agent was lost or returned, ...).
    State,
    /// Its health check passed or failed.
    Health(bool),
    /// Its readiness checks passed.
    Ready,
}

#[cfg(test)]
mod tests {
    //! The interface as any framework sees it, with a framework written for the test: the core
    //! alone, no built-in framework, no owner.
    use std::sync::Arc;
    use std::time::Duration;

    use corral_alloc::{Operation, Resources, Role};

    use super::*;
    use crate::master::core::{launch_of, AgentCall, Ids, Placement, TaskRecord};
    use crate::master::events::Event;
    use crate::store::TASKS;
    use crate::task::TaskState;
    use crate::wire;

    /// Takes every offer for its one task, or declines for a minute once it has run.
    struct OneShot {
        id: FrameworkId,
        task: Option<TaskRecord>,
        declined: usize,
    }

    impl Framework for OneShot {
        fn offer(&mut self, core: &mut Core, offer: Offer, now_ms: u64) {
            let Some(task) = self.task.take() else {
                self.declined += 1;
                core.decline(offer.id, 60_000, now_ms);
                return;
            };
            let res = Resources::parse(&task.resources).unwrap();
            let launch = launch_of(&task);
            core.accept(&offer, &[Operation::Launch(res)], vec![Placement { task, launch }], 0, now_ms).unwrap();
        }
        fn notice(&mut self, _: &mut Core, _: Notice, _: u64) -> Result<(), MasterError> {
            Ok(())
        }
        fn tick(&mut self, _: &mut Core, _: u64) -> Result<(), MasterError> {
            Ok(())
        }
        fn kill(&mut self, core: &mut Core, task: &str, _: u64) -> Result<(), MasterError> {
            core.kill(task);
            Ok(())
        }
    }

    fn core() -> Core {
        let store = Arc::new(corral_store::MemoryStore::new());
        let snapshot = corral_store::Store::load(&*store, &crate::store::LOADED).unwrap();
        Core::recover(&snapshot, store, 0, 0, Duration::from_secs(10), Ids::seeded(7)).unwrap()
    }

    fn task(core: &mut Core) -> TaskRecord {
        TaskRecord {
            id: core.ids().id("t").into(),
            name: "t".into(),
            role: "a".into(),
            agent: None,
            state: TaskState::Staging,
            resources: "cpus:1;mem:64".into(),
            cpus: 1.0,
            mem_mb: 64,
            disk_mb: 0,
            image: None,
            command: vec!["true".into()],
            exit_code: None,
            message: None,
            pull: wire::Pull::Missing,
            seq: 0,
            framework: None,
            service: None,
            kill_sent_ms: None,
            placed_ms: None,
        }
    }

    #[test]
    fn offers_in_accepts_and_declines_out() {
        let mut core = core();
        let reg = wire::Register {
            agent_id: None,
            hostname: "h1".into(),
            address: "http://h1:5051".into(),
            resources: "cpus:2;mem:256".into(),
            attributes: String::new(),
            tasks: Vec::new(),
        };
        let agent = core.register(reg, 0).unwrap().agent_id;
        let id = FrameworkId::Tasks(Role::parse("a").unwrap());
        let t = task(&mut core);
        let task_id = t.id.clone();
        core.add_task(t.clone());
        let mut fw = OneShot { id: id.clone(), task: Some(t), declined: 0 };
        core.revive(&fw.id);

        // The first offer is accepted: the task is placed on the agent, stored, and launched.
        let offers = core.offers(1);
        assert_eq!(offers.len(), 1);
        assert_eq!(offers[0].framework, id.name());
        fw.offer(&mut core, offers.into_iter().next().unwrap(), 1);
        assert_eq!(core.task(&task_id).unwrap().agent.as_deref(), Some(agent.as_str()));
        let calls = core.take_outbox();
        assert!(matches!(&calls[..], [AgentCall::Launch { launch, .. }] if launch.task_id == task_id));
        let writes = core.take_writes();
        assert!(writes.iter().any(|op| op.table() == TASKS && op.key() == task_id.as_str()), "placement is stored");

        // What is left is offered again, declined, and then not offered for the refuse time.
        let offers = core.offers(2);
        assert_eq!(offers.len(), 1);
        assert_eq!(offers[0].resources, Resources::parse("cpus:1;mem:192").unwrap());
        fw.offer(&mut core, offers.into_iter().next().unwrap(), 2);
        assert_eq!(fw.declined, 1);
        assert!(core.offers(3).is_empty(), "declined resources stay away for the refuse time");
        assert_eq!(core.offers(60_003).len(), 1, "and come back after it");

        // A report of the task reaches its framework as a notice; a kill goes out as a call.
        let update = wire::StatusUpdate {
            seq: 1,
            task_id: task_id.clone(),
            state: TaskState::Running,
            exit_code: None,
            message: None,
            healthy: None,
            ready: None,
        };
        core.updates(&agent, vec![update], 4).unwrap();
        assert_eq!(core.take_notices(), vec![Notice { framework: id, task: task_id.clone(), kind: NoticeKind::State }]);
        fw.kill(&mut core, &task_id, 5).unwrap();
        assert!(matches!(&core.take_outbox()[..], [AgentCall::Kill { task_id: t, .. }] if *t == task_id));
        core.emit(Event::AppTerminated { app: "/x".into() });
        assert_eq!(core.take_events().len(), 1);
    }

    #[test]
    fn a_framework_may_not_write_the_cores_tables() {
        let mut core = core();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| core.put(TASKS, "x", &1)));
        let message = result.unwrap_err().downcast::<String>().unwrap();
        assert!(message.contains("core's table tasks"), "{message}");
    }
}
