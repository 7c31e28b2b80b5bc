//! Marathon placement constraints: `[field, operator, value?]`, where the field is `hostname`
//! or an agent attribute. [`Constraint::check`] decides one candidate agent against the agents
//! that already run the app's tasks, and says why not.

use std::collections::BTreeMap;

use corral_alloc::attributes::Attributes;
use regex::Regex;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operator {
    /// Every task on a different value.
    Unique,
    /// Every task on this value (or, without one, the value of the first task).
    Cluster(Option<String>),
    /// Spread evenly over the values (at least `n` of them when given).
    GroupBy(Option<u32>),
    Like(String),
    Unlike(String),
    /// At most `n` tasks per value.
    MaxPer(u32),
    Is(String),
}

#[derive(Debug, Clone)]
pub struct Constraint {
    pub field: String,
    pub op: Operator,
    regex: Option<Regex>,
}

impl PartialEq for Constraint {
    fn eq(&self, other: &Constraint) -> bool {
        self.field == other.field && self.op == other.op
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("constraint {input:?}: {reason}")]
pub struct ConstraintError {
    pub input: String,
    pub reason: String,
}

/// What a constraint sees of an agent.
#[derive(Debug, Clone, Copy)]
pub struct AgentView<'a> {
    pub hostname: &'a str,
    pub attributes: &'a Attributes,
}

impl AgentView<'_> {
    fn value(&self, field: &str) -> Option<String> {
        if field == "hostname" {
            return Some(self.hostname.to_string());
        }
        self.attributes.get(field).cloned()
    }
}

