//! What the load client sends and how it counts what comes back: requests are
//! rendered once, responses are counted as they stream in without allocating
//! per response.

use std::fmt;

/// The protocol the load client speaks.
///
/// ```
/// assert_eq!("echo".parse::<iomux_lab::load::Proto>().unwrap(), iomux_lab::load::Proto::Echo);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// `GET /plaintext` keep-alive requests; responses framed by
    /// Content-Length or chunked encoding.
    Http,
    /// Messages of a fixed size, each expected back byte for byte.
    Echo,
}

impl std::str::FromStr for Proto {
    type Err = String;
    fn from_str(s: &str) -> Result<Proto, String> {
        match s {
            "http" => Ok(Proto::Http),
            "echo" => Ok(Proto::Echo),
            _ => Err(format!("unknown load protocol {s:?}; use http or echo")),
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Http => "http",
            Proto::Echo => "echo",
        })
    }
}

/// One request rendered `depth + 1` times back to back, so that any run of up
/// to `depth` requests starting at any byte of a request is one contiguous
/// slice: a connection sends all it owes in one write.
#[derive(Debug, Clone)]
pub(crate) struct Requests {
    bytes: Vec<u8>,
    len: usize,
}

impl Requests {
    /// HTTP `GET /plaintext` for `host`.
    pub(crate) fn http(host: &str, depth: usize) -> Requests {
        let one = format!("GET /plaintext HTTP/1.1\r\nHost: {host}\r\n\r\n");
        Requests::repeat(one.as_bytes(), depth)
    }

    /// An echo message of `size` bytes (printable, position-dependent, so a
    /// byte echoed out of place is noticed).
    pub(crate) fn echo(size: usize, depth: usize) -> Requests {
        let one: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
        Requests::repeat(&one, depth)
    }

    fn repeat(one: &[u8], depth: usize) -> Requests {
        Requests {
            bytes: one.repeat(depth + 1),
            len: one.len(),
        }
    }

    /// Bytes of one request.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// One request.
    pub(crate) fn one(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// The next bytes to send when `owed` bytes are due, starting `phase`
    /// bytes into a request (`phase < len`, `owed <= depth * len`).
    pub(crate) fn next(&self, phase: usize, owed: usize) -> &[u8] {
        let end = (phase + owed).min(self.bytes.len());
        &self.bytes[phase..end]
    }
}

/// Why a response stream was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProtocolError(pub(crate) String);

/// The longest response head (status line and headers) accepted.
const MAX_HEAD: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HttpState {
    Head,
    /// Body bytes still to skip.
    Body(u64),
    ChunkSize,
    /// Chunk bytes plus the CRLF after them still to skip.
    ChunkData(u64),
    Trailer,
}

/// Counts HTTP/1.1 responses in a byte stream: parses each head with
/// `httparse`, then skips the body by Content-Length or chunk sizes. Only an
/// incomplete head is copied (into a buffer reused for the connection's life).
///
/// ```text
/// let mut c = HttpCounter::default();
/// let mut codes = vec![];
/// c.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", |s| codes.push(s)).unwrap();
/// assert_eq!(codes, [200]);
/// ```
#[derive(Debug)]
pub(crate) struct HttpCounter {
    state: HttpState,
    status: u16,
    partial: Vec<u8>,
}

impl Default for HttpCounter {
    fn default() -> Self {
        HttpCounter {
            state: HttpState::Head,
            status: 0,
            partial: Vec::new(),
        }
    }
}

impl HttpCounter {
    /// Forget any half-received response (after a reconnect).
    pub(crate) fn reset(&mut self) {
        self.state = HttpState::Head;
        self.partial.clear();
    }

    /// Consume `data`, calling `done(status)` for every complete response.
    pub(crate) fn feed(
        &mut self,
        data: &[u8],
        mut done: impl FnMut(u16),
    ) -> Result<(), ProtocolError> {
        if self.partial.is_empty() {
            let used = self.parse(data, &mut done)?;
            self.keep(&data[used..])
        } else {
            let mut buf = std::mem::take(&mut self.partial);
            buf.extend_from_slice(data);
            let used = self.parse(&buf, &mut done);
            let result = used.and_then(|used| {
                buf.drain(..used);
                if buf.len() > MAX_HEAD {
                    return Err(too_long());
                }
                Ok(())
            });
            self.partial = buf;
            result
        }
    }

    fn keep(&mut self, rest: &[u8]) -> Result<(), ProtocolError> {
        if rest.len() > MAX_HEAD {
            return Err(too_long());
        }
        self.partial.extend_from_slice(rest);
        Ok(())
    }

