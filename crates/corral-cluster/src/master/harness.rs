//! The master's core with fake agents, in one process and without root: the real owner, a
//! memory store, a clock the test moves, and agents the test plays from the calls the owner
//! sends. Every test here runs in milliseconds.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_store::{MemoryStore, Store};
use serde_json::json;

use super::controller::{AgentCall, Controller, Ids, MasterError};
use super::{AgentLink, Master, Seams};
use crate::task::TaskState;
use crate::wire::{self, AgentId, TaskId};

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<AgentCall>>>);

impl AgentLink for Recorder {
    fn send(&mut self, call: AgentCall) {
        self.0.lock().unwrap().push(call);
    }
}

const AGENT_TIMEOUT: Duration = Duration::from_secs(10);

struct Harness {
    rt: tokio::runtime::Runtime,
    store: MemoryStore,
    clock: Arc<AtomicU64>,
    calls: Recorder,
    master: Master,
    /// Agent address to id.
    agents: BTreeMap<String, AgentId>,
    next_update: u64,
}

impl Harness {
    fn new() -> Harness {
        Harness::on(MemoryStore::new(), 0)
    }

    /// A master on `store` (a restarted one, if the store has data), its clock at `now`.
    fn on(store: MemoryStore, now: u64) -> Harness {
        let clock = Arc::new(AtomicU64::new(now));
        let calls = Recorder::default();
        let (c, r) = (clock.clone(), calls.clone());
        let seams = Seams {
            clock: Arc::new(move || c.load(Ordering::SeqCst)),
            agents: Box::new(move |_| Box::new(r)),
            seed: 42,
            security: Arc::new(super::Security::dev()),
        };
        let master = Master::start(Arc::new(store.clone()), AGENT_TIMEOUT, seams).expect("the master starts");
        Harness {
            rt: tokio::runtime::Builder::new_current_thread().build().unwrap(),
            store,
            clock,
            calls,
            master,
            agents: BTreeMap::new(),
            next_update: 0,
        }
    }

    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Controller, u64) -> Result<T, MasterError> + Send + 'static,
    ) -> Result<T, MasterError> {
        self.rt.block_on(self.master.call(f)).map(|(t, _)| t)
    }

    fn view(&self) -> Arc<Controller> {
        self.master.view()
    }

    /// Moves the clock on and runs the periodic work.
    fn advance(&self, ms: u64) {
        self.clock.fetch_add(ms, Ordering::SeqCst);
        self.call(|c, now| c.tick(now)).unwrap();
    }

    /// An agent with these resources and, as real agents have, host ports.
    fn add_agent(&mut self, name: &str, resources: &str) -> AgentId {
        self.register(name, &format!("{resources};ports:[31000-32000]"), None, Vec::new())
    }

    /// Registers an agent (again, with `id`).
    fn register(&mut self, name: &str, resources: &str, id: Option<AgentId>, tasks: Vec<wire::AgentTask>) -> AgentId {
        let address = format!("http://{name}:5051");
        let resources = resources.to_string();
        let req = wire::Register {
            agent_id: id,
            hostname: name.into(),
            address: address.clone(),
            resources,
            attributes: String::new(),
            tasks,
        };
        let reply = self.call(move |c, now| c.register(req, now)).unwrap();
        self.agents.insert(address, reply.agent_id.clone());
        reply.agent_id
    }

    fn take_calls(&self) -> Vec<AgentCall> {
        std::mem::take(&mut *self.calls.0.lock().unwrap())
    }

    /// The tasks the master asked agents to kill since the last look (other calls dropped).
    fn take_kills(&self) -> Vec<TaskId> {
        self.take_calls()
            .into_iter()
            .filter_map(|c| match c {
                AgentCall::Kill { task_id, .. } => Some(task_id),
                _ => None,
            })
            .collect()
    }

    fn report(&mut self, agent: &str, task: &str, state: TaskState) {
        self.next_update += 1;
        let update = wire::StatusUpdate {
            task_id: task.into(),
            state,
            seq: self.next_update,
            exit_code: None,
            message: None,
            healthy: None,
            ready: None,
        };
        let agent = agent.to_string();
        self.call(move |c, now| c.updates(&agent, vec![update], now)).unwrap();
    }

    /// Plays the agents for one round of calls: a launch ends in `fate`'s state, a kill in
    /// KILLED. Returns how many calls there were.
    fn play_round(&mut self, fate: &dyn Fn(&wire::Launch) -> TaskState) -> usize {
        let calls = self.take_calls();
        for call in &calls {
            match call {
                AgentCall::Launch { address, launch } => {
                    let agent = self.agents[address].clone();
                    self.report(&agent, &launch.task_id, fate(launch.as_ref()));
                }
                AgentCall::Kill { address, task_id } => {
                    let agent = self.agents[address].clone();
                    self.report(&agent, task_id, TaskState::Killed);
                }
            }
        }
        calls.len()
    }

    /// Plays rounds until the master has nothing more to say.
    fn play(&mut self, fate: &dyn Fn(&wire::Launch) -> TaskState) {
        for _ in 0..10_000 {
            if self.play_round(fate) == 0 {
                return;
            }
        }
        panic!("the master kept sending calls");
    }

    fn tasks(&self) -> Vec<wire::TaskInfo> {
        self.view().core.tasks()
    }

    fn running(&self, role: &str) -> usize {
        self.tasks().iter().filter(|t| t.role == role && t.state == TaskState::Running).count()
    }
}

