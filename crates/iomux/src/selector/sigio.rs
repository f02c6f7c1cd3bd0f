//! Signal-driven readiness: `O_ASYNC` sockets that raise a real-time signal
//! carrying the descriptor, read synchronously from a `signalfd`.
//!
//! Each registered descriptor gets `F_SETOWN_EX` (owner: the thread that
//! created the selector, `F_OWNER_TID`), `F_SETSIG` (the real-time signal
//! [`sigio_signal`], so the kernel queues one `siginfo` per readiness change
//! with the descriptor in `si_fd` and the poll band in `si_band`) and
//! `O_ASYNC`. The signals stay blocked in that thread and are consumed by
//! reading the signalfd, never by an asynchronous handler.
//!
//! The signals say that something *changed*, so this selector is
//! edge-triggered: read and write until `EAGAIN`. When the real-time queue
//! overflows (RLIMIT_SIGPENDING), the kernel drops the signal and raises a
//! plain `SIGIO` instead; this selector then reports every registered
//! descriptor readable and writable once, so the caller tries each and no
//! readiness is lost.

use super::base::{BaseSelector, Syscalls};
use super::poll::{event_flags, poll_events};
use super::table::FdTable;
use super::{Backend, Registration, Trigger};
use crate::sys::{check_fd_open, context, cvt, owned, ppoll, registration_error, wait_honestly};
use crate::{Event, Events};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

// fcntl commands and owner type glibc's headers have but the libc crate lacks
// on this target (the values are the same on every Linux architecture).
const F_SETSIG: libc::c_int = 10;
const F_SETOWN_EX: libc::c_int = 15;
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
/// One per thread. The two signals stay blocked in that thread afterwards.
///
/// ```
/// use iomux::{Events, Interest, Selector, Token};
/// use iomux::selector::sigio::SigioSelector;
/// use std::io::Write;
/// use std::os::fd::AsRawFd;
/// let mut sel = SigioSelector::new().unwrap();
/// let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
/// b.set_nonblocking(true).unwrap();
/// sel.register(b.as_raw_fd(), Token(3), Interest::READABLE).unwrap();
/// a.write_all(b"hi").unwrap();
/// let mut ev = Events::with_capacity(4);
/// sel.select(&mut ev, Some(std::time::Duration::from_secs(1))).unwrap();
/// assert!(ev.iter().any(|e| e.token() == Token(3) && e.is_readable()));
/// ```
pub type SigioSelector = BaseSelector<Sigio>;

/// The signal-driven I/O behind [`SigioSelector`]: the signalfd, and the
/// descriptors signalled but not yet checked.
#[derive(Debug)]
pub struct Sigio {
    signalfd: Option<OwnedFd>,
    owner: libc::pid_t,
    /// Descriptors whose state the next wait checks: named by a signal, just
    /// registered (readiness from before `O_ASYNC`), or all after an overflow.
    pending: VecDeque<RawFd>,
    checks: Vec<libc::pollfd>,
    /// The signalfd first, then the wakers' eventfds.
    pollfds: Vec<libc::pollfd>,
    infos: Vec<libc::signalfd_siginfo>,
    /// Queue overflows seen (plain SIGIO received).
    overflows: u64,
}

/// What a sigio selector keeps per registered descriptor.
#[derive(Debug, Clone, Copy)]
pub struct SigioState {
    /// Queued in `pending` for the next readiness check.
    queued: bool,
    /// A waker's eventfd, watched beside the signalfd (an eventfd raises no signal).
    waker: bool,
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

    /// How many times the real-time signal queue overflowed and every
    /// descriptor was checked instead (each costs a check of them all; a
    /// higher RLIMIT_SIGPENDING avoids them).
    ///
    /// ```
    /// assert_eq!(iomux::selector::sigio::SigioSelector::new().unwrap().overflows(), 0);
    /// ```
    pub fn overflows(&self) -> u64 {
        self.sys.overflows
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
        // SAFETY: blocks two signals in this thread only; the old mask is not needed.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &mask, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(context(
                io::Error::from_raw_os_error(rc),
                "blocking the sigio signals",
            ));
        }
        // SAFETY: `mask` is a live sigset_t; -1 asks for a new descriptor.
        let sfd = cvt(unsafe { libc::signalfd(-1, &mask, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) })
            .map_err(|e| context(e, "signalfd"))?;
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

    /// Stop the descriptor's signals; a descriptor already closed has none to stop.
    fn disarm(&self, fd: RawFd) {
        // SAFETY: F_GETFL/F_SETFL only read and set flags; EBADF is harmless.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags >= 0 && flags & libc::O_ASYNC != 0 {
                libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_ASYNC);
            }
        }
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
        let Some(sfd) = self.signalfd.as_ref().map(AsRawFd::as_raw_fd) else {
            return Ok(());
        };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        while self.pending.len() < limit {
            self.infos.clear();
            // SAFETY: reads at most SIGINFO_BATCH whole entries into the
            // vector's spare capacity (reserved in `new`).
            let n =
                unsafe { libc::read(sfd, self.infos.as_mut_ptr().cast(), SIGINFO_BATCH * size) };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(()),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(context(e, "reading the signalfd")),
                };
            }
            // SAFETY: the kernel wrote n / size whole entries.
            unsafe { self.infos.set_len(n as usize / size) };
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

    /// One wait on the signalfd and the wakers (zero time when checks are
    /// pending), then the readiness checks of the descriptors signalled.
    fn wait_once(
        &mut self,
        table: &mut FdTable<SigioState>,
        events: &mut Events,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        let capacity = events.capacity();
        let wait = if self.pending.is_empty() {
            timeout
        } else {
            Some(Duration::ZERO)
        };
        let pollfds = &mut self.pollfds;
        wait_honestly(wait, |t| ppoll(pollfds, t))
            .map_err(|e| context(e, "ppoll on the signalfd"))?;
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
        self.check_pending(table, capacity - events.len(), events);
        Ok(())
    }

    /// Report the current state of up to `room` queued descriptors, from one
    /// poll of them all: a signal names the descriptor, the poll says what is
    /// true now (a half-close, for one, comes as a plain POLL_IN signal).
    fn check_pending(&mut self, table: &mut FdTable<SigioState>, room: usize, events: &mut Events) {
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
            return;
        }
        // SAFETY: `checks` is a live array of pollfds; zero timeout.
        unsafe {
            libc::poll(
                self.checks.as_mut_ptr(),
                self.checks.len() as libc::nfds_t,
                0,
            )
        };
        for c in &self.checks {
            if c.revents != 0 {
                if let Some((reg, _)) = table.get(c.fd) {
                    events.push(Event::new(reg.token, event_flags(c.revents)));
                }
            }
        }
    }
}

