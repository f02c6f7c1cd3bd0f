//! The selector conformance suite: every case runs against select, poll and
//! epoll (level, edge, one-shot) through `Backend::open`, or against the modes
//! it is about. The intent of CPython's `test_selectors` and of the `polling`
//! crate's tests, written afresh. Each case also runs on sigio (signal-driven,
//! edge-triggered) unless it names its modes. Cases that need thousands of descriptors
//! live in `conformance_many_fds.rs` (their own process).

#[macro_use]
mod common;

use common::{drain, num, only_event, pair, send, tcp_pair, tokens, wait, watched_pair, Mode};
use iomux::{Backend, Events, Interest, Selector, Token, Trigger};
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

const SECOND: Option<Duration> = Some(Duration::from_secs(1));
const NOW: Option<Duration> = Some(Duration::ZERO);

// --- registration bookkeeping -------------------------------------------

fn register_returns_the_registration(mode: Mode) {
    let mut sel = mode.open();
    let (a, _b) = pair();
    let fd = a.as_raw_fd();
    let reg = sel.register(&a, Token(17), Interest::BOTH).unwrap();
    assert_eq!(
        (reg.fd, reg.token, reg.interest),
        (fd, Token(17), Interest::BOTH)
    );
    assert_eq!(sel.registration(fd), Some(reg));
    assert_eq!(sel.len(), 1);
    assert_eq!(sel.deregister(&a).unwrap(), reg);
    assert!(sel.is_empty());
}
for_modes!(register_returns_the_registration);

fn bad_interest_is_an_error(mode: Mode) {
    let mut sel = mode.open();
    let (a, _b) = pair();
    let fd = a.as_raw_fd();
    for bits in [0u8, 4, 7, 0x80] {
        let err = sel
            .register(&a, Token(1), Interest::from_bits(bits))
            .unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::InvalidInput,
            "{mode:?} bits {bits}: {err}"
        );
        assert!(err.to_string().contains("interest"), "{err}");
    }
    // (A negative descriptor cannot be passed at all: `AsFd` rules it out.)
    assert!(
        sel.is_empty(),
        "{mode:?}: a refused registration left an entry"
    );

    // A bad interest on reregister leaves the registration as it was.
    let reg = sel.register(&a, Token(2), Interest::READABLE).unwrap();
    let err = sel
        .reregister(&a, Token(3), Interest::from_bits(0))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(sel.registration(fd), Some(reg));
}
for_modes!(bad_interest_is_an_error);

fn descriptor_that_is_not_open_is_an_error(mode: Mode) {
    let mut sel = mode.open();
    // Far above any descriptor limit, so never open; a selector that trusted it
    // would size its tables by it (gigabytes for i32::MAX).
    for fd in [1_000_000, i32::MAX] {
        let err = sel
            .register(num(fd), Token(1), Interest::READABLE)
            .unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::InvalidInput),
            "{mode:?} fd {fd}: {err:?}"
        );
        assert!(err.to_string().contains(&fd.to_string()), "{err}");
    }
    assert!(sel.is_empty());
}
for_modes!(descriptor_that_is_not_open_is_an_error);

fn registering_twice_is_an_error(mode: Mode) {
    let mut sel = mode.open();
    let (a, _b) = pair();
    let fd = a.as_raw_fd();
    let reg = sel.register(&a, Token(1), Interest::READABLE).unwrap();
    let err = sel.register(&a, Token(2), Interest::WRITABLE).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{mode:?}: {err}");
    assert!(err.to_string().contains("reregister"), "{err}");
    assert_eq!(
        sel.registration(fd),
        Some(reg),
        "the first registration stays"
    );
    assert_eq!(sel.len(), 1);
}
for_modes!(registering_twice_is_an_error);

fn deregistering_an_unknown_descriptor_is_an_error(mode: Mode) {
    let mut sel = mode.open();
    let (a, _b) = pair();
    let err = sel.deregister(&a).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{mode:?}: {err}");
    assert!(err.to_string().contains("not registered"), "{err}");
    sel.register(&a, Token(1), Interest::READABLE).unwrap();
    sel.deregister(&a).unwrap();
    assert_eq!(sel.deregister(&a).unwrap_err().kind(), ErrorKind::NotFound);
    let err = sel
        .reregister(&a, Token(1), Interest::READABLE)
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::NotFound,
        "reregister of an unknown descriptor"
    );
    assert!(sel.is_empty());
}
for_modes!(deregistering_an_unknown_descriptor_is_an_error);

fn deregister_after_close_leaves_nothing_behind(mode: Mode) {
    let mut sel = mode.open();
    let (a, b) = pair();
    let (keep, keep_peer) = pair();
    let fd = a.as_raw_fd();
    sel.register(&a, Token(1), Interest::READABLE).unwrap();
    sel.register(&keep, Token(2), Interest::READABLE).unwrap();
    drop(a);
    let reg = sel.deregister(num(fd)).expect("deregister after close");
    assert_eq!(reg.token, Token(1));
    assert_eq!(sel.registration(fd), None);
    assert_eq!(sel.len(), 1);
    drop(b);
    // The selector still works and reports nothing about the closed descriptor.
    assert_eq!(wait(&mut sel, NOW), vec![], "{mode:?}");
    send(&keep_peer, b"x");
    assert_eq!(tokens(&wait(&mut sel, SECOND)), vec![2], "{mode:?}");
}
for_modes!(deregister_after_close_leaves_nothing_behind);

fn deregister_after_the_number_was_reused_leaves_nothing_behind(mode: Mode) {
    let mut sel = mode.open();
    let (a, a_peer) = pair();
    let (c, c_peer) = pair();
    let fd = a.as_raw_fd();
    sel.register(&a, Token(1), Interest::READABLE).unwrap();
    send(&a_peer, b"old");
    // SAFETY: both descriptors are open and owned by this test; dup2 closes
    // a's file and makes `fd` a second name for c's.
    assert_eq!(unsafe { libc::dup2(c.as_raw_fd(), fd) }, fd);
    let reg = sel.deregister(&a).expect("deregister after dup2");
    assert_eq!(reg.token, Token(1));
    assert!(sel.is_empty());
    // The number now names c's socket; registering it afresh works and only
    // the new registration's token is ever reported.
    sel.register(&a, Token(2), Interest::READABLE).unwrap();
    assert_eq!(wait(&mut sel, NOW), vec![], "{mode:?}: c has no data yet");
    send(&c_peer, b"new");
    assert_eq!(tokens(&wait(&mut sel, SECOND)), vec![2], "{mode:?}");
    sel.deregister(&a).unwrap();
    drop(a); // closes `fd`, the duplicate of c
}
for_modes!(deregister_after_the_number_was_reused_leaves_nothing_behind);

