//! The loop level of the engine API: work run inside a running loop
//! ([`crate::Handle::run_in_loop`]), and what it can do there through a
//! [`LoopCx`]: adopt a connected stream as a connection served by the
//! server's protocol, watch a descriptor of its own for readiness (libuv's
//! `uv_poll_t`), set loop timers, and reach connections as a protocol does.
//!
//! Only the event-loop engines (the reactor on every selector, and
//! io_uring) have a loop to run work in: see
//! [`crate::Engine::carries_out_commands`].

use iomux::net::Stream;
use iomux::Interest;
use iomux_proto::{BlockingWork, Command, ConnId};
use std::any::Any;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// Work posted to a loop from another thread.
pub(crate) type Job = Box<dyn FnOnce(&mut LoopCx) + Send>;
/// A watched descriptor's callback.
pub(crate) type WatchFn = Box<dyn FnMut(&mut LoopCx, Readiness)>;
/// A loop timer's callback.
pub(crate) type TimerFn = Box<dyn FnOnce(&mut LoopCx)>;
/// How a connect the loop asked for went.
pub(crate) type ConnectFn = Box<dyn FnOnce(&mut LoopCx, io::Result<ConnId>)>;
/// What blocking work brought back, or why it did not.
pub(crate) type BlockingResult = io::Result<Box<dyn Any + Send>>;
/// Told how blocking work the loop itself spawned went.
pub(crate) type BlockingDoneFn = Box<dyn FnOnce(&mut LoopCx, BlockingResult)>;

/// A descriptor watched with [`LoopCx::watch`]; [`LoopCx::unwatch`] stops it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WatchId(pub(crate) usize);

/// A loop timer set with [`LoopCx::set_timer`]; [`LoopCx::cancel_timer`] cancels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LoopTimer(pub(crate) u64);

/// What a watched descriptor is ready for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Readiness {
    /// Readable, or its peer hung up, or an error is pending.
    pub readable: bool,
    /// Writable.
    pub writable: bool,
}

/// A descriptor watched in a loop: kept open while it is watched.
pub(crate) struct Watch {
    pub fd: Box<dyn AsFd>,
    pub interest: Interest,
    /// Out while it runs (the loop is borrowed by the call).
    pub callback: Option<WatchFn>,
    /// A readiness request for it is with the kernel (io_uring).
    pub armed: bool,
    /// Its registration goes silent after each report (a one-shot
    /// selector): re-armed after each callback.
    pub rearm: bool,
}

/// What a loop lets work running in it do; each engine's loop implements it.
pub(crate) trait LoopOps {
    fn loop_index(&mut self) -> usize;
    fn now(&mut self) -> Instant;
    fn adopt(&mut self, stream: Stream) -> io::Result<ConnId>;
    fn watch(&mut self, watch: Watch) -> io::Result<WatchId>;
    fn unwatch(&mut self, id: WatchId) -> bool;
    fn set_timer(&mut self, after: Duration, callback: TimerFn) -> LoopTimer;
    fn cancel_timer(&mut self, timer: LoopTimer) -> bool;
    fn connect_from_loop(&mut self, addr: SocketAddr, timeout: Duration, told: ConnectFn);
    /// Carry out a command as a protocol's (its target's loop carries it out).
    fn command(&mut self, command: Command);
    /// Queue blocking work for the loop itself; `done` hears how it went.
    fn spawn_blocking_from_loop(
        &mut self,
        work: BlockingWork,
        done: BlockingDoneFn,
    ) -> io::Result<()>;
    /// Blocking work asked by `conn` (a connection of this loop, or the
    /// loop itself) ended: hand its result over.
    fn blocking_done(&mut self, conn: ConnId, key: u64, result: BlockingResult);
}

