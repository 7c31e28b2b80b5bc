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

use super::services::percentile;

pub struct Config {
    pub apps: usize,
    pub instances: usize,
    pub requests: usize,
    pub writes_per_sec: u32,
    pub master_exe: Option<PathBuf>,
}

/// The master as a child process, killed when dropped.
struct MasterProcess(Child);

impl Drop for MasterProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .new_agent()
}

/// p50 and p99 of `n` GETs of `path`.
fn time_gets(http: &ureq::Agent, base: &str, path: &str, n: usize) -> Result<(f64, f64)> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let mut r = http.get(&format!("{base}{path}")).call()?;
        r.body_mut().read_to_vec()?;
        samples.push(t.elapsed());
    }
    Ok((percentile(&mut samples, 0.5), percentile(&mut samples, 0.99)))
}

/// p50 and p99 of `n` POSTs of new one-instance apps named `{prefix}-{i}`.
fn time_posts(http: &ureq::Agent, base: &str, prefix: &str, n: usize) -> Result<(f64, f64)> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let def = serde_json::json!({
            "id": format!("/bench/{prefix}-{i:05}"), "cmd": "sleep 100000",
            "cpus": 0.01, "mem": 16, "instances": 1, "portDefinitions": [],
        });
        let t = Instant::now();
        let r = http.post(&format!("{base}/v2/apps")).send_json(&def)?;
        samples.push(t.elapsed());
        if r.status() != 201 {
            bail!("POST /v2/apps: HTTP {}", r.status());
        }
    }
    Ok((percentile(&mut samples, 0.5), percentile(&mut samples, 0.99)))
}

fn gauge(http: &ureq::Agent, base: &str, name: &str) -> Result<Option<f64>> {
    let m: serde_json::Value = http.get(&format!("{base}/metrics")).call()?.body_mut().read_json()?;
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
    let _master = MasterProcess(
        Command::new(&exe)
            .args(["master", "--listen", &format!("127.0.0.1:{port}"), "--agent-timeout", "60", "--data-dir"])
            .arg(work.join("master"))
            .env("CORRAL_ROOT", &work)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?,
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = http();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let resources = format!("cpus:{};mem:{}", apps * instances * 4, apps * instances * 128);
    super::fake_agent::start(&rt, &http, &base, &resources)?;

    for i in 0..apps {
        let def = serde_json::json!({
            "id": format!("/bench/app-{i:05}"), "cmd": "sleep 100000",
            "cpus": 0.01, "mem": 16, "instances": instances, "portDefinitions": [],
        });
        let r = http.post(&format!("{base}/v2/apps")).send_json(&def).context("creating an app")?;
        if r.status() != 201 {
            bail!("creating app {i}: HTTP {}", r.status());
        }
    }
    let want = (apps * instances) as f64;
    let started = Instant::now();
    while gauge(&http, &base, "marathon.instances.running.gauge")?.unwrap_or(0.0) < want
        || gauge(&http, &base, "marathon.deployments.active.gauge")?.unwrap_or(1.0) > 0.0
    {
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("the {want} instances did not all run within 30 minutes");
        }
        std::thread::park_timeout(Duration::from_millis(100));
    }

    // Reads alone, then beside a writer.
    let reads_alone = time_gets(&http, &base, "/v2/apps", requests)?;
    let stop = Arc::new(AtomicBool::new(false));
    // Open loop: each update goes at its time on a thread of its own, however long the ones
    // before it take, so a slow master cannot lower the rate it is offered.
    let writer = {
        let (stop, base, http) = (stop.clone(), base.clone(), http.clone());
        std::thread::spawn(move || -> (usize, usize) {
            let every = Duration::from_secs(1) / writes_per_sec;
            let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let mut sent = 0usize;
            let mut inflight = Vec::new();
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let app = sent % apps;
                let body = serde_json::json!({"labels": {"rev": sent.to_string()}});
                let url = format!("{base}/v2/apps/bench/app-{app:05}?force=true");
                let (http, failed) = (http.clone(), failed.clone());
                inflight.push(std::thread::spawn(move || match http.patch(&url).send_json(&body) {
                    Ok(r) if r.status().is_success() => {}
                    _ => {
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
    let reads_with_writes = time_gets(&http, &base, "/v2/apps", requests)?;
    stop.store(true, Ordering::Relaxed);
    let (sent, failed) = writer.join().expect("the writer ends");
    let write_rate = sent as f64 / writes_started.elapsed().as_secs_f64();
    while gauge(&http, &base, "marathon.deployments.active.gauge")?.unwrap_or(1.0) > 0.0 {
        std::thread::park_timeout(Duration::from_millis(100));
    }

    // Writes alone, then beside two readers.
    let writes_alone = time_posts(&http, &base, "alone", requests)?;
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, base, http) = (stop.clone(), base.clone(), http.clone());
            std::thread::spawn(move || {
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(mut r) = http.get(&format!("{base}/v2/apps")).call() {
                        let _ = r.body_mut().read_to_vec();
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    let writes_with_reads = time_posts(&http, &base, "beside", requests)?;
    stop.store(true, Ordering::Relaxed);
    let reads_done: usize = readers.into_iter().map(|r| r.join().expect("a reader ends")).sum();
    let tick = gauge(&http, &base, "corral.master.tick.max.ms")?;
    let tick_last = gauge(&http, &base, "corral.master.tick.last.ms")?;
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
