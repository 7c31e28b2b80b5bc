//! The master and agents on fake containers: what each scenario leaves running, and how tasks
//! end, checked through the same client the CLI uses.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_client::Client;
use corral_cluster::agent::{self, AgentConfig, FakeRuntime};
use corral_cluster::master;
use corral_cluster::wire;
use serde_json::{json, Value};

/// A daemon on a runtime of its own: dropping it stops every task it spawned, as a killed
/// process would.
pub struct Daemon {
    runtime: Option<tokio::runtime::Runtime>,
    pub addr: SocketAddr,
}

impl Daemon {
    pub fn new(runtime: tokio::runtime::Runtime, addr: SocketAddr) -> Daemon {
        Daemon { runtime: Some(runtime), addr }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

pub fn start_master(dir: &Path) -> Daemon {
    let rt = runtime();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let store = corral_store::RedbStore::open(&dir.join("master.redb")).unwrap();
    rt.spawn(master::serve_store(listener, Arc::new(store), Duration::from_secs(3)));
    Daemon { runtime: Some(rt), addr }
}

pub fn start_agent(master: SocketAddr, dir: &Path, name: &str, fake: &FakeRuntime) -> Daemon {
    let rt = runtime();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let config = AgentConfig {
        master: format!("http://{master}"),
        listen: addr,
        advertise: None,
        resources: Some("cpus:4;mem:4096;disk:1000;ports:[31000-31100]".into()),
        attributes: String::new(),
        hostname: Some(name.into()),
        state_root: dir.join(name).join("state"),
        work_dir: dir.join(name).join("work"),
        corral_exe: "/nonexistent".into(),
        registries: Default::default(),
        gc: Default::default(),
        userns: Default::default(),
        dev: true,
        join_token: None,
    };
    std::fs::create_dir_all(&config.state_root).unwrap();
    rt.spawn(agent::serve_with(listener, config, Arc::new(fake.clone())));
    Daemon { runtime: Some(rt), addr }
}

pub fn client(addr: SocketAddr) -> Client {
    Client::new(&addr.to_string()).timeout(Some(Duration::from_secs(10)))
}

fn get(addr: SocketAddr, path: &str) -> Value {
    client(addr).get(path).unwrap_or_else(|e| panic!("{e}"))
}

fn send(addr: SocketAddr, method: &'static str, path: &str, body: Value) -> Value {
    let body = (!body.is_null()).then_some(&body);
    client(addr).marathon(method, path, body).unwrap_or_else(|e| panic!("{e}"))
}

/// Polls until `f` holds, or fails after the deadline naming what it waited for.
pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        // Poll gently between looks.
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

fn task(addr: SocketAddr, id: &str) -> wire::TaskInfo {
    client(addr).task(id).unwrap()
}

fn run(addr: SocketAddr, command: &str, count: u32) -> Vec<wire::TaskId> {
    let req = wire::RunTasks {
        role: "*".into(),
        name: None,
        count,
        cpus: 0.5,
        mem: 64.0,
        disk: 0.0,
        image: None,
        pull: Default::default(),
        command: command.split_whitespace().map(str::to_string).collect(),
    };
    client(addr).run_tasks(&req).unwrap()
}

fn state_of(addr: SocketAddr, id: &str) -> String {
    task(addr, id).state.as_str().to_string()
}

#[test]
fn tasks_end_as_their_fake_containers_do() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeRuntime::new();
    let m = start_master(dir.path());
    let _a = start_agent(m.addr, dir.path(), "a1", &fake);

    let finished = run(m.addr, "fake exit 0 after 100", 2);
    let failed = run(m.addr, "fake exit 3 after 50", 1);
    let error = run(m.addr, "fake fail no such image", 1);
    let long = run(m.addr, "sleep forever", 1);
    for id in &finished {
        wait_for("a finished task", || state_of(m.addr, id) == "FINISHED");
        assert_eq!(task(m.addr, id).exit_code, Some(0));
    }
    wait_for("a failed task", || state_of(m.addr, &failed[0]) == "FAILED");
    assert_eq!(task(m.addr, &failed[0]).exit_code, Some(3));
    wait_for("a task that could not start", || state_of(m.addr, &error[0]) == "ERROR");
    assert!(task(m.addr, &error[0]).message.unwrap_or_default().contains("no such image"));

    wait_for("the long task to run", || state_of(m.addr, &long[0]) == "RUNNING");
    assert_eq!(fake.running(), 1);
    client(m.addr).kill_task(&long[0]).unwrap();
    wait_for("the kill", || state_of(m.addr, &long[0]) == "KILLED");
    assert_eq!(fake.running(), 0, "no container runs that nobody wants");
}

#[test]
fn an_agent_restarted_keeps_its_tasks_and_a_service_scales_on_fakes() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeRuntime::new();
    let m = start_master(dir.path());
    let a = start_agent(m.addr, dir.path(), "a1", &fake);
    let _b = start_agent(m.addr, dir.path(), "a2", &fake);
    wait_for("two agents", || get(m.addr, "/api/v1/agents").as_array().unwrap().len() == 2);

