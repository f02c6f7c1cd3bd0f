//! Stopping a server gracefully on SIGINT or SIGTERM, as `iomux serve` does.

use std::io;

/// SIGINT and SIGTERM, blocked so that they wait for [`StopSignals::wait`]
/// instead of killing the process or interrupting a loop.
///
/// Call [`StopSignals::block`] before [`crate::Server::start`]: threads take
/// the signal mask of the thread that starts them, and a stop signal sent to
/// the process goes to any thread that does not block it.
///
/// ```no_run
/// use iomux_engine::{Config, Engine, Server, StopSignals};
/// let signals = StopSignals::block()?;
/// let server = Server::start(Config::default(), Engine::ALL[0], iomux_proto::Echo::plain)?;
/// signals.wait(); // until Ctrl-C or `kill`
/// server.shutdown(); // stop accepting, let in-flight work finish
/// let stats = server.join()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct StopSignals {
    set: libc::sigset_t,
}

impl StopSignals {
    /// Block SIGINT and SIGTERM in the calling thread and in every thread it
    /// starts from now on.
    pub fn block() -> io::Result<StopSignals> {
        // SAFETY: sigemptyset/sigaddset initialise a local set.
        let set = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            set
        };
        // SAFETY: `set` is initialised; only this thread's mask changes.
        let failed = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if failed != 0 {
            let e = io::Error::from_raw_os_error(failed);
            return Err(io::Error::new(
                e.kind(),
                format!("cannot block SIGINT and SIGTERM: {e}"),
            ));
        }
        Ok(StopSignals { set })
    }

    /// Wait until SIGINT or SIGTERM arrives (or is already pending); returns
    /// which. Call it again to wait for the next one (to stop at once on a
    /// second signal while a graceful shutdown runs, say).
    pub fn wait(&self) -> libc::c_int {
        let mut sig = 0;
        // SAFETY: `self.set` is an initialised sigset and `sig` a live int;
        // sigwait fails only on an invalid set, which this one is not.
        while unsafe { libc::sigwait(&self.set, &mut sig) } != 0 {}
        sig
    }
}

impl std::fmt::Debug for StopSignals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StopSignals(SIGINT, SIGTERM)")
    }
}
