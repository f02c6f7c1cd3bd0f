//! The `Service` contract for streaming and deferred work, on every engine
//! that carries out commands (one test per engine and scenario): drained
//! notices that drive a streamed download (a fast reader gets it all
//! before any idle deadline, a slow reader holds the producer back), held
//! input offered again with no new bytes arriving, blocking work on the
//! worker pool while the loop serves others (a panic in it comes back as
//! an error, a full queue is refused at once), and messages posted between
//! services, across loops, in order with plain sends. The engines without
//! a loop refuse a service that says it needs one, and blocking work fails
//! at once there. Loopback only, every wait bounded.

#[macro_use]
mod common;

use iomux_engine::{Config, Engine, LoopStats, Server};
use iomux_proto::{ConnId, Context, Service, Step};
use std::any::Any;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

/// What the test and the services share: open connections in the order
/// they opened, bytes produced by downloads, and a gate blocking work waits on.
#[derive(Default)]
struct Shared {
    open: Mutex<Vec<ConnId>>,
    produced: AtomicUsize,
    gate: (Mutex<bool>, Condvar),
}

impl Shared {
    fn open_gate(&self) {
        *self.gate.0.lock().unwrap() = true;
        self.gate.1.notify_all();
    }

    /// Wait for the gate (at most `WAIT`); whether it opened.
    fn wait_gate(&self) -> bool {
        let open = self.gate.0.lock().unwrap();
        let (open, _) = self.gate.1.wait_timeout_while(open, WAIT, |o| !*o).unwrap();
        *open
    }
}

/// Greets with `welcome`, then takes lines:
/// - `download N CHUNK`: N bytes (a pattern), CHUNK at a time, each next
///   chunk written from `on_drained`;
/// - `defer MS`: holds the input behind it, and `MS` later answers
///   `deferred` and releases it;
/// - `echo TEXT`: `TEXT`;
/// - `gated`: blocking work that waits for the test's gate, then `gated done`;
/// - `panic`: blocking work that panics; its error is written;
/// - `flood N`: N blocking works of 300 ms; `refused K` says how many the
///   full queue refused, then `slept` for each that ran;
/// - `mixed I N`: to open connection I, N lines `s{n}` sent and `m{n}`
///   posted, alternately (it writes each message it is posted);
/// - `post_gone`: posts to an id that no connection has, then `posted`.
struct Contract {
    shared: Arc<Shared>,
    download: Option<(usize, usize)>,
}

/// Byte `i` of a download.
fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

impl Contract {
    /// The next chunk of a download; asks to be told when it drained.
    fn produce(&mut self, cx: &mut Context) {
        let Some((left, chunk)) = self.download.as_mut() else {
            return;
        };
        let total = self.shared.produced.load(Ordering::Relaxed);
        let n = (*chunk).min(*left);
        let out = cx.out();
        out.extend((total..total + n).map(pattern));
        self.shared.produced.fetch_add(n, Ordering::Relaxed);
        *left -= n;
        if *left == 0 {
            self.download = None;
        } else {
            cx.notify_when_drained();
        }
    }

    fn line(&mut self, line: &str, cx: &mut Context) {
        let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
        let mut args = rest.split(' ').map(|a| a.parse::<usize>().unwrap_or(0));
        match verb {
            "download" => {
                let (n, chunk) = (args.next().unwrap(), args.next().unwrap());
                self.download = Some((n, chunk));
                self.produce(cx);
            }
            "echo" => cx.write(format!("{rest}\n").as_bytes()),
            "gated" => {
                let shared = self.shared.clone();
                let spawned = cx.spawn_blocking(1, move || shared.wait_gate());
                if let Err(e) = spawned {
                    cx.write(format!("error: {e}\n").as_bytes());
                }
            }
            "panic" => {
                let spawned = cx.spawn_blocking(2, || -> u8 { panic!("a bug in the work") });
                spawned.unwrap();
            }
            "flood" => {
                let n = args.next().unwrap();
                let refused = (0..n)
                    .filter(|_| {
                        let work = || std::thread::sleep(Duration::from_millis(300));
                        match cx.spawn_blocking(3, work) {
                            Ok(()) => false,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
                            Err(e) => panic!("{e}"),
                        }
                    })
                    .count();
                cx.write(format!("refused {refused}\n").as_bytes());
            }
            "mixed" => {
                let (i, n) = (args.next().unwrap(), args.next().unwrap());
                let to = self.shared.open.lock().unwrap()[i];
                for k in 0..n {
                    if k % 2 == 0 {
                        cx.send_to(to, format!("s{k}\n").as_bytes());
                    } else {
                        cx.post(to, k);
                    }
                }
            }
            "post_gone" => {
                let me = cx.id();
                cx.post(ConnId::new(me.loop_index(), 1 << 40), 7usize);
                cx.write(b"posted\n");
            }
            _ => cx.write(format!("unknown {line}\n").as_bytes()),
        }
    }
}

