//! Readiness over io_uring: a `POLL_ADD` request per descriptor, completions
//! read from the completion ring, and one `io_uring_enter` per wait that both
//! submits the queued requests and waits.
//!
//! The three triggers map onto io_uring's two kinds of poll request:
//! - edge: one multishot poll per descriptor (`IORING_POLL_ADD_MULTI`), which
//!   posts a completion on every wake-up while the condition holds, like
//!   `EPOLLET`;
//! - level: a single-shot poll, re-armed at the start of the next wait for
//!   the descriptors it reported (arming checks the current state, so a
//!   descriptor still ready completes again at once);
//! - one-shot: a single-shot poll re-armed only by `reregister`.
//!
//! Each request's `user_data` holds the descriptor and a generation, so a
//! completion from a request that was removed (or whose descriptor number was
//! reused) is recognised and dropped.

use super::base::{BaseSelector, Syscalls};
use super::poll::{event_flags, poll_events};
use super::table::{lock, FdTable, Watch};
use super::{Backend, Registration, Trigger};
use crate::sys::{check_fd_open, context};
use crate::{Event, Events, Interest, Token};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::convert::Infallible;
use std::io;
use std::os::fd::RawFd;
use std::sync::Mutex;
use std::time::Duration;

/// Submission ring size; the completion ring is twice that, and the kernel
/// keeps completions that do not fit (IORING_FEAT_NODROP) until there is room.
const RING_ENTRIES: u32 = 1024;

/// `user_data` of requests whose completions nobody needs (cancellations).
const IGNORED: u64 = u64::MAX;

/// `user_data` of the poll request on the registry handles' doorbell, whose
/// completions only end a wait.
const DOORBELL: u64 = u64::MAX - 1;

pub(crate) use sealed::{Slot, Uring};

// Public in name only: `UringSelector` names them, so they are `pub`, but they
// live in a private module, so no other crate can name or build them.
mod sealed {
    use super::*;

    /// What the selector keeps per registered descriptor.
    #[derive(Debug, Clone, Copy)]
    pub struct Slot {
        /// Tells this registration's completions from a removed one's.
        pub(super) generation: u32,
        /// A poll request is in flight for it.
        pub(super) armed: bool,
        /// Edge (multishot), level (re-armed each wait) or one-shot.
        pub(super) trigger: Trigger,
        /// In `rearm`, to be armed again at the next wait.
        pub(super) queued: bool,
        /// A level or one-shot registration without read interest whose peer
        /// half-closed: io_uring reports EPOLLRDHUP whatever was asked, so a
        /// single-shot request would complete at once on every wait (a spin).
        /// Until its interest changes it is watched by a multishot request,
        /// which completes on the socket's next wake-up instead.
        pub(super) read_closed_unasked: bool,
        /// The wait number it last got an event in, and that event's index in `found`.
        pub(super) seen: u64,
        pub(super) index: usize,
    }

    /// The io_uring poll requests behind [`UringSelector`].
    pub struct Uring {
        pub(super) ring: Option<IoUring>,
        pub(super) trigger: Trigger,
        pub(super) next_generation: u32,
        /// Level-triggered descriptors reported by the last wait, armed again by the next.
        pub(super) rearm: Vec<RawFd>,
        /// A completion taken from the ring that did not fit the last `Events`.
        pub(super) carried: Option<cqueue::Entry>,
        pub(super) found: Vec<(Token, u8)>,
        pub(super) wait_number: u64,
        /// The registry handles' doorbell, and whether its (multishot) poll
        /// request is in flight.
        pub(super) doorbell: Option<(RawFd, bool)>,
    }
}

fn user_data(fd: RawFd, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(fd as u32)
}

/// The poll request that watches `fd` for `interest` as `slot` says.
fn poll_request(fd: RawFd, interest: Interest, slot: &Slot) -> squeue::Entry {
    opcode::PollAdd::new(types::Fd(fd), poll_events(interest) as u32)
        .multi(slot.trigger == Trigger::Edge || slot.read_closed_unasked)
        .build()
        .user_data(user_data(fd, slot.generation))
}

/// Open an io_uring, or explain why this kernel refuses one. The ring is
/// opened and closed on a thread of its own ([`probe_apart`]), so the
/// calling thread is left as it was.
///
/// ```
/// // On a kernel with io_uring enabled:
/// # if iomux::selector::uring::probe().is_ok() {
/// assert!(iomux::selector::uring::probe().is_ok());
/// # }
/// ```
pub fn probe() -> io::Result<()> {
    probe_apart(|| open_ring(2).map(drop))
}

