//! Engines: the ways `iomux serve` moves bytes between sockets and a sans-I/O
//! [`Protocol`]. [`Engine::ALL`] lists every one by name.
//!
//! - [`Engine::Reactor`]: an event loop over any [`iomux::Selector`] (select,
//!   poll, epoll level/edge/one-shot, signal-driven I/O, io_uring readiness),
//!   one per thread with its own SO_REUSEPORT listener.
//! - [`Engine::Uring`]: io_uring completions (multishot accept and receive
//!   into provided buffers), one ring per thread.
//! - [`Engine::Threads`]: a thread per connection on blocking sockets.
//! - [`Engine::Blocking`]: one connection at a time, the simplest server.
//! - [`Engine::Nonblocking`]: one thread busy-polling non-blocking sockets, the
//!   model that shows why multiplexing exists.
//!
//! ```no_run
//! use iomux_engine::{Config, Engine, Server};
//! use iomux_proto::Echo;
//! let config = Config { addr: "127.0.0.1:0".parse().unwrap(), ..Config::default() };
//! let server = Server::start(config, Engine::Threads, Echo::plain).unwrap();
//! println!("listening on {}", server.local_addr());
//! server.shutdown();
//! server.join().unwrap();
//! ```
#![warn(missing_docs)]
#[cfg(not(target_os = "linux"))]
compile_error!(
    "iomux runs on Linux only: its engines are built on epoll, signal-driven I/O and io_uring"
);

mod buffer;
mod busypoll;
mod hub;
mod life;
mod loop_api;
mod loop_core;
mod reactor;
mod session;
mod shutdown;
mod signals;
mod sock;
mod stats;
mod table;
mod threads;
pub mod tls;
mod uring;
mod workers;

/// The rustls this crate serves TLS with (0.23, `ring` provider): build a
/// [`Config::tls`] with it, or with [`tls::load_server_config`].
pub use rustls;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeExamples;

pub use iomux_proto::{Command, ConnId, Context, Protocol, Service, Step};
pub use loop_api::{LoopCx, LoopTimer, Readiness, WatchId};
pub use shutdown::Shutdown;
pub use signals::StopSignals;
pub use stats::LoopStats;

use crate::life::LoopSetup;
use crate::session::Rules;
use iomux::net::{ListenAddr, ListenOptions, Listener};
use iomux::{Backend, Trigger};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

/// How connections are driven.
///
/// [`Engine::ALL`] is the one list of engines: the CLI parses through it, the
/// lab runs it and the tests iterate it. An engine's name ([`Engine::name`],
/// also its `Display` and what [`str::parse`] takes) is the backend's name,
/// followed by `-level`, `-edge` or `-oneshot` where the backend has several
/// readiness modes.
///
/// ```
/// use iomux_engine::Engine;
/// let e: Engine = "epoll-edge".parse().unwrap();
/// assert_eq!(e, Engine::Reactor(iomux::Backend::Epoll, iomux::Trigger::Edge));
/// assert_eq!(e.to_string(), "epoll-edge");
/// assert_eq!((e.backend_name(), e.trigger()), ("epoll", Some(iomux::Trigger::Edge)));
/// assert!(Engine::ALL.iter().all(|e| e.name().parse::<Engine>() == Ok(*e)));
/// // An unknown name is an error that lists the names there are.
/// let err: Box<dyn std::error::Error> = "epol".parse::<Engine>().unwrap_err().into();
/// assert!(err.to_string().starts_with(r#"unknown engine "epol": use epoll-edge, epoll-level"#));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Engine {
    /// An event loop over a selector.
    Reactor(Backend, Trigger),
    /// A thread per connection, blocking sockets.
    Threads,
    /// One connection at a time.
    Blocking,
    /// Busy-polling non-blocking sockets in one thread.
    Nonblocking,
    /// Completion-based I/O on io_uring (multishot accept and receive into
    /// provided buffers, ordered sends); one ring per thread.
    Uring,
}

