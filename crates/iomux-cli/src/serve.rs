//! `iomux serve`: parse the flags, start the engine, wait for a signal.

use clap::builder::TypedValueParser;
use clap::{Args, ValueEnum};
use iomux::Trigger;
use iomux_engine::{Config, Engine, Server, StopSignals};
use iomux_proto::http::files::{StaticFiles, StaticOptions};
use iomux_proto::http::{
    hello, Flow, HttpConfig, HttpLimits, Reply, Request, Router, Status, MAX_HEADERS,
};
use iomux_proto::{resp, Echo, Http};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProtoArg {
    /// HTTP/1.1: / and /plaintext (hello world), GET /json, POST /echo.
    Http,
    /// Every byte echoed back unchanged.
    Echo,
    /// Every byte echoed back, ASCII letters upper-cased.
    Upper,
    /// The Redis protocol (RESP2): a Redis-compatible key-value server.
    Resp,
}

/// The `--backend` values: the backends of [`Engine::ALL`], each once, in
/// its order, with what they are.
fn backend_values() -> clap::builder::PossibleValuesParser {
    let mut names: Vec<clap::builder::PossibleValue> = Vec::new();
    for e in Engine::ALL {
        if !names.iter().any(|v| v.get_name() == e.backend_name()) {
            let about = match e {
                Engine::Reactor(..) => format!(
                    "event loop over {}",
                    Engine::of_backend(e.backend_name())
                        .map(|e| e.describe())
                        .collect::<Vec<_>>()
                        .join(" / ")
                ),
                other => other.describe(),
            };
            names.push(clap::builder::PossibleValue::new(e.backend_name()).help(about));
        }
    }
    clap::builder::PossibleValuesParser::new(names)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TriggerArg {
    Level,
    Edge,
    Oneshot,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// What the server speaks.
    #[arg(long, value_enum, default_value = "http")]
    proto: ProtoArg,
    /// How connections are driven.
    #[arg(long, default_value = "epoll", value_parser = backend_values())]
    backend: String,
    /// epoll's mode (default edge on epoll); other backends accept level only.
    #[arg(long, value_enum)]
    trigger: Option<TriggerArg>,
    /// Event-loop threads, each with its own SO_REUSEPORT listener.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: u32,
    /// Where to listen: HOST:PORT, HOST an IP address or a name such as localhost; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8080", value_parser = crate::args::addr)]
    addr: SocketAddr,
    /// Listen on this Unix-domain socket instead of --addr (a socket file left by a process that is gone is replaced; the file is removed on exit).
    #[arg(long, value_name = "PATH")]
    unix: Option<PathBuf>,
    /// Listen backlog [default: $LISTENQ, else 1024].
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
    backlog: Option<i32>,
    /// TCP_NODELAY on accepted sockets.
    #[arg(long)]
    nodelay: bool,
    /// TCP_CORK around each batch of writes.
    #[arg(long)]
    cork: bool,
    /// Close connections idle this many seconds (HTTP: also the time allowed for a request's headers).
    #[arg(long, default_value_t = 60.0)]
    idle_timeout: f64,
    /// Bytes a second a client must send while a message of its is under way (a request head, a body, a RESP command): each --idle-timeout period of it must bring this many bytes a second (0: at least one byte a period), else it times out. Apache's mod_reqtimeout MinRate.
    #[arg(long, value_name = "BYTES_PER_SEC", default_value_t = Config::default().min_rate)]
    min_rate: u32,
    /// Refuse (accept and close) connections past this many (1 or more; leave it out for no limit).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..).map(|v| v as usize))]
    max_conns: Option<usize>,
    /// HTTP: longest request line in bytes (longer → 414).
    #[arg(long, default_value_t = HttpLimits::DEFAULT.max_request_line,
          value_parser = clap::value_parser!(u32).range(16..).map(|v| v as usize))]
    max_request_line: usize,
    /// HTTP: longest request head in bytes, request line and headers (longer → 431).
    #[arg(long, default_value_t = HttpLimits::DEFAULT.max_head,
          value_parser = clap::value_parser!(u32).range(16..=(1 << 20)).map(|v| v as usize))]
    max_head: usize,
    /// HTTP: most header fields in one request, at most 100 (more → 431).
    #[arg(long, default_value_t = HttpLimits::DEFAULT.max_headers,
          value_parser = clap::value_parser!(u32).range(1..=MAX_HEADERS as i64).map(|v| v as usize))]
    max_headers: usize,
    /// HTTP: largest request body in bytes, at most 4294967295 (larger → 413).
    #[arg(long, default_value_t = HttpLimits::DEFAULT.max_body)]
    max_body: u32,
    /// RESP: largest value (bulk argument) in bytes, as Redis's proto-max-bulk-len (larger → protocol error).
    #[arg(long, default_value_t = resp::Limits::DEFAULT.max_bulk,
          value_parser = clap::value_parser!(u64).range(1..=(1 << 32)).map(|v| v as usize))]
    max_value_bytes: usize,
    /// RESP: output other connections may queue for one subscriber (PUBLISH messages it has not read) before it is disconnected, as Redis's client-output-buffer-limit pubsub hard limit.
    #[arg(long, default_value_t = Config::default().max_output,
          value_parser = clap::value_parser!(u64).range(1..=(1 << 40)).map(|v| v as usize))]
    max_subscriber_output: usize,
    /// HTTP: serve the files under this directory instead of the hello routes (GET and HEAD, conditionals, ranges, precompressed siblings).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// With --root: list a directory that has no index.html (else 404).
    #[arg(long, requires = "root")]
    list: bool,
    /// With --root: serve names starting with `.` (else 404).
    #[arg(long, requires = "root")]
    hidden: bool,
    /// With --root: add this Cache-Control header to file responses, e.g. "max-age=3600".
    #[arg(long, requires = "root", value_name = "VALUE", value_parser = cache_control)]
    cache_control: Option<String>,
    /// With --root: files kept open between requests, checked for changes on each (inotify; a stat where it is missing); when full, a file joins from its second miss; 0 opens every time.
    #[arg(long, requires = "root", value_name = "N",
          default_value_t = StaticOptions::DEFAULT_OPEN_FILE_CACHE,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000).map(|v| v as usize))]
    open_file_cache: usize,
    /// Serve TLS 1.2 and 1.3 with this certificate chain (PEM, the server's certificate first); needs --tls-key. Event-loop backends only.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, RSA or EC).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// The static-file handler `--root` asks for (`None` without `--root`).
