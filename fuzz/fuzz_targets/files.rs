//! Static files over a fixed tree (see `iomux_fuzz::files`): no byte or name
//! from outside the root in any answer, every file region open on a path
//! under the root, and every answer one RFC 9110 allows for the request
//! (sizes, `Content-Range`, multipart parts, bodies equal to the file's
//! bytes). No panic on any input.
//!
//! The first byte: bit 0 picks the mode, bits 1-4 the handler's options
//! (listing, hidden names, open-file cache, openat2 or the `O_NOFOLLOW` walk).
//!
//! - Structured: the rest is fields separated by `\n` (method, path, query,
//!   If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since,
//!   If-Range, Range, Accept-Encoding; an empty field is absent, an empty
//!   method `GET`) into `StaticFiles::respond`. In the conditional fields
//!   `$E` stands for the file's current `ETag` and `$D` for its
//!   `Last-Modified`, so validators that match are reachable. HEAD must
//!   answer what GET does (without `Range`, which HEAD ignores), and the
//!   same handler with the open-file cache toggled must answer the same.
//! - Raw: the rest is bytes from a client, through the HTTP core with the
//!   handler as the CLI wires it; file regions are read back in place.
#![no_main]

use iomux_fuzz::files::{check_answer, Answer, Site};
use iomux_fuzz::{end_keeping_files, offer_keeping_files, DEFAULT};
use iomux_proto::http::files::range::Piece;
use iomux_proto::http::files::validators::Conditionals;
use iomux_proto::http::files::{FileBody, FileRequest, FileResponse, StaticFiles};
use iomux_proto::http::{Flow, Handler, Reply, Request};
use iomux_proto::{FileRegion, Http};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, Mutex};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let options = (selector >> 1) & 15;
    if selector & 1 == 0 {
        structured(options, rest);
    } else {
        raw(options, rest);
    }
});

// ---- structured ----

/// The body's bytes, file ranges read back (their descriptors checked).
fn body_bytes(site: &Site, body: &FileBody) -> Vec<u8> {
    let read = |file: &std::fs::File, start: u64, len: u64| {
        site.check_descriptor(file);
        let mut buf = vec![0; len as usize];
        std::os::unix::fs::FileExt::read_exact_at(file, &mut buf, start).unwrap();
        buf
    };
    match body {
        FileBody::Empty => Vec::new(),
        FileBody::Bytes(b) => b.clone(),
        FileBody::Shared { bytes, range } => {
            bytes[range.start as usize..range.end as usize].to_vec()
        }
        FileBody::File { file, range } => read(file, range.start, range.len()),
        FileBody::Multipart { file, pieces } => pieces
            .iter()
            .flat_map(|p| match p {
                Piece::Bytes(b) => b.clone(),
                Piece::File(r) => read(file, r.start, r.len()),
            })
            .collect(),
    }
}

fn headers_of(r: &FileResponse) -> Vec<(String, Vec<u8>)> {
    r.headers()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_vec()))
        .collect()
}

/// Check `r`, the answer to a request with `method`; its headers.
fn check_response(
    site: &Site,
    options: u8,
    method: &[u8],
    r: &FileResponse,
) -> Vec<(String, Vec<u8>)> {
    let bytes = body_bytes(site, &r.body);
    let headers = headers_of(r);
    let answer = Answer {
        status: r.status,
        headers: headers.clone(),
        body: (method != b"HEAD").then_some(&bytes[..]),
        length: (!matches!(r.body, FileBody::Empty)).then_some(bytes.len() as u64),
    };
    check_answer(site, options, &answer);
    headers
}

