//! epoll(7): the interest set lives in the kernel, so a wait costs O(ready).

use super::base::{BaseSelector, Syscalls};
use super::table::{lock, FdTable, Request, Watch};
use super::{Backend, Registration, Trigger};
use crate::sys::{context, cvt, owned, registration_error, timespec, timespec_ptr};
use crate::{Event, Events, Interest, Token};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A selector over epoll, in level, edge or one-shot mode.
///
/// A registration with read interest also asks for `EPOLLRDHUP`, so a peer's
/// half-close is reported as [`Event::is_read_closed`]; one without read
/// interest does not, or a level-triggered wait would report the half-close
/// on every pass while the caller is not reading (a spin). Timeouts go through `epoll_pwait2`
/// (nanoseconds) where the kernel has it, else `epoll_wait` rounded up to the
/// next millisecond so that a wait never ends early.
///
/// ```
/// use iomux::{EpollSelector, Events, Interest, Selector, Token, Trigger};
/// use std::io::Write;
/// use std::os::fd::AsRawFd;
/// let mut sel = EpollSelector::new(Trigger::Oneshot).unwrap();
/// let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
/// sel.register(&b, Token(1), Interest::READABLE).unwrap();
/// a.write_all(b"x").unwrap();
/// let mut ev = Events::with_capacity(4);
/// sel.select(&mut ev, Some(std::time::Duration::ZERO)).unwrap();
/// assert_eq!(ev.len(), 1);
/// sel.select(&mut ev, Some(std::time::Duration::ZERO)).unwrap();
/// assert_eq!(ev.len(), 0, "one-shot stays silent until re-armed");
/// ```
pub type EpollSelector = BaseSelector<Epoll>;

pub(crate) use sealed::{Epoll, EpollCtl};

// Public in name only: `EpollSelector` names them, so they are `pub`, but they
// live in a private module, so no other crate can name or build them.
mod sealed {
    use super::*;

    /// The epoll system calls behind [`EpollSelector`].
    #[derive(Debug)]
    pub struct Epoll {
        pub(super) ctl: EpollCtl,
        pub(super) trigger: Trigger,
        pub(super) buffer: Vec<libc::epoll_event>,
        pub(super) has_pwait2: bool,
    }

    /// The thread-safe half of epoll: changing the interest list, which a
    /// [`Registry`](crate::Registry) does from any thread.
    #[derive(Debug, Clone)]
    pub struct EpollCtl {
        /// Open until the selector and every handle are dropped, so that it can
        /// be watched by another loop for as long as the selector exists.
        pub(super) epfd: Arc<OwnedFd>,
    }
}

impl BaseSelector<Epoll> {
    /// Open an epoll instance whose registrations use `trigger`.
    ///
    /// ```
    /// let sel = iomux::EpollSelector::new(iomux::Trigger::Edge).unwrap();
    /// ```
    pub fn new(trigger: Trigger) -> io::Result<EpollSelector> {
        // SAFETY: epoll_create1 takes no pointers; checked by cvt.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })
            .map_err(|e| context(e, "epoll_create1"))?;
        Ok(BaseSelector::with(Epoll {
            ctl: EpollCtl {
                epfd: Arc::new(owned(fd)),
            },
            trigger,
            buffer: Vec::new(),
            has_pwait2: true,
        }))
    }

    /// Register a listener shared with other selectors (other threads or
    /// processes) with `EPOLLEXCLUSIVE`, so one connection wakes one waiter
    /// instead of all of them (the thundering herd). Such a registration cannot
    /// be changed with `reregister`; deregister and register again instead.
    ///
    /// ```
    /// use iomux::{EpollSelector, Interest, Token, Trigger};
    /// use std::os::fd::AsRawFd;
    /// let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let mut sel = EpollSelector::new(Trigger::Level).unwrap();
    /// sel.register_exclusive(&l, Token(0), Interest::READABLE).unwrap();
    /// ```
    pub fn register_exclusive(
        &mut self,
        fd: impl AsFd,
        token: Token,
        interest: Interest,
    ) -> io::Result<Registration> {
        let reg = Registration::of(fd, token, interest, self.sys.trigger);
        let mut table = Self::lock_applied(&self.shared, &mut self.sys);
        table.check(Backend::Epoll, Request::Register(reg))?;
        table.register_by(&mut self.sys, reg, |epoll, reg| {
            // EPOLLEXCLUSIVE allows only EPOLLIN, EPOLLOUT, EPOLLET and EPOLLWAKEUP beside it.
            let allowed = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLET) as u32;
            let flags = (flags(interest, reg.trigger) & allowed) | libc::EPOLLEXCLUSIVE as u32;
            epoll.ctl.add(reg, flags)
        })
    }
}

