//! Sans-I/O protocol state machines shared by every iomux engine.
//!
//! A protocol never touches a socket: an engine hands it the bytes it has read
//! and a buffer to append its output to, and the protocol says how much input it
//! consumed and whether the connection should close once that output is sent.
//! The same state machine therefore runs unchanged on the blocking, threaded,
//! busy-polling and event-loop engines, and its unit tests need no network.
//!
//! ```
//! use iomux_proto::{Protocol, Echo};
//! let mut echo = Echo::upper();
//! let mut out = Vec::new();
//! let step = echo.on_input(b"hi there", &mut out);
//! assert_eq!(step.consumed, 8);
//! assert_eq!(out, b"HI THERE");
//! ```
#![warn(missing_docs)]

mod context;
mod echo;
pub mod http;
mod region;
pub mod resp;

pub use context::{BlockingPool, BlockingWork, Command, ConnId, Context, Message, OutputMark};
pub use echo::Echo;
pub use http::Http;
pub use region::FileRegion;

/// Run `protocol` (any [`Service`]) over `input` delivered in reads cut at
/// `cuts`, the way an engine does: unconsumed bytes are offered again in
/// front of the next read, and EOF follows the last. Returns the output and
/// whether the protocol asked to close (by its step or by
/// [`Context::close`]); other commands are not carried out. Tests and fuzz
/// targets use it to check that the split never changes the output.
///
/// ```
/// use iomux_proto::{feed_protocol_in_reads, Echo};
/// let (out, close) = feed_protocol_in_reads(&mut Echo::plain(), b"abcdef", &[2, 4]);
/// assert_eq!((out.as_slice(), close), (&b"abcdef"[..], false));
/// ```
pub fn feed_protocol_in_reads<P: Service>(
    protocol: &mut P,
    input: &[u8],
    cuts: &[usize],
) -> (Vec<u8>, bool) {
    let mut pending: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let mut last = 0;
    let mut points: Vec<usize> = cuts
        .iter()
        .copied()
        .filter(|&c| c > 0 && c < input.len())
        .collect();
    points.sort_unstable();
    points.dedup();
    points.push(input.len());
    let id = ConnId::new(0, 1);
    let now = std::time::Instant::now();
    let mut commands = Vec::new();
    for cut in points {
        pending.extend_from_slice(&input[last..cut]);
        last = cut;
        let mut cx = Context::new(id, now, &mut out, &mut commands);
        let step = protocol.on_data(&pending, &mut cx);
        assert!(step.consumed <= pending.len(), "consumed more than offered");
        pending.drain(..step.consumed);
        if step.close || commands.contains(&Command::Close(id)) {
            return (out, true);
        }
    }
    let mut cx = Context::new(id, now, &mut out, &mut commands);
    protocol.on_eof(&pending, &mut cx);
    (out, false)
}

/// What a protocol did with one slice of input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Step {
    /// Bytes of the input slice the protocol has taken. The engine keeps the
    /// rest and offers it again, followed by newer bytes, on the next call.
    pub consumed: usize,
    /// Close the connection once the output produced so far has been sent;
    /// the engine stops reading and drops any further input.
    pub close: bool,
}

impl Step {
    /// Consumed `n` bytes, keep the connection open.
    pub fn keep(consumed: usize) -> Step {
        Step {
            consumed,
            close: false,
        }
    }

    /// Consumed `n` bytes, close after flushing the output.
    pub fn close(consumed: usize) -> Step {
        Step {
            consumed,
            close: true,
        }
    }
}

/// A connection's protocol state: bytes in, bytes out.
///
/// Engines call [`Protocol::on_input`] whenever new bytes arrive (with any bytes
/// a previous call left unconsumed in front of them), [`Protocol::on_eof`] when the
/// peer shuts down its sending side, and [`Protocol::on_timeout`] when the
/// connection's deadline passes.
pub trait Protocol {
    /// Consume a prefix of `input`, append any output to `out`.
    ///
    /// ```
    /// use iomux_proto::{Protocol, Echo};
    /// let mut out = Vec::new();
    /// assert_eq!(Echo::plain().on_input(b"abc", &mut out).consumed, 3);
    /// ```
    fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>) -> Step;

    /// The peer will send nothing more; `pending` holds input that was never
    /// consumed. Whatever the protocol appends to `out` is sent, then the
    /// connection closes.
    ///
    /// ```
    /// use iomux_proto::{Protocol, Echo};
    /// let mut out = Vec::new();
    /// Echo::plain().on_eof(b"", &mut out);
    /// assert!(out.is_empty());
    /// ```
    fn on_eof(&mut self, pending: &[u8], out: &mut Vec<u8>) {
        let _ = (pending, out);
    }

    /// The connection's deadline passed (idle too long, or a request head took
    /// too long). Whatever the protocol appends to `out` is sent, then the
    /// connection closes.
    ///
    /// ```
    /// use iomux_proto::{Protocol, Echo};
    /// let mut out = Vec::new();
    /// Echo::plain().on_timeout(&mut out);
    /// assert!(out.is_empty());
    /// ```
    fn on_timeout(&mut self, out: &mut Vec<u8>) {
        let _ = out;
    }

    /// The server is shutting down: finish the message in flight, tell the
    /// peer the connection ends after it (HTTP: `Connection: close`), and
    /// close then. Called once per connection when a graceful drain begins.
    ///
    /// ```
    /// use iomux_proto::{Protocol, Echo};
    /// Echo::plain().on_drain();
    /// ```
    fn on_drain(&mut self) {}

    /// True while the protocol is between messages: nothing half-received and
    /// nothing owed. A graceful shutdown closes idle connections at once and
    /// lets the others finish.
    ///
    /// ```
    /// use iomux_proto::{Protocol, Echo};
    /// assert!(Echo::plain().is_idle());
    /// ```
    fn is_idle(&self) -> bool {
        true
    }
}

