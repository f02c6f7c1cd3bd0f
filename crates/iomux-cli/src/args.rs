//! Flag values shared by `serve` and `load`, with errors that say how to
//! write them: `--addr HOST:PORT` (an IP address or a host name, resolved
//! once, at start) and durations in seconds.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// The longest duration a flag takes: a year. Far beyond any real timeout
/// or run, and far enough from `Instant`'s limits that deadlines computed
/// from it never overflow.
pub const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// `value` seconds of `flag` as a Duration: positive and at most a year.
pub fn seconds(value: f64, flag: &str) -> io::Result<Duration> {
    if value > 0.0 && value <= MAX_SECONDS {
        if let Ok(d) = Duration::try_from_secs_f64(value) {
            if !d.is_zero() {
                return Ok(d);
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{flag} must be a positive number of seconds up to {MAX_SECONDS} (a year); got {value}"
        ),
    ))
}

/// Parse `HOST:PORT`: `127.0.0.1:8080`, `[::1]:8080` or `localhost:8080`.
/// A name that resolves to several addresses gives its first IPv4 one (the
/// one clients try first for `localhost`), else its first.
pub fn addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!(
            "'{text}' has no port: write HOST:PORT, e.g. 127.0.0.1:8080"
        ));
    };
    let port: u16 = port.parse().map_err(|_| {
        format!("'{port}' is not a port: use a number from 0 to 65535 (0 picks a free port)")
    })?;
    if host.is_empty() {
        return Err(format!(
            "no host before ':{port}': write e.g. 127.0.0.1:{port}, or 0.0.0.0:{port} for every interface"
        ));
    }
    if host.contains(':') && !host.starts_with('[') {
        return Err(format!(
            "'{host}' looks like an IPv6 address: put it in brackets, e.g. [{host}]:{port}"
        ));
    }
    let resolved: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| {
            format!("cannot resolve host '{host}': {e}; use an IP address such as 127.0.0.1")
        })?
        .collect();
    resolved
        .iter()
        .find(|a| a.is_ipv4())
        .or(resolved.first())
        .copied()
        .ok_or_else(|| {
            format!("host '{host}' resolves to no address; use an IP address such as 127.0.0.1")
        })
}

#[cfg(test)]
mod tests {
    use super::{addr as parse, seconds};

    #[test]
    fn ip_addresses_parse_as_they_are() {
        assert_eq!(
            parse("127.0.0.1:8080").unwrap().to_string(),
            "127.0.0.1:8080"
        );
        assert_eq!(parse("[::1]:0").unwrap().to_string(), "[::1]:0");
    }

    // Resolves through /etc/hosts: no query leaves the machine. (No test
    // resolves a missing name: that would ask the configured DNS server.)
    #[test]
    fn localhost_resolves_to_a_loopback_address() {
        let addr = parse("localhost:8080").unwrap();
        assert!(addr.ip().is_loopback(), "{addr}");
        assert_eq!(addr.port(), 8080);
    }

    #[test]
    fn mistakes_are_named_with_the_way_to_write_it() {
        for (text, needle) in [
            ("127.0.0.1", "has no port"),
            ("127.0.0.1:99999", "from 0 to 65535"),
            ("127.0.0.1:http", "'http' is not a port"),
            (":8080", "no host"),
            ("::1:8080", "in brackets"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn seconds_are_positive_and_at_most_a_year() {
        assert_eq!(
            seconds(1.5, "--x").unwrap(),
            std::time::Duration::from_millis(1500)
        );
        assert!(seconds(super::MAX_SECONDS, "--x").is_ok());
        for bad in [
            0.0,
            -1.0,
            1e-12,
            f64::NAN,
            f64::INFINITY,
            1e30,
            super::MAX_SECONDS * 2.0,
        ] {
            let err = seconds(bad, "--idle-timeout").unwrap_err().to_string();
            assert!(
                err.contains("--idle-timeout must be a positive number of seconds"),
                "{bad}: {err}"
            );
        }
    }
}
