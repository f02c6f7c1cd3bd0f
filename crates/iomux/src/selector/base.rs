//! The one selector: [`BaseSelector`] owns the descriptor table and
//! implements [`Selector`] once, over a backend that supplies only its system
//! calls through [`Syscalls`] (the shape of CPython's `_BaseSelectorImpl`).

use super::table::{lock, shared, FdTable, SharedTable};
use super::{Backend, Registration, Selector, Trigger};
use crate::waker::Waker;
use crate::{Events, Interest, Token};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// What a backend supplies: the system calls that watch, re-watch, unwatch
/// and wait. Argument checks, the table of registrations, wakers and the
/// closed state are [`BaseSelector`]'s. Public only in name (it lives in a
/// private module), so no other crate can implement it.
pub trait Syscalls: fmt::Debug {
    /// What the backend keeps per registration beside token and interest.
    type State: Copy + fmt::Debug;

    /// The backend these system calls belong to.
    const BACKEND: Backend;

    /// How readiness is reported.
    fn trigger(&self) -> Trigger;

    /// Start watching `reg.fd`, whose arguments were checked and which is not
    /// registered; returns the backend's state for it. Nothing is recorded if
    /// this fails.
    fn watch(&mut self, reg: Registration) -> io::Result<Self::State>;

    /// Watch a waker's eventfd for readability, level-triggered whatever the
    /// selector's trigger: the selector resets the eventfd when it reports
    /// it, so an edge or one-shot registration would only lose wakes.
    fn watch_waker(&mut self, reg: Registration) -> io::Result<Self::State> {
        self.watch(reg)
    }

    /// Change what a registered descriptor is watched for (and re-arm a
    /// one-shot one): `old` is its registration and state, `new` the checked
    /// arguments. If this fails, the selector deregisters the descriptor.
    fn rewatch(
        &mut self,
        old: (Registration, Self::State),
        new: Registration,
    ) -> io::Result<Self::State>;

    /// Stop watching a registration already removed from `table`. The
    /// descriptor may have been closed, or its number reused.
    fn unwatch(
        &mut self,
        table: &mut FdTable<Self::State>,
        reg: Registration,
        state: Self::State,
    ) -> io::Result<()>;

    /// Wait up to `timeout` and fill `events` (empty on entry) with what is
    /// ready, at most its capacity. `table` is shared with registration
    /// handles: lock it only around the work that reads or changes it, never
    /// across the blocking system call.
    fn wait(
        &mut self,
        table: &Mutex<FdTable<Self::State>>,
        events: &mut Events,
        timeout: Option<Duration>,
    ) -> io::Result<()>;

    /// How many times readiness may have been lost and every descriptor was
    /// reported instead (see [`Selector::overflows`]).
    fn overflows(&self) -> u64 {
        0
    }

    /// Release the kernel resources; `table` still holds every registration
    /// and is emptied by the selector afterwards.
    fn close(&mut self, table: &mut FdTable<Self::State>) -> io::Result<()>;
}

/// The selector over one backend's system calls: [`EpollSelector`],
/// [`PollSelector`], [`SelectSelector`], [`SigioSelector`] and
/// [`UringSelector`] are this type over their backends, and each backend's
/// constructor and extras are documented with those names.
///
/// [`EpollSelector`]: crate::EpollSelector
/// [`PollSelector`]: crate::PollSelector
/// [`SelectSelector`]: crate::SelectSelector
/// [`SigioSelector`]: super::sigio::SigioSelector
/// [`UringSelector`]: super::uring::UringSelector
///
/// ```
/// use iomux::{Interest, PollSelector, Selector, Token};
/// use std::os::fd::AsRawFd;
/// let mut sel = PollSelector::new().unwrap();
/// let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
/// sel.register(&a, Token(1), Interest::READABLE).unwrap();
/// assert_eq!(sel.len(), 1);
/// ```
#[derive(Debug)]
pub struct BaseSelector<S: Syscalls> {
    pub(crate) sys: S,
    /// Shared with the registration handles of backends that have them
    /// (epoll's [`registry`](crate::EpollSelector::registry)); never locked
    /// while a wait blocks.
    pub(crate) table: SharedTable<S::State>,
}

impl<S: Syscalls> BaseSelector<S> {
    pub(crate) fn with(sys: S) -> Self {
        BaseSelector {
            sys,
            table: shared(),
        }
    }

    /// Lock `table` for a register or reregister call, and check the
    /// registration it asks for: an open selector, a valid interest, a
    /// trigger the backend has.
    pub(crate) fn lock_checked<'t>(
        table: &'t SharedTable<S::State>,
        fd: BorrowedFd<'_>,
        token: Token,
        interest: Interest,
        trigger: Trigger,
    ) -> io::Result<(MutexGuard<'t, FdTable<S::State>>, Registration)> {
        let table = lock(table);
        table.check_open()?;
        S::BACKEND.check_trigger(trigger)?;
        let reg = table.check_args(fd.as_raw_fd(), token, interest, trigger)?;
        Ok((table, reg))
    }
}

impl<S: Syscalls> Selector for BaseSelector<S> {
    #[inline]
    fn register_with_trigger(
        &mut self,
        fd: impl AsFd,
        token: Token,
        interest: Interest,
        trigger: Trigger,
    ) -> io::Result<Registration> {
        let (mut table, reg) =
            Self::lock_checked(&self.table, fd.as_fd(), token, interest, trigger)?;
        table.register_by(&mut self.sys, reg, S::watch)
    }

    #[inline]
    fn reregister_with_trigger(
        &mut self,
        fd: impl AsFd,
        token: Token,
        interest: Interest,
        trigger: Trigger,
    ) -> io::Result<Registration> {
        let (mut table, reg) =
            Self::lock_checked(&self.table, fd.as_fd(), token, interest, trigger)?;
        table.reregister_by(&mut self.sys, reg, S::rewatch, S::unwatch)
    }

    #[inline]
    fn deregister(&mut self, fd: impl AsFd) -> io::Result<Registration> {
        let fd = fd.as_fd().as_raw_fd();
        lock(&self.table).deregister_by(&mut self.sys, fd, S::unwatch)
    }

    #[inline]
    fn select(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        events.clear();
        lock(&self.table).check_open()?;
        self.sys.wait(&self.table, events, timeout)?;
        lock(&self.table).reset_fired_wakers(events);
        Ok(())
    }

    fn registration(&self, fd: RawFd) -> Option<Registration> {
        lock(&self.table).get(fd).map(|(r, _)| *r)
    }

    fn len(&self) -> usize {
        lock(&self.table).len()
    }

    fn backend(&self) -> Backend {
        S::BACKEND
    }

    fn trigger(&self) -> Trigger {
        self.sys.trigger()
    }

    fn overflows(&self) -> u64 {
        self.sys.overflows()
    }

    fn waker(&mut self, token: Token) -> io::Result<Waker> {
        let mut table = lock(&self.table);
        table.check_open()?;
        let waker = Waker::new()?;
        let reg = table.check_args(waker.as_raw_fd(), token, Interest::READABLE, Trigger::Level)?;
        table.register_by(&mut self.sys, reg, S::watch_waker)?;
        table.add_waker(token, waker.clone());
        Ok(waker)
    }

    fn close(&mut self) -> io::Result<()> {
        let mut table = lock(&self.table);
        table.check_open()?;
        let result = self.sys.close(&mut table);
        table.close();
        result
    }
}

impl<S: Syscalls> Drop for BaseSelector<S> {
    fn drop(&mut self) {
        if !lock(&self.table).is_closed() {
            let _ = self.close();
        }
    }
}
