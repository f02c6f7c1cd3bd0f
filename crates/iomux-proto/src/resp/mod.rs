//! A Redis-compatible server (RESP2) as a sans-I/O [`Service`].
//!
//! [`Resp`] is one connection: it parses pipelined commands (multibulk and
//! inline), runs them against a [`Db`] shared by every connection of the
//! server, and appends every reply of one input slice to the same output
//! buffer, in order, so the engine answers a read with one write. Malformed
//! requests get Redis's `-ERR Protocol error: ...` reply and the connection
//! closes. Replies and error texts are worded as Redis 7 words them.
//!
//! PUBLISH hands its subscribers their message frame with
//! [`Context::send_to_many`]; the engine queues it on each connection,
//! whichever loop serves it. On an engine that does not carry out such
//! commands, make the state with [`Shared::without_delivery`]: SUBSCRIBE then
//! answers an error rather than accept subscriptions that would never receive.
//!
//! ```
//! use iomux_proto::resp::{Resp, Shared};
//! use iomux_proto::{ConnId, Context, Service};
//! use std::sync::Arc;
//! let shared = Arc::new(Shared::default());
//! let (mut subscriber, mut publisher) = (Resp::new(shared.clone()), Resp::new(shared));
//! let (mut out, mut commands) = (Vec::new(), Vec::new());
//! let now = std::time::Instant::now();
//! let mut cx = Context::new(ConnId::new(0, 1), now, &mut out, &mut commands);
//! subscriber.on_data(b"SUBSCRIBE news\r\n", &mut cx);
//! out.clear();
//! let mut cx = Context::new(ConnId::new(0, 2), now, &mut out, &mut commands);
//! let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv1\r\nGET k\r\nPUBLISH news hi\r\n";
//! let step = publisher.on_data(input, &mut cx);
//! assert_eq!(step.consumed, input.len());
//! assert_eq!(out, b"+OK\r\n$2\r\nv1\r\n:1\r\n");
//! assert_eq!(commands.len(), 1, "one message frame sent to connection 0:1");
//! ```

mod command;
mod db;
mod parse;
mod pubsub;
pub mod reply;
#[cfg(test)]
mod tests;

pub use db::{Db, ExpireCondition, IncrError, SetCondition, SetExpiry, SetOptions, Ttl};
pub use parse::{parse_i64, Args, Limits, Parsed, Parser, ProtocolError};
pub use pubsub::{confirmation_frame, message_frame, PubSub};

use crate::{ConnId, Context, Service, Step};
use command::Flow;
use std::collections::HashSet;
use std::sync::Arc;

/// What every connection of one server shares: the keyspace, the limits and
/// the subscription registry.
#[derive(Debug)]
pub struct Shared {
    /// The one keyspace of the server.
    pub db: Db,
    /// Request limits.
    pub limits: Limits,
    /// Channel subscriptions.
    pub pubsub: PubSub,
    /// Whether the engine delivers [`Context::send_to`] output to other
    /// connections (pub/sub works only where it does).
    delivers: bool,
}

impl Default for Shared {
    fn default() -> Shared {
        Shared::new(Limits::DEFAULT)
    }
}

impl Shared {
    /// A server on an engine that carries out [`Context::send_to`]: PUBLISH
    /// reaches every subscriber, whichever connection or loop it is on.
    pub fn new(limits: Limits) -> Shared {
        Shared {
            db: Db::new(),
            limits,
            pubsub: PubSub::new(),
            delivers: true,
        }
    }

    /// A server on an engine that cannot write to other connections:
    /// SUBSCRIBE answers an error saying so, PUBLISH answers 0.
    pub fn without_delivery(limits: Limits) -> Shared {
        Shared {
            delivers: false,
            ..Shared::new(limits)
        }
    }

    /// Whether PUBLISH can reach subscribers (see [`Shared::without_delivery`]).
    pub fn delivers(&self) -> bool {
        self.delivers
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
    client: Client,
    parser: Parser,
    /// The start of an incomplete command too large to leave with the engine.
    gathered: Vec<u8>,
}

/// What commands see and change of their connection: its client, in
/// Redis's words (`CLIENT SETNAME` names it).
#[derive(Debug)]
struct Client {
    shared: Arc<Shared>,
    /// Subscribed channels; `Some` only while there is at least one.
    channels: Option<HashSet<Box<[u8]>>>,
    name: Option<Box<[u8]>>,
}

impl Client {
    fn subscribed(&self) -> bool {
        self.channels.is_some()
    }
}

impl Resp {
    /// A connection of the server sharing `shared`.
    pub fn new(shared: Arc<Shared>) -> Resp {
        Resp {
            parser: Parser::new(shared.limits),
            gathered: Vec::new(),
            client: Client {
                shared,
                channels: None,
                name: None,
            },
        }
    }

    /// True while the connection is subscribed to a channel (subscriber mode).
    pub fn subscribed(&self) -> bool {
        self.client.subscribed()
    }

    /// [`Service::on_data`] at time `now` on the keyspace's clock
    /// ([`Db::now_ms`]): tests drive expiry with made-up clocks through it.
    pub fn on_data_at(&mut self, input: &[u8], cx: &mut Context, now: u64) -> Step {
        if self.gathered.is_empty() {
            let (consumed, close) = self.run(input, cx, now);
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
        let (consumed, close) = self.run(&gathered, cx, now);
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
    fn run(&mut self, buf: &[u8], cx: &mut Context, now: u64) -> (usize, bool) {
        let mut at = 0;
        loop {
            match self.parser.parse(&buf[at..]) {
                Parsed::Command(len) => {
                    let args = self.parser.args(&buf[at..]);
                    let flow = self.client.execute(args, cx, now);
                    at += len;
                    if flow == Flow::Close {
                        return (at, true);
                    }
                    if cx.output_full() {
                        // The rest waits until the peer has taken some.
                        return (at, false);
                    }
                }
                Parsed::Nothing(len) => at += len,
                Parsed::Incomplete => return (at, false),
                Parsed::Error(e) => {
                    let mut text = b"ERR ".to_vec();
                    text.extend_from_slice(e.to_string().as_bytes());
                    reply::error(cx.out(), text);
                    return (buf.len(), true);
                }
            }
        }
    }
}

impl Service for Resp {
    fn on_data(&mut self, input: &[u8], cx: &mut Context) -> Step {
        let now = self.client.shared.db.now_ms();
        self.on_data_at(input, cx, now)
    }

    /// Leave every channel: PUBLISH must neither count nor address a
    /// connection that is gone.
    fn on_close(&mut self, id: ConnId) {
        for channel in self.client.channels.take().unwrap_or_default() {
            self.client.shared.pubsub.unsubscribe(id, &channel);
        }
    }

    fn is_idle(&self) -> bool {
        self.parser.is_idle() && self.gathered.is_empty()
    }

    /// A subscriber waits for messages, not for its peer (Redis never
    /// times out a pub/sub client); one in the middle of a command is
    /// judged as any other.
    fn exempt_from_idle_timeout(&self) -> bool {
        self.subscribed() && self.is_idle()
    }
}
