//! poll(2): an array of `pollfd` handed to the kernel and scanned on every call.

use super::{Backend, Bookkeeping, Registration, Registry, Selector, Trigger};
use crate::sys::{check_fd_open, context, ppoll, registration_error, wait_honestly};
use crate::{Event, Events, Interest, Token, Waker};
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// A level-triggered selector over `poll(2)` (called as `ppoll` for
/// microsecond timeouts).
///
/// Registrations live in a dense `pollfd` vector with an index per descriptor,
/// so register, reregister and deregister are O(1) (deregister swaps the last
/// entry into the hole); each wait passes the whole vector to the kernel and
/// scans it, which is the O(n) cost the lab measures.
///
/// ```
/// use iomux::{Events, Interest, PollSelector, Selector, Token};
/// use std::io::Write;
/// use std::os::fd::AsRawFd;
/// let mut sel = PollSelector::new().unwrap();
/// let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
/// sel.register(b.as_raw_fd(), Token(3), Interest::READABLE).unwrap();
/// a.write_all(b"hi").unwrap();
/// let mut ev = Events::with_capacity(4);
/// sel.select(&mut ev, None).unwrap();
/// assert!(ev.iter().next().unwrap().is_readable());
/// ```
#[derive(Debug)]
pub struct PollSelector {
    /// Each registration's position in `fds` / `tokens`.
    registry: Registry<usize>,
    fds: Vec<libc::pollfd>,
    tokens: Vec<Token>,
    /// Where the next scan of the results starts: after the last entry a full
    /// `Events` left unreported, so that every ready descriptor gets its turn.
    cursor: usize,
}

impl PollSelector {
    /// An empty poll selector.
    ///
    /// ```
    /// use iomux::Selector;
    /// assert!(iomux::PollSelector::new().unwrap().is_empty());
    /// ```
    pub fn new() -> io::Result<PollSelector> {
        Ok(PollSelector {
            registry: Registry::new(),
            fds: Vec::new(),
            tokens: Vec::new(),
            cursor: 0,
        })
    }
}

pub(super) fn poll_events(interest: Interest) -> libc::c_short {
    let mut events = libc::POLLRDHUP;
    if interest.is_readable() {
        events |= libc::POLLIN | libc::POLLPRI;
    }
    if interest.is_writable() {
        events |= libc::POLLOUT;
    }
    events
}

#[inline]
pub(super) fn event_flags(revents: libc::c_short) -> u8 {
    let mut flags = 0;
    if revents & (libc::POLLIN | libc::POLLPRI) != 0 {
        flags |= Event::READABLE;
    }
    if revents & libc::POLLOUT != 0 {
        flags |= Event::WRITABLE;
    }
    if revents & libc::POLLRDHUP != 0 {
        flags |= Event::READ_CLOSED;
    }
    if revents & libc::POLLHUP != 0 {
        flags |= Event::HANGUP;
    }
    if revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
        flags |= Event::ERROR;
    }
    flags
}

impl Bookkeeping for PollSelector {
    type State = usize;
    fn registry(&mut self) -> &mut Registry<usize> {
        &mut self.registry
    }
}

impl Selector for PollSelector {
    fn register(
        &mut self,
        fd: RawFd,
        token: Token,
        interest: Interest,
    ) -> io::Result<Registration> {
        self.register_with(fd, token, interest, |s| {
            check_fd_open(fd).map_err(|e| registration_error(fd, "poll register", e))?;
            s.fds.push(libc::pollfd {
                fd,
                events: poll_events(interest),
                revents: 0,
            });
            s.tokens.push(token);
            Ok(s.fds.len() - 1)
        })
    }

    fn reregister(
        &mut self,
        fd: RawFd,
        token: Token,
        interest: Interest,
    ) -> io::Result<Registration> {
        // Closed without deregistering: the entry is dropped rather than kept stale.
        self.reregister_with(fd, token, interest, |s, (_, index)| {
            check_fd_open(fd)?;
            s.fds[index].events = poll_events(interest);
            s.tokens[index] = token;
            Ok(index)
        })
    }

    fn deregister(&mut self, fd: RawFd) -> io::Result<Registration> {
        let (reg, index) = self.registry.remove(fd)?;
        self.fds.swap_remove(index);
        self.tokens.swap_remove(index);
        if let Some(moved) = self.fds.get(index) {
            if let Some((_, i)) = self.registry.get_mut(moved.fd) {
                *i = index;
            }
        }
        Ok(reg)
    }

    fn select(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        events.clear();
        self.registry.check_open()?;
        let fds = &mut self.fds;
        wait_honestly(timeout, |t| ppoll(fds, t)).map_err(|e| context(e, "ppoll"))?;
        let len = self.fds.len();
        let start = if self.cursor < len { self.cursor } else { 0 };
        for i in (start..len).chain(0..start) {
            let revents = self.fds[i].revents;
            if revents != 0 {
                if events.is_full() {
                    self.cursor = i;
                    break;
                }
                events.push(Event::new(self.tokens[i], event_flags(revents)));
            }
        }
        self.registry.reset_fired_wakers(events);
        Ok(())
    }

    fn registration(&self, fd: RawFd) -> Option<Registration> {
        self.registry.get(fd).map(|(r, _)| *r)
    }

    fn len(&self) -> usize {
        self.registry.len()
    }

    fn backend(&self) -> Backend {
        Backend::Poll
    }

    fn trigger(&self) -> Trigger {
        Trigger::Level
    }

    fn waker(&mut self, token: Token) -> io::Result<Waker> {
        self.register_waker(token, |s, fd| s.register(fd, token, Interest::READABLE))
    }

    fn close(&mut self) -> io::Result<()> {
        self.registry.check_open()?;
        self.registry.close();
        self.fds = Vec::new();
        self.tokens = Vec::new();
        self.cursor = 0;
        Ok(())
    }
}
