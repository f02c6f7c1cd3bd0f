//! `iomux serve --proto resp` driven by Redis's own clients, redis-cli and
//! redis-benchmark (Debian's redis-tools), on every engine: every answer is
//! checked against what Redis answers. Also the protocol-error close, the
//! value-size flag, large values and active expiry over real sockets.
//!
//! These tests need redis-cli and redis-benchmark; without them they fail
//! and say how to install them (CI installs them itself).

#[macro_use]
mod common;

use common::{eventually, spawn_redis_tool, ServerProcess};
use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Run a Redis tool with `args`, `stdin` as its input, bounded in time;
/// panics with advice when the tool is missing.
fn run_tool(tool: &str, args: &[&str], stdin: &[u8], within: Duration) -> Output {
    let mut child = spawn_redis_tool(
        Command::new(tool)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    // Collect the output on another thread (a tool blocked on a full pipe
    // would never exit), and kill the tool if it overstays.
    let pid = child.id() as i32;
    let (done, output) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    match output.recv_timeout(within) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: kill(2) on our own child, which has not been reaped yet.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let out = output.recv().unwrap().unwrap();
            panic!(
                "{tool} {:?} did not finish within {within:?}; stdout {:?} stderr {:?}",
                short(&args.join(" ")),
                short(&String::from_utf8_lossy(&out.stdout)),
                short(&String::from_utf8_lossy(&out.stderr))
            );
        }
    }
}

/// At most 300 characters of `text`, for messages.
fn short(text: &str) -> String {
    match text.char_indices().nth(300) {
        Some((at, _)) => format!("{}... ({} bytes)", &text[..at], text.len()),
        None => text.to_string(),
    }
}

fn cli(server: &ServerProcess, args: &[&str], stdin: &str) -> String {
    let port = server.addr.port().to_string();
    let mut all = vec!["--no-raw", "-h", "127.0.0.1", "-p", &port];
    all.extend_from_slice(args);
    let out = run_tool("redis-cli", &all, stdin.as_bytes(), Duration::from_secs(30));
    assert!(
        out.status.success(),
        "redis-cli {}: {:?}",
        short(&args.join(" ")),
        short(&String::from_utf8_lossy(&out.stderr))
    );
    String::from_utf8(out.stdout).expect("redis-cli prints UTF-8 here")
}

/// Commands for redis-cli (one per line, as typed) and what redis-cli prints
/// for each, as redis-server 7.0 answers (checked against it, see
/// docs/resp.md), except SELECT 1: this server has one database only.
const SCRIPT: &[(&str, &str)] = &[
    ("PING", "PONG"),
    ("PING \"hello world\"", "\"hello world\""),
    ("ECHO \"bin\\x00ary\"", "\"bin\\x00ary\""),
    ("SET k v", "OK"),
    ("GET k", "\"v\""),
    ("GET missing", "(nil)"),
    ("SET k v2 NX", "(nil)"),
    ("SET k v2 XX", "OK"),
    ("SET k v NX XX", "(error) ERR syntax error"),
    (
        "SET k v EX 0",
        "(error) ERR invalid expire time in 'set' command",
    ),
    (
        "SET k v EX abc",
        "(error) ERR value is not an integer or out of range",
    ),
    ("SET k v EX 1000", "OK"),
    ("TTL k", "(integer) 1000"),
    ("PTTL missing", "(integer) -2"),
    ("SET k v3 KEEPTTL GET", "\"v\""),
    ("TTL k", "(integer) 1000"),
    ("SET n 41", "OK"),
    ("INCR n", "(integer) 42"),
    ("DECR n", "(integer) 41"),
    ("INCRBY n 10", "(integer) 51"),
    ("DECRBY n 20", "(integer) 31"),
    (
        "INCR k",
        "(error) ERR value is not an integer or out of range",
    ),
    (
        "INCRBY n 9223372036854775807",
        "(error) ERR increment or decrement would overflow",
    ),
    ("MSET a 1 b 2", "OK"),
    ("MGET a b missing", "1) \"1\"\n2) \"2\"\n3) (nil)"),
    ("EXISTS a b missing a", "(integer) 3"),
    ("DEL a b missing", "(integer) 2"),
    ("EXPIRE n 500", "(integer) 1"),
    ("TTL n", "(integer) 500"),
    ("PEXPIRE n 20000", "(integer) 1"),
    ("TTL n", "(integer) 20"),
    ("EXPIRE n -1", "(integer) 1"),
    ("EXISTS n", "(integer) 0"),
    ("DBSIZE", "(integer) 1"),
    ("SELECT 0", "OK"),
    ("SELECT 1", "(error) ERR DB index is out of range"),
    (
        "nosuch a b",
        "(error) ERR unknown command 'nosuch', with args beginning with: 'a' 'b' ",
    ),
    (
        "get",
        "(error) ERR wrong number of arguments for 'get' command",
    ),
    (
        "get a b",
        "(error) ERR wrong number of arguments for 'get' command",
    ),
    ("PUBLISH ch hi", "(integer) 0"),
    ("FLUSHALL", "OK"),
    ("DBSIZE", "(integer) 0"),
];

