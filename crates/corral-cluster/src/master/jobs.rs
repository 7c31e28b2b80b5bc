//! The jobs framework (Chronos's job): jobs on ISO 8601 repeating schedules and jobs that run
//! when their parents succeed, each run a task, retried on failure. The decisions are
//! `corral_jobs`'s (pure); this module keeps the state, persists it in its own tables (`JOBS`,
//! `JOB_RUNS`), and turns decisions into tasks through the core's calls.
//!
//! Exactly once: a job's record holds the due time of its next scheduled run not yet launched.
//! The command that launches a run creates its task, records the run and advances that time,
//! and the owner commits the three together; after a restart the time says what is due next
//! and the recorded runs what is under way, so no due run is launched twice or forgotten.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Utc};
use corral_alloc::{Offer, Operation, Resources, Role};
use corral_jobs::job::{Job, Trigger};
use corral_jobs::plan::{self, Missed};
use corral_jobs::schedule::When;
use corral_jobs::wire::JobDefinition;
use corral_services::constraints::{AgentView, Constraint};
use serde::{Deserialize, Serialize};

use super::core::{Core, FrameworkId, FrameworkKind, MasterError, Placement, TaskRecord};
use super::framework::{Framework, Notice, NoticeKind};
use crate::store::{decode, JOBS, JOB_RUNS};
use crate::task::{transition, TaskEvent, TaskState};
use crate::wire::{self, AgentId, TaskId};

/// Runs kept per job for `history`.
const HISTORY_KEPT: usize = 50;
/// Jobs run in the default role.
const ROLE: &str = "*";

fn framework() -> FrameworkId {
    FrameworkId::Jobs(Role::parse(ROLE).expect("the default role"))
}

/// A job's counters, as Chronos reports them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    pub success_count: u64,
    pub error_count: u64,
    pub errors_since_last_success: u64,
    /// Wall-clock milliseconds.
    pub last_success_ms: Option<i64>,
    pub last_error_ms: Option<i64>,
}

/// One ended run (its last attempt).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub task: TaskId,
    pub scheduled_ms: i64,
    pub started_ms: Option<i64>,
    pub ended_ms: i64,
    pub state: TaskState,
    pub exit_code: Option<i32>,
    pub attempt: u32,
    pub agent: Option<AgentId>,
    pub message: Option<String>,
}

/// A job as persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredJob {
    definition: JobDefinition,
    /// When its next scheduled run not yet launched is due (wall ms; `None`: no more).
    next_due_ms: Option<i64>,
    stats: Stats,
    history: VecDeque<RunRecord>,
    /// When it was last started by its parents (wall ms).
    last_triggered_ms: Option<i64>,
}

/// A run under way, as persisted (by its task's id).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub job: String,
    /// The wall-clock time it was due (scheduled, or asked for).
    pub scheduled_ms: i64,
    /// 0 for the first attempt.
    pub attempt: u32,
    #[serde(default)]
    pub started_ms: Option<i64>,
}

#[derive(Clone)]
pub struct JobEntry {
    pub definition: JobDefinition,
    pub job: Job,
    /// Its constraints, as the services framework evaluates them (EQUALS is Marathon's IS).
    pub constraints: Vec<Constraint>,
    pub next_due_ms: Option<i64>,
    pub stats: Stats,
    pub history: VecDeque<RunRecord>,
    pub last_triggered_ms: Option<i64>,
}

impl JobEntry {
    fn stored(&self) -> StoredJob {
        StoredJob {
            definition: self.definition.clone(),
            next_due_ms: self.next_due_ms,
            stats: self.stats.clone(),
            history: self.history.clone(),
            last_triggered_ms: self.last_triggered_ms,
        }
    }
}

#[derive(Clone, Default)]
pub struct Jobs {
    pub jobs: imbl::OrdMap<String, JobEntry>,
    /// Runs under way, by task.
    pub runs: imbl::OrdMap<TaskId, Run>,
    /// Runs waiting for an offer, oldest first.
    queue: imbl::Vector<TaskId>,
}

fn wall(core: &Core, now_ms: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(core.wall_ms(now_ms) as i64).unwrap_or_default()
}

