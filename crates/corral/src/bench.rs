//! `corral bench`: measurements against peers, run by hand (never in pass/fail tests).

use std::path::Path;

use anyhow::Result;

use crate::cli::BenchCommand;

pub fn run(_root: &Path, cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Lifecycle { .. } => anyhow::bail!("not yet"),
    }
}
