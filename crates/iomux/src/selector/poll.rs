//! poll(2): an array of `pollfd` handed to the kernel and scanned on every call.

use super::base::{BaseSelector, Syscalls};
use super::table::{FdTable, Watch};
use super::{Backend, Registration};
use crate::sys::{check_fd_open, context, ppoll};
use crate::{Event, Events, Interest, Token};
use std::convert::Infallible;
use std::io;
use std::os::fd::RawFd;
use std::sync::Mutex;
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
/// sel.register(&b, Token(3), Interest::READABLE).unwrap();
/// a.write_all(b"hi").unwrap();
/// let mut ev = Events::with_capacity(4);
/// sel.select(&mut ev, None).unwrap();
/// assert!(ev.iter().next().unwrap().is_readable());
/// ```
pub type PollSelector = BaseSelector<Poll>;

pub(crate) use sealed::Poll;

// Public in name only: `PollSelector` names them, so they are `pub`, but they
// live in a private module, so no other crate can name or build them.
mod sealed {
    use super::*;

    /// The poll system call behind [`PollSelector`], and the arrays it takes.
    #[derive(Debug)]
    pub struct Poll {
        pub(super) fds: Vec<libc::pollfd>,
        pub(super) tokens: Vec<Token>,
        /// Where the next scan of the results starts: after the last entry a full
        /// `Events` left unreported, so that every ready descriptor gets its turn.
        pub(super) cursor: usize,
        /// The registry handles' doorbell, watched in `fds` but in no
        /// registration, so never reported (-1 when there is none).
        pub(super) doorbell: RawFd,
    }
}

impl BaseSelector<Poll> {
    /// An empty poll selector.
    ///
    /// ```
    /// use iomux::Selector;
    /// assert!(iomux::PollSelector::new().unwrap().is_empty());
    /// ```
    pub fn new() -> io::Result<PollSelector> {
        Ok(BaseSelector::with(Poll {
            fds: Vec::new(),
            tokens: Vec::new(),
            cursor: 0,
            doorbell: -1,
        }))
    }
}

pub(super) fn poll_events(interest: Interest) -> libc::c_short {
    let mut events = 0;
    if interest.is_readable() {
        // The half-close is news for a reader only: asked without read
        // interest, a peer's FIN would end every wait while nobody reads.
        events |= libc::POLLIN | libc::POLLPRI | libc::POLLRDHUP;
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

impl Poll {
    /// Watch `fd` for `interest`, reported as `token`; returns its index.
    fn push(&mut self, fd: RawFd, interest: Interest, token: Token) -> usize {
        self.fds.push(libc::pollfd {
            fd,
            events: poll_events(interest),
            revents: 0,
        });
        self.tokens.push(token);
        self.fds.len() - 1
    }
}

/// Each registration's state is its position in `fds` / `tokens`.
impl Watch<usize> for Poll {
    fn watch(&mut self, reg: Registration) -> io::Result<usize> {
        Self::check(&reg)?;
        Ok(self.push(reg.fd, reg.interest, reg.token))
    }

    fn rewatch(
        &mut self,
        (_, index): (Registration, usize),
        new: Registration,
    ) -> io::Result<usize> {
        // Closed without deregistering: the entry is dropped rather than kept stale.
        check_fd_open(new.fd)?;
        self.fds[index].events = poll_events(new.interest);
        self.tokens[index] = new.token;
        Ok(index)
    }

    fn unwatch(
        &mut self,
        table: &mut FdTable<usize>,
        _: Registration,
        index: usize,
    ) -> io::Result<()> {
        self.fds.swap_remove(index);
        self.tokens.swap_remove(index);
        if let Some(moved) = self.fds.get(index) {
            if let Some((_, i)) = table.get_mut(moved.fd) {
                *i = index;
            }
        }
        Ok(())
    }
}

impl Syscalls for Poll {
    type State = usize;
    type Remote = Infallible;
    const BACKEND: Backend = Backend::Poll;

    fn watch_doorbell(&mut self, fd: RawFd) -> io::Result<()> {
        // Where it lands in `fds` does not matter: it is known by number.
        self.push(fd, Interest::READABLE, Token(0));
        self.doorbell = fd;
        Ok(())
    }

    #[inline]
    fn wait(
        &mut self,
        _: &Mutex<FdTable<usize>>,
        events: &mut Events,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        if ppoll(&mut self.fds, timeout).map_err(|e| context(e, "ppoll"))? == 0 {
            return Ok(());
        }
        let len = self.fds.len();
        let start = if self.cursor < len { self.cursor } else { 0 };
        for i in (start..len).chain(0..start) {
            let revents = self.fds[i].revents;
            if revents != 0 && self.fds[i].fd != self.doorbell {
                if events.is_full() {
                    self.cursor = i;
                    break;
                }
                events.push(Event::new(self.tokens[i], event_flags(revents)));
            }
        }
        Ok(())
    }

    fn close(&mut self, _: &mut FdTable<usize>) -> io::Result<()> {
        self.fds = Vec::new();
        self.tokens = Vec::new();
        self.cursor = 0;
        self.doorbell = -1;
        Ok(())
    }
}
