//! Containers: isolation, limits, exit codes, signals, logs, cleanup and bad input.

use std::time::Duration;

use crate::support::{cgroup_dirs, cgroup_v1, eventually, mounts_under, Env};

const BB: &str = "busybox";

#[test]
fn the_pid_namespace_hides_host_processes() {
    crate::support::needs_root!();
    let env = Env::new();
    let out = env.ok(&[
        "run",
        "--image",
        BB,
        "--",
        "sh",
        "-c",
        "ls -d /proc/[0-9]* | wc -l; cat /proc/1/cmdline | tr '\\0' ' '",
    ]);
    let mut lines = out.lines();
    let count: usize = lines.next().unwrap().trim().parse().unwrap();
    assert!(count <= 4, "the container sees {count} processes: {out}");
    assert!(lines.next().unwrap().starts_with("sh -c"), "pid 1 is the container's command: {out}");
}

#[test]
fn hostname_is_its_own_and_defaults_to_the_name() {
    crate::support::needs_root!();
    let env = Env::new();
    assert_eq!(env.ok(&["run", "--image", BB, "--hostname", "box1", "--", "hostname"]), "box1\n");
    assert_eq!(env.ok(&["run", "--image", BB, "--name", "web-7", "--", "hostname"]), "web-7\n");
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert_ne!(host, "box1");
}

#[test]
fn writes_to_root_do_not_reach_the_host_or_other_containers() {
    crate::support::needs_root!();
    let env = Env::new();
    let marker = "corral-it-marker-4711";
    env.ok(&["run", "--image", BB, "--user", "0", "--", "sh", "-c", &format!("echo x > /{marker} && cat /{marker}")]);
    assert!(!std::path::Path::new(&format!("/{marker}")).exists());
    let layers = env.root.path().join("layers");
    let found = std::process::Command::new("find").arg(&layers).arg("-name").arg(marker).output().unwrap();
    assert!(found.stdout.is_empty(), "the shared layer was written to");
    let out = env.corral(&["run", "--image", BB, "--", "ls", &format!("/{marker}")]);
    assert_ne!(out.status.code(), Some(0), "a second container sees the first one's file");
}

#[test]
fn containers_run_as_nobody_and_any_uid_has_a_passwd_entry() {
    crate::support::needs_root!();
    let env = Env::new();
    assert_eq!(env.ok(&["run", "--image", BB, "--", "id", "-u"]), "65534\n");
    assert_eq!(
        env.ok(&["run", "--image", BB, "--user", "1234:4321", "--", "sh", "-c", "id -u; id -g; whoami; id -gn"]),
        "1234\n4321\nu1234\ng4321\n"
    );
    // No capabilities, even for uid 0.
    let caps = env.ok(&["run", "--image", BB, "--user", "0", "--", "sh", "-c", "grep CapEff /proc/self/status"]);
    assert_eq!(caps.split_whitespace().nth(1), Some("0000000000000000"), "{caps}");
    let nnp = env.ok(&["run", "--image", BB, "--", "sh", "-c", "grep NoNewPrivs /proc/self/status"]);
    assert!(nnp.ends_with("1\n"), "{nnp}");
}