fn run_tasks(role: &str, count: u32, cpus: f64, mem: f64) -> wire::RunTasks {
    wire::RunTasks {
        role: role.into(),
        name: Some(role.into()),
        count,
        cpus,
        mem,
        disk: 0.0,
        image: None,
        pull: Default::default(),
        command: vec!["sleep".into(), "1000".into()],
    }
}

fn app(value: serde_json::Value) -> corral_services::wire::AppDefinition {
    corral_services::wire::from_value(value).expect("a valid definition")
}

fn running(_: &wire::Launch) -> TaskState {
    TaskState::Running
}

#[test]
fn the_drf_papers_example() {
    // 9 CPUs and 18 GB; A's tasks need <1 CPU, 4 GB>, B's <3 CPUs, 1 GB>: A gets 3, B gets 2.
    let mut h = Harness::new();
    h.call(|c, now| c.run_tasks(run_tasks("a", 6, 1.0, 4096.0), now)).unwrap();
    h.call(|c, now| c.run_tasks(run_tasks("b", 6, 3.0, 1024.0), now)).unwrap();
    assert!(h.take_calls().is_empty(), "nothing launches without an agent");
    h.add_agent("drf", "cpus:9;mem:18432;disk:1000");
    h.play(&running);
    assert_eq!((h.running("a"), h.running("b")), (3, 2));
    for r in h.view().core.roles().iter().filter(|r| r.role == "a" || r.role == "b") {
        assert!((r.dominant_share - 2.0 / 3.0).abs() < 0.01, "{r:?}");
    }
}

#[test]
fn a_failed_commit_changes_nothing() {
    let mut h = Harness::new();
    h.add_agent("one", "cpus:4;mem:4096");
    let before = h.store.dump();
    h.store.fail_commits(1);
    let def = app(json!({"id": "/web", "cmd": "sleep 100", "cpus": 0.5, "mem": 64, "instances": 2}));
    let d = def.clone();
    let err = h.call(move |c, now| c.create_app(d, now).map(|_| ())).unwrap_err();
    assert!(matches!(err, MasterError::Store(_)), "{err}");
    assert_eq!(h.store.dump(), before, "nothing was stored");
    assert!(h.view().services.apps.is_empty(), "nothing is seen");
    assert!(h.tasks().is_empty());
    assert!(h.take_calls().is_empty(), "nothing was launched");
    // The next write works (the store is not stuck).
    h.call(move |c, now| c.create_app(def, now).map(|_| ())).unwrap();
    h.play(&running);
    h.advance(200);
    assert_eq!(h.running("*"), 2);
    assert!(h.view().services.deployments.is_empty(), "the deployment finished");
}

