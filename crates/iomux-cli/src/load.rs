//! `iomux load`: parse the flags (a URL and the request's shape, or `--addr`
//! for echo and scripts), run the load client with a progress bar on a
//! terminal, print its summary or JSON; `iomux load merge` combines runs.

use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use iomux_lab::load::{
    self, HttpRequest, LoadConfig, LoadReport, Progress, Proto, TlsOptions, UntrustedCertificate,
};
use std::io::{self, IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LoadProto {
    /// HTTP/1.x requests (GET /plaintext unless a URL says otherwise).
    Http,
    /// Echo messages of --size bytes.
    Echo,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    #[command(subcommand)]
    pub command: Option<LoadCommand>,
    /// The HTTP server and request: http://HOST:PORT/PATH?QUERY or https://...
    /// (HOST an IP address or a name such as localhost; PORT 80, or 443 for
    /// https, when absent).
    pub url: Option<String>,
    /// The server when no URL is given: HOST:PORT, HOST an IP address or a
    /// name such as localhost [default: 127.0.0.1:8080].
    #[arg(long, value_parser = crate::args::addr)]
    pub addr: Option<SocketAddr>,
    /// What to speak.
    #[arg(long, value_enum, default_value = "http")]
    pub proto: LoadProto,
    /// The HTTP method.
    #[arg(short = 'm', long, default_value = "GET")]
    pub method: String,
    /// An HTTP header, 'Name: value' (repeat the flag for more).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// The request body (sent with Content-Length).
    #[arg(long, conflicts_with = "body_file")]
    pub body: Option<String>,
    /// Read the request body from this file (sent with Content-Length).
    #[arg(long, value_name = "PATH")]
    pub body_file: Option<PathBuf>,
    /// Send HTTP/1.0 requests (with Connection: keep-alive unless --no-keepalive).
    #[arg(long = "http1.0")]
    pub http10: bool,
    /// Send Connection: close: one request per connection, the server closes it.
    #[arg(long)]
    pub no_keepalive: bool,
    /// Active connections.
    #[arg(short = 'c', long, default_value_t = 100)]
    pub conns: usize,
    /// Extra connections opened and held silent.
    #[arg(long, default_value_t = 0)]
    pub idle: usize,
    /// How long to send load: seconds, or with a unit as wrk takes it (500ms, 10s, 2m, 1h).
    #[arg(short = 'd', long, default_value = "10", value_parser = seconds_with_unit)]
    pub duration: f64,
    /// Stop once this many requests are answered (or the duration is over).
    #[arg(short = 'n', long)]
    pub requests: Option<u64>,
    /// Requests in flight per connection (HTTP pipelining; echo messages too).
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// Echo message size in bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Client threads, each with its own epoll loop and share of the connections.
    #[arg(short = 't', long, default_value_t = 1)]
    pub threads: usize,
    /// Target requests per second over all connections (open-loop; latency is
    /// measured from each request's intended send time). Absent: as fast as possible.
    #[arg(short = 'R', long)]
    pub rate: Option<f64>,
    /// Open a new connection for every request (measures connection rate).
    #[arg(long)]
    pub connect_per_request: bool,
    /// How long a request or connect may take before it counts as an error and
    /// its connection is reopened: seconds, or with a unit (500ms, 10s).
    #[arg(long, default_value = "5", value_parser = seconds_with_unit)]
    pub timeout: f64,
    /// Print the detailed latency percentile spectrum (as wrk2 does).
    #[arg(long)]
    pub latency: bool,
    /// One JSON object on stdout instead of the summary (it carries the
    /// latency histogram, for `iomux load merge`).
    #[arg(long)]
    pub json: bool,
    /// https: trust the certificates in this PEM file (the server's own, or
    /// the CA that signed it) instead of the system's store.
    #[arg(long, value_name = "PEM")]
    pub cacert: Option<PathBuf>,
    /// https: accept any certificate, without checking who signed it or
    /// whom it names. INSECURE: for test servers only.
    #[arg(long, conflicts_with = "cacert")]
    pub insecure: bool,
    /// https: do not resume TLS sessions on new connections (every handshake
    /// is a full one).
    #[arg(long)]
    pub no_resume: bool,
}

#[derive(Debug, Subcommand)]
pub enum LoadCommand {
    /// Combine the --json outputs of runs made at the same time (e.g. from
    /// several machines) into one report; latency percentiles come from the
    /// merged histograms.
    Merge(MergeArgs),
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The JSON files, one per run.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Print the detailed latency percentile spectrum.
    #[arg(long)]
    pub latency: bool,
    /// One JSON object on stdout instead of the summary.
    #[arg(long)]
    pub json: bool,
}

/// `10`, `1.5`, `500ms`, `10s`, `2m`, `1h` as seconds (the range is checked later).
fn seconds_with_unit(text: &str) -> Result<f64, String> {
    let (number, scale) = [("ms", 1e-3), ("s", 1.0), ("m", 60.0), ("h", 3600.0)]
        .into_iter()
        .find_map(|(unit, scale)| text.strip_suffix(unit).map(|n| (n, scale)))
        .unwrap_or((text, 1.0));
    number
        .trim()
        .parse::<f64>()
        .map(|n| n * scale)
        .map_err(|_| {
            format!("'{text}' is not a duration: write seconds (10, 1.5) or 500ms, 10s, 2m, 1h")
        })
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// A URL the load client can load.
#[derive(Debug)]
struct Url {
    /// Where to connect.
    addr: SocketAddr,
    /// The `Host` header's value: HOST[:PORT] as written.
    authority: String,
    /// HOST alone (no port, no IPv6 brackets): the name TLS checks.
    host: String,
    /// Path and query.
    target: String,
    /// https.
    tls: bool,
}

/// `http[s]://HOST[:PORT][/PATH][?QUERY]`.
fn parse_url(url: &str) -> io::Result<Url> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(invalid(format!(
            "'{url}' is not a URL: write http://HOST:PORT/PATH, e.g. http://127.0.0.1:8080/"
        )));
    };
    let tls = scheme.eq_ignore_ascii_case("https");
    if !tls && !scheme.eq_ignore_ascii_case("http") {
        return Err(invalid(format!(
            "'{url}': {scheme}:// is not supported, iomux load speaks HTTP; use an http:// or https:// URL"
        )));
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, target) = rest.split_at(end);
    if authority.is_empty() {
        return Err(invalid(format!(
            "'{url}' names no host: write http://HOST:PORT/PATH"
        )));
    }
    if authority.contains('@') {
        return Err(invalid(format!(
            "'{url}' carries a user name or password: leave them out and send an Authorization header with -H"
        )));
    }
    // A port is there if the text after the last ':' is outside IPv6 brackets.
    let has_port = authority
        .rfind(':')
        .is_some_and(|colon| !authority[colon..].contains(']'));
    let host_port = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{}", if tls { 443 } else { 80 })
    };
    let host = host_port[..host_port.rfind(':').unwrap_or(host_port.len())]
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let addr = crate::args::addr(&host_port).map_err(|e| invalid(format!("'{url}': {e}")))?;
    // The fragment stays with the client, as browsers keep it.
    let target = target.split('#').next().unwrap_or("");
    let target = if target.starts_with('/') {
        target.to_string()
    } else {
        format!("/{target}")
    };
    Ok(Url {
        addr,
        authority: authority.to_string(),
        host,
        target,
        tls,
    })
}

