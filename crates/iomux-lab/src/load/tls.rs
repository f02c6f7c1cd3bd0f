//! HTTPS for the load client, with rustls (the `ring` provider): the client
//! configuration (trusted certificates, verification, ALPN `http/1.1`,
//! session resumption), a check at start that the server's certificate is
//! trusted, and the per-connection work the worker does: decrypting what
//! arrives and moving requests out through the TLS session.

use super::proto::ProtocolError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::fmt;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How to speak TLS to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// The name the server's certificate must carry, and the SNI sent (none
    /// for an IP address): the URL's host, without its port.
    pub server_name: String,
    /// Trust the certificates in this PEM file instead of the system's store.
    pub ca_file: Option<PathBuf>,
    /// Check the server's certificate (`false`: accept any, insecure).
    pub verify: bool,
    /// Resume sessions on new connections (tickets or session ids).
    pub resume: bool,
}

impl TlsOptions {
    /// Verified against the system's store, resuming sessions.
    pub fn new(server_name: &str) -> TlsOptions {
        TlsOptions {
            server_name: server_name.to_string(),
            ca_file: None,
            verify: true,
            resume: true,
        }
    }
}

/// The server's certificate is not trusted by the client's configuration
/// (the error inside the `io::Error` a run returns), so that a caller can
/// say how to trust it.
#[derive(Debug)]
pub struct UntrustedCertificate(pub String);

impl fmt::Display for UntrustedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UntrustedCertificate {}

/// What the worker needs to open TLS sessions.
#[derive(Debug, Clone)]
pub(crate) struct Tls {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

/// Where the system's trusted certificates are (`SSL_CERT_FILE` first, as
/// OpenSSL reads it).
const SYSTEM_STORES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Every certificate in the PEM file `path`, named in errors.
fn certificates(path: &std::path::Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            invalid(format!(
                "cannot read the certificates in {}: {e}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(invalid(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

fn roots(ca_file: Option<&std::path::Path>) -> io::Result<RootCertStore> {
    let env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let path = match ca_file {
        Some(path) => path.to_path_buf(),
        None => env
            .into_iter()
            .chain(SYSTEM_STORES.iter().map(PathBuf::from))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                invalid(format!(
                    "no system certificate store was found (SSL_CERT_FILE is unset and none of {} exists): name the certificates to trust",
                    SYSTEM_STORES.join(", ")
                ))
            })?,
    };
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(certificates(&path)?);
    if added == 0 {
        return Err(invalid(format!(
            "none of the {ignored} certificates in {} can be used as a trust anchor",
            path.display()
        )));
    }
    Ok(roots)
}

impl Tls {
    /// The client configuration `options` ask for, for HTTP/1.1.
    pub(crate) fn new(options: &TlsOptions) -> io::Result<Tls> {
        let name = ServerName::try_from(options.server_name.clone()).map_err(|e| {
            invalid(format!(
                "'{}' is not a host name TLS can check a certificate against: {e}",
                options.server_name
            ))
        })?;
        // ring, as the project asks (aws-lc-rs needs cmake and builds
        // slowly here); rustls deprecates it for lacking post-quantum key
        // exchange, which a load client can do without.
        #[allow(deprecated)]
        let mut provider = ring::default_provider();
        // X25519 first, as browsers and curl offer it: rustls 0.23.48's
        // ring provider lists P-384 first, whose ring code is several times
        // slower, and servers take the client's first choice.
        provider.kx_groups = vec![
            ring::kx_group::X25519,
            ring::kx_group::SECP256R1,
            ring::kx_group::SECP384R1,
        ];
        let provider = Arc::new(provider);
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| io::Error::other(e.to_string()))?;
        let mut config = if options.verify {
            builder
                .with_root_certificates(roots(options.ca_file.as_deref())?)
                .with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        if !options.resume {
            config.resumption = Resumption::disabled();
        }
        Ok(Tls {
            config: Arc::new(config),
            name,
        })
    }

    /// A new session for one connection.
    pub(crate) fn session(&self) -> Result<ClientConnection, rustls::Error> {
        ClientConnection::new(self.config.clone(), self.name.clone())
    }

    /// Connect to `addr` and complete one handshake (with a configuration of
    /// its own that stores no session, so the run's counts start clean):
    /// a server whose certificate is not trusted, or that does not speak TLS,
    /// is an error before the run instead of one error per connection.
    pub(crate) fn check(&self, addr: SocketAddr, timeout: Duration) -> io::Result<()> {
        let mut config = (*self.config).clone();
        config.resumption = Resumption::disabled();
        let mut session = ClientConnection::new(Arc::new(config), self.name.clone())
            .map_err(|e| io::Error::other(e.to_string()))?;
        let mut stream = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| super::connect::explain(e, addr))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let name = self.name.to_str();
        while session.is_handshaking() {
            if let Err(e) = session.complete_io(&mut stream) {
                return Err(handshake_error(e, addr, &name));
            }
        }
        session.send_close_notify();
        let _ = session.complete_io(&mut stream);
        Ok(())
    }
}

/// The handshake with the server failed: say why in the user's terms.
fn handshake_error(e: io::Error, addr: SocketAddr, name: &str) -> io::Error {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(rustls::Error::InvalidCertificate(why)) => io::Error::new(
            io::ErrorKind::InvalidData,
            UntrustedCertificate(format!(
                "the certificate of the server at {addr} is not trusted for {name}: {why:?}"
            )),
        ),
        Some(rustls::Error::InvalidMessage(_))
        | Some(rustls::Error::InappropriateMessage { .. }) => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the server at {addr} did not answer with TLS ({e}): is it an HTTPS server?"),
        ),
        Some(other) => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the TLS handshake with {addr} failed: {other}"),
        ),
        None if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut => {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the server at {addr} did not complete a TLS handshake in time"),
            )
        }
        None => io::Error::new(
            e.kind(),
            format!("the TLS handshake with {addr} failed: {e}"),
        ),
    }
}

/// What a connection's TLS session made of the bytes it was given.
pub(crate) enum Decrypted {
    /// Everything was taken in; more may come.
    More,
    /// The server sent close_notify: nothing more comes.
    Closed,
    /// The session failed (an alert, a bad record, a certificate refused).
    Failed(String),
}

/// Take `wire` (bytes read from the socket; empty: the server closed the
/// socket) into `session` and hand every piece of plaintext it yields,
/// decrypted into `plain`, to `on_plain`.
pub(crate) fn decrypt(
    session: &mut ClientConnection,
    mut wire: &[u8],
    plain: &mut [u8],
    mut on_plain: impl FnMut(&[u8]) -> Result<(), ProtocolError>,
) -> Result<Decrypted, ProtocolError> {
    loop {
        // rustls takes a few KiB per call; an empty slice tells it of the end.
        if let Err(e) = session.read_tls(&mut wire) {
            return Ok(Decrypted::Failed(format!("TLS: {e}")));
        }
        if let Err(e) = session.process_new_packets() {
            return Ok(Decrypted::Failed(format!("TLS: {e}")));
        }
        loop {
            match session.reader().read(plain) {
                Ok(0) => return Ok(Decrypted::Closed),
                Ok(n) => on_plain(&plain[..n])?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // The socket closed without close_notify: the caller sees
                // the end of the stream as it would without TLS.
                Err(_) => return Ok(Decrypted::More),
            }
        }
        if wire.is_empty() {
            return Ok(Decrypted::More);
        }
    }
}

/// Accepts any certificate (`verify: false`), while still checking that
/// the server holds the key of the certificate it sent.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
