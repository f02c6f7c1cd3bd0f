//! A connection whose own output pauses its reading, on every engine: each
//! time the peer takes that output, reading resumes and the input already
//! waiting in the socket is read, though no new byte arrives (on the
//! edge-triggered engines nothing would report that input again). Loopback
//! only, every wait bounded.

#[macro_use]
mod common;

use iomux_engine::{Config, Engine, LoopStats, Server};
use iomux_proto::{Context, Service, Step};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

/// A high-water mark below one read's answer (a full 64 KiB read gives
/// 8 KiB), so that every full read pauses reading.
const HIGH_WATER: usize = 4 * 1024;

/// What the client sends: far more than the socket buffers hold, so the
/// input keeps waiting in the server's socket while its reading is paused.
const SENT: usize = 8 * 1024 * 1024;

/// Answers every eighth byte of its input (counted from the connection's
/// first byte). Its answer to a full read reaches the high-water mark but
/// stays below what the event loop gathers before sending mid-read: the
/// read pauses, and the one send that ends it takes the whole answer and
/// resumes reading at once. Edge-triggered engines read only the next read's
/// worth after such a resume and then left the rest waiting for an edge that
/// never came (no byte was left to arrive): the client's wait for its answers
/// timed out.
struct EveryEighth {
    taken: usize,
}

impl Service for EveryEighth {
    fn on_data(&mut self, input: &[u8], cx: &mut Context) -> Step {
        let first = (8 - self.taken % 8) % 8;
        let answer: Vec<u8> = input.iter().skip(first).step_by(8).copied().collect();
        cx.write(&answer);
        self.taken += input.len();
        Step::keep(input.len())
    }
}

/// `len` bytes that differ from their neighbours, so a lost, repeated or
/// swapped stretch shows.
fn payload(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1])
        .collect()
}

fn every_waiting_byte_is_read_after_each_resume(name: &str) {
    let engine: Engine = name.parse().unwrap();
    let config = Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        idle_timeout: Duration::from_secs(20),
        output_high_water: HIGH_WATER,
        ..Config::default()
    };
    let server = Server::start(config, engine, || EveryEighth { taken: 0 })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let client = TcpStream::connect(server.local_addr()).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let data = payload(SENT);
    let expected: Vec<u8> = data.iter().step_by(8).copied().collect();
    let mut writer = client.try_clone().unwrap();
    let sender = thread::spawn(move || writer.write_all(&data).unwrap());
    let mut answers = vec![0; expected.len()];
    let mut got = 0;
    while got < answers.len() {
        match (&client).read(&mut answers[got..]) {
            Ok(0) => panic!("{name}: EOF after {got} of {} answer bytes", expected.len()),
            Ok(n) => got += n,
            Err(e) => panic!(
                "{name}: {got} of {} answer bytes, then nothing for 10 s: {e}",
                expected.len()
            ),
        }
    }
    sender.join().unwrap();
    assert!(
        answers == expected,
        "{name}: the answers differ from byte {:?}",
        answers.iter().zip(&expected).position(|(a, b)| a != b)
    );
    drop(client);
    let stats = stop(server);
    assert_eq!(stats.output_overflows, 0, "{name}: {stats}");
}

fn stop(server: Server) -> LoopStats {
    server.shutdown();
    server.join().unwrap()
}

loop_engines!(engine_tests, [every_waiting_byte_is_read_after_each_resume]);
loopless_engines!(engine_tests, [every_waiting_byte_is_read_after_each_resume]);
every_engine_is_tested!();
