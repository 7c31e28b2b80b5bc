//! When a job's runs are due. ISO 8601 repeating intervals, as Chronos schedules jobs:
//! `R[n]/start/period`. `R` repeats forever, `Rn` n times (`R0`: never); an empty start is the
//! time of submission; the period is `PnYnMnWnDTnHnMnS` (seconds may have a fraction). In a time
//! zone (`scheduleTimeZone`, an IANA name) the start's wall-clock time is taken in that zone (as
//! Chronos does), and calendar parts (years, months, days) are added on that zone's calendar, so a
//! daily job stays at its local time across daylight-saving changes: a time the clocks skip runs
//! an hour later by the clock (the same instant as before the change), a time they repeat runs
//! the first time. Or crontab expressions (`*/5 * * * *`, via `croner`), in a zone likewise.

use std::str::FromStr;

use chrono::{DateTime, Months, NaiveDateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid schedule {input:?}: {reason}")]
pub struct ScheduleError {
    pub input: String,
    pub reason: String,
}

/// A period: calendar months and days, then a fixed number of milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub months: u32,
    pub days: u32,
    pub millis: u64,
}

impl Period {
    fn is_zero(&self) -> bool {
        self.months == 0 && self.days == 0 && self.millis == 0
    }

    /// `t` plus `k` periods (calendar parts first), or `None` past the end of time.
    fn times(&self, t: NaiveDateTime, k: u64) -> Option<NaiveDateTime> {
        let months = u32::try_from(u64::from(self.months).checked_mul(k)?).ok()?;
        let days = u64::from(self.days).checked_mul(k)?;
        let millis = i64::try_from(self.millis.checked_mul(k)?).ok()?;
        t.checked_add_months(Months::new(months))?
            .checked_add_days(chrono::Days::new(days))?
            .checked_add_signed(TimeDelta::try_milliseconds(millis)?)
    }
}

/// A parsed schedule, its start resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// How many runs (`None`: forever).
    pub repeats: Option<u64>,
    /// The first run's wall-clock time in `tz`.
    pub start_local: NaiveDateTime,
    pub tz: Tz,
    pub period: Period,
}

/// A wall-clock time in a zone, as an instant: a skipped time (the clocks jumped over it) is
/// taken an hour later by the clock, a repeated one the first time.
fn resolve(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        chrono::LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        chrono::LocalResult::Ambiguous(a, _) => Some(a.with_timezone(&Utc)),
        chrono::LocalResult::None => {
            tz.from_local_datetime(&(local + TimeDelta::hours(1))).earliest().map(|t| t.with_timezone(&Utc))
        }
    }
}

/// A time zone by its IANA name (`UTC`, `Europe/Berlin`); empty is UTC.
pub fn zone(name: &str) -> Result<Tz, String> {
    if name.is_empty() || name == "Z" {
        return Ok(Tz::UTC);
    }
    Tz::from_str(name).map_err(|_| format!("{name:?} is not an IANA time zone, as Europe/Berlin or UTC"))
}

impl Schedule {
    /// Parses `R[n]/start/period` in UTC; an empty start is `now`.
    pub fn parse(input: &str, now: DateTime<Utc>) -> Result<Schedule, ScheduleError> {
        Schedule::parse_in(input, Tz::UTC, now)
    }

