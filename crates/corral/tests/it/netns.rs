//! A cluster across network namespaces: the master on a bridge in the test's namespace, each
//! agent a separate process in its own namespace with its own address (veth pairs), placement
//! across them, and an agent cut off (its link down) and reconnected.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::support::{corral_exe, eventually, Env};

static NEXT: AtomicU32 = AtomicU32::new(0);

fn sh(cmd: &str) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A bridge with one namespace per agent, removed on drop. Names carry the test's pid so that
/// parallel test processes do not collide.
pub struct Net {
    bridge: String,
    subnet: String,
    pub namespaces: Vec<String>,
}

impl Net {
    pub fn new(agents: usize) -> Net {
        // Unique among the test processes running at once (their pids differ), and per test
        // within one: names and a 10.A.B.0/24 subnet from a space of 25,600.
        let n = std::process::id().wrapping_mul(4).wrapping_add(NEXT.fetch_add(1, Ordering::SeqCst)) % 25_600;
        let id = n;
        // The first three octets, e.g. "10.107.42".
        let subnet = format!("10.{}.{}", 100 + n / 256, n % 256);
        let bridge = format!("cbr{id}");
        sh(&format!(
            "ip link add {bridge} type bridge && ip addr add {subnet}.1/24 dev {bridge} && ip link set {bridge} up"
        ));
        let mut net = Net { bridge, subnet: subnet.clone(), namespaces: Vec::new() };
        for i in 0..agents {
            let ns = format!("cns{id}-{i}");
            let (host, peer) = (format!("cvh{id}{i}"), format!("cvp{id}{i}"));
            sh(&format!(
                "ip netns add {ns} && ip link add {host} type veth peer name {peer} && ip link set {peer} netns {ns} && \
                 ip link set {host} master {bridge} && ip link set {host} up && \
                 ip -n {ns} addr add {subnet}.{}/24 dev {peer} && ip -n {ns} link set {peer} up && ip -n {ns} link set lo up",
                i + 10,
                bridge = net.bridge
            ));
            net.namespaces.push(ns);
        }
        net
    }

    pub fn master_ip(&self) -> String {
        format!("{}.1", self.subnet)
    }

    pub fn agent_ip(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, i + 10)
    }

    fn host_link(&self, i: usize) -> String {
        let ns = &self.namespaces[i];
        let id = ns.trim_start_matches("cns").split('-').next().unwrap().to_string();
        format!("cvh{id}{i}")
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).status();
    }
}

struct Proc(Child);

/// An agent's state root, whose containers (tasks outlive their agent) are removed with it.
struct AgentRoot(tempfile::TempDir);

impl AgentRoot {
    fn new() -> AgentRoot {
        AgentRoot(tempfile::tempdir().unwrap())
    }

    fn path(&self) -> &std::path::Path {
        self.0.path()
    }
}

