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
}

pub fn run(_args: LabArgs) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "iomux lab is not built yet",
    ))
}
