//! Creating a container on disk: validation, the record, the bundle and the generated `/etc`.
//! Nothing runs yet; the shim starts what `create` leaves behind. On any error nothing is left.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use corral_image::{Digest, Reference, Store};

use crate::parse::Volume;
use crate::rootfs;
use crate::spec::{self, RootKind, SANDBOX_PATH};
use crate::state::{
    io_err, ContainerDir, ContainerRecord, Containers, EtcFiles, ImageRecord, StateError, VolumeRecord,
};

/// What the user asked for, already parsed.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub name: Option<String>,
    pub image: Option<Reference>,
    /// The command; empty means the image's cmd.
    pub command: Vec<String>,
    /// Replaces the image's entrypoint (`Some(vec![])` runs the command without one).
    pub entrypoint: Option<Vec<String>>,
    pub etc: EtcFiles,
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    pub user: Option<(u32, u32)>,
    /// A user by name, looked up in the image's passwd (the host's for host tasks); `user`
    /// wins when both are given.
    pub user_name: Option<String>,
    pub hostname: Option<String>,
    pub cpus: Option<f64>,
    pub mem_bytes: Option<u64>,
    pub pids: Option<i64>,
    pub volumes: Vec<Volume>,
    pub stop_grace_secs: u64,
    pub log_max_bytes: u64,
    pub log_max_files: u32,
    /// Share the caller's network namespace (Marathon's `HOST` networking).
    pub host_network: bool,
    /// Disk it may use, in bytes: its writable root layer (or sandbox) and `disk_paths`.
    pub disk_bytes: Option<u64>,
    /// More directories that count toward its disk use (an agent's task sandbox).
    pub disk_paths: Vec<PathBuf>,
    /// Whether it gets a user namespace of its own.
    pub userns: Userns,
}

/// Whether a container's root is the host's root (`--userns`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Userns {
    /// A user namespace of its own when it can have one: it has an image, its own network, a
    /// user below 65536, and the kernel and filesystem support idmapped mounts.
    Auto,
    /// A user namespace of its own, or an error saying why not.
    Private,
    /// The host's ids (the builder's RUN steps, host tasks).
    #[default]
    Host,
}

impl std::str::FromStr for Userns {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Userns::Auto),
            "private" => Ok(Userns::Private),
            "host" => Ok(Userns::Host),
            other => Err(format!("unknown user namespace mode {other:?}: expected auto, private or host")),
        }
    }
}

