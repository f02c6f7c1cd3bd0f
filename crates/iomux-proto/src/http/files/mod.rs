//! Static files: what `iomux serve --root DIR` answers, as a handler a user
//! could have written on the public HTTP API.
//!
//! [`StaticFiles::respond`] turns a request (method, path, the fields that
//! matter) into a [`FileResponse`]: a status, headers, and a body that is
//! bytes (error pages, listings, multipart delimiters) or ranges of an open
//! file, which the connection core sends without copying them through user
//! space. Everything about a file's bytes reaching the socket is the core's;
//! everything about which bytes and which headers is here:
//!
//! - the path is decoded once and normalized ([`path`]); anything that
//!   could leave the root is `400` before the filesystem is asked;
//! - files are opened beneath the root by the kernel ([`open`]), through a
//!   bounded, revalidated open-file cache;
//! - conditional fields are evaluated in RFC 9110 §13.2.2's order
//!   ([`validators`]), then `Range` ([`range`]);
//! - a precompressed sibling is chosen by `Accept-Encoding` ([`encoding`]);
//! - a directory is its `index.html`, a listing ([`listing`]) or `404`.

mod bell;
pub mod encoding;
mod handler;
pub mod listing;
pub mod open;
pub mod path;
pub mod range;
pub mod validators;
mod watch;

use crate::http::PreparedHeaders;
use encoding::{acceptable_codings, Coding};
use open::{Kind, KnownVariant, Lookup, OpenError, OpenFileCache, Opened, Root};
use path::{resolve_path, PathError, TargetPath};
use range::{multipart_pieces, plan_ranges, ByteRange, Piece, RangeRequest};
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use validators::{Conditionals, Precondition, Validators};

/// Files up to this size are read into the open-file cache with their
/// metadata and answered from memory (one write for head and body), larger
/// ones are sent from the file (sendfile). Without the cache every file is
/// sent from the file: reading it for one response would only add a copy.
pub const MAX_IN_MEMORY: u64 = 8 * 1024;

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

/// `value` as a `Cache-Control` field value, without the spaces and tabs
/// around it; an error (`InvalidInput`, saying what a value may hold) when
/// nothing is left or it holds anything but printable ASCII, spaces and
/// tabs (a CR or LF would end the header). [`StaticFiles::new`] checks
/// [`StaticOptions::cache_control`] with it; a caller may check a value
/// earlier, as it is given.
///
/// ```
/// use iomux_proto::http::files::cache_control_value;
/// assert_eq!(cache_control_value(" max-age=60\t").unwrap(), "max-age=60");
/// assert!(cache_control_value(" ").is_err());
/// assert!(cache_control_value("max-age=1\r\nX: y").is_err());
/// ```
pub fn cache_control_value(value: &str) -> std::io::Result<&str> {
    let trimmed = value.trim_matches([' ', '\t']);
    let printable = value
        .bytes()
        .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic());
    if trimmed.is_empty() || !printable {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "Cache-Control value {value:?}: give printable ASCII on one line, not empty \
                 (a header value)"
            ),
        ));
    }
    Ok(trimmed)
}

/// The parts of a request a static-file response depends on.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileRequest<'a> {
    /// The method (`GET` and `HEAD` are served, others `405`).
    pub method: &'a [u8],
    /// The path as the HTTP core split it from the target
    /// ([`Request::path`](crate::http::Request::path): still encoded, an
    /// absolute-form target's authority gone).
    pub path: &'a str,
    /// The query, without its `?` ([`Request::query`](crate::http::Request::query)).
    pub query: Option<&'a str>,
    /// `If-Match`, `If-None-Match`, `If-Modified-Since`,
    /// `If-Unmodified-Since`, `If-Range`.
    pub conditionals: Conditionals<'a>,
    /// `Range`.
    pub range: Option<&'a [u8]>,
    /// `Accept-Encoding`.
    pub accept_encoding: Option<&'a [u8]>,
}

/// A regular file as it is served, derived once per (inode, size, time) and
/// kept with the file in the open-file cache.
#[derive(Debug)]
pub struct Representation {
    file: Arc<File>,
    size: u64,
    validators: Validators,
    last_modified: [u8; 29],
    /// From the requested name (a precompressed sibling has its original's).
    content_type: String,
    coding: Option<Coding>,
    /// The whole content of a file of at most [`MAX_IN_MEMORY`] bytes, when
    /// the representation is kept in the open-file cache.
    bytes: Option<Arc<[u8]>>,
    /// The header fields of a `200` of the whole file, rendered once (what
    /// [`FileResponse::headers`] lists for it), when the representation is
    /// kept: for one response, writing them one by one is cheaper.
    headers: Option<PreparedHeaders>,
}

