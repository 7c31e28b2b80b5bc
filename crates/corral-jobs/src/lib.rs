//! The jobs framework's decisions, pure like the allocator and the services framework: no I/O,
//! no clock (the time is an argument). `schedule` parses Chronos's ISO 8601 repeating intervals
//! and says when the k-th run is due; `wire` is Chronos's job JSON; `job` validates a definition
//! into a [`job::Job`], naming every field that is wrong; `dag` checks that dependent jobs form a
//! DAG of known jobs; `plan` decides, from a job's durable state and the time, which run is due
//! now (each scheduled run has an index, and the index of the next one is what is stored, so a
//! run is launched once whatever restarts in between).

pub mod dag;
pub mod job;
pub mod plan;
pub mod schedule;
pub mod wire;
