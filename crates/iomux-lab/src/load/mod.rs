//! `iomux load`: a load client built on iomux's own [`EpollSelector`](iomux::EpollSelector).
//!
//! Each thread runs one edge-triggered epoll loop over its share of the
//! connections. HTTP requests (any method, target, headers and body) are
//! rendered once and `pipeline` of them go out in one write; responses are
//! counted by status as they stream in, parsing each head and skipping the
//! body by its framing (Content-Length, chunked, or up to the close), without
//! allocating per response. A server that closes a connection between
//! responses gets a new one, and what it left unanswered is sent again. Echo messages
//! are checked byte for byte. Latency goes into a per-thread HDR histogram,
//! merged at the end. With a `rate`, requests follow a fixed schedule and
//! latency runs from each request's intended send time, so a stalled server
//! cannot hide its stall (no coordinated omission).
//!
//! ```no_run
//! use iomux_lab::load::{LoadConfig, Proto};
//! let mut config = LoadConfig::new("127.0.0.1:8080".parse().unwrap(), Proto::Http);
//! config.conns = 10;
//! config.duration = std::time::Duration::from_secs(1);
//! let report = iomux_lab::load::run(&config).unwrap();
//! println!("{}", report.to_json());
//! ```

mod connect;
mod merge;
mod proto;
mod report;
mod tls;
mod worker;

pub use merge::{histogram_from_base64, histogram_to_base64, merge};
pub use proto::{HttpRequest, Proto};
pub use report::LoadReport;
pub use tls::{TlsOptions, UntrustedCertificate};

use hdrhistogram::Histogram;
use iomux::timer::MAX_TIMEOUT;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The server.
    pub addr: SocketAddr,
    /// What to speak.
    pub proto: Proto,
    /// Active connections (connection-per-request: concurrent connection slots).
    pub conns: usize,
    /// Extra connections opened before the run and held silent through it.
    pub idle: usize,
    /// How long to send load.
    pub duration: Duration,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Echo message size in bytes.
    pub size: usize,
    /// Threads, each with its own epoll loop and share of the connections.
    pub threads: usize,
    /// Requests per second over all connections (open loop), or `None` (as fast as possible).
    pub rate: Option<f64>,
    /// A new connection for every request.
    pub connect_per_request: bool,
    /// A request (or connect) unanswered this long counts as an error and its connection is reopened.
    pub timeout: Duration,
    /// The HTTP request to send (`Proto::Http`).
    pub request: HttpRequest,
    /// Stop once this many requests are answered (or the duration is over), or `None`: run for the duration.
    pub requests: Option<u64>,
    /// Speak HTTPS (`Proto::Http` only), or `None`: plain.
    pub tls: Option<TlsOptions>,
}

impl LoadConfig {
    /// 100 connections, 10 seconds, one thread, pipeline 1, 64-byte echo messages, 5 s timeout.
    ///
    /// ```
    /// let c = iomux_lab::load::LoadConfig::new("127.0.0.1:1".parse().unwrap(), iomux_lab::load::Proto::Echo);
    /// assert_eq!(c.conns, 100);
    /// assert!(c.validate().is_ok());
    /// ```
    pub fn new(addr: SocketAddr, proto: Proto) -> LoadConfig {
        LoadConfig {
            addr,
            proto,
            conns: 100,
            idle: 0,
            duration: Duration::from_secs(10),
            pipeline: 1,
            size: 64,
            threads: 1,
            rate: None,
            connect_per_request: false,
            timeout: Duration::from_secs(5),
            request: HttpRequest::default(),
            requests: None,
            tls: None,
        }
    }

