#![warn(missing_docs)]
//! iomux: one [`Selector`] interface over `select(2)`, `poll(2)`, `epoll(7)`,
//! signal-driven I/O and io_uring poll requests.
//!
//! Register descriptors (anything [`AsFd`](std::os::fd::AsFd): the selector
//! borrows them, never owns them) with a [`Token`] and an [`Interest`], wait
//! for [`Events`] with an optional timeout, and wake a blocked wait from
//! another thread with a [`Waker`]. The backend is chosen at run time
//! ([`Backend`]) or at compile time by naming the concrete selector, which the
//! event loop then calls directly.
//!
//! Each registration may choose its own [`Trigger`] (level, edge or
//! one-shot) where the backend has it ([`Selector::register_with_trigger`]).
//! Every selector can be registered into from other threads while it waits,
//! through a cloneable [`Registry`] ([`AnySelector::registry`]); an
//! [`EpollSelector`] is also itself a descriptor (`AsFd`) that another event
//! loop can watch.
//!
//! ```
//! use iomux::{Backend, Events, Interest, Selector, Token};
//! use std::io::Write;
//! use std::os::unix::net::UnixStream;
//! use std::time::Duration;
//!
//! # fn main() -> std::io::Result<()> {
//! let mut selector = Backend::Epoll.open(iomux::Trigger::Level)?;
//! let (mut a, b) = UnixStream::pair()?;
//! selector.register(&b, Token(7), Interest::READABLE)?;
//! a.write_all(b"ping")?;
//! let mut events = Events::with_capacity(16);
//! selector.select(&mut events, Some(Duration::from_secs(1)))?;
//! assert_eq!(events.iter().next().map(|e| e.token()), Some(Token(7)));
//! # Ok(())
//! # }
//! ```

#[cfg(not(target_os = "linux"))]
compile_error!(
    "iomux supports Linux only: its selectors are built on epoll, signalfd, eventfd and io_uring"
);

mod event;
pub mod net;
pub mod selector;
mod sys;
pub mod timer;
mod waker;

pub use event::{Event, Events, Interest, Token};
pub use selector::epoll::EpollSelector;
pub use selector::poll::PollSelector;
pub use selector::select::SelectSelector;
pub use selector::{AnySelector, Backend, Registration, Registry, Selector, Trigger, UnknownName};
pub use timer::TimerWheel;
pub use waker::Waker;