/// The default user: nobody.
pub const DEFAULT_UID: u32 = 65534;

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    Image(#[from] corral_image::store::StoreError),
    #[error("no command given and image {0} has no entrypoint or cmd")]
    NoCommand(String),
    #[error("the image's user {0:?} is not in its /etc/passwd or /etc/group")]
    UnknownUser(String),
    #[error("volume host path {0} does not exist")]
    MissingVolume(PathBuf),
    #[error("no user namespace for this container: {0}")]
    NoUserns(String),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Creates the container; returns its directory.
pub fn create(
    state_root: &std::path::Path,
    store: &Store,
    req: CreateRequest,
    now: &str,
) -> Result<ContainerDir, CreateError> {
    for v in &req.volumes {
        if !v.host.exists() {
            return Err(CreateError::MissingVolume(v.host.clone()));
        }
    }
    let image = req.image.as_ref().map(|r| store.resolve(r).map(|img| (r, img))).transpose()?;
    if let Some((_, img)) = &image {
        store.mark_used(&img.manifest_digest);
    }
    let image_config = image.as_ref().and_then(|(_, img)| img.config.config().clone());

    let mut args: Vec<String> = Vec::new();
    match &req.entrypoint {
        Some(e) => args.extend(e.iter().cloned()),
        None => args.extend(image_config.as_ref().and_then(|c| c.entrypoint().clone()).unwrap_or_default()),
    }
    if !req.command.is_empty() {
        args.extend(req.command.iter().cloned());
    } else if let Some(c) = &image_config {
        args.extend(c.cmd().clone().unwrap_or_default());
    }
    if args.is_empty() {
        let what = req.image.as_ref().map_or_else(|| "(host)".to_string(), |r| r.to_string());
        return Err(CreateError::NoCommand(what));
    }

    let layers: Vec<Digest> = match &image {
        Some((_, img)) => img.layers()?,
        None => Vec::new(),
    };
    // Unpack (or find cached) layers now: a broken layer is an error before anything exists.
    let layer_dirs: Vec<PathBuf> = layers.iter().map(|d| store.unpacked_layer(d)).collect::<Result<_, _>>()?;

    let containers = Containers::new(state_root);
    let id = crate::state::new_id();
    let name = req.name.clone().unwrap_or_else(|| format!("c-{}", &id[..8]));
    containers.reserve_name(&name, &id)?;
    let dir = containers.dir_of(&id);
    let result = (|| {
        fs::create_dir_all(dir.bundle()).map_err(io_err("creating", &dir.bundle()))?;
        // Root filesystems (overlay upper directories, host tasks' sandboxes) are the
        // containers' alone: `containers/` cannot be listed, and each container's directory is
        // closed to others (see `open_to_its_root`).
        let all = state_root.join("containers");
        fs::set_permissions(&all, fs::Permissions::from_mode(0o711)).map_err(io_err("closing", &all))?;
        fs::set_permissions(&dir.dir, fs::Permissions::from_mode(0o700)).map_err(io_err("closing", &dir.dir))?;
        let (base_passwd, base_group) = if image.is_some() {
            (rootfs::read_from_layers(&layer_dirs, "/etc/passwd"), rootfs::read_from_layers(&layer_dirs, "/etc/group"))
        } else {
            (
                fs::read_to_string("/etc/passwd").unwrap_or_default(),
                fs::read_to_string("/etc/group").unwrap_or_default(),
            )
        };
        let (uid, gid) = match (req.user, &req.user_name) {
            (Some(ids), _) => ids,
            (None, Some(name)) => rootfs::resolve_user(name, &base_passwd, &base_group)
                .ok_or_else(|| CreateError::UnknownUser(name.clone()))?,
            // The image's USER, by id or by name in its own passwd and group; else nobody.
            (None, None) => match image_config.as_ref().and_then(|c| c.user().clone()).filter(|u| !u.is_empty()) {
                Some(user) => rootfs::resolve_user(&user, &base_passwd, &base_group)
                    .ok_or_else(|| CreateError::UnknownUser(user.clone()))?,
                None => (DEFAULT_UID, DEFAULT_UID),
            },
        };
        let userns = user_namespace(state_root, &containers, &id, &req, image.is_some(), uid, gid)?;
        if let Some(root) = userns {
            open_to_its_root(&dir, root)?;
        }
        let home = rootfs::home_of(&base_passwd, uid).unwrap_or_else(|| "/".to_string());
        let hostname = req
            .hostname
            .clone()
            .unwrap_or_else(|| crate::parse::hostname(&name).unwrap_or_else(|_| id[..12].to_string()));
        let env = merge_env(
            image_config.as_ref().and_then(|c| c.env().clone()).unwrap_or_default(),
            &req.env,
            &hostname,
            &home,
            image.is_none(),
        );
        let cwd = req.workdir.clone().unwrap_or_else(|| match (&image_config, &image) {
            (_, None) => SANDBOX_PATH.to_string(),
            (Some(c), _) => c.working_dir().clone().filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into()),
            (None, _) => "/".to_string(),
        });
        let record = ContainerRecord {
            id: id.clone(),
            name: name.clone(),
            image: image.as_ref().map(|(r, img)| ImageRecord {
                reference: r.to_string(),
                manifest: img.manifest_digest.to_string(),
                layers: layers.iter().map(|d| d.to_string()).collect(),
            }),
            args,
            env,
            cwd,
            uid,
            gid,
            hostname,
            cpus: req.cpus,
            mem_bytes: req.mem_bytes,
            pids: req.pids,
            volumes: req
                .volumes
                .iter()
                .map(|v| VolumeRecord { host: v.host.clone(), container: v.container.clone(), readonly: v.readonly })
                .collect(),
            created: now.to_string(),
            stop_grace_secs: req.stop_grace_secs,
            log_max_bytes: req.log_max_bytes,
            log_max_files: req.log_max_files,
            etc: req.etc,
            host_network: req.host_network,
            disk_bytes: req.disk_bytes,
            disk_paths: [if image.is_some() { dir.upper() } else { dir.sandbox() }]
                .into_iter()
                .chain(req.disk_paths.iter().cloned())
                .collect(),
            userns,
        };
        let kind = if image.is_some() {
            RootKind::Image
        } else {
            rootfs::prepare_host_root(&dir, uid, gid)?;
            rootfs::host_root_kind()?
        };
        rootfs::write_etc(&dir, &record, &base_passwd, &base_group)?;
        let spec = spec::build(&record, &dir, &kind);
        let config = dir.bundle().join("config.json");
        let text = serde_json::to_vec_pretty(&spec).expect("specs serialize");
        fs::write(&config, text).map_err(io_err("writing", &config))?;
        crate::state::write_json_atomic(&dir.record(), &record)?;
        Ok(())
    })();
    if let Err(e) = result {
        remove(&containers, &dir, &name);
        return Err(e);
    }
    Ok(dir)
}

