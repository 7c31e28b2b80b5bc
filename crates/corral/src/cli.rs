//! The command-line interface: every command, flag and default.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "corral", version, about = "A datacenter operating system in one binary")]
pub struct Cli {
    /// Where corral keeps its state: images, layers, containers.
    #[arg(long, global = true, env = "CORRAL_ROOT", default_value = "/var/lib/corral")]
    pub root: PathBuf,

    /// The API token client commands send (else CORRAL_TOKEN, else the configuration file's:
    /// CORRAL_CONFIG or ~/.config/corral/config.json, which `corral up` writes).
    #[arg(long, global = true, hide_env_values = true)]
    pub token: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command in a new container.
    Run(RunArgs),
    /// List containers and their state.
    Ps(PsArgs),
    /// Print a container's output.
    Logs(LogsArgs),
    /// Stop a container (SIGTERM, then SIGKILL after a grace period), or send it a signal.
    Kill(KillArgs),
    /// Remove containers.
    Rm(RmArgs),
    /// Wait for a container to end and print its exit code.
    Wait(WaitArgs),
    /// Build an image from a Containerfile.
    Build(BuildArgs),
    /// Push an image to a registry (OCI distribution API).
    Push(PushArgs),
    /// Pull an image from a registry.
    Pull(PullArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// This machine's containers and images as a whole.
    #[command(subcommand)]
    System(SystemCommand),
    /// Run the master (control plane) of a cluster.
    Master(MasterArgs),
    /// Run an agent that runs tasks for a master.
    Agent(AgentArgs),
    /// Run a master and an agent in one process: a one-machine cluster.
    Up(UpArgs),
    /// List the cluster's agents (from CORRAL_MASTER).
    Agents(AgentsArgs),
    /// List the cluster's tasks.
    Tasks(JsonArgs),
    /// List roles: weights, quotas, allocations and dominant shares.
    Roles(JsonArgs),
    /// Configure a role.
    #[command(subcommand)]
    Role(RoleCommand),
    /// API and join tokens: create, list, revoke (admin).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Run, follow and kill one-off tasks on the cluster.
    #[command(subcommand)]
    Task(TaskCommand),
    /// Long-running services (apps): deploy, scale, roll back, and ask why one is not running.
    #[command(subcommand)]
    App(AppCommand),
    /// List deployments in progress.
    Deployments(JsonArgs),
    /// Scheduled jobs (the Chronos API): add, list, run now, history, and their dependencies.
    #[command(subcommand)]
    Job(JobCommand),
    /// Measure corral against its peers.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The per-container monitor process (started by `corral run`, not by hand).
    #[command(hide = true)]
    Shim(ShimArgs),
    /// Run an OCI bundle to completion, as `crun run` does (for benchmarks and debugging).
    #[command(hide = true)]
    OciRun(OciRunArgs),
}

#[derive(Debug, Args)]
pub struct OciRunArgs {
    /// The bundle directory (with config.json and the rootfs).
    #[arg(long)]
    pub bundle: PathBuf,
    /// Where the runtime keeps the container's state while it runs.
    #[arg(long)]
    pub state: PathBuf,
    pub id: String,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The image to run (NAME[:TAG], or REGISTRY/REPOSITORY[:TAG] to pull); without it, the
    /// command runs on the host's filesystem.
    #[arg(long)]
    pub image: Option<String>,
    /// When to pull the image from its registry: always, missing (not in the store) or never.
    #[arg(long, default_value = "missing")]
    pub pull: corral_registry::PullPolicy,
    #[command(flatten)]
    pub registries: PullFrom,
    /// Replace the image's entrypoint ("" for none).
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// A name for the container (default: generated).
    #[arg(long)]
    pub name: Option<String>,
    /// CPUs (fractions allowed): cpu shares and a CFS quota.
    #[arg(long)]
    pub cpus: Option<String>,
    /// Memory limit in MiB (or with a k, m or g suffix).
    #[arg(long)]
    pub mem: Option<String>,
    /// The most processes and threads.
    #[arg(long)]
    pub pids: Option<String>,
    /// Disk it may write (its root filesystem's changes, or its sandbox without an image), in
    /// MiB or with a k, m or g suffix; measured every 2 s, and past it the container is killed.
    #[arg(long)]
    pub disk: Option<String>,
    /// Whether its root is the host's root: auto (a user namespace of its own when the kernel
    /// allows it and it has an image and a user below 65536), private (or fail) or host.
    #[arg(long, default_value = "auto")]
    pub userns: corral_runtime::create::Userns,
    /// UID[:GID] to run as (default: the image's numeric USER, else 65534).
    #[arg(long)]
    pub user: Option<String>,
    /// K=V environment variables (a bare K takes the value from here).
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    /// HOST:CONTAINER[:ro|rw] bind mounts.
    #[arg(long = "volume", short = 'v')]
    pub volumes: Vec<String>,
    /// Working directory inside the container.
    #[arg(long)]
    pub workdir: Option<String>,
    /// Hostname (default: the name).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Start it and print its id instead of waiting for it.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Remove the container when it ends (foreground only).
    #[arg(long)]
    pub rm: bool,
    /// Seconds between SIGTERM and SIGKILL when it is stopped.
    #[arg(long, default_value_t = 10)]
    pub stop_timeout: u64,
    /// Largest log file, in bytes, before it is rotated.
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    pub log_max_size: u64,
    /// How many log files to keep, the current one included.
    #[arg(long, default_value_t = 3)]
    pub log_max_files: u32,
    /// The command and its arguments (default: the image's entrypoint and cmd).
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The image to make, NAME[:TAG].
    #[arg(long, short = 't')]
    pub tag: String,
    /// The Containerfile (default: CONTEXT/Containerfile, else CONTEXT/Dockerfile).
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
    /// K=V values for ARG instructions.
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Run every step, ignoring the layer cache.
    #[arg(long)]
    pub no_cache: bool,
    /// The build context directory.
    pub context: PathBuf,
}

#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Plain HTTP instead of HTTPS.
    #[arg(long)]
    pub insecure: bool,
    /// Registry user name (basic auth, or for a bearer token).
    #[arg(long, env = "CORRAL_REGISTRY_USERNAME")]
    pub username: Option<String>,
    /// Registry password.
    #[arg(long, env = "CORRAL_REGISTRY_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Seconds a transfer may go without receiving or sending any data.
    #[arg(long, default_value_t = 30)]
    pub stall_timeout: u64,
    /// Seconds one request (a whole blob included) may take.
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The local image, NAME[:TAG].
    pub image: String,
    /// Where to, REGISTRY/REPOSITORY[:TAG] (default: the image's own name).
    pub destination: Option<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// REGISTRY/REPOSITORY[:TAG|@DIGEST].
    pub image: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Args, Clone)]
