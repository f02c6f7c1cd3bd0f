//! TLS: the transport a connection's session puts between its socket and
//! its service (rustls, server side).
//!
//! A connection with a transport ([`Config::tls`](crate::Config::tls))
//! decrypts what it receives before its service sees it, and encrypts
//! everything it sends on the way out: its service's output, what other
//! connections send it (`send_to`, `forward_to`, `send_to_many`) and
//! whatever else enters its output. Everything the session counts against
//! its limits (the high-water mark, `max_output`) is then ciphertext: the
//! bytes owed to the socket.
//!
//! A file region sent over TLS cannot go out with `sendfile` (its bytes
//! must be encrypted): it waits as plaintext with everything sent after it
//! (records carry sequence numbers, so nothing behind it may be encrypted
//! first), and is read and encrypted in pieces as the peer takes the records
//! before it, keeping about [`REFILL`] bytes of records queued: a slow reader
//! of a large file costs that, not the file's size.
//!
//! The transport is rustls's buffered `ServerConnection` over in-memory
//! buffers: the session feeds it the bytes the engine read and appends the
//! records it produces to its output, so it needs no socket and every
//! event-loop engine gets TLS from the one session code.
//!
//! [`load_server_config`] builds a `rustls::ServerConfig` from PEM files
//! (TLS 1.2 and 1.3, ECDSA, RSA or Ed25519 keys, session tickets and a
//! bounded session cache); [`kernel_tls`] says whether the kernel could take
//! the record layer over (see `ktls`).

mod config;
mod ktls;

pub use config::{load_server_config, TlsOptions};
pub use ktls::{kernel_tls, KernelTls};

use crate::session::{Segment, Segments};
use rustls::ServerConnection;
use std::io::{BufRead, Write};
use std::sync::Arc;

/// Scratch buffers larger than this are freed after use, so a connection
/// that once moved a large message does not keep its buffer.
const KEEP_SCRATCH: usize = 16 * 1024;

/// How many bytes of records a connection keeps queued while it sends a
/// file region over TLS: the region is read and encrypted in pieces as the
/// peer takes them.
pub(crate) const REFILL: usize = 256 * 1024;

/// How much of a file region sent over TLS is read at once (then
/// encrypted, as records of at most 16 KiB).
const TLS_FILE_READ: usize = 64 * 1024;

/// One connection's TLS state: the rustls connection, and scratch buffers
/// for the plaintext going to and coming from it.
pub(crate) struct TlsSession {
    conn: ServerConnection,
    /// Plaintext a service wrote during one call, before it is encrypted.
    tx_plain: Vec<u8>,
    /// Plaintext decrypted from one read, before the service sees it.
    rx_plain: Vec<u8>,
    /// Our close_notify is queued: nothing more is encrypted.
    closed: bool,
    /// Where the peer's records end, to tell a truncated one at EOF.
    bounds: RecordBounds,
    /// What was sent that is not encrypted yet: a file region at the
    /// front (read and encrypted in pieces as the peer takes the records)
    /// and everything sent after it, in order (records carry sequence
    /// numbers: nothing behind the region may be encrypted before it).
    backlog: Option<Box<Segments>>,
    /// One piece of a region, read before it is encrypted.
    piece: Vec<u8>,
}

impl std::fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSession")
            .field("handshaking", &self.conn.is_handshaking())
            .field("closed", &self.closed)
            .finish()
    }
}

/// What decrypting one read gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Received {
    /// The peer sent close_notify: it sends nothing more.
    pub peer_closed: bool,
    /// This read completed the handshake.
    pub handshake_done: bool,
}

/// The peer broke the TLS protocol (garbage instead of a ClientHello, a
/// record too large, a bad MAC, a failed handshake): the alert that says
/// so is in the output, and the connection closes once it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TlsError;