fn reregister_changes_interest_and_token(mode: Mode) {
    let mut sel = mode.open();
    let (a, _b) = pair();
    let fd = a.as_raw_fd();
    sel.register(&a, Token(1), Interest::READABLE).unwrap();
    assert_eq!(wait(&mut sel, NOW), vec![], "{mode:?}: nothing to read yet");
    let reg = sel.reregister(&a, Token(2), Interest::WRITABLE).unwrap();
    assert_eq!((reg.token, reg.interest), (Token(2), Interest::WRITABLE));
    assert_eq!(sel.registration(fd), Some(reg));
    let events = wait(&mut sel, SECOND);
    let e = only_event(&events, Token(2));
    assert!(e.is_writable() && !e.is_readable(), "{mode:?}: {e:?}");
    assert_eq!(
        events.len(),
        1,
        "{mode:?}: the old token is gone: {events:?}"
    );
    assert_eq!(sel.len(), 1);
}
for_modes!(reregister_changes_interest_and_token);

fn failed_reregister_leaves_no_stale_entry(mode: Mode) {
    // The modes of this test run in parallel and each takes the lowest free
    // number from 900 up: one at a time, or one could reuse another's
    // closed number before its reregister.
    static HIGH_NUMBERS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = HIGH_NUMBERS.lock().unwrap_or_else(|p| p.into_inner());
    let mut sel = mode.open();
    let (a, _b) = pair();
    // Other tests run in parallel and the kernel hands out the lowest free
    // number, so a low number could be reused before the reregister below:
    // move the socket to a high one (still below FD_SETSIZE for select).
    // SAFETY: F_DUPFD_CLOEXEC on a live descriptor returns a new one we own.
    let high = unsafe { libc::fcntl(a.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 900) };
    assert!(high >= 900, "{}", std::io::Error::last_os_error());
    // SAFETY: `high` is a fresh descriptor owned by nobody else.
    let a = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(high) };
    let fd = a.as_raw_fd();
    sel.register(&a, Token(1), Interest::READABLE).unwrap();
    drop(a);
    let err = sel
        .reregister(num(fd), Token(2), Interest::WRITABLE)
        .unwrap_err();
    assert!(err.to_string().contains(&fd.to_string()), "{mode:?}: {err}");
    assert_eq!(
        sel.registration(fd),
        None,
        "{mode:?}: stale entry after {err}"
    );
    assert!(sel.is_empty());
    assert_eq!(
        sel.deregister(num(fd)).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(wait(&mut sel, NOW), vec![]);
}
for_modes!(failed_reregister_leaves_no_stale_entry);

fn closed_selector_refuses_use(mode: Mode) {
    let mut sel = mode.open();
    let (a, _b) = pair();
    let fd = a.as_raw_fd();
    sel.register(&a, Token(1), Interest::READABLE).unwrap();
    sel.close().unwrap();
    assert!(sel.is_empty());
    assert_eq!(sel.registration(fd), None);
    let mut events = Events::with_capacity(4);
    let errors = [
        sel.register(&a, Token(1), Interest::READABLE).unwrap_err(),
        sel.reregister(&a, Token(1), Interest::READABLE)
            .unwrap_err(),
        sel.deregister(&a).unwrap_err(),
        sel.select(&mut events, NOW).unwrap_err(),
        sel.waker(Token(9)).unwrap_err(),
        sel.close().unwrap_err(),
    ];
    for err in errors {
        assert!(err.to_string().contains("closed"), "{mode:?}: {err}");
    }
}
for_modes!(closed_selector_refuses_use);

// --- waiting ---------------------------------------------------------------

fn zero_timeout_with_nothing_registered_returns_at_once(mode: Mode) {
    let mut sel = mode.open();
    let start = Instant::now();
    for _ in 0..100 {
        assert_eq!(wait(&mut sel, NOW), vec![]);
    }
    // A sanity bound only: a hundred zero waits that blocked would take far longer.
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
}
for_modes!(zero_timeout_with_nothing_registered_returns_at_once);

fn both_directions_in_one_event(mode: Mode) {
    let mut sel = mode.open();
    let (a, b) = pair();
    sel.register(&b, Token(5), Interest::BOTH).unwrap();
    send(&a, b"data");
    let events = wait(&mut sel, SECOND);
    assert_eq!(events.len(), 1, "{mode:?}: {events:?}");
    let e = events[0];
    assert_eq!(e.token(), Token(5));
    assert!(e.is_readable() && e.is_writable(), "{mode:?}: {e:?}");
    assert!(!e.is_error() && !e.is_read_closed(), "{mode:?}: {e:?}");
}
for_modes!(both_directions_in_one_event);

fn only_the_written_pair_becomes_readable(mode: Mode) {
    let mut sel = mode.open();
    let pairs: Vec<_> = (0..12).map(|_| pair()).collect();
    for (i, (_, b)) in pairs.iter().enumerate() {
        sel.register(b, Token(100 + i), Interest::READABLE).unwrap();
    }
    assert_eq!(wait(&mut sel, NOW), vec![]);
    for chosen in [5, 0, 11] {
        send(&pairs[chosen].0, b"!");
        let events = wait(&mut sel, SECOND);
        assert_eq!(tokens(&events), vec![100 + chosen], "{mode:?}");
        assert!(events[0].is_readable());
        assert_eq!(drain(&pairs[chosen].1), 1);
        if mode.trigger == Trigger::Oneshot {
            sel.reregister(&pairs[chosen].1, Token(100 + chosen), Interest::READABLE)
                .unwrap();
        }
        assert_eq!(wait(&mut sel, NOW), vec![], "{mode:?}: drained");
    }
}
for_modes!(only_the_written_pair_becomes_readable);

