//! Kernel TLS: after the handshake, the kernel's `tls` upper-layer protocol
//! can take the record layer over (the session keys handed to it with
//! `TLS_TX`/`TLS_RX`), so that file regions go out with `sendfile`
//! encrypted by the kernel. Where the kernel lacks it, records are
//! encrypted in user space (rustls); [`kernel_tls`] says which.
//!
//! The hand-over takes two steps, so that a refusal costs nothing: the
//! `tls` ULP is attached first ([`attach`]; refused, the connection stays in
//! user space), then rustls's secrets are extracted and installed
//! ([`install`]; past the extraction rustls's state is gone, so a failure
//! there ends the connection). After it, a plain read of a record that is
//! not application data (the peer's close_notify or another alert, a TLS 1.3
//! KeyUpdate) fails with `EIO` ([`is_control_record`]): the loop takes it
//! as the peer's end. Our close_notify is an alert record sent with a
//! control message ([`send_close_notify`]).

use rustls::{ConnectionTrafficSecrets, ExtractedSecrets, ProtocolVersion};
use std::io;
use std::os::fd::RawFd;

/// Whether this kernel offers TLS offload (the `tls` ULP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelTls {
    /// The kernel takes the record layer over after the handshake.
    Available,
    /// It does not: records are encrypted in user space. Says why.
    Unavailable(String),
}

const AVAILABLE_ULP: &str = "/proc/sys/net/ipv4/tcp_available_ulp";

/// Whether this kernel offers the `tls` upper-layer protocol: listed in
/// `/proc/sys/net/ipv4/tcp_available_ulp`, or loaded on demand when a
/// loopback socket asks for it.
///
/// ```
/// use iomux_engine::tls::{kernel_tls, KernelTls};
/// match kernel_tls() {
///     KernelTls::Available => {}
///     KernelTls::Unavailable(why) => assert!(!why.is_empty()),
/// }
/// ```
pub fn kernel_tls() -> KernelTls {
    let listed = std::fs::read_to_string(AVAILABLE_ULP).unwrap_or_default();
    if listed.split_whitespace().any(|ulp| ulp == "tls") {
        return KernelTls::Available;
    }
    // The module may load on demand: ask on a connected loopback socket.
    match try_on_loopback() {
        Ok(()) => KernelTls::Available,
        Err(e) => KernelTls::Unavailable(format!(
            "the kernel offers no TLS offload ({AVAILABLE_ULP} lists '{}'; setting TCP_ULP \
             \"tls\": {e}): records are encrypted in user space",
            listed.trim()
        )),
    }
}

fn try_on_loopback() -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let client = std::net::TcpStream::connect(listener.local_addr()?)?;
    let _server = listener.accept()?;
    set_ulp(client.as_raw_fd())
}

fn set_ulp(fd: RawFd) -> io::Result<()> {
    setsockopt_bytes(fd, libc::SOL_TCP, libc::TCP_ULP, b"tls")
}

/// The first step of the hand-over: attach the `tls` ULP to `fd`. Until
/// keys are installed the socket sends and receives as before, so a
/// refusal leaves the connection in user space.
pub(crate) fn attach(fd: RawFd) -> io::Result<()> {
    set_ulp(fd)
}

/// Whether the kernel's record layer has `suite`'s cipher (AES-GCM 128 and
/// 256, ChaCha20-Poly1305: every suite rustls offers by default); asked
/// before the secrets are extracted, so a suite it lacks stays in user space.
pub(crate) fn has_cipher(suite: rustls::SupportedCipherSuite) -> bool {
    use rustls::CipherSuite as C;
    matches!(
        suite.suite(),
        C::TLS13_AES_128_GCM_SHA256
            | C::TLS13_AES_256_GCM_SHA384
            | C::TLS13_CHACHA20_POLY1305_SHA256
            | C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            | C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            | C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
            | C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
            | C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
    )
}

/// Whether a read of a kernel-TLS socket failed on a record that is not
/// application data (an alert such as close_notify, a KeyUpdate): a plain
/// read cannot take it, and this connection has no one to read it with.
pub(crate) fn is_control_record(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EIO)
}

