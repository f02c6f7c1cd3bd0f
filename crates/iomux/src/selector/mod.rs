//! The [`Selector`] interface and its three backends, one file each.

pub mod epoll;
pub mod poll;
pub mod select;
pub mod sigio;
pub mod uring;

use crate::waker::Waker;
use crate::{Events, Interest, Token};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

/// What a selector knows about one registered descriptor.
///
/// ```
/// use iomux::{Interest, Registration, Token};
/// let r = Registration { fd: 5, token: Token(1), interest: Interest::READABLE };
/// assert_eq!(r.fd, 5);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registration {
    /// The descriptor number.
    pub fd: RawFd,
    /// The token events for it carry.
    pub token: Token,
    /// What it waits for.
    pub interest: Interest,
}

/// How readiness is reported (epoll only; select and poll are always level).
///
/// ```
/// assert_eq!("edge".parse::<iomux::Trigger>().unwrap(), iomux::Trigger::Edge);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// Reported on every wait while the condition holds.
    Level,
    /// Reported when the condition newly arises; the caller must drain (read or
    /// write until EAGAIN) or hear nothing more.
    Edge,
    /// Reported once, then silent until re-armed with `reregister`.
    Oneshot,
}

impl std::str::FromStr for Trigger {
    type Err = String;
    fn from_str(s: &str) -> Result<Trigger, String> {
        match s {
            "level" => Ok(Trigger::Level),
            "edge" => Ok(Trigger::Edge),
            "oneshot" => Ok(Trigger::Oneshot),
            _ => Err(format!("unknown trigger {s:?}; use level, edge or oneshot")),
        }
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Trigger::Level => "level",
            Trigger::Edge => "edge",
            Trigger::Oneshot => "oneshot",
        })
    }
}

/// The readiness backends.
///
/// ```
/// let b: iomux::Backend = "poll".parse().unwrap();
/// assert_eq!(b.to_string(), "poll");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// `select(2)` with fd_set bitmaps: descriptors below `FD_SETSIZE` (1024) only.
    Select,
    /// `poll(2)` (through `ppoll` for microsecond timeouts).
    Poll,
    /// `epoll(7)` with level, edge or one-shot triggering.
    Epoll,
    /// Signal-driven I/O (`O_ASYNC` + a real-time signal read from a
    /// signalfd): edge-triggered only, bound to the thread that opens it.
    Sigio,
    /// io_uring poll requests: multishot (edge), re-armed single-shot (level)
    /// or single-shot (one-shot); one `io_uring_enter` per wait.
    Uring,
}

impl Backend {
    /// Every backend that serves any thread in every trigger it lists, for tests
    /// and experiments that cover them all (sigio is bound to one thread and
    /// edge-only, so it is left out).
    ///
    /// ```
    /// assert_eq!(iomux::Backend::ALL.len(), 4);
    /// ```
    pub const ALL: [Backend; 4] = [
        Backend::Select,
        Backend::Poll,
        Backend::Epoll,
        Backend::Uring,
    ];

