//! The cluster with real processes: a master and agents (separate `corral` processes talking
//! HTTPS, agents joined with the master's join token), tasks in real containers, DRF
//! placement, and recovery after `kill -9`.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{corral_exe, eventually, Env};

/// Where a daemon's log goes: nowhere, or with `CORRAL_TEST_LOGS=DIR` a file there (for
/// debugging a failing test).
pub(crate) fn log_sink(what: &str) -> Stdio {
    match std::env::var_os("CORRAL_TEST_LOGS") {
        Some(dir) => {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = std::path::Path::new(&dir).join(format!("{}-{what}-{n}.log", std::process::id()));
            std::fs::File::create(path).map(Stdio::from).unwrap_or_else(|_| Stdio::null())
        }
        None => Stdio::null(),
    }
}

/// The client of the cluster's master, as every tool uses it, with the admin token the master
/// wrote.
pub(crate) fn client(c: &Cluster) -> corral_client::Client {
    corral_client::Client::with_credentials(&format!("{}:{}", c.master_host(), c.master_port), c.credentials())
        .unwrap()
        .timeout(Some(Duration::from_secs(20)))
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `corral` daemon (master or agent) killed with SIGKILL when dropped.
pub(crate) struct Daemon(Child);

impl Daemon {
    fn start(env: &Env, args: &[&str]) -> Daemon {
        let child = Command::new(corral_exe())
            .args(args)
            .env("CORRAL_ROOT", env.root.path())
            .stdout(Stdio::null())
            .stderr(log_sink(args[0]))
            .spawn()
            .unwrap();
        Daemon(child)
    }

    pub(crate) fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0.id() as i32), sig).unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub(crate) struct Cluster {
    pub(crate) env: Env,
    pub(crate) master_port: u16,
    pub(crate) master: Option<Daemon>,
    pub(crate) agents: Vec<Daemon>,
    /// With network namespaces: the master on the bridge, agent `i` in namespace `i`.
    net: Option<crate::netns::Net>,
    /// The master's data directory: its tokens and the CLI configuration it wrote.
    pub(crate) data_dir: std::path::PathBuf,
}

impl Drop for Cluster {
    /// Stops the daemons before `Env` removes the containers: a live master would place
    /// queued tasks on the resources that removal frees, after the removal listed them.
    fn drop(&mut self) {
        self.agents.clear();
        self.master = None;
    }
}

impl Cluster {
    pub(crate) fn new(agent_timeout: &str) -> Cluster {
        Cluster::with_net(agent_timeout, None)
    }

    /// A cluster whose agents each run in their own network namespace, with their own address.
    pub(crate) fn in_namespaces(agent_timeout: &str, agents: usize) -> Cluster {
        Cluster::with_net(agent_timeout, Some(crate::netns::Net::new(agents)))
    }

    pub(crate) fn with_net(agent_timeout: &str, net: Option<crate::netns::Net>) -> Cluster {
        let env = Env::new();
        let master_port = free_port();
        let data_dir = env.root.path().join("master");
        let mut c = Cluster { env, master_port, master: None, agents: Vec::new(), net, data_dir };
        c.start_master(agent_timeout);
        c
    }

    pub(crate) fn master_host(&self) -> String {
        self.net.as_ref().map_or_else(|| "127.0.0.1".to_string(), |n| n.master_ip())
    }

    pub(crate) fn start_master(&mut self, agent_timeout: &str) {
        self.start_master_with(agent_timeout, &[]);
    }

    /// A master with more flags (`--data-dir`, ...).
    pub(crate) fn start_master_with(&mut self, agent_timeout: &str, extra: &[&str]) {
        let listen = format!("{}:{}", self.master_host(), self.master_port);
        let mut args = vec!["master", "--listen", &listen, "--agent-timeout", agent_timeout];
        args.extend_from_slice(extra);
        if let Some(at) = extra.iter().position(|a| *a == "--data-dir") {
            self.data_dir = extra[at + 1].into();
        }
        self.master = Some(Daemon::start(&self.env, &args));
        eventually("the master answers", Duration::from_secs(20), || self.cli(&["tasks"]).status.success());
    }

