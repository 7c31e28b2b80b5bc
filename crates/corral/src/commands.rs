//! Glue between the CLI and the libraries: each command loads, calls, and adds context.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{bail, Context, Result};
use corral_image::{Reference, Store};
use corral_runtime::create::{self, CreateRequest};
use corral_runtime::logs::{self, Stream};
use corral_runtime::state::{ContainerDir, Containers, EtcFiles, State};
use corral_runtime::{control, parse};

use crate::cli::{
    BuildArgs, Cli, Command, ImageCommand, KillArgs, LogsArgs, PsArgs, PullArgs, PushArgs, RegistryArgs, RmArgs,
    RunArgs, SystemCommand,
};

pub fn init_tracing(cli: &Cli) {
    // The shim's log is for operators; the CLI speaks up only when something failed.
    let daemon = matches!(cli.command, Command::Shim(_) | Command::Master(_) | Command::Agent(_) | Command::Up(_));
    let default = if daemon { "info" } else { "error" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CORRAL_LOG").unwrap_or_else(|_| default.into());
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    // The shim forks the container's init, which inherits this subscriber and then replaces
    // fd 2 with the container's stderr: log to a private copy of fd 2, so the runtime's own
    // messages stay in shim.log and never reach the container's output.
    let private = std::os::fd::AsFd::as_fd(&std::io::stderr()).try_clone_to_owned().ok();
    match private {
        Some(fd) if matches!(cli.command, Command::Shim(_) | Command::OciRun(_)) => {
            fmt.with_ansi(false).with_writer(std::sync::Mutex::new(std::fs::File::from(fd))).init()
        }
        _ => fmt.with_writer(std::io::stderr).init(),
    }
}

/// Runs a command; the result is the process exit code.
pub fn dispatch(cli: Cli) -> Result<u8> {
    if let Some(token) = &cli.token {
        // The one place clients read credentials from (`Client::from_env`).
        std::env::set_var("CORRAL_TOKEN", token);
    }
    let root = cli.root.as_path();
    match cli.command {
        Command::Run(args) => run(root, args),
        Command::Ps(args) => ps(root, args).map(|_| 0),
        Command::Logs(args) => logs_cmd(root, args).map(|_| 0),
        Command::Kill(args) => kill(root, args).map(|_| 0),
        Command::Rm(args) => rm(root, args).map(|_| 0),
        Command::Wait(args) => {
            let dir = Containers::new(root).find(&args.container)?;
            let status = wait_for_exit(&dir)?;
            println!("{}", status);
            Ok(0)
        }
        Command::Build(args) => build(root, args).map(|_| 0),
        Command::Push(args) => push(root, args).map(|_| 0),
        Command::Pull(args) => pull(root, args).map(|_| 0),
        Command::Image(cmd) => image(root, cmd).map(|_| 0),
        Command::System(SystemCommand::Prune { all }) => system_prune(root, all).map(|_| 0),
        Command::Bench(cmd) => crate::bench::run(root, cmd).map(|_| 0),
        Command::Master(args) => crate::cluster::master(root, args).map(|_| 0),
        Command::Agent(args) => crate::cluster::agent(root, args).map(|_| 0),
        Command::Up(args) => crate::cluster::up(root, args).map(|_| 0),
        Command::Agents(args) => match args.command {
            Some(crate::cli::AgentsCommand::Revoke { id }) => crate::cluster::revoke_agent(&id).map(|_| 0),
            None => crate::cluster::agents(args.list).map(|_| 0),
        },
        Command::Tasks(args) => crate::cluster::tasks(args).map(|_| 0),
        Command::Roles(args) => crate::cluster::roles(args).map(|_| 0),
        Command::Role(cmd) => crate::cluster::role(cmd).map(|_| 0),
        Command::Token(cmd) => crate::cluster::token(cmd).map(|_| 0),
        Command::Task(cmd) => crate::cluster::task(cmd),
        Command::App(cmd) => crate::apps::app(cmd).map(|_| 0),
        Command::Deployments(args) => crate::apps::deployments(args).map(|_| 0),
        Command::Job(cmd) => crate::jobs::job(cmd).map(|_| 0),
        Command::OciRun(args) => {
            let code = corral_shim::run_bundle(&args.bundle, &args.state, &args.id)
                .with_context(|| format!("running bundle {}", args.bundle.display()))?;
            Ok(code.clamp(0, 255) as u8)
        }
        Command::Shim(args) => {
            corral_shim::run(root, &args.id).with_context(|| format!("shim for container {}", args.id))?;
            Ok(0)
        }
    }
}

fn open_store(root: &Path) -> Result<Store> {
    Store::open(root).with_context(|| format!("opening the image store under {}", root.display()))
}

fn run(root: &Path, args: RunArgs) -> Result<u8> {
    let req = CreateRequest {
        name: args.name.as_deref().map(parse::name).transpose()?,
        image: args.image.as_deref().map(str::parse::<Reference>).transpose()?,
        command: args.command,
        entrypoint: args.entrypoint.map(|e| if e.is_empty() { Vec::new() } else { vec![e] }),
        etc: EtcFiles::All,
        host_network: false,
        env: args.env.iter().map(|e| parse::env(e, |k| std::env::var(k).ok())).collect::<Result<_, _>>()?,
        workdir: args.workdir.as_deref().map(parse::workdir).transpose()?,
        user: args.user.as_deref().map(parse::user).transpose()?,
        user_name: None,
        hostname: args.hostname.as_deref().map(parse::hostname).transpose()?,
        cpus: args.cpus.as_deref().map(parse::cpus).transpose()?,
        mem_bytes: args.mem.as_deref().map(parse::mem_bytes).transpose()?,
        pids: args.pids.as_deref().map(parse::pids).transpose()?,
        disk_bytes: args.disk.as_deref().map(parse::mem_bytes).transpose().context("--disk")?,
        disk_paths: Vec::new(),
        volumes: args.volumes.iter().map(|v| parse::volume(v)).collect::<Result<_, _>>()?,
        stop_grace_secs: args.stop_timeout,
        log_max_bytes: args.log_max_size,
        log_max_files: args.log_max_files,
        userns: args.userns,
    };
    let store = open_store(root)?;
    if let Some(image) = &args.image {
        corral_registry::Puller::new(args.registries.load()?)
            .ensure(&store, image, args.pull)
            .map_err(anyhow::Error::msg)?;
    }
    let exe = std::env::current_exe().context("finding the corral executable")?;
    let dir = create::launch(&exe, root, &store, req, &corral_runtime::now())?;
    let containers = Containers::new(root);
    let record = dir.read_record()?;
    if args.detach {
        println!("{}", record.id);
        return Ok(0);
    }
    forward_signals();
    print_logs(&dir, true)?;
    // Following the logs ends once the container has: its status is usually there already,
    // and reading it spares a second inotify instance, whose close waits out an SRCU grace
    // period (about 7 ms).
    let status = match dir.state()? {
        State::Exited(status) => status.shell_code(),
        _ => wait_for_exit(&dir)?,
    };
    if args.rm {
        create::remove(&containers, &dir, &record.name);
    }
    Ok(status.clamp(0, 255) as u8)
}

static PENDING_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn remember_signal(sig: libc::c_int) {
    PENDING_SIGNAL.store(sig, Ordering::SeqCst);
}

/// While `corral run` waits in the foreground, SIGINT and SIGTERM go to the container.
fn forward_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, remember_signal as *const () as libc::sighandler_t);
        }
    }
}

