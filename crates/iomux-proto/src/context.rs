//! What a protocol may ask of the engine beyond answering its input: write
//! to its connection at any time, write to another connection of the same
//! server (with or without flow control), close itself or another, half-close,
//! set timers of its own, open outgoing connections.
//!
//! Sans-I/O like the rest of this crate: a [`Context`] only records what the
//! protocol asks ([`Command`]s and output bytes); the engine carries it out
//! once the protocol's call returns.

use crate::FileRegion;
use std::any::Any;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Command {
    /// The connection a command is carried out on, which may be served by
    /// another loop (`Send`, `Forward`, `Close`, ...); timers and connects
    /// are the asking connection's own, and a [`Command::SendMany`] has
    /// many (its `to`).
    ///
    /// ```
    /// use iomux_proto::{Command, ConnId};
    /// assert_eq!(Command::Close(ConnId::new(1, 2)).target(), Some(ConnId::new(1, 2)));
    /// assert_eq!(Command::CancelTimer(3).target(), None);
    /// ```
    pub fn target(&self) -> Option<ConnId> {
        match self {
            Command::Send { to, .. }
            | Command::Forward { to, .. }
            | Command::Link { to, .. }
            | Command::Post { to, .. } => Some(*to),
            Command::Close(id)
            | Command::ShutdownWrite(id)
            | Command::PauseReading(id)
            | Command::ResumeReading(id) => Some(*id),
            Command::SetTimer { .. }
            | Command::CancelTimer(_)
            | Command::Connect { .. }
            | Command::SendMany { .. } => None,
        }
    }
}

/// A connection of a running server, unique among its live connections
/// (a closed connection's id is not reused for a long while: it carries a
/// generation). It names the loop that serves it, so any connection can
/// write to any other, whichever loop thread serves it.
///
/// Its `Display` is `LOOP:SLOT`, short for logs and names (a slot is reused
/// by later connections); its `Debug` shows the generation too.
///
/// ```
/// use iomux_proto::ConnId;
/// let id = ConnId::new(1, (3 << 32) | 4); // loop 1, slot 4, generation 3
/// assert_eq!(id.to_string(), "1:4");
/// assert_eq!(format!("{id:?}"), "ConnId { loop_index: 1, slot: 4, generation: 3 }");
/// assert_ne!(id, ConnId::new(1, 4), "a new generation is a new connection");
/// ```
///
/// Its bits are its own: make one with [`ConnId::new`].
///
/// ```compile_fail
/// let _ = iomux_proto::ConnId(5);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

impl ConnId {
    /// The id of connection `token` on loop `loop_index` (below 2^16): an
    /// engine's token, below 2^48, holds the slot in its low 32 bits and the
    /// slot's generation above them.
    pub const fn new(loop_index: usize, token: usize) -> ConnId {
        ConnId(((loop_index as u64) << 48) | (token as u64 & ((1 << 48) - 1)))
    }

    /// The whole id as a number, for a protocol that hands ids out (as
    /// Redis's `CLIENT ID`): unique among the server's live connections.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The loop that serves the connection.
    pub fn loop_index(self) -> usize {
        (self.0 >> 48) as usize
    }

    /// The connection's token within its loop.
    pub fn token(self) -> usize {
        (self.0 & ((1 << 48) - 1)) as usize
    }

    /// The token's slot (what `Display` shows).
    fn slot(self) -> u32 {
        self.token() as u32
    }

    /// The token's generation: how often its slot was reused.
    fn generation(self) -> usize {
        self.token() >> 32
    }
}

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.loop_index(), self.slot())
    }
}

impl std::fmt::Debug for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnId")
            .field("loop_index", &self.loop_index())
            .field("slot", &self.slot())
            .field("generation", &self.generation())
            .finish()
    }
}

/// A value of any type moved from one connection's service to another's
/// ([`Context::post`]): moved, never copied, so a [`Command`] is not
/// `Clone`; two are equal only if they are the same value (the same box).
pub struct Message(pub Box<dyn Any + Send>);

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Message(..)")
    }
}

impl PartialEq for Message {
    fn eq(&self, other: &Message) -> bool {
        std::ptr::addr_eq(&*self.0, &*other.0)
    }
}

impl Eq for Message {}

/// Work for the engine's worker threads ([`Context::spawn_blocking`]),
/// its result boxed.
pub type BlockingWork = Box<dyn FnOnce() -> Box<dyn Any + Send> + Send>;

