//! What a protocol may ask of the engine beyond answering its input: write
//! to its connection at any time, write to another connection of the same
//! server, close itself or another, set timers of its own.
//!
//! Sans-I/O like the rest of this crate: a [`Context`] only records what the
//! protocol asks ([`Command`]s and output bytes); the engine carries it out
//! once the protocol's call returns.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

impl Command {
    /// The connection a command is about, when it is about another one
    /// (`Send`, `Close`); timers are the asking connection's own.
    ///
    /// ```
    /// use iomux_proto::{Command, ConnId};
    /// assert_eq!(Command::Close(ConnId::new(1, 2)).target(), Some(ConnId::new(1, 2)));
    /// assert_eq!(Command::CancelTimer(3).target(), None);
    /// ```
    pub fn target(&self) -> Option<ConnId> {
        match self {
            Command::Send { to, .. } => Some(*to),
            Command::Close(id) => Some(*id),
            Command::SetTimer { .. } | Command::CancelTimer(_) => None,
        }
    }
}

/// A connection of a running server, unique among its live connections
/// (a closed connection's id is not reused for a long while: it carries a
/// generation). It names the loop that serves it, so any connection can
/// write to any other, whichever loop thread serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl ConnId {
    /// The id of connection `token` (an engine's slot number and
    /// generation, below 2^48) on loop `loop_index` (below 2^16).
    pub fn new(loop_index: usize, token: usize) -> ConnId {
        ConnId(((loop_index as u64) << 48) | (token as u64 & ((1 << 48) - 1)))
    }

    /// The loop that serves the connection.
    pub fn loop_index(self) -> usize {
        (self.0 >> 48) as usize
    }

    /// The connection's token within its loop.
    pub fn token(self) -> usize {
        (self.0 & ((1 << 48) - 1)) as usize
    }
}

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.loop_index(), self.token())
    }
}

/// Something a protocol asked for that the engine does after the call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// Append `bytes` to connection `to`'s output (ignored if it is gone).
    Send {
        /// The connection written to.
        to: ConnId,
        /// What it is sent.
        bytes: Vec<u8>,
    },
    /// Close connection `id` once its output is sent.
    Close(ConnId),
    /// Call [`crate::Protocol::on_timer`] with `key` on the asking
    /// connection once `after` has passed; replaces a timer of the same key.
    SetTimer {
        /// The protocol's name for the timer.
        key: u64,
        /// How long from now.
        after: Duration,
    },
    /// Cancel the asking connection's timer `key` (nothing if none is set).
    CancelTimer(u64),
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
    out: &'a mut Vec<u8>,
    commands: &'a mut Vec<Command>,
}

impl<'a> Context<'a> {
    /// A context for connection `id` at `now`, appending output to `out`
    /// and commands to `commands` (engines and tests make these).
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
            out,
            commands,
        }
    }

    /// The same context with the connection's addresses (engines that know them).
    pub fn with_addrs(mut self, peer: Option<SocketAddr>, local: Option<SocketAddr>) -> Self {
        self.peer = peer;
        self.local = local;
        self
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
}
