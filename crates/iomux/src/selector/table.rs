//! The descriptor table every selector keeps: what is registered, under which
//! token and interest, plus whatever its backend keeps per descriptor.

use super::{Registration, Trigger};
use crate::waker::Waker;
use crate::{Events, Interest, Token};
use std::io;
use std::os::fd::{AsRawFd, RawFd};

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

    /// Iterate over the registrations in descriptor order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &(Registration, T)> {
        self.slots.iter().flatten()
    }
}

pub(crate) fn not_registered(fd: RawFd) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("descriptor {fd} is not registered"),
    )
}
