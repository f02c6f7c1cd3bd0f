//! `iomux load`: parse the flags, run the load client, print its summary.

use clap::{Args, ValueEnum};
use std::io;
use std::net::SocketAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LoadProto {
    /// HTTP/1.1 GET requests.
    Http,
    /// Echo messages of --size bytes.
    Echo,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The server to load.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// What to speak.
    #[arg(long, value_enum, default_value = "http")]
    pub proto: LoadProto,
    /// Active connections.
    #[arg(long, default_value_t = 100)]
    pub conns: usize,
    /// Extra connections opened and held silent.
    #[arg(long, default_value_t = 0)]
    pub idle: usize,
    /// How long to send load, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// HTTP requests in flight per connection.
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// Echo message size in bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Client threads, each with its own epoll loop and share of the connections.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Target requests per second over all connections (open-loop; latency is
    /// measured from each request's intended send time). Absent: as fast as possible.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Open a new connection for every request (measures connection rate).
    #[arg(long)]
    pub connect_per_request: bool,
    /// One JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(_args: LoadArgs) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "iomux load is not built yet",
    ))
}
