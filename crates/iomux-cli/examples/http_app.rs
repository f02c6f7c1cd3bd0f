//! An HTTP application on iomux's public handler API (shared/CONTRACT.md,
//! "`http_app`"): a JSON items API with path parameters, an answer deferred
//! by a timer, server-sent events, an upload hashed as it arrives, a
//! download produced as the client reads, blocking work off the loop, and
//! a route that panics.
//!
//! `http_app ADDR [ENGINE]`, e.g. `http_app 127.0.0.1:8080 uring`; it
//! prints `listening on HOST:PORT` when ready; Ctrl-C stops it.

use iomux_engine::{Config, Engine, Server, StopSignals};
use iomux_proto::http::{Exchange, Flow, HttpConfig, HttpLimits, Reply, Request, Router, Status};
use iomux_proto::Http;
use sha2::{Digest, Sha256};
use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Items = Arc<Mutex<HashMap<u64, String>>>;

/// The largest item body accepted (uploads have no limit: they are hashed
/// as they arrive, never held).
const MAX_ITEM_BODY: usize = 64 * 1024;
/// Time between two server-sent events.
const EVENT_INTERVAL: Duration = Duration::from_millis(50);
/// How much of a download is written at a time (and all it costs in memory).
const DOWNLOAD_PIECE: usize = 64 * 1024;
/// The longest `GET /blocking` sleep: each holds one of the few worker
/// threads every connection shares, and no client's disconnect ends it.
const MAX_BLOCKING_MS: u64 = 60_000;

#[derive(serde::Deserialize)]
struct NewItem {
    name: String,
}

#[derive(serde::Serialize)]
struct Item<'a> {
    id: u64,
    name: &'a str,
}

fn text(reply: &mut Reply, status: Status, body: &str) -> Flow {
    reply.send(status, "text/plain", body.as_bytes());
    Flow::Done
}

/// `{id}` as a decimal u64 (no sign, no spaces), or nothing.
fn item_id(req: &Request) -> Option<u64> {
    let id = req.param("id")?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.parse().ok()
}

/// The longest `GET /wait` (an hour): a timer costs no thread, but one
/// set for years is a connection held for years.
const MAX_WAIT_MS: u64 = 3_600_000;

/// A query parameter as a number up to `max`, or `400` naming it.
fn number(req: &Request, name: &str, max: u64, reply: &mut Reply) -> Result<u64, Flow> {
    match req.query_param(name).and_then(|v| v.parse().ok()) {
        Some(n) if n <= max => Ok(n),
        _ => Err(text(
            reply,
            Status::BAD_REQUEST,
            &format!("give {name}=N, a whole number up to {max}\n"),
        )),
    }
}

fn get_item(items: &Items, req: &Request, reply: &mut Reply) -> Flow {
    let Some(id) = item_id(req) else {
        return text(reply, Status::NOT_FOUND, "no such item\n");
    };
    let items = items.lock().unwrap();
    let Some(name) = items.get(&id) else {
        return text(reply, Status::NOT_FOUND, "no such item\n");
    };
    match serde_json::to_vec(&Item { id, name }) {
        Ok(body) => reply.send(Status::OK, "application/json", &body),
        Err(e) => reply.send(
            Status::INTERNAL_SERVER_ERROR,
            "text/plain",
            e.to_string().as_bytes(),
        ),
    }
    Flow::Done
}

fn delete_item(items: &Items, req: &Request, reply: &mut Reply) -> Flow {
    let removed = item_id(req).and_then(|id| items.lock().unwrap().remove(&id));
    match removed {
        Some(_) => reply.head(Status::NO_CONTENT).body(b""),
        None => reply.send(Status::NOT_FOUND, "text/plain", b"no such item\n"),
    }
    Flow::Done
}

/// `PUT /items/{id}`: the body gathered (up to [`MAX_ITEM_BODY`]), then stored.
struct PutItem {
    items: Items,
    id: u64,
    body: Vec<u8>,
}

impl Exchange for PutItem {
    fn on_body(&mut self, data: &[u8], reply: &mut Reply) -> usize {
        if !reply.is_started() {
            if self.body.len() + data.len() > MAX_ITEM_BODY {
                reply.close_after();
                reply.send(
                    Status::CONTENT_TOO_LARGE,
                    "text/plain",
                    b"an item is at most 64 KiB\n",
                );
            } else {
                self.body.extend_from_slice(data);
            }
        }
        data.len()
    }