impl TlsSession {
    /// A server-side connection under `config`; its buffers are bounded by
    /// the session's own caps (it drains them after every call).
    pub(crate) fn new(config: &Arc<rustls::ServerConfig>) -> Result<TlsSession, rustls::Error> {
        let mut conn = ServerConnection::new(config.clone())?;
        conn.set_buffer_limit(None);
        Ok(TlsSession {
            conn,
            tx_plain: Vec::new(),
            rx_plain: Vec::new(),
            closed: false,
            bounds: RecordBounds::default(),
            backlog: None,
            piece: Vec::new(),
        })
    }

    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Whether the handshake resumed an earlier session (a ticket or the
    /// session cache) rather than running in full.
    pub(crate) fn resumed(&self) -> bool {
        self.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    /// Decrypt `data` (bytes read from the socket) into `plain`, appending
    /// the records the handshake or an alert must send to `out`.
    pub(crate) fn receive(
        &mut self,
        mut data: &[u8],
        plain: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<Received, TlsError> {
        let was_handshaking = self.conn.is_handshaking();
        let mut received = Received::default();
        self.bounds.feed(data);
        while !data.is_empty() {
            // rustls takes a few KiB at a time: feed it until all is in.
            match self.conn.read_tls(&mut data) {
                Ok(0) => break, // close_notify came: the rest is ignored
                Ok(_) => {}
                Err(_) => {
                    // Its buffer refused a record too large to be one.
                    return Err(self.failed(out));
                }
            }
            let Ok(state) = self.conn.process_new_packets() else {
                return Err(self.failed(out));
            };
            self.write_records(out);
            if state.plaintext_bytes_to_read() > 0 {
                self.read_plaintext(plain);
            }
            if state.peer_has_closed() {
                received.peer_closed = true;
                break;
            }
        }
        received.handshake_done = was_handshaking && !self.conn.is_handshaking();
        Ok(received)
    }

    /// The connection failed: its alert (if rustls queued one) goes out,
    /// and nothing after it.
    fn failed(&mut self, out: &mut Vec<u8>) -> TlsError {
        self.write_records(out);
        self.closed = true;
        self.drop_backlog();
        TlsError
    }

    /// Move the decrypted plaintext out of rustls (one copy).
    fn read_plaintext(&mut self, plain: &mut Vec<u8>) {
        let mut reader = self.conn.reader();
        while let Ok(chunk) = reader.fill_buf() {
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len();
            plain.extend_from_slice(chunk);
            reader.consume(n);
        }
    }

    /// Whether the peer's input stopped in the middle of a record: at its
    /// EOF, a truncated record.
    pub(crate) fn mid_record(&self) -> bool {
        self.bounds.header_len > 0 || self.bounds.body_left > 0
    }

    /// Encrypt `plain` and append its records to `out` (before the
    /// handshake completes rustls holds it, and sends it once it does);
    /// behind a file region still being sent it waits in the backlog.
    /// Dropped after our close_notify.
    pub(crate) fn send(&mut self, plain: &[u8], out: &mut Vec<u8>) {
        if plain.is_empty() || self.closed {
            return;
        }
        if let Some(backlog) = self.backlog.as_deref_mut() {
            backlog.extend_bytes(plain);
            return;
        }
        self.encrypt(plain, out);
    }

    fn encrypt(&mut self, plain: &[u8], out: &mut Vec<u8>) {
        // No buffer limit is set: the writer takes everything.
        let _ = self.conn.writer().write_all(plain);
        self.write_records(out);
    }

    /// Plaintext sent but not encrypted yet (behind a file region, the
    /// region's bytes included): still owed to the peer.
    pub(crate) fn backlog_len(&self) -> usize {
        self.backlog.as_ref().map_or(0, |b| b.len())
    }

    /// The part of [`TlsSession::backlog_len`] held in memory.
    pub(crate) fn backlog_in_memory(&self) -> usize {
        self.backlog.as_ref().map_or(0, |b| b.in_memory())
    }

    /// Encrypt about `room` bytes more of the backlog into `out` (file
    /// regions read in pieces of [`TLS_FILE_READ`]); nothing while the
    /// handshake runs (rustls would hold it all). A region whose file
    /// cannot be read (or ran out) is an error: the connection closes.
    pub(crate) fn refill(&mut self, out: &mut Vec<u8>, mut room: usize) -> std::io::Result<()> {
        if self.conn.is_handshaking() {
            return Ok(());
        }
        while room > 0 {
            let Some(backlog) = self.backlog.as_deref_mut() else {
                return Ok(());
            };
            let mut plain = match backlog.front() {
                Some(Segment::File(region)) => {
                    let mut piece = std::mem::take(&mut self.piece);
                    piece.clear();
                    let read = crate::sock::read_region(region, &mut piece, TLS_FILE_READ);
                    match read {
                        Ok(n) => backlog.advance(n),
                        Err(e) => {
                            self.piece = piece;
                            return Err(e);
                        }
                    }
                    piece
                }
                Some(Segment::Bytes(_)) => match backlog.pop_front() {
                    Some(Segment::Bytes(bytes)) => bytes,
                    _ => unreachable!("the front is bytes"),
                },
                None => Vec::new(),
            };
            if backlog.is_empty() {
                // All out: what is sent from now on is encrypted at once.
                self.drop_backlog();
            }
            room = room.saturating_sub(plain.len());
            self.encrypt(&plain, out);
            if self.backlog.is_some() && self.piece.capacity() == 0 {
                plain.clear();
                self.piece = plain;
            }
        }
        Ok(())
    }

    /// [`TlsSession::send`] for a call's plaintext with file regions sent
    /// in it (each at its offset in `plain`): the bytes before the first
    /// region are encrypted now (unless a region is still being sent); the
    /// regions and the bytes between and after them wait in the backlog,
    /// encrypted by [`TlsSession::refill`] as the peer takes the records.
    pub(crate) fn send_with_files(
        &mut self,
        plain: &[u8],
        files: Vec<(usize, iomux_proto::FileRegion)>,
        out: &mut Vec<u8>,
    ) {
        let mut cut = 0;
        for (at, region) in files {
            let at = at.clamp(cut, plain.len());
            self.send(&plain[cut..at], out);
            cut = at;
            if !self.closed && !region.is_empty() {
                self.backlog
                    .get_or_insert_with(Default::default)
                    .push_file(region);
            }
        }
        self.send(&plain[cut..], out);
    }

    /// Queue our close_notify in `out`; false when there is nothing to
    /// close (the handshake never finished, or it is queued already).
    pub(crate) fn close(&mut self, out: &mut Vec<u8>) -> bool {
        if self.closed || self.conn.is_handshaking() {
            return false;
        }
        self.closed = true;
        // Closing while some is unsent (a fault, a deadline): it never will be.
        self.drop_backlog();
        self.conn.send_close_notify();
        self.write_records(out);
        true
    }

    fn write_records(&mut self, out: &mut Vec<u8>) {
        while self.conn.wants_write() {
            // Writing to a Vec cannot fail.
            if !matches!(self.conn.write_tls(out), Ok(n) if n > 0) {
                break;
            }
        }
    }

    fn drop_backlog(&mut self) {
        self.backlog = None;
        self.piece = Vec::new();
    }

    /// The scratch buffer for a service's plaintext output (empty).
    pub(crate) fn take_tx_plain(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.tx_plain)
    }

    /// The scratch buffer for decrypted input (empty).
    pub(crate) fn take_rx_plain(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.rx_plain)
    }

    /// Give a scratch buffer back, emptied (freed if it grew large).
    pub(crate) fn put_tx_plain(&mut self, buf: Vec<u8>) {
        self.tx_plain = scrub(buf);
    }

    pub(crate) fn put_rx_plain(&mut self, buf: Vec<u8>) {
        self.rx_plain = scrub(buf);
    }
}

/// Whether `engine` can serve TLS with `config`: the event-loop engines
/// can (their connections' sessions carry the transport); the thread,
/// blocking and busy-polling engines move bytes with blocking calls or
/// their own loop around the protocol, with no transport between.
pub(crate) fn check_engine(
    config: &Arc<rustls::ServerConfig>,
    engine: crate::Engine,
) -> std::io::Result<()> {
    if !engine.carries_out_commands() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!(
                "the {engine} engine does not serve TLS: TLS is served by the event-loop \
                 engines (epoll, poll, select, sigio, uring-poll, uring)"
            ),
        ));
    }
    // Every connection makes its rustls connection from it: it must work.
    TlsSession::new(config).map(drop).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("the TLS configuration cannot make connections: {e}"),
        )
    })
}