impl Engine {
    /// Every engine, each readiness mode of a backend as its own.
    pub const ALL: &'static [Engine] = &[
        Engine::Reactor(Backend::Epoll, Trigger::Edge),
        Engine::Reactor(Backend::Epoll, Trigger::Level),
        Engine::Reactor(Backend::Epoll, Trigger::Oneshot),
        Engine::Reactor(Backend::Poll, Trigger::Level),
        Engine::Reactor(Backend::Select, Trigger::Level),
        Engine::Reactor(Backend::Sigio, Trigger::Edge),
        Engine::Reactor(Backend::Uring, Trigger::Edge),
        Engine::Reactor(Backend::Uring, Trigger::Level),
        Engine::Reactor(Backend::Uring, Trigger::Oneshot),
        Engine::Uring,
        Engine::Threads,
        Engine::Blocking,
        Engine::Nonblocking,
    ];

    /// The engine's name: see [`Engine`].
    pub fn name(&self) -> &'static str {
        match self {
            Engine::Reactor(b, t) => match (b, t) {
                (Backend::Epoll, Trigger::Edge) => "epoll-edge",
                (Backend::Epoll, Trigger::Level) => "epoll-level",
                (Backend::Epoll, Trigger::Oneshot) => "epoll-oneshot",
                (Backend::Uring, Trigger::Edge) => "uring-poll-edge",
                (Backend::Uring, Trigger::Level) => "uring-poll-level",
                (Backend::Uring, Trigger::Oneshot) => "uring-poll-oneshot",
                (Backend::Poll, _) => "poll",
                (Backend::Select, _) => "select",
                (Backend::Sigio, _) => "sigio",
                // A backend this engine version does not know (Backend grows).
                _ => "reactor",
            },
            Engine::Threads => "threads",
            Engine::Blocking => "blocking",
            Engine::Nonblocking => "nonblocking",
            Engine::Uring => "uring",
        }
    }

    /// The backend part of the name (`epoll`, `uring-poll`, `threads`, ...).
    pub fn backend_name(&self) -> &'static str {
        // The name less its mode suffix, where it has one: one table of names.
        let name = self.name();
        let suffix = match self.trigger() {
            Some(Trigger::Edge) => "-edge",
            Some(Trigger::Level) => "-level",
            Some(Trigger::Oneshot) => "-oneshot",
            _ => "",
        };
        name.strip_suffix(suffix).unwrap_or(name)
    }

    /// The readiness mode, for engines built on a selector.
    pub fn trigger(&self) -> Option<Trigger> {
        match self {
            Engine::Reactor(_, t) => Some(*t),
            _ => None,
        }
    }

    /// Whether the engine carries out a protocol's commands (writes to other
    /// connections, closes of others, timers): the event-loop engines do;
    /// the thread, blocking and busy-polling engines refuse them (counted in
    /// [`LoopStats::refused_commands`]).
    pub fn carries_out_commands(&self) -> bool {
        matches!(self, Engine::Reactor(..) | Engine::Uring)
    }

    /// The engines of one backend, its default readiness mode first.
    pub fn of_backend(backend_name: &str) -> impl Iterator<Item = Engine> + '_ {
        Engine::ALL
            .iter()
            .copied()
            .filter(move |e| e.backend_name() == backend_name)
    }

    /// What the engine is, in a few words.
    pub fn describe(&self) -> String {
        match self {
            Engine::Reactor(b, t) => format!("{b} ({t}-triggered)"),
            Engine::Threads => "threads (one per connection)".into(),
            Engine::Blocking => "blocking (one connection at a time)".into(),
            Engine::Nonblocking => "nonblocking (busy-polling)".into(),
            Engine::Uring => "uring (io_uring completions)".into(),
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Engine {
    type Err = iomux::UnknownName;

    /// An engine by its name; a backend's name alone means its default mode
    /// (the first of its engines in [`Engine::ALL`]).
    fn from_str(s: &str) -> Result<Engine, iomux::UnknownName> {
        Engine::ALL
            .iter()
            .find(|e| e.name() == s)
            .or_else(|| Engine::ALL.iter().find(|e| e.backend_name() == s))
            .copied()
            .ok_or_else(|| {
                iomux::UnknownName::new("engine", s, Engine::ALL.iter().map(Engine::name).collect())
            })
    }
}

/// Server settings shared by every engine.
///
/// ```
/// let c = iomux_engine::Config::default();
/// assert_eq!(c.backlog, 1024);
/// assert_eq!(c.threads, 1);
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen; port 0 picks a free port.
    pub addr: SocketAddr,
    /// Listen backlog.
    pub backlog: i32,
    /// Loops (or acceptor threads), each with its own SO_REUSEPORT listener.
    pub threads: usize,
    /// TCP_NODELAY on accepted sockets.
    pub nodelay: bool,
    /// TCP_CORK around each batch of writes, but for a batch that sends a
    /// file: `MSG_MORE` already puts a head in one segment with the file
    /// behind it, and a cork around `sendfile` cost the server 2.5x per
    /// 1 MiB file (docs/files.md; nginx's `tcp_nopush` likewise).
    pub cork: bool,
    /// Close connections idle this long; for HTTP also the time allowed for a request head.
    pub idle_timeout: Duration,
    /// Bytes a second a peer must deliver while a message of its is in
    /// progress (a request head, a command, a body): each `idle_timeout`
    /// period of it must bring at least this many bytes a second, and at
    /// least one byte (0: one byte a period is enough). Apache's
    /// `mod_reqtimeout` `MinRate`; a slower peer times out.
    pub min_rate: u32,
    /// Refuse (accept and close) connections past this many per server.
    pub max_conns: Option<usize>,
    /// Pending output per connection above which the engine stops reading
    /// from it until the peer has taken some (backpressure).
    pub output_high_water: usize,
    /// How long a graceful shutdown lets in-flight work finish.
    pub drain_timeout: Duration,
    /// Input a protocol may leave unconsumed before its connection is closed
    /// as faulty; protocols enforce their own, smaller limits, this is the
    /// engine's backstop.
    pub max_pending_input: usize,
    /// Output other connections may queue for one connection (through
    /// [`iomux_proto::Context::send_to`]) before it is disconnected: a
    /// subscriber that stopped reading must not hold memory without bound.
    pub max_output: usize,
    /// Worker threads for blocking work ([`Context::spawn_blocking`]),
    /// shared by every loop; started on first use.
    pub blocking_threads: usize,
    /// Blocking works that may wait for a worker thread; past it
    /// [`Context::spawn_blocking`] fails at once.
    pub blocking_queue: usize,
    /// Serve every accepted connection over TLS with this configuration
    /// (see [`tls`]; [`tls::load_server_config`] builds one from PEM
    /// files): its service sees decrypted input and everything sent to it
    /// is encrypted. The event-loop engines serve it; [`Server::start`]
    /// refuses it on the others. `None`: plain TCP.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// With [`Config::tls`]: once a connection's handshake is done and its
    /// records are sent, hand its record layer to the kernel (kernel TLS:
    /// file regions then go out with `sendfile`), where the kernel offers
    /// it ([`tls::kernel_tls`], asked once at start) and the engine is a
    /// readiness loop (epoll, poll, select, sigio, uring-poll: the io_uring
    /// engine always has a receive under way, which the keys must not
    /// change under). The server then lets rustls's secrets be extracted.
    /// Elsewhere, and with `false`, records are encrypted in user space.
    pub kernel_tls: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            backlog: 1024,
            threads: 1,
            nodelay: false,
            cork: false,
            idle_timeout: Duration::from_secs(60),
            min_rate: 500,
            max_conns: None,
            output_high_water: 256 * 1024,
            drain_timeout: Duration::from_secs(3),
            max_pending_input: 2 * 1024 * 1024,
            max_output: 32 * 1024 * 1024,
            blocking_threads: 4,
            blocking_queue: 1024,
            tls: None,
            kernel_tls: true,
        }
    }
}

