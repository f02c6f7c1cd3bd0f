//! A user's own `Service` over TLS with a `rustls::ServerConfig` of their
//! own (`Config::tls`), on every engine with an event loop: its greeting
//! waits for the handshake, its answers, its timers' output and what other
//! connections send it all arrive encrypted, and a close sends close_notify.
//! The engines without a loop refuse TLS at start. Loopback only, every
//! wait bounded.

#[macro_use]
mod common;
#[path = "../../iomux-cli/tests/common/tls.rs"]
mod tls_fixture;

use iomux_engine::rustls::pki_types::pem::PemObject;
use iomux_engine::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use iomux_engine::tls::{kernel_tls, KernelTls};
use iomux_engine::{rustls, Config, Engine, Server};
use iomux_proto::{ConnId, Context, Service, Step};
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tls_fixture::*;

/// Greets, then answers lines: `up TEXT` with TEXT upper-cased, `later
/// TEXT` with TEXT from a timer, `tell TEXT` by sending TEXT to the
/// connection that opened before it, `bye` by closing.
struct Greeter {
    opened: Arc<Mutex<Vec<ConnId>>>,
}

impl Service for Greeter {
    fn on_open(&mut self, cx: &mut Context) {
        self.opened.lock().unwrap().push(cx.id());
        cx.write(b"welcome\n");
    }

    fn on_data(&mut self, input: &[u8], cx: &mut Context) -> Step {
        let Some(end) = input.iter().rposition(|&b| b == b'\n') else {
            return Step::keep(0);
        };
        for line in std::str::from_utf8(&input[..end]).unwrap().split('\n') {
            let (verb, text) = line.split_once(' ').unwrap_or((line, ""));
            match verb {
                "up" => cx.write(format!("{}\n", text.to_uppercase()).as_bytes()),
                "later" => {
                    cx.write(format!("{text}\n").as_bytes());
                    cx.set_timer(1, Duration::from_millis(20));
                }
                "tell" => {
                    let opened = self.opened.lock().unwrap();
                    let me = opened.iter().position(|&id| id == cx.id()).unwrap();
                    cx.send_to(opened[me - 1], format!("{text}\n").as_bytes());
                }
                "bye" => cx.close(),
                _ => cx.write(b"?\n"),
            }
        }
        Step::keep(end + 1)
    }

    fn on_timer(&mut self, _key: u64, cx: &mut Context) {
        cx.write(b"from a timer\n");
    }
}

/// The user's own configuration, made with rustls directly.
fn user_config() -> Arc<rustls::ServerConfig> {
    let certs = certs();
    let chain = CertificateDer::pem_file_iter(&certs.ec_cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&certs.ec_key).unwrap();
    #[allow(deprecated)] // ring: see iomux_engine::tls
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    Arc::new(config)
}

fn start(engine: &str) -> std::io::Result<Server> {
    let config = Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        tls: Some(user_config()),
        ..Config::default()
    };
    let opened = Arc::new(Mutex::new(Vec::new()));
    Server::start(config, engine.parse().unwrap(), move || Greeter {
        opened: opened.clone(),
    })
}

fn line(reader: &mut BufReader<TlsStream>) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).expect("a line");
    line
}

fn serves_its_own_service(engine: &str) {
    let server = start(engine).expect("start");
    let client = client_config(&certs().ec_cert, &[]);
    let mut first = BufReader::new(tls_connect(server.local_addr(), &client));
    assert_eq!(
        line(&mut first),
        "welcome\n",
        "the greeting waits for the handshake"
    );
    first
        .get_mut()
        .write_all(b"up hello\nlater soon\n")
        .unwrap();
    assert_eq!(line(&mut first), "HELLO\n");
    assert_eq!(line(&mut first), "soon\n");
    assert_eq!(line(&mut first), "from a timer\n");

    let mut second = BufReader::new(tls_connect(server.local_addr(), &client));
    assert_eq!(line(&mut second), "welcome\n");
    second.get_mut().write_all(b"tell psst\n").unwrap();
    assert_eq!(
        line(&mut first),
        "psst\n",
        "another connection's send, encrypted for this one"
    );

    second.get_mut().write_all(b"bye\n").unwrap();
    // rustls reads 0 only after close_notify (a bare FIN is an error).
    let mut rest = Vec::new();
    second
        .read_to_end(&mut rest)
        .expect("a clean close: close_notify before the FIN");
    assert!(rest.is_empty());
    drop((first, second));
    server.shutdown();
    let stats = server.join().unwrap();
    assert_eq!(stats.tls_handshakes, 2, "{stats}");
    assert_eq!(stats.tls_errors, 0, "{stats}");
    // Kernel TLS is on by default (`Config::kernel_tls`): the readiness
    // engines hand the record layer over where the kernel offers it.
    let handed_over = match kernel_tls() {
        KernelTls::Available if engine != "uring" => 2,
        _ => 0,
    };
    assert_eq!(
        stats.tls_kernel,
        handed_over,
        "{engine}: where the kernel has no TLS offload (this machine: {:?}), \
         every record is encrypted in user space: {stats}",
        kernel_tls()
    );
    assert_eq!(stats.tls_kernel_failed, 0, "{stats}");
}