fn events_beyond_capacity_come_in_later_waits(mode: Mode) {
    // Ten always-writable descriptors and room for four events a wait: every
    // one must be reported within three waits (no descriptor starves).
    let mut sel = mode.open();
    let pairs: Vec<_> = (0..10).map(|_| pair()).collect();
    for (i, (a, _)) in pairs.iter().enumerate() {
        sel.register(a, Token(i), Interest::WRITABLE).unwrap();
    }
    let mut events = Events::with_capacity(4);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..3 {
        sel.select(&mut events, SECOND).unwrap();
        assert!(events.len() <= 4, "{mode:?}: capacity exceeded");
        seen.extend(events.iter().map(|e| e.token().0));
    }
    assert_eq!(seen.len(), 10, "{mode:?}: reported only {seen:?}");
}
for_modes!(events_beyond_capacity_come_in_later_waits);

// SIGUSR1 with a handler that does nothing, installed without SA_RESTART, so
// that a wait it interrupts fails with EINTR.
static SIGNALS_HANDLED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count_signal(_: libc::c_int) {
    SIGNALS_HANDLED.fetch_add(1, Ordering::SeqCst);
}

fn install_interrupting_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction is valid; the handler only touches an atomic.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = count_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = 0; // no SA_RESTART
            libc::sigemptyset(&mut action.sa_mask);
            assert_eq!(
                libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()),
                0
            );
        }
    });
}

fn signal_during_a_wait_is_retried_with_the_remaining_time(mode: Mode) {
    install_interrupting_handler();
    let timeout = Duration::from_millis(300);
    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let waiter = thread::spawn(move || {
        let (mut sel, _a, _b) = watched_pair(mode);
        let mut events = Events::with_capacity(8);
        // SAFETY: pthread_self has no preconditions.
        ready_tx.send(unsafe { libc::pthread_self() }).unwrap();
        let start = Instant::now();
        let result = sel.select(&mut events, Some(timeout));
        let elapsed = start.elapsed();
        // Stay alive until the signaller is done, so it never signals a dead thread.
        let _ = done_rx.recv();
        (result.map(|()| events.len()), elapsed)
    });
    // One signalling test at a time, and each signal handled before the next
    // is sent: a standard signal sent twice before it is handled is delivered
    // once, which a loaded machine makes likely.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let target = ready_rx.recv().unwrap();
    let mut delivered = 0;
    for _ in 0..3 {
        thread::sleep(Duration::from_millis(50));
        let before = SIGNALS_HANDLED.load(Ordering::SeqCst);
        // SAFETY: the waiter thread is alive until `done_tx` is dropped.
        assert_eq!(unsafe { libc::pthread_kill(target, libc::SIGUSR1) }, 0);
        let sent = Instant::now();
        while SIGNALS_HANDLED.load(Ordering::SeqCst) == before
            && sent.elapsed() < Duration::from_secs(5)
        {
            thread::sleep(Duration::from_millis(1));
        }
        if SIGNALS_HANDLED.load(Ordering::SeqCst) > before {
            delivered += 1;
        }
    }
    drop(done_tx);
    let (result, elapsed) = waiter.join().unwrap();
    assert_eq!(delivered, 3, "{mode:?}: signals not delivered");
    assert_eq!(
        result.expect("an interrupted wait is retried, not failed"),
        0
    );
    assert!(
        elapsed >= timeout,
        "{mode:?}: returned after {elapsed:?} of {timeout:?}"
    );
}
for_modes!(signal_during_a_wait_is_retried_with_the_remaining_time);

/// A wait whose last try is interrupted by a signal after its deadline
/// returns nothing: select and poll used to scan what the kernel left from
/// an earlier wait (the sets or revents an interrupted call does not write),
/// and report a descriptor that was no longer ready.
fn interrupted_at_the_deadline_reports_nothing_stale(mode: Mode) {
    install_interrupting_handler();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let (ready_tx, ready_rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let (mut sel, a, b) = watched_pair(mode);
        // One wait that finds the pair readable, so the kernel's answer
        // (sets, revents) says so; then nothing is ready any more.
        send(&a, b"x");
        assert_eq!(tokens(&wait(&mut sel, SECOND)), vec![1], "{mode:?}");
        drain(&b);
        if mode.trigger == Trigger::Oneshot {
            sel.reregister(&b, Token(1), Interest::READABLE).unwrap();
        }
        // SAFETY: pthread_self has no preconditions.
        ready_tx.send(unsafe { libc::pthread_self() }).unwrap();
        let mut stale = Vec::new();
        for _ in 0..300 {
            let events = wait(&mut sel, Some(Duration::from_micros(500)));
            stale.extend(events);
        }
        drop(stop_rx);
        stale
    });
    let target = ready_rx.recv().unwrap();
    // Signal the waiter until it is done: many waits end in an interrupted try.
    while stop_tx.send(()).is_ok() {
        // SAFETY: the waiter is alive while its receiver is (it drops it last).
        unsafe { libc::pthread_kill(target, libc::SIGUSR1) };
        thread::sleep(Duration::from_micros(50));
    }
    let stale = waiter.join().unwrap();
    assert!(stale.is_empty(), "{mode:?}: stale events {stale:?}");
}
for_modes!(interrupted_at_the_deadline_reports_nothing_stale);

fn short_timeouts_never_end_early(mode: Mode) {
    let (mut sel, _a, _b) = watched_pair(mode);
    let mut events = Events::with_capacity(8);
    for timeout in [Duration::from_micros(100), Duration::from_micros(3100)] {
        for _ in 0..20 {
            let start = Instant::now();
            sel.select(&mut events, Some(timeout)).unwrap();
            let elapsed = start.elapsed();
            assert!(events.is_empty());
            assert!(elapsed >= timeout, "{mode:?}: {elapsed:?} < {timeout:?}");
            // Sanity only (the machine is shared): not a precision claim.
            assert!(elapsed < Duration::from_secs(1), "{mode:?}: {elapsed:?}");
        }
    }
}
for_modes!(short_timeouts_never_end_early);

fn idle_one_second_wait_takes_a_second(mode: Mode) {
    let (mut sel, _a, _b) = watched_pair(mode);
    let start = Instant::now();
    assert_eq!(wait(&mut sel, SECOND), vec![]);
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_secs(1), "{mode:?}: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "{mode:?}: {elapsed:?}");
}
for_modes!(idle_one_second_wait_takes_a_second);

// --- triggering modes --------------------------------------------------------