/// The epoll instance itself, so that this selector can be nested in another
/// event loop: it is readable when a wait would report something. Open for
/// as long as the selector exists (closing the selector empties it).
///
/// Only epoll offers this. select and poll keep their interest set in the
/// process and hand it to each wait, so no descriptor stands for them (an
/// eventfd would need a thread polling on its behalf); sigio's signalfd
/// misses the readiness a registration finds already there; and the uring
/// selector submits its poll requests only when it waits. Nest an
/// `EpollSelector` instead.
///
/// ```
/// use iomux::{EpollSelector, Events, Interest, PollSelector, Selector, Token, Trigger};
/// use std::io::Write;
/// use std::time::Duration;
/// let mut inner = EpollSelector::new(Trigger::Edge).unwrap();
/// let mut outer = PollSelector::new().unwrap();
/// outer.register(&inner, Token(0), Interest::READABLE).unwrap();
/// let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
/// inner.register(&b, Token(7), Interest::READABLE).unwrap();
/// a.write_all(b"x").unwrap();
/// let mut events = Events::with_capacity(8);
/// outer.select(&mut events, Some(Duration::from_secs(1))).unwrap();
/// assert_eq!(events.iter().next().unwrap().token(), Token(0), "the inner selector is ready");
/// inner.select(&mut events, Some(Duration::ZERO)).unwrap();
/// assert_eq!(events.iter().next().unwrap().token(), Token(7));
/// ```
impl AsFd for BaseSelector<Epoll> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sys.ctl.epfd.as_fd()
    }
}

/// The epoll flags of a registration.
fn flags(interest: Interest, trigger: Trigger) -> u32 {
    let mut flags = 0;
    if interest.is_readable() {
        // The half-close is news for a reader only (see EpollSelector).
        flags |= (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
    }
    if interest.is_writable() {
        flags |= libc::EPOLLOUT as u32;
    }
    match trigger {
        Trigger::Level => {}
        Trigger::Edge => flags |= libc::EPOLLET as u32,
        Trigger::Oneshot => flags |= libc::EPOLLONESHOT as u32,
    }
    flags
}

impl EpollCtl {
    fn epfd(&self) -> RawFd {
        self.epfd.as_raw_fd()
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, flags: u32, token: Token) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: flags,
            u64: token.0 as u64,
        };
        // SAFETY: `ev` is a live epoll_event for the duration of the call.
        cvt(unsafe { libc::epoll_ctl(self.epfd(), op, fd, &mut ev) }).map(drop)
    }

    fn add(&self, reg: Registration, flags: u32) -> io::Result<()> {
        let fd = reg.fd;
        self.ctl(libc::EPOLL_CTL_ADD, fd, flags, reg.token).map_err(|e| match e.raw_os_error() {
            Some(libc::EPERM) => io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("epoll cannot watch descriptor {fd} (regular files and directories are always ready; read them directly)"),
            ),
            Some(libc::EINVAL) if fd == self.epfd() => io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("descriptor {fd} is this selector's own epoll instance, which cannot watch itself; register the descriptors it should watch"),
            ),
            Some(libc::ELOOP) => io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("descriptor {fd} is an epoll instance that (directly or through others) already watches this one: registering it would make a cycle"),
            ),
            _ => registration_error(fd, "epoll_ctl(ADD)", e),
        })
    }

    fn del(&self, fd: RawFd) -> io::Result<()> {
        match self.ctl(libc::EPOLL_CTL_DEL, fd, 0, Token(0)) {
            // Closed (EBADF) or number reused by a file never registered (ENOENT):
            // the kernel already forgot the old one.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBADF | libc::ENOENT)) => Ok(()),
            Err(e) => Err(context(e, format_args!("epoll_ctl(DEL, fd {fd})"))),
            Ok(()) => Ok(()),
        }
    }
}

impl Watch<()> for EpollCtl {
    fn watch(&mut self, reg: Registration) -> io::Result<()> {
        self.add(reg, flags(reg.interest, reg.trigger))
    }

    fn rewatch(&mut self, _old: (Registration, ()), new: Registration) -> io::Result<()> {
        let flags = flags(new.interest, new.trigger);
        self.ctl(libc::EPOLL_CTL_MOD, new.fd, flags, new.token)
    }

    fn unwatch(&mut self, _: &mut FdTable<()>, reg: Registration, (): ()) -> io::Result<()> {
        self.del(reg.fd)
    }
}

