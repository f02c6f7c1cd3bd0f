//! The servers the lab runs: the one list of engines (`iomux serve
//! --backend B [--trigger T]`), from which every experiment picks by what an
//! engine is, never by position.

/// One server configuration: `--backend`, and the trigger where it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Engine {
    pub backend: &'static str,
    pub trigger: &'static str,
}

/// The trigger column of the completion engine: it is told when I/O is done,
/// not when it could be done, so it has no readiness trigger.
pub(crate) const COMPLETION: &str = "completion";

/// Every engine the lab runs, in report order: `iomux_engine::Engine::ALL`,
/// the one list of engines, less the io_uring poll selector's modes (the lab
/// measures that one as a selector, in dispatch).
pub(crate) static ENGINES: std::sync::LazyLock<Vec<Engine>> = std::sync::LazyLock::new(|| {
    iomux_engine::Engine::ALL
        .iter()
        .filter(|e| e.backend_name() != "uring-poll")
        .map(|e| Engine::new(e.backend_name(), trigger_name(e)))
        .collect()
});

/// The lab's trigger column for an engine.
fn trigger_name(engine: &iomux_engine::Engine) -> &'static str {
    use iomux::Trigger;
    match engine.trigger() {
        Some(Trigger::Edge) => "edge",
        Some(Trigger::Oneshot) => "oneshot",
        Some(_) => "level",
        None if *engine == iomux_engine::Engine::Uring => COMPLETION,
        // Blocking sockets: each read and write waits for its own readiness.
        None => "level",
    }
}

impl Engine {
    pub(crate) const fn new(backend: &'static str, trigger: &'static str) -> Engine {
        Engine { backend, trigger }
    }

    /// The engine of `ENGINES` with this backend and trigger.
    ///
    /// Panics when there is none: the callers name engines of the list.
    pub(crate) fn of(backend: &str, trigger: &str) -> Engine {
        *ENGINES
            .iter()
            .find(|e| e.backend == backend && e.trigger == trigger)
            .unwrap_or_else(|| panic!("no engine {backend}/{trigger} in the lab's list"))
    }

    /// The engine of `ENGINES` with this backend (its first trigger).
    pub(crate) fn backend(backend: &str) -> Engine {
        *ENGINES
            .iter()
            .find(|e| e.backend == backend)
            .unwrap_or_else(|| panic!("no engine {backend} in the lab's list"))
    }

    /// The event loop over epoll, edge-triggered: what the others are compared with.
    pub(crate) fn epoll_edge() -> Engine {
        Engine::of("epoll", "edge")
    }

    /// The two newer I/O models: signal-driven readiness and io_uring completions.
    pub(crate) fn is_newer(&self) -> bool {
        matches!(self.backend, "sigio" | "uring")
    }

    /// Needs io_uring.
    pub(crate) fn needs_uring(&self) -> bool {
        self.trigger == COMPLETION
    }

    /// Reaches only descriptors below FD_SETSIZE.
    pub(crate) fn is_select(&self) -> bool {
        self.backend == "select"
    }

    /// Serves one connection at a time.
    pub(crate) fn is_blocking(&self) -> bool {
        self.backend == "blocking"
    }

    pub(crate) fn args(&self) -> Vec<&'static str> {
        let mut a = vec!["--backend", self.backend];
        if self.backend == "epoll" {
            a.extend(["--trigger", self.trigger]);
        }
        a
    }

    pub(crate) fn label(&self) -> String {
        if self.backend == "epoll" {
            format!("epoll {}", self.trigger)
        } else {
            self.backend.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engine_is_listed_once_and_found_by_name() {
        for (i, e) in ENGINES.iter().enumerate() {
            assert_eq!(Engine::of(e.backend, e.trigger), *e);
            assert!(!ENGINES[i + 1..].contains(e), "{e:?} twice");
        }
        assert_eq!(ENGINES.iter().filter(|e| e.is_newer()).count(), 2);
        assert_eq!(Engine::backend("poll").label(), "poll");
        assert_eq!(
            Engine::epoll_edge().args(),
            ["--backend", "epoll", "--trigger", "edge"]
        );
    }
}
