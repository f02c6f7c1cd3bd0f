//! Statuses and the pieces of a response head the core writes itself
//! (status line, `Server`, framing, `Date`, `Connection`), appended straight
//! into the connection's output buffer.

/// An HTTP status code: any three-digit code, with the reason phrase of the
/// standard ones (RFC 9110 §15) and none for the others.
///
/// ```
/// use iomux_proto::http::Status;
/// assert_eq!(Status::NOT_FOUND.code(), 404);
/// assert_eq!(Status::NOT_FOUND.reason(), "Not Found");
/// assert_eq!(Status::from_code(299).unwrap().reason(), "");
/// assert!(Status::from_code(1000).is_none());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Status(u16);

macro_rules! statuses {
    ($($name:ident = $code:literal $reason:literal;)*) => {
        impl Status {
            $(
                #[doc = concat!($code, " ", $reason, ".")]
                pub const $name: Status = Status($code);
            )*

            /// The reason phrase of a standard code; empty for others.
            pub fn reason(self) -> &'static str {
                match self.0 {
                    $($code => $reason,)*
                    _ => "",
                }
            }

            /// `HTTP/1.1 CODE REASON\r\n` for a standard code.
            fn standard_line(self) -> Option<&'static [u8]> {
                match self.0 {
                    $($code => Some(concat!("HTTP/1.1 ", $code, " ", $reason, "\r\n").as_bytes()),)*
                    _ => None,
                }
            }
        }
    };
}

statuses! {
    CONTINUE = 100 "Continue";
    SWITCHING_PROTOCOLS = 101 "Switching Protocols";
    OK = 200 "OK";
    CREATED = 201 "Created";
    ACCEPTED = 202 "Accepted";
    NON_AUTHORITATIVE_INFORMATION = 203 "Non-Authoritative Information";
    NO_CONTENT = 204 "No Content";
    RESET_CONTENT = 205 "Reset Content";
    PARTIAL_CONTENT = 206 "Partial Content";
    MULTIPLE_CHOICES = 300 "Multiple Choices";
    MOVED_PERMANENTLY = 301 "Moved Permanently";
    FOUND = 302 "Found";
    SEE_OTHER = 303 "See Other";
    NOT_MODIFIED = 304 "Not Modified";
    TEMPORARY_REDIRECT = 307 "Temporary Redirect";
    PERMANENT_REDIRECT = 308 "Permanent Redirect";
    BAD_REQUEST = 400 "Bad Request";
    UNAUTHORIZED = 401 "Unauthorized";
    PAYMENT_REQUIRED = 402 "Payment Required";
    FORBIDDEN = 403 "Forbidden";
    NOT_FOUND = 404 "Not Found";
    METHOD_NOT_ALLOWED = 405 "Method Not Allowed";
    NOT_ACCEPTABLE = 406 "Not Acceptable";
    PROXY_AUTHENTICATION_REQUIRED = 407 "Proxy Authentication Required";
    REQUEST_TIMEOUT = 408 "Request Timeout";
    CONFLICT = 409 "Conflict";
    GONE = 410 "Gone";
    LENGTH_REQUIRED = 411 "Length Required";
    PRECONDITION_FAILED = 412 "Precondition Failed";
    CONTENT_TOO_LARGE = 413 "Content Too Large";
    URI_TOO_LONG = 414 "URI Too Long";
    UNSUPPORTED_MEDIA_TYPE = 415 "Unsupported Media Type";
    RANGE_NOT_SATISFIABLE = 416 "Range Not Satisfiable";
    EXPECTATION_FAILED = 417 "Expectation Failed";
    MISDIRECTED_REQUEST = 421 "Misdirected Request";
    UNPROCESSABLE_CONTENT = 422 "Unprocessable Content";
    UPGRADE_REQUIRED = 426 "Upgrade Required";
    PRECONDITION_REQUIRED = 428 "Precondition Required";
    TOO_MANY_REQUESTS = 429 "Too Many Requests";
    HEADER_FIELDS_TOO_LARGE = 431 "Request Header Fields Too Large";
    INTERNAL_SERVER_ERROR = 500 "Internal Server Error";
    NOT_IMPLEMENTED = 501 "Not Implemented";
    BAD_GATEWAY = 502 "Bad Gateway";
    SERVICE_UNAVAILABLE = 503 "Service Unavailable";
    GATEWAY_TIMEOUT = 504 "Gateway Timeout";
    VERSION_NOT_SUPPORTED = 505 "HTTP Version Not Supported";
}

