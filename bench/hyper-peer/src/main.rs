//! A hyper 1.x hello-world server on a tokio current-thread runtime: the peer
//! iomux's HTTP server is measured against (bench/http-peers.sh,
//! bench/idle-memory.sh).
//!
//! `GET /json` answers `{"message":"Hello, World!"}` serialized per request
//! with serde_json (`application/json`), as a hyper user writes it
//! (TechEmpower's JSON test); every other request `200 Hello, World!`. Both
//! carry the headers iomux sends: `Server`, `Date` (hyper caches and
//! refreshes it once a second), `Content-Type` and `Content-Length`. Pipelined responses are
//! flushed together (`pipeline_flush`), the configuration TechEmpower's hyper
//! entry uses.
//!
//! Usage: `hyper-peer [ADDR]` (default 127.0.0.1:8082); prints
//! `listening on ADDR` when ready.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE, SERVER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use tokio::net::TcpListener;

static BODY: &[u8] = b"Hello, World!";

#[derive(serde::Serialize)]
struct Message {
    message: &'static str,
}

async fn hello(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (body, content_type) = if req.uri().path() == "/json" {
        let message = Message {
            message: "Hello, World!",
        };
        let json = serde_json::to_vec(&message).expect("a struct of strings serializes");
        (Bytes::from(json), "application/json")
    } else {
        (Bytes::from_static(BODY), "text/plain")
    };
    let mut res = Response::new(Full::new(body));
    let headers = res.headers_mut();
    headers.insert(SERVER, HeaderValue::from_static("hyper"));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(res)
}

fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8082".into())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("bad address: {e}; pass HOST:PORT")))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on {}", listener.local_addr()?)?;
            out.flush()?;
        }
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("hyper-peer: accept: {e}");
                    continue;
                }
            };
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .pipeline_flush(true)
                    .serve_connection(TokioIo::new(stream), service_fn(hello))
                    .await;
            });
        }
    })
}
