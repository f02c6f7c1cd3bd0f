use super::*;
use crate::{feed_protocol_in_reads, Command, Protocol};
use proptest::prelude::*;
use std::time::Instant;

fn shared() -> Arc<Shared> {
    Arc::new(Shared::default())
}

/// A connection driven as an engine drives it, as connection `id`; returns
/// the step and appends what it asked of other connections to `commands`.
fn feed_as(
    conn: &mut Resp,
    id: ConnId,
    input: &[u8],
    out: &mut Vec<u8>,
    commands: &mut Vec<Command>,
    now: u64,
) -> Step {
    let mut cx = Context::new(id, Instant::now(), out, commands);
    conn.on_data_at(input, &mut cx, now)
}

/// Input to a connection with id `0:1` that asks nothing of the others.
trait Feed {
    fn on_input_at(&mut self, input: &[u8], out: &mut Vec<u8>, now: u64) -> Step;
}

impl Feed for Resp {
    fn on_input_at(&mut self, input: &[u8], out: &mut Vec<u8>, now: u64) -> Step {
        let mut commands = Vec::new();
        let step = feed_as(self, ConnId::new(0, 1), input, out, &mut commands, now);
        assert!(commands.is_empty(), "{commands:?}");
        step
    }
}

/// A connection as a plain [`Protocol`], for [`feed_protocol_in_reads`].
struct Plain(Resp);

impl Protocol for Plain {
    fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>) -> Step {
        let now = self.0.client.shared.db.now_ms();
        self.0.on_input_at(input, out, now)
    }

    fn on_eof(&mut self, _pending: &[u8], _out: &mut Vec<u8>) {}
}

/// Feed `input` to a fresh connection in one read at time `now`; the replies.
fn replies_at(shared: &Arc<Shared>, input: &[u8], now: u64) -> Vec<u8> {
    let mut conn = Resp::new(shared.clone());
    let mut out = Vec::new();
    conn.on_input_at(input, &mut out, now);
    out
}

fn multibulk(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    reply::array(&mut out, args.len());
    for a in args {
        reply::bulk(&mut out, a);
    }
    out
}

// ---- the parser ----

/// A `*N` line of 66 bytes with no end, over the 64-byte test limit.
const TOO_LONG_COUNT: [u8; 66] = {
    let mut line = [b'1'; 66];
    line[0] = b'*';
    line
};

#[test]
fn every_protocol_error_is_worded_as_redis_and_closes() {
    let limits = Limits {
        max_bulk: 100,
        max_args: 10,
        max_inline: 64,
    };
    let cases: &[(&[u8], &str)] = &[
        (
            b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\nfooz\r\n",
            "expected '$', got 'f'",
        ),
        (b"*1\r\n+PING\r\n", "expected '$', got '+'"),
        (b"*11\r\n", "invalid multibulk length"),
        (b"*abc\r\n", "invalid multibulk length"),
        (b"*01\r\n", "invalid multibulk length"),
        (b"*1\r\n$-1\r\n", "invalid bulk length"),
        (b"*1\r\n$101\r\n", "invalid bulk length"),
        (b"*1\r\n$04\r\n", "invalid bulk length"),
        (b"*1\r\n$+4\r\n", "invalid bulk length"),
        (b"set \"a\"b c\r\n", "unbalanced quotes in request"),
        (b"echo \"abc\r\n", "unbalanced quotes in request"),
        (b"echo 'abc\r\n", "unbalanced quotes in request"),
        (&[b'x'; 65], "too big inline request"),
        (&TOO_LONG_COUNT, "too big mbulk count string"),
    ];
    let shared = Arc::new(Shared::new(limits));
    for (input, text) in cases {
        let mut conn = Resp::new(shared.clone());
        let mut out = Vec::new();
        let step = conn.on_input_at(input, &mut out, 0);
        let expected = format!("-ERR Protocol error: {text}\r\n");
        assert_eq!(
            String::from_utf8_lossy(&out),
            expected,
            "input {:?}",
            String::from_utf8_lossy(input)
        );
        assert!(step.close, "a protocol error closes: {input:?}");
    }
    let mut long_bulk_count = b"*1\r\n$".to_vec();
    long_bulk_count.extend_from_slice(&[b'1'; 70]);
    let out = replies_at(&shared, &long_bulk_count, 0);
    assert_eq!(out, b"-ERR Protocol error: too big bulk count string\r\n");
}

#[test]
fn replies_before_a_protocol_error_are_kept_and_nothing_after_runs() {
    let shared = shared();
    let out = replies_at(&shared, b"SET a 1\r\n*1\r\n$x\r\nSET b 2\r\n", 0);
    assert_eq!(out, b"+OK\r\n-ERR Protocol error: invalid bulk length\r\n");
    assert!(shared.db.exists(b"a", 0));
    assert!(!shared.db.exists(b"b", 0), "nothing after the error ran");
}

