//! `corral bench services`: the services framework at scale. A master runs in this process
//! with one simulated agent (an HTTP server that speaks the agent protocol and reports every
//! launched task RUNNING at once, with resources for everything), so what is measured is the
//! master: deploying APPS apps of INSTANCES instances through the Marathon API, the time until
//! all run, and the latency of `GET /v2/apps` (and friends) once they do.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use corral_client::Client;

pub(super) fn percentile(samples: &mut [Duration], q: f64) -> f64 {
    samples.sort();
    samples[((samples.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0
}

pub fn run(apps: usize, instances: usize, requests: usize, real: bool, tls: &str) -> Result<()> {
    if apps == 0 || instances == 0 || requests == 0 {
        bail!("--apps, --instances and --requests must be at least 1");
    }
    let modes: &[bool] = match tls {
        "off" => &[false],
        "on" => &[true],
        "both" => &[false, true],
        other => bail!("--tls {other:?}: give off, on or both"),
    };
    if real && modes.contains(&true) {
        bail!("--real runs without TLS only (--tls off)");
    }
    for &secure in modes {
        once(apps, instances, requests, real, secure)?;
        println!();
    }
    Ok(())
}

/// One master, plain HTTP without authentication (`--insecure-dev`) or (`secure`) HTTPS with
/// an admin token, its agent on mutual TLS.
fn once(apps: usize, instances: usize, requests: usize, real: bool, secure: bool) -> Result<()> {
    let work = std::env::temp_dir().join(format!("corral-bench-services-{}-{secure}", std::process::id()));
    let command = if real { "exec sleep 100000" } else { "sleep 100000" };
    std::fs::create_dir_all(&work)?;
    let port = || -> Result<u16> { Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()) };
    let (master_port, agent_port) = (port()?, port()?);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.spawn(corral_cluster::master::run(corral_cluster::master::MasterConfig {
        listen: ([127, 0, 0, 1], master_port).into(),
        data_dir: work.join("master"),
        agent_timeout: Duration::from_secs(60),
        security: if secure {
            corral_cluster::master::SecurityConfig::Secure { names: Vec::new() }
        } else {
            corral_cluster::master::SecurityConfig::Dev
        },
    }));
    let base = format!("{}://127.0.0.1:{master_port}", if secure { "https" } else { "http" });
    let resources = format!("cpus:{};mem:{}", apps * instances, apps * instances * 64);
    if real {
        rt.spawn(corral_cluster::agent::run(corral_cluster::agent::AgentConfig {
            master: base.clone(),
            listen: ([127, 0, 0, 1], agent_port).into(),
            advertise: None,
            resources: Some(resources.clone()),
            attributes: String::new(),
            hostname: None,
            state_root: work.clone(),
            work_dir: work.join("agent"),
            corral_exe: std::env::current_exe()?,
            registries: Default::default(),
            gc: Default::default(),
            userns: Default::default(),
            dev: true,
            join_token: None,
        }));
    }
    let master = if secure {
        let (credentials, join) = super::launch::secured(&work.join("master"))?;
        let master = Client::with_credentials(&base, credentials)?.timeout(Some(Duration::from_secs(120)));
        super::fake_agent::start_joined(&rt, &master, &resources, Some((&base, &join, &work.join("agent"))))?;
        master
    } else {
        Client::new(&base).timeout(Some(Duration::from_secs(120)))
    };
    if real {
        super::launch::wait_for_agent(&master)?;
    } else if !secure {
        super::fake_agent::start(&rt, &master, &resources)?;
    }

    let started = Instant::now();
    let mut posts = Vec::with_capacity(apps);
    for i in 0..apps {
        let def = serde_json::json!({
            "id": format!("/bench/app-{i:05}"),
            "cmd": command,
            "cpus": 0.01, "mem": 16, "instances": instances,
            "portDefinitions": [],
        });
        let t = Instant::now();
        master.marathon("POST", "/v2/apps", Some(&def)).with_context(|| format!("creating app {i}"))?;
        posts.push(t.elapsed());
    }
    let deployed = started.elapsed();
    let want = apps * instances;
    let metric = |name: &str| -> Result<usize> {
        let m = master.marathon("GET", "/metrics", None)?;
        Ok(m["gauges"][name]["value"].as_u64().unwrap_or(0) as usize)
    };
    loop {
        if metric("marathon.instances.running.gauge")? >= want {
            break;
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("not all {want} instances ran within 30 minutes");
        }
        std::thread::park_timeout(Duration::from_millis(100));
    }
    let all_running = started.elapsed();
    loop {
        if metric("marathon.deployments.active.gauge")? == 0 {
            break;
        }
        std::thread::park_timeout(Duration::from_millis(100));
    }
    let deployments_done = started.elapsed();

    let time = |path: &str, n: usize| -> Result<(f64, f64, usize)> {
        let mut samples = Vec::with_capacity(n);
        let mut bytes = 0;
        for _ in 0..n {
            let t = Instant::now();
            let body = master.get_bytes(path)?;
            samples.push(t.elapsed());
            bytes = body.len();
        }
        Ok((percentile(&mut samples, 0.5), percentile(&mut samples, 0.99), bytes))
    };
    let rows = [
        ("GET /v2/apps", time("/v2/apps", requests)?),
        ("GET /v2/apps?embed=apps.tasks", time("/v2/apps?embed=apps.tasks", requests.min(50))?),
        ("GET /v2/tasks", time("/v2/tasks", requests.min(50))?),
        ("GET /v2/apps/bench/app-00000", time("/v2/apps/bench/app-00000", requests)?),
        ("GET /v2/queue", time("/v2/queue", requests)?),
    ];
    drop(rt);
    if real {
        super::launch::cleanup(&work);
    }
    let _ = std::fs::remove_dir_all(&work);

    let agent = if real { "one real agent (host `sleep` tasks in containers)" } else { "one simulated agent" };
    let how =
        if secure { "HTTPS with an admin token, the agent on mutual TLS" } else { "plain HTTP, no authentication" };
    println!("Services at scale: {apps} apps x {instances} instances on {agent}, {how}\n");
    println!("| measure | value |");
    println!("|---|---:|");
    println!("| {apps} POST /v2/apps, sequential | {:.1} s |", deployed.as_secs_f64());
    println!(
        "| POST /v2/apps p50 / p99 | {:.1} / {:.1} ms |",
        percentile(&mut posts, 0.5),
        percentile(&mut posts, 0.99)
    );
    println!("| first POST to all {want} RUNNING | {:.1} s |", all_running.as_secs_f64());
    println!("| first POST to all deployments finished | {:.1} s |", deployments_done.as_secs_f64());
    println!("\nRead latency with {want} tasks running:\n");
    println!("| request | p50 ms | p99 ms | body |");
    println!("|---|---:|---:|---:|");
    for (name, (p50, p99, bytes)) in rows {
        println!("| {name} | {p50:.1} | {p99:.1} | {:.1} MiB |", bytes as f64 / (1024.0 * 1024.0));
    }
    Ok(())
}
