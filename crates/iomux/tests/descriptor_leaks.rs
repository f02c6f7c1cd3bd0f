//! Opening and dropping (or closing) selectors of every backend leaves no
//! descriptor behind. Its own process with one test, so that no other test
//! opens descriptors while /proc/self/fd is counted.

#[allow(unused_macros)] // for_modes: this file runs its modes in one test
mod common;

use common::{mode, pair, skipped};
use iomux::{Events, Interest, Selector, Token};
use std::time::Duration;

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

#[test]
fn a_thousand_selectors_of_each_mode_leak_no_descriptor() {
    let names = [
        "select",
        "poll",
        "epoll_level",
        "epoll_edge",
        "epoll_oneshot",
        "sigio",
        "uring_level",
        "uring_edge",
        "uring_oneshot",
    ];
    let (a, _b) = pair();
    let mut events = Events::with_capacity(8);
    for name in names {
        let mode = mode(name);
        if skipped(mode) {
            continue;
        }
        let before = open_descriptors();
        for i in 0..1000 {
            let mut sel = mode.open();
            sel.register(&a, Token(1), Interest::BOTH).unwrap();
            let waker = sel.waker(Token(2)).unwrap();
            waker.wake().unwrap();
            sel.select(&mut events, Some(Duration::ZERO)).unwrap();
            if i % 2 == 0 {
                // Closed, then every use refused; dropped with the rest.
                sel.close().unwrap();
                assert!(sel.select(&mut events, Some(Duration::ZERO)).is_err());
            }
            drop(sel);
            // A waker outliving its selector still wakes its own eventfd.
            waker.wake().unwrap();
        }
        assert_eq!(open_descriptors(), before, "{mode:?} leaked descriptors");
    }
}
