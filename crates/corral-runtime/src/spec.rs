//! The OCI runtime spec (`config.json`) for a container: a pure function of its record.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capabilities, LinuxCapabilities, LinuxCpu, LinuxDeviceCgroup, LinuxMemory, LinuxNamespace, LinuxNamespaceType,
    LinuxPids, LinuxResources, Mount, Process, Root, Spec, User,
};

use crate::seccomp;
use crate::state::{ContainerDir, ContainerRecord, EtcFiles};

/// CFS period for `--cpus`, as Docker uses.
pub const CPU_PERIOD_US: u64 = 100_000;
/// Where a host task's private sandbox appears, and its working directory.
pub const SANDBOX_PATH: &str = "/sandbox";
/// The parent of every corral cgroup, in each hierarchy.
pub const CGROUP_PARENT: &str = "corral";

/// How the root filesystem is made, decided by the caller that looked at the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootKind {
    /// An overlay of image layers, mounted at the bundle's rootfs.
    Image,
    /// A host task: these host directories bound read-only into an otherwise empty root.
    Host { dirs: Vec<PathBuf> },
}

/// The CFS quota for `cpus`, per `CPU_PERIOD_US`.
pub fn cpu_quota_us(cpus: f64) -> u64 {
    (cpus * CPU_PERIOD_US as f64).round().max(1000.0) as u64
}

/// The cgroup path of a container, relative to each hierarchy's root.
pub fn cgroup_path(id: &str) -> PathBuf {
    Path::new("/").join(CGROUP_PARENT).join(id)
}

/// Builds the spec for `record`, living in `dir`.
pub fn build(record: &ContainerRecord, dir: &ContainerDir, root: &RootKind) -> Spec {
    let mut spec = Spec::default();
    spec.set_version("1.0.2".to_string());
    spec.set_hostname(Some(record.hostname.clone()));
    spec.set_annotations(None);

    let mut r = Root::default();
    r.set_path(PathBuf::from("rootfs"));
    r.set_readonly(Some(matches!(root, RootKind::Host { .. })));
    spec.set_root(Some(r));

    let mut process = Process::default();
    process.set_args(Some(record.args.clone()));
    process.set_env(Some(record.env.clone()));
    process.set_cwd(PathBuf::from(&record.cwd));
    let mut user = User::default();
    user.set_uid(record.uid);
    user.set_gid(record.gid);
    user.set_additional_gids(Some(vec![record.gid]));
    process.set_user(user);
    process.set_no_new_privileges(Some(true));
    let none = Capabilities::new();
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(none.clone()));
    caps.set_effective(Some(none.clone()));
    caps.set_inheritable(Some(none.clone()));
    caps.set_permitted(Some(none.clone()));
    caps.set_ambient(Some(none));
    process.set_capabilities(Some(caps));
    // Resource limits are inherited from the shim (and so from whoever started corral): raising
    // a hard limit needs CAP_SYS_RESOURCE, which corral may not have.
    process.set_rlimits(None);
    spec.set_process(Some(process));

    let mut mounts = oci_spec::runtime::get_default_mounts();
    if let RootKind::Host { dirs } = root {
        for d in dirs {
            mounts.push(bind(d, d, &["rbind", "ro", "nosuid", "nodev"]));
        }
        mounts.push(tmpfs("/tmp", &["nosuid", "nodev", "mode=1777"]));
        mounts.push(tmpfs("/run", &["nosuid", "nodev", "mode=755"]));
        mounts.push(bind(&dir.sandbox(), Path::new(SANDBOX_PATH), &["rbind", "rw", "nosuid", "nodev"]));
    }
    let etc_files: &[&str] = match record.etc {
        EtcFiles::All => &["passwd", "group", "hosts", "hostname"],
        EtcFiles::NetworkOnly => &["hosts", "hostname"],
    };
    for file in etc_files {
        mounts.push(bind(
            &dir.etc().join(file),
            &Path::new("/etc").join(file),
            &["bind", "ro", "nosuid", "nodev", "noexec"],
        ));
    }
    for (i, v) in record.volumes.iter().enumerate() {
        let mode = if v.readonly { "ro" } else { "rw" };
        let source = if record.userns.is_some() { dir.volume(i) } else { v.host.clone() };
        mounts.push(bind(&source, &v.container, &["rbind", mode]));
    }
    spec.set_mounts(Some(mounts));

    let mut linux = spec.linux().clone().unwrap_or_default();
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
    ]
    .into_iter()
    .filter(|typ| !(record.host_network && *typ == LinuxNamespaceType::Network))
    .map(|typ| {
        let mut ns = LinuxNamespace::default();
        ns.set_typ(typ);
        if typ == LinuxNamespaceType::Network {
            ns.set_path(Some(dir.netns()));
        }
        ns
    })
    .chain(record.userns.map(|_| {
        let mut ns = LinuxNamespace::default();
        ns.set_typ(LinuxNamespaceType::User);
        ns.set_path(Some(dir.userns()));
        ns
    }))
    .collect();
    linux.set_namespaces(Some(namespaces));
    linux.set_cgroups_path(Some(cgroup_path(&record.id)));
    linux.set_resources(Some(resources(record)));
    linux.set_seccomp(Some(seccomp::default_profile()));
    linux.set_rootfs_propagation(None);
    spec.set_linux(Some(linux));
    spec
}