/// The host id of the container's root, if it gets a user namespace (see [`Userns`]).
fn user_namespace(
    state_root: &std::path::Path,
    containers: &Containers,
    id: &str,
    req: &CreateRequest,
    has_image: bool,
    uid: u32,
    gid: u32,
) -> Result<Option<u32>, CreateError> {
    let why_not = if req.userns == Userns::Host {
        return Ok(None);
    } else if !has_image {
        Some("a host task (no image) runs as the host's users".to_string())
    } else if req.host_network {
        Some("it shares the host's network, which a user namespace cannot own".to_string())
    } else if uid >= crate::userns::SIZE || gid >= crate::userns::SIZE {
        Some(format!("its user {uid}:{gid} is past the namespace's ids (0 to {})", crate::userns::SIZE - 1))
    } else if !crate::userns::supported(&state_root.join("layers")) {
        Some("this kernel or filesystem has no idmapped mounts".to_string())
    } else {
        None
    };
    let base = match why_not {
        Some(why) => Err(why),
        None => crate::userns::choose_base(id, |base| containers.reserve_id_range(base, id))?
            .ok_or_else(|| format!("all {} id ranges are in use", crate::userns::RANGES)),
    };
    match (base, req.userns) {
        (Ok(base), _) => Ok(Some(base)),
        (Err(why), Userns::Private) => Err(CreateError::NoUserns(why)),
        (Err(_), _) => Ok(None),
    }
}

/// Lets the container's root (a host id of its own) walk through its directory, as its init
/// does by path to join its namespaces and pivot into its root: group-searchable by its group,
/// closed to everyone else.
fn open_to_its_root(dir: &ContainerDir, root: u32) -> Result<(), StateError> {
    std::os::unix::fs::chown(&dir.dir, Some(0), Some(root)).map_err(io_err("chown", &dir.dir))?;
    fs::set_permissions(&dir.dir, fs::Permissions::from_mode(0o710)).map_err(io_err("opening", &dir.dir))
}

