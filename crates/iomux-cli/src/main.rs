//! The `iomux` command: flags in, engines and protocols wired together.

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iomux: {e}");
            ExitCode::FAILURE
        }
    }
}
