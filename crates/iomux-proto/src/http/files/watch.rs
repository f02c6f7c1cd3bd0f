//! Change notification for the open-file cache: one inotify instance
//! watching each cached file and every directory on the way to it, so that a
//! hit costs a look at the queue instead of a `stat` by path: a load from
//! memory where the thread's doorbell on the queue is armed and silent
//! ([`bell`](super::bell)), else one read of the (usually empty) queue.
//!
//! Any event at all (a write, a rename, an entry created or removed in a
//! watched directory, a lost event) bumps one generation number; an entry
//! validated at an older generation is revalidated by `stat` on its next hit
//! and watched again. The kernel queues an event before the call that caused
//! it returns (and rings the bell before the call that read the request
//! returns), so a change made before a request was sent is read by that
//! request's lookup: a replaced file is still seen by the very next request.
//! Where inotify or `/proc` is missing, or the watch limit is reached, an
//! entry is not watched and every hit revalidates it by `stat` as before.

use super::bell::QueueToken;
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::io::Errno;
use std::collections::HashSet;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// What changes a cached file: its bytes, its metadata (a rename over it
/// drops its link count), or its name.
const FILE_EVENTS: WatchFlags = WatchFlags::MODIFY
    .union(WatchFlags::ATTRIB)
    .union(WatchFlags::CLOSE_WRITE)
    .union(WatchFlags::MOVE_SELF)
    .union(WatchFlags::DELETE_SELF);

/// What changes where a path leads: an entry created, removed or renamed in
/// a directory on the way, the directory itself renamed or removed, or its
/// permissions (`ATTRIB` also reports its entries' metadata changes: a
/// spurious revalidation at worst).
const DIRECTORY_EVENTS: WatchFlags = WatchFlags::CREATE
    .union(WatchFlags::DELETE)
    .union(WatchFlags::MOVED_FROM)
    .union(WatchFlags::MOVED_TO)
    .union(WatchFlags::MOVE_SELF)
    .union(WatchFlags::DELETE_SELF)
    .union(WatchFlags::ATTRIB)
    .union(WatchFlags::ONLYDIR);

/// An inotify instance and the generation its events have reached.
#[derive(Debug)]
pub(crate) struct Watcher {
    inotify: OwnedFd,
    /// The instance's identity for the threads' bells on it.
    token: QueueToken,
    /// Reads of the event queue so far.
    reads: u64,
    /// Watches added so far.
    adds: u64,
    generation: u64,
    /// Watch descriptors held, so that their number stays bounded: at
    /// `limit` the instance is replaced by a fresh one (every entry then
    /// revalidates once and is watched again).
    watches: HashSet<i32>,
    limit: usize,
    /// Directories watched since the last event read: not watched again
    /// (each `inotify_add_watch` walks the path) until any event empties
    /// this, as moving, removing or replacing one of them is an event.
    directories: HashSet<String>,
}

impl Watcher {
    /// A watcher holding at most `limit` watches; `None` where inotify is
    /// refused (out of instances, or no inotify in this kernel).
    pub(crate) fn new(limit: usize) -> Option<Watcher> {
        Some(Watcher {
            inotify: fresh_instance()?,
            token: QueueToken::default(),
            reads: 0,
            adds: 0,
            generation: 0,
            watches: HashSet::new(),
            limit: limit.max(1),
            directories: HashSet::new(),
        })
    }

    /// The generation after every event queued so far (read unless the
    /// thread's bell says none came since the last read).
    pub(crate) fn poll(&mut self) -> u64 {
        let Watcher {
            inotify,
            token,
            watches,
            reads,
            ..
        } = self;
        let changed = token.read_unless_quiet(inotify.as_fd(), || {
            *reads += 1;
            read_events(inotify.as_fd(), watches)
        });
        if changed == Some(true) {
            self.next_generation();
        }
        self.generation
    }

    /// Something changed (or may have): entries validated before are
    /// checked again, and directories watched again.
    fn next_generation(&mut self) {
        self.generation += 1;
        self.directories.clear();
    }

    /// Reads of the event queue so far (hits whose thread's bell was armed
    /// and silent made none).
    #[cfg(test)]
    pub(crate) fn reads(&self) -> u64 {
        self.reads
    }

    /// Watches added so far (`inotify_add_watch` calls that succeeded).
    #[cfg(test)]
    pub(crate) fn adds(&self) -> u64 {
        self.adds
    }

    /// Watch the root (`root`, a descriptor of it), every directory on the
    /// way to the file `relative`, and the file (`file`, open on it); false
    /// if any of them could not be watched.
    pub(crate) fn watch_path(
        &mut self,
        root: BorrowedFd<'_>,
        relative: &str,
        file: BorrowedFd<'_>,
    ) -> bool {
        self.watch_directories(root, relative) && self.watch_file(file)
    }

    /// Watch the root (`root`, a descriptor of it) and every directory on
    /// the way to the file `relative`, outermost first; false if any of them
    /// could not be watched.
    pub(crate) fn watch_directories(&mut self, root: BorrowedFd<'_>, relative: &str) -> bool {
        let mut path = descriptor_path(root);
        if !self.watch_directory(&path) {
            return false;
        }
        let Some((directories, _name)) = relative.rsplit_once('/') else {
            return true;
        };
        for name in directories.split('/') {
            path.push('/');
            path.push_str(name);
            if !self.watch_directory(&path) {
                return false;
            }
        }
        true
    }

    fn watch_directory(&mut self, path: &str) -> bool {
        if self.directories.contains(path) {
            return true;
        }
        let watched = self.watch(path, DIRECTORY_EVENTS);
        if watched {
            self.directories.insert(path.to_owned());
        }
        watched
    }

    /// Watch the open regular file `file` (the inode it is, whatever its
    /// name); false if it could not be watched.
    fn watch_file(&mut self, file: BorrowedFd<'_>) -> bool {
        self.watch(&descriptor_path(file), FILE_EVENTS)
    }

    fn watch(&mut self, path: &str, events: WatchFlags) -> bool {
        if self.watches.len() >= self.limit {
            // Watches of files long evicted add up: start afresh.
            if let Some(fresh) = fresh_instance() {
                self.inotify = fresh;
                self.token = QueueToken::default();
                self.watches.clear();
            }
            self.next_generation();
        }
        match inotify::add_watch(&self.inotify, path, events) {
            Ok(wd) => {
                self.adds += 1;
                self.watches.insert(wd);
                true
            }
            Err(_) => false,
        }
    }

    #[cfg(test)]
    pub(crate) fn watch_count(&self) -> usize {
        self.watches.len()
    }
}

/// Read every queued event, forgetting watches the kernel dropped; whether
/// there was any (or a failure: then trust nothing).
fn read_events(inotify: BorrowedFd<'_>, watches: &mut HashSet<i32>) -> bool {
    let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
    let mut events = inotify::Reader::new(inotify, &mut buf);
    let mut changed = false;
    loop {
        match events.next() {
            Ok(event) => {
                changed = true;
                if event.events().contains(ReadFlags::IGNORED) {
                    watches.remove(&event.wd());
                }
            }
            Err(Errno::AGAIN) => return changed,
            Err(Errno::INTR) => {}
            // Nothing else is expected; whatever it was, trust nothing.
            Err(_) => return true,
        }
    }
}

fn fresh_instance() -> Option<OwnedFd> {
    inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC).ok()
}

/// The `/proc` name of what `fd` is open on: watching it watches that very
/// inode, and names beneath a directory's resolve from it.
fn descriptor_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}
