//! An echo server on `select(2)`: `cargo run -p iomux --example select_echo -- --addr 127.0.0.1:7000`.
//!
//! select handles descriptors below 1024 only; try it with `nc 127.0.0.1 7000`.

mod common;

use iomux::{Interest, SelectSelector, Selector};

fn main() -> std::io::Result<()> {
    let listener = common::Flags::parse(&[]).listen()?;
    let mut selector = SelectSelector::new()?;
    selector.register(&listener, common::LISTENER, Interest::READABLE)?;
    common::echo_loop(&mut selector, &listener)
}
