//! The jobs framework through Chronos's API, on fake agents: schedules run on time, chains run
//! in order and stop at a failure, retries are counted, `concurrent: false` holds, and a master
//! restarted while jobs are due neither loses nor doubles a run (counted from the launches the
//! agents saw).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use corral_cluster::agent::FakeRuntime;
use corral_cluster::master;
use serde_json::{json, Value};

use crate::fake_agents::{client, runtime, start_agent, start_master, wait_for, Daemon};

fn post_job(m: SocketAddr, kind: &str, job: Value) {
    let a = client(m).exchange("POST", &format!("/v1/scheduler/{kind}"), Some(&job.to_string())).unwrap();
    assert_eq!(a.status, 204, "{job}: {}", a.text);
}

fn job(m: SocketAddr, name: &str) -> Value {
    client(m).get(&format!("/v1/scheduler/job/{name}")).unwrap()
}

fn count(m: SocketAddr, name: &str, field: &str) -> u64 {
    job(m, name)[field].as_u64().unwrap_or(0)
}

/// The launches of a job the agents saw, as (scheduled ms, attempt), in launch order.
fn launches(fake: &FakeRuntime, name: &str) -> Vec<(i64, u32)> {
    fake.started()
        .iter()
        .filter_map(|id| {
            let parts: Vec<&str> = id.split('.').collect();
            (parts.len() == 5 && parts[0] == "ct" && parts[3] == name)
                .then(|| (parts[1].parse().unwrap(), parts[2].parse().unwrap()))
        })
        .collect()
}

#[test]
fn scheduled_jobs_run_on_time_and_chains_run_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeRuntime::new();
    let m = start_master(dir.path());
    let _a = start_agent(m.addr, dir.path(), "a1", &fake);

    // Every second, from now.
    let tick = json!({"name": "tick", "command": "fake exit 0 after 20", "schedule": "R//PT1S",
                      "owner": "ops@example.com", "disabled": false});
    post_job(m.addr, "iso8601", tick);
    wait_for("three runs of tick", || count(m.addr, "tick", "successCount") >= 3);
    let runs = launches(&fake, "tick");
    let times: Vec<i64> = runs.iter().map(|(t, _)| *t).collect();
    assert!(times.windows(2).all(|w| w[1] - w[0] == 1000), "one run a second, none doubled: {times:?}");

    // A -> B -> C: each after its parent succeeded (a is run by hand: its schedule is later).
    let later = "R1/2099-01-01T00:00:00Z/PT1H";
    post_job(
        m.addr,
        "iso8601",
        json!({"name": "a", "command": "fake exit 0 after 50", "schedule": later, "owner": "o", "disabled": false}),
    );
    post_job(
        m.addr,
        "dependency",
        json!({"name": "b", "command": "fake exit 0 after 50", "parents": ["a"], "owner": "o", "disabled": false}),
    );
    post_job(
        m.addr,
        "dependency",
        json!({"name": "c", "command": "fake exit 0 after 50", "parents": ["b"], "owner": "o", "disabled": false}),
    );
    let a = client(m.addr).exchange("PUT", "/v1/scheduler/job/a", None).unwrap();
    assert_eq!(a.status, 204, "{}", a.text);
    wait_for("the chain", || count(m.addr, "c", "successCount") == 1);
    let order: Vec<String> = fake
        .started()
        .iter()
        .filter_map(|id| id.split('.').nth(3).map(str::to_string))
        .filter(|n| ["a", "b", "c"].contains(&n.as_str()))
        .collect();
    assert_eq!(order, ["a", "b", "c"]);

    // A failing parent is retried as often as it says, then counted, and its child never runs.
    post_job(
        m.addr,
        "iso8601",
        json!({"name": "x", "command": "fake exit 3 after 10", "schedule": later, "retries": 1, "owner": "o", "disabled": false}),
    );
    post_job(
        m.addr,
        "dependency",
        json!({"name": "y", "command": "fake exit 0 after 10", "parents": ["x"], "owner": "o", "disabled": false}),
    );
    let x = client(m.addr).exchange("PUT", "/v1/scheduler/job/x", None).unwrap();
    assert_eq!(x.status, 204);
    wait_for("x to fail twice", || count(m.addr, "x", "errorCount") >= 1);
    let attempts: Vec<u32> = launches(&fake, "x").iter().map(|(_, a)| *a).collect();
    assert!(attempts.starts_with(&[0, 1]), "one retry per failed run: {attempts:?}");
    assert_eq!(count(m.addr, "y", "successCount") + count(m.addr, "y", "errorCount"), 0, "y never ran");
    assert_eq!(job(m.addr, "x")["lastError"].as_str().map(str::len), Some(24), "an ISO time");

    // Bad input is refused, naming what was wrong, and changes nothing.
    for (kind, body, says) in [
        ("iso8601", json!({"name": "bad", "command": "x", "schedule": "every minute"}), "schedule"),
        ("dependency", json!({"name": "orphan", "command": "x", "parents": ["nobody"]}), "nobody"),
        ("dependency", json!({"name": "a", "command": "x", "parents": ["c"]}), "cycle"),
        ("iso8601", json!({"name": "z", "command": "x", "schedule": "R//PT1M", "colour": "red"}), "colour"),
    ] {
        let a = client(m.addr).exchange("POST", &format!("/v1/scheduler/{kind}"), Some(&body.to_string())).unwrap();
        assert_eq!(a.status, 400, "{body}: {}", a.text);
        assert!(a.text.contains(says), "{body}: {}", a.text);
    }
    assert!(job(m.addr, "a")["schedule"].as_str().unwrap().starts_with("R1/2099"), "a is unchanged");
    let jobs: Vec<Value> = client(m.addr).get("/v1/scheduler/jobs").unwrap();
    assert_eq!(jobs.len(), 6);
}

