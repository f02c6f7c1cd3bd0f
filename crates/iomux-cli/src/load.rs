//! `iomux load`: parse the flags, run the load client, print its summary.

use clap::{Args, ValueEnum};
use iomux_lab::load::{self, LoadConfig, Proto};
use std::io::{self, Write};
use std::net::SocketAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LoadProto {
    /// HTTP/1.1 GET /plaintext requests.
    Http,
    /// Echo messages of --size bytes.
    Echo,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The server to load: HOST:PORT, HOST an IP address or a name such as localhost.
    #[arg(long, default_value = "127.0.0.1:8080", value_parser = crate::args::addr)]
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
    /// Requests in flight per connection (HTTP pipelining; echo messages too).
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
    /// Seconds a request or connect may take before it counts as an error and
    /// its connection is reopened.
    #[arg(long, default_value_t = 5.0)]
    pub timeout: f64,
    /// One JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: LoadArgs) -> io::Result<()> {
    let proto = match args.proto {
        LoadProto::Http => Proto::Http,
        LoadProto::Echo => Proto::Echo,
    };
    let config = LoadConfig {
        conns: args.conns,
        idle: args.idle,
        duration: crate::args::seconds(args.duration, "--duration")?,
        pipeline: args.pipeline,
        size: args.size,
        threads: args.threads,
        rate: args.rate,
        connect_per_request: args.connect_per_request,
        timeout: crate::args::seconds(args.timeout, "--timeout")?,
        progress: None,
        ..LoadConfig::new(args.addr, proto)
    };
    let report = load::run(&config)?;
    let mut out = io::stdout().lock();
    if args.json {
        writeln!(out, "{}", report.to_json())?;
    } else {
        write!(out, "{}", report.table())?;
    }
    out.flush()
}
