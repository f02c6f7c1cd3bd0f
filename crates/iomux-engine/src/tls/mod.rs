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
//! before it. How much is encrypted ahead adapts to the peer: a batch that
//! doubles (up to [`REFILL_MAX`]) while the socket takes each batch whole, and
//! halves (down to [`REFILL_MIN`], one record) while it leaves some, so a fast
//! download makes few large sends and a slow reader of a large file keeps
//! at most about one batch queued, not the file's size. The piece read from the file
//! is one buffer per loop (thread), not one per connection.
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
pub(crate) use ktls::{attach, install, is_control_record, send_close_notify};
pub use ktls::{kernel_tls, KernelTls};

use crate::session::{Segment, Segments};
use rustls::ServerConnection;
use std::io::{BufRead, Write};
use std::sync::Arc;

/// Scratch buffers larger than this are freed after use, so a connection
/// that once moved a large message does not keep its buffer.
const KEEP_SCRATCH: usize = 16 * 1024;

/// The most plaintext of a file region encrypted ahead while a connection's
/// earlier records are taken whole by the socket (a fast download: few,
/// large sends). A slow reader keeps about this much queued (what was
/// encrypted when its socket first filled), and its records fit one of the
/// loop's 64 KiB buffers. Measured (bench/tls_slow_readers.py, docs/tls.md):
/// 256 KiB kept about 265 KiB per slow reader and more server CPU per MiB of a
/// fast download than 60 KiB did (the batch is still in cache when sent);
/// 16 KiB cost a fast download about 20% more CPU per MiB. Buffers of 128
/// KiB or more also fare badly with glibc: once one is freed it raises its
/// `mmap` threshold and keeps freed blocks of that size in its heap.
const REFILL_MAX: usize = 60 * 1024;

/// The least encrypted ahead (a slow reader: one full record queued).
const REFILL_MIN: usize = 16 * 1024;

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
    /// How much of the backlog to encrypt ahead (see the module's notes).
    refill_batch: usize,
    /// The kernel is to take the record layer over once the handshake's
    /// records are sent (see [`TlsSession::into_kernel`]).
    to_kernel: bool,
}

/// What handing a connection's record layer to the kernel gave.
#[derive(Debug)]
pub(crate) enum HandOver {
    /// The kernel encrypts and decrypts from now on: the connection sends
    /// and reads plaintext, and file regions go out with `sendfile`.
    Kernel,
    /// It declined before any secret left rustls (no `tls` ULP for this
    /// socket, a cipher it lacks): the connection goes on in user space.
    UserSpace(Box<TlsSession>),
    /// The secrets left rustls but the kernel did not take them: the
    /// connection can go on neither way and must close.
    Failed,
}