#[test]
fn a_job_never_overlaps_itself_unless_it_may() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeRuntime::new();
    let m = start_master(dir.path());
    let _a = start_agent(m.addr, dir.path(), "a1", &fake);
    post_job(
        m.addr,
        "iso8601",
        json!({"name": "slow", "command": "fake exit 0 after 1500", "schedule": "R//PT0.5S", "owner": "o", "disabled": false}),
    );
    wait_for("three slow runs", || count(m.addr, "slow", "successCount") >= 3);
    let stat: Value = client(m.addr).get("/v1/scheduler/job/stat/slow").unwrap();
    let mut spans: Vec<(String, String)> = stat["taskStatHistory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["taskId"].as_str().unwrap().to_string(), r["status"].as_str().unwrap().to_string()))
        .collect();
    spans.sort();
    assert!(spans.iter().all(|(_, s)| s == "finished"), "{spans:?}");
    let fake_runs = launches(&fake, "slow");
    // While one ran (1.5 s), the runs due every 0.5 s waited: they were launched one after
    // another, never two at once, each for a later due time.
    assert!(fake.running() <= 1);
    let times: Vec<i64> = fake_runs.iter().map(|(t, _)| *t).collect();
    assert!(times.windows(2).all(|w| w[1] > w[0]), "{times:?}");
}

/// A master on a store that outlives it, restarted on the same port.
fn master_on(store: &corral_store::MemoryStore, addr: Option<SocketAddr>) -> Daemon {
    let rt = runtime();
    let listener = wait_bind(&rt, addr);
    let addr = listener.local_addr().unwrap();
    rt.spawn(master::serve_store(listener, Arc::new(store.clone()), Duration::from_secs(3)));
    Daemon::new(rt, addr)
}

fn wait_bind(rt: &tokio::runtime::Runtime, addr: Option<SocketAddr>) -> tokio::net::TcpListener {
    let want = addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
    let mut listener = None;
    wait_for("the port to be free", || {
        listener = rt.block_on(tokio::net::TcpListener::bind(want)).ok();
        listener.is_some()
    });
    listener.unwrap()
}