/// Where [`Context::spawn_blocking`] sends work: an engine's bounded pool
/// of worker threads (engines implement it; services only call
/// [`Context::spawn_blocking`]).
pub trait BlockingPool: std::fmt::Debug {
    /// Queue `work` for connection `conn`, whose service is told its
    /// result with `key` ([`crate::Service::on_blocking_done`]); an error,
    /// at once, when the queue is full.
    fn spawn(&self, conn: ConnId, key: u64, work: BlockingWork) -> io::Result<()>;
}

/// A point in a call's output ([`Context::output_mark`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputMark {
    bytes: usize,
    files: usize,
}

/// Something a protocol asked for that the engine does after the call.
/// Not `Clone`: a [`Command::Post`] moves its message.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// Append `bytes` to connection `to`'s output (ignored if it is gone).
    Send {
        /// The connection written to.
        to: ConnId,
        /// What it is sent.
        bytes: Vec<u8>,
    },
    /// Append the same `bytes` to the output of every connection in `to`
    /// (ignoring those that are gone), as one `Send` each would, in the
    /// order of this command among each one's other output; the engine
    /// hands one frame to all of them ([`Context::send_to_many`]).
    SendMany {
        /// The connections written to, on any loops.
        to: Vec<ConnId>,
        /// What each is sent, shared by all of them.
        bytes: Arc<[u8]>,
    },
    /// Close connection `id` once its output is sent.
    Close(ConnId),
    /// Call [`crate::Service::on_timer`] with `key` on the asking
    /// connection once `after` has passed; replaces a timer of the same key.
    SetTimer {
        /// The protocol's name for the timer.
        key: u64,
        /// How long from now.
        after: Duration,
    },
    /// Cancel the asking connection's timer `key` (nothing if none is set).
    CancelTimer(u64),
    /// Open an outgoing TCP connection to `addr` from the asking connection's
    /// loop; its outcome comes to [`crate::Service::on_connect`] with `tag`.
    Connect {
        /// Where to connect.
        addr: SocketAddr,
        /// How long the connect may take before it fails as timed out.
        timeout: Duration,
        /// The asker's name for this connect.
        tag: u64,
    },
    /// Append `bytes` to connection `to`'s output with flow control: while
    /// `to` owes its peer more than the engine's output high-water mark,
    /// connection `from` is not read; it is read again once `to` has sent
    /// half of it.
    Forward {
        /// The connection whose input this is (paused while `to` is full).
        from: ConnId,
        /// The connection written to.
        to: ConnId,
        /// What it is sent.
        bytes: Vec<u8>,
    },
    /// Send connection `id`'s FIN once its output is sent; it goes on
    /// reading, and closes once its peer has sent its FIN too.
    ShutdownWrite(ConnId),
    /// Stop reading connection `id` (its input waits in the kernel).
    PauseReading(ConnId),
    /// Read connection `id` again after [`Command::PauseReading`].
    ResumeReading(ConnId),
    /// Tie connections `from` and `to` together: when either closes, for
    /// whatever reason, the other closes once its output is sent.
    Link {
        /// The asking connection.
        from: ConnId,
        /// The connection it is tied to.
        to: ConnId,
    },
    /// Deliver `message` to connection `to`'s service
    /// ([`crate::Service::on_message`]), in order with everything else
    /// sent to it; skipped if `to` is gone or closing by then.
    Post {
        /// The asking connection.
        from: ConnId,
        /// The connection whose service receives it.
        to: ConnId,
        /// The value it receives.
        message: Message,
    },
}

/// A connection as its protocol sees it during one call: who it is, where
/// its output goes, and what else it may ask of the engine.
///
/// ```
/// use iomux_proto::{Command, ConnId, Context};
/// let (mut out, mut commands) = (Vec::new(), Vec::new());
/// let me = ConnId::new(0, 7);
/// let mut cx = Context::new(me, std::time::Instant::now(), &mut out, &mut commands);
/// cx.write(b"hello");
/// cx.send_to(ConnId::new(1, 3), b"news");
/// cx.set_timer(1, std::time::Duration::from_secs(5));
/// assert_eq!(out, b"hello");
/// assert_eq!(commands.len(), 2);
/// assert_eq!(commands[0], Command::Send { to: ConnId::new(1, 3), bytes: b"news".to_vec() });
/// ```
#[derive(Debug)]
pub struct Context<'a> {
    id: ConnId,
    now: Instant,
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
    opened_by: Option<ConnId>,
    adopted: bool,
    half_close: bool,
    /// What this call asked of the connection beside commands ([`ask`]).
    asks: u8,
    /// `out`'s length at which this connection owes its peer the engine's
    /// high-water mark.
    out_limit: usize,
    out: &'a mut Vec<u8>,
    /// File regions sent during the call, each with the length `out` had
    /// then: it goes out after those bytes and before the ones that follow.
    files: Vec<(usize, FileRegion)>,
    /// The sum of `files`' lengths, kept as they come and go so that
    /// [`Context::output_full`] costs the same after many regions as after one.
    file_bytes: u64,
    commands: &'a mut Vec<Command>,
    blocking: Option<&'a dyn BlockingPool>,
}

