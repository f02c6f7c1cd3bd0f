//! [`Registry`]: registering into a selector from any thread, one
//! implementation over every backend.

use super::base::Syscalls;
use super::table::{lock, FdTable, Request};
use super::{Registration, Trigger};
use crate::{Interest, Token};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// What a selector shares with its registry handles.
#[derive(Debug)]
pub(crate) struct Shared<S: Syscalls> {
    pub(crate) table: Mutex<FdTable<S::State>>,
    /// Set, under the table's lock, when a handle queued a change for the
    /// waiting thread (or asked for the doorbell): the one thing a wait
    /// looks at for the handles.
    pub(crate) queued: AtomicBool,
    /// The backend's any-thread system calls, if it has them (epoll).
    pub(crate) remote: Option<S::Remote>,
    /// The selector's own trigger, which `register` uses.
    trigger: Trigger,
}

impl<S: Syscalls> Shared<S> {
    pub(crate) fn new(remote: Option<S::Remote>, trigger: Trigger) -> Self {
        Shared {
            table: Mutex::new(FdTable::new()),
            queued: AtomicBool::new(false),
            remote,
            trigger,
        }
    }
}

/// A [`Shared`] of any backend, as a [`Registry`] holds it.
pub(crate) trait AnyShared: fmt::Debug + Send + Sync {
    /// Check `request` and carry it out (or queue it for the waiting thread).
    fn change(&self, request: Request) -> io::Result<Registration>;

    /// The trigger a `reregister` of `fd` keeps: its registration's, or the
    /// selector's for a descriptor not registered.
    fn trigger_of(&self, fd: Option<RawFd>) -> Trigger;
}

impl<S: Syscalls> AnyShared for Shared<S> {
    fn change(&self, request: Request) -> io::Result<Registration> {
        let mut table = lock(&self.table);
        table.check(S::BACKEND, request)?;
        if let Some(remote) = &self.remote {
            return table.apply(&mut remote.clone(), request);
        }
        if let Request::Register(reg) | Request::Reregister(reg) = request {
            S::check(&reg)?;
        }
        let reg = table.queue(request)?;
        self.queued.store(true, Ordering::Release);
        // Rung under the lock, so that the waiting thread, which resets it
        // under the lock before making what is queued, never misses a ring
        // nor keeps one for a change it already made.
        if let Some(doorbell) = &table.doorbell {
            doorbell.wake()?;
        }
        Ok(reg)
    }

    fn trigger_of(&self, fd: Option<RawFd>) -> Trigger {
        fd.and_then(|fd| lock(&self.table).visible(fd))
            .map_or(self.trigger, |r| r.trigger)
    }
}

/// Registers, changes and deregisters descriptors on a selector from any
/// thread, even while the selector waits in another: made by
/// [`registry`](super::BaseSelector::registry) (every backend, and
/// [`AnySelector::registry`](super::AnySelector::registry)). Clones share
/// the selector; `Send` and `Sync`.
///
/// The handle and the selector keep one table of registrations, so the
/// selector's `len` and `registration` see a handle's change as soon as its
/// call returns, and every check is answered at once, by the call that
/// fails: `AlreadyExists`, `NotFound`, a bad interest or a trigger the
/// backend lacks (`InvalidInput`), a descriptor not open, and once the
/// selector is closed or dropped, every call.
///
/// When the kernel sees a change:
/// - epoll makes it at once, from the calling thread (`epoll_ctl` works from
///   any thread), so a wait already blocked sees it;
/// - select, poll, sigio and uring have the waiting thread make it: a change
///   made before a wait begins is made by that wait before it blocks; one
///   made while a wait blocks rings a doorbell (an eventfd the selector makes
///   and watches at its first wait after the first handle), which ends the
///   blocked system call. The wait then makes the change and goes on waiting
///   for the rest of its timeout: it does not return empty because of the
///   change, and it reports a newly registered descriptor that is (or
///   becomes) ready in time. sigio arms the descriptor's signals for its own
///   thread and looks for readiness already there; uring submits the poll
///   request through its ring. Should the waiting thread find it cannot make
///   a queued change (the descriptor was closed in between), the change is
///   dropped and the descriptor is then not registered.
///
/// Deregistering: once `deregister` returns, no wait that begins afterwards
/// reports the descriptor's old token, on any backend. A wait already
/// running in another thread may still report it, as it may have collected
/// the readiness before the call (on epoll too): a loop that deregisters
/// from another thread discards events for the tokens it retired. Deregister
/// before closing, as with the selector's own calls; on uring the poll
/// request keeps the file open until the waiting thread removes it (at once
/// if it is waiting, else at its next wait), so a peer sees the close then.
///
/// ```
/// use iomux::{Backend, Events, Interest, Registry, Selector, Token, Trigger};
/// use std::io::Write;
/// use std::time::Duration;
/// let mut sel = Backend::Select.open(Trigger::Level).unwrap();
/// let registry: Registry = sel.registry();
/// let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
/// a.write_all(b"x").unwrap();
/// let handle = registry.clone();
/// let _b = std::thread::spawn(move || handle.register(&b, Token(7), Interest::READABLE).map(|_| b))
///     .join()
///     .unwrap()
///     .unwrap();
/// assert_eq!(sel.len(), 1, "seen at once");
/// let mut events = Events::with_capacity(8);
/// sel.select(&mut events, Some(Duration::from_secs(10))).unwrap();
/// assert_eq!(events.iter().next().unwrap().token(), Token(7));
/// ```
#[derive(Debug, Clone)]
pub struct Registry {
    shared: Arc<dyn AnyShared>,
}