/// `Name: value` as a pair.
fn parse_header(text: &str) -> io::Result<(String, String)> {
    match text.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(invalid(format!(
            "header '{text}' is not 'Name: value': write e.g. -H 'Content-Type: application/json'"
        ))),
    }
}

/// The body file's bytes, read no further than the largest body the client
/// can hold (it may be a pipe).
fn read_body_file(path: &std::path::Path) -> io::Result<Vec<u8>> {
    let cannot = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("cannot read --body-file {}: {e}", path.display()),
        )
    };
    let mut body = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(load::MAX_RENDERED as u64 + 1).read_to_end(&mut body))
        .map_err(cannot)?;
    if body.len() > load::MAX_RENDERED {
        return Err(invalid(format!(
            "--body-file {} is larger than {} MiB, the most the client holds; send a smaller body",
            path.display(),
            load::MAX_RENDERED >> 20
        )));
    }
    Ok(body)
}

/// The request the flags ask for; `host` is the URL's host, if any.
fn request_of(
    args: &LoadArgs,
    host: Option<String>,
    target: Option<String>,
) -> io::Result<HttpRequest> {
    let body = match (&args.body, &args.body_file) {
        (Some(body), _) => Some(body.clone().into_bytes()),
        (None, Some(path)) => Some(read_body_file(path)?),
        (None, None) => None,
    };
    let defaults = HttpRequest::default();
    Ok(HttpRequest {
        method: args.method.clone(),
        target: target.unwrap_or(defaults.target),
        host,
        headers: args
            .headers
            .iter()
            .map(|h| parse_header(h))
            .collect::<io::Result<_>>()?,
        body,
        http10: args.http10,
        keepalive: !args.no_keepalive,
    })
}

