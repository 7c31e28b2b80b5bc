//! `corral build`, and images exported to and loaded from OCI layouts, checked with skopeo and
//! umoci.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::support::Env;

fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let p = dir.path().join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
    dir
}

fn build(env: &Env, ctx: &Path, tag: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["build", "-t", tag];
    args.extend_from_slice(extra);
    let ctx = ctx.to_str().unwrap().to_string();
    args.push(&ctx);
    env.corral(&args)
}

fn build_ok(env: &Env, ctx: &Path, tag: &str, extra: &[&str]) -> (String, String) {
    let out = build(env, ctx, tag, extra);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "build failed: {stderr}");
    (String::from_utf8(out.stdout).unwrap().trim().to_string(), stderr)
}

const APP: &str = r#"ARG BASE=busybox
FROM $BASE AS base
ARG GREETING=hi
ENV APP_HOME=/srv/app
WORKDIR $APP_HOME
COPY app/ ./
RUN echo "$GREETING built" > built.txt && echo "appuser:x:1234:1234::/srv/app:/bin/sh" >> /etc/passwd && rm /bin/vi
USER appuser
FROM base
LABEL org.example.name="demo app"
EXPOSE 8080
ENTRYPOINT ["sh", "-c"]
CMD ["cat greeting.txt built.txt; id -u; pwd; ls /bin/vi 2>/dev/null || echo no-vi"]
"#;

#[test]
fn a_multi_stage_build_runs_and_rebuilds_from_cache() {
    crate::support::needs_root!();
    let env = Env::new();
    let ctx = context(&[
        ("Containerfile", APP),
        ("app/greeting.txt", "hello\n"),
        ("logs/x.log", "secret\n"),
        (".containerignore", "logs\n"),
    ]);
    let (id, log) = build_ok(&env, ctx.path(), "demo:v1", &["--build-arg", "GREETING=howdy"]);
    assert!(id.starts_with("sha256:"), "{id}");
    assert!(log.contains("STEP 6/12: RUN"), "{log}");
    assert_eq!(env.ok(&["run", "--image", "demo:v1"]), "hello\nhowdy built\n1234\n/srv/app\nno-vi\n");

    let config: serde_json::Value = serde_json::from_str(&env.ok(&["image", "inspect", "demo:v1"])).unwrap();
    let c = &config["config"];
    assert_eq!(c["User"], "appuser");
    assert_eq!(c["WorkingDir"], "/srv/app");
    assert_eq!(c["Entrypoint"], serde_json::json!(["sh", "-c"]));
    assert!(c["Env"].as_array().unwrap().iter().any(|e| e == "APP_HOME=/srv/app"));
    assert!(c["ExposedPorts"].get("8080/tcp").is_some(), "{c}");
    assert_eq!(c["Labels"]["org.example.name"], "demo app");
    assert!(config["history"].as_array().unwrap().len() >= 10);

    // Unchanged: every step from cache, the same image.
    let (again, log) = build_ok(&env, ctx.path(), "demo:v1", &["--build-arg", "GREETING=howdy"]);
    assert_eq!(again, id);
    assert!(!log.contains("s)\n"), "nothing should run on a cached rebuild: {log}");
    assert_eq!(log.matches("Using cache").count(), 9, "{log}");

    // A changed file invalidates its COPY and what follows, not what precedes.
    fs::write(ctx.path().join("app/greeting.txt"), "changed\n").unwrap();
    let (changed, log) = build_ok(&env, ctx.path(), "demo:v2", &["--build-arg", "GREETING=howdy"]);
    assert_ne!(changed, id);
    assert_eq!(log.matches("Using cache").count(), 2, "ENV and WORKDIR stay cached: {log}");
    assert!(env.ok(&["run", "--image", "demo:v2"]).starts_with("changed\n"));

    // An ignored file changing does not matter; a build arg changing does.
    fs::write(ctx.path().join("logs/x.log"), "other\n").unwrap();
    let (same, _) = build_ok(&env, ctx.path(), "demo:v2", &["--build-arg", "GREETING=howdy"]);
    assert_eq!(same, changed);
    let (other, _) = build_ok(&env, ctx.path(), "demo:v3", &["--build-arg", "GREETING=hey"]);
    assert_ne!(other, changed);

    // --no-cache runs everything again.
    let (_, log) = build_ok(&env, ctx.path(), "demo:v4", &["--no-cache"]);
    assert_eq!(log.matches("Using cache").count(), 0, "{log}");
}

