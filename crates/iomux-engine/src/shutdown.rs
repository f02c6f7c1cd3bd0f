//! Graceful shutdown shared by every engine, and the server-wide connection cap.
//!
//! A drain closes a connection once its protocol is between messages, nothing
//! is buffered for it, and its peer has been quiet for [`DRAIN_QUIET`]: an idle
//! keep-alive connection closes at once, a message still streaming in (echo
//! has no message boundaries the engine could see) keeps going until it ends
//! or the drain deadline passes. Quiet means the peer sent nothing: bytes
//! waiting unread in the kernel are not quiet, however long the server itself
//! went without running (see `Session::closable_on_drain`).

use crate::session::DRAIN_QUIET;
use crate::sock::input_waiting;
use iomux::Waker;
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the drain watcher looks at blocked connections.
const DRAIN_SCAN: Duration = Duration::from_millis(20);

/// Stands for "busy: never quiet" in [`Activity::quiet_since_ms`].
const BUSY: u64 = u64::MAX;

/// Starts a server's graceful shutdown from any thread: its loops stop
/// accepting, close idle connections and let in-flight work finish.
/// [`crate::Server::shutdown_handle`] hands one out; there is no other way to
/// get one, so every `Shutdown` stops a server.
///
/// Event loops hear it through their [`Waker`]; engines blocked in `accept` or
/// `read` hear it because their descriptors are shut down for reading.
///
/// ```
/// use iomux_engine::{Config, Engine, Server};
/// let config = Config { addr: "127.0.0.1:0".parse().unwrap(), ..Config::default() };
/// let server = Server::start(config, Engine::ALL[0], iomux_proto::Echo::plain).unwrap();
/// let stop = server.shutdown_handle();
/// assert!(!stop.is_triggered());
/// std::thread::spawn(move || stop.trigger()); // from anywhere, any number of times
/// server.join().unwrap(); // the loops end once it is triggered
/// ```
///
/// One that no server would hear cannot be made:
///
/// ```compile_fail
/// let _ = iomux_engine::Shutdown::new();
/// ```
///
/// ```compile_fail
/// let _ = iomux_engine::Shutdown::default();
/// ```
#[derive(Debug, Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    triggered: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
    /// Descriptors blocked engines sit in accept or read on.
    blocked_fds: Mutex<HashMap<u64, Watched>>,
    next_id: AtomicU64,
    /// Time origin of the activity stamps.
    epoch: Instant,
    /// How long in-flight work may take once the shutdown starts, in ms.
    drain_timeout_ms: AtomicU64,
    /// The drain watcher of blocked connections could not be started.
    watcher_failed: AtomicBool,
}

impl Default for Inner {
    fn default() -> Inner {
        Inner {
            triggered: AtomicBool::new(false),
            wakers: Mutex::new(Vec::new()),
            blocked_fds: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
            drain_timeout_ms: AtomicU64::new(3000),
            watcher_failed: AtomicBool::new(false),
        }
    }
}

/// A descriptor a blocked engine waits on: a listener (closed for reading at
/// once on shutdown) or a connection with its activity (closed once idle and
/// quiet, or at the drain deadline).
#[derive(Debug)]
struct Watched {
    fd: RawFd,
    activity: Option<Arc<Activity>>,
    shut: bool,
}

/// What a blocking connection loop tells the drain watcher.
#[derive(Debug)]
pub(crate) struct Activity {
    /// When the connection last moved bytes while idle (ms since the epoch),
    /// or [`BUSY`] while a message is half-received or output is owed.
    quiet_since_ms: AtomicU64,
}

impl Shutdown {
    /// A shutdown that has not been triggered, for a server being started.
    pub(crate) fn new() -> Shutdown {
        Shutdown {
            inner: Arc::new(Inner::default()),
        }
    }