fn config_of(args: &LoadArgs) -> io::Result<LoadConfig> {
    let shaped = args.method != "GET"
        || !args.headers.is_empty()
        || args.body.is_some()
        || args.body_file.is_some()
        || args.http10
        || args.no_keepalive;
    let mut tls = None;
    let (proto, addr, host, target) = match (&args.url, args.addr) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "both a URL and --addr name the server: give one of them".into(),
            ))
        }
        (Some(_), None) if args.proto == LoadProto::Echo => {
            return Err(invalid(
                "a URL is for HTTP; for --proto echo give the server with --addr".into(),
            ))
        }
        (Some(url), None) => {
            let url = parse_url(url)?;
            if url.tls {
                tls = Some(TlsOptions {
                    ca_file: args.cacert.clone(),
                    verify: !args.insecure,
                    resume: !args.no_resume,
                    ..TlsOptions::new(&url.host)
                });
            }
            (Proto::Http, url.addr, Some(url.authority), Some(url.target))
        }
        (None, addr) => {
            let addr = addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
            let proto = match args.proto {
                LoadProto::Http => Proto::Http,
                LoadProto::Echo => Proto::Echo,
            };
            (proto, addr, None, None)
        }
    };
    if tls.is_none() && (args.cacert.is_some() || args.insecure || args.no_resume) {
        return Err(invalid(
            "--cacert, --insecure and --no-resume are for https:// URLs; drop them or load an https:// URL".into(),
        ));
    }
    if proto == Proto::Echo && shaped {
        return Err(invalid(
            "--method, --header, --body, --body-file, --http1.0 and --no-keepalive shape HTTP requests; drop them for --proto echo".into(),
        ));
    }
    Ok(LoadConfig {
        conns: args.conns,
        idle: args.idle,
        duration: crate::args::seconds(args.duration, "--duration")?,
        pipeline: args.pipeline,
        size: args.size,
        threads: args.threads,
        rate: args.rate,
        connect_per_request: args.connect_per_request,
        timeout: crate::args::seconds(args.timeout, "--timeout")?,
        request: request_of(args, host, target)?,
        requests: args.requests,
        tls,
        ..LoadConfig::new(addr, proto)
    })
}

pub fn run(args: LoadArgs) -> io::Result<()> {
    if let Some(LoadCommand::Merge(merge)) = &args.command {
        if let Some(url) = &args.url {
            return Err(invalid(format!(
                "`merge` combines JSON files and loads nothing: drop the URL {url}"
            )));
        }
        // `--json` and `--latency` may come before `merge` too.
        return run_merge(
            merge,
            args.json || merge.json,
            args.latency || merge.latency,
        );
    }
    let config = config_of(&args)?;
    config.validate()?;
    if config.tls.as_ref().is_some_and(|t| !t.verify) {
        eprintln!(
            "iomux: WARNING: --insecure: the server's certificate is NOT verified; anyone on the path could be answering"
        );
    }
    let report = if io::stdout().is_terminal() && io::stderr().is_terminal() {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        let report = load::run_with_progress(&config, progress_bar(&bar, &config));
        bar.finish_and_clear();
        report
    } else {
        load::run(&config)
    };
    let report = report.map_err(advise)?;
    print_report(&report, args.json, args.latency)
}

/// Add what to do to the errors whose cure is a flag.
fn advise(e: io::Error) -> io::Error {
    if e.get_ref()
        .is_some_and(|inner| inner.is::<UntrustedCertificate>())
    {
        return io::Error::new(
            e.kind(),
            format!(
                "{e}; pass --cacert PEM with that certificate or the CA that signed it, or --insecure to skip verification (insecure: test servers only)"
            ),
        );
    }
    e
}

