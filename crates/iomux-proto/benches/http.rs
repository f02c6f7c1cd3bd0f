//! The HTTP state machine alone, no sockets: nanoseconds of this thread's CPU
//! time per request, for one request per read and for TechEmpower's 16-deep
//! pipeline, beside httparse alone on the same head. CPU time rather than wall
//! time, so a busy shared machine skews it less.
//! `cargo bench -p iomux-proto --bench http`

mod common;

use common::thread_cpu_time;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use iomux_proto::http::{hello, DEFAULT_CONFIG};
use iomux_proto::{ConnId, Context, Http, Service};

/// The request wrk sends in TechEmpower's plaintext test.
const PLAINTEXT: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: localhost:8080\r\n\
Accept: text/plain,text/html;q=0.9,application/xhtml+xml;q=0.9,application/xml;q=0.8,*/*;q=0.7\r\n\
Connection: keep-alive\r\n\r\n";

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("http");
    for depth in [1usize, 16] {
        let input = PLAINTEXT.repeat(depth);
        group.throughput(Throughput::Elements(depth as u64));
        group.bench_with_input(BenchmarkId::new("plaintext", depth), &input, |b, input| {
            // The routes of `iomux serve`, on the handler API.
            let mut http = Http::new(&DEFAULT_CONFIG, std::sync::Arc::new(hello::routes()));
            let mut out = Vec::with_capacity(64 * 1024);
            let mut commands = Vec::new();
            let now = std::time::Instant::now();
            b.iter_custom(|iters| {
                let start = thread_cpu_time();
                for _ in 0..iters {
                    out.clear();
                    let mut cx = Context::new(ConnId::new(0, 1), now, &mut out, &mut commands);
                    let step = http.on_data(std::hint::black_box(input), &mut cx);
                    assert_eq!(step.consumed, input.len());
                }
                thread_cpu_time() - start
            });
        });
    }
    // The floor under the state machine: httparse alone on the same head
    // (what `plaintext/1` costs above it is ours: framing, routing, response).
    group.bench_function("httparse-only", |b| {
        b.iter_custom(|iters| {
            let start = thread_cpu_time();
            for _ in 0..iters {
                let mut headers = [std::mem::MaybeUninit::<httparse::Header>::uninit(); 100];
                let mut req = httparse::Request::new(&mut []);
                let r =
                    req.parse_with_uninit_headers(std::hint::black_box(PLAINTEXT), &mut headers);
                assert!(r.unwrap().is_complete());
            }
            thread_cpu_time() - start
        });
    });
    // The same for the 16-deep pipeline: each head parsed where it starts,
    // with the rest of the input behind it (as `plaintext/16` sees it).
    let pipelined = PLAINTEXT.repeat(16);
    group.throughput(Throughput::Elements(16));
    group.bench_function("httparse-only/16", |b| {
        b.iter_custom(|iters| {
            let start = thread_cpu_time();
            for _ in 0..iters {
                let input = std::hint::black_box(&pipelined[..]);
                let mut at = 0;
                while at < input.len() {
                    let mut headers = [std::mem::MaybeUninit::<httparse::Header>::uninit(); 100];
                    let mut req = httparse::Request::new(&mut []);
                    let r = req.parse_with_uninit_headers(&input[at..], &mut headers);
                    at += match r {
                        Ok(httparse::Status::Complete(len)) => len,
                        _ => unreachable!("a complete head"),
                    };
                }
            }
            thread_cpu_time() - start
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
