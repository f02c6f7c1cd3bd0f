//! Echo and upper-case echo through `iomux serve` on every engine: hundreds of
//! concurrent clients, random message sizes and chunking, byte-exact; and a
//! client that never reads cannot make any engine buffer without bound.

#[macro_use]
mod common;

use common::{push_until_the_server_stops_reading, tcp_queued_both_ends, Rng, ServerProcess};
use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

/// Mostly small messages, some large, a few megabytes.
fn message_size(rng: &mut Rng) -> usize {
    match rng.range(0, 99) {
        0..=69 => rng.range(1, 4096),
        70..=94 => rng.range(4097, 256 * 1024),
        _ => rng.range(256 * 1024, 3 * 1024 * 1024),
    }
}

/// One client: write `message` in random chunks from a second thread while
/// reading everything back; returns what came back.
fn round_trip(server: &ServerProcess, message: Vec<u8>, seed: u64) -> Vec<u8> {
    let stream = server.connect();
    let mut writer = stream.try_clone().unwrap();
    let len = message.len();
    let sender = std::thread::spawn(move || {
        let mut rng = Rng::new(seed);
        let mut at = 0;
        while at < message.len() {
            let n = rng.range(1, 70_000).min(message.len() - at);
            writer.write_all(&message[at..at + n]).unwrap();
            at += n;
            if rng.range(0, 9) == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut back = Vec::with_capacity(len);
    let mut reader = stream;
    reader.read_to_end(&mut back).unwrap();
    sender.join().unwrap();
    back
}

fn run_clients(args: &[&str], proto: &str, clients: usize, seed: u64) {
    let mut all = vec!["--proto", proto];
    all.extend_from_slice(args);
    let mut server = ServerProcess::start(&all);
    let upper = proto == "upper";
    let handles: Vec<_> = (0..clients)
        .map(|i| {
            let addr = server.addr;
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let server_ref = ServerProcess::connect_only(addr);
                    let mut rng = Rng::new(seed + i as u64);
                    let size = message_size(&mut rng);
                    let message = rng.bytes(size);
                    let mut expected = message.clone();
                    if upper {
                        expected.make_ascii_uppercase();
                    }
                    let back = round_trip(&server_ref, message, seed ^ i as u64);
                    assert_eq!(back.len(), expected.len(), "client {i}: length");
                    assert!(back == expected, "client {i}: bytes differ");
                })
                .unwrap()
        })
        .collect();
    for h in handles {
        h.join().expect("client failed");
    }
    assert!(
        server.stop().success(),
        "server {args:?} exited unsuccessfully"
    );
}

impl ServerProcess {
    /// A handle that only knows the address (for client threads).
    fn connect_only(addr: std::net::SocketAddr) -> ServerProcess {
        ServerProcess::for_address(addr)
    }
}

fn echo_is_byte_exact_with_200_concurrent_clients(engine: &[&str]) {
    run_clients(engine, "echo", 200, 1000);
}
for_engines!(echo_is_byte_exact_with_200_concurrent_clients, concurrent);

fn upper_echo(engine: &[&str]) {
    run_clients(engine, "upper", 40, 7);
}
for_engines!(upper_echo, concurrent);

#[test]
fn blocking_engine_serves_clients_one_after_another() {
    let mut server = ServerProcess::start(&["--proto", "echo", "--backend", "blocking"]);
    for i in 0..20 {
        let mut rng = Rng::new(i);
        let size = message_size(&mut rng);
        let message = rng.bytes(size);
        assert!(
            round_trip(&server, message.clone(), i) == message,
            "client {i}"
        );
    }
    assert!(server.stop().success());
}

/// The output limit the README promises ("Bounded buffers": a connection
/// stops being read once 256 KiB of output is pending).
const PROMISED_OUTPUT_LIMIT: u64 = 256 * 1024;

/// The most a server may hold for a client that sends and never reads.
///
/// The engines check the output limit before each read, so the read that
/// crosses it began below it and adds at most one read (64 KiB, the engines'
/// read size); io_uring's capped receive ends within one provided buffer
/// (16 KiB) of its limit. Echo turns every byte read into output, so what the
/// server holds is that output.
fn held_bound() -> u64 {
    assert_eq!(
        iomux_engine::Config::default().output_high_water as u64,
        PROMISED_OUTPUT_LIMIT,
        "the engines' default output limit (Config::output_high_water) is not the one the README promises"
    );
    PROMISED_OUTPUT_LIMIT + 64 * 1024 + 16 * 1024
}

/// A client that pushes and never reads: the server stops taking its bytes
/// at the output limit (what it holds, bytes pushed minus what both ends'
/// kernel queues hold, stays within [`held_bound`]), its memory does not
/// grow with what the client pushes, and every byte taken still comes back.
fn a_client_that_does_not_read_does_not_grow_server_memory(engine: &[&str]) {
    let mut args = vec!["--proto", "echo"];
    args.extend_from_slice(engine);
    let mut server = ServerProcess::start(&args);
    // Warm up first: a reading client moves 16 MiB through, so memory the
    // engine sets up once and fills on first use (uring's 8 MiB ring of
    // receive buffers, buffer pools) is in the baseline and only growth
    // caused by the client that does not read is counted.
    let warm_up = vec![b'w'; 16 * 1024 * 1024];
    assert!(
        round_trip(&server, warm_up.clone(), 1) == warm_up,
        "{engine:?}: warm-up echo"
    );
    let before = server.rss_kib();
    let stream = server.connect();
    let (pushed, _) = push_until_the_server_stops_reading(&stream, Duration::from_millis(500));
    let in_kernel = tcp_queued_both_ends(&stream);
    let held = (pushed as u64).saturating_sub(in_kernel);
    let after = server.rss_kib();
    eprintln!(
        "{engine:?}: pushed {pushed} bytes without reading: {in_kernel} in the kernel's queues, \
         {held} held by the server (bound {}); RSS {before} -> {after} KiB",
        held_bound()
    );
    assert!(
        held <= held_bound(),
        "{engine:?}: the server holds {held} bytes for a client that reads nothing \
         ({pushed} pushed, {in_kernel} in kernel queues): more than the output limit allows ({})",
        held_bound()
    );
    assert!(
        after < before + 8 * 1024,
        "{engine:?}: server RSS grew from {before} KiB to {after} KiB while a client pushed {pushed} bytes without reading"
    );
    // Every byte taken must still come back.
    stream.set_nonblocking(false).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    (&stream).read_to_end(&mut back).unwrap();
    assert_eq!(back.len(), pushed, "{engine:?}");
    assert!(back.iter().all(|&b| b == b'x'));
    assert!(server.stop().success());
}
for_engines!(a_client_that_does_not_read_does_not_grow_server_memory);
