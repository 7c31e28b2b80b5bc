//! End-to-end tests of the `corral` binary with real containers (CI runs them as root).

mod support;

mod build;
mod cluster;
mod containers;
mod fuzz;
mod images;
mod jobs;
mod netns;
mod registry;
mod services;
mod tidy;
mod trust;