#[test]
fn a_write_by_someone_else_is_loaded_not_overwritten() {
    let mut h = Harness::new();
    h.add_agent("one", "cpus:4;mem:4096");
    h.call(|c, now| c.run_tasks(run_tasks("a", 1, 0.5, 64.0), now)).unwrap();
    // Another writer commits behind the master's back (a second master on the same store).
    let revision = h.store.revision().unwrap();
    let role = br#"{"weight": 3.0, "quota": null}"#.to_vec();
    h.store.commit(revision, &[corral_store::Op::Put { table: "roles".into(), key: "b".into(), value: role }]).unwrap();
    // The master's next write is refused, not applied over it; the master loads the store again.
    let err = h.call(|c, now| c.run_tasks(run_tasks("a", 1, 0.5, 64.0), now)).unwrap_err();
    assert!(matches!(err, MasterError::Store(corral_store::StoreError::Conflict { .. })), "{err}");
    assert!(h.view().core.roles().iter().any(|r| r.role == "b" && r.weight == 3.0), "the other write is seen");
    // And works again: its earlier task is still there, the new one too.
    h.call(|c, now| c.run_tasks(run_tasks("a", 1, 0.5, 64.0), now)).unwrap();
    assert_eq!(h.tasks().len(), 2);
    let ids: std::collections::BTreeSet<String> = h.tasks().iter().map(|t| t.id.to_string()).collect();
    assert_eq!(ids.len(), 2, "no id given twice");
}

#[test]
fn a_request_that_fails_halfway_leaves_no_partial_change() {
    let mut h = Harness::new();
    h.add_agent("one", "cpus:4;mem:4096");
    let revision = h.store.revision().unwrap();
    let err = h
        .call(|c, now| {
            c.run_tasks(run_tasks("a", 2, 0.5, 64.0), now)?;
            c.run_tasks(run_tasks("a", 0, 0.5, 64.0), now)
        })
        .unwrap_err();
    assert!(err.to_string().contains("count"), "{err}");
    // A PUT of two apps, the second invalid: neither is created.
    let err = h
        .call(|c, now| {
            c.update_apps(
                vec![
                    json!({"id": "/ok", "cmd": "sleep 1", "mem": 32}),
                    json!({"id": "/bad", "cmd": "sleep 1", "cpus": -1}),
                ],
                false,
                now,
            )
        })
        .unwrap_err();
    assert!(matches!(err, MasterError::Invalid(_)), "{err}");
    // A command that panics halfway.
    let err = h
        .call(|c, now| {
            c.run_tasks(run_tasks("a", 2, 0.5, 64.0), now)?;
            panic!("a bug halfway through")
        })
        .map(|_: ()| ())
        .unwrap_err();
    assert!(matches!(err, MasterError::Internal(_)), "{err}");
    assert!(h.tasks().is_empty(), "{:?}", h.tasks());
    assert!(h.view().services.apps.is_empty());
    assert_eq!(h.store.revision().unwrap(), revision);
    assert!(h.take_calls().is_empty());
    // And the master still works.
    h.call(|c, now| c.run_tasks(run_tasks("a", 2, 0.5, 64.0), now)).unwrap();
    h.play(&running);
    assert_eq!(h.running("a"), 2);
}

