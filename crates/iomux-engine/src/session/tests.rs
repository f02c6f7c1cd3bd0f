//! The connection rules, one table row each, with a scripted protocol and a
//! made-up clock: no sockets.

use super::*;
use iomux_proto::{Protocol, Step};
use std::time::Duration;

/// A protocol that answers each line with the line and holds partial lines:
/// between messages exactly when no partial line is held.
#[derive(Default)]
struct Lines {
    partial: bool,
    timeouts: usize,
    eofs: usize,
    drains: usize,
    /// Claim to consume this many bytes more than given (a broken protocol).
    overclaim: usize,
    /// Ask to close after the first line.
    close_after_line: bool,
}

impl Protocol for Lines {
    fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>) -> Step {
        let consumed = input.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        out.extend_from_slice(&input[..consumed]);
        self.partial = consumed < input.len();
        Step {
            consumed: consumed + self.overclaim,
            close: self.close_after_line && consumed > 0,
        }
    }
    fn on_eof(&mut self, _pending: &[u8], out: &mut Vec<u8>) {
        self.eofs += 1;
        out.extend_from_slice(b"bye\n");
    }
    fn on_timeout(&mut self, out: &mut Vec<u8>) {
        self.timeouts += 1;
        out.extend_from_slice(b"timeout\n");
    }
    fn on_drain(&mut self) {
        self.drains += 1;
    }
    fn is_idle(&self) -> bool {
        !self.partial
    }
}

const IDLE: Duration = Duration::from_secs(10);
const HIGH: usize = 100;
/// Bytes a second a message in progress must arrive at: 50 per period.
const MIN_RATE: u32 = 5;

fn rules() -> Rules {
    Rules {
        idle_timeout: IDLE,
        min_rate: MIN_RATE,
        output_high_water: HIGH,
        max_pending_input: 64,
        max_output: 300,
    }
}

struct Harness {
    s: Session<Lines>,
    pool: BufPool,
    commands: Vec<Command>,
    rules: Rules,
    t0: Instant,
}

/// The harness's [`Env`] at `$secs` seconds after its start.
macro_rules! env {
    ($h:ident, $secs:expr) => {
        Env {
            now: $h.at($secs),
            rules: &$h.rules,
            pool: &mut $h.pool,
            commands: &mut $h.commands,
            blocking: None,
        }
    };
}

impl Harness {
    fn new(proto: Lines) -> Harness {
        let t0 = Instant::now();
        Harness {
            s: Session::new(proto, ConnId::new(0, 2), t0),
            pool: BufPool::new(4, 64),
            commands: Vec::new(),
            rules: rules(),
            t0,
        }
    }
    fn at(&self, secs: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(secs)
    }
    /// Receive `data` at `secs`, answers into the session's own output.
    fn recv(&mut self, data: &[u8], secs: f64) -> Result<(), Fault> {
        let mut env = env!(self, secs);
        self.s.on_received(data, None, &mut env)
    }
    /// The peer took `n` bytes; true when reading resumed.
    fn sent(&mut self, n: usize, secs: f64) -> bool {
        let mut env = env!(self, secs);
        self.s.on_sent(n, None, &mut env).unwrap().resumed
    }
    /// When the idle deadline falls, in seconds from the start.
    fn deadline_secs(&self) -> f64 {
        (self.s.deadline(&rules()) - self.t0).as_secs_f64()
    }
}

#[test]
fn the_idle_deadline_moves_only_with_whole_messages() {
    // (what happens, at second, expected deadline in seconds after the start)
    let rows: &[(&[u8], f64, f64)] = &[
        (b"hello\n", 1.0, 11.0), // a whole message: active
        (b"par", 2.0, 12.0),     // a message starts: the head deadline starts here
        (b"t", 5.0, 12.0),       // trickled bytes do not extend it
        (b"ia", 9.0, 12.0),
        (b"l\n", 11.0, 21.0), // the message completes: active again
    ];
    let mut h = Harness::new(Lines::default());
    for (i, &(data, at, deadline)) in rows.iter().enumerate() {
        h.recv(data, at).unwrap();
        // The peer takes its answers at once, with no time of its own.
        let owed = h.s.owed();
        h.sent(owed, at);
        assert_eq!(h.deadline_secs(), deadline, "row {i}");
    }
}

#[test]
fn a_peer_that_leaves_its_output_untaken_cannot_stay_alive_by_sending() {
    let mut h = Harness::new(Lines::default());
    h.recv(b"a\n", 1.0).unwrap();
    assert_eq!(h.s.owed(), 2);
    h.recv(b"b\n", 5.0).unwrap();
    assert_eq!(
        h.deadline_secs(),
        11.0,
        "input while output is owed is no activity"
    );
    // Taking a few bytes of output does not count either (a slow reader)...
    h.sent(1, 6.0);
    assert_eq!(h.deadline_secs(), 11.0);
    // ...taking all of it does.
    h.sent(3, 7.0);
    assert_eq!(h.deadline_secs(), 17.0);
}

#[test]
fn a_slow_reader_extends_its_deadline_only_per_high_water_mark_taken() {
    let mut h = Harness::new(Lines::default());
    // 250 bytes refused from the shared buffer at second 0: owed.
    h.s.keep_unsent(&[b'x'; 250], &mut env!(h, 0.0));
    assert_eq!(h.s.owed(), 250);
    for (sent, at, deadline) in [
        (40, 1.0, 10.0),
        (40, 2.0, 10.0),
        (40, 3.0, 13.0),
        (10, 4.0, 13.0),
    ] {
        h.sent(sent, at);
        assert_eq!(h.deadline_secs(), deadline, "after {sent} more at {at}");
    }
    h.sent(120, 5.0);
    assert_eq!(h.deadline_secs(), 15.0, "all taken");
}