/// A protocol with the whole connection in reach: everything a [`Protocol`]
/// does, plus a [`Context`] through which it writes at any time, writes to
/// other connections, closes them and sets timers of its own.
///
/// Every [`Protocol`] is a `Service` (it answers input and ignores the rest);
/// implement `Service` directly for protocols that need more, such as
/// pub/sub or chat. The engines run `Service`s.
///
/// ```
/// use iomux_proto::{Context, ConnId, Service, Step};
/// /// Greets on connect, echoes lines, and says goodbye after 30 s of silence.
/// struct Greeter;
/// impl Service for Greeter {
///     fn on_open(&mut self, cx: &mut Context) {
///         cx.write(b"hello\n");
///         cx.set_timer(0, std::time::Duration::from_secs(30));
///     }
///     fn on_data(&mut self, input: &[u8], cx: &mut Context) -> Step {
///         cx.write(input);
///         cx.set_timer(0, std::time::Duration::from_secs(30)); // reset it
///         Step::keep(input.len())
///     }
///     fn on_timer(&mut self, _key: u64, cx: &mut Context) {
///         cx.write(b"bye\n");
///         cx.close();
///     }
/// }
/// let (mut out, mut cmds) = (Vec::new(), Vec::new());
/// let mut cx = Context::new(ConnId::new(0, 2), std::time::Instant::now(), &mut out, &mut cmds);
/// Greeter.on_open(&mut cx);
/// assert_eq!(Greeter.on_data(b"hi", &mut cx).consumed, 2);
/// assert_eq!(out, b"hello\nhi");
/// ```
pub trait Service {
    /// The connection is open (accepted, or connected); nothing has arrived yet.
    fn on_open(&mut self, cx: &mut Context) {
        let _ = cx;
    }

    /// Consume a prefix of `input` (see [`Protocol::on_input`]); output goes
    /// to [`Context::write`] or [`Context::out`].
    fn on_data(&mut self, input: &[u8], cx: &mut Context) -> Step;

    /// The peer will send nothing more (see [`Protocol::on_eof`]). The
    /// connection closes after the output, unless the protocol asked for
    /// [`Context::allow_half_close`].
    fn on_eof(&mut self, pending: &[u8], cx: &mut Context) {
        let _ = (pending, cx);
    }

    /// The connection's idle or head deadline passed (see [`Protocol::on_timeout`]).
    fn on_timeout(&mut self, cx: &mut Context) {
        let _ = cx;
    }

    /// A connect this connection asked for with [`Context::connect`] ended:
    /// `Ok` with the new connection's id (it is open, and its own protocol
    /// has had [`Service::on_open`]), or why it failed. `tag` is the one given
    /// to [`Context::connect`].
    ///
    /// ```
    /// use iomux_proto::{Context, ConnId, Service, Step};
    /// /// Connects on open, says where it got, and closes if it could not.
    /// struct Dialer { upstream: Option<ConnId> }
    /// impl Service for Dialer {
    ///     fn on_open(&mut self, cx: &mut Context) {
    ///         cx.connect("127.0.0.1:6379".parse().unwrap(), std::time::Duration::from_secs(1), 0);
    ///     }
    ///     fn on_data(&mut self, input: &[u8], _cx: &mut Context) -> Step {
    ///         Step::keep(input.len())
    ///     }
    ///     fn on_connect(&mut self, _tag: u64, result: std::io::Result<ConnId>, cx: &mut Context) {
    ///         match result {
    ///             Ok(id) => self.upstream = Some(id),
    ///             Err(e) => {
    ///                 cx.write(format!("{e}\n").as_bytes());
    ///                 cx.close();
    ///             }
    ///         }
    ///     }
    /// }
    /// let (mut out, mut cmds) = (Vec::new(), Vec::new());
    /// let mut cx = Context::new(ConnId::new(0, 2), std::time::Instant::now(), &mut out, &mut cmds);
    /// let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
    /// Dialer { upstream: None }.on_connect(0, Err(refused), &mut cx);
    /// assert_eq!(out, b"refused\n");
    /// ```
    fn on_connect(&mut self, tag: u64, result: std::io::Result<ConnId>, cx: &mut Context) {
        let _ = (tag, result, cx);
    }

    /// A timer this connection set with [`Context::set_timer`] fired.
    fn on_timer(&mut self, key: u64, cx: &mut Context) {
        let _ = (key, cx);
    }