fn level_repeats_until_drained(mode: Mode) {
    let (mut sel, a, b) = watched_pair(mode);
    send(&a, b"abc");
    for round in 0..3 {
        assert_eq!(
            tokens(&wait(&mut sel, SECOND)),
            vec![1],
            "{mode:?} round {round}"
        );
    }
    let mut one = [0u8; 1];
    (&b).read_exact(&mut one).unwrap();
    assert_eq!(
        tokens(&wait(&mut sel, SECOND)),
        vec![1],
        "{mode:?}: two bytes left"
    );
    assert_eq!(drain(&b), 2);
    assert_eq!(wait(&mut sel, NOW), vec![], "{mode:?}: drained");
}
for_modes!(
    level_repeats_until_drained,
    [select, poll, epoll_level, uring_level]
);

fn edge_reports_new_data_once(mode: Mode) {
    let (mut sel, a, b) = watched_pair(mode);
    send(&a, b"abc");
    assert_eq!(tokens(&wait(&mut sel, SECOND)), vec![1]);
    assert_eq!(
        wait(&mut sel, NOW),
        vec![],
        "undrained data is not reported again"
    );
    send(&a, b"more");
    assert_eq!(
        tokens(&wait(&mut sel, SECOND)),
        vec![1],
        "new data is a new edge"
    );
    assert_eq!(wait(&mut sel, NOW), vec![]);
    assert_eq!(drain(&b), 7);
    assert_eq!(wait(&mut sel, NOW), vec![]);
}
for_modes!(edge_reports_new_data_once, [epoll_edge, sigio, uring_edge]);

fn oneshot_is_silent_until_rearmed(mode: Mode) {
    let (mut sel, a, b) = watched_pair(mode);
    send(&a, b"abc");
    assert_eq!(tokens(&wait(&mut sel, SECOND)), vec![1]);
    assert_eq!(wait(&mut sel, NOW), vec![], "disarmed after one report");
    send(&a, b"more");
    assert_eq!(wait(&mut sel, NOW), vec![], "new data does not re-arm it");
    sel.reregister(&b, Token(2), Interest::READABLE).unwrap();
    assert_eq!(
        tokens(&wait(&mut sel, SECOND)),
        vec![2],
        "re-armed with the new token"
    );
    assert_eq!(wait(&mut sel, NOW), vec![]);
}
for_modes!(
    oneshot_is_silent_until_rearmed,
    [epoll_oneshot, uring_oneshot]
);

/// One selector, one pair per trigger: each registration behaves as its own
/// trigger says, whatever the selector's; a trigger the backend lacks is
/// refused and leaves no entry.
fn trigger_is_chosen_per_registration(mode: Mode) {
    let mut sel = mode.open();
    let all = [Trigger::Level, Trigger::Edge, Trigger::Oneshot];
    let mut pairs = Vec::new();
    for (i, &trigger) in all.iter().enumerate() {
        let (a, b) = pair();
        let result = sel.register_with_trigger(&b, Token(i), Interest::READABLE, trigger);
        if !mode.backend.triggers().contains(&trigger) {
            let err = result.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{mode:?} {trigger}");
            assert!(err.to_string().contains(&format!("not {trigger}")), "{err}");
            assert_eq!(sel.registration(b.as_raw_fd()), None);
            continue;
        }
        assert_eq!(result.unwrap().trigger, trigger);
        // reregister keeps the registration's own trigger.
        let reg = sel.reregister(&b, Token(i), Interest::READABLE).unwrap();
        assert_eq!(reg.trigger, trigger, "{mode:?}");
        pairs.push((trigger, a, b));
    }
    assert_eq!(wait(&mut sel, NOW), vec![], "{mode:?}: nothing written yet");
    for (_, a, _) in &pairs {
        send(a, b"x");
    }
    let token_of = |t: Trigger| all.iter().position(|&x| x == t).unwrap();
    let first: Vec<usize> = pairs.iter().map(|(t, _, _)| token_of(*t)).collect();
    assert_eq!(tokens(&wait(&mut sel, SECOND)), first, "{mode:?}");
    // Undrained: only the level registration is reported again.
    let again: Vec<usize> = pairs
        .iter()
        .filter(|(t, _, _)| *t == Trigger::Level)
        .map(|(t, _, _)| token_of(*t))
        .collect();
    assert_eq!(tokens(&wait(&mut sel, NOW)), again, "{mode:?}");
    for (trigger, _, b) in &pairs {
        if *trigger == Trigger::Oneshot {
            sel.reregister(b, Token(token_of(*trigger)), Interest::READABLE)
                .unwrap();
            let events = wait(&mut sel, SECOND);
            assert!(
                tokens(&events).contains(&token_of(Trigger::Oneshot)),
                "{mode:?}: re-armed one-shot: {events:?}"
            );
        }
    }
}
for_modes!(trigger_is_chosen_per_registration);

/// An epoll selector is itself a descriptor another loop can watch: readable
/// while a wait of its own would report something.
fn an_epoll_selector_nests_in_another_loop(mode: Mode) {
    let mut outer = mode.open();
    let mut inner = iomux::EpollSelector::new(Trigger::Edge).unwrap();
    outer
        .register(&inner, Token(1), Interest::READABLE)
        .unwrap();
    let (a, b) = pair();
    inner.register(&b, Token(2), Interest::READABLE).unwrap();
    assert_eq!(wait(&mut outer, NOW), vec![], "{mode:?}: nothing ready yet");
    send(&a, b"x");
    let events = wait(&mut outer, SECOND);
    assert!(only_event(&events, Token(1)).is_readable(), "{mode:?}");
    assert_eq!(tokens(&wait(&mut inner, NOW)), vec![2]);
}
for_modes!(
    an_epoll_selector_nests_in_another_loop,
    [
        select,
        poll,
        epoll_level,
        epoll_edge,
        epoll_oneshot,
        uring_level,
        uring_edge,
        uring_oneshot
    ]
);

fn regular_file_on_epoll_is_an_error_leaving_no_entry(mode: Mode) {
    let mut sel = mode.open();
    let file = std::fs::File::open("/proc/self/exe").expect("open a regular file");
    let fd = file.as_raw_fd();
    let err = sel
        .register(&file, Token(1), Interest::READABLE)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("regular files"), "{err}");
    assert_eq!(sel.registration(fd), None);
    assert!(sel.is_empty());
    assert_eq!(
        sel.deregister(&file).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}
for_modes!(
    regular_file_on_epoll_is_an_error_leaving_no_entry,
    [epoll_level, epoll_edge, epoll_oneshot]
);