/// A live bar on stderr: time (or requests) done and the current requests/s.
fn progress_bar<'a>(bar: &'a ProgressBar, config: &LoadConfig) -> impl FnMut(Progress) + 'a {
    let by_requests = config.requests;
    let length = by_requests.unwrap_or(config.duration.as_millis() as u64);
    bar.set_length(length);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} [{wide_bar}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut last = (Duration::ZERO, 0u64);
    move |p: Progress| {
        let window = p.elapsed.saturating_sub(last.0).as_secs_f64();
        if window < 0.5 {
            return;
        }
        let rps = p.requests.saturating_sub(last.1) as f64 / window;
        last = (p.elapsed, p.requests);
        bar.set_position(by_requests.map_or(p.elapsed.as_millis() as u64, |_| p.requests));
        bar.set_message(format!(
            "{rps:.0} req/s, {} requests, {} errors",
            p.requests, p.errors
        ));
    }
}

fn print_report(report: &LoadReport, json: bool, latency: bool) -> io::Result<()> {
    let mut out = io::stdout().lock();
    if json {
        writeln!(out, "{}", report.to_json())?;
    } else {
        write!(out, "{}", report.table(latency))?;
    }
    out.flush()
}

fn run_merge(args: &MergeArgs, json: bool, latency: bool) -> io::Result<()> {
    let runs = args
        .files
        .iter()
        .map(|path| {
            let name = path.display().to_string();
            std::fs::read_to_string(path)
                .map(|text| (name.clone(), text))
                .map_err(|e| io::Error::new(e.kind(), format!("cannot read {name}: {e}")))
        })
        .collect::<io::Result<Vec<_>>>()?;
    let report = load::merge(&runs)?;
    print_report(&report, json, latency)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_address_host_and_target() {
        let u = parse_url("http://127.0.0.1:8080/api/items?id=3#frag").unwrap();
        assert_eq!(
            (
                u.addr.to_string().as_str(),
                u.authority.as_str(),
                u.host.as_str(),
                u.target.as_str(),
                u.tls
            ),
            (
                "127.0.0.1:8080",
                "127.0.0.1:8080",
                "127.0.0.1",
                "/api/items?id=3",
                false
            )
        );
        let u = parse_url("HTTP://localhost:9").unwrap();
        assert!(u.addr.ip().is_loopback());
        assert_eq!(
            (
                u.addr.port(),
                u.authority.as_str(),
                u.host.as_str(),
                u.target.as_str()
            ),
            (9, "localhost:9", "localhost", "/")
        );
        let u = parse_url("http://127.0.0.1?x=1").unwrap();
        assert_eq!((u.addr.port(), u.target.as_str()), (80, "/?x=1"));
        let u = parse_url("http://[::1]/").unwrap();
        assert_eq!(
            (u.addr.to_string().as_str(), u.host.as_str()),
            ("[::1]:80", "::1")
        );
        let u = parse_url("https://localhost/x").unwrap();
        assert_eq!(
            (u.addr.port(), u.host.as_str(), u.tls),
            (443, "localhost", true)
        );
        let u = parse_url("HTTPS://[::1]:8443").unwrap();
        assert_eq!((u.addr.port(), u.host.as_str(), u.tls), (8443, "::1", true));
        for (url, needle) in [
            ("ftp://127.0.0.1/", "ftp:// is not supported"),
            ("127.0.0.1:8080/", "not a URL"),
            ("http:///x", "names no host"),
            ("http://u:p@127.0.0.1/", "Authorization"),
            ("http://127.0.0.1:99999/", "from 0 to 65535"),
        ] {
            let err = parse_url(url).unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
    }

    #[test]
    fn durations_take_wrk_units() {
        assert_eq!(seconds_with_unit("10").unwrap(), 10.0);
        assert_eq!(seconds_with_unit("1.5s").unwrap(), 1.5);
        assert_eq!(seconds_with_unit("500ms").unwrap(), 0.5);
        assert_eq!(seconds_with_unit("2m").unwrap(), 120.0);
        assert_eq!(seconds_with_unit("1h").unwrap(), 3600.0);
        assert!(seconds_with_unit("ten")
            .unwrap_err()
            .contains("not a duration"));
    }

    #[test]
    fn headers_are_name_colon_value() {
        assert_eq!(
            parse_header("X-A:  b c ").unwrap(),
            ("X-A".into(), "b c".into())
        );
        assert_eq!(
            parse_header("X-Empty:").unwrap(),
            ("X-Empty".into(), String::new())
        );
        assert!(parse_header("no colon").is_err());
        assert!(parse_header(": v").is_err());
    }
}