fn print_logs(dir: &ContainerDir, follow: bool) -> Result<()> {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let mut sink = |e: &logs::Entry| -> std::io::Result<()> {
        match e.stream {
            Stream::Stdout => {
                let mut o = stdout.lock();
                o.write_all(&e.content)?;
                o.flush()
            }
            Stream::Stderr => stderr.lock().write_all(&e.content),
        }
    };
    let done = || {
        let sig = PENDING_SIGNAL.swap(0, Ordering::SeqCst);
        if sig != 0 {
            let _ = control::send(dir, &format!("signal {sig}"));
        }
        !matches!(dir.state(), Ok(State::Running { .. } | State::Created))
    };
    logs::read(&dir.logs(), follow, done, &dir.dir, &mut sink)
        .with_context(|| format!("reading the logs of {}", dir.id()))
}

/// Blocks until the container has ended; returns its shell exit code.
fn wait_for_exit(dir: &ContainerDir) -> Result<i32> {
    let status = control::wait(dir).with_context(|| format!("waiting for container {}", dir.id()))?;
    Ok(status.shell_code())
}

fn ps(root: &Path, args: PsArgs) -> Result<()> {
    let containers = Containers::new(root);
    let mut rows = Vec::new();
    for id in containers.ids()? {
        let dir = containers.dir_of(&id);
        let Ok(record) = dir.read_record() else {
            continue;
        };
        let state = dir.state()?;
        rows.push((record, state));
    }
    if args.json {
        for (r, s) in rows {
            let (exit_code, oom) = match &s {
                State::Exited(st) => (Some(st.shell_code()), st.oom_killed),
                _ => (None, false),
            };
            let v = serde_json::json!({
                "id": r.id, "name": r.name, "image": r.image.as_ref().map(|i| i.reference.clone()),
                "command": r.args, "state": state_word(&s), "status": s.label(),
                "exitCode": exit_code, "oomKilled": oom, "created": r.created,
            });
            println!("{v}");
        }
        return Ok(());
    }
    println!("{:<16}  {:<20}  {:<20}  {:<24}  STATUS", "ID", "NAME", "IMAGE", "COMMAND");
    for (r, s) in rows {
        let image = r.image.as_ref().map_or("(host)".to_string(), |i| i.reference.clone());
        let mut cmd = r.args.join(" ");
        if cmd.len() > 24 {
            cmd.truncate(21);
            cmd.push_str("...");
        }
        println!("{:<16}  {:<20}  {:<20}  {:<24}  {}", r.id, r.name, image, cmd, s.label());
    }
    Ok(())
}

