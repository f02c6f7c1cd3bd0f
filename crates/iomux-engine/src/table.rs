//! What every event loop keeps about its connections: a slab addressed by
//! tokens that carry a generation, and the idle-deadline timers.

use iomux::timer::TimerId;
use iomux::{TimerWheel, Token};
use std::time::{Duration, Instant};

/// Tokens below this are the loop's own (listener, waker); connections start here.
pub(crate) const FIRST_CONN: usize = 2;

/// Connections by slot, with a generation per slot so that an event for a
/// closed connection cannot reach the next one in its slot.
pub(crate) struct Slab<T> {
    slots: Vec<(u32, Option<T>)>,
    free: Vec<usize>,
}

impl<T> Slab<T> {
    pub(crate) fn new() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }

    /// Slots in use.
    pub(crate) fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// The token the next `insert` returns.
    pub(crate) fn next_token(&self) -> Token {
        match self.free.last() {
            Some(&i) => encode(i, self.slots[i].0),
            None => encode(self.slots.len(), 0),
        }
    }

    pub(crate) fn insert(&mut self, value: T) -> Token {
        match self.free.pop() {
            Some(i) => {
                self.slots[i].1 = Some(value);
                encode(i, self.slots[i].0)
            }
            None => {
                self.slots.push((0, Some(value)));
                encode(self.slots.len() - 1, 0)
            }
        }
    }

    pub(crate) fn get_mut(&mut self, token: Token) -> Option<&mut T> {
        let (i, generation) = decode(token)?;
        match self.slots.get_mut(i) {
            Some((g, Some(v))) if *g == generation => Some(v),
            _ => None,
        }
    }

    pub(crate) fn remove(&mut self, token: Token) -> Option<T> {
        let (i, generation) = decode(token)?;
        let slot = self.slots.get_mut(i)?;
        if slot.0 != generation {
            return None;
        }
        let value = slot.1.take()?;
        slot.0 = slot.0.wrapping_add(1);
        self.free.push(i);
        Some(value)
    }

    /// The tokens of every slot in use.
    pub(crate) fn tokens(&self) -> Vec<Token> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.1.is_some())
            .map(|(i, s)| encode(i, s.0))
            .collect()
    }
}

// A token packs a 32-bit generation above a 32-bit slot index in a usize:
// on a narrower target the shift overflows and generations would be lost, so
// an event for a closed connection could reach the next one in its slot.
#[cfg(not(target_pointer_width = "64"))]
compile_error!(
    "iomux-engine needs a 64-bit target: connection tokens pack a 32-bit \
     generation above a 32-bit slot index in a usize"
);

fn encode(index: usize, generation: u32) -> Token {
    Token(((generation as usize) << 32) | (index + FIRST_CONN))
}

fn decode(token: Token) -> Option<(usize, u32)> {
    let index = (token.0 & 0xffff_ffff).checked_sub(FIRST_CONN)?;
    Some((index, (token.0 >> 32) as u32))
}

/// The idle-deadline wheel and a cached earliest deadline. Looking for the
/// wheel's next busy slot on every wait scanned hundreds of empty slots (3.5%
/// of the server's `perf` samples at 100 keep-alive HTTP connections), so the
/// wheel is scanned only once the cached time is reached. An insert lowers the
/// cache; a cancel leaves it early, which costs one early wake.
pub(crate) struct Timers {
    wheel: TimerWheel<(Token, u64)>,
    next: Option<Instant>,
}

/// The key of a connection's idle deadline; protocols' own timers use theirs.
pub(crate) const IDLE: u64 = u64::MAX;

impl Timers {
    /// Idle deadlines are seconds long: a coarse tick keeps the wheel cheap.
    pub(crate) fn new(now: Instant, idle_timeout: Duration) -> Timers {
        let tick = (idle_timeout / 32).clamp(Duration::from_millis(1), Duration::from_millis(100));
        Timers {
            wheel: TimerWheel::new(now, tick, 1024),
            next: None,
        }
    }

    /// A connection's idle deadline.
    pub(crate) fn insert(&mut self, deadline: Instant, token: Token) -> TimerId {
        self.insert_key(deadline, token, IDLE)
    }

    /// A connection's timer `key` ([`IDLE`] for its idle deadline).
    pub(crate) fn insert_key(&mut self, deadline: Instant, token: Token, key: u64) -> TimerId {
        self.next = Some(self.next.map_or(deadline, |n| n.min(deadline)));
        self.wheel.insert(deadline, (token, key))
    }

    pub(crate) fn cancel(&mut self, id: TimerId) {
        self.wheel.cancel(id);
    }

    /// Move a connection's idle timer `id` to `deadline`.
    pub(crate) fn reset(&mut self, id: &mut TimerId, deadline: Instant, token: Token) {
        self.wheel.cancel(*id);
        *id = self.insert(deadline, token);
    }

    pub(crate) fn expire(&mut self, now: Instant, due: &mut Vec<(Token, u64)>) {
        self.wheel.expire(now, due);
    }

    /// The earliest deadline, or a little earlier; `now` is after the last expiry.
    pub(crate) fn next_deadline(&mut self, now: Instant) -> Option<Instant> {
        if self.next.is_some_and(|t| t <= now) {
            self.next = self.wheel.next_deadline();
        }
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_of_a_removed_connection_reaches_nothing() {
        let mut slab = Slab::new();
        let predicted = slab.next_token();
        let first = slab.insert("first");
        assert_eq!(first, predicted);
        let second = slab.insert("second");
        assert_eq!(slab.remove(first), Some("first"));
        assert_eq!(slab.remove(first), None, "removed once");
        let predicted = slab.next_token();
        let reused = slab.insert("third");
        assert_eq!(reused, predicted);
        assert_ne!(reused, first, "the same slot, a new generation");
        assert!(slab.get_mut(first).is_none());
        assert_eq!(slab.get_mut(reused).copied(), Some("third"));
        assert_eq!(slab.len(), 2);
        assert_eq!(slab.tokens(), vec![reused, second]);
        assert!(slab.get_mut(Token(0)).is_none(), "below FIRST_CONN");
    }

    #[test]
    fn the_cached_deadline_is_never_later_than_the_earliest_timer() {
        let now = Instant::now();
        let mut timers = Timers::new(now, Duration::from_secs(10));
        assert_eq!(timers.next_deadline(now), None);
        timers.insert(now + Duration::from_secs(5), Token(7));
        let early = timers.insert(now + Duration::from_secs(2), Token(8));
        assert_eq!(
            timers.next_deadline(now),
            Some(now + Duration::from_secs(2))
        );
        timers.cancel(early);
        let later = now + Duration::from_secs(3);
        let next = timers.next_deadline(later).expect("a timer is left");
        assert!(next <= now + Duration::from_secs(5), "{next:?}");
        let mut due = Vec::new();
        timers.expire(now + Duration::from_secs(6), &mut due);
        assert_eq!(due, vec![(Token(7), IDLE)]);
    }
}