impl Status {
    /// The status with this code, if it has three digits (100 to 999).
    pub const fn from_code(code: u16) -> Option<Status> {
        if code >= 100 && code <= 999 {
            Some(Status(code))
        } else {
            None
        }
    }

    /// The numeric code.
    ///
    /// ```
    /// assert_eq!(iomux_proto::http::Status::URI_TOO_LONG.code(), 414);
    /// ```
    pub const fn code(self) -> u16 {
        self.0
    }

    /// Whether a response with this status never has a body: 1xx, 204 and
    /// 304 (RFC 9110 §6.4.1).
    pub const fn forbids_body(self) -> bool {
        self.0 < 200 || self.0 == 204 || self.0 == 304
    }

    /// Append `HTTP/1.1 CODE REASON\r\n`.
    pub(crate) fn write_line(self, out: &mut Vec<u8>) {
        match self.standard_line() {
            Some(line) => out.extend_from_slice(line),
            None => {
                let mut code = itoa::Buffer::new();
                out.extend_from_slice(b"HTTP/1.1 ");
                out.extend_from_slice(code.format(self.0).as_bytes());
                out.extend_from_slice(b" \r\n");
            }
        }
    }

    /// A short plain-text body for the statuses the core answers itself:
    /// what went wrong and what to do.
    pub(crate) fn explanation(self) -> &'static [u8] {
        match self {
            Status::BAD_REQUEST => b"Bad request: malformed HTTP/1.1 syntax or framing.\n",
            Status::NOT_FOUND => b"Not found: no resource at this path.\n",
            Status::METHOD_NOT_ALLOWED => b"Method not allowed: see the Allow header.\n",
            Status::REQUEST_TIMEOUT => b"Request timeout: send the whole request head sooner.\n",
            Status::CONTENT_TOO_LARGE => b"Content too large: send a smaller body.\n",
            Status::URI_TOO_LONG => b"URI too long: shorten the request line.\n",
            Status::HEADER_FIELDS_TOO_LARGE => {
                b"Header fields too large: send fewer or shorter headers.\n"
            }
            Status::NOT_IMPLEMENTED => {
                b"Not implemented: the only transfer coding supported is chunked.\n"
            }
            Status::VERSION_NOT_SUPPORTED => {
                b"HTTP version not supported: use HTTP/1.1 or HTTP/1.0.\n"
            }
            Status::INTERNAL_SERVER_ERROR => {
                b"Internal server error: the handler failed; the connection closes.\n"
            }
            _ => b"",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.0, self.reason())
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

impl Persist {
    pub(crate) fn header(self) -> &'static [u8] {
        match self {
            Persist::Default => b"",
            Persist::KeepAlive => b"Connection: keep-alive\r\n",
            Persist::Close => b"Connection: close\r\n",
        }
    }
}

/// Every response's first header, right after the status line.
pub(crate) const SERVER: &[u8] = b"Server: iomux\r\n";

/// `100 Continue`, sent before reading a body the client is waiting to send.
pub(crate) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Header names the core writes itself; a handler may not set them.
pub(crate) fn is_core_header(name: &[u8]) -> bool {
    const OWNED: [&[u8]; 5] = [
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"date",
        b"server",
    ];
    OWNED
        .iter()
        .any(|owned| owned.len() == name.len() && owned.eq_ignore_ascii_case(name))
}

/// RFC 9110 `token` bytes (header names).
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Bytes allowed in a field value: HTAB, SP, visible ASCII and obs-text;
/// never CR, LF or NUL (which would split or end the head).
pub(crate) fn is_value_byte(b: u8) -> bool {
    b == b'\t' || b >= b' ' && b != 0x7f
}