impl Representation {
    fn new(
        opened: &Opened,
        content_type: String,
        coding: Option<Coding>,
        kept: bool,
        cache_control: Option<&str>,
    ) -> Representation {
        let meta = opened.meta;
        let validators = Validators::of_file(meta.ino, meta.size, meta.mtime_secs, meta.mtime_nsec);
        let bytes = (kept && meta.size <= MAX_IN_MEMORY)
            .then(|| read_whole(&opened.file, meta.size))
            .flatten();
        let last_modified = validators.last_modified();
        let headers = kept.then(|| {
            PreparedHeaders::new(entity_headers(
                content_type.as_bytes(),
                &validators.etag,
                &last_modified,
                cache_control,
                coding,
            ))
        });
        Representation {
            file: opened.file.clone(),
            size: meta.size,
            last_modified,
            validators,
            content_type,
            coding,
            bytes,
            headers,
        }
    }
}

/// All `size` bytes of `file`, or `None` if it does not hold exactly that
/// many now (it changed meanwhile: it is then sent from the file).
fn read_whole(file: &File, size: u64) -> Option<Arc<[u8]>> {
    // One byte more than its size, to see that it has no more: a read of a
    // regular file that comes back short has reached its end (one call,
    // where waiting for a read of 0 made two).
    let mut buf = vec![0u8; size as usize + 1];
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => {
                n += k;
                if n < buf.len() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    (n as u64 == size).then(|| Arc::from(&buf[..n]))
}

/// The fields of a `200` of a whole file, in [`FileResponse::headers`]'s
/// order.
fn entity_headers<'a>(
    content_type: &'a [u8],
    etag: &'a str,
    last_modified: &'a [u8],
    cache_control: Option<&'a str>,
    coding: Option<Coding>,
) -> impl Iterator<Item = (&'static str, &'a [u8])> {
    [
        Some(("Content-Type", content_type)),
        Some(("ETag", etag.as_bytes())),
        Some(("Last-Modified", last_modified)),
        cache_control.map(|v| ("Cache-Control", v.as_bytes())),
        Some(("Vary", &b"Accept-Encoding"[..])),
        Some(("Accept-Ranges", &b"bytes"[..])),
        coding.map(|c| ("Content-Encoding", c.token().as_bytes())),
    ]
    .into_iter()
    .flatten()
}

/// What a static-file request is answered with.
#[derive(Debug)]
pub struct FileResponse {
    /// The status code.
    pub status: u16,
    /// The file's representation, for the headers it brings (`ETag`,
    /// `Last-Modified`, `Vary`, `Cache-Control`, and for `200`/`206` its
    /// `Content-Type`, `Content-Encoding`, `Accept-Ranges`).
    rep: Option<Arc<Representation>>,
    cache_control: Option<Arc<str>>,
    content_type: ContentType,
    /// Per-response headers (`Location`, `Allow`, `Content-Range`).
    extra: Vec<(&'static str, String)>,
    /// The body (sent for `GET`; for `HEAD` only its length is announced).
    pub body: FileBody,
}

/// A [`FileResponse`] about a representation, before the representation
/// is put in it.
struct FileAnswer {
    status: u16,
    content_type: ContentType,
    extra: Vec<(&'static str, String)>,
    body: FileBody,
}

#[derive(Debug)]
enum ContentType {
    None,
    Text,
    Html,
    /// The representation's.
    File,
    Multipart(String),
}

impl FileResponse {
    /// The header fields besides those the HTTP core writes itself (`Date`,
    /// `Server`, `Content-Length`, `Connection`), in order.
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, &[u8])> + '_ {
        let rep = self.rep.as_deref();
        let entity = matches!(self.status, 200 | 206);
        let content_type: Option<&[u8]> = match &self.content_type {
            ContentType::None => None,
            ContentType::Text => Some(b"text/plain; charset=utf-8"),
            ContentType::Html => Some(b"text/html; charset=utf-8"),
            ContentType::File => rep.map(|r| r.content_type.as_bytes()),
            ContentType::Multipart(v) => Some(v.as_bytes()),
        };
        let fixed: [Option<(&'static str, &[u8])>; 8] = [
            content_type.map(|v| ("Content-Type", v)),
            rep.map(|r| ("ETag", r.validators.etag.as_bytes())),
            rep.map(|r| ("Last-Modified", &r.last_modified[..])),
            rep.and(self.cache_control.as_deref())
                .map(|v| ("Cache-Control", v.as_bytes())),
            rep.map(|_| ("Vary", &b"Accept-Encoding"[..])),
            rep.filter(|_| entity)
                .map(|_| ("Accept-Ranges", &b"bytes"[..])),
            rep.filter(|_| entity)
                .and_then(|r| r.coding)
                .map(|c| ("Content-Encoding", c.token().as_bytes())),
            None,
        ];
        fixed
            .into_iter()
            .flatten()
            .chain(self.extra.iter().map(|(n, v)| (*n, v.as_bytes())))
    }

