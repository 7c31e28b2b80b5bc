//! The agent's decisions, pure: what it does with a launch, a kill, a started or ended
//! container, a check result and an acknowledgement, and what it reports. Each input changes the
//! state and returns the [`Effect`]s the shell carries out through its [`super::runtime::Runtime`];
//! status updates it queues collect in `fresh` (the shell appends them to the journal) and
//! `dirty` says the task records must be saved. No I/O, no clock.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::journal::Pending;
use crate::task::{ended_state, TaskState};
use crate::wire::{self, TaskId};

/// A task this agent runs, as it records it on disk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(super) struct TaskEntry {
    pub(super) task_id: TaskId,
    pub(super) container_id: String,
    pub(super) kill_requested: bool,
    /// The last state reported (queued) for it.
    pub(super) state: TaskState,
    /// Run by the agent while the task runs.
    #[serde(default)]
    pub(super) health_checks: Vec<wire::HealthCheck>,
    /// Run until they pass once.
    #[serde(default)]
    pub(super) readiness_checks: Vec<wire::HealthCheck>,
    /// Host ports forwarded into the task's network (BRIDGE).
    #[serde(default)]
    pub(super) port_forwards: Vec<wire::PortForward>,
    /// When garbage collection first saw it ended, its end acknowledged (wall clock, ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) ended_ms: Option<u64>,
}

impl TaskEntry {
    fn new(task_id: &str) -> TaskEntry {
        TaskEntry {
            task_id: task_id.into(),
            container_id: String::new(),
            kill_requested: false,
            state: TaskState::Staging,
            health_checks: Vec::new(),
            readiness_checks: Vec::new(),
            port_forwards: Vec::new(),
            ended_ms: None,
        }
    }
}

/// How a container is doing, as the runtime sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// Created or running.
    Running,
    /// Ended: it never started (`start_failed`), or exited with `code` (128 + signal when a
    /// signal ended it); `message` says how.
    Exited { start_failed: bool, code: i32, message: String },
    /// Its monitor is gone without a word, or its records are.
    Lost(String),
}

/// Something the shell must do.
#[derive(Debug, Clone)]
pub(super) enum Effect {
    /// Create and start the task's container (the shell then calls `started` or `start_failed`).
    Start(Box<wire::Launch>),
    /// Stop a container (its grace period, then SIGKILL).
    Stop { task: String, container: String },
    /// Forward the task's host ports into its container's network.
    Forward { task: String, container: String },
    /// Stop forwarding its ports: it ended.
    Unforward { task: String },
    /// Run its health checks while it runs.
    HealthChecks { task: String },
    /// Run its readiness checks until they pass.
    ReadinessChecks { task: String },
    /// Remove its ended container (if it had one), keeping its output in its sandbox: the task
    /// is forgotten.
    Remove { task: String, container: String },
}

#[derive(Debug, Default)]
pub(super) struct AgentState {
    pub(super) tasks: BTreeMap<TaskId, TaskEntry>,
    /// Status updates not yet acknowledged, in order.
    pub(super) pending: Pending,
    /// Updates queued since the shell last took them, for the journal.
    fresh: Vec<wire::StatusUpdate>,
    /// The task records changed in a way that must survive a restart.
    dirty: bool,
}

impl AgentState {
    pub(super) fn new(tasks: BTreeMap<TaskId, TaskEntry>, pending: Pending) -> AgentState {
        AgentState { tasks, pending, fresh: Vec::new(), dirty: false }
    }

    /// The updates queued since the last call, to append to the journal.
    pub(super) fn take_fresh(&mut self) -> Vec<wire::StatusUpdate> {
        std::mem::take(&mut self.fresh)
    }

    /// Whether the task records must be saved (and resets it).
    pub(super) fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    // ---- what the master asks -----------------------------------------------------------------

