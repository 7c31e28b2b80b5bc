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
    println!("Task launch: API call to RUNNING on a one-node cluster ({runs} tasks, host `sleep`), without");
    println!("and with TLS and tokens (`--insecure-dev`, then the default: HTTPS with an admin token, the");
    println!("master and the agent on mutual TLS)\n");
    println!("| case | min ms | median ms | p90 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|");
    // Two rounds, the order swapped in the second, so that neither case always runs on a
    // machine the other has just warmed (or left busy cleaning up).
    let (mut plain, mut secured) = (Vec::new(), Vec::new());
    let half = runs.div_ceil(2);
    for order in [[false, true], [true, false]] {
        for secure in order {
            let samples = launches(half, secure)?;
            if secure {
                secured.extend(samples)
            } else {
                plain.extend(samples)
            }
        }
    }
    for (secure, mut samples) in [(false, plain), (true, secured)] {
        let p99 = {
            let mut s = samples.clone();
            s.sort();
            s[((s.len() - 1) as f64 * 0.99).round() as usize]
        };
        let case = if secure {
            "POST /api/v1/tasks -> RUNNING, TLS and token"
        } else {
            "POST /api/v1/tasks -> RUNNING, plain HTTP"
        };
        println!("{} {:.1} |", stats_row(case, &mut samples), p99.as_secs_f64() * 1000.0);
    }
    Ok(())
}

/// `runs` launches one after another on a fresh one-node cluster; each one's time.
fn launches(runs: usize, secure: bool) -> Result<Vec<Duration>> {
    let work = std::env::temp_dir().join(format!("corral-bench-launch-{}-{secure}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let port = |_: ()| -> Result<u16> { Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()) };
    let (master_port, agent_port) = (port(())?, port(())?);
    let security = if secure {
        corral_cluster::master::SecurityConfig::Secure { names: Vec::new() }
    } else {
        corral_cluster::master::SecurityConfig::Dev
    };
    let master = corral_cluster::master::MasterConfig {
        listen: ([127, 0, 0, 1], master_port).into(),
        data_dir: work.join("master"),
        agent_timeout: Duration::from_secs(15),
        security,
    };
    let scheme = if secure { "https" } else { "http" };
    let mut agent = corral_cluster::agent::AgentConfig {
        master: format!("{scheme}://127.0.0.1:{master_port}"),
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
        dev: !secure,
        join_token: None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.spawn(corral_cluster::master::run(master));
    let master = if secure {
        let (credentials, join) = secured(&work.join("master"))?;
        agent.join_token = Some(join);
        Client::with_credentials(&format!("127.0.0.1:{master_port}"), credentials)?
    } else {
        Client::new(&format!("127.0.0.1:{master_port}"))
    };
    rt.spawn(corral_cluster::agent::run(agent));
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
    Ok(samples)
}

/// Once a master with TLS wrote them to `data_dir` (20 s at most): the credentials of its
/// admin (its CA and admin token) and its join token.
pub(super) fn secured(data_dir: &Path) -> Result<(corral_client::Credentials, String)> {
    let config = data_dir.join("client.json");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !config.exists() {
        if Instant::now() > deadline {
            bail!("the master did not write {}", config.display());
        }
        std::thread::park_timeout(Duration::from_millis(20));
    }
    let join = std::fs::read_to_string(data_dir.join("join-token"))?.trim().to_string();
    let config = corral_client::Config::load(&config)?;
    Ok((corral_client::Credentials { ca_pem: config.ca, identity: None, token: config.token }, join))
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
