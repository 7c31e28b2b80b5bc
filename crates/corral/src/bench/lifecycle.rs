//! `corral bench lifecycle`: times create, start, `/bin/true`, wait and delete of one bundle
//! with corral's runtime layer (`corral oci-run`, youki's libcontainer), crun and runc, with a
//! user namespace and without, round-robin so that drift hits every runtime alike, plus the
//! whole `corral run` path (image store, overlay, network namespace, shim, logs) with its
//! defaults on and off. It runs in a private mount namespace with the cgroup v2 mount of a
//! hybrid host hidden, which crun needs there.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use corral_image::{Reference, Store};
use corral_runtime::spec::{self, RootKind};
use corral_runtime::state::{ContainerDir, ContainerRecord};

use super::{private_mounts, stats_row, which};

struct Runtime {
    name: String,
    command: Box<dyn Fn(usize) -> Command>,
    samples: Vec<Duration>,
}

pub fn run(root: &Path, runs: usize, image: &str, blocks: bool) -> Result<()> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    private_mounts()?;
    let store = Store::open(root)?;
    let reference: Reference = image.parse()?;
    let img = store.resolve(&reference).with_context(|| {
        format!(
            "the benchmark needs image {reference} under {} (scripts/make-busybox-image.sh makes it)",
            root.display()
        )
    })?;
    let work = tempdir()?;
    let bundle = work.join("bundle");
    let rootfs = bundle.join("rootfs");
    fs::create_dir_all(&rootfs)?;
    for layer in img.layers()? {
        let dir = store.unpacked_layer(&layer)?;
        let st = Command::new("cp").arg("-a").arg(format!("{}/.", dir.display())).arg(&rootfs).status()?;
        if !st.success() {
            bail!("copying layer {layer} into the bundle failed");
        }
    }
    fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&bench_spec(false))?)?;
    // The same bundle with a user namespace: its root filesystem owned by the namespace's root,
    // as a runtime without idmapped mounts needs it (made once, not timed).
    let userns_bundle = work.join("bundle-userns");
    fs::create_dir_all(&userns_bundle)?;
    let st = Command::new("cp").arg("-a").arg(&rootfs).arg(&userns_bundle).status()?;
    let owner = format!("{USERNS_ROOT}:{USERNS_ROOT}");
    if !st.success()
        || !Command::new("chown").args(["-R", &owner]).arg(userns_bundle.join("rootfs")).status()?.success()
    {
        bail!("making the user namespace bundle failed");
    }
    fs::write(userns_bundle.join("config.json"), serde_json::to_vec_pretty(&bench_spec(true))?)?;

    let exe = std::env::current_exe()?;
    let mut runtimes: Vec<Runtime> = Vec::new();
    for (bundle, suffix) in [(&bundle, ""), (&userns_bundle, ", user namespace")] {
        let (bundle, state, exe) = (bundle.clone(), work.join(format!("corral-state{suffix}")), exe.clone());
        runtimes.push(Runtime {
            name: format!("corral oci-run (libcontainer){suffix}"),
            command: Box::new(move |i| {
                let mut c = Command::new(&exe);
                c.arg("oci-run")
                    .arg("--bundle")
                    .arg(&bundle)
                    .arg("--state")
                    .arg(&state)
                    .arg(format!("bench-corral-{i}"));
                c
            }),
            samples: Vec::new(),
        });
    }
    let peers = [("crun", &bundle, ""), ("crun", &userns_bundle, ", user namespace"), ("runc", &bundle, "")];
    for (peer, bundle, suffix) in peers {
        if which(peer).is_none() {
            eprintln!("bench: {peer} is not installed (apt-get install {peer}); skipping it");
            continue;
        }
        let (bundle, state) = (bundle.clone(), work.join(format!("{peer}-state{suffix}")));
        let peer_name = peer.to_string();
        runtimes.push(Runtime {
            name: format!("{peer}{suffix}"),
            command: Box::new(move |i| {
                let mut c = Command::new(&peer_name);
                c.arg("--root")
                    .arg(&state)
                    .arg("run")
                    .arg("--bundle")
                    .arg(&bundle)
                    .arg(format!("bench-{peer_name}-{i}"));
                c
            }),
            samples: Vec::new(),
        });
    }
    // The whole path, with corral's defaults (a user namespace when the kernel allows it) and
    // with each of them off or on.
    let variants: [(&str, &[&str]); 3] = [
        ("corral run --rm --userns host (image, overlay, netns, shim, logs)", &["--userns", "host"]),
        ("corral run --rm (the default: a user namespace)", &[]),
        ("corral run --rm --disk 1g (the default, and a disk limit)", &["--disk", "1g"]),
    ];
    for (name, flags) in variants {
        let (root, exe, image) = (root.to_path_buf(), exe.clone(), image.to_string());
        runtimes.push(Runtime {
            name: name.into(),
            command: Box::new(move |_| {
                let mut c = Command::new(&exe);
                c.arg("--root").arg(&root).args(["run", "--rm"]).args(flags).args([
                    "--image",
                    &image,
                    "--",
                    "/bin/true",
                ]);
                c
            }),
            samples: Vec::new(),
        });
    }

    // One unmeasured warm-up each, then round-robin.
    for rt in &mut runtimes {
        time_one(rt, usize::MAX).with_context(|| format!("warming up {}", rt.name))?;
        rt.samples.clear();
    }
    let n = runtimes.len();
    if blocks {
        for rt in &mut runtimes {
            for i in 0..runs {
                time_one(rt, i).with_context(|| format!("run {i} of {}", rt.name))?;
            }
        }
    } else {
        // Round-robin, starting each round with the next runtime, so that none always follows
        // the same neighbour (the kernel's cgroup attach cost depends on what ran just before).
        for i in 0..runs {
            for k in 0..n {
                let rt = &mut runtimes[(i + k) % n];
                time_one(rt, i).with_context(|| format!("run {i} of {}", rt.name))?;
            }
        }
    }
    if std::env::var_os("CORRAL_BENCH_KEEP").is_none() {
        let _ = fs::remove_dir_all(&work);
    } else {
        eprintln!("bench: the bundle is kept in {}", bundle.display());
    }

    let order = if blocks { "each runtime's runs back to back" } else { "rotating round-robin" };
    println!("Container lifecycle: create, start, /bin/true, wait, delete ({runs} runs each, {order})\n");
    println!("| runtime | min ms | median ms | p90 ms |");
    println!("|---|---:|---:|---:|");
    for rt in &mut runtimes {
        println!("{}", stats_row(&rt.name, &mut rt.samples));
    }
    Ok(())
}