#[test]
fn unconsumed_input_past_the_cap_is_a_fault_and_an_impossible_consumed_count_too() {
    let mut h = Harness::new(Lines::default());
    assert_eq!(h.recv(&[b'y'; 64], 0.0), Ok(()), "at the cap");
    assert_eq!(h.recv(b"y", 0.0), Err(Fault::InputCap), "past it");

    let mut h = Harness::new(Lines {
        overclaim: 1,
        ..Lines::default()
    });
    assert_eq!(
        h.recv(b"a\n", 0.0),
        Err(Fault::Overconsumed),
        "with no input held"
    );
    let mut h = Harness::new(Lines::default());
    h.recv(b"part", 0.0).unwrap();
    h.s.proto.overclaim = 5;
    assert_eq!(
        h.recv(b"\n", 0.0),
        Err(Fault::Overconsumed),
        "with input held"
    );
}

#[test]
fn backpressure_pauses_at_the_high_water_mark_and_resumes_at_half() {
    let mut h = Harness::new(Lines::default());
    let line = [b"z".repeat(49), b"\n".to_vec()].concat();
    // (owed after the step, reading?)
    h.recv(&line, 0.0).unwrap();
    assert_eq!((h.s.owed(), h.s.reading()), (50, true));
    h.recv(&line, 0.0).unwrap();
    assert_eq!(
        (h.s.owed(), h.s.reading()),
        (100, false),
        "paused at the mark"
    );
    assert!(!h.s.wants().read && h.s.wants().write);
    assert!(!h.sent(49, 1.0), "51 owed: still paused");
    assert!(!h.s.reading());
    assert!(h.sent(1, 1.0), "50 owed, half the mark: resumes");
    assert!(h.s.reading());
    // Bytes that arrive while paused (a completion engine's receive was
    // already under way) are still taken, never lost.
    let mut p = Harness::new(Lines::default());
    p.recv(&line, 0.0).unwrap();
    p.recv(&line, 0.0).unwrap();
    p.recv(b"kept\n", 0.0).unwrap();
    assert_eq!(p.s.owed(), 105);
}

#[test]
fn output_refused_from_the_shared_buffer_stays_in_order_and_counts_toward_the_mark() {
    let mut h = Harness::new(Lines::default());
    let mut shared = Vec::new();
    h.s.on_received(b"one\n", Some(&mut shared), &mut env!(h, 0.0))
        .unwrap();
    assert_eq!(
        (shared.as_slice(), h.s.owed()),
        (&b"one\n"[..], 0),
        "answers go to the shared buffer"
    );
    // The kernel takes 1 of 4 bytes: the rest stays with the session.
    h.s.on_sent(1, Some(shared.len()), &mut env!(h, 0.0))
        .unwrap();
    h.s.keep_unsent(&shared[1..], &mut env!(h, 0.0));
    shared.clear();
    h.s.on_received(b"two\n", Some(&mut shared), &mut env!(h, 0.0))
        .unwrap();
    assert!(
        shared.is_empty(),
        "behind owed output, answers queue in the session"
    );
    assert_eq!(h.s.unsent(), b"ne\ntwo\n");
}

#[test]
fn a_close_after_an_error_response_sends_it_then_lingers() {
    let mut h = Harness::new(Lines {
        close_after_line: true,
        ..Lines::default()
    });
    h.recv(b"bad\nmore\n", 1.0).unwrap();
    assert_eq!(h.s.unsent(), b"bad\nmore\n");
    assert!(!h.s.wants().read, "no input after the close");
    h.recv(b"ignored\n", 1.0).unwrap();
    assert!(!h.s.ready_to_finish(), "output still owed");
    h.sent(9, 2.0);
    assert!(h.s.ready_to_finish());
    let now = h.at(2.0);
    assert_eq!(h.s.finish(now, &mut h.pool), Finish::Linger);
    assert!(h.s.wants().read, "lingering: input is read and discarded");
    assert_eq!(h.deadline_secs(), 2.0 + LINGER.as_secs_f64());
    assert_eq!(h.s.on_deadline(None, &mut env!(h, 4.0)), Deadline::Close);
}

#[test]
fn the_peers_end_gets_a_last_answer_and_no_linger() {
    let mut h = Harness::new(Lines::default());
    h.recv(b"half", 1.0).unwrap();
    h.s.on_eof(None, &mut env!(h, 1.0)).unwrap();
    assert_eq!(h.s.proto.eofs, 1);
    assert_eq!(h.s.unsent(), b"bye\n");
    h.sent(4, 1.0);
    let now = h.at(1.0);
    assert_eq!(
        h.s.finish(now, &mut h.pool),
        Finish::Close,
        "the peer already ended"
    );
}

#[test]
fn a_timed_out_connection_gets_its_last_word_and_lives_one_linger_more_not_another_idle_period() {
    let mut h = Harness::new(Lines::default());
    h.recv(b"a\n", 0.0).unwrap(); // never taken: a slow reader
    assert_eq!(
        h.s.on_deadline(None, &mut env!(h, 5.0)),
        Deadline::Later(h.at(10.0))
    );
    assert_eq!(
        h.s.on_deadline(None, &mut env!(h, 10.0)),
        Deadline::TimedOut
    );
    assert_eq!(h.s.proto.timeouts, 1);
    assert_eq!(h.s.unsent(), b"a\ntimeout\n");
    assert_eq!(h.deadline_secs(), 10.0 + LINGER.as_secs_f64());
    assert_eq!(
        h.s.on_deadline(None, &mut env!(h, 10.0 + LINGER.as_secs_f64())),
        Deadline::Close
    );
    assert_eq!(h.s.proto.timeouts, 1, "one last word");
}

#[test]
fn a_drain_tells_the_protocol_and_closes_only_between_messages_owing_nothing_after_quiet() {
    let quiet = DRAIN_QUIET.as_secs_f64();
    let mut h = Harness::new(Lines::default());
    h.s.begin_drain();
    assert_eq!(h.s.proto.drains, 1);
    // (state set-up, at, input waiting in the socket, closable?)
    assert!(
        !h.s.closable_on_drain(h.at(quiet / 2.0), || false),
        "not quiet long enough"
    );
    assert!(h.s.closable_on_drain(h.at(quiet), || false));
    assert!(
        !h.s.closable_on_drain(h.at(quiet), || true),
        "bytes wait unread"
    );
    h.recv(b"par", 1.0).unwrap();
    assert!(
        !h.s.closable_on_drain(h.at(9.0), || false),
        "in the middle of a message"
    );
    h.recv(b"t\n", 1.0).unwrap();
    assert!(!h.s.closable_on_drain(h.at(9.0), || false), "owes output");
    h.sent(5, 1.0);
    assert!(h.s.closable_on_drain(h.at(9.0), || false));
    let now = h.at(9.0);
    h.s.finish(now, &mut h.pool);
    assert!(
        !h.s.closable_on_drain(h.at(99.0), || false),
        "lingering closes on its own"
    );
}