    /// Parses `R[n]/start/period` in a time zone: the start's wall-clock time is taken there
    /// (its own offset, if it has one, is replaced, as Chronos does); an empty start is `now`.
    pub fn parse_in(input: &str, tz: Tz, now: DateTime<Utc>) -> Result<Schedule, ScheduleError> {
        let err = |reason: &str| ScheduleError { input: input.to_string(), reason: reason.to_string() };
        let parts: Vec<&str> = input.trim().split('/').collect();
        let [r, start, period] = parts[..] else {
            return Err(err("expected R[n]/start/period, as R/2026-01-01T00:00:00Z/PT1H"));
        };
        let repeats = match r.strip_prefix('R') {
            Some("") => None,
            Some(n) => Some(n.parse::<u64>().map_err(|_| err("the repetitions must be R or Rn, n a whole number"))?),
            None => return Err(err("it must begin with R")),
        };
        let start_local = if start.is_empty() {
            now.with_timezone(&tz).naive_local()
        } else if tz == Tz::UTC {
            DateTime::parse_from_rfc3339(start)
                .map_err(|e| err(&format!("the start {start:?} is not an ISO 8601 time with a zone ({e})")))?
                .with_timezone(&Utc)
                .naive_utc()
        } else {
            match DateTime::parse_from_rfc3339(start) {
                Ok(t) => t.naive_local(),
                Err(_) => NaiveDateTime::parse_from_str(start, "%Y-%m-%dT%H:%M:%S%.f")
                    .map_err(|e| err(&format!("the start {start:?} is not an ISO 8601 time ({e})")))?,
            }
        };
        let period = parse_period(period).map_err(|reason| err(&reason))?;
        if period.is_zero() && repeats != Some(1) && repeats != Some(0) {
            return Err(err("the period must be longer than zero"));
        }
        Ok(Schedule { repeats, start_local, tz, period })
    }

    /// The first run's instant.
    pub fn start(&self) -> Option<DateTime<Utc>> {
        resolve(self.tz, self.start_local)
    }

    /// When the `k`-th run (from 0) is due, if there is one.
    pub fn due(&self, k: u64) -> Option<DateTime<Utc>> {
        if self.repeats.is_some_and(|n| k >= n) {
            return None;
        }
        resolve(self.tz, self.period.times(self.start_local, k)?)
    }

    /// The index of the first run due after `t` (strictly), if any.
    pub fn first_after(&self, t: DateTime<Utc>) -> Option<u64> {
        let start = self.start()?;
        if start > t {
            return self.due(0).map(|_| 0);
        }
        // A fixed period is divided; a calendar one is stepped from an estimate.
        let elapsed = (t - start).num_milliseconds().max(0) as u64;
        let approx_ms = (u64::from(self.period.months).saturating_mul(28 * 86_400_000))
            .saturating_add(u64::from(self.period.days).saturating_mul(86_400_000))
            .saturating_add(self.period.millis);
        let mut k = elapsed.checked_div(approx_ms).unwrap_or(0).saturating_sub(1);
        // Calendar months are 28 to 31 days: at most a few steps back, then forward.
        while k > 0 && self.due(k).is_none_or(|d| d > t) {
            k -= 1;
        }
        loop {
            let due = self.due(k)?;
            if due > t {
                return Some(k);
            }
            k += 1;
        }
    }

    /// The schedule written back, its start explicit (in UTC, or with the zone's offset then).
    pub fn to_iso(&self) -> String {
        let r = self.repeats.map_or("R".to_string(), |n| format!("R{n}"));
        let start = match (self.tz, self.start()) {
            (Tz::UTC, _) | (_, None) => self.start_local.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            (tz, Some(t)) => t.with_timezone(&tz).format("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string(),
        };
        format!("{r}/{start}/{}", format_period(&self.period))
    }
}

/// A crontab expression in a time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    pub text: String,
    pub cron: croner::Cron,
    pub tz: Tz,
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &CronSchedule) -> bool {
        self.text == other.text && self.tz == other.tz
    }
}

impl CronSchedule {
    pub fn parse(text: &str, tz: Tz) -> Result<CronSchedule, ScheduleError> {
        let cron = croner::Cron::from_str(text.trim())
            .map_err(|e| ScheduleError { input: text.to_string(), reason: e.to_string() })?;
        Ok(CronSchedule { text: text.trim().to_string(), cron, tz })
    }
}

/// When a scheduled job's runs are due.
#[derive(Debug, Clone, PartialEq)]
pub enum When {
    Iso(Schedule),
    Cron(Box<CronSchedule>),
}

impl When {
    /// The first due time after `t` (strictly).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            When::Iso(s) => s.first_after(t).and_then(|k| s.due(k)),
            When::Cron(c) => {
                c.cron.find_next_occurrence(&t.with_timezone(&c.tz), false).ok().map(|d| d.with_timezone(&Utc))
            }
        }
    }

    /// The last due time at or before `t`, if any.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            When::Iso(s) => {
                let k = match s.first_after(t) {
                    Some(0) => return None,
                    Some(k) => k - 1,
                    None => match s.repeats {
                        Some(0) => return None,
                        Some(n) => n - 1,
                        // Forever, yet nothing after t: past the end of time.
                        None => return None,
                    },
                };
                s.due(k).filter(|d| *d <= t)
            }
            When::Cron(c) => {
                c.cron.find_previous_occurrence(&t.with_timezone(&c.tz), true).ok().map(|d| d.with_timezone(&Utc))
            }
        }
    }

    /// The first due time at or after `t`: where a new schedule starts.
    pub fn first_from(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.next_after(t - TimeDelta::milliseconds(1))
    }
}

