//! What a run measured, and the ways to show it: the JSON object (`--json`,
//! carrying the latency histogram itself), a wrk-like summary and wrk2's
//! detailed percentile spectrum.

use super::{histogram_to_base64, LoadConfig, Proto, Totals};
use std::fmt::Write;
use std::time::Duration;

/// What a run (or several merged runs) measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// The settings it ran with (threads possibly lowered to the connection count).
    pub config: LoadConfig,
    /// Measured wall time of the load phase (merged: the longest run's).
    pub elapsed: Duration,
    /// What it counted.
    pub totals: Totals,
    /// How many runs this report combines (1 unless merged).
    pub runs: usize,
}

impl LoadReport {
    /// Responses per second.
    pub fn rps(&self) -> f64 {
        self.totals.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Bytes of response bodies per second.
    pub fn body_bytes_per_sec(&self) -> f64 {
        self.totals.body_bytes as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency at `quantile` (0..=1) in microseconds; 0 when nothing was measured.
    pub fn latency_us(&self, quantile: f64) -> f64 {
        if self.totals.latency.is_empty() {
            return 0.0;
        }
        self.totals.latency.value_at_quantile(quantile) as f64 / 1000.0
    }

    fn max_us(&self) -> f64 {
        if self.totals.latency.is_empty() {
            return 0.0;
        }
        self.totals.latency.max() as f64 / 1000.0
    }

    fn mean_us(&self) -> f64 {
        if self.totals.latency.is_empty() {
            return 0.0;
        }
        self.totals.latency.mean() / 1000.0
    }

    /// What was loaded: the URL for HTTP, the address for echo.
    pub fn target(&self) -> String {
        let c = &self.config;
        let scheme = if c.tls.is_some() { "https" } else { "http" };
        match c.proto {
            Proto::Http => format!(
                "{scheme}://{}{}",
                c.request.host.clone().unwrap_or_else(|| c.addr.to_string()),
                c.request.target
            ),
            Proto::Echo => c.addr.to_string(),
        }
    }

    /// `(status, count)` for every status that occurred, in order.
    pub fn status_counts(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.totals
            .status_counts
            .iter()
            .enumerate()
            .filter(|&(status, &n)| status > 0 && n > 0)
            .map(|(status, &n)| (status as u16, n))
    }

    /// One JSON object (the `--json` output). `histogram` is the latency
    /// histogram in nanoseconds, HdrHistogram's V2 compressed encoding in
    /// base64, as `merge` reads it.
    pub fn to_json(&self) -> String {
        let c = &self.config;
        let e = &self.totals.errors;
        let rate = c.rate.map_or("null".to_string(), |r| format!("{r}"));
        let mut statuses = String::new();
        for (status, n) in self.status_counts() {
            let sep = if statuses.is_empty() { "" } else { "," };
            let _ = write!(statuses, "{sep}\"{status}\":{n}");
        }
        let requests = c.requests.map_or("null".to_string(), |n| n.to_string());
        format!(
            concat!(
                "{{\"addr\":\"{}\",\"proto\":\"{}\",\"url\":{},\"method\":{},\"conns\":{},\"idle\":{},\"threads\":{},\"pipeline\":{},",
                "\"size\":{},\"rate\":{},\"requests_asked\":{},\"connect_per_request\":{},\"keepalive\":{},\"duration_s\":{:.3},\"runs\":{},",
                "\"requests\":{},\"rps\":{:.1},\"errors\":{},\"connects\":{},\"server_closes\":{},\"unsent\":{},\"starved\":{},",
                "\"error_kinds\":{{\"connect\":{},\"io\":{},\"protocol\":{},\"timeout\":{},\"status\":{},\"tls\":{}}},",
                "\"status_counts\":{{{}}},",
                "\"bytes_sent\":{},\"bytes_received\":{},\"body_bytes\":{},\"body_bytes_per_sec\":{:.1},",
                "\"tls\":{},\"tls_verified\":{},\"tls_resume\":{},\"tls_handshakes\":{},\"tls_resumed\":{},",
                "\"latency_us\":{{\"p50\":{:.1},\"p90\":{:.1},\"p99\":{:.1},\"p999\":{:.1},\"max\":{:.1},\"mean\":{:.1}}},",
                "\"histogram_unit\":\"ns\",\"histogram\":\"{}\",",
                "\"first_error\":{}}}"
            ),
            c.addr, c.proto, json_string(&self.target()), json_string(&c.request.method),
            c.conns, c.idle, c.threads, c.pipeline, c.size, rate, requests, c.connect_per_request, c.request.keepalive,
            self.elapsed.as_secs_f64(), self.runs,
            self.totals.requests, self.rps(), e.total(), self.totals.connects, self.totals.server_closes, self.totals.unsent, self.totals.starved,
            e.connect, e.io, e.protocol, e.timeout, e.status, e.tls,
            statuses,
            self.totals.bytes_sent, self.totals.bytes_received, self.totals.body_bytes, self.body_bytes_per_sec(),
            c.tls.is_some(), c.tls.as_ref().is_some_and(|t| t.verify), c.tls.as_ref().is_some_and(|t| t.resume),
            self.totals.tls_handshakes, self.totals.tls_resumed,
            self.latency_us(0.5), self.latency_us(0.9), self.latency_us(0.99), self.latency_us(0.999), self.max_us(), self.mean_us(),
            histogram_to_base64(&self.totals.latency),
            self.totals.first_error.as_deref().map_or("null".to_string(), json_string),
        )
    }

    /// The human summary, laid out like wrk's (its last lines are wrk's
    /// `Requests/sec:` and `Transfer/sec:`), with wrk2's detailed percentile
    /// spectrum if `spectrum`.
    pub fn table(&self, spectrum: bool) -> String {
        let c = &self.config;
        let t = &self.totals;
        let e = &t.errors;
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let mut s = String::new();
        let what = match c.proto {
            Proto::Http => format!("{} {}", c.request.method, self.target()),
            Proto::Echo => format!("echo ({} B messages) @ {}", c.size, c.addr),
        };
        let runs = if self.runs > 1 {
            format!(" ({} runs merged)", self.runs)
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "Running {:.2}s test{runs} @ {what}",
            self.elapsed.as_secs_f64()
        );
        let mode = match (c.rate, c.connect_per_request) {
            (Some(r), _) => format!("open loop at {r} req/s"),
            (None, true) => "a new connection per request".into(),
            (None, false) => format!("closed loop, pipeline {}", c.pipeline),
        };
        let idle = if c.idle > 0 {
            format!(" (+{} idle)", c.idle)
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "  {} thread(s) and {} connections{idle}, {mode}",
            c.threads, c.conns
        );
        let _ = writeln!(s, "  Latency       Avg       Stdev       Max   +/- Stdev");
        let _ = writeln!(
            s,
            "            {:>9} {:>9} {:>9} {:>9.2}%",
            duration_text(self.mean_us()),
            duration_text(t.latency.stdev() / 1000.0),
            duration_text(self.max_us()),
            self.within_one_stdev() * 100.0
        );
        let _ = writeln!(s, "  Latency Distribution");
        for (label, q) in [
            ("50%", 0.5),
            ("75%", 0.75),
            ("90%", 0.9),
            ("99%", 0.99),
            ("99.9%", 0.999),
        ] {
            let _ = writeln!(s, "  {label:>7}  {:>9}", duration_text(self.latency_us(q)));
        }
        if spectrum {
            s += &self.spectrum();
        }
        let _ = writeln!(
            s,
            "  {} requests in {:.2}s, {} read, {} written",
            t.requests,
            self.elapsed.as_secs_f64(),
            bytes_text(t.bytes_received as f64),
            bytes_text(t.bytes_sent as f64)
        );
        let _ = writeln!(
            s,
            "  Bodies: {} read, {}/s",
            bytes_text(t.body_bytes as f64),
            bytes_text(self.body_bytes_per_sec())
        );
        if c.proto == Proto::Http {
            let statuses: Vec<String> = self
                .status_counts()
                .map(|(status, n)| format!("{status}: {n}"))
                .collect();
            let statuses = if statuses.is_empty() {
                "none".to_string()
            } else {
                statuses.join(", ")
            };
            let _ = writeln!(s, "  Status codes: {statuses}");
        }
        let _ = writeln!(
            s,
            "  Errors: {} (connect {}, io {}, protocol {}, timeout {}, status>=400 {}, tls {})",
            e.total(),
            e.connect,
            e.io,
            e.protocol,
            e.timeout,
            e.status,
            e.tls
        );
        if let Some(tls) = &c.tls {
            let _ = writeln!(
                s,
                "  TLS: {} handshakes ({:.1}/s), {} resumed{}{}",
                t.tls_handshakes,
                t.tls_handshakes as f64 / secs,
                t.tls_resumed,
                if tls.resume { "" } else { " (resumption off)" },
                if tls.verify {
                    ""
                } else {
                    "; the server's certificate was NOT verified"
                }
            );
        }
        if c.connect_per_request || t.connects > 0 || t.server_closes > 0 {
            let _ = writeln!(
                s,
                "  Connects: {} ({:.1}/s), closed by the server between responses: {}",
                t.connects,
                t.connects as f64 / secs,
                t.server_closes
            );
        }
        if t.starved > 0 {
            let _ = writeln!(
                s,
                "  Starved: {} connections got no response at all",
                t.starved
            );
        }
        if c.rate.is_some() {
            let _ = writeln!(
                s,
                "  Unsent: {} (due but every connection was busy; counted in the latency from their intended send time)",
                t.unsent
            );
        }
        if let Some(err) = &t.first_error {
            let _ = writeln!(s, "  First error: {err}");
        }
        let _ = writeln!(s, "Requests/sec: {:>10.2}", self.rps());
        let _ = writeln!(
            s,
            "Transfer/sec: {:>10}",
            bytes_text(t.bytes_received as f64 / secs)
        );
        s
    }

    /// The share of latencies within one standard deviation of the mean (wrk's `+/- Stdev`).
    fn within_one_stdev(&self) -> f64 {
        let h = &self.totals.latency;
        if h.is_empty() {
            return 0.0;
        }
        let (mean, stdev) = (h.mean(), h.stdev());
        let within: u64 = h
            .iter_recorded()
            .filter(|v| (v.value_iterated_to() as f64 - mean).abs() <= stdev)
            .map(|v| v.count_at_value())
            .sum();
        within as f64 / h.len() as f64
    }

    /// wrk2's `--latency` output: the detailed percentile spectrum, in milliseconds.
    fn spectrum(&self) -> String {
        let h = &self.totals.latency;
        let mut s = String::from("  Detailed Percentile spectrum:\n");
        let _ = writeln!(
            s,
            "  {:>10} {:>12} {:>12} {:>16}\n",
            "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
        );
        if h.is_empty() {
            s += "  (no latency recorded)\n";
            return s;
        }
        let ms = |ns: f64| ns / 1e6;
        let mut total = 0;
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            let inverse = if q < 1.0 {
                format!("{:.2}", 1.0 / (1.0 - q))
            } else {
                "inf".to_string()
            };
            let _ = writeln!(
                s,
                "  {:>10.3} {:>12.6} {:>12} {:>16}",
                ms(v.value_iterated_to() as f64),
                q,
                total,
                inverse
            );
        }
        let _ = writeln!(
            s,
            "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
            ms(h.mean()),
            ms(h.stdev())
        );
        let _ = writeln!(
            s,
            "#[Max     = {:>12.3}, Total count    = {:>12}]",
            ms(h.max() as f64),
            h.len()
        );
        let _ = writeln!(
            s,
            "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
            h.buckets(),
            h.distinct_values()
        );
        s
    }
}

/// Microseconds as wrk writes durations: `512.00us`, `1.25ms`, `2.00s`.
fn duration_text(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.2}us")
    } else if us < 1e6 {
        format!("{:.2}ms", us / 1e3)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

/// Bytes as wrk writes sizes: `512.00B`, `1.25KB`, `3.10MB`, `2.00GB`.
fn bytes_text(bytes: f64) -> String {
    let mut value = bytes;
    for unit in ["B", "KB", "MB", "GB"] {
        if value < 1024.0 {
            return format!("{value:.2}{unit}");
        }
        value /= 1024.0;
    }
    format!("{value:.2}TB")
}

pub(crate) fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