#[test]
fn a_master_restarted_while_jobs_are_due_neither_loses_nor_doubles_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeRuntime::new();
    let mut store = corral_store::MemoryStore::new();
    let mut m = master_on(&store, None);
    let addr = m.addr;
    let _a = start_agent(addr, dir.path(), "a1", &fake);
    post_job(
        addr,
        "iso8601",
        json!({"name": "every", "command": "fake exit 0 after 10", "schedule": "R//PT0.4S", "owner": "o", "disabled": false}),
    );
    let wall_ms = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    // When the master was away (from just before it was killed to a second after the new one
    // listened: its first tick, and the agent registering again).
    let mut away: Vec<(i64, i64)> = Vec::new();
    for _ in 0..4 {
        let seen = launches(&fake, "every").len();
        wait_for("runs before the restart", || launches(&fake, "every").len() >= seen + 2);
        let down = wall_ms();
        // Killed: nothing it had under way is written any more.
        store = store.fork();
        drop(m);
        m = master_on(&store, Some(addr));
        away.push((down, wall_ms() + 1000));
    }
    let seen = launches(&fake, "every").len();
    wait_for("runs after the last restart", || launches(&fake, "every").len() >= seen + 3);
    let runs = launches(&fake, "every");
    let mut per_time: BTreeMap<i64, usize> = BTreeMap::new();
    for (t, _) in &runs {
        *per_time.entry(*t).or_default() += 1;
    }
    let doubled: Vec<&i64> = per_time.iter().filter(|(_, n)| **n > 1).map(|(t, _)| t).collect();
    assert!(doubled.is_empty(), "runs launched twice: {doubled:?} of {runs:?}");
    // Every due time from the first to the last ran, unless it fell while the master was away:
    // then the run after it made up for it (the job's policy, runOnce).
    let (first, last) = (*per_time.keys().next().unwrap(), *per_time.keys().last().unwrap());
    let missing: Vec<i64> =
        (0..).map(|k| first + 400 * k).take_while(|t| *t <= last).filter(|t| !per_time.contains_key(t)).collect();
    let lost: Vec<&i64> = missing.iter().filter(|t| !away.iter().any(|(a, b)| *a <= **t && **t <= *b)).collect();
    assert!(lost.is_empty(), "runs due while the master ran were skipped: {lost:?} (away {away:?})");
    assert!(missing.len() <= 2 * away.len(), "at most a run or two per restart made up: {missing:?}");
}

#[test]
fn constraints_choose_where_runs_go() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeRuntime::new();
    let m = start_master(dir.path());
    let _a1 = start_agent(m.addr, dir.path(), "a1", &fake);
    let _a2 = start_agent(m.addr, dir.path(), "a2", &fake);
    wait_for("two agents", || client(m.addr).agents().unwrap().len() == 2);
    let later = "R1/2099-01-01T00:00:00Z/PT1H";
    post_job(
        m.addr,
        "iso8601",
        json!({"name": "pinned", "command": "fake exit 0 after 10", "schedule": later, "owner": "o", "disabled": false,
               "constraints": [["hostname", "EQUALS", "a2"]]}),
    );
    post_job(
        m.addr,
        "iso8601",
        json!({"name": "elsewhere", "command": "fake exit 0 after 10", "schedule": later, "owner": "o", "disabled": false,
               "constraints": [["hostname", "UNLIKE", "a[2-9]"]]}),
    );
    for _ in 0..3 {
        for name in ["pinned", "elsewhere"] {
            let a = client(m.addr).exchange("PUT", &format!("/v1/scheduler/job/{name}"), None).unwrap();
            assert_eq!(a.status, 204);
        }
    }
    wait_for("six runs", || {
        count(m.addr, "pinned", "successCount") == 3 && count(m.addr, "elsewhere", "successCount") == 3
    });
    let hosts: BTreeMap<String, String> =
        client(m.addr).agents().unwrap().into_iter().map(|a| (a.id.to_string(), a.hostname)).collect();
    let ran_on = |name: &str| -> Vec<String> {
        let stat: Value = client(m.addr).get(&format!("/v1/scheduler/job/stat/{name}")).unwrap();
        stat["taskStatHistory"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| hosts[r["slaveId"].as_str().unwrap()].clone())
            .collect()
    };
    assert_eq!(ran_on("pinned"), ["a2", "a2", "a2"]);
    let stat: Value = client(m.addr).get("/v1/scheduler/job/stat/pinned").unwrap();
    let logs = stat["taskStatHistory"][0]["logs"].as_str().unwrap().to_string();
    assert!(logs.starts_with("http://127.0.0.1:") && logs.ends_with("/logs"), "{logs}");
    assert_eq!(ran_on("elsewhere"), ["a1", "a1", "a1"]);
    assert_eq!(job(m.addr, "pinned")["constraints"], json!([["hostname", "EQUALS", "a2"]]));
    let bad = json!({"name": "bad", "command": "x", "schedule": later, "constraints": [["rack", "LIKE", "("]]});
    let a = client(m.addr).exchange("POST", "/v1/scheduler/iso8601", Some(&bad.to_string())).unwrap();
    assert_eq!(a.status, 400);
    assert!(a.text.contains("constraints"), "{}", a.text);
}
