//! The connection core: every rule of one connection, once, with no I/O.
//!
//! A [`Session`] owns a connection's protocol, its unconsumed input, the
//! output the kernel has not taken yet, its activity stamp and its state
//! (reading, paused, closing, lingering). Engines only move bytes: they tell
//! the session what arrived ([`Session::on_received`]), what the kernel took
//! ([`Session::on_sent`]), that the peer ended ([`Session::on_eof`]) or that a
//! deadline came ([`Session::on_deadline`]), and ask it what to do next
//! ([`Session::wants`], [`Session::deadline`], [`Session::ready_to_finish`]).
//! The split follows quinn-proto's: a state machine, and code that moves bytes.
//!
//! The rules, each tested below without a socket:
//! - The idle deadline counts from the last activity. Input counts only while
//!   the protocol is between messages (so a trickled request head cannot
//!   extend its own deadline) and only when the peer owes us nothing (a peer
//!   that leaves its output untaken cannot keep its connection alive by
//!   sending more). Output counts once all of it is sent, or once the peer
//!   has taken `output_high_water` bytes since it last counted (a slow
//!   reader does not extend its deadline).
//! - Minimum rate (Apache's `mod_reqtimeout` `MinRate`): while a message is
//!   in progress (the protocol is not between messages) and nothing is owed,
//!   the peer must deliver it: every `idle_timeout` period must bring at
//!   least `min_rate` bytes a second of it (and at least one byte), else the
//!   connection times out. A peer that keeps that rate keeps its connection
//!   whatever the message's size; one that trickles a head, a command or a
//!   body is closed when its first short period ends, whatever our answers
//!   to it (output does not count as its progress). While output is owed,
//!   the peer is judged by what it takes (the rule above) instead.
//! - A service that waits for others rather than its peer
//!   ([`Service::exempt_from_idle_timeout`]: a subscriber, a long poll) is
//!   never closed for idleness or a slow message while it owes nothing; what
//!   it is sent must still be taken.
//! - Unconsumed input is capped; past the cap the connection is an error.
//! - Backpressure: at `output_high_water` owed bytes reading pauses; it
//!   resumes once the peer has taken half of it. A service answering
//!   pipelined input stops there too ([`Context::output_full`]): what it
//!   left is offered again, with no new bytes, once the peer has taken
//!   half, and a FIN waits behind it; so the answers to one read (4,500
//!   GETs of a large value) never sit in memory all at once.
//! - Output is a queue of segments (`output.rs`): bytes, and file regions
//!   ([`Context::send_file`]) between them, sent in order through one path.
//!   A region's unsent bytes are owed like any others (they pause reading,
//!   bound a receive, keep the connection from finishing), so a client that
//!   pipelines requests for a large file is not read ahead of it; but they
//!   hold no memory, so `max_output` (the cap on what others may queue for a
//!   connection in memory) counts only bytes: a queued 100 MiB region does
//!   not make a subscriber's next message an overflow.
//! - A connection closes after its last output is sent: our FIN, then its
//!   input is discarded until the peer's FIN or [`LINGER`] (so unread bytes
//!   do not turn the close into a reset that destroys the response). Its
//!   service hears [`Service::on_close`] as it begins closing: from then on
//!   it takes no input and what others send it is dropped, so it must not
//!   count as a receiver (PUBLISH).
//! - A deadline that passes gives the protocol its last word
//!   ([`Service::on_timeout`]); that output then has [`LINGER`] to be taken.
//! - A drain tells every protocol, and closes a connection once it is between
//!   messages, owes nothing and its peer has been quiet for [`DRAIN_QUIET`].
//! - Half-close, where the protocol allows it: the peer's FIN leaves the
//!   connection open for writing; a shutdown it asks for sends our FIN once
//!   the output is sent and goes on reading; it closes when both sides ended.
//! - Forwarding with flow control: output forwarded past the high-water mark
//!   pauses the writer, which resumes once half is sent (or this one is gone);
//!   a connection fed by forwards is not paused by its own output (its two
//!   directions are independent: pausing could deadlock both ends).
//! - An outgoing connection is connecting until the engine reports it
//!   established (then its protocol opens) or its connect deadline passes.
//! - A drained notice the service asked for is due once nothing is owed;
//!   input it released is due at once: the loop runs what is due in its
//!   next pass ([`Session::take_due`], [`Session::run_due`]), so neither
//!   runs within the call that asked nor more than once per pass.
//! - Held input is kept, not offered; at the input cap reading stops
//!   instead of the cap closing the connection, and a FIN waits behind it.
//! - A transport, where the server has one (TLS, [`crate::tls`]), sits
//!   between the socket and the protocol: input is decrypted before the
//!   protocol sees it and every byte of output (the protocol's, other
//!   connections' sends) is encrypted on the way in, so what is owed, the
//!   high-water mark and the output cap count ciphertext. The handshake is
//!   part of the first message: it does not count as activity, so a peer
//!   that stalls in it is closed by the idle (head) deadline. A TLS error
//!   sends its alert and closes that connection ([`Fault::Tls`]). Closing
//!   sends close_notify before our FIN; the peer's close_notify is its end
//!   of input, as a FIN is.
//! - One way out: whatever a connection sends enters its output here, and
//!   only here, past the transport: its protocol's writes and file regions
//!   ([`Session::call`]: to the loop's shared buffer while nothing is owed
//!   before them, else to its queue), what other connections send it, one
//!   frame shared by many included ([`Session::push_output`]), handshake
//!   records and alerts, close_notify. The engines only move the bytes the
//!   session hands them and report what the kernel took ([`Session::on_sent`]).

use crate::buffer::BufPool;
use crate::tls::{HandOver, TlsSession};
use iomux::timer::TimerId;
use iomux_proto::{Command, ConnId, Context, FileRegion, Service};
use std::any::Any;
use std::collections::HashMap;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

mod output;
mod types;
use output::Output;
pub(crate) use output::{Front, Segment, Segments};
pub(crate) use types::*;

/// What few connections need, boxed so that every other session stays
/// small (idle connections are the common case): 8 bytes in every session
/// instead of a map's 48 and a few lists.
#[derive(Debug, Default)]
struct Extras {
    /// The protocol's own timers, by its key.
    timers: HashMap<u64, TimerId>,
    /// Connections paused because they forwarded into this one past the
    /// high-water mark: resumed once it has sent half, or is gone.
    waiting_writers: Vec<ConnId>,
    /// Connections closed when this one closes ([`Command::Link`]).
    links: Vec<ConnId>,
    /// Set while an outgoing connection is being established.
    connecting: Option<Connecting>,
}