/// A running loop, as work inside it sees it: given to a job posted with
/// [`crate::Handle::run_in_loop`], to a watched descriptor's callback and to
/// a loop timer's callback. Everything here happens on the loop's thread,
/// between its passes over connections.
///
/// ```no_run
/// use iomux_engine::{Config, Engine, Server};
/// use std::time::Duration;
/// # fn main() -> std::io::Result<()> {
/// let server = Server::start(Config::default(), Engine::Uring, || iomux_proto::Echo::default())?;
/// let handle = server.handle();
/// // From any thread: a timer in loop 0 that greets a connection of it.
/// handle.run_in_loop(0, |loop_cx| {
///     loop_cx.set_timer(Duration::from_secs(1), |loop_cx| {
///         loop_cx.send_to(iomux_proto::ConnId::new(0, 2), b"tick\n");
///     });
/// })?;
/// # Ok(()) }
/// ```
pub struct LoopCx<'a> {
    ops: &'a mut dyn LoopOps,
}

impl std::fmt::Debug for LoopCx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopCx").finish_non_exhaustive()
    }
}

impl<'a> LoopCx<'a> {
    pub(crate) fn new(ops: &'a mut dyn LoopOps) -> Self {
        LoopCx { ops }
    }

    /// This loop's place among the server's loops (as in [`ConnId::loop_index`]).
    pub fn loop_index(&mut self) -> usize {
        self.ops.loop_index()
    }

    /// The loop's clock for this pass.
    pub fn now(&mut self) -> Instant {
        self.ops.now()
    }

    /// Serve a stream the caller connected (TCP or Unix-domain) as a
    /// connection of this loop, with a protocol from the server's factory,
    /// as if it had been accepted; its [`iomux_proto::Context::adopted`] is
    /// true in `on_open`. Counts under `max_conns`: an error when the limit
    /// is reached or the loop cannot watch it (the stream is then closed).
    ///
    /// ```no_run
    /// # fn f(loop_cx: &mut iomux_engine::LoopCx) -> std::io::Result<()> {
    /// let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    /// let id = loop_cx.adopt(ours)?;
    /// # drop((id, theirs)); Ok(()) }
    /// ```
    pub fn adopt(&mut self, stream: impl Into<Stream>) -> io::Result<ConnId> {
        self.ops.adopt(stream.into())
    }

    /// Call `callback` while `fd` is ready for what `interest` asks, until
    /// [`LoopCx::unwatch`]; the loop keeps `fd` (open) until then. Read or
    /// write until the descriptor would block: on edge-triggered-only
    /// selectors (signal-driven I/O) readiness is reported once per change.
    /// A callback that panics is unwatched (counted in `faults`).
    ///
    /// ```no_run
    /// # fn f(loop_cx: &mut iomux_engine::LoopCx, pipe: std::fs::File) -> std::io::Result<()> {
    /// use std::io::Read;
    /// let mut reader = pipe.try_clone()?;
    /// let id = loop_cx.watch(pipe, iomux::Interest::READABLE, move |_loop_cx, ready| {
    ///     let mut buf = [0u8; 512];
    ///     if ready.readable {
    ///         let _ = reader.read(&mut buf);
    ///     }
    /// })?;
    /// # let _ = id; Ok(()) }
    /// ```
    pub fn watch(
        &mut self,
        fd: impl AsFd + 'static,
        interest: Interest,
        callback: impl FnMut(&mut LoopCx, Readiness) + 'static,
    ) -> io::Result<WatchId> {
        self.ops.watch(Watch {
            fd: Box::new(fd),
            interest,
            callback: Some(Box::new(callback)),
            armed: false,
            rearm: false,
        })
    }

    /// Stop watching a descriptor (it is closed, unless the caller kept a
    /// clone); false when it was not watched.
    pub fn unwatch(&mut self, id: WatchId) -> bool {
        self.ops.unwatch(id)
    }

    /// Call `callback` once, `after` from now, in this loop's timer wheel.
    pub fn set_timer(
        &mut self,
        after: Duration,
        callback: impl FnOnce(&mut LoopCx) + 'static,
    ) -> LoopTimer {
        self.ops.set_timer(after, Box::new(callback))
    }

