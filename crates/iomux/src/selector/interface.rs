//! The [`Selector`] trait every selector implements, and the [`Registration`]
//! it reports.

use super::Backend;
use super::Trigger;
use crate::waker::Waker;
use crate::{Events, Interest, Token};
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// What a selector knows about one registered descriptor.
///
/// ```
/// use iomux::{Interest, Registration, Token};
/// let r = Registration { fd: 5, token: Token(1), interest: Interest::READABLE };
/// assert_eq!(r.fd, 5);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registration {
    /// The descriptor number.
    pub fd: RawFd,
    /// The token events for it carry.
    pub token: Token,
    /// What it waits for.
    pub interest: Interest,
}

/// One interface over every backend.
///
/// A selector holds registrations (descriptor, token, interest) and waits for
/// readiness. It never owns or closes the descriptors: deregister a descriptor
/// before closing it.
///
/// ```
/// use iomux::{Events, Interest, PollSelector, Selector, Token};
/// use std::os::fd::AsRawFd;
/// let mut sel = PollSelector::new().unwrap();
/// let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
/// let reg = sel.register(a.as_raw_fd(), Token(1), Interest::WRITABLE).unwrap();
/// assert_eq!(reg.token, Token(1));
/// let mut events = Events::with_capacity(8);
/// sel.select(&mut events, Some(std::time::Duration::ZERO)).unwrap();
/// assert!(events.iter().any(|e| e.token() == Token(1) && e.is_writable()));
/// sel.deregister(a.as_raw_fd()).unwrap();
/// ```
pub trait Selector {
    /// Start watching `fd`. Errors: an invalid interest or negative descriptor
    /// (`InvalidInput`), a descriptor already registered (`AlreadyExists`), one
    /// the backend cannot watch, or a closed selector.
    ///
    /// ```
    /// use iomux::{Backend, Events, Interest, Selector, Token, Trigger};
    /// use std::os::fd::AsRawFd;
    /// let mut sel = Backend::Epoll.open(Trigger::Level).unwrap();
    /// let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// let reg = sel.register(a.as_raw_fd(), Token(1), Interest::READABLE).unwrap();
    /// assert_eq!(reg.token, Token(1));
    /// let again = sel.register(a.as_raw_fd(), Token(2), Interest::READABLE).unwrap_err();
    /// assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists);
    /// # drop(b);
    /// ```
    fn register(&mut self, fd: RawFd, token: Token, interest: Interest)
        -> io::Result<Registration>;

    /// Change the token and interest of a registered descriptor (and re-arm a
    /// one-shot registration). If the kernel refuses, the registration is
    /// removed, so no stale entry remains.
    ///
    /// ```
    /// use iomux::{Backend, Events, Interest, Selector, Token, Trigger};
    /// use std::os::fd::AsRawFd;
    /// let mut sel = Backend::Epoll.open(Trigger::Level).unwrap();
    /// let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// sel.register(a.as_raw_fd(), Token(1), Interest::READABLE).unwrap();
    /// let reg = sel.reregister(a.as_raw_fd(), Token(2), Interest::WRITABLE).unwrap();
    /// assert_eq!(sel.registration(a.as_raw_fd()), Some(reg));
    /// # drop(b);
    /// ```
    fn reregister(
        &mut self,
        fd: RawFd,
        token: Token,
        interest: Interest,
    ) -> io::Result<Registration>;

    /// Stop watching `fd`. Succeeds even when the descriptor has already been
    /// closed or its number reused; fails (`NotFound`) for an unknown descriptor.
    ///
    /// ```
    /// use iomux::{Backend, Events, Interest, Selector, Token, Trigger};
    /// use std::os::fd::AsRawFd;
    /// let mut sel = Backend::Epoll.open(Trigger::Level).unwrap();
    /// let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// let fd = a.as_raw_fd();
    /// sel.register(fd, Token(1), Interest::READABLE).unwrap();
    /// drop(a); // closed before deregistering: still fine
    /// assert_eq!(sel.deregister(fd).unwrap().token, Token(1));
    /// assert_eq!(sel.deregister(fd).unwrap_err().kind(), std::io::ErrorKind::NotFound);
    /// # drop(b);
    /// ```
    fn deregister(&mut self, fd: RawFd) -> io::Result<Registration>;

