//! Request heads: finding where a head ends within the limits, parsing it
//! with `httparse`, and the RFC 9112 checks httparse leaves to its caller
//! (Host, Content-Length, Transfer-Encoding, Connection, Expect).
//!
//! The outcome depends only on the bytes, never on how they were split into
//! reads: limits are judged on the request line and the whole head, and a
//! partial head is re-examined only from where the last look stopped, so a
//! trickled head costs linear time.

use super::handler::tx;
use super::limits::{HttpLimits, MAX_HEADERS};
use super::response::Status;
use httparse::{Header, Request};
use std::mem::MaybeUninit;

/// How the request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body (or Content-Length: 0).
    Empty,
    /// Content-Length.
    Length(u64),
    /// Transfer-Encoding: chunked.
    Chunked,
}

/// A parsed head: what the rest of the exchange needs, the request line
/// and the header fields, borrowed from the input.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestHead<'a> {
    pub method: &'a str,
    pub target: &'a str,
    pub headers: &'a [Header<'a>],
    pub framing: Framing,
    /// `tx::HEAD_ONLY`, `tx::HTTP10`, `tx::KEEP_ALIVE` and
    /// `EXPECT_CONTINUE`: one byte the connection takes over as it is,
    /// where separate bools were copied out byte by byte (a store-forwarding
    /// stall on every request, in `perf annotate` of `on_input`).
    pub flags: u8,
}

/// The head's flag for `Expect: 100-continue` (beside the [`tx`] flags).
pub(crate) const EXPECT_CONTINUE: u8 = 128;

/// How far a partial head has been examined (kept by the connection between reads).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct HeadProgress {
    /// Bytes already searched: for the request line's LF until the line is
    /// complete, then for the end of the head. Zero before the first look.
    pub scanned: u32,
    /// The request line is complete, within its limit and valid.
    pub line_ok: bool,
}