fn check_redis_cli(server: &ServerProcess, engine: &[&str]) {
    let input: String = SCRIPT.iter().map(|(c, _)| format!("{c}\n")).collect();
    let expected: String = SCRIPT.iter().map(|(_, e)| format!("{e}\n")).collect();
    let got = cli(server, &[], &input);
    if got != expected {
        for ((command, want), line) in SCRIPT.iter().zip(got.split('\n')) {
            assert_eq!(
                line,
                want.split('\n').next().unwrap(),
                "{engine:?}: {command}"
            );
        }
        panic!("{engine:?}: redis-cli printed\n{got}\nexpected\n{expected}");
    }
    // Arguments on the command line too (not stdin), and a value over 64 KiB.
    let big = "v".repeat(100_000);
    assert_eq!(cli(server, &["SET", "big", &big], ""), "OK\n");
    assert_eq!(
        cli(server, &["STRLEN", "big"], "").lines().next(),
        Some("(error) ERR unknown command 'STRLEN', with args beginning with: 'big' ")
    );
    assert!(
        cli(server, &["GET", "big"], "") == format!("\"{big}\"\n"),
        "{engine:?}: GET big"
    );
    assert_eq!(cli(server, &["DEL", "big"], ""), "(integer) 1\n");
}

/// The `"test","rps",...` CSV rows of redis-benchmark: test name → rps.
fn benchmark_rows(csv: &str) -> Vec<(String, f64)> {
    csv.lines()
        .skip_while(|l| !l.starts_with("\"test\""))
        .skip(1)
        .map(|line| {
            let fields: Vec<&str> = line.split(',').map(|f| f.trim_matches('"')).collect();
            let rps = fields
                .get(1)
                .and_then(|r| r.parse().ok())
                .unwrap_or_else(|| panic!("redis-benchmark CSV line without a rate: {line:?}"));
            (fields[0].to_string(), rps)
        })
        .collect()
}

/// redis-benchmark's five tests, `requests` each, on `clients` connections,
/// `pipeline` commands per write; checks every test ran, and that the
/// server counted every INCR (redis-benchmark's INCR key is `counter:__rand_int__`).
fn check_redis_benchmark(server: &ServerProcess, engine: &[&str], clients: usize, pipeline: usize) {
    let port = server.addr.port().to_string();
    let requests = 2000;
    let before: i64 = cli(server, &["--raw", "GET", "counter:__rand_int__"], "")
        .trim()
        .parse()
        .unwrap_or(0);
    let (clients_arg, pipeline_arg, requests_arg) = (
        clients.to_string(),
        pipeline.to_string(),
        requests.to_string(),
    );
    let out = run_tool(
        "redis-benchmark",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "ping,set,get,incr,mset",
            "-n",
            &requests_arg,
            "-c",
            &clients_arg,
            "-P",
            &pipeline_arg,
            "--csv",
        ],
        b"",
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{engine:?} -P {pipeline}: redis-benchmark failed: {stdout}{stderr}"
    );
    let rows = benchmark_rows(&stdout);
    let names: Vec<&str> = rows.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "PING_INLINE",
            "PING_MBULK",
            "SET",
            "GET",
            "INCR",
            "MSET (10 keys)"
        ],
        "{engine:?} -P {pipeline}: {stdout}{stderr}"
    );
    for (name, rps) in &rows {
        assert!(
            *rps > 0.0,
            "{engine:?} -P {pipeline}: {name} at {rps} requests/s"
        );
    }
    assert!(
        !stderr.contains("ERR"),
        "{engine:?}: an error reply: {stderr}"
    );
    let after: i64 = cli(server, &["--raw", "GET", "counter:__rand_int__"], "")
        .trim()
        .parse()
        .expect("the INCR counter holds an integer");
    assert_eq!(
        after - before,
        requests as i64,
        "{engine:?} -P {pipeline}: INCRs counted"
    );
    // SET and MSET wrote redis-benchmark's 3-byte payload (random letters).
    let value = cli(server, &["GET", "key:__rand_int__"], "");
    assert!(
        value.len() == 6 && value.starts_with('"') && value.ends_with("\"\n"),
        "{engine:?}: GET key:__rand_int__ printed {value:?}"
    );
}

fn redis_cli_and_redis_benchmark(engine: &[&str]) {
    {
        let mut args = vec!["--proto", "resp"];
        args.extend_from_slice(engine);
        let mut server = ServerProcess::start(&args);
        check_redis_cli(&server, engine);
        // The blocking engine serves one connection at a time: a second
        // redis-benchmark client would wait for the first to hang up, which
        // it never does before the run ends.
        let clients = if engine.contains(&"blocking") { 1 } else { 20 };
        check_redis_benchmark(&server, engine, clients, 1);
        check_redis_benchmark(&server, engine, clients, 16);
        assert!(server.stop().success(), "{engine:?}: unclean exit");
    }
}
for_engines!(redis_cli_and_redis_benchmark);

