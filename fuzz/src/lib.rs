//! Checks shared by the fuzz targets.

pub mod files;

use iomux_proto::http::{fixed_clock, hello, HttpConfig, HttpLimits, Router};
use iomux_proto::{Command, ConnId, Context, FileRegion, Http, Service, Step};
use std::sync::{Arc, OnceLock};

/// Default limits, fixed clock.
pub static DEFAULT: HttpConfig = HttpConfig::new(HttpLimits::DEFAULT, fixed_clock);

/// Tiny limits, so the fuzzer reaches every limit with short inputs.
pub static SMALL: HttpConfig = HttpConfig::new(
    HttpLimits {
        max_request_line: 48,
        max_head: 160,
        max_headers: 6,
        max_body: 64,
    },
    fixed_clock,
);

/// The routes `iomux serve --proto http` answers (without `/json`), made once.
pub fn routes() -> Arc<Router> {
    static ROUTES: OnceLock<Arc<Router>> = OnceLock::new();
    ROUTES.get_or_init(|| Arc::new(hello::routes())).clone()
}

/// A fresh connection serving [`routes`].
pub fn connection(config: &'static HttpConfig) -> Http<Arc<Router>> {
    Http::new(config, routes())
}

/// Offer `input` to `service`, output to `out`; a close asked by command
/// counts as the step's close.
pub fn offer(service: &mut impl Service, input: &[u8], out: &mut Vec<u8>) -> Step {
    offer_keeping_files(service, input, out, &mut Vec::new())
}

/// [`offer`], adding the file regions sent to `files`, each with the length
/// `out` had when it was sent (where it goes in the output).
pub fn offer_keeping_files(
    service: &mut impl Service,
    input: &[u8],
    out: &mut Vec<u8>,
    files: &mut Vec<(usize, FileRegion)>,
) -> Step {
    let id = ConnId::new(0, 1);
    let mut commands = Vec::new();
    let mut cx = Context::new(id, std::time::Instant::now(), out, &mut commands);
    let step = service.on_data(input, &mut cx);
    files.extend(cx.take_file_regions());
    Step {
        close: step.close || commands.contains(&Command::Close(id)),
        ..step
    }
}

/// The peer's FIN with `pending` unconsumed.
pub fn end(service: &mut impl Service, pending: &[u8], out: &mut Vec<u8>) {
    end_keeping_files(service, pending, out, &mut Vec::new());
}

/// [`end`], adding the file regions sent to `files` (as
/// [`offer_keeping_files`] does).
pub fn end_keeping_files(
    service: &mut impl Service,
    pending: &[u8],
    out: &mut Vec<u8>,
    files: &mut Vec<(usize, FileRegion)>,
) {
    let mut commands = Vec::new();
    let mut cx = Context::new(
        ConnId::new(0, 1),
        std::time::Instant::now(),
        out,
        &mut commands,
    );
    service.on_eof(pending, &mut cx);
    files.extend(cx.take_file_regions());
}

/// Statuses after which the server must close.
fn is_error(code: u16) -> bool {
    !matches!(code, 100 | 200 | 404 | 405)
}

fn header<'a>(headers: &[httparse::Header<'a>], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// Panic unless `out` is a sequence of well-formed responses: each head
/// complete with Server, Date, Content-Type and Content-Length; a body of
/// Content-Length bytes (or none, for HEAD; or cut short, for a streamed echo
/// the input ended in); an error status only last and with `Connection: close`.
/// `closed` says whether the protocol asked to close.
pub fn check_output(out: &[u8], closed: bool) {
    assert!(
        parses(out, closed),
        "malformed output: {:?}",
        String::from_utf8_lossy(out)
    );
}

fn parses(rest: &[u8], closed: bool) -> bool {
    if rest.is_empty() {
        return true;
    }
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(head)) = response.parse(rest) else {
        return false;
    };
    let code = response.code.unwrap_or(0);
    let after = &rest[head..];
    if code == 100 {
        return response.headers.is_empty() && parses(after, closed);
    }
    for name in ["server", "date", "content-type"] {
        if header(response.headers, name).is_none() {
            return false;
        }
    }
    let Some(length) = header(response.headers, "content-length")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return false;
    };
    if is_error(code) {
        // An error ends the output, with its whole body, and the connection.
        return closed
            && header(response.headers, "connection") == Some(b"close")
            && after.len() == length;
    }
    // A full body, then the next response...
    if after.len() >= length && parses(&after[length..], closed) {
        return true;
    }
    // ...or none (HEAD)...
    if length > 0 && parses(after, closed) {
        return true;
    }
    // ...or a streamed echo body the input ended in the middle of.
    code == 200 && after.len() < length
}