mod flag {
    /// The peer sent FIN: nothing more to read.
    pub const READ_CLOSED: u16 = 1;
    /// Close once the pending output is sent; input is dropped.
    pub const CLOSING: u16 = 2;
    /// Not reading: the peer has not taken enough of its output.
    pub const PAUSED: u16 = 4;
    /// Our FIN is sent; discarding the peer's input until its FIN.
    pub const LINGERING: u16 = 8;
    /// The deadline passed; the last output gets [`super::LINGER`].
    pub const TIMED_OUT: u16 = 16;
    /// The kernel took the TLS record layer over: the connection sends and
    /// reads plaintext; a read failing on a control record is its end.
    pub const KERNEL_TLS: u16 = 32;
    /// With `KERNEL_TLS`: the handshake before it resumed a session.
    pub const KERNEL_TLS_RESUMED: u16 = 16384;
    /// The protocol keeps the connection open after the peer's FIN.
    pub const HALF_CLOSE: u16 = 64;
    /// Send our FIN once the output is sent, and go on reading.
    pub const SHUT_ASKED: u16 = 128;
    /// Our FIN is sent by a half-close; further output is dropped.
    pub const WRITE_SHUT: u16 = 256;
    /// Not reading: asked by a command (a protocol, or a full forward target).
    pub const HELD: u16 = 512;
    /// An outgoing connection not established yet.
    pub const CONNECTING: u16 = 1024;
    /// A stream the user connected and handed to the loop.
    pub const ADOPTED: u16 = 4096;
    /// Its output comes from other connections' forwards, whose writers
    /// pause while it is full: its own reading never pauses for it (a
    /// proxy's two directions are independent; pausing would deadlock an
    /// upstream that also waits for us to read).
    pub const FED: u16 = 2048;
    /// The service heard `on_close` (as the connection began closing).
    pub const CLOSE_TOLD: u16 = 8192;
}

/// What the service asked through its context beside commands, and the
/// loop's part in it (a field of its own: the connection's `flags` are
/// the transport's and the deadlines').
mod asked {
    /// Call `on_drained` once nothing is owed.
    pub const DRAINED: u8 = 1;
    /// Input is kept, not offered, until released.
    pub const HOLDING: u8 = 2;
    /// Holding, and the input kept reached the cap: reading stopped.
    pub const INPUT_FULL: u8 = 4;
    /// Offer the unconsumed input again (released).
    pub const REOFFER: u8 = 8;
    /// The peer's FIN came while holding: told once the input is released.
    pub const EOF_HELD: u8 = 16;
    /// In the loop's list of connections with a callback due next pass.
    pub const DUE: u8 = 32;
    /// The service stopped answering its input at the output high-water
    /// mark ([`iomux_proto::Context::output_full`]): reading paused, and
    /// once the peer has taken half the input is offered again (a FIN
    /// waits behind it).
    pub const OUTPUT_FULL: u8 = 64;
}

/// One connection's state, with no socket.
#[derive(Debug)]
pub(crate) struct Session<P> {
    proto: P,
    id: ConnId,
    /// Input the protocol has not consumed; unallocated when empty.
    input: Vec<u8>,
    /// Output the kernel has not taken: bytes and file regions, in order.
    output: Output,
    /// Output handed to the kernel and not yet confirmed (completion engines).
    in_flight: usize,
    /// The idle deadline counts from here.
    last_active: Instant,
    /// Bytes sent since `last_active` while output was owed (the send deadline).
    send_progress: usize,
    /// When the current period of the minimum-rate rule began (a message
    /// in progress), and the bytes received in it.
    window_start: Instant,
    window_bytes: u32,
    /// Timers, links, forward waiters, a connect (allocated on first use).
    extras: Option<Box<Extras>>,
    /// The TLS transport, on a server that has one.
    tls: Option<Box<TlsSession>>,
    flags: u16,
    /// See [`asked`].
    asks: u8,
}

impl<P: Service> Session<P> {
    pub(crate) fn new(proto: P, id: ConnId, now: Instant) -> Session<P> {
        Session {
            proto,
            id,
            input: Vec::new(),
            output: Output::default(),
            in_flight: 0,
            last_active: now,
            send_progress: 0,
            window_start: now,
            window_bytes: 0,
            extras: None,
            tls: None,
            flags: 0,
            asks: 0,
        }
    }

    /// The connection speaks TLS: `tls` decrypts its input and encrypts its output.
    pub(crate) fn with_tls(mut self, tls: TlsSession) -> Session<P> {
        self.tls = Some(Box::new(tls));
        self
    }

    /// Whether the protocol is between messages, the TLS handshake (part of
    /// the first message) done.
    fn proto_idle(&self) -> bool {
        self.proto.is_idle() && !self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    /// An outgoing connection, connecting until [`Session::open_outgoing`]
    /// (or a failure the engine reports to the asker).
    pub(crate) fn connecting(proto: P, id: ConnId, now: Instant, connect: Connecting) -> Self {
        let mut session = Session::new(proto, id, now);
        session.flags |= flag::CONNECTING;
        session.extras().connecting = Some(connect);
        session
    }

    fn has(&self, f: u16) -> bool {
        self.flags & f != 0
    }

    fn extras(&mut self) -> &mut Extras {
        self.extras.get_or_insert_with(Default::default)
    }

    /// Whether an outgoing connection is still being established.
    pub(crate) fn is_connecting(&self) -> bool {
        self.has(flag::CONNECTING)
    }

    /// The pending connect's details (engines: to report its outcome).
    pub(crate) fn connect_details(&self) -> Option<Connecting> {
        self.extras.as_ref()?.connecting
    }

    /// Bytes the peer has not taken yet: unsent (file regions included, and
    /// over TLS the plaintext still to be encrypted) and in flight.
    pub(crate) fn owed(&self) -> usize {
        let waiting = self.tls.as_ref().map_or(0, |t| t.backlog_len());
        self.output.len() + self.in_flight + waiting
    }

    /// Whether a file region waits in the output (engines leave such a
    /// flush uncorked: see [`crate::Config::cork`]).
    pub(crate) fn queues_file(&self) -> bool {
        self.output.len() > self.output.in_memory()
    }

    /// What the kernel should take next of the output not yet handed to
    /// it: bytes, or a file region. Engines send (a part of) it and report
    /// it with [`Session::on_sent`].
    pub(crate) fn front(&self) -> Option<Front<'_>> {
        self.output.front()
    }

    /// The unsent bytes in front of the queue (tests).
    #[cfg(test)]
    pub(crate) fn unsent(&self) -> &[u8] {
        match self.output.front() {
            Some(Front::Bytes { bytes, .. }) => bytes,
            _ => &[],
        }
    }

