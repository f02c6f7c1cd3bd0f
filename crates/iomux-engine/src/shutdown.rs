//! Graceful shutdown shared by every engine, and the server-wide connection cap.

use iomux::Waker;
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Starts a graceful shutdown: loops stop accepting, close idle connections
/// and let in-flight work finish.
///
/// Event loops hear it through their [`Waker`]; engines blocked in `accept` or
/// `read` hear it because their descriptors are shut down for reading.
///
/// ```
/// let s = iomux_engine::Shutdown::new();
/// assert!(!s.is_triggered());
/// s.trigger();
/// assert!(s.is_triggered());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    triggered: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
    /// Descriptors blocked engines sit in accept or read on.
    blocked_fds: Mutex<HashMap<u64, RawFd>>,
    next_id: AtomicU64,
}

impl Shutdown {
    /// A shutdown that has not been triggered.
    ///
    /// ```
    /// let _ = iomux_engine::Shutdown::new();
    /// ```
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Start the shutdown (idempotent).
    ///
    /// ```
    /// let s = iomux_engine::Shutdown::new();
    /// s.trigger();
    /// s.trigger();
    /// ```
    pub fn trigger(&self) {
        self.inner.triggered.store(true, Ordering::SeqCst);
        for w in self
            .inner
            .wakers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = w.wake();
        }
        for fd in self
            .inner
            .blocked_fds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            // SAFETY: the fd is open: owners remove it from the map (under this
            // lock) before closing it. SHUT_RD wakes a blocked accept or read.
            unsafe { libc::shutdown(*fd, libc::SHUT_RD) };
        }
    }

    /// Whether the shutdown has started.
    ///
    /// ```
    /// assert!(!iomux_engine::Shutdown::new().is_triggered());
    /// ```
    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::SeqCst)
    }

    /// Wake `waker` on shutdown (and at once if it already started).
    pub(crate) fn add_waker(&self, waker: Waker) {
        let mut wakers = self.inner.wakers.lock().unwrap_or_else(|p| p.into_inner());
        if self.is_triggered() {
            let _ = waker.wake();
        }
        wakers.push(waker);
    }

    /// Shut `fd` down for reading on shutdown, until the guard is dropped
    /// (drop it before closing the descriptor).
    pub(crate) fn watch_fd(&self, fd: RawFd) -> WatchGuard {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut fds = self
            .inner
            .blocked_fds
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        fds.insert(id, fd);
        if self.is_triggered() {
            // SAFETY: the caller owns `fd` and it is open.
            unsafe { libc::shutdown(fd, libc::SHUT_RD) };
        }
        WatchGuard {
            shutdown: self.clone(),
            id,
        }
    }

    /// The server-wide connection cap.
    pub(crate) fn conn_limit(&self, max: Option<usize>) -> ConnLimit {
        ConnLimit {
            open: Arc::new(AtomicUsize::new(0)),
            max: max.unwrap_or(usize::MAX),
        }
    }
}

/// Keeps a descriptor in the shutdown's watch list while alive.
#[derive(Debug)]
pub(crate) struct WatchGuard {
    shutdown: Shutdown,
    id: u64,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.shutdown
            .inner
            .blocked_fds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// Counts open connections across all loops of a server against `--max-conns`.
#[derive(Debug, Clone)]
pub(crate) struct ConnLimit {
    open: Arc<AtomicUsize>,
    max: usize,
}

impl ConnLimit {
    /// Take a place for a new connection, or `false` when the server is full.
    pub(crate) fn try_acquire(&self) -> bool {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Give a place back when a connection closes.
    pub(crate) fn release(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}
