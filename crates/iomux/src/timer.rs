//! A hashed timing wheel: O(1) insert and cancel, expiry cost proportional to
//! the timers that are due (plus those sharing their slot).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Numbers the wheels, so that an id from one wheel cancels nothing in another.
static NEXT_WHEEL: AtomicU32 = AtomicU32::new(0);

/// The longest timeout or run the iomux server and load client take: a year.
/// Far beyond any real timeout, and far enough from `Instant`'s limits that
/// no deadline computed from it overflows.
///
/// ```
/// assert_eq!(iomux::timer::MAX_TIMEOUT.as_secs(), 365 * 24 * 3600);
/// ```
pub const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// The most slots a [`TimerWheel`] has (larger requests are capped).
///
/// ```
/// assert_eq!(iomux::timer::MAX_SLOTS, 65_536);
/// ```
pub const MAX_SLOTS: usize = 1 << 16;

/// Identifies a pending timer so it can be cancelled.
///
/// ```
/// use std::time::{Duration, Instant};
/// let now = Instant::now();
/// let mut wheel = iomux::TimerWheel::new(now, Duration::from_millis(10), 64);
/// let id: iomux::timer::TimerId = wheel.insert(now + Duration::from_secs(1), "idle");
/// assert_eq!(wheel.cancel(id), Some("idle"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerId {
    wheel: u32,
    index: u32,
    generation: u32,
}

#[derive(Debug)]
struct Entry<K> {
    tick: u64,
    key: K,
    /// Position inside `slots[tick % slots.len()]`.
    pos: u32,
    generation: u32,
    live: bool,
}

/// Timers keyed by a caller's value `K`, rounded up to a fixed tick.
///
/// Connections re-arm idle timeouts constantly; the event loop avoids even
/// that by storing its last activity and re-inserting only when a timer fires
/// early, so the wheel sees one insert per timeout period per connection.
///
/// ```
/// use iomux::TimerWheel;
/// use std::time::{Duration, Instant};
/// let start = Instant::now();
/// let mut wheel = TimerWheel::new(start, Duration::from_millis(10), 64);
/// let a = wheel.insert(start + Duration::from_millis(25), "a");
/// wheel.insert(start + Duration::from_millis(500), "b");
/// assert_eq!(wheel.cancel(a), Some("a"));
/// let mut due = Vec::new();
/// wheel.expire(start + Duration::from_millis(600), &mut due);
/// assert_eq!(due, vec!["b"]);
/// assert!(wheel.is_empty());
/// ```
#[derive(Debug)]
pub struct TimerWheel<K> {
    id: u32,
    origin: Instant,
    tick: Duration,
    slots: Vec<Vec<u32>>,
    entries: Vec<Entry<K>>,
    free: Vec<u32>,
    /// Every tick before this one has been expired.
    next_tick: u64,
    len: usize,
}

impl<K: Copy> TimerWheel<K> {
    /// A wheel starting at `origin`, with `slots` buckets of `tick` each.
    /// Deadlines are rounded up to a whole tick, so timers never fire early.
    /// A zero tick is taken as one nanosecond, and `slots` is kept between 1
    /// and [`MAX_SLOTS`] (the slot count only spreads timers, any is correct).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let w: iomux::TimerWheel<u32> = iomux::TimerWheel::new(Instant::now(), Duration::from_millis(100), 512);
    /// assert_eq!(w.len(), 0);
    /// let exact: iomux::TimerWheel<u32> = iomux::TimerWheel::new(Instant::now(), Duration::ZERO, usize::MAX);
    /// assert_eq!(exact.tick(), Duration::from_nanos(1));
    /// ```
    pub fn new(origin: Instant, tick: Duration, slots: usize) -> TimerWheel<K> {
        let tick = tick.max(Duration::from_nanos(1));
        let slots = slots.clamp(1, MAX_SLOTS);
        TimerWheel {
            id: NEXT_WHEEL.fetch_add(1, Ordering::Relaxed),
            origin,
            tick,
            slots: (0..slots).map(|_| Vec::new()).collect(),
            entries: Vec::new(),
            free: Vec::new(),
            next_tick: 0,
            len: 0,
        }
    }

