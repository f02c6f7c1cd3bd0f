//! One load thread: an edge-triggered epoll loop over its share of the
//! connections, keeping `pipeline` requests in flight on each (closed loop) or
//! issuing them on a fixed schedule (open loop, `--rate`).

use super::connect::{close_abortively, finish_connect, start_connect};
use super::proto::{EchoCounter, HttpCounter, Proto, ProtocolError, Requests};
use super::tls::{self, Decrypted, Tls};
use super::Totals;
use iomux::{EpollSelector, Event, Events, Interest, Selector, Token, Trigger};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often timeouts and reconnects are checked and progress is published.
const HOUSEKEEPING: Duration = Duration::from_millis(50);
/// Wait before reconnecting after an error, so a refusing server is not hammered.
const RETRY_DELAY: Duration = Duration::from_millis(10);
const READ_BUF: usize = 64 * 1024;
/// Reads per connection per pass of the loop (1 MiB): a server that sends
/// without end cannot keep the loop from its clock, its timeouts and the
/// other connections. What is left is read on the next pass.
const READS_PER_PASS: usize = 16;

/// What one thread is asked to do.
pub(crate) struct Plan {
    pub addr: SocketAddr,
    pub proto: Proto,
    pub pipeline: usize,
    pub requests: Requests,
    /// Requests per second for this thread (open loop), or `None` (closed loop).
    pub rate: Option<f64>,
    pub connect_per_request: bool,
    /// HTTP requests are HEAD requests (their responses carry no body).
    pub head_requests: bool,
    /// Stop once this many requests are answered (this thread's share), or `None`: run for the duration.
    pub budget: Option<u64>,
    pub timeout: Duration,
    pub start: Instant,
    pub end: Instant,
    /// Established connections to drive (closed or open loop).
    pub streams: Vec<TcpStream>,
    /// Connection slots that connect themselves (connection-per-request).
    pub slots: usize,
    /// Completed requests and errors so far, for the progress line.
    pub progress: Arc<[AtomicU64; 2]>,
    /// Speak TLS on every connection, or `None`: plain.
    pub tls: Option<Tls>,
}

struct Conn {
    stream: Option<TcpStream>,
    connecting: bool,
    /// When the current connect started (connection-per-request latency starts here).
    connect_started: Instant,
    retry_at: Option<Instant>,
    http: HttpCounter,
    echo: EchoCounter,
    /// Send (or intended send) time of each request in flight, oldest first.
    in_flight: VecDeque<Instant>,
    /// Request bytes still to write, and where in a request they start.
    owed: usize,
    phase: usize,
    /// Open loop: queued in the list of connections that can take a request.
    listed_free: bool,
    /// At least one response arrived on this slot.
    answered: bool,
    /// Responses on the current connection (a server that closes before
    /// answering anything is failing, not recycling the connection).
    responses_here: u64,
    /// Bytes may be waiting that the last pass left unread (`Some(closed)`,
    /// whether the peer had shut down its side): no new edge will say so.
    unread: Option<bool>,
    /// The connection's TLS session (HTTPS), and whether its handshake
    /// has been counted.
    tls: Option<Box<rustls::ClientConnection>>,
    handshake_counted: bool,
}

struct Worker {
    plan: Plan,
    selector: EpollSelector,
    conns: Vec<Conn>,
    totals: Totals,
    buf: Vec<u8>,
    /// What TLS decrypts (empty without TLS).
    plain: Vec<u8>,
    /// Open loop: connections with room for another request, round robin.
    free: VecDeque<usize>,
    /// Connections whose last pass stopped reading before the socket was drained.
    unread: Vec<usize>,
    /// Requests handed out: the open loop's place in its schedule, and what
    /// counts against the budget (requests lost to an error are given back
    /// in the closed loop, to be sent again).
    issued: u64,
}