    /// The triggers this backend supports.
    ///
    /// ```
    /// assert_eq!(iomux::Backend::Poll.triggers(), &[iomux::Trigger::Level]);
    /// ```
    pub fn triggers(self) -> &'static [Trigger] {
        match self {
            Backend::Epoll | Backend::Uring => &[Trigger::Level, Trigger::Edge, Trigger::Oneshot],
            Backend::Sigio => &[Trigger::Edge],
            _ => &[Trigger::Level],
        }
    }

    /// Check that this backend supports `trigger`, with an error naming what to use instead.
    ///
    /// ```
    /// let err = iomux::Backend::Select.check_trigger(iomux::Trigger::Edge).unwrap_err();
    /// assert!(err.to_string().contains("use --backend epoll"));
    /// ```
    pub fn check_trigger(self, trigger: Trigger) -> io::Result<()> {
        if self.triggers().contains(&trigger) {
            Ok(())
        } else if self == Backend::Sigio {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("sigio supports --trigger edge only (signals report changes, not states); use --backend epoll for {trigger}-triggered readiness"),
            ))
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{self} supports --trigger level only; use --backend epoll for {trigger}-triggered readiness"),
            ))
        }
    }

    /// Open a selector of this backend.
    ///
    /// ```
    /// use iomux::Selector;
    /// let s = iomux::Backend::Poll.open(iomux::Trigger::Level).unwrap();
    /// assert_eq!(s.len(), 0);
    /// ```
    pub fn open(self, trigger: Trigger) -> io::Result<AnySelector> {
        self.check_trigger(trigger)?;
        Ok(match self {
            Backend::Select => AnySelector::Select(select::SelectSelector::new()?),
            Backend::Poll => AnySelector::Poll(poll::PollSelector::new()?),
            Backend::Epoll => AnySelector::Epoll(epoll::EpollSelector::new(trigger)?),
            Backend::Sigio => AnySelector::Sigio(sigio::SigioSelector::new()?),
            Backend::Uring => AnySelector::Uring(uring::UringSelector::new(trigger)?),
        })
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Backend, String> {
        match s {
            "select" => Ok(Backend::Select),
            "poll" => Ok(Backend::Poll),
            "epoll" => Ok(Backend::Epoll),
            "sigio" => Ok(Backend::Sigio),
            "uring" => Ok(Backend::Uring),
            _ => Err(format!(
                "unknown selector backend {s:?}; use select, poll, epoll, sigio or uring"
            )),
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Select => "select",
            Backend::Poll => "poll",
            Backend::Epoll => "epoll",
            Backend::Sigio => "sigio",
            Backend::Uring => "uring",
        })
    }
}

/// One interface over select, poll and epoll.
///
/// A selector holds registrations (descriptor, token, interest) and waits for
/// readiness. It never owns or closes the descriptors: deregister a descriptor
/// before closing it.
///
/// ```
/// use iomux::{Events, Interest, PollSelector, Selector, Token};
/// use std::os::fd::AsRawFd;
/// let mut sel = PollSelector::new().unwrap();
/// let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
/// let reg = sel.register(a.as_raw_fd(), Token(1), Interest::WRITABLE).unwrap();
/// assert_eq!(reg.token, Token(1));
/// let mut events = Events::with_capacity(8);
/// sel.select(&mut events, Some(std::time::Duration::ZERO)).unwrap();
/// assert!(events.iter().any(|e| e.token() == Token(1) && e.is_writable()));
/// sel.deregister(a.as_raw_fd()).unwrap();
/// ```
pub trait Selector {
    /// Start watching `fd`. Errors: an invalid interest or negative descriptor
    /// (`InvalidInput`), a descriptor already registered (`AlreadyExists`), one
    /// the backend cannot watch, or a closed selector.
    ///
    /// ```
    /// use iomux::{Backend, Events, Interest, Selector, Token, Trigger};
    /// use std::os::fd::AsRawFd;
    /// let mut sel = Backend::Epoll.open(Trigger::Level).unwrap();
    /// let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// let reg = sel.register(a.as_raw_fd(), Token(1), Interest::READABLE).unwrap();
    /// assert_eq!(reg.token, Token(1));
    /// let again = sel.register(a.as_raw_fd(), Token(2), Interest::READABLE).unwrap_err();
    /// assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists);
    /// # drop(b);
    /// ```
    fn register(&mut self, fd: RawFd, token: Token, interest: Interest)
        -> io::Result<Registration>;

    /// Change the token and interest of a registered descriptor (and re-arm a
    /// one-shot registration). If the kernel refuses, the registration is
    /// removed, so no stale entry remains.
    ///
    /// ```
    /// use iomux::{Backend, Events, Interest, Selector, Token, Trigger};
    /// use std::os::fd::AsRawFd;
    /// let mut sel = Backend::Epoll.open(Trigger::Level).unwrap();
    /// let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// sel.register(a.as_raw_fd(), Token(1), Interest::READABLE).unwrap();
    /// let reg = sel.reregister(a.as_raw_fd(), Token(2), Interest::WRITABLE).unwrap();
    /// assert_eq!(sel.registration(a.as_raw_fd()), Some(reg));
    /// # drop(b);
    /// ```
    fn reregister(
        &mut self,
        fd: RawFd,
        token: Token,
        interest: Interest,
    ) -> io::Result<Registration>;