fn state_word(s: &State) -> &'static str {
    match s {
        State::Created => "created",
        State::Running { .. } => "running",
        State::Exited(_) => "exited",
        State::Lost => "lost",
    }
}

fn logs_cmd(root: &Path, args: LogsArgs) -> Result<()> {
    let dir = Containers::new(root).find(&args.container)?;
    print_logs(&dir, args.follow)
}

fn kill(root: &Path, args: KillArgs) -> Result<()> {
    let containers = Containers::new(root);
    let signal = args.signal.as_deref().map(parse::signal).transpose()?;
    for key in &args.containers {
        let dir = containers.find(key)?;
        match signal {
            Some(sig) => control::send(&dir, &format!("signal {sig}"))?,
            None => {
                control::send(&dir, "stop")?;
                wait_for_exit(&dir)?;
            }
        }
    }
    Ok(())
}

fn rm(root: &Path, args: RmArgs) -> Result<()> {
    let containers = Containers::new(root);
    for key in &args.containers {
        let dir = containers.find(key)?;
        let record = dir.read_record()?;
        if dir.state()?.is_running() {
            if !args.force {
                bail!("container {key} is running: stop it first or use --force");
            }
            control::send(&dir, &format!("signal {}", libc::SIGKILL))?;
            wait_for_exit(&dir)?;
        }
        create::remove(&containers, &dir, &record.name);
        println!("{}", record.id);
    }
    Ok(())
}

