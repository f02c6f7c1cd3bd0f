//! Slow clients on every engine that multiplexes (the one-at-a-time engine
//! serves nobody else while any client holds it, by design): while hundreds
//! of clients trickle bytes and others read their echo a few bytes at a time,
//! a probe that makes a fresh request every 100 ms is served every time, and
//! the slow readers are cut off by the send deadline.

#[macro_use]
mod common;

use common::{eventually, set_linger_zero, try_echo, LoggedServer};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TRICKLERS: usize = 200;
const SLOW_READERS: usize = 20;
/// How long the probe runs while the attack goes on.
const ATTACK: Duration = Duration::from_millis(2500);
const IDLE_TIMEOUT: &str = "0.5";

/// Hundreds of connections, each sending one byte every 100 ms and draining
/// whatever comes back (echo answers every byte: for echo a trickled byte is
/// a whole message, so the idle deadline rightly restarts).
fn trickle(addr: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut conns: Vec<TcpStream> = (0..TRICKLERS)
            .filter_map(|_| TcpStream::connect(addr).ok())
            .collect();
        for c in &conns {
            c.set_nonblocking(true).unwrap();
        }
        let opened = conns.len();
        let mut sink = [0u8; 256];
        while !stop.load(Ordering::Relaxed) {
            conns.retain_mut(|c| {
                let _ = c.read(&mut sink);
                !matches!(c.write(b"x"), Err(e) if e.kind() != ErrorKind::WouldBlock)
            });
            std::thread::sleep(Duration::from_millis(100));
        }
        for c in &conns {
            set_linger_zero(c);
        }
        opened
    })
}

/// Shrink a socket's receive buffer so its peer's output backs up quickly.
fn small_receive_buffer(s: &TcpStream) {
    let size: libc::c_int = 64 * 1024;
    // SAFETY: passes a live c_int of the right size.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            4,
        );
    }
}

/// Clients that push bulk data and take their echo 8 KiB every 100 ms, until
/// `stop`. Returns how many saw the server cut them off. (A client may see
/// that late: the kernel still delivers what the server sent before closing,
/// at the client's slow pace; the server's descriptor count tells sooner.)
fn slow_read(
    addr: SocketAddr,
    count: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut conns: Vec<(TcpStream, usize)> = (0..count)
            .filter_map(|_| TcpStream::connect(addr).ok())
            .map(|c| (c, 0))
            .collect();
        let opened = conns.len();
        let chunk = vec![b'r'; 64 * 1024];
        for (c, _) in &conns {
            small_receive_buffer(c);
            c.set_nonblocking(true).unwrap();
        }
        let mut sip = [0u8; 8192];
        while !stop.load(Ordering::Relaxed) {
            conns.retain_mut(|(c, pushed)| {
                let mut alive = true;
                // Keep pushing (bounded) so the server always owes us output.
                while alive && *pushed < 16 * 1024 * 1024 {
                    match c.write(&chunk) {
                        Ok(n) => *pushed += n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(_) => alive = false,
                    }
                }
                match c.read(&mut sip) {
                    Ok(0) => alive = false,
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => alive = false,
                }
                alive
            });
            std::thread::sleep(Duration::from_millis(100));
        }
        for (c, _) in &conns {
            set_linger_zero(c);
        }
        opened - conns.len()
    })
}

/// Run `probe` every 100 ms for `period`; returns (answered, made, slowest).
fn probe_every_100ms(
    period: Duration,
    mut probe: impl FnMut() -> bool,
) -> (usize, usize, Duration) {
    let started = Instant::now();
    let (mut served, mut made, mut worst) = (0, 0, Duration::ZERO);
    while started.elapsed() < period {
        let t = Instant::now();
        made += 1;
        if probe() {
            served += 1;
        }
        worst = worst.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(100).saturating_sub(t.elapsed()));
    }
    (served, made, worst)
}

fn a_probe_is_served_every_100ms_while_slow_clients_attack(engine: &[&str]) {
    let mut args = vec!["--proto", "echo", "--idle-timeout", IDLE_TIMEOUT];
    args.extend_from_slice(engine);
    let mut server = LoggedServer::start(&args, None);
    let addr = server.server.addr;
    std::thread::sleep(Duration::from_millis(100));
    let baseline = server.server.fd_count();
    let stop = Arc::new(AtomicBool::new(false));
    let tricklers = trickle(addr, stop.clone());
    let stop_slow = Arc::new(AtomicBool::new(false));
    let slow_readers = slow_read(addr, SLOW_READERS, stop_slow.clone());
    std::thread::sleep(Duration::from_millis(300));

    let mut failed = Vec::new();
    let attack_started = Instant::now();
    let (served, made, worst) = probe_every_100ms(ATTACK, || {
        match try_echo(addr, b"probe", Duration::from_secs(2)) {
            Ok(b) if b == b"probe" => true,
            other => {
                failed.push(format!("{other:?}"));
                false
            }
        }
    });
    stop.store(true, Ordering::Relaxed);
    let opened = tricklers.join().unwrap();
    // The tricklers reset their connections; the slow readers are still
    // there, reading slowly: the send deadline (0.5 s) plus 2 s for the last
    // output must close them on the server's side. Generous bound for a
    // loaded machine; typically ~3 s from the start of the attack.
    let released = eventually(Duration::from_secs(15), || {
        server.server.fd_count() <= baseline
    });
    let release_time = attack_started.elapsed();
    stop_slow.store(true, Ordering::Relaxed);
    let seen_cut = slow_readers.join().unwrap();
    eprintln!(
        "{engine:?}: {served}/{made} probes served (slowest {worst:?}) with {opened} tricklers; \
         slow readers released by the server: {released}, {release_time:?} after the attack began ({seen_cut}/{SLOW_READERS} saw it already)"
    );
    assert!(
        opened >= TRICKLERS / 2,
        "{engine:?}: only {opened} tricklers connected"
    );
    assert!(
        failed.is_empty(),
        "{engine:?}: {} of {made} probes failed under attack: {failed:?}",
        failed.len()
    );
    assert!(
        released,
        "{engine:?}: the server still holds slow readers' connections after 15 s: no send deadline ({} fds, baseline {baseline})",
        server.server.fd_count()
    );
    server.stop_cleanly(&format!("{engine:?}"));
}

