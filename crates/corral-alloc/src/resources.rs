//! Resources in Mesos's model and grammar: named scalars (`cpus:4`), ranges
//! (`ports:[31000-32000]`) and sets (`disks:{a,b}`), each unreserved (`*`) or statically reserved
//! for a role (`cpus(ads):2`). Scalars are fixed-point with three decimals, as Mesos keeps them,
//! so sums and differences are exact.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::roles::{Role, RoleError};

/// Thousandths: `cpus:0.5` is 500.
pub type Milli = u64;
const SCALE: u64 = 1000;

/// The most one task (an app's instance, a job's run, a one-off task) may ask for: far beyond any
/// machine, so that a typo (`1e300`) is refused instead of queued forever.
pub const MAX_TASK_CPUS: f64 = 4096.0;
/// 16 TiB, in MiB.
pub const MAX_TASK_MEM_MIB: f64 = 16.0 * 1024.0 * 1024.0;
/// 1 PiB, in MiB.
pub const MAX_TASK_DISK_MIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// A number for a message: as written when ordinary, in exponent form when huge (`1e308`, not
/// 309 digits).
pub fn show(v: f64) -> String {
    if v.is_finite() && v.abs() >= 1e15 {
        format!("{v:e}")
    } else {
        v.to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Value {
    Scalar(Milli),
    /// Disjoint, sorted, inclusive ranges.
    Ranges(Vec<(u64, u64)>),
    Set(BTreeSet<String>),
}

/// A bag of resources, keyed by (name, role). Empty values are never stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Resources {
    items: BTreeMap<(String, Role), Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid resources {input:?}: {reason}")]
pub struct ParseResourcesError {
    pub input: String,
    pub reason: String,
}

impl Resources {
    pub fn new() -> Resources {
        Resources::default()
    }

    /// Parses `cpus:4;mem:4096;ports:[31000-32000];cpus(ads):2;disks:{a,b}`.
    pub fn parse(input: &str) -> Result<Resources, ParseResourcesError> {
        let err = |reason: String| ParseResourcesError { input: input.to_string(), reason };
        let mut out = Resources::new();
        for item in input.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, value) = item.split_once(':').ok_or_else(|| err(format!("{item:?} is not NAME:VALUE")))?;
            let key = key.trim();
            let (name, role) = match key.split_once('(') {
                Some((n, r)) => {
                    let r = r.strip_suffix(')').ok_or_else(|| err(format!("{key:?}: the role needs a closing ')'")))?;
                    (n.trim(), Role::parse(r).map_err(|e: RoleError| err(e.to_string()))?)
                }
                None => (key, Role::any()),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.') {
                return Err(err(format!("{name:?} is not a resource name")));
            }
            let value = parse_value(value.trim()).map_err(|r| err(format!("{name}: {r}")))?;
            out.add(name, &role, &value).map_err(|r| err(format!("{name}: {r}")))?;
        }
        Ok(out)
    }

    /// A scalar resource, for building resources in code.
    pub fn scalar(name: &str, role: &Role, milli: Milli) -> Resources {
        let mut r = Resources::new();
        if milli > 0 {
            r.items.insert((name.to_string(), role.clone()), Value::Scalar(milli));
        }
        r
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Role, &Value)> {
        self.items.iter().map(|((n, r), v)| (n.as_str(), r, v))
    }

    fn add(&mut self, name: &str, role: &Role, value: &Value) -> Result<(), String> {
        let key = (name.to_string(), role.clone());
        let merged = match (self.items.get(&key), value) {
            (None, v) => v.clone(),
            (Some(Value::Scalar(a)), Value::Scalar(b)) => Value::Scalar(a + b),
            (Some(Value::Ranges(a)), Value::Ranges(b)) => Value::Ranges(union(a, b)),
            (Some(Value::Set(a)), Value::Set(b)) => Value::Set(a.union(b).cloned().collect()),
            _ => return Err("is given with two different kinds of value".into()),
        };
        if !is_empty_value(&merged) {
            self.items.insert(key, merged);
        }
        Ok(())
    }

    /// Everything in `self` and in `other`.
    pub fn plus(&self, other: &Resources) -> Resources {
        let mut out = self.clone();
        for ((n, r), v) in &other.items {
            // Kinds agree between the two sides in practice; a mismatch keeps ours.
            let _ = out.add(n, r, v);
        }
        out
    }

    /// Whether every resource of `other` is in `self` (same name and role).
    pub fn contains(&self, other: &Resources) -> bool {
        other.items.iter().all(|(k, v)| match (self.items.get(k), v) {
            (Some(Value::Scalar(a)), Value::Scalar(b)) => a >= b,
            (Some(Value::Ranges(a)), Value::Ranges(b)) => ranges_contain(a, b),
            (Some(Value::Set(a)), Value::Set(b)) => b.is_subset(a),
            _ => false,
        })
    }

    /// `self` without `other`; `None` if `other` is not contained in `self`.
    pub fn minus(&self, other: &Resources) -> Option<Resources> {
        if !self.contains(other) {
            return None;
        }
        let mut out = self.clone();
        for (k, v) in &other.items {
            let left = match (&out.items[k], v) {
                (Value::Scalar(a), Value::Scalar(b)) => Value::Scalar(a - b),
                (Value::Ranges(a), Value::Ranges(b)) => Value::Ranges(subtract_ranges(a, b)),
                (Value::Set(a), Value::Set(b)) => Value::Set(a.difference(b).cloned().collect()),
                _ => unreachable!("contains checked the kinds"),
            };
            if is_empty_value(&left) {
                out.items.remove(k);
            } else {
                out.items.insert(k.clone(), left);
            }
        }
        Some(out)
    }

    /// The resources a framework in `role` may use: unreserved ones and those reserved for
    /// `role` itself.
    pub fn usable_by(&self, role: &Role) -> Resources {
        Resources {
            items: self
                .items
                .iter()
                .filter(|((_, r), _)| r.is_any() || r == role)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// Only the resources reserved for `role`.
    pub fn reserved_for(&self, role: &Role) -> Resources {
        Resources {
            items: self.items.iter().filter(|((_, r), _)| r == role).map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }

    /// The same resources with every reservation dropped (to compare against quota or totals).
    pub fn unreserved_view(&self) -> Resources {
        let mut out = Resources::new();
        for ((n, _), v) in &self.items {
            let _ = out.add(n, &Role::any(), v);
        }
        out
    }

    /// The same resources, all reserved for `role` (`Role::any()` unreserves).
    pub fn with_role(&self, role: &Role) -> Resources {
        let mut out = Resources::new();
        for ((n, _), v) in &self.items {
            let _ = out.add(n, role, v);
        }
        out
    }

    /// The total of scalar `name` across roles, in thousandths.
    pub fn scalar_total(&self, name: &str) -> Milli {
        self.items
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|(_, v)| match v {
                Value::Scalar(m) => *m,
                _ => 0,
            })
            .sum()
    }

    /// The names of the scalar resources present.
    pub fn scalar_names(&self) -> BTreeSet<&str> {
        self.items.iter().filter(|(_, v)| matches!(v, Value::Scalar(_))).map(|((n, _), _)| n.as_str()).collect()
    }

    /// Splits off at most `limit` of each scalar (by name, any role); non-scalars pass whole.
    /// Used to cap an offer at a role's quota headroom.
    pub fn capped(&self, limit: &BTreeMap<String, Milli>) -> Resources {
        let mut left: BTreeMap<String, Milli> = limit.clone();
        let mut out = Resources::new();
        for ((n, r), v) in &self.items {
            match (v, left.get_mut(n)) {
                (Value::Scalar(m), Some(room)) => {
                    let take = (*m).min(*room);
                    *room -= take;
                    if take > 0 {
                        out.items.insert((n.clone(), r.clone()), Value::Scalar(take));
                    }
                }
                _ => {
                    out.items.insert((n.clone(), r.clone()), v.clone());
                }
            }
        }
        out
    }
}

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Scalar(m) => *m == 0,
        Value::Ranges(r) => r.is_empty(),
        Value::Set(s) => s.is_empty(),
    }
}