    /// Pending timers.
    ///
    /// ```
    /// let mut w = iomux::TimerWheel::new(std::time::Instant::now(), std::time::Duration::from_millis(1), 8);
    /// w.insert(std::time::Instant::now(), 1u8);
    /// assert_eq!(w.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.len
    }

    /// No pending timers.
    ///
    /// ```
    /// let w: iomux::TimerWheel<()> = iomux::TimerWheel::new(std::time::Instant::now(), std::time::Duration::from_millis(1), 8);
    /// assert!(w.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The tick `when` falls in, rounded down or up; saturating, so that a
    /// deadline centuries away stays far away instead of wrapping round to now.
    fn tick_at(&self, when: Instant, round_up: bool) -> u64 {
        let since = when.saturating_duration_since(self.origin).as_nanos();
        let tick = self.tick.as_nanos();
        let ticks = if round_up {
            since.div_ceil(tick)
        } else {
            since / tick
        };
        u64::try_from(ticks).unwrap_or(u64::MAX)
    }

    /// Schedule `key` to be returned by [`expire`](Self::expire) at or after `deadline`.
    ///
    /// ```
    /// let now = std::time::Instant::now();
    /// let mut w = iomux::TimerWheel::new(now, std::time::Duration::from_millis(5), 8);
    /// let id = w.insert(now + std::time::Duration::from_secs(1), 7u64);
    /// assert_eq!(w.cancel(id), Some(7));
    /// ```
    pub fn insert(&mut self, deadline: Instant, key: K) -> TimerId {
        // Round up to the next whole tick so a timer never fires before its deadline.
        let tick = self.tick_at(deadline, true).max(self.next_tick);
        let slot = (tick % self.slots.len() as u64) as usize;
        let pos = self.slots[slot].len() as u32;
        let index = match self.free.pop() {
            Some(i) => {
                let e = &mut self.entries[i as usize];
                e.tick = tick;
                e.key = key;
                e.pos = pos;
                e.live = true;
                i
            }
            None => {
                self.entries.push(Entry {
                    tick,
                    key,
                    pos,
                    generation: 0,
                    live: true,
                });
                (self.entries.len() - 1) as u32
            }
        };
        self.slots[slot].push(index);
        self.len += 1;
        TimerId {
            wheel: self.id,
            index,
            generation: self.entries[index as usize].generation,
        }
    }

    /// Remove a pending timer, returning its key; `None` if it already fired,
    /// was cancelled, or belongs to another wheel.
    ///
    /// ```
    /// let now = std::time::Instant::now();
    /// let mut w = iomux::TimerWheel::new(now, std::time::Duration::from_millis(5), 8);
    /// let id = w.insert(now, 'x');
    /// assert_eq!(w.cancel(id), Some('x'));
    /// assert_eq!(w.cancel(id), None);
    /// ```
    pub fn cancel(&mut self, id: TimerId) -> Option<K> {
        if id.wheel != self.id {
            return None;
        }
        let e = self.entries.get(id.index as usize)?;
        if !e.live || e.generation != id.generation {
            return None;
        }
        Some(self.remove(id.index))
    }

    fn remove(&mut self, index: u32) -> K {
        let (tick, pos) = {
            let e = &self.entries[index as usize];
            (e.tick, e.pos as usize)
        };
        let nslots = self.slots.len() as u64;
        let slot = &mut self.slots[(tick % nslots) as usize];
        slot.swap_remove(pos);
        if let Some(&moved) = slot.get(pos) {
            self.entries[moved as usize].pos = pos as u32;
        }
        let e = &mut self.entries[index as usize];
        e.live = false;
        e.generation = e.generation.wrapping_add(1);
        self.free.push(index);
        self.len -= 1;
        e.key
    }

    /// Move every timer due at `now` into `due` (in no particular order).
    ///
    /// ```
    /// let t0 = std::time::Instant::now();
    /// let mut w = iomux::TimerWheel::new(t0, std::time::Duration::from_millis(1), 4);
    /// w.insert(t0 + std::time::Duration::from_millis(3), 1);
    /// w.insert(t0 + std::time::Duration::from_millis(9), 2);
    /// let mut due = Vec::new();
    /// w.expire(t0 + std::time::Duration::from_millis(5), &mut due);
    /// assert_eq!(due, vec![1]);
    /// ```
    pub fn expire(&mut self, now: Instant, due: &mut Vec<K>) {
        let now_tick = self.tick_at(now, false);
        if now_tick < self.next_tick || self.len == 0 {
            self.next_tick = self.next_tick.max(now_tick.saturating_add(1));
            return;
        }
        let nslots = self.slots.len() as u64;
        // More elapsed ticks than slots: every slot is visited once.
        let first = self
            .next_tick
            .max(now_tick.saturating_add(1).saturating_sub(nslots));
        for t in first..=now_tick {
            let slot = (t % nslots) as usize;
            let mut i = 0;
            while i < self.slots[slot].len() {
                let index = self.slots[slot][i];
                if self.entries[index as usize].tick <= now_tick {
                    due.push(self.remove(index));
                } else {
                    i += 1;
                }
            }
        }
        self.next_tick = now_tick.saturating_add(1);
    }

    /// When the earliest pending timer may be due, for a wait's timeout; a
    /// little early when a later round's timer shares the first busy slot.
    ///
    /// ```
    /// let t0 = std::time::Instant::now();
    /// let mut w = iomux::TimerWheel::new(t0, std::time::Duration::from_millis(10), 16);
    /// assert!(w.next_deadline().is_none());
    /// w.insert(t0 + std::time::Duration::from_millis(35), ());
    /// assert_eq!(w.next_deadline(), Some(t0 + std::time::Duration::from_millis(40)));
    /// ```
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.len == 0 {
            return None;
        }
        let nslots = self.slots.len() as u64;
        let tick_nanos = u64::try_from(self.tick.as_nanos()).unwrap_or(u64::MAX);
        (self.next_tick..self.next_tick.saturating_add(nslots))
            .find(|t| !self.slots[(t % nslots) as usize].is_empty())
            .map(|t| self.origin + Duration::from_nanos(tick_nanos.saturating_mul(t)))
    }

    /// The wheel's tick.
    ///
    /// ```
    /// let w: iomux::TimerWheel<()> = iomux::TimerWheel::new(std::time::Instant::now(), std::time::Duration::from_millis(3), 8);
    /// assert_eq!(w.tick(), std::time::Duration::from_millis(3));
    /// ```
    pub fn tick(&self) -> Duration {
        self.tick
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_never_fire_early_and_all_fire_eventually() {
        let t0 = Instant::now();
        let tick = Duration::from_millis(7);
        let mut w = TimerWheel::new(t0, tick, 16);
        let deadlines: Vec<u64> = (0..500).map(|i| (i * 37) % 1000).collect();
        for (i, ms) in deadlines.iter().enumerate() {
            w.insert(t0 + Duration::from_millis(*ms), i);
        }
        let mut fired = vec![false; deadlines.len()];
        let mut due = Vec::new();
        for now_ms in (0..1100).step_by(3) {
            due.clear();
            w.expire(t0 + Duration::from_millis(now_ms), &mut due);
            for &i in &due {
                assert!(
                    deadlines[i] <= now_ms,
                    "timer {i} due at {} fired at {now_ms}",
                    deadlines[i]
                );
                assert!(!fired[i]);
                fired[i] = true;
            }
        }
        assert!(fired.iter().all(|f| *f));
        assert!(w.is_empty());
    }

    #[test]
    fn cancel_after_reuse_does_not_remove_the_new_timer() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0, Duration::from_millis(1), 8);
        let old = w.insert(t0 + Duration::from_millis(1), 1);
        assert_eq!(w.cancel(old), Some(1));
        let new = w.insert(t0 + Duration::from_millis(2), 2);
        assert_eq!(w.cancel(old), None);
        assert_eq!(w.len(), 1);
        assert_eq!(w.cancel(new), Some(2));
    }

    /// Deadlines past u64 nanoseconds (584 years) used to wrap round to a
    /// near tick and fire at once.
    #[test]
    fn far_deadlines_do_not_fire_early() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0, Duration::from_nanos(1), 8);
        // One microsecond past 2^64 ns, and a deadline beyond any clock.
        let far = [
            Duration::from_nanos(u64::MAX) + Duration::from_micros(1),
            Duration::from_secs(u64::MAX / 4),
        ];
        for (i, d) in far.iter().enumerate() {
            let Some(deadline) = t0.checked_add(*d) else {
                continue;
            };
            w.insert(deadline, i);
        }
        assert!(!w.is_empty(), "no far deadline could be represented");
        let mut due = Vec::new();
        w.expire(t0 + Duration::from_secs(3600), &mut due);
        assert!(due.is_empty(), "far timers fired early: {due:?}");
        assert!(w.next_deadline().is_some());
        // The wheel's own arithmetic at the end of time: no overflow.
        if let Some(end) = t0.checked_add(Duration::from_secs(u64::MAX / 2)) {
            w.expire(end, &mut due);
            assert!(w.next_deadline().map_or(true, |d| d >= t0));
        }
    }

    #[test]
    fn zero_tick_and_huge_slot_counts_are_clamped() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0, Duration::ZERO, usize::MAX);
        assert_eq!(w.tick(), Duration::from_nanos(1));
        let id = w.insert(t0 + Duration::from_micros(5), 'z');
        let mut due = Vec::new();
        w.expire(t0 + Duration::from_micros(4), &mut due);
        assert!(due.is_empty());
        w.expire(t0 + Duration::from_micros(5), &mut due);
        assert_eq!(due, vec!['z']);
        assert_eq!(w.cancel(id), None, "cancelling a fired timer");
        assert_eq!(w.cancel(id), None, "twice");
    }

    /// Both wheels number their first timer alike: the id of one used to
    /// cancel the other's.
    #[test]
    fn an_id_from_another_wheel_cancels_nothing() {
        let t0 = Instant::now();
        let mut a = TimerWheel::new(t0, Duration::from_millis(1), 8);
        let mut b = TimerWheel::new(t0, Duration::from_millis(1), 8);
        let in_a = a.insert(t0 + Duration::from_millis(5), 'a');
        let in_b = b.insert(t0 + Duration::from_millis(5), 'b');
        assert_eq!(b.cancel(in_a), None);
        assert_eq!(a.cancel(in_b), None);
        assert_eq!((a.len(), b.len()), (1, 1));
        assert_eq!(a.cancel(in_a), Some('a'));
    }

    #[test]
    fn a_long_jump_visits_each_slot_once_and_keeps_later_rounds() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0, Duration::from_millis(1), 4);
        w.insert(t0 + Duration::from_millis(2), 'a');
        w.insert(t0 + Duration::from_millis(1_000), 'b');
        let mut due = Vec::new();
        w.expire(t0 + Duration::from_millis(500), &mut due);
        assert_eq!(due, vec!['a']);
        due.clear();
        w.expire(t0 + Duration::from_millis(999), &mut due);
        assert!(due.is_empty());
        w.expire(t0 + Duration::from_millis(1_000), &mut due);
        assert_eq!(due, vec!['b']);
    }
}
