//! select(2): fd_set bitmaps, limited to descriptors below FD_SETSIZE (1024).

use super::base::{BaseSelector, Syscalls};
use super::table::{lock, FdTable, Watch};
use super::{Backend, Registration};
use crate::sys::{check_fd_open, context, registration_error, timespec, timespec_ptr};
use crate::{Event, Events, Interest};
use std::convert::Infallible;
use std::io;
use std::os::fd::RawFd;
use std::sync::Mutex;
use std::time::Duration;

/// The largest descriptor count an fd_set can hold: select refuses
/// descriptors at or above it.
///
/// ```
/// assert_eq!(iomux::selector::select::FD_SETSIZE, 1024);
/// ```
pub const FD_SETSIZE: usize = libc::FD_SETSIZE;
const WORD_BITS: usize = u64::BITS as usize;
const WORDS: usize = FD_SETSIZE / WORD_BITS;

/// An fd_set we can scan a word at a time (glibc's is private).
#[derive(Clone, Copy)]
#[repr(C)]
struct FdSet([u64; WORDS]);

// The kernel reads and writes the set through a `libc::fd_set` pointer.
const _: () = assert!(std::mem::size_of::<FdSet>() == std::mem::size_of::<libc::fd_set>());

impl FdSet {
    const EMPTY: FdSet = FdSet([0; WORDS]);

    fn set(&mut self, fd: usize, on: bool) {
        let bit = 1u64 << (fd % WORD_BITS);
        if on {
            self.0[fd / WORD_BITS] |= bit;
        } else {
            self.0[fd / WORD_BITS] &= !bit;
        }
    }

    fn as_ptr(&mut self) -> *mut libc::fd_set {
        (self as *mut FdSet).cast()
    }
}

/// A level-triggered selector over `select(2)` (called as `pselect` for
/// nanosecond timeouts).
///
/// It keeps master read and write sets in step with its registrations and
/// copies them before every call (the kernel overwrites what it is given), then
/// scans the results a 64-bit word at a time. A descriptor at or above
/// [`FD_SETSIZE`] is refused at registration: writing it into an fd_set would
/// corrupt memory. Hang-ups show as readability (the read returns 0).
///
/// ```
/// use iomux::{Interest, SelectSelector, Selector, Token};
/// use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
/// # if iomux::net::raise_fd_limit().unwrap() <= 2000 { return; }
/// let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
/// // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor (2000 or above) that nothing else owns.
/// let high = unsafe { OwnedFd::from_raw_fd(libc::fcntl(a.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 2000)) };
/// let mut sel = SelectSelector::new().unwrap();
/// let err = sel.register(&high, Token(0), Interest::READABLE).unwrap_err();
/// assert!(err.to_string().contains("below 1024"), "{err}");
/// ```
pub type SelectSelector = BaseSelector<Select>;

pub(crate) use sealed::Select;

// Public in name only: `SelectSelector` names them, so they are `pub`, but they
// live in a private module, so no other crate can name or build them.
mod sealed {
    use super::*;

    /// The select system call behind [`SelectSelector`], and its master fd_sets.
    #[derive(Debug)]
    pub struct Select {
        pub(super) read: FdSet,
        pub(super) write: FdSet,
        /// One past the highest registered descriptor: select's `nfds`.
        pub(super) nfds: usize,
        /// The descriptor the next scan of the results starts at: the first one a
        /// full `Events` left unreported, so that every ready descriptor gets its turn.
        pub(super) cursor: usize,
        /// One past the registry handles' doorbell, if watched (in no
        /// registration, so never reported): the least `nfds` may be.
        pub(super) doorbell_end: usize,
    }
}

impl std::fmt::Debug for FdSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FdSet({} set)",
            self.0.iter().map(|w| w.count_ones()).sum::<u32>()
        )
    }
}

impl BaseSelector<Select> {
    /// An empty select selector.
    ///
    /// ```
    /// use iomux::Selector;
    /// assert!(iomux::SelectSelector::new().unwrap().is_empty());
    /// ```
    pub fn new() -> io::Result<SelectSelector> {
        Ok(BaseSelector::with(Select {
            read: FdSet::EMPTY,
            write: FdSet::EMPTY,
            nfds: 0,
            cursor: 0,
            doorbell_end: 0,
        }))
    }
}