pub(crate) fn run(plan: Plan) -> io::Result<Totals> {
    let selector = EpollSelector::new(Trigger::Edge)?;
    let mut w = Worker {
        conns: Vec::new(),
        selector,
        totals: Totals::new(),
        buf: vec![0; READ_BUF],
        plain: if plan.tls.is_some() {
            vec![0; READ_BUF]
        } else {
            Vec::new()
        },
        free: VecDeque::new(),
        unread: Vec::new(),
        issued: 0,
        plan,
    };
    let streams = std::mem::take(&mut w.plan.streams);
    let now = Instant::now();
    for stream in streams {
        let i = w.new_conn(now);
        w.selector
            .register(stream.as_fd(), Token(i), Interest::BOTH)?;
        w.conns[i].stream = Some(stream);
        w.on_connected(i, now);
    }
    for _ in 0..w.plan.slots {
        let i = w.new_conn(now);
        w.reconnect(i, now);
    }
    w.event_loop()?;
    w.finish();
    Ok(w.totals)
}

impl Worker {
    fn new_conn(&mut self, now: Instant) -> usize {
        self.conns.push(Conn {
            stream: None,
            connecting: false,
            connect_started: now,
            retry_at: None,
            http: HttpCounter::new(self.plan.head_requests),
            echo: EchoCounter::default(),
            in_flight: VecDeque::with_capacity(self.plan.pipeline),
            owed: 0,
            phase: 0,
            listed_free: false,
            answered: false,
            responses_here: 0,
            unread: None,
            tls: None,
            handshake_counted: false,
        });
        self.conns.len() - 1
    }

    fn event_loop(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut housekeeping = Instant::now() + HOUSEKEEPING;
        loop {
            let now = Instant::now();
            if now >= self.plan.end || self.budget_done() {
                return Ok(());
            }
            if now >= housekeeping {
                self.housekeeping(now);
                housekeeping = now + HOUSEKEEPING;
            }
            let mut wait = (self.plan.end - now).min(housekeeping - now);
            if let Some(rate) = self.plan.rate {
                wait = wait.min(self.issue_due(rate, now));
            }
            if !self.unread.is_empty() {
                wait = Duration::ZERO;
            }
            self.selector.select(&mut events, Some(wait))?;
            for event in &events {
                self.handle(event.token().0, event);
            }
            for i in std::mem::take(&mut self.unread) {
                // Unless an event in this pass read it already.
                if let Some(closed) = self.conns[i].unread {
                    self.read_responses(i, closed);
                    self.flush(i);
                }
            }
        }
    }

    fn handle(&mut self, i: usize, event: &Event) {
        if self.conns[i].stream.is_none() {
            return;
        }
        if self.conns[i].connecting {
            let stream = self.conns[i].stream.as_ref().expect("checked above");
            match finish_connect(stream, self.plan.addr) {
                Ok(()) => {
                    self.conns[i].connecting = false;
                    self.totals.connects += 1;
                    let at = self.conns[i].connect_started;
                    self.on_connected(i, at);
                }
                Err(e) => {
                    self.totals.errors.connect += 1;
                    self.totals.note(|| e.to_string());
                    self.drop_conn(i, Instant::now() + RETRY_DELAY, false);
                }
            }
            return;
        }
        let closed = event.is_read_closed() || event.is_hangup() || event.is_error();
        if event.is_readable() || closed {
            self.read_responses(i, closed);
        }
        self.flush(i);
    }

    /// A connection is up: send again what its predecessor left unanswered
    /// (keeping their send times), then give it new requests.
    fn on_connected(&mut self, i: usize, connect_started: Instant) {
        if let Some(tls) = &self.plan.tls {
            match tls.session() {
                Ok(session) => {
                    self.conns[i].tls = Some(Box::new(session));
                    self.conns[i].handshake_counted = false;
                }
                Err(e) => {
                    self.totals.errors.tls += 1;
                    self.totals.note(|| format!("TLS: {e}"));
                    self.drop_conn(i, Instant::now() + RETRY_DELAY, true);
                    return;
                }
            }
        }
        let c = &mut self.conns[i];
        c.responses_here = 0;
        c.owed = c.in_flight.len() * self.plan.requests.len();
        c.phase = 0;
        if self.plan.connect_per_request {
            // Latency runs from the start of the connect.
            let n = self.grant(1);
            self.queue(i, n, connect_started);
        } else if self.plan.rate.is_some() {
            self.list_free(i);
        } else {
            let room = self
                .plan
                .pipeline
                .saturating_sub(self.conns[i].in_flight.len());
            let n = self.grant(room);
            self.queue(i, n, Instant::now());
        }
        self.flush(i);
    }

