//! Root filesystems: the overlay of image layers, a host task's root, the generated `/etc`
//! files, and taking all of it down again.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::spec::RootKind;
use crate::state::{io_err, ContainerDir, ContainerRecord, StateError};

/// Host directories a host task never gets from the host: it has its own.
const HOST_PRIVATE: &[&str] = &["proc", "sys", "dev", "tmp", "run", "sandbox", "lost+found"];

/// Looks at the host's `/` and decides what a host task's root is made of: top-level
/// directories are bound read-only; top-level symlinks (a merged `/usr`'s `/bin -> usr/bin`) are
/// recreated in the root by `prepare_host_root`.
pub fn host_root_kind() -> Result<RootKind, StateError> {
    let mut dirs = Vec::new();
    let root = Path::new("/");
    for entry in fs::read_dir(root).map_err(io_err("listing", root))? {
        let entry = entry.map_err(io_err("listing", root))?;
        let name = entry.file_name();
        if HOST_PRIVATE.iter().any(|p| name == *p) {
            continue;
        }
        let ft = entry.file_type().map_err(io_err("inspecting", &entry.path()))?;
        if ft.is_dir() {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    Ok(RootKind::Host { dirs })
}

/// Makes a host task's (empty, read-only) root: the top-level symlinks of the host's `/`, and
/// its sandbox, owned by the task's user.
pub fn prepare_host_root(dir: &ContainerDir, uid: u32, gid: u32) -> Result<(), StateError> {
    let rootfs = dir.rootfs();
    fs::create_dir_all(&rootfs).map_err(io_err("creating", &rootfs))?;
    let sandbox = dir.sandbox();
    fs::create_dir_all(&sandbox).map_err(io_err("creating", &sandbox))?;
    std::os::unix::fs::chown(&sandbox, Some(uid), Some(gid)).map_err(io_err("chown", &sandbox))?;
    let root = Path::new("/");
    for entry in fs::read_dir(root).map_err(io_err("listing", root))? {
        let entry = entry.map_err(io_err("listing", root))?;
        if entry.file_type().is_ok_and(|t| t.is_symlink()) {
            let target = fs::read_link(entry.path()).map_err(io_err("reading", &entry.path()))?;
            let link = rootfs.join(entry.file_name());
            std::os::unix::fs::symlink(&target, &link).map_err(io_err("creating", &link))?;
        }
    }
    Ok(())
}

/// Mounts the overlay of `layers` (bottom first) at the bundle's rootfs. With a user namespace
/// (`userns`: the pinned namespace and the host id of its root) the layers are first bound
/// idmapped under `lower/`, and the writable layer belongs to the container's root.
pub fn mount_overlay(
    dir: &ContainerDir,
    layers: &[PathBuf],
    userns: Option<(&std::os::fd::OwnedFd, u32)>,
) -> Result<(), StateError> {
    for d in [dir.rootfs(), dir.upper(), dir.work()] {
        fs::create_dir_all(&d).map_err(io_err("creating", &d))?;
    }
    let mut layers = layers.to_vec();
    if let Some((ns, root)) = userns {
        let upper = dir.upper();
        std::os::unix::fs::chown(&upper, Some(root), Some(root)).map_err(io_err("chown", &upper))?;
        for (i, layer) in layers.iter_mut().enumerate() {
            let at = dir.lower().join(i.to_string());
            fs::create_dir_all(&at).map_err(io_err("creating", &at))?;
            crate::userns::bind_idmapped(layer, &at, ns).map_err(io_err("binding (idmapped) the layer at", &at))?;
            *layer = at;
        }
    }
    let lower: Vec<String> = layers.iter().rev().map(|p| p.display().to_string()).collect();
    let data =
        format!("lowerdir={},upperdir={},workdir={}", lower.join(":"), dir.upper().display(), dir.work().display());
    let rootfs = dir.rootfs();
    mount(Some("overlay"), &rootfs, Some("overlay"), MsFlags::empty(), Some(data.as_str()))
        .map_err(|e| io_err("mounting the overlay at", &rootfs)(e.into()))
}

/// Binds each volume's host path at `volume(i)` in the container's directory. A container with
/// a user namespace opens its mounts' sources from inside it, as its own root, which may not
/// walk the host's paths (an agent's sandboxes are in a directory closed to all but root); it
/// may walk its own directory.
pub fn bind_volumes(dir: &ContainerDir, record: &ContainerRecord) -> Result<(), StateError> {
    for (i, v) in record.volumes.iter().enumerate() {
        let at = dir.volume(i);
        if let Some(parent) = at.parent() {
            fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
        }
        if v.host.is_dir() {
            fs::create_dir_all(&at).map_err(io_err("creating", &at))?;
        } else {
            fs::File::create(&at).map_err(io_err("creating", &at))?;
        }
        mount(Some(&v.host), &at, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
            .map_err(|e| io_err("binding the volume at", &at)(e.into()))?;
    }
    Ok(())
}

/// Unmounts the rootfs, the idmapped layers, the volumes' first binds and the namespaces, if
/// mounted. Idempotent.
pub fn teardown(dir: &ContainerDir) -> Result<(), StateError> {
    let listed = |d: PathBuf| fs::read_dir(d).into_iter().flatten().flatten().map(|e| e.path());
    let paths: Vec<PathBuf> = [dir.rootfs()]
        .into_iter()
        .chain(listed(dir.lower()))
        .chain(listed(dir.dir.join("volumes")))
        .chain([dir.netns(), dir.userns()])
        .collect();
    for path in paths {
        if let Err(e) = umount2(&path, MntFlags::MNT_DETACH) {
            // EINVAL: not a mount point; ENOENT: never made. Both mean nothing to undo.
            if e != nix::errno::Errno::EINVAL && e != nix::errno::Errno::ENOENT {
                return Err(io_err("unmounting", &path)(e.into()));
            }
        }
    }
    Ok(())
}

/// Writes `/etc/passwd`, `/etc/group`, `/etc/hosts` and `/etc/hostname` for the container,
/// starting from the image's (or host's) own passwd and group when there are some.
pub fn write_etc(
    dir: &ContainerDir,
    record: &ContainerRecord,
    base_passwd: &str,
    base_group: &str,
) -> Result<(), StateError> {
    let etc = dir.etc();
    fs::create_dir_all(&etc).map_err(io_err("creating", &etc))?;
    let files = [
        ("passwd", passwd_with(base_passwd, record.uid, record.gid)),
        ("group", group_with(base_group, record.gid)),
        ("hosts", hosts(&record.hostname)),
        ("hostname", format!("{}\n", record.hostname)),
    ];
    for (name, content) in files {
        let path = etc.join(name);
        fs::write(&path, content).map_err(io_err("writing", &path))?;
    }
    Ok(())
}

/// `passwd` with an entry for `uid` added when it has none, so programs that look up their
/// user (`whoami`, `id -un`, ssh, many runtimes) work for any numeric uid.
pub fn passwd_with(base: &str, uid: u32, gid: u32) -> String {
    let mut out = normalized(base);
    if !has_id(base, uid) {
        let name = if uid == 65534 { "nobody".to_string() } else { format!("u{uid}") };
        out.push_str(&format!("{name}:x:{uid}:{gid}:corral user:/:/sbin/nologin\n"));
    }
    out
}

/// `group` with an entry for `gid` added when it has none.
pub fn group_with(base: &str, gid: u32) -> String {
    let mut out = normalized(base);
    if !has_id(base, gid) {
        let name = if gid == 65534 { "nogroup".to_string() } else { format!("g{gid}") };
        out.push_str(&format!("{name}:x:{gid}:\n"));
    }
    out
}

/// The home directory of `uid` in a passwd file, if it has one.
pub fn home_of(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 6 && f[2].parse() == Ok(uid) && !f[5].is_empty()).then(|| f[5].to_string())
    })
}