    /// The same fields as [`headers`](Self::headers), rendered once with the
    /// file, when this is a `200` of a whole file (the common answer).
    pub fn prepared_headers(&self) -> Option<&PreparedHeaders> {
        let whole_file = self.status == 200
            && self.extra.is_empty()
            && matches!(self.content_type, ContentType::File);
        self.rep
            .as_deref()
            .filter(|_| whole_file)
            .and_then(|r| r.headers.as_ref())
    }

    /// The value of header `name` (ASCII case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

/// A response body.
#[derive(Debug)]
pub enum FileBody {
    /// No body at all (`304`): no `Content-Length` either.
    Empty,
    /// Bytes made for this response: an error page, a listing, the
    /// multipart body of a small file.
    Bytes(Vec<u8>),
    /// A range of a small file's content held in memory.
    Shared {
        /// The whole content.
        bytes: Arc<[u8]>,
        /// Which bytes.
        range: ByteRange,
    },
    /// A range of an open file.
    File {
        /// The file, shared with the open-file cache.
        file: Arc<File>,
        /// Which bytes.
        range: ByteRange,
    },
    /// `multipart/byteranges` of a large file: delimiters as bytes, parts
    /// from `file`.
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
            FileBody::Shared { range, .. } | FileBody::File { range, .. } => range.len(),
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
    cache_control: Option<Arc<str>>,
    cache: OpenFileCache<Representation>,
    clock: fn() -> u64,
    boundary_keys: std::collections::hash_map::RandomState,
}

impl StaticFiles {
    /// Serve the directory `root` with `options`. Fails (naming the path)
    /// when `root` is not a directory that can be opened, or when
    /// `options.cache_control` is no header value ([`cache_control_value`]).
    pub fn new(root: &Path, options: StaticOptions) -> std::io::Result<StaticFiles> {
        let cache_control = match &options.cache_control {
            Some(value) => Some(Arc::from(cache_control_value(value)?)),
            None => None,
        };
        Ok(StaticFiles {
            root: Root::open(root)?,
            cache: OpenFileCache::new(options.open_file_cache),
            cache_control,
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
                return error(405, "only GET and HEAD are served here\n")
                    .with("Allow", "GET, HEAD".into())
            }
        };
        let target = match resolve_path(req.path, req.query, self.options.hidden) {
            Ok(t) => t,
            Err(PathError::BadRequest) => return error(400, "malformed or forbidden path\n"),
            Err(PathError::Hidden) => return not_found(),
        };
        if target.trailing_slash {
            return self.directory(req, head, &target);
        }
        match self.lookup(&target.relative, None) {
            Ok(Lookup::File(rep)) => self.file(req, head, &target.relative, rep),
            Ok(Lookup::Directory(_)) => {
                let mut location = target.url_path(true);
                if let Some(q) = &target.query {
                    location.push('?');
                    location.push_str(q);
                }
                error(301, "moved: the directory's URL ends with /\n").with("Location", location)
            }
            Err(e) => open_failed(e),
        }
    }

    /// `relative` through the cache; `coding` names a precompressed sibling
    /// (`relative` then ends with its suffix).
    fn lookup(
        &self,
        relative: &str,
        coding: Option<Coding>,
    ) -> Result<Lookup<Representation>, OpenError> {
        let key = cache_key(relative, coding);
        self.cache
            .open_as(&self.root, relative, &key, |opened, kept| {
                let name =
                    coding.map_or(relative, |c| &relative[..relative.len() - c.suffix().len()]);
                Representation::new(
                    opened,
                    content_type(name),
                    coding,
                    kept,
                    self.cache_control.as_deref(),
                )
            })
    }

