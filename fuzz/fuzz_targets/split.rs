//! Structure-aware: a stream of mostly valid requests (some mutated) cut into
//! reads at random points must get byte-identical answers to the whole stream,
//! and those answers must be well-formed.
#![no_main]

use arbitrary::Arbitrary;
use iomux_fuzz::{check_output, routes, DEFAULT, SMALL};
use iomux_proto::http::feed_in_reads;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Method {
    Get,
    Head,
    Post,
    Put,
}

#[derive(Debug, Arbitrary)]
enum Path {
    Root,
    Plaintext,
    Echo,
    Other(u8),
}

#[derive(Debug, Arbitrary)]
enum Framing {
    None,
    Length,
    /// Chunked, in pieces of this many bytes (0 means 1).
    Chunked(u8),
    /// A raw Content-Length value (may be malformed).
    RawLength(String),
    /// A raw Transfer-Encoding value.
    RawEncoding(String),
}

#[derive(Debug, Arbitrary)]
struct Request {
    method: Method,
    path: Path,
    http10: bool,
    host: bool,
    close: bool,
    keep_alive: bool,
    framing: Framing,
    body: Vec<u8>,
    extra_header: Option<(String, String)>,
    leading_blank_lines: u8,
    lf_only: bool,
}

#[derive(Debug, Arbitrary)]
enum Piece {
    Request(Request),
    /// Arbitrary bytes (garbage, partial requests).
    Raw(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
struct Input {
    pieces: Vec<Piece>,
    /// Flip these bytes after rendering: (position, new byte).
    mutations: Vec<(u16, u8)>,
    cuts: Vec<u16>,
    small_limits: bool,
}

fn render(r: &Request, out: &mut Vec<u8>) {
    let eol: &[u8] = if r.lf_only { b"\n" } else { b"\r\n" };
    for _ in 0..r.leading_blank_lines % 3 {
        out.extend_from_slice(eol);
    }
    let method: &[u8] = match r.method {
        Method::Get => b"GET",
        Method::Head => b"HEAD",
        Method::Post => b"POST",
        Method::Put => b"PUT",
    };
    let path = match &r.path {
        Path::Root => "/".to_string(),
        Path::Plaintext => "/plaintext".to_string(),
        Path::Echo => "/echo".to_string(),
        Path::Other(n) => format!("/p{n}"),
    };
    out.extend_from_slice(method);
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(if r.http10 { b" HTTP/1.0" } else { b" HTTP/1.1" });
    out.extend_from_slice(eol);
    let mut header = |name: &str, value: &[u8]| {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(eol);
    };
    if r.host {
        header("Host", b"example");
    }
    if r.close {
        header("Connection", b"close");
    } else if r.keep_alive {
        header("Connection", b"keep-alive");
    }
    if let Some((n, v)) = &r.extra_header {
        // 100-continue makes output depend on the split by design.
        if !v.to_ascii_lowercase().contains("100-continue") {
            header(n, v.as_bytes());
        }
    }
    let mut body = Vec::new();
    match &r.framing {
        Framing::None => {}
        Framing::Length => {
            header("Content-Length", r.body.len().to_string().as_bytes());
            body.extend_from_slice(&r.body);
        }
        Framing::Chunked(size) => {
            header("Transfer-Encoding", b"chunked");
            for piece in r.body.chunks(usize::from(*size).max(1)) {
                body.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                body.extend_from_slice(piece);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n\r\n");
        }
        Framing::RawLength(v) => {
            header("Content-Length", v.as_bytes());
            body.extend_from_slice(&r.body);
        }
        Framing::RawEncoding(v) => {
            header("Transfer-Encoding", v.as_bytes());
            body.extend_from_slice(&r.body);
        }
    }
    out.extend_from_slice(eol);
    out.extend_from_slice(&body);
}

fuzz_target!(|input: Input| {
    let mut stream = Vec::new();
    for piece in &input.pieces {
        match piece {
            Piece::Request(r) => render(r, &mut stream),
            Piece::Raw(bytes) => stream.extend_from_slice(bytes),
        }
    }
    if stream.is_empty() {
        return;
    }
    for &(at, byte) in &input.mutations {
        let n = stream.len();
        stream[usize::from(at) % n] = byte;
    }
    if stream
        .windows(12)
        .any(|w| w.eq_ignore_ascii_case(b"100-continue"))
    {
        return;
    }
    let config = if input.small_limits { &SMALL } else { &DEFAULT };
    let cuts: Vec<usize> = input.cuts.iter().map(|&c| usize::from(c)).collect();
    let whole = feed_in_reads(config, routes(), &stream, &[]);
    check_output(&whole.0, whole.1);
    let split = feed_in_reads(config, routes(), &stream, &cuts);
    assert_eq!(whole, split, "the split changed the output");
});
