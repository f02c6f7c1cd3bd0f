//! `Context::send_file`: file regions go out in order with the bytes around
//! them, on every engine (one test per engine and scenario, named after
//! them): byte-exact between writes, many pipelined, two 64 MiB regions to
//! a reader as fast as it can (past the readiness engines' per-pass cap), a
//! 64 MiB region to a slow reader with the server's memory flat while another client is
//! served, and a file that shrinks while it is sent, or a region past its
//! file's end, closing its connection, counted (the peer sees fewer bytes
//! and the end of the stream, never a hang).
//! A reader draining a download as fast as it can does not hold up another
//! connection (every engine with a loop). Over TLS (every engine with a
//! loop) regions arrive encrypted in their places, and one that runs out of file closes its connection, counted.
//! Loopback only, every wait bounded.

#[macro_use]
mod common;
#[path = "../../iomux-cli/tests/common/tls.rs"]
mod tls_fixture;

use iomux_engine::{Config, Engine, LoopStats, Server};
use iomux_proto::{Context, FileRegion, Service, Step};
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::thread;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

/// The test that measures the process's memory runs alone (it takes this
/// for writing; every other test of this binary, for reading), so that
/// what it measures is its own server's.
static MEMORY: RwLock<()> = RwLock::new(());

fn shared_run() -> std::sync::RwLockReadGuard<'static, ()> {
    MEMORY.read().unwrap_or_else(|e| e.into_inner())
}
const MIB: usize = 1 << 20;

/// The byte at `at` of every test file: no period a misplaced piece could hide in.
fn pattern(at: usize) -> u8 {
    ((at as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8
}

/// A file of `len` pattern bytes, open for reading and writing, with no
/// name left on disk (nothing to clean up).
fn make_file(name: &str, len: usize) -> Arc<File> {
    let path = std::env::temp_dir().join(format!("iomux-files-{}-{name}", std::process::id()));
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    let mut writer = std::io::BufWriter::new(&file);
    let mut chunk = Vec::with_capacity(MIB);
    for start in (0..len).step_by(MIB) {
        chunk.clear();
        chunk.extend((start..(start + MIB).min(len)).map(pattern));
        writer.write_all(&chunk).unwrap();
    }
    writer.flush().unwrap();
    drop(writer);
    Arc::new(file)
}

/// One 64 MiB file for every engine's large-file test.
fn big_file() -> &'static Arc<File> {
    static BIG: OnceLock<Arc<File>> = OnceLock::new();
    BIG.get_or_init(|| make_file("big", 64 * MIB))
}

/// One 1 MiB file for the small scenarios.
fn small_file() -> &'static Arc<File> {
    static SMALL: OnceLock<Arc<File>> = OnceLock::new();
    SMALL.get_or_init(|| make_file("small", MIB))
}

/// Serves regions of one open file (shared by every connection). Lines:
/// - `get OFF LEN`: `<OFF LEN>\n`, the region, `.\n`;
/// - `two O1 L1 O2 L2`: `[`, the first region, `|`, the second, `]\n`
///   (two regions in one call, bytes between them);
/// - `ping`: `pong\n`.
struct Regions {
    file: Arc<File>,
}

impl Regions {
    fn region(&self, offset: &str, len: &str) -> FileRegion {
        let file = self.file.clone();
        FileRegion::new(file, offset.parse().unwrap(), len.parse().unwrap())
    }
}

impl Service for Regions {
    fn on_data(&mut self, input: &[u8], cx: &mut Context) -> Step {
        let Some(end) = input.iter().rposition(|&b| b == b'\n') else {
            return Step::keep(0);
        };
        let text = std::str::from_utf8(&input[..end]).unwrap();
        for line in text.split('\n') {
            let words: Vec<&str> = line.split(' ').collect();
            match words[..] {
                ["get", off, len] => {
                    cx.write(format!("<{off} {len}>\n").as_bytes());
                    cx.send_file(self.region(off, len));
                    cx.write(b".\n");
                }
                ["two", o1, l1, o2, l2] => {
                    cx.write(b"[");
                    cx.send_file(self.region(o1, l1));
                    cx.write(b"|");
                    cx.send_file(self.region(o2, l2));
                    cx.write(b"]\n");
                }
                ["ping"] => cx.write(b"pong\n"),
                _ => cx.write(b"?\n"),
            }
        }
        Step::keep(end + 1)
    }
}

