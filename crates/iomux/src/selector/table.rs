//! The descriptor table every selector keeps: what is registered, under which
//! token and interest, plus whatever its backend keeps per descriptor.

use super::{Backend, Registration};
use crate::waker::Waker;
use crate::{Events, Interest, Token};
use std::convert::Infallible;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// One call that changes the registrations, its arguments not yet checked.
/// Public only in name, like [`Watch`]: it appears in
/// [`Selector::change`](super::Selector::change).
#[derive(Debug, Clone, Copy)]
pub enum Request {
    Register(Registration),
    Reregister(Registration),
    Deregister(RawFd),
}

/// The kernel side of a change of registration: a backend's system calls
/// (see [`Syscalls`](super::base::Syscalls)), or the part of them a
/// [`Registry`](super::Registry) may call from any thread.
pub trait Watch<T: Copy> {
    /// Start watching `reg.fd`, whose arguments were checked and which is not
    /// registered; returns the backend's state for it. Nothing is recorded if
    /// this fails.
    fn watch(&mut self, reg: Registration) -> io::Result<T>;

    /// Change what a registered descriptor is watched for (and re-arm a
    /// one-shot one): `old` is its registration and state, `new` the checked
    /// arguments. If this fails, the descriptor is deregistered.
    fn rewatch(&mut self, old: (Registration, T), new: Registration) -> io::Result<T>;

    /// Stop watching a registration already removed from `table`. The
    /// descriptor may have been closed, or its number reused.
    fn unwatch(&mut self, table: &mut FdTable<T>, reg: Registration, state: T) -> io::Result<()>;
}

/// The backends that cannot change their interest set from another thread
/// name this as their `Remote`: there is none, and it is never called.
impl<T: Copy> Watch<T> for Infallible {
    fn watch(&mut self, _: Registration) -> io::Result<T> {
        match *self {}
    }
    fn rewatch(&mut self, _: (Registration, T), _: Registration) -> io::Result<T> {
        match *self {}
    }
    fn unwatch(&mut self, _: &mut FdTable<T>, _: Registration, _: T) -> io::Result<()> {
        match *self {}
    }
}

/// Registrations indexed by descriptor number (descriptors are small, dense
/// integers, so a vector beats a map), the wakers to reset once reported, the
/// changes registration handles queued for the waiting thread, and whether
/// the selector was closed. `T` is what the backend keeps beside token and
/// interest.
#[derive(Debug)]
pub struct FdTable<T: Copy> {
    /// What the backend watches now.
    slots: Vec<Option<(Registration, T)>>,
    count: usize,
    wakers: Vec<(Token, Waker)>,
    /// Changes made through a [`Registry`](super::Registry), in order, that
    /// the waiting thread has not made yet (backends other than epoll):
    /// checks and lookups see them at once, the kernel at the next wait.
    queued: Vec<Request>,
    /// How the number of registrations changes once `queued` is made.
    queued_delta: isize,
    /// Rung by a registry handle that queued a change, so that a blocked
    /// wait makes it; made and watched by the waiting thread.
    pub(crate) doorbell: Option<Waker>,
    closed: bool,
}

impl<T: Copy> FdTable<T> {
    pub(crate) fn new() -> Self {
        FdTable {
            slots: Vec::new(),
            count: 0,
            wakers: Vec::new(),
            queued: Vec::new(),
            queued_delta: 0,
            doorbell: None,
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

    /// Check `request` as the selector's calls and its registry handles'
    /// both answer at once: an open selector, a trigger `backend` has, a
    /// valid interest, and the descriptor registered (reregister,
    /// deregister) or not (register), queued changes included.
    pub(crate) fn check(&self, backend: Backend, request: Request) -> io::Result<()> {
        self.check_open()?;
        match request {
            Request::Register(reg) => {
                backend.check_trigger(reg.trigger)?;
                check_interest(reg.interest)?;
                self.check_absent(reg.fd)
            }
            Request::Reregister(reg) => {
                backend.check_trigger(reg.trigger)?;
                check_interest(reg.interest)?;
                self.registration(reg.fd).map(drop)
            }
            Request::Deregister(fd) => self.registration(fd).map(drop),
        }
    }

    /// Fail with `AlreadyExists` if `fd` is registered (or queued to be).
    pub(crate) fn check_absent(&self, fd: RawFd) -> io::Result<()> {
        match self.visible(fd) {
            Some(_) => Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("descriptor {fd} is already registered; use reregister to change it"),
            )),
            None => Ok(()),
        }
    }

    /// The registration of `fd` as the caller sees it: with the changes
    /// queued by registry handles, which the backend has not made yet.
    #[inline]
    pub(crate) fn visible(&self, fd: RawFd) -> Option<Registration> {
        if !self.queued.is_empty() {
            if let Some(request) = self.queued.iter().rev().find(|r| r.fd() == fd) {
                return match *request {
                    Request::Register(reg) | Request::Reregister(reg) => Some(reg),
                    Request::Deregister(_) => None,
                };
            }
        }
        self.get(fd).map(|(r, _)| *r)
    }

    /// The registration of `fd` as the caller sees it, or `NotFound`.
    fn registration(&self, fd: RawFd) -> io::Result<Registration> {
        self.visible(fd).ok_or_else(|| not_registered(fd))
    }

