//! `iomux load https://...` against TLS servers nobody here wrote: OpenSSL's
//! `s_server -www` (HTTP/1.0, one response per connection, TLS 1.3 and 1.2)
//! and a keep-alive HTTP/1.1 server on Python's ssl module that answers 200
//! only when the client sent SNI `localhost` and offered ALPN `http/1.1`
//! (421 otherwise). Certificates (a CA and a leaf it signed, ECDSA P-256)
//! are made at test time with the openssl command. Loopback, ephemeral
//! ports, servers killed when the test ends.

mod common;

use common::load;
use iomux_lab::load::json_number;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A CA and a leaf certificate for `localhost` (only) signed by it,
/// made once per test run.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn ca(&self) -> String {
        self.file("ca.pem")
    }
    fn leaf(&self) -> String {
        self.file("leaf.pem")
    }
    fn key(&self) -> String {
        self.file("leaf.key")
    }
    fn file(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_string()
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (Debian: apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("iomux-load-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        openssl(
            &dir,
            &[&["req", "-x509"][..], &ec, &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=iomux test CA"]].concat(),
        );
        openssl(
            &dir,
            &[&["req"][..], &ec, &["-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=localhost"]].concat(),
        );
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            &dir,
            &["x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "leaf.pem", "-days", "2", "-extfile", "ext.cnf"],
        );
        Certs { dir }
    })
}

/// A server process, killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Start `command`, whose stdout names its port on a line for which
    /// `port_of` gives it (within 10 s).
    fn start(
        mut command: Command,
        port_of: impl Fn(&str) -> Option<u16> + Send + 'static,
    ) -> Server {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the TLS server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some(port) = port_of(&line) {
                    let _ = tx.send(port);
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the TLS server named its port");
        Server { child, port }
    }

    /// `openssl s_server -www` with the leaf certificate (`extra`: more flags).
    fn openssl_www(extra: &[&str]) -> Server {
        let c = certs();
        let mut command = Command::new("openssl");
        command
            .args([
                "s_server",
                "-accept",
                "127.0.0.1:0",
                "-www",
                "-naccept",
                "100000",
            ])
            .args(["-cert", &c.leaf(), "-key", &c.key()])
            .args(extra);
        Server::start(command, |line| {
            line.strip_prefix("ACCEPT ")?
                .rsplit(':')
                .next()?
                .parse()
                .ok()
        })
    }

    /// A keep-alive HTTP/1.1 server on Python's ssl module: `GET` answers
    /// 200 `hello over tls` if the client sent SNI `localhost` and
    /// negotiated ALPN `http/1.1`, 421 if not.
    fn python() -> Server {
        let c = certs();
        let script = r#"
import http.server, ssl, sys
names = {}
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        ok = self.connection.selected_alpn_protocol() == "http/1.1" and names.get(id(self.connection)) == "localhost"
        body = b"hello over tls" if ok else b"no SNI localhost or no ALPN http/1.1"
        self.send_response(200 if ok else 421)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
def remember_name(sock, name, context):
    names[id(sock)] = name
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
context.set_alpn_protocols(["http/1.1"])
context.sni_callback = remember_name
class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    def get_request(self):
        sock, addr = self.socket.accept()
        return context.wrap_socket(sock, server_side=True), addr
server = Server(("127.0.0.1", 0), Handler)
print("port", server.server_address[1], flush=True)
server.serve_forever()
"#;
        let mut command = Command::new("python3");
        command.args(["-c", script, &c.leaf(), &c.key()]);
        Server::start(command, |line| line.strip_prefix("port ")?.parse().ok())
    }

    fn url(&self, host: &str) -> String {
        format!("https://{host}:{}/", self.port)
    }
}

/// Run `iomux load FLAGS` (split at spaces; bounded by its own duration).
fn run(flags: &str) -> std::process::Output {
    load(&flags.split_whitespace().collect::<Vec<_>>())
}

/// Run `iomux load --json FLAGS`; returns its JSON, or panics with its
/// stderr if it failed.
fn load_json(flags: &str) -> String {
    let out = run(&format!("--json {flags}"));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "load {flags} failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn num(json: &str, key: &str) -> u64 {
    json_number(json, key).unwrap_or_else(|| panic!("{key} missing in {json}")) as u64
}

