//! The server's pool of worker threads for blocking work
//! ([`iomux_proto::Context::spawn_blocking`], libuv's `uv_queue_work`):
//! work queued from any loop runs on one of at most `blocking_threads`
//! threads, and its result goes back to the loop of the connection that
//! asked, through that loop's mailbox, as a job that hands it to the
//! connection's service. The threads start on first use (a server that
//! never blocks has none) and stay until the server stops; the queue is
//! bounded (`blocking_queue`): past it, `spawn` fails at once.

use crate::hub::Hub;
use crate::loop_api::LoopCx;
use iomux_proto::{BlockingPool, BlockingWork, ConnId};
use std::collections::VecDeque;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// The pool, shared by every loop of a server.
#[derive(Debug)]
pub(crate) struct Workers {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    ready: Condvar,
    hub: Arc<Hub>,
    max_threads: usize,
    max_queued: usize,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Task>,
    /// Threads started, and those of them waiting for work.
    started: usize,
    idle: usize,
    stopping: bool,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("queued", &self.queue.len())
            .field("started", &self.started)
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

struct Task {
    conn: ConnId,
    key: u64,
    work: BlockingWork,
}

impl Workers {
    /// A pool of at most `max_threads` threads and `max_queued` works
    /// waiting for one, whose results reach the loops through `hub`.
    pub(crate) fn new(hub: Arc<Hub>, max_threads: usize, max_queued: usize) -> Workers {
        Workers {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                ready: Condvar::new(),
                hub,
                max_threads: max_threads.max(1),
                max_queued: max_queued.max(1),
            }),
        }
    }

    /// The server stops: the threads end after the work they are running;
    /// work still queued is dropped.
    pub(crate) fn stop(&self) {
        let mut state = self.shared.lock();
        state.stopping = true;
        state.queue.clear();
        drop(state);
        self.shared.ready.notify_all();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl BlockingPool for Workers {
    fn spawn(&self, conn: ConnId, key: u64, work: BlockingWork) -> io::Result<()> {
        let shared = &self.shared;
        let mut state = shared.lock();
        if state.stopping {
            return Err(io::Error::other(
                "cannot run blocking work: the server is shutting down",
            ));
        }
        if state.queue.len() >= shared.max_queued {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "cannot run blocking work: its queue is full ({} waiting for {} worker \
                     threads); try again later, or raise Config::blocking_queue or \
                     Config::blocking_threads",
                    state.queue.len(),
                    shared.max_threads
                ),
            ));
        }
        state.queue.push_back(Task { conn, key, work });
        if state.queue.len() > state.idle && state.started < shared.max_threads {
            let n = state.started;
            let worker = self.shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("iomux-worker-{n}"))
                .spawn(move || worker.run());
            match spawned {
                Ok(_) => state.started += 1,
                // The work waits for a thread that runs; with none, it cannot run.
                Err(e) if state.started == 0 => {
                    state.queue.pop_back();
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot run blocking work: no worker thread could start: {e}"),
                    ));
                }
                Err(_) => {}
            }
        }
        drop(state);
        shared.ready.notify_one();
        Ok(())
    }
}

impl Shared {
    /// A worker thread: run queued work until the server stops; each
    /// result (or the panic that ended it) goes to the asking connection's
    /// loop.
    fn run(&self) {
        loop {
            let task = {
                let mut state = self.lock();
                loop {
                    if state.stopping {
                        return;
                    }
                    if let Some(task) = state.queue.pop_front() {
                        break task;
                    }
                    state.idle += 1;
                    state = self.ready.wait(state).unwrap_or_else(|p| p.into_inner());
                    state.idle -= 1;
                }
            };
            let Task { conn, key, work } = task;
            let result = catch_unwind(AssertUnwindSafe(work)).map_err(|panic| {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".into());
                io::Error::other(format!("the blocking work panicked: {why}"))
            });
            // A loop that is gone (the server stopped) drops it.
            self.hub.post_job(
                conn.loop_index(),
                Box::new(move |loop_cx: &mut LoopCx| loop_cx.blocking_done(conn, key, result)),
            );
        }
    }
}