/// `field` with `$E` and `$D` replaced by `etag` and `date`.
fn substitute(field: &[u8], etag: &[u8], date: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        match field.get(i..i + 2) {
            Some(b"$E") => out.extend_from_slice(etag),
            Some(b"$D") => out.extend_from_slice(date),
            _ => {
                out.push(field[i]);
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    out
}

fn structured(options: u8, input: &[u8]) {
    let site = Site::get();
    let files = site.files(options);
    let fields: Vec<&[u8]> = input.splitn(10, |&b| b == b'\n').collect();
    let field = |i: usize| fields.get(i).copied().filter(|f| !f.is_empty());
    let method = field(0).unwrap_or(b"GET");
    let path = String::from_utf8_lossy(field(1).unwrap_or(b"/")).into_owned();
    let query = field(2).map(|q| String::from_utf8_lossy(q).into_owned());
    let accept_encoding = field(9);
    // The validators of the representation the request selects.
    let plain = FileRequest {
        method: b"GET",
        path: &path,
        query: query.as_deref(),
        accept_encoding,
        ..Default::default()
    };
    let current = files.respond(&plain);
    let etag = current.header("etag").unwrap_or(b"\"none\"").to_vec();
    let date = current
        .header("last-modified")
        .unwrap_or(b"Thu, 01 Jan 1970 00:00:00 GMT")
        .to_vec();
    let owned: Vec<Option<Vec<u8>>> = (3..9)
        .map(|i| field(i).map(|f| substitute(f, &etag, &date)))
        .collect();
    let request = FileRequest {
        method,
        path: &path,
        query: query.as_deref(),
        conditionals: Conditionals {
            if_match: owned[0].as_deref(),
            if_none_match: owned[1].as_deref(),
            if_modified_since: owned[2].as_deref(),
            if_unmodified_since: owned[3].as_deref(),
            if_range: owned[4].as_deref(),
        },
        range: owned[5].as_deref(),
        accept_encoding,
    };
    let response = files.respond(&request);
    let headers = check_response(site, options, method, &response);
    if request.accept_encoding.is_none() {
        assert!(
            response.header("content-encoding").is_none(),
            "an encoding not asked for"
        );
    }

    // The same request with the open-file cache toggled: the same answer.
    let other = site.files(options ^ 4).respond(&request);
    let multipart = |h: &(String, Vec<u8>)| {
        !(h.0 == "content-type" && h.1.starts_with(b"multipart/byteranges"))
    };
    assert_eq!(
        response.status, other.status,
        "the cache changed the status"
    );
    assert_eq!(
        headers.iter().filter(|h| multipart(h)).collect::<Vec<_>>(),
        headers_of(&other)
            .iter()
            .filter(|h| multipart(h))
            .collect::<Vec<_>>(),
        "the cache changed the headers"
    );
    assert_eq!(
        response.body.len(),
        other.body.len(),
        "the cache changed the length"
    );

    // HEAD answers what GET does (HEAD ignores Range, RFC 9110 §14.2).
    if method == b"GET" || method == b"HEAD" {
        let without_range = |method| FileRequest {
            method,
            range: None,
            ..request
        };
        let get = files.respond(&without_range(b"GET"));
        let head = files.respond(&without_range(b"HEAD"));
        let get_headers = check_response(site, options, b"GET", &get);
        let head_headers = check_response(site, options, b"HEAD", &head);
        assert_eq!(get.status, head.status, "HEAD's status differs from GET's");
        assert_eq!(get_headers, head_headers, "HEAD's fields differ from GET's");
        assert_eq!(
            get.body.len(),
            head.body.len(),
            "HEAD's length differs from GET's"
        );
    }
}

// ---- raw ----

/// The handler as the CLI wires it, noting whether each request it answers
/// is HEAD (so that the output can be split into answers).
struct Noting {
    files: &'static StaticFiles,
    heads: Arc<Mutex<Vec<bool>>>,
}

impl Handler for Noting {
    fn call(&self, req: &Request<'_>, reply: &mut Reply<'_, '_>) -> Flow {
        self.heads.lock().unwrap().push(req.method() == "HEAD");
        self.files.call(req, reply)
    }
}

/// `out` with each file region's bytes read back in its place (each
/// region's descriptor checked).
fn with_regions(site: &Site, out: &[u8], regions: &[(usize, FileRegion)]) -> Vec<u8> {
    let mut stream = Vec::with_capacity(out.len());
    let mut at = 0;
    for (position, region) in regions {
        site.check_descriptor(region.file());
        stream.extend_from_slice(&out[at..*position]);
        at = *position;
        let mut buf = vec![0; region.len() as usize];
        let mut filled = 0;
        while filled < buf.len() {
            let piece = FileRegion::new(
                region.file().clone(),
                region.offset() + filled as u64,
                region.len() - filled as u64,
            );
            let n = piece.read_at(&mut buf[filled..]).unwrap();
            assert!(n > 0, "a region past its file's end");
            filled += n;
        }
        stream.extend_from_slice(&buf);
    }
    stream.extend_from_slice(&out[at..]);
    stream
}

fn raw(options: u8, input: &[u8]) {
    let site = Site::get();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let handler = Arc::new(Noting {
        files: site.files(options),
        heads: heads.clone(),
    });
    let mut http = Http::new(&DEFAULT, handler);
    let mut out = Vec::new();
    let mut regions = Vec::new();
    let step = offer_keeping_files(&mut http, input, &mut out, &mut regions);
    assert!(step.consumed <= input.len());
    if !step.close {
        end_keeping_files(&mut http, &input[step.consumed..], &mut out, &mut regions);
    }
    let stream = with_regions(site, &out, &regions);
    let heads = heads.lock().unwrap().clone();
    check_stream(site, options, &stream, &heads);
}

/// Split `stream` into answers: one per handler call (HEAD or not as
/// `heads` says), checked, then at most one the core wrote itself (an error
/// that closes), with any `100 Continue` between.
fn check_stream(site: &Site, options: u8, mut stream: &[u8], heads: &[bool]) {
    let mut answered = 0;
    while !stream.is_empty() {
        let mut fields = [httparse::EMPTY_HEADER; 24];
        let mut response = httparse::Response::new(&mut fields);
        let Ok(httparse::Status::Complete(head_len)) = response.parse(stream) else {
            panic!("a malformed answer: {:?}", String::from_utf8_lossy(stream));
        };
        let status = response.code.unwrap();
        let headers: Vec<(String, Vec<u8>)> = response
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
            .collect();
        let rest = &stream[head_len..];
        if status == 100 {
            stream = rest;
            continue;
        }
        let length: Option<u64> = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| std::str::from_utf8(v).unwrap().parse().unwrap());
        let Some(&head) = heads.get(answered) else {
            // The core's own answer: an error that ends the connection.
            let close = headers
                .iter()
                .any(|(n, v)| n == "connection" && v == b"close");
            assert!(
                close && status >= 400,
                "the core answered {status} without closing"
            );
            assert_eq!(
                rest.len() as u64,
                length.unwrap_or(0),
                "output after the core's answer"
            );
            return;
        };
        answered += 1;
        let body_len = if head || status == 304 {
            0
        } else {
            length.expect("an answer without Content-Length") as usize
        };
        assert!(rest.len() >= body_len, "a body cut short");
        let answer = Answer {
            status,
            headers,
            body: (!head).then_some(&rest[..body_len]),
            length,
        };
        check_answer(site, options, &answer);
        stream = &rest[body_len..];
    }
    assert_eq!(
        answered,
        heads.len(),
        "a handler's answer missing from the output"
    );
}