    /// Cancel a loop timer; false when it already fired or was cancelled.
    pub fn cancel_timer(&mut self, timer: LoopTimer) -> bool {
        self.ops.cancel_timer(timer)
    }

    /// Open an outgoing connection from this loop, served by a protocol from
    /// the server's factory (its `on_open` runs once it is established);
    /// `told` learns its id, or why it failed (refused, unreachable, timed
    /// out after `timeout`, the connection limit).
    ///
    /// ```no_run
    /// # fn f(loop_cx: &mut iomux_engine::LoopCx) {
    /// let upstream = "127.0.0.1:6379".parse().unwrap();
    /// loop_cx.connect(upstream, std::time::Duration::from_secs(2), |loop_cx, result| {
    ///     if let Ok(id) = result {
    ///         loop_cx.send_to(id, b"PING\r\n");
    ///     }
    /// });
    /// # }
    /// ```
    pub fn connect(
        &mut self,
        addr: SocketAddr,
        timeout: Duration,
        told: impl FnOnce(&mut LoopCx, io::Result<ConnId>) + 'static,
    ) {
        self.ops.connect_from_loop(addr, timeout, Box::new(told));
    }

    /// Append `bytes` to connection `to`'s output (on any loop of the server).
    pub fn send_to(&mut self, to: ConnId, bytes: &[u8]) {
        self.ops.command(Command::Send {
            to,
            bytes: bytes.to_vec(),
        });
    }

    /// Append the same `bytes` to the output of every connection in `to`
    /// (on any loops of the server), sharing one frame among them, as
    /// [`iomux_proto::Context::send_to_many`] does.
    ///
    /// ```no_run
    /// # fn f(loop_cx: &mut iomux_engine::LoopCx, subscribers: &[iomux_proto::ConnId]) {
    /// loop_cx.send_to_many(subscribers.iter().copied(), b"tick\n");
    /// # }
    /// ```
    pub fn send_to_many(&mut self, to: impl IntoIterator<Item = ConnId>, bytes: &[u8]) {
        self.ops.command(Command::SendMany {
            to: to.into_iter().collect(),
            bytes: bytes.into(),
        });
    }

    /// Close connection `id` once its output is sent.
    pub fn close(&mut self, id: ConnId) {
        self.ops.command(Command::Close(id));
    }

    /// Run `work` on the server's worker threads, off the loop, and call
    /// `done` in this loop with its result (or the error of its panic), as
    /// [`iomux_proto::Context::spawn_blocking`] does for a connection.
    /// Errors at once when the pool's queue is full.
    ///
    /// ```no_run
    /// # fn f(loop_cx: &mut iomux_engine::LoopCx) -> std::io::Result<()> {
    /// loop_cx.spawn_blocking(|| std::fs::read_to_string("/etc/hostname"), |_loop_cx, result| {
    ///     let _name = result.ok().and_then(Result::ok);
    /// })?;
    /// # Ok(()) }
    /// ```
    pub fn spawn_blocking<T: Any + Send>(
        &mut self,
        work: impl FnOnce() -> T + Send + 'static,
        done: impl FnOnce(&mut LoopCx, io::Result<T>) + 'static,
    ) -> io::Result<()> {
        self.ops.spawn_blocking_from_loop(
            Box::new(move || Box::new(work()) as Box<dyn Any + Send>),
            Box::new(move |loop_cx, result| {
                let result = result.map(|boxed| match boxed.downcast::<T>() {
                    Ok(value) => *value,
                    Err(_) => unreachable!("the work's own type comes back"),
                });
                done(loop_cx, result)
            }),
        )
    }

    /// Hand the result of blocking work to whoever asked (the pool's
    /// worker threads post it to the loop as a job).
    pub(crate) fn blocking_done(&mut self, conn: ConnId, key: u64, result: BlockingResult) {
        self.ops.blocking_done(conn, key, result);
    }
}
