//! A handler that answers from a backend it calls (`Reply::connect`, its
//! bytes back as `Upstream` messages), on every event-loop engine: the
//! backend's answer reaches the client, a refused connect becomes a 502, and
//! other requests are served while the backend has not answered.

use iomux_engine::{Config, Engine, Server};
use iomux_proto::http::{Exchange, Flow, HttpConfig, Reply, Router, Status, Upstream};
use iomux_proto::{ConnId, Http};
use std::any::Any;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

/// Sends the backend a line, answers with what it sent back once it closed.
struct Call {
    backend: Option<ConnId>,
    got: Vec<u8>,
}

impl Exchange for Call {
    fn on_connect(&mut self, _tag: u32, result: std::io::Result<ConnId>, reply: &mut Reply) {
        match result {
            Ok(id) => {
                self.backend = Some(id);
                reply.context().send_to(id, b"ping\n");
            }
            Err(e) => reply.send(
                Status::BAD_GATEWAY,
                "text/plain",
                format!("backend: {e}").as_bytes(),
            ),
        }
    }

    fn on_message(&mut self, from: ConnId, message: Box<dyn Any + Send>, reply: &mut Reply) {
        let Ok(upstream) = message.downcast::<Upstream>() else {
            return;
        };
        if Some(from) != self.backend {
            return;
        }
        match *upstream {
            Upstream::Data(bytes) => self.got.extend_from_slice(&bytes),
            Upstream::Closed => reply.send(Status::OK, "text/plain", &self.got),
        }
    }
}

fn app(backend: SocketAddr) -> Router {
    Router::new()
        .get("/call", move |_req, reply| {
            reply.connect(backend, Duration::from_secs(5), 1);
            Flow::continue_with(Call {
                backend: None,
                got: Vec::new(),
            })
        })
        .get("/now", |_req, reply| {
            reply.send(Status::OK, "text/plain", b"now");
            Flow::Done
        })
}

fn serve(engine: Engine, backend: SocketAddr) -> Server {
    let http = HttpConfig::leak(Default::default());
    let app = std::sync::Arc::new(app(backend));
    let config = Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    Server::start(config, engine, move || Http::new(http, app.clone())).unwrap()
}

fn get(server: &Server, path: &str) -> String {
    let mut client = TcpStream::connect(server.local_addr()).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    client
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn a_handler_answers_from_the_backend_it_called_on_every_event_loop_engine() {
    let engines: Vec<Engine> = Engine::ALL
        .iter()
        .copied()
        .filter(|e| e.carries_out_commands())
        .collect();
    assert!(engines.len() >= 6, "the event-loop engines: {engines:?}");
    for engine in engines {
        let backend = TcpListener::bind("127.0.0.1:0").unwrap();
        let backend_addr = backend.local_addr().unwrap();
        let server = serve(engine, backend_addr);
        let (go, wait) = mpsc::channel::<()>();
        let backend_thread = std::thread::spawn(move || {
            let (stream, _) = backend.accept().unwrap();
            let mut lines = BufReader::new(stream);
            let mut line = String::new();
            lines.read_line(&mut line).unwrap();
            assert_eq!(line, "ping\n");
            // The backend answers only once the test says so.
            wait.recv().unwrap();
            lines
                .get_mut()
                .write_all(b"pong from the backend\n")
                .unwrap();
        });
        let caller = {
            let addr = server.local_addr();
            std::thread::spawn(move || {
                let mut client = TcpStream::connect(addr).unwrap();
                client
                    .set_read_timeout(Some(Duration::from_secs(20)))
                    .unwrap();
                client
                    .write_all(b"GET /call HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .unwrap();
                let mut answer = String::new();
                client.read_to_string(&mut answer).unwrap();
                answer
            })
        };
        // While the backend has not answered, others are served.
        assert!(get(&server, "/now").ends_with("\r\n\r\nnow"), "{engine}");
        go.send(()).unwrap();
        backend_thread.join().unwrap();
        let answer = caller.join().unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200 OK\r\n")
                && answer.ends_with("\r\n\r\npong from the backend\n"),
            "{engine}: {answer}"
        );
        server.shutdown();
        server.join().unwrap();
    }
}

#[test]
fn a_backend_that_refuses_is_a_502() {
    // A port nobody listens on: bound, then closed.
    let backend_addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let server = serve(Engine::ALL[0], backend_addr);
    let answer = get(&server, "/call");
    assert!(
        answer.starts_with("HTTP/1.1 502 Bad Gateway\r\n"),
        "{answer}"
    );
    assert!(answer.contains("backend: "), "{answer}");
    server.shutdown();
    server.join().unwrap();
}
