//! `corral`: the command-line interface. Parsing lives in `cli`, each command is a few lines of
//! glue in `commands`; `main` only maps errors to exit codes.

mod apps;
mod bench;
mod cli;
mod cluster;
mod commands;
mod jobs;
mod progress;

use std::process::ExitCode;

/// The exit code for corral's own errors (bad input, missing image, ...), as podman uses.
const EXIT_CORRAL_ERROR: u8 = 125;

fn main() -> ExitCode {
    // Die quietly when the reader of our output goes away (`corral ps | head`), as other
    // command-line tools do, instead of failing a print. The shim sets its own disposition.
    // SAFETY: restoring the default action of a signal before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match <cli::Cli as clap::Parser>::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // Usage errors are corral errors too: 125, like every other refusal.
            let _ = e.print();
            return ExitCode::from(EXIT_CORRAL_ERROR);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    commands::init_tracing(&cli);
    match commands::dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("corral: {e:#}");
            ExitCode::from(EXIT_CORRAL_ERROR)
        }
    }
}
