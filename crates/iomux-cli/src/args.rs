//! Flag values shared by `serve` and `load`, with errors that say how to
//! write them: `--addr HOST:PORT` (an IP address or a host name, resolved
//! once, at start) and durations in seconds.

use iomux_engine::MAX_TIMEOUT;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// `value` seconds of `flag` as a Duration: positive and at most
/// [`MAX_TIMEOUT`] (a year).
pub fn seconds(value: f64, flag: &str) -> io::Result<Duration> {
    // try_from_secs_f64 refuses negative, NaN and overflowing values; a
    // positive value too small for a nanosecond comes back as zero.
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero() && *d <= MAX_TIMEOUT)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{flag} must be a positive number of seconds up to {} (a year); got {value}",
                    MAX_TIMEOUT.as_secs()
                ),
            )
        })
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
    use super::{addr as parse, seconds, MAX_TIMEOUT};

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
        assert!(seconds(MAX_TIMEOUT.as_secs_f64(), "--x").is_ok());
        for bad in [
            0.0,
            -1.0,
            1e-12,
            f64::NAN,
            f64::INFINITY,
            1e30,
            MAX_TIMEOUT.as_secs_f64() * 2.0,
        ] {
            let err = seconds(bad, "--idle-timeout").unwrap_err().to_string();
            assert!(
                err.contains("--idle-timeout must be a positive number of seconds"),
                "{bad}: {err}"
            );
        }
    }
}
