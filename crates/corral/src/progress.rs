//! How `corral build` shows its progress: plain lines, or with a spinner on a terminal.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use corral_build::builder::Progress;
use corral_image::Digest;

const SPINNER: &[char] = &['|', '/', '-', '\\'];

pub struct BuildProgress {
    terminal: bool,
    current: String,
    started: Instant,
    frame: usize,
    /// The spinner line is on screen and must be cleared before other output.
    spinning: bool,
}

impl BuildProgress {
    pub fn new() -> BuildProgress {
        BuildProgress {
            terminal: std::io::stderr().is_terminal(),
            current: String::new(),
            started: Instant::now(),
            frame: 0,
            spinning: false,
        }
    }

    fn clear(&mut self) {
        if self.spinning {
            eprint!("\r\x1b[2K");
            self.spinning = false;
        }
    }

    pub fn finish(&mut self) {
        self.clear();
    }
}

impl Progress for BuildProgress {
    fn step(&mut self, number: usize, total: usize, text: &str) {
        self.clear();
        self.current = format!("STEP {number}/{total}: {text}");
        self.started = Instant::now();
        eprintln!("{}", self.current);
    }

    fn cached(&mut self, id: &Digest) {
        self.clear();
        eprintln!("--> Using cache {}", id.short());
    }

    fn output(&mut self, bytes: &[u8]) {
        self.clear();
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(bytes);
        self.tick();
    }

    fn tick(&mut self) {
        if !self.terminal {
            return;
        }
        self.frame = (self.frame + 1) % SPINNER.len();
        let line: String = self.current.chars().take(70).collect();
        eprint!("\r\x1b[2K{} {} ({:.1}s)", SPINNER[self.frame], line, self.started.elapsed().as_secs_f64());
        self.spinning = true;
    }

    fn done(&mut self, id: &Digest, took: Duration) {
        self.clear();
        if took.is_zero() {
            eprintln!("--> {}", id.short());
        } else {
            eprintln!("--> {} ({:.2}s)", id.short(), took.as_secs_f64());
        }
    }

    fn warning(&mut self, message: &str) {
        self.clear();
        eprintln!("warning: {message}");
    }
}