#[test]
fn a_completion_engine_hands_output_out_and_counts_it_owed_until_confirmed() {
    let mut h = Harness::new(Lines::default());
    h.recv(b"abc\n", 0.0).unwrap();
    let mut in_flight = Vec::new();
    h.s.hand_out(&mut in_flight);
    assert_eq!(
        (in_flight.as_slice(), h.s.owed(), h.s.unsent()),
        (&b"abc\n"[..], 4, &b""[..])
    );
    h.recv(b"de\n", 0.0).unwrap();
    assert_eq!(h.s.owed(), 7, "in flight plus queued");
    h.sent(4, 1.0);
    assert_eq!((h.s.owed(), h.s.unsent()), (3, &b"de\n"[..]));
}

/// A service that uses the context: greets on open, sets and cancels
/// timers, sends to another connection, and can be made to panic.
#[derive(Default)]
struct Chat {
    panic_on_data: bool,
    drained: usize,
    closed: Vec<ConnId>,
}

impl Service for Chat {
    fn on_open(&mut self, cx: &mut Context) {
        cx.write(b"welcome\n");
        cx.set_timer(7, Duration::from_secs(1));
    }
    fn on_data(&mut self, input: &[u8], cx: &mut Context) -> Step {
        assert!(!self.panic_on_data, "a bug in the protocol");
        cx.send_to(ConnId::new(1, 9), input);
        cx.cancel_timer(7);
        Step::keep(input.len())
    }
    fn on_timer(&mut self, key: u64, cx: &mut Context) {
        cx.write(format!("timer {key}\n").as_bytes());
    }
    fn on_drained(&mut self, _cx: &mut Context) {
        self.drained += 1;
    }
    fn on_close(&mut self, id: ConnId) {
        self.closed.push(id);
    }
}

/// What the sessions of a test share with their loop: the rules, a buffer
/// pool, the commands they issue, and the time.
struct World {
    rules: Rules,
    pool: BufPool,
    commands: Vec<Command>,
    now: Instant,
}

impl World {
    fn new() -> World {
        World {
            rules: rules(),
            pool: BufPool::new(1, 64),
            commands: Vec::new(),
            now: Instant::now(),
        }
    }

    /// The environment a session's calls get, at `self.now`.
    fn env(&mut self) -> Env<'_> {
        Env {
            now: self.now,
            rules: &self.rules,
            pool: &mut self.pool,
            commands: &mut self.commands,
            blocking: None,
        }
    }
}

#[test]
fn a_service_writes_on_open_and_its_commands_reach_the_loop() {
    let mut w = World::new();
    let me = ConnId::new(0, 4);
    let mut s = Session::new(Chat::default(), me, w.now);
    s.on_open(None, &mut w.env()).unwrap();
    assert_eq!(s.unsent(), b"welcome\n");
    assert_eq!(
        w.commands,
        vec![Command::SetTimer {
            key: 7,
            after: Duration::from_secs(1)
        }]
    );
    w.commands.clear();
    s.on_received(b"hi", None, &mut w.env()).unwrap();
    assert_eq!(
        w.commands,
        vec![
            Command::Send {
                to: ConnId::new(1, 9),
                bytes: b"hi".to_vec()
            },
            Command::CancelTimer(7)
        ]
    );
    s.on_timer(7, None, &mut w.env()).unwrap();
    assert_eq!(s.unsent(), b"welcome\ntimer 7\n");
    let timers: Vec<_> = s.release(&mut w.pool, &mut Vec::new()).collect();
    assert!(timers.is_empty());
    assert_eq!(s.proto.closed, vec![me], "told once it is gone");
}

#[test]
fn a_panic_in_the_protocol_is_a_fault_of_its_connection_only() {
    let mut w = World::new();
    let mut s = Session::new(
        Chat {
            panic_on_data: true,
            ..Chat::default()
        },
        ConnId::new(0, 4),
        w.now,
    );
    // Quiet the default hook's report for this expected panic.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = s.on_received(b"x", None, &mut w.env());
    std::panic::set_hook(hook);
    assert_eq!(result, Err(Fault::Panicked));
}

#[test]
fn output_from_other_connections_is_capped_and_drained_output_is_told() {
    let mut w = World::new();
    let mut s = Session::new(Chat::default(), ConnId::new(0, 4), w.now);
    let mut env = w.env();
    assert!(s.push_output(&[b'm'; 200], &mut env));
    assert!(!s.reading(), "over the high-water mark: paused");
    assert!(s.push_output(&[b'm'; 100], &mut env), "at the cap");
    assert!(
        !s.push_output(b"m", &mut env),
        "past max_output: the loop disconnects it"
    );
    let sent = s.on_sent(250, None, &mut env).unwrap();
    assert!(sent.resumed, "50 owed: below half the mark");
    assert!(!s.take_due(), "no notice asked");
    s.call(None, &mut env, |_, cx| cx.notify_when_drained())
        .unwrap();
    assert!(!s.take_due(), "asked, but 50 are owed");
    s.on_sent(50, None, &mut env).unwrap();
    assert_eq!(s.proto.drained, 0, "never within the send");
    assert!(s.take_due(), "all sent: due next pass");
    assert!(!s.take_due(), "listed once");
    assert_eq!(s.run_due(None, &mut env), Ok(false));
    assert_eq!(s.proto.drained, 1, "told once");
    assert!(!s.take_due(), "one notice per request");
    s.call(None, &mut env, |_, cx| cx.notify_when_drained())
        .unwrap();
    assert!(s.take_due(), "nothing owed: due at once, without a send");
    s.run_due(None, &mut env).unwrap();
    assert_eq!(s.proto.drained, 2);
}