/// Resolves an image's `USER` (`name`, `uid`, `name:group`, `uid:gid`) against its passwd and
/// group files. A user without a group takes its passwd entry's group (or its uid when numeric).
pub fn resolve_user(user: &str, passwd: &str, group: &str) -> Option<(u32, u32)> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let entry = |file: &str, name: &str| -> Option<Vec<String>> {
        file.lines().map(|l| l.split(':').map(String::from).collect::<Vec<_>>()).find(|f| f.len() >= 3 && f[0] == name)
    };
    let (uid, primary) = match u.parse::<u32>() {
        Ok(uid) => (uid, None),
        Err(_) => {
            let f = entry(passwd, u)?;
            (f[2].parse().ok()?, f.get(3).and_then(|g| g.parse().ok()))
        }
    };
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => entry(group, g)?[2].parse().ok()?,
        },
        None => primary
            .or_else(|| {
                passwd.lines().find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() >= 4 && f[2].parse() == Ok(uid)).then(|| f[3].parse().ok()).flatten()
                })
            })
            .unwrap_or(uid),
    };
    Some((uid, gid))
}

fn has_id(file: &str, id: u32) -> bool {
    file.lines().any(|l| l.split(':').nth(2).and_then(|f| f.parse::<u32>().ok()) == Some(id))
}

