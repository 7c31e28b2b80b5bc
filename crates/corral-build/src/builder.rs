//! The builder: runs a parsed Containerfile against the image store.
//!
//! Each step turns an image state into the next. RUN runs in a real corral container (through a
//! shim, like `corral run`) on the state so far, with only loopback networking, and its overlay
//! upper directory becomes the step's layer; COPY and ADD write their layer directly; the other
//! instructions change the config only. Every state is written to the store as an (untagged)
//! image, so a step's result is a manifest digest, and the cache maps a key (the previous key,
//! the instruction, the build arguments in scope, and the content of copied files) to it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use corral_image::store::{LayerBlob, StoreError};
use corral_image::{Digest, Reference, Store};
use corral_runtime::create::{self, CreateRequest};
use corral_runtime::logs;
use corral_runtime::state::{Containers, EtcFiles, State};
use oci_spec::image::{
    ConfigBuilder, HistoryBuilder, ImageConfiguration, ImageConfigurationBuilder, Os, RootFsBuilder,
};
use sha2::{Digest as _, Sha256};

use crate::containerfile::{self, Command, CopySpec, Instruction, ParseError, Stage};
use crate::ignore::{self, Ignore};

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub state_root: PathBuf,
    /// The corral executable, which RUN steps start as their shim.
    pub corral_exe: PathBuf,
    pub context: PathBuf,
    pub containerfile: PathBuf,
    pub tag: Reference,
    pub build_args: Vec<(String, String)>,
    pub no_cache: bool,
}

/// Hears what the build does, to show it.
pub trait Progress {
    fn step(&mut self, number: usize, total: usize, text: &str);
    fn cached(&mut self, id: &Digest);
    /// Output of a RUN step.
    fn output(&mut self, bytes: &[u8]);
    /// Called now and then while a step works (for spinners).
    fn tick(&mut self) {}
    fn done(&mut self, id: &Digest, took: Duration);
    fn warning(&mut self, message: &str);
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("build context {context}: more than {} of files (CORRAL_MAX_CONTEXT_SIZE); exclude what the build does not need in .dockerignore, or raise the limit", corral_image::layer::human(*.limit))]
    ContextTooLarge { context: PathBuf, limit: u64 },
    #[error("{file}:{}: {}", .source.line, .source.message)]
    Parse {
        file: String,
        #[source]
        source: ParseError,
    },
    #[error("{file}:{line}: {message}")]
    Step { file: String, line: usize, message: String },
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How many lines of a failed RUN's output the error repeats.
const FAILED_OUTPUT_LINES: usize = 10;
const SHELL: [&str; 2] = ["/bin/sh", "-c"];

#[derive(Debug, Clone, Default)]
struct Config {
    user: Option<String>,
    env: Vec<String>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    workdir: Option<String>,
    exposed: BTreeSet<String>,
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
struct HistoryEntry {
    created: String,
    created_by: String,
    empty_layer: bool,
}

/// An image during the build.
#[derive(Debug, Clone, Default)]
struct ImageState {
    layers: Vec<LayerBlob>,
    config: Config,
    history: Vec<HistoryEntry>,
    /// The manifest digest, once written (none for `scratch`).
    id: Option<Digest>,
}

struct Builder<'a> {
    store: &'a Store,
    opts: &'a BuildOptions,
    file: String,
    progress: &'a mut dyn Progress,
    ignore: Ignore,
    cache_dir: PathBuf,
    now: String,
}

