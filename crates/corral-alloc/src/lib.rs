//! Resources and their allocation, in the Mesos model: the resource grammar, roles with weights
//! and quotas, and the allocator that offers agents' resources to frameworks by weighted
//! Dominant Resource Fairness.
//!
//! Pure: no I/O, no clock (callers pass the time in).

pub mod allocator;
pub mod attributes;
pub mod resources;
pub mod roles;

pub use allocator::{AllocError, Allocator, Offer, Operation};
pub use resources::Resources;
pub use roles::{Role, RoleConfig};
