//! One module per subcommand, and what they share: the outcome of a batch run (which decides
//! the exit code), one-line error reporting and the timing summary.

pub mod detokenize;
pub mod eval;
pub mod export;
pub mod generate;
pub mod info;
pub mod reconstruct;
pub mod tokenize;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::cli::{Cli, Command};

/// How a batch command went: items that worked and items that failed (each failure was
/// reported on stderr as it happened).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Items processed successfully.
    pub succeeded: usize,
    /// Items that failed.
    pub failed: usize,
}

impl Outcome {
    /// Success when at least one item worked, or when nothing failed.
    pub fn exit_code(self) -> ExitCode {
        if self.succeeded > 0 || self.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
    }

    /// Reports one failed item: `error: <message>` on one line of stderr.
    pub fn fail(&mut self, message: impl AsRef<str>) {
        eprintln!("error: {}", crate::inputs::one_line(message.as_ref()));
        self.failed += 1;
    }

    /// A one-item outcome.
    pub fn done() -> Self {
        Self { succeeded: 1, failed: 0 }
    }
}

/// Runs the subcommand.
///
/// # Errors
/// Errors that stop the whole command (bad options, models that cannot be loaded, an output
/// that cannot be written); per-item errors are counted in the [`Outcome`] instead.
pub fn run(cli: Cli) -> Result<Outcome> {
    let g = &cli.global;
    match &cli.command {
        Command::Tokenize(a) => tokenize::run(g, a),
        Command::Detokenize(a) => detokenize::run(g, a),
        Command::Reconstruct(a) => reconstruct::run(g, a),
        Command::Generate(a) => generate::run(g, a),
        Command::Eval(e) => eval::run(g, e),
        Command::Info(a) => info::run(g, a),
        Command::Export(a) => export::run(a),
    }
}

/// Measures the work of a command, excluding model loading.
#[derive(Debug)]
pub struct Timer {
    start: Instant,
}

impl Timer {
    /// Starts now.
    pub fn start() -> Self {
        Self { start: Instant::now() }
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Prints `<verb> N images in X s (Y images/s) on <device>` on stderr.
    pub fn summary(&self, verb: &str, images: usize) {
        let s = self.elapsed().as_secs_f64();
        let rate = if s > 0.0 { images as f64 / s } else { 0.0 };
        eprintln!("{verb} {images} image{} in {s:.2} s ({rate:.2} images/s)", if images == 1 { "" } else { "s" });
    }
}
