//! The descriptor table every selector keeps: what is registered, under which
//! token and interest, plus whatever its backend keeps per descriptor.

use super::{Registration, Trigger};
use crate::waker::Waker;
use crate::{Events, Interest, Token};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Registrations indexed by descriptor number (descriptors are small, dense
/// integers, so a vector beats a map), the wakers to reset once reported, and
/// whether the selector was closed. `T` is what the backend keeps beside token
/// and interest.
#[derive(Debug)]
pub struct FdTable<T: Copy> {
    slots: Vec<Option<(Registration, T)>>,
    count: usize,
    wakers: Vec<(Token, Waker)>,
    closed: bool,
}

impl<T: Copy> FdTable<T> {
    pub(crate) fn new() -> Self {
        FdTable {
            slots: Vec::new(),
            count: 0,
            wakers: Vec::new(),
            closed: false,
        }
    }

    /// Fail if the selector was closed.
    #[inline]
    pub(crate) fn check_open(&self) -> io::Result<()> {
        if self.closed {
            Err(io::Error::other("the selector is closed; open a new one"))
        } else {
            Ok(())
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Check the arguments of a register or reregister call; returns the
    /// registration they ask for.
    pub(crate) fn check_args(
        &self,
        fd: RawFd,
        token: Token,
        interest: Interest,
        trigger: Trigger,
    ) -> io::Result<Registration> {
        self.check_open()?;
        if !interest.is_valid() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid interest {interest:?}: use READABLE, WRITABLE or both"),
            ));
        }
        Ok(Registration {
            fd,
            token,
            interest,
            trigger,
        })
    }

    /// Fail with `AlreadyExists` if `fd` is registered.
    pub(crate) fn check_absent(&self, fd: RawFd) -> io::Result<()> {
        match self.get(fd) {
            Some(_) => Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("descriptor {fd} is already registered; use reregister to change it"),
            )),
            None => Ok(()),
        }
    }

    #[inline]
    pub(crate) fn get(&self, fd: RawFd) -> Option<&(Registration, T)> {
        self.slots.get(fd as usize).and_then(|s| s.as_ref())
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, fd: RawFd) -> Option<&mut (Registration, T)> {
        self.slots.get_mut(fd as usize).and_then(|s| s.as_mut())
    }

    /// The registration of `fd`, or `NotFound`.
    pub(crate) fn expect(&self, fd: RawFd) -> io::Result<(Registration, T)> {
        self.check_open()?;
        self.get(fd).copied().ok_or_else(|| not_registered(fd))
    }

    pub(crate) fn insert(&mut self, reg: Registration, state: T) {
        let i = reg.fd as usize;
        if i >= self.slots.len() {
            self.slots.resize(i + 1, None);
        }
        if self.slots[i].replace((reg, state)).is_none() {
            self.count += 1;
        }
    }

    pub(crate) fn remove(&mut self, fd: RawFd) -> io::Result<(Registration, T)> {
        self.check_open()?;
        let slot = self
            .slots
            .get_mut(fd as usize)
            .and_then(Option::take)
            .ok_or_else(|| not_registered(fd))?;
        self.count -= 1;
        self.wakers.retain(|(_, w)| w.as_raw_fd() != fd);
        Ok(slot)
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// Remember a waker so its wake-ups can be consumed when reported.
    pub(crate) fn add_waker(&mut self, token: Token, waker: Waker) {
        self.wakers.push((token, waker));
    }

    /// Reset the wakers that fired, so a level-triggered backend does not
    /// report them again until the next wake.
    #[inline]
    pub(crate) fn reset_fired_wakers(&self, events: &Events) {
        if self.wakers.is_empty() {
            return;
        }
        for e in events {
            if let Some((_, w)) = self.wakers.iter().find(|(t, _)| *t == e.token()) {
                w.reset();
            }
        }
    }

    /// Forget everything and refuse further use.
    pub(crate) fn close(&mut self) {
        self.slots = Vec::new();
        self.count = 0;
        self.wakers.clear();
        self.closed = true;
    }

    /// Record `reg` (its arguments checked) once `watch`, the backend's
    /// system calls on `sys`, has started watching it; nothing is recorded if
    /// they fail.
    pub(crate) fn register_by<S>(
        &mut self,
        sys: &mut S,
        reg: Registration,
        watch: impl FnOnce(&mut S, Registration) -> io::Result<T>,
    ) -> io::Result<Registration> {
        self.check_absent(reg.fd)?;
        let state = watch(sys, reg)?;
        self.insert(reg, state);
        Ok(reg)
    }

    /// Change a registration to `reg` through `rewatch` (given the old
    /// registration and state); if the kernel refuses, the registration is
    /// removed through `unwatch`, so that no stale entry remains.
    pub(crate) fn reregister_by<S>(
        &mut self,
        sys: &mut S,
        reg: Registration,
        rewatch: impl FnOnce(&mut S, (Registration, T), Registration) -> io::Result<T>,
        unwatch: impl FnOnce(&mut S, &mut Self, Registration, T) -> io::Result<()>,
    ) -> io::Result<Registration> {
        let old = self.expect(reg.fd)?;
        match rewatch(sys, old, reg) {
            Ok(state) => {
                self.insert(reg, state);
                Ok(reg)
            }
            Err(e) => {
                let _ = self.deregister_by(sys, reg.fd, unwatch);
                Err(reregister_failed(reg.fd, e))
            }
        }
    }

    /// Remove the registration of descriptor number `fd` and stop watching
    /// it through `unwatch`.
    pub(crate) fn deregister_by<S>(
        &mut self,
        sys: &mut S,
        fd: RawFd,
        unwatch: impl FnOnce(&mut S, &mut Self, Registration, T) -> io::Result<()>,
    ) -> io::Result<Registration> {
        let (reg, state) = self.remove(fd)?;
        unwatch(sys, self, reg, state)?;
        Ok(reg)
    }

    /// Iterate over the registrations in descriptor order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &(Registration, T)> {
        self.slots.iter().flatten()
    }
}

/// The table shared by a selector and its registration handles.
pub(crate) type SharedTable<T> = Arc<Mutex<FdTable<T>>>;

pub(crate) fn shared<T: Copy>() -> SharedTable<T> {
    Arc::new(Mutex::new(FdTable::new()))
}

/// Lock a shared table; a panic in another thread while it held the lock
/// leaves the table consistent (every change is one insert or remove).
#[inline]
pub(crate) fn lock<T: Copy>(table: &Mutex<FdTable<T>>) -> MutexGuard<'_, FdTable<T>> {
    table.lock().unwrap_or_else(PoisonError::into_inner)
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

pub(crate) fn not_registered(fd: RawFd) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("descriptor {fd} is not registered"),
    )
}