    /// Closing or lingering: it will take no new connection (a connect it
    /// asked for that ends now is closed, not handed to it).
    pub(crate) fn is_closing(&self) -> bool {
        self.has(flag::CLOSING | flag::LINGERING)
    }

    pub(crate) fn is_lingering(&self) -> bool {
        self.has(flag::LINGERING)
    }

    /// How many bytes one receive may take before the loop looks again:
    /// the room under the high-water mark, or the mark itself for a
    /// connection whose output is forwarded to it (its reading is paused by
    /// its forward targets, not by its own output).
    pub(crate) fn read_budget(&self, high_water: usize) -> usize {
        if self.has(flag::FED) {
            return high_water;
        }
        high_water.saturating_sub(self.owed())
    }

    /// Whether input is taken now (not paused, held, closing, ended or
    /// still connecting).
    pub(crate) fn reading(&self) -> bool {
        !self.has(flag::PAUSED | flag::READ_CLOSED | flag::CLOSING | flag::HELD | flag::CONNECTING)
            && self.asks & asked::INPUT_FULL == 0
    }

    /// The readiness the connection needs: input while reading (or
    /// discarding it while lingering), output while any is owed.
    pub(crate) fn wants(&self) -> Wants {
        Wants {
            read: self.reading() || self.has(flag::LINGERING),
            // Not plaintext waiting behind a region: only what the socket can take now.
            write: self.output.len() + self.in_flight > 0,
        }
    }

    /// Call into the protocol with a context whose output goes to the loop's
    /// shared buffer while nothing is owed (the usual case: most answers
    /// are sent at once, and an idle connection holds no buffer), else to
    /// the session's own, so the order of bytes is kept. A panic in the
    /// protocol is caught: it is a fault of this connection only.
    fn call<R>(
        &mut self,
        shared: Option<&mut Vec<u8>>,
        env: &mut Env,
        f: impl FnOnce(&mut P, &mut Context) -> R,
    ) -> Result<R, Fault> {
        self.call_as(None, shared, env, f)
    }

    /// [`Session::call`], telling the protocol who opened the connection.
    fn call_as<R>(
        &mut self,
        opener: Option<ConnId>,
        shared: Option<&mut Vec<u8>>,
        env: &mut Env,
        f: impl FnOnce(&mut P, &mut Context) -> R,
    ) -> Result<R, Fault> {
        let adopted = self.has(flag::ADOPTED);
        let high_water = env.rules.output_high_water;
        // Output that reaches the high-water mark pauses reading (a fed
        // connection's never pauses: see `flag::FED`).
        let room = high_water.saturating_sub(self.owed());
        let capped = !self.has(flag::FED | flag::CLOSING);
        // After our FIN nothing more can be sent: output is dropped.
        let shut = self.has(flag::SHUT_ASKED | flag::WRITE_SHUT);
        let mut shared = shared.filter(|_| !shut && self.gathers());
        let mut dropped = Vec::new();
        let mut before = 0;
        let out = if shut {
            &mut dropped
        } else if let Some(shared) = shared.as_deref_mut() {
            shared
        } else {
            let back = self.output.back_bytes(env.pool, 0);
            before = back.len();
            back
        };
        // Over TLS the protocol writes plaintext, encrypted into `out` after the call.
        let mut plain = self.tls.as_deref_mut().map(TlsSession::take_tx_plain);
        let mut cx = Context::new(
            self.id,
            env.now,
            plain.as_mut().unwrap_or(out),
            env.commands,
        )
        .with_opener(opener)
        .with_adopted(adopted)
        .with_blocking_pool(env.blocking)
        .with_region_list(env.pool.take_region_list());
        if capped && !shut {
            cx = cx.with_output_room(room);
        }
        let proto = &mut self.proto;
        let mut result =
            catch_unwind(AssertUnwindSafe(|| f(proto, &mut cx))).map_err(|_| Fault::Panicked);
        let half_close = cx.half_close_allowed();
        let drained_notice = cx.drained_notice_asked();
        let input_hold = cx.input_hold_asked();
        let output_full = cx.output_full();
        let mut files = cx.take_file_regions();
        drop(cx);
        if let (Some(tls), Some(plain)) = (self.tls.as_deref_mut(), plain) {
            if !shut {
                // Regions wait as plaintext, read and encrypted as the peer
                // takes the records before them (see `refill_tls`).
                tls.send_with_files(&plain, &mut files, out);
            }
            files.clear();
            tls.put_tx_plain(plain);
        }
        if half_close {
            self.flags |= flag::HALF_CLOSE;
        }
        if drained_notice {
            self.asks |= asked::DRAINED;
        }
        match input_hold {
            Some(true) => self.asks |= asked::HOLDING,
            Some(false) => {
                self.asks &= !(asked::HOLDING | asked::INPUT_FULL);
                self.asks |= asked::REOFFER;
            }
            None => {}
        }
        match shared.as_deref_mut() {
            _ if shut => {}
            Some(shared) if !files.is_empty() => self.take_gathered(shared, &mut files, env.pool),
            Some(_) => {}
            None => self.output.appended(before, &mut files),
        }
        env.pool.put_region_list(files);
        if !shut {
            if let Err(fault) = self.refill_tls(shared, env) {
                result = result.and(Err(fault));
            }
        }
        if output_full {
            // Not read until the peer has taken half; then the input the
            // service left is offered again.
            self.flags |= flag::PAUSED;
            self.asks |= asked::OUTPUT_FULL;
        }
        result
    }

    /// Whether a call's output may go to the loop's shared buffer: nothing
    /// is owed before it (over TLS, no plaintext waits behind a region).
    fn gathers(&self) -> bool {
        self.output.is_empty() && !self.tls.as_ref().is_some_and(|t| t.backlog_len() > 0)
    }

    /// Over TLS, with plaintext waiting behind a file region: encrypt more
    /// of it once less than its batch of records is queued (one record for
    /// a slow reader, up to 256 KiB for a fast one: see [`crate::tls`]), so
    /// a large file costs a connection that much memory, not the file's size.
    /// What a call gathered in the loop's shared buffer goes first (records
    /// leave in order). A region whose file cannot be read is a fault.
    #[inline]
    fn refill_tls(&mut self, shared: Option<&mut Vec<u8>>, env: &mut Env) -> Result<(), Fault> {
        // Inlined to this test: a plain connection, every send, pays no call.
        if self.tls.is_none() {
            return Ok(());
        }
        self.refill_tls_records(shared, env)
    }

