//! The cluster commands: the master and agent processes (on a tokio runtime), and the client
//! commands that talk to `CORRAL_MASTER` (default http://127.0.0.1:5050).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use corral_client::Client;
use corral_cluster::agent::AgentConfig;
use corral_cluster::master::MasterConfig;
use corral_cluster::wire;

use crate::cli::{AgentArgs, JsonArgs, MasterArgs, RoleCommand, TaskCommand, UpArgs};

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn master_config(
    root: &Path,
    listen: std::net::SocketAddr,
    data_dir: Option<&Path>,
    timeout: f64,
) -> Result<MasterConfig> {
    if !(timeout.is_finite() && timeout > 0.0) {
        bail!("--agent-timeout must be a positive number of seconds, not {timeout}");
    }
    Ok(MasterConfig {
        listen,
        data_dir: data_dir.map(Path::to_path_buf).unwrap_or_else(|| root.join("master")),
        agent_timeout: Duration::from_secs_f64(timeout),
    })
}

fn agent_config(root: &Path, args: &AgentArgs) -> Result<AgentConfig> {
    let master = if args.master.starts_with("http://") || args.master.starts_with("https://") {
        args.master.clone()
    } else {
        format!("http://{}", args.master)
    };
    Ok(AgentConfig {
        master,
        listen: args.listen,
        advertise: args.advertise.clone(),
        resources: args.resources.clone(),
        attributes: args.attributes.clone(),
        hostname: args.hostname.clone(),
        state_root: root.to_path_buf(),
        work_dir: args.work_dir.clone().unwrap_or_else(|| root.join("agent")),
        corral_exe: std::env::current_exe().context("finding the corral executable")?,
        registries: args.registries.load()?,
        gc: args.gc.policy()?,
        userns: args.userns,
    })
}

pub fn master(root: &Path, args: MasterArgs) -> Result<()> {
    let config = master_config(root, args.listen, args.data_dir.as_deref(), args.agent_timeout)?;
    runtime()?.block_on(corral_cluster::master::run(config))?;
    Ok(())
}

pub fn agent(root: &Path, args: AgentArgs) -> Result<()> {
    let config = agent_config(root, &args)?;
    runtime()?.block_on(corral_cluster::agent::run(config))?;
    Ok(())
}

/// A master and an agent in one process, for one machine.
pub fn up(root: &Path, args: UpArgs) -> Result<()> {
    let master = master_config(root, args.listen, args.data_dir.as_deref(), args.agent_timeout)?;
    let master_host = if args.listen.ip().is_unspecified() {
        format!("127.0.0.1:{}", args.listen.port())
    } else {
        args.listen.to_string()
    };
    let agent = agent_config(
        root,
        &AgentArgs {
            master: master_host,
            listen: args.agent_listen,
            advertise: None,
            resources: args.resources.clone(),
            attributes: args.attributes.clone(),
            hostname: None,
            work_dir: args.work_dir.clone(),
            registries: Default::default(),
            gc: Default::default(),
            userns: args.userns,
        },
    )?;
    runtime()?.block_on(async move {
        let m = tokio::spawn(corral_cluster::master::run(master));
        let a = tokio::spawn(corral_cluster::agent::run(agent));
        tokio::select! {
            r = m => r.context("the master stopped")?.context("master")?,
            r = a => r.context("the agent stopped")?.context("agent")?,
        }
        anyhow::Ok(())
    })
}

// ---- the client ---------------------------------------------------------------------------

fn client() -> Client {
    Client::from_env()
}

pub fn agents(args: JsonArgs) -> Result<()> {
    let agents = client().agents()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&agents)?);
        return Ok(());
    }
    println!("{:<20}  {:<16}  {:<24}  {:<11}  {:>5}  RESOURCES", "ID", "HOSTNAME", "ADDRESS", "STATE", "TASKS");
    for a in agents {
        println!(
            "{:<20}  {:<16}  {:<24}  {:<11}  {:>5}  {}",
            a.id, a.hostname, a.address, a.state, a.tasks, a.resources
        );
    }
    Ok(())
}

pub fn tasks(args: JsonArgs) -> Result<()> {
    let tasks = client().tasks()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&tasks)?);
        return Ok(());
    }
    println!("{:<32}  {:<16}  {:<10}  {:<20}  {:<14}  REASON", "ID", "NAME", "ROLE", "AGENT", "STATE");
    for t in tasks {
        println!(
            "{:<32}  {:<16}  {:<10}  {:<20}  {:<14}  {}",
            t.id,
            t.name,
            t.role,
            t.agent.unwrap_or_default(),
            t.state.as_str(),
            t.message.unwrap_or_default()
        );
    }
    Ok(())
}

pub fn roles(args: JsonArgs) -> Result<()> {
    let roles = client().roles()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&roles)?);
        return Ok(());
    }
    println!("{:<16}  {:>6}  {:<24}  {:>6}  ALLOCATED", "ROLE", "WEIGHT", "QUOTA", "SHARE");
    for r in roles {
        println!(
            "{:<16}  {:>6}  {:<24}  {:>6.3}  {}",
            r.role,
            r.weight,
            r.quota.unwrap_or_else(|| "-".into()),
            r.dominant_share,
            r.allocated
        );
    }
    Ok(())
}

pub fn role(cmd: RoleCommand) -> Result<()> {
    let RoleCommand::Set { role, weight, quota } = cmd;
    client().set_role(&role, &wire::SetRole { weight, quota }).with_context(|| format!("setting role {role}"))?;
    Ok(())
}

pub fn task(cmd: TaskCommand) -> Result<u8> {
    match cmd {
        TaskCommand::Run { role, name, count, cpus, mem, disk, image, pull, command } => {
            let req = wire::RunTasks { role, name, count, cpus, mem, disk, image, pull, command };
            for id in client().run_tasks(&req).context("submitting tasks")? {
                println!("{id}");
            }
        }
        TaskCommand::Logs { follow, task } => {
            let mut logs = client().task_logs(&task, follow).with_context(|| format!("logs of task {task}"))?;
            let mut out = std::io::stdout().lock();
            std::io::copy(&mut logs, &mut out)?;
            out.flush()?;
        }
        TaskCommand::Files { task, path, json } => {
            let c = client();
            let entries = c.task_files(&task, &path).with_context(|| format!("files of task {task}"))?;
            let wanted = path.trim_matches('/');
            if let [only] = &entries[..] {
                if only.path == wanted && only.mode.starts_with('-') && !json {
                    let mut file = c.task_file(&task, &path).with_context(|| format!("{path} of task {task}"))?;
                    let mut out = std::io::stdout().lock();
                    std::io::copy(&mut file, &mut out)?;
                    out.flush()?;
                    return Ok(0);
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
                return Ok(0);
            }
            for e in entries {
                println!("{}  {:>10}  {}", e.mode, e.size, e.path);
            }
        }
        TaskCommand::Kill { task } => {
            client().kill_task(&task).with_context(|| format!("killing task {task}"))?;
        }
    }
    Ok(0)
}
