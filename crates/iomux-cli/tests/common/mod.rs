//! Helpers for tests that run the `iomux` binary: start a server on an
//! ephemeral loopback port, read its ready line, stop it with a signal.
#![allow(dead_code, unused_macros)]

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// Run `iomux load <args>` to its end.
pub fn load(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_iomux"))
        .arg("load")
        .args(args)
        .output()
        .expect("run iomux load")
}

/// Run `iomux load <args>`, which must fail with a message that says every
/// one of `needles`.
pub fn load_fails_saying(args: &[&str], needles: &[&str]) {
    let out = load(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded: {err}");
    for needle in needles {
        assert!(err.contains(needle), "{args:?}: {needle:?} not in {err}");
    }
}

/// Start one of Redis's own clients (Debian's redis-tools); panics with how
/// to install them when it is missing.
pub fn spawn_redis_tool(command: &mut Command) -> Child {
    command.spawn().unwrap_or_else(|e| {
        panic!(
            "{} could not run ({e}): these tests need Redis's clients; install them with \
             `apt-get install -y redis-tools` (CI's .ci/run does)",
            command.get_program().to_string_lossy()
        )
    })
}

pub struct ServerProcess {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub ready_line: String,
}

impl ServerProcess {
    /// Start `iomux serve --addr 127.0.0.1:0 <args>` and wait for its ready line.
    pub fn start(args: &[&str]) -> ServerProcess {
        ServerProcess::start_at("127.0.0.1:0", args)
    }

    /// Start `iomux serve --addr <addr> <args>` (a loopback address or name)
    /// and wait for its ready line.
    pub fn start_at(addr: &str, args: &[&str]) -> ServerProcess {
        let mut serve = vec!["serve", "--addr", addr];
        serve.extend_from_slice(args);
        ServerProcess::start_program(env!("CARGO_BIN_EXE_iomux").as_ref(), &serve)
    }

    /// Start `program <args>` (an example server) and wait for its
    /// `listening on ADDR` line.
    pub fn start_program(program: &std::path::Path, args: &[&str]) -> ServerProcess {
        let child = Command::new(program)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn iomux");
        ServerProcess::wait_ready(child, args, |child| {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            err
        })
    }

    /// Read a started server's ready line; on failure panic with its stderr
    /// (as `stderr` reads it).
    fn wait_ready(
        mut child: Child,
        args: &[&str],
        stderr: impl FnOnce(&mut Child) -> String,
    ) -> ServerProcess {
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read ready line");
        if !line.starts_with("listening on ") {
            let _ = child.kill();
            let _ = child.wait();
            let err = stderr(&mut child);
            panic!("server {args:?} did not start: stdout {line:?}, stderr {err:?}");
        }
        let addr = line["listening on ".len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .expect("address in ready line");
        ServerProcess {
            child: Some(child),
            addr,
            ready_line: line,
        }
    }

    /// A handle for a server started elsewhere (client threads need only the address).
    pub fn for_address(addr: SocketAddr) -> ServerProcess {
        ServerProcess {
            child: None,
            addr,
            ready_line: String::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    /// Resident memory of the server in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Open descriptors of the server.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// Send `sig` and wait (bounded) for the exit status.
    pub fn stop_with(&mut self, sig: i32, within: Duration) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, sig) };
        let until = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > until {
                let _ = child.kill();
                panic!("server did not exit within {within:?} of signal {sig}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The server's stderr so far (after it exited).
    pub fn stop(&mut self) -> ExitStatus {
        self.stop_with(libc::SIGTERM, Duration::from_secs(10))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Where a server started by [`start_configured`] writes its stderr.
fn stderr_log_path() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "iomux-test-{}-{}.stderr",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A server whose stderr goes to a file (so a chatty server never blocks on a
/// full pipe, and the test can look for panics afterwards).
pub struct LoggedServer {
    pub server: ServerProcess,
    pub stderr_path: std::path::PathBuf,
}

impl LoggedServer {
    /// Start `iomux serve --addr 127.0.0.1:0 <args>` with `limit_fds` as both
    /// the soft and hard RLIMIT_NOFILE (serve raises the soft limit to the
    /// hard one, so both must be set), or the inherited limit when `None`.
    pub fn start(args: &[&str], limit_fds: Option<u64>) -> LoggedServer {
        use std::os::unix::process::CommandExt;
        let stderr_path = stderr_log_path();
        let log = std::fs::File::create(&stderr_path).expect("create stderr log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_iomux"));
        command
            .arg("serve")
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(log);
        if let Some(n) = limit_fds {
            // SAFETY: setrlimit is async-signal-safe and touches only the child.
            unsafe {
                command.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command.spawn().expect("spawn iomux");
        let log = stderr_path.clone();
        let server = ServerProcess::wait_ready(child, args, move |_| {
            std::fs::read_to_string(&log).unwrap_or_default()
        });
        LoggedServer {
            server,
            stderr_path,
        }
    }

    /// What the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Stop with SIGTERM, assert a clean exit and no panic; returns stderr.
    pub fn stop_cleanly(&mut self, what: &str) -> String {
        let status = self.server.stop();
        let err = self.stderr();
        assert!(status.success(), "{what}: exit {status:?}; stderr:\n{err}");
        assert!(!err.contains("panicked"), "{what}: server panicked:\n{err}");
        err
    }
}

impl Drop for LoggedServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.stderr_path);
    }
}

/// A redis-server of our own (Debian's redis-server package) on a free
/// loopback port, for checking iomux's RESP behaviour against Redis's; no
/// persistence; killed on drop. `config` are extra `--name value` settings.
pub struct RedisServer {
    child: Child,
    pub addr: SocketAddr,
}

impl RedisServer {
    pub fn start(config: &[&str]) -> RedisServer {
        // A free port: redis-server cannot take port 0 and say which it got.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "redis-server could not run ({e}): these tests compare with Redis; install it \
                     with `apt-get install -y redis-server` (CI's .ci/run does)"
                )
            });
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut server = RedisServer { child, addr };
        let up = eventually(Duration::from_secs(10), || TcpStream::connect(addr).is_ok());
        if !up {
            let _ = server.child.kill();
            panic!("redis-server on {addr} did not start listening");
        }
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user + system, all threads) a process has used so far.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name (which may hold spaces) start at "state";
    // utime and stime are fields 14 and 15 of the whole line.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// The share of one core a process used over `window` (1.0 = a full core).
pub fn cpu_share_over(pid: u32, window: Duration) -> f64 {
    let start = Instant::now();
    let before = cpu_time(pid);
    std::thread::sleep(window);
    let used = cpu_time(pid) - before;
    used.as_secs_f64() / start.elapsed().as_secs_f64()
}

/// One row of /proc/net/tcp (IPv4 sockets of this network namespace).
struct TcpRow {
    local_port: u16,
    remote_port: u16,
    /// Hex state code: "01" established, "08" CLOSE_WAIT, "0A" listen.
    state: String,
    /// Send queue: bytes not yet acknowledged.
    send_queue: u64,
    /// Receive queue: bytes not yet read.
    receive_queue: u64,
}

fn tcp_rows() -> Vec<TcpRow> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next()?, 16).ok();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (tx, rx) = cols.get(4)?.split_once(':')?;
            Some(TcpRow {
                local_port: port(cols.get(1)?)?,
                remote_port: port(cols.get(2)?)?,
                state: cols.get(3)?.to_string(),
                send_queue: u64::from_str_radix(tx, 16).ok()?,
                receive_queue: u64::from_str_radix(rx, 16).ok()?,
            })
        })
        .collect()
}

