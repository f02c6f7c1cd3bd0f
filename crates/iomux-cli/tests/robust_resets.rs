//! Resets and half-closes on every engine: thousands of clients that reset
//! mid-request or mid-response, or half-close, leave the server with no panic,
//! no leaked descriptor and no socket stuck in CLOSE_WAIT.

#[macro_use]
mod common;

use common::{eventually, set_linger_zero, tcp_states_on_port, try_echo, LoggedServer, Rng};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

/// Connections churned per engine, spread over `WORKERS` client threads.
const CHURN: usize = 2000;
const WORKERS: usize = 8;
const CLOSE_WAIT: &str = "08";

/// One hostile or half-closing client, picked by `kind`. Fails if it could
/// not connect (the server must take every connection) or if a half-closing
/// client did not get its bytes back exactly; what hostile clients see after
/// connecting is theirs to cause.
fn misbehave(addr: SocketAddr, kind: usize, rng: &mut Rng) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect (kind {kind}): {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    match kind {
        // Reset mid-request: some bytes, then RST.
        0 => {
            let n = rng.range(1, 64 * 1024);
            let _ = s.write_all(&rng.bytes(n));
            set_linger_zero(&s);
        }
        // Reset mid-response: push up to 1 MiB without blocking, take a little
        // of the echo, then RST while the server still has output for us.
        1 => {
            s.set_nonblocking(true).unwrap();
            let chunk = vec![b'r'; 64 * 1024];
            for _ in 0..16 {
                match s.write(&chunk) {
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => return Ok(()),
                }
            }
            s.set_nonblocking(false).unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            set_linger_zero(&s);
        }
        // Half-close: send, shut our side, read everything back.
        2 => {
            let n = rng.range(1, 32 * 1024);
            let message = rng.bytes(n);
            let writer = s.try_clone().unwrap();
            let sent = message.clone();
            let sender = std::thread::spawn(move || {
                let mut w = writer;
                w.write_all(&sent).and_then(|_| w.shutdown(Shutdown::Write))
            });
            let mut back = Vec::new();
            let read = s.read_to_end(&mut back);
            let wrote = sender.join().unwrap();
            if read.is_err() || wrote.is_err() || back != message {
                return Err(format!(
                    "half-close client: read {read:?}, write {wrote:?}, {} of {} bytes back",
                    back.len(),
                    message.len()
                ));
            }
        }
        // Half-close without sending, then leave without reading.
        3 => {
            let _ = s.shutdown(Shutdown::Write);
        }
        // Connect and reset at once.
        _ => set_linger_zero(&s),
    }
    Ok(())
}

fn survives_resets_and_half_closes_without_leaks(engine: &[&str]) {
    let mut args = vec!["--proto", "echo", "--idle-timeout", "5"];
    args.extend_from_slice(engine);
    let mut server = LoggedServer::start(&args, None);
    let addr = server.server.addr;
    // Warm up once so lazily opened descriptors are in the baseline.
    assert_eq!(
        try_echo(addr, b"warm", Duration::from_secs(5)).unwrap(),
        b"warm"
    );
    std::thread::sleep(Duration::from_millis(100));
    let baseline = server.server.fd_count();

    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            std::thread::spawn(move || {
                let mut rng = Rng::new(77 + w as u64);
                let (mut made, mut wrong) = (0, Vec::new());
                for _ in 0..CHURN / WORKERS {
                    let kind = rng.range(0, 4);
                    made += 1;
                    if let Err(e) = misbehave(addr, kind, &mut rng) {
                        wrong.push(e);
                    }
                }
                (made, wrong)
            })
        })
        .collect();
    let (mut made, mut wrong) = (0, Vec::new());
    for worker in workers {
        let (m, w) = worker.join().unwrap();
        made += m;
        wrong.extend(w);
    }
    assert_eq!(made, CHURN / WORKERS * WORKERS, "{engine:?}: clients made");
    assert!(
        wrong.is_empty(),
        "{engine:?}: {} of {made} clients failed: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );

    let port = addr.port();
    let mut last = (0, Vec::new());
    let settled = eventually(Duration::from_secs(10), || {
        let fds = server.server.fd_count();
        let stuck: Vec<String> = tcp_states_on_port(port)
            .into_iter()
            .filter(|s| s == CLOSE_WAIT)
            .collect();
        last = (fds, stuck);
        last.0 <= baseline && last.1.is_empty()
    });
    eprintln!(
        "{engine:?}: {CHURN} churned connections: fds {baseline} before, {} after; {} in CLOSE_WAIT",
        last.0,
        last.1.len()
    );
    assert!(
        settled,
        "{engine:?}: descriptors {} (baseline {baseline}), {} sockets in CLOSE_WAIT after the churn",
        last.0,
        last.1.len()
    );
    assert_eq!(
        try_echo(addr, b"still here", Duration::from_secs(5)).unwrap(),
        b"still here",
        "{engine:?}"
    );
    server.stop_cleanly(&format!("{engine:?}"));
}

for_engines!(survives_resets_and_half_closes_without_leaks);
