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
        Ok(cli) if matches!(cli.command, cli::Command::Master(_) | cli::Command::Agent(_) | cli::Command::Up(_)) => {
            // Daemons must outlive a peer that hangs up: a write to a closed connection (TLS
            // records go out with writev, which cannot ask the kernel not to signal) is an
            // error to handle, never a reason to die.
            // SAFETY: as above, before any thread exists.
            unsafe {
                libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            }
            cli
        }
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
            eprintln!("corral: {}", describe(&e));
            ExitCode::from(EXIT_CORRAL_ERROR)
        }
    }
}

/// An error and its causes on one line, each said once: a message that already ends with its
/// cause's text (`unpacking layer X: <the cause>`) does not repeat it.
fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    /// As libraries' errors are: the message includes the cause, which is also its source.
    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "unpacking layer x: {}", self.0)
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn each_cause_is_said_once() {
        let e = anyhow::Error::new(Outer(std::io::Error::other("path contains '..'"))).context("loading ./l");
        assert_eq!(super::describe(&e), "loading ./l: unpacking layer x: path contains '..'");
        let e = anyhow::anyhow!("plain").context("outer");
        assert_eq!(super::describe(&e), "outer: plain");
    }
}