    /// Stop watching `fd`. Succeeds even when the descriptor has already been
    /// closed or its number reused; fails (`NotFound`) for an unknown descriptor.
    ///
    /// ```
    /// use iomux::{Backend, Events, Interest, Selector, Token, Trigger};
    /// use std::os::fd::AsRawFd;
    /// let mut sel = Backend::Epoll.open(Trigger::Level).unwrap();
    /// let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// let fd = a.as_raw_fd();
    /// sel.register(fd, Token(1), Interest::READABLE).unwrap();
    /// drop(a); // closed before deregistering: still fine
    /// assert_eq!(sel.deregister(fd).unwrap().token, Token(1));
    /// assert_eq!(sel.deregister(fd).unwrap_err().kind(), std::io::ErrorKind::NotFound);
    /// # drop(b);
    /// ```
    fn deregister(&mut self, fd: RawFd) -> io::Result<Registration>;

    /// Wait for readiness: `None` waits for ever, `Some(ZERO)` polls, any other
    /// duration waits at least that long unless something is ready. Interrupted
    /// waits are retried with the remaining time. Fills `events` (cleared first).
    ///
    /// ```
    /// use iomux::{Backend, Events, Interest, Selector, Token, Trigger};
    /// use std::os::fd::AsRawFd;
    /// let mut sel = Backend::Epoll.open(Trigger::Level).unwrap();
    /// let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// sel.register(a.as_raw_fd(), Token(1), Interest::READABLE).unwrap();
    /// let mut events = Events::with_capacity(8);
    /// let start = std::time::Instant::now();
    /// sel.select(&mut events, Some(std::time::Duration::from_millis(5))).unwrap();
    /// assert!(events.is_empty() && start.elapsed() >= std::time::Duration::from_millis(5));
    /// # drop(b);
    /// ```
    fn select(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()>;

    /// The registration of `fd`, if any.
    ///
    /// ```
    /// use iomux::{Backend, Events, Interest, Selector, Token, Trigger};
    /// use std::os::fd::AsRawFd;
    /// let mut sel = Backend::Epoll.open(Trigger::Level).unwrap();
    /// let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// assert_eq!(sel.registration(a.as_raw_fd()), None);
    /// sel.register(a.as_raw_fd(), Token(1), Interest::READABLE).unwrap();
    /// assert_eq!(sel.registration(a.as_raw_fd()).unwrap().interest, Interest::READABLE);
    /// # drop(b);
    /// ```
    fn registration(&self, fd: RawFd) -> Option<Registration>;

    /// Number of registered descriptors (wakers included).
    ///
    /// ```
    /// use iomux::{Backend, Events, Interest, Selector, Token, Trigger};
    /// use std::os::fd::AsRawFd;
    /// let mut sel = Backend::Epoll.open(Trigger::Level).unwrap();
    /// let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// sel.register(a.as_raw_fd(), Token(1), Interest::READABLE).unwrap();
    /// let _waker = sel.waker(Token(2)).unwrap();
    /// assert_eq!(sel.len(), 2);
    /// # drop(b);
    /// ```
    fn len(&self) -> usize;

    /// True when nothing is registered.
    ///
    /// ```
    /// use iomux::Selector;
    /// assert!(iomux::PollSelector::new().unwrap().is_empty());
    /// ```
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Which backend this is.
    ///
    /// ```
    /// use iomux::Selector;
    /// assert_eq!(iomux::SelectSelector::new().unwrap().backend(), iomux::Backend::Select);
    /// ```
    fn backend(&self) -> Backend;

    /// How readiness is reported.
    ///
    /// ```
    /// use iomux::{EpollSelector, Selector, Trigger};
    /// assert_eq!(EpollSelector::new(Trigger::Edge).unwrap().trigger(), Trigger::Edge);
    /// ```
    fn trigger(&self) -> Trigger;

    /// A handle that wakes this selector's wait from any thread; each wake
    /// makes the selector report an event with `token` (wakes coalesce until
    /// then). Several wakers per selector may exist.
    ///
    /// ```
    /// use iomux::{Backend, Events, Interest, Selector, Token, Trigger};
    /// use std::os::fd::AsRawFd;
    /// let mut sel = Backend::Epoll.open(Trigger::Level).unwrap();
    /// let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// let waker = sel.waker(Token(9)).unwrap();
    /// waker.wake().unwrap();
    /// waker.wake().unwrap();
    /// let mut events = Events::with_capacity(8);
    /// sel.select(&mut events, None).unwrap();
    /// assert_eq!(events.len(), 1, "two wakes, one event");
    /// # drop((a, b));
    /// ```
    fn waker(&mut self, token: Token) -> io::Result<Waker>;

    /// Release the kernel resources; every later call fails. Dropping does the same.
    ///
    /// ```
    /// use iomux::{Backend, Events, Interest, Selector, Token, Trigger};
    /// use std::os::fd::AsRawFd;
    /// let mut sel = Backend::Epoll.open(Trigger::Level).unwrap();
    /// let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// sel.close().unwrap();
    /// assert!(sel.register(a.as_raw_fd(), Token(1), Interest::READABLE).is_err());
    /// # drop(b);
    /// ```
    fn close(&mut self) -> io::Result<()>;
}

/// A selector chosen at run time.
///
/// ```
/// use iomux::{Backend, Selector, Trigger};
/// for b in Backend::ALL {
///     assert_eq!(b.open(Trigger::Level).unwrap().backend(), b);
/// }
/// ```
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // select's two fd_sets; boxing would cost a pointer chase per call
pub enum AnySelector {
    /// select(2)
    Select(select::SelectSelector),
    /// poll(2)
    Poll(poll::PollSelector),
    /// epoll(7)
    Epoll(epoll::EpollSelector),
    /// signal-driven I/O
    Sigio(sigio::SigioSelector),
    /// io_uring poll requests
    Uring(uring::UringSelector),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnySelector::Select($s) => $e,
            AnySelector::Poll($s) => $e,
            AnySelector::Epoll($s) => $e,
            AnySelector::Sigio($s) => $e,
            AnySelector::Uring($s) => $e,
        }
    };
}