fn normalized(base: &str) -> String {
    let mut s = base.to_string();
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

fn hosts(hostname: &str) -> String {
    format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n")
}

/// Reads a file from the topmost layer that has it (layers bottom first), or "" if none does.
pub fn read_from_layers(layers: &[PathBuf], path: &str) -> String {
    for layer in layers.iter().rev() {
        if let Some(found) = corral_image::layer::lookup_in_root(layer, Path::new(path)) {
            if let Ok(s) = fs::read_to_string(found) {
                return s;
            }
        }
    }
    String::new()
}

/// Finds `program` as the container will: a path is looked up as it is, a bare name on `PATH`.
pub fn find_program(rootfs: &Path, program: &str, env: &[String], cwd: &str) -> bool {
    let exists = |p: &Path| corral_image::layer::lookup_in_root(rootfs, p).is_some_and(|f| f.is_file());
    if program.contains('/') {
        let p = Path::new(cwd).join(program);
        return exists(&p);
    }
    let path = env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or("/usr/local/bin:/usr/bin:/bin");
    path.split(':').filter(|d| !d.is_empty()).any(|d| exists(&Path::new(d).join(program)))
}

/// Removes the container's cgroups in every hierarchy, if something left them behind.
pub fn remove_cgroups(id: &str) -> Result<(), StateError> {
    for path in cgroup_dirs(id) {
        match fs::remove_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => {}
            Err(e) => return Err(io_err("removing cgroup", &path)(e)),
        }
    }
    Ok(())
}

/// Where container `id`'s cgroup may be: under the unified root and under each v1 hierarchy.
fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let rel = crate::spec::cgroup_path(id);
    let rel = rel.strip_prefix("/").unwrap_or(&rel);
    let base = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![base.join(rel)];
    if let Ok(entries) = fs::read_dir(base) {
        for e in entries.flatten() {
            dirs.push(e.path().join(rel));
        }
    }
    dirs
}

/// Kills every process left in container `id`'s cgroups (its shim gone, its processes are
/// still there) and waits, up to a few seconds, until none is left. True when none is.
pub fn kill_cgroup(id: &str) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let dirs: Vec<PathBuf> = cgroup_dirs(id).into_iter().filter(|d| d.join("cgroup.procs").is_file()).collect();
    loop {
        let pids: HashSet<i32> = dirs
            .iter()
            .filter_map(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect::<Vec<i32>>())
            .collect();
        if pids.is_empty() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        std::thread::park_timeout(std::time::Duration::from_millis(20));
    }
}

