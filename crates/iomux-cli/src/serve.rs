//! `iomux serve`: parse the flags, start the engine, wait for a signal.

use clap::builder::TypedValueParser;
use clap::{Args, ValueEnum};
use iomux::{Backend, Trigger};
use iomux_engine::{Config, Engine, Server};
use iomux_proto::http::{HttpConfig, HttpLimits, MAX_HEADERS};
use iomux_proto::{Echo, Http};
use std::io::{self, Write};
use std::net::SocketAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProtoArg {
    /// HTTP/1.1 hello-world, /plaintext and POST /echo.
    Http,
    /// Every byte echoed back unchanged.
    Echo,
    /// Every byte echoed back, ASCII letters upper-cased.
    Upper,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// Event loop over epoll.
    Epoll,
    /// Event loop over poll.
    Poll,
    /// Event loop over select (descriptors below 1024 only).
    Select,
    /// A thread per connection, blocking sockets.
    Threads,
    /// One connection at a time.
    Blocking,
    /// Busy-polling non-blocking sockets in one thread.
    Nonblocking,
    /// Event loop over signal-driven I/O (O_ASYNC + a real-time signal per readiness change); edge only.
    Sigio,
    /// Completion-based engine on io_uring (multishot accept/receive, provided buffers).
    Uring,
    /// Event loop over io_uring poll requests (readiness, like epoll).
    UringPoll,
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
    #[arg(long, value_enum, default_value = "epoll")]
    backend: BackendArg,
    /// epoll's mode (default edge on epoll); other backends accept level only.
    #[arg(long, value_enum)]
    trigger: Option<TriggerArg>,
    /// Event-loop threads, each with its own SO_REUSEPORT listener.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: u32,
    /// Where to listen: HOST:PORT, HOST an IP address or a name such as localhost; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8080", value_parser = crate::args::addr)]
    addr: SocketAddr,
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
}

fn engine(args: &ServeArgs) -> io::Result<Engine> {
    let trigger = args.trigger.map(|t| match t {
        TriggerArg::Level => Trigger::Level,
        TriggerArg::Edge => Trigger::Edge,
        TriggerArg::Oneshot => Trigger::Oneshot,
    });
    let reactor = |backend: Backend, default: Trigger| {
        let trigger = trigger.unwrap_or(default);
        backend
            .check_trigger(trigger)
            .map_err(|e| advise(e, "use --backend epoll"))?;
        Ok(Engine::Reactor(backend, trigger))
    };
    let level_only = |engine: Engine, name: &str| {
        match trigger {
        None | Some(Trigger::Level) => Ok(engine),
        Some(t) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("--backend {name} supports --trigger level only (got {t}); use --backend epoll for edge or oneshot"),
        )),
    }
    };
    match args.backend {
        BackendArg::Epoll => reactor(Backend::Epoll, Trigger::Edge),
        BackendArg::Poll => reactor(Backend::Poll, Trigger::Level),
        BackendArg::Select => reactor(Backend::Select, Trigger::Level),
        BackendArg::Sigio => reactor(Backend::Sigio, Trigger::Edge),
        BackendArg::Uring => level_only(Engine::Uring, "uring"),
        BackendArg::UringPoll => reactor(Backend::Uring, Trigger::Edge),
        BackendArg::Threads => level_only(Engine::Threads, "threads"),
        BackendArg::Blocking => level_only(Engine::Blocking, "blocking"),
        BackendArg::Nonblocking => level_only(Engine::Nonblocking, "nonblocking"),
    }
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
        max_conns: args.max_conns,
        ..Config::default()
    })
}

/// Block SIGINT and SIGTERM in this thread and every thread it starts, so they
/// are taken synchronously by `wait_for_signal` and never interrupt a loop.
fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise a local set; pthread_sigmask
    // only changes this thread's mask (threads spawned later inherit it).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for_signal(set: &libc::sigset_t) -> libc::c_int {
    let mut sig = 0;
    // SAFETY: `set` is an initialised sigset and `sig` a live int.
    while unsafe { libc::sigwait(set, &mut sig) } != 0 {}
    sig
}

/// The library's errors say what went wrong; the command line adds what to do, by flag.
fn advise(err: io::Error, advice: &str) -> io::Error {
    io::Error::new(err.kind(), format!("{err}; {advice}"))
}

/// An engine the kernel refuses (io_uring disabled, say) has epoll to fall back on.
fn advise_start(err: io::Error) -> io::Error {
    if err.kind() == io::ErrorKind::Unsupported && !err.to_string().contains("--backend") {
        advise(err, "use --backend epoll instead")
    } else {
        err
    }
}

pub fn run(args: ServeArgs) -> io::Result<()> {
    let engine = engine(&args)?;
    let config = config(&args)?;
    // Many connections need many descriptors: use all the hard limit allows.
    let _ = iomux::net::raise_fd_limit();
    let signals = block_stop_signals();
    let server = match args.proto {
        ProtoArg::Echo => {
            Server::start(config.clone(), engine, Echo::plain).map_err(advise_start)?
        }
        ProtoArg::Upper => {
            Server::start(config.clone(), engine, Echo::upper).map_err(advise_start)?
        }
        ProtoArg::Http => {
            let http = HttpConfig::leak(HttpLimits {
                max_request_line: args.max_request_line,
                max_head: args.max_head,
                max_headers: args.max_headers,
                max_body: args.max_body,
            });
            Server::start(config.clone(), engine, move || Http::new(http)).map_err(advise_start)?
        }
    };
    {
        let mut out = io::stdout().lock();
        writeln!(
            out,
            "listening on {} proto={} backend={} threads={}",
            server.local_addr(),
            // Spelled as on the command line (`http`, not `Http`).
            args.proto
                .to_possible_value()
                .map_or_else(String::new, |v| v.get_name().to_string()),
            engine,
            config.threads
        )?;
        out.flush()?;
    }
    let sig = wait_for_signal(&signals);
    let stopping = std::time::Instant::now();
    eprintln!("iomux: signal {sig}: stopping (send it again to exit at once)");
    server.shutdown();
    std::thread::spawn(move || {
        wait_for_signal(&signals);
        eprintln!("iomux: second signal: exiting now");
        std::process::exit(130);
    });
    let stats = server.join()?;
    eprintln!(
        "iomux: stopped ({:.2} s after the signal); {stats}",
        stopping.elapsed().as_secs_f64()
    );
    if stats.selector_overflows > 0 {
        eprintln!(
            "iomux: the sigio signal queue overflowed {} times (RLIMIT_SIGPENDING), and each time every connection was checked instead; raise `ulimit -i` to avoid this",
            stats.selector_overflows
        );
    }
    Ok(())
}
