//! `corral bench contention`: the master's reads and writes against each other. A master (this
//! binary's, or `--master-exe`'s, so an older build can be measured the same way) runs APPS
//! apps of INSTANCES instances on a simulated agent; then:
//! - `GET /v2/apps` alone, and while a client updates apps (a label, so each update is a
//!   rolling restart) WRITES_PER_SEC times a second;
//! - `POST /v2/apps` alone, and while two clients read `GET /v2/apps` in a loop;
//! - the master's own tick time, where it reports one (`/metrics`).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use corral_client::Client;

use super::services::percentile;

pub struct Config {
    pub apps: usize,
    pub instances: usize,
    pub requests: usize,
    pub writes_per_sec: u32,
    pub master_exe: Option<PathBuf>,
}

/// The master as a child process, killed when dropped.
pub(super) struct MasterProcess(pub(super) Child);

impl MasterProcess {
    /// `exe master` on 127.0.0.1:`port`, its state under `work`.
    pub(super) fn spawn(exe: &std::path::Path, work: &std::path::Path, port: u16) -> Result<MasterProcess> {
        let child = Command::new(exe)
            .args([
                "master",
                "--insecure-dev",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--agent-timeout",
                "60",
                "--data-dir",
            ])
            .arg(work.join("master"))
            .env("CORRAL_ROOT", work)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        Ok(MasterProcess(child))
    }
}

impl Drop for MasterProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// p50 and p99 of `n` GETs of `path`.
fn time_gets(master: &Client, path: &str, n: usize) -> Result<(f64, f64)> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        master.get_bytes(path)?;
        samples.push(t.elapsed());
    }
    Ok((percentile(&mut samples, 0.5), percentile(&mut samples, 0.99)))
}

/// p50 and p99 of `n` POSTs of new one-instance apps named `{prefix}-{i}`.
fn time_posts(master: &Client, prefix: &str, n: usize) -> Result<(f64, f64)> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let def = serde_json::json!({
            "id": format!("/bench/{prefix}-{i:05}"), "cmd": "sleep 100000",
            "cpus": 0.01, "mem": 16, "instances": 1, "portDefinitions": [],
        });
        let t = Instant::now();
        master.marathon("POST", "/v2/apps", Some(&def))?;
        samples.push(t.elapsed());
    }
    Ok((percentile(&mut samples, 0.5), percentile(&mut samples, 0.99)))
}

fn gauge(master: &Client, name: &str) -> Result<Option<f64>> {
    let m = master.marathon("GET", "/metrics", None)?;
    Ok(m["gauges"][name]["value"].as_f64())
}