    /// Wait for readiness: `None` waits for ever, `Some(ZERO)` polls, any other
    /// duration waits at least that long unless something is ready. Interrupted
    /// waits are retried with the remaining time. Fills `events` (cleared first).
    ///
    /// ```
    /// use iomux::{Backend, Events, Interest, Selector, Token, Trigger};
    /// use std::os::fd::AsRawFd;
    /// let mut sel = Backend::Epoll.open(Trigger::Level).unwrap();
    /// let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// sel.register(a.as_raw_fd(), Token(1), Interest::READABLE).unwrap();
    /// let mut events = Events::with_capacity(8);
    /// let start = std::time::Instant::now();
    /// sel.select(&mut events, Some(std::time::Duration::from_millis(5))).unwrap();
    /// assert!(events.is_empty() && start.elapsed() >= std::time::Duration::from_millis(5));
    /// # drop(b);
    /// ```
    fn select(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()>;

    /// The registration of `fd`, if any.
    ///
    /// ```
    /// use iomux::{Backend, Events, Interest, Selector, Token, Trigger};
    /// use std::os::fd::AsRawFd;
    /// let mut sel = Backend::Epoll.open(Trigger::Level).unwrap();
    /// let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// assert_eq!(sel.registration(a.as_raw_fd()), None);
    /// sel.register(a.as_raw_fd(), Token(1), Interest::READABLE).unwrap();
    /// assert_eq!(sel.registration(a.as_raw_fd()).unwrap().interest, Interest::READABLE);
    /// # drop(b);
    /// ```
    fn registration(&self, fd: RawFd) -> Option<Registration>;

    /// Number of registered descriptors (wakers included).
    ///
    /// ```
    /// use iomux::{Backend, Events, Interest, Selector, Token, Trigger};
    /// use std::os::fd::AsRawFd;
    /// let mut sel = Backend::Epoll.open(Trigger::Level).unwrap();
    /// let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// sel.register(a.as_raw_fd(), Token(1), Interest::READABLE).unwrap();
    /// let _waker = sel.waker(Token(2)).unwrap();
    /// assert_eq!(sel.len(), 2);
    /// # drop(b);
    /// ```
    fn len(&self) -> usize;

    /// True when nothing is registered.
    ///
    /// ```
    /// use iomux::Selector;
    /// assert!(iomux::PollSelector::new().unwrap().is_empty());
    /// ```
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Which backend this is.
    ///
    /// ```
    /// use iomux::Selector;
    /// assert_eq!(iomux::SelectSelector::new().unwrap().backend(), iomux::Backend::Select);
    /// ```
    fn backend(&self) -> Backend;

    /// How readiness is reported.
    ///
    /// ```
    /// use iomux::{EpollSelector, Selector, Trigger};
    /// assert_eq!(EpollSelector::new(Trigger::Edge).unwrap().trigger(), Trigger::Edge);
    /// ```
    fn trigger(&self) -> Trigger;

    /// A handle that wakes this selector's wait from any thread; each wake
    /// makes the selector report an event with `token` (wakes coalesce until
    /// then). Several wakers per selector may exist.
    ///
    /// ```
    /// use iomux::{Backend, Events, Interest, Selector, Token, Trigger};
    /// use std::os::fd::AsRawFd;
    /// let mut sel = Backend::Epoll.open(Trigger::Level).unwrap();
    /// let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// let waker = sel.waker(Token(9)).unwrap();
    /// waker.wake().unwrap();
    /// waker.wake().unwrap();
    /// let mut events = Events::with_capacity(8);
    /// sel.select(&mut events, None).unwrap();
    /// assert_eq!(events.len(), 1, "two wakes, one event");
    /// # drop((a, b));
    /// ```
    fn waker(&mut self, token: Token) -> io::Result<Waker>;

    /// Release the kernel resources; every later call fails. Dropping does the same.
    ///
    /// ```
    /// use iomux::{Backend, Events, Interest, Selector, Token, Trigger};
    /// use std::os::fd::AsRawFd;
    /// let mut sel = Backend::Epoll.open(Trigger::Level).unwrap();
    /// let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// sel.close().unwrap();
    /// assert!(sel.register(a.as_raw_fd(), Token(1), Interest::READABLE).is_err());
    /// # drop(b);
    /// ```
    fn close(&mut self) -> io::Result<()>;
}
