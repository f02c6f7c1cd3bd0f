//! Signal-driven readiness: `O_ASYNC` sockets that raise a real-time signal
//! carrying the descriptor, read synchronously from a `signalfd`.
//!
//! Each registered descriptor gets `F_SETOWN_EX` (owner: the thread that
//! created the selector, `F_OWNER_TID`), `F_SETSIG` (the real-time signal
//! [`sigio_signal`], so the kernel queues one `siginfo` per readiness change
//! with the descriptor in `si_fd` and the poll band in `si_band`) and
//! `O_ASYNC`. The signals are blocked in that thread while the selector is
//! open and are consumed by reading the signalfd, never by an asynchronous
//! handler. Closing the selector in that thread stops every registered
//! descriptor's signals, reads what is still queued and restores the thread's
//! signal mask; closed in another thread, it leaves the owner's mask as it is
//! (a thread can change only its own).
//!
//! The signals say that something *changed*, so this selector is
//! edge-triggered: read and write until `EAGAIN`. When the real-time queue
//! overflows (RLIMIT_SIGPENDING), the kernel drops the signal and raises a
//! plain `SIGIO` instead; this selector then reports every registered
//! descriptor readable and writable once, so the caller tries each and no
//! readiness is lost.

use super::base::{BaseSelector, Syscalls};
use super::poll::{event_flags, poll_events};
use super::table::{lock, FdTable, Watch};
use super::{Backend, Registration};
use crate::sys::{check_fd_open, context, cvt, owned, ppoll, registration_error};
use crate::{Event, Events};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

// fcntl commands and owner type glibc's headers have but the libc crate lacks
// on this target (the values are the same on every Linux architecture).
const F_SETSIG: libc::c_int = 10;
const F_GETSIG: libc::c_int = 11;
const F_SETOWN_EX: libc::c_int = 15;
const F_GETOWN_EX: libc::c_int = 16;
const F_OWNER_TID: libc::c_int = 0;

#[repr(C)]
struct FOwnerEx {
    kind: libc::c_int,
    pid: libc::pid_t,
}

/// signalfd entries read per call.
const SIGINFO_BATCH: usize = 256;

/// The threads (by id) that own an open sigio selector. Signals go to a
/// thread, and one signalfd per thread reads them all: two sigio selectors in
/// one thread would steal each other's signals. Kept by thread id rather than
/// in a thread-local, so that a selector closed or dropped in another thread
/// frees its owner, not the thread that happens to drop it.
static OWNER_THREADS: Mutex<Vec<libc::pid_t>> = Mutex::new(Vec::new());