impl Jobs {
    /// Loads jobs and the runs under way.
    pub fn recover(core: &mut Core, snapshot: &corral_store::Snapshot) -> Result<Jobs, MasterError> {
        let mut me = Jobs::default();
        let now = wall(core, core.now());
        for (name, bytes) in snapshot.table(JOBS) {
            let stored: StoredJob = decode(JOBS, name, bytes)?;
            let job = Job::from_definition(&stored.definition, now)
                .map_err(|e| MasterError::Internal(format!("stored job {name} no longer validates: {e}")))?;
            let constraints = constraints_of(&job).map_err(MasterError::Internal)?;
            me.jobs.insert(
                name.to_string(),
                JobEntry {
                    definition: stored.definition,
                    job,
                    constraints,
                    next_due_ms: stored.next_due_ms,
                    stats: stored.stats,
                    history: stored.history,
                    last_triggered_ms: stored.last_triggered_ms,
                },
            );
        }
        let mut queued: Vec<(u64, TaskId)> = Vec::new();
        for (id, bytes) in snapshot.table(JOB_RUNS) {
            let run: Run = decode(JOB_RUNS, id, bytes)?;
            let id = TaskId::from(id);
            match core.task(&id) {
                Some(t) if !t.state.is_terminal() => {
                    if t.agent.is_none() {
                        queued.push((t.seq, id.clone()));
                    }
                    me.runs.insert(id, run);
                }
                // Its task is gone: nothing runs it.
                _ => core.delete(JOB_RUNS, &id),
            }
        }
        queued.sort();
        me.queue = queued.into_iter().map(|(_, id)| id).collect();
        core.add_framework(framework());
        if !me.queue.is_empty() {
            core.revive(&framework());
        }
        Ok(me)
    }

    fn save(&self, core: &mut Core, name: &str) {
        if let Some(e) = self.jobs.get(name) {
            core.put(JOBS, name, &e.stored());
        }
    }

    /// `POST /v1/scheduler/iso8601` and `/dependency`: creates or replaces a job.
    pub fn put_job(&mut self, core: &mut Core, definition: JobDefinition, now_ms: u64) -> Result<(), MasterError> {
        let now = wall(core, now_ms);
        let job = Job::from_definition(&definition, now).map_err(|e| MasterError::BadRequest(e.to_string()))?;
        let constraints = constraints_of(&job).map_err(MasterError::BadRequest)?;
        let mut parents: BTreeMap<String, Vec<String>> =
            self.jobs.iter().map(|(n, e)| (n.clone(), e.job.parents().to_vec())).collect();
        parents.insert(job.name.clone(), job.parents().to_vec());
        corral_jobs::dag::check(&parents).map_err(|e| MasterError::BadRequest(e.to_string()))?;
        let old = self.jobs.get(&job.name).cloned();
        // A new or changed schedule starts at its first run due from now on; an unchanged one
        // keeps its place.
        let same_schedule = |o: &JobEntry| {
            o.definition.schedule == definition.schedule
                && o.definition.cron == definition.cron
                && o.definition.schedule_time_zone == definition.schedule_time_zone
        };
        let next_due_ms = match (&job.trigger, &old) {
            (Trigger::Schedule(_), Some(o)) if same_schedule(o) => o.next_due_ms,
            (Trigger::Schedule(w), _) => w.first_from(now).map(|t| t.timestamp_millis()),
            (Trigger::Parents(_), _) => None,
        };
        let mut definition = definition;
        // What is stored is the definition as it was meant: an empty start is now.
        if let Trigger::Schedule(When::Iso(s)) = &job.trigger {
            if definition.schedule.as_deref().is_some_and(|x| x.contains("//")) {
                definition.schedule = Some(s.to_iso());
            }
        }
        let name = job.name.clone();
        let entry = JobEntry {
            definition,
            job,
            constraints,
            next_due_ms,
            stats: old.as_ref().map(|o| o.stats.clone()).unwrap_or_default(),
            history: old.as_ref().map(|o| o.history.clone()).unwrap_or_default(),
            last_triggered_ms: old.and_then(|o| o.last_triggered_ms),
        };
        self.jobs.insert(name.clone(), entry);
        self.save(core, &name);
        tracing::info!(job = %name, "job saved");
        // A job due now runs now, not on the next tick.
        self.tick_some(core, now_ms, std::iter::once(name))
    }

    /// `DELETE /v1/scheduler/job/{name}`: removes a job and kills its runs.
    pub fn delete_job(&mut self, core: &mut Core, name: &str) -> Result<(), MasterError> {
        if !self.jobs.contains_key(name) {
            return Err(not_found(name));
        }
        let parents: BTreeMap<String, Vec<String>> =
            self.jobs.iter().map(|(n, e)| (n.clone(), e.job.parents().to_vec())).collect();
        let children = corral_jobs::dag::children(&parents, name);
        if !children.is_empty() {
            return Err(MasterError::BadRequest(format!(
                "job {name} is a parent of {}: delete or change them first",
                children.join(", ")
            )));
        }
        self.kill_job_tasks(core, name)?;
        self.jobs.remove(name);
        core.delete(JOBS, name);
        Ok(())
    }