    fn on_body_end(&mut self, reply: &mut Reply) {
        if reply.is_started() {
            return;
        }
        let Ok(item) = serde_json::from_slice::<NewItem>(&self.body) else {
            reply.send(
                Status::BAD_REQUEST,
                "text/plain",
                b"send {\"name\": STRING}\n",
            );
            return;
        };
        let created = self
            .items
            .lock()
            .unwrap()
            .insert(self.id, item.name.clone())
            .is_none();
        let status = if created { Status::CREATED } else { Status::OK };
        match serde_json::to_vec(&Item {
            id: self.id,
            name: &item.name,
        }) {
            Ok(body) => reply.send(status, "application/json", &body),
            Err(e) => reply.send(
                Status::INTERNAL_SERVER_ERROR,
                "text/plain",
                e.to_string().as_bytes(),
            ),
        }
    }
}

/// `GET /wait?ms=N`: answered by a timer.
struct Wait(u64);

impl Exchange for Wait {
    fn on_timer(&mut self, _key: u32, reply: &mut Reply) {
        reply.send(
            Status::OK,
            "text/plain",
            format!("waited {}", self.0).as_bytes(),
        );
    }
}

/// `GET /events?n=N`: one event now, the next after each interval.
struct Events {
    next: u64,
    count: u64,
}

impl Events {
    fn emit(&mut self, reply: &mut Reply) {
        if self.next == self.count {
            reply.end();
            return;
        }
        reply.write(format!("data: {}\n\n", self.next).as_bytes());
        self.next += 1;
        reply.set_timer(0, EVENT_INTERVAL);
    }
}

impl Exchange for Events {
    fn on_timer(&mut self, _key: u32, reply: &mut Reply) {
        self.emit(reply);
    }
}

/// `POST /upload`: hashed and counted as it arrives.
#[derive(Default)]
struct Upload {
    bytes: u64,
    hash: Sha256,
}

impl Exchange for Upload {
    fn on_body(&mut self, data: &[u8], _reply: &mut Reply) -> usize {
        self.hash.update(data);
        self.bytes += data.len() as u64;
        data.len()
    }

    fn on_body_end(&mut self, reply: &mut Reply) {
        let digest = std::mem::take(&mut self.hash).finalize();
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        reply.send(
            Status::OK,
            "text/plain",
            format!("{} {hex}", self.bytes).as_bytes(),
        );
    }
}

/// `GET /download?bytes=N`: `0123456789` repeated, a piece each time the
/// client has taken the last one.
struct Download {
    sent: u64,
    pattern: Arc<[u8]>,
}

impl Download {
    fn write_piece(&mut self, reply: &mut Reply) {
        let Some(left) = reply.remaining() else {
            return; // done (or a HEAD request)
        };
        let n = left.min(DOWNLOAD_PIECE as u64) as usize;
        let from = (self.sent % 10) as usize;
        reply.write(&self.pattern[from..from + n]);
        self.sent += n as u64;
        if !reply.is_finished() {
            reply.notify_when_writable();
        }
    }
}

impl Exchange for Download {
    fn on_writable(&mut self, reply: &mut Reply) {
        self.write_piece(reply);
    }
}

/// `GET /blocking?ms=N`: a sleep on the worker pool.
struct Blocking;

impl Exchange for Blocking {
    fn on_blocking_done(
        &mut self,
        _key: u32,
        result: std::io::Result<Box<dyn Any + Send>>,
        reply: &mut Reply,
    ) {
        match result.map(|r| r.downcast::<u64>()) {
            Ok(Ok(ms)) => reply.send(Status::OK, "text/plain", format!("slept {ms}").as_bytes()),
            _ => reply.send(
                Status::INTERNAL_SERVER_ERROR,
                "text/plain",
                b"the work failed\n",
            ),
        }
    }
}