/// Loopback TCP sockets whose local port is `port`, by state (hex code of
/// /proc/net/tcp: "01" established, "08" CLOSE_WAIT, "0A" listen).
pub fn tcp_states_on_port(port: u16) -> Vec<String> {
    tcp_rows()
        .into_iter()
        .filter(|row| row.local_port == port)
        .map(|row| row.state)
        .collect()
}

/// The kernel's queues of one loopback TCP socket: (send queue, bytes not
/// yet acknowledged; receive queue, bytes not yet read by its owner).
pub struct TcpQueues {
    pub send: u64,
    pub receive: u64,
}

/// The queues of our end (`ours`) and of the peer's end of `stream`.
pub fn tcp_queues(stream: &TcpStream) -> (TcpQueues, TcpQueues) {
    let (local, remote) = (
        stream.local_addr().unwrap().port(),
        stream.peer_addr().unwrap().port(),
    );
    let rows = tcp_rows();
    let queues = |from: u16, to: u16| {
        let row = rows
            .iter()
            .find(|row| row.local_port == from && row.remote_port == to)
            .unwrap_or_else(|| panic!("no socket {from} -> {to} in /proc/net/tcp"));
        TcpQueues {
            send: row.send_queue,
            receive: row.receive_queue,
        }
    };
    (queues(local, remote), queues(remote, local))
}

