//! The [`Selector`] trait every selector implements, and the [`Registration`]
//! it reports.

use super::table::Request;
use super::Backend;
use super::Trigger;
use crate::waker::Waker;
use crate::{Events, Interest, Token};
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Duration;

/// What a selector knows about one registered descriptor.
///
/// ```
/// use iomux::{Backend, Interest, Selector, Token, Trigger};
/// use std::os::fd::AsRawFd;
/// let mut sel = Backend::Epoll.open(Trigger::Level).unwrap();
/// let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
/// let r = sel.register_with_trigger(&a, Token(1), Interest::READABLE, Trigger::Edge).unwrap();
/// assert_eq!((r.fd, r.token, r.trigger), (a.as_raw_fd(), Token(1), Trigger::Edge));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Registration {
    /// The descriptor number.
    pub fd: RawFd,
    /// The token events for it carry.
    pub token: Token,
    /// What it waits for.
    pub interest: Interest,
    /// How its readiness is reported.
    pub trigger: Trigger,
}

impl Registration {
    /// The registration a call asks for.
    pub(crate) fn of(fd: impl AsFd, token: Token, interest: Interest, trigger: Trigger) -> Self {
        Registration {
            fd: fd.as_fd().as_raw_fd(),
            token,
            interest,
            trigger,
        }
    }
}

/// One interface over every backend.
///
/// A selector holds registrations (descriptor, token, interest, trigger) and
/// waits for readiness. It borrows the descriptors only for the calls that
/// name them, and never owns or closes them: deregister a descriptor before
/// closing it (if one is closed first, its entry stays until deregistered
/// through whichever descriptor has the number next). Other threads register
/// into a selector while it waits through its [`Registry`](super::Registry)
/// (`registry()` on every selector).
///
/// ```
/// use iomux::{Events, Interest, PollSelector, Selector, Token};
/// let mut sel = PollSelector::new().unwrap();
/// let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
/// let reg = sel.register(&a, Token(1), Interest::WRITABLE).unwrap();
/// assert_eq!(reg.token, Token(1));
/// let mut events = Events::with_capacity(8);
/// sel.select(&mut events, Some(std::time::Duration::ZERO)).unwrap();
/// assert!(events.iter().any(|e| e.token() == Token(1) && e.is_writable()));
/// sel.deregister(&a).unwrap();
/// ```
pub trait Selector {
    /// Start watching `fd`, with the selector's own [`trigger`](Selector::trigger).
    /// Errors: an invalid interest (`InvalidInput`), a descriptor already
    /// registered (`AlreadyExists`), one the backend cannot watch, or a
    /// closed selector.
    ///
    /// ```
    /// use iomux::{Backend, Events, Interest, Selector, Token, Trigger};
    /// let mut sel = Backend::Epoll.open(Trigger::Level).unwrap();
    /// let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// let reg = sel.register(&a, Token(1), Interest::READABLE).unwrap();
    /// assert_eq!((reg.token, reg.trigger), (Token(1), Trigger::Level));
    /// let again = sel.register(&a, Token(2), Interest::READABLE).unwrap_err();
    /// assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists);
    /// # drop(b);
    /// ```
    fn register(
        &mut self,
        fd: impl AsFd,
        token: Token,
        interest: Interest,
    ) -> io::Result<Registration> {
        let trigger = self.trigger();
        self.register_with_trigger(fd, token, interest, trigger)
    }

    /// Start watching `fd` with `trigger`, whatever the selector's own: epoll
    /// and uring take all three per registration; a backend refuses a trigger
    /// it lacks (`InvalidInput`, naming the backends that have it).
    ///
    /// ```
    /// use iomux::{Backend, Events, Interest, Selector, Token, Trigger};
    /// use std::io::Write;
    /// use std::time::Duration;
    /// let mut sel = Backend::Epoll.open(Trigger::Level).unwrap();
    /// let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// sel.register_with_trigger(&b, Token(1), Interest::READABLE, Trigger::Oneshot).unwrap();
    /// a.write_all(b"x").unwrap();
    /// let mut events = Events::with_capacity(8);
    /// sel.select(&mut events, Some(Duration::ZERO)).unwrap();
    /// assert_eq!(events.len(), 1);
    /// sel.select(&mut events, Some(Duration::ZERO)).unwrap();
    /// assert!(events.is_empty(), "one-shot: silent until re-armed");
    ///
    /// let mut poll = Backend::Poll.open(Trigger::Level).unwrap();
    /// let err = poll.register_with_trigger(&b, Token(1), Interest::READABLE, Trigger::Edge);
    /// assert_eq!(err.unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
    /// ```
    #[inline]
    fn register_with_trigger(
        &mut self,
        fd: impl AsFd,
        token: Token,
        interest: Interest,
        trigger: Trigger,
    ) -> io::Result<Registration> {
        self.change(Request::Register(Registration::of(
            fd, token, interest, trigger,
        )))
    }