    /// A launch. A task already known (a launch delivered twice, or one whose kill came first)
    /// is not started again: `None`.
    pub(super) fn launch(&mut self, req: wire::Launch) -> Option<Effect> {
        if self.tasks.contains_key(&req.task_id) {
            return None;
        }
        let mut t = TaskEntry::new(&req.task_id);
        t.health_checks = req.health_checks.clone();
        t.readiness_checks = req.readiness_checks.clone();
        t.port_forwards = req.port_forwards.clone();
        self.tasks.insert(req.task_id.clone(), t);
        self.dirty = true;
        Some(Effect::Start(Box::new(req)))
    }

    /// A kill. A task this agent has not heard of is recorded as killed (its launch may still be
    /// on its way: it will not start); one that already ended is reported again, so a master
    /// that missed the end hears it; one still starting is stopped once it has started.
    pub(super) fn kill(&mut self, task_id: &str) -> Vec<Effect> {
        let Some(t) = self.tasks.get_mut(task_id) else {
            let mut t = TaskEntry::new(task_id);
            t.kill_requested = true;
            self.tasks.insert(task_id.into(), t);
            self.dirty = true;
            self.report(task_id, TaskState::Killed, None, Some("killed before it was launched".into()));
            return Vec::new();
        };
        if t.state.is_terminal() {
            let state = t.state;
            self.queue_update(wire::StatusUpdate {
                message: Some("it had already ended".into()),
                ..update(task_id, state)
            });
            return Vec::new();
        }
        if !t.kill_requested {
            t.kill_requested = true;
            self.dirty = true;
        }
        if t.container_id.is_empty() {
            return Vec::new();
        }
        vec![Effect::Stop { task: task_id.to_string(), container: t.container_id.clone() }]
    }

    // ---- what the runtime says ----------------------------------------------------------------

    /// Whether a start may go ahead: a task killed before its start began is reported KILLED.
    pub(super) fn may_start(&mut self, task_id: &str) -> bool {
        if self.tasks.get(task_id).is_some_and(|t| t.kill_requested) {
            self.report(task_id, TaskState::Killed, None, Some("killed before it started".into()));
            return false;
        }
        true
    }

    /// How getting its image goes: the task stays STAGING, with this as its reason.
    pub(super) fn preparing(&mut self, task_id: &str, message: String) {
        if self.tasks.get(task_id).is_some_and(|t| t.state == TaskState::Staging && !t.kill_requested) {
            self.queue_update(wire::StatusUpdate { message: Some(message), ..update(task_id, TaskState::Staging) });
        }
    }

    /// What it needs is here: it is STARTING, unless a kill came meanwhile (then it is KILLED,
    /// and does not start).
    pub(super) fn prepared(&mut self, task_id: &str) -> bool {
        if !self.may_start(task_id) {
            return false;
        }
        self.report(task_id, TaskState::Starting, None, None);
        true
    }

    /// Its image could not be had: it failed (Mesos's TASK_FAILED), with the cause.
    pub(super) fn prepare_failed(&mut self, task_id: &str, message: String) {
        self.report(task_id, TaskState::Failed, None, Some(message));
    }

    /// Its container started. A kill that came while it was starting stops it now.
    pub(super) fn started(&mut self, task_id: &str, container: &str) -> Vec<Effect> {
        let Some(t) = self.tasks.get_mut(task_id) else { return Vec::new() };
        t.container_id = container.to_string();
        self.dirty = true;
        let (killed, forwards, health, ready) = (
            t.kill_requested,
            !t.port_forwards.is_empty(),
            !t.health_checks.is_empty(),
            !t.readiness_checks.is_empty(),
        );
        self.report(task_id, TaskState::Running, None, None);
        let (task, container) = (task_id.to_string(), container.to_string());
        if killed {
            return vec![Effect::Stop { task, container }];
        }
        let mut effects = Vec::new();
        if forwards {
            effects.push(Effect::Forward { task: task.clone(), container });
        }
        if health {
            effects.push(Effect::HealthChecks { task: task.clone() });
        }
        if ready {
            effects.push(Effect::ReadinessChecks { task });
        }
        effects
    }