    /// `PUT /v1/scheduler/job/{name}`: a run now, outside the schedule.
    pub fn run_now(&mut self, core: &mut Core, name: &str, now_ms: u64) -> Result<TaskId, MasterError> {
        if !self.jobs.contains_key(name) {
            return Err(not_found(name));
        }
        let at = core.wall_ms(now_ms) as i64;
        Ok(self.start_run(core, name, at, 0))
    }

    /// `DELETE /v1/scheduler/task/kill/{name}`: kills the job's runs under way (not retried).
    pub fn kill_job_tasks(&mut self, core: &mut Core, name: &str) -> Result<(), MasterError> {
        if !self.jobs.contains_key(name) {
            return Err(not_found(name));
        }
        let ids: Vec<TaskId> = self.runs.iter().filter(|(_, r)| r.job == name).map(|(id, _)| id.clone()).collect();
        for id in ids {
            self.kill(core, &id, core.now())?;
        }
        Ok(())
    }

    /// Per job with runs under way: how many, and how many of those are placed on an agent.
    pub fn runs_per_job(&self, core: &Core) -> BTreeMap<&str, (usize, usize)> {
        let mut per: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for (id, r) in self.runs.iter() {
            let n = per.entry(r.job.as_str()).or_default();
            n.0 += 1;
            if core.task(id).is_some_and(|t| t.agent.is_some()) {
                n.1 += 1;
            }
        }
        per
    }

    /// Launches the due runs of these jobs.
    fn tick_some(
        &mut self,
        core: &mut Core,
        now_ms: u64,
        names: impl Iterator<Item = String>,
    ) -> Result<(), MasterError> {
        let now = wall(core, now_ms);
        let busy_jobs = self.runs_per_job(core);
        let due: Vec<(String, plan::Step)> = names
            .filter_map(|name| self.jobs.get(&name).map(|e| (name, e)))
            .filter(|(_, e)| !e.job.disabled)
            .filter_map(|(name, e)| {
                let Trigger::Schedule(s) = &e.job.trigger else { return None };
                let busy = !e.job.concurrent && busy_jobs.contains_key(name.as_str());
                let next = e.next_due_ms.and_then(DateTime::from_timestamp_millis);
                let step = plan::step(s, next, now, e.job.missed, e.job.epsilon_ms, busy);
                (step.next != next || step.launch.is_some()).then(|| (name.clone(), step))
            })
            .collect();
        for (name, step) in due {
            let entry = self.jobs.get_mut(&name).expect("listed");
            entry.next_due_ms = step.next.map(|t| t.timestamp_millis());
            self.save(core, &name);
            match step.launch {
                Some(at) => {
                    self.start_run(core, &name, at.timestamp_millis(), 0);
                }
                None => tracing::info!(job = %name, "missed runs skipped, as the job asks"),
            }
        }
        Ok(())
    }

    /// Creates a run's task (queued for an offer) and records the run.
    fn start_run(&mut self, core: &mut Core, name: &str, scheduled_ms: i64, attempt: u32) -> TaskId {
        let job = &self.jobs[name].job;
        // Chronos's shape (`ct:` time, attempt, job), in what a container name may hold.
        let short: String = name.chars().take(30).collect();
        let id = TaskId::from(format!("ct.{scheduled_ms}.{attempt}.{short}.{}", &core.ids().uuid()[..8]));
        let mut resources = format!("cpus:{:.3};mem:{}", job.cpus, job.mem.ceil() as u64);
        if job.disk > 0.0 {
            resources.push_str(&format!(";disk:{}", job.disk.ceil() as u64));
        }
        core.add_task(TaskRecord {
            id: id.clone(),
            name: name.to_string(),
            role: ROLE.into(),
            agent: None,
            state: TaskState::Staging,
            resources,
            cpus: job.cpus,
            mem_mb: job.mem.ceil() as u64,
            disk_mb: job.disk.ceil() as u64,
            image: job.image.clone(),
            command: job.argv.clone(),
            exit_code: None,
            message: None,
            pull: wire::Pull::Missing,
            seq: 0,
            framework: Some(FrameworkKind::Jobs),
            service: None,
            kill_sent_ms: None,
            placed_ms: None,
        });
        let run = Run { job: name.to_string(), scheduled_ms, attempt, started_ms: None };
        core.put(JOB_RUNS, &id, &run);
        self.runs.insert(id.clone(), run);
        self.queue.push_back(id.clone());
        core.revive(&framework());
        tracing::info!(job = %name, task = %id, attempt, "job run queued");
        id
    }

