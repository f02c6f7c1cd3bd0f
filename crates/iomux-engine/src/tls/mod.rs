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

use rustls::ServerConnection;
use std::io::{BufRead, Write};
use std::sync::Arc;

/// Scratch buffers larger than this are freed after use, so a connection
/// that once moved a large message does not keep its buffer.
const KEEP_SCRATCH: usize = 16 * 1024;

/// How much of a file region is read and encrypted at once: one record's
/// worth of plaintext.
const FILE_PIECE: usize = 16 * 1024;

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
    /// handshake completes rustls holds it, and sends it once it does).
    /// Dropped after our close_notify.
    pub(crate) fn send(&mut self, plain: &[u8], out: &mut Vec<u8>) {
        if plain.is_empty() || self.closed {
            return;
        }
        // No buffer limit is set: the writer takes everything.
        let _ = self.conn.writer().write_all(plain);
        self.write_records(out);
    }

    /// [`TlsSession::send`] for a call's plaintext with file regions sent
    /// in it (each at its offset in `plain`): the regions' bytes are read
    /// and encrypted where they stand, in pieces of one record.
    // (Interim: the whole region's ciphertext is queued at once; see
    // /work/helpers/files-api.md for bounded pieces.)
    pub(crate) fn send_with_files(
        &mut self,
        plain: &[u8],
        files: &[(usize, iomux_proto::FileRegion)],
        out: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        let mut cut = 0;
        let mut piece = Vec::new();
        for (at, region) in files {
            let at = (*at).clamp(cut, plain.len());
            self.send(&plain[cut..at], out);
            cut = at;
            let mut region = region.clone();
            while !region.is_empty() {
                piece.clear();
                let n = crate::sock::read_region(&region, &mut piece, FILE_PIECE)?;
                self.send(&piece[..n], out);
                region.advance(n as u64);
            }
        }
        self.send(&plain[cut..], out);
        Ok(())
    }

    /// Queue our close_notify in `out`; false when there is nothing to
    /// close (the handshake never finished, or it is queued already).
    pub(crate) fn close(&mut self, out: &mut Vec<u8>) -> bool {
        if self.closed || self.conn.is_handshaking() {
            return false;
        }
        self.closed = true;
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