    /// The CA and the admin token the master wrote to its data directory.
    pub(crate) fn credentials(&self) -> corral_client::Credentials {
        let config = corral_client::Config::load(&self.data_dir.join("client.json")).unwrap();
        corral_client::Credentials { ca_pem: config.ca, identity: None, token: config.token }
    }

    /// The CLI configuration the master wrote.
    pub(crate) fn config_path(&self) -> std::path::PathBuf {
        self.data_dir.join("client.json")
    }

    /// The masters' CA certificate, in a file (for clients that take a path).
    pub(crate) fn ca_file(&self) -> std::path::PathBuf {
        let path = self.env.root.path().join("masters-ca.pem");
        std::fs::write(&path, self.credentials().ca_pem.unwrap()).unwrap();
        path
    }

    pub(crate) fn join_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("join-token")).unwrap().trim().to_string()
    }

    /// Starts an agent with its own work dir; returns its index.
    pub(crate) fn start_agent(&mut self, name: &str, resources: &str) -> usize {
        let port = free_port();
        let work = self.env.root.path().join(format!("agent-{name}"));
        self.start_agent_at(port, &work, resources)
    }

    pub(crate) fn start_agent_at(&mut self, port: u16, work: &std::path::Path, resources: &str) -> usize {
        self.start_agent_with(port, work, resources, &[])
    }

    /// An agent with its own hostname and attributes (for placement constraints).
    pub(crate) fn start_named_agent(&mut self, name: &str, resources: &str, attributes: &str) -> usize {
        let port = free_port();
        let work = self.env.root.path().join(format!("agent-{name}"));
        self.start_agent_with(port, &work, resources, &["--hostname", name, "--attributes", attributes])
    }

    pub(crate) fn start_agent_with(
        &mut self,
        port: u16,
        work: &std::path::Path,
        resources: &str,
        extra: &[&str],
    ) -> usize {
        let master = format!("{}:{}", self.master_host(), self.master_port);
        let join = self.join_token();
        let args = |listen: &str| -> Vec<String> {
            [
                "agent",
                "--master",
                &master,
                "--join-token",
                &join,
                "--listen",
                listen,
                "--resources",
                resources,
                "--work-dir",
                work.to_str().unwrap(),
            ]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
        };
        // In namespaces, agent k (counting those started so far) lives in namespace k; a
        // restarted agent reuses the namespace of the one it replaces (the same work dir).
        let (listen, d) = match &self.net {
            Some(net) => {
                let k = self.agents.len().min(net.namespaces.len() - 1);
                let listen = format!("{}:{port}", net.agent_ip(k));
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{}", net.namespaces[k])).arg(corral_exe()).args(args(&listen));
                c.env("CORRAL_ROOT", self.env.root.path()).stdout(Stdio::null()).stderr(log_sink("agent"));
                (listen, Daemon(c.spawn().unwrap()))
            }
            None => {
                let listen = format!("127.0.0.1:{port}");
                let a = args(&listen);
                let a: Vec<&str> = a.iter().map(String::as_str).collect();
                let d = Daemon::start(&self.env, &a);
                (listen, d)
            }
        };
        self.agents.push(d);
        let addr = format!("https://{listen}");
        eventually("the agent registers", Duration::from_secs(20), || {
            self.agents_json().iter().any(|a| a["address"] == addr.as_str() && a["state"] == "active")
        });
        self.agents.len() - 1
    }

    pub(crate) fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut c = self.env.cmd(args);
        c.env("CORRAL_MASTER", format!("{}:{}", self.master_host(), self.master_port));
        c.env("CORRAL_CONFIG", self.config_path());
        c.output().unwrap()
    }

    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.status.success(), "corral {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    pub(crate) fn agents_json(&self) -> Vec<serde_json::Value> {
        let out = self.cli(&["agents", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    pub(crate) fn tasks(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ok(&["tasks", "--json"])).unwrap()
    }

    pub(crate) fn task(&self, id: &str) -> serde_json::Value {
        self.tasks().into_iter().find(|t| t["id"] == id).unwrap_or_else(|| panic!("no task {id}"))
    }

    pub(crate) fn wait_state(&self, id: &str, state: &str) {
        eventually(&format!("task {id} is {state}"), Duration::from_secs(30), || self.task(id)["state"] == state);
    }

    pub(crate) fn run(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec!["task", "run"];
        all.extend_from_slice(args);
        self.ok(&all).lines().map(String::from).collect()
    }
}

