//! Which scheduled run is due, from a job's durable state and the time. The state is the due
//! time of the next scheduled run not yet launched: advancing it and recording the run it
//! launches are one commit, so after any restart each due run is launched once, none skipped
//! (beyond the job's policy for runs missed while nothing ran) and none doubled.

use chrono::{DateTime, Utc};

use crate::schedule::When;

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
    /// Launch the run due at this time.
    pub launch: Option<DateTime<Utc>>,
    /// The due time of the next run not yet launched, after this step (`None`: no more).
    pub next: Option<DateTime<Utc>>,
}

/// Decides for a scheduled job whose next unlaunched run is due at `next`. `busy`: a run of the
/// job is under way and the job may not overlap it (its due run waits, and starts when it ends).
pub fn step(
    when: &When,
    next: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    missed: Missed,
    epsilon_ms: u64,
    busy: bool,
) -> Step {
    let idle = Step { launch: None, next };
    let Some(due) = next else { return idle };
    if due > now || busy {
        return idle;
    }
    // The latest run due by now; the ones between `due` and it were missed.
    let latest = when.latest_at_or_before(now).filter(|l| *l >= due).unwrap_or(due);
    let following = when.next_after(latest);
    let late_ms = (now - latest).num_milliseconds().max(0) as u64;
    match missed {
        Missed::Skip if late_ms > epsilon_ms => Step { launch: None, next: following },
        _ => Step { launch: Some(latest), next: following },
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
    use crate::schedule::Schedule;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn when(s: &str) -> When {
        When::Iso(Schedule::parse(s, at("2026-01-01T00:00:00Z")).unwrap())
    }

    #[test]
    fn each_due_run_is_launched_once() {
        let w = when("R/2026-01-01T00:00:00Z/PT1M");
        let check = |next: &str, now: &str, missed: Missed, busy: bool, want: Option<&str>, want_next: &str| {
            let got = step(&w, Some(at(next)), at(now), missed, 60_000, busy);
            assert_eq!(got.launch, want.map(at), "next {next} at {now} {missed:?} busy {busy}");
            assert_eq!(got.next, Some(at(want_next)), "next {next} at {now}");
        };
        // Not due yet; due now; just after.
        check("2026-01-01T00:00:00Z", "2025-12-31T23:59:59Z", Missed::RunOnce, false, None, "2026-01-01T00:00:00Z");
        check(
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00Z",
            Missed::RunOnce,
            false,
            Some("2026-01-01T00:00:00Z"),
            "2026-01-01T00:01:00Z",
        );
        check("2026-01-01T00:01:00Z", "2026-01-01T00:00:30Z", Missed::RunOnce, false, None, "2026-01-01T00:01:00Z");
        // Three missed while down: one run makes up for them, or they are skipped.
        check(
            "2026-01-01T00:01:00Z",
            "2026-01-01T00:04:30Z",
            Missed::RunOnce,
            false,
            Some("2026-01-01T00:04:00Z"),
            "2026-01-01T00:05:00Z",
        );
        check(
            "2026-01-01T00:01:00Z",
            "2026-01-01T00:04:30Z",
            Missed::Skip,
            false,
            Some("2026-01-01T00:04:00Z"),
            "2026-01-01T00:05:00Z",
        );
        // A run under way holds the next one back.
        check("2026-01-01T00:01:00Z", "2026-01-01T00:01:00Z", Missed::RunOnce, true, None, "2026-01-01T00:01:00Z");
        // A master down for ten minutes: with skip, a run 90 s late is not made up.
        let w10 = when("R/2026-01-01T00:00:00Z/PT10M");
        let got = step(&w10, Some(at("2026-01-01T00:10:00Z")), at("2026-01-01T00:11:30Z"), Missed::Skip, 60_000, false);
        assert_eq!(got, Step { launch: None, next: Some(at("2026-01-01T00:20:00Z")) });
    }

    #[test]
    fn a_finite_schedule_ends() {
        let w = when("R2/2026-01-01T00:00:00Z/PT1M");
        let got = step(&w, Some(at("2026-01-01T00:00:00Z")), at("2026-01-01T01:00:00Z"), Missed::RunOnce, 0, false);
        assert_eq!(got, Step { launch: Some(at("2026-01-01T00:01:00Z")), next: None });
        assert_eq!(step(&w, None, at("2026-01-01T01:00:00Z"), Missed::RunOnce, 0, false).launch, None);
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