thread_local! {
    /// The piece of a file region read before it is encrypted: one per
    /// loop (each runs on its own thread), not one per connection.
    static FILE_PIECE_READ: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
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
    /// With `to_kernel`, the record layer is handed to the kernel after the
    /// handshake (the server checked that it can, once at start, and that
    /// `config` lets secrets be extracted).
    pub(crate) fn new(
        config: &Arc<rustls::ServerConfig>,
        to_kernel: bool,
    ) -> Result<TlsSession, rustls::Error> {
        let mut conn = ServerConnection::new(config.clone())?;
        conn.set_buffer_limit(None);
        Ok(TlsSession {
            conn,
            tx_plain: Vec::new(),
            rx_plain: Vec::new(),
            closed: false,
            bounds: RecordBounds::default(),
            backlog: None,
            refill_batch: REFILL_MIN,
            to_kernel,
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
        self.backlog = None;
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

    /// Whether the record layer can go to the kernel now, by rustls's side:
    /// it is to, the handshake is done, nothing is queued in rustls or
    /// waiting to be encrypted, we have not closed, and no record of the
    /// peer's is cut in two (the kernel reads on from a record's start).
    /// The session adds that everything rustls produced reached the socket.
    pub(crate) fn ready_for_kernel(&self) -> bool {
        self.to_kernel
            && !self.closed
            && !self.conn.is_handshaking()
            && !self.conn.wants_write()
            && self.backlog.is_none()
            && !self.mid_record()
    }

    /// Hand the record layer to the kernel: `attach` readies the socket
    /// (its refusal keeps the connection in user space, and it is not
    /// tried again), then rustls's secrets go to `install` with the TLS
    /// version. Call once [`TlsSession::ready_for_kernel`] and all its
    /// records are on the socket.
    pub(crate) fn into_kernel(
        mut self: Box<Self>,
        attach: impl FnOnce() -> std::io::Result<()>,
        install: impl FnOnce(rustls::ProtocolVersion, rustls::ExtractedSecrets) -> std::io::Result<()>,
    ) -> HandOver {
        self.to_kernel = false;
        let (Some(version), Some(suite)) = (
            self.conn.protocol_version(),
            self.conn.negotiated_cipher_suite(),
        ) else {
            return HandOver::UserSpace(self);
        };
        if !ktls::has_cipher(suite) || attach().is_err() {
            return HandOver::UserSpace(self);
        }
        let secrets = match self.conn_into_secrets() {
            Ok(secrets) => secrets,
            Err(_) => return HandOver::Failed,
        };
        match install(version, secrets) {
            Ok(()) => HandOver::Kernel,
            Err(_) => HandOver::Failed,
        }
    }

    /// rustls's secrets: its connection is spent.
    fn conn_into_secrets(self: Box<Self>) -> Result<rustls::ExtractedSecrets, rustls::Error> {
        let this = *self;
        this.conn.dangerous_extract_secrets()
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
        encrypt(&mut self.conn, plain, out);
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

    /// How many bytes of records a connection should have queued while it
    /// sends its backlog: refill below this.
    pub(crate) fn refill_batch(&self) -> usize {
        self.refill_batch
    }

    /// The socket took a send of the connection's records whole (or left
    /// some): encrypt more (less) ahead next time, while a backlog waits.
    pub(crate) fn records_sent(&mut self, took_all: bool) {
        if self.backlog.is_none() {
            return;
        }
        self.refill_batch = if took_all {
            (self.refill_batch * 2).min(REFILL_MAX)
        } else {
            (self.refill_batch / 2).max(REFILL_MIN)
        };
    }

    /// The most bytes of records `plain` bytes of plaintext become (5 bytes
    /// of header and 17 of tag per record of up to 16 KiB; a little more).
    pub(crate) fn records_len(plain: usize) -> usize {
        plain + plain.div_ceil(16 * 1024) * 22 + 64
    }

    /// Encrypt about `room` bytes more of the backlog into `out` (file
    /// regions read in pieces of at most [`TLS_FILE_READ`]); nothing while
    /// the handshake runs (rustls would hold it all). A region whose file
    /// cannot be read (or ran out) is an error: the connection closes.
    pub(crate) fn refill(&mut self, out: &mut Vec<u8>, mut room: usize) -> std::io::Result<()> {
        if self.conn.is_handshaking() {
            return Ok(());
        }
        while room > 0 {
            let Some(backlog) = self.backlog.as_deref_mut() else {
                return Ok(());
            };
            let taken = match backlog.front() {
                Some(Segment::File(region)) => {
                    let n = FILE_PIECE_READ.with_borrow_mut(|piece| {
                        piece.clear();
                        let n = crate::sock::read_region(region, piece, room.min(TLS_FILE_READ))?;
                        encrypt(&mut self.conn, piece, out);
                        Ok::<_, std::io::Error>(n)
                    })?;
                    backlog.advance(n);
                    n
                }
                Some(Segment::Bytes(_)) => match backlog.pop_front() {
                    Some(Segment::Bytes(bytes)) => {
                        encrypt(&mut self.conn, &bytes, out);
                        bytes.len()
                    }
                    _ => unreachable!("the front is bytes"),
                },
                None => 0,
            };
            if backlog.is_empty() {
                // All out: what is sent from now on is encrypted at once.
                self.backlog = None;
            }
            room = room.saturating_sub(taken.max(1));
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
        files: &mut Vec<(usize, iomux_proto::FileRegion)>,
        out: &mut Vec<u8>,
    ) {
        let mut cut = 0;
        for (at, region) in files.drain(..) {
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
        self.backlog = None;
        self.conn.send_close_notify();
        self.write_records(out);
        true
    }

    fn write_records(&mut self, out: &mut Vec<u8>) {
        write_records(&mut self.conn, out);
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

/// Decide once, at start, whether `config`'s connections hand their
/// record layer to the kernel ([`crate::Config::kernel_tls`]): asked for,
/// over TLS, on a readiness engine, and the kernel offers it; then the
/// rustls configuration lets secrets be extracted (a copy, if the user's
/// did not). `config.kernel_tls` says the outcome.
pub(crate) fn settle_kernel_tls(mut config: crate::Config, engine: crate::Engine) -> crate::Config {
    config.kernel_tls = config.kernel_tls
        && config.tls.is_some()
        && matches!(engine, crate::Engine::Reactor(..))
        && kernel_tls() == KernelTls::Available;
    if let Some(tls) = config.tls.as_mut().filter(|_| config.kernel_tls) {
        if !tls.enable_secret_extraction {
            let mut copy = (**tls).clone();
            copy.enable_secret_extraction = true;
            *tls = Arc::new(copy);
        }
    }
    config
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
    TlsSession::new(config, false).map(drop).map_err(|e| {
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

/// Encrypt `plain` and append its records to `out` (no buffer limit is
/// set: rustls's writer takes everything).
fn encrypt(conn: &mut ServerConnection, plain: &[u8], out: &mut Vec<u8>) {
    let _ = conn.writer().write_all(plain);
    write_records(conn, out);
}

fn write_records(conn: &mut ServerConnection, out: &mut Vec<u8>) {
    while conn.wants_write() {
        // Writing to a Vec cannot fail.
        if !matches!(conn.write_tls(out), Ok(n) if n > 0) {
            break;
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
        let mut server = TlsSession::new(&config, false).unwrap();
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
        server.send_with_files(b"head|", &mut vec![(5, region(&dir, len))], &mut out);
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
            server.refill(&mut out, TLS_FILE_READ).unwrap();
            assert!(out.len() <= TLS_FILE_READ + 1024, "about the room given");
            got.extend(decrypt(&mut client, &out));
            rounds += 1;
        }
        assert_eq!(
            rounds, 4,
            "three pieces, then the region's last bytes and the tail"
        );
        let mut want = b"head|".to_vec();
        want.extend((0..len).map(|i| (i % 251) as u8));
        want.extend_from_slice(b"|tail");
        assert!(got == want, "the peer gets everything, in order");

        server.send_with_files(b"", &mut vec![(0, region(&dir, 100))], &mut Vec::new());
        server.send(b"never", &mut Vec::new());
        assert_eq!(server.backlog_len(), 105);
        assert!(server.close(&mut Vec::new()));
        assert_eq!(server.backlog_len(), 0, "closing drops what was not sent");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// While a backlog waits, the batch encrypted ahead doubles with each
    /// send the socket takes whole, up to its maximum, and halves with each
    /// it leaves some of, down to one record; with no backlog it stays.
    #[test]
    fn the_refill_batch_follows_the_socket() {
        let dir = std::env::temp_dir().join(format!("iomux-tls-batch-{}", std::process::id()));
        let (mut server, _client) = connected(&dir);
        server.records_sent(true);
        assert_eq!(server.refill_batch(), REFILL_MIN, "no backlog: unchanged");
        server.send_with_files(b"", &mut vec![(0, region(&dir, 10 << 20))], &mut Vec::new());
        let mut batches = Vec::new();
        for took_all in [
            true, true, true, true, true, false, false, false, false, false,
        ] {
            server.records_sent(took_all);
            batches.push(server.refill_batch() >> 10);
        }
        let max = REFILL_MAX >> 10;
        assert_eq!(batches, [32, max, max, max, max, max / 2, 16, 16, 16, 16]);
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
