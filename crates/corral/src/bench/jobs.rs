//! `corral bench jobs`: JOBS jobs all due at the same minute on a one-node cluster (a master
//! child process, one simulated agent with room for every run): the delay from the due time to
//! the agent receiving each run's launch, and the master's memory.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use corral_client::Client;

use super::contention::MasterProcess;

fn wall_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A process's resident memory now and at its peak, in MiB.
fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

pub fn run(jobs: usize) -> Result<()> {
    if jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let work = std::env::temp_dir().join(format!("corral-bench-jobs-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let exe = std::env::current_exe()?;
    let master_process = MasterProcess::spawn(&exe, &work, port)?;
    let pid = master_process.0.id();
    let master = Client::new(&format!("127.0.0.1:{port}")).timeout(Some(Duration::from_secs(120)));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let resources = format!("cpus:{};mem:{};disk:{}", jobs, jobs * 16, jobs * 256);
    let agent = super::fake_agent::start(&rt, &master, &resources)?;
    let (rss_empty, _) = memory_mib(pid);

    // All due at one minute, far enough ahead for every job to be created first.
    let lead_ms = 20_000 + jobs as i64 * 10;
    let due = (wall_ms() + lead_ms).div_euclid(60_000) * 60_000 + 60_000;
    let due_iso = chrono::DateTime::from_timestamp_millis(due).context("a due time")?.format("%Y-%m-%dT%H:%M:%SZ");
    let created = Instant::now();
    for i in 0..jobs {
        let job = serde_json::json!({"name": format!("bench-{i:05}"), "command": "sleep 1", "owner": "bench",
            "disabled": false, "schedule": format!("R1/{due_iso}/PT1H"), "cpus": 0.01, "mem": 16});
        master.marathon("POST", "/v1/scheduler/iso8601", Some(&job)).with_context(|| format!("creating job {i}"))?;
    }
    let creation = created.elapsed();
    if wall_ms() >= due {
        bail!("creating {jobs} jobs took past their due time: raise the lead");
    }
    let (rss_jobs, _) = memory_mib(pid);
    let deadline = Instant::now() + Duration::from_millis((due - wall_ms()).max(0) as u64) + Duration::from_secs(600);
    loop {
        if agent.launched().len() >= jobs {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {} of {jobs} runs were launched within 10 minutes of their due time", agent.launched().len());
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
    let (rss_after, peak) = memory_mib(pid);
    let mut delays: Vec<i64> = agent.launched().iter().map(|(_, at)| at - due).collect();
    delays.sort();
    let pick = |q: f64| delays[((delays.len() - 1) as f64 * q).round() as usize];
    drop(rt);
    drop(master_process);
    let _ = std::fs::remove_dir_all(&work);

    println!("Jobs: {jobs} jobs due at the same minute on one simulated agent\n");
    println!("| measure | value |");
    println!("|---|---:|");
    println!("| creating the jobs (sequential POST /v1/scheduler/iso8601) | {:.1} s |", creation.as_secs_f64());
    println!("| due time to launch received, p50 | {} ms |", pick(0.5));
    println!("| due time to launch received, p99 | {} ms |", pick(0.99));
    println!("| due time to launch received, max | {} ms |", delays[delays.len() - 1]);
    println!("| master memory: no jobs / {jobs} jobs / all running (peak) | {rss_empty:.0} / {rss_jobs:.0} / {rss_after:.0} ({peak:.0}) MiB |");
    Ok(())
}
