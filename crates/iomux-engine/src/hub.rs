//! How connections of one server reach each other across loop threads: one
//! mailbox per loop. A protocol's `send_to` or `close_conn` for a connection
//! of another loop is posted to that loop's mailbox, and its waker makes the
//! loop take it on its next pass; a `send_to_many` posts one message per
//! loop, for all of that loop's receivers. Work posted with
//! [`crate::Handle::run_in_loop`] goes the same way.

use crate::loop_api::Job;
use crate::session::Session;
use crate::stats::LoopStats;
use crate::table::Timers;
use iomux::{Token, Waker};
use iomux_proto::{Command, ConnId, Service};
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
    /// loop does (an id from another server, or a command with no target:
    /// a `SendMany` is split by loop in [`Dispatch`], then posted).
    pub(crate) fn post(&self, command: Command) -> bool {
        command
            .target()
            .is_some_and(|target| self.post_to(target.loop_index(), command))
    }

    /// Post one frame for many receivers from outside the loops: one
    /// message per loop that serves some of them; false when some id names
    /// no loop (the others are still posted).
    pub(crate) fn post_many(&self, to: Vec<ConnId>, bytes: Arc<[u8]>) -> bool {
        let (by_loop, misaddressed) = split_by_loop(to, self.loops());
        for (index, to) in by_loop.into_iter().enumerate() {
            if !to.is_empty() {
                let bytes = bytes.clone();
                self.post_to(index, Command::SendMany { to, bytes });
            }
        }
        misaddressed == 0
    }

    /// Post a command for loop `index`; false when there is no such loop.
    fn post_to(&self, index: usize, command: Command) -> bool {
        let Some(mailbox) = self.loops.get(index) else {
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
    /// by the asker's token; a [`Command::SendMany`], whose receivers here
    /// are all of this loop: [`MANY`]).
    pub local: Vec<(Token, Command)>,
    /// Mail taken from the hub, reused pass after pass.
    mail: Vec<Command>,
}

/// The token a [`Command::SendMany`] is filed under in [`Dispatch::local`]
/// (it names its receivers itself).
pub(crate) const MANY: Token = Token(usize::MAX);

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
        if let Command::SendMany { to, bytes } = command {
            return self.route_many(to, bytes, route, stats);
        }
        let Some(target) = command.target() else {
            return;
        };
        if target.loop_index() == route.index {
            self.local.push((Token(target.token()), command));
        } else if !route.hub.post(command) {
            stats.misaddressed += 1;
        }
    }

    /// One frame for many receivers: those of this loop stay one command
    /// here, those of each other loop go there as one message.
    fn route_many(
        &mut self,
        to: Vec<ConnId>,
        bytes: Arc<[u8]>,
        route: Route,
        stats: &mut LoopStats,
    ) {
        // The usual case (one loop, or a channel's subscribers on one): as is.
        if to.iter().all(|id| id.loop_index() == route.index) {
            self.local.push((MANY, Command::SendMany { to, bytes }));
            return;
        }
        let (by_loop, misaddressed) = split_by_loop(to, route.hub.loops());
        stats.misaddressed += misaddressed;
        for (index, to) in by_loop.into_iter().enumerate() {
            if to.is_empty() {
                continue;
            }
            let command = Command::SendMany {
                to,
                bytes: bytes.clone(),
            };
            if index == route.index {
                self.local.push((MANY, command));
            } else {
                // `index` is one of the hub's loops: posting cannot fail.
                route.hub.post_to(index, command);
            }
        }
    }
}

/// `to` grouped by the loop that serves each id, and how many ids name no
/// loop of `loops`.
fn split_by_loop(to: Vec<ConnId>, loops: usize) -> (Vec<Vec<ConnId>>, u64) {
    let mut by_loop: Vec<Vec<ConnId>> = vec![Vec::new(); loops];
    let mut misaddressed = 0;
    for id in to {
        match by_loop.get_mut(id.loop_index()) {
            Some(ids) => ids.push(id),
            None => misaddressed += 1,
        }
    }
    (by_loop, misaddressed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use iomux_proto::ConnId;

    #[test]
    fn one_frame_for_many_is_one_message_per_loop_from_outside() {
        let hub = Hub::new(2);
        let to = vec![ConnId::new(1, 5), ConnId::new(0, 3), ConnId::new(1, 6)];
        assert!(hub.post_many(to, b"x"[..].into()));
        let (mut zero, mut one) = (Vec::new(), Vec::new());
        hub.take(0, &mut zero);
        hub.take(1, &mut one);
        assert_eq!(zero.len(), 1);
        assert_eq!(one.len(), 1);
        assert!(
            matches!(&one[0], Command::SendMany { to, .. } if to.len() == 2),
            "{one:?}"
        );
        let stray = vec![ConnId::new(0, 3), ConnId::new(7, 1)];
        assert!(!hub.post_many(stray, b"x"[..].into()), "no loop 7");
        hub.take(0, &mut zero);
        assert_eq!(zero.len(), 2, "the served id still gets it");
    }

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

    #[test]
    fn one_frame_for_many_is_one_command_per_loop() {
        let hub = Hub::new(3);
        let route = Route {
            index: 0,
            hub: &hub,
        };
        let (mut dispatch, mut stats) = (Dispatch::default(), LoopStats::default());
        let ids = [(1, 5), (0, 2), (2, 3), (1, 6), (7, 1), (0, 4)].map(|(l, t)| ConnId::new(l, t));
        let bytes: Arc<[u8]> = b"frame"[..].into();
        let many = |to: &[ConnId]| Command::SendMany {
            to: to.to_vec(),
            bytes: bytes.clone(),
        };
        dispatch.route(many(&ids), route, &mut stats);
        assert_eq!(stats.misaddressed, 1, "no loop 7");
        assert_eq!(dispatch.local, [(MANY, many(&[ids[1], ids[5]]))]);
        let mut mail = Vec::new();
        hub.take(1, &mut mail);
        assert_eq!(mail, [many(&[ids[0], ids[3]])], "one message for loop 1");
        mail.clear();
        hub.take(2, &mut mail);
        assert_eq!(mail, [many(&[ids[2]])]);
        // All of this loop's: kept whole.
        dispatch.local.clear();
        dispatch.route(many(&[ids[1], ids[5]]), route, &mut stats);
        assert_eq!(dispatch.local, [(MANY, many(&[ids[1], ids[5]]))]);
    }
}
