//! `corral bench`: measurements against peers, run by hand (never in pass/fail tests). Each
//! prints a markdown table for `docs/benchmarks.md`.

mod contention;
mod fake_agent;
mod images;
mod jobs;
mod launch;
mod lifecycle;
mod pull;
mod services;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cli::BenchCommand;

pub fn run(root: &Path, cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Lifecycle { runs, image, blocks } => lifecycle::run(root, runs, &image, blocks),
        BenchCommand::Images { runs, size_mib, image } => images::run(root, runs, size_mib, &image),
        BenchCommand::Launch { runs } => launch::run(runs),
        BenchCommand::Services { apps, instances, requests, real, tls } => {
            services::run(apps, instances, requests, real, &tls)
        }
        BenchCommand::Jobs { jobs } => jobs::run(jobs),
        BenchCommand::Pull { runs, size_mib, image } => pull::run(root, runs, size_mib, &image),
        BenchCommand::Contention { apps, instances, requests, writes_per_sec, master_exe } => {
            contention::run(&contention::Config { apps, instances, requests, writes_per_sec, master_exe })
        }
    }
}

/// `| name | min | median | p90 |` in milliseconds; sorts `samples`.
fn stats_row(name: &str, samples: &mut [Duration]) -> String {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    format!("| {name} | {:.1} | {:.1} | {:.1} |", ms(samples[0]), ms(pick(0.5)), ms(pick(0.9)))
}

/// Enters a private mount namespace and hides the cgroup v2 mount of a hybrid host, which crun
/// (and so buildah) needs there.
fn private_mounts() -> Result<()> {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).context("entering a private mount namespace")?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .context("making mounts private")?;
    let unified = Path::new("/sys/fs/cgroup/unified");
    if unified.is_dir() {
        let _ = umount2(unified, MntFlags::MNT_DETACH);
    }
    Ok(())
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(program)).find(|p| p.is_file())
}
