//! The per-container monitor (`corral shim`): a small, single-threaded process that owns one
//! container for its whole life, like containerd-shim or conmon.
//!
//! It mounts the root filesystem, makes the network namespace, creates and starts the container
//! with youki's `libcontainer` (which forks: the container's init becomes this process's child,
//! which is why this must not run inside a multi-threaded program), copies the container's
//! stdout and stderr into rotated log files, answers control commands on a unix socket, waits on
//! the init process through a pidfd (so no exit can be missed), records how it ended (including
//! an OOM kill) in `status.json`, then removes the cgroups and mounts and exits.

pub mod filter;

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use corral_runtime::control;
use corral_runtime::logs::{LogWriter, Stream};
use corral_runtime::rootfs;
use corral_runtime::state::{ContainerDir, ContainerRecord, Containers, ExitStatus};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

/// How often a container with a disk limit has its disk use measured.
const DISK_CHECK: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error(transparent)]
    State(#[from] corral_runtime::state::StateError),
    #[error("{0}")]
    Start(String),
    #[error("{action}: {source}")]
    Io {
        action: &'static str,
        #[source]
        source: io::Error,
    },
}

fn io_err(action: &'static str) -> impl FnOnce(io::Error) -> ShimError {
    move |source| ShimError::Io { action, source }
}

/// Runs the shim for container `id` under `state_root` until the container has ended.
pub fn run(state_root: &Path, id: &str) -> Result<(), ShimError> {
    let containers = Containers::new(state_root);
    let dir = containers.dir_of(id);
    let record = dir.read_record()?;
    fs::write(dir.shim_pid(), std::process::id().to_string()).map_err(io_err("writing shim.pid"))?;
    // SAFETY: ignoring SIGPIPE and SIGHUP, so a vanished client or terminal cannot kill us.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    let mut ready = control::ready_pipe();
    let started = start(state_root, &dir, &record);
    let mut running = match started {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(container = id, error = %e, "container failed to start");
            if let Some(mut r) = ready.take() {
                let _ = writeln!(r, "error {}", one_line(&e.to_string()));
            }
            let _ = rootfs::teardown(&dir);
            let _ = rootfs::remove_cgroups(id);
            return Err(e);
        }
    };
    tracing::info!(container = id, pid = running.pid.as_raw(), "container running");
    if let Some(mut r) = ready.take() {
        let _ = writeln!(r, "ok {}", running.pid);
    }
    let status = running.supervise(&dir, &record);
    tracing::info!(container = id, status = %status.describe(), "container ended");
    // Clean up first, record the end last: whoever sees status.json may rely on no cgroup or
    // mount of the container being left.
    if let Err(e) = running.container.delete(true) {
        tracing::warn!(container = id, error = %e, "libcontainer delete failed");
    }
    let _ = fs::remove_file(dir.socket());
    let cleanup = rootfs::teardown(&dir).and_then(|()| rootfs::remove_cgroups(id));
    if let Err(e) = &cleanup {
        tracing::error!(container = id, error = %e, "cleanup after the container failed");
    }
    dir.write_status(&status)?;
    Ok(cleanup?)
}

/// Removes terminal colour codes from a log line.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

struct Running {
    container: Container,
    pid: Pid,
    pidfd: OwnedFd,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    listener: UnixListener,
}