/// The longest timeout a server takes (a year).
pub use iomux::timer::MAX_TIMEOUT;

impl Config {
    /// Check the settings a caller could get wrong, naming the one that is.
    ///
    /// ```
    /// let mut c = iomux_engine::Config::default();
    /// c.idle_timeout = std::time::Duration::ZERO;
    /// assert!(c.check().unwrap_err().to_string().contains("idle timeout"));
    /// ```
    pub fn check(&self) -> io::Result<()> {
        let bad = |msg: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, msg.to_string()));
        if self.idle_timeout.is_zero() || self.idle_timeout > MAX_TIMEOUT {
            return bad("the idle timeout must be more than zero and at most a year");
        }
        if self.drain_timeout > MAX_TIMEOUT {
            return bad("the drain timeout must be at most a year");
        }
        if self.backlog < 1 {
            return bad("the listen backlog must be 1 or more");
        }
        if self.output_high_water == 0 || self.max_pending_input == 0 || self.max_output == 0 {
            return bad("the output high-water mark, the input cap and the output cap must be more than zero");
        }
        if self.blocking_threads == 0 || self.blocking_queue == 0 {
            return bad("the blocking work's threads and queue must be 1 or more");
        }
        Ok(())
    }
}

/// A running server: its listeners are bound and its threads started.
#[derive(Debug)]
pub struct Server {
    listen_addr: ListenAddr,
    /// The Unix-domain socket file this server made, removed when it stops.
    socket_file: Option<PathBuf>,
    shutdown: Shutdown,
    hub: std::sync::Arc<hub::Hub>,
    workers: std::sync::Arc<workers::Workers>,
    engine: Engine,
    threads: Vec<JoinHandle<io::Result<LoopStats>>>,
}

