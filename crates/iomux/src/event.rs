//! Tokens, interests and the events a selector reports.

use std::fmt;

/// Caller-chosen identifier reported back with every event of a registration.
///
/// ```
/// let t = iomux::Token(42);
/// assert_eq!(t.0, 42);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub usize);

/// Which readiness a registration asks for: readable, writable or both.
///
/// An interest with neither direction is invalid and refused by every selector.
///
/// ```
/// use iomux::Interest;
/// let both = Interest::READABLE | Interest::WRITABLE;
/// assert!(both.is_readable() && both.is_writable());
/// assert_eq!(both, Interest::BOTH);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Interest(u8);

impl Interest {
    const READ_BIT: u8 = 1;
    const WRITE_BIT: u8 = 2;
    /// Wake when the descriptor has data to read (or a peer to accept, or EOF).
    ///
    /// ```
    /// assert!(iomux::Interest::READABLE.is_readable());
    /// ```
    pub const READABLE: Interest = Interest(Self::READ_BIT);
    /// Wake when a write would not block.
    pub const WRITABLE: Interest = Interest(Self::WRITE_BIT);
    /// Both directions.
    pub const BOTH: Interest = Interest(Self::READ_BIT | Self::WRITE_BIT);

    /// Build an interest from raw bits (1 = readable, 2 = writable), keeping
    /// whatever is given so that selectors can refuse invalid ones.
    ///
    /// ```
    /// assert_eq!(iomux::Interest::from_bits(3), iomux::Interest::BOTH);
    /// assert!(!iomux::Interest::from_bits(0).is_valid());
    /// ```
    pub const fn from_bits(bits: u8) -> Interest {
        Interest(bits)
    }

    /// The raw bits.
    ///
    /// ```
    /// assert_eq!(iomux::Interest::WRITABLE.bits(), 2);
    /// ```
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// True when at least one direction and nothing else is set.
    ///
    /// ```
    /// assert!(iomux::Interest::READABLE.is_valid());
    /// assert!(!iomux::Interest::from_bits(4).is_valid());
    /// ```
    pub const fn is_valid(self) -> bool {
        self.0 != 0 && self.0 & !(Self::READ_BIT | Self::WRITE_BIT) == 0
    }

    /// Asks for readability.
    ///
    /// ```
    /// assert!(iomux::Interest::BOTH.is_readable());
    /// ```
    pub const fn is_readable(self) -> bool {
        self.0 & Self::READ_BIT != 0
    }

    /// Asks for writability.
    ///
    /// ```
    /// assert!(!iomux::Interest::READABLE.is_writable());
    /// ```
    pub const fn is_writable(self) -> bool {
        self.0 & Self::WRITE_BIT != 0
    }
}

impl std::ops::BitOr for Interest {
    type Output = Interest;
    fn bitor(self, rhs: Interest) -> Interest {
        Interest(self.0 | rhs.0)
    }
}

impl fmt::Debug for Interest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.is_readable(), self.is_writable(), self.is_valid()) {
            (true, true, true) => f.write_str("READABLE | WRITABLE"),
            (true, false, true) => f.write_str("READABLE"),
            (false, true, true) => f.write_str("WRITABLE"),
            _ => write!(f, "Interest(invalid {:#x})", self.0),
        }
    }
}

/// One readiness report: which registration, and what it is ready for.
///
/// ```
/// use iomux::{Event, Token};
/// let e = Event::new(Token(1), Event::READABLE | Event::READ_CLOSED);
/// assert!(e.is_readable() && e.is_read_closed() && !e.is_writable());
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Event {
    token: Token,
    flags: u8,
}

impl Event {
    /// Flag: data (or EOF, or a pending connection) can be read. The other
    /// flags combine with it:
    ///
    /// ```
    /// use iomux::{Event, Token};
    /// let e = Event::new(Token(0), Event::READABLE | Event::HANGUP | Event::ERROR);
    /// assert!(e.is_readable() && e.is_hangup() && e.is_error());
    /// ```
    pub const READABLE: u8 = 1;
    /// Flag: a write would not block.
    pub const WRITABLE: u8 = 2;
    /// Flag: the peer shut down its sending side (EPOLLRDHUP / POLLRDHUP).
    pub const READ_CLOSED: u8 = 4;
    /// Flag: both directions are closed (EPOLLHUP / POLLHUP).
    pub const HANGUP: u8 = 8;
    /// Flag: an error is pending on the descriptor (EPOLLERR / POLLERR / POLLNVAL).
    pub const ERROR: u8 = 16;

    /// An event for `token` with the given flags.
    ///
    /// ```
    /// let e = iomux::Event::new(iomux::Token(3), iomux::Event::ERROR);
    /// assert!(e.is_error());
    /// ```
    #[inline]
    pub const fn new(token: Token, flags: u8) -> Event {
        Event { token, flags }
    }

    /// The registration's token.
    ///
    /// ```
    /// assert_eq!(iomux::Event::new(iomux::Token(9), 0).token(), iomux::Token(9));
    /// ```
    #[inline]
    pub const fn token(&self) -> Token {
        self.token
    }