impl Watch<()> for Epoll {
    fn watch(&mut self, reg: Registration) -> io::Result<()> {
        self.ctl.watch(reg)
    }

    fn rewatch(&mut self, old: (Registration, ()), new: Registration) -> io::Result<()> {
        self.ctl.rewatch(old, new)
    }

    fn unwatch(&mut self, table: &mut FdTable<()>, reg: Registration, (): ()) -> io::Result<()> {
        self.ctl.unwatch(table, reg, ())
    }
}

impl Epoll {
    fn wait_once(&mut self, capacity: usize, timeout: Option<Duration>) -> io::Result<usize> {
        let epfd = self.ctl.epfd();
        let buf = self.buffer.as_mut_ptr();
        let max = capacity.min(libc::c_int::MAX as usize) as libc::c_int;
        if self.has_pwait2 {
            let ts = timeout.map(timespec);
            let ts_ptr = timespec_ptr(&ts);
            // SAFETY: `buf` has room for `max` events, `ts_ptr` is null or points
            // to a live timespec, and a null sigmask leaves the mask unchanged.
            let n = unsafe {
                libc::syscall(
                    libc::SYS_epoll_pwait2,
                    epfd,
                    buf,
                    max,
                    ts_ptr,
                    std::ptr::null::<libc::sigset_t>(),
                    0,
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ENOSYS) {
                return Err(err);
            }
            self.has_pwait2 = false;
        }
        let ms = match timeout {
            None => -1,
            // Round up: a wait must not end before its timeout.
            Some(t) => t
                .as_nanos()
                .div_ceil(1_000_000)
                .min(libc::c_int::MAX as u128) as libc::c_int,
        };
        // SAFETY: `buf` has room for `max` events.
        cvt(unsafe { libc::epoll_wait(epfd, buf, max, ms) }).map(|n| n as usize)
    }
}

#[inline]
fn event_flags(epoll: u32) -> u8 {
    let mut flags = 0;
    if epoll & (libc::EPOLLIN | libc::EPOLLPRI) as u32 != 0 {
        flags |= Event::READABLE;
    }
    if epoll & libc::EPOLLOUT as u32 != 0 {
        flags |= Event::WRITABLE;
    }
    if epoll & libc::EPOLLRDHUP as u32 != 0 {
        flags |= Event::READ_CLOSED;
    }
    if epoll & libc::EPOLLHUP as u32 != 0 {
        flags |= Event::HANGUP;
    }
    if epoll & libc::EPOLLERR as u32 != 0 {
        flags |= Event::ERROR;
    }
    flags
}

impl Syscalls for Epoll {
    type State = ();
    type Remote = EpollCtl;
    const BACKEND: Backend = Backend::Epoll;

    fn trigger(&self) -> Trigger {
        self.trigger
    }

    fn remote(&self) -> Option<EpollCtl> {
        Some(self.ctl.clone())
    }

    fn watch_waker(&mut self, reg: Registration) -> io::Result<()> {
        self.ctl.add(reg, libc::EPOLLIN as u32)
    }

    #[inline]
    fn wait(
        &mut self,
        table: &Mutex<FdTable<()>>,
        events: &mut Events,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        // One event per registered descriptor at most: the buffer need not be larger.
        let capacity = events.capacity().min(lock(table).len().max(1));
        if self.buffer.capacity() < capacity {
            self.buffer.reserve(capacity);
        }
        let n = self
            .wait_once(capacity, timeout)
            .map_err(|e| context(e, "epoll_wait"))?;
        // SAFETY: the kernel initialised the first `n` entries, n <= capacity.
        unsafe { self.buffer.set_len(n) };
        for ev in &self.buffer {
            events.push(Event::new(Token(ev.u64 as usize), event_flags(ev.events)));
        }
        Ok(())
    }

