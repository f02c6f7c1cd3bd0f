//! A Redis-compatible server (RESP2) as a sans-I/O protocol.
//!
//! [`Resp`] is one connection: it parses pipelined commands (multibulk and
//! inline), runs them against a [`Db`] shared by every connection of the
//! server, and appends every reply of one input slice to the same output
//! buffer, in order, so the engine answers a read with one write. Malformed
//! requests get Redis's `-ERR Protocol error: ...` reply and the connection
//! closes. Replies and error texts are worded as Redis 7 words them.
//!
//! ```
//! use iomux_proto::resp::{Resp, Shared};
//! use iomux_proto::Protocol;
//! use std::sync::Arc;
//! let shared = Arc::new(Shared::default());
//! let mut conn = Resp::new(shared);
//! let mut out = Vec::new();
//! let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv1\r\nGET k\r\n";
//! let step = conn.on_input(input, &mut out);
//! assert_eq!(step.consumed, input.len());
//! assert_eq!(out, b"+OK\r\n$2\r\nv1\r\n");
//! ```
//!
//! Publish/subscribe needs a way to write to other connections: a server
//! that has one passes it as a [`Deliver`] to [`Shared::with_delivery`];
//! without it SUBSCRIBE answers an error and PUBLISH reaches no one.

mod command;
mod db;
mod parse;
mod pubsub;
pub mod reply;
#[cfg(test)]
mod tests;

pub use db::{Db, ExpireCondition, IncrError, SetCondition, SetExpiry, SetOptions, Ttl};
pub use parse::{parse_i64, Args, Limits, Parsed, Parser, ProtocolError};
pub use pubsub::{confirmation_frame, message_frame, Deliver, PubSub};

use crate::{Protocol, Step};
use command::Flow;
use std::collections::HashSet;
use std::sync::Arc;

/// What every connection of one server shares: the keyspace, the limits, the
/// subscription registry and the way to reach other connections.
pub struct Shared {
    /// The one keyspace of the server.
    pub db: Db,
    /// Request limits.
    pub limits: Limits,
    /// Channel subscriptions.
    pub pubsub: PubSub,
    deliver: Option<Box<dyn Deliver>>,
}

impl Default for Shared {
    fn default() -> Shared {
        Shared::new(Limits::DEFAULT)
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("db", &self.db)
            .field("limits", &self.limits)
            .field("delivery", &self.deliver.is_some())
            .finish()
    }
}

impl Shared {
    /// A server without delivery to other connections: SUBSCRIBE answers an
    /// error, PUBLISH answers 0.
    pub fn new(limits: Limits) -> Shared {
        Shared {
            db: Db::new(),
            limits,
            pubsub: PubSub::new(),
            deliver: None,
        }
    }

    /// A server whose PUBLISH hands messages to subscribers through `deliver`.
    pub fn with_delivery(limits: Limits, deliver: Box<dyn Deliver>) -> Shared {
        Shared {
            deliver: Some(deliver),
            ..Shared::new(limits)
        }
    }
}

/// Unconsumed input a connection leaves with the engine; past this, an
/// incomplete command (a large value arriving) is gathered in the
/// connection's own buffer instead, so the engine's cap on unconsumed input
/// never limits value sizes.
const LEAVE_WITH_ENGINE: usize = 256 * 1024;

/// One RESP connection.
#[derive(Debug)]
pub struct Resp {
    session: Session,
    parser: Parser,
    /// The start of an incomplete command too large to leave with the engine.
    gathered: Vec<u8>,
}

/// What commands see and change of their connection.
#[derive(Debug)]
struct Session {
    shared: Arc<Shared>,
    /// This connection's id for pub/sub delivery.
    id: u64,
    /// Subscribed channels; `Some` only while there is at least one.
    channels: Option<HashSet<Box<[u8]>>>,
    name: Option<Box<[u8]>>,
}

impl Session {
    fn subscribed(&self) -> bool {
        self.channels.is_some()
    }
}

impl Resp {
    /// A connection of the server sharing `shared`, with id 0.
    pub fn new(shared: Arc<Shared>) -> Resp {
        Resp::with_id(shared, 0)
    }

    /// A connection with id `id`: the id [`Deliver::deliver`] receives for it.
    pub fn with_id(shared: Arc<Shared>, id: u64) -> Resp {
        Resp {
            parser: Parser::new(shared.limits),
            gathered: Vec::new(),
            session: Session {
                shared,
                id,
                channels: None,
                name: None,
            },
        }
    }

    /// True while the connection is subscribed to a channel (subscriber mode).
    pub fn subscribed(&self) -> bool {
        self.session.subscribed()
    }

    /// [`Protocol::on_input`] at time `now` on the keyspace's clock
    /// ([`Db::now_ms`]): tests drive expiry with made-up clocks through it.
    pub fn on_input_at(&mut self, input: &[u8], out: &mut Vec<u8>, now: u64) -> Step {
        if self.gathered.is_empty() {
            let (consumed, close) = self.run(input, out, now);
            if close {
                return Step::close(input.len());
            }
            if input.len() - consumed > LEAVE_WITH_ENGINE {
                self.gathered.extend_from_slice(&input[consumed..]);
                return Step::keep(input.len());
            }
            return Step::keep(consumed);
        }
        self.gathered.extend_from_slice(input);
        let gathered = std::mem::take(&mut self.gathered);
        let (consumed, close) = self.run(&gathered, out, now);
        self.gathered = gathered;
        self.gathered.drain(..consumed);
        if self.gathered.is_empty() && self.gathered.capacity() > LEAVE_WITH_ENGINE {
            self.gathered = Vec::new();
        }
        Step {
            consumed: input.len(),
            close,
        }
    }

    /// Run every complete command at the start of `buf`; returns the bytes
    /// they took and whether to close.
    fn run(&mut self, buf: &[u8], out: &mut Vec<u8>, now: u64) -> (usize, bool) {
        let mut at = 0;
        loop {
            match self.parser.parse(&buf[at..]) {
                Parsed::Command(len) => {
                    let args = self.parser.args(&buf[at..]);
                    let flow = self.session.execute(args, out, now);
                    at += len;
                    if flow == Flow::Close {
                        return (at, true);
                    }
                }
                Parsed::Nothing(len) => at += len,
                Parsed::Incomplete => return (at, false),
                Parsed::Error(e) => {
                    let mut text = b"ERR ".to_vec();
                    text.extend_from_slice(e.to_string().as_bytes());
                    reply::error(out, text);
                    return (buf.len(), true);
                }
            }
        }
    }
}

impl Protocol for Resp {
    fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>) -> Step {
        let now = self.session.shared.db.now_ms();
        self.on_input_at(input, out, now)
    }

    fn is_idle(&self) -> bool {
        self.parser.is_idle() && self.gathered.is_empty()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for channel in self.channels.take().unwrap_or_default() {
            self.shared.pubsub.unsubscribe(self.id, &channel);
        }
    }
}