    // A service through the Marathon API.
    send(
        m.addr,
        "POST",
        "/v2/apps",
        json!({"id": "/web", "cmd": "fake serve", "cpus": 0.25, "mem": 32, "instances": 4}),
    );
    let running = |m: SocketAddr| get(m, "/v2/apps/web")["app"]["tasksRunning"].as_u64().unwrap_or(0);
    wait_for("4 instances", || running(m.addr) == 4 && fake.running() == 4);

    // The agent is killed and comes back with the same work directory: its tasks keep
    // running (the fake containers outlive it, as shims do), and nothing is started twice.
    let task_ids = |m: SocketAddr| {
        let mut ids: Vec<String> = get(m, "/v2/apps/web/tasks")["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let before = task_ids(m.addr);
    drop(a);
    let a = start_agent(m.addr, dir.path(), "a1", &fake);
    let address = format!("http://{}", a.addr);
    wait_for("the agent to register again", || {
        get(m.addr, "/api/v1/agents").as_array().unwrap().iter().any(|x| x["address"] == address.as_str())
    });
    assert_eq!(task_ids(m.addr), before, "the restarted agent kept every task");
    assert_eq!(running(m.addr), 4);
    assert_eq!(fake.running(), 4, "no container was started twice or lost");

    // Scale down, then remove: every container stops, those of the restarted agent too.
    let settled = |m: SocketAddr| get(m, "/v2/deployments").as_array().unwrap().is_empty();
    wait_for("the deployment to finish", || settled(m.addr));
    send(m.addr, "PUT", "/v2/apps/web", json!({"instances": 1}));
    wait_for("1 instance", || running(m.addr) == 1 && fake.running() == 1);
    wait_for("the scale-down to finish", || settled(m.addr));
    send(m.addr, "DELETE", "/v2/apps/web", Value::Null);
    wait_for("no instance", || fake.running() == 0);
}

#[test]
fn a_task_is_staging_while_its_image_is_pulled_and_a_failed_pull_fails_it() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeRuntime::new();
    let m = start_master(dir.path());
    let _a = start_agent(m.addr, dir.path(), "a1", &fake);
    let image = "10.0.0.5:5000/team/app:v1";
    let run_image = |pull: wire::Pull| {
        let req = wire::RunTasks {
            role: "*".into(),
            name: None,
            count: 1,
            cpus: 0.5,
            mem: 64.0,
            disk: 0.0,
            image: Some(image.into()),
            pull,
            command: vec!["serve".into()],
        };
        client(m.addr).run_tasks(&req).unwrap().remove(0)
    };

    // While the pull goes on: STAGING, with how far it got as the reason.
    fake.hold_pulls(image);
    let id = run_image(wire::Pull::Missing);
    wait_for("the pull's progress as the reason", || {
        let t = task(m.addr, &id);
        t.state.as_str() == "STAGING" && t.message.as_deref() == Some("pulling 10.0.0.5:5000/team/app:v1: 0/1 MiB")
    });
    assert_eq!(fake.running(), 0);
    fake.release_pulls(image);
    wait_for("the task to run once its image is there", || state_of(m.addr, &id) == "RUNNING");

    // A pull that fails: TASK_FAILED, naming the registry and the cause.
    let cause = "pulling 10.0.0.5:5000/team/app:v1 from 10.0.0.5:5000: not found: no such image";
    fake.fail_pulls(image, Some(cause));
    let failed = run_image(wire::Pull::Always);
    wait_for("the failed pull", || state_of(m.addr, &failed) == "FAILED");
    assert_eq!(task(m.addr, &failed).message.as_deref(), Some(cause));

    // An app whose image cannot be pulled backs off, says why, and recovers when it can be.
    send(
        m.addr,
        "POST",
        "/v2/apps",
        json!({"id": "/pulled", "cpus": 0.25, "mem": 32, "instances": 2, "backoffSeconds": 0.2,
               "container": {"docker": {"image": image, "forcePullImage": true}}}),
    );
    wait_for("the app's last failure to name the pull", || {
        get(m.addr, "/v2/apps/pulled")["app"]["lastTaskFailure"]["message"].as_str() == Some(cause)
    });
    let delay = get(m.addr, "/v2/queue")["queue"][0]["delay"]["timeLeftSeconds"].as_f64();
    assert!(delay.is_some(), "the queue shows the launch delay");
    fake.fail_pulls(image, None);
    wait_for("the app to recover", || get(m.addr, "/v2/apps/pulled")["app"]["tasksRunning"].as_u64() == Some(2));
}

/// A loopback HTTP server answering each path in `files` with its bytes, anything else 404.
fn serve_files(files: Vec<(&'static str, Vec<u8>)>) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut line = String::new();
            let _ = BufReader::new(&conn).read_line(&mut line);
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            match files.iter().find(|(p, _)| *p == path) {
                Some((_, body)) => {
                    let _ =
                        write!(conn, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                    let _ = conn.write_all(body);
                }
                None => {
                    let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                }
            }
        }
    });
    addr
}