    /// Check the settings, naming the one that is wrong.
    ///
    /// ```
    /// let mut c = iomux_lab::load::LoadConfig::new("127.0.0.1:1".parse().unwrap(), iomux_lab::load::Proto::Echo);
    /// c.pipeline = 0;
    /// assert!(c.validate().unwrap_err().to_string().contains("--pipeline"));
    /// ```
    pub fn validate(&self) -> io::Result<()> {
        let bad = |msg: String| Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        if self.conns == 0 && self.idle == 0 {
            return bad("--conns and --idle are both 0: ask for at least one connection".into());
        }
        if self.duration.is_zero() || self.duration > MAX_TIMEOUT {
            return bad("--duration must be a positive number of seconds up to a year".into());
        }
        if !(1..=1024).contains(&self.pipeline) {
            return bad(format!(
                "--pipeline {} is out of range: use 1 to 1024",
                self.pipeline
            ));
        }
        if !(1..=1 << 20).contains(&self.size) {
            return bad(format!(
                "--size {} is out of range: use 1 to 1048576 bytes",
                self.size
            ));
        }
        if !(1..=256).contains(&self.threads) {
            return bad(format!(
                "--threads {} is out of range: use 1 to 256",
                self.threads
            ));
        }
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            return bad("--timeout must be a positive number of seconds up to a year".into());
        }
        if self.tls.is_some() && self.proto != Proto::Http {
            return bad("TLS is for HTTP here: echo runs over plain TCP".into());
        }
        if self.requests == Some(0) {
            return bad("--requests 0 asks for nothing: ask for at least one request".into());
        }
        if self.proto == Proto::Http {
            let one = match self.request.render(&self.addr.to_string()) {
                Ok(one) => one,
                Err(e) => return bad(e),
            };
            // Requests are held rendered pipeline + 1 times over (see `Requests`).
            if one.len().saturating_mul(self.pipeline + 1) > MAX_RENDERED {
                return bad(format!(
                    "the request is {} bytes: {} copies of it (--pipeline + 1) would exceed {} MiB; send a smaller body or a lower --pipeline",
                    one.len(),
                    self.pipeline + 1,
                    MAX_RENDERED >> 20
                ));
            }
            if !self.request.keepalive && self.pipeline > 1 {
                return bad(format!(
                    "--pipeline {} needs kept-alive connections: without keep-alive each connection carries one request",
                    self.pipeline
                ));
            }
        }
        if let Some(rate) = self.rate {
            // Slower than one request per 1,000 s would put the schedule's
            // times out of range; faster than 10^9/s is no schedule at all.
            if !(MIN_RATE..=MAX_RATE).contains(&rate) {
                return bad(format!(
                    "--rate {rate} is out of range: use {MIN_RATE} to {MAX_RATE} requests per second"
                ));
            }
            if self.connect_per_request {
                return bad(
                    "--rate cannot be combined with --connect-per-request; drop one of them".into(),
                );
            }
            if self.conns == 0 {
                return bad("--rate needs at least one active connection (--conns)".into());
            }
        }
        Ok(())
    }
}

/// The most bytes of rendered requests the client holds (a request is held
/// `pipeline + 1` times over), and so the largest body it can send.
pub const MAX_RENDERED: usize = 256 << 20;

/// The slowest open-loop schedule, in requests per second.
pub const MIN_RATE: f64 = 0.001;
/// The fastest open-loop schedule, in requests per second.
pub const MAX_RATE: f64 = 1e9;

/// Errors by kind; none of them stops the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Errors {
    /// Connects refused, failed or timed out.
    pub connect: u64,
    /// Resets, unexpected closes and other read/write errors.
    pub io: u64,
    /// Responses that could not be parsed, or echoes that differ from what was sent.
    pub protocol: u64,
    /// Requests unanswered within the timeout.
    pub timeout: u64,
    /// HTTP responses with status 400 or above.
    pub status: u64,
    /// TLS failures after the start: alerts, bad records, refused certificates.
    pub tls: u64,
}

/// Status codes are three digits: one counter for each.
pub(crate) const STATUS_CODES: usize = 1000;