fn static_files(args: &ServeArgs) -> io::Result<Option<Arc<StaticFiles>>> {
    let Some(root) = &args.root else {
        return Ok(None);
    };
    let options = StaticOptions {
        list: args.list,
        hidden: args.hidden,
        cache_control: args.cache_control.clone(),
        open_file_cache: args.open_file_cache,
    };
    let files = StaticFiles::new(root, options).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("--root: {e}; give a directory this user can read"),
        )
    })?;
    Ok(Some(Arc::new(files)))
}

/// `--cache-control`'s value, checked as the static-file handler checks it
/// (so a bad one is refused before anything starts).
fn cache_control(s: &str) -> Result<String, String> {
    iomux_proto::http::files::cache_control_value(s)
        .map(str::to_owned)
        .map_err(|e| format!("{e}, e.g. --cache-control 'max-age=3600, public'"))
}

/// The engine `--backend` and `--trigger` name: the backend's engine in
/// that mode, or its default (the first in [`Engine::ALL`]).
fn engine(args: &ServeArgs) -> io::Result<Engine> {
    let mut engines = Engine::of_backend(&args.backend).peekable();
    let default = *engines.peek().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unknown backend '{}'", args.backend),
        )
    })?;
    let Some(trigger) = args.trigger.map(|t| match t {
        TriggerArg::Level => Trigger::Level,
        TriggerArg::Edge => Trigger::Edge,
        TriggerArg::Oneshot => Trigger::Oneshot,
    }) else {
        return Ok(default);
    };
    let modes: Vec<Engine> = engines.collect();
    if let Some(e) = modes
        .iter()
        .find(|e| e.trigger().unwrap_or(Trigger::Level) == trigger)
    {
        return Ok(*e);
    }
    let offered: Vec<String> = modes
        .iter()
        .map(|e| e.trigger().unwrap_or(Trigger::Level).to_string())
        .collect();
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "--backend {} supports --trigger {} only (got {trigger}); use --backend epoll for level, edge or oneshot",
            args.backend,
            offered.join(" or ")
        ),
    ))
}

fn backlog(args: &ServeArgs) -> io::Result<i32> {
    if let Some(b) = args.backlog {
        return Ok(b);
    }
    match std::env::var("LISTENQ") {
        Ok(v) => v.trim().parse().ok().filter(|&b: &i32| b >= 1).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("LISTENQ={v:?} is not a backlog: set it to a whole number from 1, such as 1024"),
            )
        }),
        Err(_) => Ok(1024),
    }
}

