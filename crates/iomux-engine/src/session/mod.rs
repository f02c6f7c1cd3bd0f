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
//! - Unconsumed input is capped; past the cap the connection is an error.
//! - Backpressure: at `output_high_water` owed bytes reading pauses; it
//!   resumes once the peer has taken half of it.
//! - A connection closes after its last output is sent: our FIN, then its
//!   input is discarded until the peer's FIN or [`LINGER`] (so unread bytes
//!   do not turn the close into a reset that destroys the response).
//! - A deadline that passes gives the protocol its last word
//!   ([`Protocol::on_timeout`]); that output then has [`LINGER`] to be taken.
//! - A drain tells every protocol, and closes a connection once it is between
//!   messages, owes nothing and its peer has been quiet for [`DRAIN_QUIET`].

use crate::buffer::BufPool;
use crate::Config;
use iomux_proto::Protocol;
use std::fmt;
use std::time::{Duration, Instant};

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
    pub output_high_water: usize,
    pub max_pending_input: usize,
}

impl Rules {
    pub(crate) fn new(config: &Config) -> Rules {
        Rules {
            idle_timeout: config.idle_timeout,
            output_high_water: config.output_high_water,
            max_pending_input: config.max_pending_input,
        }
    }
}

/// Why a session must close at once (its output, if any, is abandoned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The protocol left more input unconsumed than the cap allows.
    InputCap,
    /// The protocol said it consumed more bytes than it was given.
    Overconsumed,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::InputCap => "the protocol left more input unconsumed than the cap allows",
            Fault::Overconsumed => "the protocol consumed more input than it was given",
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
}

/// What the connection does once its last output is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    /// The peer already ended its side: close now.
    Close,
    /// Send our FIN and discard the peer's input until its FIN.
    Linger,
}

/// The readiness a connection needs now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wants {
    pub read: bool,
    pub write: bool,
}

mod flag {
    /// The peer sent FIN: nothing more to read.
    pub const READ_CLOSED: u8 = 1;
    /// Close once the pending output is sent; input is dropped.
    pub const CLOSING: u8 = 2;
    /// Not reading: the peer has not taken enough of its output.
    pub const PAUSED: u8 = 4;
    /// Our FIN is sent; discarding the peer's input until its FIN.
    pub const LINGERING: u8 = 8;
    /// The deadline passed; the last output gets [`super::LINGER`].
    pub const TIMED_OUT: u8 = 16;
}

/// One connection's state, with no socket.
#[derive(Debug)]
pub(crate) struct Session<P> {
    proto: P,
    /// Input the protocol has not consumed; unallocated when empty.
    input: Vec<u8>,
    /// Output the kernel has not taken; unallocated when empty.
    output: Vec<u8>,
    /// How much of `output` is already sent.
    sent: usize,
    /// Output handed to the kernel and not yet confirmed (completion engines).
    in_flight: usize,
    /// The idle deadline counts from here.
    last_active: Instant,
    /// Bytes sent since `last_active` while output was owed (the send deadline).
    send_progress: usize,
    flags: u8,
}

impl<P: Protocol> Session<P> {
    pub(crate) fn new(proto: P, now: Instant) -> Session<P> {
        Session {
            proto,
            input: Vec::new(),
            output: Vec::new(),
            sent: 0,
            in_flight: 0,
            last_active: now,
            send_progress: 0,
            flags: 0,
        }
    }

    fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }

    /// Bytes the peer has not taken yet: unsent and in flight.
    pub(crate) fn owed(&self) -> usize {
        self.output.len() - self.sent + self.in_flight
    }

    /// The output not yet handed to the kernel.
    pub(crate) fn unsent(&self) -> &[u8] {
        &self.output[self.sent..]
    }

    pub(crate) fn is_lingering(&self) -> bool {
        self.has(flag::LINGERING)
    }

    /// Whether input is taken now (not paused, closing or ended).
    pub(crate) fn reading(&self) -> bool {
        !self.has(flag::PAUSED | flag::READ_CLOSED | flag::CLOSING)
    }

    /// The readiness the connection needs: input while reading (or
    /// discarding it while lingering), output while any is owed.
    pub(crate) fn wants(&self) -> Wants {
        Wants {
            read: self.reading() || self.has(flag::LINGERING),
            write: self.owed() > 0,
        }
    }

    /// Where this connection's output goes now: the loop's shared buffer
    /// while nothing is owed (the usual case: most answers are sent at once,
    /// and an idle connection holds no buffer), its own once the kernel has
    /// refused some, so the order of bytes is kept.
    fn out<'a>(&'a mut self, shared: Option<&'a mut Vec<u8>>) -> (&'a mut P, &'a mut Vec<u8>) {
        match shared {
            Some(shared) if self.output.len() == self.sent => (&mut self.proto, shared),
            _ => (&mut self.proto, &mut self.output),
        }
    }

    /// Bytes arrived. The protocol sees them behind any input it left
    /// unconsumed; its answers go to `shared` (see [`Session::out`]) or, with
    /// `None`, to the session's own output. `now` stamps the activity.
    pub(crate) fn on_received(
        &mut self,
        data: &[u8],
        shared: Option<&mut Vec<u8>>,
        now: Instant,
        rules: &Rules,
        pool: &mut BufPool,
    ) -> Result<(), Fault> {
        if self.has(flag::CLOSING | flag::LINGERING | flag::READ_CLOSED) {
            // Closing or lingering: further input is dropped. (While paused
            // it is still taken: a completion engine's receive may deliver
            // bytes that arrived before the pause reached the kernel.)
            return Ok(());
        }
        let was_idle = self.proto.is_idle();
        let owed = self.owed() > 0;
        let step = if self.input.is_empty() {
            let (proto, out) = self.out(shared);
            let step = proto.on_input(data, out);
            if step.consumed > data.len() {
                return Err(Fault::Overconsumed);
            }
            if step.consumed < data.len() && !step.close {
                self.input = pool.get();
                self.input.extend_from_slice(&data[step.consumed..]);
            }
            step
        } else {
            self.input.extend_from_slice(data);
            let Session {
                proto,
                input,
                output,
                sent,
                ..
            } = self;
            let out = match shared {
                Some(shared) if output.len() == *sent => shared,
                _ => output,
            };
            let step = proto.on_input(input, out);
            if step.consumed > input.len() {
                return Err(Fault::Overconsumed);
            }
            input.drain(..step.consumed);
            if input.is_empty() {
                pool.put(input);
            }
            step
        };
        if (was_idle || self.proto.is_idle()) && !owed {
            self.last_active = now;
        }
        if step.close {
            self.flags |= flag::CLOSING;
            pool.put(&mut self.input);
        } else if self.input.len() > rules.max_pending_input {
            return Err(Fault::InputCap);
        }
        self.check_pause(rules);
        Ok(())
    }

    /// The peer ended its side. The protocol sees any unconsumed input and
    /// may answer; then the connection closes.
    pub(crate) fn on_eof(&mut self, shared: Option<&mut Vec<u8>>, pool: &mut BufPool) {
        self.flags |= flag::READ_CLOSED;
        if self.has(flag::CLOSING) {
            return;
        }
        self.flags |= flag::CLOSING;
        let input = std::mem::take(&mut self.input);
        let (proto, out) = self.out(shared);
        proto.on_eof(&input, out);
        self.input = input;
        pool.put(&mut self.input);
    }

    /// Output gathered in the loop's shared buffer that the kernel refused:
    /// the session keeps it, in front of anything produced later.
    pub(crate) fn keep_unsent(&mut self, rest: &[u8], rules: &Rules, pool: &mut BufPool) {
        if rest.is_empty() {
            return;
        }
        if self.output.capacity() == 0 {
            self.output = pool.get();
        }
        self.output.extend_from_slice(rest);
        self.check_pause(rules);
    }

    /// Hand all unsent output to a completion engine's send; it reports the
    /// bytes taken with [`Session::on_sent`]. `into` must be empty.
    pub(crate) fn hand_out(&mut self, into: &mut Vec<u8>) {
        debug_assert!(into.is_empty() && self.sent == 0);
        std::mem::swap(&mut self.output, into);
        self.in_flight += into.len();
    }

    /// The kernel took `n` bytes: of the output in flight, else of the
    /// unsent output, else of the loop's shared buffer (then `from_shared`
    /// is its length and the rest is kept with [`Session::keep_unsent`]).
    /// Returns true when reading resumes after a pause.
    pub(crate) fn on_sent(
        &mut self,
        n: usize,
        from_shared: Option<usize>,
        now: Instant,
        rules: &Rules,
        pool: &mut BufPool,
    ) -> bool {
        let all_sent = match from_shared {
            Some(total) => n == total,
            None if self.in_flight > 0 => {
                self.in_flight -= n.min(self.in_flight);
                self.owed() == 0
            }
            None => {
                self.sent += n;
                if self.sent >= self.output.len() {
                    self.sent = 0;
                    pool.put(&mut self.output);
                } else if self.sent > self.output.len() / 2 {
                    // Reclaim the sent prefix once it dominates, so the buffer stays bounded.
                    self.output.drain(..self.sent);
                    self.sent = 0;
                }
                self.owed() == 0
            }
        };
        self.send_progress += n;
        // Nothing taken is no activity (a blocking engine reports every write).
        if n > 0 && (all_sent || self.send_progress >= rules.output_high_water) {
            self.send_progress = 0;
            // Never back: an earlier read in the same pass may have stamped
            // the fresher time its bytes were taken.
            self.last_active = self.last_active.max(now);
        }
        if self.has(flag::PAUSED) && self.owed() <= rules.output_high_water / 2 {
            self.flags &= !flag::PAUSED;
            return !self.has(flag::CLOSING);
        }
        false
    }

    fn check_pause(&mut self, rules: &Rules) {
        if self.owed() >= rules.output_high_water && !self.has(flag::CLOSING) {
            self.flags |= flag::PAUSED;
        }
    }

    /// When the connection's deadline falls.
    pub(crate) fn deadline(&self, rules: &Rules) -> Instant {
        let limit = if self.has(flag::LINGERING | flag::TIMED_OUT) {
            LINGER
        } else {
            rules.idle_timeout
        };
        self.last_active + limit
    }

    /// The timer fired at `now`. The protocol's last word, if it has one, goes
    /// to `shared` (see [`Session::out`]).
    pub(crate) fn on_deadline(
        &mut self,
        now: Instant,
        shared: Option<&mut Vec<u8>>,
        rules: &Rules,
    ) -> Deadline {
        let deadline = self.deadline(rules);
        if now < deadline {
            return Deadline::Later(deadline);
        }
        if self.has(flag::LINGERING | flag::CLOSING) {
            return Deadline::Close;
        }
        let (proto, out) = self.out(shared);
        proto.on_timeout(out);
        self.flags |= flag::CLOSING | flag::TIMED_OUT;
        self.flags &= !flag::PAUSED;
        self.last_active = now;
        Deadline::TimedOut
    }

    /// Closing, and everything owed is sent: what comes next. With
    /// [`Finish::Linger`] the engine sends its FIN and discards input.
    pub(crate) fn ready_to_finish(&self) -> bool {
        self.has(flag::CLOSING) && !self.has(flag::LINGERING) && self.owed() == 0
    }

    /// The last output is sent (see [`Session::ready_to_finish`]).
    pub(crate) fn finish(&mut self, now: Instant, pool: &mut BufPool) -> Finish {
        pool.put(&mut self.input);
        pool.put(&mut self.output);
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
        self.proto.on_drain();
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
        self.proto.is_idle()
            && self.input.is_empty()
            && self.owed() == 0
            && !self.has(flag::LINGERING)
            && now.saturating_duration_since(self.last_active) >= DRAIN_QUIET
            && !input_waiting()
    }

    /// Give the session's buffers back (it is closing).
    pub(crate) fn release(&mut self, pool: &mut BufPool) {
        pool.put(&mut self.input);
        pool.put(&mut self.output);
    }

    /// Whether the protocol is between messages with no input left over.
    pub(crate) fn between_messages(&self) -> bool {
        self.proto.is_idle() && self.input.is_empty()
    }
}

#[cfg(test)]
mod tests;
