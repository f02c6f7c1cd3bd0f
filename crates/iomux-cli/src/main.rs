//! The `iomux` command: flags in, engines and protocols wired together.

mod args;
mod lab;
mod load;
mod serve;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Event-driven network I/O on Linux: servers on every I/O model, a load client, a lab.
#[derive(Debug, Parser)]
#[command(name = "iomux", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a server (echo, upper-case echo or HTTP/1.1) on any engine until SIGINT or SIGTERM.
    Serve(serve::ServeArgs),
    /// Drive load at an HTTP server (any URL and request) or an echo server: latency histogram, status counts; `merge` combines runs.
    Load(load::LoadArgs),
    /// Measure the I/O models on this machine and write a report.
    Lab(lab::LabArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Load(args) => load::run(args),
        Command::Lab(args) => lab::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iomux: {e}");
            ExitCode::FAILURE
        }
    }
}
