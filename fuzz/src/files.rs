//! The `files` target's fixed tree and the checks of a static-file answer.
//!
//! The tree is built once per process in a temporary directory: a root the
//! handler serves and, beside it, a canary file and a directory that no
//! answer may ever show a byte or a name of. Every regular file under the
//! root has a size no other has, so an answer's size names the file it
//! must come from, and its bytes can be compared with that file's.

use iomux_proto::http::files::{StaticFiles, StaticOptions};
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The canary's content: outside the root, never in a body. The NULs keep
/// it out of every page the handler writes itself.
pub const CANARY: &[u8] = b"\0CANARY:outside-the-root\0";
/// The name of a file in a directory beside the root: a listing of that
/// directory (reached through a link) would show it.
pub const OUTSIDE_NAME: &str = "outside-secret-name.txt";
/// A name the listing must escape (`<`, `&`, `"`).
const ESCAPED_NAME: &str = "b<c>&d\".txt";

/// Statuses [`StaticFiles`] answers with (500 only when a file cannot be
/// opened for a reason the tree never gives: not expected here).
pub const HANDLER_STATUSES: &[u16] = &[200, 206, 301, 304, 400, 403, 404, 405, 412, 416];

/// The tree's directory in the temporary directory: this, then the PID.
const TREE_PREFIX: &str = "iomux-fuzz-files-";