fn start(state_root: &Path, dir: &ContainerDir, record: &ContainerRecord) -> Result<Running, ShimError> {
    let rootfs_path = dir.rootfs();
    let check_root: PathBuf = match &record.image {
        Some(image) => {
            let store = corral_image::Store::open(state_root).map_err(|e| ShimError::Start(e.to_string()))?;
            let mut layers = Vec::new();
            for l in &image.layers {
                let d =
                    l.parse().map_err(|e: corral_image::digest::ParseDigestError| ShimError::Start(e.to_string()))?;
                layers.push(store.unpacked_layer(&d).map_err(|e| ShimError::Start(e.to_string()))?);
            }
            match record.userns {
                Some(root) => {
                    corral_runtime::userns::pin(root, &dir.userns(), &dir.netns())
                        .map_err(io_err("making the user namespace"))?;
                    let ns =
                        corral_runtime::userns::open(&dir.userns()).map_err(io_err("opening the user namespace"))?;
                    rootfs::mount_overlay(dir, &layers, Some((&ns, root)))?;
                    rootfs::bind_volumes(dir, record)?;
                }
                None => rootfs::mount_overlay(dir, &layers, None)?,
            }
            rootfs_path.clone()
        }
        None => PathBuf::from("/"),
    };
    let program = &record.args[0];
    if !rootfs::find_program(&check_root, program, &record.env, &record.cwd) {
        return Err(ShimError::Start(format!("command not found in the container: {program}")));
    }
    if !record.host_network && record.userns.is_none() {
        corral_runtime::netns::create(&dir.netns()).map_err(io_err("creating the network namespace"))?;
    }

    let (out_r, out_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io_err("creating pipes")(e.into()))?;
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io_err("creating pipes")(e.into()))?;
    let youki_root = dir.youki_root();
    fs::create_dir_all(&youki_root).map_err(io_err("creating the runtime state directory"))?;
    let prepared = filter::prepare(&dir.bundle(), &dir.runtime_bundle(), &seccomp_cache(state_root));
    let lc = |e: libcontainer::error::LibcontainerError| ShimError::Start(e.to_string());
    let mut builder = ContainerBuilder::new(record.id.clone(), SyscallType::default())
        .with_root_path(&youki_root)
        .map_err(lc)?
        .with_stdout(out_w)
        .with_stderr(err_w);
    if let Some(executor) = prepared.executor {
        builder = builder.with_executor(executor);
    }
    let mut container = builder
        .validate_id()
        .map_err(lc)?
        .as_init(&prepared.bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| {
            // The init process says why it gave up on its stderr; pass the gist on.
            set_nonblocking(err_r.as_fd());
            let mut detail = vec![0u8; 16 * 1024];
            let n = fs::File::from(err_r.try_clone().expect("dup")).read(&mut detail).unwrap_or(0);
            let detail = String::from_utf8_lossy(&detail[..n]);
            tracing::error!(output = %detail, "container init output");
            match detail.lines().rev().find(|l| l.contains("ERROR")) {
                Some(line) => ShimError::Start(format!("{e}: {}", strip_ansi(line).trim())),
                None => lc(e),
            }
        })?;
    let listener = bind_socket(&dir.socket())?;
    if let Some(cpus) = record.cpus {
        if let Err(e) = rootfs::apply_cpu_quota(&record.id, cpus) {
            let _ = container.delete(true);
            return Err(ShimError::Start(format!("setting the cpu limit: {e}")));
        }
    }
    // Before the task's first instruction: its cgroup files are read-only, even to its root.
    if let Some(pid) = container.pid() {
        if let Err(e) = rootfs::seal_cgroups(pid.as_raw()) {
            let _ = container.delete(true);
            return Err(ShimError::Start(format!("making the cgroup filesystems read-only: {e}")));
        }
    }
    if let Err(e) = container.start() {
        let _ = container.delete(true);
        return Err(lc(e));
    }
    let pid = container.pid().ok_or_else(|| ShimError::Start("libcontainer reported no init pid".into()))?;
    fs::write(dir.init_pid(), pid.to_string()).map_err(io_err("writing init.pid"))?;
    let pidfd = pidfd_open(pid).map_err(io_err("opening a pidfd for the container"))?;
    for fd in [&out_r, &err_r] {
        set_nonblocking(fd.as_fd());
    }
    Ok(Running { container, pid, pidfd, stdout: Some(out_r), stderr: Some(err_r), listener })
}