impl Constraint {
    pub fn parse(parts: &[String]) -> Result<Constraint, ConstraintError> {
        let err = |reason: &str| ConstraintError { input: parts.join(":"), reason: reason.to_string() };
        let (field, op, value) = match parts {
            [f, o] => (f, o, None),
            [f, o, v] => (f, o, Some(v.clone())),
            _ => return Err(err("expected [field, operator] or [field, operator, value]")),
        };
        if field.is_empty() {
            return Err(err("the field is empty"));
        }
        let need = |v: Option<String>| v.ok_or_else(|| err("this operator needs a value"));
        let count = |v: Option<String>| -> Result<u32, ConstraintError> {
            need(v)?.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| err("the value must be a positive integer"))
        };
        let mut regex = None;
        let op = match op.as_str() {
            "UNIQUE" => Operator::Unique,
            "CLUSTER" => Operator::Cluster(value.filter(|v| !v.is_empty())),
            "GROUP_BY" => Operator::GroupBy(match value {
                Some(v) if !v.is_empty() => Some(count(Some(v))?),
                _ => None,
            }),
            "LIKE" | "UNLIKE" => {
                let v = need(value)?;
                regex =
                    Some(Regex::new(&format!("^(?:{v})$")).map_err(|e| err(&format!("bad regular expression: {e}")))?);
                if op == "LIKE" {
                    Operator::Like(v)
                } else {
                    Operator::Unlike(v)
                }
            }
            "MAX_PER" => Operator::MaxPer(count(value)?),
            "IS" => Operator::Is(need(value)?),
            other => {
                return Err(err(&format!(
                    "unknown operator {other:?} (expected UNIQUE, CLUSTER, GROUP_BY, LIKE, UNLIKE, MAX_PER or IS)"
                )))
            }
        };
        Ok(Constraint { field: field.clone(), op, regex })
    }

    /// Whether one more task may go to `candidate`, given where the app's tasks run now;
    /// `Err` says why not.
    pub fn check(&self, candidate: &AgentView, placed: &[AgentView], all_values: &[String]) -> Result<(), String> {
        let f = &self.field;
        let value = candidate.value(f);
        let placed_values: Vec<String> = placed.iter().filter_map(|a| a.value(f)).collect();
        let count_of = |v: &str| placed_values.iter().filter(|p| *p == v).count();
        match &self.op {
            Operator::Unique => {
                let v = value.ok_or_else(|| format!("{f}: the agent has no such attribute"))?;
                if count_of(&v) > 0 {
                    return Err(format!("{f} UNIQUE: a task already runs on {f}={v}"));
                }
            }
            Operator::Cluster(want) => {
                let v = value.ok_or_else(|| format!("{f}: the agent has no such attribute"))?;
                let want = want.clone().or_else(|| placed_values.first().cloned());
                if let Some(w) = want {
                    if v != w {
                        return Err(format!("{f} CLUSTER {w}: the agent has {f}={v}"));
                    }
                }
            }
            Operator::GroupBy(min) => {
                let v = value.ok_or_else(|| format!("{f}: the agent has no such attribute"))?;
                // Spread: this value may take one more only if no other known value has fewer.
                let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
                for known in all_values {
                    counts.insert(known, count_of(known));
                }
                counts.insert(&v, count_of(&v));
                let groups = counts.len().max(min.unwrap_or(0) as usize);
                let fewest = if counts.len() < groups { 0 } else { counts.values().copied().min().unwrap_or(0) };
                let mine = count_of(&v);
                if mine > fewest {
                    return Err(format!("{f} GROUP_BY: {f}={v} has {mine} tasks, another value has {fewest}"));
                }
            }
            Operator::Like(pattern) | Operator::Unlike(pattern) => {
                let re = self.regex.as_ref().expect("parsed with the pattern");
                let like = matches!(self.op, Operator::Like(_));
                let matched = value.as_deref().is_some_and(|v| re.is_match(v));
                if matched != like {
                    let shown = value.unwrap_or_else(|| "(unset)".into());
                    let op = if like { "LIKE" } else { "UNLIKE" };
                    return Err(format!("{f} {op} {pattern}: the agent has {f}={shown}"));
                }
            }
            Operator::MaxPer(n) => {
                let v = value.ok_or_else(|| format!("{f}: the agent has no such attribute"))?;
                if count_of(&v) >= *n as usize {
                    return Err(format!("{f} MAX_PER {n}: {f}={v} already runs {n}"));
                }
            }
            Operator::Is(want) => {
                if value.as_deref() != Some(want.as_str()) {
                    let shown = value.unwrap_or_else(|| "(unset)".into());
                    return Err(format!("{f} IS {want}: the agent has {f}={shown}"));
                }
            }
        }
        Ok(())
    }

    /// The field's value on an agent (for GROUP_BY's list of known values).
    pub fn value_of(&self, agent: &AgentView) -> Option<String> {
        agent.value(&self.field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(parts: &[&str]) -> Constraint {
        Constraint::parse(&parts.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn attrs(s: &str) -> Attributes {
        corral_alloc::attributes::parse(s).unwrap()
    }

    /// `check(constraint, candidate "host;attrs", placed hosts, known values) == ok`.
    fn check(parts: &[&str], candidate: (&str, &str), placed: &[(&str, &str)], values: &[&str]) -> Result<(), String> {
        let ca = attrs(candidate.1);
        let pa: Vec<Attributes> = placed.iter().map(|p| attrs(p.1)).collect();
        let views: Vec<AgentView> =
            placed.iter().zip(&pa).map(|(p, a)| AgentView { hostname: p.0, attributes: a }).collect();
        let values: Vec<String> = values.iter().map(|s| s.to_string()).collect();
        c(parts).check(&AgentView { hostname: candidate.0, attributes: &ca }, &views, &values)
    }

    #[test]
    fn operators() {
        assert!(check(&["hostname", "UNIQUE"], ("a", ""), &[("b", "")], &[]).is_ok());
        assert!(check(&["hostname", "UNIQUE"], ("a", ""), &[("a", "")], &[]).unwrap_err().contains("UNIQUE"));
        assert!(check(&["rack", "CLUSTER", "r1"], ("a", "rack:r1"), &[], &[]).is_ok());
        assert!(check(&["rack", "CLUSTER", "r1"], ("a", "rack:r2"), &[], &[]).is_err());
        assert!(check(&["rack", "CLUSTER"], ("a", "rack:r2"), &[("b", "rack:r1")], &[]).is_err());
        assert!(check(&["rack", "CLUSTER"], ("a", "rack:r2"), &[], &[]).is_ok());
        assert!(check(&["hostname", "LIKE", "web-[0-9]+"], ("web-12", ""), &[], &[]).is_ok());
        assert!(check(&["hostname", "LIKE", "web-[0-9]+"], ("xweb-12", ""), &[], &[]).is_err(), "anchored");
        assert!(check(&["hostname", "UNLIKE", "db.*"], ("db1", ""), &[], &[]).is_err());
        assert!(check(&["zone", "UNLIKE", "eu"], ("a", ""), &[], &[]).is_ok(), "unset matches nothing");
        assert!(check(&["zone", "IS", "eu"], ("a", "zone:eu"), &[], &[]).is_ok());
        assert!(check(&["zone", "IS", "eu"], ("a", "zone:us"), &[], &[]).is_err());
        assert!(check(&["zone", "MAX_PER", "2"], ("a", "zone:eu"), &[("b", "zone:eu")], &[]).is_ok());
        assert!(check(&["zone", "MAX_PER", "2"], ("a", "zone:eu"), &[("b", "zone:eu"), ("c", "zone:eu")], &[]).is_err());
        assert!(check(&["rack", "UNIQUE"], ("a", ""), &[], &[]).unwrap_err().contains("no such attribute"));
    }

    #[test]
    fn group_by_spreads_evenly() {
        let known = &["r1", "r2"];
        assert!(check(&["rack", "GROUP_BY"], ("a", "rack:r1"), &[], known).is_ok());
        assert!(check(&["rack", "GROUP_BY"], ("a", "rack:r1"), &[("b", "rack:r1")], known).is_err());
        assert!(check(&["rack", "GROUP_BY"], ("a", "rack:r2"), &[("b", "rack:r1")], known).is_ok());
        assert!(check(&["rack", "GROUP_BY"], ("a", "rack:r1"), &[("b", "rack:r1"), ("c", "rack:r2")], known).is_ok());
        // With a minimum of three groups and two known, a second task on r1 waits for a third rack.
        assert!(
            check(&["rack", "GROUP_BY", "3"], ("a", "rack:r1"), &[("b", "rack:r1"), ("c", "rack:r2")], known).is_err()
        );
    }

    #[test]
    fn bad_constraints_are_named() {
        let parse = |p: &[&str]| Constraint::parse(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(parse(&["hostname"]).is_err());
        assert!(parse(&["hostname", "LIKE"]).unwrap_err().reason.contains("needs a value"));
        assert!(parse(&["hostname", "LIKE", "("]).unwrap_err().reason.contains("regular expression"));
        assert!(parse(&["hostname", "MAX_PER", "0"]).is_err());
        assert!(parse(&["hostname", "NEAR", "x"]).unwrap_err().reason.contains("unknown operator"));
    }
}
