//! Scheduled jobs through the real binary: Chronos's API driven by `chronos-python` from PyPI,
//! unchanged (a master alone: no root needed), and, with real containers, a master killed
//! repeatedly while jobs are due, every run counted from the tasks' own output.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use crate::cluster::Cluster;
use crate::support::{eventually, repo_root};

#[test]
fn the_chronos_python_client_works_unchanged() {
    let c = Cluster::new("5");
    let server = format!("{}:{}", c.master_host(), c.master_port);
    let out = Command::new("python3")
        .arg(repo_root().join("crates/corral/tests/it/chronos_client.py"))
        .arg(&server)
        .arg(c.credentials().token.unwrap())
        .env("HTTPLIB2_CA_CERTS", c.ca_file())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chronos client test failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The runs of `job` the agents started, from their containers' own output: (scheduled ms,
/// attempt) for each container whose output says it ran.
fn runs_seen(c: &Cluster, job: &str) -> Vec<(i64, u32)> {
    let mut runs = Vec::new();
    for p in c.env.ps() {
        let name = p["name"].as_str().unwrap_or_default().to_string();
        let parts: Vec<&str> = name.split('.').collect();
        if parts.len() != 5 || parts[0] != "ct" || parts[3] != job || p["state"] == "running" {
            continue;
        }
        let out = c.env.corral(&["logs", p["id"].as_str().unwrap()]);
        if String::from_utf8_lossy(&out.stdout).contains(&format!("ran {name}")) {
            runs.push((parts[1].parse().unwrap(), parts[2].parse().unwrap()));
        }
    }
    runs.sort();
    runs
}

#[test]
fn a_master_killed_repeatedly_while_jobs_are_due_neither_loses_nor_doubles_a_run() {
    crate::support::needs_root!();
    let mut c = Cluster::new("5");
    c.start_agent("a1", "cpus:4;mem:4096");
    let job = serde_json::json!({"name": "beat", "command": "echo ran $MESOS_TASK_ID", "schedule": "R//PT2S",
                                 "owner": "ops@example.com", "disabled": false, "cpus": 0.05, "mem": 16, "disk": 0});
    let master = crate::cluster::client(&c);
    let a = master.exchange("POST", "/v1/scheduler/iso8601", Some(&job.to_string())).unwrap();
    assert_eq!(a.status, 204, "{}", a.text);
    let wall_ms = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let mut away: Vec<(i64, i64)> = Vec::new();
    let rounds = if std::env::var_os("CORRAL_SLOW_TESTS").is_some() { 8 } else { 3 };
    for _ in 0..rounds {
        let seen = runs_seen(&c, "beat").len();
        eventually("a run before the kill", Duration::from_secs(60), || runs_seen(&c, "beat").len() > seen);
        let down = wall_ms();
        c.master.as_mut().unwrap().kill9();
        c.start_master("5");
        // Away until the new master ticks and the agent has registered again.
        away.push((down, wall_ms() + 3000));
    }
    let seen = runs_seen(&c, "beat").len();
    eventually("runs after the last restart", Duration::from_secs(60), || runs_seen(&c, "beat").len() >= seen + 2);
    let runs = runs_seen(&c, "beat");
    let mut per_time: BTreeMap<i64, usize> = BTreeMap::new();
    for (t, attempt) in &runs {
        assert_eq!(*attempt, 0, "echo does not fail: {runs:?}");
        *per_time.entry(*t).or_default() += 1;
    }
    let doubled: Vec<&i64> = per_time.iter().filter(|(_, n)| **n > 1).map(|(t, _)| t).collect();
    assert!(doubled.is_empty(), "runs that ran twice: {doubled:?} in {runs:?}");
    let (first, last) = (*per_time.keys().next().unwrap(), *per_time.keys().last().unwrap());
    let missing: Vec<i64> =
        (0..).map(|k| first + 2000 * k).take_while(|t| *t <= last).filter(|t| !per_time.contains_key(t)).collect();
    let lost: Vec<&i64> = missing.iter().filter(|t| !away.iter().any(|(a, b)| *a <= **t && **t <= *b)).collect();
    assert!(lost.is_empty(), "runs due while the master ran were lost: {lost:?} (away {away:?}, ran {runs:?})");
}

#[test]
fn the_job_commands_add_list_run_and_remove() {
    let c = Cluster::new("5");
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, json: serde_json::Value| {
        let path = dir.path().join(name);
        std::fs::write(&path, json.to_string()).unwrap();
        path.to_str().unwrap().to_string()
    };
    let nightly = write(
        "nightly.json",
        serde_json::json!({"name": "nightly", "command": "echo hi", "schedule": "R/2099-01-01T02:00:00Z/P1D", "owner": "o"}),
    );
    let after =
        write("after.json", serde_json::json!({"name": "after", "command": "echo after", "parents": ["nightly"]}));
    assert!(c.ok(&["job", "add", &nightly]).contains("job nightly saved"));
    assert!(c.ok(&["job", "add", &after]).contains("job after saved"));
    let ls = c.ok(&["job", "ls"]);
    assert!(
        ls.contains("nightly") && ls.contains("R/2099-01-01T02:00:00.000Z/P1D") && ls.contains("after nightly"),
        "{ls}"
    );
    assert!(c.ok(&["job", "show", "nightly"]).contains("echo hi"));
    assert_eq!(c.ok(&["job", "graph"]).trim(), "nightly -> after");
    assert!(c.ok(&["job", "graph", "--dot"]).contains("\"nightly\" -> \"after\""));
    // No agent here: the run waits for an offer, and a kill ends it before it was placed.
    c.ok(&["job", "run", "nightly"]);
    c.ok(&["job", "kill", "nightly"]);
    let history = c.ok(&["job", "history", "nightly"]);
    assert!(history.contains("killed"), "{history}");
    let shown: serde_json::Value = serde_json::from_str(&c.ok(&["job", "show", "nightly", "--json"])).unwrap();
    assert_eq!(shown["errorCount"], 1, "{shown}");
    // Bad input is refused with the field named, and nothing changes.
    let bad = write("bad.json", serde_json::json!({"name": "nightly", "command": "x", "schedule": "daily"}));
    let out = c.cli(&["job", "add", &bad]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("schedule"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = c.cli(&["job", "rm", "nightly"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("parent of after"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.ok(&["job", "rm", "after"]);
    c.ok(&["job", "rm", "nightly"]);
    assert!(!c.ok(&["job", "ls"]).contains("nightly"));
}
