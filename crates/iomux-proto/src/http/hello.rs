//! The routes `iomux serve --proto http` answers (`/`, `/plaintext`,
//! `POST /echo`), written on the public handler API like any application's.

use super::handler::{Exchange, Flow, Prepared, Reply};
use super::request::Request;
use super::response::Status;
use super::router::Router;
use std::sync::Arc;

/// The body of the hello-world routes.
pub const HELLO: &[u8] = b"Hello, World!";

/// `GET /` and `GET /plaintext` answer `Hello, World!`; `POST /echo`
/// answers its body.
///
/// ```
/// use iomux_proto::http::{hello, HttpConfig, HttpLimits, fixed_clock, feed_in_reads};
/// static CONFIG: HttpConfig = HttpConfig::new(HttpLimits::DEFAULT, fixed_clock);
/// let routes = std::sync::Arc::new(hello::routes());
/// let (out, _) = feed_in_reads(&CONFIG, routes, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &[]);
/// assert!(out.ends_with(b"\r\n\r\nHello, World!"));
/// ```
pub fn routes() -> Router {
    // Rendered once; each request adds only Date and Connection.
    let hello = Arc::new(Prepared::new(
        Status::OK,
        &[("Content-Type", "text/plain")],
        HELLO,
    ));
    let plaintext = hello.clone();
    Router::new()
        .get("/plaintext", move |_req, reply| {
            reply.send_prepared(&plaintext);
            Flow::Done
        })
        .get("/", move |_req, reply| {
            reply.send_prepared(&hello);
            Flow::Done
        })
        .post("/echo", echo)
}

/// A body of known length streams back as it arrives; a chunked one is
/// gathered (the core caps it at the body limit) and answered at its end.
fn echo(req: &Request<'_>, reply: &mut Reply<'_, '_>) -> Flow {
    match req.body_length() {
        Some(0) => {
            reply.send(Status::OK, "text/plain", b"");
            Flow::Done
        }
        Some(length) => {
            reply
                .head(Status::OK)
                .header("Content-Type", "text/plain")
                .sized(length);
            // Zero-sized: boxing it allocates nothing.
            Flow::continue_with(EchoStream)
        }
        None => Flow::continue_with(EchoGathered(Vec::new())),
    }
}

/// Writes each piece of the body back as it arrives.
struct EchoStream;

impl Exchange for EchoStream {
    fn on_body(&mut self, data: &[u8], reply: &mut Reply<'_, '_>) -> usize {
        reply.write(data);
        data.len()
    }
}

/// Gathers a chunked body and answers it whole at its end.
struct EchoGathered(Vec<u8>);

impl Exchange for EchoGathered {
    fn on_body(&mut self, data: &[u8], _reply: &mut Reply<'_, '_>) -> usize {
        self.0.extend_from_slice(data);
        data.len()
    }

    fn on_body_end(&mut self, reply: &mut Reply<'_, '_>) {
        reply.send(Status::OK, "text/plain", &self.0);
    }
}