    /// Its container could not be created or started.
    pub(super) fn start_failed(&mut self, task_id: &str, message: String) {
        self.report(task_id, TaskState::Error, None, Some(message));
    }

    /// Its container started, but its ports could not be forwarded: it is an error, and stopped.
    pub(super) fn forward_failed(&mut self, task_id: &str, container: &str, message: String) -> Vec<Effect> {
        if let Some(t) = self.tasks.get_mut(task_id) {
            t.container_id = container.to_string();
            t.kill_requested = true;
            self.dirty = true;
        }
        self.report(task_id, TaskState::Error, None, Some(message));
        vec![Effect::Stop { task: task_id.to_string(), container: container.to_string() }]
    }

    /// The runtime's view of a task's container, from the watcher: an end is reported.
    pub(super) fn observed(&mut self, task_id: &str, observed: Observed) -> Vec<Effect> {
        let Some(t) = self.tasks.get(task_id) else { return Vec::new() };
        if t.state.is_terminal() {
            return Vec::new();
        }
        let (state, code, message) = match observed {
            Observed::Running => return Vec::new(),
            Observed::Exited { start_failed, code, message } => {
                (ended_state(t.kill_requested, start_failed, code), Some(code), message)
            }
            Observed::Lost(message) => (TaskState::Lost, None, message),
        };
        self.report(task_id, state, code, Some(message));
        vec![Effect::Unforward { task: task_id.to_string() }]
    }

    /// After a restart, per task not ended: its container (`found` by the task's name when the
    /// agent stopped before recording it) and how it is doing.
    pub(super) fn recovered(
        &mut self,
        task_id: &str,
        found: Option<String>,
        observed: Option<Observed>,
    ) -> Vec<Effect> {
        let Some(t) = self.tasks.get_mut(task_id) else { return Vec::new() };
        if t.state.is_terminal() {
            return Vec::new();
        }
        if t.container_id.is_empty() {
            match found {
                Some(c) => {
                    t.container_id = c;
                    self.dirty = true;
                }
                None => {
                    self.report(
                        task_id,
                        TaskState::Lost,
                        None,
                        Some("the agent restarted before the task started".into()),
                    );
                    return Vec::new();
                }
            }
        }
        let t = &self.tasks[task_id];
        let (task, container) = (task_id.to_string(), t.container_id.clone());
        match observed {
            // Killed, but the agent stopped before the container was: finish the kill.
            Some(Observed::Running) if t.kill_requested => vec![Effect::Stop { task, container }],
            Some(Observed::Running) => {
                let (forwards, health) = (!t.port_forwards.is_empty(), !t.health_checks.is_empty());
                // It started while the agent was away (or before it could say so).
                self.report(task_id, TaskState::Running, None, None);
                let mut effects = Vec::new();
                if forwards {
                    effects.push(Effect::Forward { task: task.clone(), container });
                }
                if health {
                    effects.push(Effect::HealthChecks { task });
                }
                effects
            }
            // The watcher reports how it ended.
            Some(Observed::Exited { .. }) => Vec::new(),
            Some(Observed::Lost(_)) | None => {
                self.report(task_id, TaskState::Lost, None, Some("its container is gone".into()));
                Vec::new()
            }
        }
    }

    /// Whether the task's checks should still run: it runs and nobody asked it to stop.
    pub(super) fn checking(&self, task_id: &str) -> Checking {
        match self.tasks.get(task_id) {
            Some(t) if t.state == TaskState::Running && !t.kill_requested => Checking::Yes,
            Some(t) if !t.state.is_terminal() && !t.kill_requested => Checking::NotYet,
            _ => Checking::Done,
        }
    }

    /// A health check result of a running task (the master counts failures).
    pub(super) fn health(&mut self, task_id: &str, healthy: bool, message: Option<String>) {
        if self.checking(task_id) == Checking::Yes {
            self.queue_update(wire::StatusUpdate {
                healthy: Some(healthy),
                message,
                ..update(task_id, TaskState::Running)
            });
        }
    }