/// Follows the peer's record framing (a 5-byte header whose last two bytes
/// are the body's length) across reads: a few comparisons per record.
#[derive(Debug, Default)]
struct RecordBounds {
    header: [u8; 5],
    header_len: usize,
    body_left: usize,
}

impl RecordBounds {
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(data.len());
                self.body_left -= n;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.header_len).min(data.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&data[..n]);
            self.header_len += n;
            data = &data[n..];
            if self.header_len == 5 {
                self.header_len = 0;
                self.body_left = u16::from_be_bytes([self.header[3], self.header[4]]) as usize;
            }
        }
    }
}

fn scrub(mut buf: Vec<u8>) -> Vec<u8> {
    if buf.capacity() > KEEP_SCRATCH {
        return Vec::new();
    }
    buf.clear();
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use std::io::Read;

    /// A region of `len` bytes (`i % 251`) of a file whose name is gone.
    fn region(dir: &std::path::Path, len: usize) -> iomux_proto::FileRegion {
        let path = dir.join("region.bin");
        std::fs::write(&path, (0..len).map(|i| (i % 251) as u8).collect::<Vec<_>>()).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        iomux_proto::FileRegion::new(Arc::new(file), 0, len as u64)
    }

    /// A server session and a rustls client with the handshake done in memory.
    fn connected(dir: &std::path::Path) -> (TlsSession, rustls::ClientConnection) {
        let (cert, key) = test_fixture::certificate(dir);
        let config = Arc::new(load_server_config(&cert, &key, &TlsOptions::default()).unwrap());
        let client_config = test_fixture::client_config(&cert, &rustls::version::TLS13);
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = rustls::ClientConnection::new(client_config, name).unwrap();
        let mut server = TlsSession::new(&config).unwrap();
        for _ in 0..10 {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            let mut out = Vec::new();
            server.receive(&wire, &mut Vec::new(), &mut out).unwrap();
            client.read_tls(&mut &out[..]).unwrap();
            client.process_new_packets().unwrap();
            if !server.is_handshaking() && !client.is_handshaking() {
                return (server, client);
            }
        }
        panic!("no handshake after 10 round trips");
    }

    fn decrypt(client: &mut rustls::ClientConnection, mut records: &[u8]) -> Vec<u8> {
        let mut plain = Vec::new();
        while !records.is_empty() {
            client.read_tls(&mut records).unwrap();
            client.process_new_packets().unwrap();
            let _ = client.reader().read_to_end(&mut plain);
        }
        plain
    }

    /// A file region waits with what is sent after it, counted (the region
    /// on disk, the bytes in memory), and leaves encrypted in order as
    /// room is given; closing drops what is left.
    #[test]
    fn the_backlog_keeps_order_behind_a_region_and_counts_it() {
        let dir = std::env::temp_dir().join(format!("iomux-tls-backlog-{}", std::process::id()));
        let (mut server, mut client) = connected(&dir);
        let len = 3 * TLS_FILE_READ + 10;
        let mut out = Vec::new();
        server.send_with_files(b"head|", vec![(5, region(&dir, len))], &mut out);
        server.send(b"|tail", &mut out);
        assert_eq!(server.backlog_len(), len + 5);
        assert_eq!(server.backlog_in_memory(), 5, "the region holds no memory");
        let mut got = decrypt(&mut client, &out);
        assert_eq!(
            got, b"head|",
            "only the bytes before the region are encrypted"
        );
        let mut rounds = 0;
        while server.backlog_len() > 0 {
            let mut out = Vec::new();
            server.refill(&mut out, 1).unwrap();
            assert!(
                out.len() <= TLS_FILE_READ + 1024,
                "one piece per step of room"
            );
            got.extend(decrypt(&mut client, &out));
            rounds += 1;
        }
        assert_eq!(rounds, 5, "four pieces of the region, then the tail");
        let mut want = b"head|".to_vec();
        want.extend((0..len).map(|i| (i % 251) as u8));
        want.extend_from_slice(b"|tail");
        assert!(got == want, "the peer gets everything, in order");

        server.send_with_files(b"", vec![(0, region(&dir, 100))], &mut Vec::new());
        server.send(b"never", &mut Vec::new());
        assert_eq!(server.backlog_len(), 105);
        assert!(server.close(&mut Vec::new()));
        assert_eq!(server.backlog_len(), 0, "closing drops what was not sent");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Certificates and clients for the TLS unit tests.
#[cfg(test)]
pub(crate) mod test_fixture {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    /// A self-signed ECDSA P-256 certificate for localhost and its key,
    /// made in `dir` with `openssl req`: (cert.pem, key.pem).
    pub(crate) fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
        std::fs::create_dir_all(dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let made = std::process::Command::new("openssl")
            .args(["req", "-x509", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl runs (apt-get install -y openssl)");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        (cert, key)
    }

    /// A client trusting `cert`, speaking only `version`, remembering
    /// sessions (its own store: another config is another client).
    pub(crate) fn client_config(
        cert: &Path,
        version: &'static rustls::SupportedProtocolVersion,
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(cert).unwrap())
            .unwrap();
        #[allow(deprecated)] // ring: see config.rs
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[version])
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    /// A handshake between `client` and `server` in memory (no socket),
    /// the server's records all delivered; whether the server resumed.
    pub(crate) fn resumed(
        client: &Arc<rustls::ClientConfig>,
        server: &Arc<rustls::ServerConfig>,
    ) -> bool {
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = rustls::ClientConnection::new(client.clone(), name).unwrap();
        let mut server = rustls::ServerConnection::new(server.clone()).unwrap();
        for _ in 0..10 {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            server.read_tls(&mut &wire[..]).unwrap();
            server.process_new_packets().unwrap();
            let mut wire = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut wire).unwrap();
            }
            client.read_tls(&mut &wire[..]).unwrap();
            client.process_new_packets().unwrap();
            if !client.is_handshaking() && !server.is_handshaking() && !server.wants_write() {
                return server.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            }
        }
        panic!("no handshake after 10 round trips");
    }
}