/// Builds the image and tags it; returns its manifest digest.
pub fn build(store: &Store, opts: &BuildOptions, progress: &mut dyn Progress) -> Result<Digest, BuildError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BuildError::Io { path, source }
    };
    let text = fs::read_to_string(&opts.containerfile).map_err(io_err(&opts.containerfile))?;
    let file =
        opts.containerfile.file_name().map_or_else(|| "Containerfile".into(), |n| n.to_string_lossy().into_owned());
    let parsed = containerfile::parse(&text).map_err(|source| BuildError::Parse { file: file.clone(), source })?;
    let ignore_text = [".containerignore", ".dockerignore"]
        .iter()
        .find_map(|n| fs::read_to_string(opts.context.join(n)).ok())
        .unwrap_or_default();
    let ignore = Ignore::parse(&ignore_text);
    let limit = corral_image::layer::size_limit("CORRAL_MAX_CONTEXT_SIZE", 10 << 30);
    let kept = |rel: &Path| !ignore.excludes(&rel.to_string_lossy());
    if corral_image::layer::content_bytes(&opts.context, limit, &kept) > limit {
        return Err(BuildError::ContextTooLarge { context: opts.context.clone(), limit });
    }
    let cache_dir = opts.state_root.join("build-cache");
    fs::create_dir_all(&cache_dir).map_err(io_err(&cache_dir))?;
    let mut b = Builder { store, opts, file, progress, ignore, cache_dir, now: corral_runtime::now() };
    let total: usize = parsed.stages.iter().map(|s| s.steps.len() + 1).sum();
    let mut number = 0;
    let global: HashMap<String, String> = parsed
        .global_args
        .iter()
        .filter_map(|a| b.arg_value(&a.name, a.default.as_deref()).map(|v| (a.name.clone(), v)))
        .collect();
    let mut used_args: BTreeSet<String> = parsed.global_args.iter().map(|a| a.name.clone()).collect();
    let mut finished: Vec<(Option<String>, ImageState, String)> = Vec::new();
    for stage in &parsed.stages {
        number += 1;
        let (state, key) = b.from(stage, &global, &finished, number, total)?;
        let (state, key) = b.stage(stage, state, key, &global, &finished, &mut number, total, &mut used_args)?;
        finished.push((stage.name.clone(), state, key));
    }
    for (name, _) in &opts.build_args {
        if !used_args.contains(name) {
            b.progress.warning(&format!("build argument {name} was not used by any ARG"));
        }
    }
    let (_, last, _) = finished.pop().expect("a Containerfile has a stage");
    let id = match last.id {
        Some(id) => id,
        None => b.write_state(&last)?,
    };
    store.tag(&opts.tag, &id)?;
    Ok(id)
}

