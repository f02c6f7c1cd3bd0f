//! Incremental RESP2 request parser: multibulk (`*N\r\n$L\r\n...`) and inline
//! commands, with Redis's limits and its protocol error texts.
//!
//! The parser keeps its progress through the current command as offsets from
//! the command's first byte, so the caller may offer the same command again,
//! longer, on the next call (as an engine re-offers unconsumed input) without
//! any byte being parsed twice. Arguments are spans into the caller's buffer:
//! nothing is copied, except the arguments of an inline command that uses
//! quotes or escapes, which are unescaped into a scratch buffer.

use memchr::memchr;
use std::fmt;

/// The limits Redis enforces on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest bulk argument in bytes (Redis's `proto-max-bulk-len`).
    pub max_bulk: usize,
    /// Most arguments in one multibulk command.
    pub max_args: usize,
    /// Longest inline command line, and longest `*N` / `$N` header line,
    /// in bytes (Redis's `PROTO_INLINE_MAX_SIZE`).
    pub max_inline: usize,
}

impl Limits {
    /// Redis's defaults: 512 MiB bulks, 1,048,576 arguments, 64 KiB inline lines.
    pub const DEFAULT: Limits = Limits {
        max_bulk: 512 * 1024 * 1024,
        max_args: 1024 * 1024,
        max_inline: 64 * 1024,
    };
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::DEFAULT
    }
}

/// A malformed request. The reply is `-ERR ` followed by the `Display` text,
/// worded as Redis words it, and the connection closes after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// An inline line longer than [`Limits::max_inline`] without a newline.
    TooBigInline,
    /// An inline line with a quote that is never closed (or closed and not
    /// followed by a space).
    UnbalancedQuotes,
    /// A `*N` line longer than [`Limits::max_inline`] without `\r`.
    TooBigMultibulkCount,
    /// `*N` with N not an integer or above [`Limits::max_args`].
    InvalidMultibulkLength,
    /// A `$N` line longer than [`Limits::max_inline`] without `\r`.
    TooBigBulkCount,
    /// An argument header that does not start with `$` (the byte found).
    ExpectedDollar(u8),
    /// `$N` with N not an integer, negative, or above [`Limits::max_bulk`].
    InvalidBulkLength,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Protocol error: ")?;
        match self {
            ProtocolError::TooBigInline => f.write_str("too big inline request"),
            ProtocolError::UnbalancedQuotes => f.write_str("unbalanced quotes in request"),
            ProtocolError::TooBigMultibulkCount => f.write_str("too big mbulk count string"),
            ProtocolError::InvalidMultibulkLength => f.write_str("invalid multibulk length"),
            ProtocolError::TooBigBulkCount => f.write_str("too big bulk count string"),
            // Redis prints the byte as a C char; a CR or LF would break the
            // reply line, and Redis turns those into spaces.
            ProtocolError::ExpectedDollar(b) => {
                let shown = if *b == b'\r' || *b == b'\n' {
                    ' '
                } else {
                    *b as char
                };
                write!(f, "expected '$', got '{shown}'")
            }
            ProtocolError::InvalidBulkLength => f.write_str("invalid bulk length"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// What [`Parser::parse`] found at the start of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A whole command of this many bytes; its arguments are in
    /// [`Parser::args`] until the next call.
    Command(usize),
    /// This many bytes that hold no command (an empty line, `*0`, `*-1`):
    /// skip them.
    Nothing(usize),
    /// The command is not complete: offer the same bytes again with more after them.
    Incomplete,
    /// Malformed input: answer the error and close.
    Error(ProtocolError),
}

/// Where the parser stands inside the current, incomplete command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing parsed of the current command yet.
    Start,
    /// Some bytes of a command seen, nothing kept: it starts over next time
    /// (an incomplete inline line or `*N` line, both short).
    Seen,
    /// Inside a multibulk command: `left` arguments still to read, parsing
    /// resumes at offset `at`; `bulk` is the length of the argument whose
    /// header has been read.
    Multibulk {
        left: usize,
        at: usize,
        bulk: Option<usize>,
    },
}

/// An incremental RESP2 request parser for one connection.
#[derive(Debug, Clone)]
pub struct Parser {
    limits: Limits,
    state: State,
    /// Argument spans `(start, end)` into the command's bytes, or into
    /// `scratch` when `in_scratch`.
    spans: Vec<(usize, usize)>,
    scratch: Vec<u8>,
    in_scratch: bool,
}

/// The arguments of the command [`Parser::parse`] last returned.
#[derive(Debug, Clone, Copy)]
pub struct Args<'a> {
    bytes: &'a [u8],
    spans: &'a [(usize, usize)],
}

impl<'a> Args<'a> {
    /// How many arguments, the command name included.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True when there are none (never for a parsed command).
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Argument `i` (0 is the command name).
    pub fn get(&self, i: usize) -> &'a [u8] {
        let (start, end) = self.spans[i];
        &self.bytes[start..end]
    }

    /// Every argument, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + 'a {
        let bytes = self.bytes;
        self.spans.iter().map(move |&(s, e)| &bytes[s..e])
    }
}