impl Server {
    /// Bind the listeners and start serving with a fresh protocol state per
    /// connection from `new_protocol`.
    pub fn start<P, F>(config: Config, engine: Engine, new_protocol: F) -> io::Result<Server>
    where
        P: Service + Send + 'static,
        F: Fn() -> P + Send + Sync + Clone + 'static,
    {
        Server::start_with(config, engine, None, new_protocol)
    }

    /// [`Server::start`] on the Unix-domain socket `path` instead of
    /// `config.addr` (`config.threads` loops accept on the one socket). A
    /// socket file left by a process that is gone is replaced; the file is
    /// removed when the server stops.
    ///
    /// ```
    /// use iomux_engine::{Config, Engine, Server};
    /// use std::io::{Read, Write};
    /// let path = std::env::temp_dir().join(format!("iomux-doc-{}.sock", std::process::id()));
    /// let server = Server::start_unix(&path, Config::default(), Engine::ALL[0], iomux_proto::Echo::upper).unwrap();
    /// assert_eq!(server.listen_addr().to_string(), format!("unix:{}", path.display()));
    /// let mut client = std::os::unix::net::UnixStream::connect(&path).unwrap();
    /// client.write_all(b"hi").unwrap();
    /// let mut got = [0; 2];
    /// client.read_exact(&mut got).unwrap();
    /// assert_eq!(&got, b"HI");
    /// drop(server);
    /// assert!(!path.exists(), "removed on stop");
    /// ```
    pub fn start_unix<P, F>(
        path: impl AsRef<Path>,
        config: Config,
        engine: Engine,
        new_protocol: F,
    ) -> io::Result<Server>
    where
        P: Service + Send + 'static,
        F: Fn() -> P + Send + Sync + Clone + 'static,
    {
        let path = path.as_ref();
        config.check()?;
        let listener = Listener::bind_unix(path, config.backlog)?;
        let mut server = Server::start_with(config, engine, Some(listener), new_protocol);
        match &mut server {
            Ok(server) => server.socket_file = Some(path.to_path_buf()),
            Err(_) => {
                let _ = std::fs::remove_file(path);
            }
        }
        server
    }