    /// The raw flags.
    ///
    /// ```
    /// assert_eq!(iomux::Event::new(iomux::Token(0), 3).flags(), 3);
    /// ```
    #[inline]
    pub const fn flags(&self) -> u8 {
        self.flags
    }

    /// Readable, or at EOF: a read will not block.
    ///
    /// ```
    /// assert!(iomux::Event::new(iomux::Token(0), iomux::Event::READABLE).is_readable());
    /// ```
    #[inline]
    pub const fn is_readable(&self) -> bool {
        self.flags & Self::READABLE != 0
    }

    /// Writable: a write will not block.
    ///
    /// ```
    /// assert!(iomux::Event::new(iomux::Token(0), iomux::Event::WRITABLE).is_writable());
    /// ```
    #[inline]
    pub const fn is_writable(&self) -> bool {
        self.flags & Self::WRITABLE != 0
    }

    /// The peer will send nothing more (it shut down writing or closed).
    ///
    /// ```
    /// assert!(iomux::Event::new(iomux::Token(0), iomux::Event::HANGUP).is_read_closed());
    /// ```
    #[inline]
    pub const fn is_read_closed(&self) -> bool {
        self.flags & (Self::READ_CLOSED | Self::HANGUP) != 0
    }

    /// Both directions are closed.
    ///
    /// ```
    /// assert!(!iomux::Event::new(iomux::Token(0), iomux::Event::READ_CLOSED).is_hangup());
    /// ```
    #[inline]
    pub const fn is_hangup(&self) -> bool {
        self.flags & Self::HANGUP != 0
    }

    /// An error is pending (read `SO_ERROR` or try the I/O to learn which).
    ///
    /// ```
    /// assert!(!iomux::Event::new(iomux::Token(0), 0).is_error());
    /// ```
    #[inline]
    pub const fn is_error(&self) -> bool {
        self.flags & Self::ERROR != 0
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Self::READABLE, "READABLE"),
            (Self::WRITABLE, "WRITABLE"),
            (Self::READ_CLOSED, "READ_CLOSED"),
            (Self::HANGUP, "HANGUP"),
            (Self::ERROR, "ERROR"),
        ];
        let set: Vec<&str> = names
            .iter()
            .filter(|(b, _)| self.flags & b != 0)
            .map(|(_, n)| *n)
            .collect();
        write!(f, "Event({:?}, {})", self.token, set.join(" | "))
    }
}

/// A reusable buffer of events filled by [`Selector::select`](crate::Selector::select).
///
/// Its capacity bounds how many events one wait returns; the rest are
/// reported by the next wait.
///
/// ```
/// let events = iomux::Events::with_capacity(64);
/// assert!(events.is_empty());
/// assert_eq!(events.capacity(), 64);
/// ```
#[derive(Debug, Clone)]
pub struct Events {
    list: Vec<Event>,
    capacity: usize,
}

impl Events {
    /// Room for up to `capacity` events per wait (at least one). Memory is
    /// taken as events arrive, so a huge capacity costs nothing up front
    /// (a wait reports at most one event per registered descriptor).
    ///
    /// ```
    /// assert_eq!(iomux::Events::with_capacity(0).capacity(), 1);
    /// assert_eq!(iomux::Events::with_capacity(usize::MAX).capacity(), usize::MAX);
    /// ```
    pub fn with_capacity(capacity: usize) -> Events {
        let capacity = capacity.max(1);
        Events {
            list: Vec::with_capacity(capacity.min(Self::PREALLOCATED)),
            capacity,
        }
    }

    /// Events allocated up front; a larger buffer grows as waits fill it.
    const PREALLOCATED: usize = 1024;

    /// How many events one wait may return.
    ///
    /// ```
    /// assert_eq!(iomux::Events::with_capacity(8).capacity(), 8);
    /// ```
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of events from the last wait.
    ///
    /// ```
    /// assert_eq!(iomux::Events::with_capacity(8).len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// True when the last wait reported nothing.
    ///
    /// ```
    /// assert!(iomux::Events::with_capacity(8).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The events from the last wait.
    ///
    /// ```
    /// assert_eq!(iomux::Events::with_capacity(8).iter().count(), 0);
    /// ```
    pub fn iter(&self) -> std::slice::Iter<'_, Event> {
        self.list.iter()
    }

    /// Forget the events (selectors do this before filling).
    ///
    /// ```
    /// let mut e = iomux::Events::with_capacity(8);
    /// e.clear();
    /// assert!(e.is_empty());
    /// ```
    pub fn clear(&mut self) {
        self.list.clear();
    }

    #[inline]
    pub(crate) fn push(&mut self, event: Event) {
        self.list.push(event);
    }

    #[inline]
    pub(crate) fn is_full(&self) -> bool {
        self.list.len() >= self.capacity
    }
}

impl<'a> IntoIterator for &'a Events {
    type Item = &'a Event;
    type IntoIter = std::slice::Iter<'a, Event>;
    fn into_iter(self) -> Self::IntoIter {
        self.list.iter()
    }
}
