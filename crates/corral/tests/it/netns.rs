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

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn agents_in_their_own_namespaces_run_tasks_and_survive_a_partition() {
    crate::support::needs_root!();
    let env = Env::new();
    let net = Net::new(2);
    let master_addr = format!("{}:{}", net.master_ip(), 15050 + std::process::id() % 1000);
    let spawn = |args: Vec<String>, ns: Option<&str>| -> Proc {
        let mut c = match ns {
            // Only the network namespace: `ip netns exec` would also remount /sys privately,
            // hiding the cgroup hierarchies the agent's containers need.
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg(corral_exe());
                c
            }
            None => Command::new(corral_exe()),
        };
        c.args(&args).env("CORRAL_ROOT", env.root.path()).stdout(Stdio::null()).stderr(Stdio::null());
        Proc(c.spawn().unwrap())
    };
    let master = spawn(
        vec!["master".into(), "--listen".into(), master_addr.clone(), "--agent-timeout".into(), "2".into()],
        None,
    );
    let cli = |args: &[&str]| {
        let out = env.cmd(args).env("CORRAL_MASTER", format!("http://{master_addr}")).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let try_json = |args: &[&str]| -> Vec<serde_json::Value> {
        let out = env.cmd(args).env("CORRAL_MASTER", format!("http://{master_addr}")).output().unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    };
    eventually("the master answers", Duration::from_secs(20), || {
        !try_json(&["tasks", "--json"]).is_empty()
            || env
                .cmd(&["tasks"])
                .env("CORRAL_MASTER", format!("http://{master_addr}"))
                .output()
                .unwrap()
                .status
                .success()
    });
    let mut agents = Vec::new();
    for i in 0..2 {
        let work = env.root.path().join(format!("agent-{i}"));
        agents.push(spawn(
            vec![
                "agent".into(),
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
            Some(&net.namespaces[i]),
        ));
    }
    eventually("both agents register from their own addresses", Duration::from_secs(20), || {
        let a = try_json(&["agents", "--json"]);
        a.len() == 2 && a.iter().all(|x| x["state"] == "active")
    });
    let addresses: Vec<String> =
        try_json(&["agents", "--json"]).iter().map(|a| a["address"].as_str().unwrap().to_string()).collect();
    for i in 0..2 {
        assert!(addresses.contains(&format!("http://{}:5051", net.agent_ip(i))), "{addresses:?}");
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
    let cut = task_on(&format!("http://{}:5051", net.agent_ip(0)));
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