#[test]
fn copy_from_stages_chown_globs_ignore_and_add_archives() {
    crate::support::needs_root!();
    let env = Env::new();
    let tgz = {
        let src = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("pkg/bin")).unwrap();
        fs::write(src.path().join("pkg/bin/tool"), "#!/bin/sh\necho tool\n").unwrap();
        let out = tempfile::tempdir().unwrap().keep().join("pkg.tar.gz");
        let st = Command::new("tar").arg("czf").arg(&out).arg("-C").arg(src.path()).arg("pkg").status().unwrap();
        assert!(st.success());
        fs::read(&out).unwrap()
    };
    let ctx = context(&[
        (
            "Containerfile",
            "FROM busybox AS build\nRUN mkdir /out && echo made > /out/artifact\n\
             FROM busybox\nCOPY --from=build /out/artifact /artifact\nCOPY --chown=1234:4321 *.txt /docs/\n\
             ADD pkg.tar.gz /opt/\nCOPY . /ctx/\n\
             CMD [\"sh\", \"-c\", \"cat /artifact; stat -c '%u:%g' /docs/a.txt; ls /docs; cat /opt/pkg/bin/tool; ls /ctx\"]\n",
        ),
        ("a.txt", "a"),
        ("b.txt", "b"),
        ("c.md", "c"),
        ("secret.key", "k"),
        (".containerignore", "*.key\n"),
    ]);
    fs::write(ctx.path().join("pkg.tar.gz"), tgz).unwrap();
    build_ok(&env, ctx.path(), "mix:1", &[]);
    let out = env.ok(&["run", "--image", "mix:1"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..5], ["made", "1234:4321", "a.txt", "b.txt", "#!/bin/sh"], "{out}");
    let listing: Vec<&str> = lines[6..].to_vec();
    assert!(listing.contains(&"c.md") && listing.contains(&"Containerfile"), "{out}");
    assert!(!listing.contains(&"secret.key"), "ignored files stay out: {out}");
}

#[test]
fn scratch_images_and_exec_form_run() {
    crate::support::needs_root!();
    let env = Env::new();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox AS tools
RUN [\"/bin/sh\", \"-c\", \"echo exec-form > /note\"]
         FROM scratch
COPY --from=busybox /bin/busybox /bin/busybox
COPY --from=tools /note /note
         ENTRYPOINT [\"/bin/busybox\"]
CMD [\"cat\", \"/note\"]
",
    )]);
    build_ok(&env, ctx.path(), "tiny:v1", &[]);
    assert_eq!(env.ok(&["run", "--image", "tiny:v1"]), "exec-form\n");
    let config: serde_json::Value = serde_json::from_str(&env.ok(&["image", "inspect", "tiny:v1"])).unwrap();
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 2, "one layer per COPY, nothing from scratch");
}

