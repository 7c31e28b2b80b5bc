//! `corral bench launch`: the time from the API call that submits a task to the task RUNNING,
//! on a one-node cluster (master and agent in this process, on loopback), p50 and p99.

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use corral_client::Client;
use corral_cluster::wire;

use super::stats_row;

pub fn run(runs: usize) -> Result<()> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let work = std::env::temp_dir().join(format!("corral-bench-launch-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let port = |_: ()| -> Result<u16> { Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()) };
    let (master_port, agent_port) = (port(())?, port(())?);
    let master = corral_cluster::master::MasterConfig {
        listen: ([127, 0, 0, 1], master_port).into(),
        data_dir: work.join("master"),
        agent_timeout: Duration::from_secs(15),
    };
    let agent = corral_cluster::agent::AgentConfig {
        master: format!("http://127.0.0.1:{master_port}"),
        listen: ([127, 0, 0, 1], agent_port).into(),
        advertise: None,
        resources: Some("cpus:1000;mem:1000000".into()),
        attributes: String::new(),
        hostname: None,
        state_root: work.clone(),
        work_dir: work.join("agent"),
        corral_exe: std::env::current_exe()?,
        registries: Default::default(),
        gc: Default::default(),
        userns: Default::default(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.spawn(corral_cluster::master::run(master));
    rt.spawn(corral_cluster::agent::run(agent));
    let master = Client::new(&format!("127.0.0.1:{master_port}"));
    wait_for_agent(&master)?;
    let mut samples = Vec::with_capacity(runs);
    let mut ids = Vec::new();
    for _ in 0..runs {
        let req = wire::RunTasks {
            role: "*".into(),
            name: Some("bench".into()),
            count: 1,
            cpus: 0.01,
            mem: 16.0,
            disk: 0.0,
            image: None,
            pull: Default::default(),
            command: vec!["sleep".into(), "1000".into()],
        };
        let start = Instant::now();
        let id = master.run_tasks(&req).context("submitting a task")?.remove(0);
        loop {
            let t = master.task(&id)?;
            match t.state {
                corral_cluster::task::TaskState::Running => break,
                s if s.is_terminal() => bail!("task {id} ended as {s:?}: {:?}", t.message),
                _ => {}
            }
        }
        samples.push(start.elapsed());
        ids.push(id);
    }
    for id in &ids {
        let _ = master.kill_task(id);
    }
    cleanup(&work);
    drop(rt);
    let _ = std::fs::remove_dir_all(&work);
    println!("Task launch: API call to RUNNING on a one-node cluster ({runs} tasks, host `sleep`)\n");
    println!("| case | min ms | median ms | p90 ms |");
    println!("|---|---:|---:|---:|");
    let p99 = {
        let mut s = samples.clone();
        s.sort();
        s[((s.len() - 1) as f64 * 0.99).round() as usize]
    };
    println!("{}", stats_row("POST /api/v1/tasks -> RUNNING", &mut samples));
    println!("\np99: {:.1} ms", p99.as_secs_f64() * 1000.0);
    Ok(())
}

/// Waits (20 s at most) until an agent has registered with the master at `base`.
pub(super) fn wait_for_agent(master: &Client) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let agents = master.agents().unwrap_or_default();
        if agents.iter().any(|a| a.state == "active") {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the agent did not register");
        }
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

/// Kills and removes every container the benchmark started.
pub(super) fn cleanup(root: &Path) {
    let containers = corral_runtime::state::Containers::new(root);
    for id in containers.ids().unwrap_or_default() {
        let dir = containers.dir_of(&id);
        let _ = corral_runtime::control::send(&dir, &format!("signal {}", libc::SIGKILL));
        let _ = corral_runtime::control::wait(&dir);
        let name = dir.read_record().map(|r| r.name).unwrap_or_default();
        corral_runtime::create::remove(&containers, &dir, &name);
    }
}
