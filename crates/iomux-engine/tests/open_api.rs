//! A chat server written from the public API alone (`Service`, `Context`,
//! `Server`), run on every engine: each test here expands to one test per
//! engine, named after it, so a failure names its engine.

#[macro_use]
mod common;

use common::Client;
use iomux_engine::{Config, Engine, Server};
use iomux_proto::{ConnId, Context, Service, Step};
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Members of the chat room, shared by every connection of the server.
type Room = Arc<Mutex<Vec<ConnId>>>;

/// A chat member: greeted on connect, every line it sends goes to every other
/// member; `time` answers after 50 ms from a timer; `boom` panics; a line
/// longer than the engine's input cap gets `too long`.
struct Member {
    room: Room,
}

impl Service for Member {
    fn on_open(&mut self, cx: &mut Context) {
        self.room.lock().unwrap().push(cx.id());
        cx.write(b"welcome\n");
    }

    fn on_data(&mut self, input: &[u8], cx: &mut Context) -> Step {
        let Some(end) = input.iter().rposition(|&b| b == b'\n') else {
            return Step::keep(0);
        };
        for line in input[..=end].split_inclusive(|&b| b == b'\n') {
            match line {
                b"boom\n" => panic!("a bug in this protocol"),
                b"time\n" => cx.set_timer(1, Duration::from_millis(50)),
                b"bye\n" => cx.close(),
                _ => {
                    let others: Vec<ConnId> = self.room.lock().unwrap().clone();
                    let me = cx.id();
                    for other in others.into_iter().filter(|o| *o != me) {
                        cx.send_to(other, line);
                    }
                }
            }
        }
        Step::keep(end + 1)
    }

    fn on_timer(&mut self, key: u64, cx: &mut Context) {
        cx.write(format!("timer {key}\n").as_bytes());
    }

    fn on_input_cap(&mut self, cx: &mut Context) {
        cx.write(b"too long\n");
    }

    fn on_close(&mut self, id: ConnId) {
        self.room.lock().unwrap().retain(|m| *m != id);
    }
}

fn start(engine: Engine, threads: usize) -> (Server, Room) {
    start_with(
        engine,
        Config {
            threads,
            ..config()
        },
    )
}

fn config() -> Config {
    Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        idle_timeout: Duration::from_secs(10),
        drain_timeout: Duration::from_millis(500),
        ..Config::default()
    }
}

fn start_with(engine: Engine, config: Config) -> (Server, Room) {
    let room: Room = Arc::default();
    let members = room.clone();
    let server = Server::start(config, engine, move || Member {
        room: members.clone(),
    })
    .unwrap_or_else(|e| panic!("{engine}: {e}"));
    (server, room)
}

