//! The dispatch benchmark, after libevent's `bench.c`: `fds` socket pairs are
//! registered for readability and each pass makes `active` of them readable
//! (one byte written to each, chosen round-robin), waits until all of them are
//! reported, and reads the bytes back. The time per pass shows how a
//! backend's cost grows with the number of registered but idle descriptors.
//!
//! The criterion bench (`benches/dispatch.rs`) and `iomux lab` both use
//! [`measure`]; the bench runs the same workload on mio as the peer.
//!
//! ```
//! use iomux::{Backend, Trigger};
//! let per_pass = iomux_lab::dispatch::measure(Backend::Epoll, Trigger::Edge, 100, 10, 50).unwrap();
//! assert!(per_pass > std::time::Duration::ZERO);
//! ```

use iomux::selector::select::FD_SETSIZE;
use iomux::{AnySelector, Backend, Events, Interest, Selector, Token, Trigger};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// The largest `fds` select can take: both ends of every pair are open, so
/// descriptor numbers reach about `2 * fds` plus the few already open.
pub const SELECT_MAX_FDS: usize = (FD_SETSIZE - 32) / 2;

/// One dispatch workload: the registered pairs, the selector and its events.
///
/// ```
/// use iomux::{Backend, Trigger};
/// let mut d = iomux_lab::dispatch::Dispatch::new(Backend::Poll, Trigger::Level, 50, 5).unwrap();
/// d.pass().unwrap();
/// assert_eq!(d.fds(), 50);
/// ```
#[derive(Debug)]
pub struct Dispatch {
    selector: AnySelector,
    /// (writer, registered reader); a reader's token is its index.
    pairs: Vec<(UnixStream, UnixStream)>,
    events: Events,
    active: usize,
    /// The first pair the next pass writes to.
    next: usize,
}

impl Dispatch {
    /// Open `fds` non-blocking socket pairs and register their reading ends on
    /// a `backend` selector in `trigger` mode. `active` must be 1..=`fds`.
    ///
    /// ```
    /// use iomux::{Backend, Trigger};
    /// let err = iomux_lab::dispatch::Dispatch::new(Backend::Select, Trigger::Level, 5000, 100).unwrap_err();
    /// assert!(err.to_string().contains("use poll or epoll"));
    /// ```
    pub fn new(
        backend: Backend,
        trigger: Trigger,
        fds: usize,
        active: usize,
    ) -> io::Result<Dispatch> {
        if active == 0 || active > fds {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("dispatch: active must be between 1 and the number of descriptors ({fds}), got {active}"),
            ));
        }
        if backend == Backend::Select && fds > SELECT_MAX_FDS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("dispatch: select holds at most {SELECT_MAX_FDS} socket pairs (FD_SETSIZE {FD_SETSIZE}), asked for {fds}; use poll or epoll"),
            ));
        }
        let mut selector = backend.open(trigger)?;
        let mut pairs = Vec::with_capacity(fds);
        for i in 0..fds {
            let (writer, reader) = UnixStream::pair().map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "dispatch: socket pair {i} of {fds}: {e}; raise the limit with `ulimit -n`"
                    ),
                )
            })?;
            writer.set_nonblocking(true)?;
            reader.set_nonblocking(true)?;
            selector.register(reader.as_fd(), Token(i), Interest::READABLE)?;
            pairs.push((writer, reader));
        }
        Ok(Dispatch {
            selector,
            pairs,
            events: Events::with_capacity(active.max(64)),
            active,
            next: 0,
        })
    }

    /// Number of registered socket pairs.
    ///
    /// ```
    /// # use iomux::{Backend, Trigger};
    /// let d = iomux_lab::dispatch::Dispatch::new(Backend::Poll, Trigger::Level, 3, 1).unwrap();
    /// assert_eq!(d.fds(), 3);
    /// ```
    pub fn fds(&self) -> usize {
        self.pairs.len()
    }

    /// Let the selector finish the work it defers after registration, so the
    /// timed passes measure the steady state: sigio checks each newly
    /// registered descriptor once, one `Events` batch per wait, so with 9,000
    /// pairs and 1 active the first ~140 passes would each also check 64 idle
    /// descriptors (measured: 20.3 us per pass instead of 4.7 us). Nothing has
    /// been written, so nothing is reported.
    fn settle(&mut self) -> io::Result<()> {
        for _ in 0..=self.pairs.len() / self.events.capacity() {
            self.selector
                .select(&mut self.events, Some(Duration::ZERO))?;
        }
        Ok(())
    }

    /// One pass: write a byte to each of the next `active` pairs, wait until
    /// every one is reported, and read each byte back (re-arming one-shot
    /// registrations).
    ///
    /// ```
    /// # use iomux::{Backend, Trigger};
    /// let mut d = iomux_lab::dispatch::Dispatch::new(Backend::Epoll, Trigger::Oneshot, 8, 8).unwrap();
    /// for _ in 0..3 { d.pass().unwrap(); }
    /// ```
    pub fn pass(&mut self) -> io::Result<()> {
        let n = self.pairs.len();
        for k in 0..self.active {
            (&self.pairs[(self.next + k) % n].0).write_all(b"x")?;
        }
        self.next = (self.next + self.active) % n;
        let oneshot = self.selector.trigger() == Trigger::Oneshot;
        let mut pending = self.active;
        let mut byte = [0u8; 1];
        while pending > 0 {
            // Bounded: a lost event fails the pass instead of hanging it.
            self.selector
                .select(&mut self.events, Some(Duration::from_secs(5)))?;
            if self.events.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "dispatch: {pending} of {} written pairs were never reported",
                        self.active
                    ),
                ));
            }
            for event in &self.events {
                let i = event.token().0;
                let reader = &self.pairs[i].1;
                if (&*reader).read(&mut byte)? == 1 {
                    pending -= 1;
                }
                if oneshot {
                    self.selector
                        .reregister(reader.as_fd(), Token(i), Interest::READABLE)?;
                }
            }
        }
        Ok(())
    }
}

