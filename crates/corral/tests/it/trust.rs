//! Trust at the cluster's edges, tried as an attacker would: every API needs a token and the
//! right role for what it asks, agents need the certificate they got when they joined, an
//! agent answers only its master, and a refused request changes nothing.

use std::time::Duration;

use corral_client::{Client, Credentials};
use serde_json::json;

use crate::cluster::{client, Cluster};
use crate::support::eventually;

/// A client of the master trusting its CA, with `token` (or none).
fn with_token(c: &Cluster, token: Option<&str>) -> Client {
    let credentials = Credentials { token: token.map(str::to_string), ..c.credentials() };
    Client::with_credentials(&format!("{}:{}", c.master_host(), c.master_port), credentials)
        .unwrap()
        .timeout(Some(Duration::from_secs(10)))
}

/// `corral token create ...` through the CLI, as an admin; the token from its last line.
fn token(c: &Cluster, args: &[&str]) -> String {
    let mut all = vec!["token", "create"];
    all.extend_from_slice(args);
    c.ok(&all).lines().last().unwrap().to_string()
}

/// An app anyone with a writer token may run: an image, its own network.
fn app(id: &str) -> String {
    json!({"id": id, "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "instances": 0,
           "container": {"type": "DOCKER", "docker": {"image": "busybox", "network": "BRIDGE"}}})
    .to_string()
}

