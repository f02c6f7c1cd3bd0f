//! Cross-thread wake-ups through an eventfd.

use crate::sys::{context, cvt, owned};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;

/// Wakes a selector's blocked wait from any thread.
///
/// Made by [`Selector::waker`](crate::Selector::waker); clones share one
/// eventfd, and wakes coalesce into one event until the selector reports it.
///
/// ```
/// use iomux::{Backend, Events, Selector, Token, Trigger};
/// let mut sel = Backend::Poll.open(Trigger::Level).unwrap();
/// let waker = sel.waker(Token(99)).unwrap();
/// let t = std::thread::spawn(move || waker.wake().unwrap());
/// let mut events = Events::with_capacity(4);
/// sel.select(&mut events, None).unwrap();
/// assert_eq!(events.iter().next().unwrap().token(), Token(99));
/// t.join().unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Waker {
    fd: Arc<OwnedFd>,
}

impl Waker {
    /// A new waker on its own eventfd (selectors make theirs with
    /// [`Selector::waker`](crate::Selector::waker); engines that watch the
    /// eventfd themselves, such as the io_uring engine, use this).
    ///
    /// ```
    /// let w = iomux::Waker::new().unwrap();
    /// w.wake().unwrap();
    /// ```
    pub fn new() -> io::Result<Waker> {
        // SAFETY: eventfd takes no pointers; the result is checked by cvt.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })
            .map_err(|e| context(e, "creating the waker's eventfd"))?;
        Ok(Waker {
            fd: Arc::new(owned(fd)),
        })
    }

    /// Make the selector's current or next wait return with this waker's token.
    ///
    /// ```
    /// use iomux::{Backend, Selector, Token, Trigger};
    /// let mut sel = Backend::Epoll.open(Trigger::Edge).unwrap();
    /// sel.waker(Token(1)).unwrap().wake().unwrap();
    /// ```
    pub fn wake(&self) -> io::Result<()> {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        if n == 8 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            // The counter is saturated: a wake is already pending.
            io::ErrorKind::WouldBlock => Ok(()),
            _ => Err(context(err, "waking the selector")),
        }
    }

    /// Consume pending wakes so a level-triggered selector stops reporting them.
    pub(crate) fn reset(&self) {
        let mut count: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64 from our own eventfd;
        // EAGAIN (nothing pending) is the only expected failure and is harmless.
        unsafe { libc::read(self.fd.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
    }
}

/// The eventfd, for an event loop that watches it itself.
impl AsFd for Waker {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Waker {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
