//! The static-file handler without sockets: requests in, responses (with
//! their file bytes read back) out.

use super::*;
use std::os::unix::fs::FileExt;

const NOW: u64 = 1_800_000_000;

fn now() -> u64 {
    NOW
}

struct Site {
    dir: std::path::PathBuf,
    files: StaticFiles,
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn site(name: &str, options: StaticOptions) -> Site {
    let dir = std::env::temp_dir().join(format!("iomux-static-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("docs/empty")).unwrap();
    std::fs::create_dir_all(root.join("listed")).unwrap();
    std::fs::write(dir.join("canary"), "CANARY").unwrap();
    std::fs::write(root.join("index.html"), "<h1>home</h1>").unwrap();
    std::fs::write(root.join("docs/index.html"), "docs").unwrap();
    let digits: String = (0..10000)
        .map(|i| char::from(b'0' + (i % 10) as u8))
        .collect();
    std::fs::write(root.join("digits.txt"), &digits).unwrap();
    std::fs::write(root.join("app.js"), "js").unwrap();
    std::fs::write(root.join("app.js.gz"), "gz!").unwrap();
    std::fs::write(root.join("app.js.br"), "br!!").unwrap();
    std::fs::write(root.join(".env"), "SECRET").unwrap();
    std::fs::write(root.join("listed/a<b>.txt"), "x").unwrap();
    std::fs::write(root.join("empty.bin"), "").unwrap();
    std::os::unix::fs::symlink("../canary", root.join("escape")).unwrap();
    let files = StaticFiles::new(&root, options).unwrap().with_clock(now);
    Site { dir, files }
}

fn cached() -> StaticOptions {
    StaticOptions {
        open_file_cache: 16,
        ..Default::default()
    }
}

/// A request for `target`, split into path and query as the HTTP core does.
fn request<'a>(method: &'a [u8], target: &'a str) -> FileRequest<'a> {
    let (path, query) = crate::http::request::split_target(target);
    FileRequest {
        method,
        path,
        query,
        ..Default::default()
    }
}

fn get(files: &StaticFiles, target: &str) -> FileResponse {
    files.respond(&request(b"GET", target))
}

fn header<'a>(r: &'a FileResponse, name: &str) -> Option<&'a str> {
    r.header(name).map(|v| std::str::from_utf8(v).unwrap())
}

fn headers(r: &FileResponse) -> Vec<(&'static str, Vec<u8>)> {
    r.headers().map(|(n, v)| (n, v.to_vec())).collect()
}

/// The body's bytes, file ranges read back.
fn body(r: &FileResponse) -> Vec<u8> {
    let read = |file: &File, range: &ByteRange| {
        let mut buf = vec![0; range.len() as usize];
        file.read_exact_at(&mut buf, range.start).unwrap();
        buf
    };
    match &r.body {
        FileBody::Empty => Vec::new(),
        FileBody::Bytes(b) => b.clone(),
        FileBody::Shared { bytes, range } => {
            bytes[range.start as usize..range.end as usize].to_vec()
        }
        FileBody::File { file, range } => read(file, range),
        FileBody::Multipart { file, pieces } => pieces
            .iter()
            .flat_map(|p| match p {
                Piece::Bytes(b) => b.clone(),
                Piece::File(range) => read(file, range),
            })
            .collect(),
    }
}

#[test]
fn serves_files_with_validators_and_types() {
    let s = site("basic", cached());
    let r = get(&s.files, "/digits.txt");
    assert_eq!(r.status, 200);
    assert_eq!(body(&r).len(), 10000);
    assert_eq!(r.body.len(), 10000);
    assert_eq!(
        header(&r, "Content-Type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(header(&r, "Accept-Ranges"), Some("bytes"));
    assert!(header(&r, "ETag").unwrap().starts_with('"'));
    assert!(header(&r, "Last-Modified").unwrap().ends_with(" GMT"));
    assert_eq!(header(&r, "Cache-Control"), None);
    assert_eq!(
        header(&get(&s.files, "/app.js"), "Content-Type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        header(&get(&s.files, "/empty.bin"), "Content-Type"),
        Some("application/octet-stream")
    );
    assert_eq!(get(&s.files, "/empty.bin").body.len(), 0);
    assert_eq!(body(&get(&s.files, "/")), b"<h1>home</h1>");
    assert_eq!(
        header(&get(&s.files, "/"), "Content-Type"),
        Some("text/html; charset=utf-8")
    );
    // HEAD: the same status and headers.
    let h = s.files.respond(&request(b"HEAD", "/digits.txt"));
    assert_eq!(
        (h.status, headers(&h), h.body.len()),
        (200, headers(&r), 10000)
    );
    let p = s.files.respond(&request(b"POST", "/digits.txt"));
    assert_eq!((p.status, header(&p, "Allow")), (405, Some("GET, HEAD")));
    // The open-file cache was used.
    assert!(s.files.cache_counts().0 > 0);
}

#[test]
fn cache_control_is_added_when_asked() {
    let s = site(
        "cc",
        StaticOptions {
            cache_control: Some("max-age=60".into()),
            ..Default::default()
        },
    );
    assert_eq!(
        header(&get(&s.files, "/digits.txt"), "Cache-Control"),
        Some("max-age=60")
    );
}

#[test]
fn directories_index_redirect_and_list() {
    let s = site("dirs", cached());
    assert_eq!(body(&get(&s.files, "/docs/")), b"docs");
    let r = get(&s.files, "/docs?x=1&y");
    assert_eq!(
        (r.status, header(&r, "Location")),
        (301, Some("/docs/?x=1&y"))
    );
    // Built from the normalized path: never a scheme-relative `//host`.
    let r = get(&s.files, "//docs");
    assert_eq!((r.status, header(&r, "Location")), (301, Some("/docs/")));
    assert_eq!(
        get(&s.files, "/listed/").status,
        404,
        "no listing without --list"
    );
    assert_eq!(get(&s.files, "/digits.txt/").status, 404);
    assert_eq!(get(&s.files, "/nothing/").status, 404);
    let l = site(
        "list",
        StaticOptions {
            list: true,
            ..Default::default()
        },
    );
    let r = get(&l.files, "/listed/");
    assert_eq!(
        (r.status, header(&r, "Content-Type")),
        (200, Some("text/html; charset=utf-8"))
    );
    let page = String::from_utf8(body(&r)).unwrap();
    assert!(
        page.contains("href=\"./a%3Cb%3E.txt\">a&lt;b&gt;.txt</a>"),
        "{page}"
    );
    let root = String::from_utf8(body(&get(&l.files, "/docs/empty/"))).unwrap();
    assert!(root.contains("Index of /docs/empty/"));
    // Hidden names are neither listed nor served.
    let top = String::from_utf8(body(&{
        std::fs::remove_file(l.dir.join("root/index.html")).unwrap();
        get(&l.files, "/")
    }))
    .unwrap();
    assert!(top.contains("digits.txt") && !top.contains(".env"), "{top}");
}

#[test]
fn hidden_names_need_the_option() {
    let s = site("hidden", cached());
    assert_eq!(get(&s.files, "/.env").status, 404);
    assert_eq!(get(&s.files, "/%2eenv").status, 404);
    let h = site(
        "hidden2",
        StaticOptions {
            hidden: true,
            ..Default::default()
        },
    );
    assert_eq!(body(&get(&h.files, "/.env")), b"SECRET");
}

#[test]
fn hostile_paths_never_reach_the_canary() {
    for s in [site("hostile", cached()), {
        let mut s = site("hostile-walk", StaticOptions::default());
        s.files = StaticFiles::new(&s.dir.join("root"), StaticOptions::default())
            .unwrap()
            .without_openat2();
        s
    }] {
        for target in [
            "/../canary",
            "/%2e%2e/canary",
            "/%2E%2E%2Fcanary",
            "/docs/../../canary",
            "/..%2fcanary",
            "/..%5ccanary",
            "/..\\canary",
            "/%252e%252e/canary",
            "/%c0%ae%c0%ae/canary",
            "/escape",
            "/canary%00.txt",
            "http://x/../canary",
            "HTTP://x/%2e%2e/canary",
            "http://x#/../canary",
            "/./../canary",
            "/docs/%2e%2e/%2e%2e/canary",
        ] {
            let r = get(&s.files, target);
            assert!(
                matches!(r.status, 400 | 403 | 404),
                "{target}: {}",
                r.status
            );
            assert!(!body(&r).windows(6).any(|w| w == b"CANARY"), "{target}");
        }
    }
}

#[test]
fn fifo_is_forbidden_without_blocking() {
    let s = site("fifo", cached());
    let c = std::ffi::CString::new(s.dir.join("root/pipe").to_str().unwrap()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    assert_eq!(get(&s.files, "/pipe").status, 403);
    assert_eq!(get(&s.files, "/pipe.gz").status, 404);
}

fn with<'a>(
    files: &StaticFiles,
    target: &'a str,
    f: impl FnOnce(&mut FileRequest<'a>),
) -> FileResponse {
    let mut req = request(b"GET", target);
    f(&mut req);
    files.respond(&req)
}

#[test]
fn conditional_matrix() {
    let s = site("cond", cached());
    let full = get(&s.files, "/digits.txt");
    let etag = header(&full, "ETag").unwrap().to_owned();
    let lm = header(&full, "Last-Modified").unwrap().to_owned();
    let past = "Sun, 06 Nov 1994 08:49:37 GMT";
    let cond = |c: Conditionals<'_>| with(&s.files, "/digits.txt", |r| r.conditionals = c);
    let d = Conditionals::default;
    let r = cond(Conditionals {
        if_none_match: Some(etag.as_bytes()),
        ..d()
    });
    assert_eq!((r.status, r.body.len()), (304, 0));
    assert!(matches!(r.body, FileBody::Empty));
    assert_eq!(header(&r, "ETag"), Some(etag.as_str()));
    assert_eq!(header(&r, "Vary"), Some("Accept-Encoding"));
    assert_eq!(
        cond(Conditionals {
            if_none_match: Some(b"\"x\""),
            ..d()
        })
        .status,
        200
    );
    assert_eq!(
        cond(Conditionals {
            if_modified_since: Some(lm.as_bytes()),
            ..d()
        })
        .status,
        304
    );
    assert_eq!(
        cond(Conditionals {
            if_modified_since: Some(past.as_bytes()),
            ..d()
        })
        .status,
        200
    );
    assert_eq!(
        cond(Conditionals {
            if_match: Some(b"\"x\""),
            ..d()
        })
        .status,
        412
    );
    assert_eq!(
        cond(Conditionals {
            if_match: Some(etag.as_bytes()),
            ..d()
        })
        .status,
        200
    );
    assert_eq!(
        cond(Conditionals {
            if_unmodified_since: Some(past.as_bytes()),
            ..d()
        })
        .status,
        412
    );
    assert_eq!(
        cond(Conditionals {
            if_unmodified_since: Some(lm.as_bytes()),
            ..d()
        })
        .status,
        200
    );
    // If-Range with the current tag applies the range; a stale one sends everything.
    let ranged = |if_range: &[u8]| {
        with(&s.files, "/digits.txt", |r| {
            r.range = Some(b"bytes=0-9");
            r.conditionals.if_range = Some(if_range);
        })
    };
    assert_eq!(ranged(etag.as_bytes()).status, 206);
    assert_eq!(ranged(b"\"stale\"").status, 200);
    assert_eq!(ranged(lm.as_bytes()).status, 206);
    assert_eq!(ranged(past.as_bytes()).status, 200);
    // A file rewritten gets a new tag: the old one no longer matches.
    std::fs::write(s.dir.join("root/digits.txt"), "changed").unwrap();
    let r = cond(Conditionals {
        if_none_match: Some(etag.as_bytes()),
        ..d()
    });
    assert_eq!((r.status, body(&r)), (200, b"changed".to_vec()));
}

#[test]
fn range_matrix() {
    let s = site("range", cached());
    let range = |v: &str| with(&s.files, "/digits.txt", |r| r.range = Some(v.as_bytes()));
    let r = range("bytes=0-499");
    assert_eq!(
        (r.status, header(&r, "Content-Range")),
        (206, Some("bytes 0-499/10000"))
    );
    assert_eq!(body(&r).len(), 500);
    let r = range("bytes=-500");
    assert_eq!(
        (r.status, header(&r, "Content-Range")),
        (206, Some("bytes 9500-9999/10000"))
    );
    assert_eq!(&body(&r)[..3], b"012");
    let r = range("bytes=9995-");
    assert_eq!(body(&r), b"56789");
    let r = range("bytes=10000-");
    assert_eq!(
        (r.status, header(&r, "Content-Range")),
        (416, Some("bytes */10000"))
    );
    assert_eq!(range("bytes=x").status, 200);
    // HEAD ignores Range (RFC 9110 §14.2: defined for GET only).
    let h = with(&s.files, "/digits.txt", |r| {
        r.method = b"HEAD";
        r.range = Some(b"bytes=0-9");
    });
    assert_eq!((h.status, h.body.len()), (200, 10000));
    // Several ranges: multipart/byteranges with a boundary.
    let r = range("bytes=0-0,-1,5-6");
    assert_eq!(r.status, 206);
    let ct = header(&r, "Content-Type").unwrap().to_owned();
    let boundary = ct.strip_prefix("multipart/byteranges; boundary=").unwrap();
    assert_eq!(boundary.len(), 32);
    let text = String::from_utf8(body(&r)).unwrap();
    assert_eq!(text.len() as u64, r.body.len());
    let expected = format!(
        "\r\n--{b}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Range: bytes 0-0/10000\r\n\r\n0\
         \r\n--{b}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Range: bytes 5-6/10000\r\n\r\n56\
         \r\n--{b}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Range: bytes 9999-9999/10000\r\n\r\n9\
         \r\n--{b}--\r\n",
        b = boundary
    );
    assert_eq!(text, expected);
    // A small file (answered from memory) the same way.
    let r = with(&s.files, "/index.html", |r| r.range = Some(b"bytes=0-0,-1"));
    assert!(matches!(r.body, FileBody::Bytes(_)));
    let text = String::from_utf8(body(&r)).unwrap();
    assert_eq!(text.len() as u64, r.body.len());
    assert!(
        text.contains("Content-Range: bytes 0-0/13\r\n\r\n<\r\n--"),
        "{text}"
    );
    assert!(
        text.contains("Content-Range: bytes 12-12/13\r\n\r\n>\r\n--"),
        "{text}"
    );
    let r = with(&s.files, "/app.js", |r| r.range = Some(b"bytes=1-"));
    assert!(matches!(r.body, FileBody::Shared { .. }));
    assert_eq!(body(&r), b"s");
    // An empty file has no satisfiable range.
    let r = with(&s.files, "/empty.bin", |r| r.range = Some(b"bytes=0-"));
    assert_eq!(
        (r.status, header(&r, "Content-Range")),
        (416, Some("bytes */0"))
    );
}

#[test]
fn precompressed_siblings_by_accept_encoding() {
    let s = site("enc", cached());
    let ae = |v: &str| {
        with(&s.files, "/app.js", |r| {
            r.accept_encoding = Some(v.as_bytes())
        })
    };
    let r = ae("gzip, br");
    assert_eq!(
        (body(&r), header(&r, "Content-Encoding")),
        (b"br!!".to_vec(), Some("br"))
    );
    assert_eq!(
        header(&r, "Content-Type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(header(&r, "Vary"), Some("Accept-Encoding"));
    let r = ae("gzip");
    assert_eq!(
        (body(&r), header(&r, "Content-Encoding")),
        (b"gz!".to_vec(), Some("gzip"))
    );
    let r = ae("zstd");
    assert_eq!(
        (body(&r), header(&r, "Content-Encoding")),
        (b"js".to_vec(), None)
    );
    let r = ae("br;q=0, gzip;q=0.5");
    assert_eq!(body(&r), b"gz!");
    let plain = get(&s.files, "/app.js");
    assert_eq!(
        (body(&plain), header(&plain, "Vary")),
        (b"js".to_vec(), Some("Accept-Encoding"))
    );
    // Each representation has its own tag.
    assert_ne!(header(&r, "ETag"), header(&plain, "ETag"));
}

/// A sibling asked for by name and the same file sent as an encoding of
/// another are two representations: the open-file cache keeps them apart,
/// in either order (found by the `files` fuzz target: the cache answered
/// `/app.js` with gzip as `application/gzip` without `Content-Encoding`).
#[test]
fn a_sibling_asked_for_by_name_stays_apart_from_the_encoding() {
    let by_encoding =
        |files: &StaticFiles| with(files, "/app.js", |r| r.accept_encoding = Some(b"gzip"));
    for name_first in [true, false] {
        let s = site(&format!("sibling-{name_first}"), cached());
        let (by_name, encoded) = if name_first {
            let by_name = get(&s.files, "/app.js.gz");
            (by_name, by_encoding(&s.files))
        } else {
            let encoded = by_encoding(&s.files);
            (get(&s.files, "/app.js.gz"), encoded)
        };
        assert_eq!(
            (
                header(&by_name, "Content-Type"),
                header(&by_name, "Content-Encoding")
            ),
            (Some("application/gzip"), None),
            "by name, asked first: {name_first}"
        );
        assert_eq!(
            (
                header(&encoded, "Content-Type"),
                header(&encoded, "Content-Encoding")
            ),
            (Some("text/javascript; charset=utf-8"), Some("gzip")),
            "as an encoding, asked first: {}",
            !name_first
        );
        assert_eq!(
            (body(&by_name), body(&encoded)),
            (b"gz!".to_vec(), b"gz!".to_vec())
        );
    }
}

/// A sibling found missing is not looked for again while nothing changes in
/// its directory; one made later is found by the next request (and then
/// not looked up again either), and once removed it is missed again.
#[test]
fn a_missing_sibling_is_probed_once_per_change() {
    let s = site("missing-sibling", cached());
    assert!(s.files.cache.watches_changes(), "inotify is missing here");
    let root = s.dir.join("root");
    let browser = |files: &StaticFiles| {
        with(files, "/digits.txt", |r| {
            r.accept_encoding = Some(b"gzip, deflate, br, zstd")
        })
    };
    let misses = || s.files.cache_counts().1;
    let first = browser(&s.files);
    assert_eq!(header(&first, "Content-Encoding"), None);
    let after_first = misses();
    assert_eq!(after_first, 4, "the file and its three siblings");
    for _ in 0..3 {
        let r = browser(&s.files);
        assert_eq!((r.status, header(&r, "Content-Encoding")), (200, None));
        assert_eq!(body(&r).len(), 10000);
    }
    assert_eq!(misses(), after_first, "no sibling looked for again");
    std::fs::write(root.join("digits.txt.gz"), "gz").unwrap();
    let r = browser(&s.files);
    assert_eq!(
        (body(&r), header(&r, "Content-Encoding")),
        (b"gz".to_vec(), Some("gzip"))
    );
    // The sibling found is noted too: each request looks up the file alone.
    let (hits, misses) = s.files.cache_counts();
    for _ in 0..3 {
        let r = browser(&s.files);
        assert_eq!(body(&r), b"gz");
    }
    assert_eq!(s.files.cache_counts(), (hits + 3, misses));
    std::fs::remove_file(root.join("digits.txt.gz")).unwrap();
    let r = browser(&s.files);
    assert_eq!(header(&r, "Content-Encoding"), None);
    assert_eq!(body(&r).len(), 10000);
}

/// A file the full cache does not let in has no entry to note its siblings
/// with: its directory's names, read once per change, say that none exist,
/// so only the file is looked up. A sibling made later is found.
#[test]
fn siblings_of_a_file_the_cache_does_not_hold_follow_its_directory() {
    let s = site(
        "dir-codings",
        StaticOptions {
            open_file_cache: 1,
            ..Default::default()
        },
    );
    let root = s.dir.join("root");
    std::fs::create_dir_all(root.join("cold")).unwrap();
    for i in 0..6 {
        std::fs::write(root.join(format!("cold/{i}.txt")), format!("file {i}")).unwrap();
    }
    get(&s.files, "/digits.txt");
    let browser = |path: &str| {
        with(&s.files, path, |r| {
            r.accept_encoding = Some(b"gzip, deflate, br, zstd")
        })
    };
    // The first reads the directory; then each file asked for once (never
    // let in) costs its own lookup alone.
    assert_eq!(body(&browser("/cold/0.txt")), b"file 0");
    let misses = s.files.cache_counts().1;
    for i in 1..6 {
        let r = browser(&format!("/cold/{i}.txt"));
        assert_eq!((r.status, header(&r, "Content-Encoding")), (200, None));
    }
    assert_eq!(
        s.files.cache_counts().1,
        misses + 5,
        "no sibling looked for"
    );
    std::fs::write(root.join("cold/5.txt.gz"), "gz").unwrap();
    let r = browser("/cold/5.txt");
    assert_eq!(
        (body(&r), header(&r, "Content-Encoding")),
        (b"gz".to_vec(), Some("gzip"))
    );
}

#[test]
fn prepared_headers_are_the_listed_ones() {
    let s = site(
        "prepared",
        StaticOptions {
            cache_control: Some("max-age=60".into()),
            open_file_cache: 16,
            ..Default::default()
        },
    );
    let render = |r: &FileResponse| {
        let mut out = Vec::new();
        for (name, value) in r.headers() {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        out
    };
    // Whole files, from memory and from the file, identity or precompressed.
    for r in [
        get(&s.files, "/digits.txt"),
        get(&s.files, "/app.js"),
        with(&s.files, "/app.js", |r| r.accept_encoding = Some(b"br")),
        get(&s.files, "/"),
    ] {
        assert_eq!(r.status, 200);
        let prepared = r.prepared_headers().expect("a 200 of a whole file");
        assert_eq!(
            String::from_utf8_lossy(prepared.as_bytes()),
            String::from_utf8_lossy(&render(&r))
        );
    }
    // Without the cache nothing is kept: the fields are written one by one.
    let uncached = site("prepared-uncached", StaticOptions::default());
    assert!(get(&uncached.files, "/digits.txt")
        .prepared_headers()
        .is_none());
    // Every other answer lists its own.
    for r in [
        with(&s.files, "/digits.txt", |r| r.range = Some(b"bytes=0-1")),
        with(&s.files, "/digits.txt", |r| {
            r.conditionals.if_none_match = Some(b"*")
        }),
        with(&s.files, "/digits.txt", |r| {
            r.conditionals.if_match = Some(b"\"x\"")
        }),
        get(&s.files, "/missing"),
        get(&s.files, "/docs"),
    ] {
        assert!(r.prepared_headers().is_none(), "{}", r.status);
    }
}

#[test]
fn a_cache_control_that_is_no_header_value_is_refused() {
    let dir = std::env::temp_dir();
    for bad in ["", " \t ", "max-age=1\r\nX: y", "max-age=1\n", "caf\u{e9}"] {
        let err = StaticFiles::new(
            &dir,
            StaticOptions {
                cache_control: Some(bad.into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("Cache-Control"), "{err}");
    }
}

#[test]
fn a_cache_control_is_sent_without_the_spaces_around_it() {
    for open_file_cache in [0, 16] {
        let s = site(
            &format!("cache-control-{open_file_cache}"),
            StaticOptions {
                cache_control: Some(" \tmax-age=60, public ".into()),
                open_file_cache,
                ..Default::default()
            },
        );
        let r = get(&s.files, "/digits.txt");
        assert_eq!(r.status, 200);
        assert_eq!(header(&r, "Cache-Control"), Some("max-age=60, public"));
    }
}
