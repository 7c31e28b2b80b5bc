//! `corral`: the command-line interface. Parsing lives in `cli`, each command is a few lines of
//! glue in `commands`; `main` only maps errors to exit codes.

mod bench;
mod cli;
mod commands;

use std::process::ExitCode;

/// The exit code for corral's own errors (bad input, missing image, ...), as podman uses.
const EXIT_CORRAL_ERROR: u8 = 125;

fn main() -> ExitCode {
    let cli = <cli::Cli as clap::Parser>::parse();
    commands::init_tracing(&cli);
    match commands::dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("corral: {e:#}");
            ExitCode::from(EXIT_CORRAL_ERROR)
        }
    }
}