impl Errors {
    /// All errors.
    ///
    /// ```
    /// let e = iomux_lab::load::Errors { io: 2, status: 1, ..Default::default() };
    /// assert_eq!(e.total(), 3);
    /// ```
    pub fn total(&self) -> u64 {
        self.connect + self.io + self.protocol + self.timeout + self.status + self.tls
    }

    pub(crate) fn add(&mut self, o: &Errors) {
        self.connect += o.connect;
        self.io += o.io;
        self.protocol += o.protocol;
        self.timeout += o.timeout;
        self.status += o.status;
        self.tls += o.tls;
    }
}

/// What a run counted (per thread while running, then merged).
#[derive(Debug, Clone)]
pub struct Totals {
    /// Responses received (complete and, for echo, verified).
    pub requests: u64,
    /// Connections established during the run (connection-per-request and reconnects).
    pub connects: u64,
    /// Errors by kind.
    pub errors: Errors,
    /// Bytes written.
    pub bytes_sent: u64,
    /// Bytes read.
    pub bytes_received: u64,
    /// Bytes of response bodies read (HTTP: payload without heads or chunk
    /// framing; echo: the bytes echoed back).
    pub body_bytes: u64,
    /// TLS handshakes completed, resumed ones included.
    pub tls_handshakes: u64,
    /// TLS handshakes that resumed an earlier session.
    pub tls_resumed: u64,
    /// Open loop: requests that were due but never sent because every connection was busy.
    pub unsent: u64,
    /// Active connections (or connection slots) that got no response at all.
    pub starved: u64,
    /// Connections the server closed between responses (announced or not);
    /// each was reopened at once and its unanswered requests sent again.
    pub server_closes: u64,
    /// Responses by status code (index: the code); echo messages count as 0.
    pub status_counts: Box<[u64]>,
    /// Latency in nanoseconds.
    pub latency: Histogram<u64>,
    /// The first error seen, for the user to read.
    pub first_error: Option<String>,
}

impl Totals {
    pub(crate) fn new() -> Totals {
        Totals {
            requests: 0,
            connects: 0,
            errors: Errors::default(),
            bytes_sent: 0,
            bytes_received: 0,
            body_bytes: 0,
            tls_handshakes: 0,
            tls_resumed: 0,
            unsent: 0,
            starved: 0,
            server_closes: 0,
            status_counts: vec![0; STATUS_CODES].into_boxed_slice(),
            latency: Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
                .expect("valid histogram bounds"),
            first_error: None,
        }
    }

    /// Remember the first error's message.
    pub(crate) fn note(&mut self, err: impl FnOnce() -> String) {
        if self.first_error.is_none() {
            self.first_error = Some(err());
        }
    }

    pub(crate) fn add(&mut self, o: Totals) -> io::Result<()> {
        self.requests += o.requests;
        self.connects += o.connects;
        self.errors.add(&o.errors);
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.body_bytes += o.body_bytes;
        self.tls_handshakes += o.tls_handshakes;
        self.tls_resumed += o.tls_resumed;
        self.unsent += o.unsent;
        self.starved += o.starved;
        self.server_closes += o.server_closes;
        for (mine, theirs) in self.status_counts.iter_mut().zip(o.status_counts.iter()) {
            *mine += theirs;
        }
        self.latency
            .add(&o.latency)
            .map_err(|e| io::Error::other(e.to_string()))?;
        if let Some(e) = o.first_error {
            self.note(|| e);
        }
        Ok(())
    }
}

/// How far a run has come, for a progress display.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Since the load started.
    pub elapsed: Duration,
    /// Responses so far.
    pub requests: u64,
    /// Errors so far.
    pub errors: u64,
}

/// Run the load and return what it measured. Setup failures (the server is
/// not there, the connections cannot all be opened) are errors; failures
/// during the run are counted in the report.
pub fn run(config: &LoadConfig) -> io::Result<LoadReport> {
    run_with_progress(config, |_| {})
}