/// libFuzzer ends a process by `exit`, which drops nothing: remove the
/// trees whose process is gone.
fn remove_trees_of_ended_processes() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name.to_str().and_then(|n| n.strip_prefix(TREE_PREFIX));
        if pid.is_some_and(|pid| !Path::new("/proc").join(pid).exists()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The fixed tree.
pub struct Site {
    /// The served directory, canonical (what `/proc/self/fd` links show).
    pub root: PathBuf,
    /// Regular files under the root by size: (relative name, content).
    by_size: HashMap<u64, (&'static str, Vec<u8>)>,
    /// The handlers, by [`Site::files`]'s option bits.
    handlers: Vec<StaticFiles>,
}

/// A file's content: its name repeated, `len` bytes.
fn content(name: &str, len: usize) -> Vec<u8> {
    let pattern = format!("{name}#");
    pattern.bytes().cycle().take(len).collect()
}

/// Regular files under the root (relative name, size; sizes all differ).
/// `large.bin` and `sub/edge.bin` are over the in-memory limit (8 KiB):
/// sent as file regions; `sub/deeper/file.txt` is exactly at it.
const FILES: &[(&str, usize)] = &[
    ("index.html", 55),
    ("empty.txt", 0),
    ("small.txt", 100),
    ("page.html", 37),
    ("large.bin", 20_000),
    ("large.bin.gz", 9_000),
    ("app.js", 300),
    ("app.js.br", 11),
    ("app.js.gz", 13),
    ("app.js.zst", 17),
    ("doc.txt", 44),
    ("sub/index.html", 21),
    ("sub/deeper/file.txt", 8192),
    ("sub/edge.bin", 8193),
    ("noindex/a.txt", 5),
    ("noindex/.dot", 9),
    (".hidden", 7),
    (".hiddendir/x.txt", 8),
];

impl Site {
    /// The tree, built on first use.
    pub fn get() -> &'static Site {
        static SITE: OnceLock<Site> = OnceLock::new();
        SITE.get_or_init(Site::build)
    }

    fn build() -> Site {
        remove_trees_of_ended_processes();
        let dir = std::env::temp_dir().join(format!("{TREE_PREFIX}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let root = dir.join("root");
        for sub in ["sub/deeper", "noindex", ".hiddendir"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::create_dir_all(dir.join("outside")).unwrap();
        std::fs::write(dir.join("canary"), CANARY).unwrap();
        std::fs::write(dir.join("outside").join(OUTSIDE_NAME), CANARY).unwrap();
        let mut by_size = HashMap::new();
        let escaped = (ESCAPED_NAME, 6);
        for &(name, len) in FILES.iter().chain([&escaped]) {
            let path = if name == ESCAPED_NAME {
                root.join("noindex").join(name)
            } else {
                root.join(name)
            };
            let bytes = content(name, len);
            std::fs::write(path, &bytes).unwrap();
            let clash = by_size.insert(len as u64, (name, bytes));
            assert!(clash.is_none(), "two files of {len} bytes in the tree");
        }
        assert!(!by_size.contains_key(&(CANARY.len() as u64)));
        let canary = dir.join("canary");
        let links: &[(&str, &Path)] = &[
            ("link-in", Path::new("small.txt")),
            ("link-sub", Path::new("sub")),
            ("sub/link-up", Path::new("../page.html")),
            ("escape-rel", Path::new("../canary")),
            ("escape-abs", &canary),
            ("escape-dir", Path::new("../outside")),
            ("sub/escape-up", Path::new("../../canary")),
            ("loop", Path::new("loop")),
            ("dangling", Path::new("nothing-here")),
        ];
        for (name, target) in links {
            std::os::unix::fs::symlink(target, root.join(name)).unwrap();
        }
        for fifo in ["pipe", "doc.txt.gz"] {
            rustix::fs::mkfifoat(
                rustix::fs::CWD,
                root.join(fifo),
                rustix::fs::Mode::from_raw_mode(0o644),
            )
            .unwrap();
        }
        let handlers = (0..16u8)
            .map(|bits| {
                let options = StaticOptions {
                    list: bits & 1 != 0,
                    hidden: bits & 2 != 0,
                    cache_control: None,
                    open_file_cache: if bits & 4 != 0 { 8 } else { 0 },
                };
                let files = StaticFiles::new(&root, options)
                    .unwrap()
                    .with_clock(|| 1_800_000_000);
                if bits & 8 != 0 {
                    files.without_openat2()
                } else {
                    files
                }
            })
            .collect();
        Site {
            root: root.canonicalize().unwrap(),
            by_size,
            handlers,
        }
    }

    /// The handler for option bits `bits`: 1 `list`, 2 `hidden`, 4 an
    /// open-file cache, 8 the `O_NOFOLLOW` walk instead of openat2.
    pub fn files(&self, bits: u8) -> &StaticFiles {
        &self.handlers[usize::from(bits & 15)]
    }

    /// The file of `size` bytes under the root, if any.
    fn file_of_size(&self, size: u64) -> Option<&(&'static str, Vec<u8>)> {
        self.by_size.get(&size)
    }

    /// Panic unless `fd` is open on a path under the root.
    pub fn check_descriptor(&self, fd: &impl AsRawFd) {
        let path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        assert!(
            path.starts_with(&self.root),
            "a file region of {path:?}, outside the root {:?}",
            self.root
        );
    }
}

/// One answer as a client sees it.
pub struct Answer<'a> {
    /// The status code.
    pub status: u16,
    /// Header fields, names in lower case.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, `None` when the request was `HEAD`.
    pub body: Option<&'a [u8]>,
    /// The announced body length (`Content-Length`), if any.
    pub length: Option<u64>,
}

impl Answer<'_> {
    /// The value of `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    fn text(&self, name: &str) -> Option<&str> {
        self.header(name).map(|v| std::str::from_utf8(v).unwrap())
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `bytes A-B/SIZE` as (A, B, SIZE).
fn content_range(value: &str) -> (u64, u64, u64) {
    let parsed = value.strip_prefix("bytes ").and_then(|v| {
        let (span, size) = v.split_once('/')?;
        let (a, b) = span.split_once('-')?;
        Some((a.parse().ok()?, b.parse().ok()?, size.parse().ok()?))
    });
    parsed.unwrap_or_else(|| panic!("a malformed Content-Range {value:?}"))
}

/// Panic unless `answer` is one the handler may give for the tree under
/// `options` (bits as in [`Site::files`]).
pub fn check_answer(site: &Site, options: u8, answer: &Answer<'_>) {
    let status = answer.status;
    assert!(HANDLER_STATUSES.contains(&status), "status {status}");
    if let Some(body) = answer.body {
        assert!(!contains(body, CANARY), "the canary's bytes in a body");
        assert!(
            !contains(body, OUTSIDE_NAME.as_bytes()),
            "a name from outside the root in a body"
        );
        if status != 304 {
            assert_eq!(answer.length, Some(body.len() as u64), "Content-Length");
        }
    }
    let length = answer.length.unwrap_or(0);
    match status {
        200 if answer.header("etag").is_some() => {
            let (name, bytes) = site
                .file_of_size(length)
                .unwrap_or_else(|| panic!("a 200 of {length} bytes: no such file in the root"));
            if let Some(body) = answer.body {
                assert_eq!(body, &bytes[..], "a 200's body is not {name}'s content");
            }
            if let Some(coding) = answer.text("content-encoding") {
                let suffix = match coding {
                    "br" => ".br",
                    "zstd" => ".zst",
                    "gzip" => ".gz",
                    other => panic!("Content-Encoding {other:?}"),
                };
                assert!(name.ends_with(suffix), "{name} sent as {coding}");
            }
            hidden_only_if_allowed(options, name);
        }
        200 => {
            // A listing.
            assert!(options & 1 != 0, "a 200 without ETag while listing is off");
            assert_eq!(
                answer.text("content-type"),
                Some("text/html; charset=utf-8")
            );
            if let Some(body) = answer.body {
                assert!(!contains(body, b"<c>"), "a name not escaped in a listing");
                if options & 2 == 0 {
                    assert!(!contains(body, b">.dot<"), "a hidden name listed");
                }
            }
        }
        206 => {
            let content_type = answer.text("content-type").unwrap_or("");
            if let Some(boundary) = content_type.strip_prefix("multipart/byteranges; boundary=") {
                if let Some(body) = answer.body {
                    check_multipart(site, options, boundary, body);
                }
            } else {
                let (first, last, size) = content_range(
                    answer
                        .text("content-range")
                        .expect("a 206 without Content-Range"),
                );
                assert!(
                    first <= last && last < size,
                    "Content-Range {first}-{last}/{size}"
                );
                assert_eq!(length, last - first + 1, "a 206's length");
                let (name, bytes) = site
                    .file_of_size(size)
                    .expect("a 206 of no file in the root");
                hidden_only_if_allowed(options, name);
                if let Some(body) = answer.body {
                    assert_eq!(
                        body,
                        &bytes[first as usize..=last as usize],
                        "{name}'s bytes"
                    );
                }
            }
        }
        304 => {
            assert!(
                answer.body.is_none_or(<[u8]>::is_empty),
                "a 304 with a body"
            );
            assert!(answer.header("etag").is_some(), "a 304 without ETag");
        }
        416 => {
            let value = answer
                .text("content-range")
                .expect("a 416 without Content-Range");
            let size: u64 = value
                .strip_prefix("bytes */")
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("a 416's Content-Range {value:?}"));
            assert!(
                site.file_of_size(size).is_some(),
                "a 416 for no file in the root"
            );
        }
        301 => {
            let location = answer.text("location").expect("a 301 without Location");
            let path = location.split('?').next().unwrap();
            assert!(
                path.starts_with('/') && !path.starts_with("//") && path.ends_with('/'),
                "Location {location:?}"
            );
        }
        405 => assert_eq!(answer.text("allow"), Some("GET, HEAD")),
        _ => {}
    }
}

/// A hidden file only with `hidden` on.
fn hidden_only_if_allowed(options: u8, name: &str) {
    if options & 2 == 0 {
        assert!(
            !name.split('/').any(|c| c.starts_with('.')),
            "{name} served with hidden names off"
        );
    }
}

/// Panic unless `body` is a `multipart/byteranges` body (RFC 9110 §14.6)
/// of two or more ascending, disjoint parts of one file under the root.
fn check_multipart(site: &Site, options: u8, boundary: &str, body: &[u8]) {
    let delimiter = format!("\r\n--{boundary}");
    let mut rest = body;
    let mut parts = 0;
    let mut next_free = 0;
    let mut file_size = None;
    loop {
        rest = rest
            .strip_prefix(delimiter.as_bytes())
            .expect("a part not opened by the boundary");
        if rest == b"--\r\n" {
            break;
        }
        rest = rest.strip_prefix(b"\r\n").expect("a delimiter line's end");
        let end = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a part's head");
        let head = std::str::from_utf8(&rest[..end]).unwrap();
        rest = &rest[end + 4..];
        let range = head
            .split("\r\n")
            .find_map(|line| line.strip_prefix("Content-Range: "))
            .expect("a part without Content-Range");
        let (first, last, size) = content_range(range);
        assert!(first <= last && last < size, "a part's range {range:?}");
        assert!(
            parts == 0 || first >= next_free,
            "parts out of order or overlapping"
        );
        assert!(*file_size.get_or_insert(size) == size, "parts of two sizes");
        let (name, bytes) = site
            .file_of_size(size)
            .expect("a part of no file in the root");
        hidden_only_if_allowed(options, name);
        let len = (last - first + 1) as usize;
        assert!(rest.len() >= len, "a part cut short");
        assert_eq!(&rest[..len], &bytes[first as usize..=last as usize]);
        rest = &rest[len..];
        next_free = last + 2;
        parts += 1;
    }
    assert!(parts >= 2, "a multipart answer of {parts} part");
}