/// Most spans a parser keeps allocated between commands: a connection that
/// once sent a million-argument MSET does not keep 16 MiB of spans idle.
const KEEP_SPANS: usize = 64;

/// Most bytes of unescaped inline arguments a parser keeps allocated between commands.
const KEEP_SCRATCH: usize = 1024;

impl Parser {
    /// A parser enforcing `limits`.
    pub fn new(limits: Limits) -> Parser {
        Parser {
            limits,
            state: State::Start,
            spans: Vec::new(),
            scratch: Vec::new(),
            in_scratch: false,
        }
    }

    /// The limits this parser enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// True when no command is partly parsed.
    pub fn is_idle(&self) -> bool {
        self.state == State::Start
    }

    /// Parse the command that starts at `buf[0]`. After
    /// [`Parsed::Incomplete`], the next call must pass the same bytes
    /// followed by more; after any other result, bytes from the next command on.
    pub fn parse(&mut self, buf: &[u8]) -> Parsed {
        if matches!(self.state, State::Start | State::Seen) {
            self.state = State::Start;
            if self.spans.capacity() > KEEP_SPANS {
                self.spans = Vec::new();
            }
            if self.scratch.capacity() > KEEP_SCRATCH {
                self.scratch = Vec::new();
            }
            self.spans.clear();
            self.in_scratch = false;
            match buf.first() {
                None => return Parsed::Incomplete,
                Some(b'*') => {}
                Some(_) => return self.seen_if_incomplete(Parser::parse_inline, buf),
            }
        }
        self.seen_if_incomplete(Parser::parse_multibulk, buf)
    }

    fn seen_if_incomplete(
        &mut self,
        parse: fn(&mut Parser, &[u8]) -> Parsed,
        buf: &[u8],
    ) -> Parsed {
        let parsed = parse(self, buf);
        if parsed == Parsed::Incomplete && self.state == State::Start {
            self.state = State::Seen;
        }
        parsed
    }

    /// The arguments of the command just returned as [`Parsed::Command`];
    /// `buf` is the buffer that was passed to [`Parser::parse`].
    pub fn args<'a>(&'a self, buf: &'a [u8]) -> Args<'a> {
        Args {
            bytes: if self.in_scratch { &self.scratch } else { buf },
            spans: &self.spans,
        }
    }

    fn parse_multibulk(&mut self, buf: &[u8]) -> Parsed {
        let max_inline = self.limits.max_inline;
        let (mut left, mut at, mut bulk) = match self.state {
            State::Multibulk { left, at, bulk } => (left, at, bulk),
            State::Start | State::Seen => {
                let Some(cr) = memchr(b'\r', &buf[1..]).map(|i| i + 1) else {
                    return if buf.len() > max_inline {
                        Parsed::Error(ProtocolError::TooBigMultibulkCount)
                    } else {
                        Parsed::Incomplete
                    };
                };
                // Redis waits for the byte after '\r' and skips it unchecked.
                if cr + 1 >= buf.len() {
                    return Parsed::Incomplete;
                }
                let count = match parse_i64(&buf[1..cr]) {
                    Some(n) if n <= self.limits.max_args as i64 => n,
                    _ => return Parsed::Error(ProtocolError::InvalidMultibulkLength),
                };
                if count <= 0 {
                    return Parsed::Nothing(cr + 2);
                }
                (count as usize, cr + 2, None)
            }
        };
        loop {
            let len = match bulk {
                Some(len) => len,
                None => {
                    let Some(&first) = buf.get(at) else {
                        break;
                    };
                    let Some(cr) = memchr(b'\r', &buf[at..]).map(|i| at + i) else {
                        if buf.len() - at > max_inline {
                            return self.fail(ProtocolError::TooBigBulkCount);
                        }
                        break;
                    };
                    if first != b'$' {
                        return self.fail(ProtocolError::ExpectedDollar(first));
                    }
                    if cr + 1 >= buf.len() {
                        break;
                    }
                    let len = match parse_i64(&buf[at + 1..cr]) {
                        Some(n) if n >= 0 && n as u64 <= self.limits.max_bulk as u64 => n as usize,
                        _ => return self.fail(ProtocolError::InvalidBulkLength),
                    };
                    at = cr + 2;
                    bulk = Some(len);
                    len
                }
            };
            // The argument and the two bytes after it (CRLF, skipped unchecked as Redis does).
            if buf.len() - at < len + 2 {
                break;
            }
            self.spans.push((at, at + len));
            at += len + 2;
            bulk = None;
            left -= 1;
            if left == 0 {
                self.state = State::Start;
                return Parsed::Command(at);
            }
        }
        self.state = State::Multibulk { left, at, bulk };
        Parsed::Incomplete
    }