fn app() -> Router {
    let items = Items::default();
    let (get_items, put_items, delete_items) = (items.clone(), items.clone(), items);
    let pattern: Arc<[u8]> = b"0123456789".repeat(DOWNLOAD_PIECE / 10 + 2).into();
    Router::new()
        .get("/items/{id}", move |req, reply| {
            get_item(&get_items, req, reply)
        })
        .delete("/items/{id}", move |req, reply| {
            delete_item(&delete_items, req, reply)
        })
        .put("/items/{id}", move |req, reply| match item_id(req) {
            None => text(reply, Status::NOT_FOUND, "no such item\n"),
            Some(id) => Flow::continue_with(PutItem {
                items: put_items.clone(),
                id,
                body: Vec::new(),
            }),
        })
        .get("/wait", |req, reply| {
            match number(req, "ms", MAX_WAIT_MS, reply) {
                Err(answered) => answered,
                Ok(ms) => {
                    reply.set_timer(0, Duration::from_millis(ms));
                    Flow::continue_with(Wait(ms))
                }
            }
        })
        .get("/events", |req, reply| {
            match number(req, "n", u64::MAX, reply) {
                Err(answered) => answered,
                Ok(count) => {
                    reply
                        .head(Status::OK)
                        .header("Content-Type", "text/event-stream")
                        .header("Cache-Control", "no-cache")
                        .stream();
                    let mut events = Events { next: 0, count };
                    events.emit(reply);
                    Flow::continue_with(events)
                }
            }
        })
        .post("/upload", |_req, _reply| {
            Flow::continue_with(Upload::default())
        })
        .get("/download", move |req, reply| {
            match number(req, "bytes", u64::MAX, reply) {
                Err(answered) => answered,
                Ok(bytes) => {
                    reply
                        .head(Status::OK)
                        .header("Content-Type", "application/octet-stream")
                        .sized(bytes);
                    let mut download = Download {
                        sent: 0,
                        pattern: pattern.clone(),
                    };
                    download.write_piece(reply);
                    Flow::continue_with(download)
                }
            }
        })
        .get("/blocking", |req, reply| {
            match number(req, "ms", MAX_BLOCKING_MS, reply) {
                Err(answered) => answered,
                Ok(ms) => {
                    let work = move || {
                        std::thread::sleep(Duration::from_millis(ms));
                        ms
                    };
                    match reply.spawn_blocking(0, work) {
                        Ok(()) => Flow::continue_with(Blocking),
                        Err(e) => text(
                            reply,
                            Status::SERVICE_UNAVAILABLE,
                            &format!("{e}; try again\n"),
                        ),
                    }
                }
            }
        })
        .get("/panic", |_req, _reply| {
            panic!("GET /panic panics, as asked")
        })
}

fn main() {
    if let Err(e) = serve() {
        eprintln!("http_app: {e}");
        std::process::exit(1);
    }
}

fn serve() -> std::io::Result<()> {
    let usage = || {
        std::io::Error::other(
            "usage: http_app ADDR [ENGINE], such as http_app 127.0.0.1:8080 epoll-edge",
        )
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (addr, engine) = match args.as_slice() {
        [addr] => (addr, Engine::ALL[0]),
        [addr, engine] => (addr, engine.parse().map_err(std::io::Error::other)?),
        _ => return Err(usage()),
    };
    let addr = addr.parse().map_err(|e| {
        std::io::Error::other(format!(
            "ADDR {addr:?}: {e}; give HOST:PORT such as 127.0.0.1:8080"
        ))
    })?;
    if !engine.carries_out_commands() {
        let why =
            "has no event loop for timers, streams and blocking work; try epoll-edge or uring";
        return Err(std::io::Error::other(format!("{engine} {why}")));
    }
    // Uploads of any size: they are hashed as they arrive, never held.
    let http = HttpConfig::leak(HttpLimits {
        max_body: HttpLimits::NO_BODY_LIMIT,
        ..HttpLimits::DEFAULT
    });
    let app = Arc::new(app());
    let signals = StopSignals::block()?; // before the loops start: they inherit it
    let config = Config {
        addr,
        ..Config::default()
    };
    let server = Server::start(config, engine, move || Http::new(http, app.clone()))?;
    println!("listening on {} engine={engine}", server.local_addr());
    signals.wait();
    server.shutdown();
    server.join().map(drop)
}
