//! Kernel TLS: after the handshake, the kernel's `tls` upper-layer protocol
//! can take the record layer over (the session keys handed to it with
//! `TLS_TX`/`TLS_RX`), so that file regions go out with `sendfile`
//! encrypted by the kernel. Where the kernel lacks it, records are
//! encrypted in user space (rustls); [`kernel_tls`] says which.

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

/// Hand a connection's record layer to the kernel: `secrets` (rustls's,
/// after the handshake, with every record it produced already written to
/// the socket) for both directions of `fd`.
pub(crate) fn offload(
    fd: RawFd,
    version: ProtocolVersion,
    secrets: ExtractedSecrets,
) -> io::Result<()> {
    let version = match version {
        ProtocolVersion::TLSv1_3 => libc::TLS_1_3_VERSION,
        ProtocolVersion::TLSv1_2 => libc::TLS_1_2_VERSION,
        v => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("kernel TLS has no {v:?}"),
            ))
        }
    };
    let tx = crypto_info(version, secrets.tx)?;
    let rx = crypto_info(version, secrets.rx)?;
    set_ulp(fd)?;
    setsockopt_bytes(fd, libc::SOL_TLS, libc::TLS_TX, &tx)?;
    setsockopt_bytes(fd, libc::SOL_TLS, libc::TLS_RX, &rx)
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
}
