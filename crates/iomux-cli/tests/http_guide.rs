//! docs/guide.md section 8 ("An HTTP application"), its code as the guide
//! prints it, so the guide cannot drift from the API: the notes application,
//! its test without sockets, and the same application served on an engine.

use iomux_proto::http::{Exchange, Flow, Reply, Router, Status};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

// --- the guide's application, verbatim ---------------------------------

type Notes = Arc<Mutex<HashMap<String, Vec<u8>>>>;

/// `PUT /notes/{id}`: the body arrives in pieces; store it at its end.
struct Put {
    notes: Notes,
    id: String,
    body: Vec<u8>,
}

impl Exchange for Put {
    fn on_body(&mut self, data: &[u8], _reply: &mut Reply) -> usize {
        self.body.extend_from_slice(data);
        data.len() // taking less would stop the reading: backpressure
    }
    fn on_body_end(&mut self, reply: &mut Reply) {
        let body = std::mem::take(&mut self.body);
        self.notes.lock().unwrap().insert(self.id.clone(), body);
        reply.send(Status::CREATED, "text/plain", b"stored\n");
    }
}

/// `GET /slow`: nothing now, the answer when the timer fires.
struct Slow;

impl Exchange for Slow {
    fn on_timer(&mut self, _key: u32, reply: &mut Reply) {
        reply.send(Status::OK, "text/plain", b"late\n");
    }
}

fn app() -> Router {
    let notes = Notes::default();
    let for_put = notes.clone();
    Router::new()
        .get("/notes/{id}", move |req, reply| {
            match notes
                .lock()
                .unwrap()
                .get(req.param("id").unwrap_or_default())
            {
                Some(note) => reply.send(Status::OK, "text/plain", note),
                None => reply.send(Status::NOT_FOUND, "text/plain", b"no such note\n"),
            }
            Flow::Done
        })
        .put("/notes/{id}", move |req, _reply| {
            let id = req.param("id").unwrap_or_default().to_string();
            Flow::continue_with(Put {
                notes: for_put.clone(),
                id,
                body: Vec::new(),
            })
        })
        .get("/slow", |_req, reply| {
            reply.set_timer(0, Duration::from_secs(1));
            Flow::continue_with(Slow)
        })
}

// --- the guide's test without sockets, verbatim ------------------------

#[test]
fn the_guide_tests_its_application_without_sockets() {
    use iomux_proto::http::{feed_in_reads, fixed_clock, HttpConfig, HttpLimits};
    static CONFIG: HttpConfig = HttpConfig::new(HttpLimits::DEFAULT, fixed_clock);
    let app = std::sync::Arc::new(app());
    let input = b"PUT /notes/a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi\
                  GET /notes/a HTTP/1.1\r\nHost: x\r\n\r\n";
    let (out, closed) = feed_in_reads(&CONFIG, app.clone(), input, &[]);
    let out = String::from_utf8(out).unwrap();
    assert!(out.starts_with("HTTP/1.1 201 Created\r\n") && out.ends_with("\r\n\r\nhi") && !closed);
    // The same bytes, whichever way the reads cut them.
    for cut in 1..input.len() {
        assert_eq!(
            feed_in_reads(&CONFIG, app.clone(), input, &[cut]).0,
            out.as_bytes()
        );
    }
}

// --- the guide's server, on a real socket ------------------------------

#[test]
fn the_guide_serves_its_application() {
    use iomux_engine::{Config, Engine, Server};
    use iomux_proto::{http::HttpConfig, Http};
    use std::io::{Read, Write};
    let http = HttpConfig::leak(Default::default());
    let app = std::sync::Arc::new(app());
    let config = Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    let server =
        Server::start(config, Engine::ALL[0], move || Http::new(http, app.clone())).unwrap();
    let mut client = std::net::TcpStream::connect(server.local_addr()).unwrap();
    client
        .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /notes/b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).unwrap();
    let late = answer.find("late\n").expect("the timer's answer");
    let missing = answer.find("no such note\n").expect("the second answer");
    assert!(late < missing, "answers in request order: {answer}");
    server.shutdown();
    server.join().unwrap();
}
