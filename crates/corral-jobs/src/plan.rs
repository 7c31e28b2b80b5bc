//! Which scheduled run is due, from a job's durable state and the time. The state is the index
//! of the next scheduled run not yet launched: advancing it and recording the run it launches
//! are one commit, so after any restart each due run is launched once, none skipped (beyond the
//! job's policy for runs missed while nothing ran) and none doubled.

use chrono::{DateTime, Utc};

use crate::schedule::Schedule;

/// What happens to scheduled runs that were missed (the master, or the whole cluster, was down
/// when they were due).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Missed {
    /// One run makes up for all of them (the default).
    #[default]
    RunOnce,
    /// Runs more than the job's epsilon late are skipped.
    Skip,
}

/// The decision for one job at one time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Launch the run with this index, scheduled for this time.
    pub launch: Option<(u64, DateTime<Utc>)>,
    /// The index of the next run not yet launched, after this step.
    pub next: u64,
}

/// Decides for a scheduled job whose next unlaunched run is `next`. `busy`: a run of the job is
/// under way and the job may not overlap it (its due run waits, and starts when it ends).
pub fn step(schedule: &Schedule, next: u64, now: DateTime<Utc>, missed: Missed, epsilon_ms: u64, busy: bool) -> Step {
    let idle = Step { launch: None, next };
    let Some(due) = schedule.due(next) else { return idle };
    if due > now || busy {
        return idle;
    }
    // The latest run due by now (its index, and the next after it).
    let after = schedule.first_after(now);
    let latest = match after {
        Some(k) => k.saturating_sub(1).max(next),
        None => match schedule.repeats {
            Some(n) => n.saturating_sub(1).max(next),
            None => next,
        },
    };
    let latest_due = schedule.due(latest).unwrap_or(due);
    let following = latest + 1;
    let late_ms = (now - latest_due).num_milliseconds().max(0) as u64;
    match missed {
        Missed::RunOnce => Step { launch: Some((latest, latest_due)), next: following },
        Missed::Skip if late_ms <= epsilon_ms => Step { launch: Some((latest, latest_due)), next: following },
        Missed::Skip => Step { launch: None, next: following },
    }
}

/// Whether a dependent job is due: every parent succeeded since the child was last triggered
/// (`None`: never).
pub fn dependents_due(last_triggered: Option<i64>, parents_last_success: &[Option<i64>]) -> bool {
    !parents_last_success.is_empty()
        && parents_last_success.iter().all(|s| s.is_some_and(|s| last_triggered.is_none_or(|t| s > t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn each_due_run_is_launched_once() {
        let s = Schedule::parse("R/2026-01-01T00:00:00Z/PT1M", at("2026-01-01T00:00:00Z")).unwrap();
        let check = |next: u64, now: &str, missed: Missed, busy: bool, want: Option<(u64, &str)>, want_next: u64| {
            let got = step(&s, next, at(now), missed, 60_000, busy);
            assert_eq!(
                got.launch.map(|(k, t)| (k, t.to_rfc3339())),
                want.map(|(k, t)| (k, at(t).to_rfc3339())),
                "next {next} at {now} {missed:?} busy {busy}"
            );
            assert_eq!(got.next, want_next, "next {next} at {now}");
        };
        // Not due yet; due now; just after.
        check(0, "2025-12-31T23:59:59Z", Missed::RunOnce, false, None, 0);
        check(0, "2026-01-01T00:00:00Z", Missed::RunOnce, false, Some((0, "2026-01-01T00:00:00Z")), 1);
        check(1, "2026-01-01T00:00:30Z", Missed::RunOnce, false, None, 1);
        // Three missed while down: one run makes up for them, or they are skipped.
        check(1, "2026-01-01T00:04:30Z", Missed::RunOnce, false, Some((4, "2026-01-01T00:04:00Z")), 5);
        check(1, "2026-01-01T00:04:30Z", Missed::Skip, false, Some((4, "2026-01-01T00:04:00Z")), 5);
        check(1, "2026-01-01T00:05:59Z", Missed::Skip, false, Some((5, "2026-01-01T00:05:00Z")), 6);
        // A master down for ten minutes: with skip, a run 90 s late is not made up.
        let s2 = Schedule::parse("R/2026-01-01T00:00:00Z/PT10M", at("2026-01-01T00:00:00Z")).unwrap();
        assert_eq!(
            step(&s2, 1, at("2026-01-01T00:11:30Z"), Missed::Skip, 60_000, false),
            Step { launch: None, next: 2 }
        );
        // A run under way holds the next one back.
        check(1, "2026-01-01T00:01:00Z", Missed::RunOnce, true, None, 1);
    }

    #[test]
    fn a_finite_schedule_ends() {
        let s = Schedule::parse("R2/2026-01-01T00:00:00Z/PT1M", at("2026-01-01T00:00:00Z")).unwrap();
        assert_eq!(step(&s, 0, at("2026-01-01T01:00:00Z"), Missed::RunOnce, 0, false).launch.unwrap().0, 1);
        assert_eq!(step(&s, 2, at("2026-01-01T01:00:00Z"), Missed::RunOnce, 0, false), Step { launch: None, next: 2 });
    }

    #[test]
    fn a_child_runs_when_every_parent_succeeded_since_its_last_run() {
        assert!(dependents_due(None, &[Some(5), Some(7)]));
        assert!(!dependents_due(None, &[Some(5), None]));
        assert!(!dependents_due(Some(6), &[Some(5), Some(7)]), "a's success is older than the child's last run");
        assert!(dependents_due(Some(4), &[Some(5), Some(7)]));
        assert!(!dependents_due(None, &[]));
    }
}