    /// A run's task ended: the job's counters, a retry, or its dependents.
    fn run_ended(&mut self, core: &mut Core, id: &TaskId, now_ms: u64) -> Result<(), MasterError> {
        let Some(run) = self.runs.remove(id) else { return Ok(()) };
        core.delete(JOB_RUNS, id);
        let Some(t) = core.task(id).cloned() else { return Ok(()) };
        core.remove_task(id);
        let now = core.wall_ms(now_ms) as i64;
        let Some(entry) = self.jobs.get_mut(&run.job) else { return Ok(()) };
        entry.history.push_back(RunRecord {
            task: id.clone(),
            scheduled_ms: run.scheduled_ms,
            started_ms: run.started_ms,
            ended_ms: now,
            state: t.state,
            exit_code: t.exit_code,
            attempt: run.attempt,
            agent: t.agent.clone(),
            message: t.message.clone(),
        });
        while entry.history.len() > HISTORY_KEPT {
            entry.history.pop_front();
        }
        let name = run.job.clone();
        if t.state == TaskState::Finished {
            entry.stats.success_count += 1;
            entry.stats.errors_since_last_success = 0;
            entry.stats.last_success_ms = Some(now);
            self.save(core, &name);
            return self.start_dependents(core, &name, now);
        }
        // A run killed on request is not retried; any other failure is, while retries last.
        let killed = t.state == TaskState::Killed;
        if !killed && run.attempt < entry.job.retries {
            self.save(core, &name);
            tracing::info!(job = %name, attempt = run.attempt + 1, "job run failed: retrying");
            self.start_run(core, &name, run.scheduled_ms, run.attempt + 1);
            return Ok(());
        }
        entry.stats.error_count += 1;
        entry.stats.errors_since_last_success += 1;
        entry.stats.last_error_ms = Some(now);
        tracing::info!(job = %name, state = t.state.as_str(), "job run failed");
        self.save(core, &name);
        Ok(())
    }

    /// After a job succeeded: each child whose parents all succeeded since its last run runs.
    fn start_dependents(&mut self, core: &mut Core, parent: &str, now: i64) -> Result<(), MasterError> {
        let parents: BTreeMap<String, Vec<String>> =
            self.jobs.iter().map(|(n, e)| (n.clone(), e.job.parents().to_vec())).collect();
        for child in corral_jobs::dag::children(&parents, parent) {
            let entry = &self.jobs[child];
            if entry.job.disabled {
                continue;
            }
            let successes: Vec<Option<i64>> =
                parents[child].iter().map(|p| self.jobs.get(p).and_then(|e| e.stats.last_success_ms)).collect();
            if plan::dependents_due(entry.last_triggered_ms, &successes) {
                let child = child.to_string();
                self.jobs.get_mut(&child).expect("listed").last_triggered_ms = Some(now);
                self.save(core, &child);
                self.start_run(core, &child, now, 0);
            }
        }
        Ok(())
    }
}

/// A job's constraints as the services framework's (Chronos's EQUALS is Marathon's IS).
fn constraints_of(job: &Job) -> Result<Vec<Constraint>, String> {
    job.constraints
        .iter()
        .map(|[field, op, value]| {
            let op = if op == "EQUALS" { "IS" } else { op.as_str() };
            Constraint::parse(&[field.clone(), op.to_string(), value.clone()]).map_err(|e| format!("constraints: {e}"))
        })
        .collect()
}

fn not_found(name: &str) -> MasterError {
    MasterError::NotFound(format!("job {name:?} does not exist"))
}

/// What an agent is told to run for a job's task.
fn launch_of(job: &Job, t: &TaskRecord) -> wire::Launch {
    let mut env: BTreeMap<String, String> = job.env.iter().cloned().collect();
    env.insert("CHRONOS_JOB_NAME".into(), job.name.clone());
    env.insert("MESOS_TASK_ID".into(), t.id.to_string());
    wire::Launch {
        task_id: t.id.clone(),
        name: t.name.clone(),
        role: t.role.clone(),
        cpus: t.cpus,
        mem_mb: t.mem_mb,
        image: t.image.clone(),
        pull: if job.force_pull { wire::Pull::Always } else { wire::Pull::Missing },
        disk_mb: t.disk_mb,
        command: t.command.clone(),
        env,
        user_name: job.user.clone(),
        host_network: true,
        ..wire::Launch::default()
    }
}