#[test]
fn multibulk_arguments_are_slices_of_the_input() {
    let input = b"*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\n";
    let mut parser = Parser::new(Limits::DEFAULT);
    assert_eq!(parser.parse(input), Parsed::Command(input.len()));
    let args = parser.args(input);
    let range = input.as_ptr_range();
    for arg in args.iter() {
        assert!(range.contains(&arg.as_ptr()), "argument {arg:?} was copied");
    }
    assert_eq!(args.get(1), b"hello");
    // Plain inline arguments too.
    let inline = b"set key value\r\n";
    assert_eq!(parser.parse(inline), Parsed::Command(inline.len()));
    let args = parser.args(inline);
    assert_eq!(
        args.iter().collect::<Vec<_>>(),
        [&b"set"[..], b"key", b"value"]
    );
    assert!(inline.as_ptr_range().contains(&args.get(2).as_ptr()));
}

#[test]
fn an_incomplete_command_resumes_where_it_stopped() {
    let input = multibulk(&[b"SET", b"key", &[7u8; 300]]);
    let mut parser = Parser::new(Limits::DEFAULT);
    for end in 0..input.len() {
        assert_eq!(
            parser.parse(&input[..end]),
            Parsed::Incomplete,
            "prefix of {end}"
        );
        assert!(end == 0 || !parser.is_idle());
    }
    assert_eq!(parser.parse(&input), Parsed::Command(input.len()));
    assert!(parser.is_idle());
    assert_eq!(parser.args(&input).get(2), &[7u8; 300][..]);
}

#[test]
fn empty_commands_are_skipped() {
    let shared = shared();
    for input in [
        &b"\r\n\r\nPING\r\n"[..],
        b"*0\r\nPING\r\n",
        b"*-1\r\nPING\r\n",
        b"   \nPING\n",
    ] {
        assert_eq!(replies_at(&shared, input, 0), b"+PONG\r\n", "{input:?}");
    }
}