fn start(name: &str, file: &Arc<File>) -> Server {
    start_with(name, file, None)
}

fn start_with(
    name: &str,
    file: &Arc<File>,
    tls: Option<Arc<iomux_engine::rustls::ServerConfig>>,
) -> Server {
    let config = Config {
        tls,
        addr: "127.0.0.1:0".parse().unwrap(),
        threads: 1,
        idle_timeout: Duration::from_secs(30),
        drain_timeout: Duration::from_millis(500),
        output_high_water: 256 * 1024,
        max_output: 4 * MIB,
        ..Config::default()
    };
    let engine: Engine = name.parse().unwrap();
    let file = file.clone();
    Server::start(config, engine, move || Regions { file: file.clone() })
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn stop(server: Server) -> LoopStats {
    server.shutdown();
    server.join().unwrap()
}

fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(server.local_addr()).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
}

/// What `get OFF LEN` answers, byte for byte.
fn expected_get(off: usize, len: usize) -> Vec<u8> {
    let mut out = format!("<{off} {len}>\n").into_bytes();
    out.extend((off..off + len).map(pattern));
    out.extend_from_slice(b".\n");
    out
}

fn read_exactly(stream: &mut impl Read, len: usize, what: &str) -> Vec<u8> {
    let mut got = vec![0; len];
    stream
        .read_exact(&mut got)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    got
}

/// The first position where two byte strings differ, for a readable failure.
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or_else(|| (a.len() != b.len()).then_some(a.len().min(b.len())))
}

fn a_region_between_two_writes_is_byte_exact(name: &str) {
    let _shared = shared_run();
    let server = start(name, small_file());
    let mut client = connect(&server);
    client.write_all(b"get 100 300000\n").unwrap();
    let want = expected_get(100, 300_000);
    let got = read_exactly(&mut client, want.len(), name);
    assert_eq!(first_difference(&got, &want), None, "{name}");
    // Two regions in one call with bytes between, and the file's very end.
    client.write_all(b"two 0 1 1048000 576\n").unwrap();
    let mut want = b"[".to_vec();
    want.push(pattern(0));
    want.push(b'|');
    want.extend((1_048_000..MIB).map(pattern));
    want.extend_from_slice(b"]\n");
    let got = read_exactly(&mut client, want.len(), name);
    assert_eq!(first_difference(&got, &want), None, "{name}");
    // Nothing stray follows, and the connection still answers.
    client.write_all(b"ping\n").unwrap();
    assert_eq!(read_exactly(&mut client, 5, name), b"pong\n", "{name}");
    let stats = stop(server);
    assert_eq!(stats.files_cut_short, 0, "{name}: {stats}");
}

fn many_regions_pipelined(name: &str) {
    let _shared = shared_run();
    let server = start(name, small_file());
    let mut client = connect(&server);
    // Every size from nothing to the whole file, at odd offsets, in one write.
    let mut requests = String::new();
    let mut want = Vec::new();
    for i in 0..120usize {
        let len = match i % 6 {
            0 => 0,
            1 => 1,
            2 => 1000 + i,
            3 => 65_536 + 7 * i,
            4 => 5,
            _ => MIB / 2 - i,
        };
        let off = (i * 7919) % (MIB - len);
        requests.push_str(&format!("get {off} {len}\n"));
        want.extend(expected_get(off, len));
    }
    requests.push_str("get 0 1048576\n");
    want.extend(expected_get(0, MIB));
    // Written while the answers come back: a pipelining client must not
    // stop reading until it has sent everything.
    let mut writer = client.try_clone().unwrap();
    let sender = thread::spawn(move || writer.write_all(requests.as_bytes()));
    let got = read_exactly(&mut client, want.len(), name);
    sender.join().unwrap().unwrap();
    assert_eq!(first_difference(&got, &want), None, "{name}");
    let stats = stop(server);
    assert_eq!(stats.files_cut_short, 0, "{name}: {stats}");
}

