//! The state machine over a corpus of good and hostile requests, and the
//! property that how bytes are split into reads never changes the output.

use super::*;
use proptest::prelude::*;

static FIXED: HttpConfig = HttpConfig::new(HttpLimits::DEFAULT, fixed_clock);

static SMALL: HttpConfig = HttpConfig::new(
    HttpLimits {
        max_request_line: 64,
        max_head: 256,
        max_headers: 8,
        max_body: 100,
    },
    fixed_clock,
);

/// A connection serving the hello routes, as `iomux serve` does.
type Conn = Http<std::sync::Arc<Router>>;

fn routes() -> std::sync::Arc<Router> {
    std::sync::Arc::new(hello::routes())
}

fn http() -> Conn {
    Http::new(&FIXED, routes())
}

fn http_with(config: &'static HttpConfig) -> Conn {
    Http::new(config, routes())
}

/// A connection's calls with a throwaway context: output to `out`; whether
/// it asked to close by a command is folded into the step.
trait Drive {
    fn input(&mut self, input: &[u8], out: &mut Vec<u8>) -> Step;
    fn eof(&mut self, pending: &[u8], out: &mut Vec<u8>);
    fn timeout(&mut self, out: &mut Vec<u8>);
}

/// Call `f` with a context for connection 0:1 writing to `out`; returns
/// its result and whether it asked to close by command.
fn with_cx<R>(out: &mut Vec<u8>, f: impl FnOnce(&mut Context) -> R) -> (R, bool) {
    let mut commands = Vec::new();
    let id = crate::ConnId::new(0, 1);
    let r = f(&mut Context::new(
        id,
        std::time::Instant::now(),
        out,
        &mut commands,
    ));
    (r, commands.contains(&crate::Command::Close(id)))
}

impl<S: Service> Drive for S {
    fn input(&mut self, input: &[u8], out: &mut Vec<u8>) -> Step {
        let (step, closed) = with_cx(out, |cx| self.on_data(input, cx));
        Step {
            close: step.close || closed,
            ..step
        }
    }

    fn eof(&mut self, pending: &[u8], out: &mut Vec<u8>) {
        with_cx(out, |cx| self.on_eof(pending, cx));
    }

    fn timeout(&mut self, out: &mut Vec<u8>) {
        with_cx(out, |cx| self.on_timeout(cx));
    }
}

/// Feed `input` whole; returns the output and the step.
fn feed(proto: &mut Conn, input: &[u8]) -> (Vec<u8>, Step) {
    let mut out = Vec::new();
    let step = proto.input(input, &mut out);
    (out, step)
}

/// One parsed response: status, headers (lower-case names), body.
#[derive(Debug)]
struct Parsed {
    code: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Parsed {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Split `out` into responses; `head_only[i]` says response i has no body.
fn parse_responses(mut out: &[u8], head_only: &[bool]) -> Vec<Parsed> {
    let mut all = Vec::new();
    while !out.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let n = match resp.parse(out).expect("well-formed response") {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => {
                panic!("truncated response: {:?}", String::from_utf8_lossy(out))
            }
        };
        let code = resp.code.unwrap();
        let headers: Vec<(String, String)> = resp
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8(h.value.to_vec()).unwrap(),
                )
            })
            .collect();
        out = &out[n..];
        let mut body = Vec::new();
        if code != 100 {
            let index = all.iter().filter(|p: &&Parsed| p.code != 100).count();
            let len: usize = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .expect("Content-Length on every response")
                .1
                .parse()
                .unwrap();
            if !head_only.get(index).copied().unwrap_or(false) {
                body = out[..len].to_vec();
                out = &out[len..];
            }
        }
        all.push(Parsed {
            code,
            headers,
            body,
        });
    }
    all
}