impl Registry {
    pub(crate) fn new(shared: Arc<dyn AnyShared>) -> Registry {
        Registry { shared }
    }

    /// [`Selector::register`](super::Selector::register) from any thread:
    /// with the selector's own trigger.
    ///
    /// ```
    /// use iomux::{Interest, PollSelector, Selector, Token};
    /// let sel = PollSelector::new().unwrap();
    /// let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// let registry = sel.registry();
    /// registry.register(&a, Token(1), Interest::READABLE).unwrap();
    /// let again = registry.register(&a, Token(2), Interest::READABLE).unwrap_err();
    /// assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists);
    /// ```
    pub fn register(
        &self,
        fd: impl AsFd,
        token: Token,
        interest: Interest,
    ) -> io::Result<Registration> {
        let trigger = self.shared.trigger_of(None);
        self.register_with_trigger(fd, token, interest, trigger)
    }

    /// [`Selector::register_with_trigger`](super::Selector::register_with_trigger)
    /// from any thread.
    ///
    /// ```
    /// use iomux::{Backend, Interest, Selector, Token, Trigger};
    /// let sel = Backend::Epoll.open(Trigger::Level).unwrap();
    /// let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// let reg = sel.registry()
    ///     .register_with_trigger(&a, Token(1), Interest::READABLE, Trigger::Oneshot)
    ///     .unwrap();
    /// assert_eq!(reg.trigger, Trigger::Oneshot);
    /// let poll = Backend::Poll.open(Trigger::Level).unwrap();
    /// let err = poll.registry().register_with_trigger(&a, Token(1), Interest::READABLE, Trigger::Edge);
    /// assert_eq!(err.unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
    /// ```
    pub fn register_with_trigger(
        &self,
        fd: impl AsFd,
        token: Token,
        interest: Interest,
        trigger: Trigger,
    ) -> io::Result<Registration> {
        let reg = Registration::of(fd, token, interest, trigger);
        self.shared.change(Request::Register(reg))
    }

    /// [`Selector::reregister`](super::Selector::reregister) from any thread:
    /// keeps the registration's trigger.
    ///
    /// ```
    /// use iomux::{Backend, Interest, Selector, Token, Trigger};
    /// let sel = Backend::Uring.open(Trigger::Edge);
    /// # let Ok(sel) = sel else { return };
    /// let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// let registry = sel.registry();
    /// registry.register(&a, Token(1), Interest::READABLE).unwrap();
    /// let reg = registry.reregister(&a, Token(2), Interest::WRITABLE).unwrap();
    /// assert_eq!((reg.token, reg.trigger), (Token(2), Trigger::Edge));
    /// ```
    pub fn reregister(
        &self,
        fd: impl AsFd,
        token: Token,
        interest: Interest,
    ) -> io::Result<Registration> {
        let fd = fd.as_fd();
        let trigger = self.shared.trigger_of(Some(fd.as_raw_fd()));
        self.reregister_with_trigger(fd, token, interest, trigger)
    }

    /// [`Selector::reregister_with_trigger`](super::Selector::reregister_with_trigger)
    /// from any thread.
    ///
    /// ```
    /// use iomux::{EpollSelector, Interest, Selector, Token, Trigger};
    /// let sel = EpollSelector::new(Trigger::Edge).unwrap();
    /// let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// let registry = sel.registry();
    /// let err = registry.reregister_with_trigger(&a, Token(1), Interest::READABLE, Trigger::Level);
    /// assert_eq!(err.unwrap_err().kind(), std::io::ErrorKind::NotFound);
    /// registry.register(&a, Token(1), Interest::READABLE).unwrap();
    /// registry.reregister_with_trigger(&a, Token(1), Interest::READABLE, Trigger::Level).unwrap();
    /// assert_eq!(sel.registration(std::os::fd::AsRawFd::as_raw_fd(&a)).unwrap().trigger, Trigger::Level);
    /// ```
    pub fn reregister_with_trigger(
        &self,
        fd: impl AsFd,
        token: Token,
        interest: Interest,
        trigger: Trigger,
    ) -> io::Result<Registration> {
        let reg = Registration::of(fd, token, interest, trigger);
        self.shared.change(Request::Reregister(reg))
    }

    /// [`Selector::deregister`](super::Selector::deregister) from any thread
    /// (see above for what a wait running meanwhile may still report).
    ///
    /// ```
    /// use iomux::{Interest, SelectSelector, Selector, Token};
    /// let mut sel = SelectSelector::new().unwrap();
    /// let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// sel.register(&a, Token(1), Interest::READABLE).unwrap();
    /// let registry = sel.registry();
    /// assert_eq!(registry.deregister(&a).unwrap().token, Token(1));
    /// assert!(sel.is_empty());
    /// sel.close().unwrap();
    /// assert!(registry.deregister(&a).unwrap_err().to_string().contains("closed"));
    /// ```
    pub fn deregister(&self, fd: impl AsFd) -> io::Result<Registration> {
        self.shared
            .change(Request::Deregister(fd.as_fd().as_raw_fd()))
    }
}