/// The test process's resident memory, in bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split(' ').nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Reads `len` bytes of the pattern as a slow peer does: a pause every
/// 4 MiB, where the resident size is sampled into `peak`.
fn read_pattern_slowly(stream: &mut impl Read, len: usize, name: &str, peak: &mut usize) {
    let mut buf = vec![0; 256 * 1024];
    let mut at = 0;
    while at < len {
        let n = common::read_some(stream, &mut buf[..(len - at).min(256 * 1024)]).unwrap();
        assert!(n > 0, "{name}: the stream ended at {at} of {len}");
        for (i, &b) in buf[..n].iter().enumerate() {
            if b != pattern(at + i) {
                panic!("{name}: byte {} differs", at + i);
            }
        }
        let before_pause = at / (4 * MIB);
        at += n;
        if at / (4 * MIB) != before_pause {
            *peak = (*peak).max(rss());
            thread::sleep(Duration::from_millis(20));
        }
    }
}

fn a_slow_reader_of_64_mib_holds_no_copy_while_another_is_served(name: &str) {
    let _alone = MEMORY.write().unwrap_or_else(|e| e.into_inner());
    let len = 64 * MIB;
    let server = start(name, big_file());
    let before = rss();
    let mut slow = connect(&server);
    slow.write_all(format!("get 0 {len}\n").as_bytes()).unwrap();
    // It reads nothing for a while: the server fills the socket and waits.
    thread::sleep(Duration::from_millis(300));
    let mut peak = rss();
    // The blocking engine serves one connection at a time: nobody else
    // can be served before the download ends, by design.
    if name != "blocking" {
        let started = Instant::now();
        let mut other = connect(&server);
        other.write_all(b"ping\n").unwrap();
        assert_eq!(read_exactly(&mut other, 5, name), b"pong\n", "{name}");
        assert!(started.elapsed() < WAIT, "{name}");
    }
    // Then it reads on, slowly: a pause every 4 MiB.
    let head = format!("<0 {len}>\n");
    assert_eq!(read_exactly(&mut slow, head.len(), name), head.as_bytes());
    read_pattern_slowly(&mut slow, len, name, &mut peak);
    assert_eq!(read_exactly(&mut slow, 2, name), b".\n", "{name}");
    let grown = peak.saturating_sub(before);
    // A copy of the file in memory would be 64 MiB; pieces and socket
    // bookkeeping are a few.
    assert!(
        grown < 16 * MIB,
        "{name}: the process grew by {} KiB while sending a 64 MiB region",
        grown / 1024
    );
    let stats = stop(server);
    assert_eq!(stats.files_cut_short, 0, "{name}: {stats}");
}