fn assert_standard_headers(p: &Parsed) {
    assert_eq!(p.header("server"), Some("iomux"));
    assert_eq!(p.header("content-type"), Some("text/plain"));
    assert_eq!(p.header("date"), Some("Sun, 06 Nov 1994 08:49:37 GMT"));
    assert!(p.header("content-length").is_some());
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

#[test]
fn state_is_small() {
    // An idle connection's whole HTTP state: the handler and exchange
    // pointers, the body framing and the response's progress.
    assert!(
        std::mem::size_of::<Conn>() <= 80,
        "Http is {} bytes",
        std::mem::size_of::<Conn>()
    );
    assert!(std::mem::size_of::<ChunkedDecoder>() <= 16);
}

#[test]
fn hello_routes() {
    for (req, body) in [
        (&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], HELLO),
        (b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n", HELLO),
        (b"GET /plaintext?q=1 HTTP/1.1\r\nHost: x\r\n\r\n", HELLO),
        (b"GET / HTTP/1.1\nHost: x\n\n", HELLO),
        (b"GET http://x/plaintext HTTP/1.1\r\nHost: x\r\n\r\n", HELLO),
        (b"GET HTTP://x:8080 HTTP/1.1\r\nHost: x\r\n\r\n", HELLO),
        (b"GET http://x?a=b HTTP/1.1\r\nHost: x\r\n\r\n", HELLO),
        (b"\r\n\r\n\nGET / HTTP/1.1\r\nhost: x\r\n\r\n", HELLO),
    ] {
        let (out, step) = feed(&mut http(), req);
        assert_eq!(
            step,
            Step::keep(req.len()),
            "{:?}",
            String::from_utf8_lossy(req)
        );
        let r = parse_responses(&out, &[]);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].code, 200);
        assert_eq!(r[0].body, body);
        assert_eq!(r[0].header("connection"), None);
        assert_standard_headers(&r[0]);
    }
}

#[test]
fn exact_hello_response_bytes() {
    let (out, _) = feed(&mut http(), GET);
    assert_eq!(
        out,
        b"HTTP/1.1 200 OK\r\nServer: iomux\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\
          Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\nHello, World!"
    );
}

#[test]
fn head_has_headers_and_no_body() {
    let req = b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nHEAD /nope HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let (out, step) = feed(&mut http(), req);
    assert!(!step.close);
    let r = parse_responses(&out, &[true, true, false]);
    assert_eq!(r.len(), 3);
    assert_eq!(
        (r[0].code, r[0].header("content-length")),
        (200, Some("13"))
    );
    assert!(r[0].body.is_empty());
    assert_eq!(r[1].code, 404);
    assert_eq!(r[2].body, HELLO);
}

#[test]
fn unknown_path_and_wrong_method() {
    let req = b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n\
                POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\
                DELETE /echo HTTP/1.1\r\nHost: x\r\n\r\n\
                PUT /plaintext HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
                GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let (out, step) = feed(&mut http(), req);
    assert_eq!(step, Step::keep(req.len()));
    let r = parse_responses(&out, &[]);
    let codes: Vec<u16> = r.iter().map(|p| p.code).collect();
    assert_eq!(codes, [404, 405, 405, 405, 200]);
    assert_eq!(r[1].header("allow"), Some("GET, HEAD"));
    assert_eq!(r[2].header("allow"), Some("POST"));
    assert_eq!(r[3].header("allow"), Some("GET, HEAD"));
    for p in &r {
        assert_standard_headers(p);
        assert_eq!(
            p.header("connection"),
            None,
            "route answers keep the connection"
        );
    }
}

#[test]
fn echo_with_length_and_chunked() {
    let req = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
                POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nTrailer: t\r\n\r\n\
                POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n\
                POST /echo HTTP/1.1\r\nHost: x\r\n\r\n";
    let (out, step) = feed(&mut http(), req);
    assert_eq!(step, Step::keep(req.len()));
    let r = parse_responses(&out, &[]);
    let bodies: Vec<&[u8]> = r.iter().map(|p| &p.body[..]).collect();
    assert_eq!(bodies, [&b"hello"[..], b"abcde", b"", b""]);
    assert!(r.iter().all(|p| p.code == 200));
}