fn parse_period(s: &str) -> Result<Period, String> {
    let bad = || format!("the period {s:?} is not an ISO 8601 duration, as PT1H or P1D");
    let add = |a: u32, b: Option<u32>| -> Result<u32, String> {
        b.and_then(|b| a.checked_add(b)).ok_or_else(|| format!("the period {s:?} is too long"))
    };
    let add_ms = |a: u64, b: Option<u64>| -> Result<u64, String> {
        b.and_then(|b| a.checked_add(b))
            .filter(|t| *t < u64::MAX / 2)
            .ok_or_else(|| format!("the period {s:?} is too long"))
    };
    let rest = s.strip_prefix('P').ok_or_else(bad)?;
    if rest.is_empty() {
        return Err(bad());
    }
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) if !t.is_empty() => (d, t),
        Some(_) => return Err(bad()),
        None => (rest, ""),
    };
    let mut p = Period { months: 0, days: 0, millis: 0 };
    let mut number = String::new();
    let take = |number: &mut String| -> Result<f64, String> {
        let n: f64 = number.parse().map_err(|_| bad())?;
        number.clear();
        if !n.is_finite() || n < 0.0 {
            return Err(bad());
        }
        Ok(n)
    };
    let whole = |n: f64| -> Result<u32, String> {
        if n.fract() != 0.0 || n > f64::from(u32::MAX / 12) {
            return Err(format!("the period {s:?}: years, months, weeks and days must be whole numbers"));
        }
        Ok(n as u32)
    };
    for c in date.chars() {
        match c {
            '0'..='9' | '.' => number.push(c),
            'Y' => p.months = add(p.months, whole(take(&mut number)?)?.checked_mul(12))?,
            'M' => p.months = add(p.months, Some(whole(take(&mut number)?)?))?,
            'W' => p.days = add(p.days, whole(take(&mut number)?)?.checked_mul(7))?,
            'D' => p.days = add(p.days, Some(whole(take(&mut number)?)?))?,
            _ => return Err(bad()),
        }
    }
    if !number.is_empty() {
        return Err(bad());
    }
    for c in time.chars() {
        match c {
            '0'..='9' | '.' => number.push(c),
            'H' => p.millis = add_ms(p.millis, Some((take(&mut number)? * 3_600_000.0) as u64))?,
            'M' => p.millis = add_ms(p.millis, Some((take(&mut number)? * 60_000.0) as u64))?,
            'S' => p.millis = add_ms(p.millis, Some((take(&mut number)? * 1000.0).round() as u64))?,
            _ => return Err(bad()),
        }
    }
    if !number.is_empty() {
        return Err(bad());
    }
    Ok(p)
}

