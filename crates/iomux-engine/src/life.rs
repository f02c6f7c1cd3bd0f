//! What one loop keeps beside its connections: what it starts from
//! ([`LoopSetup`]), admitting a connection under `max_conns`, and its own
//! lifecycle ([`LoopClock`]: the pass's clock, pausing accepts when
//! descriptors run out, draining on shutdown, the next wake-up).

use crate::hub::Hub;
use crate::session::{Rules, DRAIN_QUIET};
use crate::shutdown::{ConnLimit, Shutdown, Started};
use crate::stats::LoopStats;
use crate::workers::Workers;
use crate::Config;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long accepting pauses when descriptors are exhausted and no reserve is left.
pub(crate) const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Everything one loop thread starts from, beside its listener.
pub(crate) struct LoopSetup<F> {
    /// This loop's place among the server's loops (in connection ids).
    pub index: usize,
    /// The mailboxes through which connections of other loops are reached.
    pub hub: Arc<Hub>,
    pub config: Config,
    pub rules: Rules,
    pub shutdown: Shutdown,
    pub max_conns: ConnLimit,
    pub new_protocol: F,
    /// Told once the loop is set up, or why it could not be.
    pub started: Started,
    /// The server's worker threads for blocking work.
    pub workers: Arc<Workers>,
}

impl<F> LoopSetup<F> {
    /// Where this loop's protocols' commands may go.
    pub(crate) fn route(&self) -> crate::hub::Route<'_> {
        crate::hub::Route {
            index: self.index,
            hub: &self.hub,
        }
    }
}

#[cfg(test)]
impl<F> LoopSetup<F> {
    /// A loop's setup outside a `Server` (unit tests of one loop).
    pub(crate) fn for_test(config: Config, shutdown: &Shutdown, new_protocol: F) -> Self {
        let hub = Hub::new(1);
        LoopSetup {
            index: 0,
            workers: Arc::new(Workers::new(hub.clone(), 1, 16)),
            hub,
            rules: Rules::new(&config),
            max_conns: shutdown.conn_limit(config.max_conns),
            config,
            shutdown: shutdown.clone(),
            new_protocol,
            started: Started::channel().0,
        }
    }
}

/// Count a newly accepted connection and take a place for it under
/// `max_conns`. False when it is refused (counted in `stats.refused`): the
/// server is `draining` or full. The caller then drops the socket, which
/// closes it; an admitted connection gives its place back with
/// [`ConnLimit::release`] when it closes.
pub(crate) fn admit(max_conns: &ConnLimit, draining: bool, stats: &mut LoopStats) -> bool {
    stats.accepts += 1;
    if draining || !max_conns.try_acquire() {
        stats.refused += 1;
        return false;
    }
    true
}

/// Take a place under `max_conns` for an outgoing connection (given back
/// with [`ConnLimit::release`] when it closes), or say why not.
pub(crate) fn admit_outgoing(max_conns: &ConnLimit) -> std::io::Result<()> {
    if max_conns.try_acquire() {
        return Ok(());
    }
    Err(std::io::Error::other(
        "the server is at its connection limit: no place for another connection until one closes",
    ))
}

/// Most bytes a connection sends in one go (nginx's `sendfile_max_chunk`):
/// a download to a fast reader must not hold up the loop's other
/// connections. File regions count, and so do bytes from memory: over TLS a
/// file's records are encrypted as they go, so they keep coming. A
/// connection gets another piece in the same pass while the pass is young
/// ([`LoopClock::piece_left`]); the rest goes out on a later pass.
pub(crate) const SEND_PIECE: usize = 2 << 20;

/// How long a pass goes on handing out pieces. A page-cached file goes out
/// at several GB/s, so a piece takes a few hundred microseconds and a
/// connection can fill its socket's buffer in one pass, then wait for room,
/// instead of coming back at once for less; a file read from disk, or
/// encrypted, takes longer per piece and stops at one.
const PASS_SEND_TIME: Duration = Duration::from_millis(1);

/// A loop's own state over time: the current pass's clock, a pause in
/// accepting, and the drain.
#[derive(Debug)]
pub(crate) struct LoopClock {
    /// When this pass started (read once per wait).
    pub now: Instant,
    accept_paused_until: Option<Instant>,
    draining_until: Option<Instant>,
}

impl LoopClock {
    pub(crate) fn new() -> LoopClock {
        LoopClock {
            now: Instant::now(),
            accept_paused_until: None,
            draining_until: None,
        }
    }

    /// A new pass begins.
    pub(crate) fn tick(&mut self) {
        self.now = Instant::now();
    }

