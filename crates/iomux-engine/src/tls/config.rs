//! A `rustls::ServerConfig` from PEM files, with errors that name the file
//! and what is wrong with it.

use rustls::crypto::ring as provider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ServerSessionMemoryCache;
use rustls::ServerConfig;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// How [`load_server_config`] sets up the server side.
///
/// ```
/// let options = iomux_engine::tls::TlsOptions::default();
/// assert!(options.alpn.is_empty());
/// assert!(options.tickets);
/// assert_eq!(options.session_cache, 1024);
/// ```
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// Application protocols offered by ALPN, most preferred first (e.g.
    /// `b"http/1.1"`); a client that offers ALPN and none of these is
    /// refused. Empty: ALPN is not used.
    pub alpn: Vec<Vec<u8>>,
    /// Resumption by stateless session tickets (TLS 1.2 and 1.3), their key
    /// rotated every six hours.
    pub tickets: bool,
    /// Resumption by session id: how many sessions the server remembers
    /// (the oldest are forgotten first); 0 turns the cache off.
    pub session_cache: usize,
}

impl Default for TlsOptions {
    fn default() -> TlsOptions {
        TlsOptions {
            alpn: Vec::new(),
            tickets: true,
            session_cache: 1024,
        }
    }
}

/// A server configuration for TLS 1.2 and 1.3 (rustls with the `ring`
/// provider) presenting the certificate chain in the PEM file `cert` (the
/// server's certificate first) with the private key in the PEM file `key`
/// (PKCS#8, PKCS#1 RSA or SEC1 EC: ECDSA P-256/P-384, RSA, Ed25519).
///
/// Errors name the file and what is wrong: missing or unreadable, no
/// certificate or key in it, not valid PEM, a key type rustls cannot use,
/// a key that does not belong to the certificate.
///
/// ```
/// let err = iomux_engine::tls::load_server_config(
///     "/nonexistent/cert.pem".as_ref(),
///     "/nonexistent/key.pem".as_ref(),
///     &Default::default(),
/// )
/// .unwrap_err();
/// assert!(err.to_string().contains("/nonexistent/cert.pem"));
/// ```
pub fn load_server_config(
    cert: &Path,
    key: &Path,
    options: &TlsOptions,
) -> io::Result<ServerConfig> {
    let chain = read_certificates(cert)?;
    let private_key = read_private_key(key)?;
    // rustls deprecates ring's provider for lacking post-quantum key
    // exchange; aws-lc-rs has it but needs cmake and builds slowly here.
    #[allow(deprecated)]
    let provider = Arc::new(provider::default_provider());
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| invalid(format!("cannot set up TLS: {e}")))?;
    let mut config = builder
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|e| unusable(cert, key, e))?;
    config.alpn_protocols = options.alpn.clone();
    config.session_storage = match options.session_cache {
        0 => Arc::new(rustls::server::NoServerSessionStorage {}),
        n => ServerSessionMemoryCache::new(n),
    };
    if options.tickets {
        config.ticketer = provider::Ticketer::new()
            .map_err(|e| invalid(format!("cannot set up TLS session tickets: {e}")))?;
    }
    Ok(config)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

fn read_certificates(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let file = path.display();
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| match e {
            pem::Error::Io(e) => io::Error::new(
                e.kind(),
                format!("cannot read the certificate file {file}: {e}"),
            ),
            e => invalid(format!("the certificate file {file} is not valid PEM: {e}")),
        })?;
    if chain.is_empty() {
        return Err(invalid(format!(
            "the certificate file {file} holds no certificate (a PEM block \
             '-----BEGIN CERTIFICATE-----'): is it the key, or DER rather than PEM?"
        )));
    }
    Ok(chain)
}

fn read_private_key(path: &Path) -> io::Result<PrivateKeyDer<'static>> {
    let file = path.display();
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::Io(e) => {
            io::Error::new(e.kind(), format!("cannot read the key file {file}: {e}"))
        }
        pem::Error::NoItemsFound => invalid(format!(
            "the key file {file} holds no private key (a PEM block '-----BEGIN PRIVATE \
             KEY-----', 'EC PRIVATE KEY' or 'RSA PRIVATE KEY'): is it the certificate, \
             or an encrypted key?"
        )),
        e => invalid(format!("the key file {file} is not valid PEM: {e}")),
    })
}

/// Why rustls refused the pair, naming the file at fault.
fn unusable(cert: &Path, key: &Path, e: rustls::Error) -> io::Error {
    let (cert, key) = (cert.display(), key.display());
    invalid(match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            format!("the private key in {key} does not belong to the certificate in {cert}")
        }
        rustls::Error::InvalidCertificate(e) => {
            format!("the certificate in {cert} cannot be used: {e}")
        }
        rustls::Error::NoCertificatesPresented => {
            format!("the certificate file {cert} holds no certificate")
        }
        e => format!(
            "the private key in {key} cannot be used with the certificate in {cert}: {e} \
             (keys rustls takes: ECDSA P-256 or P-384, RSA of 2048 bits or more, Ed25519)"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_fixture::{certificate, client_config, resumed};
    use rustls::version::{TLS12, TLS13};

    fn server(dir: &Path, tickets: bool, session_cache: usize) -> Arc<ServerConfig> {
        let (cert, key) = certificate(dir);
        let options = TlsOptions {
            tickets,
            session_cache,
            ..TlsOptions::default()
        };
        Arc::new(load_server_config(&cert, &key, &options).unwrap())
    }

    fn dir(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("iomux-tls-config-{}-{name}", std::process::id()))
    }

    /// A server with these settings resumes TLS 1.2 and 1.3 sessions: each
    /// client's first handshake runs in full, its second resumes.
    fn assert_resumes_both_versions(name: &str, tickets: bool, session_cache: usize) {
        let dir = dir(name);
        let server = server(&dir, tickets, session_cache);
        for version in [&TLS12, &TLS13] {
            let client = client_config(&dir.join("cert.pem"), version);
            assert!(
                !resumed(&client, &server),
                "{version:?}: the first handshake"
            );
            assert!(resumed(&client, &server), "{version:?}: the second");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Session tickets alone (no cache) resume TLS 1.2 and 1.3 sessions.
    #[test]
    fn tickets_resume_without_a_cache() {
        assert_resumes_both_versions("tickets", true, 0);
    }

    /// The server-side cache alone (tickets off) resumes TLS 1.2 (session
    /// id) and TLS 1.3 (tickets that name a cached session) ...
    #[test]
    fn the_session_cache_resumes_without_tickets() {
        assert_resumes_both_versions("cache", false, 64);
    }

    /// ... and holds at most as many sessions as it was given: the oldest
    /// is forgotten first, and with no cache and no tickets nothing resumes.
    #[test]
    fn the_session_cache_is_bounded() {
        let dir = dir("bounded");
        let cert = dir.join("cert.pem");
        let server = server(&dir, false, 2);
        let clients: Vec<_> = (0..3).map(|_| client_config(&cert, &TLS12)).collect();
        for client in &clients {
            assert!(!resumed(client, &server));
        }
        assert!(
            resumed(&clients[2], &server),
            "the newest session is cached"
        );
        assert!(!resumed(&clients[0], &server), "the oldest was forgotten");
        let none = self::server(&dir, false, 0);
        let client = client_config(&cert, &TLS12);
        assert!(!resumed(&client, &none));
        assert!(
            !resumed(&client, &none),
            "no cache, no tickets: no resumption"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