/// Run `probe` (which opens rings and closes them) on a short-lived thread
/// of its own. A ring keeps a list of the threads that opened or used it,
/// and when it is torn down the kernel interrupts each of them still alive
/// (task work with TWA_SIGNAL), some time later: a blocking call with a
/// timeout that thread is in then (a socket read with SO_RCVTIMEO, `poll`)
/// fails with EINTR. A thread that has ended is not interrupted.
// Hidden: not an API for users, but iomux-engine's completion engine probes
// its own rings with it.
#[doc(hidden)]
pub fn probe_apart(probe: impl FnOnce() -> io::Result<()> + Send) -> io::Result<()> {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("iomux-uring-probe".into())
            .spawn_scoped(s, probe)?
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the io_uring probe panicked")))
    })
}

fn open_ring(entries: u32) -> io::Result<IoUring> {
    IoUring::new(entries).map_err(unavailable)
}

/// The error for a kernel that refuses io_uring, saying why it refused.
// Hidden: not an API for users, but shared with iomux-engine's completion
// engine, which sets up its own rings, so that both explain a refusal alike.
#[doc(hidden)]
pub fn unavailable(err: io::Error) -> io::Error {
    let why = match err.raw_os_error() {
        Some(libc::ENOSYS) => "this kernel has no io_uring (older than 5.1, or built without it)",
        Some(libc::EPERM) => {
            "io_uring is disabled (sysctl kernel.io_uring_disabled, or not allowed for this user)"
        }
        Some(libc::EACCES) | Some(libc::EINVAL) => {
            "io_uring is refused here (a seccomp filter, a container policy or too old a kernel)"
        }
        Some(libc::ENOMEM) => "io_uring could not lock its rings in memory (RLIMIT_MEMLOCK)",
        _ => "io_uring could not be set up",
    };
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("{why}: io_uring_setup: {err}"),
    )
}

/// A selector over io_uring poll requests, in any of the three triggers.
///
/// ```
/// use iomux::{Events, Interest, Selector, Token, Trigger};
/// use iomux::selector::uring::UringSelector;
/// use std::io::Write;
/// use std::os::fd::AsRawFd;
/// # if iomux::selector::uring::probe().is_err() { return; }
/// let mut sel = UringSelector::new(Trigger::Edge).unwrap();
/// let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
/// sel.register(&b, Token(3), Interest::READABLE).unwrap();
/// a.write_all(b"hi").unwrap();
/// let mut ev = Events::with_capacity(4);
/// sel.select(&mut ev, Some(std::time::Duration::from_secs(1))).unwrap();
/// assert!(ev.iter().any(|e| e.token() == Token(3) && e.is_readable()));
/// ```
pub type UringSelector = BaseSelector<Uring>;

impl std::fmt::Debug for Uring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uring")
            .field("trigger", &self.trigger)
            .field("rearm", &self.rearm.len())
            .finish()
    }
}

impl BaseSelector<Uring> {
    /// A selector on a new io_uring; fails, saying why, when the kernel refuses io_uring.
    ///
    /// ```
    /// use iomux::Selector;
    /// # if iomux::selector::uring::probe().is_err() { return; }
    /// let sel = iomux::selector::uring::UringSelector::new(iomux::Trigger::Level).unwrap();
    /// assert!(sel.is_empty());
    /// ```
    pub fn new(trigger: Trigger) -> io::Result<UringSelector> {
        Ok(BaseSelector::with(Uring {
            ring: Some(open_ring(RING_ENTRIES)?),
            trigger,
            next_generation: 0,
            rearm: Vec::new(),
            carried: None,
            found: Vec::new(),
            wait_number: 0,
            doorbell: None,
        }))
    }
}

impl Uring {
    fn ring(&mut self) -> io::Result<&mut IoUring> {
        self.ring
            .as_mut()
            .ok_or_else(|| io::Error::other("the selector is closed; open a new one"))
    }

