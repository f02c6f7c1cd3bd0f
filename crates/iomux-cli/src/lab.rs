//! `iomux lab`: parse the flags, run the experiments, write the report.

use clap::Args;
use std::io;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct LabArgs {
    /// Where to write report.md, the CSVs and the SVG charts.
    #[arg(long, default_value = "lab-report")]
    pub out: PathBuf,
    /// A reduced grid that finishes in under two minutes.
    #[arg(long)]
    pub quick: bool,
    /// Run only these experiments (comma-separated): dispatch, syscalls,
    /// throughput, level_edge, capacity, memory, connrate, herd, models.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
}

pub fn run(args: LabArgs) -> io::Result<()> {
    let exe = std::env::current_exe().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot find the iomux executable to run servers from: {e}"),
        )
    })?;
    let command_line = std::iter::once("iomux".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let config = iomux_lab::lab::LabConfig {
        out: args.out,
        quick: args.quick,
        exe,
        command_line,
        only: args.only,
    };
    let report = iomux_lab::lab::run(&config)?;
    println!("{}", report.display());
    Ok(())
}