#[test]
fn build_errors_name_the_containerfile_line() {
    crate::support::needs_root!();
    let env = Env::new();
    for (file, code, needle) in [
        ("FROM busybox\nFROBNICATE x\n", 125, "Containerfile:2: unknown instruction \"FROBNICATE\""),
        (
            "FROM busybox\nCOPY missing.txt /x\n",
            125,
            "Containerfile:2: COPY missing.txt: no such file in the build context",
        ),
        (
            "FROM busybox\nCOPY ../outside /x\n",
            125,
            "Containerfile:2: COPY ../outside: the path escapes the build context",
        ),
        ("FROM nope:1\n", 125, "Containerfile:1: unknown image \"nope:1\""),
        (
            "FROM busybox\nRUN true\nRUN echo first; echo second; exit 3\n",
            125,
            "Containerfile:3: RUN failed: exited (3) (exit code 3); last output:\nfirst\nsecond",
        ),
        ("FROM busybox\nADD http://example.com/x /x\n", 125, "remote URLs are not supported"),
    ] {
        let ctx = context(&[("Containerfile", file)]);
        let out = build(&env, ctx.path(), "bad:1", &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{file}: {err}");
        assert!(err.contains(needle), "{file}: expected {needle:?} in {err}");
    }
    assert!(!env.ok(&["image", "ls"]).contains("bad:1"));
    assert!(env.container_ids().is_empty(), "failed RUN steps leave no container");

    // A build context past its limit is refused before any step; what .dockerignore excludes
    // does not count.
    let big = "x".repeat(4096);
    let ctx = context(&[("Containerfile", "FROM busybox\nCOPY small /small\n"), ("small", "s"), ("big/data", &big)]);
    let limited = |ctx: &Path| {
        let mut c = env.cmd(&["build", "-t", "ctx:1", ctx.to_str().unwrap()]);
        c.env("CORRAL_MAX_CONTEXT_SIZE", "2k").output().unwrap()
    };
    let out = limited(ctx.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("more than 2 KiB of files (CORRAL_MAX_CONTEXT_SIZE)"), "{err}");
    assert!(err.contains(&format!("build context {}", ctx.path().display())), "{err}");
    fs::write(ctx.path().join(".dockerignore"), "big\n").unwrap();
    let out = limited(ctx.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn exported_images_are_valid_oci_layouts_for_other_tools() {
    crate::support::needs_root!();
    let env = Env::new();
    let ctx = context(&[(
        "Containerfile",
        "FROM busybox\nRUN echo data > /data.txt && rm /bin/vi\nCMD [\"cat\", \"/data.txt\"]\n",
    )]);
    build_ok(&env, ctx.path(), "oci:v1", &[]);
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    env.ok(&["image", "export", "oci:v1", layout.to_str().unwrap()]);

    let inspect = Command::new("skopeo").arg("inspect").arg(format!("oci:{}:v1", layout.display())).output().unwrap();
    assert!(inspect.status.success(), "skopeo: {}", String::from_utf8_lossy(&inspect.stderr));
    let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(v["Layers"].as_array().unwrap().len(), 2);

    let bundle = work.path().join("bundle");
    let unpack = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:v1", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(unpack.status.success(), "umoci: {}", String::from_utf8_lossy(&unpack.stderr));
    assert_eq!(fs::read_to_string(bundle.join("rootfs/data.txt")).unwrap(), "data\n");
    assert!(!bundle.join("rootfs/bin/vi").exists(), "the whiteout deleted /bin/vi");
    assert!(bundle.join("rootfs/bin/sh").exists());

    // Round trip through skopeo into a new layout, then back into corral.
    let copy = work.path().join("copy");
    let st = Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("oci:{}:copied", copy.display()))
        .output()
        .unwrap();
    assert!(st.status.success(), "skopeo copy: {}", String::from_utf8_lossy(&st.stderr));
    let err = env.fails(&["image", "load", copy.to_str().unwrap()], 125);
    assert!(err.contains("only a tag: give NAME:TAG"), "{err}");
    // Past an image size limit, as declared: refused naming the image, nothing tagged.
    let out = env
        .cmd(&["image", "load", copy.to_str().unwrap(), "copied:v1"])
        .env("CORRAL_MAX_IMAGE_SIZE", "1k")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("image copied:v1: its layers are"), "{err}");
    assert!(err.contains("past the limit of 1 KiB (CORRAL_MAX_IMAGE_SIZE)"), "{err}");
    assert!(!env.ok(&["image", "ls"]).contains("copied"));
    env.ok(&["image", "load", copy.to_str().unwrap(), "copied:v1"]);
    assert_eq!(env.ok(&["run", "--image", "copied:v1"]), "data\n");
    let err = env.fails(&["image", "export", "oci:v1", layout.to_str().unwrap()], 125);
    assert!(err.contains("is not empty"), "{err}");
}

#[test]
fn copy_sources_resolve_inside_their_root_never_on_the_host() {
    crate::support::needs_root!();
    let env = Env::new();
    let host_file = "/etc/debian_version";
    assert!(Path::new(host_file).exists(), "the host has {host_file}");
    // A context symlink to `/`: what it leads to is the context's own root.
    let ctx = context(&[("Containerfile", "FROM busybox\nCOPY rootlink/etc/debian_version /x\n")]);
    std::os::unix::fs::symlink("/", ctx.path().join("rootlink")).unwrap();
    let out = build(&env, ctx.path(), "leak:ctx", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "copied the host's file through a context symlink");
    assert!(err.contains("no such file in the build context"), "{err}");
    // Globs list inside the root too.
    let ctx = context(&[("Containerfile", "FROM busybox\nCOPY rootlink/etc/debian_vers* /x\n")]);
    std::os::unix::fs::symlink("/", ctx.path().join("rootlink")).unwrap();
    assert!(!build(&env, ctx.path(), "leak:glob", &[]).status.success());
    // An image's absolute symlink leads into the image, not the host.
    let ctx = context(&[(
        "Containerfile",
        "FROM busybox AS stage\nRUN ln -s / /hostroot\nFROM busybox\nCOPY --from=stage /hostroot/etc/debian_version /x\n",
    )]);
    let out = build(&env, ctx.path(), "leak:from", &[]);
    assert!(!out.status.success(), "copied the host's file through an image's symlink");
    // A link inside the context still leads where it points.
    let ctx = context(&[("Containerfile", "FROM busybox\nCOPY dirlink/f /x\n"), ("real/f", "in ctx\n")]);
    std::os::unix::fs::symlink("real", ctx.path().join("dirlink")).unwrap();
    build_ok(&env, ctx.path(), "ok:link", &[]);
    assert_eq!(env.ok(&["run", "--image", "ok:link", "--", "cat", "/x"]), "in ctx\n");
}