fn what_raises_no_signal_is_refused_by_sigio(mode: Mode) {
    // Such descriptors used to be accepted and then never reported: a wait
    // for an eventfd that was written never ended.
    let mut sel = mode.open();
    let file = std::fs::File::open("/proc/self/exe").expect("open a regular file");
    let waker = iomux::Waker::new().unwrap();
    for fd in [file.as_fd(), waker.as_fd()] {
        let err = sel.register(fd, Token(1), Interest::READABLE).unwrap_err();
        let fd = fd.as_raw_fd();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(
            err.to_string().contains(&format!("descriptor {fd}"))
                && err.to_string().contains("raise readiness signals")
                && !err.to_string().contains("--"),
            "{err}"
        );
        assert!(sel.is_empty());
    }
    // A pipe raises them.
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the live array.
    assert_eq!(
        unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK) },
        0
    );
    // SAFETY: pipe2 just created both; nothing else owns them.
    let (read_end, write_end) = unsafe {
        use std::os::fd::FromRawFd;
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    sel.register(&read_end, Token(3), Interest::READABLE)
        .unwrap();
    assert_eq!(wait(&mut sel, NOW), vec![]);
    send(&write_end, b"x");
    assert_eq!(tokens(&wait(&mut sel, SECOND)), vec![3]);
}
for_modes!(what_raises_no_signal_is_refused_by_sigio, [sigio]);

fn regular_file_is_always_ready_on_select_and_poll(mode: Mode) {
    let mut sel = mode.open();
    let file = std::fs::File::open("/proc/self/exe").expect("open a regular file");
    sel.register(&file, Token(1), Interest::READABLE).unwrap();
    assert_eq!(tokens(&wait(&mut sel, NOW)), vec![1], "{mode:?}");
    sel.deregister(&file).unwrap();
}
for_modes!(
    regular_file_is_always_ready_on_select_and_poll,
    [select, poll]
);

// --- wakers ------------------------------------------------------------------

fn waker_wakes_a_wait_without_timeout(mode: Mode) {
    let (tx, rx) = mpsc::channel();
    let mut sel = mode.open();
    let waker = sel.waker(Token(99)).unwrap();
    thread::spawn(move || {
        let events = wait(&mut sel, None);
        let _ = tx.send(events);
    });
    thread::sleep(Duration::from_millis(50));
    waker.wake().unwrap();
    // Bounded: a waker that failed to wake would leave the wait blocked.
    let events = rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("{mode:?}: the waker did not wake the wait"));
    assert_eq!(tokens(&events), vec![99], "{mode:?}");
    assert!(events[0].is_readable());
}
// sigio is bound to the thread that opens it, so it waits in this one.
for_modes!(
    waker_wakes_a_wait_without_timeout,
    [select, poll, epoll_level, epoll_edge, epoll_oneshot]
);

fn several_wakers_per_selector(mode: Mode) {
    let mut sel = mode.open();
    let w1 = sel.waker(Token(101)).unwrap();
    let w2 = sel.waker(Token(102)).unwrap();
    let w3 = sel.waker(Token(103)).unwrap();
    assert_eq!(sel.len(), 3);
    w1.wake().unwrap();
    w3.wake().unwrap();
    assert_eq!(tokens(&wait(&mut sel, SECOND)), vec![101, 103], "{mode:?}");
    assert_eq!(wait(&mut sel, NOW), vec![], "{mode:?}: wakes consumed");
    w2.wake().unwrap();
    assert_eq!(tokens(&wait(&mut sel, SECOND)), vec![102], "{mode:?}");
    // A woken waker keeps working after others were reported.
    w1.wake().unwrap();
    assert_eq!(tokens(&wait(&mut sel, SECOND)), vec![101], "{mode:?}");
}
for_modes!(several_wakers_per_selector);

fn wakes_coalesce(mode: Mode) {
    let mut sel = mode.open();
    let waker = sel.waker(Token(7)).unwrap();
    let clone = waker.clone();
    for _ in 0..5 {
        waker.wake().unwrap();
        clone.wake().unwrap();
    }
    assert_eq!(
        tokens(&wait(&mut sel, SECOND)),
        vec![7],
        "{mode:?}: one event for ten wakes"
    );
    assert_eq!(wait(&mut sel, NOW), vec![], "{mode:?}");
}
for_modes!(wakes_coalesce);

fn many_wakes_from_another_thread_make_one_event(mode: Mode) {
    let mut sel = mode.open();
    let waker = sel.waker(Token(7)).unwrap();
    thread::spawn(move || {
        for _ in 0..10_000 {
            waker.wake().unwrap();
        }
    })
    .join()
    .unwrap();
    assert_eq!(tokens(&wait(&mut sel, SECOND)), vec![7], "{mode:?}");
    assert_eq!(wait(&mut sel, NOW), vec![], "{mode:?}: all consumed");
}
for_modes!(many_wakes_from_another_thread_make_one_event);

/// Deregistering lets go of the descriptor's file: once closed, its peer
/// reads EOF. Deregistered (or reregistered) before any wait, a socket that
/// is writable at once is the worst case for io_uring: its multishot poll
/// request has a completion in the making, which `IORING_OP_POLL_REMOVE`
/// refuses to cancel (EALREADY), so the request lived on holding the file,
/// and the peer never saw the close (a TCP peer got no FIN).
fn a_deregistered_descriptor_is_let_go_once_closed(mode: Mode) {
    let mut sel = mode.open();
    for reregister_first in [false, true] {
        let (a, peer) = pair();
        peer.set_nonblocking(false).unwrap();
        // A bound in case the file is held, not a measured time.
        peer.set_read_timeout(BOUND).unwrap();
        let unix = deregister_close_and_read_the_peer(&mut sel, a, peer.into(), reregister_first);
        let (client, server) = tcp_pair();
        client.set_nonblocking(false).unwrap();
        client.set_read_timeout(BOUND).unwrap();
        let tcp =
            deregister_close_and_read_the_peer(&mut sel, server, client.into(), reregister_first);
        assert!(
            matches!((&unix, &tcp), (Ok(0), Ok(0))),
            "{mode:?} (reregistered first: {reregister_first}): the peer of a closed socket reads EOF, got {unix:?} (unix), {tcp:?} (tcp)"
        );
    }
    // The selector goes on working.
    let (b, b_peer) = pair();
    sel.register(&b, Token(3), Interest::READABLE).unwrap();
    send(&b_peer, b"x");
    assert_eq!(tokens(&wait(&mut sel, SECOND)), vec![3], "{mode:?}");
}

