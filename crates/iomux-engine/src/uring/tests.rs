use super::bufring::BUFFER_GROUP;
use super::ring::{build_ring, open_ring_with, set_total_len};
use super::*;
use crate::shutdown::Shutdown;
use crate::Config;
use iomux_proto::Echo;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// None of these tests can run where the kernel refuses io_uring. That is a
/// failure unless `IOMUX_NO_URING=1` says the absence is expected (as the
/// CLI's uring_engine test does), so a skip never passes unseen.
fn io_uring_refused() -> bool {
    match check_available() {
        Ok(()) => false,
        Err(e) => {
            assert!(
                std::env::var_os("IOMUX_NO_URING").is_some(),
                "io_uring is unavailable here ({e}); set IOMUX_NO_URING=1 if that is expected"
            );
            true
        }
    }
}

/// A connected loopback TCP pair: (client, the accepted server side).
fn loopback_pair() -> (TcpStream, TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

/// The engine's start-up check leaves the calling thread as it was (see
/// `iomux::selector::uring::probe_apart`): its next blocking socket read
/// with a timeout times out, never fails as interrupted.
#[test]
fn checking_does_not_interrupt_the_caller() {
    if io_uring_refused() {
        return;
    }
    let (mut client, _server) = loopback_pair();
    client
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    for i in 0..20 {
        check_available().unwrap();
        let err = client.read(&mut [0; 1]).unwrap_err();
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "read {i} after a check: {err} ({:?})",
            err.kind()
        );
    }
}

/// A kernel that answers EINVAL for every mode in `refused`.
fn kernel_refusing<'a>(
    refused: &'static [TaskRun],
    tried: &'a mut Vec<TaskRun>,
) -> impl FnMut(TaskRun) -> io::Result<IoUring> + 'a {
    move |mode| {
        tried.push(mode);
        if refused.contains(&mode) {
            Err(io::Error::from_raw_os_error(libc::EINVAL))
        } else {
            build_ring(mode)
        }
    }
}

#[test]
fn a_refused_task_run_mode_falls_back_to_the_next() {
    if io_uring_refused() {
        return;
    }
    let cases: [(&[TaskRun], TaskRun); 3] = [
        (&[], TaskRun::Deferred),
        (&[TaskRun::Deferred], TaskRun::Cooperative),
        (
            &[TaskRun::Deferred, TaskRun::Cooperative],
            TaskRun::Interrupting,
        ),
    ];
    for (refused, expected) in cases {
        let mut tried = Vec::new();
        let (_ring, mode) = open_ring_with(TaskRun::Deferred, kernel_refusing(refused, &mut tried))
            .unwrap_or_else(|e| panic!("refusing {refused:?}: {e}"));
        assert_eq!(mode, expected, "refusing {refused:?}");
        assert_eq!(tried.len(), refused.len() + 1, "tried {tried:?}");
    }
}

#[test]
fn a_kernel_refusing_every_mode_or_io_uring_itself_gets_advice() {
    let mut tried = Vec::new();
    let err = open_ring_with(
        TaskRun::Deferred,
        kernel_refusing(&TaskRun::ALL, &mut tried),
    )
    .err()
    .expect("no mode was accepted");
    assert_eq!(tried, TaskRun::ALL);
    // The library says why; the command line adds the advice to use epoll.
    assert_eq!(err.kind(), io::ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("io_uring"), "{err}");
    // Anything but EINVAL is not about the flags: no second attempt.
    let mut attempts = 0;
    let err = open_ring_with(TaskRun::Deferred, |_| {
        attempts += 1;
        Err(io::Error::from_raw_os_error(libc::ENOSYS))
    })
    .err()
    .expect("refused");
    assert_eq!(attempts, 1);
    assert!(err.to_string().contains("no io_uring"), "{err}");
}

/// A loop thread on a fresh listener in the given modes, with `config`.
struct TestServer {
    addr: std::net::SocketAddr,
    shutdown: Shutdown,
    thread: std::thread::JoinHandle<io::Result<LoopStats>>,
}

impl TestServer {
    fn start(config: Config, mode: TaskRun, recv_mode: RecvMode) -> TestServer {
        TestServer::start_failing(config, mode, recv_mode, None)
    }

