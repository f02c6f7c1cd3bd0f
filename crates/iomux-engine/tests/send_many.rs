//! `Context::send_to_many`: one frame handed to many connections, on every
//! engine that carries out commands (one test per engine and scenario,
//! named after them), across loops, in order with each receiver's other
//! output, skipping receivers that are gone, and disconnecting a receiver
//! that stopped reading without holding up the others. The engines without
//! a loop refuse it. Loopback only, every wait bounded.

#[macro_use]
mod common;

use common::Client;
use iomux_engine::{Config, Engine, LoopStats, Server};
use iomux_proto::{ConnId, Context, Service, Step};
use std::io::{BufRead, ErrorKind, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

/// The connections of a server: open ones in the order they opened, and
/// the ids of those that closed.
#[derive(Default)]
struct Room {
    open: Vec<ConnId>,
    gone: Vec<ConnId>,
}

type SharedRoom = Arc<Mutex<Room>>;

/// Greets each connection with `welcome`, then takes lines:
/// - `many TEXT`: TEXT to every open connection (itself included) in one `send_to_many`;
/// - `mixed TEXT`: to every other one `TEXT 1` with `send_to`, `TEXT 2` with
///   `send_to_many`, then `TEXT 3` with `send_to`;
/// - `ghosts TEXT`: TEXT to every open connection and to the closed ones,
///   plus two ids of a loop the server lacks;
/// - `pub N SIZE`: one line of SIZE bytes numbered N to every other
///   connection, then `ok N` to itself.
struct Station {
    room: SharedRoom,
}

impl Service for Station {
    fn on_open(&mut self, cx: &mut Context) {
        self.room.lock().unwrap().open.push(cx.id());
        cx.write(b"welcome\n");
    }

    fn on_data(&mut self, input: &[u8], cx: &mut Context) -> Step {
        let Some(end) = input.iter().rposition(|&b| b == b'\n') else {
            return Step::keep(0);
        };
        let text = std::str::from_utf8(&input[..end]).unwrap();
        for line in text.split('\n') {
            let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
            let room = self.room.lock().unwrap();
            let me = cx.id();
            let others = || room.open.iter().copied().filter(move |&id| id != me);
            match verb {
                "many" => {
                    cx.send_to_many(room.open.iter().copied(), format!("{rest}\n").as_bytes())
                }
                "mixed" => {
                    for id in others() {
                        cx.send_to(id, format!("{rest} 1\n").as_bytes());
                    }
                    cx.send_to_many(others(), format!("{rest} 2\n").as_bytes());
                    for id in others() {
                        cx.send_to(id, format!("{rest} 3\n").as_bytes());
                    }
                }
                "ghosts" => {
                    let nowhere = [ConnId::new(9, 1), ConnId::new(9, 2)];
                    let to = room.open.iter().chain(&room.gone).copied();
                    cx.send_to_many(to.chain(nowhere), format!("{rest}\n").as_bytes());
                }
                "pub" => {
                    let (n, size) = rest.split_once(' ').unwrap();
                    cx.send_to_many(
                        others(),
                        &numbered(n.parse().unwrap(), size.parse().unwrap()),
                    );
                    cx.write(format!("ok {n}\n").as_bytes());
                }
                _ => {}
            }
        }
        Step::keep(end + 1)
    }

    fn on_close(&mut self, id: ConnId) {
        let mut room = self.room.lock().unwrap();
        room.open.retain(|&o| o != id);
        room.gone.push(id);
    }
}

/// Line `n` of `size` bytes (newline included).
fn numbered(n: usize, size: usize) -> Vec<u8> {
    let mut line = format!("{n:08}").into_bytes();
    line.resize(size - 1, b'.');
    line.push(b'\n');
    line
}

fn start(name: &str, threads: usize, max_output: usize) -> (Server, SharedRoom) {
    let room = SharedRoom::default();
    let config = Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        threads,
        idle_timeout: Duration::from_secs(30),
        drain_timeout: Duration::from_millis(500),
        output_high_water: max_output / 4,
        max_output,
        // Round trips of small lines: no waiting on delayed ACKs.
        nodelay: true,
        ..Config::default()
    };
    let engine: Engine = name.parse().unwrap();
    let members = room.clone();
    let server = Server::start(config, engine, move || Station {
        room: members.clone(),
    })
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    (server, room)
}

fn stop(server: Server) -> LoopStats {
    server.shutdown();
    server.join().unwrap()
}

/// Stop the server: nobody was disconnected nor any id unknown.
fn stop_cleanly(name: &str, server: Server) {
    let stats = stop(server);
    assert_eq!(
        (stats.output_overflows, stats.misaddressed),
        (0, 0),
        "{name}: {stats}"
    );
}

/// Long enough for stray output to arrive.
fn settle() {
    thread::sleep(Duration::from_millis(100));
}