    /// Everything this connection owed its peer has been sent (the kernel
    /// took it), after the service asked with
    /// [`Context::notify_when_drained`]: the moment to produce more (a
    /// streamed download writes its next chunk here and asks again). Called
    /// once per request, never within the call that asked: from the loop's
    /// next pass when nothing was owed, else once the send that empties the
    /// output is done, so a producer whose socket takes everything at once
    /// is called once per pass, not in a loop that starves the others. Not
    /// called once the connection is closing. Only on engines with a loop
    /// (see [`Service::needs_event_loop`]).
    fn on_drained(&mut self, cx: &mut Context) {
        let _ = cx;
    }

    /// The protocol left more input unconsumed than the engine's cap allows
    /// (and was not holding it: [`Context::hold_input`]); the connection
    /// closes after this call (its output is still sent).
    fn on_input_cap(&mut self, cx: &mut Context) {
        let _ = cx;
    }

    /// Another connection's service (or this one's) posted `message` to
    /// this connection with [`Context::post`]; `from` is the poster. Called
    /// on this connection's loop, in order with the other output and
    /// messages `from` sent it, never once this connection is closing.
    /// `message.downcast::<T>()` gets the poster's value back.
    ///
    /// ```
    /// use iomux_proto::{ConnId, Context, Service, Step};
    /// use std::any::Any;
    /// /// Writes every `String` it is posted.
    /// struct Listener;
    /// impl Service for Listener {
    ///     fn on_data(&mut self, input: &[u8], _cx: &mut Context) -> Step {
    ///         Step::keep(input.len())
    ///     }
    ///     fn on_message(&mut self, _from: ConnId, message: Box<dyn Any + Send>, cx: &mut Context) {
    ///         if let Ok(text) = message.downcast::<String>() {
    ///             cx.write(text.as_bytes());
    ///         }
    ///     }
    /// }
    /// let (mut out, mut cmds) = (Vec::new(), Vec::new());
    /// let mut cx = Context::new(ConnId::new(0, 2), std::time::Instant::now(), &mut out, &mut cmds);
    /// Listener.on_message(ConnId::new(1, 3), Box::new(String::from("news\n")), &mut cx);
    /// assert_eq!(out, b"news\n");
    /// ```
    fn on_message(
        &mut self,
        from: ConnId,
        message: Box<dyn std::any::Any + Send>,
        cx: &mut Context,
    ) {
        let _ = (from, message, cx);
    }

    /// Work this connection ran with [`Context::spawn_blocking`] ended:
    /// `Ok` with its boxed result (`downcast::<T>()` it), or an error if the
    /// work panicked. Called on this connection's loop, once per spawned
    /// work, in the order the works finish; not called if the connection
    /// closed meanwhile (the result is dropped).
    fn on_blocking_done(
        &mut self,
        key: u64,
        result: std::io::Result<Box<dyn std::any::Any + Send>>,
        cx: &mut Context,
    ) {
        let _ = (key, result, cx);
    }

    /// Whether this service needs an engine with an event loop: it uses
    /// timers, writes to or closes other connections, connects, posts,
    /// blocking work or drained notices. The thread-per-connection,
    /// blocking and busy-polling engines carry out none of these, so
    /// `iomux_engine::Server::start` refuses a service that says it needs
    /// them on those engines, with an error naming the engines that serve
    /// it. A service that does not say so still runs there: its commands
    /// are dropped and counted, a connect is answered `Unsupported` and
    /// [`Context::spawn_blocking`] fails at once.
    fn needs_event_loop() -> bool
    where
        Self: Sized,
    {
        false
    }

    /// The connection is closing (by either side, or by the engine) or
    /// gone: the place to forget it elsewhere (subscriptions, rooms). Called
    /// once, as soon as it begins closing: its last output may still be on
    /// its way, but it takes no more input and what other connections send
    /// it from now on is dropped, so it must no longer count as a receiver.
    /// No other callback follows.
    fn on_close(&mut self, id: ConnId) {
        let _ = id;
    }

    /// See [`Protocol::on_drain`].
    fn on_drain(&mut self) {}

    /// See [`Protocol::is_idle`].
    fn is_idle(&self) -> bool {
        true
    }

    /// True while the connection waits for other connections rather than
    /// its peer (a pub/sub subscriber, a long poll waiting for an event):
    /// while it owes its peer nothing, the engine does not close it as idle
    /// or as too slow to send a message; what it is sent must still be
    /// taken. Asked when its deadline passes.
    fn exempt_from_idle_timeout(&self) -> bool {
        false
    }
}

impl<P: Protocol> Service for P {
    fn on_data(&mut self, input: &[u8], cx: &mut Context) -> Step {
        self.on_input(input, cx.out())
    }

    fn on_eof(&mut self, pending: &[u8], cx: &mut Context) {
        Protocol::on_eof(self, pending, cx.out());
    }

    fn on_timeout(&mut self, cx: &mut Context) {
        Protocol::on_timeout(self, cx.out());
    }

    fn on_drain(&mut self) {
        Protocol::on_drain(self);
    }

    fn is_idle(&self) -> bool {
        Protocol::is_idle(self)
    }
}
