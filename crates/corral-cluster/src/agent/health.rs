//! Health checks the agent runs next to its tasks (Marathon's HTTP, TCP and COMMAND checks):
//! one loop per checked task, reporting each result as a status update with `healthy` set.
//! The master counts consecutive failures and decides on replacement.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::wire;

/// One probe: HTTP passes on a 2xx or 3xx status, TCP on a connection, COMMAND on exit 0.
/// HTTP and TCP go to the agent's loopback (tasks on host networking listen there);
/// COMMAND runs in the task's namespaces (`init_pid`), as root, with `/bin/sh -c`.
pub fn probe(check: &wire::HealthCheck, init_pid: Option<i32>) -> Result<(), String> {
    let timeout = Duration::from_millis(check.timeout_ms.max(100));
    let addr = SocketAddr::from(([127, 0, 0, 1], check.port));
    match check.kind.as_str() {
        "tcp" => {
            TcpStream::connect_timeout(&addr, timeout).map(|_| ()).map_err(|e| format!("connecting to {addr}: {e}"))
        }
        "https" => {
            // Marathon does not verify the task's certificate either: the check is liveness.
            let tls = ureq::tls::TlsConfig::builder().disable_verification(true).build();
            let agent = ureq::Agent::config_builder()
                .tls_config(tls)
                .http_status_as_error(false)
                .timeout_global(Some(timeout))
                .build()
                .new_agent();
            let url = format!("https://127.0.0.1:{}{}", check.port, check.path);
            let code = agent.get(&url).call().map_err(|e| format!("GET {url}: {e}"))?.status().as_u16();
            if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(format!("GET {} answered {code}", check.path))
            }
        }
        "http" => {
            let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connecting to {addr}: {e}"))?;
            s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
            s.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
            let request = format!(
                "GET {} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nUser-Agent: corral-health-check\r\n\r\n",
                check.path, check.port
            );
            s.write_all(request.as_bytes()).map_err(|e| format!("sending to {addr}: {e}"))?;
            let mut head = [0u8; 64];
            let mut n = 0;
            while n < 12 {
                let got = s.read(&mut head[n..]).map_err(|e| format!("reading from {addr}: {e}"))?;
                if got == 0 {
                    break;
                }
                n += got;
            }
            let line = String::from_utf8_lossy(&head[..n]);
            let code: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("{addr} did not answer HTTP: {line:?}"))?;
            let pass =
                if check.statuses.is_empty() { (200..400).contains(&code) } else { check.statuses.contains(&code) };
            if pass {
                Ok(())
            } else {
                Err(format!("GET {} answered {code}", check.path))
            }
        }
        "command" => {
            let pid = init_pid.ok_or("the task has no process to run the check next to")?;
            let child = Command::new("nsenter")
                .args(["-t", &pid.to_string(), "-m", "-u", "-i", "-n", "-p", "--", "/bin/sh", "-c", &check.command])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("running nsenter: {e}"))?;
            // A thread waits (and reaps); this one gives up at the timeout and kills.
            let child_pid = child.id() as i32;
            let (tx, rx) = std::sync::mpsc::channel();
            let mut child = child;
            std::thread::spawn(move || {
                let _ = tx.send(child.wait());
            });
            match rx.recv_timeout(timeout) {
                Ok(Ok(status)) if status.success() => Ok(()),
                Ok(Ok(status)) => Err(format!("the command exited with {status}")),
                Ok(Err(e)) => Err(format!("waiting for the command: {e}")),
                Err(_) => {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child_pid), nix::sys::signal::SIGKILL);
                    Err("the command timed out".into())
                }
            }
        }
        other => Err(format!("unknown health check kind {other:?}")),
    }
}

/// Reads a container's init pid file.
pub fn read_pid(path: &PathBuf) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}