fn owner_threads() -> MutexGuard<'static, Vec<libc::pid_t>> {
    OWNER_THREADS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The real-time signal that carries readiness (SIGRTMIN + 4, clear of the
/// ones the C library reserves for itself).
///
/// ```
/// assert!(iomux::selector::sigio::sigio_signal() > libc::SIGRTMIN());
/// ```
pub fn sigio_signal() -> libc::c_int {
    libc::SIGRTMIN() + 4
}

/// An edge-triggered selector over signal-driven I/O (`O_ASYNC` + `F_SETSIG`).
///
/// Bound to the thread that creates it: signals are directed to that thread,
/// which must also call `register` and `select` (other threads get an error).
/// One per thread. The two signals are blocked in that thread until the
/// selector is closed or dropped there.
///
/// ```
/// use iomux::{Events, Interest, Selector, Token};
/// use iomux::selector::sigio::SigioSelector;
/// use std::io::Write;
/// use std::os::fd::AsRawFd;
/// let mut sel = SigioSelector::new().unwrap();
/// let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
/// b.set_nonblocking(true).unwrap();
/// sel.register(&b, Token(3), Interest::READABLE).unwrap();
/// a.write_all(b"hi").unwrap();
/// let mut ev = Events::with_capacity(4);
/// sel.select(&mut ev, Some(std::time::Duration::from_secs(1))).unwrap();
/// assert!(ev.iter().any(|e| e.token() == Token(3) && e.is_readable()));
/// ```
pub type SigioSelector = BaseSelector<Sigio>;

pub(crate) use sealed::{Sigio, SigioState};

// Public in name only: `SigioSelector` names them, so they are `pub`, but they
// live in a private module, so no other crate can name or build them.
mod sealed {
    use super::*;

    /// The signal-driven I/O behind [`SigioSelector`]: the signalfd, and the
    /// descriptors signalled but not yet checked.
    #[derive(Debug)]
    pub struct Sigio {
        pub(super) signalfd: Option<OwnedFd>,
        pub(super) owner: libc::pid_t,
        /// The signals this selector blocked (those the thread had not blocked
        /// already), unblocked again on close.
        pub(super) blocked: libc::sigset_t,
        /// Descriptors whose state the next wait checks: named by a signal, just
        /// registered (readiness from before `O_ASYNC`), or all after an overflow.
        pub(super) pending: VecDeque<RawFd>,
        pub(super) checks: Vec<libc::pollfd>,
        /// The signalfd first, then the wakers' eventfds and the registry
        /// handles' doorbell (which is in no registration, so never reported).
        pub(super) pollfds: Vec<libc::pollfd>,
        pub(super) infos: Vec<libc::signalfd_siginfo>,
        /// Queue overflows seen (plain SIGIO received).
        pub(super) overflows: u64,
    }

    /// What a sigio selector keeps per registered descriptor.
    #[derive(Debug, Clone, Copy)]
    pub struct SigioState {
        /// The file registered (device and inode), so that a descriptor number
        /// closed and reused for another file is never touched.
        pub(super) file: (libc::dev_t, libc::ino_t),
        /// Queued in `pending` for the next readiness check.
        pub(super) queued: bool,
        /// A waker's eventfd, watched beside the signalfd (an eventfd raises no signal).
        pub(super) waker: bool,
    }
}

impl BaseSelector<Sigio> {
    /// Block the readiness signals in this thread and open the signalfd.
    ///
    /// ```
    /// use iomux::Selector;
    /// assert!(iomux::selector::sigio::SigioSelector::new().unwrap().is_empty());
    /// ```
    pub fn new() -> io::Result<SigioSelector> {
        Sigio::new().map(BaseSelector::with)
    }
}

impl Sigio {
    fn new() -> io::Result<Sigio> {
        // SAFETY: gettid has no preconditions.
        let owner = unsafe { libc::gettid() };
        if owner_threads().contains(&owner) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "this thread already has a sigio selector (signals go to a thread, one signalfd reads them): close it or use another thread",
            ));
        }
        // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it.
        let mut mask: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `mask` is a live sigset_t; the signal numbers are valid.
        unsafe {
            libc::sigemptyset(&mut mask);
            libc::sigaddset(&mut mask, sigio_signal());
            libc::sigaddset(&mut mask, libc::SIGIO);
        }
        let mut old = mask;
        // SAFETY: blocks two signals in this thread only, reading the old mask into `old`.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &mask, &mut old) };
        if rc != 0 {
            return Err(context(
                io::Error::from_raw_os_error(rc),
                "blocking the sigio signals",
            ));
        }
        let mut blocked = mask;
        for signal in [sigio_signal(), libc::SIGIO] {
            // SAFETY: both sets are live and initialised.
            unsafe {
                if libc::sigismember(&old, signal) == 1 {
                    libc::sigdelset(&mut blocked, signal);
                }
            }
        }
        // SAFETY: `mask` is a live sigset_t; -1 asks for a new descriptor.
        let sfd =
            match cvt(unsafe { libc::signalfd(-1, &mask, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) })
            {
                Ok(sfd) => sfd,
                Err(e) => {
                    unblock(&blocked);
                    return Err(context(e, "signalfd"));
                }
            };
        let signalfd = owned(sfd);
        owner_threads().push(owner);
        Ok(Sigio {
            pollfds: vec![libc::pollfd {
                fd: signalfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }],
            signalfd: Some(signalfd),
            owner,
            blocked,
            pending: VecDeque::new(),
            checks: Vec::new(),
            infos: Vec::with_capacity(SIGINFO_BATCH),
            overflows: 0,
        })
    }

    fn check_thread(&self) -> io::Result<()> {
        // SAFETY: gettid has no preconditions.
        if unsafe { libc::gettid() } != self.owner {
            return Err(io::Error::other(
                "a sigio selector is bound to the thread that created it (its signals go there): use it from that thread",
            ));
        }
        Ok(())
    }

    /// Direct the descriptor's readiness signals to our thread, as `sigio_signal()`.
    fn arm(&self, fd: RawFd) -> io::Result<()> {
        let owner = FOwnerEx {
            kind: F_OWNER_TID,
            pid: self.owner,
        };
        // SAFETY: fcntl on a caller-supplied descriptor; F_SETOWN_EX reads a
        // live f_owner_ex, the others take integers.
        unsafe {
            cvt(libc::fcntl(fd, F_SETOWN_EX, &owner as *const FOwnerEx))?;
            cvt(libc::fcntl(fd, F_SETSIG, sigio_signal()))?;
            let flags = cvt(libc::fcntl(fd, libc::F_GETFL))?;
            cvt(libc::fcntl(fd, libc::F_SETFL, flags | libc::O_ASYNC))?;
        }
        Ok(())
    }

    /// Stop the signals of the file registered as `file`, if `fd` still
    /// names it and they still come to us: a descriptor closed has none to
    /// stop, and one whose number now names another file, or whose signals
    /// someone else has since claimed, is left alone.
    fn disarm(&self, fd: RawFd, file: (libc::dev_t, libc::ino_t)) {
        if file_identity(fd).ok() != Some(file) {
            return;
        }
        let mut owner = FOwnerEx { kind: -1, pid: 0 };
        // SAFETY: F_GETOWN_EX writes into the live f_owner_ex; F_GETSIG,
        // F_GETFL and F_SETFL only read and set integers of `fd`.
        unsafe {
            if libc::fcntl(fd, F_GETOWN_EX, &mut owner as *mut FOwnerEx) < 0
                || (owner.kind, owner.pid) != (F_OWNER_TID, self.owner)
                || libc::fcntl(fd, F_GETSIG) != sigio_signal()
            {
                return;
            }
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags >= 0 && flags & libc::O_ASYNC != 0 {
                libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_ASYNC);
            }
        }
    }

    /// Read one batch of queued signals (up to `SIGINFO_BATCH`) into
    /// `infos`; none when the signalfd is empty (or closed).
    fn read_batch(&mut self) -> io::Result<()> {
        self.infos.clear();
        let Some(sfd) = self.signalfd.as_ref().map(AsRawFd::as_raw_fd) else {
            return Ok(());
        };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        loop {
            // SAFETY: reads at most SIGINFO_BATCH whole entries into the
            // vector's spare capacity (reserved in `new`).
            let n =
                unsafe { libc::read(sfd, self.infos.as_mut_ptr().cast(), SIGINFO_BATCH * size) };
            if n >= 0 {
                // SAFETY: the kernel wrote n / size whole entries.
                unsafe { self.infos.set_len(n as usize / size) };
                return Ok(());
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => return Ok(()),
                io::ErrorKind::Interrupted => {}
                _ => return Err(context(e, "reading the signalfd")),
            }
        }
    }

    /// Read and drop every signal queued for this thread, until the signalfd is empty.
    fn drain_signals(&mut self) {
        while self.read_batch().is_ok() && !self.infos.is_empty() {}
    }

    /// Queue a registered descriptor for the next readiness check, once.
    fn mark(&mut self, table: &mut FdTable<SigioState>, fd: RawFd) {
        match table.get_mut(fd) {
            Some((_, state)) if !state.queued && !state.waker => {
                state.queued = true;
                self.pending.push_back(fd);
            }
            // Already queued, a waker, or queued by the kernel before its deregistration.
            _ => {}
        }
    }

    /// Read queued signals (up to `SIGINFO_BATCH` per read) and queue the
    /// descriptors they name, until the signalfd is empty or `limit` are queued.
    fn read_signals(&mut self, table: &mut FdTable<SigioState>, limit: usize) -> io::Result<()> {
        while self.pending.len() < limit {
            self.read_batch()?;
            let mut overflowed = false;
            for i in 0..self.infos.len() {
                let info = self.infos[i];
                if info.ssi_signo as i32 == libc::SIGIO {
                    overflowed = true;
                } else {
                    self.mark(table, info.ssi_fd);
                }
            }
            if overflowed {
                // Some readiness was never signalled: check every descriptor
                // once (the queued signals that did arrive still count).
                self.overflows += 1;
                let all: Vec<RawFd> = table.iter().map(|(reg, _)| reg.fd).collect();
                for fd in all {
                    self.mark(table, fd);
                }
            }
            if self.infos.len() < SIGINFO_BATCH {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Report the current state of up to `room` queued descriptors, from one
    /// poll of them all: a signal names the descriptor, the poll says what is
    /// true now (a half-close, for one, comes as a plain POLL_IN signal).
    fn check_pending(
        &mut self,
        table: &mut FdTable<SigioState>,
        room: usize,
        events: &mut Events,
    ) -> io::Result<()> {
        self.checks.clear();
        while self.checks.len() < room {
            let Some(fd) = self.pending.pop_front() else {
                break;
            };
            if let Some((reg, state)) = table.get_mut(fd) {
                state.queued = false;
                self.checks.push(libc::pollfd {
                    fd,
                    events: poll_events(reg.interest),
                    revents: 0,
                });
            }
        }
        if self.checks.is_empty() {
            return Ok(());
        }
        loop {
            // SAFETY: `checks` is a live array of pollfds; zero timeout.
            let n = unsafe {
                libc::poll(
                    self.checks.as_mut_ptr(),
                    self.checks.len() as libc::nfds_t,
                    0,
                )
            };
            if n >= 0 {
                break;
            }
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // Their signals were consumed: queue them again, in front and in
            // order, so that a later wait checks them.
            for c in self.checks.iter().rev() {
                if let Some((_, state)) = table.get_mut(c.fd) {
                    if !state.queued {
                        state.queued = true;
                        self.pending.push_front(c.fd);
                    }
                }
            }
            return Err(context(
                err,
                format_args!("poll of {} signalled descriptors", self.checks.len()),
            ));
        }
        for c in &self.checks {
            if c.revents != 0 {
                if let Some((reg, _)) = table.get(c.fd) {
                    events.push(Event::new(reg.token, event_flags(c.revents)));
                }
            }
        }
        Ok(())
    }
}

/// The device and inode of the file `fd` names.
fn file_identity(fd: RawFd) -> io::Result<(libc::dev_t, libc::ino_t)> {
    stat(fd).map(|st| (st.st_dev, st.st_ino))
}

fn stat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data, filled in by fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into the live stat.
    cvt(unsafe { libc::fstat(fd, &mut st) }).map(|_| st)
}

/// Refuse a descriptor whose file cannot raise readiness signals: the
/// kernel takes `O_ASYNC` on an eventfd, timerfd or regular file without a
/// word and never signals, so a wait for it would never end (nor can a
/// descriptor that is not open). Returns the file's identity.
fn check_raises_signals(fd: RawFd) -> io::Result<(libc::dev_t, libc::ino_t)> {
    check_fd_open(fd).map_err(|e| registration_error(fd, "sigio register", e))?;
    let st = stat(fd).map_err(|e| context(e, format_args!("fstat fd {fd}")))?;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFSOCK | libc::S_IFIFO | libc::S_IFCHR => Ok((st.st_dev, st.st_ino)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("sigio cannot watch descriptor {fd}: only sockets, pipes and terminals raise readiness signals (regular files, eventfds and timerfds never do)"),
        )),
    }
}

