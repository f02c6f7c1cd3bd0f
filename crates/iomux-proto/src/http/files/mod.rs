//! Static files: what `iomux serve --root DIR` answers, as a handler a user
//! could have written on the public HTTP API.
//!
//! [`StaticFiles::respond`] turns a request (method, target, the fields that
//! matter) into a [`FileResponse`]: a status, headers, and a body that is
//! bytes (error pages, listings, multipart delimiters) or ranges of an open
//! file, which the connection core sends without copying them through user
//! space. Everything about a file's bytes reaching the socket is the core's;
//! everything about which bytes and which headers is here:
//!
//! - the target is decoded once and normalized ([`path`]); anything that
//!   could leave the root is `400` before the filesystem is asked;
//! - files are opened beneath the root by the kernel ([`open`]), through a
//!   bounded, revalidated open-file cache;
//! - conditional fields are evaluated in RFC 9110 §13.2.2's order
//!   ([`validators`]), then `Range` ([`range`]);
//! - a precompressed sibling is chosen by `Accept-Encoding` ([`encoding`]);
//! - a directory is its `index.html`, a listing ([`listing`]) or `404`.

pub mod encoding;
pub mod listing;
pub mod open;
pub mod path;
pub mod range;
pub mod validators;

use encoding::{acceptable_codings, Coding};
use open::{Kind, OpenError, OpenFileCache, Opened, Root};
use path::{resolve_target, PathError, TargetPath};
use range::{multipart_pieces, plan_ranges, ByteRange, Piece, RangeRequest};
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::sync::Arc;
use validators::{Conditionals, Precondition, Validators};

/// How a directory is served.
#[derive(Debug, Clone, Default)]
pub struct StaticOptions {
    /// List a directory that has no `index.html` (else `404`).
    pub list: bool,
    /// Serve names starting with `.` (else `404`).
    pub hidden: bool,
    /// A `Cache-Control` value for file responses.
    pub cache_control: Option<String>,
    /// Open files kept by the open-file cache (0: none; every request opens
    /// its file).
    pub open_file_cache: usize,
}

impl StaticOptions {
    /// The default size of the open-file cache.
    pub const DEFAULT_OPEN_FILE_CACHE: usize = 1000;
}

/// The parts of a request a static-file response depends on.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileRequest<'a> {
    /// The method (`GET` and `HEAD` are served, others `405`).
    pub method: &'a [u8],
    /// The request target as received.
    pub target: &'a [u8],
    /// `If-Match`, `If-None-Match`, `If-Modified-Since`,
    /// `If-Unmodified-Since`, `If-Range`.
    pub conditionals: Conditionals<'a>,
    /// `Range`.
    pub range: Option<&'a [u8]>,
    /// `Accept-Encoding`.
    pub accept_encoding: Option<&'a [u8]>,
}

/// What a static-file request is answered with.
#[derive(Debug)]
pub struct FileResponse {
    /// The status code.
    pub status: u16,
    /// Header fields besides those the HTTP core writes itself (`Date`,
    /// `Server`, `Content-Length`, `Connection`).
    pub headers: Vec<(&'static str, String)>,
    /// The body (sent for `GET`; for `HEAD` only its length is announced).
    pub body: FileBody,
}

/// A response body.
#[derive(Debug)]
pub enum FileBody {
    /// No body at all (`304`): no `Content-Length` either.
    Empty,
    /// Bytes: an error page or a listing.
    Bytes(Vec<u8>),
    /// A range of an open file.
    File {
        /// The file, shared with the open-file cache.
        file: Arc<File>,
        /// Which bytes.
        range: ByteRange,
    },
    /// `multipart/byteranges`: delimiters as bytes, parts from `file`.
    Multipart {
        /// The file the parts come from.
        file: Arc<File>,
        /// The pieces in order.
        pieces: Vec<Piece>,
    },
}

impl FileBody {
    /// How many bytes the body holds (the `Content-Length`).
    pub fn len(&self) -> u64 {
        match self {
            FileBody::Empty => 0,
            FileBody::Bytes(b) => b.len() as u64,
            FileBody::File { range, .. } => range.len(),
            FileBody::Multipart { pieces, .. } => range::pieces_len(pieces),
        }
    }