#[test]
fn inline_quoting_follows_sdssplitargs() {
    let shared = shared();
    let cases: &[(&[u8], &[u8])] = &[
        (b"echo \"a b\"\r\n", b"$3\r\na b\r\n"),
        (b"echo \"\\x41\\n\\t\\\"\"\r\n", b"$4\r\nA\n\t\"\r\n"),
        (b"echo 'it\\'s'\r\n", b"$4\r\nit's\r\n"),
        (
            b"echo ab\"c d\"e\r\n",
            b"-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
        (b"echo x\"c d\"\r\n", b"$4\r\nxc d\r\n"),
        (b"echo \"\"\r\n", b"$0\r\n\r\n"),
    ];
    for (input, expected) in cases {
        assert_eq!(
            String::from_utf8_lossy(&replies_at(&shared, input, 0)),
            String::from_utf8_lossy(expected),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn integers_parse_as_string2ll_does() {
    for (text, value) in [
        ("0", Some(0)),
        ("-1", Some(-1)),
        ("9223372036854775807", Some(i64::MAX)),
        ("-9223372036854775808", Some(i64::MIN)),
        ("9223372036854775808", None),
        ("-9223372036854775809", None),
        ("", None),
        ("-", None),
        ("-0", None),
        ("01", None),
        ("+1", None),
        (" 1", None),
        ("1 ", None),
        ("1a", None),
    ] {
        assert_eq!(parse_i64(text.as_bytes()), value, "{text:?}");
    }
}

// ---- splits and large values ----

/// A random pipelined stream of commands, multibulk and inline, with binary values.
fn stream_strategy() -> impl Strategy<Value = Vec<u8>> {
    let key = prop::sample::select(vec![&b"a"[..], b"b", b"counter", b"k\r\nx"]);
    let command = (
        0u8..8,
        key,
        prop::collection::vec(any::<u8>(), 0..40),
        0i64..1000,
    )
        .prop_map(|(kind, key, value, n)| {
            let n = n.to_string();
            match kind {
                0 => multibulk(&[b"SET", key, &value]),
                1 => multibulk(&[b"GET", key]),
                2 => multibulk(&[b"INCRBY", b"counter", n.as_bytes()]),
                3 => multibulk(&[b"ECHO", &value]),
                4 => b"PING\r\n".to_vec(),
                5 => b"incr counter\r\nexists a b counter\r\n".to_vec(),
                6 => multibulk(&[b"MSET", key, &value, b"b", n.as_bytes()]),
                _ => multibulk(&[b"DEL", key, b"b"]),
            }
        });
    prop::collection::vec(command, 1..40).prop_map(|cmds| cmds.concat())
}

proptest! {
    #[test]
    fn any_split_of_a_pipelined_stream_gives_the_same_replies(
        stream in stream_strategy(),
        cuts in prop::collection::vec(0usize..4000, 0..30),
    ) {
        let whole = feed_protocol_in_reads(&mut Plain(Resp::new(shared())), &stream, &[]);
        let split = feed_protocol_in_reads(&mut Plain(Resp::new(shared())), &stream, &cuts);
        prop_assert_eq!(&whole, &split);
        let bytewise: Vec<usize> = (1..stream.len()).collect();
        let one_by_one = feed_protocol_in_reads(&mut Plain(Resp::new(shared())), &stream, &bytewise);
        prop_assert_eq!(&whole, &one_by_one);
        prop_assert!(!whole.1, "no command here closes");
    }
}

/// Byte soup from RESP's own pieces: lengths, markers, quotes, command names,
/// so random input reaches deep into the parser and the commands.
fn soup_strategy() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        prop::sample::select(vec![
            &b"*"[..],
            b"$",
            b"\r\n",
            b"\n",
            b"\r",
            b"*2\r\n",
            b"*3\r\n",
            b"$3\r\n",
            b"$-1",
            b"*-1\r\n",
            b"*0\r\n",
            b"\"",
            b"'",
            b"\\x4",
            b"\\",
            b" ",
            b"0",
            b"1",
            b"-",
            b"9223372036854775808",
            b"SET",
            b"get",
            b"INCR",
            b"EXPIRE",
            b"ex",
            b"PX",
            b"NX",
            b"GET",
            b"k",
            b"MSET",
            b"SUBSCRIBE",
            b"PING",
            b"QUIT",
            b"select",
            b"CONFIG",
            b"CLIENT",
            b"TTL",
            b"DEL",
        ])
        .prop_map(<[u8]>::to_vec),
        prop::collection::vec(any::<u8>(), 0..4),
    ];
    prop::collection::vec(piece, 0..60).prop_map(|pieces| pieces.concat())
}

proptest! {
    #[test]
    fn any_input_is_answered_the_same_however_it_is_split(
        soup in soup_strategy(),
        cuts in prop::collection::vec(0usize..400, 0..10),
    ) {
        let whole = feed_protocol_in_reads(&mut Plain(Resp::new(shared())), &soup, &[]);
        let split = feed_protocol_in_reads(&mut Plain(Resp::new(shared())), &soup, &cuts);
        prop_assert_eq!(whole, split);
    }
}

#[test]
fn a_value_larger_than_the_engine_keeps_is_gathered_by_the_connection() {
    let value: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let mut input = multibulk(&[b"SET", b"big", &value]);
    input.extend_from_slice(&multibulk(&[b"GET", b"big"]));
    let shared = shared();
    let mut conn = Resp::new(shared.clone());
    let mut pending = Vec::new();
    let mut out = Vec::new();
    let mut most_left_with_engine = 0;
    for chunk in input.chunks(64 * 1024) {
        pending.extend_from_slice(chunk);
        let step = conn.on_input_at(&pending, &mut out, 0);
        assert!(!step.close);
        pending.drain(..step.consumed);
        most_left_with_engine = most_left_with_engine.max(pending.len());
    }
    assert!(pending.is_empty());
    assert!(
        most_left_with_engine <= LEAVE_WITH_ENGINE,
        "left {most_left_with_engine} bytes unconsumed"
    );
    let mut expected = reply::OK.to_vec();
    reply::bulk(&mut expected, &value);
    assert!(out == expected, "the 3 MiB value came back changed");
    assert!(conn.is_idle());
}

#[test]
fn a_value_over_the_limit_is_refused() {
    let shared = Arc::new(Shared::new(Limits {
        max_bulk: 1000,
        ..Limits::DEFAULT
    }));
    let ok = multibulk(&[b"SET", b"k", &[1u8; 1000]]);
    assert_eq!(replies_at(&shared, &ok, 0), reply::OK);
    let too_big = multibulk(&[b"SET", b"k", &[1u8; 1001]]);
    assert_eq!(
        replies_at(&shared, &too_big, 0),
        b"-ERR Protocol error: invalid bulk length\r\n"
    );
}

// ---- commands ----

/// Run `(command, expected reply)` pairs in order on one connection at time `now`.
fn check_conversation(shared: &Arc<Shared>, now: u64, script: &[(&str, &str)]) {
    let mut conn = Resp::new(shared.clone());
    for (command, expected) in script {
        let mut out = Vec::new();
        conn.on_input_at(format!("{command}\r\n").as_bytes(), &mut out, now);
        assert_eq!(String::from_utf8_lossy(&out), *expected, "{command}");
    }
}

#[test]
fn string_commands_answer_as_redis() {
    let shared = shared();
    check_conversation(
        &shared,
        1000,
        &[
            ("PING", "+PONG\r\n"),
            ("ping hi", "$2\r\nhi\r\n"),
            (
                "ping a b",
                "-ERR wrong number of arguments for 'ping' command\r\n",
            ),
            (
                "ECHO",
                "-ERR wrong number of arguments for 'echo' command\r\n",
            ),
            ("GET k", "$-1\r\n"),
            ("SET k v", "+OK\r\n"),
            ("get k", "$1\r\nv\r\n"),
            (
                "get",
                "-ERR wrong number of arguments for 'get' command\r\n",
            ),
            ("SET k v2 NX", "$-1\r\n"),
            ("SET k v2 XX", "+OK\r\n"),
            ("SET other v XX", "$-1\r\n"),
            ("SET k v NX XX", "-ERR syntax error\r\n"),
            ("SET k v XX NX", "-ERR syntax error\r\n"),
            ("SET k v EX 10 PX 100", "-ERR syntax error\r\n"),
            ("SET k v PX 100 EX 10", "-ERR syntax error\r\n"),
            ("SET k v EX 10 KEEPTTL", "-ERR syntax error\r\n"),
            ("SET k v KEEPTTL EX 10", "-ERR syntax error\r\n"),
            ("SET k v EX", "-ERR syntax error\r\n"),
            ("SET k v FOO", "-ERR syntax error\r\n"),
            (
                "SET k v EX abc",
                "-ERR value is not an integer or out of range\r\n",
            ),
            (
                "SET k v EX 0",
                "-ERR invalid expire time in 'set' command\r\n",
            ),
            (
                "SET k v PX -5",
                "-ERR invalid expire time in 'set' command\r\n",
            ),
            (
                "SET k v EX 9223372036854775",
                "-ERR invalid expire time in 'set' command\r\n",
            ),
            (
                "SET k v PX 9223372036854775807",
                "-ERR invalid expire time in 'set' command\r\n",
            ),
            ("GET k", "$2\r\nv2\r\n"),
            ("SET k v3 GET", "$2\r\nv2\r\n"),
            ("SET k v4 NX GET", "$2\r\nv3\r\n"),
            ("SET fresh v XX GET", "$-1\r\n"),
            ("EXISTS fresh", ":0\r\n"),
            ("INCR k", "-ERR value is not an integer or out of range\r\n"),
            ("INCR n", ":1\r\n"),
            ("INCRBY n 41", ":42\r\n"),
            ("DECR n", ":41\r\n"),
            ("DECRBY n 40", ":1\r\n"),
            (
                "INCRBY n x",
                "-ERR value is not an integer or out of range\r\n",
            ),
            (
                "INCRBY n 9223372036854775807",
                "-ERR increment or decrement would overflow\r\n",
            ),
            (
                "DECRBY n -9223372036854775808",
                "-ERR decrement would overflow\r\n",
            ),
            ("SET n \" 1\"", "+OK\r\n"),
            ("INCR n", "-ERR value is not an integer or out of range\r\n"),
            ("MSET a 1 b 2 c 3", "+OK\r\n"),
            (
                "MSET a 1 b",
                "-ERR wrong number of arguments for 'mset' command\r\n",
            ),
            (
                "MGET a b nokey c",
                "*4\r\n$1\r\n1\r\n$1\r\n2\r\n$-1\r\n$1\r\n3\r\n",
            ),
            ("EXISTS a a nokey c", ":3\r\n"),
            ("DEL a nokey b", ":2\r\n"),
            ("DEL c", ":1\r\n"),
            ("DBSIZE", ":2\r\n"),
            ("SELECT 0", "+OK\r\n"),
            ("SELECT 1", "-ERR DB index is out of range\r\n"),
            (
                "SELECT x",
                "-ERR value is not an integer or out of range\r\n",
            ),
            (
                "FOO bar 'b z'",
                "-ERR unknown command 'FOO', with args beginning with: 'bar' 'b z' \r\n",
            ),
            (
                "foo",
                "-ERR unknown command 'foo', with args beginning with: \r\n",
            ),
            ("CONFIG GET save", "*2\r\n$4\r\nsave\r\n$0\r\n\r\n"),
            (
                "CONFIG GET appendonly",
                "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n",
            ),
            ("CONFIG GET nothing", "*0\r\n"),
            (
                "CONFIG SET x y",
                "-ERR unknown subcommand 'SET'. Try CONFIG HELP.\r\n",
            ),
            ("CLIENT SETNAME me", "+OK\r\n"),
            ("CLIENT GETNAME", "$2\r\nme\r\n"),
            ("CLIENT SETINFO lib-name x", "+OK\r\n"),
            ("COMMAND DOCS", "*0\r\n"),
            ("PUBLISH ch m", ":0\r\n"),
            ("UNSUBSCRIBE", "*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n"),
            ("FLUSHALL FOO", "-ERR syntax error\r\n"),
            ("FLUSHALL", "+OK\r\n"),
            ("DBSIZE", ":0\r\n"),
        ],
    );
}

#[test]
fn answering_stops_once_the_output_reaches_the_engines_mark_and_the_rest_waits() {
    let shared = shared();
    let value = [b'v'; 100];
    shared.db.set_many([(&b"k"[..], &value[..])].into_iter(), 0);
    let mut conn = Resp::new(shared);
    let input = b"GET k\r\n".repeat(3);
    let (mut out, mut commands) = (Vec::new(), Vec::new());
    let mut cx = Context::new(ConnId::new(0, 1), Instant::now(), &mut out, &mut commands)
        .with_output_room(150);
    // 108 bytes after the first answer, 216 after the second: full, stop.
    let step = conn.on_data_at(&input, &mut cx, 0);
    assert_eq!((step.consumed, step.close), (14, false));
    assert_eq!(out.len(), 216);
    // Offered again with room: the third is answered.
    let mut out = Vec::new();
    let mut cx = Context::new(ConnId::new(0, 1), Instant::now(), &mut out, &mut commands)
        .with_output_room(150);
    assert_eq!(conn.on_data_at(&input[14..], &mut cx, 0).consumed, 7);
    assert_eq!(out.len(), 108);
    // A pipeline too long to leave with the engine is kept by the
    // connection, and answered as it is offered again with nothing new.
    let long = b"GET k\r\n".repeat(50_000);
    let mut out = Vec::new();
    let mut cx = Context::new(ConnId::new(0, 1), Instant::now(), &mut out, &mut commands)
        .with_output_room(150);
    assert_eq!(conn.on_data_at(&long, &mut cx, 0).consumed, long.len());
    assert_eq!(out.len(), 216);
    assert!(!conn.is_idle(), "it holds the rest");
    let mut answered = 2;
    while !conn.is_idle() {
        let mut out = Vec::new();
        let mut cx = Context::new(ConnId::new(0, 1), Instant::now(), &mut out, &mut commands)
            .with_output_room(150);
        assert_eq!(conn.on_data_at(b"", &mut cx, 0).consumed, 0);
        answered += out.len() / 108;
    }
    assert_eq!(answered, 50_000);
    assert!(commands.is_empty());
}

#[test]
fn flushall_async_empties_the_keyspace_at_once_and_frees_it_on_another_thread() {
    let shared = shared();
    let keys: Vec<Vec<u8>> = (0..50_000)
        .map(|i| format!("key:{i}").into_bytes())
        .collect();
    let pairs = keys.iter().map(|k| (&k[..], &b"value"[..]));
    shared.db.set_many(pairs, 0);
    assert_eq!(shared.db.len(), 50_000);
    let freeing = shared
        .db
        .flush_async()
        .expect("a large keyspace is freed on a thread");
    // Empty before the thread has dropped anything: the old maps left the shards.
    assert_eq!(shared.db.len(), 0);
    assert_ne!(freeing.thread().id(), std::thread::current().id());
    assert_eq!(freeing.thread().name(), Some("iomux-lazy-free"));
    freeing.join().expect("the drop finished");
    // A small keyspace costs less to drop than a thread: dropped in the call.
    shared.db.set_many([(&b"k"[..], &b"v"[..])].into_iter(), 0);
    assert!(shared.db.flush_async().is_none());
    assert_eq!(shared.db.len(), 0);
    // Through the command: ASYNC and SYNC in any case, anything else refused.
    for (input, answer) in [
        (
            "SET a 1\r\nFLUSHALL async\r\nDBSIZE\r\n",
            "+OK\r\n+OK\r\n:0\r\n",
        ),
        (
            "SET a 1\r\nFLUSHALL SYNC\r\nDBSIZE\r\n",
            "+OK\r\n+OK\r\n:0\r\n",
        ),
        (
            "SET a 1\r\nFLUSHALL lazy\r\nDBSIZE\r\n",
            "+OK\r\n-ERR syntax error\r\n:1\r\n",
        ),
    ] {
        let out = replies_at(&shared, input.as_bytes(), 0);
        assert_eq!(String::from_utf8_lossy(&out), answer, "{input:?}");
        shared.db.flush();
    }
}

#[test]
fn the_unknown_command_error_lists_about_128_bytes_of_arguments() {
    let shared = shared();
    let long = "x".repeat(200);
    let out = replies_at(&shared, format!("nope {long} more\r\n").as_bytes(), 0);
    let expected = format!(
        "-ERR unknown command 'nope', with args beginning with: '{}' \r\n",
        &long[..128]
    );
    assert_eq!(String::from_utf8_lossy(&out), expected);
}

#[test]
fn values_are_binary_safe() {
    let shared = shared();
    let value: Vec<u8> = (0..=255).collect();
    let mut input = multibulk(&[b"SET", b"\x00key\r\n", &value]);
    input.extend(multibulk(&[b"GET", b"\x00key\r\n"]));
    let mut expected = reply::OK.to_vec();
    reply::bulk(&mut expected, &value);
    assert_eq!(replies_at(&shared, &input, 0), expected);
}

#[test]
fn quit_answers_ok_and_closes_without_running_the_rest() {
    let shared = shared();
    let mut conn = Resp::new(shared.clone());
    let mut out = Vec::new();
    let step = conn.on_input_at(b"SET a 1\r\nQUIT\r\nSET b 2\r\n", &mut out, 0);
    assert!(step.close);
    assert_eq!(out, b"+OK\r\n+OK\r\n");
    assert!(!shared.db.exists(b"b", 0));
}

// ---- expiry, on made-up clocks ----

#[test]
fn keys_expire_lazily_at_their_deadline() {
    let shared = shared();
    check_conversation(
        &shared,
        1_000,
        &[
            ("SET k v EX 10", "+OK\r\n"),
            ("TTL k", ":10\r\n"),
            ("PTTL k", ":10000\r\n"),
        ],
    );
    check_conversation(
        &shared,
        5_400,
        &[
            ("TTL k", ":6\r\n"),
            ("PTTL k", ":5600\r\n"),
            ("GET k", "$1\r\nv\r\n"),
        ],
    );
    check_conversation(
        &shared,
        10_999,
        &[("PTTL k", ":1\r\n"), ("DBSIZE", ":1\r\n")],
    );
    check_conversation(
        &shared,
        11_000,
        &[
            ("GET k", "$-1\r\n"),
            ("TTL k", ":-2\r\n"),
            ("DBSIZE", ":0\r\n"),
        ],
    );
}

#[test]
fn ttl_changes_follow_redis() {
    let shared = shared();
    check_conversation(
        &shared,
        0,
        &[
            ("SET k v PX 500", "+OK\r\n"),
            ("SET k v2", "+OK\r\n"),
            ("TTL k", ":-1\r\n"),
            ("EXPIRE k 100", ":1\r\n"),
            ("INCR k", "-ERR value is not an integer or out of range\r\n"),
            ("SET k v KEEPTTL", "+OK\r\n"),
            ("TTL k", ":100\r\n"),
            ("EXPIRE k 50 NX", ":0\r\n"),
            ("EXPIRE k 50 GT", ":0\r\n"),
            ("EXPIRE k 200 GT", ":1\r\n"),
            ("EXPIRE k 300 LT", ":0\r\n"),
            ("PEXPIRE k 1500 XX", ":1\r\n"),
            ("PTTL k", ":1500\r\n"),
            (
                "EXPIRE k 10 NX XX",
                "-ERR NX and XX, GT or LT options at the same time are not compatible\r\n",
            ),
            (
                "EXPIRE k 10 GT LT",
                "-ERR GT and LT options at the same time are not compatible\r\n",
            ),
            ("EXPIRE k 10 FOO", "-ERR Unsupported option FOO\r\n"),
            (
                "EXPIRE k x",
                "-ERR value is not an integer or out of range\r\n",
            ),
            (
                "EXPIRE k 9223372036854775807",
                "-ERR invalid expire time in 'expire' command\r\n",
            ),
            ("EXPIRE nokey 10", ":0\r\n"),
            ("SET n 1", "+OK\r\n"),
            ("EXPIRE n 10 GT", ":0\r\n"),
            ("EXPIRE n 10 LT", ":1\r\n"),
            ("INCR n", ":2\r\n"),
            ("TTL n", ":10\r\n"),
            ("EXPIRE n 0", ":1\r\n"),
            ("EXISTS n", ":0\r\n"),
            ("PTTL nokey", ":-2\r\n"),
        ],
    );
}

#[test]
fn active_expiry_pops_only_due_deadlines() {
    let db = Db::new();
    for i in 0..1000u64 {
        let key = format!("k{i}");
        db.set(key.as_bytes(), b"v", SetOptions::expiring_at(1000 + i), 0);
    }
    for i in 0..500u64 {
        db.set(format!("p{i}").as_bytes(), b"v", SetOptions::default(), 0);
    }
    assert_eq!(db.next_expiry(), Some(1000));
    assert_eq!(db.expire_due(999), 0);
    assert_eq!(db.pending_deadlines(), 1000, "nothing due was popped");
    assert_eq!(db.expire_due(1099), 100);
    assert_eq!(
        db.pending_deadlines(),
        900,
        "only the due entries were popped"
    );
    assert_eq!(db.len(), 1400);
    assert_eq!(db.next_expiry(), Some(1100));
    let mut removed = 0;
    while db.next_expiry().is_some_and(|at| at <= 5000) {
        removed += db.expire_due(5000);
    }
    assert_eq!(removed, 900);
    assert_eq!(db.len(), 500, "keys without TTL stay");
    assert_eq!(db.next_expiry(), None);
}

#[test]
fn a_rewritten_ttl_leaves_a_stale_deadline_that_expires_nothing() {
    let db = Db::new();
    db.set(b"k", b"v", SetOptions::expiring_at(100), 0);
    db.expire_at(b"k", 500, ExpireCondition::Always, 0);
    assert_eq!(db.expire_due(200), 0, "the deadline at 100 is stale");
    assert!(db.exists(b"k", 200));
    db.set(b"k", b"v", SetOptions::default(), 200);
    assert_eq!(db.expire_due(600), 0, "SET cleared the TTL");
    assert!(db.exists(b"k", 600));
}

#[test]
fn repeated_ttl_changes_keep_the_heap_bounded() {
    let db = Db::with_shards(1);
    db.set(b"k", b"v", SetOptions::default(), 0);
    for i in 0..100_000 {
        db.expire_at(b"k", 1_000_000 + i, ExpireCondition::Always, 0);
        assert!(
            db.pending_deadlines() <= 2 + 1024 + 1,
            "heap grew to {}",
            db.pending_deadlines()
        );
    }
    assert_eq!(db.ttl(b"k", 0), Ttl::Millis(1_000_000 + 99_999));
}

#[test]
fn one_keyspace_for_every_thread() {
    let shared = shared();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let mut conn = Resp::new(shared);
                let mut out = Vec::new();
                for _ in 0..1000 {
                    conn.on_input_at(b"INCR n\r\nMSET a 1 b 1\r\n", &mut out, 0);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(replies_at(&shared, b"GET n\r\n", 0), b"$4\r\n4000\r\n");
}

// ---- publish / subscribe ----

const ONE: ConnId = ConnId::new(0, 1);
const TWO: ConnId = ConnId::new(0, 2);
const PUBLISHER: ConnId = ConnId::new(0, 3);

/// Subscribe `conn` (as `id`) with `input`; its replies.
fn subscribe(conn: &mut Resp, id: ConnId, input: &[u8]) -> Vec<u8> {
    let (mut out, mut commands) = (Vec::new(), Vec::new());
    feed_as(conn, id, input, &mut out, &mut commands, 0);
    assert!(commands.is_empty(), "subscribing sends nothing to others");
    out
}

/// Every frame `commands` send, as (target, frame), sorted.
fn sends(commands: Vec<Command>) -> Vec<(ConnId, Vec<u8>)> {
    let mut sent: Vec<(ConnId, Vec<u8>)> = commands
        .into_iter()
        .flat_map(|c| match c {
            Command::Send { to, bytes } => vec![(to, bytes)],
            Command::SendMany { to, bytes } => {
                to.into_iter().map(|id| (id, bytes.to_vec())).collect()
            }
            other => panic!("only sends expected, got {other:?}"),
        })
        .collect();
    sent.sort();
    sent
}

#[test]
fn publish_reaches_every_subscriber_with_redis_frames() {
    let shared = shared();
    let mut one = Resp::new(shared.clone());
    let mut two = Resp::new(shared.clone());
    let mut publisher = Resp::new(shared.clone());
    let out = subscribe(&mut one, ONE, b"SUBSCRIBE news sport news\r\n");
    let mut expected = Vec::new();
    confirmation_frame(&mut expected, "subscribe", Some(b"news"), 1);
    confirmation_frame(&mut expected, "subscribe", Some(b"sport"), 2);
    confirmation_frame(&mut expected, "subscribe", Some(b"news"), 2);
    assert_eq!(out, expected);
    assert_eq!(
        out[..35],
        *b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n*3"
    );
    subscribe(&mut two, TWO, b"SUBSCRIBE news\r\n");
    let (mut out, mut commands) = (Vec::new(), Vec::new());
    feed_as(
        &mut publisher,
        PUBLISHER,
        b"PUBLISH news hello\r\nPUBLISH sport x\r\nPUBLISH none x\r\n",
        &mut out,
        &mut commands,
        0,
    );
    assert_eq!(out, b":2\r\n:1\r\n:0\r\n");
    let mut hello = Vec::new();
    message_frame(&mut hello, b"news", b"hello");
    assert_eq!(
        hello,
        b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n"
    );
    let mut sport = Vec::new();
    message_frame(&mut sport, b"sport", b"x");
    assert_eq!(
        sends(commands),
        vec![(ONE, hello.clone()), (ONE, sport), (TWO, hello)]
    );
}

#[test]
fn subscriber_mode_allows_only_the_pubsub_commands() {
    let shared = shared();
    let mut conn = Resp::new(shared.clone());
    subscribe(&mut conn, ONE, b"SUBSCRIBE a b\r\n");
    assert!(conn.subscribed());
    let script: &[(&[u8], &[u8])] = &[
        (b"GET k\r\n", b"-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n"),
        (b"set k v\r\n", b"-ERR Can't execute 'set': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n"),
        (b"get\r\n", b"-ERR wrong number of arguments for 'get' command\r\n"),
        (b"PING\r\n", b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"),
        (b"PING hi\r\n", b"*2\r\n$4\r\npong\r\n$2\r\nhi\r\n"),
        (b"UNSUBSCRIBE a\r\n", b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n"),
        (b"UNSUBSCRIBE\r\n", b"*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n"),
        (b"GET k\r\n", b"$-1\r\n"),
    ];
    for (input, expected) in script {
        let out = subscribe(&mut conn, ONE, input);
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(expected)
        );
    }
    assert!(!conn.subscribed());
    assert_eq!(
        shared.pubsub.subscribers(b"a") + shared.pubsub.subscribers(b"b"),
        0
    );
}

#[test]
fn a_closed_connection_leaves_its_channels_and_is_sent_nothing() {
    let shared = shared();
    let mut gone = Resp::new(shared.clone());
    let mut stays = Resp::new(shared.clone());
    subscribe(&mut gone, ONE, b"SUBSCRIBE a b\r\n");
    subscribe(&mut stays, TWO, b"SUBSCRIBE a\r\n");
    assert_eq!(shared.pubsub.subscribers(b"a"), 2);
    gone.on_close(ONE);
    assert!(!gone.subscribed());
    assert_eq!(shared.pubsub.subscribers(b"a"), 1);
    assert_eq!(shared.pubsub.subscribers(b"b"), 0);
    let (mut out, mut commands) = (Vec::new(), Vec::new());
    let mut publisher = Resp::new(shared.clone());
    feed_as(
        &mut publisher,
        PUBLISHER,
        b"PUBLISH a m\r\nPUBLISH b m\r\n",
        &mut out,
        &mut commands,
        0,
    );
    assert_eq!(out, b":1\r\n:0\r\n");
    let targets: Vec<ConnId> = sends(commands).into_iter().map(|(to, _)| to).collect();
    assert_eq!(targets, vec![TWO]);
}

#[test]
fn without_delivery_subscribe_says_why_it_is_refused() {
    let shared = Arc::new(Shared::without_delivery(Limits::DEFAULT));
    let out = replies_at(&shared, b"SUBSCRIBE ch\r\nPUBLISH ch m\r\n", 0);
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with(
            "-ERR SUBSCRIBE is not available on this server: its engine cannot deliver"
        ),
        "{text}"
    );
    assert!(text.ends_with("\r\n:0\r\n"), "{text}");
    assert_eq!(shared.pubsub.subscribers(b"ch"), 0);
}

#[test]
fn connection_state_stays_small() {
    // What every idle connection carries besides the engine's own state.
    let size = std::mem::size_of::<Resp>();
    assert!(size <= 256, "Resp is {size} bytes");
}

/// Redis splits an inline line as a C string, so a NUL ends its arguments;
/// redis-server 7.0 even looks for the newline that way and never answers
/// such a line (checked), where iomux answers the part before the NUL.
#[test]
fn a_nul_byte_ends_an_inline_line() {
    let shared = shared();
    assert_eq!(replies_at(&shared, b"echo ab\0cd\r\n", 0), b"$2\r\nab\r\n");
    assert_eq!(
        replies_at(&shared, b"echo \"a b\"\0\"\r\n", 0),
        b"$3\r\na b\r\n"
    );
    assert_eq!(
        replies_at(&shared, b"\0echo x\r\nPING\r\n", 0),
        b"+PONG\r\n"
    );
}