fn resources(record: &ContainerRecord) -> LinuxResources {
    let mut res = LinuxResources::default();
    let mut deny_all = LinuxDeviceCgroup::default();
    deny_all.set_allow(false);
    deny_all.set_access(Some("rwm".to_string()));
    res.set_devices(Some(vec![deny_all]));
    if let Some(cpus) = record.cpus {
        // Shares only: the CFS quota is applied by the shim between create and start (see
        // `rootfs::apply_cpu_quota`), so the runtime's own setup inside the cgroup is not
        // throttled to the task's share, and the task is from its first instruction.
        let mut cpu = LinuxCpu::default();
        cpu.set_shares(Some((cpus * 1024.0).round().max(2.0) as u64));
        res.set_cpu(Some(cpu));
    }
    if let Some(bytes) = record.mem_bytes {
        let mut mem = LinuxMemory::default();
        mem.set_limit(Some(bytes as i64));
        res.set_memory(Some(mem));
    }
    if let Some(limit) = record.pids {
        let mut pids = LinuxPids::default();
        pids.set_limit(limit);
        res.set_pids(Some(pids));
    }
    res
}

fn bind(source: &Path, destination: &Path, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(destination.to_path_buf());
    m.set_typ(Some("bind".to_string()));
    m.set_source(Some(source.to_path_buf()));
    m.set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    m
}

fn tmpfs(destination: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(destination));
    m.set_typ(Some("tmpfs".to_string()));
    m.set_source(Some(PathBuf::from("tmpfs")));
    m.set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> ContainerRecord {
        ContainerRecord {
            id: "0123456789abcdef".into(),
            name: "web".into(),
            image: None,
            args: vec!["/bin/sh".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            uid: 65534,
            gid: 65534,
            hostname: "web".into(),
            cpus: Some(0.5),
            mem_bytes: Some(64 << 20),
            pids: Some(32),
            volumes: vec![],
            created: String::new(),
            stop_grace_secs: 10,
            log_max_bytes: 1 << 20,
            log_max_files: 2,
            etc: EtcFiles::All,
            host_network: false,
            disk_bytes: None,
            disk_paths: Vec::new(),
            userns: None,
        }
    }

    #[test]
    fn limits_become_cgroup_resources() {
        let dir = ContainerDir { dir: "/c/x".into() };
        let spec = build(&record(), &dir, &RootKind::Image);
        let res = spec.linux().as_ref().unwrap().resources().as_ref().unwrap();
        let cpu = res.cpu().as_ref().unwrap();
        assert_eq!((cpu.shares(), cpu.quota(), cpu.period()), (Some(512), None, None), "the quota comes at start");
        assert_eq!(cpu_quota_us(0.5), 50_000);
        assert_eq!(res.memory().as_ref().unwrap().limit(), Some(64 << 20));
        assert_eq!(res.pids().as_ref().unwrap().limit(), 32);
        assert_eq!(
            spec.linux().as_ref().unwrap().cgroups_path().as_deref(),
            Some(Path::new("/corral/0123456789abcdef"))
        );
    }

    #[test]
    fn processes_run_unprivileged() {
        let dir = ContainerDir { dir: "/c/x".into() };
        let spec = build(&record(), &dir, &RootKind::Image);
        let p = spec.process().as_ref().unwrap();
        assert_eq!((p.user().uid(), p.user().gid()), (65534, 65534));
        assert_eq!(p.no_new_privileges(), Some(true));
        let caps = p.capabilities().as_ref().unwrap();
        assert!(caps.bounding().as_ref().unwrap().is_empty() && caps.effective().as_ref().unwrap().is_empty());
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.masked_paths().as_ref().unwrap().iter().any(|p| p == "/proc/kcore"));
        assert!(linux.readonly_paths().as_ref().unwrap().iter().any(|p| p == "/proc/sys"));
        assert!(linux.seccomp().is_some());
        let ns: Vec<_> = linux.namespaces().as_ref().unwrap().iter().map(|n| n.typ()).collect();
        assert_eq!(ns.len(), 6);
    }

    #[test]
    fn host_tasks_get_a_read_only_root_and_a_sandbox() {
        let dir = ContainerDir { dir: "/c/x".into() };
        let spec = build(&record(), &dir, &RootKind::Host { dirs: vec!["/usr".into()] });
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
        let mounts = spec.mounts().as_ref().unwrap();
        assert!(mounts.iter().any(|m| m.destination() == Path::new("/usr")));
        assert!(mounts
            .iter()
            .any(|m| m.destination() == Path::new(SANDBOX_PATH)
                && m.source().as_deref() == Some(Path::new("/c/x/sandbox"))));
    }
}