fn format_period(p: &Period) -> String {
    let mut s = "P".to_string();
    let (years, months) = (p.months / 12, p.months % 12);
    if years > 0 {
        s += &format!("{years}Y");
    }
    if months > 0 {
        s += &format!("{months}M");
    }
    if p.days > 0 {
        s += &format!("{}D", p.days);
    }
    if p.millis > 0 || s == "P" {
        s.push('T');
        let (h, rest) = (p.millis / 3_600_000, p.millis % 3_600_000);
        let (m, ms) = (rest / 60_000, rest % 60_000);
        if h > 0 {
            s += &format!("{h}H");
        }
        if m > 0 {
            s += &format!("{m}M");
        }
        if ms > 0 || (h == 0 && m == 0) {
            if ms % 1000 == 0 {
                s += &format!("{}S", ms / 1000);
            } else {
                s += &format!("{}.{:03}S", ms / 1000, ms % 1000);
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn schedules_parse_or_say_what_is_wrong() {
        let now = at("2026-11-25T10:00:00Z");
        let ok = |input: &str, repeats: Option<u64>, start: &str, period: (u32, u32, u64)| {
            let s = Schedule::parse(input, now).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                (s.repeats, s.start().unwrap(), (s.period.months, s.period.days, s.period.millis)),
                (repeats, at(start), period),
                "{input}"
            );
        };
        ok("R/2026-11-25T17:22:00Z/PT2M", None, "2026-11-25T17:22:00Z", (0, 0, 120_000));
        ok("R5/2026-11-25T17:22:00.000Z/P1D", Some(5), "2026-11-25T17:22:00Z", (0, 1, 0));
        ok("R//PT10S", None, "2026-11-25T10:00:00Z", (0, 0, 10_000));
        ok("R/2026-01-31T00:00:00+01:00/P1Y2M1W3DT4H5M6.5S", None, "2026-01-30T23:00:00Z", (14, 10, 14_706_500));
        ok("R0/2026-11-25T17:22:00Z/PT1M", Some(0), "2026-11-25T17:22:00Z", (0, 0, 60_000));
        let bad = |input: &str, says: &str| {
            let e = Schedule::parse(input, now).unwrap_err().to_string();
            assert!(e.contains(says), "{input}: {e}");
        };
        bad("2026-11-25T17:22:00Z/PT2M", "R[n]/start/period");
        bad("X/2026-11-25T17:22:00Z/PT2M", "begin with R");
        bad("R-1/2026-11-25T17:22:00Z/PT2M", "whole number");
        bad("R/tomorrow/PT2M", "not an ISO 8601 time");
        bad("R/2026-11-25T17:22:00/PT2M", "with a zone");
        bad("R/2026-11-25T17:22:00Z/2M", "not an ISO 8601 duration");
        bad("R/2026-11-25T17:22:00Z/PT", "not an ISO 8601 duration");
        bad("R/2026-11-25T17:22:00Z/P1.5D", "whole numbers");
        bad("R/2026-11-25T17:22:00Z/PT0S", "longer than zero");
        bad("R/2026-11-25T17:22:00Z/P357913941Y357913941M", "too long");
        bad("R/2026-11-25T17:22:00Z/P300000000W300000000W300000000W", "too long");
        bad("R/2026-11-25T17:22:00Z/PT1e300H1e300H", "not an ISO 8601 duration");
        bad("R/2026-11-25T17:22:00Z/PT99999999999999999999H", "too long");
        // The longest periods there are still answer (no run due within the time chrono knows).
        let s = Schedule::parse("R/2026-01-01T00:00:00Z/P357913941Y", now).unwrap();
        assert_eq!(s.first_after(now + TimeDelta::days(1)), None);
    }

    #[test]
    fn runs_fall_on_the_calendar() {
        let now = at("2026-01-01T00:00:00Z");
        let s = Schedule::parse("R3/2026-01-31T12:00:00Z/P1M", now).unwrap();
        let dues: Vec<String> = (0..4).map(|k| s.due(k).map(|d| d.to_rfc3339()).unwrap_or_default()).collect();
        assert_eq!(dues, ["2026-01-31T12:00:00+00:00", "2026-02-28T12:00:00+00:00", "2026-03-31T12:00:00+00:00", ""]);
        assert_eq!(s.to_iso(), "R3/2026-01-31T12:00:00.000Z/P1M");
        let s = Schedule::parse("R/2026-01-01T00:00:00Z/PT1H30M0.25S", now).unwrap();
        assert_eq!(s.to_iso(), "R/2026-01-01T00:00:00.000Z/PT1H30M0.250S");
    }

    #[test]
    fn the_first_run_after_a_time_is_found_without_walking_every_period() {
        let now = at("2026-01-01T00:00:00Z");
        let s = Schedule::parse("R/2020-01-01T00:00:00Z/PT1S", now).unwrap();
        let k = s.first_after(at("2026-01-01T00:00:00Z")).unwrap();
        assert_eq!(s.due(k).unwrap(), at("2026-01-01T00:00:01Z"));
        let s = Schedule::parse("R/2020-01-31T00:00:00Z/P1M", now).unwrap();
        let k = s.first_after(at("2026-03-01T00:00:00Z")).unwrap();
        assert_eq!(s.due(k).unwrap(), at("2026-03-31T00:00:00Z"));
        let s = Schedule::parse("R2/2020-01-01T00:00:00Z/P1D", now).unwrap();
        assert_eq!(s.first_after(at("2026-01-01T00:00:00Z")), None, "no runs left");
        assert_eq!(s.first_after(at("2019-01-01T00:00:00Z")), Some(0));
    }

    #[test]
    fn a_daily_run_keeps_its_local_time_across_daylight_saving() {
        let berlin = zone("Europe/Berlin").unwrap();
        let now = at("2026-03-01T00:00:00Z");
        // 02:30 local: the clocks skip 02:00-03:00 on 2026-03-29 and repeat 02:00-03:00 on
        // 2026-10-25.
        let s = Schedule::parse_in("R/2026-03-27T02:30:00/P1D", berlin, now).unwrap();
        let utc: Vec<String> = (0..4).map(|k| s.due(k).unwrap().format("%m-%d %H:%M").to_string()).collect();
        assert_eq!(utc, ["03-27 01:30", "03-28 01:30", "03-29 01:30", "03-30 00:30"]);
        let s = Schedule::parse_in("R/2026-10-24T02:30:00+05:00/P1D", berlin, now).unwrap();
        let utc: Vec<String> = (0..3).map(|k| s.due(k).unwrap().format("%m-%d %H:%M").to_string()).collect();
        assert_eq!(utc, ["10-24 00:30", "10-25 00:30", "10-26 01:30"], "its own offset is replaced by the zone's");
        assert_eq!(s.to_iso(), "R/2026-10-24T02:30:00.000+02:00/P1D");
        assert!(zone("Mars/Olympus").unwrap_err().contains("not an IANA time zone"));
    }

    #[test]
    fn crontab_schedules_run_in_their_zone() {
        let new_york = zone("America/New_York").unwrap();
        let w = When::Cron(Box::new(CronSchedule::parse("0 9 * * 1-5", new_york).unwrap()));
        // Friday 2026-03-06 15:00 UTC is 10:00 in New York: next is Monday 09:00 EST.
        let next = w.next_after(at("2026-03-06T15:00:00Z")).unwrap();
        assert_eq!(next, at("2026-03-09T13:00:00Z"), "EDT from 03-08");
        assert_eq!(w.latest_at_or_before(at("2026-03-06T15:00:00Z")).unwrap(), at("2026-03-06T14:00:00Z"));
        assert_eq!(w.first_from(at("2026-03-09T13:00:00Z")).unwrap(), at("2026-03-09T13:00:00Z"));
        assert!(CronSchedule::parse("61 * * * *", Tz::UTC).is_err());
        let iso = When::Iso(Schedule::parse("R3/2026-01-01T00:00:00Z/PT1M", at("2026-01-01T00:00:00Z")).unwrap());
        assert_eq!(iso.latest_at_or_before(at("2026-01-01T00:01:30Z")).unwrap(), at("2026-01-01T00:01:00Z"));
        assert_eq!(iso.latest_at_or_before(at("2026-01-01T05:00:00Z")).unwrap(), at("2026-01-01T00:02:00Z"));
        assert_eq!(iso.next_after(at("2026-01-01T00:02:00Z")), None);
        assert_eq!(iso.latest_at_or_before(at("2025-12-31T00:00:00Z")), None);
    }

    proptest::proptest! {
        #[test]
        fn first_after_is_the_first_due_after(start in 0i64..4_000_000_000, months in 0u32..3, days in 0u32..40, secs in 0u64..100_000, after in 0i64..4_000_000_000) {
            proptest::prop_assume!(months + days > 0 || secs > 0);
            let start = DateTime::from_timestamp(start, 0).unwrap();
            let s = Schedule { repeats: None, start_local: start.naive_utc(), tz: Tz::UTC, period: Period { months, days, millis: secs * 1000 } };
            let t = DateTime::from_timestamp(after, 0).unwrap();
            if let Some(k) = s.first_after(t) {
                proptest::prop_assert!(s.due(k).unwrap() > t);
                proptest::prop_assert!(k == 0 || s.due(k - 1).unwrap() <= t);
            }
        }
    }
}