    /// Start the shutdown (idempotent).
    pub fn trigger(&self) {
        // The flag first: a loop woken below must see it.
        let first = !self.inner.triggered.swap(true, Ordering::SeqCst);
        for w in self
            .inner
            .wakers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = w.wake();
        }
        let has_conns = {
            let mut fds = self.lock_fds();
            for w in fds.values_mut().filter(|w| w.activity.is_none()) {
                shut_down(w, libc::SHUT_RD);
            }
            fds.values().any(|w| w.activity.is_some())
        };
        if first && has_conns {
            let me = self.clone();
            let deadline = Instant::now() + self.drain_timeout();
            let spawned = std::thread::Builder::new()
                .name("iomux-drain".into())
                .spawn(move || me.drain_blocked(deadline));
            if spawned.is_err() {
                // Without the watcher, connections end at their idle timeout;
                // the caller can ask (a library prints nothing).
                self.inner.watcher_failed.store(true, Ordering::Release);
            }
        }
    }

    /// Until no blocked connection is left: close the idle, quiet ones for
    /// reading (their loops see end of input and finish), and at `deadline`
    /// close every one in both directions (a blocked send fails too).
    fn drain_blocked(&self, deadline: Instant) {
        loop {
            let now = Instant::now();
            let now_ms = self.now_ms();
            {
                let mut fds = self.lock_fds();
                if !fds.values().any(|w| w.activity.is_some()) {
                    return;
                }
                for w in fds.values_mut() {
                    if now >= deadline {
                        shut_down(w, libc::SHUT_RDWR);
                        continue;
                    }
                    // A connection thread that has not run for a while has
                    // not stamped what arrived meanwhile: look at its socket.
                    let quiet = w.activity.as_ref().map_or(true, |a| {
                        let since = a.quiet_since_ms.load(Ordering::Acquire);
                        since != BUSY
                            && now_ms.saturating_sub(since) >= DRAIN_QUIET.as_millis() as u64
                            && !input_waiting(w.fd)
                    });
                    if quiet && !w.shut {
                        shut_down(w, libc::SHUT_RD);
                    }
                }
            }
            if now >= deadline + Duration::from_secs(1) {
                return;
            }
            std::thread::sleep(DRAIN_SCAN);
        }
    }

    fn lock_fds(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Watched>> {
        self.inner
            .blocked_fds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms(&self) -> u64 {
        self.inner.epoch.elapsed().as_millis() as u64
    }

    /// How long in-flight work may take once the shutdown starts.
    pub(crate) fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.inner.drain_timeout_ms.load(Ordering::Relaxed))
    }

    /// Set how long in-flight work may take once the shutdown starts.
    pub(crate) fn set_drain_timeout(&self, timeout: Duration) {
        self.inner
            .drain_timeout_ms
            .store(timeout.as_millis() as u64, Ordering::Relaxed);
    }

    /// Whether the thread that drains blocked connections (the thread
    /// engines') could not be started: they then end at their idle timeout.
    pub fn drain_watcher_failed(&self) -> bool {
        self.inner.watcher_failed.load(Ordering::Acquire)
    }

    /// Whether the shutdown has started.
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

    /// Shut a listener `fd` down for reading on shutdown, until the guard is
    /// dropped (drop it before closing the descriptor).
    pub(crate) fn watch_listener(&self, fd: RawFd) -> WatchGuard {
        self.watch(fd, None)
    }

    /// Watch a blocking connection: on shutdown it is shut down for reading
    /// once [`WatchGuard::mark`] says it is idle and it stays quiet for
    /// [`DRAIN_QUIET`], and in both directions at the drain deadline. It
    /// starts idle (nothing received yet).
    pub(crate) fn watch_conn(&self, fd: RawFd) -> WatchGuard {
        let activity = Arc::new(Activity {
            quiet_since_ms: AtomicU64::new(self.now_ms()),
        });
        self.watch(fd, Some(activity))
    }

    fn watch(&self, fd: RawFd, activity: Option<Arc<Activity>>) -> WatchGuard {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut fds = self.lock_fds();
        let mut watched = Watched {
            fd,
            activity: activity.clone(),
            shut: false,
        };
        if self.is_triggered() {
            // Too late to serve anything new.
            shut_down(&mut watched, libc::SHUT_RD);
        }
        fds.insert(id, watched);
        WatchGuard {
            shutdown: self.clone(),
            id,
            activity,
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

/// Shut a watched descriptor down (once per direction set).
fn shut_down(w: &mut Watched, how: libc::c_int) {
    if how == libc::SHUT_RD && w.shut {
        return;
    }
    // SAFETY: the fd is open: owners remove it from the map (under the map's
    // lock, which the caller holds) before closing it. Shutting it down wakes
    // a blocked accept, read or send.
    unsafe { libc::shutdown(w.fd, how) };
    w.shut = true;
}

/// Keeps a descriptor in the shutdown's watch list while alive.
#[derive(Debug)]
pub(crate) struct WatchGuard {
    shutdown: Shutdown,
    id: u64,
    activity: Option<Arc<Activity>>,
}

impl WatchGuard {
    /// The connection just moved bytes; `idle` says whether its protocol is
    /// between messages with nothing buffered (a drain may close it once quiet).
    pub(crate) fn mark(&self, idle: bool) {
        if let Some(a) = &self.activity {
            let stamp = if idle { self.shutdown.now_ms() } else { BUSY };
            a.quiet_since_ms.store(stamp, Ordering::Release);
        }
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.shutdown.lock_fds().remove(&self.id);
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

/// How a server thread tells `Server::start` that it is set up (its selector
/// and waker exist) or why it could not be.
#[derive(Debug, Clone)]
pub(crate) struct Started(std::sync::mpsc::Sender<std::io::Result<()>>);

impl Started {
    /// A reporter and the receiver `Server::start` waits on.
    pub(crate) fn channel() -> (Started, std::sync::mpsc::Receiver<std::io::Result<()>>) {
        let (tx, rx) = std::sync::mpsc::channel();
        (Started(tx), rx)
    }

    /// Report once; a start that no longer waits is not an error.
    pub(crate) fn report(&self, result: std::io::Result<()>) {
        let _ = self.0.send(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{ErrorKind, Read, Write};
    use std::os::fd::AsRawFd;

    /// Wait (bounded) until the kernel holds unread bytes on `fd`.
    fn until_input_waits(fd: RawFd) {
        let until = Instant::now() + Duration::from_secs(5);
        while !input_waiting(fd) {
            assert!(Instant::now() < until, "sent bytes never arrived");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_peer_whose_bytes_wait_unread_is_not_quiet() {
        use crate::session::Session;
        let (mut client, mut server) = crate::tcp_pair();
        let fd = server.as_raw_fd();
        let long_ago = Instant::now();
        let session = Session::new(
            iomux_proto::Echo::plain(),
            iomux_proto::ConnId::new(0, 2),
            long_ago,
        );
        let later = long_ago + DRAIN_QUIET * 4;
        assert!(session.closable_on_drain(later, || input_waiting(fd)));
        assert!(!session.closable_on_drain(long_ago + DRAIN_QUIET / 2, || input_waiting(fd)));
        client.write_all(b"late").unwrap();
        until_input_waits(fd);
        assert!(
            !session.closable_on_drain(later, || input_waiting(fd)),
            "bytes wait unread: the loop has not caught up, the peer is not quiet"
        );
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).unwrap();
        assert!(session.closable_on_drain(later, || input_waiting(fd)));
    }

    /// A blocking connection loop that has not run since bytes arrived (a
    /// starved thread) keeps its connection through the drain; once it has
    /// caught up and the peer stays quiet, the watcher closes it for reading.
    #[test]
    fn the_drain_watcher_does_not_take_unread_bytes_for_quiet() {
        let (mut client, mut server) = crate::tcp_pair();
        let shutdown = Shutdown::new();
        let guard = shutdown.watch_conn(server.as_raw_fd());
        guard.mark(true);
        client.write_all(b"late").unwrap();
        until_input_waits(server.as_raw_fd());
        shutdown.trigger();
        // Long enough for the watcher to judge the connection by its stamp
        // alone (the stamp is older than the quiet period after this).
        std::thread::sleep(DRAIN_QUIET + 10 * DRAIN_SCAN);
        server.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(server.read(&mut buf).unwrap(), 4);
        match server.read(&mut buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!("the watcher shut down a connection with bytes waiting: {other:?}"),
        }
        guard.mark(true);
        let until = Instant::now() + DRAIN_QUIET + Duration::from_secs(5);
        loop {
            match server.read(&mut buf) {
                Ok(0) => break,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    assert!(
                        Instant::now() < until,
                        "a quiet connection was never closed"
                    );
                    std::thread::sleep(DRAIN_SCAN);
                }
                other => panic!("unexpected read: {other:?}"),
            }
        }
        drop(guard);
    }
}