/// Bytes the kernel holds for both ends of the loopback connection `stream`
/// (send and receive queues). A byte received but not yet acknowledged
/// counts twice, so what a peer holds outside the kernel is at least "bytes
/// sent minus this".
pub fn tcp_queued_both_ends(stream: &TcpStream) -> u64 {
    let (ours, theirs) = tcp_queues(stream);
    ours.send + ours.receive + theirs.send + theirs.receive
}

/// Make the next close of `stream` send a reset instead of a FIN (SO_LINGER 0).
pub fn set_linger_zero(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: passes a live linger struct of the right size.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
}

/// Push 64 KiB writes of `x` from `stream` (made non-blocking) until the
/// server has taken nothing for `quiet`: it stopped reading (for echo: it owes
/// us output we do not take). A safety stop at 64 MiB (the kernel's queues
/// take about 10 MB here). Returns the bytes pushed and when the last write
/// went in.
pub fn push_until_the_server_stops_reading(
    stream: &TcpStream,
    quiet: Duration,
) -> (usize, Instant) {
    use std::io::Write;
    stream.set_nonblocking(true).unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let (mut pushed, mut last_write) = (0, Instant::now());
    while pushed < 64 * 1024 * 1024 {
        match (&*stream).write(&chunk) {
            Ok(n) => {
                pushed += n;
                last_write = Instant::now();
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if last_write.elapsed() > quiet {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("push: {e}"),
        }
    }
    (pushed, last_write)
}

/// Poll `check` every 20 ms until it returns true or `within` passes; returns its last answer.
pub fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One fresh connection: send `message`, read the echo back; errors instead of panics.
pub fn try_echo(addr: SocketAddr, message: &[u8], timeout: Duration) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(message)?;
    let mut back = vec![0u8; message.len()];
    s.read_exact(&mut back)?;
    Ok(back)
}

/// Make `io_uring_setup` (syscall 425 on every architecture) fail with `errno`
/// in the calling process, as a seccomp policy or the io_uring_disabled
/// sysctl would. Meant for `CommandExt::pre_exec` (it only calls prctl).
pub fn refuse_io_uring(errno: u32) -> std::io::Result<()> {
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    let filter = [
        libc::sock_filter {
            code: LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: JEQ_K,
            jt: 0,
            jf: 1,
            k: 425,
        },
        libc::sock_filter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ERRNO | errno,
        },
        libc::sock_filter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut _,
    };
    // SAFETY: prctl with a live, well-formed filter program; affects only
    // this (child) process.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The one list of engines the tests run: each engine's test name and its
/// `iomux serve` flags, in three groups: engines that serve connections
/// concurrently and sleep while there is nothing to do; the one that busy-polls
/// (it burns a core whatever happens, so its CPU use tells nothing); the one
/// that serves one connection at a time (nobody else while a client holds it,
/// by design). [`ENGINES`] and `for_engines!` are both made from it, so an
/// engine added here is tested everywhere. (When `iomux_engine::Engine::ALL`
/// lands, this is the one place to switch.)
macro_rules! engine_list {
    ($callback:ident!($($args:tt)*)) => {
        $callback!($($args)*
            sleeping [
                epoll_edge: ["--backend", "epoll", "--trigger", "edge"],
                epoll_level: ["--backend", "epoll", "--trigger", "level"],
                epoll_oneshot: ["--backend", "epoll", "--trigger", "oneshot"],
                epoll_two_loops: ["--backend", "epoll", "--threads", "2"],
                poll: ["--backend", "poll"],
                select: ["--backend", "select"],
                sigio: ["--backend", "sigio"],
                uring: ["--backend", "uring"],
                uring_poll: ["--backend", "uring-poll"],
                uring_poll_level: ["--backend", "uring-poll", "--trigger", "level"],
                uring_poll_oneshot: ["--backend", "uring-poll", "--trigger", "oneshot"],
                threads: ["--backend", "threads"]
            ]
            busy_polling [
                nonblocking: ["--backend", "nonblocking"]
            ]
            one_at_a_time [
                blocking: ["--backend", "blocking"]
            ]
        );
    };
}

macro_rules! engine_table {
    (
        sleeping [$($s:ident: [$($sf:literal),+]),+]
        busy_polling [$($b:ident: [$($bf:literal),+]),+]
        one_at_a_time [$($o:ident: [$($of:literal),+]),+]
    ) => {
        /// Every engine of [`engine_list!`]: test name, flags, and whether it
        /// serves connections concurrently.
        pub const ENGINES: &[(&str, &[&str], bool)] = &[
            $((stringify!($s), &[$($sf),+], true),)+
            $((stringify!($b), &[$($bf),+], true),)+
            $((stringify!($o), &[$($of),+], false),)+
        ];
    };
}
engine_list!(engine_table!());

/// The flags of the engine named `name` in [`ENGINES`].
pub fn engine(name: &str) -> &'static [&'static str] {
    ENGINES
        .iter()
        .find(|(n, _, _)| *n == name)
        .unwrap_or_else(|| panic!("no engine named {name} in engine_list!"))
        .1
}

