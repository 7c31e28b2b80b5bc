//! The services framework's decisions, with no I/O: Marathon app definitions (their JSON, the
//! defaults and the validation), placement constraints, and the reconciler that turns apps and
//! their tasks into launches and kills, deployment by deployment. The master feeds it snapshots
//! and a clock and carries out what it decides.

pub mod app;
pub mod constraints;
pub mod plan;
pub mod wire;

pub use app::{App, AppId, Invalid, Violation};
pub use constraints::{Constraint, Operator};