/// Holds its input while an answer is outstanding (`hold` set), and
/// records what it was offered.
#[derive(Default)]
struct Deferring {
    offered: Vec<Vec<u8>>,
    hold: bool,
    eof: Option<Vec<u8>>,
    drained: usize,
}

impl Service for Deferring {
    fn on_data(&mut self, input: &[u8], cx: &mut Context) -> Step {
        self.offered.push(input.to_vec());
        // Takes one line, then holds the rest until released.
        let line = input.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
        if self.hold {
            cx.hold_input();
        }
        Step::keep(line)
    }
    fn on_eof(&mut self, pending: &[u8], _cx: &mut Context) {
        self.eof = Some(pending.to_vec());
    }
    fn on_drained(&mut self, _cx: &mut Context) {
        self.drained += 1;
    }
}

#[test]
fn a_drained_notice_is_given_while_input_is_held() {
    let mut w = World::new();
    let mut s = holding(&w);
    let mut env = w.env();
    s.on_received(b"a\nb\n", None, &mut env).unwrap();
    s.call(None, &mut env, |_, cx| cx.notify_when_drained())
        .unwrap();
    assert!(s.take_due());
    assert_eq!(s.run_due(None, &mut env), Ok(false));
    assert_eq!(s.proto.drained, 1);
    assert!(!s.take_due(), "nothing more is due while held");
    assert_eq!(s.proto.offered.len(), 1, "still held");
}

/// A session whose service holds its input after the first line.
fn holding(w: &World) -> Session<Deferring> {
    let deferring = Deferring {
        hold: true,
        ..Default::default()
    };
    Session::new(deferring, ConnId::new(0, 4), w.now)
}

#[test]
fn held_input_stops_reading_at_the_cap_and_is_offered_again_once_released() {
    let mut w = World::new();
    let cap = w.rules.max_pending_input;
    let mut s = holding(&w);
    let mut env = w.env();
    s.on_received(b"one\ntw", None, &mut env).unwrap();
    assert_eq!(s.proto.offered, [b"one\ntw".to_vec()]);
    s.on_received(b"o\n", None, &mut env).unwrap();
    assert_eq!(s.proto.offered.len(), 1, "held: not offered");
    assert!(!s.take_due(), "nothing released");
    let more = vec![b'x'; cap];
    assert_eq!(
        s.on_received(&more, None, &mut env),
        Ok(()),
        "no fault at the cap"
    );
    assert!(!s.reading(), "at the cap: reading stops");
    assert!(!s.is_closing());
    s.proto.hold = false;
    s.call(None, &mut env, |_, cx| cx.release_input()).unwrap();
    assert!(s.reading(), "released: reading again");
    assert_eq!(
        s.proto.offered.len(),
        1,
        "not within the call that released"
    );
    assert!(s.take_due());
    assert_eq!(s.run_due(None, &mut env), Ok(true), "reading resumed");
    assert_eq!(s.proto.offered.len(), 2);
    let mut again = b"two\n".to_vec();
    again.extend_from_slice(&more);
    assert_eq!(
        s.proto.offered[1], again,
        "everything held, with no new bytes"
    );
}

#[test]
fn a_fin_that_comes_while_input_is_held_is_told_after_the_held_input() {
    let mut w = World::new();
    let mut s = holding(&w);
    let mut env = w.env();
    s.on_received(b"a\nb\n", None, &mut env).unwrap();
    s.on_eof(None, &mut env).unwrap();
    assert_eq!(s.proto.eof, None, "held");
    assert!(!s.is_closing());
    s.proto.hold = false;
    s.call(None, &mut env, |_, cx| cx.release_input()).unwrap();
    assert!(s.take_due());
    assert_eq!(
        s.run_due(None, &mut env),
        Ok(false),
        "its peer sends no more"
    );
    assert_eq!(s.proto.offered, [b"a\nb\n".to_vec(), b"b\n".to_vec()]);
    assert_eq!(s.proto.eof, Some(Vec::new()), "then the FIN");
    assert!(s.is_closing());
}

/// Answers each line with 30 bytes, and stops at the engine's output mark
/// as a service answering pipelined input should.
#[derive(Default)]
struct Answering {
    answered: usize,
    eof_after: Option<usize>,
}

impl Service for Answering {
    fn on_data(&mut self, input: &[u8], cx: &mut Context) -> Step {
        let mut at = 0;
        while let Some(end) = input[at..].iter().position(|&b| b == b'\n') {
            at += end + 1;
            cx.write(&[b'a'; 30]);
            self.answered += 1;
            if cx.output_full() {
                break;
            }
        }
        Step::keep(at)
    }
    fn on_eof(&mut self, _pending: &[u8], _cx: &mut Context) {
        self.eof_after = Some(self.answered);
    }
}

#[test]
fn answers_stop_at_the_output_mark_and_the_input_is_offered_again_as_the_peer_reads() {
    let mut w = World::new();
    let mut s = Session::new(Answering::default(), ConnId::new(0, 4), w.now);
    let mut env = w.env();
    // Ten requests in one read ask for 300 bytes; the mark is 100.
    s.on_received(&b"x\n".repeat(10), None, &mut env).unwrap();
    s.on_eof(None, &mut env).unwrap();
    assert_eq!(s.proto.answered, 4, "120 owed: it stopped");
    assert_eq!(s.owed(), 120);
    assert!(!s.reading());
    assert_eq!(s.proto.eof_after, None, "the FIN waits behind the requests");
    assert!(!s.take_due(), "nothing is due while the peer owes");
    s.on_sent(60, None, &mut env).unwrap();
    assert!(!s.take_due(), "60 owed: above half the mark");
    s.on_sent(20, None, &mut env).unwrap();
    assert!(s.take_due(), "40 owed: answered on in the next pass");
    s.run_due(None, &mut env).unwrap();
    assert_eq!(
        s.proto.answered, 6,
        "room for 60: two more, with no new bytes"
    );
    assert_eq!(s.proto.eof_after, None);
    // The peer reads on; the rest is answered, then the FIN is told.
    for _ in 0..10 {
        let owed = s.owed();
        s.on_sent(owed, None, &mut env).unwrap();
        if s.take_due() {
            s.run_due(None, &mut env).unwrap();
        }
    }
    assert_eq!(s.proto.answered, 10);
    assert_eq!(s.proto.eof_after, Some(10));
    assert!(s.is_closing());
}