/// Unblock `signals` in this thread.
fn unblock(signals: &libc::sigset_t) {
    // SAFETY: `signals` is a live sigset_t; only this thread's mask changes.
    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, signals, std::ptr::null_mut()) };
}

impl Watch<SigioState> for Sigio {
    fn watch(&mut self, reg: Registration) -> io::Result<SigioState> {
        let fd = reg.fd;
        self.check_thread()?;
        let file = check_raises_signals(fd)?;
        self.arm(fd)
            .map_err(|e| registration_error(fd, "sigio fcntl", e))?;
        // Readiness from before O_ASYNC raised no signal: look once at the next wait.
        self.pending.push_back(fd);
        Ok(SigioState {
            file,
            queued: true,
            waker: false,
        })
    }

    fn rewatch(
        &mut self,
        (_, state): (Registration, SigioState),
        new: Registration,
    ) -> io::Result<SigioState> {
        check_fd_open(new.fd)?;
        // Like EPOLL_CTL_MOD: the current readiness is reported again.
        if !state.queued && !state.waker {
            self.pending.push_back(new.fd);
        }
        Ok(SigioState {
            queued: !state.waker,
            ..state
        })
    }

    fn unwatch(
        &mut self,
        _: &mut FdTable<SigioState>,
        reg: Registration,
        state: SigioState,
    ) -> io::Result<()> {
        if state.waker {
            self.pollfds.retain(|p| p.fd != reg.fd);
        } else {
            if state.queued {
                self.pending.retain(|&p| p != reg.fd);
            }
            self.disarm(reg.fd, state.file);
        }
        Ok(())
    }
}