/// Send raw bytes on a fresh connection; everything read until the server closes
/// (or 5 s pass: then `closed` is false).
fn raw_exchange(server: &ServerProcess, bytes: &[u8]) -> (Vec<u8>, bool) {
    let mut stream = server.connect();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut back = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return (back, true),
            Ok(n) => back.extend_from_slice(&chunk[..n]),
            Err(_) => return (back, false),
        }
    }
}

#[test]
fn a_protocol_error_closes_only_that_connection() {
    let server = ServerProcess::start(&["--proto", "resp"]);
    let mut bystander = server.connect();
    bystander.write_all(b"SET kept 1\r\n").unwrap();
    let mut ok = [0u8; 5];
    bystander.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"+OK\r\n");
    let (back, closed) = raw_exchange(&server, b"PING\r\n*1\r\n$x\r\nPING\r\n");
    assert_eq!(
        back,
        b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"
    );
    assert!(closed, "the server closes after a protocol error");
    bystander.write_all(b"GET kept\r\n").unwrap();
    let mut value = [0u8; 7];
    bystander.read_exact(&mut value).unwrap();
    assert_eq!(&value, b"$1\r\n1\r\n", "the other connection goes on");
}

#[test]
fn the_value_size_flag_limits_bulk_arguments() {
    let server = ServerProcess::start(&["--proto", "resp", "--max-value-bytes", "1000"]);
    let set = |len: usize| {
        format!(
            "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${len}\r\n{}\r\n",
            "v".repeat(len)
        )
    };
    let (back, _) = raw_exchange(&server, format!("{}QUIT\r\n", set(1000)).as_bytes());
    assert_eq!(back, b"+OK\r\n+OK\r\n");
    let (back, closed) = raw_exchange(&server, set(1001).as_bytes());
    assert_eq!(back, b"-ERR Protocol error: invalid bulk length\r\n");
    assert!(closed);
    let refused = Command::new(env!("CARGO_BIN_EXE_iomux"))
        .args([
            "serve",
            "--proto",
            "resp",
            "--addr",
            "127.0.0.1:0",
            "--max-value-bytes",
            "0",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success(), "a zero value limit is refused");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--max-value-bytes"));
}

fn values_of_megabytes_round_trip(engine: &[&str]) {
    let value: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let mut request = format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${}\r\n", value.len()).into_bytes();
    request.extend_from_slice(&value);
    request.extend_from_slice(b"\r\nGET big\r\nQUIT\r\n");
    let mut expected = format!("+OK\r\n${}\r\n", value.len()).into_bytes();
    expected.extend_from_slice(&value);
    expected.extend_from_slice(b"\r\n+OK\r\n");
    {
        let mut args = vec!["--proto", "resp"];
        args.extend_from_slice(engine);
        let server = ServerProcess::start(&args);
        let mut stream = server.connect();
        let mut writer = stream.try_clone().unwrap();
        let request = request.clone();
        let sender = std::thread::spawn(move || writer.write_all(&request));
        let mut back = Vec::new();
        stream.read_to_end(&mut back).unwrap();
        sender.join().unwrap().unwrap();
        assert_eq!(back.len(), expected.len(), "{engine:?}: reply length");
        assert!(
            back == expected,
            "{engine:?}: the 5 MiB value came back changed"
        );
    }
}
for_engines!(values_of_megabytes_round_trip);

#[test]
fn keys_expire_without_being_touched() {
    let server = ServerProcess::start(&["--proto", "resp"]);
    assert_eq!(cli(&server, &["SET", "soon", "v", "PX", "50"], ""), "OK\n");
    assert_eq!(
        cli(&server, &["SET", "later", "v", "EX", "1000"], ""),
        "OK\n"
    );
    // DBSIZE counts expired keys until they are removed: only active expiry
    // brings it down while nobody reads `soon`.
    let expired = eventually(Duration::from_secs(5), || {
        cli(&server, &["DBSIZE"], "") == "(integer) 1\n"
    });
    assert!(expired, "the key past its deadline was never removed");
    assert_eq!(cli(&server, &["EXISTS", "later"], ""), "(integer) 1\n");
}

fn a_half_closed_client_gets_every_reply(engine: &[&str]) {
    // As `printf 'SET a 1\r\nGET a\r\n' | nc`: the client stops sending
    // before it reads; every reply still arrives, then the server closes.
    {
        let mut args = vec!["--proto", "resp"];
        args.extend_from_slice(engine);
        let server = ServerProcess::start(&args);
        let mut stream = server.connect();
        stream.write_all(b"SET a 1\r\nGET a\r\nINCR a\r\n").unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut back = Vec::new();
        stream.read_to_end(&mut back).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&back),
            "+OK\r\n$1\r\n1\r\n:2\r\n",
            "{engine:?}"
        );
    }
}
for_engines!(a_half_closed_client_gets_every_reply);
