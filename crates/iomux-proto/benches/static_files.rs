//! The static-file handler alone, no sockets: this thread's CPU time (user
//! and kernel: the handler's cost is mostly its system calls) per request,
//! with and without the open-file cache, for a file, a directory's index,
//! a range, and a miss.
//! `cargo bench -p iomux-proto --bench static_files`

mod common;

use common::thread_cpu_time;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use iomux_proto::http::files::{FileRequest, StaticFiles, StaticOptions};
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("iomux-static-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("assets/css")).unwrap();
    std::fs::write(dir.join("assets/css/1k.css"), vec![b'x'; 1024]).unwrap();
    std::fs::write(dir.join("index.html"), b"<h1>home</h1>").unwrap();
    let cases: [(&str, FileRequest<'static>); 4] = [
        (
            "file",
            FileRequest {
                method: b"GET",
                path: "/assets/css/1k.css",
                ..Default::default()
            },
        ),
        (
            "index",
            FileRequest {
                method: b"GET",
                path: "/",
                ..Default::default()
            },
        ),
        (
            "range",
            FileRequest {
                method: b"GET",
                path: "/assets/css/1k.css",
                range: Some(b"bytes=0-99,200-299"),
                ..Default::default()
            },
        ),
        (
            "missing",
            FileRequest {
                method: b"GET",
                path: "/assets/missing.css",
                ..Default::default()
            },
        ),
    ];
    let mut group = c.benchmark_group("static_files");
    for cache in [0usize, 1000] {
        let files = StaticFiles::new(
            &dir,
            StaticOptions {
                open_file_cache: cache,
                ..Default::default()
            },
        )
        .unwrap();
        for (name, req) in &cases {
            group.bench_with_input(
                BenchmarkId::new(format!("cache{cache}"), name),
                req,
                |b, req| {
                    b.iter_custom(|iters| {
                        let start = thread_cpu_time();
                        for _ in 0..iters {
                            std::hint::black_box(files.respond(std::hint::black_box(req)));
                        }
                        thread_cpu_time() - start
                    })
                },
            );
        }
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = bench
}
criterion_main!(benches);
