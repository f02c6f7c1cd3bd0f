//! HTTP limits and the per-server configuration every connection shares.

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
    pub max_body: u32,
}

/// The parser's fixed header array: `--max-headers` cannot exceed it.
pub const MAX_HEADERS: usize = 100;

/// Bytes of chunk extensions (after `;` on chunk-size lines) allowed in one body → 400.
pub const MAX_CHUNK_EXTENSIONS: u16 = 4 * 1024;

/// Bytes of trailer fields allowed after the last chunk → 431.
pub const MAX_TRAILERS: u16 = 8 * 1024;

impl HttpLimits {
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

/// What every connection of one server shares: its limits and the clock the
/// `Date` header reads (a fixed clock makes output reproducible in tests).
///
/// Connections hold a `&'static HttpConfig`, so per-connection state stays a
/// pointer wide; [`HttpConfig::leak`] makes one for a server's lifetime.
///
/// ```
/// use iomux_proto::http::{HttpConfig, HttpLimits};
/// let config = HttpConfig::leak(HttpLimits { max_body: 4096, ..HttpLimits::DEFAULT });
/// assert_eq!(config.limits.max_body, 4096);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct HttpConfig {
    /// Size limits.
    pub limits: HttpLimits,
    /// Seconds since the UNIX epoch, for `Date`.
    pub clock: fn() -> u64,
}

impl HttpConfig {
    /// Default limits, system clock.
    pub const DEFAULT: HttpConfig = HttpConfig {
        limits: HttpLimits::DEFAULT,
        clock: system_clock,
    };

    /// A configuration with `limits` and the system clock that lives as long
    /// as the process (one per server, not per connection).
    pub fn leak(limits: HttpLimits) -> &'static HttpConfig {
        Box::leak(Box::new(HttpConfig {
            limits,
            clock: system_clock,
        }))
    }
}

/// The configuration of [`crate::Http::default`].
pub static DEFAULT_CONFIG: HttpConfig = HttpConfig::DEFAULT;
