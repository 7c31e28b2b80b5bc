//! Long-running services through the Marathon v2 API, on clusters whose agents run in their own
//! network namespaces: deployments, scaling, constraints, health checks, rolling upgrades
//! under load, masters and agents killed mid-deployment, and Marathon's own Python client.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_client::Client;
use serde_json::{json, Value};

use crate::cluster::Cluster;
use crate::support::{corral_exe, eventually, repo_root};

const UBUNTU: &str = r#"{"container":{"type":"DOCKER","docker":{"image":"libmesos/ubuntu"},"volumes":[{"containerPath":"/etc/a","hostPath":"/var/data/a","mode":"RO"},{"containerPath":"/etc/b","hostPath":"/var/data/b","mode":"RW"}]},"id":"ubuntu","instances":1,"cpus":0.5,"mem":512,"cmd":"while sleep 10; do date -u +%T; done"}"#;

struct Reply {
    status: u16,
    body: Value,
    location: Option<String>,
}

/// A plain HTTP client, for the services the tests run (not the master).
fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .new_agent()
}

/// The client of the master's APIs (`corral_client`), as every tool uses it.
fn master(c: &Cluster) -> Client {
    crate::cluster::client(c)
}

/// One call to the master's Marathon API, as it went.
fn api(c: &Cluster, method: &'static str, path: &str, body: Option<&str>) -> Reply {
    let body = match method {
        "POST" | "PUT" | "PATCH" => Some(body.unwrap_or("")),
        _ => body,
    };
    let a = master(c).exchange(method, path, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    Reply { status: a.status, body: a.json(), location: a.location }
}

fn app(c: &Cluster, id: &str) -> Value {
    let r = api(c, "GET", &format!("/v2/apps/{id}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["app"].clone()
}

fn running(c: &Cluster, id: &str) -> Vec<Value> {
    app(c, id)["tasks"].as_array().unwrap().iter().filter(|t| t["state"] == "TASK_RUNNING").cloned().collect()
}

fn no_deployments(c: &Cluster) -> bool {
    api(c, "GET", "/v2/deployments", None).body.as_array().is_some_and(|d| d.is_empty())
}

/// The agent hostnames an app's running tasks are on.
fn hosts(c: &Cluster, id: &str) -> Vec<String> {
    let mut h: Vec<String> = running(c, id).iter().map(|t| t["host"].as_str().unwrap().to_string()).collect();
    h.sort();
    h
}

#[test]
fn marathon_apps_deploy_scale_spread_and_explain() {
    crate::support::needs_root!();
    let mut c = Cluster::in_namespaces("15", 3);
    // The verbatim Marathon example: its image and host paths, made here.
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/make-busybox-image.sh"))
        .arg("libmesos/ubuntu:latest")
        .env("CORRAL", corral_exe())
        .env("CORRAL_ROOT", c.env.root.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::create_dir_all("/var/data/a").unwrap();
    std::fs::create_dir_all("/var/data/b").unwrap();
    c.start_named_agent("h0", "cpus:2;mem:2048", "rack:r1");
    c.start_named_agent("h1", "cpus:2;mem:2048", "rack:r1");
    c.start_named_agent("h2", "cpus:2;mem:2048", "rack:r2");

    let r = api(&c, "POST", "/v2/apps", Some(UBUNTU));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.location.as_deref(), Some("/v2/apps/ubuntu"));
    assert_eq!(r.body["id"], "/ubuntu");
    assert_eq!(r.body["deployments"].as_array().unwrap().len(), 1, "{}", r.body);
    assert_eq!(r.body["container"]["volumes"][1]["mode"], "RW");
    eventually("the ubuntu app runs", Duration::from_secs(60), || running(&c, "ubuntu").len() == 1);
    eventually("its deployment finishes", Duration::from_secs(30), || no_deployments(&c));
    let dup = api(&c, "POST", "/v2/apps", Some(UBUNTU));
    assert_eq!(dup.status, 409);
    assert_eq!(dup.body["message"], "An app with id [/ubuntu] already exists.");

    // Invalid definitions: 422 with Marathon's details, nothing stored.
    for (body, path) in [
        (r#"{"id":"bad","cmd":"x","cpus":-1}"#, "/cpus"),
        (r#"{"id":"Bad","cmd":"x"}"#, "/id"),
        (r#"{"id":"bad","cmd":"x","constraints":[["hostname","NEAR"]]}"#, "/constraints(0)"),
        (r#"{"id":"bad","cmd":"x","instances":"many"}"#, "/instances"),
        (r#"{"id":"bad"}"#, "/"),
    ] {
        let r = api(&c, "POST", "/v2/apps", Some(body));
        assert_eq!(r.status, 422, "{body}: {}", r.body);
        let details = r.body["details"].as_array().unwrap();
        assert!(details.iter().any(|d| d["path"] == path), "{body}: {}", r.body);
    }
    assert_eq!(api(&c, "GET", "/v2/apps/bad", None).status, 404);

    // UNIQUE spreads over hostnames; the fourth instance waits, and `why` says so.
    let spread = r#"{"id":"/web/spread","cmd":"sleep 1000","cpus":0.1,"mem":16,"instances":3,"constraints":[["hostname","UNIQUE"]]}"#;
    assert_eq!(api(&c, "POST", "/v2/apps", Some(spread)).status, 201);
    eventually("three spread instances", Duration::from_secs(60), || {
        hosts(&c, "web/spread") == ["h0", "h1", "h2"] && no_deployments(&c)
    });
    let r = api(&c, "PUT", "/v2/apps/web/spread", Some(r#"{"instances":4}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["deploymentId"].is_string() && r.body["version"].is_string());
    eventually("why names the constraint", Duration::from_secs(30), || {
        let why = c.ok(&["app", "why", "/web/spread"]);
        why.contains("3 of 4 instances running") && why.contains("hostname UNIQUE")
    });
    let q = api(&c, "GET", "/v2/queue", None).body;
    let item = q["queue"].as_array().unwrap().iter().find(|i| i["app"]["id"] == "/web/spread").unwrap().clone();
    assert_eq!(item["count"], 1);
    let summary = item["processedOffersSummary"]["rejectSummaryLastOffers"].as_array().unwrap();
    assert!(summary.iter().any(|s| s["reason"] == "UnfulfilledConstraint" && s["declined"].as_u64() > Some(0)));
    c.ok(&["app", "scale", "/web/spread", "1", "--force"]);
    eventually("scaled down to one", Duration::from_secs(30), || running(&c, "web/spread").len() == 1);

    // GROUP_BY rack puts two instances on two racks.
    let grouped = r#"{"id":"/web/grouped","cmd":"sleep 1000","cpus":0.1,"mem":16,"instances":2,"constraints":[["rack","GROUP_BY"]]}"#;
    assert_eq!(api(&c, "POST", "/v2/apps", Some(grouped)).status, 201);
    eventually("two grouped instances", Duration::from_secs(60), || running(&c, "web/grouped").len() == 2);
    let racks: Vec<String> =
        hosts(&c, "web/grouped").iter().map(|h| if h == "h2" { "r2".into() } else { "r1".into() }).collect();
    assert!(racks.contains(&"r1".to_string()) && racks.contains(&"r2".to_string()), "{racks:?}");

    // Groups, versions, the CLI's views, and removal.
    let g = api(&c, "GET", "/v2/groups", None).body;
    assert_eq!(g["groups"][0]["id"], "/web", "{g}");
    let versions = api(&c, "GET", "/v2/apps/web/spread/versions", None).body;
    assert!(versions["versions"].as_array().unwrap().len() >= 3, "{versions}");
    let ls = c.ok(&["app", "ls"]);
    assert!(ls.contains("/web/grouped") && ls.contains("/ubuntu"), "{ls}");
    c.ok(&["app", "rm", "/ubuntu"]);
    eventually("the app is gone", Duration::from_secs(30), || api(&c, "GET", "/v2/apps/ubuntu", None).status == 404);
    eventually("its task is gone", Duration::from_secs(30), || {
        c.env
            .ps()
            .iter()
            .filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with("ubuntu.")) && p["state"] == "running")
            .count()
            == 0
    });
}

/// A small HTTP service: busybox httpd serving its version, checked over HTTP.
fn web_app(version: &str) -> String {
    json!({
        "id": "/web",
        "cmd": format!("mkdir -p /tmp/w && echo {version} > /tmp/w/index.html && exec httpd -f -p $PORT0 -h /tmp/w"),
        "container": {"type": "DOCKER", "docker": {"image": "busybox"}},
        "instances": 2, "cpus": 0.1, "mem": 16,
        "taskKillGracePeriodSeconds": 2,
        "upgradeStrategy": {"minimumHealthCapacity": 1, "maximumOverCapacity": 0.5},
        "healthChecks": [{"protocol": "HTTP", "path": "/", "gracePeriodSeconds": 10, "intervalSeconds": 1, "timeoutSeconds": 1, "maxConsecutiveFailures": 3}],
        "env": {"VERSION": version},
    })
    .to_string()
}

#[test]
fn a_rolling_upgrade_under_load_loses_no_request() {
    crate::support::needs_root!();
    let mut c = Cluster::in_namespaces("15", 2);
    c.start_named_agent("h0", "cpus:2;mem:2048", "");
    c.start_named_agent("h1", "cpus:2;mem:2048", "");
    assert_eq!(api(&c, "POST", "/v2/apps", Some(&web_app("v1"))).status, 201);
    eventually("two healthy v1 tasks", Duration::from_secs(60), || {
        let a = app(&c, "web");
        a["tasksHealthy"] == 2 && no_deployments(&c)
    });
    // A client loop: each request goes to a task the API lists as running and healthy.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let client = {
        let (stop, ok, failed, seen) = (stop.clone(), ok.clone(), failed.clone(), seen.clone());
        let m = master(&c);
        std::thread::spawn(move || {
            let a = http();
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let tasks: Value = match m.exchange("GET", "/v2/apps/web/tasks", None) {
                    Ok(answer) => answer.json(),
                    Err(e) => panic!("the master did not answer: {e}"),
                };
                if !tasks["tasks"].is_array() {
                    continue;
                }
                let healthy: Vec<&Value> = tasks["tasks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|t| t["state"] == "TASK_RUNNING" && t["healthCheckResults"][0]["alive"] == true)
                    .collect();
                let Some(t) = healthy.get(n % healthy.len().max(1)) else { continue };
                n += 1;
                let url = format!("http://{}:{}/", t["ipAddresses"][0]["ipAddress"].as_str().unwrap(), t["ports"][0]);
                match a.get(&url).call() {
                    Ok(mut r) if r.status() == 200 => {
                        let body = r.body_mut().read_to_string().unwrap_or_default();
                        seen.lock().unwrap().insert(body.trim().to_string());
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    eventually("the client gets answers", Duration::from_secs(10), || ok.load(Ordering::Relaxed) > 5);
    let r = api(&c, "PUT", "/v2/apps/web", Some(&web_app("v2")));
    assert_eq!(r.status, 200, "{}", r.body);
    eventually("the upgrade finishes", Duration::from_secs(120), || {
        no_deployments(&c)
            && app(&c, "web")["tasks"].as_array().unwrap().iter().all(|t| t["version"] == r.body["version"])
    });
    eventually("v2 answers", Duration::from_secs(30), || seen.lock().unwrap().contains("v2"));
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during the upgrade ({} succeeded)",
        ok.load(Ordering::Relaxed)
    );
    assert!(seen.contains("v1") && seen.contains("v2"), "{seen:?}");
    // Roll back to v1 from the CLI: the previous version comes back.
    c.ok(&["app", "rollback", "/web"]);
    eventually("v1 is back", Duration::from_secs(120), || {
        no_deployments(&c) && running(&c, "web").len() == 2 && app(&c, "web")["env"]["VERSION"] == "v1"
    });
}

#[test]
fn a_failing_health_check_gets_its_task_replaced() {
    crate::support::needs_root!();
    let mut c = Cluster::in_namespaces("15", 1);
    c.start_named_agent("h0", "cpus:2;mem:2048", "");
    // Healthy for its first seconds, then the COMMAND check fails.
    let def = json!({
        "id": "/flaky",
        "cmd": "touch /tmp/alive; sleep 3; rm /tmp/alive; exec sleep 1000",
        "container": {"type": "MESOS", "docker": {"image": "busybox"}},
        "cpus": 0.1, "mem": 16, "instances": 1,
        "taskKillGracePeriodSeconds": 1,
        "healthChecks": [{"protocol": "COMMAND", "command": {"value": "test -e /tmp/alive"}, "gracePeriodSeconds": 30, "intervalSeconds": 1, "timeoutSeconds": 2, "maxConsecutiveFailures": 2}],
    });
    assert_eq!(api(&c, "POST", "/v2/apps", Some(&def.to_string())).status, 201);
    eventually("a healthy task", Duration::from_secs(60), || app(&c, "flaky")["tasksHealthy"] == 1);
    let first = running(&c, "flaky")[0]["id"].as_str().unwrap().to_string();
    eventually("the unhealthy task is replaced", Duration::from_secs(60), || {
        let a = app(&c, "flaky");
        a["lastTaskFailure"]["taskId"] == first.as_str()
            && a["tasks"].as_array().unwrap().iter().any(|t| t["id"] != first.as_str())
    });
    let a = app(&c, "flaky");
    assert!(a["lastTaskFailure"]["message"].as_str().unwrap().contains("unhealthy"), "{a}");
    // An HTTPS check, against a host task serving TLS with a self-signed certificate.
    let tls = json!({
        "id": "/tls", "cpus": 0.2, "mem": 64,
        "cmd": "openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=t -keyout k.pem -out c.pem -days 1 2>/dev/null && exec openssl s_server -quiet -accept $PORT0 -www -key k.pem -cert c.pem",
        "healthChecks": [{"protocol": "HTTPS", "path": "/", "gracePeriodSeconds": 60, "intervalSeconds": 1, "timeoutSeconds": 2}],
    });
    assert_eq!(api(&c, "POST", "/v2/apps", Some(&tls.to_string())).status, 201);
    eventually("the TLS task is healthy", Duration::from_secs(60), || app(&c, "tls")["tasksHealthy"] == 1);
}

#[test]
fn a_master_killed_mid_deployment_resumes_it() {
    crate::support::needs_root!();
    let mut c = Cluster::in_namespaces("15", 1);
    c.start_named_agent("h0", "cpus:4;mem:4096", "");
    // Health checks hold the deployment open for a while (the first success takes 3 s).
    let def = json!({
        "id": "/slow", "cmd": "sleep 3; touch /tmp/up; exec sleep 1000",
        "container": {"type": "DOCKER", "docker": {"image": "busybox"}},
        "cpus": 0.1, "mem": 16, "instances": 3,
        "upgradeStrategy": {"minimumHealthCapacity": 1, "maximumOverCapacity": 0},
        "healthChecks": [{"protocol": "COMMAND", "command": {"value": "test -e /tmp/up"}, "gracePeriodSeconds": 60, "intervalSeconds": 1}],
    });
    assert_eq!(api(&c, "POST", "/v2/apps", Some(&def.to_string())).status, 201);
    eventually("the app is healthy", Duration::from_secs(60), || {
        app(&c, "slow")["tasksHealthy"] == 3 && no_deployments(&c)
    });
    // A restart replaces one task at a time (min health 1, no over-capacity).
    let r = api(&c, "POST", "/v2/apps/slow/restart", None);
    assert_eq!(r.status, 200, "{}", r.body);
    eventually("the restart is under way", Duration::from_secs(30), || {
        app(&c, "slow")["tasks"].as_array().unwrap().len() == 4
    });
    c.master.as_mut().unwrap().kill9();
    c.start_master("15");
    let deployments = api(&c, "GET", "/v2/deployments", None).body;
    assert_eq!(deployments.as_array().map(Vec::len), Some(1), "the deployment survived: {deployments}");
    eventually("it finishes after the restart", Duration::from_secs(120), || no_deployments(&c));
    let a = app(&c, "slow");
    assert_eq!(a["tasksRunning"], 3, "{a}");
    assert!(a["tasks"].as_array().unwrap().iter().all(|t| t["version"] == r.body["version"]), "{a}");
    let containers = c.env.ps().iter().filter(|p| p["state"] == "running").count();
    assert_eq!(containers, 3, "no duplicate instances beyond the plan");
}

#[test]
fn an_agent_killed_mid_deployment_has_its_tasks_replaced() {
    crate::support::needs_root!();
    let mut c = Cluster::in_namespaces("1", 2);
    c.start_named_agent("h0", "cpus:2;mem:2048", "");
    let def = r#"{"id":"/spread","cmd":"sleep 1000","cpus":0.1,"mem":16,"instances":2,"container":{"type":"DOCKER","docker":{"image":"busybox"}}}"#;
    assert_eq!(api(&c, "POST", "/v2/apps", Some(def)).status, 201);
    eventually("two tasks", Duration::from_secs(60), || running(&c, "spread").len() == 2 && no_deployments(&c));
    c.start_named_agent("h1", "cpus:2;mem:2048", "");
    // Scale up, then lose the first agent before the deployment is done.
    let r = api(&c, "PUT", "/v2/apps/spread", Some(r#"{"instances":4}"#));
    assert_eq!(r.status, 200);
    c.agents[0].kill9();
    eventually("four tasks run on the agent that is left", Duration::from_secs(60), || {
        hosts(&c, "spread") == ["h1", "h1", "h1", "h1"] && no_deployments(&c)
    });
}

#[test]
fn the_marathon_python_client_works_unchanged() {
    crate::support::needs_root!();
    let mut c = Cluster::in_namespaces("15", 1);
    c.start_named_agent("h0", "cpus:2;mem:2048", "");
    let url = format!("https://{}:{}", c.master_host(), c.master_port);
    let out = Command::new("python3")
        .arg(repo_root().join("crates/corral/tests/it/marathon_client.py"))
        .arg(&url)
        .arg(c.credentials().token.unwrap())
        .arg(c.ca_file())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python client test failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn deployments_are_cancelled_or_forced_and_every_step_is_an_event() {
    crate::support::needs_root!();
    let mut c = Cluster::in_namespaces("15", 1);
    c.start_named_agent("h0", "cpus:2;mem:2048", "");
    // Subscribe to the event stream first.
    let seen = Arc::new(Mutex::new(String::new()));
    {
        use std::io::{BufRead, BufReader};
        let s = master(&c).timeout(None).stream("/v2/events").unwrap();
        let seen = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(s).lines() {
                let Ok(line) = line else { return };
                seen.lock().unwrap().push_str(&line);
                seen.lock().unwrap().push('\n');
            }
        });
    }
    eventually("the stream is attached", Duration::from_secs(10), || {
        seen.lock().unwrap().contains("event: event_stream_attached")
    });
    let never_healthy = |id: &str, cmd: &str| {
        json!({
            "id": id, "cmd": cmd, "cpus": 0.1, "mem": 16, "instances": 1,
            "container": {"type": "DOCKER", "docker": {"image": "busybox"}},
            "taskKillGracePeriodSeconds": 1,
            "healthChecks": [{"protocol": "COMMAND", "command": {"value": "false"}, "gracePeriodSeconds": 600, "intervalSeconds": 1}],
        })
        .to_string()
    };
    // A new app that never gets healthy: its deployment waits; cancelling rolls it back (removes it).
    let r = api(&c, "POST", "/v2/apps", Some(&never_healthy("/stuck", "exec sleep 1000")));
    assert_eq!(r.status, 201);
    let id = r.body["deployments"][0]["id"].as_str().unwrap().to_string();
    eventually("the task runs", Duration::from_secs(60), || running(&c, "stuck").len() == 1);
    assert!(c.ok(&["deployments"]).contains(&id));
    let locked = api(&c, "PUT", "/v2/apps/stuck", Some(r#"{"instances":2}"#));
    assert_eq!(locked.status, 409, "{}", locked.body);
    assert_eq!(locked.body["deployments"][0]["id"], id.as_str());
    let r = api(&c, "DELETE", &format!("/v2/deployments/{id}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["deploymentId"].is_string());
    eventually("the rollback removes the app", Duration::from_secs(60), || {
        api(&c, "GET", "/v2/apps/stuck", None).status == 404 && no_deployments(&c)
    });
    // A forced cancel stops the deployment and leaves the app as it is.
    let r = api(&c, "POST", "/v2/apps", Some(&never_healthy("/forced", "exec sleep 1000")));
    let id = r.body["deployments"][0]["id"].as_str().unwrap().to_string();
    let r = api(&c, "DELETE", &format!("/v2/deployments/{id}?force=true"), None);
    assert_eq!(r.status, 202);
    assert!(no_deployments(&c));
    assert_eq!(app(&c, "forced")["instances"], 1);
    assert_eq!(api(&c, "DELETE", "/v2/deployments/nope", None).status, 404);
    // A crash-looping app backs off: the queue shows the delay and the app its last failure.
    let crash = r#"{"id":"/crash","cmd":"exit 3","cpus":0.1,"mem":16,"backoffSeconds":3,"backoffFactor":2,"portDefinitions":[]}"#;
    assert_eq!(api(&c, "POST", "/v2/apps", Some(crash)).status, 201);
    eventually("the launch is delayed", Duration::from_secs(60), || {
        let q = api(&c, "GET", "/v2/queue", None).body;
        q["queue"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["app"]["id"] == "/crash" && i["delay"]["timeLeftSeconds"].as_u64() > Some(0))
    });
    assert_eq!(app(&c, "crash")["lastTaskFailure"]["state"], "TASK_FAILED");
    let why = c.ok(&["app", "why", "crash"]);
    assert!(why.contains("delayed"), "{why}");
    // The stream saw the lifecycle, in Marathon's event types.
    let events = seen.lock().unwrap().clone();
    for kind in [
        "api_post_event",
        "deployment_info",
        "status_update_event",
        "deployment_success",
        "deployment_failed",
        "app_terminated_event",
    ] {
        assert!(events.contains(&format!("event: {kind}")), "no {kind} in:\n{events}");
    }
    let data: Vec<Value> =
        events.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect();
    assert!(data.iter().all(|d| d["eventType"].is_string() && d["timestamp"].is_string()));
    assert!(data.iter().any(|d| d["eventType"] == "status_update_event" && d["taskStatus"] == "TASK_RUNNING"));
}

#[test]
fn dependencies_order_a_deployment() {
    crate::support::needs_root!();
    let mut c = Cluster::in_namespaces("15", 1);
    c.start_named_agent("h0", "cpus:2;mem:2048", "");
    // The database is healthy 3 s after it starts; the web app depends on it.
    let apps = json!([
        {"id": "/shop/web", "cmd": "exec sleep 1000", "cpus": 0.1, "mem": 16, "dependencies": ["db"],
         "container": {"type": "DOCKER", "docker": {"image": "busybox"}}},
        {"id": "/shop/db", "cmd": "sleep 3; touch /tmp/up; exec sleep 1000", "cpus": 0.1, "mem": 16,
         "container": {"type": "DOCKER", "docker": {"image": "busybox"}},
         "healthChecks": [{"protocol": "COMMAND", "command": {"value": "test -e /tmp/up"}, "gracePeriodSeconds": 60, "intervalSeconds": 1}]},
    ]);
    let r = api(&c, "PUT", "/v2/apps", Some(&apps.to_string()));
    assert_eq!(r.status, 200, "{}", r.body);
    let d = api(&c, "GET", "/v2/deployments", None).body;
    let steps: Vec<String> = d[0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!("{} {}", s["actions"][0]["action"].as_str().unwrap(), s["actions"][0]["app"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        steps,
        [
            "StartApplication /shop/db",
            "ScaleApplication /shop/db",
            "StartApplication /shop/web",
            "ScaleApplication /shop/web"
        ]
    );
    // Until the database is healthy, the web app gets no task.
    eventually("the web app runs", Duration::from_secs(60), || {
        let web = app(&c, "shop/web");
        if web["tasks"].as_array().unwrap().is_empty() {
            return false;
        }
        assert_eq!(app(&c, "shop/db")["tasksHealthy"], 1, "web started before its dependency was healthy");
        web["tasksRunning"] == 1
    });
    eventually("the deployment ends", Duration::from_secs(30), || no_deployments(&c));
    // A dependency that does not exist is refused.
    let r = api(&c, "POST", "/v2/apps", Some(r#"{"id":"/lonely","cmd":"sleep 1","dependencies":["/nope"]}"#));
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["details"][0]["path"], "/dependencies(0)");
    // Users by name come from the image's passwd; an unknown one fails the task, named.
    let named = r#"{"id":"/named","cmd":"id -un; exec sleep 1000","user":"root","cpus":0.1,"mem":16,"portDefinitions":[],"container":{"type":"DOCKER","docker":{"image":"busybox"}}}"#;
    assert_eq!(api(&c, "POST", "/v2/apps", Some(named)).status, 201);
    eventually("the named user's task runs", Duration::from_secs(60), || running(&c, "named").len() == 1);
    let task = running(&c, "named")[0]["id"].as_str().unwrap().to_string();
    eventually("it runs as root", Duration::from_secs(20), || c.ok(&["task", "logs", &task]).contains("root"));
    let unknown = r#"{"id":"/unknown-user","cmd":"sleep 1","user":"www-data","cpus":0.1,"mem":16,"portDefinitions":[],"container":{"type":"DOCKER","docker":{"image":"busybox"}}}"#;
    assert_eq!(api(&c, "POST", "/v2/apps", Some(unknown)).status, 201);
    eventually("the unknown user is named", Duration::from_secs(60), || {
        app(&c, "unknown-user")["lastTaskFailure"]["message"].as_str().is_some_and(|m| m.contains("www-data"))
    });
}

#[test]
fn readiness_checks_hold_a_deployment_until_the_service_answers() {
    crate::support::needs_root!();
    let mut c = Cluster::in_namespaces("15", 1);
    c.start_named_agent("h0", "cpus:2;mem:2048", "");
    // Running at once, serving only after 3 s: the deployment must wait for the readiness check.
    let def = json!({
        "id": "/ready", "cpus": 0.1, "mem": 16,
        "cmd": "sleep 3; mkdir -p /tmp/w && echo ok > /tmp/w/index.html && exec httpd -f -p $PORT0 -h /tmp/w",
        "container": {"type": "DOCKER", "docker": {"image": "busybox"}},
        "portDefinitions": [{"port": 0, "name": "http-api"}],
        "readinessChecks": [{"protocol": "HTTP", "path": "/", "portName": "http-api", "intervalSeconds": 1, "timeoutSeconds": 1}],
        "healthChecks": [{"protocol": "TCP", "portIndex": 0, "gracePeriodSeconds": 30, "intervalSeconds": 1}],
    });
    assert_eq!(api(&c, "POST", "/v2/apps", Some(&def.to_string())).status, 201);
    eventually("the task runs", Duration::from_secs(60), || running(&c, "ready").len() == 1);
    let task = running(&c, "ready")[0].clone();
    let url = format!("http://{}:{}/", task["ipAddresses"][0]["ipAddress"].as_str().unwrap(), task["ports"][0]);
    eventually("the deployment finishes", Duration::from_secs(60), || {
        if !no_deployments(&c) {
            return false;
        }
        let answer = http().get(&url).call().map(|mut r| r.body_mut().read_to_string().unwrap_or_default());
        assert_eq!(answer.ok().as_deref(), Some("ok\n"), "the deployment finished before the service was ready");
        true
    });
    // The TCP health check passes; embeds show readiness and task statistics.
    let a = api(&c, "GET", "/v2/apps/ready?embed=app.readiness&embed=app.taskStats", None).body["app"].clone();
    assert_eq!(a["tasksHealthy"], 1, "{a}");
    assert_eq!(a["readinessCheckResults"][0]["ready"], true, "{a}");
    assert_eq!(a["taskStats"]["totalSummary"]["stats"]["counts"]["running"], 1, "{a}");
    assert!(api(&c, "GET", "/v2/apps", None).body["apps"][0].get("taskStats").is_none(), "only when asked");
}

#[test]
fn roles_and_reservations_bound_where_an_app_runs() {
    crate::support::needs_root!();
    let mut c = Cluster::in_namespaces("15", 1);
    c.start_named_agent("h0", "cpus:1;mem:1024;cpus(web):1;mem(web):512", "");
    // Only the resources reserved for role web: two instances of 0.5 cpus fit, the third waits.
    let def = r#"{"id":"/reserved","cmd":"exec sleep 1000","cpus":0.5,"mem":64,"instances":3,"role":"web","acceptedResourceRoles":["web"],"portDefinitions":[]}"#;
    assert_eq!(api(&c, "POST", "/v2/apps", Some(def)).status, 201);
    eventually("two instances run", Duration::from_secs(60), || running(&c, "reserved").len() == 2);
    eventually("why names the cpus", Duration::from_secs(30), || {
        let why = c.ok(&["app", "why", "/reserved"]);
        why.contains("2 of 3 instances running") && why.contains("InsufficientCpus")
    });
    // They took the reserved cpu; the unreserved one is still free.
    let agents: Vec<Value> = serde_json::from_str(&c.ok(&["agents", "--json"])).unwrap();
    let available = agents[0]["available"].as_str().unwrap().to_string();
    assert!(!available.contains("cpus(web)") && available.contains("cpus:1"), "{available}");
    // An app in another role cannot use them: with the unreserved cpu taken, it waits too.
    let other = r#"{"id":"/other","cmd":"exec sleep 1000","cpus":1,"mem":64,"instances":2,"portDefinitions":[]}"#;
    assert_eq!(api(&c, "POST", "/v2/apps", Some(other)).status, 201);
    eventually("one other instance runs", Duration::from_secs(60), || running(&c, "other").len() == 1);
    eventually("the second waits", Duration::from_secs(30), || c.ok(&["app", "why", "/other"]).contains("1 of 2"));
}

#[test]
fn bridge_networking_forwards_mapped_ports_into_the_task() {
    crate::support::needs_root!();
    let mut c = Cluster::in_namespaces("15", 1);
    c.start_named_agent("h0", "cpus:2;mem:2048", "");
    // The task listens on 8080 in its own network; the agent forwards a host port to it.
    let def = json!({
        "id": "/bridged", "cpus": 0.1, "mem": 16,
        "cmd": "mkdir -p /tmp/w && echo \"mapped $PORT_8080\" > /tmp/w/index.html && exec httpd -f -p 8080 -h /tmp/w",
        "container": {"type": "DOCKER", "docker": {"image": "busybox", "network": "BRIDGE"},
                      "portMappings": [{"containerPort": 8080, "hostPort": 0, "protocol": "tcp", "name": "web"}]},
        "healthChecks": [{"protocol": "HTTP", "path": "/", "portIndex": 0, "gracePeriodSeconds": 30, "intervalSeconds": 1}],
    });
    let r = api(&c, "POST", "/v2/apps", Some(&def.to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r.body["container"]["portMappings"][0]["servicePort"].as_u64() >= Some(10000), "{}", r.body);
    eventually("the bridged task is healthy", Duration::from_secs(60), || app(&c, "bridged")["tasksHealthy"] == 1);
    let task = running(&c, "bridged")[0].clone();
    let host_port = task["ports"][0].as_u64().unwrap();
    let url = format!("http://{}:{host_port}/", task["ipAddresses"][0]["ipAddress"].as_str().unwrap());
    let page = http().get(&url).call().unwrap().body_mut().read_to_string().unwrap();
    assert_eq!(page, format!("mapped {host_port}\n"));
    // NONE networking has nothing to map.
    let none = r#"{"id":"/none","cmd":"sleep 1","container":{"type":"DOCKER","docker":{"image":"busybox","network":"NONE"},"portMappings":[{"containerPort":80}]}}"#;
    let r = api(&c, "POST", "/v2/apps", Some(none));
    assert_eq!(r.status, 422, "{}", r.body);
    // Removing the app closes the forwarded port.
    c.ok(&["app", "rm", "/bridged"]);
    eventually("the port is closed", Duration::from_secs(60), || http().get(&url).call().is_err());
}

#[test]
fn groups_deploy_scale_and_remove_their_apps_together() {
    crate::support::needs_root!();
    let mut c = Cluster::in_namespaces("15", 1);
    c.start_named_agent("h0", "cpus:4;mem:4096", "");
    let sleeper = |id: &str| json!({"id": id, "cmd": "exec sleep 1000", "cpus": 0.1, "mem": 16, "portDefinitions": [], "taskKillGracePeriodSeconds": 1});
    // A group with a nested group; the outer apps depend on the inner group.
    let group = json!({
        "id": "/shop",
        "apps": [sleeper("web")],
        "dependencies": ["/shop/back"],
        "groups": [{"id": "back", "apps": [sleeper("db"), sleeper("cache")]}],
    });
    let r = api(&c, "POST", "/v2/groups", Some(&group.to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.location.as_deref(), Some("/v2/groups/shop"));
    let steps = api(&c, "GET", "/v2/deployments", None).body[0]["steps"].clone();
    let web_step = steps.as_array().unwrap().iter().position(|s| s.to_string().contains("/shop/web")).unwrap();
    let db_step = steps.as_array().unwrap().iter().position(|s| s.to_string().contains("/shop/back/db")).unwrap();
    assert!(db_step < web_step, "{steps}");
    eventually("three apps run", Duration::from_secs(60), || {
        ["shop/web", "shop/back/db", "shop/back/cache"].iter().all(|a| running(&c, a).len() == 1) && no_deployments(&c)
    });
    assert_eq!(api(&c, "POST", "/v2/groups", Some(&group.to_string())).status, 409);
    let tree = api(&c, "GET", "/v2/groups/shop", None).body;
    assert_eq!(tree["groups"][0]["id"], "/shop/back", "{tree}");
    // scaleBy doubles every app of the group.
    let r = api(&c, "PUT", "/v2/groups/shop/back", Some(r#"{"scaleBy": 2}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    eventually("the back group doubled", Duration::from_secs(60), || {
        running(&c, "shop/back/db").len() == 2 && running(&c, "shop/back/cache").len() == 2 && no_deployments(&c)
    });
    // A PUT of the group replaces it: an app left out is removed.
    let r = api(&c, "PUT", "/v2/groups/shop/back", Some(&json!({"apps": [sleeper("db")]}).to_string()));
    assert_eq!(r.status, 200, "{}", r.body);
    eventually("cache is gone", Duration::from_secs(60), || {
        api(&c, "GET", "/v2/apps/shop/back/cache", None).status == 404 && no_deployments(&c)
    });
    let r = api(&c, "DELETE", "/v2/groups/shop", None);
    assert_eq!(r.status, 200, "{}", r.body);
    eventually("the group is gone", Duration::from_secs(60), || {
        api(&c, "GET", "/v2/apps", None).body["apps"].as_array().unwrap().is_empty()
    });
    assert_eq!(api(&c, "DELETE", "/v2/groups/shop", None).status, 404);
}

/// The slow variants run with `CORRAL_SLOW_TESTS=1` (CI sets it).
fn slow() -> bool {
    std::env::var_os("CORRAL_SLOW_TESTS").is_some_and(|v| v == "1")
}

/// Containers running under the cluster's state root.
fn containers_running(c: &Cluster) -> usize {
    c.env.ps().iter().filter(|p| p["state"] == "running").count()
}

/// Everything settled: no deployment, `want` tasks running at `version` (if given), none
/// stuck in between, and exactly `want` containers running.
fn settled(c: &Cluster, id: &str, want: usize, version: Option<&str>) -> bool {
    let r = api(c, "GET", &format!("/v2/apps/{id}"), None);
    if r.status != 200 {
        return false;
    }
    let tasks = r.body["app"]["tasks"].as_array().cloned().unwrap_or_default();
    no_deployments(c)
        && tasks.len() == want
        && tasks.iter().all(|t| t["state"] == "TASK_RUNNING")
        && version.is_none_or(|v| tasks.iter().all(|t| t["version"] == v))
        && containers_running(c) == want
}

#[test]
fn kill_9_mid_rolling_deploy_leaves_exactly_the_instances_wanted() {
    crate::support::needs_root!();
    // The master and the agent (all of `corral up`) die with SIGKILL at different moments of
    // rolling deploys of a 30-instance app and come back; each time, the deploy finishes with
    // 30 containers, none stuck or left over. `CORRAL_SLOW_TESTS=1` runs 20 rounds, else 3.
    let mut c = Cluster::new("15");
    let port = crate::cluster::free_port();
    let work = c.env.root.path().join("agent-one");
    c.start_agent_at(port, &work, "cpus:8;mem:8192");
    let def = json!({
        "id": "/svc", "cmd": "exec sleep 100000",
        "container": {"type": "DOCKER", "docker": {"image": "busybox"}},
        "cpus": 0.01, "mem": 8, "instances": 30,
    });
    assert_eq!(api(&c, "POST", "/v2/apps", Some(&def.to_string())).status, 201);
    eventually("30 instances", Duration::from_secs(120), || settled(&c, "svc", 30, None));
    let rounds = if slow() { 20 } else { 3 };
    for round in 0..rounds {
        let body = json!({"cmd": format!("exec sleep {}", 100_001 + round)}).to_string();
        let r = api(&c, "PUT", "/v2/apps/svc?force=true", Some(&body));
        assert_eq!(r.status, 200, "{}", r.body);
        let version = r.body["version"].as_str().unwrap().to_string();
        // Die at a different moment each round: at once, or once k new tasks were placed.
        let k = round % 6 * 6;
        if k > 0 {
            eventually("the deploy is under way", Duration::from_secs(60), || {
                let a = app(&c, "svc");
                let new = a["tasks"].as_array().unwrap().iter().filter(|t| t["version"] == version.as_str()).count();
                new >= k || no_deployments(&c)
            });
        }
        c.master.as_mut().unwrap().kill9();
        c.agents[0].kill9();
        c.start_master("15");
        c.agents.clear();
        c.start_agent_at(port, &work, "cpus:8;mem:8192");
        eventually(&format!("round {round}: 30 containers of the new version"), Duration::from_secs(180), || {
            settled(&c, "svc", 30, Some(&version))
        });
    }
    let r = api(&c, "DELETE", "/v2/apps/svc?force=true", None);
    assert_eq!(r.status, 200, "{}", r.body);
    eventually("no container is left", Duration::from_secs(120), || containers_running(&c) == 0 && no_deployments(&c));
}

#[test]
fn concurrent_updates_and_a_forced_delete_leave_nothing_behind() {
    crate::support::needs_root!();
    // 20 PUTs at once, then a forced DELETE: kills that reach the agent before their launch
    // must not be dropped. Nothing stays running, no task stays KILLING, and the app can be
    // created again (also after a master restart).
    let mut c = Cluster::new("15");
    c.start_agent("one", "cpus:8;mem:8192");
    let def = |n: usize| {
        json!({
            "id": "/race", "cmd": format!("exec sleep {}", 100_000 + n),
            "container": {"type": "DOCKER", "docker": {"image": "busybox"}},
            "cpus": 0.01, "mem": 8, "instances": 3,
        })
        .to_string()
    };
    assert_eq!(api(&c, "PUT", "/v2/apps/race", Some(&def(0))).status, 201);
    let c = Arc::new(c);
    let writers: Vec<_> = (1..=20)
        .map(|n| {
            let c = c.clone();
            let body = def(n);
            std::thread::spawn(move || api(&c, "PUT", "/v2/apps/race?force=true", Some(&body)).status)
        })
        .collect();
    for w in writers {
        assert_eq!(w.join().unwrap(), 200);
    }
    let r = api(&c, "DELETE", "/v2/apps/race?force=true", None);
    assert_eq!(r.status, 200, "{}", r.body);
    eventually("nothing runs and nothing is stuck", Duration::from_secs(120), || {
        containers_running(&c) == 0
            && no_deployments(&c)
            && api(&c, "GET", "/v2/tasks", None).body["tasks"].as_array().is_some_and(|t| t.is_empty())
    });
    assert_eq!(api(&c, "POST", "/v2/apps", Some(&def(99))).status, 201, "the id can be used again");
    let mut c = Arc::into_inner(c).expect("the writers are done");
    c.master.as_mut().unwrap().kill9();
    c.start_master("15");
    eventually("3 instances after the restart", Duration::from_secs(120), || settled(&c, "race", 3, None));
}

#[test]
fn a_full_disk_refuses_writes_and_changes_nothing() {
    crate::support::needs_root!();
    // The master's store on a small tmpfs: a POST that cannot be committed is a 503 and
    // creates nothing (no app, no task, no container); once there is room, writes work again
    // without a restart.
    let mut c = Cluster::new("15");
    let data = c.env.root.path().join("small");
    std::fs::create_dir(&data).unwrap();
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"]).arg(&data).status().unwrap();
    assert!(mounted.success());
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(data.clone());
    c.master.as_mut().unwrap().kill9();
    c.start_master_with("15", &["--data-dir", data.to_str().unwrap()]);
    c.start_agent("one", "cpus:4;mem:4096");
    let def = |id: &str| {
        json!({"id": id, "cmd": "exec sleep 1000", "container": {"type": "DOCKER", "docker": {"image": "busybox"}},
            "cpus": 0.01, "mem": 8, "instances": 2, "labels": {"pad": "x".repeat(200_000)}})
        .to_string()
    };
    // Fill the disk but for a little.
    let filler = data.join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![7u8; 16 << 10];
        while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    }
    let mut refused = None;
    for i in 0..20 {
        let r = api(&c, "POST", "/v2/apps", Some(&def(&format!("/fill{i}"))));
        if r.status != 201 {
            refused = Some((i, r));
            break;
        }
    }
    let (i, r) = refused.expect("a write fails on a full disk");
    assert_eq!(r.status, 503, "{}", r.body);
    let id = format!("/fill{i}");
    assert_eq!(api(&c, "GET", &format!("/v2/apps{id}"), None).status, 404, "the refused app was not created");
    let tasks = api(&c, "GET", "/v2/tasks", None).body;
    let theirs = tasks["tasks"].as_array().unwrap().iter().filter(|t| t["appId"] == id.as_str()).count();
    assert_eq!(theirs, 0, "{tasks}");
    std::fs::remove_file(&filler).unwrap();
    let r = api(&c, "POST", "/v2/apps", Some(&def(&id)));
    assert_eq!(r.status, 201, "with room again, writes work: {}", r.body);
    eventually("the app runs", Duration::from_secs(60), || running(&c, &id).len() == 2);
    let expected = 2 * (i + 1);
    eventually("exactly the accepted apps' containers run", Duration::from_secs(60), || {
        containers_running(&c) == expected
    });
}
