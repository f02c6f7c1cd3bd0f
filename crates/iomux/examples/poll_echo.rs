//! An echo server on `poll(2)`: `cargo run -p iomux --example poll_echo -- --addr 127.0.0.1:7000`.

mod common;

use iomux::{Interest, PollSelector, Selector};

fn main() -> std::io::Result<()> {
    let listener = common::Flags::parse(&[]).listen()?;
    let mut selector = PollSelector::new()?;
    selector.register(&listener, common::LISTENER, Interest::READABLE)?;
    common::echo_loop(&mut selector, &listener)
}
