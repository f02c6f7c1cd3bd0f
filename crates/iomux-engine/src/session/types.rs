//! The values a [`super::Session`] and its engine exchange: the rules it
//! applies, the loop's environment for a call, and what its calls answer
//! (sent, faults, deadlines, finishing, applied commands, connect details,
//! the readiness it wants).

use crate::buffer::BufPool;
use crate::Config;
use iomux_proto::{BlockingPool, Command, ConnId};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The token of a connect's asker when the loop itself asked
/// (`LoopCx::connect`): no connection has it.
pub(crate) const LOOP_ASKER: usize = (1 << 48) - 1;

/// How long a closing connection keeps draining its peer's input after our
/// FIN, and how long a timed-out connection's last output has to be taken.
pub(crate) const LINGER: Duration = Duration::from_secs(2);

/// How long a connection must have been quiet (no bytes in or out) before a
/// drain treats it as idle; a peer in the middle of sending a message sends
/// more often than this, even on a loaded machine.
pub(crate) const DRAIN_QUIET: Duration = Duration::from_millis(250);

/// The limits a session applies, taken once from the server's [`Config`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules {
    pub idle_timeout: Duration,
    /// Bytes a second a message in progress must arrive at.
    pub min_rate: u32,
    pub output_high_water: usize,
    pub max_pending_input: usize,
    /// Output another connection may queue for this one before it is
    /// disconnected (a subscriber that stopped reading).
    pub max_output: usize,
}

impl Rules {
    pub(crate) fn new(config: &Config) -> Rules {
        Rules {
            idle_timeout: config.idle_timeout,
            min_rate: config.min_rate,
            output_high_water: config.output_high_water,
            max_pending_input: config.max_pending_input,
            max_output: config.max_output,
        }
    }
}

/// What a session's calls need from its loop: the pass's clock, the rules,
/// the buffer pool, where the protocol's commands go (the loop carries
/// them out after the call), and the worker pool for blocking work.
pub(crate) struct Env<'a> {
    pub now: Instant,
    pub rules: &'a Rules,
    pub pool: &'a mut BufPool,
    pub commands: &'a mut Vec<Command>,
    /// The server's worker pool (engines with a loop to bring results back to).
    pub blocking: Option<&'a dyn BlockingPool>,
}

/// What a send did to the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Sent {
    /// Reading resumed after a pause.
    pub resumed: bool,
}

/// Why a session must close at once (its output, if any, is abandoned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The protocol left more input unconsumed than the cap allows.
    InputCap,
    /// The protocol said it consumed more bytes than it was given.
    Overconsumed,
    /// The protocol panicked.
    Panicked,
    /// The peer broke the TLS protocol: its alert is sent, then the
    /// connection closes.
    Tls,
    /// A file region sent over TLS ran out of file before its end (the
    /// file shrank): the peer cannot get the length it was promised.
    FileCutShort,
    /// A file region sent over TLS could not be read.
    FileUnreadable,
    /// The TLS record layer's secrets left rustls but the kernel did not
    /// take them: the connection closes at once.
    KernelTls,
}

impl Fault {
    /// The fault a failed read of a file region is.
    pub(crate) fn file(e: &std::io::Error) -> Fault {
        if crate::sock::is_file_cut_short(e) {
            Fault::FileCutShort
        } else {
            Fault::FileUnreadable
        }
    }

    /// Whether the connection's output is still sent before it closes (its
    /// protocol's last word, a TLS alert) rather than abandoned.
    pub(crate) fn is_graceful(self) -> bool {
        matches!(self, Fault::InputCap | Fault::Tls)
    }

    /// Count it in the loop's counters.
    pub(crate) fn count(self, stats: &mut crate::stats::LoopStats) {
        match self {
            Fault::Tls => stats.tls_errors += 1,
            Fault::FileCutShort => stats.files_cut_short += 1,
            Fault::KernelTls => stats.tls_kernel_failed += 1,
            _ => stats.faults += 1,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::InputCap => "the protocol left more input unconsumed than the cap allows",
            Fault::Overconsumed => "the protocol consumed more input than it was given",
            Fault::Panicked => "the protocol panicked",
            Fault::Tls => "the peer broke the TLS protocol",
            Fault::FileCutShort => "a file being sent ended before the length announced",
            Fault::FileUnreadable => "a file being sent could not be read",
            Fault::KernelTls => "the kernel did not take the TLS keys handed to it",
        })
    }
}

/// What a passed deadline means for the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deadline {
    /// Activity moved the deadline: set the timer again for this time.
    Later(Instant),
    /// The protocol had its last word (appended to the output); the
    /// connection is closing and its output has [`LINGER`] to be taken.
    TimedOut,
    /// Lingering, or closing with output the peer would not take: close now.
    Close,
    /// An outgoing connection was not established in time: the engine
    /// closes it and tells the asker [`Connecting::failed`] with `TimedOut`.
    ConnectTimedOut,
}

/// What the connection does once its last output is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    /// The peer already ended its side: close now.
    Close,
    /// Send our FIN and discard the peer's input until its FIN.
    Linger,
    /// Half-close: send our FIN and go on reading.
    ShutWrite,
    /// Our TLS close_notify was added to the output: send it, then finish
    /// again.
    Flush,
}

/// What a command for this connection asks of the loop beyond the session
/// ([`Session::apply`](super::Session::apply)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// Done: flush or finish the connection as usual.
    Done,
    /// Output from others passed `max_output`: the loop disconnects it.
    Overflow,
    /// Reading resumed: the loop reads (or arms a receive) again.
    Resumed,
}

/// An outgoing connection being established, and who asked for it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Connecting {
    /// The connection that asked ([`iomux_proto::Context::connect`]).
    /// The connection that asked, or the loop itself ([`LOOP_ASKER`]).
    pub asker: ConnId,
    /// The asker's name for the connect.
    pub tag: u64,
    pub addr: SocketAddr,
    pub timeout: Duration,
    /// When it fails as timed out.
    pub deadline: Instant,
}

impl Connecting {
    /// A connect `asker` asked for at `now`, failing at `now + timeout`.
    pub(crate) fn new(
        asker: ConnId,
        tag: u64,
        addr: SocketAddr,
        timeout: Duration,
        now: Instant,
    ) -> Connecting {
        Connecting {
            asker,
            tag,
            addr,
            timeout,
            deadline: now + timeout.min(crate::MAX_TIMEOUT),
        }
    }

    /// The error the asker is told: what happened, to which address, and
    /// what it usually means.
    pub(crate) fn failed(&self, e: io::Error) -> io::Error {
        let addr = self.addr;
        let why = match e.kind() {
            io::ErrorKind::TimedOut => format!(
                "connecting to {addr} timed out after {:?}: nothing answered (a host that is down, a firewall that drops, or a listener whose backlog is full)",
                self.timeout
            ),
            io::ErrorKind::ConnectionRefused => {
                format!("connection to {addr} refused: nothing listens on that port")
            }
            io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                format!("cannot connect to {addr}: {e} (no route to that address)")
            }
            _ => format!("cannot connect to {addr}: {e}"),
        };
        io::Error::new(e.kind(), why)
    }
}

impl Connecting {
    /// The error the asker is told when the connection was established but
    /// its own protocol failed as it opened (it is closed).
    pub(crate) fn open_failed(&self, why: impl fmt::Display) -> io::Error {
        io::Error::other(format!(
            "connected to {}, but the new connection's protocol failed as it opened: {why}",
            self.addr
        ))
    }
}

/// The readiness a connection needs now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wants {
    pub read: bool,
    pub write: bool,
}