fn time_one(rt: &mut Runtime, i: usize) -> Result<()> {
    let mut cmd = (rt.command)(i);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let start = Instant::now();
    let out = cmd.output()?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!("{} failed: {}", rt.name, String::from_utf8_lossy(&out.stderr).trim());
    }
    rt.samples.push(took);
    Ok(())
}

/// The host id of the user namespace bundle's root.
const USERNS_ROOT: u32 = corral_runtime::userns::FIRST;

/// The bundle's spec: corral's defaults (namespaces, seccomp, masked paths, nobody) for
/// `/bin/true`, with a fresh network namespace and no generated /etc files; with `userns`, a new
/// user namespace mapping its ids 0-65535 to `USERNS_ROOT`...
fn bench_spec(userns: bool) -> oci_spec::runtime::Spec {
    let record = ContainerRecord {
        id: "bench".into(),
        name: "bench".into(),
        image: None,
        args: vec!["/bin/true".into()],
        env: vec![corral_image::import::DEFAULT_PATH.to_string()],
        cwd: "/".into(),
        uid: 65534,
        gid: 65534,
        hostname: "bench".into(),
        cpus: None,
        mem_bytes: Some(64 << 20),
        pids: Some(64),
        volumes: vec![],
        created: String::new(),
        stop_grace_secs: 0,
        log_max_bytes: 0,
        log_max_files: 0,
        etc: corral_runtime::state::EtcFiles::All,
        host_network: false,
        disk_bytes: None,
        disk_paths: Vec::new(),
        userns: None,
    };
    let dir = ContainerDir { dir: PathBuf::from("/nonexistent") };
    let mut spec = spec::build(&record, &dir, &RootKind::Image);
    if let Some(mounts) = spec.mounts().clone() {
        spec.set_mounts(Some(mounts.into_iter().filter(|m| !m.destination().starts_with("/etc")).collect()));
    }
    if let Some(mut linux) = spec.linux().clone() {
        if let Some(ns) = linux.namespaces().clone() {
            linux.set_namespaces(Some(
                ns.into_iter()
                    .map(|mut n| {
                        n.set_path(None);
                        n
                    })
                    .collect(),
            ));
        }
        if userns {
            let mut ns = linux.namespaces().clone().unwrap_or_default();
            let mut user = oci_spec::runtime::LinuxNamespace::default();
            user.set_typ(oci_spec::runtime::LinuxNamespaceType::User);
            ns.push(user);
            linux.set_namespaces(Some(ns));
            let map = oci_spec::runtime::LinuxIdMappingBuilder::default()
                .container_id(0u32)
                .host_id(USERNS_ROOT)
                .size(corral_runtime::userns::SIZE)
                .build()
                .expect("an id mapping");
            linux.set_uid_mappings(Some(vec![map]));
            linux.set_gid_mappings(Some(vec![map]));
        }
        linux.set_cgroups_path(Some(PathBuf::from("/corral-bench")));
        spec.set_linux(Some(linux));
    }
    spec
}

fn tempdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("corral-bench-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    Ok(dir)
}
