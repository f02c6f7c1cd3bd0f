//! Conformance cases that need thousands of descriptors, in their own process
//! and one at a time, so descriptor numbers past FD_SETSIZE never reach the
//! select cases of the main suite.

#[macro_use]
mod common;

use common::{drain, pair, send, tokens, wait, Mode};
use iomux::selector::select::FD_SETSIZE;
use iomux::{Backend, Events, Interest, Selector, Token, Trigger};
use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

const SECOND: Option<Duration> = Some(Duration::from_secs(1));

/// One descriptor-hungry case at a time, with the soft limit at the hard one.
fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let limit = iomux::net::raise_fd_limit().expect("raise the descriptor limit");
    assert!(
        limit >= 8192,
        "these tests need 8192 descriptors, the hard limit is {limit}: raise it (ulimit -Hn)"
    );
    guard
}

fn more_descriptors_than_fd_setsize(mode: Mode) {
    let _guard = exclusive();
    let mut sel = mode.open();
    let pairs: Vec<_> = (0..700).map(|_| pair()).collect();
    let high = pairs
        .iter()
        .rposition(|(_, b)| b.as_raw_fd() as usize >= FD_SETSIZE + 100);
    let high = high.expect("700 socket pairs reach past FD_SETSIZE");
    let low = pairs
        .iter()
        .position(|(_, b)| (b.as_raw_fd() as usize) < FD_SETSIZE)
        .unwrap();

    if mode.backend == Backend::Select {
        sel.register(&pairs[low].1, Token(low), Interest::READABLE)
            .unwrap();
        let before = format!("{sel:?}");
        let high_fd = pairs[high].1.as_raw_fd();
        let err = sel
            .register(&pairs[high].1, Token(high), Interest::READABLE)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains(&high_fd.to_string()), "{err}");
        assert!(
            err.to_string().contains("below 1024") && !err.to_string().contains("--"),
            "{err}"
        );
        // Nothing was written into the fd_sets or the registry.
        assert_eq!(format!("{sel:?}"), before);
        assert_eq!(sel.registration(high_fd), None);
        assert_eq!(sel.len(), 1);
        send(&pairs[high].0, b"x");
        send(&pairs[low].0, b"x");
        assert_eq!(tokens(&wait(&mut sel, SECOND)), vec![low]);
        return;
    }

    for (i, (_, b)) in pairs.iter().enumerate() {
        sel.register(b, Token(i), Interest::READABLE).unwrap();
    }
    assert_eq!(sel.len(), pairs.len());
    let chosen = [low, high, pairs.len() - 1];
    for &i in &chosen {
        send(&pairs[i].0, b"x");
    }
    let mut want: Vec<usize> = chosen.to_vec();
    want.sort_unstable();
    want.dedup();
    assert_eq!(tokens(&wait(&mut sel, SECOND)), want, "{mode:?}");
}
for_modes!(
    more_descriptors_than_fd_setsize,
    [select, poll, epoll_level, epoll_edge, epoll_oneshot]
);

/// A small deterministic generator (xorshift), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn thousands_of_socket_pairs(mode: Mode) {
    let _guard = exclusive();
    // select holds what fits below FD_SETSIZE; the others take thousands.
    let count = if mode.backend == Backend::Select {
        450
    } else {
        3000
    };
    let mut sel = mode.open();
    let pairs: Vec<_> = (0..count).map(|_| pair()).collect();
    for (i, (_, b)) in pairs.iter().enumerate() {
        sel.register(b, Token(i), Interest::READABLE).unwrap();
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut events = Events::with_capacity(64);
    for round in 0..30 {
        let mut chosen = BTreeSet::new();
        while chosen.len() < 100 {
            chosen.insert(rng.below(count));
        }
        for &i in &chosen {
            send(&pairs[i].0, &[round as u8]);
        }
        // Collect until every chosen pair was reported (bounded number of waits).
        let mut seen = BTreeSet::new();
        for _ in 0..100 {
            if seen.len() == chosen.len() {
                break;
            }
            sel.select(&mut events, SECOND).unwrap();
            assert!(
                !events.is_empty(),
                "{mode:?} round {round}: a wait timed out"
            );
            for e in &events {
                let i = e.token().0;
                assert!(
                    chosen.contains(&i),
                    "{mode:?} round {round}: {i} was not written"
                );
                assert!(e.is_readable());
                if seen.insert(i) {
                    assert_eq!(drain(&pairs[i].1), 1);
                    if mode.trigger == Trigger::Oneshot {
                        sel.reregister(&pairs[i].1, Token(i), Interest::READABLE)
                            .unwrap();
                    }
                }
            }
        }
        assert_eq!(seen, chosen, "{mode:?} round {round}");
    }
    assert_eq!(
        wait(&mut sel, Some(Duration::ZERO)),
        vec![],
        "{mode:?}: all drained"
    );
    for (_, b) in &pairs {
        sel.deregister(b).unwrap();
    }
    assert!(sel.is_empty());
}
for_modes!(
    thousands_of_socket_pairs,
    [select, poll, epoll_level, epoll_edge, epoll_oneshot]
);
