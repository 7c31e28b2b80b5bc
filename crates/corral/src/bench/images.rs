//! `corral bench images`: a cold build and a fully cached rebuild of a small multi-step
//! Containerfile against `buildah bud`, and push and pull of a large image through a loopback
//! registry (Debian's docker-registry) against `skopeo copy`, in one run.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{private_mounts, stats_row, which};

const STEPS: &str = "RUN echo one > /one && mkdir -p /app\n\
COPY app/ /app/\n\
ENV MODE=bench\n\
WORKDIR /app\n\
RUN cat config.txt > /app/copied && echo two > /two\n\
RUN rm /one\n\
CMD [\"cat\", \"/app/copied\"]\n";

pub fn run(root: &Path, runs: usize, size_mib: u64, image: &str) -> Result<()> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    for tool in ["buildah", "skopeo", "docker-registry"] {
        if which(tool).is_none() {
            bail!("the benchmark needs {tool}: scripts/deps.sh --bench");
        }
    }
    private_mounts()?;
    let exe = std::env::current_exe()?;
    let work = std::env::temp_dir().join(format!("corral-bench-images-{}", std::process::id()));
    fs::create_dir_all(&work)?;
    let corral = |args: &[&str]| -> Command {
        let mut c = Command::new(&exe);
        c.arg("--root").arg(root).args(args);
        c
    };

    // The same base image for both builders.
    let layout = work.join("base-layout");
    checked(corral(&["image", "export", image, layout.to_str().unwrap()]), "exporting the base image")?;
    let tag = image.split_once(':').map_or("latest", |(_, t)| t);
    checked(
        cmd(
            "skopeo",
            &["copy", &format!("oci:{}:{tag}", layout.display()), "containers-storage:localhost/bench-base:latest"],
        ),
        "copying the base image into buildah's storage",
    )?;
    let ctx = work.join("context");
    fs::create_dir_all(ctx.join("app"))?;
    fs::write(ctx.join("app/config.txt"), "configured\n")?;
    fs::write(ctx.join("Containerfile.corral"), format!("FROM {image}\n{STEPS}"))?;
    fs::write(ctx.join("Containerfile.buildah"), format!("FROM localhost/bench-base:latest\n{STEPS}"))?;
    let ctx_s = ctx.to_str().unwrap().to_string();
    let corral_build = |extra: &[&str]| {
        let mut args = vec!["build", "-t", "bench-build:latest", "-f"];
        let f = format!("{ctx_s}/Containerfile.corral");
        args.push(&f);
        args.extend_from_slice(extra);
        args.push(&ctx_s);
        corral(&args)
    };
    let buildah_build = |extra: &[&str]| {
        let f = format!("{ctx_s}/Containerfile.buildah");
        let mut args = vec!["bud", "--layers", "-q", "-t", "bench-build:latest", "-f", &f];
        args.extend_from_slice(extra);
        args.push(&ctx_s);
        cmd("buildah", &args)
    };

    let mut cold = (Vec::new(), Vec::new());
    let mut cached = (Vec::new(), Vec::new());
    for _ in 0..runs {
        cold.0.push(time(corral_build(&["--no-cache"]), "corral build --no-cache")?);
        cold.1.push(time(buildah_build(&["--no-cache"]), "buildah bud --no-cache")?);
    }
    time(corral_build(&[]), "corral build")?;
    time(buildah_build(&[]), "buildah bud")?;
    for _ in 0..runs {
        cached.0.push(time(corral_build(&[]), "corral build")?);
        cached.1.push(time(buildah_build(&[]), "buildah bud")?);
    }

    // A large image, incompressible, as one layer.
    let big = work.join("big");
    fs::create_dir_all(&big)?;
    write_noise(&big.join("blob.bin"), size_mib << 20)?;
    checked(corral(&["image", "import", big.to_str().unwrap(), "bench-big:v1"]), "importing the large image")?;
    let big_layout = work.join("big-layout");
    checked(corral(&["image", "export", "bench-big:v1", big_layout.to_str().unwrap()]), "exporting the large image")?;
    let mut push = (Vec::new(), Vec::new());
    let mut pull = (Vec::new(), Vec::new());
    let mut pull_storage = Vec::new();
    for i in 0..runs {
        // A fresh registry each run: skopeo remembers where it pushed a blob before and would
        // mount it from there instead of uploading it.
        let registry = Registry::start(&work.join(format!("registry-{i}")))?;
        let c_ref = format!("{}/corral-{i}:v1", registry.addr);
        let s_ref = format!("{}/skopeo-{i}:v1", registry.addr);
        push.0.push(time(corral(&["push", "--insecure", "bench-big:v1", &c_ref]), "corral push")?);
        push.1.push(time(
            cmd(
                "skopeo",
                &[
                    "copy",
                    "--dest-tls-verify=false",
                    &format!("oci:{}:v1", big_layout.display()),
                    &format!("docker://{s_ref}"),
                ],
            ),
            "skopeo copy to the registry",
        )?);
        let fresh_root = work.join(format!("pull-root-{i}"));
        let mut c = Command::new(&exe);
        c.arg("--root").arg(&fresh_root).args(["pull", "--insecure", &c_ref]);
        pull.0.push(time(c, "corral pull")?);
        let dest = work.join(format!("pull-layout-{i}"));
        pull.1.push(time(
            cmd(
                "skopeo",
                &[
                    "copy",
                    "--src-tls-verify=false",
                    &format!("docker://{s_ref}"),
                    &format!("oci:{}:v1", dest.display()),
                ],
            ),
            "skopeo copy from the registry",
        )?);
        // The like-for-like peer of `corral pull`: into local storage, layers unpacked.
        let local = format!("containers-storage:localhost/bench-pull-{i}:v1");
        pull_storage.push(time(
            cmd("skopeo", &["copy", "--src-tls-verify=false", &format!("docker://{s_ref}"), &local]),
            "skopeo copy into containers-storage",
        )?);
        let _ = cmd("buildah", &["rmi", "-f", &format!("localhost/bench-pull-{i}:v1")]).output();
        let _ = fs::remove_dir_all(&fresh_root);
        let _ = fs::remove_dir_all(&dest);
        drop(registry);
        let _ = fs::remove_dir_all(work.join(format!("registry-{i}")));
    }
    let _ = cmd("buildah", &["rmi", "-f", "localhost/bench-build:latest", "localhost/bench-base:latest"]).output();
    let _ = fs::remove_dir_all(&work);

    println!("Image build: a 7-step Containerfile (3 RUN, COPY, ENV, WORKDIR, CMD) on busybox ({runs} runs each)\n");
    println!("| case | min ms | median ms | p90 ms |");
    println!("|---|---:|---:|---:|");
    println!("{}", stats_row("corral build --no-cache (cold)", &mut cold.0));
    println!("{}", stats_row("buildah bud --layers --no-cache (cold)", &mut cold.1));
    println!("{}", stats_row("corral build (fully cached)", &mut cached.0));
    println!("{}", stats_row("buildah bud --layers (fully cached)", &mut cached.1));
    println!(
        "\nPush and pull of a {size_mib} MiB one-layer image through docker-registry on loopback ({runs} runs each)\n"
    );
    println!("| case | min ms | median ms | p90 ms |");
    println!("|---|---:|---:|---:|");
    println!("{}", stats_row("corral push", &mut push.0));
    println!("{}", stats_row("skopeo copy oci: -> docker://", &mut push.1));
    println!("{}", stats_row("corral pull (into a fresh store, layer unpacked)", &mut pull.0));
    println!("{}", stats_row("skopeo copy docker:// -> oci: (download only)", &mut pull.1));
    println!("{}", stats_row("skopeo copy docker:// -> containers-storage: (layers unpacked)", &mut pull_storage));
    Ok(())
}

pub(super) fn cmd(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

pub(super) fn checked(mut c: Command, what: &str) -> Result<()> {
    let out = c.stdin(Stdio::null()).output().with_context(|| what.to_string())?;
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

pub(super) fn time(mut c: Command, what: &str) -> Result<Duration> {
    c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let start = Instant::now();
    let out = c.output().with_context(|| what.to_string())?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(took)
}

pub(super) fn write_noise(path: &Path, bytes: u64) -> Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(fs::File::create(path)?);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        for b in buf.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

pub(super) struct Registry {
    child: Child,
    pub(super) addr: String,
}

impl Registry {
    pub(super) fn start(dir: &Path) -> Result<Registry> {
        fs::create_dir_all(dir)?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let config: PathBuf = dir.join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.join("data").display()
            ),
        )?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&addr).is_err() {
            if Instant::now() > deadline {
                bail!("docker-registry did not start on {addr}");
            }
            std::thread::yield_now();
        }
        Ok(Registry { child, addr })
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