impl Running {
    /// Copies output, answers control commands and escalates stops, until init exits.
    fn supervise(&mut self, dir: &ContainerDir, record: &ContainerRecord) -> ExitStatus {
        let mut log = LogWriter::open(&dir.logs(), record.log_max_bytes, record.log_max_files).ok();
        if log.is_none() {
            tracing::error!(container = record.id, "cannot open the log file; output is dropped");
        }
        let mut kill_at: Option<Instant> = None;
        let mut exited: Option<WaitStatus> = None;
        let mut drain_until: Option<Instant> = None;
        // Mesos's `disk/du`: its disk use measured every few seconds; past its limit it is killed.
        let mut disk_check = record.disk_bytes.map(|_| Instant::now() + DISK_CHECK);
        let mut disk_exceeded = None;
        loop {
            if exited.is_some() && self.stdout.is_none() && self.stderr.is_none() {
                break;
            }
            if drain_until.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let now = Instant::now();
            if let Some(at) = kill_at.filter(|at| now >= *at) {
                let _ = at;
                let _ = pidfd_send_signal(self.pidfd.as_fd(), libc::SIGKILL);
                kill_at = None;
            }
            if let (Some(at), Some(limit)) = (disk_check.filter(|at| now >= *at), record.disk_bytes) {
                let used = corral_runtime::rootfs::disk_usage(&record.disk_paths);
                if used > limit && exited.is_none() {
                    let why = format!(
                        "it used {} MiB of disk, past its limit of {} MiB",
                        used.div_ceil(1 << 20),
                        limit.div_ceil(1 << 20)
                    );
                    tracing::warn!(container = record.id, used, limit, "over its disk limit: killing it");
                    let _ = pidfd_send_signal(self.pidfd.as_fd(), libc::SIGKILL);
                    disk_exceeded = Some(why);
                    disk_check = None;
                } else {
                    disk_check = Some(at + DISK_CHECK);
                }
            }
            let deadline = [kill_at, drain_until, disk_check.filter(|_| exited.is_none())].into_iter().flatten().min();
            let timeout = deadline.map_or(PollTimeout::NONE, |d| {
                PollTimeout::try_from(d.saturating_duration_since(now).as_millis().min(60_000) as i32 + 1)
                    .unwrap_or(PollTimeout::MAX)
            });
            let mut fds = Vec::with_capacity(4);
            let out_fd = self.stdout.as_ref().map(|f| f.as_fd());
            let err_fd = self.stderr.as_ref().map(|f| f.as_fd());
            let mut slots = [None; 4];
            for (i, fd) in [out_fd, err_fd, (exited.is_none()).then(|| self.pidfd.as_fd()), Some(self.listener.as_fd())]
                .into_iter()
                .enumerate()
            {
                if let Some(fd) = fd {
                    slots[i] = Some(fds.len());
                    fds.push(PollFd::new(fd, PollFlags::POLLIN));
                }
            }
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "poll failed");
                    break;
                }
            }
            let ready = |slot: Option<usize>| slot.is_some_and(|i| fds[i].revents().is_some_and(|r| !r.is_empty()));
            let (out_ready, err_ready, pid_ready, ctl_ready) =
                (ready(slots[0]), ready(slots[1]), ready(slots[2]), ready(slots[3]));
            drop(fds);
            if out_ready && !copy_output(&mut self.stdout, Stream::Stdout, log.as_mut()) {
                self.stdout = None;
            }
            if err_ready && !copy_output(&mut self.stderr, Stream::Stderr, log.as_mut()) {
                self.stderr = None;
            }
            if pid_ready {
                match waitpid(self.pid, None) {
                    Ok(ws) => {
                        exited = Some(ws);
                        // Everything else in the container died with its init; its output
                        // pipes close soon. Bound the wait in case something holds them.
                        drain_until = Some(Instant::now() + Duration::from_secs(2));
                    }
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "waitpid failed");
                        break;
                    }
                }
            }
            if ctl_ready {
                if let Ok((conn, _)) = self.listener.accept() {
                    self.answer(conn, record, &mut kill_at);
                }
            }
        }
        let oom_killed = rootfs::oom_killed(&record.id);
        let (code, signal) = match exited {
            Some(WaitStatus::Exited(_, c)) => (Some(c), None),
            Some(WaitStatus::Signaled(_, s, _)) => (None, Some(s as i32)),
            _ => (None, None),
        };
        ExitStatus { code, signal, oom_killed, finished: corral_runtime::now(), error: None, disk_exceeded }
    }

    fn answer(&mut self, mut conn: UnixStream, record: &ContainerRecord, kill_at: &mut Option<Instant>) {
        let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 256];
        let mut line = Vec::new();
        while !line.contains(&b'\n') && line.len() < 256 {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => line.extend_from_slice(&buf[..n]),
            }
        }
        let text = String::from_utf8_lossy(&line);
        let reply = match text.trim().split_once(' ').unwrap_or((text.trim(), "")) {
            ("signal", n) => match n.parse::<i32>() {
                Ok(sig) => pidfd_send_signal(self.pidfd.as_fd(), sig)
                    .map(|_| "ok".to_string())
                    .unwrap_or_else(|e| format!("error {e}")),
                Err(_) => format!("error bad signal {n:?}"),
            },
            ("stop", _) => {
                let _ = pidfd_send_signal(self.pidfd.as_fd(), libc::SIGTERM);
                let grace = Duration::from_secs(record.stop_grace_secs);
                let at = Instant::now() + grace;
                *kill_at = Some(kill_at.map_or(at, |k| k.min(at)));
                "ok".to_string()
            }
            (other, _) => format!("error unknown command {other:?}"),
        };
        let _ = writeln!(conn, "{reply}");
    }
}