impl Service for Contract {
    fn on_open(&mut self, cx: &mut Context) {
        self.shared.open.lock().unwrap().push(cx.id());
        cx.write(b"welcome\n");
    }

    fn on_data(&mut self, input: &[u8], cx: &mut Context) -> Step {
        let mut taken = 0;
        while let Some(end) = input[taken..].iter().position(|&b| b == b'\n') {
            let line = std::str::from_utf8(&input[taken..taken + end])
                .unwrap()
                .to_string();
            taken += end + 1;
            if let Some(ms) = line.strip_prefix("defer ") {
                // Answer later; hold what follows until then.
                cx.set_timer(0, Duration::from_millis(ms.parse().unwrap()));
                cx.hold_input();
                break;
            }
            self.line(&line, cx);
        }
        Step::keep(taken)
    }

    fn on_timer(&mut self, _key: u64, cx: &mut Context) {
        cx.write(b"deferred\n");
        cx.release_input();
    }

    fn on_drained(&mut self, cx: &mut Context) {
        self.produce(cx);
    }

    fn on_message(&mut self, _from: ConnId, message: Box<dyn Any + Send>, cx: &mut Context) {
        let k = message.downcast::<usize>().unwrap();
        cx.write(format!("m{k}\n").as_bytes());
    }

    fn on_blocking_done(
        &mut self,
        key: u64,
        result: io::Result<Box<dyn Any + Send>>,
        cx: &mut Context,
    ) {
        match (key, result) {
            (1, Ok(opened)) => {
                let opened = *opened.downcast::<bool>().unwrap();
                cx.write(format!("gated done {opened}\n").as_bytes());
            }
            (3, Ok(_)) => cx.write(b"slept\n"),
            (_, Err(e)) => cx.write(format!("error: {e}\n").as_bytes()),
            (key, Ok(_)) => cx.write(format!("unexpected {key}\n").as_bytes()),
        }
    }

    fn on_close(&mut self, id: ConnId) {
        self.shared.open.lock().unwrap().retain(|&o| o != id);
    }
}

fn start_with(name: &str, config: Config) -> (Server, Arc<Shared>) {
    let shared = Arc::new(Shared::default());
    let config = Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        drain_timeout: Duration::from_millis(500),
        nodelay: true,
        ..config
    };
    let engine: Engine = name.parse().unwrap();
    let for_server = shared.clone();
    let server = Server::start(config, engine, move || Contract {
        shared: for_server.clone(),
        download: None,
    })
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    (server, shared)
}

fn start(name: &str) -> (Server, Arc<Shared>) {
    start_with(name, Config::default())
}

fn stop(server: Server) -> LoopStats {
    server.shutdown();
    server.join().unwrap()
}

struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(server: &Server) -> Client {
        let stream = TcpStream::connect(server.local_addr()).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut client = Client {
            reader: BufReader::new(stream),
        };
        assert_eq!(client.line(), "welcome\n");
        client
    }

    fn send(&mut self, text: &str) {
        self.reader.get_mut().write_all(text.as_bytes()).unwrap();
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("a line in time");
        line
    }

    /// Read exactly `n` bytes of a download and check them; the time it took.
    fn download(&mut self, n: usize, from: usize) -> Duration {
        let started = Instant::now();
        let mut buf = vec![0; 64 * 1024];
        let mut got = 0;
        while got < n {
            let want = buf.len().min(n - got);
            let k = match self.reader.read(&mut buf[..want]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                read => read.expect("download bytes in time"),
            };
            assert!(k > 0, "the download was cut off after {got} of {n} bytes");
            for (i, &b) in buf[..k].iter().enumerate() {
                assert_eq!(b, pattern(from + got + i), "byte {}", got + i);
            }
            got += k;
        }
        started.elapsed()
    }
}

/// A fast reader gets a download of 48 MiB, produced 64 KiB at a time from
/// `on_drained`, whole, with an idle deadline of 2 s (each notice comes
/// without any write having had to wait: before, the producer stalled
/// after its first chunk and the deadline cut it off).
fn a_streamed_download_reaches_a_fast_reader_whole(name: &str) {
    let config = Config {
        idle_timeout: Duration::from_secs(2),
        ..Config::default()
    };
    let (server, shared) = start_with(name, config);
    let mut client = Client::connect(&server);
    let n = 48 << 20;
    client.send(&format!("download {n} 65536\n"));
    client.download(n, 0);
    client.send("echo after\n");
    assert_eq!(client.line(), "after\n", "{name}: the connection goes on");
    assert_eq!(shared.produced.load(Ordering::Relaxed), n);
    drop(client);
    let stats = stop(server);
    assert_eq!(stats.timeouts, 0, "{name}: {stats}");
}