impl Select {
    fn check_limit(fd: RawFd) -> io::Result<()> {
        if fd as usize >= FD_SETSIZE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("select supports descriptors below {FD_SETSIZE} (FD_SETSIZE) only, got descriptor {fd}; the poll and epoll selectors have no such limit"),
            ));
        }
        Ok(())
    }

    /// Watch `fd` for `interest` from the next wait on.
    fn set(&mut self, fd: RawFd, interest: Interest) {
        let i = fd as usize;
        self.read.set(i, interest.is_readable());
        self.write.set(i, interest.is_writable());
        self.nfds = self.nfds.max(i + 1);
    }

    /// Stop watching `fd`, which `table` no longer holds (it gives the new
    /// highest descriptor).
    fn clear(&mut self, table: &FdTable<()>, fd: RawFd) {
        let i = fd as usize;
        self.read.set(i, false);
        self.write.set(i, false);
        if i + 1 == self.nfds {
            let last = table.iter().last().map_or(0, |(r, _)| r.fd as usize + 1);
            self.nfds = last.max(self.doorbell_end);
        }
    }
}

impl Watch<()> for Select {
    fn watch(&mut self, reg: Registration) -> io::Result<()> {
        Self::check(&reg)?;
        // Not in the table yet, but setting bits never looks there.
        self.set(reg.fd, reg.interest);
        Ok(())
    }

    fn rewatch(&mut self, _old: (Registration, ()), new: Registration) -> io::Result<()> {
        // Closed without deregistering: the entry is dropped rather than kept stale.
        check_fd_open(new.fd)?;
        self.set(new.fd, new.interest);
        Ok(())
    }

    fn unwatch(&mut self, table: &mut FdTable<()>, reg: Registration, (): ()) -> io::Result<()> {
        self.clear(table, reg.fd);
        Ok(())
    }
}

impl Syscalls for Select {
    type State = ();
    type Remote = Infallible;
    const BACKEND: Backend = Backend::Select;

    fn check(reg: &Registration) -> io::Result<()> {
        Self::check_limit(reg.fd)?;
        check_fd_open(reg.fd).map_err(|e| registration_error(reg.fd, "select register", e))
    }

    fn watch_doorbell(&mut self, fd: RawFd) -> io::Result<()> {
        Self::check_limit(fd)?;
        self.set(fd, Interest::READABLE);
        self.doorbell_end = fd as usize + 1;
        Ok(())
    }

    #[inline]
    fn wait(
        &mut self,
        table: &Mutex<FdTable<()>>,
        events: &mut Events,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        let (mut read, mut write, nfds) = (self.read, self.write, self.nfds);
        let ts = timeout.map(timespec);
        let ts_ptr = timespec_ptr(&ts);
        // SAFETY: both sets are live FdSets of fd_set's size and layout, only
        // bits below `nfds` <= FD_SETSIZE are examined by the kernel, and
        // `ts_ptr` is null or a live timespec.
        let n = unsafe {
            libc::pselect(
                nfds as libc::c_int,
                read.as_ptr(),
                write.as_ptr(),
                std::ptr::null_mut(),
                ts_ptr,
                std::ptr::null(),
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EBADF) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "select: a registered descriptor was closed; deregister descriptors before closing them",
                ));
            }
            return Err(context(err, "select"));
        }
        let ready = n as usize;
        if ready == 0 {
            // Nothing is ready (the kernel left the sets as they were given,
            // which must not be read as answers).
            return Ok(());
        }
        let table = lock(table);
        // Scan from the cursor round to just before it, a word at a time:
        // the cursor's word is visited twice, first for the bits at or above
        // the cursor, last for those below it.
        let words = nfds.div_ceil(WORD_BITS);
        let start = if self.cursor < nfds { self.cursor } else { 0 };
        let (start_word, start_bit) = (start / WORD_BITS, start % WORD_BITS);
        let below_start = (1u64 << start_bit) - 1;
        'scan: for k in 0..=words {
            let w = (start_word + k) % words.max(1);
            let mask = match k {
                0 => !below_start,
                k if k == words => below_start,
                _ => !0,
            };
            let mut ready = (read.0[w] | write.0[w]) & mask;
            while ready != 0 {
                let bit = ready.trailing_zeros() as usize;
                ready &= ready - 1;
                let fd = w * WORD_BITS + bit;
                let Some((reg, ())) = table.get(fd as RawFd) else {
                    continue;
                };
                let mut flags = 0;
                if read.0[w] & (1 << bit) != 0 {
                    flags |= Event::READABLE;
                }
                if write.0[w] & (1 << bit) != 0 {
                    flags |= Event::WRITABLE;
                }
                if events.is_full() {
                    self.cursor = fd;
                    break 'scan;
                }
                events.push(Event::new(reg.token, flags));
            }
        }
        Ok(())
    }

    fn close(&mut self, _: &mut FdTable<()>) -> io::Result<()> {
        self.read = FdSet::EMPTY;
        self.write = FdSet::EMPTY;
        self.nfds = 0;
        self.cursor = 0;
        self.doorbell_end = 0;
        Ok(())
    }
}
