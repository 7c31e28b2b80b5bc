//! The cluster commands: the master and agent processes (on a tokio runtime), and the client
//! commands that talk to the master (`CORRAL_MASTER`, else the configuration file's, else
//! 127.0.0.1:5050) with the credentials `Client::from_env` finds.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use corral_client::Client;
use corral_cluster::agent::AgentConfig;
use corral_cluster::master::{MasterConfig, SecurityConfig};
use corral_cluster::wire;

use crate::cli::{AgentArgs, JsonArgs, MasterArgs, MasterTlsArgs, RoleCommand, TaskCommand, TokenCommand, UpArgs};

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
    tls: &MasterTlsArgs,
) -> Result<MasterConfig> {
    if !(timeout.is_finite() && timeout > 0.0) {
        bail!("--agent-timeout must be a positive number of seconds, not {timeout}");
    }
    if tls.insecure_dev && !listen.ip().is_loopback() {
        bail!("--insecure-dev serves plain HTTP without authentication, so only on a loopback --listen, not {listen}");
    }
    let security =
        if tls.insecure_dev { SecurityConfig::Dev } else { SecurityConfig::Secure { names: tls.tls_sans.clone() } };
    Ok(MasterConfig {
        listen,
        data_dir: data_dir.map(Path::to_path_buf).unwrap_or_else(|| root.join("master")),
        agent_timeout: Duration::from_secs_f64(timeout),
        security,
    })
}

fn agent_config(root: &Path, args: &AgentArgs) -> Result<AgentConfig> {
    if args.insecure_dev && !args.listen.ip().is_loopback() {
        bail!(
            "--insecure-dev serves plain HTTP without authentication, so only on a loopback --listen, not {}",
            args.listen
        );
    }
    let scheme = if args.insecure_dev { "http" } else { "https" };
    let master = if args.master.starts_with("http://") || args.master.starts_with("https://") {
        args.master.clone()
    } else {
        format!("{scheme}://{}", args.master)
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
        dev: args.insecure_dev,
        join_token: args.join_token.clone(),
    })
}

pub fn master(root: &Path, args: MasterArgs) -> Result<()> {
    let config = master_config(root, args.listen, args.data_dir.as_deref(), args.agent_timeout, &args.tls)?;
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
    let master = master_config(root, args.listen, args.data_dir.as_deref(), args.agent_timeout, &args.tls)?;
    let data_dir = master.data_dir.clone();
    let dev = args.tls.insecure_dev;
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
            join_token: None,
            insecure_dev: dev,
        },
    )?;
    // A fresh start writes new tokens: the agent must not read the last run's.
    let join_file = data_dir.join("join-token");
    let _ = std::fs::remove_file(data_dir.join("client.json"));
    runtime()?.block_on(async move {
        let mut m = tokio::spawn(corral_cluster::master::run(master));
        let mut agent = agent;
        if !dev {
            // The master writes its join token (and the CLI's configuration) once it is ready.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                if data_dir.join("client.json").exists() {
                    break;
                }
                if m.is_finished() {
                    (&mut m).await.context("the master stopped")?.context("master")?;
                    bail!("the master stopped");
                }
                if tokio::time::Instant::now() > deadline {
                    bail!("the master did not become ready within 60 s");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            agent.join_token = Some(
                std::fs::read_to_string(&join_file).context("reading the master's join token")?.trim().to_string(),
            );
            install_client_config(&data_dir.join("client.json"));
        }
        let a = tokio::spawn(corral_cluster::agent::run(agent));
        let m = &mut m;
        tokio::select! {
            r = m => r.context("the master stopped")?.context("master")?,
            r = a => r.context("the agent stopped")?.context("agent")?,
        }
        anyhow::Ok(())
    })
}

// ---- the client ---------------------------------------------------------------------------

fn client() -> Result<Client> {
    Ok(Client::from_env()?)
}