fn a_fast_reader_of_64_mib_gets_it_whole_and_in_order(name: &str) {
    let _shared = shared_run();
    let len = 64 * MIB;
    let server = start(name, big_file());
    let mut client = connect(&server);
    // Twice in a row: the second region starts where the pass cap and the
    // socket left the first (readiness engines send at most 2 MiB of a file
    // per connection per pass; in edge mode the rest goes on without a new
    // edge, which this reader, draining as fast as it can, depends on).
    client
        .write_all(format!("get 0 {len}\nget 7 {}\n", len - 7).as_bytes())
        .unwrap();
    let mut buf = vec![0; 1024 * 1024];
    let mut want = vec![0; buf.len()];
    for (offset, length) in [(0, len), (7, len - 7)] {
        let head = format!("<{offset} {length}>\n");
        assert_eq!(read_exactly(&mut client, head.len(), name), head.as_bytes());
        let mut at = 0;
        while at < length {
            let room = (length - at).min(buf.len());
            let n = common::read_some(&mut client, &mut buf[..room])
                .unwrap_or_else(|e| panic!("{name}: stalled at {at} of {length}: {e}"));
            assert!(n > 0, "{name}: the stream ended at {at} of {length}");
            // The file holds the pattern (made by make_file): compare with it.
            big_file()
                .read_exact_at(&mut want[..n], (offset + at) as u64)
                .unwrap();
            if buf[..n] != want[..n] {
                let i = first_difference(&buf[..n], &want[..n]).unwrap_or(0);
                panic!("{name}: byte {} of the region differs", at + i);
            }
            at += n;
        }
        assert_eq!(read_exactly(&mut client, 2, name), b".\n", "{name}");
    }
    let stats = stop(server);
    assert_eq!(stats.files_cut_short, 0, "{name}: {stats}");
}

/// A reader draining a large download as fast as it can does not hold the
/// loop: another connection is answered while the download is under way (a
/// connection gets more of a file in the same pass only while the pass is
/// young, then waits for a later one).
fn a_fast_download_does_not_hold_up_another_connection(name: &str) {
    let _shared = shared_run();
    let (len, downloads) = (64 * MIB, 4);
    let server = start(name, big_file());
    let mut other = connect(&server);
    let mut fast = connect(&server);
    let request = format!("get 0 {len}\n").repeat(downloads);
    let expected = downloads * (format!("<0 {len}>\n").len() + len + 2);
    let received = Arc::new(AtomicUsize::new(0));
    fast.write_all(request.as_bytes()).unwrap();
    let reader = {
        let received = received.clone();
        thread::spawn(move || {
            let mut buf = vec![0; 1024 * 1024];
            while received.load(Ordering::Relaxed) < expected {
                match common::read_some(&mut fast, &mut buf) {
                    Ok(n) if n > 0 => received.fetch_add(n, Ordering::Relaxed),
                    _ => break,
                };
            }
        })
    };
    other.write_all(b"ping\n").unwrap();
    assert_eq!(read_exactly(&mut other, 5, name), b"pong\n", "{name}");
    let when_answered = received.load(Ordering::Relaxed);
    reader.join().unwrap();
    assert_eq!(
        received.load(Ordering::Relaxed),
        expected,
        "{name}: the download"
    );
    assert!(
        when_answered < expected,
        "{name}: the other connection was answered only after all {expected} bytes of the download"
    );
    let stats = stop(server);
    assert_eq!(stats.files_cut_short, 0, "{name}: {stats}");
}

fn a_stop_during_a_stalled_download_leaves_nothing_behind(name: &str) {
    let _shared = shared_run();
    let server = start(name, big_file());
    let mut stalled = connect(&server);
    stalled
        .write_all(format!("get 0 {}\n", 64 * MIB).as_bytes())
        .unwrap();
    // The server has begun: the head and some of the file arrived.
    let head = format!("<0 {}>\n", 64 * MIB);
    assert_eq!(
        read_exactly(&mut stalled, head.len(), name),
        head.as_bytes()
    );
    let _ = read_exactly(&mut stalled, 64 * 1024, name);
    // Then nobody reads, and the server stops: every request the engine had
    // in flight for the download (a send, a poll for room) is settled.
    let stats = stop(server);
    assert_eq!(stats.leaked_buffers, 0, "{name}: {stats}");
    assert_eq!(stats.files_cut_short, 0, "{name}: {stats}");
}