pub fn run(config: &Config) -> Result<()> {
    let Config { apps, instances, requests, writes_per_sec, .. } = *config;
    if apps == 0 || instances == 0 || requests == 0 || writes_per_sec == 0 {
        bail!("--apps, --instances, --requests and --writes-per-sec must be at least 1");
    }
    let work = std::env::temp_dir().join(format!("corral-bench-contention-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let exe = match &config.master_exe {
        Some(e) => e.clone(),
        None => std::env::current_exe()?,
    };
    let _master = MasterProcess::spawn(&exe, &work, port)?;
    let master = Client::new(&format!("127.0.0.1:{port}")).timeout(Some(Duration::from_secs(120)));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let resources = format!("cpus:{};mem:{}", apps * instances * 4, apps * instances * 128);
    super::fake_agent::start(&rt, &master, &resources)?;

    for i in 0..apps {
        let def = serde_json::json!({
            "id": format!("/bench/app-{i:05}"), "cmd": "sleep 100000",
            "cpus": 0.01, "mem": 16, "instances": instances, "portDefinitions": [],
        });
        master.marathon("POST", "/v2/apps", Some(&def)).with_context(|| format!("creating app {i}"))?;
    }
    let want = (apps * instances) as f64;
    let started = Instant::now();
    while gauge(&master, "marathon.instances.running.gauge")?.unwrap_or(0.0) < want
        || gauge(&master, "marathon.deployments.active.gauge")?.unwrap_or(1.0) > 0.0
    {
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("the {want} instances did not all run within 30 minutes");
        }
        std::thread::park_timeout(Duration::from_millis(100));
    }

    // Reads alone, then beside a writer.
    let reads_alone = time_gets(&master, "/v2/apps", requests)?;
    let stop = Arc::new(AtomicBool::new(false));
    // Open loop: each update goes at its time on a thread of its own, however long the ones
    // before it take, so a slow master cannot lower the rate it is offered.
    let writer = {
        let (stop, master) = (stop.clone(), master.clone());
        std::thread::spawn(move || -> (usize, usize) {
            let every = Duration::from_secs(1) / writes_per_sec;
            let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let mut sent = 0usize;
            let mut inflight = Vec::new();
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let app = sent % apps;
                let body = serde_json::json!({"labels": {"rev": sent.to_string()}});
                let path = format!("/v2/apps/bench/app-{app:05}?force=true");
                let (master, failed) = (master.clone(), failed.clone());
                inflight.push(std::thread::spawn(move || {
                    if master.marathon("PATCH", &path, Some(&body)).is_err() {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }));
                sent += 1;
                let next = start + every * sent as u32;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::park_timeout(wait);
                }
            }
            for t in inflight {
                let _ = t.join();
            }
            (sent, failed.load(Ordering::Relaxed))
        })
    };
    let writes_started = Instant::now();
    let reads_with_writes = time_gets(&master, "/v2/apps", requests)?;
    stop.store(true, Ordering::Relaxed);
    let (sent, failed) = writer.join().expect("the writer ends");
    let write_rate = sent as f64 / writes_started.elapsed().as_secs_f64();
    while gauge(&master, "marathon.deployments.active.gauge")?.unwrap_or(1.0) > 0.0 {
        std::thread::park_timeout(Duration::from_millis(100));
    }

    // Writes alone, then beside two readers.
    let writes_alone = time_posts(&master, "alone", requests)?;
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, master) = (stop.clone(), master.clone());
            std::thread::spawn(move || {
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let _ = master.get_bytes("/v2/apps");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let writes_with_reads = time_posts(&master, "beside", requests)?;
    stop.store(true, Ordering::Relaxed);
    let reads_done: usize = readers.into_iter().map(|r| r.join().expect("a reader ends")).sum();
    let tick = gauge(&master, "corral.master.tick.max.ms")?;
    let tick_last = gauge(&master, "corral.master.tick.last.ms")?;
    let _ = std::fs::remove_dir_all(&work);

    let tasks = apps * instances;
    println!(
        "Contention: {apps} apps x {instances} instances ({tasks} tasks) on one simulated agent; master: {}\n",
        exe.display()
    );
    println!("| measure | p50 ms | p99 ms |");
    println!("|---|---:|---:|");
    println!("| GET /v2/apps, alone | {:.1} | {:.1} |", reads_alone.0, reads_alone.1);
    println!(
        "| GET /v2/apps, beside {write_rate:.0} app updates/s ({sent} sent, {failed} failed) | {:.1} | {:.1} |",
        reads_with_writes.0, reads_with_writes.1
    );
    println!("| POST /v2/apps, alone | {:.1} | {:.1} |", writes_alone.0, writes_alone.1);
    println!(
        "| POST /v2/apps, beside two readers ({reads_done} GETs) | {:.1} | {:.1} |",
        writes_with_reads.0, writes_with_reads.1
    );
    match (tick_last, tick) {
        (Some(last), Some(max)) => {
            println!("\nTick at {} apps: last {last:.1} ms, max {max:.1} ms", apps + 2 * requests)
        }
        _ => println!("\nTick: not reported by this master"),
    }
    Ok(())
}