    /// Closed loop: how many of `n` new requests the budget allows (all without one).
    fn grant(&mut self, n: usize) -> usize {
        let n = match self.plan.budget {
            Some(budget) => n.min(budget.saturating_sub(self.issued) as usize),
            None => n,
        };
        self.issued += n as u64;
        n
    }

    /// With a budget: every request was handed out and none is in flight.
    fn budget_done(&self) -> bool {
        self.plan
            .budget
            .is_some_and(|b| self.issued >= b && self.conns.iter().all(|c| c.in_flight.is_empty()))
    }

    fn queue(&mut self, i: usize, n: usize, at: Instant) {
        let c = &mut self.conns[i];
        for _ in 0..n {
            c.in_flight.push_back(at);
        }
        c.owed += n * self.plan.requests.len();
    }

    fn list_free(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if !c.listed_free
            && c.stream.is_some()
            && !c.connecting
            && c.in_flight.len() < self.plan.pipeline
        {
            c.listed_free = true;
            self.free.push_back(i);
        }
    }

    /// Write what the connection owes until done or the kernel pushes back.
    fn flush(&mut self, i: usize) {
        let c = &mut self.conns[i];
        let Some(stream) = c.stream.as_mut() else {
            return;
        };
        if let Some(session) = c.tls.as_mut() {
            let requests = &self.plan.requests;
            let sent = &mut self.totals.bytes_sent;
            if let Err(e) = flush_tls(session, stream, requests, &mut c.owed, &mut c.phase, sent) {
                self.fail_io(i, e);
            }
            return;
        }
        while c.owed > 0 {
            let bytes = self.plan.requests.next(c.phase, c.owed);
            match stream.write(bytes) {
                Ok(n) => {
                    self.totals.bytes_sent += n as u64;
                    c.owed -= n;
                    c.phase = (c.phase + n) % self.plan.requests.len();
                    if n < bytes.len() {
                        // The send buffer is full; edge-triggered EPOLLOUT reports when it drains.
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail_io(i, e);
                    return;
                }
            }
        }
    }

    /// Read and count what arrived. `closed`: the peer has shut down its
    /// side, so read on to the end of the stream (no new edge will come).
    fn read_responses(&mut self, i: usize, closed: bool) {
        let mut completed = 0usize;
        let mut eof = false;
        // When the last read returned (one clock read per read).
        let mut read_at = None;
        self.conns[i].unread = None;
        for reads in 1.. {
            let c = &mut self.conns[i];
            let Some(stream) = c.stream.as_mut() else {
                return;
            };
            let n = match stream.read(&mut self.buf) {
                Ok(0) => {
                    eof = true;
                    0
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.fail_io(i, e);
                    return;
                }
            };
            self.totals.bytes_received += n as u64;
            let now = Instant::now();
            read_at = Some(now);
            let counted = match c.tls.take() {
                None => count_responses(
                    c,
                    &mut self.totals,
                    self.plan.proto,
                    self.plan.requests.one(),
                    (!eof).then(|| &self.buf[..n]),
                    now,
                )
                .map_err(Failure::Protocol),
                Some(mut session) => {
                    let counted = receive_tls(
                        c,
                        &mut session,
                        &mut self.totals,
                        self.plan.proto,
                        self.plan.requests.one(),
                        &self.buf[..n],
                        &mut self.plain,
                        now,
                    );
                    self.conns[i].tls = Some(session);
                    counted.map(|(k, closed)| {
                        eof |= closed;
                        k
                    })
                }
            };
            match counted {
                Ok(k) => completed += k,
                Err(Failure::Protocol(ProtocolError(msg))) => {
                    self.totals.errors.protocol += 1;
                    self.totals.note(|| msg);
                    self.drop_conn(i, now + RETRY_DELAY, false);
                    return;
                }
                Err(Failure::Tls(msg)) => {
                    self.totals.errors.tls += 1;
                    self.totals.note(|| msg);
                    self.drop_conn(i, now + RETRY_DELAY, false);
                    return;
                }
            }
            // A short read means the socket is drained: new data raises a new edge.
            if eof || self.conns[i].http.closed() || (n < self.buf.len() && !closed) {
                break;
            }
            if reads == READS_PER_PASS {
                self.conns[i].unread = Some(closed);
                self.unread.push(i);
                break;
            }
        }
        let Some(now) = read_at else {
            return; // nothing arrived
        };
        if completed > 0 {
            self.conns[i].answered = true;
        }
        let c = &self.conns[i];
        if eof || c.http.closed() {
            return self.on_server_close(i, eof, now);
        }
        if completed == 0 {
            return;
        }
        if self.plan.connect_per_request {
            if c.in_flight.is_empty() {
                self.conns[i].tls = None;
                if let Some(stream) = self.conns[i].stream.take() {
                    let _ = self.selector.deregister(stream.as_fd());
                    close_abortively(stream);
                }
                // No connection (nor handshake) for a request the budget
                // does not allow.
                if self.plan.budget.map_or(true, |b| self.issued < b) {
                    self.reconnect(i, now);
                }
            }
        } else if self.plan.rate.is_some() {
            self.list_free(i);
        } else {
            // Closed loop: replace each answered request at once, in one write.
            let n = self.grant(completed);
            self.queue(i, n, now);
        }
    }

    /// The server closed the connection (`eof`) or announced it would: if
    /// that happened between responses after at least one, reconnect at once
    /// and send again what is unanswered; otherwise it is an error.
    fn on_server_close(&mut self, i: usize, eof: bool, now: Instant) {
        let c = &self.conns[i];
        let clean = !eof
            || match self.plan.proto {
                Proto::Http => c.http.at_boundary() || c.http.closed(),
                Proto::Echo => c.echo.at_boundary(),
            };
        if !clean {
            return self.fail_io(
                i,
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed a connection in the middle of a response",
                ),
            );
        }
        if c.responses_here == 0 && !c.in_flight.is_empty() {
            return self.fail_io(
                i,
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed a connection without answering its requests",
                ),
            );
        }
        self.totals.server_closes += 1;
        // A server that closes connections it never used is not hammered.
        let retry_at = if c.responses_here == 0 {
            now + RETRY_DELAY
        } else {
            now
        };
        self.drop_conn(i, retry_at, !self.plan.connect_per_request);
        if retry_at <= now {
            self.reconnect(i, now);
        }
    }

    fn fail_io(&mut self, i: usize, e: io::Error) {
        self.totals.errors.io += 1;
        self.totals.note(|| format!("{e}"));
        self.drop_conn(i, Instant::now() + RETRY_DELAY, false);
    }

    /// Close a connection and schedule a reconnect. Its requests in flight
    /// are kept, to be sent again on the next connection, or lost.
    fn drop_conn(&mut self, i: usize, retry_at: Instant, keep_in_flight: bool) {
        let c = &mut self.conns[i];
        if let Some(stream) = c.stream.take() {
            let _ = self.selector.deregister(stream.as_fd());
            close_abortively(stream);
        }
        c.connecting = false;
        if !keep_in_flight {
            if self.plan.rate.is_none() {
                // The closed loop sends them again as new requests.
                self.issued -= c.in_flight.len() as u64;
            }
            c.in_flight.clear();
        }
        c.owed = 0;
        c.phase = 0;
        c.http.reset();
        c.echo.reset();
        c.unread = None;
        c.tls = None;
        c.retry_at = Some(retry_at);
    }

    fn reconnect(&mut self, i: usize, now: Instant) {
        let c = &mut self.conns[i];
        c.retry_at = None;
        c.connect_started = now;
        match start_connect(self.plan.addr) {
            Ok(stream) => {
                match self
                    .selector
                    .register(stream.as_fd(), Token(i), Interest::BOTH)
                {
                    Ok(_) => {
                        c.stream = Some(stream);
                        c.connecting = true;
                    }
                    Err(e) => {
                        self.totals.errors.connect += 1;
                        self.totals.note(|| e.to_string());
                        c.retry_at = Some(now + RETRY_DELAY);
                    }
                }
            }
            Err(e) => {
                self.totals.errors.connect += 1;
                self.totals.note(|| e.to_string());
                c.retry_at = Some(now + RETRY_DELAY);
            }
        }
    }

    /// Time out stuck requests and connects, reopen dropped connections,
    /// publish progress.
    fn housekeeping(&mut self, now: Instant) {
        let timeout = self.plan.timeout;
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            if c.stream.is_none() {
                if c.retry_at.is_some_and(|t| t <= now) {
                    self.reconnect(i, now);
                }
            } else if c.connecting {
                if now.duration_since(c.connect_started) > timeout {
                    self.totals.errors.connect += 1;
                    self.totals.note(|| {
                        format!(
                            "connecting to {} timed out after {timeout:?}",
                            self.plan.addr
                        )
                    });
                    self.drop_conn(i, now, false);
                }
            } else if c
                .in_flight
                .front()
                .is_some_and(|&t| now.saturating_duration_since(t) > timeout)
            {
                self.totals.errors.timeout += 1;
                self.totals.note(|| format!("no response within {timeout:?} (raise --timeout if the server is just slow)"));
                self.drop_conn(i, now, false);
            }
        }
        let [requests, errors] = &*self.plan.progress;
        requests.store(self.totals.requests, Ordering::Relaxed);
        errors.store(self.totals.errors.total(), Ordering::Relaxed);
    }

    /// Open loop: hand every request now due to a connection with room,
    /// stamped with its intended send time. Returns how long until the next is due.
    fn issue_due(&mut self, rate: f64, now: Instant) -> Duration {
        let start = self.plan.start;
        let due = (now.saturating_duration_since(start).as_secs_f64() * rate) as u64 + 1;
        let due = self.plan.budget.map_or(due, |b| due.min(b));
        while self.issued < due {
            let Some(i) = self.free.pop_front() else {
                // Every connection is full: the backlog waits, its latency growing.
                return HOUSEKEEPING;
            };
            self.conns[i].listed_free = false;
            if self.conns[i].stream.is_none() || self.conns[i].connecting {
                continue;
            }
            let intended = start + Duration::from_secs_f64(self.issued as f64 / rate);
            self.queue(i, 1, intended);
            self.issued += 1;
            self.flush(i);
            self.list_free(i);
        }
        let next = start + Duration::from_secs_f64(self.issued as f64 / rate);
        next.saturating_duration_since(now)
    }

    /// Open loop: requests still unanswered at the end count in the latency
    /// histogram with the time they have waited so far (a lower bound), so a
    /// server that falls behind cannot hide it.
    fn finish(&mut self) {
        self.totals.starved = self.conns.iter().filter(|c| !c.answered).count() as u64;
        let [requests, errors] = &*self.plan.progress;
        requests.store(self.totals.requests, Ordering::Relaxed);
        errors.store(self.totals.errors.total(), Ordering::Relaxed);
        let Some(rate) = self.plan.rate else { return };
        let end = self.plan.end;
        for c in &self.conns {
            for &t in &c.in_flight {
                let ns = end.saturating_duration_since(t).as_nanos() as u64;
                self.totals.latency.saturating_record(ns.max(1));
            }
        }
        let due = (end.saturating_duration_since(self.plan.start).as_secs_f64() * rate) as u64;
        let due = self.plan.budget.map_or(due, |b| due.min(b));
        // Bounded: beyond ten million the shape of the tail is already clear.
        for k in self.issued..due.min(self.issued + 10_000_000) {
            let intended = self.plan.start + Duration::from_secs_f64(k as f64 / rate);
            let ns = end.saturating_duration_since(intended).as_nanos() as u64;
            self.totals.latency.saturating_record(ns.max(1));
        }
        self.totals.unsent = due.saturating_sub(self.issued);
    }
}