#[test]
fn answers_gathered_in_the_shared_buffer_stop_at_the_mark_too() {
    let mut w = World::new();
    let mut s = Session::new(Answering::default(), ConnId::new(0, 4), w.now);
    let mut env = w.env();
    let mut shared = Vec::new();
    s.on_received(&b"x\n".repeat(10), Some(&mut shared), &mut env)
        .unwrap();
    assert_eq!((s.proto.answered, shared.len()), (4, 120));
    assert!(
        !s.reading(),
        "nothing owed yet, but the answers wait to be sent"
    );
    // The kernel takes the whole shared buffer: answered on next pass.
    s.on_sent(120, Some(120), &mut env).unwrap();
    assert!(s.take_due());
    let mut shared = Vec::new();
    assert_eq!(
        s.run_due(Some(&mut shared), &mut env),
        Ok(false),
        "stopped again"
    );
    assert_eq!((s.proto.answered, shared.len()), (8, 120));
}

#[test]
fn the_protocol_is_told_when_its_unconsumed_input_reaches_the_cap() {
    #[derive(Default)]
    struct Hoarder {
        told: bool,
    }
    impl Service for Hoarder {
        fn on_data(&mut self, _input: &[u8], _cx: &mut Context) -> Step {
            Step::keep(0)
        }
        fn on_input_cap(&mut self, cx: &mut Context) {
            self.told = true;
            cx.write(b"too much\n");
        }
    }
    let mut w = World::new();
    let mut s = Session::new(Hoarder::default(), ConnId::new(0, 4), w.now);
    let mut env = w.env();
    assert_eq!(s.on_received(&[0; 64], None, &mut env), Ok(()));
    assert_eq!(s.on_received(&[0; 1], None, &mut env), Err(Fault::InputCap));
    assert!(s.proto.told);
    assert_eq!(s.unsent(), b"too much\n", "its last word is still sent");
    assert!(!s.reading());
}

/// A proxy side: echoes input back (so output after our FIN shows), may
/// allow half-close, records what it is told.
#[derive(Default)]
struct Relay {
    half_close: bool,
    eofs: usize,
    opened_by: Option<Option<ConnId>>,
    connects: Vec<(u64, std::io::ErrorKind)>,
    closed: usize,
}

impl Service for Relay {
    fn on_open(&mut self, cx: &mut Context) {
        self.opened_by = Some(cx.opened_by());
        if self.half_close {
            cx.allow_half_close();
        }
    }
    fn on_data(&mut self, input: &[u8], cx: &mut Context) -> Step {
        cx.write(input);
        Step::keep(input.len())
    }
    fn on_eof(&mut self, _pending: &[u8], _cx: &mut Context) {
        self.eofs += 1;
    }
    fn on_connect(&mut self, tag: u64, result: std::io::Result<ConnId>, _cx: &mut Context) {
        self.connects.push((
            tag,
            result.map_or_else(|e| e.kind(), |_| std::io::ErrorKind::Other),
        ));
    }
    fn on_close(&mut self, _id: ConnId) {
        self.closed += 1;
    }
}

/// A relay session (connection 0.5), opened in `env`'s world; what it
/// issues on opening is dropped.
fn relay(half_close: bool, env: &mut Env) -> Session<Relay> {
    let mut s = Session::new(
        Relay {
            half_close,
            ..Relay::default()
        },
        ConnId::new(0, 5),
        env.now,
    );
    let mut opened = Env {
        commands: &mut Vec::new(),
        blocking: None,
        pool: env.pool,
        ..*env
    };
    s.on_open(None, &mut opened).unwrap();
    s
}

#[test]
fn with_half_close_allowed_the_peers_fin_leaves_the_connection_open_for_writing() {
    let mut w = World::new();
    let mut env = w.env();
    // (half-close allowed?, closing after the peer's FIN?)
    for (allowed, closes) in [(false, true), (true, false)] {
        let mut s = relay(allowed, &mut env);
        s.on_eof(None, &mut env).unwrap();
        assert_eq!(s.proto.eofs, 1);
        assert_eq!(s.ready_to_finish(), closes, "allowed: {allowed}");
        assert!(!s.wants().read, "nothing more to read either way");
        if !allowed {
            continue;
        }
        // Still written to (a proxy's other side), then it ends its side too.
        assert!(s.push_output(b"late", &mut env));
        s.request_shutdown_write();
        assert!(!s.ready_to_finish(), "its output goes first");
        s.on_sent(4, None, &mut env).unwrap();
        assert!(s.ready_to_finish());
        assert_eq!(
            s.finish(env.now, env.pool),
            Finish::Close,
            "both sides ended"
        );
    }
}

#[test]
fn a_shutdown_of_our_side_sends_the_output_then_fin_and_reading_goes_on() {
    let mut w = World::new();
    let mut env = w.env();
    let mut s = relay(true, &mut env);
    assert!(s.push_output(b"0123456789", &mut env));
    s.request_shutdown_write();
    assert!(!s.ready_to_finish(), "10 bytes owed");
    s.on_sent(10, None, &mut env).unwrap();
    assert!(s.ready_to_finish());
    assert_eq!(s.finish(env.now, env.pool), Finish::ShutWrite);
    assert!(!s.ready_to_finish(), "once");
    assert!(s.reading(), "the other direction still flows");
    // Output after our FIN cannot be sent: dropped, not queued.
    s.on_received(b"echo me", None, &mut env).unwrap();
    assert!(s.push_output(b"more", &mut env));
    assert_eq!(s.owed(), 0);
    // The peer's FIN ends the other direction: close now.
    s.on_eof(None, &mut env).unwrap();
    assert!(s.ready_to_finish());
    assert_eq!(s.finish(env.now, env.pool), Finish::Close);
}

