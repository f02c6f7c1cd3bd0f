//! Combining `--json` outputs of runs made at the same time from several
//! machines: counters add up, latency percentiles come from the union of the
//! histograms each run carries (never from averaged percentiles).

use super::{HttpRequest, LoadConfig, LoadReport, Proto, TlsOptions, Totals, STATUS_CODES};
use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde_json::Value;
use std::io;
use std::time::Duration;

/// A histogram in HdrHistogram's standard form: V2 compressed, base64.
///
/// ```
/// let mut h = hdrhistogram::Histogram::<u64>::new(3).unwrap();
/// h.record(42).unwrap();
/// let text = iomux_lab::load::histogram_to_base64(&h);
/// assert!(text.starts_with("HISTF"));
/// assert_eq!(iomux_lab::load::histogram_from_base64(&text).unwrap(), h);
/// ```
pub fn histogram_to_base64(histogram: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    // Serializing into a Vec cannot fail for a histogram this crate built.
    if V2DeflateSerializer::new()
        .serialize(histogram, &mut bytes)
        .is_err()
    {
        return String::new();
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Read a histogram written by [`histogram_to_base64`] (or any HdrHistogram
/// implementation's V2 compressed, base64 form).
pub fn histogram_from_base64(text: &str) -> io::Result<Histogram<u64>> {
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| invalid(format!("the histogram is not valid base64: {e}")))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| invalid(format!("the histogram cannot be decoded: {e:?}")))
}

/// Merge the `--json` outputs `runs` (named by `names`, for errors) of runs
/// made at the same time. Counters, connections and threads add up; the
/// duration is the longest run's, so requests/s is all requests over it;
/// latency comes from the union of the histograms.
pub fn merge(runs: &[(String, String)]) -> io::Result<LoadReport> {
    let mut merged: Option<LoadReport> = None;
    for (name, text) in runs {
        let report = parse(text)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{name}: {e}")))?;
        match merged.as_mut() {
            None => merged = Some(report),
            Some(m) => {
                if m.config.proto != report.config.proto {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "{name} is a {} run but the first is {}: merge runs of one protocol",
                            report.config.proto, m.config.proto
                        ),
                    ));
                }
                m.config.conns += report.config.conns;
                m.config.idle += report.config.idle;
                m.config.threads += report.config.threads;
                m.config.rate = m.config.rate.zip(report.config.rate).map(|(a, b)| a + b);
                m.config.requests = m
                    .config
                    .requests
                    .zip(report.config.requests)
                    .map(|(a, b)| a + b);
                m.elapsed = m.elapsed.max(report.elapsed);
                m.runs += report.runs;
                m.totals.add(report.totals)?;
            }
        }
    }
    merged.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "nothing to merge: name the JSON files written by `--json`",
        )
    })
}

/// Rebuild a report from its `--json` output.
fn parse(text: &str) -> Result<LoadReport, String> {
    let json: Value = serde_json::from_str(text.trim())
        .map_err(|e| format!("not the JSON object `--json` writes ({e})"))?;
    let number = |key: &str| -> Result<u64, String> {
        json.get(key)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("no whole number \"{key}\" in it"))
    };
    let nested = |outer: &str, key: &str| -> Result<u64, String> {
        json.get(outer)
            .and_then(|o| o.get(key))
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("no whole number \"{outer}\".\"{key}\" in it"))
    };
    let text_of = |key: &str| -> Result<&str, String> {
        json.get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("no text \"{key}\" in it"))
    };
    let histogram = text_of("histogram").map_err(|_| {
        "no latency histogram in it: it was written by an older `iomux load`; run it again"
            .to_string()
    })?;
    let proto: Proto = text_of("proto")?.parse()?;
    let addr = text_of("addr")?
        .parse()
        .map_err(|_| "its \"addr\" is not an address".to_string())?;
    let mut config = LoadConfig::new(addr, proto);
    config.conns = number("conns")? as usize;
    config.idle = number("idle")? as usize;
    config.threads = number("threads")? as usize;
    config.pipeline = number("pipeline")? as usize;
    config.size = number("size")? as usize;
    config.rate = json.get("rate").and_then(Value::as_f64);
    config.requests = json.get("requests_asked").and_then(Value::as_u64);
    config.connect_per_request = json
        .get("connect_per_request")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if proto == Proto::Http {
        config.request = request_of(text_of("url")?, text_of("method")?, &json);
        if json.get("tls").and_then(Value::as_bool) == Some(true) {
            let host = config.request.host.clone().unwrap_or_default();
            config.tls = Some(TlsOptions {
                verify: json.get("tls_verified").and_then(Value::as_bool) == Some(true),
                resume: json.get("tls_resume").and_then(Value::as_bool) == Some(true),
                ..TlsOptions::new(&host)
            });
        }
    }
    let seconds = json
        .get("duration_s")
        .and_then(Value::as_f64)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or("no \"duration_s\" in it")?;
    let mut totals = Totals::new();
    totals.requests = number("requests")?;
    totals.connects = number("connects")?;
    totals.server_closes = number("server_closes")?;
    totals.unsent = number("unsent")?;
    totals.starved = number("starved")?;
    totals.bytes_sent = number("bytes_sent")?;
    totals.bytes_received = number("bytes_received")?;
    totals.body_bytes = number("body_bytes").map_err(|_| {
        "no \"body_bytes\" in it: it was written by an older `iomux load`; run it again".to_string()
    })?;
    totals.errors.connect = nested("error_kinds", "connect")?;
    totals.errors.io = nested("error_kinds", "io")?;
    totals.errors.protocol = nested("error_kinds", "protocol")?;
    totals.errors.timeout = nested("error_kinds", "timeout")?;
    totals.errors.status = nested("error_kinds", "status")?;
    totals.errors.tls = nested("error_kinds", "tls")?;
    totals.tls_handshakes = number("tls_handshakes")?;
    totals.tls_resumed = number("tls_resumed")?;
    let statuses = json
        .get("status_counts")
        .and_then(Value::as_object)
        .ok_or("no \"status_counts\" object in it")?;
    for (status, count) in statuses {
        let code = status
            .parse::<usize>()
            .ok()
            .filter(|&s| s < STATUS_CODES)
            .ok_or_else(|| format!("status {status:?} is not a three-digit code"))?;
        totals.status_counts[code] += count
            .as_u64()
            .ok_or_else(|| format!("status {status}'s count is not a whole number"))?;
    }
    totals.first_error = json
        .get("first_error")
        .and_then(Value::as_str)
        .map(str::to_string);
    totals.latency = histogram_from_base64(histogram).map_err(|e| e.to_string())?;
    totals.latency.auto(true);
    Ok(LoadReport {
        config,
        elapsed: seconds,
        totals,
        runs: number("runs").unwrap_or(1) as usize,
    })
}