    /// Queue a checked `request` for the waiting thread; returns the
    /// registration it makes (or, for a deregistration, removes). A change
    /// of a descriptor already queued is merged with it, so that at most two
    /// wait per descriptor (a deregistration, then the registration of what
    /// the number names next) however long the waiting thread takes.
    pub(crate) fn queue(&mut self, request: Request) -> io::Result<Registration> {
        let (reg, delta) = match request {
            Request::Register(reg) => (reg, 1),
            Request::Reregister(reg) => (reg, 0),
            Request::Deregister(fd) => (self.registration(fd)?, -1),
        };
        self.queued_delta += delta;
        let last = self.queued.iter().rposition(|r| r.fd() == reg.fd);
        match (last.map(|i| (i, self.queued[i])), request) {
            (Some((i, Request::Register(_))), Request::Reregister(new)) => {
                self.queued[i] = Request::Register(new);
            }
            (Some((i, Request::Register(_))), Request::Deregister(_)) => {
                self.queued.remove(i);
            }
            (Some((i, Request::Reregister(_))), _) => self.queued[i] = request,
            _ => self.queued.push(request),
        }
        Ok(reg)
    }

    /// Whether registry handles queued changes the backend has not made.
    #[inline]
    pub(crate) fn has_queued(&self) -> bool {
        !self.queued.is_empty()
    }

    /// Make the queued changes through `ctl`, in order. One that fails (its
    /// descriptor was closed before it was deregistered) is dropped: the
    /// descriptor is then not registered.
    pub(crate) fn apply_queued(&mut self, ctl: &mut impl Watch<T>) {
        let queued = std::mem::take(&mut self.queued);
        self.queued_delta = 0;
        for request in queued {
            let _ = self.apply(ctl, request);
        }
    }

    /// Carry out a checked `request` through `ctl`.
    pub(crate) fn apply(
        &mut self,
        ctl: &mut impl Watch<T>,
        request: Request,
    ) -> io::Result<Registration> {
        match request {
            Request::Register(reg) => self.register_by(ctl, reg, |c, reg| c.watch(reg)),
            Request::Reregister(reg) => self.reregister_by(ctl, reg),
            Request::Deregister(fd) => self.deregister_by(ctl, fd),
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

    /// How many descriptors are registered, queued changes included.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.count.saturating_add_signed(self.queued_delta)
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
        self.queued = Vec::new();
        self.queued_delta = 0;
        self.doorbell = None;
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

    /// Change a registration to `reg` through `ctl`; if the kernel refuses,
    /// the registration is removed, so that no stale entry remains.
    fn reregister_by(
        &mut self,
        ctl: &mut impl Watch<T>,
        reg: Registration,
    ) -> io::Result<Registration> {
        let old = self.expect(reg.fd)?;
        match ctl.rewatch(old, reg) {
            Ok(state) => {
                self.insert(reg, state);
                Ok(reg)
            }
            Err(e) => {
                let _ = self.deregister_by(ctl, reg.fd);
                Err(reregister_failed(reg.fd, e))
            }
        }
    }

    /// Remove the registration of descriptor number `fd` and stop watching
    /// it through `ctl`.
    fn deregister_by(&mut self, ctl: &mut impl Watch<T>, fd: RawFd) -> io::Result<Registration> {
        let (reg, state) = self.remove(fd)?;
        ctl.unwatch(self, reg, state)?;
        Ok(reg)
    }

    /// Iterate over the registrations in descriptor order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &(Registration, T)> {
        self.slots.iter().flatten()
    }
}

impl Request {
    fn fd(&self) -> RawFd {
        match *self {
            Request::Register(reg) | Request::Reregister(reg) => reg.fd,
            Request::Deregister(fd) => fd,
        }
    }
}

fn check_interest(interest: Interest) -> io::Result<()> {
    if interest.is_valid() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid interest {interest:?}: use READABLE, WRITABLE or both"),
        ))
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::Trigger;

    fn reg(fd: RawFd, token: usize) -> Registration {
        Registration {
            fd,
            token: Token(token),
            interest: Interest::READABLE,
            trigger: Trigger::Level,
        }
    }

    /// A handle that keeps changing one descriptor while the waiting thread
    /// never waits must not grow the queue without bound.
    #[test]
    fn queued_changes_of_one_descriptor_stay_bounded() {
        let mut table = FdTable::<()>::new();
        table.insert(reg(5, 0), ());
        for i in 0..1000 {
            table.queue(Request::Deregister(5)).unwrap();
            table.queue(Request::Register(reg(5, i))).unwrap();
            table.queue(Request::Reregister(reg(5, i + 1))).unwrap();
            table.queue(Request::Register(reg(6, i))).unwrap();
            table.queue(Request::Deregister(6)).unwrap();
        }
        assert_eq!(table.queued.len(), 2, "{:?}", table.queued);
        assert_eq!(table.visible(5).map(|r| r.token), Some(Token(1000)));
        assert_eq!(table.visible(6), None);
        assert_eq!(table.len(), 1);
        assert_eq!(
            table.queue(Request::Deregister(6)).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