#[test]
fn a_forward_past_the_high_water_mark_pauses_its_writer_until_half_is_sent() {
    let mut w = World::new();
    let mut env = w.env();
    let mut target = relay(false, &mut env);
    let writer = ConnId::new(0, 9);
    let forward = |n: usize| Command::Forward {
        from: writer,
        to: ConnId::new(0, 5),
        bytes: vec![b'f'; n],
    };
    assert_eq!(target.apply(forward(60), &mut env), Applied::Done);
    assert!(env.commands.is_empty(), "60 owed: under the mark");
    assert_eq!(target.apply(forward(60), &mut env), Applied::Done);
    assert_eq!(*env.commands, [Command::PauseReading(writer)]);
    assert!(target.reading(), "fed by forwards: its own reading goes on");
    env.commands.clear();
    target.on_sent(60, None, &mut env).unwrap();
    assert!(env.commands.is_empty(), "60 owed: above half the mark");
    target.on_sent(10, None, &mut env).unwrap();
    assert_eq!(*env.commands, [Command::ResumeReading(writer)]);
    env.commands.clear();
    target.on_sent(50, None, &mut env).unwrap();
    assert!(env.commands.is_empty(), "resumed once");
    // Past max_output even a forward is an overflow (the loop disconnects).
    assert_eq!(target.apply(forward(301), &mut env), Applied::Overflow);
}

#[test]
fn a_gone_connection_resumes_its_waiting_writers_and_closes_its_links() {
    let mut w = World::new();
    let mut env = w.env();
    let mut s = relay(false, &mut env);
    let (writer, partner) = (ConnId::new(0, 9), ConnId::new(1, 3));
    let forward = Command::Forward {
        from: writer,
        to: ConnId::new(0, 5),
        bytes: vec![0; 150],
    };
    s.apply(forward, &mut env);
    s.apply(
        Command::Link {
            from: partner,
            to: ConnId::new(0, 5),
        },
        &mut env,
    );
    let mut told = Vec::new();
    assert_eq!(s.release(env.pool, &mut told).count(), 0, "no timers");
    assert_eq!(
        told,
        [Command::Close(partner), Command::ResumeReading(writer)]
    );
    assert_eq!(s.proto.closed, 1);
}

#[test]
fn pause_and_resume_hold_reading_and_say_when_it_resumes() {
    let mut w = World::new();
    let mut env = w.env();
    let mut s = relay(false, &mut env);
    let id = ConnId::new(0, 5);
    assert_eq!(
        s.apply(Command::ResumeReading(id), &mut env),
        Applied::Done,
        "not held"
    );
    s.apply(Command::PauseReading(id), &mut env);
    assert!(!s.reading() && !s.wants().read);
    assert_eq!(
        s.apply(Command::ResumeReading(id), &mut env),
        Applied::Resumed
    );
    assert!(s.reading());
}

#[test]
fn an_outgoing_connection_opens_once_established_and_learns_who_asked() {
    let mut w = World::new();
    let now = w.now;
    let asker = ConnId::new(0, 2);
    let addr = "127.0.0.1:9".parse().unwrap();
    let connect = Connecting::new(asker, 7, addr, Duration::from_secs(2), now);
    let mut s = Session::connecting(Relay::default(), ConnId::new(0, 3), now, connect);
    assert!(s.is_connecting() && !s.reading());
    assert_eq!(
        s.deadline(&w.rules),
        now + Duration::from_secs(2),
        "the connect's"
    );
    w.now = now + Duration::from_secs(1);
    let mut env = w.env();
    assert_eq!(
        s.on_deadline(None, &mut env),
        Deadline::Later(now + Duration::from_secs(2))
    );
    let (told, opened) = s.open_outgoing(&mut env);
    opened.unwrap();
    assert_eq!((told.asker, told.tag), (asker, 7));
    assert_eq!(s.proto.opened_by, Some(Some(asker)));
    assert!(s.reading());
    assert_eq!(
        s.deadline(&w.rules),
        now + Duration::from_secs(1) + IDLE,
        "idle from now"
    );

    // One that never connects times out, and was never open: no on_close.
    let mut s = Session::connecting(Relay::default(), ConnId::new(0, 4), now, connect);
    w.now = now + Duration::from_secs(2);
    let mut env = w.env();
    assert_eq!(s.on_deadline(None, &mut env), Deadline::ConnectTimedOut);
    drop(s.release(env.pool, &mut Vec::new()));
    assert_eq!((s.proto.opened_by, s.proto.closed), (None, 0));
    let e = connect.failed(std::io::ErrorKind::TimedOut.into());
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    assert!(
        e.to_string().contains("127.0.0.1:9 timed out after 2s"),
        "{e}"
    );
    let e = connect.failed(std::io::ErrorKind::ConnectionRefused.into());
    assert!(e.to_string().contains("nothing listens"), "{e}");
}

#[test]
fn without_a_loop_a_connect_is_answered_unsupported_and_every_command_counted() {
    let mut w = World::new();
    let mut env = w.env();
    let mut s = relay(false, &mut env);
    env.commands.push(Command::Connect {
        addr: "127.0.0.1:9".parse().unwrap(),
        timeout: Duration::from_secs(1),
        tag: 4,
    });
    env.commands.push(Command::Close(ConnId::new(0, 5)));
    let (refused, told) = s.refuse_commands(&mut env);
    told.unwrap();
    assert_eq!(refused, 2);
    assert!(env.commands.is_empty());
    assert_eq!(s.proto.connects, [(4, std::io::ErrorKind::Unsupported)]);
}

/// Answers each line with `<`, the first `len` bytes of its file, `>`.
struct FileSender {
    file: std::sync::Arc<std::fs::File>,
    len: u64,
}

impl Service for FileSender {
    fn on_data(&mut self, input: &[u8], cx: &mut Context) -> Step {
        for _ in input.iter().filter(|&&b| b == b'\n') {
            cx.write(b"<");
            cx.send_file(FileRegion::new(self.file.clone(), 0, self.len));
            cx.write(b">");
        }
        Step::keep(input.len())
    }
}

