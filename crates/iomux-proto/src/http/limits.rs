//! HTTP limits and the per-server configuration every connection shares.

use std::sync::atomic::{AtomicU64, Ordering};

/// Size limits a request must keep to; past one, the request gets the
/// matching status (414, 431, 413) and the connection closes.
///
/// ```
/// let l = iomux_proto::http::HttpLimits::DEFAULT;
/// assert_eq!(l.max_request_line, 8 * 1024);
/// assert_eq!(l.max_headers, 100);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Longest request line (method, target, version; without CRLF) → 414.
    pub max_request_line: usize,
    /// Longest request head (request line, headers, the empty line) → 431.
    pub max_head: usize,
    /// Most header fields in one head → 431. At most [`MAX_HEADERS`].
    pub max_headers: usize,
    /// Largest request body, Content-Length or decoded chunked → 413.
    /// [`HttpLimits::NO_BODY_LIMIT`] lifts the limit (for handlers that
    /// consume bodies as they arrive, such as uploads).
    pub max_body: u32,
}

/// The parser's fixed header array: `--max-headers` cannot exceed it.
pub const MAX_HEADERS: usize = 100;

/// Bytes of chunk extensions (after `;` on chunk-size lines) allowed in one body → 400.
pub const MAX_CHUNK_EXTENSIONS: u16 = 4 * 1024;

/// Bytes of trailer fields allowed after the last chunk → 431.
pub const MAX_TRAILERS: u16 = 8 * 1024;

impl HttpLimits {
    /// A `max_body` that means no limit on request bodies.
    pub const NO_BODY_LIMIT: u32 = u32::MAX;

    /// 8 KiB request line, 64 KiB head, 100 headers, 1 MiB body.
    pub const DEFAULT: HttpLimits = HttpLimits {
        max_request_line: 8 * 1024,
        max_head: 64 * 1024,
        max_headers: MAX_HEADERS,
        max_body: 1024 * 1024,
    };
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits::DEFAULT
    }
}

/// Seconds since the UNIX epoch, read from the system's coarse real-time
/// clock: `Date` has one-second resolution, and the coarse clock (advanced
/// every tick, 4 ms here) is read from memory without the TSC, 7 ns against
/// 34 ns for the precise one on the development VM (20 M reads, pinned).
pub fn system_clock() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec for the call's duration.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut now) } == 0 {
        return u64::try_from(now.tv_sec).unwrap_or(0);
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A clock stopped at Sun, 06 Nov 1994 08:49:37 GMT, so that tests and fuzz
/// targets can compare output byte for byte.
pub fn fixed_clock() -> u64 {
    784_111_777
}

/// What every connection of one server shares: its limits, the clock the
/// `Date` header reads (a fixed clock makes output reproducible in tests)
/// and the counters of handler faults.
///
/// Connections hold a `&'static HttpConfig`, so per-connection state stays a
/// pointer wide; [`HttpConfig::leak`] makes one for a server's lifetime.
///
/// ```
/// use iomux_proto::http::{HttpConfig, HttpLimits};
/// let config = HttpConfig::leak(HttpLimits { max_body: 4096, ..HttpLimits::DEFAULT });
/// assert_eq!(config.limits.max_body, 4096);
/// assert_eq!(config.counters.handler_panics(), 0);
/// ```
#[derive(Debug)]
pub struct HttpConfig {
    /// Size limits.
    pub limits: HttpLimits,
    /// Seconds since the UNIX epoch, for `Date`.
    pub clock: fn() -> u64,
    /// Handler faults, counted over every connection.
    pub counters: HttpCounters,
}

impl HttpConfig {
    /// A configuration with `limits` and `clock` (a `static` one for tests:
    /// `HttpConfig::new(HttpLimits::DEFAULT, fixed_clock)`).
    pub const fn new(limits: HttpLimits, clock: fn() -> u64) -> HttpConfig {
        HttpConfig {
            limits,
            clock,
            counters: HttpCounters::new(),
        }
    }

    /// A configuration with `limits` and the system clock that lives as long
    /// as the process (one per server, not per connection).
    pub fn leak(limits: HttpLimits) -> &'static HttpConfig {
        Box::leak(Box::new(HttpConfig::new(limits, system_clock)))
    }
}

/// Handler faults the core caught, each of which closed its connection.
#[derive(Debug, Default)]
pub struct HttpCounters {
    panics: AtomicU64,
    length_mismatches: AtomicU64,
    unanswered: AtomicU64,
}

impl HttpCounters {
    /// No faults yet.
    pub const fn new() -> HttpCounters {
        HttpCounters {
            panics: AtomicU64::new(0),
            length_mismatches: AtomicU64::new(0),
            unanswered: AtomicU64::new(0),
        }
    }

    /// Handlers (or their exchanges) that panicked: `500` if their answer
    /// had not begun, and the connection closed.
    pub fn handler_panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }

    /// Responses whose body was longer or shorter than announced (or
    /// written after it ended): cut at the announced length, connection closed.
    pub fn length_mismatches(&self) -> u64 {
        self.length_mismatches.load(Ordering::Relaxed)
    }

    /// Handlers that returned [`super::Flow::Done`] without answering: `500`.
    pub fn unanswered(&self) -> u64 {
        self.unanswered.load(Ordering::Relaxed)
    }

    pub(crate) fn count_panic(&self) {
        self.panics.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_length_mismatch(&self) {
        self.length_mismatches.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_unanswered(&self) {
        self.unanswered.fetch_add(1, Ordering::Relaxed);
    }
}

impl std::fmt::Display for HttpCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "handler_panics={} length_mismatches={} unanswered={}",
            self.handler_panics(),
            self.length_mismatches(),
            self.unanswered()
        )
    }
}

/// Default limits and the system clock, shared by servers that need no
/// other (`Http::new(&DEFAULT_CONFIG, handler)`).
pub static DEFAULT_CONFIG: HttpConfig = HttpConfig::new(HttpLimits::DEFAULT, system_clock);