/// A reader that stops holds the producer back: while it reads nothing,
/// what was produced stays within what it read plus the socket buffers
/// (of a 64 MiB download), and it then gets the rest.
fn a_streamed_download_to_a_slow_reader_is_held_back(name: &str) {
    let (server, shared) = start(name);
    let mut client = Client::connect(&server);
    let n = 64 << 20;
    client.send(&format!("download {n} 65536\n"));
    let first = 1 << 20;
    client.download(first, 0);
    // The reader pauses: the producer must stop once the socket buffers are full.
    let mut produced = shared.produced.load(Ordering::Relaxed);
    let deadline = Instant::now() + WAIT;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = shared.produced.load(Ordering::Relaxed);
        if now == produced || Instant::now() > deadline {
            break;
        }
        produced = now;
    }
    // Loopback socket buffers hold a few MiB each way (net.ipv4.tcp_wmem,
    // tcp_rmem); the producer may be one chunk ahead of them.
    let ahead = produced - first;
    assert!(
        ahead <= 24 << 20,
        "{name}: {ahead} bytes produced ahead of the reader"
    );
    client.download(n - first, first);
    assert_eq!(shared.produced.load(Ordering::Relaxed), n);
    drop(client);
    stop(server);
}

/// Input held behind a deferred answer is offered again when the service
/// releases it, though no new bytes arrive: the pipelined lines behind
/// `defer` are answered after `deferred`, in order.
fn held_input_is_offered_again_without_new_bytes(name: &str) {
    let (server, _shared) = start(name);
    let mut client = Client::connect(&server);
    client.send("echo one\ndefer 100\necho two\necho three\n");
    assert_eq!(client.line(), "one\n", "{name}");
    assert_eq!(client.line(), "deferred\n", "{name}");
    assert_eq!(client.line(), "two\n", "{name}: offered again");
    assert_eq!(client.line(), "three\n", "{name}");
    // Twice on one connection, with its FIN right behind the held input.
    client.send("defer 50\necho four\n");
    client
        .reader
        .get_ref()
        .shutdown(std::net::Shutdown::Write)
        .unwrap();
    assert_eq!(client.line(), "deferred\n", "{name}");
    assert_eq!(client.line(), "four\n", "{name}: held input before the FIN");
    assert_eq!(client.line(), "", "{name}: then closed");
    stop(server);
}

/// Input held past the engine's input cap stops reading instead of closing
/// the connection; once released, all of it is answered.
fn held_input_past_the_cap_pauses_reading(name: &str) {
    let config = Config {
        max_pending_input: 64 * 1024,
        ..Config::default()
    };
    let (server, _shared) = start_with(name, config);
    let mut client = Client::connect(&server);
    let lines = 40_000; // "echo 00000\n" x 40,000 = 440 kB held: 7 caps
    let mut text = String::from("defer 300\n");
    for i in 0..lines {
        text += &format!("echo {i:05}\n");
    }
    let mut writer = client.reader.get_ref().try_clone().unwrap();
    let sender = std::thread::spawn(move || writer.write_all(text.as_bytes()));
    assert_eq!(client.line(), "deferred\n", "{name}");
    for i in 0..lines {
        assert_eq!(client.line(), format!("{i:05}\n"), "{name}");
    }
    sender.join().unwrap().unwrap();
    drop(client);
    let stats = stop(server);
    assert_eq!(stats.faults, 0, "{name}: the cap closed nothing: {stats}");
}

/// Blocking work that waits for the test runs off the loop: another
/// connection of the same loop is answered meanwhile (had the loop run
/// the work, that answer could never come and the gate never open).
fn blocking_work_leaves_the_loop_serving_others(name: &str) {
    let (server, shared) = start(name);
    let mut blocked = Client::connect(&server);
    let mut other = Client::connect(&server);
    blocked.send("gated\n");
    other.send("echo meanwhile\n");
    assert_eq!(
        other.line(),
        "meanwhile\n",
        "{name}: served while the work blocks"
    );
    shared.open_gate();
    assert_eq!(
        blocked.line(),
        "gated done true\n",
        "{name}: the result came back"
    );
    stop(server);
}

/// A panic in blocking work comes back to the service as an error; the
/// loop and the connection go on.
fn a_panic_in_blocking_work_comes_back_as_an_error(name: &str) {
    let (server, _shared) = start(name);
    let mut client = Client::connect(&server);
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    client.send("panic\n");
    let told = client.line();
    std::panic::set_hook(hook);
    assert!(
        told.starts_with("error: ") && told.contains("a bug in the work"),
        "{name}: {told:?}"
    );
    client.send("echo still here\n");
    assert_eq!(client.line(), "still here\n", "{name}");
    stop(server);
}