/// Refuse a descriptor whose file cannot raise readiness signals: the
/// kernel takes `O_ASYNC` on an eventfd, timerfd or regular file without a
/// word and never signals, so a wait for it would never end.
fn check_raises_signals(fd: RawFd) -> io::Result<()> {
    // SAFETY: stat is plain data, filled in by fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into the live stat.
    cvt(unsafe { libc::fstat(fd, &mut st) })
        .map_err(|e| context(e, format_args!("fstat fd {fd}")))?;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFSOCK | libc::S_IFIFO | libc::S_IFCHR => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("sigio cannot watch descriptor {fd}: only sockets, pipes and terminals raise readiness signals (regular files, eventfds and timerfds never do)"),
        )),
    }
}

impl Syscalls for Sigio {
    type State = SigioState;
    const BACKEND: Backend = Backend::Sigio;

    fn trigger(&self) -> Trigger {
        Trigger::Edge
    }

    fn watch(&mut self, reg: Registration) -> io::Result<SigioState> {
        let fd = reg.fd;
        self.check_thread()?;
        check_fd_open(fd).map_err(|e| registration_error(fd, "sigio register", e))?;
        check_raises_signals(fd)?;
        self.arm(fd)
            .map_err(|e| registration_error(fd, "sigio fcntl", e))?;
        // Readiness from before O_ASYNC raised no signal: look once at the next wait.
        self.pending.push_back(fd);
        Ok(SigioState {
            queued: true,
            waker: false,
        })
    }

    /// The waker's eventfd is watched beside the signalfd, level-triggered.
    fn watch_waker(&mut self, reg: Registration) -> io::Result<SigioState> {
        self.pollfds.push(libc::pollfd {
            fd: reg.fd,
            events: libc::POLLIN,
            revents: 0,
        });
        Ok(SigioState {
            queued: false,
            waker: true,
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
            self.disarm(reg.fd);
        }
        Ok(())
    }

    fn wait(
        &mut self,
        table: &mut FdTable<SigioState>,
        events: &mut Events,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        self.check_thread()?;
        // The signals may name nothing ready for its interest (say a writable
        // socket registered for reading): then it waits again for the rest of
        // the timeout, so that a wait never ends early.
        wait_honestly(timeout, |t| {
            self.wait_once(table, events, t)?;
            Ok(events.len())
        })
        .map(drop)
    }

    fn close(&mut self, table: &mut FdTable<SigioState>) -> io::Result<()> {
        for (reg, state) in table.iter() {
            if !state.waker {
                self.disarm(reg.fd);
            }
        }
        self.pending.clear();
        self.pollfds.clear();
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
        sel.register(b.as_raw_fd(), Token(5), Interest::READABLE)
            .unwrap();
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
        sel.register(b.as_raw_fd(), Token(1), Interest::READABLE)
            .unwrap();
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
        sel.register(b.as_raw_fd(), Token(1), Interest::BOTH)
            .unwrap();
        let ev = wait(&mut sel, 1000);
        assert_eq!(ev.len(), 1);
        assert!(ev[0].is_readable() && ev[0].is_writable());
    }

    #[test]
    fn deregistered_descriptor_raises_nothing() {
        let mut sel = SigioSelector::new().unwrap();
        let (mut a, b) = pair();
        sel.register(b.as_raw_fd(), Token(1), Interest::READABLE)
            .unwrap();
        sel.deregister(b.as_raw_fd()).unwrap();
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
        let fd = b.as_raw_fd();
        let err = std::thread::scope(|s| {
            s.spawn(|| {
                let mut events = Events::with_capacity(1);
                sel.select(&mut events, Some(Duration::ZERO)).unwrap_err()
            })
            .join()
            .unwrap()
        });
        assert!(err.to_string().contains("thread"), "{err}");
        sel.register(fd, Token(2), Interest::READABLE).unwrap();
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
                sel.register(b.as_raw_fd(), Token(i), Interest::READABLE)
                    .unwrap();
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
}