/// Register `socket` for both directions (optionally reregister it),
/// deregister and close it before any wait, then read once from its `peer`.
fn deregister_close_and_read_the_peer(
    sel: &mut impl Selector,
    socket: impl AsFd,
    peer: std::os::fd::OwnedFd,
    reregister_first: bool,
) -> std::io::Result<usize> {
    sel.register(&socket, Token(1), Interest::BOTH).unwrap();
    if reregister_first {
        sel.reregister(&socket, Token(2), Interest::READABLE)
            .unwrap();
    }
    sel.deregister(&socket).unwrap();
    drop(socket);
    let mut peer = std::fs::File::from(peer);
    let mut buf = [0u8; 8];
    // io_uring's task work may interrupt a read with a timeout: retried.
    (0..100)
        .map(|_| peer.read(&mut buf))
        .find(|r| !matches!(r, Err(e) if e.kind() == ErrorKind::Interrupted))
        .expect("a read that is not interrupted")
}
for_modes!(a_deregistered_descriptor_is_let_go_once_closed);

// --- hang-ups --------------------------------------------------------------

fn hangup_is_reported(mode: Mode) {
    let (mut sel, a, b) = watched_pair(mode);
    drop(a);
    let events = wait(&mut sel, SECOND);
    let e = only_event(&events, Token(1));
    assert!(e.is_readable(), "{mode:?}: {e:?}");
    if mode.reports_hangups() {
        assert!(e.is_hangup() && e.is_read_closed(), "{mode:?}: {e:?}");
    }
    let mut buf = [0u8; 8];
    assert_eq!((&b).read(&mut buf).unwrap(), 0, "EOF");
}
for_modes!(hangup_is_reported);

fn read_half_close_is_reported(mode: Mode) {
    let mut sel = mode.open();
    let (client, server) = tcp_pair();
    sel.register(&server, Token(1), Interest::READABLE).unwrap();
    assert_eq!(wait(&mut sel, NOW), vec![]);
    client.shutdown(Shutdown::Write).unwrap();
    let events = wait(&mut sel, SECOND);
    let e = only_event(&events, Token(1));
    assert!(e.is_readable(), "{mode:?}: {e:?}");
    if mode.reports_hangups() {
        assert!(e.is_read_closed(), "{mode:?}: {e:?}");
        assert!(!e.is_hangup(), "{mode:?}: only one direction closed: {e:?}");
    }
    let mut buf = [0u8; 8];
    assert_eq!((&server).read(&mut buf).unwrap(), 0, "EOF");
    // The other direction still works.
    send(&server, b"still open");
}
for_modes!(read_half_close_is_reported);

// --- epoll's shared listener -------------------------------------------------

#[test]
fn exclusive_listener_wakes_a_waiter_and_cannot_be_reregistered() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let fd = listener.as_raw_fd();
    let mut selectors: Vec<_> = (0..2)
        .map(|_| iomux::EpollSelector::new(Trigger::Level).unwrap())
        .collect();
    for sel in &mut selectors {
        sel.register_exclusive(&listener, Token(0), Interest::READABLE)
            .unwrap();
    }
    let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let mut events = Events::with_capacity(4);
    let start = Instant::now();
    let mut woken = 0;
    while woken == 0 && start.elapsed() < Duration::from_secs(5) {
        for sel in &mut selectors {
            sel.select(&mut events, Some(Duration::from_millis(10)))
                .unwrap();
            woken += events.len();
        }
    }
    assert!(woken >= 1, "no selector saw the connection");
    // The kernel refuses EPOLL_CTL_MOD on an exclusive registration: the error
    // is reported and no stale entry remains.
    let sel = &mut selectors[0];
    assert!(sel
        .reregister(&listener, Token(1), Interest::READABLE)
        .is_err());
    assert_eq!(sel.registration(fd), None);
    sel.register_exclusive(&listener, Token(1), Interest::READABLE)
        .unwrap();
}

#[test]
fn select_refuses_edge_and_oneshot_with_advice() {
    for backend in [Backend::Select, Backend::Poll] {
        for trigger in [Trigger::Edge, Trigger::Oneshot] {
            let err = backend.open(trigger).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput);
            let text = err.to_string();
            assert!(
                text.contains(&format!(
                    "{backend} selector supports level only, not {trigger}"
                )) && text.contains("epoll")
                    && text.contains(&format!("uring support {trigger}")),
                "{text}"
            );
            assert!(
                !text.contains("--"),
                "a library error names no CLI flag: {text}"
            );
        }
    }
    let err = Backend::Sigio.open(Trigger::Level).unwrap_err();
    assert!(err.to_string().contains("supports edge only"), "{err}");
    assert!(
        err.to_string()
            .contains("select, poll, epoll and uring support level"),
        "{err}"
    );
}

fn huge_timeout_is_accepted(mode: Mode) {
    let mut sel = mode.open();
    let (a, _b) = pair();
    sel.register(&a, Token(1), Interest::WRITABLE).unwrap();
    // Saturated rather than overflowed or refused: the ready descriptor is reported.
    assert_eq!(
        tokens(&wait(&mut sel, Some(Duration::MAX))),
        vec![1],
        "{mode:?}"
    );
}
for_modes!(huge_timeout_is_accepted);

/// CPU time this thread has used so far.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes into the live timespec.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) },
        0
    );
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn huge_timeout_blocks_instead_of_spinning(mode: Mode) {
    // io_uring was handed Duration::MAX's seconds as a negative time, which
    // expired at once: the wait spun on the CPU until the wake.
    let mut sel = mode.open();
    let waker = sel.waker(Token(9)).unwrap();
    let waking = thread::spawn(move || {
        thread::sleep(Duration::from_millis(500));
        waker.wake().unwrap();
    });
    let cpu_before = thread_cpu_time();
    let events = wait(&mut sel, Some(Duration::MAX));
    let cpu_used = thread_cpu_time() - cpu_before;
    waking.join().unwrap();
    assert_eq!(tokens(&events), vec![9], "{mode:?}");
    // Not a speed bound: a blocked wait uses microseconds of CPU, a spinning
    // one its whole share of the half second.
    assert!(
        cpu_used < Duration::from_millis(100),
        "{mode:?}: the wait spun for {cpu_used:?} of CPU"
    );
    assert_eq!(wait(&mut sel, Some(Duration::from_nanos(1))), vec![]);
}
for_modes!(huge_timeout_blocks_instead_of_spinning);