#[test]
fn every_api_needs_a_token_with_the_role_for_what_it_asks() {
    crate::support::needs_root!();
    let c = Cluster::new("15");
    let admin = client(&c);
    let anonymous = with_token(&c, None);

    // Nothing without a token: 401, naming what to send, on every API.
    for (method, path, body) in [
        ("GET", "/v2/apps", None),
        ("GET", "/v2/events", None),
        ("GET", "/api/v1/tasks", None),
        ("GET", "/api/v1/agents", None),
        ("GET", "/v1/scheduler/jobs", None),
        ("POST", "/v2/apps", Some(app("/sneaky").as_str())),
        ("POST", "/api/v1/tasks", Some(r#"{"cpus": 0.1, "mem": 16, "command": ["id"]}"#)),
    ] {
        let a = anonymous.exchange(method, path, body).unwrap();
        assert_eq!(a.status, 401, "{method} {path}: {}", a.text);
        assert!(a.text.contains("authentication required"), "{method} {path}: {}", a.text);
    }
    let a = with_token(&c, Some("tok-000000000000.not-the-secret")).exchange("GET", "/v2/apps", None).unwrap();
    assert_eq!(a.status, 401, "{}", a.text);
    assert!(a.text.contains("not valid"), "{}", a.text);
    // Health and the CA certificate need nothing (an agent checks the CA against its join token).
    assert_eq!(anonymous.exchange("GET", "/ping", None).unwrap().status, 200);
    assert!(anonymous.exchange("GET", "/api/v1/ca", None).unwrap().text.contains("BEGIN CERTIFICATE"));
    // Plain HTTP to the master's port gets nowhere.
    assert!(Client::new(&format!("http://{}:{}", c.master_host(), c.master_port)).agents().is_err());

    // A reader reads and changes nothing.
    let reader = with_token(&c, Some(&token(&c, &["--role", "reader", "--description", "dashboards"])));
    assert_eq!(reader.exchange("GET", "/v2/apps", None).unwrap().status, 200);
    let a = reader.exchange("POST", "/v2/apps", Some(&app("/by-reader"))).unwrap();
    assert_eq!(a.status, 403, "{}", a.text);
    assert!(a.text.contains("needs a writer token"), "{}", a.text);
    // A writer changes apps, but not tokens or roles.
    let writer_token = token(&c, &["--role", "writer"]);
    let writer = with_token(&c, Some(&writer_token));
    assert_eq!(writer.exchange("POST", "/v2/apps", Some(&app("/by-writer"))).unwrap().status, 201);
    for (method, path, body) in [
        ("POST", "/api/v1/tokens", Some(r#"{"role": "admin"}"#)),
        ("GET", "/api/v1/tokens", None),
        ("PUT", "/api/v1/roles/ads", Some(r#"{"weight": 1e6}"#)),
    ] {
        let a = writer.exchange(method, path, body).unwrap();
        assert_eq!(a.status, 403, "{method} {path}: {}", a.text);
    }
    let apps = admin.marathon("GET", "/v2/apps", None).unwrap();
    let ids: Vec<&str> = apps["apps"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["/by-writer"], "only the writer's app was stored");

    // What only an admin may run: a command on the host, root, the host's network, host paths.
    let with = |patch: serde_json::Value| {
        let mut a: serde_json::Value = serde_json::from_str(&app("/privileged")).unwrap();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                a.as_object_mut().unwrap().remove(k);
            } else {
                a[k] = v.clone();
            }
        }
        a.to_string()
    };
    for (patch, says) in [
        (json!({"container": null}), "runs on the host"),
        (json!({"user": "0"}), "user 0 (root)"),
        (json!({"user": "root"}), "user 0 (root)"),
        (
            json!({"container": {"type": "DOCKER", "docker": {"image": "busybox", "network": "HOST"}}}),
            "host networking",
        ),
        (
            json!({"container": {"type": "DOCKER", "docker": {"image": "busybox", "network": "BRIDGE"},
                                 "volumes": [{"containerPath": "/h", "hostPath": "/etc", "mode": "RW"}]}}),
            "host path volumes",
        ),
        (json!({"healthChecks": [{"protocol": "COMMAND", "command": {"value": "id"}}]}), "COMMAND health checks"),
        (json!({"fetch": [{"uri": "http://169.254.169.254/latest/meta-data/iam"}]}), "link-local"),
    ] {
        let a = writer.exchange("POST", "/v2/apps", Some(&with(patch.clone()))).unwrap();
        assert_eq!(a.status, 403, "{patch}: {}", a.text);
        assert!(a.text.contains(says) && a.text.contains("only an admin"), "{patch}: {}", a.text);
        // Nor by changing an app that was ordinary (a PUT that leaves out the container keeps it).
        if patch.get("container") != Some(&serde_json::Value::Null) {
            let mut change = patch.clone();
            change["instances"] = json!(0);
            let a = writer.exchange("PUT", "/v2/apps/by-writer", Some(&change.to_string())).unwrap();
            assert_eq!(a.status, 403, "{patch}: {}", a.text);
        }
    }
    let a = writer.exchange("POST", "/api/v1/tasks", Some(r#"{"cpus": 0.1, "mem": 16, "command": ["id"]}"#)).unwrap();
    assert!(a.status == 403 && a.text.contains("--image"), "{}", a.text);
    let job = json!({"name": "hostjob", "command": "id", "schedule": "R/2030-01-01T00:00:00Z/PT1H", "owner": "a@b"});
    let a = writer.exchange("POST", "/v1/scheduler/iso8601", Some(&job.to_string())).unwrap();
    assert_eq!(a.status, 403, "{}", a.text);
    assert_eq!(admin.marathon("GET", "/v2/apps/by-writer", None).unwrap()["app"]["user"], serde_json::Value::Null);
    assert!(admin.exchange("GET", "/v1/scheduler/jobs", None).unwrap().text.contains("[]"), "no job was stored");
    // An admin may; a writer may then scale it, but not change what it runs.
    let host_app = with(json!({"id": "/host-app", "container": null}));
    assert_eq!(admin.exchange("POST", "/v2/apps", Some(&host_app)).unwrap().status, 201);
    let a = writer.exchange("PUT", "/v2/apps/host-app?force=true", Some(r#"{"instances": 0}"#)).unwrap();
    assert_eq!(a.status, 200, "{}", a.text);
    let a = writer.exchange("POST", "/v2/apps/host-app/restart?force=true", None).unwrap();
    assert_eq!(a.status, 200, "{}", a.text);
    let a = writer.exchange("PUT", "/v2/apps/host-app?force=true", Some(r#"{"cmd": "cat /etc/shadow"}"#)).unwrap();
    assert_eq!(a.status, 403, "{}", a.text);
    let stored = admin.marathon("GET", "/v2/apps/host-app", None).unwrap();
    assert_eq!(stored["app"]["cmd"], "sleep 1000", "the refused change changed nothing");

    // Basic auth with the token as the password, for clients that speak only that.
    let basic = {
        use base64::Engine;
        let ca = ureq::tls::Certificate::from_pem(c.credentials().ca_pem.unwrap().as_bytes()).unwrap();
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::new_with_certs(&[ca])).build())
            .build()
            .new_agent();
        let url = format!("https://{}:{}/v2/apps", c.master_host(), c.master_port);
        move |password: &str| {
            let value = base64::engine::general_purpose::STANDARD.encode(format!("anyone:{password}"));
            http.get(&url).header("Authorization", format!("Basic {value}")).call().unwrap().status().as_u16()
        }
    };
    assert_eq!(basic(&writer_token), 200);
    assert_eq!(basic("wrong"), 401);

    // Tokens are listed without their secrets; a revoked one stops working at once.
    let listed = c.ok(&["token", "ls"]);
    let writer_id = writer_token.split('.').next().unwrap();
    assert!(listed.contains(writer_id) && listed.contains("dashboards"), "{listed}");
    assert!(!listed.contains(writer_token.split('.').nth(1).unwrap()), "a secret was listed: {listed}");
    c.ok(&["token", "revoke", writer_id]);
    assert_eq!(writer.exchange("GET", "/v2/apps", None).unwrap().status, 401);
    // One that expires stops working then.
    let brief = with_token(&c, Some(&token(&c, &["--role", "reader", "--ttl", "1s"])));
    assert_eq!(brief.exchange("GET", "/v2/apps", None).unwrap().status, 200);
    eventually("the token expires", Duration::from_secs(10), || {
        brief.exchange("GET", "/v2/apps", None).unwrap().text.contains("expired")
    });

    // Bad token requests are refused, naming the field.
    let a = admin.exchange("POST", "/api/v1/tokens", Some(r#"{"role": "root"}"#)).unwrap();
    assert!(a.status == 422 && a.text.contains("role \\\"root\\\""), "{}", a.text);
    let a = admin.exchange("POST", "/api/v1/tokens", Some(r#"{"role": "reader", "namespace": "team-b"}"#)).unwrap();
    assert!(a.status == 422 && a.text.contains("namespace"), "{}", a.text);

    // Only agents register, heartbeat and report updates: a user token, even an admin's, is
    // refused, so no fake agent receives launches and no forged update ends a task.
    for (path, body) in [
        (
            "/api/v1/agents",
            r#"{"hostname": "fake", "address": "https://10.9.9.9:1", "resources": "cpus:64;mem:65536"}"#,
        ),
        ("/api/v1/agents/agent-1/heartbeat", "{}"),
        ("/api/v1/agents/agent-1/updates", r#"{"updates": []}"#),
    ] {
        let a = admin.exchange("POST", path, Some(body)).unwrap();
        assert_eq!(a.status, 403, "{path}: {}", a.text);
    }
    assert!(admin.agents().unwrap().is_empty(), "no agent was registered");
    // Joining needs the join token.
    let join = json!({"token": "tok-1.guess", "hosts": ["10.9.9.9"]}).to_string();
    assert_eq!(anonymous.exchange("POST", "/api/v1/join", Some(&join)).unwrap().status, 401);

    // Development mode is for loopback only.
    let out = c.env.cmd(&["master", "--insecure-dev", "--listen", "0.0.0.0:0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn an_agent_answers_only_its_master_and_speaks_only_for_itself() {
    crate::support::needs_root!();
    let mut c = Cluster::new("15");
    let a0 = c.start_named_agent("a0", "cpus:2;mem:1024", "");
    c.start_named_agent("a1", "cpus:2;mem:1024", "");
    let _ = a0;
    let admin = client(&c);
    let agents = admin.agents().unwrap();
    let (first, second) = (&agents[0], &agents[1]);
    let task = c.run(&["--image", "busybox", "--", "sleep", "1000"]).remove(0);
    c.wait_state(&task, "RUNNING");
    let on = c.task(&task)["agent"].as_str().unwrap().to_string();
    let (home, other) = if on == first.id.as_str() { (first, second) } else { (second, first) };

    // The agent's port: without the master's certificate nothing gets through, a token
    // neither, nor another agent's certificate.
    let work = |hostname: &str| c.env.root.path().join(format!("agent-{hostname}")).join("tls");
    let read = |p: std::path::PathBuf| std::fs::read_to_string(p).unwrap();
    let other_identity = (read(work(&other.hostname).join("agent.pem")), read(work(&other.hostname).join("agent.key")));
    let launch = json!({"task_id": "intruder", "name": "intruder", "resources": "cpus:0.1;mem:16",
                        "command": ["id"], "user": "0"})
    .to_string();
    let tries = [
        Credentials { ca_pem: None, identity: None, token: None },
        Credentials { token: c.credentials().token, ..Credentials::default() },
        Credentials { identity: Some(other_identity.clone()), ..Credentials::default() },
    ];
    for credentials in tries {
        let to_agent = Client::with_credentials(&home.address, credentials).unwrap();
        for (method, path, body) in [
            ("POST", "/api/v1/tasks", Some(launch.as_str())),
            ("POST", &format!("/api/v1/tasks/{task}/kill") as &str, None),
            ("GET", "/api/v1/tasks/x/files", None),
        ] {
            assert!(to_agent.exchange(method, path, body).is_err(), "{method} {path} reached the agent");
        }
    }
    // Another agent may not speak for this one: no forged update ends its task.
    let as_other = Client::with_credentials(
        &format!("{}:{}", c.master_host(), c.master_port),
        Credentials { identity: Some(other_identity.clone()), ..c.credentials() },
    )
    .unwrap();
    let other_identity_again = other_identity;
    let forged = json!({"updates": [{"seq": 1, "task_id": task, "state": "FINISHED"}]}).to_string();
    let a = as_other.exchange("POST", &format!("/api/v1/agents/{}/updates", home.id), Some(&forged)).unwrap();
    assert_eq!(a.status, 403, "{}", a.text);
    assert!(a.text.contains("may not speak for"), "{}", a.text);
    assert_eq!(c.task(&task)["state"], "RUNNING");
    // The master still reaches the agent: the task's output comes through it, and a kill works.
    c.ok(&["task", "kill", &task]);
    c.wait_state(&task, "KILLED");

    // A revoked agent's certificate stands for nobody: its calls are refused, and it goes
    // unreachable. Only an admin revokes.
    let writer = Credentials { token: Some(token(&c, &["--role", "writer"])), ..c.credentials() };
    let as_writer = Client::with_credentials(&format!("{}:{}", c.master_host(), c.master_port), writer).unwrap();
    assert_eq!(as_writer.exchange("DELETE", &format!("/api/v1/agents/{}", other.id), None).unwrap().status, 403);
    c.ok(&["agents", "revoke", other.id.as_str()]);
    let only_certificate = Client::with_credentials(
        &format!("{}:{}", c.master_host(), c.master_port),
        Credentials { identity: Some(other_identity_again), token: None, ..c.credentials() },
    )
    .unwrap();
    let a = only_certificate.exchange("POST", &format!("/api/v1/agents/{}/heartbeat", other.id), Some("{}")).unwrap();
    assert_eq!(a.status, 401, "{}", a.text);
    eventually("the revoked agent is unreachable", Duration::from_secs(60), || {
        admin.agents().unwrap().iter().any(|a| a.id == other.id && a.state != "active")
    });
    assert!(c.cli(&["agents", "revoke", "agent-nobody"]).status.code() == Some(125));
}