    /// Queue a request; a full submission ring is submitted first.
    fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        let ring = self.ring()?;
        // SAFETY: poll requests point at no memory of ours; the descriptor is
        // only a number to the kernel (a closed one fails the request).
        if unsafe { ring.submission().push(&entry) }.is_err() {
            ring.submit().map_err(|e| context(e, "io_uring_enter"))?;
            // SAFETY: as above; the ring has room after the submit.
            unsafe { ring.submission().push(&entry) }
                .map_err(|_| io::Error::other("io_uring submission ring full"))?;
        }
        Ok(())
    }

    fn arm(&mut self, table: &mut FdTable<Slot>, fd: RawFd) -> io::Result<()> {
        let Some((reg, slot)) = table.get_mut(fd) else {
            return Ok(());
        };
        slot.armed = true;
        let entry = poll_request(fd, reg.interest, slot);
        self.push(entry)
    }

    /// Cancel the request in flight for a registration, and submit at once:
    /// the request holds a reference to the file, which the caller may be
    /// about to close.
    ///
    /// `ASYNC_CANCEL`, not `POLL_REMOVE`: a poll request woken but whose
    /// completion is not yet posted is refused by `POLL_REMOVE` (EALREADY),
    /// and a multishot one then lives on, holding the file open after its
    /// close (the peer never sees it) and waking for a registration that is
    /// gone. `ASYNC_CANCEL` marks such a request cancelled, and it ends.
    fn disarm(&mut self, fd: RawFd, slot: Slot) -> io::Result<()> {
        if !slot.armed {
            return Ok(());
        }
        let entry = opcode::AsyncCancel::new(user_data(fd, slot.generation))
            .build()
            .user_data(IGNORED);
        self.push(entry)?;
        self.ring()?
            .submit()
            .map_err(|e| context(e, "io_uring_enter"))?;
        Ok(())
    }

    /// Arm the doorbell's request if it has one to arm.
    fn arm_doorbell(&mut self) -> io::Result<()> {
        match self.doorbell {
            Some((fd, false)) => self.push_doorbell(fd),
            _ => Ok(()),
        }
    }

    /// Queue the doorbell's multishot poll request.
    fn push_doorbell(&mut self, fd: RawFd) -> io::Result<()> {
        let entry = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(DOORBELL);
        self.push(entry)?;
        self.doorbell = Some((fd, true));
        Ok(())
    }

    /// Start a poll request for `reg` in `trigger` mode.
    fn add(&mut self, reg: Registration, trigger: Trigger) -> io::Result<Slot> {
        let fd = reg.fd;
        // The kernel would say so only in a completion: check now.
        Self::check(&reg)?;
        self.next_generation = self.next_generation.wrapping_add(1);
        let slot = Slot {
            generation: self.next_generation,
            armed: true,
            trigger,
            queued: false,
            read_closed_unasked: false,
            seen: 0,
            index: 0,
        };
        self.push(poll_request(fd, reg.interest, &slot))?;
        Ok(slot)
    }

    /// One enter: submit what is queued and wait up to `timeout` for a
    /// completion, then turn completions into events; returns how many.
    fn wait_once(
        &mut self,
        table: &Mutex<FdTable<Slot>>,
        timeout: Option<Duration>,
        capacity: usize,
    ) -> io::Result<usize> {
        let ready = self.carried.is_some() || !self.ring()?.completion().is_empty();
        let ring = self.ring()?;
        let result = match timeout {
            _ if ready => ring.submit(),
            Some(t) if t.is_zero() => ring.submit(),
            None => ring.submit_and_wait(1),
            Some(t) => {
                let t = crate::sys::timespec(t);
                let ts = types::Timespec::new()
                    .sec(t.tv_sec as u64)
                    .nsec(t.tv_nsec as u32);
                let args = types::SubmitArgs::new().timespec(&ts);
                ring.submitter().submit_with_args(1, &args)
            }
        };
        match result {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
            // Interrupted waits are retried by wait_honestly; a busy ring is drained below.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(e),
        }
        self.reap(&mut lock(table), capacity);
        Ok(self.found.len())
    }

    /// Turn completions into events (merged per token), up to `capacity` tokens.
    fn reap(&mut self, table: &mut FdTable<Slot>, capacity: usize) {
        let Some(mut ring) = self.ring.take() else {
            return;
        };
        let mut cq = ring.completion();
        while let Some(cqe) = self.carried.take().or_else(|| cq.next()) {
            let ud = cqe.user_data();
            if ud == IGNORED {
                continue;
            }
            if ud == DOORBELL {
                if let Some((_, armed)) = &mut self.doorbell {
                    *armed &= cqueue::more(cqe.flags());
                }
                continue;
            }
            let fd = ud as u32 as RawFd;
            let generation = (ud >> 32) as u32;
            let wait_number = self.wait_number;
            let Some((reg, slot)) = table.get_mut(fd) else {
                continue;
            };
            if slot.generation != generation {
                continue; // from a removed registration
            }
            let is_new = slot.seen != wait_number;
            if is_new && self.found.len() >= capacity {
                self.carried = Some(cqe);
                break;
            }
            let more = cqueue::more(cqe.flags());
            if !more {
                slot.armed = false;
            }
            let res = cqe.result();
            let mut flags = if res >= 0 {
                event_flags(res as libc::c_short)
            } else if res == -libc::ECANCELED {
                0
            } else {
                // The request failed (a descriptor closed before the request
                // reached the kernel): say so rather than go silent.
                Event::ERROR | Event::HANGUP
            };
            if !reg.interest.is_readable() && flags & Event::READ_CLOSED != 0 {
                // Not asked for (see `read_closed_unasked`): not reported,
                // and not re-armed as a request that would fire at once.
                flags &= !Event::READ_CLOSED;
                // Re-armed below as a multishot request, whatever the trigger:
                // a one-shot caller saw nothing it would re-arm for.
                slot.read_closed_unasked |= slot.trigger != Trigger::Edge;
            }
            // A multishot request the kernel ended (or a level one that
            // fired) is armed again at the next wait.
            let rearm = !slot.armed
                && !slot.queued
                && res != -libc::EBADF
                && (slot.trigger == Trigger::Level
                    || ((slot.trigger == Trigger::Edge || slot.read_closed_unasked)
                        && res != -libc::ECANCELED));
            if rearm {
                slot.queued = true;
                self.rearm.push(fd);
            }
            if flags == 0 {
                continue;
            }
            if is_new {
                slot.seen = wait_number;
                slot.index = self.found.len();
                self.found.push((reg.token, flags));
            } else {
                self.found[slot.index].1 |= flags;
            }
        }
        drop(cq);
        self.ring = Some(ring);
    }
}