/// The environment: the image's, then the user's (which wins), plus HOSTNAME and HOME unless
/// set. Host tasks also learn where their sandbox is, as Mesos tasks do.
fn merge_env(
    image_env: Vec<String>,
    user: &[(String, String)],
    hostname: &str,
    home: &str,
    host_task: bool,
) -> Vec<String> {
    let mut out: Vec<(String, String)> = Vec::new();
    let set = |k: &str, v: &str, out: &mut Vec<(String, String)>| match out.iter_mut().find(|(ek, _)| ek == k) {
        Some(e) => e.1 = v.to_string(),
        None => out.push((k.to_string(), v.to_string())),
    };
    if image_env.is_empty() || host_task {
        set("PATH", corral_image::import::DEFAULT_PATH.trim_start_matches("PATH="), &mut out);
    }
    for kv in image_env {
        let (k, v) = kv.split_once('=').unwrap_or((&kv, ""));
        set(k, v, &mut out);
    }
    set("HOSTNAME", hostname, &mut out);
    if host_task {
        set("CORRAL_SANDBOX", SANDBOX_PATH, &mut out);
    }
    for (k, v) in user {
        set(k, v, &mut out);
    }
    if !out.iter().any(|(k, _)| k == "HOME") {
        set("HOME", home, &mut out);
    }
    out.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// Why [`launch`] failed; nothing was left behind either way.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Create(#[from] CreateError),
    #[error(transparent)]
    Start(#[from] crate::control::ControlError),
}

/// Creates a container and starts its shim: the one create, start and roll-back path of every
/// starter (`corral run`, the agent, the builder's RUN steps). A start that fails removes what
/// was created.
pub fn launch(
    corral_exe: &std::path::Path,
    state_root: &std::path::Path,
    store: &Store,
    req: CreateRequest,
    created_at: &str,
) -> Result<ContainerDir, LaunchError> {
    let dir = create(state_root, store, req, created_at)?;
    if let Err(e) = crate::control::start(corral_exe, state_root, &dir) {
        let name = dir.read_record().map(|r| r.name).unwrap_or_default();
        remove(&Containers::new(state_root), &dir, &name);
        return Err(e.into());
    }
    Ok(dir)
}

/// Removes everything a container left: processes its lost shim left running, mounts,
/// cgroups, its directory, its name and its id range.
pub fn remove(containers: &Containers, dir: &ContainerDir, name: &str) {
    let id = dir.id();
    if !rootfs::kill_cgroup(&id) {
        tracing::warn!(container = %id, "processes of the container outlived SIGKILL for 5 s; removing it anyway");
    }
    if let Some(base) = dir.read_record().ok().and_then(|r| r.userns) {
        containers.release_id_range(base, &id);
    }
    let _ = rootfs::teardown(dir);
    let _ = rootfs::remove_cgroups(&id);
    let _ = fs::remove_dir_all(&dir.dir);
    containers.release_name(name, &id);
}

/// The manifests of the images containers under this root were made from (running or not).
pub fn manifests_in_use(containers: &Containers) -> Result<HashSet<Digest>, StateError> {
    let mut used = HashSet::new();
    for id in containers.ids()? {
        if let Some(image) = containers.dir_of(&id).read_record().ok().and_then(|r| r.image) {
            if let Ok(d) = image.manifest.parse() {
                used.insert(d);
            }
        }
    }
    Ok(used)
}

/// Layers used by any container under this root, which image removal must keep.
pub fn layers_in_use(containers: &Containers) -> Result<HashSet<Digest>, StateError> {
    let mut used = HashSet::new();
    for id in containers.ids()? {
        if let Ok(record) = containers.dir_of(&id).read_record() {
            for l in record.image.iter().flat_map(|i| i.layers.iter()) {
                if let Ok(d) = l.parse() {
                    used.insert(d);
                }
            }
        }
    }
    Ok(used)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_merges_in_order() {
        let env = merge_env(
            vec!["PATH=/bin".into(), "A=image".into()],
            &[("A".into(), "user".into()), ("B".into(), "x=y".into())],
            "box",
            "/home/u",
            false,
        );
        assert_eq!(env, ["PATH=/bin", "A=user", "HOSTNAME=box", "B=x=y", "HOME=/home/u"]);
        let host = merge_env(vec![], &[], "h", "/", true);
        assert!(host.iter().any(|e| e == "CORRAL_SANDBOX=/sandbox"));
        assert!(host[0].starts_with("PATH=/usr/local/sbin"));
    }
}
