//! `--addr HOST:PORT` for `serve` and `load`: an IP address or a host name
//! (resolved once, at start), with errors that say how to write it.

use std::net::{SocketAddr, ToSocketAddrs};

/// Parse `HOST:PORT`: `127.0.0.1:8080`, `[::1]:8080` or `localhost:8080`.
/// A name that resolves to several addresses gives its first IPv4 one (the
/// one clients try first for `localhost`), else its first.
pub fn parse(text: &str) -> Result<SocketAddr, String> {
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
    use super::parse;

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
}