impl Drop for AgentRoot {
    fn drop(&mut self) {
        let ids = std::fs::read_dir(self.path().join("containers")).into_iter().flatten().flatten();
        for entry in ids {
            let id = entry.file_name().to_string_lossy().to_string();
            let _ = Command::new(corral_exe()).args(["rm", "--force", &id]).env("CORRAL_ROOT", self.path()).output();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The join token of the master whose state is under `root`, once it wrote it.
fn join_token(root: &std::path::Path) -> String {
    let config = root.join("master/client.json");
    eventually("the master wrote its tokens", Duration::from_secs(20), || config.exists());
    std::fs::read_to_string(root.join("master/join-token")).unwrap().trim().to_string()
}

/// A client of that master with its admin token.
fn admin_client(root: &std::path::Path, master: &str) -> corral_client::Client {
    join_token(root);
    let config = corral_client::Config::load(&root.join("master/client.json")).unwrap();
    let credentials = corral_client::Credentials { ca_pem: config.ca, identity: None, token: config.token };
    corral_client::Client::with_credentials(master, credentials).unwrap().timeout(Some(Duration::from_secs(10)))
}

#[test]
fn agents_in_their_own_namespaces_run_tasks_and_survive_a_partition() {
    crate::support::needs_root!();
    let env = Env::new();
    let net = Net::new(2);
    let master_addr = format!("{}:{}", net.master_ip(), 15050 + std::process::id() % 1000);
    let master = spawn_in(
        None,
        env.root.path(),
        &["master".into(), "--listen".into(), master_addr.clone(), "--agent-timeout".into(), "2".into()],
    );
    let config = env.root.path().join("master/client.json");
    let cli = |args: &[&str]| {
        let out = env.cmd(args).env("CORRAL_MASTER", &master_addr).env("CORRAL_CONFIG", &config).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let try_json = |args: &[&str]| -> Vec<serde_json::Value> {
        let out = env.cmd(args).env("CORRAL_MASTER", &master_addr).env("CORRAL_CONFIG", &config).output().unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    };
    eventually("the master answers", Duration::from_secs(20), || {
        !try_json(&["tasks", "--json"]).is_empty()
            || env
                .cmd(&["tasks"])
                .env("CORRAL_MASTER", &master_addr)
                .env("CORRAL_CONFIG", &config)
                .output()
                .unwrap()
                .status
                .success()
    });
    // The roots go after the agents (declared before them): their containers are removed then.
    let roots: Vec<AgentRoot> = (0..2).map(|_| AgentRoot::new()).collect();
    let mut agents = Vec::new();
    let join = join_token(env.root.path());
    for (i, root) in roots.iter().enumerate() {
        let work = env.root.path().join(format!("agent-{i}"));
        agents.push(spawn_in(
            Some(&net.namespaces[i]),
            root.path(),
            &[
                "agent".into(),
                "--join-token".into(),
                join.clone(),
                "--master".into(),
                master_addr.clone(),
                "--listen".into(),
                format!("{}:5051", net.agent_ip(i)),
                "--resources".into(),
                "cpus:1;mem:1024".into(),
                "--attributes".into(),
                format!("rack:r{i}"),
                "--work-dir".into(),
                work.display().to_string(),
            ],
        ));
    }
    eventually("both agents register from their own addresses", Duration::from_secs(20), || {
        let a = try_json(&["agents", "--json"]);
        a.len() == 2 && a.iter().all(|x| x["state"] == "active")
    });
    let addresses: Vec<String> =
        try_json(&["agents", "--json"]).iter().map(|a| a["address"].as_str().unwrap().to_string()).collect();
    for i in 0..2 {
        assert!(addresses.contains(&format!("https://{}:5051", net.agent_ip(i))), "{addresses:?}");
    }
    // Each agent has one cpu: two one-cpu tasks land on different agents.
    let ids: Vec<String> = cli(&["task", "run", "--count", "2", "--cpus", "1", "--mem", "64", "--", "sleep", "1000"])
        .lines()
        .map(String::from)
        .collect();
    eventually("both tasks run", Duration::from_secs(30), || {
        try_json(&["tasks", "--json"]).iter().filter(|t| t["state"] == "RUNNING").count() == 2
    });
    let placed: std::collections::BTreeSet<String> =
        try_json(&["tasks", "--json"]).iter().map(|t| t["agent"].as_str().unwrap().to_string()).collect();
    assert_eq!(placed.len(), 2, "one task per agent");

    // Cut agent 0 off: its task becomes UNREACHABLE; reconnect: RUNNING again.
    let task_on = |agent_addr: &str| -> String {
        let agents = try_json(&["agents", "--json"]);
        let agent_id = agents.iter().find(|a| a["address"] == agent_addr).unwrap()["id"].as_str().unwrap().to_string();
        try_json(&["tasks", "--json"]).iter().find(|t| t["agent"] == agent_id.as_str()).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let cut = task_on(&format!("https://{}:5051", net.agent_ip(0)));
    let state_of = |id: &str| try_json(&["tasks", "--json"]).iter().find(|t| t["id"] == id).map(|t| t["state"].clone());
    sh(&format!("ip link set {} down", net.host_link(0)));
    eventually("the cut-off agent's task is unreachable", Duration::from_secs(20), || {
        state_of(&cut) == Some("UNREACHABLE".into())
    });
    let other = ids.iter().find(|i| **i != cut).unwrap().clone();
    assert_eq!(state_of(&other), Some("RUNNING".into()), "the other agent is unaffected");
    sh(&format!("ip link set {} up", net.host_link(0)));
    eventually("the agent returns and its task runs", Duration::from_secs(30), || {
        state_of(&cut) == Some("RUNNING".into())
    });
    drop(agents);
    drop(master);
}

/// Starts `corral ARGS` with its own state root, inside `ns` (its network namespace only:
/// `ip netns exec` would also remount /sys privately, hiding the cgroup hierarchies).
fn spawn_in(ns: Option<&str>, root: &std::path::Path, args: &[String]) -> Proc {
    let mut c = match ns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}")).arg(corral_exe());
            c
        }
        None => Command::new(corral_exe()),
    };
    let log = std::fs::File::create(root.join("daemon.log")).unwrap();
    c.args(args).env("CORRAL_ROOT", root).env("NO_COLOR", "1").stdout(Stdio::null()).stderr(log);
    Proc(c.spawn().unwrap())
}

#[test]
fn agents_in_their_own_namespaces_pull_from_a_private_registry_once_each() {
    crate::support::needs_root!();
    use crate::registry::Registry;
    let env = Env::new();
    let net = Net::new(4);
    // The registry in the fourth namespace, with basic auth: not on any agent's loopback.
    let reg_addr = format!("{}:5000", net.agent_ip(3));
    let reg = Registry::start_at(Some(&net.namespaces[3]), &reg_addr, true);
    let ctx = tempfile::tempdir().unwrap();
    // v2 carries 24 MiB that do not compress: its pull takes a while through a slowed proxy.
    let noise: Vec<u8> = (0..24u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(ctx.path().join("noise.bin"), noise).unwrap();
    for (v, extra) in [("v1", ""), ("v2", "COPY noise.bin /noise.bin\n")] {
        std::fs::write(
            ctx.path().join("Containerfile"),
            format!("FROM busybox\nRUN echo {v} > /msg\n{extra}CMD [\"sh\", \"-c\", \"cat /msg; exec sleep 1000\"]\n"),
        )
        .unwrap();
        env.ok(&["build", "-t", &format!("app:{v}"), ctx.path().to_str().unwrap()]);
        let dest = format!("{reg_addr}/team/app:{v}");
        env.ok(&["push", "--insecure", "--username", "corral", "--password", "s3cret", &format!("app:{v}"), &dest]);
    }
    // The same registry through a proxy on the bridge that can be slowed down and cut off.
    let proxy = Proxy::start(&net.master_ip(), reg_addr.clone());
    let proxy_addr = proxy.addr.clone();

    // Without credentials the pull fails, saying so.
    let files = tempfile::tempdir().unwrap();
    let no_auth = files.path().join("no-auth.json");
    std::fs::write(&no_auth, format!(r#"{{"insecure-registries": ["{reg_addr}"]}}"#)).unwrap();
    let out = Env::new().corral(&[
        "run",
        "--registries-config",
        no_auth.to_str().unwrap(),
        "--image",
        &format!("{reg_addr}/team/app:v1"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(&format!("from {reg_addr}: unauthorized")), "{err}");
    assert!(!err.contains("s3cret"));

    // Agents with credentials and the registry in their search list, each its own machine
    // (its own store).
    let config = files.path().join("registries.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"unqualified-search-registries": ["{reg_addr}"], "insecure-registries": ["{reg_addr}", "{proxy_addr}"],
                "auths": {{"{reg_addr}": {{"auth": "Y29ycmFsOnMzY3JldA=="}},
                          "{proxy_addr}": {{"username": "corral", "password": "s3cret"}}}}}}"#
        ),
    )
    .unwrap();
    let master_addr = format!("{}:{}", net.master_ip(), 16050 + std::process::id() % 1000);
    let _master = spawn_in(
        None,
        env.root.path(),
        &["master".into(), "--listen".into(), master_addr.clone(), "--agent-timeout".into(), "3".into()],
    );
    let roots: Vec<AgentRoot> = (0..3).map(|_| AgentRoot::new()).collect();
    let join = join_token(env.root.path());
    let _agents: Vec<Proc> = (0..3)
        .map(|i| {
            let args = [
                "agent",
                "--join-token",
                &join,
                "--master",
                &master_addr,
                "--listen",
                &format!("{}:5051", net.agent_ip(i)),
                "--resources",
                "cpus:2;mem:1024",
                "--hostname",
                &format!("node{i}"),
                "--registries-config",
                config.to_str().unwrap(),
            ];
            spawn_in(Some(&net.namespaces[i]), roots[i].path(), &args.map(String::from))
        })
        .collect();
    let client = admin_client(env.root.path(), &master_addr);
    eventually("three agents", Duration::from_secs(30), || client.agents().is_ok_and(|a| a.len() == 3));

    // Six instances, two per agent, of an image named without its registry.
    let app = |image: &str| {
        serde_json::json!({
            "id": "/pulled", "instances": 6, "cpus": 0.5, "mem": 32,
            "constraints": [["hostname", "MAX_PER", "2"]],
            "backoffSeconds": 1, "maxLaunchDelaySeconds": 2,
            "upgradeStrategy": {"minimumHealthCapacity": 0, "maximumOverCapacity": 0},
            "container": {"docker": {"image": image}}
        })
    };
    client.marathon("POST", "/v2/apps", Some(&app("team/app:v1"))).unwrap();
    let app_state = || client.marathon("GET", "/v2/apps/pulled", None).map(|v| v["app"].clone()).unwrap_or_default();
    // What the agents said, for a failure's message.
    let logs = || -> String {
        roots.iter().map(|r| std::fs::read_to_string(r.path().join("daemon.log")).unwrap_or_default()).collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while app_state()["tasksRunning"] != 6 {
        assert!(
            std::time::Instant::now() < deadline,
            "six instances did not run: {}\n{}\n{}",
            app_state(),
            serde_json::to_string(&client.tasks().unwrap_or_default()).unwrap(),
            logs()
        );
        std::thread::park_timeout(Duration::from_millis(200));
    }
    let log = reg.access_log();
    for i in 0..3 {
        let pulls = log
            .lines()
            .filter(|l| l.starts_with(&format!("{} ", net.agent_ip(i))))
            .filter(|l| l.contains("\"GET /v2/team/app/manifests/v1 HTTP/1.1\" 200"))
            .count();
        assert_eq!(pulls, 1, "agent {i} pulled once for its two tasks:\n{log}");
    }

    // The registry dies in the middle of an upgrade's pulls (seen as STAGING with progress):
    // the tasks fail naming it, and the app recovers when it returns.
    eventually("the deployment to finish", Duration::from_secs(30), || {
        client.marathon("GET", "/v2/deployments", None).is_ok_and(|d| d.as_array().is_some_and(|d| d.is_empty()))
    });
    proxy.throttle(Some(4 << 20));
    let v2 = format!("{proxy_addr}/team/app:v2");
    client.marathon("PUT", "/v2/apps/pulled", Some(&app(&v2))).unwrap();
    eventually("a pull under way", Duration::from_secs(60), || {
        client.tasks().unwrap_or_default().iter().any(|t| {
            let m = t.message.as_deref().unwrap_or_default();
            let done =
                m.strip_prefix(&format!("pulling {v2}: ")).and_then(|r| r.split('/').next()?.parse::<u64>().ok());
            t.state.as_str() == "STAGING" && done.is_some_and(|d| d >= 2)
        })
    });
    proxy.kill();
    eventually("a failure naming the registry", Duration::from_secs(120), || {
        let m = app_state()["lastTaskFailure"]["message"].as_str().unwrap_or_default().to_string();
        m.contains(&format!("pulling {v2} from {proxy_addr}: unreachable"))
    });
    proxy.revive();
    eventually("six instances of v2", Duration::from_secs(180), || {
        let tasks = client.marathon("GET", "/v2/apps/pulled/tasks", None).unwrap_or_default();
        let v2 = app_state()["version"].clone();
        let all = tasks["tasks"].as_array().cloned().unwrap_or_default();
        all.len() == 6 && all.iter().all(|t| t["state"] == "TASK_RUNNING" && t["version"] == v2)
    });
}

/// A TCP proxy that can be slowed down and cut off: a registry that dies in the middle of a
/// transfer, and comes back.
struct Proxy {
    addr: String,
    state: std::sync::Arc<std::sync::Mutex<ProxyState>>,
}

#[derive(Default)]
struct ProxyState {
    dead: bool,
    /// Bytes per second towards the client.
    rate: Option<u64>,
    open: Vec<std::net::TcpStream>,
}

impl Proxy {
    fn start(ip: &str, target: String) -> Proxy {
        let listener = std::net::TcpListener::bind(format!("{ip}:0")).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = std::sync::Arc::new(std::sync::Mutex::new(ProxyState::default()));
        let st = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if st.lock().unwrap().dead {
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&target) else { continue };
                {
                    let mut s = st.lock().unwrap();
                    s.open.push(client.try_clone().unwrap());
                    s.open.push(server.try_clone().unwrap());
                }
                let (c, s) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pump(c, s, None));
                let st = st.clone();
                std::thread::spawn(move || pump(server, client, Some(st)));
            }
        });
        Proxy { addr, state }
    }

    fn throttle(&self, bytes_per_sec: Option<u64>) {
        self.state.lock().unwrap().rate = bytes_per_sec;
    }

    /// Every connection cut, new ones refused.
    fn kill(&self) {
        let mut s = self.state.lock().unwrap();
        s.dead = true;
        for c in s.open.drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Back, at full speed.
    fn revive(&self) {
        let mut s = self.state.lock().unwrap();
        s.dead = false;
        s.rate = None;
    }
}

fn pump(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    throttled: Option<std::sync::Arc<std::sync::Mutex<ProxyState>>>,
) {
    use std::io::{Read, Write};
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(rate) = throttled.as_ref().and_then(|s| s.lock().unwrap().rate) {
            let until = std::time::Instant::now() + Duration::from_secs_f64(n as f64 / rate as f64);
            while std::time::Instant::now() < until {
                std::thread::park_timeout(until - std::time::Instant::now());
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}
