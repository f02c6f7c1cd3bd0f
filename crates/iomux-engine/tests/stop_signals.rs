//! `StopSignals`: a server started after `block` has its loops block SIGINT
//! and SIGTERM, `wait` returns the signal, and the shutdown that follows is
//! graceful (an idle connection is closed, the loops end without error).

use iomux_engine::{Config, Engine, Server, StopSignals};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The signals blocked by the thread named `name`, from /proc.
fn blocked_signals_of(name: &str) -> Option<u64> {
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = task.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
        if comm.trim() != name {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).ok()?;
        let hex = status.lines().find_map(|l| l.strip_prefix("SigBlk:"))?;
        return u64::from_str_radix(hex.trim(), 16).ok();
    }
    None
}

fn bit(signal: libc::c_int) -> u64 {
    1 << (signal - 1)
}

#[test]
fn a_stop_signal_is_waited_for_and_the_server_drains() {
    let signals = StopSignals::block().unwrap();
    let config = Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    let server = Server::start(config, Engine::ALL[0], iomux_proto::Echo::plain).unwrap();

    // The loop inherited the mask: a stop signal sent to the process cannot
    // land in it and kill the process by its default action.
    let mask = blocked_signals_of("iomux-loop-0").expect("the loop thread in /proc");
    assert_eq!(
        mask & (bit(libc::SIGINT) | bit(libc::SIGTERM)),
        bit(libc::SIGINT) | bit(libc::SIGTERM),
        "loop mask {mask:x}"
    );

    let mut client = TcpStream::connect(server.local_addr()).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    client.write_all(b"ping").unwrap();
    let mut echoed = [0; 4];
    client.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"ping");

    // To this thread only: the test harness's other threads do not block it.
    // SAFETY: raise has no preconditions.
    assert_eq!(unsafe { libc::raise(libc::SIGTERM) }, 0);
    assert_eq!(signals.wait(), libc::SIGTERM);
    server.shutdown();
    let stats = server.join().unwrap();
    assert_eq!(stats.accepts, 1);
    // The idle connection was closed by the drain, not left open.
    assert_eq!(client.read(&mut echoed).unwrap(), 0, "EOF after the drain");
}
