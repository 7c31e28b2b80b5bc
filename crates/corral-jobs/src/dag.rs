//! Dependent jobs form a DAG: every parent a job names exists, and no job is its own ancestor.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DagError {
    #[error("job {job} names unknown parents: {}", .parents.join(", "))]
    UnknownParents { job: String, parents: Vec<String> },
    #[error("the parents make a cycle: {}", .cycle.join(" -> "))]
    Cycle { cycle: Vec<String> },
}

/// Checks jobs (name to parents): every parent known, no cycle. The first problem found, in
/// name order, is named.
pub fn check(parents: &BTreeMap<String, Vec<String>>) -> Result<(), DagError> {
    for (job, ps) in parents {
        let unknown: Vec<String> = ps.iter().filter(|p| !parents.contains_key(*p)).cloned().collect();
        if !unknown.is_empty() {
            return Err(DagError::UnknownParents { job: job.clone(), parents: unknown });
        }
    }
    // Depth-first, keeping the path, so a cycle is named as it runs.
    let mut done: BTreeSet<&str> = BTreeSet::new();
    for start in parents.keys() {
        let mut path: Vec<&str> = Vec::new();
        if let Some(cycle) = visit(start, parents, &mut done, &mut path) {
            return Err(DagError::Cycle { cycle });
        }
    }
    Ok(())
}

fn visit<'a>(
    job: &'a str,
    parents: &'a BTreeMap<String, Vec<String>>,
    done: &mut BTreeSet<&'a str>,
    path: &mut Vec<&'a str>,
) -> Option<Vec<String>> {
    if let Some(i) = path.iter().position(|j| *j == job) {
        let mut cycle: Vec<String> = path[i..].iter().map(|s| s.to_string()).collect();
        cycle.push(job.to_string());
        return Some(cycle);
    }
    if done.contains(job) {
        return None;
    }
    path.push(job);
    for p in &parents[job] {
        if let Some(c) = visit(p, parents, done, path) {
            return Some(c);
        }
    }
    path.pop();
    done.insert(job);
    None
}

/// The jobs that name `job` as a parent.
pub fn children<'a>(parents: &'a BTreeMap<String, Vec<String>>, job: &str) -> Vec<&'a str> {
    parents.iter().filter(|(_, ps)| ps.iter().any(|p| p == job)).map(|(c, _)| c.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        edges.iter().map(|(j, ps)| (j.to_string(), ps.iter().map(|p| p.to_string()).collect())).collect()
    }

    #[test]
    fn dags_pass_and_the_rest_is_named() {
        assert_eq!(check(&graph(&[("a", &[]), ("b", &["a"]), ("c", &["a", "b"])])), Ok(()));
        assert_eq!(
            check(&graph(&[("a", &[]), ("b", &["a", "x", "y"])])),
            Err(DagError::UnknownParents { job: "b".into(), parents: vec!["x".into(), "y".into()] })
        );
        let e = check(&graph(&[("a", &["c"]), ("b", &["a"]), ("c", &["b"])])).unwrap_err();
        assert_eq!(e.to_string(), "the parents make a cycle: a -> c -> b -> a");
        let e = check(&graph(&[("a", &["a"])])).unwrap_err();
        assert_eq!(e.to_string(), "the parents make a cycle: a -> a");
        assert_eq!(children(&graph(&[("a", &[]), ("b", &["a"]), ("c", &["b", "a"])]), "a"), ["b", "c"]);
    }
}