/// The mean time of one pass over `passes` passes (after one warm-up pass)
/// with `fds` registered socket pairs of which `active` become readable each
/// pass, on `backend` in `trigger` mode.
///
/// ```
/// use iomux::{Backend, Trigger};
/// let t = iomux_lab::dispatch::measure(Backend::Poll, Trigger::Level, 200, 100, 20).unwrap();
/// println!("poll, 200 pairs, 100 active: {t:?} per pass");
/// ```
pub fn measure(
    backend: Backend,
    trigger: Trigger,
    fds: usize,
    active: usize,
    passes: usize,
) -> io::Result<Duration> {
    Ok(measure_repeats(backend, trigger, fds, active, passes, 1)?[0])
}

/// [`measure`] `repeats` times on one set of pairs (opened and registered
/// once): the mean time of one pass in each repeat.
///
/// ```
/// use iomux::{Backend, Trigger};
/// let t = iomux_lab::dispatch::measure_repeats(Backend::Epoll, Trigger::Level, 50, 5, 20, 3).unwrap();
/// assert_eq!(t.len(), 3);
/// ```
pub fn measure_repeats(
    backend: Backend,
    trigger: Trigger,
    fds: usize,
    active: usize,
    passes: usize,
    repeats: usize,
) -> io::Result<Vec<Duration>> {
    let mut dispatch = Dispatch::new(backend, trigger, fds, active)?;
    dispatch.settle()?;
    dispatch.pass()?;
    let passes = passes.max(1);
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        let start = Instant::now();
        for _ in 0..passes {
            dispatch.pass()?;
        }
        times.push(start.elapsed() / passes as u32);
    }
    Ok(times)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_completes_passes() {
        for backend in Backend::ALL {
            for &trigger in backend.triggers() {
                let mut d = Dispatch::new(backend, trigger, 40, 15).unwrap();
                // 40 pairs, 15 a pass: wraps round the pairs several times.
                for _ in 0..10 {
                    d.pass().unwrap();
                }
                // Every byte was read back: nothing is left readable.
                let mut events = Events::with_capacity(64);
                d.selector
                    .select(&mut events, Some(Duration::ZERO))
                    .unwrap();
                assert!(events.is_empty(), "{backend}/{trigger}: {:?}", events);
            }
        }
    }

    #[test]
    fn bad_sizes_are_refused_with_advice() {
        let err = Dispatch::new(Backend::Epoll, Trigger::Edge, 10, 0).unwrap_err();
        assert!(err.to_string().contains("between 1 and"), "{err}");
        let err = Dispatch::new(Backend::Epoll, Trigger::Edge, 10, 11).unwrap_err();
        assert!(err.to_string().contains("between 1 and"), "{err}");
        let err = Dispatch::new(Backend::Select, Trigger::Level, 2000, 1).unwrap_err();
        assert!(err.to_string().contains("use poll or epoll"), "{err}");
    }
}