    fn refill_tls_records(
        &mut self,
        shared: Option<&mut Vec<u8>>,
        env: &mut Env,
    ) -> Result<(), Fault> {
        let Some(tls) = self.tls.as_deref() else {
            return Ok(());
        };
        let batch = tls.refill_batch();
        // Records in a completion engine's send count too: else a slow
        // reader would hold a batch in flight and another queued.
        let queued = self.output.len() + self.in_flight;
        if tls.backlog_len() == 0 || queued >= batch {
            return Ok(());
        }
        if let Some(shared) = shared.filter(|s| !s.is_empty()) {
            self.take_gathered(shared, &mut Vec::new(), env.pool);
        }
        let room = batch.saturating_sub(self.output.len() + self.in_flight);
        let tls = self.tls.as_deref_mut().expect("checked above");
        let back = self
            .output
            .fitted_back(env.pool, TlsSession::records_len(room));
        let before = back.len();
        let refilled = tls.refill(back, room);
        self.output.appended(before, &mut Vec::new());
        refilled.map_err(|e| Fault::file(&e))
    }

    /// A call that gathered its output in the loop's shared buffer sent
    /// file regions: what it gathered moves to the session's own queue
    /// with the regions in their places (a response head is small; the
    /// plain-bytes path never comes here).
    fn take_gathered(
        &mut self,
        gathered: &mut Vec<u8>,
        files: &mut Vec<(usize, FileRegion)>,
        pool: &mut BufPool,
    ) {
        let back = self.output.back_bytes(pool, gathered.len());
        let before = back.len();
        back.extend_from_slice(gathered);
        gathered.clear();
        for (at, _) in files.iter_mut() {
            *at += before;
        }
        self.output.appended(before, files);
    }

    /// Its stream was adopted from the user (told to the protocol).
    pub(crate) fn mark_adopted(&mut self) {
        self.flags |= flag::ADOPTED;
    }

    /// The connection is open: the protocol may greet or set timers.
    pub(crate) fn on_open(
        &mut self,
        shared: Option<&mut Vec<u8>>,
        env: &mut Env,
    ) -> Result<(), Fault> {
        self.call(shared, env, |p, cx| p.on_open(cx))?;
        self.check_pause(env.rules);
        Ok(())
    }

    /// The outgoing connection is established: it counts as active from
    /// now, and its protocol opens, told who asked for it. Returns the
    /// connect's details for the loop to tell the asker.
    pub(crate) fn open_outgoing(&mut self, env: &mut Env) -> (Connecting, Result<(), Fault>) {
        self.flags &= !flag::CONNECTING;
        let connect = self
            .extras()
            .connecting
            .take()
            .expect("a connecting session has its connect");
        self.last_active = env.now;
        // Opened by the loop itself: no connection to name.
        let opener = Some(connect.asker).filter(|a| a.token() != LOOP_ASKER);
        let opened = self.call_as(opener, None, env, |p, cx| p.on_open(cx));
        self.check_pause(env.rules);
        (connect, opened)
    }

    /// A connect this connection asked for ended.
    pub(crate) fn on_connect(
        &mut self,
        tag: u64,
        result: io::Result<ConnId>,
        env: &mut Env,
    ) -> Result<(), Fault> {
        self.tell(None, env, |p, cx| p.on_connect(tag, result, cx))
    }

    /// Tell the protocol of something other than input (a connect's end, a
    /// timer, a message, blocking work's result), unless the connection is
    /// closing; its output may pause reading.
    fn tell(
        &mut self,
        shared: Option<&mut Vec<u8>>,
        env: &mut Env,
        f: impl FnOnce(&mut P, &mut Context),
    ) -> Result<(), Fault> {
        if self.has(flag::CLOSING | flag::LINGERING) {
            return Ok(());
        }
        self.call(shared, env, f)?;
        self.check_pause(env.rules);
        Ok(())
    }

    /// Bytes arrived. The protocol sees them behind any input it left
    /// unconsumed; its answers go to `shared` (see [`Session::call`]) or,
    /// with `None`, to the session's own output.
    pub(crate) fn on_received(
        &mut self,
        data: &[u8],
        shared: Option<&mut Vec<u8>>,
        env: &mut Env,
    ) -> Result<(), Fault> {
        if self.has(flag::CLOSING | flag::LINGERING | flag::READ_CLOSED) {
            // Closing or lingering: further input is dropped. (While paused
            // it is still taken: a completion engine's receive may deliver
            // bytes that arrived before the pause reached the kernel.)
            return Ok(());
        }
        if self.tls.is_some() {
            return self.on_received_tls(data, shared, env);
        }
        self.on_plaintext(data, shared, env)
    }