#[test]
fn a_restarted_master_recovers_everything_from_the_store() {
    let mut h = Harness::new();
    let agent = h.add_agent("one", "cpus:4;mem:4096");
    h.call(|c, now| c.run_tasks(run_tasks("a", 2, 0.5, 64.0), now)).unwrap();
    let def = app(json!({"id": "/web", "cmd": "sleep 100", "cpus": 0.5, "mem": 64, "instances": 3}));
    h.call(move |c, now| c.create_app(def, now).map(|_| ())).unwrap();
    h.play(&running);
    let before: Vec<(TaskId, TaskState)> = h.tasks().into_iter().map(|t| (t.id, t.state)).collect();
    assert_eq!(before.len(), 5);

    let mut h2 = Harness::on(h.store.clone(), 60_000);
    let after: Vec<(TaskId, TaskState)> = h2.tasks().into_iter().map(|t| (t.id, t.state)).collect();
    assert_eq!(after, before, "tasks and their states come back");
    assert_eq!(h2.view().services.apps.len(), 1);
    assert!(h2.view().core.agents().iter().all(|a| a.state == "unreachable"), "agents must register again");
    // The agent returns with all its tasks: nothing is killed, lost or launched again.
    let tasks = before.iter().map(|(id, s)| wire::AgentTask { task_id: id.clone(), state: *s }).collect();
    h2.register("one", "cpus:4;mem:4096;ports:[31000-32000]", Some(agent), tasks);
    h2.advance(200);
    assert!(h2.take_calls().is_empty());
    let again: Vec<(TaskId, TaskState)> = h2.tasks().into_iter().map(|t| (t.id, t.state)).collect();
    assert_eq!(again, before);
    let agents = h2.view().core.agents();
    assert_eq!(agents[0].available, h.view().core.agents()[0].available, "the returned tasks are charged again");
}

#[test]
fn a_lost_agents_tasks_are_replaced_and_killed_when_it_returns() {
    let mut h = Harness::new();
    let one = h.add_agent("one", "cpus:2;mem:2048");
    let def = app(json!({"id": "/svc", "cmd": "sleep 100", "cpus": 1, "mem": 64, "instances": 2}));
    h.call(move |c, now| c.create_app(def, now).map(|_| ())).unwrap();
    h.play(&running);
    let old: Vec<TaskId> = h.tasks().into_iter().map(|t| t.id).collect();
    assert_eq!(old.len(), 2);
    let two = h.add_agent("two", "cpus:2;mem:2048");
    // "one" goes silent; "two" keeps beating.
    for _ in 0..12 {
        let id = two.clone();
        h.call(move |c, now| c.heartbeat(&id, now, None)).unwrap();
        h.advance(1000);
    }
    h.play(&running);
    let tasks = h.tasks();
    let on_two: Vec<&wire::TaskInfo> =
        tasks.iter().filter(|t| t.agent.as_deref() == Some(two.as_str()) && t.state == TaskState::Running).collect();
    assert_eq!(on_two.len(), 2, "replaced on the other agent: {tasks:?}");
    // "one" comes back with its old tasks: they are one too many and are killed.
    let reported = old.iter().map(|id| wire::AgentTask { task_id: id.clone(), state: TaskState::Running }).collect();
    h.register("one", "cpus:2;mem:2048;ports:[31000-32000]", Some(one.clone()), reported);
    let kills = h.take_kills();
    assert_eq!(kills.len(), 2, "{kills:?}");
    for id in &kills {
        h.report(&one, id, TaskState::Killed);
    }
    h.advance(200);
    h.play(&running);
    let live: Vec<wire::TaskInfo> = h.tasks().into_iter().filter(|t| !t.state.is_terminal()).collect();
    assert_eq!(live.len(), 2, "{live:?}");
    assert!(live.iter().all(|t| t.agent.as_deref() == Some(two.as_str())));
}

#[test]
fn a_rolling_upgrade_never_drops_below_the_healthy_minimum() {
    let mut h = Harness::new();
    h.add_agent("big", "cpus:16;mem:16384");
    let def = json!({"id": "/roll", "cmd": "sleep 100", "cpus": 1, "mem": 64, "instances": 3,
        "upgradeStrategy": {"minimumHealthCapacity": 1, "maximumOverCapacity": 0.5}});
    h.call(move |c, now| c.create_app(app(def), now).map(|_| ())).unwrap();
    h.play(&running);
    h.advance(200);
    let first = h.view().services.apps["/roll"].app.version.clone();
    let (_, _, v2) = h.call(|c, now| c.update_app("/roll", json!({"cmd": "sleep 200"}), true, false, now)).unwrap();
    assert_ne!(v2, first);
    for _ in 0..100 {
        if h.play_round(&running) == 0 {
            h.advance(200);
            if h.view().services.deployments.is_empty() {
                break;
            }
        }
        let running = h.tasks().iter().filter(|t| t.state == TaskState::Running).count();
        assert!(running >= 3, "never below 3 running: {:?}", h.tasks());
        assert!(h.tasks().iter().filter(|t| !t.state.is_terminal()).count() <= 5, "never past 3 + 50%");
    }
    assert!(h.view().services.deployments.is_empty(), "the deployment finished");
    let view = h.view();
    let versions: Vec<String> = view
        .core
        .all_tasks()
        .filter(|t| !t.state.is_terminal())
        .map(|t| t.service.as_ref().unwrap().version.clone())
        .collect();
    assert_eq!(versions, vec![v2.clone(); 3]);
}

