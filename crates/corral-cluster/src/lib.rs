//! The cluster: the master (control plane, allocator, built-in task framework, durable state)
//! and the agent (runs tasks as corral containers and reports their states), talking HTTP/JSON.
//!
//! `task` is the task lifecycle (pure); `wire` the JSON of every API (from `corral_client`); `store` the master's
//! embedded database; `master` and `agent` the two processes' logic, I/O at their edges;
//! `chunks` a channel-fed response body (logs, server-sent events).

pub mod agent;
mod chunks;
pub mod https;
pub mod master;
pub mod pki;
pub mod store;
pub mod task;

/// The JSON of every API, shared with the client crate.
pub use corral_client::wire;