#[test]
fn fetched_artifacts_land_in_the_sandbox_unpacked_and_a_missing_one_fails_the_task() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeRuntime::new();
    let m = start_master(dir.path());
    let _a = start_agent(m.addr, dir.path(), "a1", &fake);
    let mut tgz = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    let mut header = tar::Header::new_gnu();
    header.set_size(8);
    header.set_mode(0o644);
    tgz.append_data(&mut header, "conf/app.conf", &b"port=80\n"[..]).unwrap();
    let tgz = tgz.into_inner().unwrap().finish().unwrap();
    let server = serve_files(vec![("/app.tgz", tgz), ("/tool.sh", b"#!/bin/sh\necho tool\n".to_vec())]);

    send(
        m.addr,
        "POST",
        "/v2/apps",
        json!({"id": "/fetched", "cmd": "fake serve", "cpus": 0.25, "mem": 32,
               "uris": [format!("http://{server}/app.tgz")],
               "fetch": [{"uri": format!("http://{server}/tool.sh"), "executable": true}]}),
    );
    wait_for("the app to run", || get(m.addr, "/v2/apps/fetched")["app"]["tasksRunning"] == 1);
    let id = get(m.addr, "/v2/apps/fetched/tasks")["tasks"][0]["id"].as_str().unwrap().to_string();
    let c = client(m.addr);
    let top: Vec<(String, String)> = c.task_files(&id, "").unwrap().into_iter().map(|e| (e.path, e.mode)).collect();
    let ro = "-r--r--r--".to_string();
    assert_eq!(
        top,
        [
            ("conf".into(), "drwxr-xr-x".into()),
            ("stderr".into(), ro.clone()),
            ("stdout".into(), ro),
            ("tool.sh".into(), "-rwxr-xr-x".into())
        ],
        "its output is there while it runs"
    );
    let mut out = String::new();
    std::io::Read::read_to_string(&mut c.task_file(&id, "stdout").unwrap(), &mut out).unwrap();
    assert!(out.starts_with("fake container "), "{out}");
    let mut conf = String::new();
    std::io::Read::read_to_string(&mut c.task_file(&id, "conf/app.conf").unwrap(), &mut conf).unwrap();
    assert_eq!(conf, "port=80\n");

    // A missing artifact: the task fails naming it, and the app says so.
    send(
        m.addr,
        "POST",
        "/v2/apps",
        json!({"id": "/missing", "cmd": "fake serve", "cpus": 0.25, "mem": 32,
               "fetch": [{"uri": format!("http://{server}/nope.tgz")}]}),
    );
    let want = format!("fetching http://{server}/nope.tgz: not found: the server answered 404");
    wait_for("the failure to name the artifact", || {
        get(m.addr, "/v2/apps/missing")["app"]["lastTaskFailure"]["message"].as_str() == Some(want.as_str())
    });
}