impl Selector for AnySelector {
    fn register(
        &mut self,
        fd: RawFd,
        token: Token,
        interest: Interest,
    ) -> io::Result<Registration> {
        dispatch!(self, s => s.register(fd, token, interest))
    }
    fn reregister(
        &mut self,
        fd: RawFd,
        token: Token,
        interest: Interest,
    ) -> io::Result<Registration> {
        dispatch!(self, s => s.reregister(fd, token, interest))
    }
    fn deregister(&mut self, fd: RawFd) -> io::Result<Registration> {
        dispatch!(self, s => s.deregister(fd))
    }
    fn select(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        dispatch!(self, s => s.select(events, timeout))
    }
    fn registration(&self, fd: RawFd) -> Option<Registration> {
        dispatch!(self, s => s.registration(fd))
    }
    fn len(&self) -> usize {
        dispatch!(self, s => s.len())
    }
    fn backend(&self) -> Backend {
        dispatch!(self, s => s.backend())
    }
    fn trigger(&self) -> Trigger {
        dispatch!(self, s => s.trigger())
    }
    fn waker(&mut self, token: Token) -> io::Result<Waker> {
        dispatch!(self, s => s.waker(token))
    }
    fn close(&mut self) -> io::Result<()> {
        dispatch!(self, s => s.close())
    }
}

/// The bookkeeping every backend shares: registrations indexed by descriptor
/// number (descriptors are small, dense integers, so a vector beats a map),
/// the wakers to drain, and whether the selector was closed.
#[derive(Debug, Default)]
pub(crate) struct Registry<T: Copy> {
    slots: Vec<Option<(Registration, T)>>,
    count: usize,
    wakers: Vec<(Token, Waker)>,
    closed: bool,
}

impl<T: Copy> Registry<T> {
    pub(crate) fn new() -> Self {
        Registry {
            slots: Vec::new(),
            count: 0,
            wakers: Vec::new(),
            closed: false,
        }
    }

