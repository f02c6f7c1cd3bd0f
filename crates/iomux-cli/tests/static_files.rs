//! `iomux serve --root DIR` over real sockets: the contract's "Static
//! files" section on every engine, a hostile path corpus that must never
//! reach a canary file outside the root, listings of hostile names, a slow
//! reader of a 64 MiB file next to a quick client, and a file truncated while
//! it is sent.

#[macro_use]
mod common;
#[path = "common/tls.rs"]
mod tls_fixture;

use common::{parse_http_response, HttpResponse, LoggedServer, ServerProcess};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CANARY: &[u8] = b"CANARY-7f3a9c";

/// A scratch directory: `root/` is served, `canary` lies beside it.
struct Site {
    dir: PathBuf,
}

impl Site {
    fn new(name: &str) -> Site {
        let dir =
            std::env::temp_dir().join(format!("iomux-static-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("docs")).unwrap();
        std::fs::create_dir_all(root.join("empty")).unwrap();
        std::fs::write(dir.join("canary"), CANARY).unwrap();
        std::fs::write(root.join("index.html"), "<h1>home</h1>").unwrap();
        std::fs::write(root.join("docs/index.html"), "docs index").unwrap();
        std::fs::write(root.join("hello.txt"), "Hello, files!\n").unwrap();
        std::fs::write(root.join("digits.txt"), digits(10_000)).unwrap();
        std::fs::write(root.join("app.js"), "let x = 1;").unwrap();
        std::fs::write(root.join("app.js.gz"), "GZIPPED").unwrap();
        std::fs::write(root.join("app.js.br"), "BROTLI").unwrap();
        std::fs::write(root.join("app.js.zst"), "ZSTANDARD").unwrap();
        std::fs::write(root.join(".secret"), "hidden file").unwrap();
        std::os::unix::fs::symlink("../canary", root.join("escape")).unwrap();
        std::os::unix::fs::symlink("/", root.join("slash")).unwrap();
        std::os::unix::fs::symlink("..", root.join("up")).unwrap();
        std::os::unix::fs::symlink("hello.txt", root.join("inner-link")).unwrap();
        let fifo = std::ffi::CString::new(root.join("fifo").to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0, "mkfifo");
        Site { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    fn args<'a>(&'a self, root: &'a str, engine: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["--root", root];
        args.extend_from_slice(engine);
        args.extend_from_slice(extra);
        args
    }

    fn serve(&self, engine: &[&str], extra: &[&str]) -> ServerProcess {
        let root = self.root();
        ServerProcess::start(&self.args(root.to_str().unwrap(), engine, extra))
    }

    /// Started with its stderr kept, for the counters it prints at exit.
    fn serve_logged(&self, engine: &[&str]) -> LoggedServer {
        let root = self.root();
        LoggedServer::start(&self.args(root.to_str().unwrap(), engine, &[]), None)
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn digits(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'0' + (i % 10) as u8).collect()
}

/// Everything the server sent for one request on its own connection
/// (`Connection: close`), and the response parsed from it.
fn exchange_raw(server: &ServerProcess, request: &[u8]) -> (Vec<u8>, HttpResponse) {
    let mut s = server.connect();
    s.write_all(request).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the response");
    let head_only = request.starts_with(b"HEAD ") || raw.starts_with(b"HTTP/1.1 304");
    let (r, used) = parse_http_response(&raw, head_only).unwrap_or_else(|| {
        panic!(
            "incomplete response to {:?}: {:?}",
            String::from_utf8_lossy(request),
            String::from_utf8_lossy(&raw)
        )
    });
    assert_eq!(
        used,
        raw.len(),
        "bytes after the response to {:?}",
        String::from_utf8_lossy(request)
    );
    (raw, r)
}

fn request(method: &str, target: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

fn get(server: &ServerProcess, target: &str, headers: &[(&str, &str)]) -> HttpResponse {
    exchange_raw(server, &request("GET", target, headers)).1
}

/// The contract's static-file behaviour, one engine at a time.
fn serves_a_directory(engine: &[&str]) {
    let site = Site::new(&format!("engine-{}", engine.join("-").replace("--", "")));
    let mut server = site.serve(engine, &["--cache-control", "max-age=60"]);
    let r = get(&server, "/hello.txt", &[]);
    assert_eq!((r.code, r.body.as_slice()), (200, &b"Hello, files!\n"[..]));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("content-length"), Some("14"));
    assert_eq!(r.header("cache-control"), Some("max-age=60"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    let etag = r.header("etag").expect("ETag").to_owned();
    assert!(
        etag.starts_with('"') && !etag.starts_with("W/"),
        "strong ETag {etag}"
    );
    let last_modified = r.header("last-modified").expect("Last-Modified").to_owned();
    // HEAD: the same headers (Date aside), no body.
    let h = exchange_raw(&server, &request("HEAD", "/hello.txt", &[])).1;
    let strip = |r: &HttpResponse| {
        r.headers
            .iter()
            .filter(|(n, _)| n != "date")
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!((h.code, strip(&h)), (200, strip(&r)));
    assert!(h.body.is_empty());
    // Other methods.
    let p = exchange_raw(
        &server,
        b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .1;
    assert_eq!(p.code, 405);
    assert!(
        p.header("allow").unwrap().contains("GET"),
        "{:?}",
        p.headers
    );
    // Conditionals.
    let r = get(&server, "/hello.txt", &[("If-None-Match", &etag)]);
    assert_eq!((r.code, r.header("etag")), (304, Some(etag.as_str())));
    assert_eq!(r.header("cache-control"), Some("max-age=60"));
    assert_eq!(
        get(
            &server,
            "/hello.txt",
            &[("If-Modified-Since", &last_modified)]
        )
        .code,
        304
    );
    assert_eq!(
        get(&server, "/hello.txt", &[("If-Match", "\"other\"")]).code,
        412
    );
    assert_eq!(
        get(
            &server,
            "/hello.txt",
            &[("If-Unmodified-Since", "Sun, 06 Nov 1994 08:49:37 GMT")]
        )
        .code,
        412
    );
    // Ranges.
    let r = get(&server, "/digits.txt", &[("Range", "bytes=-5")]);
    assert_eq!((r.code, r.body.as_slice()), (206, &b"56789"[..]));
    assert_eq!(r.header("content-range"), Some("bytes 9995-9999/10000"));
    let r = get(&server, "/digits.txt", &[("Range", "bytes=10-12,20-21")]);
    assert_eq!(r.code, 206);
    let ct = r.header("content-type").unwrap();
    let boundary = ct
        .strip_prefix("multipart/byteranges; boundary=")
        .expect("multipart")
        .to_owned();
    let body = String::from_utf8(r.body.clone()).unwrap();
    assert!(
        body.contains("Content-Range: bytes 10-12/10000\r\n\r\n012\r\n"),
        "{body}"
    );
    assert!(
        body.contains("Content-Range: bytes 20-21/10000\r\n\r\n01\r\n"),
        "{body}"
    );
    assert!(body.ends_with(&format!("\r\n--{boundary}--\r\n")), "{body}");
    let r = get(&server, "/digits.txt", &[("Range", "bytes=20000-")]);
    assert_eq!(
        (r.code, r.header("content-range")),
        (416, Some("bytes */10000"))
    );
    let stale = get(
        &server,
        "/digits.txt",
        &[("Range", "bytes=0-1"), ("If-Range", "\"stale\"")],
    );
    assert_eq!((stale.code, stale.body.len()), (200, 10_000));
    // Directories.
    assert_eq!(get(&server, "/", &[]).body, b"<h1>home</h1>");
    let r = get(&server, "/docs?a=1", &[]);
    assert_eq!((r.code, r.header("location")), (301, Some("/docs/?a=1")));
    assert_eq!(get(&server, "/docs/", &[]).body, b"docs index");
    assert_eq!(
        get(&server, "/empty/", &[]).code,
        404,
        "no listing without --list"
    );
    // Precompressed siblings.
    let r = get(&server, "/app.js", &[("Accept-Encoding", "gzip, br")]);
    assert_eq!(
        (r.body.as_slice(), r.header("content-encoding")),
        (&b"BROTLI"[..], Some("br"))
    );
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    let r = get(&server, "/app.js", &[("Accept-Encoding", "gzip")]);
    assert_eq!(
        (r.body.as_slice(), r.header("content-encoding")),
        (&b"GZIPPED"[..], Some("gzip"))
    );
    let r = get(&server, "/app.js", &[("Accept-Encoding", "zstd")]);
    assert_eq!(
        (r.body.as_slice(), r.header("content-encoding")),
        (&b"ZSTANDARD"[..], Some("zstd"))
    );
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    // Weights decide; `q=0` refuses; `*` stands for the codings not named.
    for (accept, body, coding) in [
        (
            "gzip;q=1, zstd;q=0.5, br;q=0.1",
            &b"GZIPPED"[..],
            Some("gzip"),
        ),
        ("br;q=0, *", &b"ZSTANDARD"[..], Some("zstd")),
        ("*;q=0, identity", &b"let x = 1;"[..], None),
        ("compress, deflate", &b"let x = 1;"[..], None),
    ] {
        let r = get(&server, "/app.js", &[("Accept-Encoding", accept)]);
        assert_eq!(
            (r.body.as_slice(), r.header("content-encoding")),
            (body, coding),
            "Accept-Encoding: {accept}"
        );
        assert_eq!(
            r.header("content-type"),
            Some("text/javascript; charset=utf-8")
        );
    }
    let r = get(&server, "/app.js", &[]);
    assert_eq!(
        (r.body.as_slice(), r.header("content-encoding")),
        (&b"let x = 1;"[..], None)
    );
    // The identity response says Vary too: a cache must not hand it to a
    // client that accepts a coding.
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    // Hidden names, links inside and outside, a FIFO.
    assert_eq!(get(&server, "/.secret", &[]).code, 404);
    assert_eq!(get(&server, "/inner-link", &[]).body, b"Hello, files!\n");
    assert!(matches!(get(&server, "/escape", &[]).code, 403 | 404));
    assert_eq!(get(&server, "/fifo", &[]).code, 403);
    // Keep-alive: several files on one connection, in order.
    let mut s = server.connect();
    let mut left = Vec::new();
    s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\nGET /digits.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=0-2\r\n\r\nGET /missing HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let rs = common::read_http_responses(&mut s, 3, &mut left);
    assert_eq!(rs[0].body, b"Hello, files!\n");
    assert_eq!(rs[1].body, b"012");
    assert_eq!(rs[2].code, 404);
    drop(s);
    server.stop();
}

for_engines!(serves_a_directory);

/// The example date of RFC 9110 §5.6.7, `Sun, 06 Nov 1994 08:49:37 GMT`.
const RFC_DATE_SECS: u64 = 784_111_777;

fn set_mtime(path: &Path, secs: u64) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap();
}

/// RFC 9110's own examples, request by request, on the wire: the ranges of
/// §14.1.2 against its representation of 10000 bytes, the multipart answer
/// of §14.6 against one of 8000, §15.5.17's `416`, and the conditionals of
/// §13.1 with the RFC's tags and dates (the files are dated with the RFC's
/// example date so that its three date forms can be sent as written).
fn rfc_9110_examples(engine: &[&str]) {
    let site = Site::new(&format!("rfc-{}", engine.join("-").replace("--", "")));
    let ten = site.root().join("digits.txt");
    let eight = site.root().join("eight.bin");
    std::fs::write(&eight, digits(8000)).unwrap();
    set_mtime(&ten, RFC_DATE_SECS);
    set_mtime(&eight, RFC_DATE_SECS);
    let mut server = site.serve(engine, &[]);
    let file = digits(10_000);
    let full = get(&server, "/digits.txt", &[]);
    assert_eq!(
        full.header("last-modified"),
        Some("Sun, 06 Nov 1994 08:49:37 GMT")
    );
    let etag = full.header("etag").unwrap().to_owned();

    // §14.1.2: single ranges, exact bytes and Content-Range.
    for (range, first, last) in [
        ("bytes=0-499", 0, 499),
        ("bytes=500-999", 500, 999),
        ("bytes=-500", 9500, 9999),
        ("bytes=9500-", 9500, 9999),
        // §14.1.1: a last-pos past the end is clamped.
        ("bytes=9500-20000", 9500, 9999),
    ] {
        let r = get(&server, "/digits.txt", &[("Range", range)]);
        assert_eq!(r.code, 206, "{range}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {first}-{last}/10000").as_str()),
            "{range}"
        );
        assert_eq!(r.body, &file[first..=last], "{range}");
        assert_eq!(
            r.header("content-length"),
            Some((last - first + 1).to_string().as_str())
        );
    }
    // §14.1.2: "the first and last bytes only" (two parts), and the two
    // ways of asking for 500-999 (overlapping or adjacent: one part,
    // coalesced, which §14.6 allows).
    let parts = |range: &str, size: usize, path: &str| -> Vec<(String, Vec<u8>)> {
        let r = get(&server, path, &[("Range", range)]);
        assert_eq!(r.code, 206, "{range}");
        match r
            .header("content-type")
            .unwrap()
            .strip_prefix("multipart/byteranges; boundary=")
        {
            None => vec![(
                r.header("content-range").unwrap().to_owned(),
                r.body.clone(),
            )],
            Some(boundary) => multipart_parts(&r.body, boundary, size),
        }
    };
    let ends = parts("bytes=0-0,-1", 10_000, "/digits.txt");
    assert_eq!(
        ends,
        vec![
            ("bytes 0-0/10000".to_owned(), b"0".to_vec()),
            ("bytes 9999-9999/10000".to_owned(), b"9".to_vec()),
        ]
    );
    for range in ["bytes=500-600,601-999", "bytes=500-700,601-999"] {
        assert_eq!(
            parts(range, 10_000, "/digits.txt"),
            vec![("bytes 500-999/10000".to_owned(), file[500..1000].to_vec())],
            "{range}"
        );
    }
    // §14.6: two parts of an 8000-byte representation.
    let eight_bytes = digits(8000);
    assert_eq!(
        parts("bytes=500-999,7000-7999", 8000, "/eight.bin"),
        vec![
            (
                "bytes 500-999/8000".to_owned(),
                eight_bytes[500..1000].to_vec()
            ),
            (
                "bytes 7000-7999/8000".to_owned(),
                eight_bytes[7000..8000].to_vec()
            ),
        ]
    );
    // §15.5.17: nothing satisfiable.
    let r = get(&server, "/eight.bin", &[("Range", "bytes=8000-8100")]);
    assert_eq!(
        (r.code, r.header("content-range")),
        (416, Some("bytes */8000"))
    );
    // §14.2: a Range field that is not understood is ignored.
    let r = get(&server, "/eight.bin", &[("Range", "lines=1-2")]);
    assert_eq!((r.code, r.body.len()), (200, 8000));

    // §13.1.1 If-Match, with the RFC's example values.
    let xyzzy_list = "\"xyzzy\", \"r2d2xxxx\", \"c3piozzzz\"";
    let with_ours = format!("\"xyzzy\", {etag}, \"c3piozzzz\"");
    let weak_ours = format!("W/{etag}");
    let weak_list = format!("W/\"xyzzy\", {weak_ours}, W/\"c3piozzzz\"");
    let code = |headers: &[(&str, &str)]| get(&server, "/digits.txt", headers).code;
    for (value, expected) in [
        ("\"xyzzy\"", 412),
        (xyzzy_list, 412),
        ("*", 200),
        (etag.as_str(), 200),
        (with_ours.as_str(), 200),
        // §8.8.3.2: If-Match compares strongly, a weak tag never matches.
        (weak_ours.as_str(), 412),
    ] {
        assert_eq!(code(&[("If-Match", value)]), expected, "If-Match: {value}");
    }
    // §13.1.2 If-None-Match: weak comparison, 304 for GET and HEAD.
    for (value, expected) in [
        ("\"xyzzy\"", 200),
        ("W/\"xyzzy\"", 200),
        (xyzzy_list, 200),
        ("*", 304),
        (etag.as_str(), 304),
        (weak_ours.as_str(), 304),
        (with_ours.as_str(), 304),
        (weak_list.as_str(), 304),
    ] {
        assert_eq!(
            code(&[("If-None-Match", value)]),
            expected,
            "If-None-Match: {value}"
        );
    }
    // §13.1.3 If-Modified-Since, §5.6.7's three forms of the same instant,
    // and §13.1.3's example date (before the file's: modified since).
    for (value, expected) in [
        ("Sun, 06 Nov 1994 08:49:37 GMT", 304),
        ("Sunday, 06-Nov-94 08:49:37 GMT", 304),
        ("Sun Nov  6 08:49:37 1994", 304),
        ("Sat, 29 Oct 1994 19:43:31 GMT", 200),
        ("Sun, 06 Nov 1994 08:49:36 GMT", 200),
        // Invalid dates are ignored.
        ("yesterday", 200),
    ] {
        assert_eq!(
            code(&[("If-Modified-Since", value)]),
            expected,
            "If-Modified-Since: {value}"
        );
    }
    // If-None-Match wins over If-Modified-Since (§13.2.2 step 3 before 4).
    assert_eq!(
        code(&[
            ("If-None-Match", "\"xyzzy\""),
            ("If-Modified-Since", "Sun, 06 Nov 1994 08:49:37 GMT")
        ]),
        200
    );
    // §13.1.4 If-Unmodified-Since (example date: the file is newer: 412).
    for (value, expected) in [
        ("Sat, 29 Oct 1994 19:43:31 GMT", 412),
        ("Sun, 06 Nov 1994 08:49:37 GMT", 200),
        ("garbage", 200),
    ] {
        assert_eq!(
            code(&[("If-Unmodified-Since", value)]),
            expected,
            "If-Unmodified-Since: {value}"
        );
    }
    // If-Match wins over If-Unmodified-Since (§13.2.2 step 1 before 2).
    assert_eq!(
        code(&[
            ("If-Match", "*"),
            ("If-Unmodified-Since", "Sat, 29 Oct 1994 19:43:31 GMT")
        ]),
        200
    );
    // A failing If-Match is 412 even when If-None-Match would be 304.
    assert_eq!(
        code(&[("If-Match", "\"xyzzy\""), ("If-None-Match", etag.as_str())]),
        412
    );
    // §13.1.5 If-Range: the RFC's tag and date.
    for (value, expected) in [
        ("\"xyzzy\"", 200),
        ("Sat, 29 Oct 1994 19:43:31 GMT", 200),
        (etag.as_str(), 206),
        ("Sun, 06 Nov 1994 08:49:37 GMT", 206),
        (weak_ours.as_str(), 200),
    ] {
        let r = get(
            &server,
            "/digits.txt",
            &[("Range", "bytes=0-499"), ("If-Range", value)],
        );
        assert_eq!(r.code, expected, "If-Range: {value}");
        assert_eq!(
            r.body.len(),
            if expected == 206 { 500 } else { 10_000 },
            "If-Range: {value}"
        );
    }
    // A 304 carries the validators, a 412 none of the body.
    let r = get(&server, "/digits.txt", &[("If-None-Match", etag.as_str())]);
    assert_eq!(
        (r.header("etag"), r.header("last-modified")),
        (Some(etag.as_str()), Some("Sun, 06 Nov 1994 08:49:37 GMT"))
    );
    assert!(r.body.is_empty());
    server.stop();
}

for_engines!(rfc_9110_examples);

/// The parts of a `multipart/byteranges` body: (Content-Range, bytes).
fn multipart_parts(body: &[u8], boundary: &str, size: usize) -> Vec<(String, Vec<u8>)> {
    let delimiter = format!("\r\n--{boundary}");
    let text = body;
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let found = text[at..]
            .windows(delimiter.len())
            .position(|w| w == delimiter.as_bytes())
            .unwrap_or_else(|| panic!("no delimiter after byte {at}"));
        at += found + delimiter.len();
        if text[at..].starts_with(b"--\r\n") {
            assert_eq!(at + 4, text.len(), "nothing after the close delimiter");
            return out;
        }
        let head_end = at
            + text[at..]
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .unwrap();
        let head = String::from_utf8(text[at..head_end].to_vec()).unwrap();
        let range = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Range: "))
            .expect("Content-Range in each part")
            .to_owned();
        let (first, last) = range
            .strip_prefix("bytes ")
            .and_then(|r| r.strip_suffix(&format!("/{size}")))
            .and_then(|r| r.split_once('-'))
            .map(|(a, b)| (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap()))
            .expect("bytes FIRST-LAST/SIZE");
        let data_start = head_end + 4;
        let data_end = data_start + (last - first + 1);
        out.push((range, text[data_start..data_end].to_vec()));
        at = data_end;
    }
}

/// `HEAD` answers exactly `GET`'s status and headers (Date aside), for every
/// kind of answer: a file from memory and one sent from the file, a
/// precompressed sibling, a directory's index, a redirect, a listing, a 304,
/// a 412, the errors.
fn head_equals_get(engine: &[&str]) {
    let site = Site::new(&format!("head-{}", engine.join("-").replace("--", "")));
    big_file(&site.root().join("big.bin"), 1 << 20);
    let mut server = site.serve(engine, &["--list", "--cache-control", "no-cache"]);
    let etag = get(&server, "/digits.txt", &[])
        .header("etag")
        .unwrap()
        .to_owned();
    let cases: &[(&str, &[(&str, &str)])] = &[
        ("/hello.txt", &[]),
        ("/digits.txt", &[]),
        ("/big.bin", &[]),
        ("/app.js", &[("Accept-Encoding", "br")]),
        ("/", &[]),
        ("/docs", &[]),
        ("/empty/", &[]),
        ("/digits.txt", &[("If-None-Match", &etag)]),
        ("/digits.txt", &[("If-Match", "\"xyzzy\"")]),
        ("/missing", &[]),
        ("/.secret", &[]),
        ("/fifo", &[]),
        ("/escape", &[]),
        ("/../canary", &[]),
    ];
    let strip = |r: &HttpResponse| -> Vec<(String, String)> {
        r.headers
            .iter()
            .filter(|(n, _)| n != "date")
            .cloned()
            .collect()
    };
    for (target, headers) in cases {
        let g = get(&server, target, headers);
        let (raw, h) = exchange_raw(&server, &request("HEAD", target, headers));
        assert_eq!(
            (h.code, strip(&h)),
            (g.code, strip(&g)),
            "HEAD {target} {headers:?}"
        );
        // Nothing after the head (exchange_raw checks that all bytes were one response).
        assert!(raw.ends_with(b"\r\n\r\n"), "HEAD {target}: a body was sent");
        if g.code == 200 {
            assert_eq!(
                g.header("content-length"),
                Some(g.body.len().to_string().as_str()),
                "GET {target}"
            );
        }
    }
    // HEAD ignores Range (defined for GET only): GET's full answer's headers.
    let g = get(&server, "/big.bin", &[]);
    let h = exchange_raw(
        &server,
        &request("HEAD", "/big.bin", &[("Range", "bytes=0-9")]),
    )
    .1;
    assert_eq!((h.code, strip(&h)), (200, strip(&g)));
    server.stop();
}

for_engines!(head_equals_get);

/// Requests that try to leave the root. Every response is read whole, and
/// no byte of the canary may appear in any of them.
const HOSTILE: &[&[u8]] = &[
    b"GET /../canary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /..%2fcanary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /%2e%2e/canary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /%2E%2E%2Fcanary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /.%2e/canary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /docs/../../canary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /docs/%2e%2e/%2e%2e/canary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /%252e%252e/canary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /%252e%252e%252fcanary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /%c0%ae%c0%ae/canary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /%c0%ae%c0%ae%c0%afcanary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /%e0%80%ae%e0%80%ae/canary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /..%5ccanary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /..\\canary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /hello.txt%00../../canary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /canary%00 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET http://t/../canary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET http://t/%2e%2e/canary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET file:///canary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET ../canary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET canary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /escape HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /up/canary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /slash/etc/passwd HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /up/ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /up HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /escape HTTP/1.1\r\nHost: t\r\nRange: bytes=0-3\r\nConnection: close\r\n\r\n",
    b"GET /escape HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
    b"GET /fifo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"HEAD /../canary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    // More spellings of a dot, a slash and a backslash.
    b"GET /%2e%2e%5ccanary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /docs%2f..%2f..%2fcanary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /%25%32%65%25%32%65/canary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /%%32%65%%32%65/canary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /%u002e%u002e/canary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /..%c0%afcanary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /..%e0%80%afcanary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /..%c1%9ccanary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /..%f0%80%80%afcanary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /%ef%bc%8e%ef%bc%8e/canary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET //..//..//canary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /..;/canary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /.../canary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /....//canary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /docs/..\\..\\canary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /%00/../canary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /hello.txt%00 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /../canary?x=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    // Absolute-form targets, in odd cases and with encoded paths.
    b"GET HTTP://T/../canary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET http://t/..%2f..%2fcanary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET https://t/%2e%2e/canary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET http://../canary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET //t/../canary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    // Links that leave: relative from deeper, through a link to a
    // directory outside, a chain whose last hop leaves, absolute.
    b"GET /docs/deep-escape HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /outside/canary HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /chain HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /absolute HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /up/root/hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /proc-self/root/etc/passwd HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    // Not a regular file or a directory.
    b"GET /socket HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /fifo-link HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /fifo HTTP/1.1\r\nHost: t\r\nRange: bytes=0-0\r\nConnection: close\r\n\r\n",
];

/// The links and special files the hostile corpus aims at, beside those of
/// [`Site::new`]; the Unix socket's listener is returned, to be held.
fn hostile_layout(site: &Site) -> std::os::unix::net::UnixListener {
    let root = site.root();
    let link =
        |target: &str, name: &str| std::os::unix::fs::symlink(target, root.join(name)).unwrap();
    link("../../canary", "docs/deep-escape");
    link("..", "outside");
    link("chain-2", "chain");
    link("chain-3", "chain-2");
    link("../canary", "chain-3");
    link(site.dir.join("canary").to_str().unwrap(), "absolute");
    link("/proc/self", "proc-self");
    link("fifo", "fifo-link");
    // A precompressed sibling of an escaping link is itself an escaping link.
    link("../canary", "hello.txt.gz");
    // A listening Unix socket: opening it fails at once (ENXIO).
    std::os::unix::net::UnixListener::bind(root.join("socket")).unwrap()
}

fn hostile_paths(engine: &[&str]) {
    let site = Site::new(&format!("hostile-{}", engine.join("-").replace("--", "")));
    let _socket = hostile_layout(&site);
    let mut server = site.serve(engine, &["--list", "--hidden"]);
    for req in HOSTILE {
        let mut s = server.connect();
        s.write_all(req).unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let what = String::from_utf8_lossy(req);
        assert!(
            !raw.windows(CANARY.len()).any(|w| w == CANARY),
            "canary served for {what}"
        );
        let text = String::from_utf8_lossy(&raw);
        let code: u16 = text
            .get(9..12)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("{what}: {text}"));
        assert!(matches!(code, 400 | 403 | 404), "{what}: {text}");
    }
    // A precompressed sibling that escapes is never chosen.
    let r = get(&server, "/hello.txt", &[("Accept-Encoding", "gzip")]);
    assert_eq!((r.code, r.body.as_slice()), (200, &b"Hello, files!\n"[..]));
    // The server still serves (the FIFO did not block it).
    assert_eq!(get(&server, "/hello.txt", &[]).code, 200);
    server.stop();
}

for_engines!(hostile_paths);

#[test]
fn listings_escape_hostile_names() {
    let site = Site::new("listing");
    let dir = site.root().join("list");
    std::fs::create_dir_all(&dir).unwrap();
    for name in [
        "<img src=x onerror=alert(1)>",
        "a\"b'c&d",
        "q?x#y%z",
        "javascript:alert(1)",
        ".dotfile",
        "line\nbreak\r\t<b>",
        "%2e%2e",
        "..foo",
        "\u{202e}txt.exe",
    ] {
        std::fs::write(dir.join(name), "x").unwrap();
    }
    std::fs::create_dir_all(dir.join("sub<dir>")).unwrap();
    let mut server = site.serve(&[], &["--list"]);
    let r = get(&server, "/list/", &[]);
    assert_eq!(
        (r.code, r.header("content-type")),
        (200, Some("text/html; charset=utf-8"))
    );
    let page = String::from_utf8(r.body).unwrap();
    assert!(!page.contains("<img"), "{page}");
    assert!(
        page.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{page}"
    );
    assert!(
        page.contains("href=\"./%3Cimg%20src=x%20onerror=alert(1)%3E\""),
        "{page}"
    );
    assert!(page.contains("a&quot;b&#39;c&amp;d"), "{page}");
    assert!(page.contains("href=\"./q%3Fx%23y%25z\""), "{page}");
    assert!(page.contains("href=\"./sub%3Cdir%3E/\""), "{page}");
    assert!(
        !page.contains(".dotfile"),
        "hidden names are not listed: {page}"
    );
    // Control characters never reach the page raw; a name that is itself
    // an escape is listed as what it is and links to itself.
    assert!(
        !page.contains("break\r") && !page.contains("line\nbreak"),
        "{page}"
    );
    assert!(
        page.contains(">line\u{FFFD}break\u{FFFD}\u{FFFD}&lt;b&gt;</a>"),
        "{page}"
    );
    assert!(page.contains("href=\"./%252e%252e\">%2e%2e</a>"), "{page}");
    assert_eq!(get(&server, "/list/%252e%252e", &[]).body, b"x");
    // `..foo` is a name starting with a dot: hidden, not a way up.
    assert!(!page.contains("..foo"), "{page}");
    assert_eq!(get(&server, "/list/..foo", &[]).code, 404);
    // A name that is not UTF-8 cannot be asked for, so it is not listed,
    // and the rest of the listing is still served.
    std::fs::write(
        dir.join(std::ffi::OsStr::from_bytes(b"bad\xff\xfename")),
        "x",
    )
    .unwrap();
    let again = get(&server, "/list/", &[]);
    assert_eq!(again.code, 200);
    let again = String::from_utf8(again.body).expect("the listing is UTF-8");
    assert!(
        again.contains("javascript:alert(1)") && !again.contains("name</a>"),
        "{again}"
    );
    // Each link leads to its file.
    assert_eq!(get(&server, "/list/q%3Fx%23y%25z", &[]).body, b"x");
    assert_eq!(get(&server, "/list/a%22b'c&d", &[]).body, b"x");
    // A directory with an index.html is not listed.
    assert_eq!(get(&server, "/docs/", &[]).body, b"docs index");
    server.stop();
}

#[test]
fn hidden_files_with_the_flag() {
    let site = Site::new("hidden");
    let mut server = site.serve(&[], &["--hidden"]);
    assert_eq!(get(&server, "/.secret", &[]).body, b"hidden file");
    server.stop();
}

/// A file replaced on disk (renamed over, as deploys do), rewritten in
/// place, or removed is seen by the very next request, with the open-file
/// cache and without it; both a small file (kept in memory by the cache)
/// and one sent from the file.
fn a_replaced_file_is_seen_by_the_next_request(engine: &[&str]) {
    let site = Site::new(&format!("replace-{}", engine.join("-").replace("--", "")));
    for cache in ["1000", "0"] {
        let mut server = site.serve(engine, &["--open-file-cache", cache]);
        for (name, size) in [("small.txt", 100), ("large.txt", 100_000)] {
            let path = site.root().join(name);
            let what = format!("{name}, --open-file-cache {cache}");
            std::fs::write(&path, vec![b'a'; size]).unwrap();
            let first = get(&server, &format!("/{name}"), &[]);
            assert_eq!(first.body, vec![b'a'; size], "{what}");
            // Enough hits for a loop thread to arm its doorbell on the
            // cache's event queue (after 32): the replacements below are then
            // seen through it, the first and the ones after it rang.
            for _ in 0..40 {
                let _ = get(&server, &format!("/{name}"), &[]);
            }
            let mut previous = first.header("etag").map(str::to_owned);
            for byte in [b'b', b'd', b'e'] {
                // Replaced: another inode at the path.
                let tmp = site.root().join("replacement.tmp");
                std::fs::write(&tmp, vec![byte; size]).unwrap();
                std::fs::rename(&tmp, &path).unwrap();
                let second = get(&server, &format!("/{name}"), &[]);
                assert_eq!(second.body, vec![byte; size], "{what}: replaced");
                assert_ne!(previous.as_deref(), second.header("etag"), "{what}");
                previous = second.header("etag").map(str::to_owned);
                let _ = get(&server, &format!("/{name}"), &[]);
            }
            // The old tag no longer answers 304.
            let again = get(
                &server,
                &format!("/{name}"),
                &[("If-None-Match", first.header("etag").unwrap())],
            );
            assert_eq!(again.code, 200, "{what}");
            // Rewritten in place: same inode, another size.
            std::fs::write(&path, vec![b'c'; size / 2]).unwrap();
            let third = get(&server, &format!("/{name}"), &[]);
            assert_eq!(third.body, vec![b'c'; size / 2], "{what}: rewritten");
            assert_eq!(
                third.header("content-length"),
                Some((size / 2).to_string().as_str())
            );
            // Removed.
            std::fs::remove_file(&path).unwrap();
            assert_eq!(
                get(&server, &format!("/{name}"), &[]).code,
                404,
                "{what}: removed"
            );
        }
        server.stop();
    }
}

for_engines!(a_replaced_file_is_seen_by_the_next_request);

#[test]
fn a_missing_root_is_a_clear_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_iomux"))
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--root",
            "/nonexistent/iomux-root",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/iomux-root"), "{err}");
}

fn big_file(path: &Path, bytes: usize) {
    let mut f = std::fs::File::create(path).unwrap();
    let block = digits(1 << 20);
    for _ in 0..bytes >> 20 {
        f.write_all(&block).unwrap();
    }
}

/// A client that reads a 64 MiB file slowly holds no copy of it in the
/// server, and another client is served meanwhile.
fn slow_reader(engine: &[&str]) {
    let site = Site::new(&format!("slow-{}", engine.join("-").replace("--", "")));
    big_file(&site.root().join("big.bin"), 64 << 20);
    let mut server = site.serve(engine, &[]);
    // Warm up (page faults of the first requests, the cache).
    assert_eq!(get(&server, "/hello.txt", &[]).code, 200);
    let rss_before = server.rss_kib();
    let mut slow = server.connect();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    slow.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    let mut peak = rss_before;
    for _ in 0..20 {
        got += slow.read(&mut buf).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        // Another client is served while the big response waits.
        let t = Instant::now();
        assert_eq!(get(&server, "/hello.txt", &[]).body, b"Hello, files!\n");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "quick client waited {:?}",
            t.elapsed()
        );
        peak = peak.max(server.rss_kib());
    }
    assert!(
        got < 32 << 20,
        "the slow client read only a little so far ({got} bytes)"
    );
    assert!(
        peak < rss_before + 16 * 1024,
        "server RSS grew from {rss_before} KiB to {peak} KiB while a 64 MiB file waited for a slow reader"
    );
    // Then the rest arrives, byte for byte.
    let mut rest = Vec::new();
    slow.read_to_end(&mut rest).unwrap();
    let total = got + rest.len();
    assert!(
        (64 << 20) < total && total < (64 << 20) + 1024,
        "head and body: {total} bytes"
    );
    server.stop();
}

for_engines!(
    slow_reader,
    [epoll_edge, epoll_level, uring, uring_poll, threads]
);

/// A file that shrinks while it is sent: the connection closes once the
/// bytes run out (fewer than announced, then EOF), never a hang, and the
/// server goes on serving.
fn truncated_mid_send(engine: &[&str]) {
    let site = Site::new(&format!("trunc-{}", engine.join("-").replace("--", "")));
    let path = site.root().join("big.bin");
    big_file(&path, 32 << 20);
    let mut logged = site.serve_logged(engine);
    let server = &logged.server;
    let mut s = server.connect();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut raw = vec![0u8; 256 * 1024];
    let mut n = 0;
    while n < 64 * 1024 {
        n += s.read(&mut raw[n..]).unwrap();
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("EOF, not a hang");
    let head_end = raw[..n].windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let body = n - head_end + rest.len();
    assert!(
        body < 32 << 20,
        "{body} bytes: fewer than the announced 32 MiB"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(
        get(server, "/hello.txt", &[]).code,
        200,
        "the server goes on"
    );
    let err = logged.stop_cleanly("truncated file");
    assert!(
        err.contains("files_cut_short=1"),
        "the cut is counted: {err}"
    );
}

for_engines!(truncated_mid_send, [epoll_edge, uring, threads, blocking]);

/// Over TLS the file's bytes are read and encrypted by the connection core
/// (no sendfile): a file sent from the file, one from memory, and the
/// parts of a multipart answer arrive byte for byte.
fn over_tls(engine: &[&str]) {
    let site = Site::new(&format!("tls-{}", engine.join("-").replace("--", "")));
    big_file(&site.root().join("big.bin"), 3 << 20);
    let certs = tls_fixture::certs();
    let root = site.root();
    let mut args = vec![
        "--root",
        root.to_str().unwrap(),
        "--tls-cert",
        certs.ec_cert.to_str().unwrap(),
        "--tls-key",
        certs.ec_key.to_str().unwrap(),
    ];
    args.extend_from_slice(engine);
    let mut server = ServerProcess::start(&args);
    let config = tls_fixture::client_config(&certs.ec_cert, &[b"http/1.1"]);
    let fetch = |target: &str, headers: &str| {
        let mut s = tls_fixture::tls_connect(server.addr, &config);
        s.write_all(
            format!("GET {target} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .expect("the whole answer, then close_notify");
        let (r, used) = parse_http_response(&raw, false).expect("one response");
        assert_eq!(used, raw.len(), "{target}: bytes after the response");
        r
    };
    let big = fetch("/big.bin", "");
    assert_eq!(big.code, 200);
    let want = std::fs::read(site.root().join("big.bin")).unwrap();
    let first_diff = big.body.iter().zip(&want).position(|(a, b)| a != b);
    assert!(
        big.body == want,
        "3 MiB over TLS, byte for byte: got {} bytes, first difference at {first_diff:?}",
        big.body.len()
    );
    let small = fetch("/hello.txt", "");
    assert_eq!(
        (small.code, small.body.as_slice()),
        (200, &b"Hello, files!\n"[..])
    );
    let r = fetch("/big.bin", "Range: bytes=5-9,-3\r\n");
    assert_eq!(r.code, 206);
    let boundary = r
        .header("content-type")
        .unwrap()
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap()
        .to_owned();
    assert_eq!(
        multipart_parts(&r.body, &boundary, 3 << 20),
        vec![
            ("bytes 5-9/3145728".to_owned(), b"56789".to_vec()),
            (
                "bytes 3145725-3145727/3145728".to_owned(),
                want[(3 << 20) - 3..].to_vec()
            ),
        ]
    );
    server.stop();
}

for_engines!(over_tls, [epoll_edge, uring, uring_poll, poll]);