    /// The epoll descriptor stays open until the selector is dropped (see
    /// its `AsFd`); the registrations in it are removed now.
    fn close(&mut self, table: &mut FdTable<()>) -> io::Result<()> {
        for (reg, ()) in table.iter() {
            let _ = self.ctl.del(reg.fd);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Selector;
    use std::time::Instant;

    /// Kernels before 5.11 lack epoll_pwait2: the millisecond fallback must
    /// round up, so a sub-millisecond wait never ends early.
    #[test]
    fn fallback_without_epoll_pwait2_never_ends_early() {
        let mut sel = EpollSelector::new(Trigger::Level).unwrap();
        sel.sys.has_pwait2 = false;
        let mut events = Events::with_capacity(4);
        for timeout in [Duration::from_micros(100), Duration::from_micros(3100)] {
            for _ in 0..10 {
                let start = Instant::now();
                sel.select(&mut events, Some(timeout)).unwrap();
                let elapsed = start.elapsed();
                assert!(elapsed >= timeout, "{elapsed:?} < {timeout:?}");
                assert!(events.is_empty());
            }
        }
        assert!(!sel.sys.has_pwait2, "the fallback path was taken");
    }

    /// An epoll instance that would watch itself, or close a cycle of
    /// instances, is refused by name, leaving no entry (the kernel's own
    /// words were a bare "Invalid argument").
    #[test]
    fn an_epoll_instance_never_watches_itself_or_a_cycle() {
        let mut outer = EpollSelector::new(Trigger::Level).unwrap();
        // SAFETY: `outer` keeps its epoll descriptor open until the end of the test.
        let own = unsafe { BorrowedFd::borrow_raw(outer.sys.ctl.epfd()) };
        let refused = |sel: &mut EpollSelector, why: &str| {
            let err = sel.register(own, Token(1), Interest::READABLE).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
            assert!(err.to_string().contains(why), "{err}");
            assert_eq!(sel.registration(own.as_raw_fd()), None);
        };
        refused(&mut outer, "cannot watch itself");

        let mut inner = EpollSelector::new(Trigger::Level).unwrap();
        outer
            .register(&inner, Token(2), Interest::READABLE)
            .unwrap();
        refused(&mut inner, "cycle");
    }

    /// Whether thread `tid` of this process is blocked in an epoll wait
    /// (the syscall number /proc shows for it).
    fn blocked_in_epoll_wait(tid: libc::pid_t) -> bool {
        let path = format!("/proc/self/task/{tid}/syscall");
        let Ok(text) = std::fs::read_to_string(path) else {
            return false;
        };
        let number = text.split_whitespace().next().unwrap_or("");
        [
            libc::SYS_epoll_pwait2,
            libc::SYS_epoll_wait,
            libc::SYS_epoll_pwait,
        ]
        .iter()
        .any(|n| number == n.to_string())
    }

    /// A registration made through the handle while another thread is
    /// blocked in the selector's wait is reported by that wait: the handle
    /// must not wait for the wait to end (it would, if the shared table
    /// stayed locked while waiting: the wait would then time out empty).
    #[test]
    fn registry_registers_into_a_wait_blocked_in_another_thread() {
        use std::io::Write;
        let mut sel = EpollSelector::new(Trigger::Edge).unwrap();
        let registry = sel.registry();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tid_tx.send(unsafe { libc::gettid() }).unwrap();
            let mut events = Events::with_capacity(8);
            sel.select(&mut events, Some(Duration::from_secs(20)))
                .unwrap();
            let tokens: Vec<Token> = events.iter().map(|e| e.token()).collect();
            (sel, tokens)
        });
        let tid = tid_rx.recv().unwrap();
        let start = Instant::now();
        while !blocked_in_epoll_wait(tid) {
            assert!(start.elapsed() < Duration::from_secs(10), "never blocked");
            std::thread::sleep(Duration::from_millis(1));
        }
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.write_all(b"x").unwrap();
        let reg = registry.register(&b, Token(5), Interest::READABLE).unwrap();
        assert_eq!(reg.trigger, Trigger::Edge, "the selector's own trigger");
        let (mut sel, tokens) = waiter.join().unwrap();
        assert_eq!(tokens, vec![Token(5)]);
        sel.deregister(&b).unwrap();
    }

    /// The handle and the selector keep one set of registrations.
    #[test]
    fn registry_and_selector_share_their_registrations() {
        let mut sel = EpollSelector::new(Trigger::Level).unwrap();
        let registry = sel.registry();
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let reg = registry
            .register_with_trigger(&a, Token(1), Interest::READABLE, Trigger::Oneshot)
            .unwrap();
        assert_eq!(sel.registration(a.as_raw_fd()), Some(reg));
        let err = sel.register(&a, Token(2), Interest::READABLE).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        let changed = sel.reregister(&a, Token(3), Interest::WRITABLE).unwrap();
        assert_eq!(
            changed.trigger,
            Trigger::Oneshot,
            "the handle's trigger kept"
        );
        assert_eq!(
            registry
                .reregister(&a, Token(4), Interest::BOTH)
                .unwrap()
                .token,
            Token(4)
        );
        assert_eq!(registry.deregister(&a).unwrap().token, Token(4));
        assert!(sel.is_empty());
        let err = sel.deregister(&a).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        sel.close().unwrap();
        let err = registry
            .register(&a, Token(1), Interest::READABLE)
            .unwrap_err();
        assert!(err.to_string().contains("closed"), "{err}");
    }
}
