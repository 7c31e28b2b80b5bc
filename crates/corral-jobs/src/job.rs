//! A job definition validated into what the framework runs: every problem is listed, each
//! naming its field.

use chrono::{DateTime, Utc};

use crate::plan::Missed;
use crate::schedule::{zone, CronSchedule, Period, Schedule, When};
use crate::wire::JobDefinition;

/// What starts a job's runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    Schedule(When),
    /// It runs when every parent's latest run succeeded.
    Parents(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub name: String,
    /// What runs: `/bin/sh -c COMMAND` for a shell job, else the command and its arguments.
    pub argv: Vec<String>,
    pub trigger: Trigger,
    /// Attempts after a failed one.
    pub retries: u32,
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    pub disabled: bool,
    pub concurrent: bool,
    pub user: Option<String>,
    pub image: Option<String>,
    /// `container.forcePullImage`: agents pull the image at every run.
    pub force_pull: bool,
    pub env: Vec<(String, String)>,
    pub epsilon_ms: u64,
    pub missed: Missed,
    /// Where its runs may go: `[attribute, EQUALS|LIKE|UNLIKE, value]`, Chronos's operators
    /// (`hostname` is the agent's name).
    pub constraints: Vec<[String; 3]>,
}

/// One problem with a definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: &'static str,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem with a definition, as one message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
pub struct Invalid(pub Vec<Problem>);

pub const DEFAULT_RETRIES: u32 = 2;
pub const DEFAULT_CPUS: f64 = 0.1;
pub const DEFAULT_MEM: f64 = 128.0;
pub const DEFAULT_DISK: f64 = 256.0;
pub const DEFAULT_EPSILON_MS: u64 = 60_000;

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 200 && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// Whether `user` (`name[:group]` or `uid[:gid]`) is uid 0 as the runtime resolves it.
fn is_root(user: &str) -> bool {
    let name = user.split(':').next().unwrap_or("").trim();
    name == "root" || name.trim_start_matches('+').parse::<u32>() == Ok(0)
}

impl Job {
    /// What of this job only an admin may run: a command on the host (no container image),
    /// root. Empty for an ordinary job.
    pub fn privileges(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.image.is_none() {
            out.push("a command without a container image runs on the host");
        }
        // Every job runs on the agent's network (no own network until CNI lands), which also
        // means without a user namespace.
        out.push("host networking (every job runs on the host's network)");
        if self.user.as_deref().is_some_and(is_root) {
            out.push("runAsUser root");
        }
        out
    }