/// Sets the container's CFS quota for `cpus` (cgroup v1 `cpu.cfs_*`, or v2 `cpu.max`).
pub fn apply_cpu_quota(id: &str, cpus: f64) -> Result<(), StateError> {
    let rel = crate::spec::cgroup_path(id);
    let rel = rel.strip_prefix("/").unwrap_or(&rel);
    let (quota, period) = (crate::spec::cpu_quota_us(cpus), crate::spec::CPU_PERIOD_US);
    let v1 = Path::new("/sys/fs/cgroup/cpu").join(rel);
    if v1.is_dir() {
        let period_file = v1.join("cpu.cfs_period_us");
        fs::write(&period_file, period.to_string()).map_err(io_err("writing", &period_file))?;
        let quota_file = v1.join("cpu.cfs_quota_us");
        return fs::write(&quota_file, quota.to_string()).map_err(io_err("writing", &quota_file));
    }
    let max = Path::new("/sys/fs/cgroup").join(rel).join("cpu.max");
    fs::write(&max, format!("{quota} {period}")).map_err(io_err("writing", &max))
}

/// Disk used under `paths`: allocated blocks (a sparse file counts what it holds), each file
/// counted once (hard links), symbolic links not followed.
pub fn disk_usage(paths: &[PathBuf]) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(p) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&p) else { continue };
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total += meta.blocks() * 512;
        if meta.is_dir() {
            for e in fs::read_dir(&p).into_iter().flatten().flatten() {
                stack.push(e.path());
            }
        }
    }
    total
}

/// The mount points under `/sys/fs/cgroup` in a mountinfo table (pure).
pub fn cgroup_mount_points(mountinfo: &str) -> Vec<PathBuf> {
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with("/sys/fs/cgroup"))
        .collect();
    points.dedup();
    points
}

/// Mountinfo escapes spaces, tabs, newlines and backslashes as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push(u8::from_str_radix(&s[i + 1..i + 4], 8).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Makes the cgroup filesystems inside a created (not yet started) container read-only, so that
/// not even its root can raise its own limits: the runtime mounts cgroup v1 hierarchies
/// read-write whatever the spec asks. A child process enters the container's mount namespace and
/// remounts each mount under `/sys/fs/cgroup` read-only.
///
/// Forks: call it only from a single-threaded process (the shim).
pub fn seal_cgroups(pid: i32) -> Result<(), StateError> {
    let info_path = PathBuf::from(format!("/proc/{pid}/mountinfo"));
    let info = fs::read_to_string(&info_path).map_err(io_err("reading", &info_path))?;
    let points = cgroup_mount_points(&info);
    if points.is_empty() {
        return Ok(());
    }
    let ns_path = PathBuf::from(format!("/proc/{pid}/ns/mnt"));
    let ns = fs::File::open(&ns_path).map_err(io_err("opening", &ns_path))?;
    // Everything the child needs is made before the fork: it only makes system calls.
    let points: Vec<std::ffi::CString> = points
        .iter()
        .filter_map(|p| std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str())).ok())
        .collect();
    let flags = (MsFlags::MS_REMOUNT
        | MsFlags::MS_BIND
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC)
        .bits();
    let ns_fd = std::os::fd::AsRawFd::as_raw_fd(&ns);
    // SAFETY: the caller is single-threaded; the child makes only system calls, then exits.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            // SAFETY: raw system calls on a descriptor and C strings that outlive them.
            let ok = unsafe { libc::setns(ns_fd, libc::CLONE_NEWNS) } == 0
                && points.iter().all(|p| unsafe {
                    libc::mount(std::ptr::null(), p.as_ptr(), std::ptr::null(), flags, std::ptr::null()) == 0
                });
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => match nix::sys::wait::waitpid(child, None) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(()),
            other => Err(StateError::Io {
                action: "making the cgroup filesystems read-only in",
                path: ns_path,
                source: io::Error::other(format!("{other:?}")),
            }),
        },
        Err(e) => Err(StateError::Io { action: "forking to seal the cgroups of", path: ns_path, source: e.into() }),
    }
}