#[test]
fn a_crashing_app_is_launched_again_only_after_its_backoff() {
    let mut h = Harness::new();
    h.add_agent("one", "cpus:4;mem:4096");
    let def = json!({"id": "/crash", "cmd": "false", "cpus": 0.5, "mem": 32, "instances": 1,
        "backoffSeconds": 2, "backoffFactor": 2, "maxLaunchDelaySeconds": 60});
    h.call(move |c, now| c.create_app(app(def), now).map(|_| ())).unwrap();
    let launches =
        |h: &Harness| h.take_calls().into_iter().filter(|c| matches!(c, AgentCall::Launch { .. })).collect::<Vec<_>>();
    let fail = |h: &mut Harness, calls: Vec<AgentCall>| {
        for c in calls {
            if let AgentCall::Launch { address, launch } = c {
                let agent = h.agents[&address].clone();
                h.report(&agent, &launch.task_id, TaskState::Failed);
            }
        }
    };
    let first = launches(&h);
    assert_eq!(first.len(), 1);
    fail(&mut h, first);
    // 2 s of backoff: nothing at 1.8 s, a launch by 2.2 s.
    for _ in 0..9 {
        h.advance(200);
    }
    assert!(launches(&h).is_empty(), "launched again inside its backoff");
    h.advance(200);
    h.advance(200);
    let second = launches(&h);
    assert_eq!(second.len(), 1, "launched again after its backoff");
    fail(&mut h, second);
    // Now 4 s.
    for _ in 0..19 {
        h.advance(200);
    }
    assert!(launches(&h).is_empty(), "the delay doubled");
    h.advance(200);
    h.advance(200);
    assert_eq!(launches(&h).len(), 1);
}

#[test]
fn kills_are_sent_again_until_the_task_ends() {
    let mut h = Harness::new();
    let agent = h.add_agent("one", "cpus:4;mem:4096");
    let ids = h.call(|c, now| c.run_tasks(run_tasks("a", 1, 0.5, 64.0), now)).unwrap();
    h.play(&running);
    let id = ids[0].clone();
    let kill = id.clone();
    h.call(move |c, _| c.kill_task(&kill)).unwrap();
    let kills = |h: &Harness| h.take_kills().len();
    assert_eq!(kills(&h), 1);
    h.advance(1000);
    assert_eq!(kills(&h), 0, "not again too soon");
    h.advance(2500);
    assert_eq!(kills(&h), 1, "sent again: the first may have been lost");
    h.report(&agent, &id, TaskState::Killed);
    h.advance(10_000);
    assert_eq!(kills(&h), 0, "not after the end");
    assert_eq!(h.tasks()[0].state, TaskState::Killed);
}

#[test]
fn a_thousand_agents() {
    let mut h = Harness::new();
    for i in 0..1000 {
        h.register(&format!("agent-{i:04}"), "cpus:2;mem:2048", None, Vec::new());
    }
    h.call(|c, now| c.run_tasks(run_tasks("a", 1500, 1.0, 1024.0), now)).unwrap();
    h.call(|c, now| c.run_tasks(run_tasks("b", 800, 1.0, 1024.0), now)).unwrap();
    h.play(&running);
    let tasks = h.tasks();
    assert_eq!(tasks.iter().filter(|t| t.state == TaskState::Running).count(), 2000, "all the cluster holds");
    let mut per_agent: BTreeMap<&str, usize> = BTreeMap::new();
    for t in tasks.iter().filter(|t| t.state == TaskState::Running) {
        *per_agent.entry(t.agent.as_deref().unwrap()).or_default() += 1;
    }
    assert!(per_agent.values().all(|n| *n == 2), "every agent full, none over");
    assert_eq!((h.running("a"), h.running("b")), (1500, 500));
    // 300 of b's tasks wait; as a's end, b gets the room (a has nothing queued).
    let ended: Vec<(AgentId, TaskId)> =
        tasks.iter().filter(|t| t.role == "a").take(300).map(|t| (t.agent.clone().unwrap(), t.id.clone())).collect();
    for (agent, id) in ended {
        h.report(&agent, &id, TaskState::Finished);
    }
    h.play(&running);
    assert_eq!((h.running("a"), h.running("b")), (1200, 800));
}