impl Framework for Jobs {
    fn offer(&mut self, core: &mut Core, o: Offer, now_ms: u64) {
        // Queued runs, oldest first, as many as the offer holds (jobs due together, thousands
        // at the same minute, go out together).
        let mut remaining = o.resources.clone();
        let mut operations = Vec::new();
        let mut placements = Vec::new();
        let mut placed: std::collections::HashSet<TaskId> = std::collections::HashSet::new();
        // Queued runs mostly share a few shapes: once one does not fit, its shape does not.
        let mut misfits: std::collections::HashSet<String> = std::collections::HashSet::new();
        let Some(agent) = core.agent(&o.agent) else {
            core.decline(o.id, 2_000, now_ms);
            return;
        };
        let view = AgentView { hostname: &agent.record.hostname, attributes: &agent.attributes };
        let mut unplaced_constrained = false;
        for id in self.queue.iter() {
            let Some(task) = core.task(id) else { continue };
            if misfits.contains(&task.resources) {
                continue;
            }
            let Ok(res) = Resources::parse(&task.resources) else { continue };
            let Some(left) = remaining.minus(&res) else {
                misfits.insert(task.resources.clone());
                continue;
            };
            let (Some(run), task) = (self.runs.get(id), task.clone()) else { continue };
            let Some(entry) = self.jobs.get(&run.job) else { continue };
            if entry.constraints.iter().any(|c| c.check(&view, &[], &[]).is_err()) {
                unplaced_constrained = true;
                continue;
            }
            remaining = left;
            operations.push(Operation::Launch(res));
            placements.push(Placement { launch: launch_of(&entry.job, &task), task });
            placed.insert(id.clone());
        }
        if placements.is_empty() {
            // Runs held back by a constraint get another look when the cluster changes.
            core.decline(o.id, if unplaced_constrained { 2_000 } else { u64::MAX / 4 }, now_ms);
            return;
        }
        if core.accept(&o, &operations, placements, 0, now_ms).is_err() {
            return;
        }
        self.queue.retain(|x| !placed.contains(x));
        if self.queue.is_empty() {
            core.suppress(&framework());
        }
    }

    fn notice(&mut self, core: &mut Core, notice: Notice, now_ms: u64) -> Result<(), MasterError> {
        if notice.kind != NoticeKind::State {
            return Ok(());
        }
        let Some(t) = core.task(&notice.task) else { return Ok(()) };
        if t.state.is_terminal() {
            return self.run_ended(core, &notice.task, now_ms);
        }
        if t.state == TaskState::Running {
            if let Some(run) = self.runs.get_mut(&notice.task).filter(|r| r.started_ms.is_none()) {
                run.started_ms = Some(core.wall_ms(now_ms) as i64);
                let run = run.clone();
                core.put(JOB_RUNS, &notice.task, &run);
            }
        }
        Ok(())
    }

    /// Launches every scheduled run that is due.
    fn tick(&mut self, core: &mut Core, now_ms: u64) -> Result<(), MasterError> {
        let names: Vec<String> = self.jobs.keys().cloned().collect();
        self.tick_some(core, now_ms, names.into_iter())
    }

    fn kill(&mut self, core: &mut Core, id: &str, _now_ms: u64) -> Result<(), MasterError> {
        let Some(t) = core.task(id).cloned() else { return Ok(()) };
        if t.state.is_terminal() {
            return Ok(());
        }
        if t.agent.is_none() {
            self.queue.retain(|x| x.as_str() != id);
            core.set_state(id, TaskState::Killed, None, Some("killed before it was placed".into()))?;
            let id = TaskId::from(id);
            return self.run_ended(core, &id, core.now());
        }
        let next = transition(t.state, TaskEvent::KillRequested).map_err(|e| MasterError::BadRequest(e.to_string()))?;
        core.set_state(id, next, None, None)?;
        core.kill(id);
        Ok(())
    }
}

/// Whether a job's missed runs are made up once or skipped, as its definition says.
pub fn missed_policy(e: &JobEntry) -> &'static str {
    match e.job.missed {
        Missed::RunOnce => "runOnce",
        Missed::Skip => "skip",
    }
}