/// Whether the kernel OOM killer acted in the container's memory cgroup (v1 or v2).
pub fn oom_killed(id: &str) -> bool {
    let rel = crate::spec::cgroup_path(id);
    let rel = rel.strip_prefix("/").unwrap_or(&rel);
    let v1 = Path::new("/sys/fs/cgroup/memory").join(rel).join("memory.oom_control");
    let v2 = Path::new("/sys/fs/cgroup").join(rel).join("memory.events");
    [v1, v2].iter().any(|p| fs::read_to_string(p).is_ok_and(|s| oom_kill_count(&s) > 0))
}

fn oom_kill_count(text: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_mount_points_from_mountinfo() {
        let info = "\
22 1 0:21 / / rw,relatime - overlay overlay rw
30 22 0:26 / /sys ro,nosuid - sysfs sysfs ro
31 30 0:27 / /sys/fs/cgroup rw - tmpfs tmpfs rw
32 31 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
33 31 0:29 / /sys/fs/cgroup/cpu\\040x rw - cgroup cgroup rw,cpu
34 22 0:30 / /sys/fs/cgroupx rw - tmpfs tmpfs rw
";
        assert_eq!(
            cgroup_mount_points(info),
            [PathBuf::from("/sys/fs/cgroup"), "/sys/fs/cgroup/memory".into(), "/sys/fs/cgroup/cpu x".into()]
        );
        assert!(cgroup_mount_points("").is_empty());
    }

    #[test]
    fn unknown_uids_get_passwd_and_group_entries() {
        let base = "root:x:0:0:root:/root:/bin/sh";
        assert_eq!(passwd_with(base, 0, 0), "root:x:0:0:root:/root:/bin/sh\n");
        assert_eq!(passwd_with(base, 1234, 99), format!("{base}\nu1234:x:1234:99:corral user:/:/sbin/nologin\n"));
        assert_eq!(passwd_with("", 65534, 65534), "nobody:x:65534:65534:corral user:/:/sbin/nologin\n");
        assert_eq!(group_with("root:x:0:\n", 99), "root:x:0:\ng99:x:99:\n");
        assert_eq!(home_of(base, 0).as_deref(), Some("/root"));
        assert_eq!(home_of(base, 5), None);
    }

    #[test]
    fn image_users_resolve_by_name_or_id() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nweb:x:101:102:web:/srv:/bin/false\n";
        let group = "root:x:0:\nweb:x:102:\nstaff:x:50:\n";
        assert_eq!(resolve_user("web", passwd, group), Some((101, 102)));
        assert_eq!(resolve_user("web:staff", passwd, group), Some((101, 50)));
        assert_eq!(resolve_user("101", passwd, group), Some((101, 102)));
        assert_eq!(resolve_user("4000", passwd, group), Some((4000, 4000)));
        assert_eq!(resolve_user("4000:7", passwd, group), Some((4000, 7)));
        assert_eq!(resolve_user("ghost", passwd, group), None);
        assert_eq!(resolve_user("web:ghosts", passwd, group), None);
    }

    #[test]
    fn oom_kill_counts_are_read_from_either_format() {
        assert_eq!(oom_kill_count("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"), 2);
        assert_eq!(oom_kill_count("low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n"), 1);
        assert_eq!(oom_kill_count("oom_kill_disable 0\n"), 0);
    }

    #[test]
    fn programs_are_found_on_path_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("usr/bin")).unwrap();
        fs::write(tmp.path().join("usr/bin/app"), "").unwrap();
        std::os::unix::fs::symlink("usr/bin", tmp.path().join("bin")).unwrap();
        let env = vec!["PATH=/bin".to_string()];
        assert!(find_program(tmp.path(), "app", &env, "/"));
        assert!(find_program(tmp.path(), "/bin/app", &env, "/"));
        assert!(!find_program(tmp.path(), "nope", &env, "/"));
        assert!(!find_program(tmp.path(), "/usr/bin", &env, "/"), "a directory is not a program");
    }
}