#[test]
fn file_regions_are_owed_but_only_bytes_count_against_the_memory_cap() {
    let file = std::sync::Arc::new(std::fs::File::open("/dev/null").unwrap());
    let mut s = Session::new(
        FileSender { file, len: 1000 },
        ConnId::new(0, 2),
        Instant::now(),
    );
    let (mut pool, mut commands, rules) = (BufPool::new(4, 64), Vec::new(), rules());
    let mut env = Env {
        now: Instant::now(),
        rules: &rules,
        pool: &mut pool,
        commands: &mut commands,
        blocking: None,
    };
    // Answered into the loop's shared buffer: a region moves it all to the
    // session's own queue, in order.
    let mut shared = b"earlier ".to_vec();
    s.on_received(b"a\n", Some(&mut shared), &mut env).unwrap();
    assert!(shared.is_empty(), "the gathered bytes moved to the queue");
    assert_eq!(s.owed(), 8 + 1 + 1000 + 1);
    match s.front() {
        Some(Front::Bytes { bytes, more }) => assert_eq!((bytes, more), (&b"earlier <"[..], true)),
        other => panic!("{other:?}"),
    }
    assert!(
        !s.reading(),
        "a region is owed like bytes: past the high-water mark reading pauses"
    );
    // The memory cap (300) counts bytes only: 10 held, 250 more fit.
    assert!(s.push_output(&[b'x'; 250], &mut env));
    assert!(
        !s.push_output(&[b'x'; 50], &mut env),
        "past the cap in memory"
    );
    // The kernel takes the head, then the region, then the rest.
    assert!(s.queues_file(), "a flush of this queue goes uncorked");
    s.on_sent(9, None, &mut env).unwrap();
    assert!(matches!(s.front(), Some(Front::File(r)) if r.len() == 1000));
    s.on_sent(600, None, &mut env).unwrap();
    assert!(matches!(s.front(), Some(Front::File(r)) if r.offset() == 600 && r.len() == 400));
    assert!(s.queues_file());
    s.on_sent(400, None, &mut env).unwrap();
    assert!(!s.queues_file(), "only bytes are left");
    assert_eq!(s.unsent().len(), 1 + 250);
    assert_eq!(s.owed(), 251);
}

/// A message of `length` bytes, taken as it arrives (as a body is), its
/// bytes echoed back when `echo` (as POST /echo does); a subscriber-like
/// wait for others when `exempt`.
#[derive(Default)]
struct Upload {
    length: usize,
    received: usize,
    echo: bool,
    exempt: bool,
    timeouts: usize,
    closed: usize,
}

impl Service for Upload {
    fn on_data(&mut self, input: &[u8], cx: &mut Context) -> Step {
        self.received += input.len();
        if self.echo {
            cx.write(input);
        }
        Step::keep(input.len())
    }
    fn on_timeout(&mut self, _cx: &mut Context) {
        self.timeouts += 1;
    }
    fn on_close(&mut self, _id: ConnId) {
        self.closed += 1;
    }
    fn is_idle(&self) -> bool {
        self.received == 0 || self.received >= self.length
    }
    fn exempt_from_idle_timeout(&self) -> bool {
        self.exempt
    }
}

/// Feed `s` `per_second` bytes every second from second 1 (each taken by
/// the peer at once when echoed), firing its deadline whenever it falls
/// due; returns the second it timed out, or `None` once `length` bytes
/// arrived in time.
fn upload_at(s: &mut Session<Upload>, w: &mut World, per_second: usize) -> Option<u64> {
    let t0 = w.now;
    for second in 1..1000u64 {
        w.now = t0 + Duration::from_secs(second);
        let mut env = w.env();
        if env.now >= s.deadline(env.rules) && s.on_deadline(None, &mut env) == Deadline::TimedOut {
            return Some(second);
        }
        if s.proto.received >= s.proto.length {
            return None;
        }
        s.on_received(&vec![b'x'; per_second], None, &mut env)
            .unwrap();
        let owed = s.owed();
        s.on_sent(owed, None, &mut env).unwrap();
    }
    panic!("neither finished nor timed out");
}

#[test]
fn a_message_in_progress_must_arrive_at_the_minimum_rate_whatever_its_size() {
    // (bytes a second, echoed?, the second it times out: None = completes)
    // A period is 10 s and needs 50 bytes; the message is 2,000 bytes.
    let rows: &[(usize, bool, Option<u64>)] = &[
        (5, false, None),     // exactly the rate: 400 s, kept all along
        (5, true, None),      // echoing does not change it
        (100, false, None),   // 20 s, over the idle timeout twice
        (4, false, Some(11)), // short of the rate: closed when the first period ends
        (1, false, Some(11)), // one byte a second
        (1, true, Some(11)),  // ... though each byte is answered and taken at once
    ];
    for (i, &(per_second, echo, outcome)) in rows.iter().enumerate() {
        let mut w = World::new();
        let proto = Upload {
            length: 2000,
            echo,
            ..Upload::default()
        };
        let mut s = Session::new(proto, ConnId::new(0, 6), w.now);
        assert_eq!(upload_at(&mut s, &mut w, per_second), outcome, "row {i}");
        assert_eq!(s.proto.timeouts, usize::from(outcome.is_some()), "row {i}");
    }
}

#[test]
fn with_no_minimum_rate_a_byte_each_period_keeps_a_message_going() {
    // A 20-byte message in a world with no minimum rate.
    let start = || {
        let mut w = World::new();
        w.rules.min_rate = 0;
        let proto = Upload {
            length: 20,
            ..Upload::default()
        };
        let s = Session::new(proto, ConnId::new(0, 6), w.now);
        (w, s)
    };
    let (mut w, mut s) = start();
    assert_eq!(upload_at(&mut s, &mut w, 1), None);
    // Silence for a whole period mid-message is not progress.
    let (mut w, mut s) = start();
    s.on_received(b"x", None, &mut w.env()).unwrap();
    w.now += IDLE;
    let next = w.now + IDLE;
    assert_eq!(s.on_deadline(None, &mut w.env()), Deadline::Later(next));
    w.now = next;
    assert_eq!(s.on_deadline(None, &mut w.env()), Deadline::TimedOut);
}