/// The room's open connections, once every client's welcome was read.
fn open(room: &SharedRoom) -> Vec<ConnId> {
    room.lock().unwrap().open.clone()
}

/// Loops the test runs: two, but one on sigio (a listener has one signal owner).
fn loops(name: &str) -> usize {
    if name == "sigio" {
        1
    } else {
        2
    }
}

fn many_receivers_on_one_loop(name: &str) {
    let (server, room) = start(name, 1, 1 << 20);
    let mut clients: Vec<Client> = (0..30).map(|_| Client::connect(&server)).collect();
    assert_eq!(open(&room).len(), 30, "{name}");
    // Back to back to the same receivers (likely one read): appended together.
    clients[3].send("many hello\nmany again\nmany third\n");
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(client.line(), "hello\n", "{name}: client {i}");
        assert_eq!(client.line(), "again\n", "{name}: client {i}");
        assert_eq!(client.line(), "third\n", "{name}: client {i}");
    }
    stop_cleanly(name, server);
}

fn many_receivers_across_loops(name: &str) {
    let threads = loops(name);
    let (server, room) = start(name, threads, 1 << 20);
    let mut clients = Vec::new();
    // Connections spread over the loops by the kernel: until each loop has
    // some (a few tries at most, bounded).
    while clients.len() < 16
        || (clients.len() < 200 && {
            let ids = open(&room);
            (0..threads).any(|l| ids.iter().all(|id| id.loop_index() != l))
        })
    {
        clients.push(Client::connect(&server));
    }
    let ids = open(&room);
    for l in 0..threads {
        assert!(
            ids.iter().any(|id| id.loop_index() == l),
            "{name}: no connection on loop {l}"
        );
    }
    // A publisher on each loop.
    for l in 0..threads {
        let publisher = ids.iter().position(|id| id.loop_index() == l).unwrap();
        clients[publisher].send(&format!("many from loop {l}\n"));
        for (i, client) in clients.iter_mut().enumerate() {
            assert_eq!(
                client.line(),
                format!("from loop {l}\n"),
                "{name}: client {i} ({})",
                ids[i]
            );
        }
    }
    stop_cleanly(name, server);
}

/// From another thread through the server's handle: every receiver, on
/// every loop, gets the frame.
fn from_outside_through_the_handle(name: &str) {
    let (server, room) = start(name, loops(name), 1 << 20);
    let mut clients: Vec<Client> = (0..20).map(|_| Client::connect(&server)).collect();
    let ids = open(&room);
    assert_eq!(ids.len(), 20, "{name}");
    let handle = server.handle();
    let sender = thread::spawn(move || handle.send_to_many(ids, b"from outside\n"));
    assert!(sender.join().unwrap(), "{name}: every id names a loop");
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(client.line(), "from outside\n", "{name}: client {i}");
    }
    stop_cleanly(name, server);
}

fn in_order_with_other_output(name: &str) {
    let (server, room) = start(name, loops(name), 1 << 20);
    let mut clients: Vec<Client> = (0..12).map(|_| Client::connect(&server)).collect();
    assert_eq!(open(&room).len(), 12, "{name}");
    clients[0].send("mixed a\nmixed b\n");
    clients[5].send("mixed c\n");
    let mut everyone_got = Vec::new();
    for (i, client) in clients.iter_mut().enumerate() {
        let mut got: Vec<String> = Vec::new();
        let expected = match i {
            0 => 3, // c's
            5 => 6, // a's and b's
            _ => 9,
        };
        for _ in 0..expected {
            got.push(client.line().trim_end().to_string());
        }
        // Whatever two publishers interleave, each one's lines keep their order.
        for publisher in ["a", "b", "c"] {
            let own = (i == 0 && publisher != "c") || (i == 5 && publisher == "c");
            let theirs: Vec<&str> = got
                .iter()
                .filter(|l| l.starts_with(publisher))
                .map(|l| l.as_str())
                .collect();
            let want: Vec<String> = if own {
                vec![]
            } else {
                (1..=3).map(|k| format!("{publisher} {k}")).collect()
            };
            assert_eq!(theirs, want, "{name}: client {i} got {got:?}");
        }
        let a = got.iter().position(|l| l == "a 3");
        let b = got.iter().position(|l| l == "b 1");
        assert!(a < b || i == 0, "{name}: client {i}: a before b: {got:?}");
        everyone_got.push(got);
    }
    settle();
    for (i, client) in clients.iter_mut().enumerate() {
        assert!(
            client.quiet(),
            "{name}: client {i}: nothing more than {:?}",
            everyone_got[i]
        );
    }
    stop(server);
}

