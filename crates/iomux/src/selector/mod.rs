//! The [`Selector`] interface and its backends.
//!
//! One selector, [`BaseSelector`], owns the table of registrations and
//! implements [`Selector`] once; each backend file supplies only its system
//! calls (watch, rewatch, unwatch, wait). [`Backend`] names the backends and
//! opens one at run time as an [`AnySelector`]; the concrete names
//! ([`EpollSelector`](epoll::EpollSelector) and the others) pick one at
//! compile time. A [`Registry`] registers into any of them from other
//! threads while it waits.

mod any;
mod backend;
mod base;
pub mod epoll;
mod interface;
pub mod poll;
mod registry;
pub mod select;
pub mod sigio;
mod table;
pub mod uring;

pub use any::AnySelector;
pub use backend::{Backend, Trigger, UnknownName};
pub use base::BaseSelector;
pub use interface::{Registration, Selector};
pub use registry::Registry;
