//! One event-loop pass with N registered socket pairs and A of them readable,
//! for every backend, with mio running the same workload as the peer.
//!
//! ```sh
//! taskset -c 0 cargo bench -p iomux-lab --bench dispatch -- --warm-up-time 0.5 --measurement-time 2
//! ```
//!
//! After criterion's figures it prints an interleaved comparison of our epoll
//! against mio (alternating rounds in one run, so machine noise hits both).

use criterion::{BenchmarkId, Criterion};
use iomux::{Backend, Trigger};
use iomux_lab::dispatch::{Dispatch, SELECT_MAX_FDS};
use mio::net::UnixStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// The dispatch workload of `iomux_lab::dispatch` on mio (edge-triggered epoll).
struct MioDispatch {
    poll: Poll,
    events: Events,
    pairs: Vec<(UnixStream, UnixStream)>,
    active: usize,
    next: usize,
}

impl MioDispatch {
    fn new(fds: usize, active: usize) -> MioDispatch {
        let poll = Poll::new().expect("mio Poll");
        let mut pairs = Vec::with_capacity(fds);
        for i in 0..fds {
            let (writer, mut reader) = UnixStream::pair().expect("socket pair (ulimit -n?)");
            poll.registry()
                .register(&mut reader, Token(i), Interest::READABLE)
                .unwrap();
            pairs.push((writer, reader));
        }
        MioDispatch {
            poll,
            events: Events::with_capacity(active.max(64)),
            pairs,
            active,
            next: 0,
        }
    }

    fn pass(&mut self) {
        let n = self.pairs.len();
        for k in 0..self.active {
            self.pairs[(self.next + k) % n].0.write_all(b"x").unwrap();
        }
        self.next = (self.next + self.active) % n;
        let mut pending = self.active;
        let mut byte = [0u8; 1];
        while pending > 0 {
            self.poll
                .poll(&mut self.events, Some(Duration::from_secs(5)))
                .unwrap();
            assert!(
                !self.events.is_empty(),
                "mio: {pending} pairs never reported"
            );
            for event in &self.events {
                if self.pairs[event.token().0].1.read(&mut byte).unwrap() == 1 {
                    pending -= 1;
                }
            }
        }
    }
}

/// What the bench compares: our backends in their modes, and mio.
#[derive(Clone, Copy)]
enum Subject {
    Ours(Backend, Trigger),
    Mio,
}

impl Subject {
    const ALL: [Subject; 5] = [
        Subject::Ours(Backend::Select, Trigger::Level),
        Subject::Ours(Backend::Poll, Trigger::Level),
        Subject::Ours(Backend::Epoll, Trigger::Level),
        Subject::Ours(Backend::Epoll, Trigger::Edge),
        Subject::Mio,
    ];

    fn name(self) -> String {
        match self {
            Subject::Ours(Backend::Epoll, t) => format!("epoll-{t}"),
            Subject::Ours(b, _) => b.to_string(),
            Subject::Mio => "mio".to_string(),
        }
    }

    fn fits(self, fds: usize) -> bool {
        !matches!(self, Subject::Ours(Backend::Select, _)) || fds <= SELECT_MAX_FDS
    }
}

fn dispatch_benches(c: &mut Criterion) {
    for (active, sizes) in [
        (100, &[100, 1000, 5000, 9000][..]),
        (1, &[100, 1000, 9000][..]),
    ] {
        let mut group = c.benchmark_group(format!("dispatch/active={active}"));
        for &fds in sizes {
            for subject in Subject::ALL.into_iter().filter(|s| s.fits(fds)) {
                let id = BenchmarkId::new(subject.name(), fds);
                match subject {
                    Subject::Ours(backend, trigger) => {
                        let mut d = Dispatch::new(backend, trigger, fds, active).unwrap();
                        group.bench_function(id, |b| b.iter(|| d.pass().unwrap()));
                    }
                    Subject::Mio => {
                        let mut d = MioDispatch::new(fds, active);
                        group.bench_function(id, |b| b.iter(|| d.pass()));
                    }
                }
            }
        }
        group.finish();
    }
}

/// Alternate single passes of our epoll (edge and level) and mio, rotating
/// which goes first, so that the load of a shared machine falls on all three
/// alike; prints the median pass of each and the ratios of the medians.
/// (Run it alone with a filter that matches no criterion bench: `-- interleaved`.)
fn interleaved_against_mio() {
    const ROUNDS: usize = 3000;
    const PASSES: usize = 1;
    println!("\ninterleaved, {ROUNDS} rounds x {PASSES} pass, active=100, median per pass (ratio = ours / mio):");
    // Three workloads of 3000 pairs hold 18,000 descriptors: the most a
    // 20,000-descriptor limit allows.
    for fds in [100, 1000, 3000] {
        let mut mio = MioDispatch::new(fds, 100);
        let mut level = Dispatch::new(Backend::Epoll, Trigger::Level, fds, 100).unwrap();
        let mut edge = Dispatch::new(Backend::Epoll, Trigger::Edge, fds, 100).unwrap();
        // [edge, mio, level] per-pass times of every round.
        let mut times: [Vec<Duration>; 3] = Default::default();
        for round in 0..ROUNDS {
            for k in 0..3 {
                let subject = (round + k) % 3;
                let start = Instant::now();
                for _ in 0..PASSES {
                    match subject {
                        0 => edge.pass().unwrap(),
                        1 => mio.pass(),
                        _ => level.pass().unwrap(),
                    }
                }
                times[subject].push(start.elapsed() / PASSES as u32);
            }
        }
        let [edge_t, mio_t, level_t] = times.map(|mut t| {
            t.sort_unstable();
            t[t.len() / 2]
        });
        let ratio = |t: Duration| t.as_secs_f64() / mio_t.as_secs_f64();
        println!(
            "  fds={fds:5}: epoll-edge {edge_t:?}, epoll-level {level_t:?}, mio {mio_t:?}; edge/mio {:.3}, level/mio {:.3}",
            ratio(edge_t),
            ratio(level_t),
        );
    }
}

fn main() {
    iomux::net::raise_fd_limit().expect("raise the descriptor limit");
    let mut criterion = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    dispatch_benches(&mut criterion);
    criterion.final_summary();
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--test" || a == "--list") {
        interleaved_against_mio();
    }
}
