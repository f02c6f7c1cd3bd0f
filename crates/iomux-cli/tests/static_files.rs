//! `iomux serve --root DIR` over real sockets: the contract's "Static
//! files" section on every engine, a hostile path corpus that must never
//! reach a canary file outside the root, listings of hostile names, a slow
//! reader of a 64 MiB file next to a quick client, and a file truncated while
//! it is sent.

#[macro_use]
mod common;

use common::{parse_http_response, HttpResponse, LoggedServer, ServerProcess};
use std::io::{Read, Write};
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
    let r = get(&server, "/app.js", &[]);
    assert_eq!(
        (r.body.as_slice(), r.header("content-encoding")),
        (&b"let x = 1;"[..], None)
    );
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
];

fn hostile_paths(engine: &[&str]) {
    let site = Site::new(&format!("hostile-{}", engine.join("-").replace("--", "")));
    // A precompressed sibling of an escaping link is itself an escaping link.
    std::os::unix::fs::symlink("../canary", site.root().join("hello.txt.gz")).unwrap();
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

for_engines!(hostile_paths, [epoll_edge, uring, threads]);

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

#[test]
fn a_replaced_file_is_seen_by_the_next_request() {
    let site = Site::new("replace");
    let mut server = site.serve(&[], &[]);
    let first = get(&server, "/hello.txt", &[]);
    let tmp = site.root().join("hello.txt.tmp");
    std::fs::write(&tmp, "replaced").unwrap();
    std::fs::rename(&tmp, site.root().join("hello.txt")).unwrap();
    let second = get(&server, "/hello.txt", &[]);
    assert_eq!(second.body, b"replaced");
    assert_ne!(first.header("etag"), second.header("etag"));
    std::fs::remove_file(site.root().join("hello.txt")).unwrap();
    assert_eq!(get(&server, "/hello.txt", &[]).code, 404);
    server.stop();
}

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
    assert_eq!(get(server, "/hello.txt", &[]).code, 200, "the server goes on");
    let err = logged.stop_cleanly("truncated file");
    assert!(err.contains("files_cut_short=1"), "the cut is counted: {err}");
}

for_engines!(truncated_mid_send, [epoll_edge, uring, threads, blocking]);