impl Builder<'_> {
    fn step_err(&self, line: usize, message: impl Into<String>) -> BuildError {
        BuildError::Step { file: self.file.clone(), line, message: message.into() }
    }

    fn arg_value(&self, name: &str, default: Option<&str>) -> Option<String> {
        self.opts.build_args.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone()).or(default.map(String::from))
    }

    fn from(
        &mut self,
        stage: &Stage,
        global: &HashMap<String, String>,
        finished: &[(Option<String>, ImageState, String)],
        number: usize,
        total: usize,
    ) -> Result<(ImageState, String), BuildError> {
        let base = containerfile::expand(&stage.base, &|n| global.get(n).cloned())
            .map_err(|e| self.step_err(stage.line, e.0))?;
        self.progress.step(number, total, &format!("FROM {base}"));
        if base == "scratch" {
            return Ok((ImageState::default(), key_of(&["scratch"])));
        }
        if let Some((_, state, key)) = finished.iter().find(|(n, _, _)| n.as_deref() == Some(base.as_str())) {
            return Ok((state.clone(), key.clone()));
        }
        let reference: Reference = base
            .parse()
            .map_err(|e: corral_image::reference::ParseReferenceError| self.step_err(stage.line, e.to_string()))?;
        let image = self.store.resolve(&reference).map_err(|e| match e {
            StoreError::UnknownImage(n) => {
                self.step_err(stage.line, format!("unknown image {n:?} (pull or build it first)"))
            }
            other => other.into(),
        })?;
        let state = self.load_state(&image.manifest_digest)?;
        if let Some(id) = &state.id {
            self.progress.done(id, Duration::ZERO);
        }
        Ok((state, key_of(&["from", &image.manifest_digest.to_string()])))
    }

    #[allow(clippy::too_many_arguments)]
    fn stage(
        &mut self,
        stage: &Stage,
        mut state: ImageState,
        mut key: String,
        global: &HashMap<String, String>,
        finished: &[(Option<String>, ImageState, String)],
        number: &mut usize,
        total: usize,
        used_args: &mut BTreeSet<String>,
    ) -> Result<(ImageState, String), BuildError> {
        let mut args: BTreeMap<String, String> = BTreeMap::new();
        for step in &stage.steps {
            *number += 1;
            self.progress.step(*number, total, &step.text);
            let started = Instant::now();
            let env_now = env_map(&state.config.env);
            let lookup = |n: &str| env_now.get(n).cloned().or_else(|| args.get(n).cloned());
            let expand = |s: &str| containerfile::expand(s, &lookup).map_err(|e| self.step_err(step.line, e.0));
            let args_key: Vec<String> = args.iter().map(|(k, v)| format!("{k}={v}")).collect();

            // ARG changes only what later steps see: no new image state.
            if let Instruction::Arg(decls) = &step.instruction {
                for d in decls {
                    used_args.insert(d.name.clone());
                    let value = self.arg_value(&d.name, d.default.as_deref()).or_else(|| global.get(&d.name).cloned());
                    if let Some(v) = value {
                        args.insert(d.name.clone(), v);
                    }
                }
                key = key_of(&[
                    &key,
                    &step.text,
                    &args.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("\n"),
                ]);
                continue;
            }

            // What the step reads (for COPY and ADD, the files), and so its cache key.
            let copy_plan = match &step.instruction {
                Instruction::Copy(spec) | Instruction::Add(spec) => {
                    let is_add = matches!(step.instruction, Instruction::Add(_));
                    Some(self.plan_copy(step.line, spec, is_add, &state, finished, &expand)?)
                }
                _ => None,
            };
            let content = copy_plan.as_ref().map(|p| p.content_digest.clone()).unwrap_or_default();
            let step_key = key_of(&[&key, &step.text, &args_key.join("\n"), &content]);
            if !self.opts.no_cache {
                if let Some(cached) = self.cache_lookup(&step_key) {
                    self.progress.cached(&cached);
                    state = self.load_state(&cached)?;
                    key = step_key;
                    continue;
                }
            }

            let mut next = state.clone();
            let mut layer = None;
            match &step.instruction {
                Instruction::Run(cmd) => {
                    let argv = match cmd {
                        Command::Shell(s) => SHELL.iter().map(|s| s.to_string()).chain([s.clone()]).collect(),
                        Command::Exec(v) => v.clone(),
                    };
                    let base = match &state.id {
                        Some(id) => id.clone(),
                        None => self.write_state(&state)?,
                    };
                    layer = self.run(step.line, &base, state.config.user.is_none(), argv, &args)?;
                }
                Instruction::Copy(_) | Instruction::Add(_) => {
                    let plan = copy_plan.expect("planned above");
                    layer = Some(self.write_copy_layer(step.line, &plan)?);
                }
                Instruction::Env(pairs) => {
                    for (k, v) in pairs {
                        let v = containerfile::expand(v, &|n| {
                            env_map(&next.config.env).get(n).cloned().or_else(|| args.get(n).cloned())
                        })
                        .map_err(|e| self.step_err(step.line, e.0))?;
                        set_env(&mut next.config.env, k, &v);
                    }
                }
                Instruction::Label(pairs) => {
                    for (k, v) in pairs {
                        next.config.labels.insert(expand(k)?, expand(v)?);
                    }
                }
                Instruction::Expose(ports) => {
                    for p in ports {
                        let p = expand(p)?;
                        let p = if p.contains('/') { p } else { format!("{p}/tcp") };
                        next.config.exposed.insert(p);
                    }
                }
                Instruction::User(u) => next.config.user = Some(expand(u)?),
                Instruction::Workdir(w) => {
                    let w = expand(w)?;
                    let abs = Path::new(next.config.workdir.as_deref().unwrap_or("/")).join(&w);
                    let abs = normalize_abs(&abs);
                    if self.lookup(&state, &abs).is_none() {
                        let dirs = vec![abs.clone()];
                        layer = Some(self.write_dirs_layer(step.line, &dirs)?);
                    }
                    next.config.workdir = Some(abs.display().to_string());
                }
                Instruction::Cmd(cmd) => next.config.cmd = Some(argv_of(cmd)),
                Instruction::Entrypoint(cmd) => {
                    next.config.entrypoint = Some(argv_of(cmd));
                    // A new entrypoint drops an inherited CMD, as Docker does.
                    if !stage.steps.iter().any(|s| s.line < step.line && matches!(s.instruction, Instruction::Cmd(_))) {
                        next.config.cmd = None;
                    }
                }
                Instruction::Arg(_) => unreachable!("handled above"),
            }
            next.history.push(HistoryEntry {
                created: self.now.clone(),
                created_by: step.text.clone(),
                empty_layer: layer.is_none(),
            });
            if let Some(l) = layer {
                next.layers.push(l);
            }
            let id = self.write_state(&next)?;
            next.id = Some(id.clone());
            self.cache_store(&step_key, &id);
            self.progress.done(&id, started.elapsed());
            state = next;
            key = step_key;
        }
        Ok((state, key))
    }

    fn cache_lookup(&self, key: &str) -> Option<Digest> {
        let text = fs::read_to_string(self.cache_dir.join(key)).ok()?;
        let id: Digest = text.trim().parse().ok()?;
        let image = self.store.image(&id).ok()?;
        let layers = image.layers().ok()?;
        layers.iter().all(|l| self.store.has_blob(l)).then_some(id)
    }

    fn cache_store(&self, key: &str, id: &Digest) {
        let _ = corral_image::store::write_atomic(&self.cache_dir.join(key), id.to_string().as_bytes());
    }

    fn load_state(&self, manifest: &Digest) -> Result<ImageState, BuildError> {
        let image = self.store.image(manifest)?;
        let diff_ids: Vec<String> = image.config.rootfs().diff_ids().clone();
        let mut layers = Vec::new();
        for (i, d) in image.manifest.layers().iter().enumerate() {
            let digest: Digest = d.digest().as_ref().parse().map_err(|e: corral_image::digest::ParseDigestError| {
                StoreError::BadDocument { digest: manifest.clone(), what: "an image manifest", reason: e.to_string() }
            })?;
            let diff_id = diff_ids.get(i).and_then(|s| s.parse().ok()).ok_or_else(|| StoreError::BadDocument {
                digest: image.config_digest.clone(),
                what: "an image config",
                reason: format!("layer {i} has no diff_id"),
            })?;
            layers.push(LayerBlob { digest, size: d.size(), diff_id });
        }
        let c = image.config.config().clone().unwrap_or_default();
        let config = Config {
            user: c.user().clone().filter(|u| !u.is_empty()),
            env: c.env().clone().unwrap_or_default(),
            entrypoint: c.entrypoint().clone(),
            cmd: c.cmd().clone(),
            workdir: c.working_dir().clone().filter(|w| !w.is_empty()),
            exposed: c.exposed_ports().clone().unwrap_or_default().into_iter().collect(),
            labels: c.labels().clone().unwrap_or_default().into_iter().collect(),
        };
        let history = image
            .config
            .history()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|h| HistoryEntry {
                created: h.created().clone().unwrap_or_default(),
                created_by: h.created_by().clone().unwrap_or_default(),
                empty_layer: h.empty_layer().unwrap_or(false),
            })
            .collect();
        Ok(ImageState { layers, config, history, id: Some(manifest.clone()) })
    }

    fn write_state(&self, state: &ImageState) -> Result<Digest, BuildError> {
        let bad = |e: oci_spec::OciSpecError| StoreError::BadDocument {
            digest: Digest::of(b""),
            what: "a built image config",
            reason: e.to_string(),
        };
        let c = &state.config;
        let mut cb = ConfigBuilder::default().env(if c.env.is_empty() {
            vec![corral_image::import::DEFAULT_PATH.to_string()]
        } else {
            c.env.clone()
        });
        if let Some(u) = &c.user {
            cb = cb.user(u.clone());
        }
        if let Some(e) = &c.entrypoint {
            cb = cb.entrypoint(e.clone());
        }
        if let Some(cmd) = &c.cmd {
            cb = cb.cmd(cmd.clone());
        }
        if let Some(w) = &c.workdir {
            cb = cb.working_dir(w.clone());
        }
        if !c.exposed.is_empty() {
            cb = cb.exposed_ports(c.exposed.iter().cloned().collect::<Vec<_>>());
        }
        if !c.labels.is_empty() {
            cb = cb.labels(c.labels.clone().into_iter().collect::<HashMap<_, _>>());
        }
        let history = state
            .history
            .iter()
            .map(|h| {
                let mut hb = HistoryBuilder::default().created(h.created.clone()).created_by(h.created_by.clone());
                if h.empty_layer {
                    hb = hb.empty_layer(true);
                }
                hb.build().map_err(bad)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let config: ImageConfiguration = ImageConfigurationBuilder::default()
            .created(state.history.last().map_or_else(|| self.now.clone(), |h| h.created.clone()))
            .architecture(corral_image::import::host_arch())
            .os(Os::Linux)
            .config(cb.build().map_err(bad)?)
            .rootfs(
                RootFsBuilder::default()
                    .typ("layers")
                    .diff_ids(state.layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>())
                    .build()
                    .map_err(bad)?,
            )
            .history(history)
            .build()
            .map_err(bad)?;
        Ok(self.store.put_image(&config, &state.layers)?)
    }

    /// Runs `argv` in a container on image `base`; returns the layer of what it changed.
    fn run(
        &mut self,
        line: usize,
        base: &Digest,
        as_root: bool,
        argv: Vec<String>,
        args: &BTreeMap<String, String>,
    ) -> Result<Option<LayerBlob>, BuildError> {
        let root = &self.opts.state_root;
        let reference: Reference = format!("corral-build@{base}").parse().expect("a digest reference is always valid");
        let req = CreateRequest {
            name: Some(format!("build-{}", corral_runtime::state::new_id())),
            image: Some(reference),
            command: argv,
            entrypoint: Some(Vec::new()),
            env: args.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            hostname: Some("build".into()),
            // Build steps run as root unless the image names a USER, as in every other builder.
            user: as_root.then_some((0, 0)),
            stop_grace_secs: 10,
            log_max_bytes: 10 << 20,
            log_max_files: 2,
            etc: EtcFiles::NetworkOnly,
            ..CreateRequest::default()
        };
        let dir = create::launch(&self.opts.corral_exe, root, self.store, req, &corral_runtime::now())
            .map_err(|e| self.step_err(line, format!("RUN: {e}")))?;
        let containers = Containers::new(root);
        let name = dir.read_record().map(|r| r.name).unwrap_or_default();
        let result = self.follow(line, &dir);
        create::remove(&containers, &dir, &name);
        result
    }

    /// Follows a started RUN container to its end; its changes become a layer.
    fn follow(
        &mut self,
        line: usize,
        dir: &corral_runtime::state::ContainerDir,
    ) -> Result<Option<LayerBlob>, BuildError> {
        let mut tail: Vec<u8> = Vec::new();
        // Both the output and the follower's wake-ups (at least twice a second) move the spinner.
        let progress = std::cell::RefCell::new(&mut *self.progress);
        let done = || {
            progress.borrow_mut().tick();
            !matches!(dir.state(), Ok(State::Running { .. } | State::Created))
        };
        let mut sink = |e: &logs::Entry| -> io::Result<()> {
            progress.borrow_mut().output(&e.content);
            tail.extend_from_slice(&e.content);
            if tail.len() > 64 * 1024 {
                tail.drain(..tail.len() - 32 * 1024);
            }
            Ok(())
        };
        logs::read(&dir.logs(), true, done, &dir.dir, &mut sink)
            .map_err(|e| self.step_err(line, format!("RUN output: {e}")))?;
        let status = corral_runtime::control::wait(dir).map_err(|e| self.step_err(line, format!("RUN: {e}")))?;
        if status.shell_code() != 0 {
            let text = String::from_utf8_lossy(&tail);
            let lines: Vec<&str> = text.lines().collect();
            let last = lines[lines.len().saturating_sub(FAILED_OUTPUT_LINES)..].join("\n");
            return Err(self.step_err(
                line,
                format!("RUN failed: {} (exit code {}); last output:\n{last}", status.describe(), status.shell_code()),
            ));
        }
        let upper = dir.upper();
        let mut entries = 0;
        let layer = self.store.write_layer(|w| {
            let (_, n) = crate::diff::upper_to_tar(&upper, w)?;
            entries = n;
            Ok(())
        })?;
        if entries == 0 {
            let _ = fs::remove_file(self.store.blob_path(&layer.digest));
            return Ok(None);
        }
        Ok(Some(layer))
    }

    /// Where `path` is in the image: a lookup through its unpacked layers, top first.
    fn lookup(&self, state: &ImageState, path: &Path) -> Option<PathBuf> {
        state.layers.iter().rev().find_map(|l| {
            let dir = self.store.unpacked_layer(&l.digest).ok()?;
            corral_image::layer::lookup_in_root(&dir, path)
        })
    }

    fn write_dirs_layer(&self, line: usize, dirs: &[PathBuf]) -> Result<LayerBlob, BuildError> {
        let layer = self.store.write_layer(|w| {
            let mut b = tar::Builder::new(w);
            for d in dirs {
                for ancestor in ancestors(d) {
                    append_dir(&mut b, &ancestor, 0o755, 0, 0)?;
                }
            }
            b.finish()
        });
        layer.map_err(|e| self.step_err(line, e.to_string()))
    }
}

fn ancestors(p: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> =
        p.ancestors().filter(|a| *a != Path::new("/") && !a.as_os_str().is_empty()).map(|a| a.to_path_buf()).collect();
    out.reverse();
    out
}

fn append_dir<W: Write>(b: &mut tar::Builder<W>, path: &Path, mode: u32, uid: u64, gid: u64) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_size(0);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_mtime(0);
    let rel = path.strip_prefix("/").unwrap_or(path);
    b.append_data(&mut h, rel, io::empty())
}

