//! `iomux load`: a load client built on iomux's own [`EpollSelector`](iomux::EpollSelector).
//!
//! Each thread runs one edge-triggered epoll loop over its share of the
//! connections. HTTP requests are rendered once and `pipeline` of them go out
//! in one write; responses are counted by parsing status line and framing
//! (Content-Length or chunked) without allocating per response. Echo messages
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
mod proto;
mod worker;

pub use proto::Proto;

use hdrhistogram::Histogram;
use iomux::timer::MAX_TIMEOUT;
use std::io::{self, IsTerminal, Write};
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
    /// Print a progress line on stderr every second (`None`: only when stderr is a terminal).
    pub progress: Option<bool>,
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
            progress: None,
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
}

impl Errors {
    /// All errors.
    ///
    /// ```
    /// let e = iomux_lab::load::Errors { io: 2, status: 1, ..Default::default() };
    /// assert_eq!(e.total(), 3);
    /// ```
    pub fn total(&self) -> u64 {
        self.connect + self.io + self.protocol + self.timeout + self.status
    }

    fn add(&mut self, o: &Errors) {
        self.connect += o.connect;
        self.io += o.io;
        self.protocol += o.protocol;
        self.timeout += o.timeout;
        self.status += o.status;
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
    /// Open loop: requests that were due but never sent because every connection was busy.
    pub unsent: u64,
    /// Active connections (or connection slots) that got no response at all.
    pub starved: u64,
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
            unsent: 0,
            starved: 0,
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

    fn add(&mut self, o: Totals) -> io::Result<()> {
        self.requests += o.requests;
        self.connects += o.connects;
        self.errors.add(&o.errors);
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.unsent += o.unsent;
        self.starved += o.starved;
        self.latency
            .add(&o.latency)
            .map_err(|e| io::Error::other(e.to_string()))?;
        if let Some(e) = o.first_error {
            self.note(|| e);
        }
        Ok(())
    }
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// The settings it ran with (threads possibly lowered to the connection count).
    pub config: LoadConfig,
    /// Measured wall time of the load phase.
    pub elapsed: Duration,
    /// What it counted.
    pub totals: Totals,
}

impl LoadReport {
    /// Responses per second.
    pub fn rps(&self) -> f64 {
        self.totals.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency at `quantile` (0..=1) in microseconds; 0 when nothing was measured.
    pub fn latency_us(&self, quantile: f64) -> f64 {
        if self.totals.latency.is_empty() {
            return 0.0;
        }
        self.totals.latency.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// One JSON object (the `--json` output).
    pub fn to_json(&self) -> String {
        let c = &self.config;
        let e = &self.totals.errors;
        let rate = c.rate.map_or("null".to_string(), |r| format!("{r}"));
        let max = if self.totals.latency.is_empty() {
            0.0
        } else {
            self.totals.latency.max() as f64 / 1000.0
        };
        let mean = if self.totals.latency.is_empty() {
            0.0
        } else {
            self.totals.latency.mean() / 1000.0
        };
        format!(
            concat!(
                "{{\"addr\":\"{}\",\"proto\":\"{}\",\"conns\":{},\"idle\":{},\"threads\":{},\"pipeline\":{},",
                "\"size\":{},\"rate\":{},\"connect_per_request\":{},\"duration_s\":{:.3},",
                "\"requests\":{},\"rps\":{:.1},\"errors\":{},\"connects\":{},\"unsent\":{},\"starved\":{},",
                "\"error_kinds\":{{\"connect\":{},\"io\":{},\"protocol\":{},\"timeout\":{},\"status\":{}}},",
                "\"bytes_sent\":{},\"bytes_received\":{},",
                "\"latency_us\":{{\"p50\":{:.1},\"p90\":{:.1},\"p99\":{:.1},\"p999\":{:.1},\"max\":{:.1},\"mean\":{:.1}}},",
                "\"first_error\":{}}}"
            ),
            c.addr, c.proto, c.conns, c.idle, c.threads, c.pipeline, c.size, rate, c.connect_per_request,
            self.elapsed.as_secs_f64(), self.totals.requests, self.rps(), e.total(), self.totals.connects, self.totals.unsent, self.totals.starved,
            e.connect, e.io, e.protocol, e.timeout, e.status, self.totals.bytes_sent, self.totals.bytes_received,
            self.latency_us(0.5), self.latency_us(0.9), self.latency_us(0.99), self.latency_us(0.999), max, mean,
            self.totals.first_error.as_deref().map_or("null".to_string(), json_string),
        )
    }

    /// The human summary.
    pub fn table(&self) -> String {
        let c = &self.config;
        let e = &self.totals.errors;
        let mut s = String::new();
        let mode = match (c.rate, c.connect_per_request) {
            (Some(r), _) => format!("open loop at {r} req/s"),
            (None, true) => "a new connection per request".into(),
            (None, false) => format!("closed loop, pipeline {}", c.pipeline),
        };
        s += &format!(
            "{} load on {}: {} active + {} idle connections, {} thread(s), {mode}, {:.2} s\n\n",
            c.proto,
            c.addr,
            c.conns,
            c.idle,
            c.threads,
            self.elapsed.as_secs_f64()
        );
        s += &format!("  requests     {:>12}\n", self.totals.requests);
        s += &format!("  requests/s   {:>12.1}\n", self.rps());
        if c.connect_per_request || self.totals.connects > 0 {
            s += &format!(
                "  connects     {:>12}   ({:.1}/s)\n",
                self.totals.connects,
                self.totals.connects as f64 / self.elapsed.as_secs_f64().max(1e-9)
            );
        }
        s += &format!(
            "  errors       {:>12}   (connect {}, io {}, protocol {}, timeout {}, status>=400 {})\n",
            e.total(), e.connect, e.io, e.protocol, e.timeout, e.status
        );
        if self.totals.starved > 0 {
            s += &format!(
                "  starved      {:>12}   connections got no response at all\n",
                self.totals.starved
            );
        }
        if c.rate.is_some() {
            s += &format!(
                "  unsent       {:>12}   (due but every connection was busy)\n",
                self.totals.unsent
            );
        }
        s += &format!(
            "  transfer     {:>12.1} MB/s out, {:.1} MB/s in\n",
            self.totals.bytes_sent as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9),
            self.totals.bytes_received as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
        );
        s += "\n  latency (us)    p50       p90       p99     p99.9       max\n";
        s += &format!(
            "             {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}\n",
            self.latency_us(0.5),
            self.latency_us(0.9),
            self.latency_us(0.99),
            self.latency_us(0.999),
            if self.totals.latency.is_empty() {
                0.0
            } else {
                self.totals.latency.max() as f64 / 1000.0
            }
        );
        if let Some(err) = &self.totals.first_error {
            s += &format!("\n  first error: {err}\n");
        }
        s
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Run the load and return what it measured. Setup failures (the server is
/// not there, the connections cannot all be opened) are errors; failures
/// during the run are counted in the report.
pub fn run(config: &LoadConfig) -> io::Result<LoadReport> {
    config.validate()?;
    let mut config = config.clone();
    config.threads = config.threads.min(config.conns.max(1));
    connect::check_capacity(config.conns + config.idle, config.addr)?;
    let setup_timeout =
        Duration::from_secs(10) + Duration::from_millis(config.conns as u64 + config.idle as u64);
    let idle: Vec<TcpStream> = connect::connect_many(config.addr, config.idle, setup_timeout)?;
    let mut active = if config.connect_per_request {
        Vec::new()
    } else {
        connect::connect_many(config.addr, config.conns, setup_timeout)?
    };
    let requests = match config.proto {
        Proto::Http => proto::Requests::http(&config.addr.to_string(), config.pipeline),
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
            timeout: config.timeout,
            start,
            end,
            streams,
            slots: if config.connect_per_request { share } else { 0 },
            progress: counters,
        };
        handles.push(
            std::thread::Builder::new()
                .name(format!("iomux-load-{t}"))
                .spawn(move || worker::run(plan))?,
        );
    }
    let show = config
        .progress
        .unwrap_or_else(|| io::stderr().is_terminal());
    if show {
        report_progress(&handles, &progress, start);
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
    })
}

/// One short line on stderr per second until the threads finish.
fn report_progress<T>(
    handles: &[std::thread::JoinHandle<T>],
    counters: &[Arc<[AtomicU64; 2]>],
    start: Instant,
) {
    let sum = |k: usize| {
        counters
            .iter()
            .map(|c| c[k].load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let mut last = 0;
    let mut tick = start;
    while handles.iter().any(|h| !h.is_finished()) {
        std::thread::sleep(Duration::from_millis(50));
        if tick.elapsed() < Duration::from_secs(1) {
            continue;
        }
        tick += Duration::from_secs(1);
        let requests = sum(0);
        let _ = writeln!(
            io::stderr(),
            "  {:>4.0}s  {:>10} req/s  {:>12} requests  {:>6} errors",
            start.elapsed().as_secs_f64(),
            requests - last,
            requests,
            sum(1)
        );
        last = requests;
    }
}

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