    /// True when it holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A directory served over HTTP.
#[derive(Debug)]
pub struct StaticFiles {
    root: Root,
    options: StaticOptions,
    cache: OpenFileCache,
    clock: fn() -> u64,
    boundary_keys: std::collections::hash_map::RandomState,
}

impl StaticFiles {
    /// Serve the directory `root` with `options`. Fails (naming the path)
    /// when `root` is not a directory that can be opened.
    pub fn new(root: &Path, options: StaticOptions) -> std::io::Result<StaticFiles> {
        Ok(StaticFiles {
            root: Root::open(root)?,
            cache: OpenFileCache::new(options.open_file_cache),
            options,
            clock: crate::http::system_clock,
            boundary_keys: Default::default(),
        })
    }

    /// Use `clock` (seconds since the epoch) for "now" (tests).
    pub fn with_clock(mut self, clock: fn() -> u64) -> StaticFiles {
        self.clock = clock;
        self
    }

    /// Open beneath the root component by component with `O_NOFOLLOW`, as
    /// on kernels without openat2 (tests of that path).
    pub fn without_openat2(mut self) -> StaticFiles {
        self.root = self.root.without_openat2();
        self
    }

    /// The open-file cache's (hits, misses).
    pub fn cache_counts(&self) -> (u64, u64) {
        self.cache.counts()
    }

    /// Answer `req`.
    pub fn respond(&self, req: &FileRequest<'_>) -> FileResponse {
        let head = match req.method {
            b"GET" => false,
            b"HEAD" => true,
            _ => {
                let mut r = error(405, "only GET and HEAD are served here\n");
                r.headers.push(("Allow", "GET, HEAD".into()));
                return r;
            }
        };
        let target = match resolve_target(req.target, self.options.hidden) {
            Ok(t) => t,
            Err(PathError::BadRequest) => return error(400, "malformed or forbidden path\n"),
            Err(PathError::Hidden) => return not_found(),
        };
        if target.trailing_slash {
            return self.directory(req, head, &target);
        }
        let opened = match self.cache.open(&self.root, &target.relative) {
            Ok(o) => o,
            Err(e) => return open_failed(e),
        };
        match opened.meta.kind {
            Kind::Directory => {
                let mut location = target.url_path(true);
                if let Some(q) = &target.query {
                    location.push('?');
                    location.push_str(q);
                }
                let mut r = error(301, "moved: the directory's URL ends with /\n");
                r.headers.push(("Location", location));
                r
            }
            Kind::Regular => self.file(req, head, &target.relative, opened),
        }
    }

    fn directory(&self, req: &FileRequest<'_>, head: bool, target: &TargetPath) -> FileResponse {
        let index = if target.relative.is_empty() {
            "index.html".to_owned()
        } else {
            format!("{}/index.html", target.relative)
        };
        match self.cache.open(&self.root, &index) {
            Ok(o) if o.meta.kind == Kind::Regular => return self.file(req, head, &index, o),
            Ok(_) | Err(OpenError::NotFound) => {}
            Err(e) => return open_failed(e),
        }
        let dir = match self.root.open_beneath(&target.relative) {
            Ok(o) if o.meta.kind == Kind::Directory => o,
            Ok(_) => return not_found(),
            Err(e) => return open_failed(e),
        };
        if !self.options.list {
            return not_found();
        }
        match listing::read_entries(&*dir.file, self.options.hidden) {
            Ok((entries, more)) => {
                let page = listing::render(&target.relative, &entries, more);
                FileResponse {
                    status: 200,
                    headers: vec![("Content-Type", "text/html; charset=utf-8".into())],
                    body: FileBody::Bytes(page),
                }
            }
            Err(e) => open_failed(OpenError::Io(e)),
        }
    }