/// Makes the master's CLI configuration (with its admin token) the user's, unless the user's
/// names another master: then says how to use it.
fn install_client_config(written: &Path) {
    let Some(target) = corral_client::Config::path() else { return };
    let ours = corral_client::Config::load(written).ok();
    let theirs = corral_client::Config::load(&target).ok();
    let same_master = match (&ours, &theirs) {
        (Some(o), Some(t)) => t.master.is_none() || t.master == o.master,
        _ => false,
    };
    if target == written {
        return;
    }
    if !same_master {
        eprintln!(
            "corral: {} names another master; to use this cluster: export CORRAL_CONFIG={}",
            target.display(),
            written.display()
        );
        return;
    }
    let copied = target
        .parent()
        .map(|dir| {
            std::fs::create_dir_all(dir).and_then(|_| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            })
        })
        .unwrap_or(Ok(()))
        .and_then(|_| std::fs::read_to_string(written))
        .map_err(|e| e.to_string())
        .and_then(|text| corral_cluster::pki::write_private(&target, &text).map_err(|e| e.to_string()));
    match copied {
        Ok(()) => tracing::info!(config = %target.display(), "the CLI's configuration names this cluster"),
        Err(e) => eprintln!(
            "corral: could not write {}: {e}; to use this cluster: export CORRAL_CONFIG={}",
            target.display(),
            written.display()
        ),
    }
}

pub fn token(cmd: TokenCommand) -> Result<()> {
    let c = client()?;
    match cmd {
        TokenCommand::Create { namespace, role, join, ttl, description } => {
            let req = wire::CreateToken {
                kind: Some(if join { "join" } else { "api" }.into()),
                namespace: Some(namespace),
                role: if join { None } else { Some(role) },
                ttl_seconds: ttl.map(|t| t.as_secs().max(1)),
                description: Some(description),
            };
            let made: wire::CreatedToken = c.send("POST", "/api/v1/tokens", Some(&req))?;
            let i = &made.info;
            println!(
                "token {} ({} {} of {}, expires {})",
                i.id,
                i.kind,
                i.role,
                i.namespace,
                i.expires.as_deref().unwrap_or("never")
            );
            println!("{}", made.token);
        }
        TokenCommand::Ls(args) => {
            let tokens: Vec<wire::TokenInfo> = c.get("/api/v1/tokens")?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
                return Ok(());
            }
            println!(
                "{:<18}  {:<5}  {:<16}  {:<7}  {:<24}  {:<24}  DESCRIPTION",
                "ID", "KIND", "NAMESPACE", "ROLE", "CREATED", "EXPIRES"
            );
            for t in tokens {
                println!(
                    "{:<18}  {:<5}  {:<16}  {:<7}  {:<24}  {:<24}  {}",
                    t.id,
                    t.kind,
                    t.namespace,
                    t.role,
                    t.created,
                    t.expires.as_deref().unwrap_or("never"),
                    t.description
                );
            }
        }
        TokenCommand::Revoke { id } => {
            c.send::<serde_json::Value>("DELETE", &format!("/api/v1/tokens/{id}"), None::<&()>)?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

pub fn revoke_agent(id: &str) -> Result<()> {
    client()?.send::<serde_json::Value>("DELETE", &format!("/api/v1/agents/{id}"), None::<&()>)?;
    println!("revoked agent {id}");
    Ok(())
}

pub fn agents(args: JsonArgs) -> Result<()> {
    let agents = client()?.agents()?;
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
    let tasks = client()?.tasks()?;
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
    let roles = client()?.roles()?;
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
    client()?.set_role(&role, &wire::SetRole { weight, quota }).with_context(|| format!("setting role {role}"))?;
    Ok(())
}

pub fn task(cmd: TaskCommand) -> Result<u8> {
    match cmd {
        TaskCommand::Run { role, name, count, cpus, mem, disk, image, pull, command } => {
            let req = wire::RunTasks { role, name, count, cpus, mem, disk, image, pull, command };
            for id in client()?.run_tasks(&req).context("submitting tasks")? {
                println!("{id}");
            }
        }
        TaskCommand::Logs { follow, task } => {
            let mut logs = client()?.task_logs(&task, follow).with_context(|| format!("logs of task {task}"))?;
            let mut out = std::io::stdout().lock();
            std::io::copy(&mut logs, &mut out)?;
            out.flush()?;
        }
        TaskCommand::Files { task, path, json } => {
            let c = client()?;
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
            client()?.kill_task(&task).with_context(|| format!("killing task {task}"))?;
        }
    }
    Ok(0)
}