#[test]
fn tasks_run_finish_fail_and_are_killed() {
    crate::support::needs_root!();
    let mut c = Cluster::new("15");
    c.start_agent("one", "cpus:4;mem:4096");
    let ok = c
        .run(&["--image", "busybox", "--cpus", "0.5", "--mem", "64", "--", "sh", "-c", "echo hello from a task"])
        .remove(0);
    c.wait_state(&ok, "FINISHED");
    assert_eq!(c.task(&ok)["exit_code"], 0);
    assert_eq!(c.ok(&["task", "logs", &ok]), "hello from a task\n");
    let bad = c.run(&["--", "sh", "-c", "exit 3"]).remove(0);
    c.wait_state(&bad, "FAILED");
    assert_eq!(c.task(&bad)["exit_code"], 3);
    let long = c
        .run(&["--image", "busybox", "--", "sh", "-c", "trap 'exit 0' TERM; echo up; while :; do sleep 0.1; done"])
        .remove(0);
    c.wait_state(&long, "RUNNING");
    eventually("the task printed", Duration::from_secs(10), || c.ok(&["task", "logs", &long]).contains("up"));
    c.ok(&["task", "kill", &long]);
    c.wait_state(&long, "KILLED");
    let missing = c.run(&["--image", "nope:1", "--", "true"]).remove(0);
    c.wait_state(&missing, "ERROR");
    assert!(c.task(&missing)["message"].as_str().unwrap().contains("unknown image"));
    // Bad requests name what was wrong.
    for (args, needle) in [
        (vec!["task", "run", "--cpus", "0", "--", "true"], "cpus: must be a positive number"),
        (vec!["task", "run", "--role", "a b", "--", "true"], "invalid role \"a b\""),
        (vec!["role", "set", "web", "--quota", "cpus:x"], "quota: invalid resources \"cpus:x\""),
        (vec!["role", "set", "web", "--weight=-1"], "weight for role web must be a positive number"),
        (vec!["role", "set", "web", "--weight=1e308"], "up to 1000000, not 1e308"),
        (vec!["task", "run", "--cpus", "1e300", "--", "true"], "cpus: must be a positive number up to 4096, not 1e300"),
        (vec!["task", "run", "--mem", "1e20", "--", "true"], "mem: must be 1 to 16777216 (MiB)"),
        (vec!["task", "kill", "nope"], "no such task: \"nope\""),
    ] {
        let out = c.cli(&args);
        assert_eq!(out.status.code(), Some(125), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let agents = c.agents_json();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0]["tasks"], 0, "no task left running");
    // Following a task's logs streams them until it ends.
    let chatty = c.run(&["--", "sh", "-c", "echo one; sleep 1; echo two"]).remove(0);
    c.wait_state(&chatty, "RUNNING");
    assert_eq!(c.ok(&["task", "logs", "-f", &chatty]), "one\ntwo\n");
}