    /// Fail if the selector was closed.
    pub(crate) fn check_open(&self) -> io::Result<()> {
        if self.closed {
            Err(io::Error::other("the selector is closed; open a new one"))
        } else {
            Ok(())
        }
    }

    /// Check the arguments of a register or reregister call; returns the
    /// registration they ask for.
    fn check_args(&self, fd: RawFd, token: Token, interest: Interest) -> io::Result<Registration> {
        self.check_open()?;
        if fd < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid descriptor {fd}: must be >= 0"),
            ));
        }
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
        })
    }

    /// Fail with `AlreadyExists` if `fd` is registered.
    fn check_absent(&self, fd: RawFd) -> io::Result<()> {
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

    pub(crate) fn get_mut(&mut self, fd: RawFd) -> Option<&mut (Registration, T)> {
        self.slots.get_mut(fd as usize).and_then(|s| s.as_mut())
    }

    /// The registration of `fd`, or `NotFound`.
    pub(crate) fn expect(&self, fd: RawFd) -> io::Result<(Registration, T)> {
        self.check_open()?;
        self.get(fd).copied().ok_or_else(|| not_registered(fd))
    }

    pub(crate) fn insert(&mut self, reg: Registration, extra: T) {
        let i = reg.fd as usize;
        if i >= self.slots.len() {
            self.slots.resize(i + 1, None);
        }
        if self.slots[i].replace((reg, extra)).is_none() {
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

/// The registration bookkeeping every backend shares, so that each backend
/// file keeps only its own syscalls: checking the arguments, refusing a
/// descriptor already registered (or not registered), recording token,
/// interest and the backend's own state in the [`Registry`], removing the
/// registration when the kernel refuses a change (so nothing stale remains),
/// and remembering wakers.
pub(crate) trait Bookkeeping: Selector {
    /// What the backend keeps per registration beside token and interest.
    type State: Copy;

    fn registry(&mut self) -> &mut Registry<Self::State>;

    /// `Selector::register` around `watch`: the backend's syscalls that start
    /// watching `fd`, returning its state. Nothing is recorded if they fail.
    #[inline]
    fn register_with(
        &mut self,
        fd: RawFd,
        token: Token,
        interest: Interest,
        watch: impl FnOnce(&mut Self) -> io::Result<Self::State>,
    ) -> io::Result<Registration> {
        let registry = self.registry();
        let reg = registry.check_args(fd, token, interest)?;
        registry.check_absent(fd)?;
        let state = watch(self)?;
        self.registry().insert(reg, state);
        Ok(reg)
    }

    /// `Selector::reregister` around `rewatch`: the backend's syscalls that
    /// change what `fd` is watched for, given its old registration and state
    /// and returning the new state. If they fail, `fd` is deregistered and
    /// the error says so.
    #[inline]
    fn reregister_with(
        &mut self,
        fd: RawFd,
        token: Token,
        interest: Interest,
        rewatch: impl FnOnce(&mut Self, (Registration, Self::State)) -> io::Result<Self::State>,
    ) -> io::Result<Registration> {
        let registry = self.registry();
        let reg = registry.check_args(fd, token, interest)?;
        let old = registry.expect(fd)?;
        match rewatch(self, old) {
            Ok(state) => {
                self.registry().insert(reg, state);
                Ok(reg)
            }
            Err(e) => {
                let _ = self.deregister(fd);
                Err(reregister_failed(fd, e))
            }
        }
    }

    /// `Selector::waker`: a new waker whose eventfd `register` watches
    /// (readable, with `token`), remembered so its wakes are reset once reported.
    fn register_waker(
        &mut self,
        token: Token,
        register: impl FnOnce(&mut Self, RawFd) -> io::Result<Registration>,
    ) -> io::Result<Waker> {
        let waker = Waker::new()?;
        register(self, waker.as_raw_fd())?;
        self.registry().add_waker(token, waker.clone());
        Ok(waker)
    }
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

fn not_registered(fd: RawFd) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("descriptor {fd} is not registered"),
    )
}