fn config(args: &ServeArgs) -> io::Result<Config> {
    let idle_timeout = crate::args::seconds(args.idle_timeout, "--idle-timeout")?;
    Ok(Config {
        addr: args.addr,
        backlog: backlog(args)?,
        threads: args.threads as usize,
        nodelay: args.nodelay,
        cork: args.cork,
        idle_timeout,
        min_rate: args.min_rate,
        max_conns: args.max_conns,
        max_output: args.max_subscriber_output,
        tls: tls_config(args)?,
        ..Config::default()
    })
}

/// The TLS configuration of --tls-cert and --tls-key (HTTP offers ALPN
/// `http/1.1`), and a note when the kernel cannot take the record layer over.
fn tls_config(args: &ServeArgs) -> io::Result<Option<Arc<iomux_engine::rustls::ServerConfig>>> {
    use iomux_engine::tls::{kernel_tls, load_server_config, KernelTls, TlsOptions};
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let options = TlsOptions {
        alpn: match args.proto {
            ProtoArg::Http => vec![b"http/1.1".to_vec()],
            _ => Vec::new(),
        },
        ..TlsOptions::default()
    };
    let config = load_server_config(cert, key, &options).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "{e}; give --tls-cert a PEM certificate chain and --tls-key its PEM private key \
                 (`openssl x509 -in FILE -noout -text` shows what a certificate file holds)"
            ),
        )
    })?;
    if let KernelTls::Unavailable(why) = kernel_tls() {
        eprintln!("iomux: {why}");
    }
    Ok(Some(Arc::new(config)))
}

/// A library error that stops `serve`, with what the user can do about it.
fn advise(e: io::Error) -> io::Error {
    let text = e.to_string();
    if text.contains("--") {
        return e; // already says which flag
    }
    let advice = if e.kind() == io::ErrorKind::Unsupported
        || text.contains("io_uring")
        || text.contains("provided-buffer")
    {
        "use --backend epoll"
    } else if e.kind() == io::ErrorKind::AddrInUse {
        "use --addr HOST:PORT (port 0 for any free one) or --unix PATH"
    } else if e.raw_os_error() == Some(libc::EMFILE) || text.contains("Too many open files") {
        "raise the descriptor limit with `ulimit -n` or use fewer --threads"
    } else {
        return e;
    };
    io::Error::new(e.kind(), format!("{text}; {advice}"))
}

/// The routes of `--proto http`: the hello routes and `GET /json`, all
/// handlers on the public HTTP API.
fn http_routes() -> Router {
    hello::routes().get("/json", json)
}

#[derive(serde::Serialize)]
struct Message {
    message: &'static str,
}

/// `{"message":"Hello, World!"}`, serialized per request (TechEmpower's JSON test).
fn json(_req: &Request<'_>, reply: &mut Reply<'_, '_>) -> Flow {
    let message = Message {
        message: "Hello, World!",
    };
    match serde_json::to_vec(&message) {
        Ok(body) => reply.send(Status::OK, "application/json", &body),
        Err(_) => reply.send(
            Status::INTERNAL_SERVER_ERROR,
            "text/plain",
            b"serialization failed\n",
        ),
    }
    Flow::Done
}

/// Longest wait between two active-expiry passes, so keys given a TTL while
/// the thread sleeps are reaped within this much of their deadline.
const EXPIRY_TICK: Duration = Duration::from_millis(100);

/// Remove expired keys in the background (Redis's active expiry), waking at
/// the next deadline or every tick; stops when the keyspace is gone.
fn spawn_active_expiry(shared: Weak<resp::Shared>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("resp-expiry".into())
        .spawn(move || {
            while let Some(shared) = shared.upgrade() {
                let db = &shared.db;
                let now = db.now_ms();
                if db.expire_due(now) > 0 {
                    continue;
                }
                let wait = db.next_expiry().map_or(EXPIRY_TICK, |at| {
                    Duration::from_millis(at.saturating_sub(now)).min(EXPIRY_TICK)
                });
                drop(shared);
                std::thread::sleep(wait);
            }
        })
        .map(drop)
}

/// A PUBLISH to N subscribers allocates N message copies (one per
/// `Context::send_to`) and frees them once sent. With glibc's defaults each
/// burst grows a loop thread's heap and the free trims it back, so every
/// PUBLISH paid page faults and unmaps (a third of the server's CPU per
/// delivered message with 5,000 subscribers, measured with perf). Keep up to
/// this much freed memory at the top of a heap instead.
const FAN_OUT_HEAP_KEPT: libc::c_int = 16 << 20;

