//! The server gives memory back and bounds what one read can make it owe
//! (docs/robustness.md): after a large GET and a DEL its resident memory
//! returns near where it was, and a single write of thousands of pipelined
//! GETs of a large value does not make it hold their answers all at once.
//! Memory is the server's VmRSS (now) and VmHWM (its peak) from
//! /proc/PID/status; the bounds are far from both the fixed figures and the
//! broken ones, so neither noise nor the allocator decides.

#[macro_use]
mod common;

use common::ServerProcess;
use std::io::{BufRead, BufReader, Write};

/// A field of /proc/PID/status in KiB (VmRSS, VmHWM).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn set_command(key: &str, value: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n",
        key.len(),
        value.len()
    )
    .into_bytes();
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
    out
}

fn get_command(key: &str) -> Vec<u8> {
    format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).into_bytes()
}

/// Read one reply line (`+OK`, `:1`, `$N`).
fn reply_line(reader: &mut impl BufRead) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).expect("a reply");
    line
}

/// Read one bulk reply of `len` bytes and check it is `byte` repeated.
fn read_bulk(reader: &mut impl BufRead, len: usize, byte: u8) {
    assert_eq!(reply_line(reader), format!("${len}\r\n"));
    let mut left = len + 2;
    let mut chunk = vec![0u8; 1 << 20];
    while left > 0 {
        let n = reader.read(&mut chunk[..left.min(1 << 20)]).unwrap();
        assert!(n > 0, "the server ended the stream mid-value");
        let body = &chunk[..n];
        let value_part = &body[..n.min(left.saturating_sub(2))];
        assert!(value_part.iter().all(|&b| b == byte));
        left -= n;
    }
}

/// After a 64 MiB value is set, read back and deleted, the server's
/// resident memory is back within 16 MiB of where it was before the SET
/// (each loop once kept its shared write buffer at its peak size: 64 MiB
/// more here, 267 MB after a 256 MiB GET).
fn a_large_get_then_del_gives_the_memory_back(engine: &[&str]) {
    const SIZE: usize = 64 << 20;
    let mut args = vec!["--proto", "resp", "--idle-timeout", "30"];
    args.extend_from_slice(engine);
    let server = ServerProcess::start(&args);
    let stream = server.connect();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::with_capacity(1 << 20, stream);
    // A small key first, so the keyspace's own structures are in the baseline.
    writer.write_all(&set_command("small", b"v")).unwrap();
    assert_eq!(reply_line(&mut reader), "+OK\r\n");
    let before = status_kib(server.pid(), "VmRSS");
    writer
        .write_all(&set_command("big", &vec![b'x'; SIZE]))
        .unwrap();
    assert_eq!(reply_line(&mut reader), "+OK\r\n");
    writer.write_all(&get_command("big")).unwrap();
    read_bulk(&mut reader, SIZE, b'x');
    writer
        .write_all(b"*2\r\n$3\r\nDEL\r\n$3\r\nbig\r\n")
        .unwrap();
    assert_eq!(reply_line(&mut reader), ":1\r\n");
    let after = status_kib(server.pid(), "VmRSS");
    assert!(
        after < before + 16 * 1024,
        "{engine:?}: VmRSS {before} KiB before the SET, {after} KiB after GET and DEL of {} MiB",
        SIZE >> 20
    );
}

for_engines!(
    a_large_get_then_del_gives_the_memory_back,
    [epoll_edge, epoll_level, poll, uring, uring_poll, threads]
);

/// 4,500 GETs of a 32 KiB value in one write ask for 140 MiB of answers;
/// the server stops answering once a connection owes the high-water mark
/// and goes on as its client reads, so its peak resident memory grows by
/// less than 32 MiB (before, it answered the whole write at once: its peak
/// grew by 200 MiB).
fn pipelined_gets_of_a_large_value_are_answered_within_bounded_memory(engine: &[&str]) {
    const VALUE: usize = 32 << 10;
    const GETS: usize = 4500;
    let mut args = vec!["--proto", "resp", "--idle-timeout", "30"];
    args.extend_from_slice(engine);
    let server = ServerProcess::start(&args);
    let stream = server.connect();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::with_capacity(1 << 20, stream);
    writer
        .write_all(&set_command("v", &vec![b'y'; VALUE]))
        .unwrap();
    assert_eq!(reply_line(&mut reader), "+OK\r\n");
    let before = status_kib(server.pid(), "VmHWM");
    let gets = get_command("v").repeat(GETS);
    // Written from another thread: the server may stop reading until these
    // answers are read.
    let writing = std::thread::spawn(move || writer.write_all(&gets));
    for _ in 0..GETS {
        read_bulk(&mut reader, VALUE, b'y');
    }
    writing.join().unwrap().expect("the GETs were written");
    let peak = status_kib(server.pid(), "VmHWM");
    assert!(
        peak < before + 32 * 1024,
        "{engine:?}: peak VmRSS {peak} KiB against {before} KiB before {GETS} pipelined GETs \
         of {VALUE} bytes"
    );
}

for_engines!(
    pipelined_gets_of_a_large_value_are_answered_within_bounded_memory,
    [epoll_edge, epoll_level, poll, uring, uring_poll, threads]
);