#[cfg(test)]
thread_local! {
    /// Bytes [`read_head`] has examined on this thread, so that a test can
    /// show a trickled head costs linear time without timing it.
    pub(crate) static EXAMINED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Count `bytes` as examined (tests only; nothing in other builds).
#[inline(always)]
fn examining(bytes: &[u8]) -> &[u8] {
    #[cfg(test)]
    EXAMINED.with(|n| n.set(n.get() + bytes.len()));
    bytes
}

#[derive(Debug)]
pub(crate) enum HeadOutcome<R> {
    /// More bytes are needed.
    Partial,
    /// A complete, valid head: what `complete` made of it.
    Complete(R),
    /// Reject the request with this status and close.
    Reject(Status),
}

/// Examine the start of `input` (which does not begin with an empty line);
/// a complete, valid head goes to `complete` with its length, while the
/// parser's header array (on this function's stack) is alive.
pub(crate) fn read_head<R>(
    input: &[u8],
    progress: &mut HeadProgress,
    limits: &HttpLimits,
    complete: impl FnOnce(usize, RequestHead<'_>) -> R,
) -> HeadOutcome<R> {
    let mut headers: [MaybeUninit<Header<'_>>; MAX_HEADERS] =
        [const { MaybeUninit::uninit() }; MAX_HEADERS];
    // Fast path: the whole head is usually there on the first look.
    if progress.scanned == 0 {
        let mut request = Request::new(&mut []);
        if let Ok(httparse::Status::Complete(len)) =
            request.parse_with_uninit_headers(examining(input), &mut headers)
        {
            let method = request.method.unwrap_or("");
            let path = request.path.unwrap_or("");
            // "METHOD SP target SP HTTP/1.x": exact, as delimiters are single spaces.
            if method.len() + path.len() + 10 > limits.max_request_line {
                return HeadOutcome::Reject(Status::URI_TOO_LONG);
            }
            if len > limits.max_head {
                return HeadOutcome::Reject(Status::HEADER_FIELDS_TOO_LARGE);
            }
            return match analyse(request, limits) {
                Ok(head) => HeadOutcome::Complete(complete(len, head)),
                Err(status) => HeadOutcome::Reject(status),
            };
        }
    }
    if !progress.line_ok {
        let window = &input[..input.len().min(limits.max_request_line + 2)];
        // Resume the search for the line's LF where the last look stopped.
        let from = (progress.scanned as usize).min(window.len());
        let Some(lf) = examining(&window[from..])
            .iter()
            .position(|&b| b == b'\n')
            .map(|at| from + at)
        else {
            // Without its LF the line is already this long (a last CR may end it).
            let at_least = input.len() - usize::from(input.last() == Some(&b'\r'));
            if at_least > limits.max_request_line {
                return HeadOutcome::Reject(Status::URI_TOO_LONG);
            }
            // Never zero, as `input` is not empty: the next look skips the fast path.
            progress.scanned = window.len() as u32;
            return HeadOutcome::Partial;
        };
        let line = &input[..lf];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > limits.max_request_line {
            return HeadOutcome::Reject(Status::URI_TOO_LONG);
        }
        let mut request = Request::new(&mut []);
        if let Err(e) = request.parse_with_uninit_headers(examining(&input[..=lf]), &mut []) {
            return HeadOutcome::Reject(status_of(e, line));
        }
        progress.line_ok = true;
        progress.scanned = (lf + 1) as u32;
    }
    let window = &input[..input.len().min(limits.max_head)];
    let Some(len) = find_head_end(window, progress.scanned as usize) else {
        if input.len() >= limits.max_head {
            return HeadOutcome::Reject(Status::HEADER_FIELDS_TOO_LARGE);
        }
        progress.scanned = input.len() as u32;
        return HeadOutcome::Partial;
    };
    let mut request = Request::new(&mut []);
    match request.parse_with_uninit_headers(examining(&input[..len]), &mut headers) {
        Ok(httparse::Status::Complete(_)) => match analyse(request, limits) {
            Ok(head) => HeadOutcome::Complete(complete(len, head)),
            Err(status) => HeadOutcome::Reject(status),
        },
        // The empty line is there, so httparse cannot want more.
        Ok(httparse::Status::Partial) => HeadOutcome::Reject(Status::BAD_REQUEST),
        Err(e) => HeadOutcome::Reject(status_of(e, b"")),
    }
}

/// The length of the head (through the LF of its empty line), searching for
/// that LF from `from`; lines may end in CRLF or LF, as httparse accepts.
fn find_head_end(input: &[u8], from: usize) -> Option<usize> {
    examining(input.get(from..).unwrap_or_default());
    let mut i = from.max(1);
    while i < input.len() {
        if input[i] == b'\n'
            && (input[i - 1] == b'\n' || (i >= 2 && input[i - 1] == b'\r' && input[i - 2] == b'\n'))
        {
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

/// The status for an httparse error; `line` is the request line when known.
fn status_of(error: httparse::Error, line: &[u8]) -> Status {
    match error {
        httparse::Error::TooManyHeaders => Status::HEADER_FIELDS_TOO_LARGE,
        httparse::Error::Version if looks_like_http_version(line) => Status::VERSION_NOT_SUPPORTED,
        _ => Status::BAD_REQUEST,
    }
}

/// True if the request line ends in `HTTP/d.d`: a version we do not speak
/// (505) rather than garbage (400).
fn looks_like_http_version(line: &[u8]) -> bool {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(_method), Some(_target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    matches!(version, [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
        if major.is_ascii_digit() && minor.is_ascii_digit())
}

/// Split a header value into its comma-separated elements, trimmed of
/// optional whitespace; empty elements are skipped (RFC 9110 §5.6.1).
fn elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|e| e.trim_ascii())
        .filter(|e| !e.is_empty())
}

fn parse_content_length(value: &[u8], seen: &mut Option<u64>) -> Result<(), Status> {
    let mut any = false;
    for element in elements(value) {
        any = true;
        if !element.iter().all(u8::is_ascii_digit) {
            return Err(Status::BAD_REQUEST);
        }
        let mut n: u64 = 0;
        for &d in element {
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(d - b'0')))
                .ok_or(Status::BAD_REQUEST)?;
        }
        match *seen {
            Some(prev) if prev != n => return Err(Status::BAD_REQUEST),
            _ => *seen = Some(n),
        }
    }
    if any {
        Ok(())
    } else {
        Err(Status::BAD_REQUEST)
    }
}

/// Case-insensitive equality with `canonical`, trying the exact spelling
/// first: clients nearly always send it, and a fixed-length compare is a few
/// word compares where the ASCII-folding loop is byte by byte (it was a fifth
/// of `analyse` in `cargo bench -p iomux-proto --bench http`).
#[inline]
fn is<const N: usize>(name: &[u8], canonical: &[u8; N]) -> bool {
    match <&[u8; N]>::try_from(name) {
        Ok(name) => name == canonical || name.eq_ignore_ascii_case(canonical),
        Err(_) => false,
    }
}

/// Whether a Host value is `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 9112
/// §3.2; RFC 3986 §3.2.2-3.2.3): a reg-name or IPv4 address, or an IP
/// literal in brackets, then an optional port of digits. An empty value is
/// allowed (a request whose target has no authority sends one). One pass with
/// a table: a byte-set search per byte made it an eighth of a request's cost
/// in `cargo bench -p iomux-proto --bench http`.
fn is_valid_host(value: &[u8]) -> bool {
    if let [b'[', rest @ ..] = value {
        let Some(end) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        return is_ip_literal(&rest[..end]) && is_port_suffix(&rest[end + 1..]);
    }
    // reg-name = *( unreserved / pct-encoded / sub-delims ), which includes
    // every IPv4address.
    let mut i = 0;
    while i < value.len() {
        match value[i] {
            b if UNRESERVED_OR_SUB_DELIM[usize::from(b)] => i += 1,
            b'%' if value
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) =>
            {
                i += 3
            }
            b':' => return is_port_suffix(&value[i..]),
            _ => return false,
        }
    }
    true
}

/// Nothing, or `":" *DIGIT`.
fn is_port_suffix(rest: &[u8]) -> bool {
    match rest {
        [] => true,
        [b':', digits @ ..] => digits.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// RFC 3986 `unreserved / sub-delims`, by byte.
const UNRESERVED_OR_SUB_DELIM: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        i += 1;
    }
    table
};

/// The inside of RFC 3986 `IP-literal`: an IPv6 address, or `IPvFuture =
/// "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )`.
fn is_ip_literal(inside: &[u8]) -> bool {
    if let [b'v' | b'V', rest @ ..] = inside {
        let Some(dot) = rest.iter().position(|&b| b == b'.') else {
            return false;
        };
        let (version, address) = (&rest[..dot], &rest[dot + 1..]);
        return !version.is_empty()
            && version.iter().all(u8::is_ascii_hexdigit)
            && !address.is_empty()
            && address
                .iter()
                .all(|&b| b == b':' || UNRESERVED_OR_SUB_DELIM[usize::from(b)]);
    }
    std::str::from_utf8(inside).is_ok_and(|text| text.parse::<std::net::Ipv6Addr>().is_ok())
}

/// Apply the framing rules to a parsed head.
fn analyse<'h, 'b: 'h>(
    request: Request<'h, 'b>,
    limits: &HttpLimits,
) -> Result<RequestHead<'h>, Status> {
    if request.headers.len() > limits.max_headers {
        return Err(Status::HEADER_FIELDS_TOO_LARGE);
    }
    let http10 = request.version == Some(0);
    let mut hosts = 0u32;
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    // Transfer codings listed, and whether the last one is chunked.
    let (mut codings, mut chunked_last) = (0u32, false);
    let (mut close, mut keep_alive) = (false, false);
    let mut expect_continue = false;
    for header in request.headers.iter() {
        let value = header.value;
        // Dispatch on length first: most headers (Accept, User-Agent...) then
        // cost one comparison (measured: 31% of a request's CPU time before).
        let name = header.name.as_bytes();
        match name.len() {
            4 if is(name, b"Host") => {
                hosts += 1;
                if !is_valid_host(value.trim_ascii()) {
                    return Err(Status::BAD_REQUEST);
                }
            }
            6 if is(name, b"Expect") => {
                expect_continue |= value.trim_ascii().eq_ignore_ascii_case(b"100-continue")
            }
            10 if is(name, b"Connection") => {
                // The usual single option first, without splitting.
                if is(value, b"keep-alive") {
                    keep_alive = true;
                    continue;
                }
                for option in elements(value) {
                    close |= option.eq_ignore_ascii_case(b"close");
                    keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            14 if is(name, b"Content-Length") => parse_content_length(value, &mut content_length)?,
            17 if is(name, b"Transfer-Encoding") => {
                transfer_encoding = true;
                for coding in elements(value) {
                    codings += 1;
                    chunked_last = coding.eq_ignore_ascii_case(b"chunked");
                }
            }
            _ => {}
        }
    }
    if hosts > 1 || (hosts == 0 && !http10) {
        return Err(Status::BAD_REQUEST);
    }
    let framing = if transfer_encoding {
        // Both framings at once is how requests are smuggled (RFC 9112 §6.3).
        if content_length.is_some() || http10 {
            return Err(Status::BAD_REQUEST);
        }
        if codings == 0 {
            return Err(Status::BAD_REQUEST);
        }
        if codings != 1 || !chunked_last {
            return Err(Status::NOT_IMPLEMENTED);
        }
        Framing::Chunked
    } else {
        match content_length {
            None | Some(0) => Framing::Empty,
            Some(n)
                if limits.max_body != HttpLimits::NO_BODY_LIMIT
                    && n > u64::from(limits.max_body) =>
            {
                return Err(Status::CONTENT_TOO_LARGE)
            }
            Some(n) => Framing::Length(n),
        }
    };
    let keep_alive = if http10 { keep_alive && !close } else { !close };
    let mut flags = 0;
    for (on, f) in [
        (request.method == Some("HEAD"), tx::HEAD_ONLY),
        (http10, tx::HTTP10),
        (keep_alive, tx::KEEP_ALIVE),
        // A 1.0 client does not know 100-continue (RFC 9110 §10.1.1).
        (expect_continue && !http10, EXPECT_CONTINUE),
    ] {
        if on {
            flags |= f;
        }
    }
    let headers: &'h [Header<'h>] = request.headers;
    Ok(RequestHead {
        method: request.method.unwrap_or(""),
        target: request.path.unwrap_or(""),
        headers,
        framing,
        flags,
    })
}