macro_rules! tls_tests {
    ($($module:ident => $name:literal),* $(,)?) => {
        $(
            mod $module {
                #[test]
                fn serves_its_own_service() {
                    super::serves_its_own_service($name);
                }
            }
        )*
    };
}
loop_engines!(tls_tests);

/// Answers `file\n` with the file's length and then its bytes (a file
/// region: with kernel TLS it goes out with `sendfile`), `bye\n` by closing.
struct FileSender {
    file: Arc<std::fs::File>,
    len: u64,
}

impl Service for FileSender {
    fn on_data(&mut self, input: &[u8], cx: &mut Context) -> Step {
        let Some(end) = input.iter().position(|&b| b == b'\n') else {
            return Step::keep(0);
        };
        match &input[..end] {
            b"file" => {
                cx.write(format!("{}\n", self.len).as_bytes());
                cx.send_file(iomux_proto::FileRegion::new(self.file.clone(), 0, self.len));
                cx.write(b"end\n");
            }
            _ => cx.close(),
        }
        Step::keep(end + 1)
    }
}

/// The kernel path end to end: on epoll, after the handshake the record
/// layer goes to the kernel; a file then goes out with `sendfile`
/// encrypted by the kernel, the peer's next request is decrypted by it,
/// and the close sends close_notify through it. It cannot run on a kernel
/// without the `tls` ULP (this machine's): run it with `--ignored` on one
/// that has it, where it panics with the reason if the kernel declines.
#[test]
#[ignore = "needs kernel TLS (the `tls` ULP; this machine's \
            /proc/sys/net/ipv4/tcp_available_ulp lists only mptcp): \
            run with --ignored on a kernel that has it"]
fn kernel_tls_sends_a_file_with_sendfile() {
    if let KernelTls::Unavailable(why) = kernel_tls() {
        panic!("cannot run here: {why}");
    }
    let dir = std::env::temp_dir().join(format!("iomux-ktls-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("body.bin"), &bytes).unwrap();
    let file = Arc::new(std::fs::File::open(dir.join("body.bin")).unwrap());
    let config = Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        tls: Some(user_config()),
        ..Config::default()
    };
    let len = bytes.len() as u64;
    let server = Server::start(config, "epoll-edge".parse().unwrap(), move || FileSender {
        file: file.clone(),
        len,
    })
    .expect("start");
    let client = client_config(&certs().ec_cert, &[]);
    let mut stream = BufReader::new(tls_connect(server.local_addr(), &client));
    for round in 0..2 {
        stream.get_mut().write_all(b"file\n").unwrap();
        assert_eq!(line(&mut stream), format!("{len}\n"), "round {round}");
        let mut got = vec![0u8; bytes.len()];
        stream.read_exact(&mut got).unwrap();
        assert!(got == bytes, "round {round}: the file, decrypted");
        assert_eq!(line(&mut stream), "end\n");
    }
    stream.get_mut().write_all(b"bye\n").unwrap();
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .expect("close_notify from the kernel before the FIN");
    drop(stream);
    server.shutdown();
    let stats = server.join().unwrap();
    assert_eq!(stats.tls_kernel, 1, "{stats}");
    assert_eq!(stats.tls_kernel_failed, 0, "{stats}");
    assert_eq!(stats.tls_handshakes, 1, "{stats}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn engines_without_a_loop_refuse_tls() {
    for name in common::engines_with_loop(false) {
        let err = start(name).expect_err(name).to_string();
        assert!(err.contains("does not serve TLS"), "{name}: {err}");
    }
}

/// The test lists above cover `Engine::ALL`.
#[test]
fn every_engine_is_tested() {
    let mut listed = loop_engines!(engine_names);
    listed.extend(loopless_engines!(engine_names));
    let all: Vec<&str> = Engine::ALL.iter().map(|e| e.name()).collect();
    assert_eq!(listed.len(), all.len());
    assert!(all.iter().all(|n| listed.contains(n)));
}
