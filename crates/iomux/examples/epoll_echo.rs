//! An echo server on `epoll(7)`, level-triggered by default:
//! `cargo run -p iomux --example epoll_echo -- --addr 127.0.0.1:7000 --trigger edge`.
//!
//! The same loop runs in every mode because it reads until EAGAIN (edge) and
//! re-arms after each event (one-shot).

mod common;

use iomux::{EpollSelector, Interest, Selector, Trigger};

fn main() -> std::io::Result<()> {
    let flags = common::Flags::parse(&[("--trigger", "level|edge|oneshot")]);
    let trigger: Trigger = flags.get("--trigger", "level", None);
    let listener = flags.listen()?;
    let mut selector = EpollSelector::new(trigger)?;
    selector.register(&listener, common::LISTENER, Interest::READABLE)?;
    common::echo_loop(&mut selector, &listener)
}