/// The request a run sent, as far as the summary shows it (URL and method).
fn request_of(url: &str, method: &str, json: &Value) -> HttpRequest {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    let (host, target) = rest.find('/').map_or((rest, "/"), |at| rest.split_at(at));
    HttpRequest {
        method: method.to_string(),
        target: target.to_string(),
        host: Some(host.to_string()),
        keepalive: json
            .get("keepalive")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        ..HttpRequest::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report of `n` requests all answered in `latency_us`, with status 200.
    fn run_of(n: u64, latency_us: u64) -> String {
        let mut config = LoadConfig::new("127.0.0.1:80".parse().unwrap(), Proto::Http);
        config.conns = 2;
        let mut totals = Totals::new();
        totals.requests = n;
        totals.status_counts[200] = n;
        for _ in 0..n {
            totals.latency.record(latency_us * 1000).unwrap();
        }
        LoadReport {
            config,
            elapsed: Duration::from_secs(1),
            totals,
            runs: 1,
        }
        .to_json()
    }

    #[test]
    fn merged_percentiles_are_those_of_the_union_of_samples() {
        let fast = run_of(1000, 100);
        let slow = run_of(1000, 10_000);
        let merged = merge(&[("a".into(), fast.clone()), ("b".into(), slow)]).unwrap();
        let mut union = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
        for _ in 0..1000 {
            union.record(100_000).unwrap();
            union.record(10_000_000).unwrap();
        }
        for q in [0.25, 0.5, 0.75, 0.9, 0.99] {
            assert_eq!(
                merged.totals.latency.value_at_quantile(q),
                union.value_at_quantile(q),
                "quantile {q}"
            );
        }
        // Averaging the runs' p90 (100 us and 10 ms) would give ~5 ms; the union's p90 is 10 ms.
        assert!(
            merged.latency_us(0.9) > 9_000.0,
            "{}",
            merged.latency_us(0.9)
        );
        assert_eq!(merged.totals.requests, 2000);
        assert_eq!(merged.totals.status_counts[200], 2000);
        assert_eq!(merged.config.conns, 4);
        assert_eq!(merged.runs, 2);
        // A merged report's JSON merges again.
        let again = merge(&[("m".into(), merged.to_json()), ("a".into(), fast)]).unwrap();
        assert_eq!(again.totals.requests, 3000);
        assert_eq!(again.runs, 3);
    }

    #[test]
    fn bad_inputs_are_named() {
        for (text, needle) in [
            ("{}", "no latency histogram"),
            ("not json", "not the JSON object"),
            (
                r#"{"histogram":"@@@","proto":"http","addr":"1.2.3.4:5"}"#,
                "conns",
            ),
        ] {
            let err = merge(&[("f.json".into(), text.into())])
                .unwrap_err()
                .to_string();
            assert!(err.contains("f.json") && err.contains(needle), "{err}");
        }
        let mut json = run_of(3, 5);
        json = json.replace("\"histogram\":\"", "\"histogram\":\"AAAA");
        let err = merge(&[("g".into(), json)]).unwrap_err().to_string();
        assert!(err.contains("histogram"), "{err}");
        assert!(merge(&[]).is_err());
    }
}