pub struct MasterArgs {
    /// Address for every API (HTTPS). 0.0.0.0:5050 for every interface.
    #[arg(long, default_value = "127.0.0.1:5050")]
    pub listen: std::net::SocketAddr,
    #[command(flatten)]
    pub tls: MasterTlsArgs,
    /// Where the master keeps its state (default: ROOT/master).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Seconds an agent may stay silent before its tasks are UNREACHABLE.
    #[arg(long, default_value_t = 15.0)]
    pub agent_timeout: f64,
}

#[derive(Debug, Args, Clone)]
pub struct AgentArgs {
    /// The master, HOST:PORT.
    #[arg(long)]
    pub master: String,
    /// Address for the agent's API (task launches, logs; only masters may call it). 0.0.0.0:5051
    /// for every interface.
    #[arg(long, default_value = "127.0.0.1:5051")]
    pub listen: std::net::SocketAddr,
    /// The token the agent joins the cluster with, the first time (the master writes one to
    /// DATA_DIR/join-token; `corral token create --join` makes more).
    #[arg(long, env = "CORRAL_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// Development only: plain HTTP and no certificates, on a loopback address only (the
    /// master must run with --insecure-dev too).
    #[arg(long)]
    pub insecure_dev: bool,
    /// How the master reaches this agent (default: https://LISTEN).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Resources to offer, in Mesos's grammar (cpus:4;mem:4096;ports:[31000-32000];cpus(ads):2);
    /// what is left out is detected.
    #[arg(long)]
    pub resources: Option<String>,
    /// Attributes, rack:a;zone:eu.
    #[arg(long, default_value = "")]
    pub attributes: String,
    /// The hostname placement constraints see (default: the machine's).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Where the agent keeps its own records (default: ROOT/agent).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    #[command(flatten)]
    pub registries: PullFrom,
    #[command(flatten)]
    pub gc: GcArgs,
    /// Whether tasks with an image get a user namespace of their own (their root is not the
    /// host's root): auto (when the kernel allows it), private (or fail) or host.
    #[arg(long, default_value = "auto")]
    pub userns: corral_runtime::create::Userns,
}

