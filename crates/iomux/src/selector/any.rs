//! The run-time choice of backend: one enum over every selector.

use super::epoll::EpollSelector;
use super::poll::PollSelector;
use super::select::SelectSelector;
use super::sigio::SigioSelector;
use super::table::Request;
use super::uring::UringSelector;
use super::{Backend, Registration, Registry, Selector, Trigger};
use crate::waker::Waker;
use crate::{Events, Token};
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// A selector chosen at run time.
///
/// ```
/// use iomux::{Backend, Selector, Trigger};
/// for b in [Backend::Select, Backend::Poll, Backend::Epoll] {
///     assert_eq!(b.open(Trigger::Level).unwrap().backend(), b);
/// }
/// let sigio = Backend::Sigio.open(Trigger::Edge).unwrap();
/// assert_eq!(sigio.trigger(), Trigger::Edge);
/// ```
#[derive(Debug)]
#[non_exhaustive]
#[allow(clippy::large_enum_variant)] // select's two fd_sets; boxing would cost a pointer chase per call
pub enum AnySelector {
    /// select(2)
    Select(SelectSelector),
    /// poll(2)
    Poll(PollSelector),
    /// epoll(7)
    Epoll(EpollSelector),
    /// signal-driven I/O
    Sigio(SigioSelector),
    /// io_uring poll requests
    Uring(UringSelector),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnySelector::Select($s) => $e,
            AnySelector::Poll($s) => $e,
            AnySelector::Epoll($s) => $e,
            AnySelector::Sigio($s) => $e,
            AnySelector::Uring($s) => $e,
        }
    };
}

impl AnySelector {
    /// The selector's [`Registry`]: registers into it from any thread,
    /// whichever the backend (see [`BaseSelector::registry`](super::BaseSelector::registry)).
    ///
    /// ```
    /// use iomux::{Backend, Interest, Selector, Token, Trigger};
    /// let sel = Backend::Sigio.open(Trigger::Edge).unwrap();
    /// let registry = sel.registry();
    /// let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// std::thread::scope(|s| {
    ///     s.spawn(|| registry.register(&a, Token(1), Interest::READABLE).unwrap());
    /// });
    /// assert_eq!(sel.len(), 1);
    /// ```
    pub fn registry(&self) -> Registry {
        dispatch!(self, s => s.registry())
    }
}

impl Selector for AnySelector {
    #[inline]
    fn change(&mut self, request: Request) -> io::Result<Registration> {
        dispatch!(self, s => s.change(request))
    }
    fn select(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        dispatch!(self, s => s.select(events, timeout))
    }
    fn registration(&self, fd: RawFd) -> Option<Registration> {
        dispatch!(self, s => s.registration(fd))
    }
    fn len(&self) -> usize {
        dispatch!(self, s => s.len())
    }
    fn backend(&self) -> Backend {
        dispatch!(self, s => s.backend())
    }
    fn trigger(&self) -> Trigger {
        dispatch!(self, s => s.trigger())
    }
    fn overflows(&self) -> u64 {
        dispatch!(self, s => s.overflows())
    }
    fn waker(&mut self, token: Token) -> io::Result<Waker> {
        dispatch!(self, s => s.waker(token))
    }
    fn close(&mut self) -> io::Result<()> {
        dispatch!(self, s => s.close())
    }
}