#[test]
fn a_service_waiting_for_others_is_not_idle_but_its_peer_must_take_its_output() {
    let mut w = World::new();
    let t0 = w.now;
    let proto = Upload {
        length: 1,
        exempt: true,
        ..Upload::default()
    };
    let mut s = Session::new(proto, ConnId::new(0, 6), t0);
    // Quiet for ten idle periods: each deadline starts another.
    for period in 1..=10u32 {
        w.now = t0 + IDLE * period;
        assert_eq!(
            s.on_deadline(None, &mut w.env()),
            Deadline::Later(w.now + IDLE),
            "period {period}"
        );
    }
    // Sent something its peer does not take: judged as anyone.
    assert!(s.push_output(b"message", &mut w.env()));
    w.now += IDLE;
    assert_eq!(s.on_deadline(None, &mut w.env()), Deadline::TimedOut);
    assert_eq!(s.proto.timeouts, 1);
}

#[test]
fn a_closing_connection_tells_its_service_at_once_and_only_once() {
    let mut w = World::new();
    // Closed by the service, by the engine (output overflow), by a timeout,
    // by the peer's FIN: heard as it begins closing, before its last output
    // is sent or it lingers, and not again when it is released.
    for way in 0..4 {
        let mut s = Session::new(Upload::default(), ConnId::new(0, 6), w.now);
        let mut env = w.env();
        assert!(s.push_output(b"last words", &mut env));
        match way {
            0 => {
                let applied = s.apply(Command::Close(ConnId::new(0, 6)), &mut env);
                assert_eq!(applied, Applied::Done);
            }
            1 => s.request_close(),
            2 => {
                env.now += IDLE;
                assert_eq!(s.on_deadline(None, &mut env), Deadline::TimedOut);
            }
            _ => s.on_eof(None, &mut env).unwrap(),
        }
        assert_eq!(s.proto.closed, 1, "way {way}: told as it begins closing");
        assert!(s.owed() > 0, "way {way}: before its last output is sent");
        assert!(s.push_output(b"dropped", &mut env), "way {way}");
        let _ = s.release(env.pool, env.commands).count();
        assert_eq!(s.proto.closed, 1, "way {way}: once");
    }
}

/// A session over TLS (its record layer to go to the kernel) and a rustls
/// client, handshaking in memory until both are done and nothing is owed.
fn kernel_tls_pair(name: &str) -> (Harness, rustls::ClientConnection) {
    use rustls::pki_types::ServerName;
    let dir =
        std::env::temp_dir().join(format!("iomux-session-ktls-{}-{name}", std::process::id()));
    let (cert, key) = crate::tls::test_fixture::certificate(&dir);
    let mut config = crate::tls::load_server_config(&cert, &key, &Default::default()).unwrap();
    config.enable_secret_extraction = true;
    let config = std::sync::Arc::new(config);
    let client_config = crate::tls::test_fixture::client_config(&cert, &rustls::version::TLS13);
    let _ = std::fs::remove_dir_all(&dir);
    let mut h = Harness::new(Lines::default());
    h.rules.output_high_water = 64 * 1024;
    let tls = TlsSession::new(&config, true).unwrap();
    h.s = Session::new(Lines::default(), ConnId::new(0, 2), h.t0).with_tls(tls);
    let name = ServerName::try_from("localhost").unwrap();
    let mut client = rustls::ClientConnection::new(client_config, name).unwrap();
    for _ in 0..10 {
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        h.recv(&wire, 1.0).unwrap();
        let records = h.s.unsent().to_vec();
        assert!(
            records.is_empty() || !h.s.kernel_tls_due(),
            "not due while records are owed"
        );
        client.read_tls(&mut &records[..]).unwrap();
        client.process_new_packets().unwrap();
        h.sent(records.len(), 1.0);
        if !client.is_handshaking() && h.s.tls_handshake().is_some() && h.s.owed() == 0 {
            return (h, client);
        }
    }
    panic!("no handshake after 10 round trips");
}

#[test]
fn the_kernel_takes_the_record_layer_once_the_handshake_records_are_sent() {
    let (mut h, _client) = kernel_tls_pair("takes");
    assert!(h.s.kernel_tls_due());
    let mut installed = None;
    let handed = h.s.hand_over_tls(
        || Ok(()),
        |version, secrets| {
            installed = Some((version, secrets.tx.0, secrets.rx.0));
            Ok(())
        },
    );
    assert_eq!(handed, Ok(true));
    assert!(h.s.kernel_tls() && !h.s.kernel_tls_due());
    let (version, _tx_seq, rx_seq) = installed.expect("the secrets were installed");
    assert_eq!(version, rustls::ProtocolVersion::TLSv1_3);
    assert_eq!(rx_seq, 0, "the peer sent no record after its Finished");
    assert_eq!(
        h.s.tls_handshake(),
        Some(false),
        "still counted, not resumed"
    );
    // The kernel decrypts and encrypts now: the session moves plaintext.
    h.recv(b"hello\n", 2.0).unwrap();
    assert_eq!(h.s.unsent(), b"hello\n");
}

#[test]
fn a_kernel_that_declines_leaves_the_connection_in_user_space() {
    let (mut h, mut client) = kernel_tls_pair("declines");
    let handed = h.s.hand_over_tls(
        || Err(io::Error::from_raw_os_error(libc::ENOENT)),
        |_, _| panic!("no secrets leave rustls after a refusal"),
    );
    assert_eq!(handed, Ok(false));
    assert!(
        !h.s.kernel_tls() && !h.s.kernel_tls_due(),
        "not tried again"
    );
    use std::io::{Read, Write};
    client.writer().write_all(b"hello\n").unwrap();
    let mut wire = Vec::new();
    client.write_tls(&mut wire).unwrap();
    h.recv(&wire, 2.0).unwrap();
    let records = h.s.unsent().to_vec();
    assert_ne!(records, b"hello\n", "encrypted in user space");
    client.read_tls(&mut &records[..]).unwrap();
    client.process_new_packets().unwrap();
    let mut got = [0u8; 6];
    client.reader().read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello\n");
}

#[test]
fn a_kernel_that_refuses_the_keys_closes_the_connection() {
    let (mut h, _client) = kernel_tls_pair("refuses");
    let handed = h.s.hand_over_tls(
        || Ok(()),
        |_, _| Err(io::Error::from_raw_os_error(libc::EINVAL)),
    );
    assert_eq!(handed, Err(Fault::KernelTls));
    assert!(h.s.is_closing() && !h.s.kernel_tls());
}