/// What an agent keeps of what ended, and for how long.
#[derive(Debug, Args, Clone, Default)]
pub struct GcArgs {
    /// How long an ended task's container is kept after the master heard of its end (30s, 10m,
    /// 1h, 7d; its output stays in the task's sandbox) [default: 1h].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub container_retention: Option<std::time::Duration>,
    /// Ended task containers kept at most; the oldest beyond are removed at once [default: 100].
    #[arg(long, value_name = "N")]
    pub max_ended_containers: Option<usize>,
    /// How long a task's sandbox (its files and output) is kept after the task is forgotten
    /// [default: 7d].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub sandbox_retention: Option<std::time::Duration>,
    /// Unused images are removed, least recently used first, when the disk under the state root
    /// is fuller than this (percent) [default: 90]...
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub image_gc_high: Option<u8>,
    /// ...until it is at most this full [default: 80].
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub image_gc_low: Option<u8>,
}

impl GcArgs {
    pub fn policy(&self) -> anyhow::Result<corral_cluster::agent::GcPolicy> {
        let d = corral_cluster::agent::GcPolicy::default();
        let policy = corral_cluster::agent::GcPolicy {
            container_retention: self.container_retention.unwrap_or(d.container_retention),
            max_ended_containers: self.max_ended_containers.unwrap_or(d.max_ended_containers),
            sandbox_retention: self.sandbox_retention.unwrap_or(d.sandbox_retention),
            max_sandboxes: d.max_sandboxes,
            image_high_water: self.image_gc_high.unwrap_or(d.image_high_water),
            image_low_water: self.image_gc_low.unwrap_or(d.image_low_water),
        };
        anyhow::ensure!(
            policy.image_low_water <= policy.image_high_water,
            "--image-gc-low ({}) must not be above --image-gc-high ({})",
            policy.image_low_water,
            policy.image_high_water
        );
        Ok(policy)
    }
}

/// `90`, `30s`, `10m`, `1h`, `7d`: seconds unless a unit says otherwise.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = s.find(|c: char| !c.is_ascii_digit()).map_or((s, ""), |i| s.split_at(i));
    let n: u64 = number.parse().map_err(|_| format!("{s:?} is not a duration like 30s, 10m, 1h or 7d"))?;
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    n.checked_mul(secs).map(std::time::Duration::from_secs).ok_or_else(|| format!("{s:?} is too long"))
}

fn parse_pull(s: &str) -> Result<corral_client::wire::Pull, String> {
    serde_json::from_value(serde_json::Value::String(s.into()))
        .map_err(|_| format!("pull policy {s:?} must be always, missing or never"))
}

/// Where images are pulled from on demand.
#[derive(Debug, Args, Clone, Default)]
pub struct PullFrom {
    /// A registry (HOST[:PORT]) to pull from over plain HTTP (loopback ones always are);
    /// repeat for more.
    #[arg(long = "insecure-registry")]
    pub insecure: Vec<String>,
    /// A registry (HOST[:PORT]) to look in for images named without one (`app:v1`), tried in
    /// the order given, after the registries file's; repeat for more.
    #[arg(long = "search-registry")]
    pub search: Vec<String>,
    /// A JSON file with `unqualified-search-registries`, `insecure-registries` and `auths`
    /// (credentials per registry, as in Docker's and Podman's auth files).
    #[arg(long = "registries-config", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl PullFrom {
    /// The registries file with the flags' registries added.
    pub fn load(&self) -> anyhow::Result<corral_registry::Registries> {
        let mut r = match &self.config {
            Some(path) => corral_registry::Registries::load(path).map_err(anyhow::Error::msg)?,
            None => corral_registry::Registries::default(),
        };
        r.search.extend(self.search.iter().cloned());
        r.insecure.extend(self.insecure.iter().cloned());
        Ok(r)
    }
}