    /// What a connection may still send in this pass, `left` being what
    /// is left of its piece: that, or when the piece is spent another
    /// [`SEND_PIECE`] if the pass began less than [`PASS_SEND_TIME`] ago.
    pub(crate) fn piece_left(&self, left: usize) -> usize {
        if left == 0 && self.now.elapsed() < PASS_SEND_TIME {
            SEND_PIECE
        } else {
            left
        }
    }

    /// The time to stamp on bytes taken now. While draining, the time they
    /// were taken, not the pass's start: a loop that lost the CPU in between
    /// would otherwise look quiet a whole stall early.
    pub(crate) fn stamp(&self) -> Instant {
        if self.draining_until.is_some() {
            Instant::now()
        } else {
            self.now
        }
    }

    /// Descriptors ran out with no reserve left: stop accepting for a moment
    /// instead of spinning on the listener.
    pub(crate) fn pause_accepting(&mut self) {
        self.accept_paused_until = Some(self.now + ACCEPT_PAUSE);
    }

    pub(crate) fn accept_paused(&self) -> bool {
        self.accept_paused_until.is_some()
    }

    /// True once, when a pause in accepting is over.
    pub(crate) fn accept_resumes(&mut self) -> bool {
        if self.accept_paused_until.is_some_and(|t| self.now >= t) {
            self.accept_paused_until = None;
            return true;
        }
        false
    }

    /// Shutdown: stop accepting, let in-flight work finish within `timeout`.
    pub(crate) fn begin_drain(&mut self, timeout: Duration) {
        self.draining_until = Some(self.now + timeout);
        self.accept_paused_until = None;
    }

    pub(crate) fn draining(&self) -> bool {
        self.draining_until.is_some()
    }

    /// The drain's deadline has passed: close what is left.
    pub(crate) fn drain_over(&self) -> bool {
        self.draining_until.is_some_and(|t| self.now >= t)
    }

    /// How long the next wait may last, given the earliest connection timer.
    /// Computed from the pass's clock: a deadline is at most one pass over
    /// the events late, and the fast path saves a clock read.
    pub(crate) fn next_wait(&self, timer: Option<Instant>) -> Option<Duration> {
        // While draining, look again soon for connections that went quiet.
        let drain_check = self.draining_until.map(|_| self.now + DRAIN_QUIET / 2);
        [
            timer,
            self.draining_until,
            self.accept_paused_until,
            drain_check,
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|t| t.saturating_duration_since(self.now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admit_counts_accepts_and_refuses_past_the_cap_or_while_draining() {
        let limit = Shutdown::new().conn_limit(Some(1));
        let mut stats = LoopStats::default();
        assert!(admit(&limit, false, &mut stats));
        assert!(!admit(&limit, false, &mut stats), "over max_conns");
        limit.release();
        assert!(!admit(&limit, true, &mut stats), "draining");
        assert!(
            admit(&limit, false, &mut stats),
            "the released place is free"
        );
        assert_eq!((stats.accepts, stats.refused), (4, 2));
    }

    #[test]
    fn an_accept_pause_ends_once_and_bounds_the_wait() {
        let mut clock = LoopClock::new();
        assert_eq!(clock.next_wait(None), None, "nothing to wake for");
        clock.pause_accepting();
        assert!(clock.accept_paused());
        assert_eq!(clock.next_wait(None), Some(ACCEPT_PAUSE));
        assert!(!clock.accept_resumes(), "not yet");
        clock.now += ACCEPT_PAUSE;
        assert!(clock.accept_resumes());
        assert!(!clock.accept_resumes(), "once");
        assert!(!clock.accept_paused());
    }

    #[test]
    fn a_drain_wakes_the_loop_to_look_for_quiet_connections_and_ends_at_its_deadline() {
        let mut clock = LoopClock::new();
        let timer = clock.now + Duration::from_secs(60);
        assert_eq!(clock.next_wait(Some(timer)), Some(Duration::from_secs(60)));
        clock.pause_accepting();
        clock.begin_drain(Duration::from_secs(3));
        assert!(
            clock.draining() && !clock.accept_paused(),
            "no accepts while draining"
        );
        assert_eq!(clock.next_wait(Some(timer)), Some(DRAIN_QUIET / 2));
        assert!(!clock.drain_over());
        clock.now += Duration::from_secs(3);
        assert!(clock.drain_over());
        // The pass clock was moved ahead: a stamp now reads the real clock.
        assert!(clock.stamp() < clock.now, "a fresh clock while draining");
    }
}