/// [`run`], calling `on_progress` about ten times a second from the calling
/// thread while the load runs.
pub fn run_with_progress(
    config: &LoadConfig,
    mut on_progress: impl FnMut(Progress),
) -> io::Result<LoadReport> {
    config.validate()?;
    let mut config = config.clone();
    config.threads = config.threads.min(config.conns.max(1));
    connect::check_capacity(config.conns + config.idle, config.addr)?;
    let setup_timeout =
        Duration::from_secs(10) + Duration::from_millis(config.conns as u64 + config.idle as u64);
    let tls = match &config.tls {
        Some(options) => {
            let tls = tls::Tls::new(options)?;
            tls.check(config.addr, config.timeout)?;
            Some(tls)
        }
        None => None,
    };
    let idle: Vec<TcpStream> = connect::connect_many(config.addr, config.idle, setup_timeout)?;
    let mut active = if config.connect_per_request {
        Vec::new()
    } else {
        connect::connect_many(config.addr, config.conns, setup_timeout)?
    };
    let requests = match config.proto {
        Proto::Http => {
            let one = config
                .request
                .render(&config.addr.to_string())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            proto::Requests::http(&one, config.pipeline)
        }
        Proto::Echo => proto::Requests::echo(config.size, config.pipeline),
    };
    let start = Instant::now();
    let end = start + config.duration;
    let mut handles = Vec::new();
    let mut progress = Vec::new();
    for t in 0..config.threads {
        // Spread connections evenly: thread t gets every threads-th one.
        let share = config.conns / config.threads + usize::from(t < config.conns % config.threads);
        let streams: Vec<TcpStream> = if config.connect_per_request {
            Vec::new()
        } else {
            active.drain(..share).collect()
        };
        let counters = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        progress.push(counters.clone());
        let plan = worker::Plan {
            addr: config.addr,
            proto: config.proto,
            pipeline: if config.connect_per_request {
                1
            } else {
                config.pipeline
            },
            requests: requests.clone(),
            rate: config.rate.map(|r| r / config.threads as f64),
            connect_per_request: config.connect_per_request,
            head_requests: config.proto == Proto::Http && config.request.is_head(),
            budget: config.requests.map(|n| {
                n / config.threads as u64 + u64::from((t as u64) < n % config.threads as u64)
            }),
            timeout: config.timeout,
            start,
            end,
            streams,
            slots: if config.connect_per_request { share } else { 0 },
            tls: tls.clone(),
            progress: counters,
        };
        handles.push(
            std::thread::Builder::new()
                .name(format!("iomux-load-{t}"))
                .spawn(move || worker::run(plan))?,
        );
    }
    while handles.iter().any(|h| !h.is_finished()) {
        std::thread::sleep(PROGRESS_EVERY);
        let sum = |k: usize| progress.iter().map(|c| c[k].load(Ordering::Relaxed)).sum();
        on_progress(Progress {
            elapsed: start.elapsed(),
            requests: sum(0),
            errors: sum(1),
        });
    }
    let mut totals = Totals::new();
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(t)) => totals.add(t)?,
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert(io::Error::other("a load thread panicked"));
            }
        }
    }
    // The threads stop sending and counting at `end`: the window is the duration.
    let elapsed = start.elapsed().min(config.duration);
    drop(idle);
    if let Some(e) = first_err {
        return Err(e);
    }
    Ok(LoadReport {
        config,
        elapsed,
        totals,
        runs: 1,
    })
}

/// How often [`run_with_progress`] reports.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Read the number after `"key":` in `--json` output (keys are unique in it,
/// nested ones included), for scripts, tests and the lab.
///
/// ```
/// let j = r#"{"rps":12.5,"latency_us":{"p99":80.0}}"#;
/// assert_eq!(iomux_lab::load::json_number(j, "p99"), Some(80.0));
/// assert_eq!(iomux_lab::load::json_number(j, "nope"), None);
/// ```
pub fn json_number(json: &str, key: &str) -> Option<f64> {
    let at = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &json[at..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}
