//! The master and agents in one process, over real TCP, with agents whose containers are
//! played by `FakeRuntime`: the whole path (offers, launches, status updates, kills,
//! reconciliation, the Marathon API) without root, in seconds.

mod fake_agents;
mod jobs;