    /// Parse as much of `buf` as is complete; returns the bytes consumed
    /// (the rest is an incomplete head, chunk-size line or trailer line).
    fn parse(&mut self, buf: &[u8], done: &mut impl FnMut(u16)) -> Result<usize, ProtocolError> {
        let mut at = 0;
        loop {
            let input = &buf[at..];
            match self.state {
                HttpState::Body(left) | HttpState::ChunkData(left) => {
                    let skip = left.min(input.len() as u64);
                    at += skip as usize;
                    let left = left - skip;
                    if left > 0 {
                        self.state = match self.state {
                            HttpState::Body(_) => HttpState::Body(left),
                            _ => HttpState::ChunkData(left),
                        };
                        return Ok(at);
                    }
                    if let HttpState::Body(_) = self.state {
                        self.state = HttpState::Head;
                        done(self.status);
                    } else {
                        self.state = HttpState::ChunkSize;
                    }
                }
                HttpState::Head => {
                    if input.is_empty() {
                        return Ok(at);
                    }
                    let mut headers = [httparse::EMPTY_HEADER; 32];
                    let mut response = httparse::Response::new(&mut headers);
                    match response.parse(input) {
                        Ok(httparse::Status::Complete(n)) => {
                            at += n;
                            let status = response.code.unwrap_or(0);
                            self.status = status;
                            self.state = body_framing(status, response.headers)?;
                            if self.state == HttpState::Body(0) {
                                self.state = HttpState::Head;
                                if status >= 200 {
                                    done(status);
                                }
                            }
                        }
                        Ok(httparse::Status::Partial) => return Ok(at),
                        Err(e) => {
                            return Err(ProtocolError(format!("malformed HTTP response: {e}")))
                        }
                    }
                }
                HttpState::ChunkSize => match httparse::parse_chunk_size(input) {
                    Ok(httparse::Status::Complete((n, 0))) => {
                        at += n;
                        self.state = HttpState::Trailer;
                    }
                    Ok(httparse::Status::Complete((n, size))) => {
                        at += n;
                        self.state = HttpState::ChunkData(size.saturating_add(2));
                    }
                    Ok(httparse::Status::Partial) => return Ok(at),
                    Err(_) => return Err(ProtocolError("malformed chunk size".into())),
                },
                HttpState::Trailer => match input.windows(2).position(|w| w == b"\r\n") {
                    Some(0) => {
                        at += 2;
                        self.state = HttpState::Head;
                        done(self.status);
                    }
                    Some(line) => at += line + 2,
                    None => return Ok(at),
                },
            }
        }
    }
}

fn too_long() -> ProtocolError {
    ProtocolError(format!("HTTP response head longer than {MAX_HEAD} bytes"))
}

/// How the body after a head is framed.
fn body_framing(status: u16, headers: &[httparse::Header]) -> Result<HttpState, ProtocolError> {
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(HttpState::Body(0));
    }
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            return std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(HttpState::Body)
                .ok_or_else(|| ProtocolError("invalid Content-Length in response".into()));
        }
        if h.name.eq_ignore_ascii_case("transfer-encoding")
            && h.value.eq_ignore_ascii_case(b"chunked")
        {
            return Ok(HttpState::ChunkSize);
        }
    }
    Err(ProtocolError(
        "HTTP response without Content-Length or chunked encoding (cannot count responses on a kept-alive connection)".into(),
    ))
}

/// Checks an echoed byte stream against the message sent and counts whole
/// messages.
#[derive(Debug, Default)]
pub(crate) struct EchoCounter {
    at: usize,
}

impl EchoCounter {
    pub(crate) fn reset(&mut self) {
        self.at = 0;
    }

    /// Consume `data`, calling `done(0)` for every complete message.
    pub(crate) fn feed(
        &mut self,
        message: &[u8],
        mut data: &[u8],
        mut done: impl FnMut(u16),
    ) -> Result<(), ProtocolError> {
        while !data.is_empty() {
            let n = (message.len() - self.at).min(data.len());
            if data[..n] != message[self.at..self.at + n] {
                return Err(ProtocolError(format!(
                    "echoed bytes differ from those sent (at byte {} of a message)",
                    self.at
                )));
            }
            self.at += n;
            data = &data[n..];
            if self.at == message.len() {
                self.at = 0;
                done(0);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_split(stream: &[u8], step: usize) -> Result<Vec<u16>, ProtocolError> {
        let mut c = HttpCounter::default();
        let mut codes = Vec::new();
        for chunk in stream.chunks(step) {
            c.feed(chunk, |s| codes.push(s))?;
        }
        Ok(codes)
    }

    #[test]
    fn counts_content_length_responses_split_anywhere() {
        let one = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nServer: x\r\n\r\nHello, World!";
        let stream: Vec<u8> = [
            &one[..],
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            one,
        ]
        .concat();
        for step in 1..stream.len() + 1 {
            assert_eq!(
                count_split(&stream, step).unwrap(),
                [200, 404, 200],
                "step {step}"
            );
        }
    }

    #[test]
    fn counts_chunked_responses_with_trailers() {
        let stream = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        for step in 1..stream.len() + 1 {
            assert_eq!(
                count_split(stream, step).unwrap(),
                [200, 201],
                "step {step}"
            );
        }
    }

    #[test]
    fn rejects_garbage_and_unframed_bodies() {
        assert!(count_split(b"HTTP/1.1 200 OK\r\n\r\n", 100).is_err());
        assert!(count_split(b"XTTP/1.1 200 OK\r\n\r\n", 100).is_err());
        assert!(count_split(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", 100).is_err());
        let endless = vec![b'a'; MAX_HEAD + 10];
        let mut head = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        head.extend(endless);
        assert!(count_split(&head, 1000).is_err());
    }

    #[test]
    fn echo_counts_messages_and_catches_wrong_bytes() {
        let req = Requests::echo(10, 3);
        let mut c = EchoCounter::default();
        let mut n = 0;
        for chunk in req.next(0, 30).chunks(7) {
            c.feed(req.one(), chunk, |_| n += 1).unwrap();
        }
        assert_eq!(n, 3);
        assert!(c.feed(req.one(), b"ab", |_| ()).is_ok());
        assert!(c.feed(req.one(), b"X", |_| ()).is_err());
    }

    #[test]
    fn requests_slice_from_any_phase() {
        let r = Requests::http("h", 4);
        let len = r.len();
        for phase in 0..len {
            let s = r.next(phase, 4 * len - phase);
            assert_eq!(s.len(), 4 * len - phase);
            assert_eq!(&s[len - phase..2 * len - phase], r.one());
        }
    }
}
