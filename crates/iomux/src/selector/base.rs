//! The one selector: [`BaseSelector`] owns the descriptor table and
//! implements [`Selector`] once, over a backend that supplies only its system
//! calls through [`Syscalls`] (the shape of CPython's `_BaseSelectorImpl`).

use super::registry::{Registry, Shared};
use super::table::{lock, FdTable, Request, Watch};
use super::{Backend, Registration, Selector, Trigger};
use crate::sys::{check_fd_open, context, registration_error, wait_honestly};
use crate::waker::Waker;
use crate::{Events, Interest, Token};
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// What a backend supplies: the system calls that watch, re-watch, unwatch
/// (its [`Watch`]) and wait. Argument checks, the table of registrations,
/// wakers, registry handles and the closed state are [`BaseSelector`]'s.
/// Public only in name (it lives in a private module), so no other crate can
/// implement it.
pub trait Syscalls: Watch<Self::State> + fmt::Debug + 'static {
    /// What the backend keeps per registration beside token and interest.
    type State: Copy + fmt::Debug + Send + 'static;

    /// What a [`Registry`] calls to change registrations at once from any
    /// thread, for a backend whose kernel allows it (epoll's `epoll_ctl`);
    /// `Infallible` for the others, whose waiting thread makes a handle's
    /// changes.
    type Remote: Watch<Self::State> + Clone + fmt::Debug + Send + Sync + 'static;

    /// The backend these system calls belong to.
    const BACKEND: Backend;

    /// How readiness is reported: by default the one trigger the backend has.
    fn trigger(&self) -> Trigger {
        Self::BACKEND.triggers()[0]
    }

    /// The [`Remote`](Syscalls::Remote), if the backend has one.
    fn remote(&self) -> Option<Self::Remote> {
        None
    }

    /// Check what can be checked of a registration from any thread, before a
    /// registry handle queues it for the waiting thread (whose
    /// [`watch`](Watch::watch) checks again): by default, that the
    /// descriptor is open.
    fn check(reg: &Registration) -> io::Result<()> {
        let what = format!("{} register", Self::BACKEND);
        check_fd_open(reg.fd).map_err(|e| registration_error(reg.fd, &what, e))
    }

    /// Watch a waker's eventfd for readability, level-triggered whatever the
    /// selector's trigger: the selector resets the eventfd when it reports
    /// it, so an edge or one-shot registration would only lose wakes.
    fn watch_waker(&mut self, reg: Registration) -> io::Result<Self::State> {
        self.watch(reg)
    }

    /// Watch the registry handles' doorbell, an eventfd that is in no
    /// registration and must never be reported, for readability: its
    /// ring ends a wait so that the selector makes the changes queued. Only
    /// backends without a [`Remote`](Syscalls::Remote) are asked.
    fn watch_doorbell(&mut self, fd: RawFd) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "the {} selector changes registrations at once and has no doorbell (fd {fd})",
                Self::BACKEND
            ),
        ))
    }

    /// Wait once, up to `timeout`, and fill `events` (empty on entry) with
    /// what is ready, at most its capacity; the selector retries interrupted
    /// and empty waits with the remaining time. `table` is shared with
    /// registry handles: lock it only around the work that reads or changes
    /// it, never across the blocking system call.
    fn wait(
        &mut self,
        table: &Mutex<FdTable<Self::State>>,
        events: &mut Events,
        timeout: Option<Duration>,
    ) -> io::Result<()>;

    /// How many times readiness may have been lost and every descriptor was
    /// reported instead (see [`Selector::overflows`]).
    fn overflows(&self) -> u64 {
        0
    }

    /// Release the kernel resources; `table` still holds every registration
    /// and is emptied by the selector afterwards.
    fn close(&mut self, table: &mut FdTable<Self::State>) -> io::Result<()>;
}

/// The selector over one backend's system calls: [`EpollSelector`],
/// [`PollSelector`], [`SelectSelector`], [`SigioSelector`] and
/// [`UringSelector`] are this type over their backends, and each backend's
/// constructor and extras are documented with those names.
///
/// Name a selector by those aliases, or write code for any of them with the
/// [`Selector`] trait or [`AnySelector`](crate::AnySelector). This type is
/// public because the aliases are it: the methods here are theirs. Its
/// parameter, a backend's system calls, is no type another crate can name or
/// supply:
///
/// ```compile_fail
/// let _: Option<iomux::selector::epoll::Epoll> = None;
/// ```
///
/// ```compile_fail
/// let _: Option<iomux::selector::epoll::EpollCtl> = None;
/// ```
///
/// ```compile_fail
/// let _: Option<iomux::selector::sigio::SigioState> = None;
/// ```
///
/// ```compile_fail
/// let _: Option<iomux::selector::uring::Slot> = None;
/// ```
///
/// [`EpollSelector`]: crate::EpollSelector
/// [`PollSelector`]: crate::PollSelector
/// [`SelectSelector`]: crate::SelectSelector
/// [`SigioSelector`]: super::sigio::SigioSelector
/// [`UringSelector`]: super::uring::UringSelector
///
/// ```
/// use iomux::{Interest, PollSelector, Selector, Token};
/// use std::os::fd::AsRawFd;
/// let mut sel = PollSelector::new().unwrap();
/// let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
/// sel.register(&a, Token(1), Interest::READABLE).unwrap();
/// assert_eq!(sel.len(), 1);
/// ```
#[derive(Debug)]
pub struct BaseSelector<S: Syscalls> {
    pub(crate) sys: S,
    /// The table of registrations, shared with the [`Registry`] handles;
    /// never locked while a wait blocks.
    pub(crate) shared: Arc<Shared<S>>,
}

