//! The TCP forwarder's protocol, shared by the `forward` example and the
//! tests (crates/iomux-engine/tests/forward.rs): every connection a client
//! makes is paired with one the loop opens to the upstream, and each side
//! forwards what it reads to the other, with flow control both ways; a FIN
//! is passed on as a half-close, and an error on either side closes both.

use iomux_engine::{ConnId, Context, Service, Step};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Where a failed upstream connect is reported (the example prints it).
pub type OnError = Arc<dyn Fn(io::Error) + Send + Sync>;

/// One side of a forwarded pair: a client's connection, or the one the loop
/// opened to the upstream for it.
pub struct Forwarder {
    upstream: SocketAddr,
    connect_timeout: Duration,
    on_error: OnError,
    /// The other side, once the upstream connection is established.
    peer: Option<ConnId>,
}

/// A factory for [`iomux_engine::Server::start`]: every connection runs a
/// [`Forwarder`], the accepted ones and those opened to `upstream` alike.
pub fn factory(
    upstream: SocketAddr,
    connect_timeout: Duration,
    on_error: OnError,
) -> impl Fn() -> Forwarder + Send + Sync + Clone + 'static {
    move || Forwarder {
        upstream,
        connect_timeout,
        on_error: on_error.clone(),
        peer: None,
    }
}

impl Service for Forwarder {
    fn on_open(&mut self, cx: &mut Context) {
        // Each direction ends on its own: a FIN is passed on, not a close.
        cx.allow_half_close();
        match cx.opened_by() {
            // The upstream side: its peer is the client that asked for it.
            Some(client) => self.peer = Some(client),
            // A client: nothing is read until the upstream is there.
            None => {
                cx.pause_reading();
                cx.connect(self.upstream, self.connect_timeout, 0);
            }
        }
    }

    fn on_connect(&mut self, _tag: u64, result: io::Result<ConnId>, cx: &mut Context) {
        match result {
            Ok(upstream) => {
                self.peer = Some(upstream);
                cx.link(upstream); // a reset on either side closes both
                cx.resume_reading();
            }
            Err(e) => {
                (self.on_error)(e);
                cx.close();
            }
        }
    }

    fn on_data(&mut self, input: &[u8], cx: &mut Context) -> Step {
        if let Some(peer) = self.peer {
            // The peer's output is bounded: past its high-water mark this
            // side is not read until the peer has sent half of it.
            cx.forward_to(peer, input);
        }
        Step::keep(input.len())
    }

    fn on_eof(&mut self, _pending: &[u8], cx: &mut Context) {
        match self.peer {
            // The peer sends its FIN once what it was given is sent.
            Some(peer) => cx.shutdown_write_conn(peer),
            None => cx.close(),
        }
    }
}
