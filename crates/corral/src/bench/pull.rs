//! `corral bench pull`: three agents, each with a fresh store of its own (three machines, on
//! one host), and an app of three instances (one per agent) whose image none of them has, from
//! `POST /v2/apps` to all RUNNING; against the same image copied by `skopeo copy` from the same
//! loopback registry into a layout per machine, loaded into its store and started with
//! `corral run -d`, the three machines in parallel.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use corral_client::Client;

use super::contention::MasterProcess;
use super::images::{checked, cmd, time, write_noise, Registry};
use super::{stats_row, which};

const AGENTS: usize = 3;

pub fn run(root: &Path, runs: usize, size_mib: u64, image: &str) -> Result<()> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    for tool in ["skopeo", "docker-registry"] {
        if which(tool).is_none() {
            bail!("the benchmark needs {tool}: scripts/deps.sh --bench");
        }
    }
    let exe = std::env::current_exe()?;
    let work = std::env::temp_dir().join(format!("corral-bench-pull-{}", std::process::id()));
    fs::create_dir_all(&work)?;
    let corral_at = |root: &Path, args: &[&str]| -> Command {
        let mut c = Command::new(&exe);
        c.arg("--root").arg(root).args(args);
        c
    };

    // The image: the base and one incompressible layer, pushed once.
    let ctx = work.join("context");
    fs::create_dir_all(&ctx)?;
    write_noise(&ctx.join("blob.bin"), size_mib << 20)?;
    fs::write(ctx.join("Containerfile"), format!("FROM {image}\nCOPY blob.bin /blob.bin\n"))?;
    checked(corral_at(root, &["build", "-t", "bench-pull:v1", ctx.to_str().unwrap()]), "building the image")?;
    let registry = Registry::start(&work.join("registry"))?;
    let remote = format!("{}/bench/pull:v1", registry.addr);
    checked(corral_at(root, &["push", "--insecure", "bench-pull:v1", &remote]), "pushing the image")?;
    let _ = corral_at(root, &["image", "rm", "bench-pull:v1"]).output();

    let port = free_port()?;
    let _master = MasterProcess::spawn(&exe, &work, port)?;
    let master = Client::new(&format!("127.0.0.1:{port}")).timeout(Some(Duration::from_secs(30)));
    wait("the master", Duration::from_secs(20), || master.agents().is_ok())?;

    let (mut via_corral, mut via_skopeo) = (Vec::new(), Vec::new());
    for run in 0..runs {
        // corral: the agents pull on demand.
        let roots: Vec<PathBuf> = (0..AGENTS).map(|k| work.join(format!("agent-{run}-{k}"))).collect();
        let mut agents = Vec::new();
        for (k, r) in roots.iter().enumerate() {
            fs::create_dir_all(r)?;
            let listen = format!("127.0.0.1:{}", free_port()?);
            let child = Command::new(&exe)
                .args(["agent", "--insecure-dev", "--master", &format!("127.0.0.1:{port}"), "--listen", &listen])
                .args(["--hostname", &format!("node{k}-run{run}"), "--resources", "cpus:1;mem:1024"])
                .args(["--attributes", &format!("run:r{run}")])
                .env("CORRAL_ROOT", r)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting an agent")?;
            agents.push(Killed(child));
        }
        let suffix = format!("-run{run}");
        wait("three agents", Duration::from_secs(20), || {
            master.agents().is_ok_and(|a| {
                a.iter().filter(|x| x.hostname.ends_with(&suffix) && x.state == "active").count() == AGENTS
            })
        })?;
        let app = format!("/bench-pull-{run}");
        let def = serde_json::json!({
            "id": app, "instances": AGENTS, "cpus": 0.1, "mem": 32, "cmd": "sleep 100000",
            // This run's agents only: those of earlier runs are gone but not yet timed out.
            "constraints": [["hostname", "UNIQUE"], ["run", "CLUSTER", format!("r{run}")]],
            "container": {"docker": {"image": remote}}
        });
        let start = Instant::now();
        master.marathon("POST", "/v2/apps", Some(&def))?;
        let path = format!("/v2/apps{app}");
        wait("all instances running", Duration::from_secs(600), || {
            master.marathon("GET", &path, None).is_ok_and(|v| v["app"]["tasksRunning"] == AGENTS)
        })?;
        via_corral.push(start.elapsed());
        master.marathon("DELETE", &format!("{path}?force=true"), None)?;
        for r in &roots {
            wait("the app's containers to stop", Duration::from_secs(60), || running(&exe, r) == 0)?;
        }
        drop(agents);
        for r in &roots {
            let _ = corral_at(r, &["system", "prune", "--all"]).output();
            let _ = fs::remove_dir_all(r);
        }

        // skopeo: copy into a layout per machine, load into its store, start; all three at once.
        let roots: Vec<PathBuf> = (0..AGENTS).map(|k| work.join(format!("skopeo-{run}-{k}"))).collect();
        let start = Instant::now();
        std::thread::scope(|s| -> Result<()> {
            let handles: Vec<_> = roots
                .iter()
                .map(|r| {
                    let (exe, remote) = (&exe, &remote);
                    s.spawn(move || -> Result<()> {
                        fs::create_dir_all(r)?;
                        let layout = r.join("layout");
                        time(
                            cmd(
                                "skopeo",
                                &[
                                    "copy",
                                    "--src-tls-verify=false",
                                    &format!("docker://{remote}"),
                                    &format!("oci:{}:v1", layout.display()),
                                ],
                            ),
                            "skopeo copy",
                        )?;
                        let mut load = Command::new(exe);
                        load.arg("--root").arg(r).args(["image", "load", layout.to_str().unwrap(), "bench-pull:v1"]);
                        time(load, "corral image load")?;
                        let mut start = Command::new(exe);
                        start.arg("--root").arg(r).args([
                            "run",
                            "-d",
                            "--image",
                            "bench-pull:v1",
                            "--",
                            "sleep",
                            "100000",
                        ]);
                        time(start, "corral run -d")?;
                        Ok(())
                    })
                })
                .collect();
            for h in handles {
                h.join().expect("the copy threads do not panic")?;
            }
            Ok(())
        })?;
        via_skopeo.push(start.elapsed());
        for r in &roots {
            let listed = corral_at(r, &["ps", "--json"]).output()?;
            for line in String::from_utf8_lossy(&listed.stdout).lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
                if let Some(id) = v["id"].as_str() {
                    let _ = corral_at(r, &["rm", "--force", id]).output();
                }
            }
            let _ = corral_at(r, &["system", "prune", "--all"]).output();
            let _ = fs::remove_dir_all(r);
        }
    }
    drop(registry);
    let _ = fs::remove_dir_all(&work);

    println!(
        "An app of {AGENTS} instances on {AGENTS} agents (separate stores), its image (a {size_mib} MiB layer on {image}) in none of them, through docker-registry on loopback ({runs} runs each)\n"
    );
    println!("| case | min ms | median ms | p90 ms |");
    println!("|---|---:|---:|---:|");
    println!("{}", stats_row("corral: POST /v2/apps to all RUNNING (agents pull on demand)", &mut via_corral));
    println!(
        "{}",
        stats_row("skopeo copy + corral image load + corral run -d, per machine, in parallel", &mut via_skopeo)
    );
    Ok(())
}

/// How many containers under `root` run.
fn running(exe: &Path, root: &Path) -> usize {
    let out = Command::new(exe).arg("--root").arg(root).args(["ps", "--json"]).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).lines().filter(|l| l.contains("\"running\"")).count()).unwrap_or(0)
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Polls `cond` until it holds or `timeout` passes.
fn wait(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::park_timeout(Duration::from_millis(10));
    }
    Ok(())
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