    /// A server whose submission after `fail_after` good ones fails.
    fn start_failing(
        config: Config,
        mode: TaskRun,
        recv_mode: RecvMode,
        fail_after: Option<u64>,
    ) -> TestServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let setup = LoopSetup::for_test(config, &shutdown, Echo::plain);
        let thread = std::thread::spawn(move || {
            run_with(listener.into(), setup, mode, recv_mode, fail_after)
        });
        TestServer {
            addr,
            shutdown,
            thread,
        }
    }

    fn stop(self) -> LoopStats {
        self.shutdown.trigger();
        self.thread.join().expect("loop thread").expect("loop")
    }
}

/// 20 clients each echo 50 messages of growing size, byte-exact.
fn serve_echo_clients(mode: TaskRun, recv_mode: RecvMode) {
    let server = TestServer::start(Config::default(), mode, recv_mode);
    let addr = server.addr;
    let clients: Vec<_> = (0..20)
        .map(|i| {
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                for round in 0..50u32 {
                    let message = format!("client {i} round {round}\n").repeat(round as usize + 1);
                    stream.write_all(message.as_bytes()).unwrap();
                    let mut back = vec![0; message.len()];
                    stream.read_exact(&mut back).unwrap();
                    assert_eq!(back, message.as_bytes(), "{mode:?} {recv_mode:?}");
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client");
    }
    let stats = server.stop();
    assert_eq!(stats.accepts, 20, "{mode:?} {recv_mode:?}: {stats:?}");
}

/// The engine serves echo on a ring in each mode, as on a kernel that
/// refused the better ones.
#[test]
fn the_engine_serves_in_every_task_run_mode() {
    if io_uring_refused() {
        return;
    }
    for mode in TaskRun::ALL {
        let (_, opened) = open_ring(mode).expect("ring");
        if opened != mode {
            // This kernel refuses `mode`: it fell back to a weaker one, which
            // a later turn of this loop serves on.
            assert!(
                TaskRun::ALL.iter().position(|m| *m == opened)
                    > TaskRun::ALL.iter().position(|m| *m == mode),
                "{mode:?} refused, but {opened:?} is not a fallback from it"
            );
            continue;
        }
        serve_echo_clients(mode, RecvMode::CappedMultishot);
    }
}

/// Likewise for each kind of receive (a kernel lacking one moves on to
/// the next by itself).
#[test]
fn the_engine_serves_in_every_receive_mode() {
    if io_uring_refused() {
        return;
    }
    for recv_mode in RecvMode::ALL {
        serve_echo_clients(TaskRun::Deferred, recv_mode);
    }
}

#[test]
fn receive_modes_fall_back_in_order() {
    assert_eq!(RecvMode::CappedMultishot.next(), Some(RecvMode::Multishot));
    assert_eq!(RecvMode::Multishot.next(), Some(RecvMode::SingleShot));
    assert_eq!(RecvMode::SingleShot.next(), None);
}

/// The kernel honours the limit `set_total_len` writes: a multishot
/// receive with 256 KiB waiting and a 40,000-byte limit takes at least
/// the limit, less than one buffer more, and then ends by itself.
#[test]
fn a_capped_multishot_receive_ends_after_its_limit() {
    if io_uring_refused() {
        return;
    }
    const LIMIT: u32 = 40_000;
    let (mut ring, _) = open_ring(TaskRun::Deferred).expect("ring");
    let mut bufs = BufRing::register(&ring).expect("buffer ring");
    let (mut client, server) = crate::tcp_pair();
    client.write_all(&vec![7u8; 256 * 1024]).unwrap();
    let mut entry = opcode::RecvMulti::new(types::Fd(server.as_raw_fd()), BUFFER_GROUP)
        .build()
        .user_data(1);
    set_total_len(&mut entry, LIMIT);
    // SAFETY: the buffer ring outlives the request (the ring is dropped first below).
    unsafe { ring.submission().push(&entry) }.unwrap();
    let mut received = 0usize;
    let until = Instant::now() + Duration::from_secs(5);
    let ended_with = loop {
        assert!(
            Instant::now() < until,
            "no final completion; {received} bytes so far"
        );
        // A bounded wait, so a receive that never ends fails the test instead of hanging it.
        let tick = types::Timespec::new().nsec(100_000_000);
        match ring
            .submitter()
            .submit_with_args(1, &types::SubmitArgs::new().timespec(&tick))
        {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
            Err(e) => panic!("io_uring_enter: {e}"),
        }
        let cqes: Vec<cqueue::Entry> = ring.completion().collect();
        let mut last = None;
        for cqe in cqes {
            if cqe.result() > 0 {
                received += cqe.result() as usize;
            }
            if let Some(bid) = cqueue::buffer_select(cqe.flags()) {
                bufs.push(bid);
            }
            if !cqueue::more(cqe.flags()) {
                last = Some(cqe.result());
            }
        }
        bufs.publish();
        if let Some(res) = last {
            break res;
        }
    };
    if ended_with == -libc::EINVAL {
        // Only kernels before 6.17 refuse the limit (the engine then falls
        // back to plain multishot): any other refusal is a failure.
        let release = kernel_release();
        assert!(
            release < (6, 17),
            "Linux {release:?} refused a limit on a multishot receive"
        );
        return;
    }
    assert!(ended_with > 0, "ended by {ended_with}, not by the limit");
    assert!(
        (LIMIT as usize..LIMIT as usize + BUFFER_SIZE).contains(&received),
        "took {received} bytes for a limit of {LIMIT}"
    );
    drop(ring);
}

/// tx_queue + rx_queue of the loopback TCP socket `local` -> `remote`,
/// from /proc/net/tcp: bytes the kernel holds for it.
fn kernel_queued(local: std::net::SocketAddr, remote: std::net::SocketAddr) -> usize {
    let hex = |a: std::net::SocketAddr| match a {
        std::net::SocketAddr::V4(v4) => {
            format!(
                "{:08X}:{:04X}",
                u32::from_ne_bytes(v4.ip().octets()),
                v4.port()
            )
        }
        std::net::SocketAddr::V6(_) => unreachable!("tests use 127.0.0.1"),
    };
    let (local, remote) = (hex(local), hex(remote));
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let queues = table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|f| f[1] == local && f[2] == remote)
        .unwrap_or_else(|| panic!("{local} -> {remote} not in /proc/net/tcp"))[4]
        .split(':')
        .map(|q| usize::from_str_radix(q, 16).unwrap())
        .sum();
    queues
}

/// A client that sends but never reads: once the server stops taking
/// its bytes, what the server holds itself (pushed minus what sits in
/// the four socket queues) stays within the output limit plus one
/// buffer in each receive mode that bounds it; every byte taken comes back.
#[test]
fn a_client_that_does_not_read_gets_at_most_one_buffer_past_the_limit_taken() {
    if io_uring_refused() {
        return;
    }
    const HIGH_WATER: usize = 64 * 1024;
    for recv_mode in RecvMode::ALL {
        let config = Config {
            output_high_water: HIGH_WATER,
            ..Config::default()
        };
        let server = TestServer::start(config, TaskRun::Deferred, recv_mode);
        let stream = TcpStream::connect(server.addr).unwrap();
        stream.set_nonblocking(true).unwrap();
        let chunk = vec![b'x'; 64 * 1024];
        let mut pushed = 0usize;
        let mut stalled_since: Option<Instant> = None;
        while pushed < 64 * 1024 * 1024 {
            match (&stream).write(&chunk) {
                Ok(n) => {
                    pushed += n;
                    stalled_since = None;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let since = *stalled_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_millis(300) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("{recv_mode:?}: write: {e}"),
            }
        }
        let local = stream.local_addr().unwrap();
        let in_kernel = kernel_queued(local, server.addr) + kernel_queued(server.addr, local);
        let held = pushed - in_kernel;
        if recv_mode != RecvMode::Multishot {
            // Multishot without a limit keeps what arrives until its cancel lands: no bound to test.
            assert!(
                held <= HIGH_WATER + BUFFER_SIZE,
                "{recv_mode:?}: the server holds {held} bytes for a limit of {HIGH_WATER}"
            );
        }
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut back = Vec::new();
        (&stream).read_to_end(&mut back).unwrap();
        assert_eq!(back.len(), pushed, "{recv_mode:?}");
        assert!(back.iter().all(|&b| b == b'x'), "{recv_mode:?}");
        server.stop();
    }
}

/// An error exit of the loop (here an injected submission failure)
/// still settles what the kernel holds: the loop returns the error, and
/// by then every connection's receive and send have completed (or their
/// buffers were leaked, counted), so nothing is freed under the kernel.
#[test]
fn an_error_exit_settles_the_requests_in_flight() {
    if io_uring_refused() {
        return;
    }
    let config = Config::default();
    // The first submission (waker, accept) goes through; the one after
    // the first completions fails, with receives in flight.
    let server = TestServer::start_failing(
        config,
        TaskRun::Deferred,
        RecvMode::CappedMultishot,
        Some(1),
    );
    let mut clients = Vec::new();
    for _ in 0..4 {
        // The first accept's completion ends the loop (closing its
        // listener), so a later client may find the port closed.
        let mut c = match TcpStream::connect(server.addr) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused && !clients.is_empty() => break,
            Err(e) => panic!("connect: {e}"),
        };
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = c.write_all(b"ping");
        clients.push(c);
    }
    let result = server
        .thread
        .join()
        .expect("the loop thread does not panic");
    let err = result.expect_err("the injected failure ends the loop");
    assert!(err.to_string().contains("injected"), "{err}");
    // The loop closed (or never kept) every connection: each client
    // reads its end of the stream, never a hang.
    for mut c in clients {
        let mut buf = Vec::new();
        let _ = c.read_to_end(&mut buf);
    }
}

/// The running kernel's (major, minor) version, from uname(2).
fn kernel_release() -> (u32, u32) {
    // SAFETY: uname fills a zeroed utsname it is given.
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: a live, writable utsname.
    assert_eq!(unsafe { libc::uname(&mut name) }, 0, "uname");
    // SAFETY: uname NUL-terminates the release field.
    let release = unsafe { std::ffi::CStr::from_ptr(name.release.as_ptr()) }.to_string_lossy();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok());
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// What sending files from the loop thread relies on: a receive or a send
/// through the ring on a non-blocking socket that cannot go on now waits in
/// the ring (the kernel polls for it) instead of completing with EAGAIN.
#[test]
fn ring_operations_on_non_blocking_sockets_wait_instead_of_failing() {
    if io_uring_refused() {
        return;
    }
    use std::os::fd::AsRawFd;
    let (mut client, server) = loopback_pair();
    server.set_nonblocking(true).unwrap();
    let mut ring = io_uring::IoUring::new(8).unwrap();
    let completed = |ring: &mut io_uring::IoUring| ring.completion().next().map(|c| c.result());
    // A receive with nothing to read.
    let mut buf = [0u8; 64];
    let recv = opcode::Recv::new(types::Fd(server.as_raw_fd()), buf.as_mut_ptr(), 64)
        .build()
        .user_data(1);
    // SAFETY: `buf` outlives the operation (waited for below).
    unsafe { ring.submission().push(&recv).unwrap() };
    ring.submit().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(completed(&mut ring), None, "the receive waits");
    client.write_all(b"hi").unwrap();
    ring.submit_and_wait(1).unwrap();
    assert_eq!(completed(&mut ring), Some(2));
    // A send to a socket whose buffer is full.
    let chunk = vec![7u8; 1 << 20];
    loop {
        match (&server).write(&chunk) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    let send = opcode::Send::new(types::Fd(server.as_raw_fd()), chunk.as_ptr(), 65536)
        .build()
        .user_data(2);
    // SAFETY: `chunk` outlives the operation (waited for below).
    unsafe { ring.submission().push(&send).unwrap() };
    ring.submit().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(completed(&mut ring), None, "the send waits");
    client.set_nonblocking(true).unwrap();
    let mut sink = vec![0u8; 1 << 20];
    let mut result = None;
    for _ in 0..1000 {
        let _ = client.read(&mut sink);
        ring.submit().unwrap();
        result = completed(&mut ring);
        if result.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(result.is_some_and(|n| n > 0), "{result:?}");
}