    /// The task's readiness checks passed.
    pub(super) fn ready(&mut self, task_id: &str) {
        if self.checking(task_id) == Checking::Yes {
            self.queue_update(wire::StatusUpdate { ready: Some(true), ..update(task_id, TaskState::Running) });
        }
    }

    /// Ended tasks whose end the master acknowledged are forgotten after the retention (and at
    /// once beyond the count, oldest first), their containers removed. Each is timed from when
    /// this first saw it so.
    pub(super) fn collect(&mut self, now_ms: u64, policy: &super::gc::GcPolicy) -> Vec<Effect> {
        let unacked: HashSet<&str> = self.pending.updates.iter().map(|u| u.task_id.as_str()).collect();
        let mut ended = Vec::new();
        let mut marked = false;
        for t in self.tasks.values_mut() {
            if t.state.is_terminal() && !unacked.contains(t.task_id.as_str()) {
                if t.ended_ms.is_none() {
                    t.ended_ms = Some(now_ms);
                    marked = true;
                }
                ended.push((t.task_id.clone(), t.ended_ms.unwrap_or(now_ms)));
            }
        }
        let gone = super::gc::expired(&ended, now_ms, policy.container_retention, policy.max_ended_containers);
        self.dirty |= marked || !gone.is_empty();
        gone.into_iter()
            .filter_map(|id| self.tasks.remove(&id))
            .map(|t| Effect::Remove { task: t.task_id.to_string(), container: t.container_id })
            .collect()
    }

    /// The master acknowledged these updates.
    pub(super) fn acked(&mut self, seqs: &[u64]) {
        self.pending.updates.retain(|u| !seqs.contains(&u.seq));
    }

    // ---- what the agent tells the master ------------------------------------------------------

    /// The tasks the master may still care about, for implicit reconciliation: those not
    /// ended, and those whose end the master has not acknowledged yet.
    pub(super) fn reconcile_list(&self) -> Vec<wire::AgentTask> {
        let unacked: HashSet<&str> = self.pending.updates.iter().map(|u| u.task_id.as_str()).collect();
        self.tasks
            .values()
            .filter(|t| !t.state.is_terminal() || unacked.contains(t.task_id.as_str()))
            .map(|t| wire::AgentTask { task_id: t.task_id.clone(), state: t.state })
            .collect()
    }

    /// Every task, for a registration.
    pub(super) fn all_tasks(&self) -> Vec<wire::AgentTask> {
        self.tasks.values().map(|t| wire::AgentTask { task_id: t.task_id.clone(), state: t.state }).collect()
    }

    /// Queues a status update for a task (once per state). An end must survive a restart, so
    /// it marks the records dirty; the states on the way there need not (a restarted agent
    /// asks the runtime).
    fn report(&mut self, task_id: &str, state: TaskState, exit_code: Option<i32>, message: Option<String>) {
        if let Some(t) = self.tasks.get_mut(task_id) {
            if t.state == state {
                return;
            }
            t.state = state;
            if state.is_terminal() {
                self.dirty = true;
            }
        }
        self.queue_update(wire::StatusUpdate { exit_code, message, ..update(task_id, state) });
    }

    /// Queues an update, numbered next.
    fn queue_update(&mut self, mut update: wire::StatusUpdate) {
        update.seq = self.pending.next_seq;
        self.pending.next_seq += 1;
        self.fresh.push(update.clone());
        self.pending.updates.push_back(update);
    }
}

/// An update of a task's state, not numbered yet.
fn update(task_id: &str, state: TaskState) -> wire::StatusUpdate {
    wire::StatusUpdate {
        task_id: task_id.into(),
        state,
        seq: 0,
        exit_code: None,
        message: None,
        healthy: None,
        ready: None,
    }
}