    fn directory(&self, req: &FileRequest<'_>, head: bool, target: &TargetPath) -> FileResponse {
        let index = if target.relative.is_empty() {
            "index.html".to_owned()
        } else {
            format!("{}/index.html", target.relative)
        };
        match self.lookup(&index, None) {
            Ok(Lookup::File(rep)) => return self.file(req, head, &index, rep),
            Ok(Lookup::Directory(_)) | Err(OpenError::NotFound) => {}
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
            Ok((entries, more)) => FileResponse {
                content_type: ContentType::Html,
                body: FileBody::Bytes(listing::render(&target.relative, &entries, more)),
                ..error(200, "")
            },
            Err(e) => open_failed(OpenError::Io(e)),
        }
    }

    /// Serve the regular file `relative` (or a precompressed sibling).
    fn file(
        &self,
        req: &FileRequest<'_>,
        head: bool,
        relative: &str,
        identity: Arc<Representation>,
    ) -> FileResponse {
        let rep = self.precompressed(req, relative).unwrap_or(identity);
        // Worked out on a borrow, then the `Arc` moves into the response:
        // each clone of it is an atomic add and, when dropped, a subtract
        // (about 2% of a 64 KiB request's user time each, by `perf`).
        match self.file_answer(req, head, &rep) {
            Ok(answer) => FileResponse {
                status: answer.status,
                rep: Some(rep),
                cache_control: self.cache_control.clone(),
                content_type: answer.content_type,
                extra: answer.extra,
                body: answer.body,
            },
            Err(unrelated) => unrelated,
        }
    }

    /// What `rep` answers to `req`; `Err` is a response that is not about
    /// the representation (`416`).
    fn file_answer(
        &self,
        req: &FileRequest<'_>,
        head: bool,
        rep: &Representation,
    ) -> Result<FileAnswer, FileResponse> {
        let mut r = FileAnswer {
            status: 200,
            content_type: ContentType::File,
            extra: Vec::new(),
            body: FileBody::Empty,
        };
        // The time matters only to an `If-Range` date (a clock read saved
        // on every other request).
        let now = match req.conditionals.if_range {
            Some(_) => (self.clock)() as i64,
            None => 0,
        };
        let honor_range = match rep.validators.evaluate(&req.conditionals, true, now) {
            Precondition::NotModified => {
                r.status = 304;
                r.content_type = ContentType::None;
                return Ok(r);
            }
            Precondition::Failed => {
                r.status = 412;
                r.content_type = ContentType::Text;
                r.body = FileBody::Bytes(b"a precondition of the request failed\n".to_vec());
                return Ok(r);
            }
            Precondition::Proceed { honor_range } => honor_range,
        };
        let size = rep.size;
        // RFC 9110 §14.2: range handling is defined for GET only.
        let plan = match req.range.filter(|_| honor_range && !head) {
            Some(value) => plan_ranges(value, size),
            None => RangeRequest::Full,
        };
        let body = |range: ByteRange| match &rep.bytes {
            Some(bytes) => FileBody::Shared {
                bytes: bytes.clone(),
                range,
            },
            None => FileBody::File {
                file: rep.file.clone(),
                range,
            },
        };
        match plan {
            RangeRequest::Full => {
                r.body = body(ByteRange {
                    start: 0,
                    end: size,
                })
            }
            RangeRequest::Unsatisfiable => {
                return Err(error(416, "the requested range is not satisfiable\n")
                    .with("Content-Range", format!("bytes */{size}")));
            }
            RangeRequest::Partial(ranges) if ranges.len() == 1 => {
                r.status = 206;
                r.extra
                    .push(("Content-Range", ranges[0].content_range(size)));
                r.body = body(ranges[0]);
            }
            RangeRequest::Partial(ranges) => {
                let boundary = self.boundary(&rep.validators.etag);
                let pieces = multipart_pieces(&boundary, &rep.content_type, size, &ranges);
                r.status = 206;
                r.content_type =
                    ContentType::Multipart(format!("multipart/byteranges; boundary={boundary}"));
                r.body = match &rep.bytes {
                    Some(bytes) => FileBody::Bytes(
                        pieces
                            .iter()
                            .flat_map(|p| match p {
                                Piece::Bytes(b) => b.as_slice(),
                                Piece::File(range) => {
                                    &bytes[range.start as usize..range.end as usize]
                                }
                            })
                            .copied()
                            .collect(),
                    ),
                    None => FileBody::Multipart {
                        file: rep.file.clone(),
                        pieces,
                    },
                };
            }
        }
        Ok(r)
    }