/// Wait (bounded) until the room has `n` members.
fn room_holds(room: &Room, n: usize) {
    for _ in 0..500 {
        if room.lock().unwrap().len() == n {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!(
        "the room never held {n} members: {:?}",
        room.lock().unwrap()
    );
}

/// Stop the server and sum its loops' counters.
fn stop(server: Server) -> iomux_engine::LoopStats {
    server.shutdown();
    server.join().unwrap()
}

fn engine(name: &str) -> Engine {
    name.parse().unwrap()
}

fn chat_reaches_every_other_member_across_loops(name: &str) {
    let engine = engine(name);
    if engine == Engine::Blocking {
        return; // one connection at a time: no room to chat in (see below)
    }
    let (server, room) = start(engine, 2);
    let mut clients: Vec<Client> = (0..4).map(|_| Client::connect(&server)).collect();
    room_holds(&room, 4);
    clients[0].send("hello\n");
    if engine.carries_out_commands() {
        for c in &mut clients[1..] {
            assert_eq!(c.line(), "hello\n", "{engine}");
        }
        // From outside the loops, through a handle: to every member.
        let handle = server.handle();
        for member in room.lock().unwrap().iter() {
            assert!(handle.send_to(*member, b"from outside\n"));
        }
        for c in &mut clients {
            assert_eq!(c.line(), "from outside\n", "{engine}");
        }
        clients[2].send("bye\n");
        let mut rest = String::new();
        assert_eq!(
            clients[2].stream().read_line(&mut rest).unwrap(),
            0,
            "{engine}: closed"
        );
        room_holds(&room, 3);
        drop(clients);
        let stats = stop(server);
        assert_eq!(stats.refused_commands, 0);
    } else {
        // Once the server has closed the half-closed sender, it has read its line.
        clients[0]
            .stream()
            .get_ref()
            .shutdown(std::net::Shutdown::Write)
            .unwrap();
        let mut rest = String::new();
        assert_eq!(
            clients[0].stream().read_line(&mut rest).unwrap(),
            0,
            "{engine}"
        );
        drop(clients);
        let stats = stop(server);
        assert!(stats.refused_commands >= 3, "{engine}: {stats}");
    }
}

fn own_timers_fire(name: &str) {
    let engine = engine(name);
    let (server, _room) = start(engine, 1);
    let mut client = Client::connect(&server);
    client.send("time\n");
    if engine.carries_out_commands() {
        assert_eq!(client.line(), "timer 1\n", "{engine}");
    }
    drop(client);
    drop(server); // stops and joins
}

fn a_panic_closes_only_its_connection(name: &str) {
    let engine = engine(name);
    let (server, _room) = start(engine, 1);
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut victim = Client::connect(&server);
    victim.send("boom\n");
    let mut rest = String::new();
    let closed = victim.stream().read_line(&mut rest);
    std::panic::set_hook(quiet);
    assert!(
        matches!(closed, Ok(0) | Err(_)),
        "{engine}: {closed:?} {rest:?}"
    );
    drop(victim);
    // The server goes on.
    let mut next = Client::connect(&server);
    next.send("bye\n");
    let stats = stop(server);
    assert_eq!(stats.faults, 1, "{engine}: {stats}");
}

/// A line past the input cap gets the service's last word, then the
/// connection closes, counted once as a fault, on every engine alike (the
/// engines without a loop once let it pass uncounted).
fn input_past_the_cap_gets_a_last_word_and_counts_one_fault(name: &str) {
    let engine = engine(name);
    let cap = 4096;
    let (server, _room) = start_with(
        engine,
        Config {
            threads: 1,
            max_pending_input: cap,
            ..config()
        },
    );
    let mut client = Client::connect(&server);
    // No line end: the member keeps all of it, waiting for one.
    client.send(&"x".repeat(cap + 100));
    assert_eq!(client.line(), "too long\n", "{engine}");
    let mut rest = String::new();
    let closed = client.stream().read_line(&mut rest);
    assert!(
        matches!(closed, Ok(0) | Err(_)),
        "{engine}: {closed:?} {rest:?}"
    );
    drop(client);
    let stats = stop(server);
    assert_eq!(stats.faults, 1, "{engine}: {stats}");
}

/// The same engine on a Unix-domain socket, two loops accepting on it:
/// every byte answered, a half-close honoured, the socket file removed on stop.
fn a_unix_domain_listener_serves(name: &str) {
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    let engine = engine(name);
    let path = std::env::temp_dir().join(format!("iomux-test-{}-{name}.sock", std::process::id()));
    let mut config = Config {
        threads: 2,
        idle_timeout: Duration::from_secs(10),
        ..Config::default()
    };
    if name == "sigio" {
        // A socket has one signal owner: two sigio loops cannot share one.
        let refused = Server::start_unix(&path, config.clone(), engine, iomux_proto::Echo::upper);
        let err = refused.expect_err("sigio refuses two loops on one socket");
        assert!(err.to_string().contains("one signal owner"), "{err}");
        assert!(!path.exists(), "a refused start leaves no socket file");
        config.threads = 1;
    }
    let server = Server::start_unix(&path, config, engine, iomux_proto::Echo::upper)
        .unwrap_or_else(|e| panic!("{engine}: {e}"));
    assert_eq!(
        server.listen_addr().to_string(),
        format!("unix:{}", path.display())
    );
    let payload: Vec<u8> = (0..200_000u32)
        .map(|i| b"abcxyz\n"[i as usize % 7])
        .collect();
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (path, payload) = (path.clone(), payload.clone());
            std::thread::spawn(move || {
                let mut c = UnixStream::connect(&path).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let writer = c.try_clone().unwrap();
                let sender = std::thread::spawn(move || {
                    (&writer).write_all(&payload).unwrap();
                    writer.shutdown(std::net::Shutdown::Write).unwrap();
                });
                let mut got = Vec::new();
                c.read_to_end(&mut got).unwrap();
                sender.join().unwrap();
                got
            })
        })
        .collect();
    let expected = payload.to_ascii_uppercase();
    for c in clients {
        assert!(
            c.join().unwrap() == expected,
            "{engine}: every byte, upper-cased, then EOF"
        );
    }
    let stats = stop(server);
    assert_eq!(stats.accepts, 3, "{engine}: {stats}");
    assert!(
        !path.exists(),
        "{engine}: the socket file is removed on stop"
    );
}

/// Every scenario on the engines given by `$engines` (with a loop or without).
macro_rules! scenarios {
    ($engines:ident) => {
        $engines!(
            engine_tests,
            [
                chat_reaches_every_other_member_across_loops,
                own_timers_fire,
                a_panic_closes_only_its_connection,
                input_past_the_cap_gets_a_last_word_and_counts_one_fault,
                a_unix_domain_listener_serves,
            ]
        );
    };
}

scenarios!(loop_engines);
scenarios!(loopless_engines);

every_engine_is_tested!();
