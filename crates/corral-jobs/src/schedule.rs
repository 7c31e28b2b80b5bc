//! ISO 8601 repeating intervals, as Chronos schedules jobs: `R[n]/start/period`. `R` repeats
//! forever, `Rn` n times (`R0`: never); an empty start is the time of submission; the period is
//! `PnYnMnWnDTnHnMnS` (seconds may have a fraction). Calendar parts (years, months, days) are
//! added on the calendar in UTC, so a monthly job stays on its day of the month.

use chrono::{DateTime, Months, TimeDelta, Utc};

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
    fn times(&self, t: DateTime<Utc>, k: u64) -> Option<DateTime<Utc>> {
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
    pub start: DateTime<Utc>,
    pub period: Period,
}

impl Schedule {
    /// Parses `R[n]/start/period`; an empty start is `now`.
    pub fn parse(input: &str, now: DateTime<Utc>) -> Result<Schedule, ScheduleError> {
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
        let start = if start.is_empty() {
            now
        } else {
            DateTime::parse_from_rfc3339(start)
                .map_err(|e| err(&format!("the start {start:?} is not an ISO 8601 time with a zone ({e})")))?
                .with_timezone(&Utc)
        };
        let period = parse_period(period).map_err(|reason| err(&reason))?;
        if period.is_zero() && repeats != Some(1) && repeats != Some(0) {
            return Err(err("the period must be longer than zero"));
        }
        Ok(Schedule { repeats, start, period })
    }

    /// When the `k`-th run (from 0) is due, if there is one.
    pub fn due(&self, k: u64) -> Option<DateTime<Utc>> {
        if self.repeats.is_some_and(|n| k >= n) {
            return None;
        }
        self.period.times(self.start, k)
    }

    /// The index of the first run due after `t` (strictly), if any.
    pub fn first_after(&self, t: DateTime<Utc>) -> Option<u64> {
        if self.start > t {
            return self.due(0).map(|_| 0);
        }
        // A fixed period is divided; a calendar one is stepped from an estimate.
        let elapsed = (t - self.start).num_milliseconds().max(0) as u64;
        let approx_ms = u64::from(self.period.months) * 28 * 86_400_000
            + u64::from(self.period.days) * 86_400_000
            + self.period.millis;
        let mut k = elapsed.checked_div(approx_ms).unwrap_or(0).saturating_sub(1);
        // Calendar months are 28 to 31 days: at most a few steps back, then forward.
        while k > 0 && self.period.times(self.start, k).is_some_and(|d| d > t) {
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

    /// The schedule written back, its start explicit.
    pub fn to_iso(&self) -> String {
        let r = self.repeats.map_or("R".to_string(), |n| format!("R{n}"));
        format!("{r}/{}/{}", self.start.format("%Y-%m-%dT%H:%M:%S%.3fZ"), format_period(&self.period))
    }
}

fn parse_period(s: &str) -> Result<Period, String> {
    let bad = || format!("the period {s:?} is not an ISO 8601 duration, as PT1H or P1D");
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
            'Y' => p.months += whole(take(&mut number)?)? * 12,
            'M' => p.months += whole(take(&mut number)?)?,
            'W' => p.days += whole(take(&mut number)?)? * 7,
            'D' => p.days += whole(take(&mut number)?)?,
            _ => return Err(bad()),
        }
    }
    if !number.is_empty() {
        return Err(bad());
    }
    for c in time.chars() {
        match c {
            '0'..='9' | '.' => number.push(c),
            'H' => p.millis += (take(&mut number)? * 3_600_000.0) as u64,
            'M' => p.millis += (take(&mut number)? * 60_000.0) as u64,
            'S' => p.millis += (take(&mut number)? * 1000.0).round() as u64,
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
                (s.repeats, s.start, (s.period.months, s.period.days, s.period.millis)),
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

    proptest::proptest! {
        #[test]
        fn first_after_is_the_first_due_after(start in 0i64..4_000_000_000, months in 0u32..3, days in 0u32..40, secs in 0u64..100_000, after in 0i64..4_000_000_000) {
            proptest::prop_assume!(months + days > 0 || secs > 0);
            let start = DateTime::from_timestamp(start, 0).unwrap();
            let s = Schedule { repeats: None, start, period: Period { months, days, millis: secs * 1000 } };
            let t = DateTime::from_timestamp(after, 0).unwrap();
            if let Some(k) = s.first_after(t) {
                proptest::prop_assert!(s.due(k).unwrap() > t);
                proptest::prop_assert!(k == 0 || s.due(k - 1).unwrap() <= t);
            }
        }
    }
}