impl Syscalls for Sigio {
    type State = SigioState;
    type Remote = Infallible;
    const BACKEND: Backend = Backend::Sigio;

    fn check(reg: &Registration) -> io::Result<()> {
        check_raises_signals(reg.fd).map(drop)
    }

    /// The waker's eventfd is watched beside the signalfd, level-triggered.
    fn watch_waker(&mut self, reg: Registration) -> io::Result<SigioState> {
        self.watch_doorbell(reg.fd)?;
        Ok(SigioState {
            file: (0, 0),
            queued: false,
            waker: true,
        })
    }

    /// Watched beside the signalfd, like a waker's eventfd (an eventfd
    /// raises no signal).
    fn watch_doorbell(&mut self, fd: RawFd) -> io::Result<()> {
        self.pollfds.push(libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
        Ok(())
    }

    /// Queue overflows: each made the selector check every descriptor.
    fn overflows(&self) -> u64 {
        self.overflows
    }

    fn wait(
        &mut self,
        table: &Mutex<FdTable<SigioState>>,
        events: &mut Events,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        self.check_thread()?;
        // One wait on the signalfd and the wakers (zero time when checks are
        // pending), then the readiness checks of the descriptors signalled.
        // The signals may name nothing ready for its interest (say a writable
        // socket registered for reading): then the selector waits again for
        // the rest of the timeout, so that a wait never ends early.
        let capacity = events.capacity();
        let wait = if self.pending.is_empty() {
            timeout
        } else {
            Some(Duration::ZERO)
        };
        ppoll(&mut self.pollfds, wait).map_err(|e| context(e, "ppoll on the signalfd"))?;
        let table = &mut *lock(table);
        for waker in &self.pollfds[1..] {
            if waker.revents != 0 && !events.is_full() {
                if let Some((reg, _)) = table.get(waker.fd) {
                    // Reset by the selector once reported.
                    events.push(Event::new(reg.token, Event::READABLE));
                }
            }
        }
        if self.pollfds[0].revents != 0 {
            // What stays queued beyond this is read by a later wait.
            self.read_signals(table, capacity.saturating_mul(4))?;
        }
        self.check_pending(table, capacity - events.len(), events)
    }

    fn close(&mut self, table: &mut FdTable<SigioState>) -> io::Result<()> {
        for (reg, state) in table.iter() {
            if !state.waker {
                self.disarm(reg.fd, state.file);
            }
        }
        self.pending.clear();
        self.pollfds.clear();
        // Signals can be read and unblocked only in the thread they were sent to.
        if self.check_thread().is_ok() {
            // No registered file signals any more: what is queued is all
            // there will be. Read it first, or unblocking would deliver it
            // (and a real-time signal's default action ends the process).
            self.drain_signals();
            unblock(&self.blocked);
        }
        self.signalfd = None;
        owner_threads().retain(|&t| t != self.owner);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Interest, Selector, Token};
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    fn pair() -> (UnixStream, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    fn wait(sel: &mut SigioSelector, ms: u64) -> Vec<Event> {
        let mut events = Events::with_capacity(4096);
        sel.select(&mut events, Some(Duration::from_millis(ms)))
            .unwrap();
        events.iter().copied().collect()
    }

    #[test]
    fn new_data_raises_one_event_then_silence() {
        let mut sel = SigioSelector::new().unwrap();
        let (mut a, b) = pair();
        sel.register(&b, Token(5), Interest::READABLE).unwrap();
        assert!(wait(&mut sel, 0).is_empty(), "nothing to read yet");
        a.write_all(b"x").unwrap();
        let ev = wait(&mut sel, 1000);
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert!(ev[0].is_readable() && ev[0].token() == Token(5));
        assert!(wait(&mut sel, 20).is_empty(), "edge-triggered: no repeat");
        // Written twice before one wait: one merged event.
        a.write_all(b"y").unwrap();
        a.write_all(b"z").unwrap();
        assert_eq!(wait(&mut sel, 1000).len(), 1);
    }

    /// A FIN comes as a plain POLL_IN signal: the event must still say the
    /// peer closed, or an edge-triggered reader that stops at a short read
    /// never learns of it.
    #[test]
    fn half_close_is_reported_as_read_closed() {
        let mut sel = SigioSelector::new().unwrap();
        let (a, b) = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| {
                let c = std::net::TcpStream::connect(l.local_addr()?)?;
                Ok((c, l.accept()?.0))
            })
            .unwrap();
        b.set_nonblocking(true).unwrap();
        sel.register(&b, Token(1), Interest::READABLE).unwrap();
        assert!(wait(&mut sel, 0).is_empty());
        (&a).write_all(b"last words").unwrap();
        a.shutdown(std::net::Shutdown::Write).unwrap();
        let mut closed = false;
        for _ in 0..50 {
            closed |= wait(&mut sel, 100).iter().any(|e| e.is_read_closed());
            if closed {
                break;
            }
        }
        assert!(closed, "the half-close was not reported");
    }

    #[test]
    fn readiness_before_registering_is_reported() {
        let mut sel = SigioSelector::new().unwrap();
        let (mut a, b) = pair();
        a.write_all(b"early").unwrap();
        sel.register(&b, Token(1), Interest::BOTH).unwrap();
        let ev = wait(&mut sel, 1000);
        assert_eq!(ev.len(), 1);
        assert!(ev[0].is_readable() && ev[0].is_writable());
    }

    #[test]
    fn deregistered_descriptor_raises_nothing() {
        let mut sel = SigioSelector::new().unwrap();
        let (mut a, b) = pair();
        sel.register(&b, Token(1), Interest::READABLE).unwrap();
        sel.deregister(&b).unwrap();
        a.write_all(b"x").unwrap();
        assert!(wait(&mut sel, 20).is_empty());
        // SAFETY: F_GETFL only reads flags.
        let flags = unsafe { libc::fcntl(b.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(flags & libc::O_ASYNC, 0, "O_ASYNC cleared");
    }

    #[test]
    fn waker_and_wrong_thread() {
        let mut sel = SigioSelector::new().unwrap();
        assert_eq!(
            SigioSelector::new().unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        let waker = sel.waker(Token(9)).unwrap();
        let w = waker.clone();
        std::thread::spawn(move || w.wake().unwrap())
            .join()
            .unwrap();
        let ev = wait(&mut sel, 1000);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].token(), Token(9));
        assert!(wait(&mut sel, 0).is_empty(), "the wake was consumed");
        let (_a, b) = pair();
        let err = std::thread::scope(|s| {
            s.spawn(|| {
                let mut events = Events::with_capacity(1);
                sel.select(&mut events, Some(Duration::ZERO)).unwrap_err()
            })
            .join()
            .unwrap()
        });
        assert!(err.to_string().contains("thread"), "{err}");
        sel.register(&b, Token(2), Interest::READABLE).unwrap();
    }

    /// Dropped in another thread, a selector used to clear that thread's
    /// mark and leave its owner unable to open another.
    #[test]
    fn dropped_in_another_thread_frees_its_owner_only() {
        let (selector_tx, selector_rx) = std::sync::mpsc::channel();
        let (dropped_tx, dropped_rx) = std::sync::mpsc::channel();
        let owner = std::thread::spawn(move || {
            selector_tx.send(SigioSelector::new().unwrap()).unwrap();
            dropped_rx.recv().unwrap();
            SigioSelector::new().map(drop)
        });
        let sel = selector_rx.recv().unwrap();
        let second_in_dropper = std::thread::spawn(move || {
            let _mine = SigioSelector::new().unwrap();
            drop(sel);
            SigioSelector::new().map(drop)
        })
        .join()
        .unwrap();
        assert_eq!(
            second_in_dropper.unwrap_err().kind(),
            io::ErrorKind::AlreadyExists,
            "the dropping thread still has its own"
        );
        dropped_tx.send(()).unwrap();
        owner
            .join()
            .unwrap()
            .expect("the owner thread may open a new one");
    }

    /// With RLIMIT_SIGPENDING far below the number of ready descriptors the
    /// kernel drops real-time signals and raises SIGIO: every descriptor must
    /// still be reported.
    #[test]
    fn queue_overflow_reports_every_descriptor() {
        // Run in a thread of its own, with a small pending-signal limit for the
        // whole process while it runs (other tests queue few signals).
        std::thread::spawn(|| {
            let mut old = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: reads the limit into a live struct.
            unsafe { libc::getrlimit(libc::RLIMIT_SIGPENDING, &mut old) };
            let mut sel = SigioSelector::new().unwrap();
            let pairs: Vec<_> = (0..200).map(|_| pair()).collect();
            for (i, (_, b)) in pairs.iter().enumerate() {
                sel.register(b, Token(i), Interest::READABLE).unwrap();
            }
            assert!(wait(&mut sel, 0).is_empty());
            let low = libc::rlimit {
                rlim_cur: 8,
                rlim_max: old.rlim_max,
            };
            // SAFETY: sets the soft limit from a live struct.
            unsafe { libc::setrlimit(libc::RLIMIT_SIGPENDING, &low) };
            for (a, _) in &pairs {
                (&*a).write_all(b"x").unwrap();
            }
            // SAFETY: restores the limit read above.
            unsafe { libc::setrlimit(libc::RLIMIT_SIGPENDING, &old) };
            let mut seen = std::collections::HashSet::new();
            for _ in 0..10 {
                for e in wait(&mut sel, 100) {
                    assert!(e.is_readable());
                    seen.insert(e.token().0);
                }
            }
            assert!(sel.overflows() >= 1, "the queue never overflowed");
            assert_eq!(seen.len(), pairs.len(), "readiness was lost");
        })
        .join()
        .unwrap();
    }

    fn signal_set(read: impl FnOnce(&mut libc::sigset_t)) -> libc::sigset_t {
        // SAFETY: sigset_t is plain data, initialised by sigemptyset.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a live sigset_t.
        unsafe { libc::sigemptyset(&mut set) };
        read(&mut set);
        set
    }

    fn is_member(set: &libc::sigset_t, signal: libc::c_int) -> bool {
        // SAFETY: `set` is a live, initialised sigset_t.
        unsafe { libc::sigismember(set, signal) == 1 }
    }

    /// Whether `signal` is blocked in this thread.
    fn blocked(signal: libc::c_int) -> bool {
        let mask = signal_set(|set| {
            // SAFETY: a null new mask only reads the current one into `set`.
            unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), set) };
        });
        is_member(&mask, signal)
    }

    /// Whether `signal` is pending for this thread or the process.
    fn pending(signal: libc::c_int) -> bool {
        let set = signal_set(|set| {
            // SAFETY: sigpending writes into the live set.
            unsafe { libc::sigpending(set) };
        });
        is_member(&set, signal)
    }

    /// The selector used to leave its two signals blocked in its thread for
    /// good; a signal the thread had blocked before must stay blocked.
    #[test]
    fn close_restores_the_signal_mask() {
        std::thread::spawn(|| {
            assert!(!blocked(sigio_signal()) && !blocked(libc::SIGIO));
            let mut sel = SigioSelector::new().unwrap();
            assert!(blocked(sigio_signal()) && blocked(libc::SIGIO));
            sel.close().unwrap();
            assert!(
                !blocked(sigio_signal()),
                "the readiness signal is still blocked"
            );
            assert!(!blocked(libc::SIGIO), "SIGIO is still blocked");

            let sigio_only = signal_set(|set| {
                // SAFETY: `set` is a live sigset_t.
                unsafe { libc::sigaddset(set, libc::SIGIO) };
            });
            // SAFETY: blocks SIGIO in this thread only.
            unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &sigio_only, std::ptr::null_mut()) };
            drop(SigioSelector::new().unwrap());
            assert!(
                blocked(libc::SIGIO),
                "a signal blocked before was unblocked"
            );
            assert!(!blocked(sigio_signal()));
        })
        .join()
        .unwrap();
    }

    /// Signals queued for descriptors the caller never waited for used to
    /// stay pending in the thread after close.
    #[test]
    fn close_leaves_no_signal_pending() {
        std::thread::spawn(|| {
            let mut sel = SigioSelector::new().unwrap();
            let (mut a, b) = pair();
            sel.register(&b, Token(1), Interest::READABLE).unwrap();
            assert!(wait(&mut sel, 0).is_empty());
            a.write_all(b"x").unwrap();
            assert!(pending(sigio_signal()), "the write queued no signal");
            sel.close().unwrap();
            assert!(
                !pending(sigio_signal()),
                "a readiness signal is still pending"
            );
        })
        .join()
        .unwrap();
    }

    /// Deregistering a number that now names another file (the registered one
    /// was closed and the number reused) used to clear that file's O_ASYNC.
    #[test]
    fn deregistering_a_reused_number_leaves_the_new_file_alone() {
        let mut sel = SigioSelector::new().unwrap();
        let (_a, b) = pair();
        let fd = b.as_raw_fd();
        sel.register(&b, Token(1), Interest::READABLE).unwrap();
        let (_c, d) = pair();
        // Someone else's signal-driven file, with no owner, so it signals nobody.
        // SAFETY: fcntl on our own socket; F_SETOWN 0 leaves it without owner.
        unsafe {
            assert_eq!(libc::fcntl(d.as_raw_fd(), libc::F_SETOWN, 0), 0);
            let flags = libc::fcntl(d.as_raw_fd(), libc::F_GETFL);
            assert_eq!(
                libc::fcntl(d.as_raw_fd(), libc::F_SETFL, flags | libc::O_ASYNC),
                0
            );
        }
        // Number `fd` now names d's file (b's file is closed by the swap).
        // SAFETY: both descriptors are ours; `b` keeps owning number `fd`.
        assert_eq!(unsafe { libc::dup2(d.as_raw_fd(), fd) }, fd);
        sel.deregister(&b).unwrap();
        // SAFETY: F_GETFL only reads flags.
        let flags = unsafe { libc::fcntl(d.as_raw_fd(), libc::F_GETFL) };
        assert_ne!(
            flags & libc::O_ASYNC,
            0,
            "another file's O_ASYNC was cleared"
        );
    }

    /// A failed poll of the signalled descriptors used to drop them: their
    /// signals were consumed, so their readiness was never reported. Made to
    /// fail with EINVAL (more descriptors than RLIMIT_NOFILE), in a child
    /// process, since the limit is the whole process's.
    #[test]
    fn a_failed_readiness_check_loses_no_descriptor() {
        const CHILD: &str = "IOMUX_SIGIO_FAILED_CHECK_CHILD";
        if std::env::var_os(CHILD).is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "selector::sigio::tests::a_failed_readiness_check_loses_no_descriptor",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD, "1")
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains("1 passed"),
                "child: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        }
        let mut sel = SigioSelector::new().unwrap();
        let pairs: Vec<_> = (0..40).map(|_| pair()).collect();
        for (i, (_, b)) in pairs.iter().enumerate() {
            sel.register(b, Token(i), Interest::READABLE).unwrap();
        }
        assert!(wait(&mut sel, 0).is_empty());
        for (a, _) in &pairs {
            (&*a).write_all(b"x").unwrap();
        }
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: reads and sets this (child) process's limit from live structs.
        unsafe {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut old);
            let low = libc::rlimit {
                rlim_cur: 16,
                rlim_max: old.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &low);
        }
        let mut events = Events::with_capacity(64);
        let failed = sel.select(&mut events, Some(Duration::from_millis(100)));
        // SAFETY: restores the limit read above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) };
        let mut seen: std::collections::HashSet<usize> =
            events.iter().map(|e| e.token().0).collect();
        for _ in 0..10 {
            seen.extend(wait(&mut sel, 100).iter().map(|e| e.token().0));
        }
        assert_eq!(seen.len(), pairs.len(), "readiness was lost");
        let err = failed.expect_err("a poll over the descriptor limit succeeded");
        assert!(err.to_string().contains("poll"), "{err}");
    }
}