/// Send close_notify on a kernel-TLS socket: an alert record (warning,
/// close_notify) the kernel encrypts, its type given in a control message.
pub(crate) fn send_close_notify(fd: RawFd) -> io::Result<()> {
    const ALERT: u8 = 21;
    let mut alert = [1u8, 0]; // level warning, description close_notify
                              // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(1) } as usize;
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec {
        iov_base: alert.as_mut_ptr().cast(),
        iov_len: alert.len(),
    };
    // SAFETY: zeroed msghdr is valid; every pointer set below points at a
    // live local buffer of the length given, and CMSG_FIRSTHDR of a control
    // buffer of CMSG_SPACE(1) bytes is a valid header with room for 1 byte.
    let sent = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_TLS;
        (*cmsg).cmsg_type = libc::TLS_SET_RECORD_TYPE;
        (*cmsg).cmsg_len = libc::CMSG_LEN(1) as _;
        *libc::CMSG_DATA(cmsg) = ALERT;
        libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn setsockopt_bytes(fd: RawFd, level: i32, name: i32, value: &[u8]) -> io::Result<()> {
    // SAFETY: `value` is a live buffer of the length passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            value.as_ptr().cast(),
            value.len() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Hand a connection's record layer to the kernel in one go ([`attach`],
/// then [`install`]).
#[cfg(test)]
pub(crate) fn offload(
    fd: RawFd,
    version: ProtocolVersion,
    secrets: ExtractedSecrets,
) -> io::Result<()> {
    attach(fd)?;
    install(fd, version, secrets)
}

/// The second step of the hand-over, on a socket [`attach`]ed: `secrets`
/// (rustls's, after the handshake, with every record it produced already
/// written to the socket) for both directions of `fd`.
pub(crate) fn install(
    fd: RawFd,
    version: ProtocolVersion,
    secrets: ExtractedSecrets,
) -> io::Result<()> {
    let tx = crypto_info(version_code(version)?, secrets.tx)?;
    let rx = crypto_info(version_code(version)?, secrets.rx)?;
    set_keys(fd, &tx, &rx)
}

fn set_keys(fd: RawFd, tx: &[u8], rx: &[u8]) -> io::Result<()> {
    setsockopt_bytes(fd, libc::SOL_TLS, libc::TLS_TX, tx)?;
    setsockopt_bytes(fd, libc::SOL_TLS, libc::TLS_RX, rx)
}

/// The kernel's code for a TLS version.
fn version_code(version: ProtocolVersion) -> io::Result<u16> {
    match version {
        ProtocolVersion::TLSv1_3 => Ok(libc::TLS_1_3_VERSION),
        ProtocolVersion::TLSv1_2 => Ok(libc::TLS_1_2_VERSION),
        v => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("kernel TLS has no {v:?}"),
        )),
    }
}