/// Copies what is available from a pipe to the log. False when the pipe is closed.
fn copy_output(pipe: &mut Option<OwnedFd>, stream: Stream, log: Option<&mut LogWriter>) -> bool {
    let Some(fd) = pipe.as_ref() else {
        return false;
    };
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: a borrowed view of an fd we own, for the duration of this read only.
    let mut f = std::mem::ManuallyDrop::new(unsafe { fs::File::from_raw_fd(fd.as_raw_fd()) });
    let mut log = log;
    loop {
        match f.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => {
                if let Some(l) = log.as_deref_mut() {
                    if let Err(e) = l.write(stream, &buf[..n], &corral_runtime::now()) {
                        tracing::warn!(error = %e, "writing the container log failed");
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

fn bind_socket(path: &Path) -> Result<UnixListener, ShimError> {
    let _ = fs::remove_file(path);
    let l = UnixListener::bind(path).map_err(io_err("binding the control socket"))?;
    l.set_nonblocking(true).map_err(io_err("binding the control socket"))?;
    Ok(l)
}

fn set_nonblocking(fd: BorrowedFd<'_>) {
    // SAFETY: fcntl on a valid fd we own.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
    let rc = unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), sig, std::ptr::null::<libc::siginfo_t>(), 0)
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Runs the OCI bundle at `bundle` to completion, as `crun run` does: create, start, wait,
/// delete, in this (single-threaded) process. Returns the shell exit code. Used to measure the
/// runtime layer on its own, against crun and runc, on the same bundle. `state_dir` holds
/// libcontainer's root (`runtime/`), the seccomp cache (`seccomp/`) and, while the container
/// exists, the copy of its spec (`bundles/<id>/`).
pub fn run_bundle(bundle: &Path, state_dir: &Path, id: &str) -> Result<i32, ShimError> {
    let runtime_root = state_dir.join("runtime");
    fs::create_dir_all(&runtime_root).map_err(io_err("creating the runtime state directory"))?;
    let lc = |e: libcontainer::error::LibcontainerError| ShimError::Start(e.to_string());
    let t0 = std::time::Instant::now();
    let scratch = state_dir.join("bundles").join(id);
    let prepared = filter::prepare(bundle, &scratch, &seccomp_cache(state_dir));
    let _copy = RemoveOnDrop(&scratch);
    let tp = std::time::Instant::now();
    let mut builder =
        ContainerBuilder::new(id.to_string(), SyscallType::default()).with_root_path(&runtime_root).map_err(lc)?;
    if let Some(executor) = prepared.executor {
        builder = builder.with_executor(executor);
    }
    let mut container = builder
        .validate_id()
        .map_err(lc)?
        .as_init(&prepared.bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(lc)?;
    let t1 = std::time::Instant::now();
    container.start().map_err(lc)?;
    let t2 = std::time::Instant::now();
    let pid = container.pid().ok_or_else(|| ShimError::Start("libcontainer reported no init pid".into()))?;
    let code = loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, c)) => break c,
            Ok(WaitStatus::Signaled(_, s, _)) => break 128 + s as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io_err("waiting for the container")(e.into())),
        }
    };
    let t3 = std::time::Instant::now();
    container.delete(true).map_err(lc)?;
    let t4 = std::time::Instant::now();
    tracing::debug!(prepare = ?(tp - t0), create = ?(t1 - tp), start = ?(t2 - t1), wait = ?(t3 - t2), delete = ?(t4 - t3), "bundle run phases");
    Ok(code)
}

/// Where compiled seccomp programs are cached, under corral's state root.
pub fn seccomp_cache(state_root: &Path) -> PathBuf {
    state_root.join("seccomp")
}

/// Removes a scratch directory however the function that made it returns.
struct RemoveOnDrop<'a>(&'a Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(self.0) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.0.display(), error = %e, "could not remove a scratch directory");
            }
        }
    }
}