/// With one worker thread and a queue of 2, ten works at once: all but
/// the queued ones (and the one a worker may have taken already) are
/// refused at once, and each accepted one's result comes back.
fn a_full_blocking_queue_refuses_at_once(name: &str) {
    let config = Config {
        blocking_threads: 1,
        blocking_queue: 2,
        ..Config::default()
    };
    let (server, _shared) = start_with(name, config);
    let mut client = Client::connect(&server);
    client.send("flood 10\n");
    let refused: usize = client
        .line()
        .strip_prefix("refused ")
        .and_then(|n| n.trim().parse().ok())
        .expect("refused K");
    assert!((7..=8).contains(&refused), "{name}: {refused} refused");
    for _ in 0..10 - refused {
        assert_eq!(client.line(), "slept\n", "{name}");
    }
    stop(server);
}

/// Connections on every loop (a few tries, bounded); their clients in the
/// order the server opened them.
fn clients_on_every_loop(server: &Server, shared: &Shared, loops: usize) -> Vec<Client> {
    let mut clients = Vec::new();
    while clients.len() < 2
        || (clients.len() < 200 && {
            let ids = shared.open.lock().unwrap();
            (0..loops).any(|l| ids.iter().all(|id| id.loop_index() != l))
        })
    {
        clients.push(Client::connect(server));
    }
    clients
}

/// Posts reach the receiving service on its loop, in order with plain
/// sends to it, from a connection of the same loop and of the other.
fn posts_arrive_in_order_with_sends_across_loops(name: &str) {
    let loops = if name == "sigio" { 1 } else { 2 };
    let config = Config {
        threads: loops,
        ..Config::default()
    };
    let (server, shared) = start_with(name, config);
    let mut clients = clients_on_every_loop(&server, &shared, loops);
    let ids = shared.open.lock().unwrap().clone();
    assert_eq!(ids.len(), clients.len());
    let receiver = 0;
    let senders: Vec<usize> = (0..loops)
        .filter_map(|l| (1..ids.len()).find(|&i| ids[i].loop_index() == l))
        .collect();
    assert!(!senders.is_empty(), "{name}");
    for &sender in &senders {
        clients[sender].send(&format!("mixed {receiver} 200\n"));
        for k in 0..200 {
            let kind = if k % 2 == 0 { 's' } else { 'm' };
            assert_eq!(
                clients[receiver].line(),
                format!("{kind}{k}\n"),
                "{name}: from {} to {}",
                ids[sender],
                ids[receiver]
            );
        }
    }
    // A post to an id no connection has is skipped.
    clients[1].send("post_gone\necho alive\n");
    assert_eq!(clients[1].line(), "posted\n", "{name}");
    assert_eq!(clients[1].line(), "alive\n", "{name}");
    drop(clients);
    stop(server);
}

loop_engines!(
    engine_tests,
    [
        a_streamed_download_reaches_a_fast_reader_whole,
        a_streamed_download_to_a_slow_reader_is_held_back,
        held_input_is_offered_again_without_new_bytes,
        held_input_past_the_cap_pauses_reading,
        blocking_work_leaves_the_loop_serving_others,
        a_panic_in_blocking_work_comes_back_as_an_error,
        a_full_blocking_queue_refuses_at_once,
        posts_arrive_in_order_with_sends_across_loops,
    ]
);

/// A service that says it needs a loop.
struct NeedsLoop;

impl Service for NeedsLoop {
    fn on_data(&mut self, input: &[u8], cx: &mut Context) -> Step {
        cx.set_timer(0, Duration::from_millis(10));
        Step::keep(input.len())
    }

    fn needs_event_loop() -> bool {
        true
    }
}

/// The loopless engines refuse, at start, a service that needs a loop,
/// naming the engines that serve it; blocking work fails at once there.
fn a_service_that_needs_a_loop_is_refused(name: &str) {
    let engine: Engine = name.parse().unwrap();
    let config = Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    let refused = Server::start(config, engine, || NeedsLoop).unwrap_err();
    assert_eq!(refused.kind(), io::ErrorKind::InvalidInput, "{name}");
    let why = refused.to_string();
    assert!(
        why.contains(name) && why.contains("epoll-edge") && why.contains("uring"),
        "{name}: {why}"
    );
    let (server, _shared) = start(name);
    let mut client = Client::connect(&server);
    client.send("gated\n");
    let told = client.line();
    assert!(
        told.starts_with("error: cannot run blocking work"),
        "{name}: {told}"
    );
    drop(client);
    stop(server);
}

loopless_engines!(engine_tests, [a_service_that_needs_a_loop_is_refused]);

/// The engines tested above are `Engine::ALL`'s, with a loop and without.
#[test]
fn every_engine_is_tested() {
    assert_eq!(loop_engines!(engine_names), common::engines_with_loop(true));
    assert_eq!(
        loopless_engines!(engine_names),
        common::engines_with_loop(false)
    );
}