/// The kernel's `tls12_crypto_info_*` for one direction, as bytes.
fn crypto_info(
    version: u16,
    (seq, secrets): (u64, ConnectionTrafficSecrets),
) -> io::Result<Vec<u8>> {
    let rec_seq = seq.to_be_bytes();
    let (cipher, key, iv) = match &secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (libc::TLS_CIPHER_AES_GCM_128, key, iv),
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (libc::TLS_CIPHER_AES_GCM_256, key, iv),
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
            (libc::TLS_CIPHER_CHACHA20_POLY1305, key, iv)
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "kernel TLS has no such cipher",
            ))
        }
    };
    let iv = iv.as_ref();
    // GCM: a 4-byte salt (the implicit nonce) and an 8-byte IV; ChaCha20: a
    // 12-byte IV and no salt. The layout of the kernel's structs: version,
    // cipher, iv, key, salt, record sequence.
    let (salt, iv) = if cipher == libc::TLS_CIPHER_CHACHA20_POLY1305 {
        (&iv[..0], iv)
    } else {
        iv.split_at(4)
    };
    let mut info = Vec::with_capacity(4 + iv.len() + key.as_ref().len() + salt.len() + 8);
    info.extend_from_slice(&version.to_ne_bytes());
    info.extend_from_slice(&cipher.to_ne_bytes());
    info.extend_from_slice(iv);
    info.extend_from_slice(key.as_ref());
    info.extend_from_slice(salt);
    info.extend_from_slice(&rec_seq);
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crypto_info_matches_the_kernel_struct_layout() {
        let secrets = ConnectionTrafficSecrets::Aes256Gcm {
            key: rustls::crypto::cipher::AeadKey::from([7u8; 32]),
            iv: rustls::crypto::cipher::Iv::new([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]),
        };
        let info = crypto_info(libc::TLS_1_3_VERSION, (5, secrets)).unwrap();
        assert_eq!(
            info.len(),
            std::mem::size_of::<libc::tls12_crypto_info_aes_gcm_256>()
        );
        assert_eq!(&info[..2], &libc::TLS_1_3_VERSION.to_ne_bytes());
        assert_eq!(&info[2..4], &libc::TLS_CIPHER_AES_GCM_256.to_ne_bytes());
        assert_eq!(&info[4..12], &[5, 6, 7, 8, 9, 10, 11, 12], "explicit IV");
        assert_eq!(&info[12..44], &[7u8; 32], "key");
        assert_eq!(&info[44..48], &[1, 2, 3, 4], "salt");
        assert_eq!(&info[48..56], &5u64.to_be_bytes(), "record sequence");
    }

    /// A real connection's record layer handed to the kernel after a
    /// rustls handshake: the server then writes, sends a file with
    /// `sendfile` and reads with plain system calls, and a rustls client
    /// sees records and sends them. Ignored in every run, with the reason
    /// shown: this machine's kernel has no `tls` ULP, and a test that
    /// returned early would pass without having run.
    #[test]
    #[ignore = "needs kernel TLS (the `tls` ULP; this machine's \
                /proc/sys/net/ipv4/tcp_available_ulp lists only mptcp): \
                run with --ignored on a kernel that has it"]
    fn the_kernel_takes_the_record_layer_over() {
        if let KernelTls::Unavailable(why) = kernel_tls() {
            panic!("cannot run here: {why}");
        }
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            offloaded_exchange(version, true);
        }
    }

    /// What runs here: the secrets of a real handshake are extracted and
    /// laid out for the kernel, which refuses them at `TCP_ULP` (no `tls`
    /// ULP), the error `kernel_tls` reports at start. Where the kernel has
    /// it, the whole exchange above runs instead.
    #[test]
    fn without_kernel_tls_the_offload_is_refused_at_the_ulp() {
        let available = kernel_tls() == KernelTls::Available;
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            offloaded_exchange(version, available);
        }
    }

    /// A handshake over loopback, then the server's record layer handed to
    /// the kernel; `kernel` says whether the kernel can take it (else the
    /// refusal is checked, and the exchange ends there).
    fn offloaded_exchange(version: &'static rustls::SupportedProtocolVersion, kernel: bool) {
        use rustls::pki_types::ServerName;
        use std::io::{Read, Write};
        use std::os::fd::AsRawFd;
        use std::sync::Arc;

        let dir = std::env::temp_dir().join(format!(
            "iomux-ktls-{}-{kernel}-{:?}",
            std::process::id(),
            version.version
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = crate::tls::test_fixture::certificate(&dir);
        let options = crate::tls::TlsOptions {
            tickets: false,
            session_cache: 0,
            ..Default::default()
        };
        let mut server_config = crate::tls::load_server_config(&cert, &key, &options).unwrap();
        server_config.enable_secret_extraction = true;
        server_config.send_tls13_tickets = 0;
        let server_config = Arc::new(server_config);
        let client_config = crate::tls::test_fixture::client_config(&cert, version);

        let file_bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let file = dir.join("body.bin");
        std::fs::write(&file, &file_bytes).unwrap();

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut sock, _) = listener.accept().unwrap();
            let mut conn = rustls::ServerConnection::new(server_config).unwrap();
            while conn.is_handshaking() || conn.wants_write() {
                conn.complete_io(&mut sock).unwrap();
            }
            let version = conn.protocol_version().unwrap();
            let secrets = conn.dangerous_extract_secrets().unwrap();
            let offloaded = offload(sock.as_raw_fd(), version, secrets);
            if !kernel {
                let err = offloaded.expect_err("no tls ULP, yet the offload worked");
                assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
                return None;
            }
            offloaded.expect("offload");
            sock.write_all(b"hello from the kernel\n").unwrap();
            let body = std::fs::File::open(&file).unwrap();
            let mut offset: libc::off_t = 0;
            while (offset as usize) < 100_000 {
                // SAFETY: two open descriptors and a live offset.
                let n = unsafe {
                    libc::sendfile(sock.as_raw_fd(), body.as_raw_fd(), &mut offset, 100_000)
                };
                assert!(n > 0, "sendfile: {}", io::Error::last_os_error());
            }
            let mut ping = [0u8; 5];
            sock.read_exact(&mut ping).unwrap();
            Some(ping)
        });

        let sock = std::net::TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(client_config, name).unwrap();
        let mut client = rustls::StreamOwned::new(conn, sock);
        if !kernel {
            while client.conn.is_handshaking() {
                client.conn.complete_io(&mut client.sock).unwrap();
            }
            assert_eq!(server.join().unwrap(), None);
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
        let mut got = vec![0u8; 22 + 100_000];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got[..22], b"hello from the kernel\n");
        assert!(
            got[22..] == file_bytes[..],
            "the file sent by sendfile, decrypted"
        );
        client.write_all(b"ping\n").unwrap();
        client.flush().unwrap();
        assert_eq!(
            server.join().unwrap(),
            Some(*b"ping\n"),
            "decrypted by the kernel"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