for_engines!(
    a_probe_is_served_every_100ms_while_slow_clients_attack,
    concurrent
);

#[test]
fn a_fresh_client_is_served_after_a_slow_reader_is_cut_off_even_one_at_a_time() {
    // The one-at-a-time engine: a slow reader holds it until the send deadline
    // drops it; then the next client is served.
    let mut server = LoggedServer::start(
        &[
            "--proto",
            "echo",
            "--idle-timeout",
            IDLE_TIMEOUT,
            "--backend",
            "blocking",
        ],
        None,
    );
    let addr = server.server.addr;
    let stop_slow = Arc::new(AtomicBool::new(false));
    let slow = slow_read(addr, 2, stop_slow.clone());
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    let back = try_echo(addr, b"next", Duration::from_secs(10));
    stop_slow.store(true, Ordering::Relaxed);
    slow.join().unwrap();
    assert_eq!(
        back.expect("the next client is served once the slow readers are cut"),
        b"next"
    );
    eprintln!("blocking: next client served after {:?}", t.elapsed());
    server.stop_cleanly("blocking");
}

/// Slowloris on HTTP: clients trickle a never-ending request head, one byte
/// every 100 ms, reconnecting when cut off. Returns (connections opened,
/// longest time one lived).
fn slowloris(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, Duration)> {
    const HEAD: &[u8] = b"GET / HTTP/1.1\r\nHost: slowloris\r\n";
    const MORE: &[u8] = b"X-a: b\r\n";
    std::thread::spawn(move || {
        let open = || {
            let s = TcpStream::connect(addr).ok()?;
            s.set_nonblocking(true).ok()?;
            Some((s, Instant::now(), 0usize))
        };
        let mut conns: Vec<(TcpStream, Instant, usize)> =
            (0..TRICKLERS).filter_map(|_| open()).collect();
        let (mut opened, mut longest) = (conns.len(), Duration::ZERO);
        let mut sink = [0u8; 512];
        while !stop.load(Ordering::Relaxed) {
            for slot in conns.iter_mut() {
                let (s, since, at) = slot;
                let byte = if *at < HEAD.len() {
                    HEAD[*at]
                } else {
                    MORE[(*at - HEAD.len()) % MORE.len()]
                };
                *at += 1;
                let written = match s.write(&[byte]) {
                    Ok(_) => true,
                    Err(e) => e.kind() == ErrorKind::WouldBlock,
                };
                // Any answer (a 408), end of stream or error means cut off.
                let cut = !written
                    || !matches!(s.read(&mut sink), Err(e) if e.kind() == ErrorKind::WouldBlock);
                if cut {
                    longest = longest.max(since.elapsed());
                    if let Some(fresh) = open() {
                        *slot = fresh;
                        opened += 1;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for (s, _, _) in &conns {
            set_linger_zero(s);
        }
        (opened, longest)
    })
}

/// One fresh HTTP request; true if it got `200` and `Hello, World!`.
fn http_probe(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /plaintext HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut response = Vec::new();
    let _ = s.read_to_end(&mut response);
    response.starts_with(b"HTTP/1.1 200") && response.ends_with(b"Hello, World!")
}

fn http_slowloris_is_cut_by_the_head_deadline_while_a_probe_is_served(engine: &[&str]) {
    let mut args = vec!["--proto", "http", "--idle-timeout", IDLE_TIMEOUT];
    args.extend_from_slice(engine);
    let mut server = LoggedServer::start(&args, None);
    let addr = server.server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let attackers = slowloris(addr, stop.clone());
    std::thread::sleep(Duration::from_millis(200));
    let (served, made, worst) = probe_every_100ms(Duration::from_secs(2), || http_probe(addr));
    stop.store(true, Ordering::Relaxed);
    let (opened, longest) = attackers.join().unwrap();
    eprintln!(
        "{engine:?}: HTTP slowloris: {served}/{made} probes served (slowest {worst:?}); {opened} trickling connections, cut off after at most {longest:?}"
    );
    assert_eq!(
        served, made,
        "{engine:?}: probes went unanswered under slowloris"
    );
    // Each trickler is cut by the 0.5 s head deadline although it keeps
    // sending: more were opened than the first wave, and none lived long.
    assert!(
        opened > TRICKLERS,
        "{engine:?}: no trickler was cut off ({opened} opened)"
    );
    assert!(
        longest < Duration::from_millis(1800),
        "{engine:?}: a trickled head lived {longest:?}: trickled bytes extend the deadline"
    );
    server.stop_cleanly(&format!("{engine:?}"));
}
for_engines!(
    http_slowloris_is_cut_by_the_head_deadline_while_a_probe_is_served,
    concurrent
);