fn parse_value(v: &str) -> Result<Value, String> {
    if let Some(inner) = v.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or("a range list needs a closing ']'")?;
        let mut ranges = Vec::new();
        for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (a, b) = part.split_once('-').ok_or_else(|| format!("{part:?} is not a range a-b"))?;
            let a: u64 = a.trim().parse().map_err(|_| format!("{a:?} is not a number"))?;
            let b: u64 = b.trim().parse().map_err(|_| format!("{b:?} is not a number"))?;
            if a > b {
                return Err(format!("range {a}-{b} ends before it begins"));
            }
            ranges = union(&ranges, &[(a, b)]);
        }
        return Ok(Value::Ranges(ranges));
    }
    if let Some(inner) = v.strip_prefix('{') {
        let inner = inner.strip_suffix('}').ok_or("a set needs a closing '}'")?;
        let items: BTreeSet<String> =
            inner.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        return Ok(Value::Set(items));
    }
    Ok(Value::Scalar(parse_scalar(v)?))
}

/// A non-negative decimal with at most three fractional digits, in thousandths.
pub fn parse_scalar(v: &str) -> Result<Milli, String> {
    let bad = || format!("{v:?} is not a non-negative number with at most 3 decimals");
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if int.is_empty() && frac.is_empty()
        || frac.len() > 3
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let int: u64 = if int.is_empty() { 0 } else { int.parse().map_err(|_| bad())? };
    let frac: u64 = if frac.is_empty() { 0 } else { format!("{frac:0<3}").parse().map_err(|_| bad())? };
    int.checked_mul(SCALE).and_then(|i| i.checked_add(frac)).ok_or_else(bad)
}