/// Why a connection's bytes were refused.
enum Failure {
    Protocol(ProtocolError),
    Tls(String),
}

/// Write what a TLS connection owes: the requests due go into its session
/// (which holds them until the handshake is done), the session's records
/// onto the socket, until both are done or the kernel pushes back.
fn flush_tls(
    session: &mut rustls::ClientConnection,
    stream: &mut TcpStream,
    requests: &Requests,
    owed: &mut usize,
    phase: &mut usize,
    sent: &mut u64,
) -> io::Result<()> {
    loop {
        while *owed > 0 {
            let taken = session.writer().write(requests.next(*phase, *owed))?;
            if taken == 0 {
                break; // its buffer is full until records go out
            }
            *owed -= taken;
            *phase = (*phase + taken) % requests.len();
        }
        if !session.wants_write() {
            return Ok(());
        }
        match session.write_tls(stream) {
            Ok(0) => return Ok(()),
            Ok(n) => *sent += n as u64,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Decrypt `wire` (empty: the server closed the socket) on connection `c`
/// and count the responses in it; returns how many completed and whether
/// the stream ended (the socket's end, or the server's close_notify).
/// Counts the connection's handshake once it is complete.
#[allow(clippy::too_many_arguments)]
fn receive_tls(
    c: &mut Conn,
    session: &mut rustls::ClientConnection,
    totals: &mut Totals,
    proto: Proto,
    message: &[u8],
    wire: &[u8],
    plain: &mut [u8],
    now: Instant,
) -> Result<(usize, bool), Failure> {
    let mut completed = 0;
    let decrypted = tls::decrypt(session, wire, plain, |data| {
        completed += count_responses(c, totals, proto, message, Some(data), now)?;
        Ok(())
    })
    .map_err(Failure::Protocol)?;
    if !c.handshake_counted && !session.is_handshaking() {
        c.handshake_counted = true;
        totals.tls_handshakes += 1;
        if session.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
            totals.tls_resumed += 1;
        }
    }
    let ended = match decrypted {
        Decrypted::More => wire.is_empty(),
        Decrypted::Closed => true,
        Decrypted::Failed(msg) => return Err(Failure::Tls(msg)),
    };
    if ended {
        completed +=
            count_responses(c, totals, proto, message, None, now).map_err(Failure::Protocol)?;
    }
    Ok((completed, ended))
}

/// Count the responses in `data` (`None`: the server closed the connection)
/// on connection `c`, received at `now`; returns how many completed.
fn count_responses(
    c: &mut Conn,
    totals: &mut Totals,
    proto: Proto,
    message: &[u8],
    data: Option<&[u8]>,
    now: Instant,
) -> Result<usize, ProtocolError> {
    let mut completed = 0;
    let mut unexpected = false;
    let in_flight = &mut c.in_flight;
    let mut on_response = |status: u16| match in_flight.pop_front() {
        Some(sent) => {
            completed += 1;
            totals.requests += 1;
            totals.status_counts[usize::from(status)] += 1;
            let ns = now.saturating_duration_since(sent).as_nanos() as u64;
            totals.latency.saturating_record(ns.max(1));
            if status >= 400 {
                totals.errors.status += 1;
            }
        }
        None => unexpected = true,
    };
    match (proto, data) {
        (Proto::Http, Some(data)) => {
            let fed = c.http.feed(data, &mut on_response);
            totals.body_bytes += c.http.take_body_bytes();
            fed?
        }
        (Proto::Http, None) => {
            c.http.end_of_stream(&mut on_response);
        }
        (Proto::Echo, Some(data)) => {
            c.echo.feed(message, data, &mut on_response)?;
            totals.body_bytes += data.len() as u64;
        }
        (Proto::Echo, None) => {}
    }
    c.responses_here += completed as u64;
    if unexpected {
        return Err(ProtocolError(
            "a response arrived with no request in flight".into(),
        ));
    }
    Ok(completed)
}