/// `for_engines!(case)` makes one test per engine, `case::epoll_edge`,
/// `case::blocking` and so on, each calling `case(flags)` with that engine's
/// `iomux serve` flags: a failure names its engine, and each engine's case
/// runs on its own (in parallel with others, as the test harness schedules).
/// `for_engines!(case, concurrent)` leaves out the one-at-a-time engine,
/// `for_engines!(case, sleeping_or_one_at_a_time)` the busy-polling one,
/// `for_engines!(case, sleeping)` both;
/// `for_engines!(case, [poll, sigio])` makes only the engines named.
/// Attributes written before the case (`#[ignore = "why"]`) go on every test.
macro_rules! for_engines {
    ($(#[$attr:meta])* $case:ident) => {
        engine_list!(for_engines!(@pick [$(#[$attr])*] $case all));
    };
    ($(#[$attr:meta])* $case:ident, $group:ident) => {
        engine_list!(for_engines!(@pick [$(#[$attr])*] $case $group));
    };
    ($(#[$attr:meta])* $case:ident, [$($name:ident),+ $(,)?]) => {
        mod $case {
            for_engines!(@tests [$(#[$attr])*] $case $($name)+);
        }
    };
    (@pick [$($attr:tt)*] $case:ident $group:ident
        sleeping [$($s:ident: $sf:tt),+]
        busy_polling [$($b:ident: $bf:tt),+]
        one_at_a_time [$($o:ident: $of:tt),+]
    ) => {
        for_engines!(@group [$($attr)*] $case $group [$($s)+] [$($b)+] [$($o)+]);
    };
    (@group $attr:tt $case:ident all [$($s:ident)+] [$($b:ident)+] [$($o:ident)+]) => {
        for_engines!(@list $attr $case [$($s,)+ $($b,)+ $($o),+]);
    };
    (@group $attr:tt $case:ident concurrent [$($s:ident)+] [$($b:ident)+] $o:tt) => {
        for_engines!(@list $attr $case [$($s,)+ $($b),+]);
    };
    (@group $attr:tt $case:ident sleeping [$($s:ident)+] $b:tt $o:tt) => {
        for_engines!(@list $attr $case [$($s),+]);
    };
    (@group $attr:tt $case:ident sleeping_or_one_at_a_time [$($s:ident)+] $b:tt [$($o:ident)+]) => {
        for_engines!(@list $attr $case [$($s,)+ $($o),+]);
    };
    (@list [$($attr:tt)*] $case:ident $names:tt) => {
        for_engines!($($attr)* $case, $names);
    };
    // One test at a time, so that every test gets all the attributes.
    (@tests [$($attr:tt)*] $case:ident $name:ident $($rest:ident)*) => {
        #[test]
        $($attr)*
        fn $name() {
            super::$case(crate::common::engine(stringify!($name)));
        }
        for_engines!(@tests [$($attr)*] $case $($rest)*);
    };
    (@tests [$($attr:tt)*] $case:ident) => {};
}

/// `for_engines!` over the engines that carry out protocols' commands
/// (`Engine::carries_out_commands`): the event loops, the ones pub/sub
/// delivers on and TLS is served on.
macro_rules! for_delivering_engines {
    ($case:ident) => {
        for_engines!(
            $case,
            [
                epoll_edge,
                epoll_level,
                epoll_oneshot,
                epoll_two_loops,
                poll,
                select,
                sigio,
                uring,
                uring_poll,
                uring_poll_level,
                uring_poll_oneshot
            ]
        );
    };
}

/// One HTTP response as a test client sees it.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub code: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parse one response from the front of `buf`: `None` while incomplete.
/// A `100 Continue` has no body; `head_only` responses carry none either.
pub fn parse_http_response(buf: &[u8], head_only: bool) -> Option<(HttpResponse, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end - 4]).expect("response head is UTF-8");
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap();
    assert!(status.starts_with("HTTP/1.1 "), "status line {status:?}");
    let code: u16 = status[9..12].parse().expect("status code");
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l
                .split_once(':')
                .unwrap_or_else(|| panic!("header line {l:?}"));
            (n.to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let mut response = HttpResponse {
        code,
        headers,
        body: Vec::new(),
    };
    if code == 100 || code == 204 || code == 304 || head_only {
        return Some((response, end));
    }
    let len: usize = response
        .header("content-length")
        .expect("Content-Length on every response")
        .parse()
        .unwrap();
    if buf.len() < end + len {
        return None;
    }
    response.body = buf[end..end + len].to_vec();
    Some((response, end + len))
}

/// Read until `n` responses (100 Continue included) are complete or the
/// server closes; `leftover` keeps bytes read past them.
pub fn read_http_responses(
    stream: &mut TcpStream,
    n: usize,
    leftover: &mut Vec<u8>,
) -> Vec<HttpResponse> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    while got.len() < n {
        if let Some((r, used)) = parse_http_response(leftover, false) {
            leftover.drain(..used);
            got.push(r);
            continue;
        }
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(k) => leftover.extend_from_slice(&chunk[..k]),
            Err(e) => panic!("reading responses ({} of {n} so far): {e}", got.len()),
        }
    }
    got
}

/// Every response the server sends until it closes the connection.
pub fn read_http_until_close(stream: &mut TcpStream) -> Vec<HttpResponse> {
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).expect("read until close");
    let mut all = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let (r, used) = parse_http_response(&buf[at..], false).unwrap_or_else(|| {
            panic!(
                "truncated response {:?}",
                String::from_utf8_lossy(&buf[at..])
            )
        });
        at += used;
        all.push(r);
    }
    all
}