    fn fail(&mut self, error: ProtocolError) -> Parsed {
        self.state = State::Start;
        Parsed::Error(error)
    }

    fn parse_inline(&mut self, buf: &[u8]) -> Parsed {
        let Some(nl) = memchr(b'\n', buf) else {
            return if buf.len() > self.limits.max_inline {
                Parsed::Error(ProtocolError::TooBigInline)
            } else {
                Parsed::Incomplete
            };
        };
        let mut line = &buf[..nl];
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        // Redis splits the line as a C string: a NUL byte ends it.
        if let Some(nul) = memchr(0, line) {
            line = &line[..nul];
        }
        let quoted = line.iter().any(|&b| b == b'"' || b == b'\'');
        let parsed = if quoted {
            self.in_scratch = true;
            split_quoted(line, &mut self.scratch, &mut self.spans)
        } else {
            split_plain(line, &mut self.spans);
            Ok(())
        };
        match parsed {
            Err(e) => Parsed::Error(e),
            Ok(()) if self.spans.is_empty() => Parsed::Nothing(nl + 1),
            Ok(()) => Parsed::Command(nl + 1),
        }
    }
}

/// Bytes that separate inline arguments outside quotes (C's `isspace`).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Split a line without quotes on whitespace: spans into the line itself.
fn split_plain(line: &[u8], spans: &mut Vec<(usize, usize)>) {
    let mut i = 0;
    while i < line.len() {
        while i < line.len() && is_space(line[i]) {
            i += 1;
        }
        let start = i;
        while i < line.len() && !is_space(line[i]) {
            i += 1;
        }
        if i > start {
            spans.push((start, i));
        }
    }
}

/// Split a line the way Redis's `sdssplitargs` does: double quotes with C
/// escapes (`\n`, `\xHH`, ...), single quotes with `\'`; a closing quote
/// must be followed by a space or the end. Unescaped arguments go to `scratch`.
fn split_quoted(
    line: &[u8],
    scratch: &mut Vec<u8>,
    spans: &mut Vec<(usize, usize)>,
) -> Result<(), ProtocolError> {
    scratch.clear();
    let mut i = 0;
    loop {
        while i < line.len() && is_space(line[i]) {
            i += 1;
        }
        if i == line.len() {
            return Ok(());
        }
        let start = scratch.len();
        let (mut in_double, mut in_single) = (false, false);
        loop {
            let c = line.get(i).copied();
            if in_double {
                match c {
                    None => return Err(ProtocolError::UnbalancedQuotes),
                    Some(b'\\')
                        if line.get(i + 1) == Some(&b'x') && hex_pair(line, i + 2).is_some() =>
                    {
                        scratch.extend(hex_pair(line, i + 2));
                        i += 3;
                    }
                    Some(b'\\') if i + 1 < line.len() => {
                        i += 1;
                        scratch.push(match line[i] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                    }
                    Some(b'"') => {
                        if line.get(i + 1).is_some_and(|&n| !is_space(n)) {
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                        in_double = false;
                        i += 1;
                        break;
                    }
                    Some(b) => scratch.push(b),
                }
            } else if in_single {
                match c {
                    None => return Err(ProtocolError::UnbalancedQuotes),
                    Some(b'\\') if line.get(i + 1) == Some(&b'\'') => {
                        i += 1;
                        scratch.push(b'\'');
                    }
                    Some(b'\'') => {
                        if line.get(i + 1).is_some_and(|&n| !is_space(n)) {
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                        in_single = false;
                        i += 1;
                        break;
                    }
                    Some(b) => scratch.push(b),
                }
            } else {
                match c {
                    None | Some(b' ' | b'\n' | b'\r' | b'\t') => break,
                    Some(b'"') => in_double = true,
                    Some(b'\'') => in_single = true,
                    Some(b) => scratch.push(b),
                }
            }
            i += 1;
        }
        debug_assert!(!in_double && !in_single);
        spans.push((start, scratch.len()));
    }
}

/// The byte written as two hex digits at `line[at..at + 2]`.
fn hex_pair(line: &[u8], at: usize) -> Option<u8> {
    let digits = line.get(at..at + 2)?;
    let high = (digits[0] as char).to_digit(16)?;
    let low = (digits[1] as char).to_digit(16)?;
    Some((high * 16 + low) as u8)
}

/// A signed 64-bit integer written exactly as Redis's `string2ll` accepts it:
/// an optional `-`, digits, no leading zeros (except `0` itself), no `+`, no
/// spaces, no overflow.
pub fn parse_i64(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    match digits {
        [] => return None,
        [b'0'] if !negative => return Some(0),
        [b'1'..=b'9', ..] => {}
        _ => return None,
    }
    let mut magnitude: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        magnitude = magnitude
            .checked_mul(10)?
            .checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        // i64::MIN's magnitude is one more than i64::MAX.
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}