#[derive(Debug, Args, Clone)]
pub struct UpArgs {
    /// The master's address.
    #[arg(long, default_value = "127.0.0.1:5050")]
    pub listen: std::net::SocketAddr,
    #[command(flatten)]
    pub tls: MasterTlsArgs,
    /// The agent's address.
    #[arg(long, default_value = "127.0.0.1:5051")]
    pub agent_listen: std::net::SocketAddr,
    /// Where the master keeps its state, certificates and first tokens (default: ROOT/master).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Seconds an agent may stay silent before its tasks are UNREACHABLE.
    #[arg(long, default_value_t = 15.0)]
    pub agent_timeout: f64,
    /// The agent's resources in Mesos's grammar (cpus:4;mem:4096); what is left out is detected.
    #[arg(long)]
    pub resources: Option<String>,
    /// The agent's attributes, rack:a;zone:eu.
    #[arg(long, default_value = "")]
    pub attributes: String,
    /// Where the agent keeps its own records (default: ROOT/agent).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Whether tasks with an image get a user namespace of their own: auto, private or host.
    #[arg(long, default_value = "auto")]
    pub userns: corral_runtime::create::Userns,
}

/// How a master secures its APIs.
#[derive(Debug, Args, Clone, Default)]
pub struct MasterTlsArgs {
    /// Development only: plain HTTP and no authentication, on a loopback address only.
    #[arg(long)]
    pub insecure_dev: bool,
    /// Another name or address the master's certificate covers (beyond its listen address,
    /// loopback and the hostname); repeat for more.
    #[arg(long = "tls-san", value_name = "NAME")]
    pub tls_sans: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; its secret is printed on the last line, and only then.
    Create {
        /// The namespace the token acts in.
        #[arg(long, default_value = "default")]
        namespace: String,
        /// reader (read), writer (also change) or admin (also tokens, roles, host tasks).
        #[arg(long, default_value = "writer")]
        role: String,
        /// A join token, for agents, instead of an API token.
        #[arg(long)]
        join: bool,
        /// How long it is valid (30s, 10m, 1h, 7d); default: until revoked.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        ttl: Option<std::time::Duration>,
        /// What it is for.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List tokens (never their secrets).
    Ls(JsonArgs),
    /// Revoke a token: it stops working at once.
    Revoke {
        /// The token's id (the part before the dot).
        id: String,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentsArgs {
    #[command(subcommand)]
    pub command: Option<AgentsCommand>,
    #[command(flatten)]
    pub list: JsonArgs,
}

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// Revoke an agent's certificate (admin): the master stops taking its calls, so it is
    /// unreachable within the agent timeout and its tasks are replaced; to come back it must
    /// join again, as a new agent.
    Revoke {
        /// The agent's id (`corral agents`).
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct JsonArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// Set a role's weight or quota.
    Set {
        /// The role's name.
        role: String,
        /// Its weight in weighted DRF (default 1; at most 1,000,000).
        #[arg(long)]
        weight: Option<f64>,
        /// Resources the role may hold at most (cpus:10;mem:4096), or "" for none.
        #[arg(long)]
        quota: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Create or replace an app from a Marathon app definition (JSON, or YAML by extension).
    Deploy {
        /// The app definition (.json, or .yaml / .yml).
        file: PathBuf,
        /// Override a deployment that holds the app.
        #[arg(long)]
        force: bool,
    },
    /// List apps with their instance counts.
    Ls(JsonArgs),
    /// Show an app and its tasks.
    Show {
        /// The app's id (/group/app).
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change an app's instance count.
    Scale {
        /// The app's id (/group/app).
        id: String,
        /// How many instances it should have.
        instances: u32,
        /// Override a deployment that holds the app.
        #[arg(long)]
        force: bool,
    },
    /// Replace every task of an app, rolling, with the same definition.
    Restart {
        /// The app's id (/group/app).
        id: String,
        /// Override a deployment that holds the app.
        #[arg(long)]
        force: bool,
    },
    /// Go back to an earlier version of an app (the one before the current by default).
    Rollback {
        /// The app's id (/group/app).
        id: String,
        /// The version to go back to (`corral app show --json` lists them).
        version: Option<String>,
        /// Override a deployment that holds the app.
        #[arg(long)]
        force: bool,
    },
    /// Remove an app and stop its tasks.
    Rm {
        /// The app's id (/group/app).
        id: String,
        /// Override a deployment that holds the app.
        #[arg(long)]
        force: bool,
    },
    /// Say why an app has fewer tasks than it wants: each recent offer and what it failed on.
    Why {
        /// The app's id (/group/app).
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Create or replace a job from a Chronos job definition (JSON): a `schedule` (ISO 8601,
    /// `R/2026-01-01T00:00:00Z/PT1H`) or `parents`.
    Add {
        /// The job's JSON file.
        file: PathBuf,
    },
    /// List jobs: schedule or parents, state, and last result.
    Ls(JsonArgs),
    /// Show a job's definition and counters.
    Show {
        /// The job's name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a job now, outside its schedule.
    Run {
        /// The job's name.
        name: String,
    },
    /// Kill the job's runs under way (they are not retried).
    Kill {
        /// The job's name.
        name: String,
    },
    /// Remove a job (and kill its runs).
    Rm {
        /// The job's name.
        name: String,
    },
    /// A job's recent runs: when they were due, how long they took, how they ended.
    History {
        /// The job's name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The jobs' dependencies: `parent -> child` lines, or Graphviz dot.
    Graph {
        /// Print Graphviz dot.
        #[arg(long)]
        dot: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Submit tasks; they wait for an offer that fits.
    Run {
        /// The role whose share (and quota) the tasks use.
        #[arg(long, default_value = "*")]
        role: String,
        /// A name for the tasks (default: the command's).
        #[arg(long)]
        name: Option<String>,
        /// How many tasks.
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// CPUs per task.
        #[arg(long, default_value_t = 0.1)]
        cpus: f64,
        /// Memory per task, MiB.
        #[arg(long, default_value_t = 32.0)]
        mem: f64,
        /// Disk each task may write, MiB (0: not limited); past it the task is killed.
        #[arg(long, default_value_t = 0.0)]
        disk: f64,
        /// The image to run (without it, the command runs on the agent's filesystem).
        #[arg(long)]
        image: Option<String>,
        /// When the agent pulls the image: always, missing (not in its store) or never.
        #[arg(long, default_value = "missing", value_parser = parse_pull)]
        pull: corral_client::wire::Pull,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// List a task's sandbox (or a directory in it), or print one of its files, fetched from
    /// its agent.
    Files {
        /// The task.
        task: String,
        /// A file or directory inside the sandbox (default: its top).
        #[arg(default_value = "")]
        path: String,
        /// Print the listing as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a task's output, fetched from its agent.
    Logs {
        /// Keep printing what it writes until it ends.
        #[arg(long, short = 'f')]
        follow: bool,
        /// The task's id.
        task: String,
    },
    /// Kill a task.
    Kill {
        /// The task's id.
        task: String,
    },
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Print JSON, one object per container.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep printing output until the container ends.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Container name or id.
    pub container: String,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Send this signal instead of stopping gracefully.
    #[arg(long, short = 's')]
    pub signal: Option<String>,
    /// Container names or ids.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Kill running containers first.
    #[arg(long, short = 'f')]
    pub force: bool,
    /// Container names or ids.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Container name or id.
    pub container: String,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Make a one-layer image from a root filesystem (tar, tar.gz or directory).
    Import {
        /// The root filesystem: a tar, tar.gz or directory.
        source: PathBuf,
        /// The image's NAME[:TAG].
        reference: String,
    },
    /// List images.
    Ls,
    /// Print an image's config as JSON.
    Inspect {
        /// The image's NAME[:TAG].
        reference: String,
    },
    /// Remove an image tag, and whatever no other image needs.
    Rm {
        /// The image's NAME[:TAG].
        reference: String,
    },
    /// Remove blobs and unpacked layers no image needs; with --all, also every image no
    /// container (running or ended) uses.
    Prune {
        /// Also remove every image no container uses.
        #[arg(short, long)]
        all: bool,
    },
    /// Write an image as an OCI image layout directory (readable by skopeo, umoci, ...).
    Export {
        /// The image's NAME[:TAG].
        reference: String,
        /// The directory to write the layout into.
        dir: PathBuf,
    },
    /// Load the images of an OCI image layout directory.
    Load {
        /// The OCI image layout directory.
        dir: PathBuf,
        /// Tag the image NAME:TAG (default: the layout's own name for it).
        reference: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Remove every container that is not running, then prune images.
    Prune {
        /// Also remove every image no remaining container uses.
        #[arg(short, long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Container lifecycle (create, start, /bin/true, wait, delete) against crun and runc.
    Lifecycle {
        /// Runs per runtime.
        #[arg(long, default_value_t = 50)]
        runs: usize,
        /// The image to make the bundle's rootfs from.
        #[arg(long, default_value = "busybox:latest")]
        image: String,
        /// Run each runtime's runs back to back instead of taking turns, so that no runtime's
        /// cgroup attach follows another's.
        #[arg(long)]
        blocks: bool,
    },
    /// Time from the API call that submits a task to the task RUNNING, on a one-node cluster.
    Launch {
        /// Tasks launched, one after another, in each case.
        #[arg(long, default_value_t = 200)]
        runs: usize,
    },
    /// The services framework at scale: deploy APPS x INSTANCES, time until all run, then the
    /// latency of GET /v2/apps. The agent is simulated (it acknowledges launches at once), so
    /// this measures the master.
    Services {
        /// How many apps.
        #[arg(long, default_value_t = 1000)]
        apps: usize,
        /// Instances of each app.
        #[arg(long, default_value_t = 10)]
        instances: usize,
        /// GET /v2/apps requests to time once everything runs.
        #[arg(long, default_value_t = 200)]
        requests: usize,
        /// A real agent running real tasks (host `sleep` in containers) instead of the
        /// simulated one; each costs a shim and a process, so keep APPS x INSTANCES modest.
        #[arg(long)]
        real: bool,
        /// Without TLS and tokens (off: --insecure-dev), with them (on), or both, one after the
        /// other.
        #[arg(long, default_value = "off")]
        tls: String,
    },
    /// Jobs all due at the same minute: the delay from due time to launch, and the master's
    /// memory (a simulated agent).
    Jobs {
        /// How many jobs.
        #[arg(long, default_value_t = 10_000)]
        jobs: usize,
    },
    /// An app of 3 instances on 3 agents whose stores lack its image: from `POST /v2/apps` to all
    /// RUNNING, against `skopeo copy` into each agent's store plus a start.
    Pull {
        /// Runs per case.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Size of the image's own layer, in MiB (above its base).
        #[arg(long, default_value_t = 100)]
        size_mib: u64,
        /// The base image.
        #[arg(long, default_value = "busybox:latest")]
        image: String,
    },
    /// Reads and writes of the Marathon API against each other: GET /v2/apps while a client
    /// updates apps 50 times a second, and POST /v2/apps alone and beside two readers, on
    /// APPS x INSTANCES simulated tasks; with --master-exe, against that binary's master (an
    /// older build, for before-and-after figures).
    Contention {
        /// How many apps.
        #[arg(long, default_value_t = 1000)]
        apps: usize,
        /// Instances of each app.
        #[arg(long, default_value_t = 10)]
        instances: usize,
        /// Requests timed per measure.
        #[arg(long, default_value_t = 200)]
        requests: usize,
        /// App updates per second while reads are timed.
        #[arg(long, default_value_t = 50)]
        writes_per_sec: u32,
        /// Run the master from this `corral` binary (default: this one).
        #[arg(long)]
        master_exe: Option<std::path::PathBuf>,
    },
    /// Build (cold and cached) against buildah, push and pull against skopeo.
    Images {
        /// Runs per case.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Size of the pushed and pulled image, in MiB.
        #[arg(long, default_value_t = 100)]
        size_mib: u64,
        /// The base image of the build.
        #[arg(long, default_value = "busybox:latest")]
        image: String,
    },
}

#[derive(Debug, Args)]
pub struct ShimArgs {
    pub id: String,
}

#[cfg(test)]
mod help {
    use clap::CommandFactory;

    /// Every command, flag and argument says what it is in `--help`.
    #[test]
    fn every_command_flag_and_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.is_hide_set() || id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.is_hide_set() {
                    continue;
                }
                let here = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() && sub.get_long_about().is_none() {
                    missing.push(here.clone());
                }
                walk(sub, &here, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "corral", &mut missing);
        assert!(missing.is_empty(), "without help text:\n{}", missing.join("\n"));
    }
}