fn a_gone_receiver_is_skipped(name: &str) {
    let (server, room) = start(name, 1, 1 << 20);
    let mut clients: Vec<Client> = (0..4).map(|_| Client::connect(&server)).collect();
    let gone = clients.pop().unwrap();
    drop(gone);
    for _ in 0..500 {
        if room.lock().unwrap().gone.len() == 1 {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        room.lock().unwrap().gone.len(),
        1,
        "{name}: the close was seen"
    );
    // A newcomer may take the gone one's slot: it must not get its mail.
    clients.push(Client::connect(&server));
    clients[0].send("ghosts x\nghosts z\nmany y\n");
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(client.line(), "x\n", "{name}: client {i}");
        assert_eq!(client.line(), "z\n", "{name}: client {i}");
        assert_eq!(client.line(), "y\n", "{name}: client {i}");
    }
    settle();
    for (i, client) in clients.iter_mut().enumerate() {
        assert!(client.quiet(), "{name}: client {i}: once each");
    }
    let stats = stop(server);
    assert_eq!(
        stats.misaddressed, 4,
        "{name}: the ids of no loop, twice: {stats}"
    );
    assert_eq!(stats.output_overflows, 0, "{name}: {stats}");
}

fn a_slow_receiver_is_disconnected_and_the_others_get_everything(name: &str) {
    const MAX_OUTPUT: usize = 128 * 1024;
    const SIZE: usize = 16 * 1024;
    // 9.6 MB: far past what the slow receiver's socket buffers hold (2.8 MB here).
    const MESSAGES: usize = 600;
    let (server, _room) = start(name, 1, MAX_OUTPUT);
    let mut publisher = Client::connect(&server);
    let fast: Vec<Client> = (0..3).map(|_| Client::connect(&server)).collect();
    // The slow one reads nothing: small buffers fill up soon.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.local_addr().into()).unwrap();
    let mut slow = Client::on(socket.into());
    // How many messages each fast receiver has read.
    let progress: Vec<Arc<AtomicUsize>> = (0..fast.len()).map(|_| Arc::default()).collect();
    let readers: Vec<_> = fast
        .into_iter()
        .zip(progress.clone())
        .map(|(mut client, read)| {
            thread::spawn(move || {
                let mut line = Vec::new();
                for n in 0..MESSAGES {
                    line.clear();
                    client.stream().read_until(b'\n', &mut line).unwrap();
                    if line != numbered(n, SIZE) {
                        return Err(format!("message {n} wrong ({} bytes)", line.len()));
                    }
                    read.store(n + 1, Ordering::Release);
                }
                Ok(())
            })
        })
        .collect();
    for n in 0..MESSAGES {
        // A fast receiver that the scheduler left behind must not look slow:
        // at most two messages ahead of the last one's reading.
        let deadline = Instant::now() + WAIT;
        while progress
            .iter()
            .any(|read| read.load(Ordering::Acquire) + 2 < n)
        {
            assert!(
                Instant::now() < deadline,
                "{name}: a fast receiver stalled at {n}"
            );
            thread::sleep(Duration::from_micros(200));
        }
        publisher.send(&format!("pub {n} {SIZE}\n"));
        assert_eq!(publisher.line(), format!("ok {n}\n"), "{name}");
    }
    for reader in readers {
        reader
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // The slow one got a prefix of the messages, then its connection ended.
    let mut got = Vec::new();
    let end = slow.stream().read_to_end(&mut got);
    assert!(
        end.is_ok()
            || end
                .as_ref()
                .is_err_and(|e| e.kind() == ErrorKind::ConnectionReset),
        "{name}: {end:?}"
    );
    assert!(got.len() < MESSAGES * SIZE, "{name}: it was cut off");
    let whole = got.len() / SIZE;
    for n in 0..whole {
        assert!(
            got[n * SIZE..(n + 1) * SIZE] == numbered(n, SIZE),
            "{name}: slow message {n}"
        );
    }
    let stats = stop(server);
    assert_eq!(stats.output_overflows, 1, "{name}: {stats}");
}

/// One connection (the blocking engine serves one at a time) sends to
/// itself and two others: its share is a write, the command is refused.
fn send_to_many_is_refused(name: &str) {
    let (server, _room) = start(name, 1, 1 << 20);
    let mut one = Client::connect(&server);
    one.send("ghosts hi\nghosts again\n");
    assert_eq!(one.line(), "hi\n", "{name}: its own share is a write");
    assert_eq!(one.line(), "again\n", "{name}");
    drop(one);
    let stats = stop(server);
    assert_eq!(stats.refused_commands, 2, "{name}: {stats}");
}

loop_engines!(
    engine_tests,
    [
        many_receivers_on_one_loop,
        many_receivers_across_loops,
        from_outside_through_the_handle,
        in_order_with_other_output,
        a_gone_receiver_is_skipped,
        a_slow_receiver_is_disconnected_and_the_others_get_everything,
    ]
);
loopless_engines!(engine_tests, [send_to_many_is_refused]);
// That these lists are `Engine::ALL`'s is checked once, in loop_api.rs.