#[test]
fn echo_streams_a_length_body_across_reads() {
    let mut p = http();
    let (out1, s1) = feed(
        &mut p,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234",
    );
    assert_eq!(s1, Step::keep(57));
    assert!(!p.is_idle());
    let (out2, s2) = feed(&mut p, b"56789GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(!s2.close);
    assert!(p.is_idle());
    let all = [out1, out2].concat();
    let r = parse_responses(&all, &[]);
    assert_eq!(r[0].body, b"0123456789");
    assert_eq!(r[1].body, HELLO);
}

#[test]
fn ignored_bodies_are_consumed_before_the_next_request() {
    // The body of a GET looks like a request; it must not be served as one.
    let req = b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 28\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n\
                GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n";
    let (out, _) = feed(&mut http(), req);
    let r = parse_responses(&out, &[]);
    assert_eq!(r.iter().map(|p| p.code).collect::<Vec<_>>(), [200, 200]);
}

#[test]
fn pipeline_of_sixteen_in_one_call() {
    let req: Vec<u8> = GET.repeat(16);
    let (out, step) = feed(&mut http(), &req);
    assert_eq!(step, Step::keep(req.len()));
    let r = parse_responses(&out, &[]);
    assert_eq!(r.len(), 16);
    assert!(r.iter().all(|p| p.code == 200 && p.body == HELLO));
}

#[test]
fn pipelined_requests_wait_once_the_output_reaches_the_engines_mark() {
    let req: Vec<u8> = GET.repeat(16);
    let mut conn = http();
    let (mut out, mut commands) = (Vec::new(), Vec::new());
    let id = crate::ConnId::new(0, 1);
    let now = std::time::Instant::now();
    // Room for about two answers: the third request is not parsed.
    let one = feed(&mut http(), GET).0.len();
    let mut cx = Context::new(id, now, &mut out, &mut commands).with_output_room(one + 1);
    let step = conn.on_data(&req, &mut cx);
    assert_eq!(step, Step::keep(2 * GET.len()));
    assert_eq!(parse_responses(&out, &[]).len(), 2);
    // Offered again with room for all: the other fourteen, in order.
    let mut rest = Vec::new();
    let mut cx = Context::new(id, now, &mut rest, &mut commands);
    assert_eq!(
        conn.on_data(&req[2 * GET.len()..], &mut cx),
        Step::keep(14 * GET.len())
    );
    assert_eq!(parse_responses(&rest, &[]).len(), 14);
}

#[test]
fn responses_copied_within_a_slice_match_those_rendered_alone() {
    // After a slice's first hello response the others are copied from it in
    // `out` (which may already hold earlier output): each must still be what
    // its request gets on a connection of its own.
    let requests: [&[u8]; 6] = [
        b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"HEAD /plaintext HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ];
    let mut alone = b"earlier output".to_vec();
    for request in requests {
        alone.extend(feed(&mut http(), request).0);
    }
    let mut together = b"earlier output".to_vec();
    let step = http().input(&requests.concat(), &mut together);
    assert!(step.close);
    assert_eq!(
        String::from_utf8_lossy(&together),
        String::from_utf8_lossy(&alone)
    );
}

#[test]
fn partial_request_waits_unconsumed_and_is_not_idle() {
    let mut p = http();
    let (out, step) = feed(&mut p, b"GET / HTTP/1.1\r\nHo");
    assert!(out.is_empty());
    assert_eq!(step, Step::keep(0));
    assert!(!p.is_idle());
    let (out, step) = feed(&mut p, b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET");
    assert_eq!(step, Step::keep(GET.len()));
    assert_eq!(parse_responses(&out, &[]).len(), 1);
    assert!(!p.is_idle(), "a pipelined partial request is pending");
    let (_, step) = feed(&mut p, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(!step.close);
    assert!(p.is_idle());
}

#[test]
fn keep_alive_rules() {
    // HTTP/1.1 Connection: close, HTTP/1.0 default, HTTP/1.0 keep-alive.
    let (out, step) = feed(
        &mut http(),
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(step.close);
    assert_eq!(
        parse_responses(&out, &[])[0].header("connection"),
        Some("close")
    );
    let (out, step) = feed(&mut http(), b"GET / HTTP/1.0\r\n\r\n");
    assert!(step.close);
    assert_eq!(
        parse_responses(&out, &[])[0].header("connection"),
        Some("close")
    );
    let mut p = http();
    let (out, step) = feed(&mut p, b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
    assert!(!step.close);
    let r = parse_responses(&out, &[]);
    assert_eq!(
        (r[0].code, r[0].header("connection")),
        (200, Some("keep-alive"))
    );
    let (_, step) = feed(
        &mut p,
        b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
    );
    assert!(step.close);
}

#[test]
fn connection_close_mid_pipeline_drops_later_requests() {
    let req = [
        GET,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        GET,
        GET,
    ]
    .concat();
    let mut p = http();
    let (out, step) = feed(&mut p, &req);
    assert!(step.close);
    assert_eq!(parse_responses(&out, &[]).len(), 2);
    let (out, step) = feed(&mut p, GET);
    assert!(out.is_empty() && step.close, "nothing is read after close");
}

#[test]
fn expect_continue() {
    let mut p = http();
    let head =
        b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n";
    let (out, step) = feed(&mut p, head);
    assert_eq!(step.consumed, head.len());
    assert!(out.starts_with(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"));
    let (out2, _) = feed(&mut p, b"abcd");
    assert_eq!(out2, b"abcd");
    // Body already there: no 100.
    let mut with_body = head.to_vec();
    with_body.extend_from_slice(b"abcd");
    let (out, _) = feed(&mut http(), &with_body);
    assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n"));
    // Chunked, body held back.
    let head = b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut p = http();
    let (out, _) = feed(&mut p, head);
    assert_eq!(out, b"HTTP/1.1 100 Continue\r\n\r\n");
    let (out, _) = feed(&mut p, b"2\r\nhi\r\n0\r\n\r\n");
    assert_eq!(parse_responses(&out, &[])[0].body, b"hi");
    // HTTP/1.0 clients do not get a 100.
    let (out, _) = feed(
        &mut http(),
        b"POST /echo HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
    );
    assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n"));
}

#[test]
fn eof_answers_complete_pending_requests_only() {
    let mut p = http();
    let mut out = Vec::new();
    p.eof(GET, &mut out);
    assert_eq!(parse_responses(&out, &[]).len(), 1);
    let mut p = http();
    let mut out = Vec::new();
    p.eof(b"GET / HT", &mut out);
    assert!(out.is_empty());
}

#[test]
fn timeout_sends_408_only_mid_request() {
    /// What a connection that received `input` sends when its deadline passes.
    fn on_timeout_after(input: &[u8]) -> Vec<u8> {
        let mut p = http();
        feed(&mut p, input);
        let mut out = Vec::new();
        p.timeout(&mut out);
        assert!(p.is_idle(), "nothing more is read after a timeout");
        out
    }
    let idle = on_timeout_after(GET);
    assert!(
        idle.is_empty(),
        "an idle keep-alive connection closes silently"
    );
    let r = parse_responses(&on_timeout_after(b"GET / HTTP/1.1\r\n"), &[]);
    assert_eq!((r[0].code, r[0].header("connection")), (408, Some("close")));
    // After a streamed response has begun, no status can follow.
    let started =
        on_timeout_after(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nab");
    assert!(started.is_empty(), "the streamed echo just stops");
    // A body still arriving for an answer not begun: 408.
    let gathering = on_timeout_after(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab",
    );
    assert_eq!(parse_responses(&gathering, &[])[0].code, 408);
    // A body still being discarded after its answer (405) went out: silence.
    let discarding = on_timeout_after(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nab");
    assert!(discarding.is_empty(), "the answer went out already");
}

/// Hostile requests with the status each must get. Each is followed by a
/// good request that must NOT be answered.
fn hostile_corpus() -> Vec<(String, Vec<u8>, u16)> {
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000));
    let mut many_headers = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..100 {
        many_headers.push_str(&format!("X-{i}: v\r\n"));
    }
    many_headers.push_str("\r\n");
    let big_head = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(70_000)
    );
    let mut trailers =
        String::from("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n");
    for _ in 0..1000 {
        trailers.push_str("X-Trailer: 0123456789\r\n");
    }
    trailers.push_str("\r\n");
    let chunked = |body: &str| {
        format!("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{body}")
    };
    let with_header = |h: &str| format!("GET / HTTP/1.1\r\nHost: x\r\n{h}\r\n\r\n");
    let post = |h: &str| format!("POST /echo HTTP/1.1\r\nHost: x\r\n{h}\r\n\r\nhello");
    let cases: Vec<(&str, String, u16)> = vec![
        (
            "CL and TE",
            post("Content-Length: 5\r\nTransfer-Encoding: chunked"),
            400,
        ),
        ("CL +5", post("Content-Length: +5"), 400),
        ("CL -1", post("Content-Length: -1"), 400),
        ("CL 1x", post("Content-Length: 1x"), 400),
        ("CL empty", post("Content-Length: "), 400),
        ("CL hex", post("Content-Length: 0x5"), 400),
        (
            "CL overflow",
            post("Content-Length: 99999999999999999999999"),
            400,
        ),
        ("CL list differs", post("Content-Length: 5, 6"), 400),
        (
            "CL headers differ",
            post("Content-Length: 5\r\nContent-Length: 6"),
            400,
        ),
        ("CL too large", post("Content-Length: 2000000"), 413),
        ("TE gzip", post("Transfer-Encoding: gzip"), 501),
        (
            "TE gzip, chunked",
            post("Transfer-Encoding: gzip, chunked"),
            501,
        ),
        (
            "TE chunked, gzip",
            post("Transfer-Encoding: chunked, gzip"),
            501,
        ),
        (
            "TE chunked twice",
            post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked"),
            501,
        ),
        ("TE empty", post("Transfer-Encoding: "), 400),
        (
            "TE on 1.0",
            "POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(),
            400,
        ),
        ("obs-fold", with_header("X-A: a\r\n b"), 400),
        (
            "space before first header",
            "GET / HTTP/1.1\r\n Host: x\r\n\r\n".into(),
            400,
        ),
        ("space before colon", with_header("X-A : a"), 400),
        ("bare CR in value", with_header("X-A: a\rb"), 400),
        (
            "bare CR ends request line",
            "GET / HTTP/1.1\rHost: x\r\n\r\n".into(),
            400,
        ),
        (
            "leading bare CR",
            "\rGET / HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            400,
        ),
        ("NUL in name", with_header("X-\0A: a"), 400),
        ("NUL in value", with_header("X-A: a\0b"), 400),
        ("DEL in value", with_header("X-A: a\x7fb"), 400),
        ("control in value", with_header("X-A: a\x01b"), 400),
        (
            "control in target",
            "GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            400,
        ),
        (
            "NUL in target",
            "GET /a\0b HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            400,
        ),
        (
            "space in target",
            "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            400,
        ),
        ("missing Host", "GET / HTTP/1.1\r\n\r\n".into(), 400),
        (
            "invalid Host",
            "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n".into(),
            400,
        ),
        (
            "invalid Host on 1.0",
            "GET / HTTP/1.0\r\nHost: a b\r\n\r\n".into(),
            400,
        ),
        (
            "trailer without colon",
            chunked("0\r\nX-Trailer\r\n\r\n"),
            400,
        ),
        ("duplicate Host", with_header("Host: y"), 400),
        (
            "duplicate Host on 1.0",
            "GET / HTTP/1.0\r\nHost: x\r\nHost: y\r\n\r\n".into(),
            400,
        ),
        ("HTTP/2.0", "GET / HTTP/2.0\r\nHost: x\r\n\r\n".into(), 505),
        ("HTTP/0.9", "GET / HTTP/0.9\r\nHost: x\r\n\r\n".into(), 505),
        ("HTTP/1.2", "GET / HTTP/1.2\r\nHost: x\r\n\r\n".into(), 505),
        (
            "version garbage",
            "GET / HTXP/1.1\r\nHost: x\r\n\r\n".into(),
            400,
        ),
        ("no version", "GET /\r\nHost: x\r\n\r\n".into(), 400),
        (
            "garbage line",
            "\x16\x03\x01\x02\0\x01\0\x01\x7c\x03\x03\n\r\n".into(),
            400,
        ),
        (
            "double space",
            "GET  / HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            400,
        ),
        ("request line too long", long_target, 414),
        ("too many headers", many_headers, 431),
        ("head too large", big_head, 431),
        ("bad chunk size", chunked("zz\r\nhello\r\n0\r\n\r\n"), 400),
        (
            "negative chunk size",
            chunked("-5\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        (
            "overflowing chunk size",
            chunked("100000000000000005\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        ("chunk without CRLF", chunked("5\r\nhelloX0\r\n\r\n"), 400),
        ("chunk size bare LF", chunked("5\nhello\r\n0\r\n\r\n"), 400),
        ("chunk too large", chunked("200000\r\n"), 413),
        (
            "chunk extensions too long",
            chunked(&format!("1;{}\r\n", "e".repeat(5000))),
            400,
        ),
        ("trailers too long", trailers, 431),
    ];
    cases
        .into_iter()
        .map(|(name, req, code)| (name.to_string(), req.into_bytes(), code))
        .collect()
}

#[test]
fn hostile_requests_get_their_status_and_close() {
    for (name, req, code) in hostile_corpus() {
        // Whole, with a good request behind it that must not be answered.
        let mut input = req.clone();
        input.extend_from_slice(GET);
        let mut p = http();
        let (out, step) = feed(&mut p, &input);
        assert!(step.close, "{name}: connection must close");
        let r = parse_responses(&out, &[]);
        let last = r.last().unwrap_or_else(|| panic!("{name}: no response"));
        assert_eq!(last.code, code, "{name}");
        assert_eq!(last.header("connection"), Some("close"), "{name}");
        assert_standard_headers(last);
        assert!(
            r.iter()
                .all(|p| p.code != 200 || p.body != HELLO || r.len() == 1),
            "{name}: nothing after the error"
        );
        assert!(r.len() <= 2, "{name}: {} responses", r.len());
        let (more, step) = feed(&mut p, GET);
        assert!(
            more.is_empty() && step.close,
            "{name}: input after the error is dropped"
        );
    }
}

#[test]
fn hostile_requests_fed_byte_by_byte_get_the_same_answer() {
    for (name, req, code) in hostile_corpus() {
        if req.len() > 20_000 {
            continue; // quadratic in this harness only; the split proptest covers large ones
        }
        let (out, close) =
            feed_in_reads(&FIXED, routes(), &req, &(1..req.len()).collect::<Vec<_>>());
        assert!(close, "{name}");
        let r = parse_responses(&out, &[]);
        assert_eq!(r.last().map(|p| p.code), Some(code), "{name}");
    }
}

#[test]
fn trickled_head_over_the_limit_is_rejected_without_its_end() {
    // No LF: the request line alone passes its limit.
    let mut p = http_with(&SMALL);
    let (out, step) = feed(&mut p, &[b'A'; 65]);
    assert!(step.close, "65 bytes without LF exceed a 64-byte line");
    assert_eq!(parse_responses(&out, &[])[0].code, 414);
    // A valid line, then headers that never end.
    let mut p = http_with(&SMALL);
    let mut head = b"GET / HTTP/1.1\r\n".to_vec();
    let mut out = Vec::new();
    let mut closed = false;
    for _ in 0..300 {
        head.extend_from_slice(b"X-A: 1234\r\n"[..1].as_ref());
        head.extend_from_slice(b"-A: 1234\r\n");
        let step = p.input(&head, &mut out);
        if step.close {
            closed = true;
            break;
        }
        assert_eq!(step.consumed, 0);
    }
    assert!(closed);
    assert!(head.len() <= 256 + 11);
    assert_eq!(parse_responses(&out, &[])[0].code, 431);
}

#[test]
fn small_limits_from_config() {
    let cases: &[(&[u8], u16)] = &[
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n", 413),
        (b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\nF: 1\r\nG: 1\r\nH: 1\r\n\r\n", 431),
    ];
    for (req, code) in cases {
        let (out, step) = feed(&mut http_with(&SMALL), req);
        assert!(step.close);
        assert_eq!(parse_responses(&out, &[])[0].code, *code);
    }
    let ok = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n";
    let (out, step) = feed(&mut http_with(&SMALL), ok);
    assert!(!step.close);
    assert!(out.starts_with(b"HTTP/1.1 200 OK"));
}

/// Requests the split property draws from (no `Expect`: a 100 Continue is
/// sent exactly when the body has not arrived yet, which depends on the split).
fn piece() -> impl Strategy<Value = Vec<u8>> {
    let fixed: Vec<&'static [u8]> = vec![
        GET,
        b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n",
        b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;a=b\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: 1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
        b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
    ];
    prop_oneof![
        8 => proptest::sample::select(fixed).prop_map(|p| p.to_vec()),
        1 => proptest::collection::vec(proptest::sample::select(b"GET /\r\nHost:x0a;chunkedContent-Length1 ".to_vec()), 0..40),
        1 => (1usize..200).prop_map(|n| format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(n)).into_bytes()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn splitting_never_changes_the_output(
        pieces in proptest::collection::vec(piece(), 1..12),
        cuts in proptest::collection::vec(0usize..4000, 0..12),
        small in any::<bool>(),
    ) {
        let input: Vec<u8> = pieces.concat();
        let config = if small { &SMALL } else { &FIXED };
        let whole = feed_in_reads(config, routes(), &input, &[]);
        let split = feed_in_reads(config, routes(), &input, &cuts);
        prop_assert_eq!(&whole, &split);
        let bytewise = feed_in_reads(config, routes(), &input, &(1..input.len()).collect::<Vec<_>>());
        prop_assert_eq!(&whole, &bytewise);
    }

    #[test]
    fn mutated_streams_never_panic_and_stay_split_invariant(
        pieces in proptest::collection::vec(piece(), 1..6),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cuts in proptest::collection::vec(0usize..2000, 0..8),
    ) {
        let mut input: Vec<u8> = pieces.concat();
        if input.is_empty() { return Ok(()); }
        for (at, byte) in flips {
            let n = input.len();
            input[at % n] = byte;
        }
        let whole = feed_in_reads(&SMALL, routes(), &input, &[]);
        let split = feed_in_reads(&SMALL, routes(), &input, &cuts);
        prop_assert_eq!(&whole, &split);
    }
}

#[test]
fn other_target_forms_match_no_route() {
    for req in [
        &b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET ftp://x/plaintext HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://x/plaintextx HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET plaintext HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let (out, step) = feed(&mut http(), req);
        assert!(!step.close);
        let r = parse_responses(&out, &[]);
        assert_eq!(r[0].code, 404, "{:?}", String::from_utf8_lossy(req));
    }
}

#[test]
fn the_system_clock_is_the_real_time_to_the_second() {
    let secs = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let before = secs();
    let read = system_clock();
    let after = secs();
    // The coarse clock may trail the precise one by a tick across a second's edge.
    assert!(
        read + 1 >= before && read <= after,
        "{before} <= {read} <= {after}"
    );
    assert!(before > 1_700_000_000, "a plausible present");
}

#[test]
fn header_names_and_keep_alive_match_in_any_case() {
    let cases: &[(&[u8], u16, &[u8], bool)] = &[
        (b"GET / HTTP/1.1\r\nhOsT: x\r\n\r\n", 200, HELLO, false),
        (b"GET / HTTP/1.1\r\nHOST: x\r\nhost: y\r\n\r\n", 400, b"", true),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\ncontent-LENGTH: 3\r\n\r\nabc",
            200,
            b"abc",
            false,
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTRANSFER-encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            200,
            b"abc",
            false,
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\ncontent-length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            b"",
            true,
        ),
        (b"GET / HTTP/1.1\r\nHost: x\r\nCONNECTION: CLOSE\r\n\r\n", 200, HELLO, true),
        (b"GET / HTTP/1.0\r\nconnection: KEEP-ALIVE\r\n\r\n", 200, HELLO, false),
        (b"GET / HTTP/1.0\r\nConnection: keep-alivex\r\n\r\n", 200, HELLO, true),
    ];
    for &(req, code, body, close) in cases {
        let (out, step) = feed(&mut http(), req);
        let r = parse_responses(&out, &[]);
        let what = String::from_utf8_lossy(req);
        assert_eq!(r[0].code, code, "{what}");
        if code == 200 {
            assert_eq!(r[0].body, body, "{what}");
        }
        assert_eq!(step.close, close, "{what}");
    }
    // 100-continue is recognised whatever its case.
    let (out, _) = feed(
        &mut http(),
        b"POST /echo HTTP/1.1\r\nHost: x\r\nEXPECT: 100-Continue\r\nContent-Length: 2\r\n\r\n",
    );
    assert!(
        out.starts_with(CONTINUE),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
}

#[test]
fn a_query_never_changes_the_route() {
    let cases: &[(&[u8], u16)] = &[
        (b"GET /?q HTTP/1.1\r\nHost: x\r\n\r\n", 200),
        (b"GET /plaintext?a=1&b=2 HTTP/1.1\r\nHost: x\r\n\r\n", 200),
        (b"HEAD /plaintext? HTTP/1.1\r\nHost: x\r\n\r\n", 200),
        (b"POST /plaintext?x HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (b"GET /echo?x HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (
            b"POST /echo?x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nz",
            200,
        ),
        (b"GET /plaintextx?y HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"GET /?/plaintext HTTP/1.1\r\nHost: x\r\n\r\n", 200),
        (b"GET /nothing?/ HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"GET http://x/echo?q HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    ];
    for &(req, code) in cases {
        let (out, _) = feed(&mut http(), req);
        let r = parse_responses(&out, &[req.starts_with(b"HEAD")]);
        assert_eq!(r[0].code, code, "{}", String::from_utf8_lossy(req));
    }
}

/// A request line and a header of 1 MB each, trickled in 1 KiB reads (limits
/// raised to allow them), as an engine offers them: everything unconsumed
/// again in front of each new read. The head is examined in linear time:
/// each look resumes where the last one stopped instead of rescanning from
/// the first byte (that cost 2,000 reads x 0.5 MB on average: 1 GB).
#[test]
fn a_trickled_head_is_examined_in_linear_time() {
    static BIG: HttpConfig = HttpConfig::new(
        HttpLimits {
            max_request_line: 2 << 20,
            max_head: 4 << 20,
            ..HttpLimits::DEFAULT
        },
        fixed_clock,
    );
    let mut head = format!("GET /{} HTTP/1.1\r\n", "a".repeat(1 << 20)).into_bytes();
    head.extend_from_slice(format!("Host: x\r\nX-Big: {}\r\n\r\n", "b".repeat(1 << 20)).as_bytes());
    let mut http = http_with(&BIG);
    let (mut pending, mut out) = (Vec::new(), Vec::new());
    head::EXAMINED.with(|n| n.set(0));
    for read in head.chunks(1024) {
        pending.extend_from_slice(read);
        let step = http.input(&pending, &mut out);
        pending.drain(..step.consumed);
        assert!(!step.close);
    }
    let examined = head::EXAMINED.with(|n| n.get());
    assert_eq!(parse_responses(&out, &[])[0].code, 404, "the head was read");
    // The LF search and the final parse each pass over the head about once,
    // plus a first look and a final 1 KiB overlap: 4x the head is ample, and
    // rescanning from the start would be about 500x.
    assert!(
        examined <= 4 * head.len(),
        "{examined} bytes examined for a {}-byte head trickled in 1 KiB reads",
        head.len()
    );
}

/// Host values (RFC 9110 §7.2: `uri-host [ ":" port ]`, RFC 3986 §3.2.2):
/// the valid ones are served, any other gets 400 (RFC 9112 §3.2).
#[test]
fn host_values_follow_rfc_3986() {
    let valid: &[&str] = &[
        "example.com",
        "example.com:8080",
        "example.com:",
        "127.0.0.1",
        "127.0.0.1:80",
        "xn--bcher-kva.example",
        "a-b_c~d!$&'()*+,;=",
        "caf%C3%A9.example",
        "[::1]",
        "[::1]:8080",
        "[2001:db8::7]",
        "[::ffff:192.0.2.1]",
        "[v1.fe:80]",
        "",
    ];
    let invalid: &[&str] = &[
        "a/b",
        "a b",
        "user@example.com",
        "example.com:http",
        "example.com:80:80",
        "example.com:-1",
        "%zz.example",
        "%4",
        "[::1",
        "::1",
        "[zz::1]",
        "[::1]80",
        "[v.fe]",
        "[v1.]",
        "[fe80::1%25eth0]",
        "exa\"mple",
        "a?b",
        "a#b",
    ];
    for (values, want) in [(valid, 200), (invalid, 400)] {
        for value in values {
            let request = format!("GET / HTTP/1.1\r\nHost: {value}\r\n\r\n");
            let (out, _) = feed(&mut http(), request.as_bytes());
            assert_eq!(parse_responses(&out, &[])[0].code, want, "Host: {value:?}");
        }
    }
}