impl<S: Syscalls> BaseSelector<S> {
    pub(crate) fn with(sys: S) -> Self {
        let shared = Arc::new(Shared::new(sys.remote(), sys.trigger()));
        BaseSelector { sys, shared }
    }

    /// Lock the table, after making the changes registry handles queued
    /// (they come before whatever the caller does next).
    pub(crate) fn lock_applied<'t>(
        shared: &'t Shared<S>,
        sys: &mut S,
    ) -> MutexGuard<'t, FdTable<S::State>> {
        let mut table = lock(&shared.table);
        if table.has_queued() {
            table.apply_queued(sys);
        }
        table
    }

    /// What registry handles queued, made at the start of a wait: the
    /// changes, and the doorbell they ring, made and watched by this (the
    /// waiting) thread the first time.
    #[cold]
    fn apply_queued(&mut self) -> io::Result<()> {
        let mut table = lock(&self.shared.table);
        // Under the lock, as a handle sets it: one that queues after this
        // sets it again, and rings the doorbell again.
        self.shared.queued.store(false, Ordering::Relaxed);
        table.apply_queued(&mut self.sys);
        match &table.doorbell {
            Some(doorbell) => doorbell.reset(),
            None => {
                let made = Waker::new().and_then(|doorbell| {
                    self.sys.watch_doorbell(doorbell.as_raw_fd())?;
                    Ok(doorbell)
                });
                match made {
                    Ok(doorbell) => table.doorbell = Some(doorbell),
                    Err(e) => {
                        // Tried again at the next wait.
                        self.shared.queued.store(true, Ordering::Relaxed);
                        return Err(context(e, "watching the registry handles' doorbell"));
                    }
                }
            }
        }
        Ok(())
    }

    /// A handle that registers, changes and deregisters descriptors on this
    /// selector from any thread, even while this selector waits in another;
    /// clones share the selector. See [`Registry`] for when its changes
    /// take effect.
    ///
    /// ```
    /// use iomux::{Events, Interest, PollSelector, Selector, Token};
    /// use std::io::Write;
    /// use std::time::Duration;
    /// let mut sel = PollSelector::new().unwrap();
    /// let registry = sel.registry();
    /// let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// a.write_all(b"ready before the wait began").unwrap();
    /// let other = std::thread::spawn(move || {
    ///     std::thread::sleep(Duration::from_millis(50));
    ///     registry.register(&b, Token(3), Interest::READABLE).unwrap();
    ///     b
    /// });
    /// let mut events = Events::with_capacity(8);
    /// sel.select(&mut events, Some(Duration::from_secs(10))).unwrap();
    /// assert_eq!(events.iter().next().unwrap().token(), Token(3));
    /// let b = other.join().unwrap();
    /// sel.deregister(&b).unwrap();
    /// ```
    pub fn registry(&self) -> Registry {
        if self.shared.remote.is_none() {
            // The next wait makes (and watches) the doorbell.
            self.shared.queued.store(true, Ordering::Release);
        }
        Registry::new(Arc::clone(&self.shared) as _)
    }
}

impl<S: Syscalls> Selector for BaseSelector<S> {
    /// Check and carry out one of the selector's own calls.
    #[inline]
    fn change(&mut self, request: Request) -> io::Result<Registration> {
        let mut table = Self::lock_applied(&self.shared, &mut self.sys);
        table.check(S::BACKEND, request)?;
        table.apply(&mut self.sys, request)
    }

    #[inline]
    fn select(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        events.clear();
        lock(&self.shared.table).check_open()?;
        wait_honestly(timeout, |t| {
            // The one cost of registry handles to a wait: this flag.
            if self.shared.queued.load(Ordering::Acquire) {
                self.apply_queued()?;
            }
            if let Err(e) = self.sys.wait(&self.shared.table, events, t) {
                // A handle's change made as this wait began can fail it (a
                // descriptor deregistered, then closed, still in select's
                // set): make the change and wait again.
                if e.kind() == io::ErrorKind::Interrupted
                    || !self.shared.queued.load(Ordering::Acquire)
                {
                    return Err(e);
                }
            }
            // Woken with nothing to report (the doorbell): wait again.
            Ok(usize::from(!events.is_empty() || events.is_full()))
        })?;
        lock(&self.shared.table).reset_fired_wakers(events);
        Ok(())
    }

    fn registration(&self, fd: RawFd) -> Option<Registration> {
        lock(&self.shared.table).visible(fd)
    }

    fn len(&self) -> usize {
        lock(&self.shared.table).len()
    }

    fn backend(&self) -> Backend {
        S::BACKEND
    }

    fn trigger(&self) -> Trigger {
        self.sys.trigger()
    }

    fn overflows(&self) -> u64 {
        self.sys.overflows()
    }

    fn waker(&mut self, token: Token) -> io::Result<Waker> {
        let waker = Waker::new()?;
        let reg = Registration::of(&waker, token, Interest::READABLE, Trigger::Level);
        let mut table = Self::lock_applied(&self.shared, &mut self.sys);
        table.check_open()?;
        table.register_by(&mut self.sys, reg, S::watch_waker)?;
        table.add_waker(token, waker.clone());
        Ok(waker)
    }

    fn close(&mut self) -> io::Result<()> {
        let mut table = lock(&self.shared.table);
        table.check_open()?;
        let result = self.sys.close(&mut table);
        table.close();
        result
    }
}

impl<S: Syscalls> Drop for BaseSelector<S> {
    fn drop(&mut self) {
        if !lock(&self.shared.table).is_closed() {
            let _ = self.close();
        }
    }
}