    /// Serve the regular file `relative` (or a precompressed sibling).
    fn file(
        &self,
        req: &FileRequest<'_>,
        head: bool,
        relative: &str,
        identity: Opened,
    ) -> FileResponse {
        let content_type = content_type(relative);
        let (opened, coding) = self
            .precompressed(req, relative)
            .unwrap_or((identity, None));
        let meta = opened.meta;
        let validators = Validators::of_file(meta.ino, meta.size, meta.mtime_secs, meta.mtime_nsec);
        let mut headers: Vec<(&'static str, String)> = Vec::with_capacity(8);
        headers.push(("ETag", validators.etag.clone()));
        headers.push((
            "Last-Modified",
            String::from_utf8_lossy(&validators.last_modified()).into_owned(),
        ));
        if let Some(cc) = &self.options.cache_control {
            headers.push(("Cache-Control", cc.clone()));
        }
        headers.push(("Vary", "Accept-Encoding".into()));
        let now = (self.clock)() as i64;
        let honor_range = match validators.evaluate(&req.conditionals, true, now) {
            Precondition::NotModified => {
                return FileResponse {
                    status: 304,
                    headers,
                    body: FileBody::Empty,
                };
            }
            Precondition::Failed => {
                let mut r = error(412, "a precondition of the request failed\n");
                r.headers.extend(headers);
                return r;
            }
            Precondition::Proceed { honor_range } => honor_range,
        };
        headers.push(("Accept-Ranges", "bytes".into()));
        if let Some(coding) = coding {
            headers.push(("Content-Encoding", coding.token().into()));
        }
        let size = meta.size;
        let whole = ByteRange {
            start: 0,
            end: size,
        };
        // RFC 9110 §14.2: range handling is defined for GET only.
        let plan = match req.range.filter(|_| honor_range && !head) {
            Some(value) => plan_ranges(value, size),
            None => RangeRequest::Full,
        };
        let file = opened.file;
        match plan {
            RangeRequest::Full => {
                headers.push(("Content-Type", content_type));
                FileResponse {
                    status: 200,
                    headers,
                    body: FileBody::File { file, range: whole },
                }
            }
            RangeRequest::Unsatisfiable => {
                let mut r = error(416, "the requested range is not satisfiable\n");
                r.headers.push(("Content-Range", format!("bytes */{size}")));
                r
            }
            RangeRequest::Partial(ranges) if ranges.len() == 1 => {
                headers.push(("Content-Type", content_type));
                headers.push(("Content-Range", ranges[0].content_range(size)));
                FileResponse {
                    status: 206,
                    headers,
                    body: FileBody::File {
                        file,
                        range: ranges[0],
                    },
                }
            }
            RangeRequest::Partial(ranges) => {
                let boundary = self.boundary(&validators.etag);
                let pieces = multipart_pieces(&boundary, &content_type, size, &ranges);
                headers.push((
                    "Content-Type",
                    format!("multipart/byteranges; boundary={boundary}"),
                ));
                FileResponse {
                    status: 206,
                    headers,
                    body: FileBody::Multipart { file, pieces },
                }
            }
        }
    }

    /// The best precompressed sibling `Accept-Encoding` allows, if any exists.
    fn precompressed(
        &self,
        req: &FileRequest<'_>,
        relative: &str,
    ) -> Option<(Opened, Option<Coding>)> {
        for coding in acceptable_codings(req.accept_encoding?) {
            let sibling = format!("{relative}{}", coding.suffix());
            if let Ok(o) = self.cache.open(&self.root, &sibling) {
                if o.meta.kind == Kind::Regular {
                    return Some((o, Some(coding)));
                }
            }
        }
        None
    }

    /// A multipart boundary: 128 random-keyed bits, so that no file's
    /// content can be made to contain it.
    fn boundary(&self, etag: &str) -> String {
        let mut a = self.boundary_keys.build_hasher();
        a.write(etag.as_bytes());
        let first = a.finish();
        let mut b = self.boundary_keys.build_hasher();
        b.write_u64(first);
        b.write_u64((self.clock)());
        format!("{first:016x}{:016x}", b.finish())
    }
}

/// `Content-Type` from the extension; text types say UTF-8.
pub fn content_type(relative: &str) -> String {
    let ext = relative
        .rsplit('/')
        .next()
        .and_then(|name| name.rsplit_once('.'))
        .map(|(_, e)| e);
    let mime = ext
        .and_then(|e| mime_guess::from_ext(e).first_raw())
        .unwrap_or("application/octet-stream");
    if mime.starts_with("text/") || mime == "application/javascript" {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_owned()
    }
}

fn error(status: u16, text: &str) -> FileResponse {
    FileResponse {
        status,
        headers: vec![("Content-Type", "text/plain; charset=utf-8".into())],
        body: FileBody::Bytes(text.as_bytes().to_vec()),
    }
}

fn not_found() -> FileResponse {
    error(404, "not found\n")
}

fn open_failed(e: OpenError) -> FileResponse {
    match e {
        OpenError::NotFound => not_found(),
        OpenError::Forbidden => error(
            403,
            "forbidden: not a regular file or directory beneath the root\n",
        ),
        OpenError::Io(_) => error(500, "the file could not be opened\n"),
    }
}

#[cfg(test)]
mod tests;
