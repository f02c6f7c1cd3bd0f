//! Runs the example servers (crates/iomux/examples) as child processes on
//! 127.0.0.1:0 and talks to them: every echo server echoes byte-exact, the
//! callback server upper-cases, the HTTP responders answer pipelined requests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

#[path = "common/run_example.rs"]
mod run_example;

use run_example::{example_path, refused, TIMEOUT};

/// A running example, killed (with its workers, through their parent-death
/// signal) when dropped.
struct Example {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(name: &str, args: &[&str]) -> Example {
    let mut child = Command::new(example_path(name))
        .args(["--addr", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn example {name}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let mut example = Example {
        child,
        addr: "127.0.0.1:0".parse().unwrap(),
    };
    let line = rx
        .recv_timeout(TIMEOUT)
        .unwrap_or_else(|_| panic!("{name} printed no address within {TIMEOUT:?}"));
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{name}: unexpected first line {line:?}"));
    example.addr = addr.trim().parse().expect("address in the ready line");
    example
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to the example");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    s
}

/// Send `payload` from one thread while reading the answer in this one (so
/// neither side's buffers fill up and deadlock), then return the answer.
fn exchange(addr: SocketAddr, payload: Vec<u8>) -> Vec<u8> {
    let stream = connect(addr);
    let mut writer = stream.try_clone().unwrap();
    let len = payload.len();
    let sender = std::thread::spawn(move || writer.write_all(&payload).unwrap());
    let mut answer = vec![0u8; len];
    (&stream).read_exact(&mut answer).expect("read the answer");
    sender.join().unwrap();
    answer
}

/// 300 KB of varied bytes: more than a socket buffer, so backpressure is exercised.
fn payload() -> Vec<u8> {
    (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

#[test]
fn echo_examples_echo_byte_exact() {
    let servers: [(&str, &[&str]); 6] = [
        ("select_echo", &[]),
        ("poll_echo", &[]),
        ("epoll_echo", &[]),
        ("epoll_echo", &["--trigger", "edge"]),
        ("epoll_echo", &["--trigger", "oneshot"]),
        ("prefork_echo", &["--workers", "3"]),
    ];
    for (name, args) in servers {
        let example = start(name, args);
        // Several connections, some at once, to cover accept bursts and slots.
        let clients: Vec<_> = (0..4)
            .map(|_| {
                let addr = example.addr;
                std::thread::spawn(move || exchange(addr, payload()))
            })
            .collect();
        for client in clients {
            assert!(
                client.join().unwrap() == payload(),
                "{name} {args:?}: echo differs"
            );
        }
    }
}

#[test]
fn callback_example_upper_cases() {
    for backend in ["select", "poll", "epoll"] {
        let example = start("callback_upper", &["--backend", backend]);
        let text = b"Hello, callbacks! abc xyz 123".repeat(5000);
        let answer = exchange(example.addr, text.clone());
        assert!(
            answer == text.to_ascii_uppercase(),
            "{backend}: not upper-cased"
        );
    }
}

#[test]
fn http_examples_answer_pipelined_requests() {
    for name in ["blocking_http", "http_edge"] {
        let example = start(name, &[]);
        let mut stream = connect(example.addr);
        let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        stream.write_all(&request.repeat(3)).unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        while answer.windows(13).filter(|w| w == b"Hello, world!").count() < 3 {
            let n = stream.read(&mut buf).expect("read responses");
            assert!(
                n > 0,
                "{name} closed early: {:?}",
                String::from_utf8_lossy(&answer)
            );
            answer.extend_from_slice(&buf[..n]);
        }
        assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"), "{name}");
        drop(stream); // the blocking server serves one connection at a time
                      // An over-long head (past the examples' 8 KiB limit, all of it read
                      // by the server, so its close is clean) is refused, not buffered.
        let mut greedy = connect(example.addr);
        greedy.write_all(&[b'a'; 9000]).unwrap();
        let mut reply = Vec::new();
        let _ = greedy.read_to_end(&mut reply);
        assert!(
            reply.starts_with(b"HTTP/1.1 431"),
            "{name}: {:?}",
            String::from_utf8_lossy(&reply)
        );
    }
}

#[test]
fn examples_refuse_unknown_flags_with_their_usage() {
    let examples: [(&str, &str); 8] = [
        ("select_echo", "[--addr HOST:PORT]"),
        ("poll_echo", "[--addr HOST:PORT]"),
        ("epoll_echo", "[--trigger level|edge|oneshot]"),
        ("prefork_echo", "[--workers N]"),
        ("callback_upper", "[--backend "),
        ("blocking_http", "[--addr HOST:PORT]"),
        ("http_edge", "[--addr HOST:PORT]"),
        // A flag given without its value is refused too.
        ("epoll_echo", "[--addr HOST:PORT]"),
    ];
    for (i, (name, usage)) in examples.into_iter().enumerate() {
        let args: &[&str] = match i {
            7 => &["--addr"],
            _ => &["--addr", "127.0.0.1:0", "--verbose"],
        };
        let (status, stderr) = refused(name, args);
        assert_eq!(status.code(), Some(2), "{name} {args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("usage: {name} ")) && stderr.contains(usage),
            "{name} {args:?}: {stderr}"
        );
    }
}

#[test]
fn an_unknown_trigger_is_advised_once() {
    let (status, stderr) = refused("epoll_echo", &["--trigger", "flat"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(r#"unknown trigger "flat""#), "{stderr}");
    assert_eq!(
        stderr.matches("level, edge or oneshot").count(),
        1,
        "the advice once: {stderr}"
    );
}