    /// The best precompressed sibling `Accept-Encoding` allows, if any exists.
    ///
    /// Browsers accept `br`, `zstd` and `gzip` on every request, and most
    /// files have no sibling: what the search found, a sibling or none, is
    /// noted with the file and not searched for again until something on
    /// the way changes (without that, three failed opens per request cost
    /// a 1 KiB request 1.32x the server CPU, a 64 KiB one 1.20x: docs/static.md).
    fn precompressed(&self, req: &FileRequest<'_>, relative: &str) -> Option<Arc<Representation>> {
        let codings = acceptable_codings(req.accept_encoding?);
        let mut indexes = [0u8; Coding::ALL.len()];
        for (slot, coding) in indexes.iter_mut().zip(&codings) {
            *slot = coding.index();
        }
        let mut rest = &indexes[..codings.len().min(indexes.len())];
        let mut codings_present = None;
        loop {
            let (index, generation) = match self.cache.known_variant(relative, rest) {
                KnownVariant::Found(rep) => return Some(rep),
                KnownVariant::None => return None,
                KnownVariant::LookFor { index, generation } => (index, generation),
            };
            // A file the cache does not hold has nothing to note the answer
            // with: its directory's names say which siblings may exist.
            if generation.is_none()
                && codings_present
                    .get_or_insert_with(|| self.codings_in_directory(relative))
                    .is_some_and(|present| present & (1 << index) == 0)
            {
                rest = after(rest, index);
                continue;
            }
            let coding = Coding::ALL[usize::from(index)];
            let sibling = format!("{relative}{}", coding.suffix());
            let found = match self.lookup(&sibling, Some(coding)) {
                Ok(Lookup::File(rep)) => Some(rep),
                Err(OpenError::NotFound) => None,
                // Not noted: looked for again next time.
                Ok(Lookup::Directory(_)) | Err(_) => {
                    rest = after(rest, index);
                    continue;
                }
            };
            if let Some(generation) = generation {
                let key = cache_key(&sibling, Some(coding));
                let key = found.as_ref().map(|_| &*key);
                self.cache
                    .note_variant(&self.root, relative, index, key, &sibling, generation);
            }
            if found.is_some() {
                return found;
            }
            rest = after(rest, index);
        }
    }

    /// The codings of the siblings in the directory of `relative` (a mask
    /// by coding index: some name in it ends in that coding's suffix), read
    /// once per change in the directories on its way; `None` where that
    /// cannot be known (see [`OpenFileCache::directory_mask`]; or over
    /// [`MAX_SCANNED_NAMES`] names).
    fn codings_in_directory(&self, relative: &str) -> Option<u8> {
        self.cache
            .directory_mask(&self.root, relative, codings_named)
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

/// Names read from a directory at most, to say which siblings it has: a
/// larger one is not remembered (its files are looked for by name).
const MAX_SCANNED_NAMES: usize = 10_000;

/// Which codings' suffixes end some name in the directory `dir`.
fn codings_named(dir: std::os::fd::BorrowedFd<'_>) -> Option<u8> {
    let mut present = 0u8;
    for (read, entry) in rustix::fs::Dir::read_from(dir).ok()?.enumerate() {
        if read == MAX_SCANNED_NAMES {
            return None;
        }
        let entry = entry.ok()?;
        let name = entry.file_name().to_bytes();
        for coding in Coding::ALL {
            if name.ends_with(coding.suffix().as_bytes()) {
                present |= 1 << coding.index();
            }
        }
    }
    Some(present)
}

/// The open-file cache's key for `relative`, sent as `coding` or as itself.
fn cache_key(relative: &str, coding: Option<Coding>) -> std::borrow::Cow<'_, str> {
    // A sibling sent as an encoding is another representation than the
    // same file asked for by name (its type, `Content-Encoding`): cached
    // apart, under a key no path can be (paths hold no NUL).
    match coding {
        None => relative.into(),
        Some(c) => format!("\0{}\0{relative}", c.token()).into(),
    }
}

/// What is left of `indexes` after `index`.
fn after(indexes: &[u8], index: u8) -> &[u8] {
    let at = indexes.iter().position(|&i| i == index);
    &indexes[at.map_or(indexes.len(), |at| at + 1)..]
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

impl FileResponse {
    fn with(mut self, name: &'static str, value: String) -> FileResponse {
        self.extra.push((name, value));
        self
    }
}

fn error(status: u16, text: &str) -> FileResponse {
    FileResponse {
        status,
        rep: None,
        cache_control: None,
        content_type: ContentType::Text,
        extra: Vec::new(),
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
