//! `titok`: tokenize images into a few dozen 1D tokens (TiTok), reconstruct them, generate new
//! images (MaskGIT), evaluate tokenizers and generators on datasets, and inspect or convert
//! model folders. See the book chapter "The titok command line".
//!
//! Exit status: 0 when at least one item was processed (bad files are reported one line each on
//! stderr and skipped), 1 when nothing succeeded or the command failed as a whole, 2 for usage
//! errors.

mod cli;
mod commands;
mod embedded;
mod inputs;
mod mask;
mod models;
mod outputs;
mod tokens;
mod weights;

use std::process::ExitCode;

use clap::Parser;

/// jemalloc keeps freed tensor buffers' pages for reuse (glibc unmaps large blocks, and each
/// new one costs a page fault per 4 KiB).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    titok_model::device::quiet_vulkan_loader();
    quiet_broken_pipe();
    let cli = cli::Cli::parse();
    if let Err(e) = titok_model::device::set_cpu_threads(cli.global.threads.map(|n| n as usize)) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    match commands::run(cli) {
        Ok(outcome) => outcome.exit_code(),
        Err(e) => {
            eprintln!("error: {}", inputs::one_line(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// `titok info | head` closes stdout early; `println!` then panics with "Broken pipe". Exit
/// quietly instead, with the status a process killed by SIGPIPE reports (128 + 13).
fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}
