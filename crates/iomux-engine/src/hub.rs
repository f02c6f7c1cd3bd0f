//! How connections of one server reach each other across loop threads: one
//! mailbox per loop. A protocol's `send_to` or `close_conn` for a connection
//! of another loop is posted to that loop's mailbox, and its waker makes the
//! loop take it on its next pass. Work posted with
//! [`crate::Handle::run_in_loop`] goes the same way.

use crate::loop_api::Job;
use crate::session::Session;
use crate::stats::LoopStats;
use crate::table::Timers;
use iomux::{Token, Waker};
use iomux_proto::{Command, Service};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

/// The mailboxes of every loop of a server.
#[derive(Debug, Default)]
pub(crate) struct Hub {
    loops: Vec<Mailbox>,
}

#[derive(Default)]
struct Mailbox {
    queue: Mutex<Vec<Command>>,
    /// Work to run in the loop, posted from any thread.
    jobs: Mutex<Vec<Job>>,
    waker: OnceLock<Waker>,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox").finish_non_exhaustive()
    }
}

impl Hub {
    pub(crate) fn new(loops: usize) -> Arc<Hub> {
        Arc::new(Hub {
            loops: (0..loops).map(|_| Mailbox::default()).collect(),
        })
    }

    /// The waker of loop `index`, set once the loop has made it. What was
    /// posted before has had no wake: it gets one now.
    pub(crate) fn set_waker(&self, index: usize, waker: Waker) {
        if let Some(mailbox) = self.loops.get(index) {
            let _ = mailbox.waker.set(waker.clone());
            let pending = |m: &Mailbox| {
                let jobs = m.jobs.lock().unwrap_or_else(|p| p.into_inner()).len();
                jobs + m.queue.lock().unwrap_or_else(|p| p.into_inner()).len()
            };
            if pending(mailbox) > 0 {
                let _ = waker.wake();
            }
        }
    }

    /// Post a command for the loop that serves its target; false when no
    /// loop does (an id from another server, or a command with no target).
    pub(crate) fn post(&self, command: Command) -> bool {
        let Some(target) = command.target() else {
            return false;
        };
        let Some(mailbox) = self.loops.get(target.loop_index()) else {
            return false;
        };
        let was_empty = {
            let mut queue = mailbox.queue.lock().unwrap_or_else(|p| p.into_inner());
            queue.push(command);
            queue.len() == 1
        };
        // One wake per batch: the loop takes the whole queue at once.
        if was_empty {
            if let Some(waker) = mailbox.waker.get() {
                let _ = waker.wake();
            }
        }
        true
    }

    /// How many loops the server has.
    pub(crate) fn loops(&self) -> usize {
        self.loops.len()
    }

    /// Post work for loop `index` and wake it; false when there is no such loop.
    pub(crate) fn post_job(&self, index: usize, job: Job) -> bool {
        let Some(mailbox) = self.loops.get(index) else {
            return false;
        };
        mailbox
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(job);
        if let Some(waker) = mailbox.waker.get() {
            let _ = waker.wake();
        }
        true
    }

    /// Take loop `index`'s posted work into `into`.
    pub(crate) fn take_jobs(&self, index: usize, into: &mut Vec<Job>) {
        if let Some(mailbox) = self.loops.get(index) {
            into.append(&mut mailbox.jobs.lock().unwrap_or_else(|p| p.into_inner()));
        }
    }

    /// Take loop `index`'s mail into `into`.
    pub(crate) fn take(&self, index: usize, into: &mut Vec<Command>) {
        if let Some(mailbox) = self.loops.get(index) {
            let mut queue = mailbox.queue.lock().unwrap_or_else(|p| p.into_inner());
            into.append(&mut queue);
        }
    }
}

/// What a loop does with its connections' commands: the caller's own timers
/// are set or cancelled at once, a command for a connection of another loop
/// is posted there, and the rest (writes to and closes of this loop's
/// connections, and the caller's connects) are left in [`Dispatch::local`]
/// for the engine, which knows how it sends, connects and closes.
#[derive(Debug, Default)]
pub(crate) struct Dispatch {
    /// Commands for connections of this loop, by their token (a connect:
    /// by the asker's token).
    pub local: Vec<(Token, Command)>,
    /// Mail taken from the hub, reused pass after pass.
    mail: Vec<Command>,
}

/// Where a loop's commands may go: its place among the server's loops and
/// the hub that reaches the others.
#[derive(Clone, Copy)]
pub(crate) struct Route<'a> {
    pub index: usize,
    pub hub: &'a Hub,
}

impl Dispatch {
    /// Sort the commands of a call on `caller` (whose session, if it is
    /// still there, is `session`), emptying `commands`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn sort<P: Service>(
        &mut self,
        commands: &mut Vec<Command>,
        caller: Token,
        mut session: Option<&mut Session<P>>,
        timers: &mut Timers,
        now: Instant,
        route: Route,
        stats: &mut LoopStats,
    ) {
        for command in commands.drain(..) {
            match command {
                Command::SetTimer { key, after } => {
                    if let Some(session) = session.as_deref_mut() {
                        let id = timers.insert_key(now + after, caller, key);
                        if let Some(old) = session.set_timer(key, id) {
                            timers.cancel(old);
                        }
                    }
                }
                Command::CancelTimer(key) => {
                    if let Some(id) = session.as_deref_mut().and_then(|s| s.cancel_timer(key)) {
                        timers.cancel(id);
                    }
                }
                // Made on the asker's loop, which learns how it went.
                Command::Connect { .. } => self.local.push((caller, command)),
                Command::Link { to, .. } => {
                    // Each side keeps the other: here the caller, there `to`.
                    if let Some(session) = session.as_deref_mut() {
                        session.add_link(to);
                    }
                    self.route(command, route, stats);
                }
                other => self.route(other, route, stats),
            }
        }
    }

    /// Take this loop's mail from the hub into [`Dispatch::local`].
    pub(crate) fn take_mail(&mut self, route: Route, stats: &mut LoopStats) {
        let mut mail = std::mem::take(&mut self.mail);
        route.hub.take(route.index, &mut mail);
        for command in mail.drain(..) {
            self.route(command, route, stats);
        }
        self.mail = mail;
    }

    /// Route commands that follow from the engine's own work (a closed
    /// connection's links, a paused or resumed writer), emptying `commands`.
    pub(crate) fn route_all(
        &mut self,
        commands: &mut Vec<Command>,
        route: Route,
        stats: &mut LoopStats,
    ) {
        for command in commands.drain(..) {
            self.route(command, route, stats);
        }
    }

    fn route(&mut self, command: Command, route: Route, stats: &mut LoopStats) {
        let Some(target) = command.target() else {
            return;
        };
        if target.loop_index() == route.index {
            self.local.push((Token(target.token()), command));
        } else if !route.hub.post(command) {
            stats.misaddressed += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iomux_proto::ConnId;

    #[test]
    fn mail_reaches_the_loop_of_its_target_and_only_that_one() {
        let hub = Hub::new(2);
        let to = ConnId::new(1, 5);
        assert!(hub.post(Command::Send {
            to,
            bytes: b"x".to_vec()
        }));
        assert!(hub.post(Command::Close(to)));
        assert!(!hub.post(Command::Close(ConnId::new(7, 5))), "no loop 7");
        assert!(!hub.post(Command::CancelTimer(1)), "no target");
        let mut mail = Vec::new();
        hub.take(0, &mut mail);
        assert!(mail.is_empty());
        hub.take(1, &mut mail);
        assert_eq!(mail.len(), 2);
        hub.take(1, &mut mail);
        assert_eq!(mail.len(), 2, "taken once");
    }
}