impl Watch<Slot> for Uring {
    fn watch(&mut self, reg: Registration) -> io::Result<Slot> {
        self.add(reg, reg.trigger)
    }

    fn rewatch(
        &mut self,
        (old, slot): (Registration, Slot),
        new: Registration,
    ) -> io::Result<Slot> {
        let fd = new.fd;
        check_fd_open(fd)?;
        let same = old.interest == new.interest && slot.trigger == new.trigger;
        if slot.armed && same && slot.trigger != Trigger::Oneshot {
            // The request in flight already watches the right things.
            return Ok(slot);
        }
        self.disarm(fd, slot)?;
        self.next_generation = self.next_generation.wrapping_add(1);
        let fresh = Slot {
            generation: self.next_generation,
            armed: true,
            queued: false,
            read_closed_unasked: false,
            trigger: new.trigger,
            ..slot
        };
        self.push(poll_request(fd, new.interest, &fresh))?;
        Ok(fresh)
    }

    fn unwatch(&mut self, _: &mut FdTable<Slot>, reg: Registration, slot: Slot) -> io::Result<()> {
        self.disarm(reg.fd, slot)
            .map_err(|e| context(e, format_args!("io_uring poll cancel, fd {}", reg.fd)))
    }
}

impl Syscalls for Uring {
    type State = Slot;
    type Remote = Infallible;
    const BACKEND: Backend = Backend::Uring;

    fn trigger(&self) -> Trigger {
        self.trigger
    }

    fn watch_waker(&mut self, reg: Registration) -> io::Result<Slot> {
        self.add(reg, Trigger::Level)
    }

    /// Watched by a multishot request, armed again at the next wait when the
    /// kernel ends it.
    fn watch_doorbell(&mut self, fd: RawFd) -> io::Result<()> {
        self.push_doorbell(fd)
    }

    fn wait(
        &mut self,
        table: &Mutex<FdTable<Slot>>,
        events: &mut Events,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        self.wait_number += 1;
        self.found.clear();
        // Level registrations that fired are armed again: still-ready ones complete at once.
        let rearm = std::mem::take(&mut self.rearm);
        let mut locked = lock(table);
        for &fd in &rearm {
            let armed = match locked.get_mut(fd) {
                Some((_, slot)) => {
                    slot.queued = false;
                    slot.armed
                }
                None => true,
            };
            if !armed {
                self.arm(&mut locked, fd)?;
            }
        }
        drop(locked);
        self.rearm = rearm;
        self.rearm.clear();
        self.arm_doorbell()?;
        self.wait_once(table, timeout, events.capacity())
            .map_err(|e| context(e, "io_uring_enter"))?;
        for &(token, flags) in &self.found {
            events.push(Event::new(token, flags));
        }
        Ok(())
    }

    fn close(&mut self, _: &mut FdTable<Slot>) -> io::Result<()> {
        // Dropping the ring cancels every request in flight.
        self.ring = None;
        self.doorbell = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    /// Probing leaves the calling thread as it was: its next blocking socket
    /// read with a timeout times out, never fails as interrupted (a ring
    /// opened on the caller's thread interrupts it when torn down: nearly
    /// every such read failed with EINTR).
    ///
    /// Where the kernel refuses io_uring this fails, unless
    /// `IOMUX_NO_URING=1` says the absence is expected (as the engine's
    /// io_uring tests do): a test that returned early would pass unseen.
    #[test]
    fn probing_does_not_interrupt_the_caller() {
        if let Err(e) = super::probe() {
            assert!(
                std::env::var_os("IOMUX_NO_URING").is_some(),
                "io_uring is unavailable here ({e}); set IOMUX_NO_URING=1 if that is expected"
            );
            return;
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let _server = listener.accept().unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        for i in 0..20 {
            super::probe().unwrap();
            let err = client.read(&mut [0; 1]).unwrap_err();
            assert!(
                matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
                "read {i} after a probe: {err} ({:?})",
                err.kind()
            );
        }
    }
}
