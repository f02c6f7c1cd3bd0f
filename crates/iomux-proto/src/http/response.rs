//! Response assembly: static header pieces, the cached date and the body
//! length appended straight into the engine's output buffer.

use super::date::DATE_LEN;

/// The statuses this server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 200 OK.
    Ok,
    /// 400 Bad Request: malformed syntax or framing.
    BadRequest,
    /// 404 Not Found: unknown path.
    NotFound,
    /// 405 Method Not Allowed: known path, other method.
    MethodNotAllowed,
    /// 408 Request Timeout: the head (or body) did not arrive in time.
    RequestTimeout,
    /// 413 Content Too Large: body over the limit.
    ContentTooLarge,
    /// 414 URI Too Long: request line over the limit.
    UriTooLong,
    /// 431 Request Header Fields Too Large: head, header count or trailers over the limit.
    HeaderFieldsTooLarge,
    /// 501 Not Implemented: a transfer coding other than chunked.
    NotImplemented,
    /// 505 HTTP Version Not Supported.
    VersionNotSupported,
}

impl Status {
    /// The numeric code.
    ///
    /// ```
    /// assert_eq!(iomux_proto::http::Status::UriTooLong.code(), 414);
    /// ```
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::RequestTimeout => 408,
            Status::ContentTooLarge => 413,
            Status::UriTooLong => 414,
            Status::HeaderFieldsTooLarge => 431,
            Status::NotImplemented => 501,
            Status::VersionNotSupported => 505,
        }
    }

    fn status_line(self) -> &'static [u8] {
        match self {
            Status::Ok => b"HTTP/1.1 200 OK\r\n",
            Status::BadRequest => b"HTTP/1.1 400 Bad Request\r\n",
            Status::NotFound => b"HTTP/1.1 404 Not Found\r\n",
            Status::MethodNotAllowed => b"HTTP/1.1 405 Method Not Allowed\r\n",
            Status::RequestTimeout => b"HTTP/1.1 408 Request Timeout\r\n",
            Status::ContentTooLarge => b"HTTP/1.1 413 Content Too Large\r\n",
            Status::UriTooLong => b"HTTP/1.1 414 URI Too Long\r\n",
            Status::HeaderFieldsTooLarge => b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
            Status::NotImplemented => b"HTTP/1.1 501 Not Implemented\r\n",
            Status::VersionNotSupported => b"HTTP/1.1 505 HTTP Version Not Supported\r\n",
        }
    }

    /// A short plain-text body saying what went wrong and what to do.
    pub(crate) fn explanation(self) -> &'static [u8] {
        match self {
            Status::Ok => b"",
            Status::BadRequest => b"Bad request: malformed HTTP/1.1 syntax or framing.\n",
            Status::NotFound => b"Not found: this server serves /, /plaintext and /echo.\n",
            Status::MethodNotAllowed => b"Method not allowed: see the Allow header.\n",
            Status::RequestTimeout => b"Request timeout: send the whole request head sooner.\n",
            Status::ContentTooLarge => b"Content too large: send a smaller body (see --max-body).\n",
            Status::UriTooLong => b"URI too long: shorten the request line (see --max-request-line).\n",
            Status::HeaderFieldsTooLarge => {
                b"Header fields too large: send fewer or shorter headers (see --max-head, --max-headers).\n"
            }
            Status::NotImplemented => {
                b"Not implemented: the only transfer coding supported is chunked.\n"
            }
            Status::VersionNotSupported => b"HTTP version not supported: use HTTP/1.1 or HTTP/1.0.\n",
        }
    }
}

/// What the `Connection` header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Persist {
    /// HTTP/1.1 keep-alive: no header needed.
    Default,
    /// HTTP/1.0 keep-alive: say so.
    KeepAlive,
    /// The connection closes after this response.
    Close,
}

const SERVER_AND_TYPE: &[u8] = b"Server: iomux\r\nContent-Type: text/plain\r\nContent-Length: ";

/// One response to append.
pub(crate) struct Response<'a> {
    pub status: Status,
    pub persist: Persist,
    /// Extra header lines, each ending in CRLF (e.g. `Allow`).
    pub extra: &'a [u8],
    /// The body length announced in `Content-Length`.
    pub content_length: u64,
    /// Body bytes to append now (empty for HEAD or when the body streams later).
    pub body: &'a [u8],
}

impl Response<'_> {
    /// Append the status line, headers and `body` to `out`.
    pub(crate) fn write(&self, date: &[u8; DATE_LEN], out: &mut Vec<u8>) {
        let mut length = itoa::Buffer::new();
        let length = length.format(self.content_length).as_bytes();
        let status = self.status.status_line();
        let connection: &[u8] = match self.persist {
            Persist::Default => b"",
            Persist::KeepAlive => b"Connection: keep-alive\r\n",
            Persist::Close => b"Connection: close\r\n",
        };
        out.reserve(
            status.len()
                + SERVER_AND_TYPE.len()
                + length.len()
                + 8
                + DATE_LEN
                + 4
                + connection.len()
                + self.extra.len()
                + self.body.len(),
        );
        out.extend_from_slice(status);
        out.extend_from_slice(SERVER_AND_TYPE);
        out.extend_from_slice(length);
        out.extend_from_slice(b"\r\nDate: ");
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(connection);
        out.extend_from_slice(self.extra);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(self.body);
    }
}

/// `100 Continue`, sent before reading a body the client is waiting to send.
pub(crate) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
