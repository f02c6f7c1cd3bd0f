//! The one selector: [`BaseSelector`] owns the descriptor table and
//! implements [`Selector`] once, over a backend that supplies only its system
//! calls through [`Syscalls`] (the shape of CPython's `_BaseSelectorImpl`).

use super::table::FdTable;
use super::{Backend, Registration, Selector, Trigger};
use crate::waker::Waker;
use crate::{Events, Interest, Token};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
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
    /// ready, at most its capacity.
    fn wait(
        &mut self,
        table: &mut FdTable<Self::State>,
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
    pub(crate) table: FdTable<S::State>,
}

impl<S: Syscalls> BaseSelector<S> {
    pub(crate) fn with(sys: S) -> Self {
        BaseSelector {
            sys,
            table: FdTable::new(),
        }
    }

    /// The registration a register or reregister call asks for, once its
    /// arguments are checked: a valid interest, a trigger the backend has.
    pub(crate) fn checked(
        &self,
        fd: BorrowedFd<'_>,
        token: Token,
        interest: Interest,
        trigger: Trigger,
    ) -> io::Result<Registration> {
        self.table.check_open()?;
        S::BACKEND.check_trigger(trigger)?;
        self.table
            .check_args(fd.as_raw_fd(), token, interest, trigger)
    }

    /// Register `reg` with the backend's own way of watching it, so that
    /// variants (a waker, epoll's exclusive listeners) share the bookkeeping.
    #[inline]
    pub(crate) fn register_by(
        &mut self,
        reg: Registration,
        watch: impl FnOnce(&mut S, Registration) -> io::Result<S::State>,
    ) -> io::Result<Registration> {
        self.table.check_absent(reg.fd)?;
        let state = watch(&mut self.sys, reg)?;
        self.table.insert(reg, state);
        Ok(reg)
    }
}

impl<S: Syscalls> BaseSelector<S> {
    /// Remove the registration of descriptor number `fd` and stop watching it.
    fn forget(&mut self, fd: RawFd) -> io::Result<Registration> {
        let (reg, state) = self.table.remove(fd)?;
        self.sys.unwatch(&mut self.table, reg, state)?;
        Ok(reg)
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
        let reg = self.checked(fd.as_fd(), token, interest, trigger)?;
        self.register_by(reg, S::watch)
    }

    #[inline]
    fn reregister_with_trigger(
        &mut self,
        fd: impl AsFd,
        token: Token,
        interest: Interest,
        trigger: Trigger,
    ) -> io::Result<Registration> {
        let reg = self.checked(fd.as_fd(), token, interest, trigger)?;
        let fd = reg.fd;
        let old = self.table.expect(fd)?;
        match self.sys.rewatch(old, reg) {
            Ok(state) => {
                self.table.insert(reg, state);
                Ok(reg)
            }
            Err(e) => {
                let _ = self.forget(fd);
                Err(reregister_failed(fd, e))
            }
        }
    }

    #[inline]
    fn deregister(&mut self, fd: impl AsFd) -> io::Result<Registration> {
        self.forget(fd.as_fd().as_raw_fd())
    }

    #[inline]
    fn select(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        events.clear();
        self.table.check_open()?;
        self.sys.wait(&mut self.table, events, timeout)?;
        self.table.reset_fired_wakers(events);
        Ok(())
    }

    fn registration(&self, fd: RawFd) -> Option<Registration> {
        self.table.get(fd).map(|(r, _)| *r)
    }

    fn len(&self) -> usize {
        self.table.len()
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
        self.table.check_open()?;
        let waker = Waker::new()?;
        let reg =
            self.table
                .check_args(waker.as_raw_fd(), token, Interest::READABLE, Trigger::Level)?;
        self.register_by(reg, S::watch_waker)?;
        self.table.add_waker(token, waker.clone());
        Ok(waker)
    }

    fn close(&mut self) -> io::Result<()> {
        self.table.check_open()?;
        let result = self.sys.close(&mut self.table);
        self.table.close();
        result
    }
}

impl<S: Syscalls> Drop for BaseSelector<S> {
    fn drop(&mut self) {
        if !self.table.is_closed() {
            let _ = self.close();
        }
    }
}

/// The error of a re-registration the kernel refused, after which the
/// registration was removed (so nothing stale remains).
fn reregister_failed(fd: RawFd, err: io::Error) -> io::Error {
    let (kind, reason) = match err.raw_os_error() {
        Some(libc::EBADF) => (
            io::ErrorKind::InvalidInput,
            "the descriptor is not open".to_string(),
        ),
        Some(libc::ENOENT) => (
            io::ErrorKind::InvalidInput,
            "the descriptor was closed and its number reused".to_string(),
        ),
        _ => (err.kind(), err.to_string()),
    };
    io::Error::new(
        kind,
        format!("cannot reregister descriptor {fd} ({reason}); its registration was removed: deregister before closing, and register the new descriptor"),
    )
}
