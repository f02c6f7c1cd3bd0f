//! What a loop counts: a leaf module every engine and the CLI read.

/// Counters of what one loop did, for the lab's explanations.
///
/// ```
/// let mut a = iomux_engine::LoopStats::default();
/// a.reads = 2;
/// let mut b = iomux_engine::LoopStats::default();
/// b.reads = 3;
/// a.add(&b);
/// assert_eq!(a.reads, 5);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoopStats {
    /// Selector waits.
    pub waits: u64,
    /// Events those waits reported.
    pub events: u64,
    /// Connections accepted.
    pub accepts: u64,
    /// Connections accepted and closed at once because of `--max-conns` or a
    /// selector that could not watch them.
    pub refused: u64,
    /// Connections shed because descriptors ran out.
    pub shed: u64,
    /// read(2) calls.
    pub reads: u64,
    /// Reads that found nothing (EAGAIN).
    pub read_eagain: u64,
    /// send(2) calls that moved bytes or pushed back.
    pub writes: u64,
    /// Writes the kernel pushed back on (EAGAIN or short).
    pub write_blocked: u64,
    /// Connections closed.
    pub closed: u64,
    /// Connections closed by their idle or request-head deadline.
    pub timeouts: u64,
    /// Times accepting paused because descriptors ran out with no reserve left.
    pub accept_pauses: u64,
    /// Connections refused because the selector could not watch them (for
    /// example select with a descriptor past its limit).
    pub unwatchable: u64,
    /// Connections closed because their protocol broke a rule of the engine
    /// (left too much input unconsumed, or consumed more than it was given).
    pub faults: u64,
    /// Connections refused because no thread could be started for them.
    pub spawn_failures: u64,
    /// io_uring: connections whose requests the kernel had not completed when
    /// the loop ended; their buffers were leaked rather than freed under it.
    pub leaked_buffers: u64,
    /// Connections disconnected because output other connections sent them
    /// passed the output cap (they had stopped reading).
    pub output_overflows: u64,
    /// Commands for connections of no loop of this server.
    pub misaddressed: u64,
    /// Protocol commands (writes to other connections, timers) an engine
    /// without a loop to carry them out refused: threads, blocking, nonblocking.
    pub refused_commands: u64,
    /// Times the selector lost track of readiness and checked every
    /// descriptor instead ([`iomux::Selector::overflows`]: sigio's signal queue).
    pub selector_overflows: u64,
    /// Outgoing connections established ([`iomux_proto::Context::connect`]).
    pub connects: u64,
    /// Outgoing connections that failed: refused, unreachable, timed out, or
    /// no descriptor or place under the connection limit for them.
    pub connect_failures: u64,
    /// Connections closed because a file region they were sending ran out
    /// of file before its end (the file shrank while being sent): the peer
    /// got fewer bytes than announced, and the end of the stream.
    pub files_cut_short: u64,
    /// TLS handshakes completed (counted as their connections close).
    pub tls_handshakes: u64,
    /// Of those, handshakes that resumed an earlier session (a ticket or
    /// the session cache).
    pub tls_resumed: u64,
    /// Connections closed because the peer broke the TLS protocol (garbage
    /// instead of a ClientHello, plain text, an oversized or forged record,
    /// a failed handshake).
    pub tls_errors: u64,
    /// Connections whose TLS record layer went to the kernel after the
    /// handshake ([`crate::Config::kernel_tls`]); 0 where the kernel has
    /// no TLS offload: every record was encrypted in user space.
    pub tls_kernel: u64,
    /// Connections closed because the kernel refused the keys once they
    /// had left rustls (neither side could go on).
    pub tls_kernel_failed: u64,
}

/// One line of `name=value` counters, as `iomux serve` prints them when it
/// stops (the lab reads them back).
///
/// ```
/// let s = iomux_engine::LoopStats { waits: 2, reads: 5, ..Default::default() };
/// assert!(s.to_string().starts_with("accepts=0 refused=0"));
/// assert!(s.to_string().contains(" reads=5 "));
/// ```
impl std::fmt::Display for LoopStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let LoopStats {
            waits,
            events,
            accepts,
            refused,
            shed,
            reads,
            read_eagain,
            writes,
            write_blocked,
            closed,
            timeouts,
            accept_pauses,
            unwatchable,
            faults,
            spawn_failures,
            leaked_buffers,
            output_overflows,
            misaddressed,
            refused_commands,
            selector_overflows,
            connects,
            connect_failures,
            files_cut_short,
            tls_handshakes,
            tls_resumed,
            tls_errors,
            tls_kernel,
            tls_kernel_failed,
        } = self;
        write!(
            f,
            "accepts={accepts} refused={refused} shed={shed} closed={closed} timeouts={timeouts} \
             reads={reads} read_eagain={read_eagain} writes={writes} write_blocked={write_blocked} \
             waits={waits} events={events} accept_pauses={accept_pauses} unwatchable={unwatchable} \
             faults={faults} spawn_failures={spawn_failures} leaked_buffers={leaked_buffers} \
             output_overflows={output_overflows} misaddressed={misaddressed} refused_commands={refused_commands} \
             selector_overflows={selector_overflows} connects={connects} connect_failures={connect_failures} \
             files_cut_short={files_cut_short} \
             tls_handshakes={tls_handshakes} tls_resumed={tls_resumed} tls_errors={tls_errors} \
             tls_kernel={tls_kernel} tls_kernel_failed={tls_kernel_failed}"
        )
    }
}

impl LoopStats {
    /// Add another loop's counters.
    pub fn add(&mut self, o: &LoopStats) {
        self.waits += o.waits;
        self.events += o.events;
        self.accepts += o.accepts;
        self.refused += o.refused;
        self.shed += o.shed;
        self.reads += o.reads;
        self.read_eagain += o.read_eagain;
        self.writes += o.writes;
        self.write_blocked += o.write_blocked;
        self.closed += o.closed;
        self.timeouts += o.timeouts;
        self.accept_pauses += o.accept_pauses;
        self.unwatchable += o.unwatchable;
        self.faults += o.faults;
        self.spawn_failures += o.spawn_failures;
        self.leaked_buffers += o.leaked_buffers;
        self.output_overflows += o.output_overflows;
        self.misaddressed += o.misaddressed;
        self.refused_commands += o.refused_commands;
        self.selector_overflows += o.selector_overflows;
        self.connects += o.connects;
        self.connect_failures += o.connect_failures;
        self.files_cut_short += o.files_cut_short;
        self.tls_handshakes += o.tls_handshakes;
        self.tls_resumed += o.tls_resumed;
        self.tls_errors += o.tls_errors;
        self.tls_kernel += o.tls_kernel;
        self.tls_kernel_failed += o.tls_kernel_failed;
    }
}
