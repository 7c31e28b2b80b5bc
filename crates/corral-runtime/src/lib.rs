//! Containers on one machine, without a daemon: parsing what users type, creating a container
//! on disk (record, OCI bundle, generated `/etc`), its state as any corral process sees it, its
//! logs, and the client side of its shim. The shim itself (which links youki's libcontainer)
//! lives in `corral-shim`.

pub mod control;
pub mod create;
pub mod logs;
pub mod netns;
pub mod parse;
pub mod rootfs;
pub mod seccomp;
pub mod spec;
pub mod state;
pub mod userns;

/// Now, as RFC 3339 with nanoseconds, the form every record uses.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}