#[test]
fn openssl_s_server_answers_and_reconnects_resume() {
    // s_server -www answers one request per connection (HTTP/1.0, then
    // close_notify): every request is a handshake, and each one after the
    // first resumes the session the previous one left (TLS 1.3 tickets;
    // with -tls1_2, TLS 1.2's).
    for version in [&[][..], &["-tls1_2"][..]] {
        let server = Server::openssl_www(version);
        let ca = certs().ca();
        let url = server.url("localhost");
        let json = load_json(&format!("-n 20 -c 1 -d 30 --cacert {ca} {url}"));
        assert_eq!(num(&json, "requests"), 20, "{version:?}: {json}");
        assert!(
            json.contains("\"status_counts\":{\"200\":20}"),
            "{version:?}: {json}"
        );
        assert_eq!(num(&json, "errors"), 0, "{version:?}: {json}");
        assert_eq!(num(&json, "tls_handshakes"), 20, "{version:?}: {json}");
        assert_eq!(num(&json, "tls_resumed"), 19, "{version:?}: {json}");
        assert!(num(&json, "body_bytes") > 20 * 100, "{version:?}: {json}");
        assert!(json.contains("\"url\":\"https://localhost:"), "{json}");
        let json = load_json(&format!("-n 10 -c 1 -d 30 --cacert {ca} --no-resume {url}"));
        assert_eq!(num(&json, "requests"), 10, "{version:?}: {json}");
        assert_eq!(num(&json, "tls_handshakes"), 10, "{version:?}: {json}");
        assert_eq!(num(&json, "tls_resumed"), 0, "{version:?}: {json}");
    }
}

#[test]
fn an_untrusted_certificate_fails_at_start_with_advice() {
    let server = Server::openssl_www(&[]);
    // Not in the system's store: refused before any load, saying what to do.
    let out = run(&format!("-d 1 {}", server.url("localhost")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    for needle in ["not trusted", "--cacert", "--insecure"] {
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Trusted, but the certificate does not name the host asked for.
    let ca = certs().ca();
    let out = run(&format!("-d 1 --cacert {ca} {}", server.url("127.0.0.1")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not trusted for 127.0.0.1"),
        "{err}"
    );
    // A plain HTTP port is not taken for TLS.
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = plain.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        for stream in plain.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = std::io::Write::write_all(
                &mut stream,
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
            );
            if Instant::now() > deadline {
                return;
            }
        }
    });
    let out = run(&format!(
        "-d 1 --timeout 2 --insecure https://127.0.0.1:{port}/"
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("HTTPS server"),
        "{err}"
    );
}

#[test]
fn insecure_skips_verification_and_says_so() {
    let server = Server::openssl_www(&[]);
    let out = run(&format!(
        "--json -n 5 -c 1 -d 30 --insecure {}",
        server.url("localhost")
    ));
    let (json, err) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(out.status.success(), "{err}");
    assert_eq!(num(&json, "requests"), 5, "{json}");
    assert!(json.contains("\"tls_verified\":false"), "{json}");
    assert!(
        err.contains("WARNING") && err.contains("NOT verified"),
        "{err}"
    );
    let out = run(&format!(
        "-n 5 -c 1 -d 30 --insecure {}",
        server.url("localhost")
    ));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("certificate was NOT verified"), "{text}");
}

#[test]
fn keep_alive_pipelined_and_connection_per_request_over_python_ssl() {
    let server = Server::python();
    let ca = certs().ca();
    let url = server.url("localhost");
    // Keep-alive: one handshake per connection, every request answered 200
    // (so SNI and ALPN were as the server wants them).
    let json = load_json(&format!(
        "-n 400 -c 4 --pipeline 2 -d 30 --cacert {ca} {url}"
    ));
    assert_eq!(num(&json, "requests"), 400, "{json}");
    assert!(json.contains("\"status_counts\":{\"200\":400}"), "{json}");
    assert_eq!(num(&json, "errors"), 0, "{json}");
    assert_eq!(num(&json, "tls_handshakes"), 4, "{json}");
    assert_eq!(num(&json, "body_bytes"), 400 * 14, "{json}");
    // A connection per request: a handshake each, resumed but for the
    // first on each of the 2 slots.
    let json = load_json(&format!(
        "-n 30 -c 2 -d 30 --connect-per-request --cacert {ca} {url}"
    ));
    assert_eq!(num(&json, "requests"), 30, "{json}");
    assert_eq!(num(&json, "errors"), 0, "{json}");
    assert_eq!(num(&json, "tls_handshakes"), 30, "{json}");
    assert!(num(&json, "tls_resumed") >= 28, "{json}");
    let json = load_json(&format!(
        "-n 30 -c 2 -d 30 --connect-per-request --no-resume --cacert {ca} {url}"
    ));
    assert_eq!(num(&json, "tls_handshakes"), 30, "{json}");
    assert_eq!(num(&json, "tls_resumed"), 0, "{json}");
    // The runs' JSON merges, TLS counts included.
    let dir = certs().dir.join("merge");
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b) = (dir.join("a.json"), dir.join("b.json"));
    std::fs::write(&a, &json).unwrap();
    std::fs::write(&b, &json).unwrap();
    let merged = load_json(&format!("merge {} {}", a.display(), b.display()));
    assert_eq!(num(&merged, "tls_handshakes"), 60, "{merged}");
    assert!(merged.contains("\"url\":\"https://localhost:"), "{merged}");
}