fn huge_event_capacity_is_accepted(mode: Mode) {
    // Events::with_capacity(usize::MAX) panicked ("capacity overflow").
    for capacity in [usize::MAX, 1 << 40] {
        let mut sel = mode.open();
        let (a, _b) = pair();
        sel.register(&a, Token(usize::MAX), Interest::WRITABLE)
            .unwrap();
        sel.waker(Token(0)).unwrap().wake().unwrap();
        let mut events = Events::with_capacity(capacity);
        assert_eq!(events.capacity(), capacity);
        sel.select(&mut events, SECOND).unwrap();
        let mut seen: Vec<usize> = events.iter().map(|e| e.token().0).collect();
        seen.sort_unstable();
        assert_eq!(seen, vec![0, usize::MAX], "{mode:?}");
    }
}
for_modes!(huge_event_capacity_is_accepted);

/// A registration without read interest is not told of the peer's
/// half-close: a level-triggered or one-shot wait that reported it on every
/// pass, while the caller waits only to write, would spin (issue 18 item 1;
/// io_uring reports EPOLLRDHUP whatever was asked).
fn a_half_close_does_not_wake_a_writer_waiting_for_room(mode: Mode) {
    let mut sel = mode.open();
    let (a, b) = tcp_pair();
    // Fill `a`'s way out until the kernel takes no more: `a` is not writable.
    let chunk = [0u8; 65536];
    while (&a).write(&chunk).is_ok() {}
    sel.register(&a, Token(5), Interest::WRITABLE).unwrap();
    b.shutdown(std::net::Shutdown::Write).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let mut woken = 0;
    for _ in 0..20 {
        woken += wait(&mut sel, Some(Duration::from_millis(5))).len();
    }
    // At most one wake-up for the change (edge modes may report it once).
    assert!(
        woken <= 1,
        "{mode:?}: {woken} wake-ups in 20 waits for a writer with no room"
    );
    drop(b);
}
for_modes!(a_half_close_does_not_wake_a_writer_waiting_for_room);

// --- registry handles: registering from other threads ----------------------

/// The bound on a wait that must end by itself: generous, never measured.
const BOUND: Option<Duration> = Some(Duration::from_secs(10));

/// This thread's id, for `blocked_in_a_wait`.
fn this_thread() -> libc::pid_t {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// Whether thread `tid` of this process is blocked in one of the selectors'
/// waiting system calls (the number /proc shows for it).
fn blocked_in_a_wait(tid: libc::pid_t) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")) else {
        return false;
    };
    let number = text.split_whitespace().next().unwrap_or("");
    [
        libc::SYS_pselect6,
        libc::SYS_ppoll,
        libc::SYS_epoll_wait,
        libc::SYS_epoll_pwait,
        libc::SYS_epoll_pwait2,
        libc::SYS_io_uring_enter,
    ]
    .iter()
    .any(|n| number == n.to_string())
}

/// Wait (at most ten seconds) until thread `tid` blocks in a wait; returns
/// whether it did, for the caller to assert once its wait has ended.
fn until_blocked_in_a_wait(tid: libc::pid_t) -> bool {
    for _ in 0..10_000 {
        if blocked_in_a_wait(tid) {
            return true;
        }
        thread::sleep(Duration::from_millis(1));
    }
    false
}

fn registry_registers_into_a_blocked_wait(mode: Mode) {
    // The selector's own thread (sigio's signals go to it) waits; another
    // registers a descriptor that is already readable.
    let mut sel = mode.open();
    let registry = sel.registry();
    let (a, b) = pair();
    send(&a, b"ready before it was registered");
    let waiter = this_thread();
    let helper = thread::spawn(move || {
        let blocked = until_blocked_in_a_wait(waiter);
        let reg = registry.register(&b, Token(5), Interest::READABLE);
        (blocked, reg, b)
    });
    let events = wait(&mut sel, BOUND);
    let (blocked, reg, b) = helper.join().unwrap();
    assert!(blocked, "{mode:?}: the wait never blocked");
    let reg = reg.unwrap_or_else(|e| panic!("{mode:?}: register through the registry: {e}"));
    assert_eq!((reg.token, reg.trigger), (Token(5), mode.trigger));
    assert_eq!(
        tokens(&events),
        vec![5],
        "{mode:?}: the blocked wait did not report the descriptor registered meanwhile"
    );
    assert!(events[0].is_readable(), "{mode:?}: {events:?}");
    assert_eq!(sel.deregister(&b).unwrap().token, Token(5));
}
for_modes!(registry_registers_into_a_blocked_wait);