fn keep_freed_heap_for_fan_out() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes glibc's tuning parameters; a refused
    // value leaves the defaults, which are correct, only slower.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, FAN_OUT_HEAP_KEPT);
        libc::mallopt(libc::M_TOP_PAD, 1 << 20);
    }
}

/// Start the server on the listener the flags name: TCP at --addr, or --unix.
fn launch<P, F>(
    args: &ServeArgs,
    config: &Config,
    engine: Engine,
    new_protocol: F,
) -> io::Result<Server>
where
    P: iomux_proto::Service + Send + 'static,
    F: Fn() -> P + Send + Sync + Clone + 'static,
{
    match &args.unix {
        Some(path) => Server::start_unix(path, config.clone(), engine, new_protocol),
        None => Server::start(config.clone(), engine, new_protocol),
    }
}

pub fn run(args: ServeArgs) -> io::Result<()> {
    if args.root.is_some() && args.proto != ProtoArg::Http {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--root serves files over HTTP: leave out --proto or give --proto http",
        ));
    }
    let engine = engine(&args)?;
    let config = config(&args)?;
    // Many connections need many descriptors: use all the hard limit allows.
    let _ = iomux::net::raise_fd_limit();
    // Before the loops start, so that they inherit the mask.
    let signals = StopSignals::block()?;
    start(&args, engine, &config, signals).map_err(advise)
}

fn start(
    args: &ServeArgs,
    engine: Engine,
    config: &Config,
    signals: StopSignals,
) -> io::Result<()> {
    let server = match args.proto {
        ProtoArg::Echo => launch(args, config, engine, Echo::plain)?,
        ProtoArg::Upper => launch(args, config, engine, Echo::upper)?,
        ProtoArg::Http => {
            let http = HttpConfig::leak(HttpLimits {
                max_request_line: args.max_request_line,
                max_head: args.max_head,
                max_headers: args.max_headers,
                max_body: args.max_body,
            });
            match static_files(args)? {
                Some(files) => {
                    launch(args, config, engine, move || Http::new(http, files.clone()))?
                }
                None => {
                    let routes = Arc::new(http_routes());
                    launch(args, config, engine, move || {
                        Http::new(http, routes.clone())
                    })?
                }
            }
        }
        ProtoArg::Resp => {
            let limits = resp::Limits {
                max_bulk: args.max_value_bytes,
                ..resp::Limits::DEFAULT
            };
            // PUBLISH reaches subscribers only where the engine carries out
            // writes to other connections; elsewhere SUBSCRIBE says so.
            let shared = Arc::new(if engine.carries_out_commands() {
                resp::Shared::new(limits)
            } else {
                resp::Shared::without_delivery(limits)
            });
            spawn_active_expiry(Arc::downgrade(&shared))?;
            keep_freed_heap_for_fan_out();
            launch(args, config, engine, move || {
                resp::Resp::new(shared.clone())
            })?
        }
    };
    {
        let mut out = io::stdout().lock();
        writeln!(
            out,
            "listening on {} proto={} backend={} trigger={} threads={}",
            server.listen_addr(),
            // Spelled as on the command line (`http`, not `Http`).
            args.proto
                .to_possible_value()
                .map_or_else(String::new, |v| v.get_name().to_string()),
            engine.backend_name(),
            engine
                .trigger()
                .map_or_else(|| "none".to_string(), |t| t.to_string()),
            config.threads
        )?;
        out.flush()?;
    }
    let sig = signals.wait();
    let stopping = std::time::Instant::now();
    eprintln!("iomux: signal {sig}: stopping (send it again to exit at once)");
    server.shutdown();
    std::thread::spawn(move || {
        signals.wait();
        eprintln!("iomux: second signal: exiting now");
        std::process::exit(130);
    });
    let stats = server.join()?;
    // One write: stderr is unbuffered, and the counters' line would
    // otherwise go out a field at a time.
    let line = format!(
        "iomux: stopped ({:.2} s after the signal); {stats}\n",
        stopping.elapsed().as_secs_f64()
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    if stats.selector_overflows > 0 {
        eprintln!(
            "iomux: the sigio signal queue overflowed {} times (RLIMIT_SIGPENDING), and each time every connection was checked instead; raise `ulimit -i` to avoid this",
            stats.selector_overflows
        );
    }
    if stats.unwatchable > 0 {
        eprintln!(
            "iomux: {} connections were refused because the selector could not watch them (select takes descriptors below 1024 only); use --backend poll or epoll",
            stats.unwatchable
        );
    }
    Ok(())
}
