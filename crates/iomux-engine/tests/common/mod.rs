//! The engine lists that engine tests expand over, written once; each test
//! file's guard checks what it tested against `Engine::ALL`.

/// Calls `$then!` with the engines that have an event loop (they carry out
/// commands), as `module => "name"` pairs.
macro_rules! loop_engines {
    ($then:ident) => {
        $then! {
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
    ($then:ident) => {
        $then! {
            threads => "threads",
            blocking => "blocking",
            nonblocking => "nonblocking",
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