fn image(root: &Path, cmd: ImageCommand) -> Result<()> {
    let store = open_store(root)?;
    match cmd {
        ImageCommand::Import { source, reference } => {
            let r: Reference = reference.parse()?;
            let img = corral_image::import::import(&store, &source, &r, &corral_runtime::now())
                .with_context(|| format!("importing {} as {r}", source.display()))?;
            println!("{}", img.id());
        }
        ImageCommand::Ls => {
            println!("{:<40}  {:<12}  {:<30}  SIZE", "NAME", "ID", "CREATED");
            for t in store.tags()? {
                let img = store.image(&t.manifest)?;
                let size: u64 = img.manifest.layers().iter().map(|l| l.size()).sum();
                let created = img.config.created().clone().unwrap_or_default();
                println!("{:<40}  {:<12}  {:<30}  {}", t.name, img.id().short(), created, human_size(size));
            }
        }
        ImageCommand::Inspect { reference } => {
            let r: Reference = reference.parse()?;
            let img = store.resolve(&r)?;
            let json = store.read_blob(img.id())?;
            let value: serde_json::Value = serde_json::from_slice(&json).context("decoding the image config")?;
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        ImageCommand::Export { reference, dir } => {
            let r: Reference = reference.parse()?;
            let img = corral_image::layout::export(&store, &r, &dir)
                .with_context(|| format!("exporting {r} to {}", dir.display()))?;
            println!("{}", img.id());
        }
        ImageCommand::Load { dir, reference } => {
            let r: Option<Reference> = reference.as_deref().map(str::parse).transpose()?;
            let loaded = corral_image::layout::load(&store, &dir, r.as_ref())
                .with_context(|| format!("loading {}", dir.display()))?;
            for (r, img) in loaded {
                println!("{r} {}", img.id());
            }
        }
        ImageCommand::Rm { reference } => {
            let r: Reference = reference.parse()?;
            let in_use = create::layers_in_use(&Containers::new(root))?;
            store.remove(&r, &in_use)?;
            println!("{r}");
        }
        ImageCommand::Prune { all } => prune_images(root, &store, all)?,
    }
    Ok(())
}

/// Removes what no image needs, and with `all` every image no container uses.
fn prune_images(root: &Path, store: &corral_image::Store, all: bool) -> Result<()> {
    let containers = Containers::new(root);
    let layers = create::layers_in_use(&containers)?;
    if all {
        let used = create::manifests_in_use(&containers)?;
        for t in store.tags()? {
            if !used.contains(&t.manifest) {
                store.remove(&t.name.parse()?, &layers)?;
                println!("removed image {}", t.name);
            }
        }
    }
    let blobs = store.gc(&layers)?;
    println!("removed {blobs} blobs no image needs");
    Ok(())
}

/// `corral system prune`: containers not running, then images.
fn system_prune(root: &Path, all: bool) -> Result<()> {
    let containers = Containers::new(root);
    for id in containers.ids()? {
        let dir = containers.dir_of(&id);
        let Ok(record) = dir.read_record() else { continue };
        if !dir.state().is_ok_and(|s| s.is_running()) {
            create::remove(&containers, &dir, &record.name);
            println!("removed container {id}");
        }
    }
    prune_images(root, &open_store(root)?, all)
}

fn build(root: &Path, args: BuildArgs) -> Result<()> {
    let tag: Reference = args.tag.parse()?;
    let context = args.context.canonicalize().with_context(|| format!("build context {}", args.context.display()))?;
    if !context.is_dir() {
        bail!("build context {} is not a directory", context.display());
    }
    let containerfile = match args.file {
        Some(f) => f,
        None => ["Containerfile", "Dockerfile"]
            .iter()
            .map(|n| context.join(n))
            .find(|p| p.is_file())
            .with_context(|| format!("no Containerfile or Dockerfile in {} (use -f)", context.display()))?,
    };
    let build_args = args
        .build_args
        .iter()
        .map(|a| parse::env(a, |k| std::env::var(k).ok()).map_err(|e| anyhow::anyhow!("--build-arg: {e}")))
        .collect::<Result<_>>()?;
    let opts = corral_build::builder::BuildOptions {
        state_root: root.to_path_buf(),
        corral_exe: std::env::current_exe().context("finding the corral executable")?,
        context,
        containerfile,
        tag: tag.clone(),
        build_args,
        no_cache: args.no_cache,
    };
    let store = open_store(root)?;
    let mut progress = crate::progress::BuildProgress::new();
    let started = std::time::Instant::now();
    let id = corral_build::builder::build(&store, &opts, &mut progress)?;
    progress.finish();
    let image = store.image(&id)?;
    eprintln!("Built {tag} ({}) in {:.2}s", image.id().short(), started.elapsed().as_secs_f64());
    println!("{}", image.id());
    Ok(())
}

fn registry_config(args: &RegistryArgs) -> Result<corral_registry::ClientConfig> {
    let credentials = match (&args.username, &args.password) {
        (Some(u), Some(p)) => Some(corral_registry::auth::Credentials { username: u.clone(), password: p.clone() }),
        (None, None) => None,
        _ => bail!("--username and --password go together"),
    };
    Ok(corral_registry::ClientConfig {
        insecure: args.insecure,
        credentials,
        stall_timeout: std::time::Duration::from_secs(args.stall_timeout.max(1)),
        request_timeout: std::time::Duration::from_secs(args.timeout.max(1)),
    })
}

/// Prints one line per blob as transfers finish.
struct TransferLines;

impl corral_registry::Events for TransferLines {
    fn blob_skipped(&self, digest: &corral_image::Digest, size: u64) {
        eprintln!("{}: already there ({})", digest.short(), human_size(size));
    }
    fn blob_progress(&self, _: &corral_image::Digest, _: u64, _: u64) {}
    fn blob_done(&self, digest: &corral_image::Digest, size: u64) {
        eprintln!("{}: done ({})", digest.short(), human_size(size));
    }
}

fn push(root: &Path, args: PushArgs) -> Result<()> {
    let local: Reference = args.image.parse()?;
    let destination = args.destination.clone().unwrap_or_else(|| local.tagged());
    let target = corral_registry::Target::parse(&destination)?;
    let store = open_store(root)?;
    let digest = corral_registry::push::push(&store, &local, &target, registry_config(&args.registry)?, &TransferLines)
        .with_context(|| format!("pushing {local} to {target}"))?;
    println!("{target}@{digest}");
    Ok(())
}

fn pull(root: &Path, args: PullArgs) -> Result<()> {
    let target = corral_registry::Target::parse(&args.image)?;
    let store = open_store(root)?;
    let image = corral_registry::pull::pull(&store, &target, registry_config(&args.registry)?, &TransferLines)
        .with_context(|| format!("pulling {target}"))?;
    println!("{} {}", target.local_reference(), image.id());
    Ok(())
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}