/// Formats thousandths as Mesos prints scalars: `4`, `0.5`, `1.25`.
pub fn format_scalar(m: Milli) -> String {
    if m.is_multiple_of(SCALE) {
        format!("{}", m / SCALE)
    } else {
        format!("{}.{:03}", m / SCALE, m % SCALE).trim_end_matches('0').to_string()
    }
}

fn union(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut all: Vec<(u64, u64)> = a.iter().chain(b).copied().collect();
    all.sort();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (s, e) in all {
        match out.last_mut() {
            Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

fn ranges_contain(a: &[(u64, u64)], b: &[(u64, u64)]) -> bool {
    b.iter().all(|(s, e)| a.iter().any(|(as_, ae)| as_ <= s && e <= ae))
}

fn subtract_ranges(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = a.to_vec();
    for &(s, e) in b {
        let mut next = Vec::new();
        for (rs, re) in out {
            if e < rs || s > re {
                next.push((rs, re));
                continue;
            }
            if rs < s {
                next.push((rs, s - 1));
            }
            if e < re {
                next.push((e + 1, re));
            }
        }
        out = next;
    }
    out
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for ((n, r), v) in &self.items {
            if !first {
                f.write_str(";")?;
            }
            first = false;
            if r.is_any() {
                write!(f, "{n}:")?;
            } else {
                write!(f, "{n}({r}):")?;
            }
            match v {
                Value::Scalar(m) => f.write_str(&format_scalar(*m))?,
                Value::Ranges(rs) => {
                    let parts: Vec<String> = rs.iter().map(|(a, b)| format!("{a}-{b}")).collect();
                    write!(f, "[{}]", parts.join(","))?;
                }
                Value::Set(s) => write!(f, "{{{}}}", s.iter().cloned().collect::<Vec<_>>().join(","))?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_messages_stay_short() {
        assert_eq!(show(-1.0), "-1");
        assert_eq!(show(0.25), "0.25");
        assert_eq!(show(1e308), "1e308");
        assert_eq!(show(f64::NAN), "NaN");
    }
    use proptest::prelude::*;

    fn r(s: &str) -> Resources {
        Resources::parse(s).unwrap()
    }

    #[test]
    fn grammar() {
        let res = r("cpus:4;mem:4096;ports:[31000-32000,32001-32005];cpus(ads):2;disks:{a,b}");
        assert_eq!(res.to_string(), "cpus:4;cpus(ads):2;disks:{a,b};mem:4096;ports:[31000-32005]");
        assert_eq!(res.scalar_total("cpus"), 6000);
        assert_eq!(r("cpus:0.5;cpus:0.25").to_string(), "cpus:0.75");
        assert_eq!(r("cpus(eng/web):1").reserved_for(&Role::parse("eng/web").unwrap()).to_string(), "cpus(eng/web):1");
        assert_eq!(r("").to_string(), "");
        for (input, reason) in [
            ("cpus", "\"cpus\" is not NAME:VALUE"),
            ("cpus:-1", "cpus: \"-1\" is not a non-negative number with at most 3 decimals"),
            ("cpus:1.2345", "cpus: \"1.2345\" is not a non-negative number with at most 3 decimals"),
            ("cpus:abc", "cpus: \"abc\" is not a non-negative number with at most 3 decimals"),
            ("ports:[5-1]", "ports: range 5-1 ends before it begins"),
            ("ports:[1-2", "ports: a range list needs a closing ']'"),
            ("ports:[x-2]", "ports: \"x\" is not a number"),
            ("cpus(ads:1", "\"cpus(ads\": the role needs a closing ')'"),
            ("cpus(a b):1", "invalid role \"a b\": role names may not contain whitespace, '(' or ')'"),
            ("c p:1", "\"c p\" is not a resource name"),
            ("cpus:1;cpus:[1-2]", "cpus: is given with two different kinds of value"),
        ] {
            assert_eq!(Resources::parse(input).unwrap_err().reason, reason, "{input}");
        }
    }

    #[test]
    fn arithmetic() {
        let total = r("cpus:4;mem:1024;ports:[1000-1010]");
        let used = r("cpus:1.5;mem:24;ports:[1003-1004]");
        let left = total.minus(&used).unwrap();
        assert_eq!(left.to_string(), "cpus:2.5;mem:1000;ports:[1000-1002,1005-1010]");
        assert_eq!(left.plus(&used), total);
        assert_eq!(total.minus(&r("cpus:5")), None);
        assert_eq!(total.minus(&r("cpus(ads):1")), None, "reserved resources are a different kind");
        let cap: BTreeMap<String, Milli> = [("cpus".to_string(), 1000)].into_iter().collect();
        assert_eq!(total.capped(&cap).to_string(), "cpus:1;mem:1024;ports:[1000-1010]");
    }

    fn arb_resources() -> impl Strategy<Value = Resources> {
        (0u64..5000, 0u64..10000, proptest::collection::vec((0u64..100, 0u64..20), 0..3)).prop_map(|(c, m, ranges)| {
            let mut s = format!("cpus:{};mem:{}", format_scalar(c), format_scalar(m));
            if !ranges.is_empty() {
                let parts: Vec<String> = ranges.iter().map(|(a, l)| format!("{}-{}", a, a + l)).collect();
                s.push_str(&format!(";ports:[{}]", parts.join(",")));
            }
            Resources::parse(&s).unwrap()
        })
    }

    proptest! {
        #[test]
        fn plus_then_minus_is_identity(a in arb_resources(), b in arb_resources()) {
            let sum = a.plus(&b);
            prop_assert!(sum.contains(&a));
            prop_assert!(sum.contains(&b));
            let back = sum.minus(&b).unwrap();
            // Ranges that overlapped merge, so compare scalars and containment.
            prop_assert_eq!(back.scalar_total("cpus"), a.scalar_total("cpus"));
            prop_assert!(back.plus(&b).contains(&sum));
        }

        #[test]
        fn display_round_trips(a in arb_resources()) {
            prop_assert_eq!(Resources::parse(&a.to_string()).unwrap(), a);
        }

    }
}