/// Whether a task's checks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Checking {
    Yes,
    /// Not running yet: wait.
    NotYet,
    /// Ended or being killed: stop checking.
    Done,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check() -> wire::HealthCheck {
        wire::HealthCheck {
            kind: "tcp".into(),
            port: 1,
            path: String::new(),
            command: String::new(),
            grace_period_ms: 0,
            interval_ms: 100,
            timeout_ms: 100,
            statuses: Vec::new(),
        }
    }

    fn launch(id: &str) -> wire::Launch {
        wire::Launch { task_id: id.into(), command: vec!["true".into()], ..wire::Launch::default() }
    }

    /// The updates queued, as `(task, state, exit code, message)`.
    fn reported(s: &mut AgentState) -> Vec<(String, TaskState, Option<i32>, Option<String>)> {
        s.take_fresh().into_iter().map(|u| (u.task_id.to_string(), u.state, u.exit_code, u.message)).collect()
    }

    fn states(s: &mut AgentState) -> Vec<(String, TaskState)> {
        reported(s).into_iter().map(|(t, st, _, _)| (t, st)).collect()
    }

    fn names(effects: &[Effect]) -> Vec<String> {
        effects.iter().map(|e| format!("{e:?}").split([' ', '(']).next().unwrap_or_default().to_string()).collect()
    }

    #[test]
    fn a_task_starts_runs_and_ends_as_its_container_did() {
        let check = |observed: Observed, killed: bool, want: TaskState, code: Option<i32>| {
            let mut s = AgentState::default();
            assert!(matches!(s.launch(launch("t")), Some(Effect::Start(_))));
            assert!(s.may_start("t"));
            assert!(s.prepared("t"));
            assert!(s.started("t", "c1").is_empty(), "nothing to forward or check");
            if killed {
                assert_eq!(names(&s.kill("t")), ["Stop"]);
            }
            assert_eq!(names(&s.observed("t", observed.clone())), ["Unforward"]);
            let r = reported(&mut s);
            let states: Vec<TaskState> = r.iter().map(|u| u.1).collect();
            assert_eq!(states, [TaskState::Starting, TaskState::Running, want], "{observed:?} killed {killed}");
            assert_eq!(r[2].2, code);
            assert!(s.observed("t", observed).is_empty(), "an end is reported once");
            assert!(s.take_fresh().is_empty());
        };
        let exited = |code| Observed::Exited { start_failed: false, code, message: String::new() };
        check(exited(0), false, TaskState::Finished, Some(0));
        check(exited(3), false, TaskState::Failed, Some(3));
        check(exited(143), true, TaskState::Killed, Some(143));
        check(
            Observed::Exited { start_failed: true, code: 127, message: "no such file".into() },
            false,
            TaskState::Error,
            Some(127),
        );
        check(Observed::Lost("its shim is gone".into()), false, TaskState::Lost, None);
    }

    #[test]
    fn while_its_image_is_pulled_a_task_is_staging_with_the_reason() {
        let mut s = AgentState::default();
        s.launch(launch("t"));
        assert!(s.take_fresh().is_empty(), "STAGING until something happens");
        s.preparing("t", "pulling app:v1: 1/10 MiB".into());
        s.preparing("t", "pulling app:v1: 5/10 MiB".into());
        assert!(s.prepared("t"));
        let r = reported(&mut s);
        assert_eq!(
            r,
            [
                ("t".into(), TaskState::Staging, None, Some("pulling app:v1: 1/10 MiB".into())),
                ("t".into(), TaskState::Staging, None, Some("pulling app:v1: 5/10 MiB".into())),
                ("t".into(), TaskState::Starting, None, None),
            ]
        );

        // A pull that fails: the task failed, with the cause.
        let mut s = AgentState::default();
        s.launch(launch("t"));
        s.prepare_failed("t", "pulling app:v1 from r:5000: not found: ...".into());
        assert_eq!(states(&mut s), [("t".to_string(), TaskState::Failed)]);

        // Killed while pulling: no more progress, and it does not start.
        let mut s = AgentState::default();
        s.launch(launch("t"));
        assert!(s.kill("t").is_empty());
        s.preparing("t", "pulling app:v1: 5/10 MiB".into());
        assert!(!s.prepared("t"));
        assert_eq!(states(&mut s), [("t".to_string(), TaskState::Killed)]);
    }

    #[test]
    fn ended_tasks_are_forgotten_after_their_retention_once_acknowledged() {
        let policy = crate::agent::GcPolicy {
            container_retention: std::time::Duration::from_secs(1),
            max_ended_containers: 10,
            ..Default::default()
        };
        let mut s = AgentState::default();
        for id in ["a", "b"] {
            s.launch(launch(id));
            assert!(s.may_start(id) && s.prepared(id));
            s.started(id, &format!("c-{id}"));
        }
        s.observed("a", Observed::Exited { start_failed: false, code: 0, message: String::new() });
        assert!(s.collect(1000, &policy).is_empty(), "its end is not acknowledged yet");
        let seqs: Vec<u64> = s.pending.updates.iter().map(|u| u.seq).collect();
        s.acked(&seqs);
        assert!(s.collect(1000, &policy).is_empty(), "timed from when first seen acknowledged");
        assert!(s.take_dirty(), "that time survives a restart");
        assert!(s.collect(2000, &policy).is_empty());
        let removed = s.collect(2001, &policy);
        assert!(
            matches!(&removed[..], [Effect::Remove { task, container }] if task == "a" && container == "c-a"),
            "{removed:?}"
        );
        assert!(!s.tasks.contains_key("a") && s.tasks.contains_key("b"), "a running task is never collected");
    }

    #[test]
    fn launches_and_kills_in_any_order_start_nothing_twice() {
        // A launch delivered twice starts once.
        let mut s = AgentState::default();
        assert!(s.launch(launch("t")).is_some());
        assert!(s.launch(launch("t")).is_none());

        // A kill before its launch: recorded, reported KILLED, and the launch then starts nothing.
        let mut s = AgentState::default();
        assert!(s.kill("t").is_empty());
        assert_eq!(states(&mut s), [("t".to_string(), TaskState::Killed)]);
        assert!(s.launch(launch("t")).is_none());

        // A kill while queued for a start: the start does not go ahead.
        let mut s = AgentState::default();
        s.launch(launch("t"));
        assert!(s.kill("t").is_empty(), "no container yet: nothing to stop");
        assert!(!s.may_start("t"));
        assert_eq!(states(&mut s), [("t".into(), TaskState::Killed)]);

        // A kill while the container was being created: stopped as soon as it is.
        let mut s = AgentState::default();
        s.launch(launch("t"));
        assert!(s.may_start("t") && s.prepared("t"));
        s.kill("t");
        assert!(matches!(&s.started("t", "c1")[..], [Effect::Stop { container, .. }] if container == "c1"));

        // A kill of a task that ended reports the end again (the master missed it).
        let mut s = AgentState::default();
        s.launch(launch("t"));
        s.start_failed("t", "no such image".into());
        s.take_fresh();
        assert!(s.kill("t").is_empty());
        assert_eq!(reported(&mut s), [("t".into(), TaskState::Error, None, Some("it had already ended".into()))]);
    }

    #[test]
    fn checks_run_only_while_the_task_runs_and_is_wanted() {
        let mut s = AgentState::default();
        let mut l = launch("t");
        l.health_checks = vec![check()];
        l.readiness_checks = vec![check()];
        s.launch(l);
        assert_eq!(s.checking("t"), Checking::NotYet);
        assert_eq!(names(&s.started("t", "c1")), ["HealthChecks", "ReadinessChecks"]);
        assert_eq!(s.checking("t"), Checking::Yes);
        s.take_fresh();
        s.health("t", false, Some("connection refused".into()));
        s.ready("t");
        let u = s.take_fresh();
        assert_eq!((u[0].healthy, u[0].ready, u[1].healthy, u[1].ready), (Some(false), None, None, Some(true)));
        s.kill("t");
        assert_eq!(s.checking("t"), Checking::Done);
        s.health("t", true, None);
        assert!(s.take_fresh().is_empty(), "a task being killed reports no check results");
    }

    #[test]
    fn after_a_restart_each_task_is_found_again_or_lost() {
        let entry = |container: &str, state, killed| TaskEntry {
            container_id: container.into(),
            state,
            kill_requested: killed,
            ..TaskEntry::new("t")
        };
        let check =
            |e: TaskEntry, found: Option<&str>, observed: Option<Observed>, effects: &[&str], want: &[TaskState]| {
                let mut s = AgentState::new(BTreeMap::from([(TaskId::from("t"), e.clone())]), Pending::default());
                let got = s.recovered("t", found.map(str::to_string), observed.clone());
                assert_eq!(names(&got), effects, "{e:?} found {found:?} observed {observed:?}");
                let states: Vec<TaskState> = states(&mut s).into_iter().map(|(_, st)| st).collect();
                assert_eq!(states, want, "{e:?} found {found:?} observed {observed:?}");
            };
        let exited = Observed::Exited { start_failed: false, code: 0, message: String::new() };
        // Running on: reattached, and RUNNING said if it was not yet.
        check(entry("c1", TaskState::Running, false), None, Some(Observed::Running), &[], &[]);
        check(entry("c1", TaskState::Starting, false), None, Some(Observed::Running), &[], &[TaskState::Running]);
        // Its start was cut short before the container's id was written down: found by name.
        check(entry("", TaskState::Starting, false), Some("c9"), Some(Observed::Running), &[], &[TaskState::Running]);
        check(entry("", TaskState::Starting, false), None, None, &[], &[TaskState::Lost]);
        // A kill begun before the restart is finished.
        check(entry("c1", TaskState::Running, true), None, Some(Observed::Running), &["Stop"], &[]);
        // Ended meanwhile: the watcher reports how; gone: lost.
        check(entry("c1", TaskState::Running, false), None, Some(exited), &[], &[]);
        check(
            entry("c1", TaskState::Running, false),
            None,
            Some(Observed::Lost("gone".into())),
            &[],
            &[TaskState::Lost],
        );
        // Ended before: nothing to do.
        check(entry("c1", TaskState::Finished, false), None, Some(Observed::Running), &[], &[]);
    }

    #[test]
    fn the_master_hears_of_every_task_until_it_acknowledged_the_end() {
        let mut s = AgentState::default();
        s.launch(launch("a"));
        s.launch(launch("b"));
        s.start_failed("b", "boom".into());
        let list = |s: &AgentState| s.reconcile_list().into_iter().map(|t| t.task_id).collect::<Vec<_>>();
        assert_eq!(list(&s), ["a", "b"]);
        let seqs: Vec<u64> = s.pending.updates.iter().filter(|u| u.task_id == "b").map(|u| u.seq).collect();
        s.acked(&seqs);
        assert_eq!(list(&s), ["a"], "b's end is acknowledged");
        assert_eq!(s.all_tasks().len(), 2, "a registration lists every task");
        let seqs: Vec<u64> = s.pending.updates.iter().map(|u| u.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "numbered in order: {seqs:?}");
    }

    #[test]
    fn only_what_a_restart_must_see_is_saved() {
        let mut s = AgentState::default();
        s.launch(launch("t"));
        assert!(s.take_dirty(), "a new task");
        s.may_start("t");
        assert!(!s.take_dirty());
        s.started("t", "c1");
        assert!(s.take_dirty(), "its container");
        s.health("t", true, None);
        assert!(!s.take_dirty(), "a check result is only an update");
        s.observed("t", Observed::Exited { start_failed: false, code: 0, message: String::new() });
        assert!(s.take_dirty(), "its end");
    }
}