    /// [`Server::start`] on a listener the caller already bound, TCP or
    /// Unix-domain (one loop; `config.addr`, `backlog` and `threads` are not
    /// used). It is made non-blocking where the engine needs it.
    pub fn start_on<P, F>(
        listener: impl Into<Listener>,
        config: Config,
        engine: Engine,
        new_protocol: F,
    ) -> io::Result<Server>
    where
        P: Service + Send + 'static,
        F: Fn() -> P + Send + Sync + Clone + 'static,
    {
        let config = Config {
            threads: 1,
            ..config
        };
        Server::start_with(config, engine, Some(listener.into()), new_protocol)
    }

    fn start_with<P, F>(
        config: Config,
        engine: Engine,
        bound: Option<Listener>,
        new_protocol: F,
    ) -> io::Result<Server>
    where
        P: Service + Send + 'static,
        F: Fn() -> P + Send + Sync + Clone + 'static,
    {
        config.check()?;
        if P::needs_event_loop() && !engine.carries_out_commands() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the {engine} engine cannot run this service: it needs an event loop (timers, \
                     sends to other connections, connects, posts, blocking work or drained \
                     notices), which the thread, blocking and busy-polling engines do not have; \
                     use one of {}",
                    Engine::ALL
                        .iter()
                        .filter(|e| e.carries_out_commands())
                        .map(Engine::name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        if let Engine::Reactor(backend, trigger) = engine {
            backend.check_trigger(trigger)?;
        }
        if let Some(tls) = &config.tls {
            tls::check_engine(tls, engine)?;
        }
        let config = tls::settle_kernel_tls(config, engine);
        // Before "listening": a kernel that refuses io_uring is told now.
        match engine {
            Engine::Uring => uring::check_available()?,
            Engine::Reactor(Backend::Uring, _) => iomux::selector::uring::probe()?,
            _ => {}
        }
        let threads = config.threads.max(1);
        let listeners = match bound {
            Some(_) if threads > 1 && matches!(engine, Engine::Reactor(Backend::Sigio, _)) => {
                // One socket shared by several loops has one signal owner:
                // only one loop would hear of new connections.
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the sigio engine cannot share one listening socket between loops (a socket has one signal owner): use one loop, or another engine",
                ));
            }
            Some(listener) => {
                listener.set_nonblocking(needs_nonblocking(engine))?;
                // A Unix-domain socket has no SO_REUSEPORT: every loop accepts on the one.
                let mut all = Vec::with_capacity(threads);
                for _ in 1..threads {
                    all.push(listener.try_clone()?);
                }
                all.push(listener);
                all
            }
            None => bind_listeners(&config, threads, engine)?,
        };
        let listen_addr = listeners[0].local_addr()?;
        let shutdown = Shutdown::new();
        shutdown.set_drain_timeout(config.drain_timeout);
        let max_conns = shutdown.conn_limit(config.max_conns);
        let mut handles = Vec::with_capacity(threads);
        let hub = hub::Hub::new(threads);
        let workers = std::sync::Arc::new(workers::Workers::new(
            hub.clone(),
            config.blocking_threads,
            config.blocking_queue,
        ));
        let (started, start_reports) = shutdown::Started::channel();
        for (i, listener) in listeners.into_iter().enumerate() {
            let setup = LoopSetup {
                index: i,
                hub: hub.clone(),
                rules: Rules::new(&config),
                config: config.clone(),
                shutdown: shutdown.clone(),
                max_conns: max_conns.clone(),
                new_protocol: new_protocol.clone(),
                started: started.clone(),
                workers: workers.clone(),
            };
            let handle = std::thread::Builder::new()
                .name(format!("iomux-loop-{i}"))
                .spawn(move || {
                    if !matches!(engine, Engine::Reactor(..)) {
                        // Nothing to set up that could fail before serving.
                        setup.started.report(Ok(()));
                    }
                    match engine {
                        Engine::Reactor(backend, trigger) => {
                            reactor::run(backend, trigger, listener, setup)
                        }
                        Engine::Threads => threads::run_threads(listener, setup),
                        Engine::Blocking => threads::run_blocking(listener, setup),
                        Engine::Nonblocking => busypoll::run(listener, setup),
                        Engine::Uring => uring::run(listener, setup),
                    }
                })?;
            handles.push(handle);
        }
        drop(started);
        let server = Server {
            listen_addr,
            socket_file: None,
            shutdown,
            hub,
            workers,
            engine,
            threads: handles,
        };
        // Every loop must be set up before the server counts as started: a
        // loop that failed would leave its listener's connections unserved.
        for _ in 0..threads {
            let failure = match start_reports.recv() {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e,
                Err(_) => io::Error::other("a server thread ended while starting"),
            };
            server.shutdown();
            let _ = server.join();
            return Err(io::Error::new(
                failure.kind(),
                format!("cannot start the server: {failure}"),
            ));
        }
        Ok(server)
    }

    /// The TCP address the server listens on (with the real port when 0
    /// was asked); the unspecified address `0.0.0.0:0` for a server on a
    /// Unix-domain socket (see [`Server::listen_addr`]).
    pub fn local_addr(&self) -> SocketAddr {
        self.listen_addr
            .tcp()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Where the server listens: a TCP address or a Unix-domain socket's path.
    pub fn listen_addr(&self) -> &ListenAddr {
        &self.listen_addr
    }

    /// A handle that reaches the server's connections from any thread.
    pub fn handle(&self) -> Handle {
        Handle {
            hub: self.hub.clone(),
            engine: self.engine,
        }
    }

    /// A handle that starts a graceful shutdown from anywhere.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Stop accepting, close idle connections, let in-flight work finish
    /// (within `drain_timeout`).
    pub fn shutdown(&self) {
        self.shutdown.trigger();
    }

    /// Wait for every loop to end; returns their counters, summed.
    pub fn join(mut self) -> io::Result<LoopStats> {
        let _socket_file = SocketFile(self.socket_file.take());
        self.workers.stop();
        let mut total = LoopStats::default();
        let mut first_err = None;
        for h in std::mem::take(&mut self.threads) {
            match h.join() {
                Ok(Ok(stats)) => total.add(&stats),
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert(io::Error::other("a server thread panicked"));
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }
}

/// Reaches a running server's connections from any thread: what a protocol
/// does through its context, from outside (a timer thread, an admin task).
/// The loop serving the connection carries it out on its next pass; on
/// engines that do not carry out commands (see
/// [`Engine::carries_out_commands`]) nothing happens.
///
/// ```no_run
/// # let server: iomux_engine::Server = unimplemented!();
/// # let id = iomux_proto::ConnId::new(0, 2);
/// let handle = server.handle();
/// std::thread::spawn(move || handle.send_to(id, b"news\n"));
/// ```
#[derive(Debug, Clone)]
pub struct Handle {
    hub: std::sync::Arc<hub::Hub>,
    engine: Engine,
}

impl Handle {
    /// Append `bytes` to connection `to`'s output; false when no loop of
    /// this server could serve `to`.
    pub fn send_to(&self, to: ConnId, bytes: &[u8]) -> bool {
        self.hub.post(Command::Send {
            to,
            bytes: bytes.to_vec(),
        })
    }

    /// Append the same `bytes` to the output of every connection in `to`
    /// (a broadcast from outside the loops): one shared frame, one message
    /// per loop; false when some id names no loop of this server (the
    /// others are still served).
    pub fn send_to_many(&self, to: impl IntoIterator<Item = ConnId>, bytes: &[u8]) -> bool {
        self.hub.post_many(to.into_iter().collect(), bytes.into())
    }

    /// Close connection `id` once its output is sent.
    pub fn close(&self, id: ConnId) -> bool {
        self.hub.post(Command::Close(id))
    }

    /// How many loops the server runs (`loop_index` goes below it).
    pub fn loops(&self) -> usize {
        self.hub.loops()
    }

    /// Run `job` in loop `loop_index` of the server, on that loop's thread
    /// (woken for it), with a [`LoopCx`] to adopt streams, watch
    /// descriptors, set loop timers and reach connections. Jobs posted to
    /// one loop run in order. A job that panics is counted in `faults`.
    ///
    /// Errors: the engine has no event loop to run work in (threads,
    /// blocking, nonblocking: see [`Engine::carries_out_commands`]), or
    /// there is no loop `loop_index`. A job posted after the server stopped
    /// never runs.
    ///
    /// ```no_run
    /// # let server: iomux_engine::Server = unimplemented!();
    /// let handle = server.handle();
    /// std::thread::spawn(move || {
    ///     handle.run_in_loop(0, |loop_cx| {
    ///         let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    ///         let id = loop_cx.adopt(ours).unwrap();
    ///         loop_cx.send_to(id, b"hello");
    ///         # drop(theirs);
    ///     })
    /// });
    /// ```
    pub fn run_in_loop(
        &self,
        loop_index: usize,
        job: impl FnOnce(&mut LoopCx) + Send + 'static,
    ) -> io::Result<()> {
        if !self.engine.carries_out_commands() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "the {} engine has no event loop to run work in: use the reactor or io_uring engine",
                    self.engine
                ),
            ));
        }
        if !self.hub.post_job(loop_index, Box::new(job)) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "no loop {loop_index}: this server runs {} loop(s), numbered from 0",
                    self.hub.loops()
                ),
            ));
        }
        Ok(())
    }
}