fn registry_reregisters_and_deregisters_in_a_blocked_wait(mode: Mode) {
    let mut sel = mode.open();
    let registry = sel.registry();
    let waker = sel.waker(Token(9)).unwrap();
    let (a, b) = pair();
    let fd = b.as_raw_fd();
    // Registered for reading with nothing to read: silent until changed.
    sel.register(&b, Token(1), Interest::READABLE).unwrap();
    let waiter = this_thread();
    let b = Arc::new(b);

    let (handle, socket) = (registry.clone(), Arc::clone(&b));
    let helper = thread::spawn(move || {
        let blocked = until_blocked_in_a_wait(waiter);
        (
            blocked,
            handle.reregister(&*socket, Token(2), Interest::WRITABLE),
        )
    });
    let events = wait(&mut sel, BOUND);
    let (blocked, reg) = helper.join().unwrap();
    assert!(blocked, "{mode:?}: the wait never blocked");
    assert_eq!(
        reg.unwrap().trigger,
        mode.trigger,
        "{mode:?}: the trigger kept"
    );
    let e = only_event(&events, Token(2));
    assert!(e.is_writable(), "{mode:?}: {e:?}");
    assert_eq!(
        events.len(),
        1,
        "{mode:?}: the old token is gone: {events:?}"
    );

    // Silent again, then deregistered by another thread during a wait, which
    // a wake then ends.
    sel.reregister(&*b, Token(3), Interest::READABLE).unwrap();
    let (handle, socket) = (registry.clone(), Arc::clone(&b));
    let helper = thread::spawn(move || {
        let blocked = until_blocked_in_a_wait(waiter);
        let reg = handle.deregister(&*socket);
        waker.wake().unwrap();
        (blocked, reg)
    });
    let events = wait(&mut sel, BOUND);
    let (blocked, reg) = helper.join().unwrap();
    assert!(blocked, "{mode:?}: the wait never blocked");
    assert_eq!(reg.unwrap().token, Token(3));
    assert_eq!(tokens(&events), vec![9], "{mode:?}");
    assert_eq!(sel.registration(fd), None);
    assert_eq!(sel.len(), 1, "{mode:?}: the waker only");
    // Every wait that begins after the deregistration is silent about it.
    send(&a, b"x");
    assert_eq!(
        wait(&mut sel, Some(Duration::from_millis(100))),
        vec![],
        "{mode:?}: a deregistered descriptor was reported"
    );
    assert_eq!(
        registry.deregister(&*b).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}
for_modes!(registry_reregisters_and_deregisters_in_a_blocked_wait);

/// The lacking trigger a backend must refuse, if it lacks one.
fn a_trigger_lacking(backend: Backend) -> Option<Trigger> {
    [Trigger::Level, Trigger::Edge, Trigger::Oneshot]
        .into_iter()
        .find(|t| !backend.triggers().contains(t))
}

fn registry_checks_are_answered_at_once(mode: Mode) {
    // No wait in this test until the end: every answer comes from the call.
    let mut sel = mode.open();
    let registry = sel.registry();
    let (a, a_peer) = pair();
    let (c, _c_peer) = pair();
    let fd = a.as_raw_fd();
    let reg = registry.register(&a, Token(1), Interest::READABLE).unwrap();
    assert_eq!(sel.registration(fd), Some(reg), "{mode:?}");
    assert_eq!(sel.len(), 1);
    let err = registry
        .register(&a, Token(2), Interest::READABLE)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{mode:?}: {err}");
    let err = sel.register(&a, Token(2), Interest::READABLE).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{mode:?}: {err}");
    for err in [
        registry
            .reregister(&c, Token(3), Interest::READABLE)
            .unwrap_err(),
        registry.deregister(&c).unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::NotFound, "{mode:?}: {err}");
    }
    let err = registry
        .register(&c, Token(3), Interest::from_bits(0))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{mode:?}: {err}");
    if let Some(lacking) = a_trigger_lacking(mode.backend) {
        let err = registry
            .register_with_trigger(&c, Token(3), Interest::READABLE, lacking)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{mode:?}: {err}");
    }
    let err = registry
        .register(num(1_000_000), Token(3), Interest::READABLE)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{mode:?}: {err}");
    assert_eq!(sel.registration(c.as_raw_fd()), None, "{mode:?}");
    assert_eq!(sel.len(), 1, "{mode:?}: a refused call left an entry");

    let changed = registry.reregister(&a, Token(4), Interest::BOTH).unwrap();
    assert_eq!(changed.trigger, reg.trigger, "{mode:?}: the trigger kept");
    assert_eq!(sel.registration(fd), Some(changed));
    assert_eq!(registry.deregister(&a).unwrap().token, Token(4));
    assert!(sel.is_empty(), "{mode:?}");
    assert_eq!(
        registry.deregister(&a).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(sel.deregister(&a).unwrap_err().kind(), ErrorKind::NotFound);

    // The selector's own calls come after the handle's.
    registry.register(&c, Token(6), Interest::READABLE).unwrap();
    assert_eq!(sel.deregister(&c).unwrap().token, Token(6), "{mode:?}");
    sel.register(&c, Token(7), Interest::WRITABLE).unwrap();
    // What the waits see: `a` deregistered (though readable), `c` writable.
    send(&a_peer, b"x");
    assert_eq!(tokens(&wait(&mut sel, SECOND)), vec![7], "{mode:?}");
}
for_modes!(registry_checks_are_answered_at_once);

fn registry_fails_once_the_selector_is_closed(mode: Mode) {
    let (a, _b) = pair();
    let mut sel = mode.open();
    let registry = sel.registry();
    registry.register(&a, Token(1), Interest::READABLE).unwrap();
    sel.close().unwrap();
    for err in [
        registry
            .register(&a, Token(2), Interest::READABLE)
            .unwrap_err(),
        registry
            .reregister(&a, Token(2), Interest::READABLE)
            .unwrap_err(),
        registry.deregister(&a).unwrap_err(),
    ] {
        assert!(err.to_string().contains("closed"), "{mode:?}: {err}");
    }
    // Dropped: the same.
    let sel = mode.open();
    let registry = sel.registry();
    drop(sel);
    let err = registry
        .register(&a, Token(1), Interest::READABLE)
        .unwrap_err();
    assert!(err.to_string().contains("closed"), "{mode:?}: {err}");
}
for_modes!(registry_fails_once_the_selector_is_closed);

fn many_threads_register_through_the_registry(mode: Mode) {
    const THREADS: usize = 8;
    const EACH: usize = 16;
    // 256 descriptors per mode: one mode at a time, so that the select
    // mode's stay below FD_SETSIZE however many tests run at once.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut sel = mode.open();
    let registry = sel.registry();
    let pairs: Vec<_> = (0..THREADS * EACH).map(|_| pair()).collect();
    let mut seen = vec![0usize; pairs.len()];
    thread::scope(|s| {
        for (t, chunk) in pairs.chunks(EACH).enumerate() {
            let registry = registry.clone();
            s.spawn(move || {
                for (i, (writer, reader)) in chunk.iter().enumerate() {
                    registry
                        .register(reader, Token(t * EACH + i), Interest::READABLE)
                        .unwrap();
                    send(writer, b"x");
                }
            });
        }
        // This (the selector's) thread waits meanwhile, until every reader
        // was reported or a whole bound passes with nothing.
        let mut events = Events::with_capacity(64);
        while seen.contains(&0) {
            sel.select(&mut events, BOUND).unwrap();
            if events.is_empty() {
                break;
            }
            for e in &events {
                seen[e.token().0] += 1;
                drain(&pairs[e.token().0].1);
            }
        }
    });
    assert_eq!(sel.len(), pairs.len(), "{mode:?}");
    // Anything reported twice would show here, in a last wait.
    for e in wait(&mut sel, Some(Duration::from_millis(100))) {
        seen[e.token().0] += 1;
    }
    let wrong: Vec<(usize, usize)> = seen
        .iter()
        .copied()
        .enumerate()
        .filter(|&(_, n)| n != 1)
        .collect();
    assert_eq!(wrong, vec![], "{mode:?}: (token, times reported) not once");
}
for_modes!(many_threads_register_through_the_registry);
