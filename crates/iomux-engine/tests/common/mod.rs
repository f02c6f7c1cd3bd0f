//! The engine lists that engine tests expand over, written once; each test
//! file's guard checks what it tested against `Engine::ALL`.

/// Calls `$then!` with `$args` and then the engines that have an event loop
/// (they carry out commands), as `module => "name"` pairs.
macro_rules! loop_engines {
    ($then:ident $(, $args:tt)*) => {
        $then! {
            $($args)*
            epoll_edge => "epoll-edge",
            epoll_level => "epoll-level",
            epoll_oneshot => "epoll-oneshot",
            poll => "poll",
            select => "select",
            sigio => "sigio",
            uring_poll_edge => "uring-poll-edge",
            uring_poll_level => "uring-poll-level",
            uring_poll_oneshot => "uring-poll-oneshot",
            uring => "uring",
        }
    };
}

/// Calls `$then!` with the engines that have no event loop.
#[allow(unused_macros)] // each test file uses what it needs
macro_rules! loopless_engines {
    ($then:ident $(, $args:tt)*) => {
        $then! {
            $($args)*
            threads => "threads",
            blocking => "blocking",
            nonblocking => "nonblocking",
        }
    };
}

/// One module per engine, named after it, with one test per scenario: a
/// failure names its engine and scenario. `[a, b]` then the engine pairs;
/// each scenario is a function of the test file taking the engine's name.
#[allow(unused_macros)] // each test file uses what it needs
macro_rules! engine_tests {
    ($tests:tt $($module:ident => $name:literal),* $(,)?) => {
        $(
            engine_module!($module, $name, $tests);
        )*
    };
}

/// One engine's module of [`engine_tests`].
#[allow(unused_macros)] // each test file uses what it needs
macro_rules! engine_module {
    ($module:ident, $name:literal, [$($test:ident),* $(,)?]) => {
        mod $module {
            $(
                #[test]
                fn $test() {
                    super::$test($name);
                }
            )*
        }
    };
}

/// The engines' names, in the order of the list given.
#[allow(unused_macros)] // each test file uses what it needs
macro_rules! engine_names {
    ($($module:ident => $name:literal),* $(,)?) => {
        vec![$($name),*]
    };
}

/// A test that the modules of `loop_engines!` and `loopless_engines!` cover
/// `Engine::ALL` exactly (for test files that run every engine): an engine
/// added there fails it until it is tested.
#[allow(unused_macros)] // each test file uses what it needs
macro_rules! every_engine_is_tested {
    () => {
        #[test]
        fn every_engine_is_tested() {
            let mut tested: Vec<&str> = loop_engines!(engine_names);
            tested.extend(loopless_engines!(engine_names));
            let all: Vec<&str> = iomux_engine::Engine::ALL.iter().map(|e| e.name()).collect();
            assert_eq!(tested, all);
        }
    };
}

/// The names of `Engine::ALL`'s engines that do (`true`) or do not have an event loop.
#[allow(dead_code)] // each test file uses what it needs
pub fn engines_with_loop(with: bool) -> Vec<&'static str> {
    iomux_engine::Engine::ALL
        .iter()
        .filter(|e| e.carries_out_commands() == with)
        .map(|e| e.name())
        .collect()
}

/// A line-oriented test client of a chat-like service that greets each
/// connection with `welcome`; every read waits at most 10 s.
#[allow(dead_code)] // each test file uses what it needs
pub struct Client {
    lines: std::io::BufReader<std::net::TcpStream>,
}

#[allow(dead_code)]
impl Client {
    pub fn connect(server: &iomux_engine::Server) -> Client {
        Client::on(std::net::TcpStream::connect(server.local_addr()).unwrap())
    }

    /// A client on `stream`, once its welcome was read.
    pub fn on(stream: std::net::TcpStream) -> Client {
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut client = Client {
            lines: std::io::BufReader::new(stream),
        };
        assert_eq!(client.line(), "welcome\n");
        client
    }

    pub fn send(&mut self, text: &str) {
        use std::io::Write;
        self.lines.get_mut().write_all(text.as_bytes()).unwrap();
    }

    pub fn line(&mut self) -> String {
        use std::io::BufRead;
        let mut line = String::new();
        self.lines.read_line(&mut line).expect("a line in time");
        line
    }

    /// Nothing more has arrived (callers wait a while first, once for all).
    pub fn quiet(&mut self) -> bool {
        use std::io::{BufRead, ErrorKind};
        self.lines.get_ref().set_nonblocking(true).unwrap();
        let quiet = loop {
            match self.lines.fill_buf() {
                Ok(buf) => break buf.is_empty(),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => break e.kind() == ErrorKind::WouldBlock,
            }
        };
        self.lines.get_ref().set_nonblocking(false).unwrap();
        quiet
    }

    /// The stream underneath, to read raw bytes.
    pub fn stream(&mut self) -> &mut std::io::BufReader<std::net::TcpStream> {
        &mut self.lines
    }
}

/// One `read`, retried while it fails as interrupted. A blocking socket
/// read with a timeout (SO_RCVTIMEO, as every test client sets) is not
/// restarted by the kernel: when the thread is interrupted meanwhile it
/// fails with EINTR, which a caller of `Read::read` must retry
/// (`read_exact`, `read_to_end` and `read_line` do it themselves).
#[allow(dead_code)] // each test file uses what it needs
pub fn read_some(stream: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