    /// Validates a definition submitted at `now` (an empty schedule start means `now`).
    pub fn from_definition(d: &JobDefinition, now: DateTime<Utc>) -> Result<Job, Invalid> {
        let mut problems = Vec::new();
        let mut bad = |field: &'static str, message: String| problems.push(Problem { field, message });
        if !valid_name(&d.name) {
            bad("name", format!("{:?} must be letters, digits, '_', '.' or '-' (at most 200)", d.name));
        }
        let command = d.command.clone().unwrap_or_default();
        let image = d.container.as_ref().map(|c| c.image.clone());
        if command.trim().is_empty() && image.is_none() {
            bad("command", "a job needs a command (or a container image whose own command runs)".into());
        }
        let shell = d.shell.unwrap_or(true);
        let arguments = d.arguments.clone().unwrap_or_default();
        if shell && !arguments.is_empty() {
            bad("arguments", "arguments are for jobs with shell: false".into());
        }
        let argv = if command.trim().is_empty() {
            Vec::new()
        } else if shell {
            vec!["/bin/sh".into(), "-c".into(), command.clone()]
        } else {
            std::iter::once(command.clone()).chain(arguments).collect()
        };
        let parents = d.parents.clone().unwrap_or_default();
        let tz = match zone(d.schedule_time_zone.as_deref().unwrap_or("")) {
            Ok(tz) => tz,
            Err(e) => {
                bad("scheduleTimeZone", e);
                chrono_tz::Tz::UTC
            }
        };
        let schedule = d.schedule.as_deref().filter(|s| !s.is_empty());
        let cron = d.cron.as_deref().filter(|s| !s.is_empty());
        let trigger = match (schedule, cron, parents.is_empty()) {
            (Some(_), Some(_), _) => {
                bad("cron", "a job has a schedule or a cron expression, not both".into());
                None
            }
            (Some(_), _, false) | (_, Some(_), false) => {
                bad("parents", "a job has a schedule or parents, not both".into());
                None
            }
            (None, Some(c), true) => match CronSchedule::parse(c, tz) {
                Ok(c) => Some(Trigger::Schedule(When::Cron(Box::new(c)))),
                Err(e) => {
                    bad("cron", format!("{:?}: {}", e.input, e.reason));
                    None
                }
            },
            (Some(s), None, true) => match Schedule::parse_in(s, tz, now) {
                Ok(s) => Some(Trigger::Schedule(When::Iso(s))),
                Err(e) => {
                    bad("schedule", e.reason);
                    None
                }
            },
            (None, None, false) => {
                if parents.iter().any(|p| p == &d.name) {
                    bad("parents", format!("{} cannot be its own parent", d.name));
                }
                Some(Trigger::Parents(parents))
            }
            (None, None, true) => {
                bad("schedule", "a job needs a schedule (R/start/period), a cron expression or parents".into());
                None
            }
        };
        let retries = d.retries.unwrap_or(i64::from(DEFAULT_RETRIES));
        if !(0..=100).contains(&retries) {
            bad("retries", format!("must be 0 to 100, not {retries}"));
        }
        // Missing or 0: the default, as Chronos has it.
        let cpus = d.cpus.filter(|c| *c != 0.0).unwrap_or(DEFAULT_CPUS);
        use corral_alloc::resources::{show, MAX_TASK_CPUS, MAX_TASK_DISK_MIB, MAX_TASK_MEM_MIB};
        if !(cpus.is_finite() && cpus > 0.0 && cpus <= MAX_TASK_CPUS) {
            bad("cpus", format!("must be a positive number up to {MAX_TASK_CPUS}, not {}", show(cpus)));
        }
        let mem = d.mem.filter(|m| *m != 0.0).unwrap_or(DEFAULT_MEM);
        if !(mem.is_finite() && (1.0..=MAX_TASK_MEM_MIB).contains(&mem)) {
            bad("mem", format!("must be 1 to {MAX_TASK_MEM_MIB} (MiB), not {}", show(mem)));
        }
        let disk = d.disk.filter(|m| *m != 0.0).unwrap_or(DEFAULT_DISK);
        if !(disk.is_finite() && (0.0..=MAX_TASK_DISK_MIB).contains(&disk)) {
            bad("disk", format!("must be 0 to {MAX_TASK_DISK_MIB} (MiB), not {}", show(disk)));
        }
        let epsilon_ms = match d.epsilon.as_deref() {
            None | Some("") => DEFAULT_EPSILON_MS,
            Some(e) => match Schedule::parse(&format!("R1/2000-01-01T00:00:00Z/{e}"), now) {
                Ok(Schedule { period: Period { months: 0, days, millis }, .. }) => {
                    u64::from(days) * 86_400_000 + millis
                }
                _ => {
                    bad("epsilon", format!("{e:?} is not an ISO 8601 duration of days, hours, minutes or seconds"));
                    0
                }
            },
        };
        let missed = match d.missed_runs.as_deref() {
            None | Some("runOnce") => Missed::RunOnce,
            Some("skip") => Missed::Skip,
            Some(other) => {
                bad("missedRuns", format!("{other:?} must be runOnce or skip"));
                Missed::RunOnce
            }
        };
        let mut env = Vec::new();
        for v in d.environment_variables.iter().flatten() {
            if v.name.is_empty() || v.name.contains('=') {
                bad("environmentVariables", format!("{:?} is not a variable name", v.name));
            }
            env.push((v.name.clone(), v.value.clone()));
        }
        if let Some(c) = &d.container {
            if !matches!(c.kind.as_deref(), None | Some("DOCKER" | "MESOS" | "docker" | "mesos")) {
                bad("container.type", format!("{:?} must be DOCKER or MESOS", c.kind.as_deref().unwrap_or("")));
            }
            if c.image.trim().is_empty() {
                bad("container.image", "an image is needed".into());
            }
            if c.volumes.as_ref().is_some_and(|v| !v.is_empty()) {
                bad("container.volumes", "volumes are not supported for jobs yet".into());
            }
            if !matches!(c.network.as_deref(), None | Some("HOST" | "host")) {
                bad("container.network", "only HOST networking is supported for jobs yet".into());
            }
        }
        let mut constraints = Vec::new();
        for c in d.constraints.iter().flatten() {
            match &c[..] {
                [field, op, value] if !field.is_empty() && ["EQUALS", "LIKE", "UNLIKE"].contains(&op.as_str()) => {
                    constraints.push([field.clone(), op.clone(), value.clone()]);
                }
                _ => bad("constraints", format!("{c:?}: expected [attribute, EQUALS|LIKE|UNLIKE, value]")),
            }
        }
        // Chronos fields not done yet: refused unless at their defaults.
        let unsupported: [(&'static str, bool); 8] = [
            ("async", d.async_ == Some(true)),
            ("softError", d.soft_error == Some(true)),
            ("highPriority", d.high_priority == Some(true)),
            ("dataProcessingJobType", d.data_processing_job_type == Some(true)),
            ("uris", d.uris.as_ref().is_some_and(|u| !u.is_empty())),
            ("fetch", d.fetch.as_ref().is_some_and(|f| !f.is_empty())),
            ("executor", d.executor.as_ref().is_some_and(|e| !e.is_empty())),
            ("executorFlags", d.executor_flags.as_ref().is_some_and(|e| !e.is_empty())),
        ];
        for (field, set) in unsupported {
            if set {
                bad(field, "not supported yet".into());
            }
        }
        if d.task_info_data.as_ref().is_some_and(|t| !t.is_empty()) {
            bad("taskInfoData", "not supported yet".into());
        }
        let user = d.run_as_user.clone().filter(|u| !u.is_empty());
        match (problems.is_empty(), trigger) {
            (true, Some(trigger)) => Ok(Job {
                name: d.name.clone(),
                argv,
                trigger,
                retries: retries as u32,
                cpus,
                mem,
                disk,
                disabled: d.disabled.unwrap_or(false),
                concurrent: d.concurrent.unwrap_or(false),
                user,
                image,
                force_pull: d.container.as_ref().and_then(|c| c.force_pull_image).unwrap_or(false),
                env,
                epsilon_ms,
                missed,
                constraints,
            }),
            _ => Err(Invalid(problems)),
        }
    }

    pub fn parents(&self) -> &[String] {
        match &self.trigger {
            Trigger::Parents(p) => p,
            Trigger::Schedule(_) => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn def(json: serde_json::Value) -> JobDefinition {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn root_is_root_however_it_is_spelled() {
        for user in ["root", "root:root", "0", "00", "+0", "0:0", "root:1"] {
            assert!(is_root(user), "{user}");
        }
        for user in ["nobody", "1000", "rooty", "10", ""] {
            assert!(!is_root(user), "{user}");
        }
    }

    #[test]
    fn a_chronos_job_becomes_a_job() {
        let j = Job::from_definition(
            &def(serde_json::json!({
                "name": "nightly-report.v2", "command": "echo hi", "schedule": "R/2026-11-25T17:22:00Z/PT2M",
                "owner": "ops@example.com", "successCount": 3, "lastSuccess": "", "environmentVariables": [{"name": "A", "value": "1"}]
            })),
            now(),
        )
        .unwrap();
        assert_eq!(j.argv, ["/bin/sh", "-c", "echo hi"]);
        assert_eq!((j.retries, j.cpus, j.mem, j.concurrent, j.epsilon_ms), (2, 0.1, 128.0, false, 60_000));
        assert_eq!(j.env, [("A".to_string(), "1".to_string())]);
        let j = Job::from_definition(
            &def(serde_json::json!({"name": "b", "command": "/bin/echo", "shell": false, "arguments": ["x"], "parents": ["a"]})),
            now(),
        )
        .unwrap();
        assert_eq!(
            (j.argv.clone(), j.parents().to_vec()),
            (vec!["/bin/echo".to_string(), "x".to_string()], vec!["a".to_string()])
        );
    }

    #[test]
    fn every_problem_is_named() {
        let check = |json: serde_json::Value, fields: &[&str]| {
            let e = Job::from_definition(&def(json.clone()), now()).unwrap_err();
            let got: Vec<&str> = e.0.iter().map(|p| p.field).collect();
            assert_eq!(got, fields, "{json}: {e}");
        };
        check(serde_json::json!({"name": "a b", "command": "x", "schedule": "R//PT1M"}), &["name"]);
        check(serde_json::json!({"name": "a", "schedule": "R//PT1M"}), &["command"]);
        check(serde_json::json!({"name": "a", "command": "x"}), &["schedule"]);
        check(serde_json::json!({"name": "a", "command": "x", "schedule": "R//PT1M", "parents": ["b"]}), &["parents"]);
        check(serde_json::json!({"name": "a", "command": "x", "schedule": "every minute"}), &["schedule"]);
        check(serde_json::json!({"name": "a", "command": "x", "parents": ["a"]}), &["parents"]);
        check(
            serde_json::json!({"name": "a", "command": "x", "schedule": "R//PT1M", "scheduleTimeZone": "Europe/Pariss", "retries": -1, "cpus": -1, "mem": 0.5, "uris": ["http://x"], "cron": "* * * * *"}),
            &["scheduleTimeZone", "cron", "retries", "cpus", "mem", "uris"],
        );
        check(
            serde_json::json!({"name": "a", "command": "x", "schedule": "R//PT1M", "cpus": 1e300, "mem": 1e20, "disk": 1e300}),
            &["cpus", "mem", "disk"],
        );
        check(
            serde_json::json!({"name": "a", "command": "x", "schedule": "R//PT1M", "constraints": [["rack", "GROUP_BY"], ["rack", "NEAR", "1"]]}),
            &["constraints", "constraints"],
        );
        check(
            serde_json::json!({"name": "a", "command": "x", "schedule": "R//PT1M", "epsilon": "P1M", "missedRuns": "later"}),
            &["epsilon", "missedRuns"],
        );
        check(serde_json::json!({"name": "a", "command": "x", "cron": "61 * * * *"}), &["cron"]);
        check(serde_json::json!({"name": "a", "command": "x", "cron": "* * * * *", "parents": ["b"]}), &["parents"]);
        let j = Job::from_definition(
            &def(serde_json::json!({"name": "a", "command": "x", "cron": "*/5 * * * *", "scheduleTimeZone": "Europe/Berlin"})),
            now(),
        )
        .unwrap();
        assert!(matches!(j.trigger, Trigger::Schedule(When::Cron(_))));
        let unknown =
            serde_json::from_value::<JobDefinition>(serde_json::json!({"name": "a", "colour": "red"})).unwrap_err();
        assert!(unknown.to_string().contains("colour"), "{unknown}");
    }
}