#[test]
fn malformed_specs_and_bodies_are_refused_clearly() {
    crate::support::needs_root!();
    let c = Cluster::new("15");
    // An agent with a bad resource or attribute spec does not start.
    for (flag, value, needle) in [
        ("--resources", "cpus:x", "invalid --resources: invalid resources \"cpus:x\""),
        ("--resources", "ports:[5-1]", "range 5-1 ends before it begins"),
        ("--attributes", "rack", "invalid --attributes"),
    ] {
        let out =
            c.env.cmd(&["agent", "--master", "127.0.0.1:1", "--listen", "127.0.0.1:0", flag, value]).output().unwrap();
        assert_eq!(out.status.code(), Some(125), "{flag} {value}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "{flag} {value}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Malformed API bodies get a 400 that says what is wrong.
    let master = client(&c);
    let post = |path: &str, body: &str| -> (u16, String) {
        let answer = master.exchange("POST", path, Some(body)).unwrap();
        (answer.status, answer.text)
    };
    for (path, body, needle) in [
        ("/api/v1/tasks", "{not json", "invalid request body"),
        ("/api/v1/tasks", r#"{"cpus": 1, "mem": 32, "command": ["true"], "colour": "red"}"#, "unknown field `colour`"),
        ("/api/v1/tasks", r#"{"cpus": 1, "command": ["true"]}"#, "missing field `mem`"),
        ("/api/v1/tasks", r#"{"cpus": 1, "mem": 32, "command": []}"#, "a task needs a command"),
    ] {
        let (status, reply) = post(path, body);
        assert_eq!(status, 400, "{body}: {reply}");
        assert!(reply.contains(needle), "{body}: {reply}");
    }
    assert!(c.tasks().is_empty(), "nothing was stored from bad requests");
}

#[test]
fn the_drf_papers_example_across_two_roles() {
    crate::support::needs_root!();
    // 9 CPUs and 18 GB; A's tasks need <1 CPU, 4 GB>, B's <3 CPUs, 1 GB>; both queue more than
    // fits before the agent joins: A gets 3 tasks, B gets 2. The agent runs in its own network
    // namespace, as a separate process.
    let mut c = Cluster::in_namespaces("15", 1);
    let a =
        c.run(&["--role", "a", "--name", "a", "--count", "6", "--cpus", "1", "--mem", "4096", "--", "sleep", "1000"]);
    let b =
        c.run(&["--role", "b", "--name", "b", "--count", "6", "--cpus", "3", "--mem", "1024", "--", "sleep", "1000"]);
    assert_eq!((a.len(), b.len()), (6, 6));
    assert!(c.tasks().iter().all(|t| t["state"] == "STAGING"), "nothing runs without an agent");
    c.start_agent("drf", "cpus:9;mem:18432;disk:1000");
    eventually("five tasks run", Duration::from_secs(30), || {
        c.tasks().iter().filter(|t| t["state"] == "RUNNING").count() == 5
    });
    let running = |role: &str| c.tasks().iter().filter(|t| t["role"] == role && t["state"] == "RUNNING").count();
    assert_eq!((running("a"), running("b")), (3, 2));
    let roles: Vec<serde_json::Value> = serde_json::from_str(&c.ok(&["roles", "--json"])).unwrap();
    for r in roles.iter().filter(|r| r["role"] == "a" || r["role"] == "b") {
        let share = r["dominant_share"].as_f64().unwrap();
        assert!((share - 2.0 / 3.0).abs() < 0.01, "{r}");
    }
}

#[test]
fn a_master_killed_and_restarted_recovers_its_state() {
    crate::support::needs_root!();
    let mut c = Cluster::new("15");
    c.start_agent("one", "cpus:2;mem:2048");
    let long =
        c.run(&["--name", "long", "--", "sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"]).remove(0);
    c.wait_state(&long, "RUNNING");
    c.ok(&["role", "set", "web", "--weight", "3"]);
    // This one ends while the master is down: its update waits on the agent's disk.
    let short = c.run(&["--name", "short", "--", "sh", "-c", "sleep 1; exit 0"]).remove(0);
    c.wait_state(&short, "RUNNING");
    c.master.as_mut().unwrap().kill9();
    eventually("the short task ends", Duration::from_secs(20), || {
        c.env.ok(&["ps", "--json"]).lines().any(|l| l.contains(&short) && l.contains("\"exited\""))
    });
    c.start_master("15");
    c.wait_state(&short, "FINISHED");
    // The restarted master knows the task and the role; the agent re-registers by itself.
    assert_eq!(c.task(&long)["state"], "RUNNING");
    let roles: Vec<serde_json::Value> = serde_json::from_str(&c.ok(&["roles", "--json"])).unwrap();
    assert!(roles.iter().any(|r| r["role"] == "web" && r["weight"] == 3.0), "{roles:?}");
    eventually("the agent is back", Duration::from_secs(20), || c.agents_json().iter().any(|a| a["state"] == "active"));
    c.ok(&["task", "kill", &long]);
    eventually("the task ends", Duration::from_secs(30), || c.task(&long)["state"] == "KILLED");
}

#[test]
fn an_agent_killed_and_restarted_keeps_its_tasks() {
    crate::support::needs_root!();
    let mut c = Cluster::in_namespaces("15", 1);
    let port = free_port();
    let work = c.env.root.path().join("agent-work");
    c.start_agent_at(port, &work, "cpus:2;mem:2048");
    let long = c.run(&["--name", "long", "--", "sleep", "1000"]).remove(0);
    let short = c.run(&["--name", "short", "--", "sh", "-c", "sleep 2; exit 7"]).remove(0);
    c.wait_state(&long, "RUNNING");
    c.wait_state(&short, "RUNNING");
    c.agents.pop().unwrap().kill9();
    // While the agent is down, the short task ends; its shim records how.
    eventually("the short task ends", Duration::from_secs(20), || {
        let out = c.env.ok(&["ps", "--json"]);
        out.lines().any(|l| l.contains(&short) && l.contains("\"exited\""))
    });
    c.start_agent_at(port, &work, "cpus:2;mem:2048");
    c.wait_state(&short, "FAILED");
    assert_eq!(c.task(&short)["exit_code"], 7, "the real exit status, reported after the restart");
    assert_eq!(c.task(&long)["state"], "RUNNING", "the container outlived its agent");
}

#[test]
fn a_silent_agent_makes_its_tasks_unreachable_until_it_returns() {
    crate::support::needs_root!();
    let mut c = Cluster::new("1");
    c.start_agent("one", "cpus:2;mem:2048");
    let long = c.run(&["--name", "long", "--", "sleep", "1000"]).remove(0);
    c.wait_state(&long, "RUNNING");
    c.agents[0].signal(nix::sys::signal::Signal::SIGSTOP);
    c.wait_state(&long, "UNREACHABLE");
    assert!(c.agents_json().iter().all(|a| a["state"] == "unreachable"));
    c.agents[0].signal(nix::sys::signal::Signal::SIGCONT);
    c.wait_state(&long, "RUNNING");
    assert!(c.agents_json().iter().all(|a| a["state"] == "active"));
}

#[test]
fn sandboxes_keep_a_tasks_files_and_output_after_its_container_is_collected() {
    crate::support::needs_root!();
    let mut c = Cluster::new("15");
    let work = c.env.root.path().join("agent-gc");
    c.start_agent_with(free_port(), &work, "cpus:4;mem:4096", &["--container-retention", "0s"]);
    // A host task works in its sandbox; an image task finds it at $MESOS_SANDBOX.
    let host = c
        .run(&[
            "--",
            "sh",
            "-c",
            "echo made > made.txt; mkdir out; echo deep > out/x; ln -s /etc/shadow leak; echo said; echo oops >&2",
        ])
        .remove(0);
    let image = c.run(&["--image", "busybox", "--", "sh", "-c", "echo img > $MESOS_SANDBOX/f"]).remove(0);
    c.wait_state(&host, "FINISHED");
    c.wait_state(&image, "FINISHED");
    assert_eq!(c.ok(&["task", "files", &host, "made.txt"]), "made\n");
    assert_eq!(c.ok(&["task", "files", &host, "out/x"]), "deep\n");
    assert_eq!(c.ok(&["task", "files", &image, "f"]), "img\n");
    // A link the task planted is listed, never followed.
    let out = c.cli(&["task", "files", &host, "leak"]);
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stderr).contains("symbolic link"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = c.cli(&["task", "files", &host, "../../agent_id"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("inside the sandbox"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Ended, acknowledged, past a retention of 0 s: the containers go (corral ps on the
    // agent's machine no longer lists them), and the output stays in the sandbox.
    eventually("the ended containers are removed", Duration::from_secs(30), || {
        let names: Vec<String> = c.env.ps().iter().map(|p| p["name"].as_str().unwrap_or("").to_string()).collect();
        !names.contains(&host) && !names.contains(&image)
    });
    assert_eq!(c.ok(&["task", "logs", &host]), "said\noops\n");
    let listing = c.ok(&["task", "files", &host]);
    for name in ["made.txt", "out", "leak", "stdout", "stderr"] {
        assert!(listing.lines().any(|l| l.ends_with(&format!("  {name}"))), "{name}:\n{listing}");
    }
    assert_eq!(c.ok(&["task", "files", &host, "stderr"]), "oops\n");
}

#[test]
fn unused_images_are_removed_when_the_disk_is_full_never_one_a_container_uses() {
    crate::support::needs_root!();
    let mut c = Cluster::new("15");
    let spare = tempfile::tempdir().unwrap();
    std::fs::write(spare.path().join("data"), "spare").unwrap();
    c.env.ok(&["image", "import", spare.path().to_str().unwrap(), "spare:v1"]);
    // A container on this machine uses busybox.
    let user = c.env.ok(&["run", "-d", "--image", "busybox", "--", "sleep", "1000"]).trim().to_string();
    let images = |c: &Cluster| -> String { c.env.ok(&["image", "ls"]) };
    // A high-water mark of 0 %: the disk is always too full.
    let work = c.env.root.path().join("agent-images");
    c.start_agent_with(free_port(), &work, "cpus:4;mem:4096", &["--image-gc-high", "0", "--image-gc-low", "0"]);
    eventually("the unused image is removed", Duration::from_secs(30), || !images(&c).contains("spare"));
    assert!(images(&c).contains("busybox"), "an image in use stays: {}", images(&c));
    c.env.ok(&["rm", "--force", &user]);
    eventually("busybox goes once nothing uses it", Duration::from_secs(30), || !images(&c).contains("busybox"));
}

#[test]
fn image_and_system_prune_remove_what_nothing_uses() {
    crate::support::needs_root!();
    let env = Env::new();
    let spare = tempfile::tempdir().unwrap();
    std::fs::write(spare.path().join("data"), "spare").unwrap();
    env.ok(&["image", "import", spare.path().to_str().unwrap(), "spare:v1"]);
    env.ok(&["run", "--image", "busybox", "--", "true"]);
    let out = env.ok(&["image", "prune"]);
    assert!(out.contains("removed 0 blobs"), "{out}");
    let out = env.ok(&["image", "prune", "--all"]);
    assert!(out.contains("removed image spare:v1") && !out.contains("busybox"), "{out}");
    assert!(env.ok(&["image", "ls"]).contains("busybox"), "the ended container still uses it");
    let out = env.ok(&["system", "prune", "--all"]);
    assert!(out.contains("removed container") && out.contains("removed image busybox:latest"), "{out}");
    assert!(env.ps().is_empty());
}

#[test]
fn tasks_and_apps_past_their_disk_are_killed_with_the_reason() {
    crate::support::needs_root!();
    let mut c = Cluster::new("15");
    c.start_agent("one", "cpus:4;mem:4096;disk:10000");
    let fill = "dd if=/dev/zero of=$MESOS_SANDBOX/big bs=1M count=40 2>/dev/null; sleep 60";
    let id = c.run(&["--disk", "10", "--image", "busybox", "--", "sh", "-c", fill]).remove(0);
    c.wait_state(&id, "FAILED");
    let message = c.task(&id)["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("past its limit of 10 MiB"), "{message}");
    // A Marathon app's `disk`, for a task without an image (its sandbox is its working directory).
    let app = serde_json::json!({"id": "/filler", "cmd": "dd if=/dev/zero of=big bs=1M count=40; sleep 60", "cpus": 0.1, "mem": 32, "disk": 10});
    client(&c).marathon("POST", "/v2/apps", Some(&app)).unwrap();
    eventually("the app's failure to say why", Duration::from_secs(60), || {
        client(&c).marathon("GET", "/v2/apps/filler", None).is_ok_and(|v| {
            v["app"]["lastTaskFailure"]["message"].as_str().is_some_and(|m| m.contains("past its limit of 10 MiB"))
        })
    });
}

#[test]
fn a_task_whose_shim_is_killed_is_lost_and_leaves_nothing_running() {
    crate::support::needs_root!();
    let mut c = Cluster::new("15");
    c.start_agent("one", "cpus:4;mem:4096");
    let id = c.run(&["--image", "busybox", "--", "sleep", "600"]).remove(0);
    c.wait_state(&id, "RUNNING");
    let containers = c.env.containers_dir();
    let dir = std::fs::read_dir(&containers).unwrap().map(|e| e.unwrap().path()).next().expect("its container");
    let read_pid = |file: &str| -> i32 { std::fs::read_to_string(dir.join(file)).unwrap().trim().parse().unwrap() };
    let (shim, init) = (read_pid("shim.pid"), read_pid("init.pid"));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(shim), nix::sys::signal::Signal::SIGKILL).unwrap();
    c.wait_state(&id, "LOST");
    eventually("the lost task's process to end", Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{init}/stat")).map_or(true, |s| s.contains(") Z "))
    });
}