/// Properties over random command sequences: whatever happens (commits failing included), the
/// store and the memory agree after every command, and no task is lost or doubled.
mod properties {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Step {
        Run { role: usize, count: u32 },
        Kill(usize),
        Report(usize, TaskState),
        AgentJoins,
        Advance(u64),
        FailNextCommit,
        App { instances: i64, cmd: u8 },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..2usize, 1..4u32).prop_map(|(role, count)| Step::Run { role, count }),
            (0..64usize).prop_map(Step::Kill),
            (
                0..64usize,
                prop::sample::select(vec![TaskState::Running, TaskState::Finished, TaskState::Failed, TaskState::Lost])
            )
                .prop_map(|(i, s)| Step::Report(i, s)),
            Just(Step::AgentJoins),
            (100..15_000u64).prop_map(Step::Advance),
            Just(Step::FailNextCommit),
            (0..4i64, 0..2u8).prop_map(|(instances, cmd)| Step::App { instances, cmd }),
        ]
    }

    /// What both sides must agree on: every task's id, state, agent and app.
    fn summary(c: &Controller) -> Vec<(TaskId, TaskState, Option<AgentId>, Option<String>)> {
        c.core
            .all_tasks()
            .map(|t| (t.id.clone(), t.state, t.agent.clone(), t.service.as_ref().map(|s| s.app.clone())))
            .collect()
    }

    fn check(steps: Vec<Step>) {
        let mut h = Harness::new();
        let mut seen: Vec<TaskId> = Vec::new();
        for step in steps {
            match step {
                Step::Run { role, count } => {
                    let role = ["a", "b"][role];
                    if let Ok(ids) = h.call(move |c, now| c.run_tasks(run_tasks(role, count, 0.5, 128.0), now)) {
                        for id in &ids {
                            assert!(!seen.contains(id), "task id {id} given twice");
                        }
                        seen.extend(ids);
                    }
                }
                Step::Kill(i) => {
                    if let Some(t) = h.tasks().get(i % h.tasks().len().max(1)) {
                        let id = t.id.clone();
                        let _ = h.call(move |c, _| c.kill_task(&id));
                    }
                }
                Step::Report(i, state) => {
                    let tasks = h.tasks();
                    if let Some(t) = tasks.get(i % tasks.len().max(1)).filter(|t| t.agent.is_some()) {
                        let (agent, id) = (t.agent.clone().unwrap(), t.id.clone());
                        h.next_update += 1;
                        let u = wire::StatusUpdate {
                            task_id: id,
                            state,
                            seq: h.next_update,
                            exit_code: None,
                            message: None,
                            healthy: None,
                            ready: None,
                        };
                        let _ = h.call(move |c, now| c.updates(&agent, vec![u], now));
                    }
                }
                Step::AgentJoins => {
                    let name = format!("agent-{}", h.agents.len());
                    let address = format!("http://{name}:5051");
                    let req = wire::Register {
                        agent_id: None,
                        hostname: name,
                        address: address.clone(),
                        resources: "cpus:2;mem:2048;ports:[31000-32000]".into(),
                        attributes: String::new(),
                        tasks: Vec::new(),
                    };
                    if let Ok(r) = h.call(move |c, now| c.register(req, now)) {
                        h.agents.insert(address, r.agent_id);
                    }
                }
                Step::Advance(ms) => {
                    h.clock.fetch_add(ms, Ordering::SeqCst);
                    let _ = h.call(|c, now| c.tick(now));
                }
                Step::FailNextCommit => h.store.fail_commits(1),
                Step::App { instances, cmd } => {
                    let def = json!({"id": "/p", "cmd": format!("sleep {cmd}"), "cpus": 0.5, "mem": 64, "instances": instances});
                    let _ = h.call(move |c, now| c.update_app("/p", def, false, true, now));
                }
            }
            h.take_calls();
            // The store and the memory agree: a master recovered from the store now has the
            // same tasks, in the same states, on the same agents.
            let (recovered, _) =
                Controller::recover(Arc::new(h.store.clone()), 0, 0, AGENT_TIMEOUT, Ids::seeded(1)).unwrap();
            let view = h.view();
            assert_eq!(summary(&recovered), summary(&view));
            assert_eq!(
                recovered.services.apps.keys().collect::<Vec<_>>(),
                view.services.apps.keys().collect::<Vec<_>>()
            );
            // No one-off task is lost: every id handed out is still known.
            for id in &seen {
                assert!(view.core.task(id).is_some(), "task {id} was lost");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn store_and_memory_agree(steps in prop::collection::vec(step(), 1..40)) {
            check(steps);
        }
    }
}

#[test]
fn tasks_lost_with_their_agent_are_replaced_without_backoff() {
    let mut h = Harness::new();
    let agent = h.add_agent("one", "cpus:4;mem:4096");
    let def = json!({"id": "/lost", "cmd": "sleep 100", "cpus": 0.5, "mem": 32, "instances": 3, "backoffSeconds": 60});
    h.call(move |c, now| c.create_app(app(def), now).map(|_| ())).unwrap();
    h.play(&running);
    for t in h.tasks() {
        h.report(&agent, &t.id, TaskState::Lost);
    }
    h.advance(200);
    let launches = h.take_calls().into_iter().filter(|c| matches!(c, AgentCall::Launch { .. })).count();
    assert_eq!(launches, 3, "replaced at once, not after 60 s");
    let failure = h.view().services.apps["/lost"].last_failure.clone().expect("the loss is remembered");
    assert_eq!(failure.state, TaskState::Lost);
}

#[test]
fn heartbeats_reconcile_what_runs_with_what_should() {
    let mut h = Harness::new();
    let agent = h.add_agent("one", "cpus:4;mem:4096");
    let ids = h.call(|c, now| c.run_tasks(run_tasks("a", 2, 0.5, 64.0), now)).unwrap();
    h.play(&running);
    let beat = |h: &Harness, tasks: Vec<wire::AgentTask>| {
        let id = agent.clone();
        assert!(h.call(move |c, now| c.heartbeat(&id, now, Some(tasks))).unwrap());
    };
    let has = |id: &str| wire::AgentTask { task_id: id.into(), state: TaskState::Running };
    // A container nobody wants (the master never heard of it) is killed.
    beat(&h, vec![has(&ids[0]), has(&ids[1]), has("stray")]);
    let kills = h.take_kills();
    assert_eq!(kills, ["stray"]);
    // A task the agent does not have, placed just now, may still be on its way: kept.
    beat(&h, vec![has(&ids[0])]);
    assert_eq!(h.running("a"), 2);
    // Past the grace, it is lost.
    h.clock.fetch_add(super::controller::RECONCILE_GRACE_MS, Ordering::SeqCst);
    beat(&h, vec![has(&ids[0])]);
    let lost: Vec<TaskId> = h.tasks().into_iter().filter(|t| t.state == TaskState::Lost).map(|t| t.id).collect();
    assert_eq!(lost, [ids[1].clone()]);
    // An end not yet acknowledged is listed with its state: not lost, its update decides.
    beat(&h, vec![wire::AgentTask { task_id: ids[0].clone(), state: TaskState::Finished }]);
    h.report(&agent, &ids[0], TaskState::Finished);
    assert_eq!(h.tasks().iter().find(|t| t.id == ids[0]).unwrap().state, TaskState::Finished);
}