/// The bits of [`Context`]'s `asks`.
mod ask {
    pub const DRAINED: u8 = 1;
    pub const HOLD: u8 = 2;
    pub const RELEASE: u8 = 4;
}

impl<'a> Context<'a> {
    /// A context for connection `id` at `now`, appending output to `out`
    /// and commands to `commands`. Public for two uses: a unit test of a
    /// service makes one, calls the service with it and looks at `out` and
    /// `commands` (no socket needed; see [`Context`]); and an engine makes
    /// one for each call. The `with_*` methods set what an engine knows of
    /// the connection, for tests of services that read it too.
    pub fn new(
        id: ConnId,
        now: Instant,
        out: &'a mut Vec<u8>,
        commands: &'a mut Vec<Command>,
    ) -> Context<'a> {
        Context {
            id,
            now,
            peer: None,
            local: None,
            opened_by: None,
            adopted: false,
            half_close: false,
            asks: 0,
            out_limit: usize::MAX,
            out,
            files: Vec::new(),
            file_bytes: 0,
            commands,
            blocking: None,
        }
    }

    /// The same context with the engine's worker pool, through which
    /// [`Context::spawn_blocking`] runs work (engines with a loop; a test
    /// of a service that spawns work may pass its own [`BlockingPool`]).
    pub fn with_blocking_pool(mut self, pool: Option<&'a dyn BlockingPool>) -> Self {
        self.blocking = pool;
        self
    }

    /// The same context for a connection that reaches the engine's output
    /// high-water mark once the call writes `room` more bytes (engines, and
    /// tests of services that stop there).
    pub fn with_output_room(mut self, room: usize) -> Self {
        self.out_limit = self.out.len().saturating_add(room);
        self
    }

    /// Whether this connection's output (bytes and file regions) has
    /// reached the engine's high-water mark: a service answering pipelined
    /// input should stop here and leave the rest unconsumed. The engine
    /// offers it again once the peer has taken half of what it owes, so the
    /// answers to one read (thousands of pipelined GETs of a large value)
    /// never sit in memory all at once.
    ///
    /// ```
    /// use iomux_proto::{ConnId, Context};
    /// let (mut out, mut commands) = (Vec::new(), Vec::new());
    /// let now = std::time::Instant::now();
    /// let mut cx = Context::new(ConnId::new(0, 3), now, &mut out, &mut commands)
    ///     .with_output_room(4);
    /// cx.write(b"abc");
    /// assert!(!cx.output_full());
    /// cx.write(b"d");
    /// assert!(cx.output_full());
    /// ```
    pub fn output_full(&self) -> bool {
        // A file region sent is owed like bytes (it holds no memory, but a
        // pipeline of large files must not be answered all at once either).
        (self.out.len() as u64).saturating_add(self.file_bytes) >= self.out_limit as u64
    }

    /// The same context with the connection's addresses, as
    /// [`Context::peer_addr`] and [`Context::local_addr`] report them.
    pub fn with_addrs(mut self, peer: Option<SocketAddr>, local: Option<SocketAddr>) -> Self {
        self.peer = peer;
        self.local = local;
        self
    }

    /// The same context for a connection that `asker` opened with
    /// [`Context::connect`], as [`Context::opened_by`] reports it in
    /// [`crate::Service::on_open`].
    pub fn with_opener(mut self, asker: Option<ConnId>) -> Self {
        self.opened_by = asker;
        self
    }

    /// The same context for a connection whose stream the user connected
    /// and handed to a loop, as [`Context::adopted`] reports it.
    pub fn with_adopted(mut self, adopted: bool) -> Self {
        self.adopted = adopted;
        self
    }

    /// Whether the user connected this connection's stream and handed it to
    /// the loop (iomux-engine's `LoopCx::adopt`), rather than it being
    /// accepted or opened with [`Context::connect`].
    ///
    /// ```
    /// use iomux_proto::{ConnId, Context};
    /// let (mut out, mut commands) = (Vec::new(), Vec::new());
    /// let now = std::time::Instant::now();
    /// let cx = Context::new(ConnId::new(0, 3), now, &mut out, &mut commands).with_adopted(true);
    /// assert!(cx.adopted());
    /// ```
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// In [`crate::Service::on_open`]: the connection that opened this one
    /// with [`Context::connect`], or `None` for an accepted connection.
    ///
    /// ```
    /// use iomux_proto::{ConnId, Context};
    /// let (mut out, mut commands) = (Vec::new(), Vec::new());
    /// let now = std::time::Instant::now();
    /// let cx = Context::new(ConnId::new(0, 3), now, &mut out, &mut commands)
    ///     .with_opener(Some(ConnId::new(0, 2)));
    /// assert_eq!(cx.opened_by(), Some(ConnId::new(0, 2)));
    /// ```
    pub fn opened_by(&self) -> Option<ConnId> {
        self.opened_by
    }

    /// This connection.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// When this call began (the engine's clock for this pass).
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The peer's address, where the engine knows it.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The local address, where the engine knows it.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }

    /// Append bytes to this connection's output.
    pub fn write(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// This connection's output buffer, to encode into directly.
    pub fn out(&mut self) -> &mut Vec<u8> {
        self.out
    }

    /// Where this call's output stands (its bytes and file regions), to
    /// take back later with [`Context::take_back_output`].
    pub fn output_mark(&self) -> OutputMark {
        OutputMark {
            bytes: self.out.len(),
            files: self.files.len(),
        }
    }

    /// Take back everything written since `mark`, bytes and file regions
    /// alike: an answer that failed half-written (a handler that panicked)
    /// never reaches the peer in part.
    ///
    /// ```
    /// use iomux_proto::{ConnId, Context, FileRegion};
    /// let (mut out, mut commands) = (Vec::new(), Vec::new());
    /// let mut cx = Context::new(ConnId::new(0, 2), std::time::Instant::now(), &mut out, &mut commands);
    /// cx.write(b"kept");
    /// let mark = cx.output_mark();
    /// cx.write(b"half an answer");
    /// cx.send_file(FileRegion::new(std::sync::Arc::new(std::fs::File::open("/dev/null").unwrap()), 0, 9));
    /// cx.take_back_output(mark);
    /// assert!(cx.take_file_regions().is_empty());
    /// assert_eq!(out, b"kept");
    /// ```
    pub fn take_back_output(&mut self, mark: OutputMark) {
        self.out.truncate(mark.bytes);
        // (Regions already taken by the engine are not here to take back.)
        if let Some(taken_back) = self.files.get(mark.files..) {
            let removed = taken_back
                .iter()
                .fold(0u64, |sum, (_, r)| sum.saturating_add(r.len()));
            self.file_bytes = self.file_bytes.saturating_sub(removed);
            self.files.truncate(mark.files);
        }
    }

    /// Send `region` of a file after the bytes written so far and before
    /// the ones written after it. The engine sends it without copying it
    /// into memory where its I/O model allows (`sendfile`), in pieces capped
    /// per pass so one large file does not hold up the loop's other
    /// connections. A file that turns out shorter than the region (it shrank
    /// while being sent) closes the connection once its bytes run out: the
    /// peer sees fewer bytes than announced and the end of the stream, never
    /// a stream left open. An empty region sends nothing.
    ///
    /// ```
    /// use iomux_proto::{ConnId, Context, FileRegion};
    /// let (mut out, mut commands) = (Vec::new(), Vec::new());
    /// let mut cx = Context::new(ConnId::new(0, 2), std::time::Instant::now(), &mut out, &mut commands);
    /// let file = std::sync::Arc::new(std::fs::File::open("/dev/null").unwrap());
    /// cx.write(b"head\r\n\r\n");
    /// cx.send_file(FileRegion::new(file, 0, 1024));
    /// cx.write(b"next");
    /// let files = cx.take_file_regions();
    /// assert_eq!(files.len(), 1);
    /// assert_eq!((files[0].0, files[0].1.len()), (8, 1024), "after the 8 bytes of the head");
    /// assert_eq!(out, b"head\r\n\r\nnext");
    /// ```
    pub fn send_file(&mut self, region: FileRegion) {
        if !region.is_empty() {
            self.file_bytes = self.file_bytes.saturating_add(region.len());
            self.files.push((self.out.len(), region));
        }
    }

    /// Keep the file regions this call sends in `list` (emptied first): an
    /// engine lends each call the same list, and gets it back from
    /// [`take_file_regions`](Self::take_file_regions), instead of each call
    /// that sends a file allocating one.
    pub fn with_region_list(mut self, mut list: Vec<(usize, FileRegion)>) -> Self {
        list.clear();
        self.files = list;
        self
    }

    /// The file regions sent during this call, each with the length the
    /// output had when it was sent (engines: the region goes after those
    /// bytes). Empty for a call that sent none.
    pub fn take_file_regions(&mut self) -> Vec<(usize, FileRegion)> {
        self.file_bytes = 0;
        std::mem::take(&mut self.files)
    }

    /// Append bytes to another connection's output (any loop of the same
    /// server). A connection that is gone by then is skipped.
    pub fn send_to(&mut self, to: ConnId, bytes: &[u8]) {
        if to == self.id {
            self.write(bytes);
            return;
        }
        self.commands.push(Command::Send {
            to,
            bytes: bytes.to_vec(),
        });
    }

    /// Append the same bytes to the output of many connections (any loops of
    /// the same server): one command for all of them instead of a
    /// [`Context::send_to`] each, so the engine copies the bytes once into
    /// a frame they share, and reaches the connections of another loop with
    /// one message for them all. Each receiver gets them in order with
    /// everything else sent to it; one that is gone by then is skipped, and
    /// one that owes its peer more than the engine's output cap is
    /// disconnected without slowing the others (pub/sub fan-out). This
    /// connection among `to` has the bytes written to its own output.
    ///
    /// ```
    /// use iomux_proto::{Command, ConnId, Context};
    /// let (mut out, mut commands) = (Vec::new(), Vec::new());
    /// let me = ConnId::new(0, 2);
    /// let mut cx = Context::new(me, std::time::Instant::now(), &mut out, &mut commands);
    /// let subscribers = [ConnId::new(0, 3), me, ConnId::new(1, 4)];
    /// cx.send_to_many(subscribers, b"news");
    /// assert_eq!(out, b"news");
    /// assert_eq!(
    ///     commands,
    ///     [Command::SendMany { to: vec![ConnId::new(0, 3), ConnId::new(1, 4)], bytes: b"news"[..].into() }]
    /// );
    /// ```
    pub fn send_to_many(&mut self, to: impl IntoIterator<Item = ConnId>, bytes: &[u8]) {
        let to = to.into_iter();
        let mut others = Vec::with_capacity(to.size_hint().0);
        for id in to {
            if id == self.id {
                self.write(bytes);
            } else {
                others.push(id);
            }
        }
        match others[..] {
            [] => {}
            // One receiver: no frame to share.
            [to] => self.send_to(to, bytes),
            _ => self.commands.push(Command::SendMany {
                to: others,
                bytes: bytes.into(),
            }),
        }
    }

    /// Close this connection once its output is sent.
    pub fn close(&mut self) {
        self.commands.push(Command::Close(self.id));
    }

    /// Close another connection once its output is sent.
    pub fn close_conn(&mut self, id: ConnId) {
        self.commands.push(Command::Close(id));
    }

    /// Set (or reset) this connection's timer `key` to fire after `after`.
    pub fn set_timer(&mut self, key: u64, after: Duration) {
        self.commands.push(Command::SetTimer { key, after });
    }

    /// Cancel this connection's timer `key`.
    pub fn cancel_timer(&mut self, key: u64) {
        self.commands.push(Command::CancelTimer(key));
    }

    /// Open an outgoing TCP connection to `addr`, failing if it is not
    /// established within `timeout`. The engine connects without blocking,
    /// on this connection's loop; the new connection runs a protocol made by
    /// the server's factory (whose [`Context::opened_by`] names this one),
    /// and [`crate::Service::on_connect`] then tells this connection, with
    /// `tag`, the new connection's id or why it failed (refused,
    /// unreachable, timed out). If this connection is closing or gone by
    /// then, the new one is closed. Engines that carry out no commands
    /// answer `Unsupported`.
    ///
    /// ```
    /// use iomux_proto::{Command, ConnId, Context};
    /// use std::time::Duration;
    /// let (mut out, mut commands) = (Vec::new(), Vec::new());
    /// let mut cx = Context::new(ConnId::new(0, 2), std::time::Instant::now(), &mut out, &mut commands);
    /// let upstream = "127.0.0.1:6379".parse().unwrap();
    /// cx.connect(upstream, Duration::from_secs(3), 7);
    /// assert_eq!(commands, [Command::Connect { addr: upstream, timeout: Duration::from_secs(3), tag: 7 }]);
    /// ```
    pub fn connect(&mut self, addr: SocketAddr, timeout: Duration, tag: u64) {
        self.commands.push(Command::Connect { addr, timeout, tag });
    }

    /// Append bytes to another connection's output, with flow control (a
    /// proxy's way to pass on what it read): while `to` owes its peer more
    /// than the output high-water mark, this connection is not read, and it
    /// is read again once `to` has sent half of that; so memory stays bounded
    /// whichever side is slow. Unlike [`Context::send_to`] (pub/sub: a slow
    /// subscriber never slows the publisher), a slow `to` slows this one.
    /// A `to` that is gone by then is skipped.
    ///
    /// ```
    /// use iomux_proto::{Command, ConnId, Context};
    /// let (mut out, mut commands) = (Vec::new(), Vec::new());
    /// let me = ConnId::new(0, 2);
    /// let mut cx = Context::new(me, std::time::Instant::now(), &mut out, &mut commands);
    /// cx.forward_to(ConnId::new(0, 3), b"bytes");
    /// cx.forward_to(me, b"to myself is a write");
    /// assert_eq!(commands, [Command::Forward { from: me, to: ConnId::new(0, 3), bytes: b"bytes".to_vec() }]);
    /// assert_eq!(out, b"to myself is a write");
    /// ```
    pub fn forward_to(&mut self, to: ConnId, bytes: &[u8]) {
        if to == self.id {
            self.write(bytes);
            return;
        }
        self.commands.push(Command::Forward {
            from: self.id,
            to,
            bytes: bytes.to_vec(),
        });
    }

    /// Send this connection's FIN once its output is sent, and go on
    /// reading (a half-close); it closes once the peer's FIN has come too.
    /// Output written after this is dropped.
    pub fn shutdown_write(&mut self) {
        self.commands.push(Command::ShutdownWrite(self.id));
    }

    /// [`Context::shutdown_write`] for another connection (a proxy passing
    /// on its peer's FIN).
    ///
    /// ```
    /// use iomux_proto::{Command, ConnId, Context};
    /// let (mut out, mut commands) = (Vec::new(), Vec::new());
    /// let mut cx = Context::new(ConnId::new(0, 2), std::time::Instant::now(), &mut out, &mut commands);
    /// cx.shutdown_write_conn(ConnId::new(0, 3));
    /// assert_eq!(commands, [Command::ShutdownWrite(ConnId::new(0, 3))]);
    /// ```
    pub fn shutdown_write_conn(&mut self, id: ConnId) {
        self.commands.push(Command::ShutdownWrite(id));
    }

    /// Keep this connection open after its peer's FIN, to go on writing:
    /// [`crate::Service::on_eof`] no longer closes it; it closes once it has
    /// also shut down its own side ([`Context::shutdown_write`]) or is closed.
    /// Without it a peer's FIN closes the connection after the protocol's
    /// last output. Takes effect for the rest of the connection's life,
    /// from the call it is asked in (`on_eof` included).
    ///
    /// ```
    /// use iomux_proto::{ConnId, Context};
    /// let (mut out, mut commands) = (Vec::new(), Vec::new());
    /// let mut cx = Context::new(ConnId::new(0, 2), std::time::Instant::now(), &mut out, &mut commands);
    /// assert!(!cx.half_close_allowed());
    /// cx.allow_half_close();
    /// assert!(cx.half_close_allowed());
    /// ```
    pub fn allow_half_close(&mut self) {
        self.half_close = true;
    }

    /// Whether this call asked for [`Context::allow_half_close`] (engines read it).
    pub fn half_close_allowed(&self) -> bool {
        self.half_close
    }

    /// Stop reading this connection until [`Context::resume_reading`]
    /// (for example until an upstream connection is established).
    ///
    /// ```
    /// use iomux_proto::{Command, ConnId, Context};
    /// let (mut out, mut commands) = (Vec::new(), Vec::new());
    /// let me = ConnId::new(0, 2);
    /// let mut cx = Context::new(me, std::time::Instant::now(), &mut out, &mut commands);
    /// cx.pause_reading();
    /// cx.resume_reading();
    /// assert_eq!(commands, [Command::PauseReading(me), Command::ResumeReading(me)]);
    /// ```
    pub fn pause_reading(&mut self) {
        self.commands.push(Command::PauseReading(self.id));
    }

    /// Read this connection again after [`Context::pause_reading`].
    pub fn resume_reading(&mut self) {
        self.commands.push(Command::ResumeReading(self.id));
    }

    /// Tie this connection and `other` together: when either closes, for
    /// whatever reason (the peer's reset included), the other closes once
    /// its output is sent. A proxy links its two sides. Linking to a
    /// connection that is already gone closes this one.
    ///
    /// ```
    /// use iomux_proto::{Command, ConnId, Context};
    /// let (mut out, mut commands) = (Vec::new(), Vec::new());
    /// let me = ConnId::new(0, 2);
    /// let mut cx = Context::new(me, std::time::Instant::now(), &mut out, &mut commands);
    /// cx.link(ConnId::new(0, 3));
    /// assert_eq!(commands, [Command::Link { from: me, to: ConnId::new(0, 3) }]);
    /// ```
    pub fn link(&mut self, other: ConnId) {
        if other != self.id {
            self.commands.push(Command::Link {
                from: self.id,
                to: other,
            });
        }
    }
    /// Deliver `message` (a value of any type) to connection `to`'s service:
    /// [`crate::Service::on_message`] is called with this connection's id
    /// and the message, on whichever loop serves `to`, in order with
    /// everything else this connection sends to `to` ([`Context::send_to`]
    /// included). A `to` that is gone or closing by then is skipped (the
    /// message is dropped). Posting to itself is delivered the same way,
    /// after this call. This is how a long-poll, a server-sent-events hub
    /// or a chat over HTTP hands an event to the connection that answers.
    ///
    /// ```
    /// use iomux_proto::{Command, ConnId, Context};
    /// let (mut out, mut commands) = (Vec::new(), Vec::new());
    /// let me = ConnId::new(0, 2);
    /// let mut cx = Context::new(me, std::time::Instant::now(), &mut out, &mut commands);
    /// cx.post(ConnId::new(1, 3), String::from("news"));
    /// let Command::Post { from, to, message } = commands.pop().unwrap() else { panic!() };
    /// assert_eq!((from, to), (me, ConnId::new(1, 3)));
    /// assert_eq!(*message.0.downcast::<String>().unwrap(), "news");
    /// ```
    pub fn post<T: Any + Send>(&mut self, to: ConnId, message: T) {
        self.commands.push(Command::Post {
            from: self.id,
            to,
            message: Message(Box::new(message)),
        });
    }

    /// Run `work` on the server's pool of worker threads, off the loop (a
    /// database call, a disk read, a hash of a large file: libuv's
    /// `uv_queue_work`), and hand its result to this connection's
    /// [`crate::Service::on_blocking_done`] with `key`, back on its loop
    /// (`downcast::<T>()` the box to get the `T` back). A panic in `work`
    /// comes back as an error; if this connection is closed meanwhile the
    /// result is dropped. Errors, at once: the pool's queue is full
    /// (`WouldBlock`: try again later, or answer "busy"), or the engine has
    /// no loop to bring the result back to (`Unsupported`: the thread,
    /// blocking and busy-polling engines; a test's plain context).
    ///
    /// ```
    /// use iomux_proto::{ConnId, Context};
    /// let (mut out, mut commands) = (Vec::new(), Vec::new());
    /// let mut cx = Context::new(ConnId::new(0, 2), std::time::Instant::now(), &mut out, &mut commands);
    /// let refused = cx.spawn_blocking(1, || 6 * 7).unwrap_err();
    /// assert_eq!(refused.kind(), std::io::ErrorKind::Unsupported, "no pool here");
    /// ```
    pub fn spawn_blocking<T: Any + Send>(
        &mut self,
        key: u64,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<()> {
        let Some(pool) = self.blocking else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "cannot run blocking work: this engine has no worker pool and no loop to bring its \
                 result back to; run the service on an event-loop engine (epoll, poll, select, \
                 sigio, uring-poll, uring)",
            ));
        };
        pool.spawn(
            self.id,
            key,
            Box::new(move || Box::new(work()) as Box<dyn Any + Send>),
        )
    }

    /// Call [`crate::Service::on_drained`] once everything this connection
    /// owes its peer has been sent (taken by the kernel), counting what this
    /// call writes; at once (in the loop's next pass) when nothing is owed.
    /// One notice per request: a producer asks again each time it wants
    /// to be told (a streamed download: write a chunk, ask, and write the
    /// next one from `on_drained`), so its memory stays at one chunk and a
    /// slow reader slows it. Ignored on engines that carry out no commands.
    ///
    /// ```
    /// use iomux_proto::{ConnId, Context};
    /// let (mut out, mut commands) = (Vec::new(), Vec::new());
    /// let mut cx = Context::new(ConnId::new(0, 2), std::time::Instant::now(), &mut out, &mut commands);
    /// cx.notify_when_drained();
    /// assert!(cx.drained_notice_asked());
    /// ```
    pub fn notify_when_drained(&mut self) {
        self.asks |= ask::DRAINED;
    }

    /// Whether this call asked for [`Context::notify_when_drained`] (engines read it).
    pub fn drained_notice_asked(&self) -> bool {
        self.asks & ask::DRAINED != 0
    }

    /// Stop offering input to [`crate::Service::on_data`] until
    /// [`Context::release_input`]: what arrives meanwhile is kept behind
    /// the input left unconsumed, and reading stops (the peer is held back
    /// by TCP) once that reaches the engine's input cap, instead of the cap
    /// closing the connection. An HTTP connection with an unanswered request
    /// holds the pipelined requests behind it this way.
    ///
    /// ```
    /// use iomux_proto::{ConnId, Context};
    /// let (mut out, mut commands) = (Vec::new(), Vec::new());
    /// let mut cx = Context::new(ConnId::new(0, 2), std::time::Instant::now(), &mut out, &mut commands);
    /// assert_eq!(cx.input_hold_asked(), None);
    /// cx.hold_input();
    /// assert_eq!(cx.input_hold_asked(), Some(true));
    /// cx.release_input();
    /// assert_eq!(cx.input_hold_asked(), Some(false), "the last word counts");
    /// ```
    pub fn hold_input(&mut self) {
        self.asks = (self.asks & !ask::RELEASE) | ask::HOLD;
    }

    /// Offer the input left unconsumed to [`crate::Service::on_data`]
    /// again, in the loop's next pass, even if no new bytes arrive (and end
    /// a [`Context::hold_input`]; reading resumes). The service says so
    /// when it is ready for input it left (its deferred answer went out).
    /// Nothing happens when no input is left. On engines that carry out no
    /// commands input is offered again only when new bytes arrive.
    pub fn release_input(&mut self) {
        self.asks = (self.asks & !ask::HOLD) | ask::RELEASE;
    }

    /// What this call asked of the connection's input: `Some(true)` to hold
    /// it, `Some(false)` to release it, `None` neither (engines read it).
    pub fn input_hold_asked(&self) -> Option<bool> {
        match self.asks & (ask::HOLD | ask::RELEASE) {
            ask::HOLD => Some(true),
            ask::RELEASE => Some(false),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    fn region(len: u64) -> FileRegion {
        FileRegion::new(Arc::new(File::open("/dev/null").unwrap()), 0, len)
    }

    /// The running total of queued file regions is what summing them gives,
    /// after regions are queued, taken back to a mark and taken by the engine.
    #[test]
    fn output_full_counts_the_regions_queued_now() {
        let (mut out, mut commands) = (Vec::new(), Vec::new());
        let now = Instant::now();
        let mut cx =
            Context::new(ConnId::new(0, 1), now, &mut out, &mut commands).with_output_room(1000);
        let summed = |cx: &Context| -> u64 { cx.files.iter().map(|(_, r)| r.len()).sum() };
        cx.write(b"head");
        cx.send_file(region(300));
        cx.send_file(region(0)); // sends nothing
        assert_eq!((cx.file_bytes, summed(&cx)), (300, 300));
        let mark = cx.output_mark();
        cx.send_file(region(500));
        cx.write(b"between");
        cx.send_file(region(196));
        assert_eq!(cx.file_bytes, summed(&cx));
        assert!(cx.output_full(), "4 + 7 bytes and 996 of files reach 1000");
        cx.take_back_output(mark);
        assert_eq!((cx.file_bytes, summed(&cx)), (300, 300));
        assert!(!cx.output_full());
        // The engine takes what was queued; a later take-back to an older
        // mark finds nothing of it to take back.
        let mark = cx.output_mark();
        assert_eq!(cx.take_file_regions().len(), 1);
        assert_eq!(cx.file_bytes, 0);
        cx.send_file(region(700));
        cx.take_back_output(mark);
        assert_eq!((cx.file_bytes, summed(&cx)), (700, 700));
        cx.take_back_output(OutputMark { bytes: 0, files: 0 });
        assert_eq!((cx.file_bytes, summed(&cx)), (0, 0));
        assert!(!cx.output_full());
    }

    /// A long pipeline of small files, checked after each (what a service
    /// answering pipelined requests does): full exactly at the room, and a
    /// take-back to a mark in the middle leaves the first half's total.
    #[test]
    fn many_small_regions_keep_the_total() {
        let (mut out, mut commands) = (Vec::new(), Vec::new());
        let now = Instant::now();
        let mut cx =
            Context::new(ConnId::new(0, 1), now, &mut out, &mut commands).with_output_room(150_000);
        let file = Arc::new(File::open("/dev/null").unwrap());
        let mut mark = None;
        let mut full_at = None;
        for i in 0..100_000u64 {
            if i == 50_000 {
                mark = Some(cx.output_mark());
            }
            cx.send_file(FileRegion::new(file.clone(), 0, 2));
            if full_at.is_none() && cx.output_full() {
                full_at = Some(i);
            }
        }
        assert_eq!(full_at, Some(74_999), "2 bytes each: full at 150,000");
        assert_eq!(cx.file_bytes, 200_000);
        cx.take_back_output(mark.unwrap());
        assert_eq!(cx.file_bytes, 100_000);
        assert!(!cx.output_full());
    }
}
