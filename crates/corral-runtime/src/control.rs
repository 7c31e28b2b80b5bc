//! Talking to a running shim: spawning it, and its control socket.
//!
//! The shim is started as `<corral> shim --root <root> <id>` with a pipe on fd 3. It writes one
//! line there, `ok <pid>` once the container runs or `error <message>` if it could not start,
//! and closes it. Its control socket (`shim.sock`) takes one line per connection, `signal <n>`
//! or `stop` (SIGTERM, then SIGKILL after the container's grace period), and answers `ok` or
//! `error <message>`.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::state::{ContainerDir, ExitStatus, State};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("starting the shim for container {id}: {source}")]
    Spawn {
        id: String,
        #[source]
        source: io::Error,
    },
    #[error("container {id} failed to start: {message}")]
    StartFailed { id: String, message: String },
    #[error("container {id} is not running (its shim does not answer): {source}")]
    NotRunning {
        id: String,
        #[source]
        source: io::Error,
    },
    #[error("container {id}: the shim refused: {message}")]
    Refused { id: String, message: String },
    #[error("container {id} was lost: its shim died without recording an exit")]
    Lost { id: String },
    #[error("waiting for container {id}: {source}")]
    Wait {
        id: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

/// Starts the shim for the created container in `dir`, detached from the caller's session, and
/// waits until it reports the container running. Returns the container's init pid.
pub fn start(corral_exe: &Path, state_root: &Path, dir: &ContainerDir) -> Result<i32, ControlError> {
    let id = dir.id();
    let spawn_err = |source| ControlError::Spawn { id: id.clone(), source };
    let (read_end, write_end) = nix::unistd::pipe().map_err(|e| spawn_err(e.into()))?;
    let log = std::fs::File::create(dir.shim_log()).map_err(spawn_err)?;
    let write_fd = write_end.as_raw_fd();
    let mut cmd = Command::new(corral_exe);
    cmd.arg("shim").arg("--root").arg(state_root).arg(&id);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::dup2(write_fd, 3) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(spawn_err)?;
    drop(write_end);
    let mut line = String::new();
    let read = BufReader::new(std::fs::File::from(read_end)).read_line(&mut line);
    // The shim double-forks nothing: it stays our child until we exit, then init adopts it.
    // Reap it only if it already ended (it failed).
    let _ = child.try_wait();
    read.map_err(spawn_err)?;
    parse_ready(&id, line.trim_end())
}

fn parse_ready(id: &str, line: &str) -> Result<i32, ControlError> {
    if let Some(pid) = line.strip_prefix("ok ").and_then(|p| p.parse().ok()) {
        return Ok(pid);
    }
    let message = match line.strip_prefix("error ") {
        Some(m) => m.to_string(),
        None if line.is_empty() => "the shim exited without a word (see its shim.log)".to_string(),
        None => format!("unexpected shim reply {line:?}"),
    };
    Err(ControlError::StartFailed { id: id.to_string(), message })
}

/// The write end of the ready pipe, inside the shim.
pub fn ready_pipe() -> Option<std::fs::File> {
    // SAFETY: fd 3 is the ready pipe by the spawn contract above; we check it is open first.
    let open = unsafe { libc::fcntl(3, libc::F_GETFD) } >= 0;
    open.then(|| std::fs::File::from(unsafe { OwnedFd::from_raw_fd(3) }))
}

/// Sends one control command to the container's shim.
pub fn send(dir: &ContainerDir, command: &str) -> Result<(), ControlError> {
    let id = dir.id();
    let not_running = |source| ControlError::NotRunning { id: id.clone(), source };
    let mut s = UnixStream::connect(dir.socket()).map_err(not_running)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).map_err(not_running)?;
    writeln!(s, "{command}").map_err(not_running)?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).map_err(not_running)?;
    match reply.trim_end() {
        "ok" => Ok(()),
        other => Err(ControlError::Refused { id, message: other.strip_prefix("error ").unwrap_or(other).to_string() }),
    }
}

/// Blocks until the container has ended and returns how. Watches the container directory with
/// inotify (the shim renames status.json into place), waking at least once a second to notice a
/// shim that died without a word.
pub fn wait(dir: &ContainerDir) -> Result<ExitStatus, ControlError> {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    use std::os::fd::AsFd;
    let id = dir.id();
    let wait_err = |e: nix::errno::Errno| ControlError::Wait { id: id.clone(), source: e.into() };
    let ino = Inotify::init(InitFlags::IN_CLOEXEC).map_err(wait_err)?;
    ino.add_watch(&dir.dir, AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CREATE | AddWatchFlags::IN_CLOSE_WRITE)
        .map_err(wait_err)?;
    loop {
        match dir.state()? {
            State::Exited(s) => return Ok(s),
            State::Lost => return Err(ControlError::Lost { id }),
            State::Running { .. } | State::Created => {
                let mut fds = [nix::poll::PollFd::new(ino.as_fd(), nix::poll::PollFlags::POLLIN)];
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(1000u16));
                if fds[0].revents().is_some_and(|r| !r.is_empty()) {
                    let _ = ino.read_events();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_lines_are_parsed() {
        assert_eq!(parse_ready("x", "ok 42").unwrap(), 42);
        assert!(
            matches!(parse_ready("x", "error boom"), Err(ControlError::StartFailed { message, .. }) if message == "boom")
        );
        assert!(
            matches!(parse_ready("x", ""), Err(ControlError::StartFailed { message, .. }) if message.contains("shim.log"))
        );
    }
}