fn a_file_cut_short_closes_its_connection(name: &str) {
    let _shared = shared_run();
    let len = 32 * MIB;
    let file = make_file(&format!("shrinks-{name}"), len);
    let server = start(name, &file);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    // A small receive buffer: the server cannot have sent it all before the cut.
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    socket.connect(&server.local_addr().into()).unwrap();
    let mut client: TcpStream = socket.into();
    client.set_read_timeout(Some(WAIT)).unwrap();
    client
        .write_all(format!("get 0 {len}\n").as_bytes())
        .unwrap();
    let head = format!("<0 {len}>\n");
    assert_eq!(read_exactly(&mut client, head.len(), name), head.as_bytes());
    let _ = read_exactly(&mut client, MIB, name);
    // The file shrinks to 4 MiB while the server is sending it.
    file.set_len(4 * MIB as u64).unwrap();
    let started = Instant::now();
    let mut got = MIB;
    let mut buf = vec![0; 64 * 1024];
    let ended = loop {
        match common::read_some(&mut client, &mut buf) {
            Ok(0) => break "eof",
            Ok(n) => {
                for (i, &b) in buf[..n].iter().enumerate() {
                    assert_eq!(b, pattern(got + i), "{name}: byte {}", got + i);
                }
                got += n;
                assert!(got <= len, "{name}: more than the region");
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break "reset",
            Err(e) => panic!("{name}: no end of stream after {got} bytes: {e}"),
        }
    };
    assert!(started.elapsed() < WAIT, "{name}");
    assert!(
        got < len,
        "{name}: the whole region arrived ({ended}) though the file shrank"
    );
    let stats = stop(server);
    assert_eq!(stats.files_cut_short, 1, "{name}: {stats}");
    assert_eq!(
        stats.faults, 0,
        "{name}: counted once, as cut short: {stats}"
    );
}

fn a_region_past_the_end_of_its_file_closes_after_the_bytes_there(name: &str) {
    let _shared = shared_run();
    let server = start(name, small_file());
    let mut client = connect(&server);
    // 576 bytes are left after offset 1,048,000; 10,000 are asked: the
    // first send is short, the next finds the end (not a slow peer).
    client.write_all(b"get 1048000 10000\n").unwrap();
    let mut got = Vec::new();
    let ended = client.read_to_end(&mut got);
    assert!(
        ended.is_ok()
            || ended
                .as_ref()
                .is_err_and(|e| e.kind() == ErrorKind::ConnectionReset),
        "{name}: {ended:?}"
    );
    let mut want = b"<1048000 10000>\n".to_vec();
    want.extend((1_048_000..MIB).map(pattern));
    assert!(
        got.len() <= want.len(),
        "{name}: {} bytes, more than the file has",
        got.len()
    );
    assert_eq!(first_difference(&got, &want[..got.len()]), None, "{name}");
    let stats = stop(server);
    assert_eq!(stats.files_cut_short, 1, "{name}: {stats}");
    assert_eq!(
        stats.faults, 0,
        "{name}: counted once, as cut short: {stats}"
    );
}

fn tls_server(name: &str, file: &Arc<File>) -> Server {
    let certs = tls_fixture::certs();
    let options = iomux_engine::tls::TlsOptions::default();
    let config = iomux_engine::tls::load_server_config(&certs.ec_cert, &certs.ec_key, &options)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    start_with(name, file, Some(Arc::new(config)))
}

fn regions_over_tls_are_encrypted_in_their_places(name: &str) {
    let _shared = shared_run();
    let server = tls_server(name, small_file());
    let client_config = tls_fixture::client_config(&tls_fixture::certs().ec_cert, &[]);
    let mut client = tls_fixture::tls_connect(server.local_addr(), &client_config);
    client
        .write_all(b"get 100 300000\ntwo 0 1 1048000 576\nping\n")
        .unwrap();
    let mut want = expected_get(100, 300_000);
    want.push(b'[');
    want.push(pattern(0));
    want.push(b'|');
    want.extend((1_048_000..MIB).map(pattern));
    want.extend_from_slice(b"]\npong\n");
    let mut got = vec![0; want.len()];
    client
        .read_exact(&mut got)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(first_difference(&got, &want), None, "{name}");
    // A region past the file's end (576 bytes left, 10,000 asked): the
    // connection closes and nothing more is sent.
    client.write_all(b"get 1048000 10000\n").unwrap();
    let mut rest = Vec::new();
    let ended = client.read_to_end(&mut rest);
    assert!(
        rest.len() < 10_000,
        "{name}: the whole region arrived ({} bytes, {ended:?})",
        rest.len()
    );
    let stats = stop(server);
    assert_eq!(stats.files_cut_short, 1, "{name}: {stats}");
    assert_eq!(
        stats.faults, 0,
        "{name}: counted once, as cut short: {stats}"
    );
}

/// Over TLS a region is read and encrypted in pieces as the peer takes the
/// records: a slow reader of 64 MiB costs the server a few hundred KiB of
/// records, not the file, while another client is served.
fn a_slow_tls_reader_of_64_mib_holds_no_copy(name: &str) {
    let _alone = MEMORY.write().unwrap_or_else(|e| e.into_inner());
    let len = 64 * MIB;
    let server = tls_server(name, big_file());
    let client_config = tls_fixture::client_config(&tls_fixture::certs().ec_cert, &[]);
    let before = rss();
    let mut slow = tls_fixture::tls_connect(server.local_addr(), &client_config);
    slow.write_all(format!("get 0 {len}\n").as_bytes()).unwrap();
    // It reads nothing for a while: the server fills the socket and waits.
    thread::sleep(Duration::from_millis(300));
    let mut peak = rss();
    let mut other = tls_fixture::tls_connect(server.local_addr(), &client_config);
    other.write_all(b"ping\n").unwrap();
    assert_eq!(read_exactly(&mut other, 5, name), b"pong\n", "{name}");
    let head = format!("<0 {len}>\n");
    assert_eq!(
        read_exactly(&mut slow, head.len(), name),
        head.as_bytes(),
        "{name}"
    );
    read_pattern_slowly(&mut slow, len, name, &mut peak);
    assert_eq!(read_exactly(&mut slow, 2, name), b".\n", "{name}");
    let grown = peak.saturating_sub(before);
    assert!(
        grown < 16 * MIB,
        "{name}: the process grew by {} KiB while sending a 64 MiB region over TLS",
        grown / 1024
    );
    let stats = stop(server);
    assert_eq!(stats.files_cut_short, 0, "{name}: {stats}");
}

/// Every scenario on the engines given by `$engines` (with a loop or without).
macro_rules! scenarios {
    ($engines:ident) => {
        $engines!(
            engine_tests,
            [
                a_region_between_two_writes_is_byte_exact,
                many_regions_pipelined,
                a_slow_reader_of_64_mib_holds_no_copy_while_another_is_served,
                a_fast_reader_of_64_mib_gets_it_whole_and_in_order,
                a_stop_during_a_stalled_download_leaves_nothing_behind,
                a_file_cut_short_closes_its_connection,
                a_region_past_the_end_of_its_file_closes_after_the_bytes_there,
            ]
        );
    };
}

scenarios!(loop_engines);
mod alongside_a_fast_download {
    use super::a_fast_download_does_not_hold_up_another_connection;
    // The loopless engines give each connection a thread (or, blocking,
    // serve one at a time by design): only a loop can be held up.
    loop_engines!(
        engine_tests,
        [a_fast_download_does_not_hold_up_another_connection]
    );
}
mod over_tls {
    use super::{
        a_slow_tls_reader_of_64_mib_holds_no_copy, regions_over_tls_are_encrypted_in_their_places,
    };
    loop_engines!(
        engine_tests,
        [
            regions_over_tls_are_encrypted_in_their_places,
            a_slow_tls_reader_of_64_mib_holds_no_copy,
        ]
    );
}
scenarios!(loopless_engines);

every_engine_is_tested!();