#[test]
fn sensitive_proc_paths_are_masked_and_seccomp_applies() {
    crate::support::needs_root!();
    let env = Env::new();
    let masked: Vec<&str> =
        ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/latency_stats"]
            .into_iter()
            .filter(|p| std::fs::metadata(p).is_ok())
            .collect();
    assert!(!masked.is_empty(), "this host has none of the masked /proc files");
    for p in &masked {
        let out = env.ok(&["run", "--image", BB, "--user", "0", "--", "sh", "-c", &format!("wc -c < {p}")]);
        assert_eq!(out.trim(), "0", "{p} is masked");
    }
    let script = "grep Seccomp /proc/self/status; echo 1 > /proc/sys/kernel/domainname 2>/dev/null || echo ro; \
                  mount -t tmpfs none /mnt 2>/dev/null || echo no-mount; unshare -U true 2>&1 || echo no-unshare";
    let out = env.ok(&["run", "--image", BB, "--user", "0", "--", "sh", "-c", script]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("Seccomp:") && lines[0].ends_with('2'), "seccomp filter mode: {out}");
    // One filter: the shim's precompiled program, not a second copy loaded by libcontainer.
    assert!(lines[1].starts_with("Seccomp_filters:") && lines[1].ends_with('1'), "filters: {out}");
    assert_eq!(&lines[2..4], ["ro", "no-mount"]);
    // unshare needs no capability for a user namespace: only the filter refuses it.
    assert!(lines[4].contains("Operation not permitted") && lines[5] == "no-unshare", "{out}");
    // The program was compiled once and cached under the state root.
    let cached: Vec<_> = std::fs::read_dir(env.root.path().join("seccomp")).unwrap().collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
}

#[test]
fn cgroup_limits_are_visible_inside() {
    crate::support::needs_root!();
    let env = Env::new();
    let script = if cgroup_v1() {
        "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max"
    } else {
        "cat /sys/fs/cgroup/cpu.max /sys/fs/cgroup/cpu.weight /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max"
    };
    let out = env.ok(&["run", "--image", BB, "--cpus", "0.5", "--mem", "48", "--pids", "20", "--", "sh", "-c", script]);
    let lines: Vec<&str> = out.lines().collect();
    if cgroup_v1() {
        assert_eq!(lines, ["50000", "512", "50331648", "20"]);
    } else {
        assert_eq!(lines[0], "50000 100000");
        assert_eq!(&lines[2..], ["50331648", "20"]);
    }
}

#[test]
fn a_memory_hog_is_oom_killed_and_reported() {
    crate::support::needs_root!();
    let env = Env::new();
    let out = env.corral(&[
        "run",
        "--image",
        BB,
        "--name",
        "hog",
        "--mem",
        "32",
        "--",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=128M",
        "count=1",
    ]);
    assert_eq!(out.status.code(), Some(137), "{}", String::from_utf8_lossy(&out.stderr));
    let c = env.ps().into_iter().find(|c| c["name"] == "hog").unwrap();
    assert_eq!(c["oomKilled"], true, "{c}");
    assert!(c["status"].as_str().unwrap().contains("oom-killed"), "{c}");
    assert!(env.ok(&["ps"]).contains("oom-killed"));
}