fn key_of(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    Digest::of(&h.finalize()).hex().to_string()
}

fn env_map(env: &[String]) -> HashMap<String, String> {
    env.iter().filter_map(|e| e.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn set_env(env: &mut Vec<String>, key: &str, value: &str) {
    let entry = format!("{key}={value}");
    match env.iter_mut().find(|e| e.split_once('=').is_some_and(|(k, _)| k == key)) {
        Some(e) => *e = entry,
        None => env.push(entry),
    }
}

fn argv_of(cmd: &Command) -> Vec<String> {
    match cmd {
        Command::Shell(s) => SHELL.iter().map(|x| x.to_string()).chain([s.clone()]).collect(),
        Command::Exec(v) => v.clone(),
    }
}

/// Lexically normalizes an absolute path (`..` stops at `/`).
fn normalize_abs(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

// ---- COPY and ADD -------------------------------------------------------------------------

/// One file, directory or symlink a COPY puts into the image.
#[derive(Debug, Clone)]
struct CopyEntry {
    source: PathBuf,
    dest: PathBuf,
}

/// What a COPY or ADD will write, decided (and hashed) before the cache is asked.
struct CopyPlan {
    entries: Vec<CopyEntry>,
    /// Directories to create (missing ancestors of the destination), owned by root.
    parents: Vec<PathBuf>,
    owner: Option<(u32, u32)>,
    mode: Option<u32>,
    content_digest: String,
    /// Kept alive while the plan is: a temporary tree (ADD's extracted archives, a stage's root).
    _scratch: Vec<Scratch>,
}

/// A tree a COPY reads from, and what to undo when it is no longer needed.
struct Scratch {
    path: PathBuf,
    cleanup: Cleanup,
}

enum Cleanup {
    /// A temporary directory of ours: removed.
    Remove,
    /// A read-only overlay mount on a temporary directory: unmounted, then removed.
    Unmount,
    /// A shared unpacked layer, used in place: left alone.
    Nothing,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        match self.cleanup {
            Cleanup::Nothing => {}
            Cleanup::Remove => {
                let _ = fs::remove_dir_all(&self.path);
            }
            Cleanup::Unmount => {
                let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
                let _ = fs::remove_dir(&self.path);
            }
        }
    }
}

impl Builder<'_> {
    fn plan_copy(
        &self,
        line: usize,
        spec: &CopySpec,
        is_add: bool,
        state: &ImageState,
        finished: &[(Option<String>, ImageState, String)],
        expand: &dyn Fn(&str) -> Result<String, BuildError>,
    ) -> Result<CopyPlan, BuildError> {
        let what = if is_add { "ADD" } else { "COPY" };
        let mut scratch = Vec::new();
        // Where sources come from: the context, or another stage's or image's root.
        let (root, from_context) = match &spec.from {
            None => (self.opts.context.clone(), true),
            Some(from) => {
                let from = expand(from)?;
                let source_state = match from.parse::<usize>() {
                    Ok(i) => finished.get(i).map(|(_, s, _)| s.clone()),
                    Err(_) => {
                        finished.iter().find(|(n, _, _)| n.as_deref() == Some(from.as_str())).map(|(_, s, _)| s.clone())
                    }
                };
                let source_state = match source_state {
                    Some(s) => s,
                    None => {
                        let r: Reference = from.parse().map_err(|_| {
                            self.step_err(line, format!("{what} --from={from}: no such stage or image"))
                        })?;
                        let img = self.store.resolve(&r).map_err(|_| {
                            self.step_err(line, format!("{what} --from={from}: no such stage or image"))
                        })?;
                        self.load_state(&img.manifest_digest)?
                    }
                };
                let s = self.mount_state(line, &source_state)?;
                let path = s.path.clone();
                scratch.push(s);
                (path, false)
            }
        };
        let mut sources: Vec<PathBuf> = Vec::new();
        for src in &spec.sources {
            let src = expand(src)?;
            if src.starts_with("http://") || src.starts_with("https://") {
                return Err(self
                    .step_err(line, format!("{what} {src}: remote URLs are not supported (builds have no network)")));
            }
            let rel = clean_relative(&src)
                .ok_or_else(|| self.step_err(line, format!("{what} {src}: the path escapes the build context")))?;
            let matches = if ignore::has_glob(&src) { self.glob_sources(&root, &rel) } else { vec![rel.clone()] };
            let matches: Vec<PathBuf> = matches
                .into_iter()
                .filter(|m| !(from_context && self.ignore.excludes(&m.to_string_lossy())))
                .filter_map(|m| source_in(&root, &m))
                .filter(|m| fs::symlink_metadata(m).is_ok())
                .collect();
            if matches.is_empty() {
                return Err(self.step_err(
                    line,
                    format!(
                        "{what} {src}: no such file in the {}",
                        if from_context { "build context" } else { "source stage" }
                    ),
                ));
            }
            sources.extend(matches);
        }
        let dest_raw = expand(&spec.dest)?;
        let workdir = state.config.workdir.clone().unwrap_or_else(|| "/".into());
        let dest = normalize_abs(&Path::new(&workdir).join(&dest_raw));
        let single_file = sources.len() == 1 && !fs::metadata(&sources[0]).map(|m| m.is_dir()).unwrap_or(false);
        let dest_is_dir =
            dest_raw.ends_with('/') || !single_file || self.lookup(state, &dest).is_some_and(|p| p.is_dir());

        let mut entries = Vec::new();
        for src in &sources {
            let meta =
                fs::symlink_metadata(src).map_err(|e| self.step_err(line, format!("{what} {}: {e}", src.display())))?;
            // ADD unpacks local archives into the destination.
            if is_add && meta.is_file() && is_archive(src) {
                let tmp = self.scratch_dir("add")?;
                corral_image::layer::open_maybe_gzip(src)
                    .and_then(|r| corral_image::layer::unpack(r, &tmp.path).map_err(io::Error::other))
                    .map_err(|e| self.step_err(line, format!("ADD {}: {e}", src.display())))?;
                self.walk_into(&tmp.path, &dest, false, &mut entries)?;
                scratch.push(tmp);
                continue;
            }
            if meta.is_dir() {
                self.walk_into(src, &dest, from_context, &mut entries)?;
            } else {
                let target =
                    if dest_is_dir { dest.join(src.file_name().expect("sources have names")) } else { dest.clone() };
                entries.push(CopyEntry { source: src.clone(), dest: target });
            }
        }
        let parents: Vec<PathBuf> = {
            let base = if dest_is_dir {
                dest.clone()
            } else {
                dest.parent().map(Path::to_path_buf).unwrap_or_else(|| "/".into())
            };
            ancestors(&base).into_iter().filter(|a| self.lookup(state, a).is_none()).collect()
        };
        let owner = match &spec.chown {
            None => None,
            Some(c) => {
                let c = expand(c)?;
                let layers: Vec<PathBuf> =
                    state.layers.iter().filter_map(|l| self.store.unpacked_layer(&l.digest).ok()).collect();
                let passwd = corral_runtime::rootfs::read_from_layers(&layers, "/etc/passwd");
                let group = corral_runtime::rootfs::read_from_layers(&layers, "/etc/group");
                Some(
                    corral_runtime::rootfs::resolve_user(&c, &passwd, &group)
                        .ok_or_else(|| self.step_err(line, format!("{what} --chown={c}: unknown user or group")))?,
                )
            }
        };
        let mode = match &spec.chmod {
            None => None,
            Some(m) => Some(
                u32::from_str_radix(m, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| self.step_err(line, format!("{what} --chmod={m}: expected an octal mode")))?,
            ),
        };
        let content_digest =
            hash_entries(&entries, &parents, owner, mode).map_err(|e| self.step_err(line, format!("{what}: {e}")))?;
        Ok(CopyPlan { entries, parents, owner, mode, content_digest, _scratch: scratch })
    }

    /// Adds `dir`'s contents (not `dir` itself) under `dest`; `dest` itself as a directory.
    fn walk_into(
        &self,
        dir: &Path,
        dest: &Path,
        from_context: bool,
        out: &mut Vec<CopyEntry>,
    ) -> Result<(), BuildError> {
        out.push(CopyEntry { source: dir.to_path_buf(), dest: dest.to_path_buf() });
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let abs = dir.join(&rel);
            let mut names: Vec<_> = fs::read_dir(&abs)
                .map_err(|source| BuildError::Io { path: abs.clone(), source })?
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .collect();
            names.sort();
            for name in names.into_iter().rev() {
                let child = rel.join(&name);
                if from_context {
                    let ctx_rel = dir.join(&child);
                    let ctx_rel = ctx_rel.strip_prefix(&self.opts.context).unwrap_or(&child);
                    if self.ignore.excludes(&ctx_rel.to_string_lossy()) {
                        continue;
                    }
                }
                let src = dir.join(&child);
                out.push(CopyEntry { source: src.clone(), dest: dest.join(&child) });
                if fs::symlink_metadata(&src).is_ok_and(|m| m.is_dir()) {
                    stack.push(child);
                }
            }
        }
        // Directory contents come after their directory: keep the walk's order stable.
        out.sort_by(|a, b| a.dest.cmp(&b.dest));
        Ok(())
    }

    fn glob_sources(&self, root: &Path, pattern: &Path) -> Vec<PathBuf> {
        let parts: Vec<String> = pattern.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        let mut found = vec![PathBuf::new()];
        for part in &parts {
            let mut next = Vec::new();
            for base in &found {
                if ignore::has_glob(part) {
                    // Listed inside the root, as a source is (see `source_in`).
                    let dir = if base.as_os_str().is_empty() {
                        Some(root.to_path_buf())
                    } else {
                        corral_image::layer::lookup_in_root(root, base)
                    };
                    let Some(dir) = dir else { continue };
                    let Ok(rd) = fs::read_dir(dir) else { continue };
                    let mut names: Vec<String> =
                        rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
                    names.sort();
                    for n in names {
                        if ignore::glob(part.as_bytes(), n.as_bytes()) {
                            next.push(base.join(n));
                        }
                    }
                } else {
                    next.push(base.join(part));
                }
            }
            found = next;
        }
        found
    }

    fn scratch_dir(&self, what: &str) -> Result<Scratch, BuildError> {
        let path = self.opts.state_root.join("tmp").join(format!("build-{what}-{}", corral_runtime::state::new_id()));
        fs::create_dir_all(&path).map_err(|source| BuildError::Io { path: path.clone(), source })?;
        Ok(Scratch { path, cleanup: Cleanup::Remove })
    }

    /// A read-only view of an image state's root filesystem.
    fn mount_state(&self, line: usize, state: &ImageState) -> Result<Scratch, BuildError> {
        let layers: Vec<PathBuf> =
            state.layers.iter().map(|l| self.store.unpacked_layer(&l.digest)).collect::<Result<_, _>>()?;
        match layers.as_slice() {
            [] => self.scratch_dir("empty"),
            // One layer is its own merged view.
            [one] => Ok(Scratch { path: one.clone(), cleanup: Cleanup::Nothing }),
            _ => {
                let mut s = self.scratch_dir("from")?;
                let lower: Vec<String> = layers.iter().rev().map(|p| p.display().to_string()).collect();
                let data = format!("lowerdir={}", lower.join(":"));
                nix::mount::mount(
                    Some("overlay"),
                    &s.path,
                    Some("overlay"),
                    nix::mount::MsFlags::MS_RDONLY,
                    Some(data.as_str()),
                )
                .map_err(|e| self.step_err(line, format!("mounting a stage's root: {e}")))?;
                s.cleanup = Cleanup::Unmount;
                Ok(s)
            }
        }
    }

    fn write_copy_layer(&self, line: usize, plan: &CopyPlan) -> Result<LayerBlob, BuildError> {
        let layer = self.store.write_layer(|w| {
            let mut b = tar::Builder::new(w);
            b.follow_symlinks(false);
            for p in &plan.parents {
                append_dir(&mut b, p, 0o755, 0, 0)?;
            }
            for e in &plan.entries {
                append_entry(&mut b, e, plan.owner, plan.mode)?;
            }
            b.finish()
        });
        layer.map_err(|e| self.step_err(line, e.to_string()))
    }
}

