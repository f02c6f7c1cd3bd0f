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

/// The names of `Engine::ALL`'s engines that do (`true`) or do not have an event loop.
#[allow(dead_code)] // each test file uses what it needs
pub fn engines_with_loop(with: bool) -> Vec<&'static str> {
    iomux_engine::Engine::ALL
        .iter()
        .filter(|e| e.carries_out_commands() == with)
        .map(|e| e.name())
        .collect()
}
