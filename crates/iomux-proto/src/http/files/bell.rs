//! A doorbell on the watcher's event queue, one per thread: it lets a cache
//! hit skip the `read` of an empty inotify queue (a system call per hit)
//! without ever missing a change made before the request was sent.
//!
//! The bell is an io_uring of the thread's own with a one-shot poll armed on
//! the inotify descriptor. When the kernel queues an event, the poll's
//! wake-up adds task work to the thread that armed it and flags that thread
//! (`TWA_SIGNAL`: the ring is set up without cooperative or deferred task
//! running on purpose). The thread runs that work, which writes the
//! completion into the ring's memory, before any of its system calls
//! returns to user space again. A change made before a client sent its
//! request therefore rings the bell before the `recv` that read the request
//! returns, and the hit that request makes sees the completion with a load
//! from memory. Without a completion nothing has been queued since the bell
//! was armed: the queue is not read. The guarantee holds for a lookup made
//! on the thread that read the request (every engine's handler runs there).
//!
//! A rung bell is consumed, the queue read, and the bell armed again (after
//! the read: an event queued in between finds the queue readable when the
//! poll is armed, and rings at once). A bell rings once per burst of
//! changes: a loop thread asleep in its wait is woken once (the wait ends
//! early and is resumed), and not again until a hit has armed it anew.
//! Where io_uring is refused, past [`MAX_BELLS`] threads with a bell, on a
//! thread that has served fewer than [`HITS_BEFORE_BELL`] hits (a thread
//! per connection), or in a process forked since the bell was made, the
//! queue is read on every hit as before.

use io_uring::{opcode, types, IoUring};
use std::cell::RefCell;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

/// Threads holding a bell at once, at most: a ring is a descriptor each.
const MAX_BELLS: usize = 64;

/// Hits a thread reads the queue for before it sets up a bell: a ring
/// costs about as much to set up as this many reads, and a thread that
/// serves one connection's few requests never pays for it.
const HITS_BEFORE_BELL: u32 = 32;

static BELLS_LIVE: AtomicUsize = AtomicUsize::new(0);

/// Forks so far, as a child process counts them: a ring inherited across
/// `fork` notifies the parent's thread, not the child's, so a bell made
/// before the last fork is not trusted.
static FORKS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count_fork_in_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

fn watch_forks() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: registers a handler that only bumps an atomic (async-signal-safe,
    // as a child's handler must be).
    ONCE.call_once(|| unsafe {
        libc::pthread_atfork(None, None, Some(count_fork_in_child));
    });
}

/// One inotify instance as bells know it: they are keyed by this token, and
/// a bell whose token has gone is dropped (its poll holds the old instance
/// open).
#[derive(Debug, Default)]
pub(crate) struct QueueToken(Arc<()>);

impl QueueToken {
    /// `read` the queue `fd` (this token's instance), unless the calling
    /// thread's bell has been armed on it since its last read and has not
    /// rung: then nothing has been queued since, and `None`. The bell is
    /// armed after the read: an event queued between the two finds the
    /// queue readable when the poll is armed, and rings at once.
    pub(crate) fn read_unless_quiet<R>(
        &self,
        fd: BorrowedFd<'_>,
        read: impl FnOnce() -> R,
    ) -> Option<R> {
        let mut read = Some(read);
        let mut read_once = || read.take().map(|read| read());
        let checked = BELLS.try_with(|bells| {
            let mut bells = bells.borrow_mut();
            let key = Arc::as_ptr(&self.0);
            let bell = match bells.iter().position(|b| Weak::as_ptr(&b.queue) == key) {
                Some(at) => &mut bells[at],
                None => {
                    // Bells of queues that are gone keep those open: drop them.
                    bells.retain(|b| b.queue.strong_count() > 0);
                    bells.push(Bell {
                        queue: Arc::downgrade(&self.0),
                        state: State::Counting(0),
                    });
                    bells.last_mut().expect("just pushed")
                }
            };
            if bell.quiet() {
                return None;
            }
            let result = read_once();
            bell.arm_after_read(fd);
            result
        });
        // The thread is ending (its bells are gone): read.
        checked.unwrap_or_else(|_| read_once())
    }
}

thread_local! {
    static BELLS: RefCell<Vec<Bell>> = const { RefCell::new(Vec::new()) };
}

struct Bell {
    queue: Weak<()>,
    state: State,
}

enum State {
    /// Hits so far without a bell.
    Counting(u32),
    /// A ring whose poll is armed (or has rung: a completion waits in it).
    Armed(Box<Ring>),
    /// No bell for this thread (io_uring refused, or too many bells): every
    /// hit reads.
    Without,
}

impl Bell {
    /// Armed and not rung since. A rung bell's completion is consumed here.
    fn quiet(&mut self) -> bool {
        match &mut self.state {
            State::Armed(ring) if ring.forks != FORKS.load(Ordering::Relaxed) => {
                self.state = State::Without;
                false
            }
            State::Armed(ring) => ring.quiet(),
            State::Counting(_) | State::Without => false,
        }
    }

    fn arm_after_read(&mut self, fd: BorrowedFd<'_>) {
        let ring = match std::mem::replace(&mut self.state, State::Without) {
            State::Counting(hits) if hits + 1 < HITS_BEFORE_BELL => {
                self.state = State::Counting(hits + 1);
                return;
            }
            State::Counting(_) => Ring::new().map(Box::new),
            State::Armed(ring) => Some(ring),
            State::Without => None,
        };
        if let Some(mut ring) = ring {
            if ring.arm(fd) {
                self.state = State::Armed(ring);
            }
        }
    }
}