#[test]
fn a_fork_bomb_stops_at_the_pids_limit() {
    crate::support::needs_root!();
    let env = Env::new();
    let id = env.ok(&[
        "run",
        "-d",
        "--image",
        BB,
        "--pids",
        "24",
        "--cpus",
        "0.5",
        "--",
        "sh",
        "-c",
        "b() { b | b & }; b; sleep 1000",
    ]);
    let id = id.trim().to_string();
    if cgroup_v1() {
        let events = format!("/sys/fs/cgroup/pids/corral/{id}/pids.events");
        eventually("fork failures at the pids limit", Duration::from_secs(30), || {
            std::fs::read_to_string(&events).is_ok_and(|s| s.trim().strip_prefix("max ").is_some_and(|n| n != "0"))
        });
        let current: u64 = std::fs::read_to_string(format!("/sys/fs/cgroup/pids/corral/{id}/pids.current"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(current <= 24, "{current} processes");
    } else {
        let events = format!("/sys/fs/cgroup/corral/{id}/pids.events");
        eventually("fork failures at the pids limit", Duration::from_secs(30), || {
            std::fs::read_to_string(&events)
                .is_ok_and(|s| s.lines().any(|l| l.starts_with("max ") && !l.ends_with(" 0")))
        });
    }
    env.ok(&["rm", "--force", &id]);
    assert!(cgroup_dirs(&id).is_empty());
}

#[test]
fn exit_codes_and_signals_propagate() {
    crate::support::needs_root!();
    let env = Env::new();
    assert_eq!(env.corral(&["run", "--image", BB, "--", "sh", "-c", "exit 42"]).status.code(), Some(42));
    // A signal sent to the container: 128 + SIGKILL.
    let id = env.ok(&["run", "-d", "--image", BB, "--", "sleep", "1000"]);
    let id = id.trim();
    env.ok(&["kill", "--signal", "KILL", id]);
    assert_eq!(env.ok(&["wait", id]), "137\n");
    assert_eq!(env.ps_of(id)["status"], "killed by SIGKILL");
    // Graceful stop of a process that handles SIGTERM: its own exit code.
    let id = env.ok(&[
        "run",
        "-d",
        "--image",
        BB,
        "--",
        "sh",
        "-c",
        "trap 'exit 7' TERM; echo ready; while :; do sleep 1; done",
    ]);
    let id = id.trim();
    eventually("the trap is set", Duration::from_secs(10), || env.ok(&["logs", id]).contains("ready"));
    env.ok(&["kill", id]);
    assert_eq!(env.ok(&["wait", id]), "7\n");
    // Graceful stop of one that ignores it: SIGKILL after the grace period.
    let id = env.ok(&["run", "-d", "--stop-timeout", "1", "--image", BB, "--", "sleep", "1000"]);
    let id = id.trim();
    env.ok(&["kill", id]);
    assert_eq!(env.ok(&["wait", id]), "137\n");
}

#[test]
fn logs_survive_the_caller_and_can_be_followed() {
    crate::support::needs_root!();
    let env = Env::new();
    let id = env.ok(&["run", "-d", "--image", BB, "--", "sh", "-c", "echo hello; echo oops >&2; sleep 1; echo bye"]);
    let id = id.trim();
    // The `run -d` process has exited; a new process follows until the container ends.
    let out = env.cmd(&["logs", "-f", id]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\nbye\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    assert_eq!(env.ok(&["wait", id]), "0\n");
    assert_eq!(env.ok(&["logs", id]), "hello\nbye\n");
    assert_eq!(env.ps_of(id)["state"], "exited");
}

#[test]
fn log_files_are_capped_and_rotated() {
    crate::support::needs_root!();
    let env = Env::new();
    let id = env.ok(&[
        "run",
        "-d",
        "--image",
        BB,
        "--log-max-size",
        "8192",
        "--log-max-files",
        "2",
        "--",
        "sh",
        "-c",
        "i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done",
    ]);
    let id = id.trim();
    env.ok(&["wait", id]);
    let logs = env.containers_dir().join(id).join("logs");
    let total: u64 = std::fs::read_dir(&logs).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    assert!(total < 3 * 8192 + 4096, "logs take {total} bytes");
    let out = env.ok(&["logs", id]);
    assert!(out.ends_with("line-1999\n"), "the newest output is kept");
    assert!(!out.contains("line-0\n"), "the oldest output was rotated away");
}

#[test]
fn state_survives_the_processes_that_started_it_and_nothing_leaks_after_rm() {
    crate::support::needs_root!();
    let env = Env::new();
    let id = env.ok(&["run", "-d", "--name", "svc", "--image", BB, "--", "sleep", "1000"]);
    let id = id.trim().to_string();
    assert_eq!(env.ps_of(&id)["state"], "running");
    assert!(!cgroup_dirs(&id).is_empty(), "a running container has cgroups");
    let dir = env.containers_dir().join(&id);
    assert!(!mounts_under(&dir).is_empty(), "a running container has its rootfs mounted");
    let err = env.fails(&["rm", "svc"], 125);
    assert!(err.contains("is running"), "{err}");
    env.ok(&["rm", "--force", "svc"]);
    assert!(cgroup_dirs(&id).is_empty(), "cgroups left: {:?}", cgroup_dirs(&id));
    assert!(mounts_under(&dir).is_empty(), "mounts left: {:?}", mounts_under(&dir));
    assert!(!dir.exists());
    // The name is free again.
    env.ok(&["run", "--name", "svc", "--rm", "--image", BB, "--", "true"]);
    assert!(env.container_ids().is_empty(), "--rm removed it");
}

/// The shim's precompiled seccomp program is the one libcontainer would have loaded: a
/// container started through the cache and one started with `CORRAL_SECCOMP_CACHE=off` (the
/// profile left in the spec, for libcontainer) carry the same filter, instruction for
/// instruction, as the kernel reports it.
#[test]
fn the_cached_seccomp_program_is_the_one_libcontainer_would_load() {
    crate::support::needs_root!();
    let env = Env::new();
    let start = |cache: &str| {
        let out = env
            .cmd(&["run", "-d", "--image", BB, "--", "sleep", "1000"])
            .env("CORRAL_SECCOMP_CACHE", cache)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (cached, direct) = (start("on"), start("off"));
    let dir = |id: &str| env.containers_dir().join(id);
    // Which path each took: only the cached start hands libcontainer a copy without the profile.
    let copy = std::fs::read_to_string(dir(&cached).join("runtime-bundle/config.json")).unwrap();
    assert!(!copy.contains("\"seccomp\""), "the copy still names a profile");
    assert!(!dir(&direct).join("runtime-bundle").exists());

    let program = |id: &str| {
        let pid: i32 = std::fs::read_to_string(dir(id).join("init.pid")).unwrap().trim().parse().unwrap();
        seccomp_program(pid)
    };
    let (a, b) = (program(&cached), program(&direct));
    assert!(a.len() > 100, "{} instructions", a.len());
    assert!(a == b, "the cached program ({} instructions) differs from libcontainer's ({})", a.len(), b.len());
    env.ok(&["rm", "--force", &cached, &direct]);
}

/// The newest seccomp filter of process `pid`, as raw 8-byte BPF instructions, read with
/// PTRACE_SECCOMP_GET_FILTER (the process is seized, stopped for the read, and let go).
fn seccomp_program(pid: i32) -> Vec<[u8; 8]> {
    const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
    let null = std::ptr::null_mut::<libc::c_void>();
    let check = |rc: libc::c_long, what: &str| {
        assert!(rc >= 0, "{what} of {pid}: {}", std::io::Error::last_os_error());
        rc
    };
    // SAFETY: plain ptrace requests on a process this test started; the buffer is as long as
    // the kernel said the program is.
    unsafe {
        check(libc::ptrace(libc::PTRACE_SEIZE, pid, null, null), "PTRACE_SEIZE");
        check(libc::ptrace(libc::PTRACE_INTERRUPT, pid, null, null), "PTRACE_INTERRUPT");
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, libc::__WALL), pid);
        let n = check(libc::ptrace(PTRACE_SECCOMP_GET_FILTER, pid, null, null), "counting the filter");
        let mut program = vec![[0u8; 8]; n as usize];
        let read =
            check(libc::ptrace(PTRACE_SECCOMP_GET_FILTER, pid, null, program.as_mut_ptr()), "reading the filter");
        assert_eq!(read, n);
        check(libc::ptrace(libc::PTRACE_DETACH, pid, null, null), "PTRACE_DETACH");
        program
    }
}

/// The runtime moves the container's first process into its cgroups by writing "0" to each v1
/// hierarchy's `tasks` file from inside that process (vendor/README.md): every hierarchy's
/// cgroup must hold the container's process, and its children follow it.
#[test]
fn the_container_joins_its_cgroup_in_every_hierarchy() {
    crate::support::needs_root!();
    let env = Env::new();
    let id = env.ok(&["run", "-d", "--image", BB, "--", "sh", "-c", "sleep 1000 & exec sleep 1000"]);
    let id = id.trim().to_string();
    let dirs = cgroup_dirs(&id);
    assert!(!dirs.is_empty(), "a running container has cgroups");
    if cgroup_v1() {
        for h in ["cpu", "cpuacct", "memory", "pids", "devices", "freezer", "blkio", "cpuset"] {
            assert!(dirs.iter().any(|d| d.starts_with(format!("/sys/fs/cgroup/{h}"))), "no {h} cgroup among {dirs:?}");
        }
    }
    let procs = |d: &std::path::Path| {
        let mut pids: Vec<String> =
            std::fs::read_to_string(d.join("cgroup.procs")).unwrap().lines().map(String::from).collect();
        pids.sort();
        pids
    };
    eventually("the init and its background child in the first cgroup", Duration::from_secs(10), || {
        procs(&dirs[0]).len() == 2
    });
    let first = procs(&dirs[0]);
    for d in &dirs {
        assert_eq!(procs(d), first, "{} holds other processes than {}", d.display(), dirs[0].display());
    }
    env.ok(&["rm", "--force", &id]);
}

#[test]
fn an_ended_container_keeps_no_cgroups_or_mounts() {
    crate::support::needs_root!();
    let env = Env::new();
    let id = env.ok(&["run", "-d", "--image", BB, "--", "true"]);
    let id = id.trim();
    env.ok(&["wait", id]);
    let dir = env.containers_dir().join(id);
    assert!(cgroup_dirs(id).is_empty());
    assert!(mounts_under(&dir).is_empty());
}

#[test]
fn host_tasks_run_in_a_sandbox_with_a_read_only_host_filesystem() {
    crate::support::needs_root!();
    let env = Env::new();
    let out = env.ok(&["run", "--", "sh", "-c", "pwd; id -u; test -d /usr/bin && echo host-usr; touch /usr/corral-x 2>/dev/null || echo ro; touch ./file && echo rw; echo $CORRAL_SANDBOX"]);
    assert_eq!(out, "/sandbox\n65534\nhost-usr\nro\nrw\n/sandbox\n");
    assert!(!std::path::Path::new("/usr/corral-x").exists());
}

#[test]
fn volumes_are_bound_read_write_or_read_only() {
    crate::support::needs_root!();
    let env = Env::new();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in"), "from-host").unwrap();
    let rw = format!("{}:/data", host.path().display());
    let ro = format!("{}:/data:ro", host.path().display());
    assert_eq!(
        env.ok(&[
            "run",
            "--image",
            BB,
            "--user",
            "0",
            "--userns",
            "host",
            "-v",
            &rw,
            "--",
            "sh",
            "-c",
            "cat /data/in; echo out > /data/out"
        ]),
        "from-host"
    );
    assert_eq!(std::fs::read_to_string(host.path().join("out")).unwrap(), "out\n");
    let out = env.corral(&["run", "--image", BB, "--user", "0", "-v", &ro, "--", "sh", "-c", "echo x > /data/nope"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(!host.path().join("nope").exists());
}

#[test]
fn environment_workdir_and_network() {
    crate::support::needs_root!();
    let env = Env::new();
    let out = env.ok(&[
        "run",
        "--image",
        BB,
        "-e",
        "A=1",
        "-e",
        "B=two words",
        "--workdir",
        "/tmp",
        "--",
        "sh",
        "-c",
        "echo $A; echo $B; pwd; ip -o link | wc -l; ip -o addr show lo | grep -c 127.0.0.1",
    ]);
    assert_eq!(out, "1\ntwo words\n/tmp\n1\n1\n");
}

#[test]
fn bad_input_is_refused_with_one_line_naming_it_and_nothing_left() {
    crate::support::needs_root!();
    let env = Env::new();
    let missing = "/does/not/exist/corral";
    let volume = format!("{missing}:/x");
    for (args, needle) in [
        (vec!["run", "--image", "nope", "--", "true"], "unknown image \"nope:latest\""),
        (vec!["run", "--image", "Bad/Ref", "--", "true"], "invalid image reference \"Bad/Ref\""),
        (vec!["run", "--image", BB, "--mem", "lots", "--", "true"], "invalid memory limit \"lots\""),
        (vec!["run", "--image", BB, "--cpus=-1", "--", "true"], "invalid cpu count \"-1\""),
        (vec!["run", "--image", BB, "--user", "root", "--", "true"], "invalid user \"root\""),
        (vec!["run", "--image", BB], "no command given and image busybox:latest has no entrypoint or cmd"),
        (vec!["run", "--image", BB, "--", "/no/such/program"], "command not found in the container: /no/such/program"),
        (vec!["run", "--image", BB, "--", "nosuchprogram"], "command not found in the container: nosuchprogram"),
        (
            vec!["run", "--image", BB, "-v", &volume, "--", "true"],
            "volume host path /does/not/exist/corral does not exist",
        ),
        (vec!["run", "--image", BB, "-v", "relative:/x", "--", "true"], "invalid volume \"relative:/x\""),
    ] {
        let err = env.fails(&args, 125);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: one line, got {err}");
        assert!(env.container_ids().is_empty(), "{args:?} left a container behind");
    }
    env.ok(&["run", "-d", "--name", "taken", "--image", BB, "--", "sleep", "1000"]);
    let err = env.fails(&["run", "--name", "taken", "--image", BB, "--", "true"], 125);
    assert!(err.contains("container name \"taken\" is already in use"), "{err}");
    assert_eq!(env.container_ids().len(), 1);
    let err = env.fails(&["logs", "ghost"], 125);
    assert!(err.contains("no such container: \"ghost\""), "{err}");
    let err = env.fails(&["kill", "--signal", "NOPE", "taken"], 125);
    assert!(err.contains("invalid signal \"NOPE\""), "{err}");
}

#[test]
fn a_root_container_cannot_raise_its_own_cgroup_limits() {
    crate::support::needs_root!();
    let env = Env::new();
    let (mem, pids) = if crate::support::cgroup_v1() {
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/pids/pids.max")
    } else {
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/pids.max")
    };
    let script =
        format!("echo 1073741824 > {mem} && echo raised-mem; echo max > {pids} && echo raised-pids; cat {mem} {pids}");
    // With its own user namespace (the default) and without: the cgroup files are read-only.
    for userns in ["auto", "host"] {
        let out = env.corral(&[
            "run", "--userns", userns, "--user", "0", "--mem", "32", "--pids", "64", "--image", "busybox", "--", "sh",
            "-c", &script,
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!stdout.contains("raised"), "{userns}: {stdout}");
        assert_eq!(stdout, "33554432\n64\n", "{userns}: the limits are readable, and unchanged");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Read-only file system"),
            "{userns}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_containers_root_is_not_the_hosts_root() {
    crate::support::needs_root!();
    if !crate::support::idmapped_mounts() {
        eprintln!("skipped: this kernel or filesystem has no idmapped mounts, so no user namespaces");
        return;
    }
    let env = Env::new();
    let host = tempfile::tempdir().unwrap();
    let volume = format!("{}:/data", host.path().display());
    // Root inside: owns the image's files, writes its root filesystem, but is not the host's root.
    let script = "cat /proc/self/uid_map; stat -c %u /bin/busybox; echo made > /etc/made && echo wrote-root; \
                  echo x > /data/planted && echo wrote-host; true";
    let out =
        env.corral(&["run", "--name", "ns", "--user", "0", "-v", &volume, "--image", BB, "--", "sh", "-c", script]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let map: Vec<u64> =
        stdout.lines().next().unwrap_or_default().split_whitespace().map(|n| n.parse().unwrap()).collect();
    assert_eq!(map.len(), 3, "{stdout}");
    assert_eq!((map[0], map[2]), (0, 65536), "{stdout}");
    assert!(map[1] >= 1 << 30, "container root is host uid {}: {stdout}", map[1]);
    assert!(stdout.contains("\n0\nwrote-root\n"), "the image's files are its root's: {stdout}");
    assert!(!stdout.contains("wrote-host"), "wrote into a directory only the host's root may write: {stdout}");
    assert!(!host.path().join("planted").exists());
    // What it made belongs to its host id, not to root.
    let upper = std::fs::read_dir(env.root.path().join("containers"))
        .unwrap()
        .map(|e| e.unwrap().path().join("upper/etc/made"))
        .find(|p| p.exists())
        .expect("the container's writable layer");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(u64::from(std::fs::metadata(&upper).unwrap().uid()), map[1]);
    env.ok(&["rm", "ns"]);
    // Without one, as asked; and a user the namespace cannot hold, refused when it must have one.
    let out = env.ok(&["run", "--userns", "host", "--user", "0", "--image", BB, "--", "cat", "/proc/self/uid_map"]);
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["0", "0", "4294967295"]);
    let err = env.fails(&["run", "--userns", "private", "--user", "70000", "--image", BB, "--", "true"], 125);
    assert!(err.contains("no user namespace") && err.contains("70000"), "{err}");
    let err = env.fails(&["run", "--userns", "sometimes", "--image", BB, "--", "true"], 125);
    assert!(err.contains("auto, private or host"), "{err}");
}

#[test]
fn a_container_past_its_disk_limit_is_killed_saying_why() {
    crate::support::needs_root!();
    let env = Env::new();
    let out = env.corral(&[
        "run",
        "--disk",
        "10m",
        "--name",
        "filler",
        "--image",
        BB,
        "--",
        "sh",
        "-c",
        "dd if=/dev/zero of=/tmp/big bs=1M count=50 2>/dev/null; sleep 60",
    ]);
    assert_eq!(out.status.code(), Some(137), "{}", String::from_utf8_lossy(&out.stderr));
    let filler = env.ps().into_iter().find(|c| c["name"] == "filler").unwrap();
    let status = filler["status"].as_str().unwrap().to_string();
    assert!(status.contains("of disk, past its limit of 10 MiB"), "{status}");
    // Within its limit it runs to the end.
    assert_eq!(
        env.ok(&[
            "run",
            "--disk",
            "100m",
            "--image",
            BB,
            "--",
            "sh",
            "-c",
            "dd if=/dev/zero of=/tmp/f bs=1M count=5 2>/dev/null; echo ok"
        ]),
        "ok\n"
    );
}

#[test]
fn removing_a_container_whose_shim_was_killed_kills_what_it_left_running() {
    crate::support::needs_root!();
    let env = Env::new();
    for userns in ["auto", "host"] {
        let id = env.ok(&["run", "-d", "--userns", userns, "--image", BB, "--", "sleep", "600"]).trim().to_string();
        let dir = env.containers_dir().join(&id);
        let pid = |file: &str| -> i32 {
            let mut text = String::new();
            eventually(file, Duration::from_secs(10), || {
                text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
                !text.trim().is_empty()
            });
            text.trim().parse().unwrap()
        };
        let (shim, init) = (pid("shim.pid"), pid("init.pid"));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(shim), nix::sys::signal::Signal::SIGKILL).unwrap();
        eventually("the shim's end", Duration::from_secs(10), || env.ok(&["ps"]).contains("lost"));
        assert!(std::path::Path::new(&format!("/proc/{init}")).exists(), "{userns}: its process outlives the shim");
        env.ok(&["rm", "--force", &id]);
        let alive = std::fs::read_to_string(format!("/proc/{init}/stat")).is_ok_and(|s| !s.contains(") Z "));
        assert!(!alive, "{userns}: the container's process still runs after rm");
    }
}