fn append_entry<W: Write>(
    b: &mut tar::Builder<W>,
    e: &CopyEntry,
    owner: Option<(u32, u32)>,
    mode: Option<u32>,
) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::symlink_metadata(&e.source)?;
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(&meta, tar::HeaderMode::Deterministic);
    let (uid, gid) = owner.unwrap_or((0, 0));
    h.set_uid(uid as u64);
    h.set_gid(gid as u64);
    h.set_mtime(meta.mtime().max(0) as u64);
    let file_mode = mode.unwrap_or(meta.mode() & 0o7777);
    h.set_mode(file_mode);
    let rel = e.dest.strip_prefix("/").unwrap_or(&e.dest);
    if meta.file_type().is_symlink() {
        let target = fs::read_link(&e.source)?;
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, rel, target)
    } else if meta.is_dir() {
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        b.append_data(&mut h, rel, io::empty())
    } else if meta.is_file() {
        let f = fs::File::open(&e.source)?;
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(meta.len());
        b.append_data(&mut h, rel, f)
    } else {
        Err(io::Error::other(format!("{}: only files, directories and symlinks can be copied", e.source.display())))
    }
}

/// A digest of everything a COPY writes: paths, types, modes, owners and contents.
fn hash_entries(
    entries: &[CopyEntry],
    parents: &[PathBuf],
    owner: Option<(u32, u32)>,
    mode: Option<u32>,
) -> io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let mut h = Sha256::new();
    h.update(format!("{owner:?} {mode:?}\n"));
    for p in parents {
        h.update(format!("parent {}\n", p.display()));
    }
    for e in entries {
        let meta = fs::symlink_metadata(&e.source)?;
        h.update(format!("{} {:o} {}\n", e.dest.display(), meta.mode(), meta.len()));
        if meta.file_type().is_symlink() {
            h.update(fs::read_link(&e.source)?.as_os_str().to_string_lossy().as_bytes());
        } else if meta.is_file() {
            let mut f = fs::File::open(&e.source)?;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
        }
    }
    Ok(Digest::of(&h.finalize()).hex().to_string())
}

/// A source path relative to its root, or `None` when it would leave it.
/// Where `rel` is inside `root` (a build context, a stage's or an image's root filesystem): its
/// directories resolved as the root's own, so a symlink to `/` leads to the root, never to the
/// host's `/`. The last component is not followed (a symlink is copied as one).
fn source_in(root: &Path, rel: &Path) -> Option<PathBuf> {
    let Some(name) = rel.file_name() else { return Some(root.to_path_buf()) };
    let parent = match rel.parent() {
        Some(p) if !p.as_os_str().is_empty() => corral_image::layer::lookup_in_root(root, p)?,
        _ => root.to_path_buf(),
    };
    Some(parent.join(name))
}

fn clean_relative(src: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(src).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Some(out)
}

/// Whether a file looks like a tar archive (gzip-compressed or not).
fn is_archive(path: &Path) -> bool {
    let mut head = [0u8; 512];
    let Ok(mut f) = fs::File::open(path) else { return false };
    let n = f.read(&mut head).unwrap_or(0);
    if n >= 2 && head[..2] == [0x1f, 0x8b] {
        return true;
    }
    n >= 262 && &head[257..262] == b"ustar"
}