    /// Change the token and interest of a registered descriptor (and re-arm a
    /// one-shot registration), keeping its trigger. If the kernel refuses,
    /// the registration is removed, so no stale entry remains.
    ///
    /// ```
    /// use iomux::{Backend, Events, Interest, Selector, Token, Trigger};
    /// use std::os::fd::AsRawFd;
    /// let mut sel = Backend::Epoll.open(Trigger::Level).unwrap();
    /// let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// sel.register_with_trigger(&a, Token(1), Interest::READABLE, Trigger::Edge).unwrap();
    /// let reg = sel.reregister(&a, Token(2), Interest::WRITABLE).unwrap();
    /// assert_eq!(reg.trigger, Trigger::Edge);
    /// assert_eq!(sel.registration(a.as_raw_fd()), Some(reg));
    /// # drop(b);
    /// ```
    fn reregister(
        &mut self,
        fd: impl AsFd,
        token: Token,
        interest: Interest,
    ) -> io::Result<Registration> {
        let fd = fd.as_fd();
        let trigger = self
            .registration(fd.as_raw_fd())
            .map_or(self.trigger(), |r| r.trigger);
        self.reregister_with_trigger(fd, token, interest, trigger)
    }

    /// Change the token, interest and trigger of a registered descriptor (and
    /// re-arm it), like [`reregister`](Selector::reregister).
    ///
    /// ```
    /// use iomux::{Backend, Interest, Selector, Token, Trigger};
    /// let mut sel = Backend::Epoll.open(Trigger::Edge).unwrap();
    /// let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// sel.register(&a, Token(1), Interest::READABLE).unwrap();
    /// let reg = sel.reregister_with_trigger(&a, Token(1), Interest::READABLE, Trigger::Level).unwrap();
    /// assert_eq!(reg.trigger, Trigger::Level);
    /// ```
    #[inline]
    fn reregister_with_trigger(
        &mut self,
        fd: impl AsFd,
        token: Token,
        interest: Interest,
        trigger: Trigger,
    ) -> io::Result<Registration> {
        self.change(Request::Reregister(Registration::of(
            fd, token, interest, trigger,
        )))
    }

    /// Stop watching `fd`; fails (`NotFound`) for a descriptor not
    /// registered. A descriptor closed without being deregistered leaves its
    /// entry behind: deregistering whichever descriptor has its number next
    /// removes it.
    ///
    /// ```
    /// use iomux::{Backend, Events, Interest, Selector, Token, Trigger};
    /// let mut sel = Backend::Epoll.open(Trigger::Level).unwrap();
    /// let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// sel.register(&a, Token(1), Interest::READABLE).unwrap();
    /// assert_eq!(sel.deregister(&a).unwrap().token, Token(1));
    /// assert_eq!(sel.deregister(&a).unwrap_err().kind(), std::io::ErrorKind::NotFound);
    /// # drop(b);
    /// ```
    #[inline]
    fn deregister(&mut self, fd: impl AsFd) -> io::Result<Registration> {
        self.change(Request::Deregister(fd.as_fd().as_raw_fd()))
    }

    /// The one call behind register, reregister and deregister, which each
    /// selector implements: check `request` against the registrations and
    /// make it. `Request` is public only in name (it lives in a private
    /// module), so no other crate can implement [`Selector`].
    #[doc(hidden)]
    fn change(&mut self, request: Request) -> io::Result<Registration>;

    /// Wait for readiness: `None` waits for ever, `Some(ZERO)` polls, any other
    /// duration waits at least that long unless something is ready. Interrupted
    /// waits are retried with the remaining time. Fills `events` (cleared first).
    ///
    /// ```
    /// use iomux::{Backend, Events, Interest, Selector, Token, Trigger};
    /// use std::os::fd::AsRawFd;
    /// let mut sel = Backend::Epoll.open(Trigger::Level).unwrap();
    /// let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// sel.register(&a, Token(1), Interest::READABLE).unwrap();
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
    /// sel.register(&a, Token(1), Interest::READABLE).unwrap();
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
    /// sel.register(&a, Token(1), Interest::READABLE).unwrap();
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

    /// The trigger [`register`](Selector::register) uses (the one the
    /// selector was opened with); a registration may choose its own with
    /// [`register_with_trigger`](Selector::register_with_trigger).
    ///
    /// ```
    /// use iomux::{EpollSelector, Selector, Trigger};
    /// assert_eq!(EpollSelector::new(Trigger::Edge).unwrap().trigger(), Trigger::Edge);
    /// ```
    fn trigger(&self) -> Trigger;

    /// How many times the backend lost track of readiness and reported
    /// every registered descriptor instead, so the caller tries each (sigio,
    /// when the kernel's real-time signal queue overflows: RLIMIT_SIGPENDING,
    /// `ulimit -i`, too low for the load). Always 0 for the other backends.
    /// Worth reporting: each costs a pass over every descriptor.
    ///
    /// ```
    /// use iomux::{Backend, Selector, Trigger};
    /// assert_eq!(Backend::Sigio.open(Trigger::Edge).unwrap().overflows(), 0);
    /// ```
    fn overflows(&self) -> u64 {
        0
    }

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

    /// Forget every registration and release the kernel resources (an epoll
    /// selector keeps its own descriptor, emptied, until dropped: see its
    /// `AsFd`); every later call fails. Dropping does the same.
    ///
    /// ```
    /// use iomux::{Backend, Events, Interest, Selector, Token, Trigger};
    /// use std::os::fd::AsRawFd;
    /// let mut sel = Backend::Epoll.open(Trigger::Level).unwrap();
    /// let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// sel.close().unwrap();
    /// assert!(sel.register(&a, Token(1), Interest::READABLE).is_err());
    /// # drop(b);
    /// ```
    fn close(&mut self) -> io::Result<()>;
}