/// A dropped server stops: it shuts down and joins its loops (a drain of
/// at most `drain_timeout`).
impl Drop for Server {
    fn drop(&mut self) {
        let _socket_file = SocketFile(self.socket_file.take());
        self.workers.stop();
        if self.threads.is_empty() {
            return;
        }
        self.shutdown.trigger();
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

/// Removes a server's Unix-domain socket file once its loops have stopped
/// (dropped after them).
struct SocketFile(Option<PathBuf>);

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Whether the engine's listener must be non-blocking.
fn needs_nonblocking(engine: Engine) -> bool {
    matches!(engine, Engine::Reactor(..) | Engine::Nonblocking)
}

fn bind_listeners(config: &Config, threads: usize, engine: Engine) -> io::Result<Vec<Listener>> {
    let nonblocking = needs_nonblocking(engine);
    let options = |addr| {
        ListenOptions::new(addr)
            .backlog(config.backlog)
            .reuse_port(threads > 1)
            .nonblocking(nonblocking)
    };
    let first = options(config.addr).bind()?;
    // The others join the first one's port, which matters when port 0 was asked.
    let addr = first.local_addr()?;
    let mut listeners = vec![Listener::from(first)];
    for _ in 1..threads {
        listeners.push(options(addr).bind()?.into());
    }
    Ok(listeners)
}

/// A connected loopback TCP pair for unit tests: (client, the server's end).
#[cfg(test)]
pub(crate) fn tcp_pair() -> (std::net::TcpStream, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

#[cfg(test)]
mod tests {
    use super::Engine;

    /// The crate docs, what a first-time user reads first, link every engine.
    #[test]
    fn crate_docs_name_every_engine() {
        let docs: String = include_str!("lib.rs")
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .collect();
        for e in Engine::ALL {
            let debug = format!("{e:?}");
            let variant = debug.split('(').next().unwrap_or_default();
            assert!(
                docs.contains(&format!("[`Engine::{variant}`]")),
                "the crate docs do not list Engine::{variant}"
            );
        }
    }
}
