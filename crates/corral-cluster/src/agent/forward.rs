//! Port mappings for tasks on a network of their own (Marathon's BRIDGE), until CNI brings
//! real bridges: a user-space TCP proxy, as docker-proxy is. Each mapped host port is a
//! listener on the agent; each connection is paired with one made inside the task's network
//! namespace by a thread that entered it (`setns` changes only the calling thread), and bytes
//! are copied both ways.

use std::fs::File;
use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::mpsc;

use crate::wire::PortForward;

/// The listeners of one task; dropping it closes them (open connections finish on their own).
pub struct Forwarder {
    listeners: Vec<TcpListener>,
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        for l in &self.listeners {
            // Wakes the accepting thread with an error, which ends it.
            let _ = nix::sys::socket::shutdown(std::os::fd::AsRawFd::as_raw_fd(l), nix::sys::socket::Shutdown::Both);
        }
    }
}

type Connect = (u16, mpsc::Sender<io::Result<TcpStream>>);

/// Starts forwarding `mappings` from the agent's network into the namespace pinned at `netns`.
pub fn start(netns: &Path, mappings: &[PortForward]) -> io::Result<Forwarder> {
    let ns = File::open(netns)?;
    let (connect_tx, connect_rx) = mpsc::channel::<Connect>();
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let entered = nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from);
        let ok = entered.is_ok();
        let _ = ready_tx.send(entered);
        if !ok {
            return;
        }
        for (port, reply) in connect_rx {
            let _ = reply.send(TcpStream::connect(("127.0.0.1", port)));
        }
    });
    ready_rx.recv().map_err(|_| io::Error::other("the connector thread died"))??;
    let mut listeners = Vec::new();
    for m in mappings {
        let listener = TcpListener::bind(("0.0.0.0", m.host_port))?;
        listeners.push(listener.try_clone()?);
        let (connect_tx, container_port) = (connect_tx.clone(), m.container_port);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let (reply_tx, reply_rx) = mpsc::channel();
                if connect_tx.send((container_port, reply_tx)).is_err() {
                    return;
                }
                std::thread::spawn(move || match reply_rx.recv() {
                    Ok(Ok(upstream)) => splice(client, upstream),
                    _ => {
                        let _ = client.shutdown(Shutdown::Both);
                    }
                });
            }
        });
    }
    Ok(Forwarder { listeners })
}

/// Copies both ways until each side closes, passing on half-closes.
fn splice(a: TcpStream, b: TcpStream) {
    let (Ok(mut a2), Ok(mut b2)) = (a.try_clone(), b.try_clone()) else { return };
    let back = std::thread::spawn(move || {
        let _ = io::copy(&mut b2, &mut a2);
        let _ = a2.shutdown(Shutdown::Write);
    });
    let (mut a, mut b) = (a, b);
    let _ = io::copy(&mut a, &mut b);
    let _ = b.shutdown(Shutdown::Write);
    let _ = back.join();
}