/// A small io_uring counted against [`MAX_BELLS`].
struct Ring {
    ring: IoUring,
    /// [`FORKS`] when it was set up.
    forks: usize,
}

impl Ring {
    fn new() -> Option<Ring> {
        if BELLS_LIVE.fetch_add(1, Ordering::Relaxed) >= MAX_BELLS {
            BELLS_LIVE.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        watch_forks();
        let forks = FORKS.load(Ordering::Relaxed);
        // Default setup: task work notified with TWA_SIGNAL (see the module
        // doc), no cooperative or deferred task running.
        match IoUring::new(2) {
            Ok(ring) => Some(Ring { ring, forks }),
            Err(_) => {
                BELLS_LIVE.fetch_sub(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// No completion since the poll was armed: nothing was queued.
    fn quiet(&mut self) -> bool {
        let completions = self.ring.completion();
        if completions.is_empty() {
            return true;
        }
        // Rung (or the poll ended some other way): consume, to be armed again.
        completions.for_each(drop);
        false
    }

    /// Arm a one-shot poll for input on `fd`; false if the ring refused it.
    fn arm(&mut self, fd: BorrowedFd<'_>) -> bool {
        let poll = opcode::PollAdd::new(types::Fd(fd.as_raw_fd()), libc::POLLIN as u32).build();
        // SAFETY: a poll refers to no memory of ours; the kernel takes its
        // own reference to the descriptor's file when the entry is submitted
        // just below.
        let pushed = unsafe { self.ring.submission().push(&poll) }.is_ok();
        pushed && matches!(self.ring.submit(), Ok(1))
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        BELLS_LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::{AsFd, OwnedFd};
    use std::os::unix::net::UnixStream;
    use std::path::PathBuf;

    /// A scratch directory `name` holding a file `f`, and an inotify queue
    /// watching that file for writes.
    fn watched_file(name: &str) -> (PathBuf, PathBuf, OwnedFd) {
        use rustix::fs::inotify::{self, CreateFlags, WatchFlags};
        let dir = std::env::temp_dir().join(format!("iomux-bell-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f");
        std::fs::write(&file, b"a").unwrap();
        let queue = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC).unwrap();
        inotify::add_watch(&queue, &file, WatchFlags::MODIFY).unwrap();
        (dir, file, queue)
    }

    fn drain(fd: BorrowedFd<'_>) {
        let mut buf = [0u8; 4096];
        while rustix::io::read(fd, &mut buf).is_ok() {}
    }

    #[test]
    fn quiet_queue_is_not_read_once_the_bell_is_armed() {
        let (dir, file, queue) = watched_file("quiet");
        let token = QueueToken::default();
        let mut reads = 0;
        for _ in 0..HITS_BEFORE_BELL + 10 {
            if token
                .read_unless_quiet(queue.as_fd(), || drain(queue.as_fd()))
                .is_some()
            {
                reads += 1;
            }
        }
        assert_eq!(
            reads, HITS_BEFORE_BELL,
            "reads until the bell is armed, none after"
        );
        std::fs::write(&file, b"b").unwrap();
        let read = || drain(queue.as_fd());
        assert!(
            token.read_unless_quiet(queue.as_fd(), read).is_some(),
            "a change rings the bell"
        );
        assert!(
            token.read_unless_quiet(queue.as_fd(), read).is_none(),
            "armed again, quiet"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The ordering the cache relies on: another thread changes the file,
    /// then sends a byte; once this thread has read that byte, its bell
    /// has rung, every time.
    #[test]
    fn a_change_made_before_a_message_rings_before_the_message_is_read() {
        let (dir, file, queue) = watched_file("order");
        let token = QueueToken::default();
        let read = || drain(queue.as_fd());
        for _ in 0..HITS_BEFORE_BELL {
            token.read_unless_quiet(queue.as_fd(), read);
        }
        assert!(
            token.read_unless_quiet(queue.as_fd(), read).is_none(),
            "the bell is armed"
        );
        let (mut here, mut there) = UnixStream::pair().unwrap();
        const ROUNDS: u8 = 200;
        let changer = {
            let file = file.clone();
            std::thread::spawn(move || {
                let mut go = [0u8; 1];
                for round in 0..ROUNDS {
                    there.read_exact(&mut go).unwrap();
                    let change = round % 2 == 0;
                    if change {
                        std::fs::write(&file, [round]).unwrap();
                    }
                    there.write_all(&[u8::from(change)]).unwrap();
                }
            })
        };
        let mut missed = 0;
        let mut spurious = 0;
        for _ in 0..ROUNDS {
            here.write_all(b"g").unwrap();
            let mut changed = [0u8; 1];
            here.read_exact(&mut changed).unwrap();
            let rang = token.read_unless_quiet(queue.as_fd(), read).is_some();
            missed += u32::from(changed[0] == 1 && !rang);
            spurious += u32::from(changed[0] == 0 && rang);
        }
        changer.join().unwrap();
        assert_eq!(missed, 0, "changes the bell missed");
        // A ring with no change: the bell re-armed after the read, so only an
        // event the read missed (none here) could ring it.
        assert_eq!(spurious, 0, "rings without a change");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