    /// Bytes read from a TLS connection: decrypted, their plaintext handed
    /// to the protocol; the handshake's records (or an alert) go out first.
    fn on_received_tls(
        &mut self,
        data: &[u8],
        mut shared: Option<&mut Vec<u8>>,
        env: &mut Env,
    ) -> Result<(), Fault> {
        let gathers = self.gathers();
        let tls = self.tls.as_deref_mut().expect("a TLS session");
        let mut plain = tls.take_rx_plain();
        let mut before = None;
        let out = match shared.as_deref_mut() {
            Some(shared) if gathers => shared,
            _ => {
                let back = self.output.back_bytes(env.pool, 0);
                before = Some(back.len());
                back
            }
        };
        let received = tls.receive(data, &mut plain, out);
        if let Some(before) = before {
            self.output.appended(before, &mut Vec::new());
        }
        let result = match received {
            Err(_) => {
                // Its alert is in the output: sent, then the connection closes.
                self.begin_closing();
                env.pool.put(&mut self.input);
                Err(Fault::Tls)
            }
            Ok(_) if plain.is_empty() => Ok(()),
            Ok(_) => self.on_plaintext(&plain, shared.as_deref_mut(), env),
        };
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.put_rx_plain(plain);
        }
        result?;
        if received.is_ok_and(|r| r.peer_closed) {
            // close_notify: the peer's end of input, as a FIN is.
            self.on_eof(shared.as_deref_mut(), env)?;
        }
        // A region sent before the handshake completed starts now.
        self.refill_tls(shared, env)?;
        self.check_pause(env.rules);
        Ok(())
    }

    /// Plaintext for the protocol: held while the service holds its input,
    /// else offered behind any input it left unconsumed.
    fn on_plaintext(
        &mut self,
        data: &[u8],
        shared: Option<&mut Vec<u8>>,
        env: &mut Env,
    ) -> Result<(), Fault> {
        if self.asks & asked::HOLDING != 0 {
            self.hold(data, env);
            return Ok(());
        }
        self.offer_input(data, shared, env)
    }

    /// The service holds its input: keep `data` behind it, and stop
    /// reading once it reaches the cap (a completion engine's receives
    /// already under way may still add theirs).
    fn hold(&mut self, data: &[u8], env: &mut Env) {
        if self.input.capacity() == 0 {
            self.input = env.pool.get_for(data.len());
        }
        self.input.extend_from_slice(data);
        if self.input.len() >= env.rules.max_pending_input {
            self.asks |= asked::INPUT_FULL;
        }
    }

    /// Offer the protocol its unconsumed input followed by `data`.
    fn offer_input(
        &mut self,
        data: &[u8],
        shared: Option<&mut Vec<u8>>,
        env: &mut Env,
    ) -> Result<(), Fault> {
        // Its call sets OUTPUT_FULL again if it stops at the mark once more.
        self.asks &= !(asked::REOFFER | asked::OUTPUT_FULL);
        let was_idle = self.proto_idle();
        let was_between = was_idle && self.input.is_empty();
        let owed = self.owed() > 0;
        let step = if self.input.is_empty() {
            let step = self.call(shared, env, |p, cx| p.on_data(data, cx))?;
            if step.consumed > data.len() {
                return Err(Fault::Overconsumed);
            }
            if step.consumed < data.len() && !step.close {
                self.input = env.pool.get_for(data.len() - step.consumed);
                self.input.extend_from_slice(&data[step.consumed..]);
            }
            step
        } else {
            self.input.extend_from_slice(data);
            let input = std::mem::take(&mut self.input);
            let step = self.call(shared, env, |p, cx| p.on_data(&input, cx));
            self.input = input;
            let step = step?;
            if step.consumed > self.input.len() {
                return Err(Fault::Overconsumed);
            }
            self.input.drain(..step.consumed);
            if self.input.is_empty() {
                env.pool.put(&mut self.input);
            }
            step
        };
        if (was_idle || self.proto_idle()) && !owed {
            self.last_active = env.now;
        }
        if was_between {
            // A message may start here: its first period of the minimum rate.
            self.window_start = env.now;
            self.window_bytes = 0;
        }
        let received = u32::try_from(data.len()).unwrap_or(u32::MAX);
        self.window_bytes = self.window_bytes.saturating_add(received);
        if step.close {
            self.begin_closing();
            env.pool.put(&mut self.input);
        } else if self.input.len() >= env.rules.max_pending_input && self.asks & asked::HOLDING != 0
        {
            // Held on purpose: reading stops instead of the cap closing it.
            self.asks |= asked::INPUT_FULL;
        } else if self.input.len() > env.rules.max_pending_input {
            // The protocol's last word, then close (its output is still sent).
            self.call(None, env, |p, cx| p.on_input_cap(cx))?;
            self.begin_closing();
            env.pool.put(&mut self.input);
            return Err(Fault::InputCap);
        }
        self.check_pause(env.rules);
        Ok(())
    }

    /// The peer ended its side. The protocol sees any unconsumed input and
    /// may answer; then the connection closes, unless the protocol allowed
    /// a half-close and has not shut down its own side yet.
    pub(crate) fn on_eof(
        &mut self,
        shared: Option<&mut Vec<u8>>,
        env: &mut Env,
    ) -> Result<(), Fault> {
        self.flags |= flag::READ_CLOSED;
        if self.has(flag::CLOSING) {
            return Ok(());
        }
        if self.asks & asked::HOLDING != 0 || self.answers_wait() {
            // The protocol hears of it after the input it holds, or has
            // yet to answer.
            self.asks |= asked::EOF_HELD;
            return Ok(());
        }
        let input = std::mem::take(&mut self.input);
        let called = self.call(shared, env, |p, cx| p.on_eof(&input, cx));
        self.input = input;
        env.pool.put(&mut self.input);
        if !self.has(flag::HALF_CLOSE) || self.has(flag::SHUT_ASKED) {
            self.begin_closing();
        }
        // A TLS record cut short by the FIN: counted as the peer's TLS error.
        if self.tls.as_ref().is_some_and(|t| t.mid_record()) {
            return called.and(Err(Fault::Tls));
        }
        called
    }

    /// Another connection's service posted `message` to this one.
    pub(crate) fn on_message(
        &mut self,
        from: ConnId,
        message: Box<dyn Any + Send>,
        env: &mut Env,
    ) -> Result<(), Fault> {
        self.tell(None, env, |p, cx| p.on_message(from, message, cx))
    }

    /// Blocking work this connection's service spawned ended.
    pub(crate) fn on_blocking_done(
        &mut self,
        key: u64,
        result: io::Result<Box<dyn Any + Send>>,
        env: &mut Env,
    ) -> Result<(), Fault> {
        self.tell(None, env, |p, cx| p.on_blocking_done(key, result, cx))
    }

    /// Whether the service stopped answering at the output high-water mark
    /// and has input (its own, or left with the engine) still to answer.
    fn answers_wait(&self) -> bool {
        self.asks & asked::OUTPUT_FULL != 0 && (!self.input.is_empty() || !self.proto_idle())
    }

    /// Whether input left unconsumed (or a FIN behind it) is due to be
    /// offered: released, or the output it stopped at has drained to half.
    fn input_due(&self) -> bool {
        let eof = self.asks & asked::EOF_HELD != 0 && !self.answers_wait();
        (self.asks & asked::REOFFER != 0 || eof) && self.asks & asked::HOLDING == 0
    }

    /// Whether the service has a callback due in the loop's next pass (its
    /// input released or to be answered on, or a drained notice with
    /// nothing owed); true once, when the loop should put it in its list
    /// (see [`Session::run_due`]).
    pub(crate) fn take_due(&mut self) -> bool {
        if self.asks & asked::DUE != 0 || self.has(flag::CLOSING | flag::LINGERING) {
            return false;
        }
        let released = self.input_due();
        let drained = self.asks & asked::DRAINED != 0 && self.owed() == 0;
        if released || drained {
            self.asks |= asked::DUE;
        }
        released || drained
    }

    /// The loop's next pass after [`Session::take_due`]: input released is
    /// offered again (then a FIN that came while it was held), and a
    /// drained notice is given if nothing is owed (nor gathered in
    /// `shared` by the offer). Once per pass at most, so a producer whose
    /// peer takes everything at once cannot starve the loop. True when
    /// reading resumed: the engine reads what waits in the socket.
    pub(crate) fn run_due(
        &mut self,
        mut shared: Option<&mut Vec<u8>>,
        env: &mut Env,
    ) -> Result<bool, Fault> {
        self.asks &= !asked::DUE;
        if self.has(flag::CLOSING | flag::LINGERING) {
            return Ok(false);
        }
        // Held again since it was released: offered at the next release.
        let reoffered = self.input_due();
        if reoffered && self.asks & asked::REOFFER != 0 {
            self.asks &= !asked::REOFFER;
            // A service that stopped at the output mark may keep the rest
            // itself (RESP gathers a long pipeline): offered even if empty.
            if !self.input.is_empty() || self.answers_wait() {
                self.offer_input(&[], shared.as_deref_mut(), env)?;
            }
        }
        // The FIN waits until the input before it is answered.
        if reoffered && self.asks & asked::EOF_HELD != 0 && !self.answers_wait() {
            self.asks &= !asked::EOF_HELD;
            self.on_eof(shared.as_deref_mut(), env)?;
        }
        let gathered = shared.as_ref().is_some_and(|b| !b.is_empty());
        if self.asks & asked::DRAINED != 0 && self.owed() == 0 && !gathered {
            self.asks &= !asked::DRAINED;
            if !self.has(flag::CLOSING) {
                self.call(shared, env, |p, cx| p.on_drained(cx))?;
                self.check_pause(env.rules);
            }
        }
        Ok(reoffered && self.reading())
    }

    /// A timer the protocol set fired.
    pub(crate) fn on_timer(
        &mut self,
        key: u64,
        shared: Option<&mut Vec<u8>>,
        env: &mut Env,
    ) -> Result<(), Fault> {
        if let Some(extras) = self.extras.as_mut() {
            extras.timers.remove(&key);
        }
        self.tell(shared, env, |p, cx| p.on_timer(key, cx))
    }

    /// Remember the wheel's id of the protocol's timer `key`; returns the
    /// id it replaces, which the loop cancels.
    pub(crate) fn set_timer(&mut self, key: u64, id: TimerId) -> Option<TimerId> {
        self.extras().timers.insert(key, id)
    }

    /// Forget the protocol's timer `key`; returns its id for the loop to cancel.
    pub(crate) fn cancel_timer(&mut self, key: u64) -> Option<TimerId> {
        self.extras.as_mut()?.timers.remove(&key)
    }

    /// Tie this connection to `other`: it is closed when this one closes.
    pub(crate) fn add_link(&mut self, other: ConnId) {
        let links = &mut self.extras().links;
        if !links.contains(&other) {
            links.push(other);
        }
    }

    /// Carry out a command another connection (or this one's protocol)
    /// gave this connection: output (sent, or forwarded with flow control),
    /// a close or half-close, a pause or resume of reading, a link.
    /// Commands for others that follow from it (pause a forwarding writer)
    /// go to `env.commands`.
    pub(crate) fn apply(&mut self, command: Command, env: &mut Env) -> Applied {
        match command {
            Command::Send { bytes, .. } => {
                return match self.push_output(&bytes, env) {
                    true => Applied::Done,
                    false => Applied::Overflow,
                };
            }
            Command::Forward { from, bytes, .. } => {
                self.flags |= flag::FED;
                if !self.push_output(&bytes, env) {
                    return Applied::Overflow;
                }
                if self.owed() >= env.rules.output_high_water && self.accepts_output() {
                    // The writer waits until this one has sent half.
                    let waiting = &mut self.extras().waiting_writers;
                    if !waiting.contains(&from) {
                        waiting.push(from);
                    }
                    env.commands.push(Command::PauseReading(from));
                }
            }
            Command::Close(_) => self.request_close(),
            Command::ShutdownWrite(_) => self.request_shutdown_write(),
            Command::PauseReading(_) => self.flags |= flag::HELD,
            Command::ResumeReading(_) => {
                let held = self.has(flag::HELD);
                self.flags &= !flag::HELD;
                if held && self.reading() {
                    return Applied::Resumed;
                }
            }
            Command::Link { from, .. } => self.add_link(from),
            _ => {}
        }
        Applied::Done
    }

    /// Whether output given to this connection is still sent (not closing,
    /// and its side not shut down).
    fn accepts_output(&self) -> bool {
        !self.has(flag::CLOSING | flag::LINGERING | flag::SHUT_ASKED | flag::WRITE_SHUT)
    }

    /// Output another connection sent this one. False when this connection
    /// already owes more than `max_output`: it is not reading, and the loop
    /// disconnects it rather than buffer without bound.
    pub(crate) fn push_output(&mut self, bytes: &[u8], env: &mut Env) -> bool {
        if !self.accepts_output() {
            return true;
        }
        // Memory is what the cap bounds: queued file regions hold none.
        let waiting = self.tls.as_ref().map_or(0, |t| t.backlog_in_memory());
        if self.output.in_memory() + waiting + self.in_flight + bytes.len() > env.rules.max_output {
            return false;
        }
        match self.tls.as_deref_mut() {
            Some(tls) => {
                let back = self.output.back_bytes(env.pool, bytes.len());
                let before = back.len();
                tls.send(bytes, back);
                self.output.appended(before, &mut Vec::new());
            }
            None => self.output.push_bytes(bytes, env.pool),
        }
        self.check_pause(env.rules);
        true
    }

    /// Close once the output is sent (asked by a protocol).
    pub(crate) fn request_close(&mut self) {
        self.begin_closing();
    }

    /// The connection closes once its output is sent: it takes no more
    /// input and drops what others send it, so its service hears
    /// [`Service::on_close`] now rather than when the socket closes (a
    /// subscriber being closed, or lingering, is no longer a receiver).
    fn begin_closing(&mut self) {
        self.flags |= flag::CLOSING;
        self.tell_closed();
    }

    /// [`Service::on_close`], once (never for a connection still connecting:
    /// its service never opened).
    fn tell_closed(&mut self) {
        if self.has(flag::CLOSE_TOLD) || self.is_connecting() {
            return;
        }
        self.flags |= flag::CLOSE_TOLD;
        let (proto, id) = (&mut self.proto, self.id);
        let _ = catch_unwind(AssertUnwindSafe(|| proto.on_close(id)));
    }

    /// Send our FIN once the output is sent and go on reading; with the
    /// peer's FIN already in, that ends both sides: close then.
    pub(crate) fn request_shutdown_write(&mut self) {
        if self.has(flag::CLOSING | flag::LINGERING | flag::SHUT_ASKED) {
            return;
        }
        self.flags |= flag::SHUT_ASKED;
        if self.has(flag::READ_CLOSED) {
            self.begin_closing();
        }
    }

    /// Output gathered in the loop's shared buffer that the kernel refused:
    /// the session keeps it, in front of anything produced later.
    pub(crate) fn keep_unsent(&mut self, rest: &[u8], env: &mut Env) {
        if rest.is_empty() {
            return;
        }
        self.output.push_bytes(rest, env.pool);
        self.check_pause(env.rules);
    }

    /// Hand the unsent bytes in front of the queue to a completion
    /// engine's send; it reports the bytes taken with [`Session::on_sent`].
    /// `into` must be empty.
    pub(crate) fn hand_out(&mut self, into: &mut Vec<u8>) {
        self.in_flight += self.output.take_head(into);
    }

    /// A completion engine took `n` bytes of the front of the queue
    /// (a file region's, read into its send buffer; or bytes of any front
    /// sent outside its ring, until the request standing for them
    /// completes): they are in flight now.
    pub(crate) fn hand_out_sent(&mut self, n: usize, pool: &mut BufPool) {
        self.output.advance(n, pool);
        self.in_flight += n;
    }

    /// The kernel took `n` bytes: of the output in flight, else of the
    /// unsent output, else of the loop's shared buffer (then `from_shared`
    /// is its length and the rest is kept with [`Session::keep_unsent`]).
    pub(crate) fn on_sent(
        &mut self,
        n: usize,
        from_shared: Option<usize>,
        env: &mut Env,
    ) -> Result<Sent, Fault> {
        // Whether the socket took the whole send (over TLS, the output is
        // bytes only): the next refill grows with it, or shrinks.
        let took_all = match from_shared {
            Some(total) => n >= total,
            None if self.in_flight > 0 => n >= self.in_flight,
            None => n >= self.output.len(),
        };
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.records_sent(took_all);
        }
        let all_sent = match from_shared {
            Some(total) => n == total,
            None if self.in_flight > 0 => {
                self.in_flight -= n.min(self.in_flight);
                self.owed() == 0
            }
            None => {
                self.output.advance(n, env.pool);
                self.owed() == 0
            }
        };
        // Over TLS, more of a file region is encrypted as its records go.
        self.refill_tls(None, env)?;
        self.send_progress += n;
        // Nothing taken is no activity (a blocking engine reports every
        // write), nor is a TLS handshake's (it is part of the first message).
        let handshaking = self.tls.as_ref().is_some_and(|t| t.is_handshaking());
        if n > 0 && !handshaking && (all_sent || self.send_progress >= env.rules.output_high_water)
        {
            self.send_progress = 0;
            // Never back: an earlier read in the same pass may have stamped
            // the fresher time its bytes were taken.
            self.last_active = self.last_active.max(env.now);
        }
        let mut sent = Sent::default();
        if self.owed() <= env.rules.output_high_water / 2 {
            if self.has(flag::PAUSED) {
                self.flags &= !flag::PAUSED;
                sent.resumed = !self.has(flag::CLOSING);
            }
            if self.answers_wait() {
                // Its input is answered on in the loop's next pass.
                self.asks |= asked::REOFFER;
            }
            // Writers that forwarded past the high-water mark read again.
            if let Some(extras) = self.extras.as_deref_mut() {
                let resumed = extras.waiting_writers.drain(..);
                env.commands.extend(resumed.map(Command::ResumeReading));
            }
        }
        Ok(sent)
    }

    fn check_pause(&mut self, rules: &Rules) {
        if self.owed() >= rules.output_high_water && !self.has(flag::CLOSING | flag::FED) {
            self.flags |= flag::PAUSED;
        }
    }

    /// When the connection's deadline falls: the idle or send deadline, or
    /// while a message is in progress the end of the minimum rate's period.
    pub(crate) fn deadline(&self, rules: &Rules) -> Instant {
        if let Some(connect) = self.connect_details().filter(|_| self.is_connecting()) {
            return connect.deadline;
        }
        if self.has(flag::LINGERING | flag::TIMED_OUT) {
            return self.last_active + LINGER;
        }
        let idle_or_send = self.last_active + rules.idle_timeout;
        if self.between_messages() {
            return idle_or_send;
        }
        let period_end = self.window_start + rules.idle_timeout;
        if self.owed() > 0 {
            period_end.min(idle_or_send)
        } else {
            period_end
        }
    }

    /// The deadline came with nothing owed or a message in progress: whether
    /// the connection stays (its next period begins) rather than times out.
    /// A service waiting for others stays while it owes nothing; a message
    /// in progress stays if its peer is busy taking output (judged by the
    /// send deadline) or delivered the minimum rate in the period that ended.
    fn keeps_going(&mut self, env: &Env) -> bool {
        let owed = self.owed() > 0;
        if !owed {
            let proto = &self.proto;
            let exempt = catch_unwind(AssertUnwindSafe(|| proto.exempt_from_idle_timeout()));
            if exempt.unwrap_or(false) {
                self.last_active = env.now;
                self.window_start = env.now;
                self.window_bytes = 0;
                return true;
            }
        }
        if self.between_messages() {
            return false;
        }
        let send_deadline_passed = env.now >= self.last_active + env.rules.idle_timeout;
        if owed && send_deadline_passed {
            return false;
        }
        let period = env.rules.idle_timeout;
        let needed = (u128::from(env.rules.min_rate) * period.as_millis() / 1000)
            .clamp(1, u128::from(u32::MAX)) as u32;
        if !owed && self.window_bytes < needed {
            return false;
        }
        self.window_start = env.now;
        self.window_bytes = 0;
        true
    }

    /// The idle timer fired at `env.now`. The protocol's last word, if it
    /// has one, goes to `shared` (see [`Session::call`]).
    pub(crate) fn on_deadline(&mut self, shared: Option<&mut Vec<u8>>, env: &mut Env) -> Deadline {
        let deadline = self.deadline(env.rules);
        if env.now < deadline {
            return Deadline::Later(deadline);
        }
        if self.is_connecting() {
            return Deadline::ConnectTimedOut;
        }
        if self.has(flag::LINGERING | flag::CLOSING) {
            return Deadline::Close;
        }
        if self.keeps_going(env) {
            return Deadline::Later(self.deadline(env.rules));
        }
        // A TLS handshake that never finished times out like a stalled
        // head, with no last word: the protocol has no peer to answer yet.
        let handshaking = self.tls.as_ref().is_some_and(|t| t.is_handshaking());
        if !handshaking && self.call(shared, env, |p, cx| p.on_timeout(cx)).is_err() {
            return Deadline::Close;
        }
        self.flags |= flag::TIMED_OUT;
        self.begin_closing();
        self.flags &= !flag::PAUSED;
        self.last_active = env.now;
        Deadline::TimedOut
    }

    /// Closing (or shutting down our side), and everything owed is sent:
    /// time for [`Session::finish`].
    pub(crate) fn ready_to_finish(&self) -> bool {
        self.has(flag::CLOSING | flag::SHUT_ASKED)
            && self.owed() == 0
            && if self.has(flag::CLOSING) {
                !self.has(flag::LINGERING)
            } else {
                !self.has(flag::WRITE_SHUT)
            }
    }

    /// The last output is sent (see [`Session::ready_to_finish`]). With
    /// [`Finish::Linger`] the engine sends its FIN and discards input; with
    /// [`Finish::ShutWrite`] it sends its FIN and goes on reading.
    pub(crate) fn finish(&mut self, now: Instant, pool: &mut BufPool) -> Finish {
        if let Some(tls) = self.tls.as_deref_mut() {
            // Our close_notify goes before our FIN (once).
            let back = self.output.back_bytes(pool, 0);
            let before = back.len();
            let closing = tls.close(back);
            self.output.appended(before, &mut Vec::new());
            if closing {
                return Finish::Flush;
            }
        }
        if self.has(flag::SHUT_ASKED) && !self.has(flag::CLOSING) {
            self.flags |= flag::WRITE_SHUT;
            self.output.release(pool);
            return Finish::ShutWrite;
        }
        pool.put(&mut self.input);
        self.output.release(pool);
        if self.has(flag::READ_CLOSED) {
            return Finish::Close;
        }
        self.flags |= flag::LINGERING;
        self.flags &= !flag::PAUSED;
        self.last_active = now;
        Finish::Linger
    }

    /// A graceful drain began: the protocol ends after the message in flight.
    pub(crate) fn begin_drain(&mut self) {
        if self.has(flag::CLOSE_TOLD) {
            return; // closing already: nothing more to say to its service
        }
        let proto = &mut self.proto;
        let _ = catch_unwind(AssertUnwindSafe(|| proto.on_drain()));
    }

    /// While draining: whether this connection can close now. It must be
    /// between messages, owe nothing, and its peer must have been quiet for
    /// [`DRAIN_QUIET`] with nothing waiting unread (`input_waiting`, asked
    /// last: it is a system call). A loop starved of CPU has not read what
    /// arrived meanwhile, so the stamp alone would cut a message short.
    pub(crate) fn closable_on_drain(
        &self,
        now: Instant,
        input_waiting: impl FnOnce() -> bool,
    ) -> bool {
        self.between_messages()
            && self.owed() == 0
            && !self.has(flag::LINGERING)
            && now.saturating_duration_since(self.last_active) >= DRAIN_QUIET
            && !input_waiting()
    }

    /// Over TLS, once its handshake completed: whether it resumed an
    /// earlier session (for the loop's counters).
    pub(crate) fn tls_handshake(&self) -> Option<bool> {
        if self.has(flag::KERNEL_TLS) {
            return Some(self.has(flag::KERNEL_TLS_RESUMED));
        }
        let tls = self.tls.as_deref()?;
        (!tls.is_handshaking()).then(|| tls.resumed())
    }

    /// Whether the kernel has the TLS record layer (see
    /// [`Session::hand_over_tls`]).
    pub(crate) fn kernel_tls(&self) -> bool {
        self.has(flag::KERNEL_TLS)
    }

    /// Whether the TLS record layer is to go to the kernel now: the
    /// server hands it over, the handshake is done, every record rustls
    /// produced (the handshake's, TLS 1.3's session tickets, answers) has
    /// reached the socket, and the connection is not ending.
    pub(crate) fn kernel_tls_due(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.ready_for_kernel())
            && self.owed() == 0
            && !self.has(
                flag::CLOSING
                    | flag::LINGERING
                    | flag::READ_CLOSED
                    | flag::SHUT_ASKED
                    | flag::WRITE_SHUT,
            )
    }

    /// Hand the TLS record layer to the kernel (when
    /// [`Session::kernel_tls_due`]): `attach` readies the socket, `install`
    /// gives it rustls's secrets (`tls::attach`, `tls::install` on the
    /// connection's descriptor). From then on the connection is plain to
    /// the session: output and file regions go to the socket as they are
    /// (the kernel encrypts), input arrives decrypted. True when handed
    /// over; false when the kernel declined first (the connection goes on
    /// in user space). Past the secrets' extraction nothing can go on: a
    /// failure there is [`Fault::KernelTls`], and the connection closes.
    pub(crate) fn hand_over_tls(
        &mut self,
        attach: impl FnOnce() -> io::Result<()>,
        install: impl FnOnce(rustls::ProtocolVersion, rustls::ExtractedSecrets) -> io::Result<()>,
    ) -> Result<bool, Fault> {
        let Some(tls) = self.tls.take() else {
            return Ok(false);
        };
        let resumed = tls.resumed();
        match tls.into_kernel(attach, install) {
            HandOver::Kernel => {
                self.flags |= flag::KERNEL_TLS;
                if resumed {
                    self.flags |= flag::KERNEL_TLS_RESUMED;
                }
                Ok(true)
            }
            HandOver::UserSpace(tls) => {
                self.tls = Some(tls);
                Ok(false)
            }
            HandOver::Failed => {
                // Neither rustls nor the kernel can send a byte more.
                self.begin_closing();
                Err(Fault::KernelTls)
            }
        }
    }

    /// The connection is gone: give its buffers back, tell the protocol
    /// (if it was ever open), put in `commands` what others must hear (its
    /// links close, writers waiting for it read again), and return the ids
    /// of its timers for the loop to cancel.
    pub(crate) fn release(
        &mut self,
        pool: &mut BufPool,
        commands: &mut Vec<Command>,
    ) -> impl Iterator<Item = TimerId> {
        pool.put(&mut self.input);
        self.output.release(pool);
        self.tell_closed();
        let extras = self.extras.take().map(|extras| *extras);
        if let Some(extras) = &extras {
            commands.extend(extras.links.iter().map(|&id| Command::Close(id)));
            let waiting = extras.waiting_writers.iter();
            commands.extend(waiting.map(|&id| Command::ResumeReading(id)));
        }
        extras.into_iter().flat_map(|e| e.timers.into_values())
    }

    /// On an engine that carries out no commands: drop the protocol's
    /// commands, telling it that each connect it asked for is unsupported
    /// (never silence). Returns how many were dropped.
    pub(crate) fn refuse_commands(&mut self, env: &mut Env) -> (u64, Result<(), Fault>) {
        let mut refused = 0;
        // A protocol that asks again from `on_connect` is told again, a few rounds at most.
        for _ in 0..4 {
            if env.commands.is_empty() {
                break;
            }
            let commands = std::mem::take(env.commands);
            refused += commands.len() as u64;
            for command in commands {
                let Command::Connect { addr, tag, .. } = command else {
                    continue;
                };
                let e = io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "cannot connect to {addr}: this engine carries out no protocol commands; \
                         run the protocol on an event-loop engine (epoll, poll, select, sigio, uring)"
                    ),
                );
                if let Err(fault) = self.on_connect(tag, Err(e), env) {
                    return (refused, Err(fault));
                }
            }
        }
        refused += env.commands.len() as u64;
        env.commands.clear();
        (refused, Ok(()))
    }

    /// Whether the protocol is between messages with no input left over.
    pub(crate) fn between_messages(&self) -> bool {
        self.proto.is_idle() && self.input.is_empty()
    }
}

#[cfg(test)]
mod tests;
