//! Experiment 6: the thundering herd. Several threads, each blocked in its
//! own epoll_wait, watch one shared listener (plain or EPOLLEXCLUSIVE) or
//! each its own SO_REUSEPORT listener; connections arrive one at a time and
//! every wake-up is counted.

use super::chart;
use super::judge;
use super::report::{Section, Spread, Table};
use super::rounds::rotated;
use super::Ctx;
use iomux::net::{Accepted, Acceptor, ListenOptions};
use iomux::{EpollSelector, Events, Interest, Selector, Token, Trigger};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Plain,
    Exclusive,
    ReusePort,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::Exclusive => "exclusive",
            Mode::ReusePort => "reuseport",
        }
    }
}

#[derive(Default)]
struct Counters {
    returns: AtomicU64,
    futile: AtomicU64,
    accepted: AtomicU64,
    /// Times a waiter thread was put to sleep and woken (voluntary context switches).
    sleeps: AtomicU64,
}

struct Outcome {
    returns: u64,
    futile: u64,
    accepted: u64,
    wakeups: u64,
}

const STOP: Token = Token(1);

/// This thread's voluntary context switches: each is one sleep (in
/// epoll_wait here) followed by a wake-up, including wake-ups the kernel
/// absorbs when the waiter finds the listener already drained and sleeps again
/// without returning to user space.
fn voluntary_switches() -> u64 {
    std::fs::read_to_string("/proc/thread-self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("voluntary_ctxt_switches:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn waiter(
    mut selector: EpollSelector,
    listener: Arc<TcpListener>,
    counters: Arc<Counters>,
    ready: Arc<AtomicU64>,
) -> io::Result<()> {
    let mut acceptor = Acceptor::new()?;
    let mut events = Events::with_capacity(4);
    ready.fetch_add(1, Ordering::SeqCst);
    let before = voluntary_switches();
    loop {
        selector.select(&mut events, None)?;
        if events.iter().any(|e| e.token() == STOP) {
            break;
        }
        counters.returns.fetch_add(1, Ordering::Relaxed);
        let mut got = 0;
        while let Accepted::Conn(_) = acceptor.accept(&*listener)? {
            got += 1;
        }
        if got == 0 {
            counters.futile.fetch_add(1, Ordering::Relaxed);
        }
        counters.accepted.fetch_add(got, Ordering::SeqCst);
    }
    // The last sleep ended with the stop signal, not a connection.
    counters.sleeps.fetch_add(
        voluntary_switches().saturating_sub(before + 1),
        Ordering::SeqCst,
    );
    Ok(())
}

fn measure(mode: Mode, threads: usize, conns: u64) -> io::Result<Outcome> {
    let options = ListenOptions::new("127.0.0.1:0".parse().unwrap())
        .nonblocking(true)
        .reuse_port(mode == Mode::ReusePort);
    let first = Arc::new(options.bind()?);
    let addr: SocketAddr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..threads {
        listeners.push(match mode {
            Mode::ReusePort => Arc::new(
                ListenOptions::new(addr)
                    .nonblocking(true)
                    .reuse_port(true)
                    .bind()?,
            ),
            _ => listeners[0].clone(),
        });
    }
    let counters = Arc::new(Counters::default());
    let ready = Arc::new(AtomicU64::new(0));
    let mut wakers = Vec::new();
    let mut handles = Vec::new();
    for l in listeners {
        let mut selector = EpollSelector::new(Trigger::Level)?;
        match mode {
            Mode::Exclusive => {
                selector.register_exclusive(l.as_fd(), Token(0), Interest::READABLE)?
            }
            _ => selector.register(l.as_fd(), Token(0), Interest::READABLE)?,
        };
        wakers.push(selector.waker(STOP)?);
        let (counters, ready) = (counters.clone(), ready.clone());
        handles.push(std::thread::spawn(move || {
            waiter(selector, l, counters, ready)
        }));
    }
    let result = (|| {
        let until = Instant::now() + Duration::from_secs(5);
        while ready.load(Ordering::SeqCst) < threads as u64 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(20));
        for i in 0..conns {
            let stream = TcpStream::connect(addr)?;
            let until = Instant::now() + Duration::from_secs(2);
            while counters.accepted.load(Ordering::SeqCst) <= i {
                if Instant::now() > until {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "a connection was not accepted within 2 s",
                    ));
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            // Let every waiter go back to sleep before the next connection.
            std::thread::sleep(Duration::from_millis(2));
            drop(stream);
        }
        Ok(())
    })();
    for w in &wakers {
        w.wake()?;
    }
    for h in handles {
        h.join()
            .map_err(|_| io::Error::other("a herd thread panicked"))??;
    }
    result?;
    Ok(Outcome {
        returns: counters.returns.load(Ordering::SeqCst),
        futile: counters.futile.load(Ordering::SeqCst),
        accepted: counters.accepted.load(Ordering::SeqCst),
        wakeups: counters.sleeps.load(Ordering::SeqCst),
    })
}

pub(crate) fn run(ctx: &mut Ctx) -> io::Result<Section> {
    let threads = 4;
    let conns: u64 = ctx.pick(300, 100);
    let rounds = ctx.rounds().0;
    let modes = [Mode::Plain, Mode::Exclusive, Mode::ReusePort];
    let mut table = Table::new(&[
        "round",
        "mode",
        "threads",
        "connections",
        "thread_wakeups",
        "wakeups_per_accept",
        "epoll_wait_returns",
        "futile_returns",
    ]);
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for round in 0..rounds {
        for at in rotated(round, modes.len()) {
            let mode = modes[at];
            ctx.round_progress("herd", round, rounds, mode.name());
            let o = measure(mode, threads, conns)?;
            let ratio = o.wakeups as f64 / o.accepted.max(1) as f64;
            table.push(vec![
                (round + 1).to_string(),
                mode.name().into(),
                threads.to_string(),
                o.accepted.to_string(),
                o.wakeups.to_string(),
                format!("{ratio:.2}"),
                o.returns.to_string(),
                o.futile.to_string(),
            ]);
            ratios[at].push(ratio);
        }
    }
    let spreads: Vec<Option<Spread>> = ratios.iter().map(|r| Spread::of(r)).collect();
    let bars: Vec<(String, Spread)> = modes
        .iter()
        .zip(&spreads)
        .filter_map(|(m, s)| Some((m.name().to_string(), (*s)?)))
        .collect();
    let file = "herd.svg";
    chart::bars(
        &ctx.out(file),
        &format!("Wake-ups per accepted connection, {threads} waiting threads (median and range)"),
        "wake-ups per connection",
        &bars,
    )?;
    Ok(Section {
        name: "herd",
        title: "Thundering herd",
        method: format!(
            "Modes: `plain` = one shared listener in every thread's epoll; `exclusive` = the same with EPOLLEXCLUSIVE; `reuseport` = one SO_REUSEPORT listener per thread. {threads} threads, each blocked in its own level-triggered epoll_wait (no timeout); connections arrive one at a time ({conns} of them, each accepted before the next); {rounds} rounds, each starting one mode later. A thread wake-up is a voluntary context switch of a waiter (/proc/thread-self/status): the kernel wakes every non-exclusive waiter, and one that finds the listener already drained goes back to sleep inside epoll_wait without returning, so counting returns alone (also shown) hides the herd. In-process, with iomux's EpollSelector (`register_exclusive` for EPOLLEXCLUSIVE)."
        ),
        tables: vec![("Wake-ups per accepted connection, every round".into(), table, Some("herd.csv".into()))],
        charts: vec![file.into()],
        verdicts: vec![judge::herd(threads, spreads[0], spreads[1], spreads[2])],
        notes: Vec::new(),
    })
}
