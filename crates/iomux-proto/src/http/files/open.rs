//! Opening files beneath the root with the kernel's help, and the bounded
//! open-file cache in front of it.
//!
//! Every open goes through `openat2(root, path, RESOLVE_BENEATH |
//! RESOLVE_NO_MAGICLINKS)`: the kernel refuses any resolution that leaves the
//! root, whether by `..` or by a symbolic link placed anywhere on the way.
//! Where openat2 is missing (Linux before 5.6, or filtered by seccomp) each
//! component is opened in turn with `O_NOFOLLOW`, so no symbolic link is
//! followed at all. Files are opened `O_NONBLOCK | O_NOCTTY`: a FIFO opens
//! without waiting for a writer and a terminal cannot become the process's
//! controlling one; `fstat` then rejects anything but regular files and
//! directories before a byte is read.

use rustix::fs::{openat, openat2, AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

use super::watch::Watcher;

/// What kind of file a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file: served.
    Regular,
    /// A directory: its index or listing.
    Directory,
}

/// The metadata a response needs, from one `fstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Regular file or directory.
    pub kind: Kind,
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime_secs: i64,
    /// Nanoseconds past `mtime_secs`.
    pub mtime_nsec: u32,
}

impl Meta {
    /// The same file (device and inode), whatever its size or times now.
    fn same_file(&self, other: &Meta) -> bool {
        (self.dev, self.ino) == (other.dev, other.ino)
    }
}

/// An open file or directory beneath the root.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The open description; shared with the cache and with responses that
    /// are still sending it.
    pub file: Arc<File>,
    /// Its metadata when opened (or last revalidated).
    pub meta: Meta,
}

/// Why a path beneath the root was not opened.
#[derive(Debug)]
pub enum OpenError {
    /// No such file (or a component is not a directory): `404`.
    NotFound,
    /// It exists but is not to be served: outside the root through a link, a
    /// FIFO, a device or a socket, or not readable: `403`.
    Forbidden,
    /// Anything else (out of descriptors, I/O error): `500`.
    Io(std::io::Error),
}

const FILE_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::NONBLOCK)
    .union(OFlags::NOCTTY)
    .union(OFlags::CLOEXEC);

/// The served directory.
#[derive(Debug)]
pub struct Root {
    dir: OwnedFd,
    /// The kernel has openat2 (else the per-component walk is used).
    beneath: bool,
}

impl Root {
    /// Open `path` as the root. Errors name the path and the reason.
    pub fn open(path: &Path) -> std::io::Result<Root> {
        let dir = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot open {} as a directory: {e}", path.display()),
            )
        })?;
        let beneath = match openat2(
            &dir,
            ".",
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            resolve_flags(),
        ) {
            Ok(_) => true,
            Err(Errno::NOSYS | Errno::PERM | Errno::INVAL | Errno::TOOBIG) => false,
            Err(e) => return Err(e.into()),
        };
        Ok(Root { dir, beneath })
    }

    /// The same root, but walking component by component with `O_NOFOLLOW`
    /// as on kernels without openat2 (tests use it to check that path).
    pub fn without_openat2(mut self) -> Root {
        self.beneath = false;
        self
    }

    /// Whether opens use openat2 (false: the `O_NOFOLLOW` walk).
    pub fn uses_openat2(&self) -> bool {
        self.beneath
    }

    /// Open `relative` (components joined by `/`, empty for the root itself)
    /// beneath the root; only a regular file or a directory is returned.
    pub fn open_beneath(&self, relative: &str) -> Result<Opened, OpenError> {
        let path = if relative.is_empty() { "." } else { relative };
        let fd = if self.beneath {
            openat2(&self.dir, path, FILE_FLAGS, Mode::empty(), resolve_flags())
                .map_err(open_error)?
        } else {
            self.walk(path)?
        };
        opened(fd)
    }

    /// Open `relative` as [`open_beneath`](Self::open_beneath) does, but
    /// only if no symbolic link is on the way: `Ok(None)` if one is. What
    /// such a path leads to depends on nothing but the directories on it.
    fn open_without_links(&self, relative: &str) -> Result<Option<OwnedFd>, OpenError> {
        let path = if relative.is_empty() { "." } else { relative };
        if !self.beneath {
            // The walk follows no link at all.
            return self.walk(path).map(Some);
        }
        match openat2(
            &self.dir,
            path,
            FILE_FLAGS,
            Mode::empty(),
            resolve_flags() | ResolveFlags::NO_SYMLINKS,
        ) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::LOOP) => Ok(None),
            Err(e) => Err(open_error(e)),
        }
    }

    fn walk(&self, path: &str) -> Result<OwnedFd, OpenError> {
        let mut components = path.split('/').peekable();
        let mut dir: Option<OwnedFd> = None;
        while let Some(name) = components.next() {
            let at = dir.as_ref().map_or(self.dir.as_fd(), |d| d.as_fd());
            let last = components.peek().is_none();
            let flags = if last {
                FILE_FLAGS | OFlags::NOFOLLOW
            } else {
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
            };
            if name == ".." {
                return Err(OpenError::Forbidden);
            }
            dir = Some(openat(at, name, flags, Mode::empty()).map_err(open_error)?);
        }
        dir.ok_or(OpenError::NotFound)
    }

    /// The metadata of `relative` by path (following links, without opening):
    /// what the cache compares with the file it holds.
    fn stat(&self, relative: &str) -> Option<rustix::fs::Stat> {
        rustix::fs::statat(&self.dir, relative, AtFlags::empty()).ok()
    }
}

/// `fd` with its metadata, if it is a regular file or a directory.
fn opened(fd: OwnedFd) -> Result<Opened, OpenError> {
    let meta = meta_of(&rustix::fs::fstat(&fd).map_err(|e| OpenError::Io(e.into()))?)
        .ok_or(OpenError::Forbidden)?;
    Ok(Opened {
        file: Arc::new(File::from(fd)),
        meta,
    })
}

fn resolve_flags() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS
}

fn open_error(e: Errno) -> OpenError {
    match e {
        Errno::NOENT | Errno::NOTDIR | Errno::NAMETOOLONG => OpenError::NotFound,
        // EXDEV: the resolution left the root; ELOOP: a link refused (magic
        // link, or any link on the O_NOFOLLOW walk); ENXIO: a socket or a
        // FIFO without reader; EAGAIN/EBUSY: a device that would block.
        Errno::XDEV
        | Errno::LOOP
        | Errno::ACCESS
        | Errno::PERM
        | Errno::NXIO
        | Errno::AGAIN
        | Errno::BUSY => OpenError::Forbidden,
        e => OpenError::Io(e.into()),
    }
}

/// The metadata of a regular file or directory; `None` for anything else.
// `struct stat`'s field types differ between architectures.
#[allow(clippy::unnecessary_cast)]
pub fn meta_of(st: &rustix::fs::Stat) -> Option<Meta> {
    let kind = match FileType::from_raw_mode(st.st_mode as _) {
        FileType::RegularFile => Kind::Regular,
        FileType::Directory => Kind::Directory,
        _ => return None,
    };
    Some(Meta {
        kind,
        dev: st.st_dev as u64,
        ino: st.st_ino as u64,
        size: st.st_size as u64,
        mtime_secs: st.st_mtime as i64,
        mtime_nsec: st.st_mtime_nsec as u32,
    })
}

/// What a lookup through the cache found.
#[derive(Debug)]
pub enum Lookup<T> {
    /// A regular file, with what was derived from it (shared with the cache).
    File(Arc<T>),
    /// A directory (never cached).
    Directory(Opened),
}

/// A bounded cache of open regular files by relative path, after nginx's
/// `open_file_cache`, holding with each what was derived from it (`T`: its
/// validators, its type, the bytes of a small file).
///
/// Every hit is revalidated, so that a file replaced on disk (another inode
/// at the path) is opened afresh by the very next request and a file
/// rewritten in place (same inode, another size or time) is derived again.
/// The file and every directory on its path are watched for changes
/// (`watch.rs`): while nothing changed, a hit costs a look at the thread's
/// doorbell on the inotify queue (`bell.rs`; one read of the empty queue
/// where there is none); after any change, and for a path through a
/// symbolic link (where what it leads to depends on more than the
/// directories on it), or where inotify is missing, a hit costs one `stat`
/// by path compared with the cached metadata. When full, a file is kept
/// only from its second miss on, and it replaces the entry that has waited
/// longest in the queue unused (second chance; its descriptor closes once
/// no response is sending it any more).
#[derive(Debug)]
pub struct OpenFileCache<T> {
    capacity: usize,
    state: Mutex<CacheState<T>>,
}

#[derive(Debug)]
struct CacheState<T> {
    /// Keyed by path with foldhash (randomly seeded per map): SipHash was
    /// 212 of the ~5,200 user-space instructions a 64 KiB request costs
    /// (callgrind); keys are paths of files that exist, at most `capacity`.
    entries: HashMap<String, CacheEntry<T>, foldhash::fast::RandomState>,
    /// Lookups so far (the entries' use order), counted under the lock
    /// that each lookup takes anyway.
    lookups: u64,
    /// Keys in the order they joined the eviction queue, with the lookup
    /// at which they did ([`CacheState::evict_one`]).
    order: VecDeque<(String, u64)>,
    /// Hashes of keys missed while the cache was full, not let in then
    /// ([`CacheState::admits`]); at most `capacity`.
    seen: HashSet<u64, foldhash::fast::RandomState>,
    /// Per directory, a mask of what it holds and the generation it was
    /// read at ([`OpenFileCache::directory_mask`]); at most `capacity`.
    directory_masks: HashMap<String, (u64, u8), foldhash::fast::RandomState>,
    hits: u64,
    misses: u64,
    revalidations: u64,
    /// `None`: no change notification; every hit stats.
    watcher: Option<Watcher>,
}

impl<T> CacheState<T> {
    /// Whether `key`, missed, may join the cache: always while it has
    /// room; when full, only if it was missed before among the last
    /// `capacity` misses that found it full. A file asked for once (a
    /// crawler's; one of more files than the cache holds, asked for
    /// evenly) is then served without evicting one asked for more often,
    /// and without the watches and the second look that keeping it costs:
    /// with 5,000 files asked for at random, a cache of 1,000 cost more per
    /// request than no cache at all (bench/static-churn.sh).
    fn admits(&mut self, key: &str, capacity: usize) -> bool {
        if self.entries.len() < capacity {
            return true;
        }
        let hash = std::hash::BuildHasher::hash_one(self.entries.hasher(), key);
        if self.seen.remove(&hash) {
            return true;
        }
        if self.seen.len() >= capacity {
            self.seen.clear();
        }
        self.seen.insert(hash);
        false
    }

    /// Close the entry that has waited longest in the queue without being
    /// used since it joined it (second chance: a used one joins again at
    /// the back). Each entry passed over was used since it last joined, so
    /// the work is amortized over those uses: O(1), where looking for the
    /// least recently used entry among all of them was O(capacity) per
    /// miss (with more files than the cache holds, that made a miss cost
    /// more than no cache at all).
    fn evict_one(&mut self) {
        let now = self.lookups;
        while let Some((key, queued_at)) = self.order.pop_front() {
            let Some(entry) = self.entries.get_mut(&key) else {
                continue;
            };
            if entry.queued_at != queued_at {
                // Stale: the entry was replaced or queued again since.
                continue;
            }
            if entry.last_used > queued_at {
                entry.queued_at = now;
                self.order.push_back((key, now));
                continue;
            }
            self.entries.remove(&key);
            return;
        }
    }

    /// Put `key`, just inserted at `now`, at the back of the queue; drop
    /// the stale places once they outnumber the entries (files replaced
    /// while the cache is not full leave one each).
    fn queue(&mut self, key: String, now: u64, capacity: usize) {
        self.order.push_back((key, now));
        if self.order.len() > 2 * capacity.max(self.entries.len()) + 16 {
            let entries = &self.entries;
            self.order
                .retain(|(key, at)| entries.get(key).is_some_and(|e| e.queued_at == *at));
        }
    }
}

#[derive(Debug)]
struct CacheEntry<T> {
    opened: Opened,
    derived: Arc<T>,
    last_used: u64,
    /// The lookup at which it joined the eviction queue (last).
    queued_at: u64,
    /// Reached through no symbolic link: watching the file and the
    /// directories on its path covers every change of what it names.
    watchable: bool,
    /// The watcher's generation when the entry was last found current, if
    /// it and the directories on its path are watched.
    valid_at: Option<u64>,
    /// What its variants (precompressed siblings) were found to be.
    variants: Variants<T>,
}

/// What the variants of a cached file (by index, below 8) were found to be
/// as of one generation: looked for once per change, not on every request
/// that accepts them.
#[derive(Debug)]
struct Variants<T> {
    at: Option<u64>,
    missing: u8,
    /// Found, with their own entries current at `at`. Weak: a variant's
    /// descriptor stays counted in its own entry alone, closing with it.
    found: Vec<(u8, Weak<T>)>,
}

impl<T> Default for Variants<T> {
    fn default() -> Self {
        Variants {
            at: None,
            missing: 0,
            found: Vec::new(),
        }
    }
}

impl<T> Variants<T> {
    /// The knowledge as of `generation`, forgetting any older.
    fn at(&mut self, generation: u64) -> &mut Variants<T> {
        if self.at != Some(generation) {
            *self = Variants {
                at: Some(generation),
                ..Variants::default()
            };
        }
        self
    }
}

/// What is known of a cached file's acceptable variants (see
/// [`OpenFileCache::known_variant`]).
#[derive(Debug)]
pub(crate) enum KnownVariant<T> {
    /// This one exists and is unchanged.
    Found(Arc<T>),
    /// This one is to be looked for; `generation` is for noting the answer
    /// (`None`: the file has no entry to note it with, or changes are not
    /// watched).
    LookFor { index: u8, generation: Option<u64> },
    /// None of them exists.
    None,
}

/// Watches per cache entry before the watcher starts afresh: a file and a
/// few directories of its own.
const WATCHES_PER_ENTRY: usize = 4;

impl<T> OpenFileCache<T> {
    /// A cache of at most `capacity` open files (0: every request opens).
    pub fn new(capacity: usize) -> OpenFileCache<T> {
        let watcher = (capacity > 0)
            .then(|| Watcher::new(capacity.saturating_mul(WATCHES_PER_ENTRY) + 64))
            .flatten();
        OpenFileCache {
            capacity,
            state: Mutex::new(CacheState {
                entries: HashMap::default(),
                lookups: 0,
                order: VecDeque::new(),
                seen: HashSet::default(),
                directory_masks: HashMap::default(),
                hits: 0,
                misses: 0,
                revalidations: 0,
                watcher,
            }),
        }
    }

    /// The same cache without change notification: every hit revalidates
    /// by `stat`, as where inotify is missing (tests use it to check that
    /// path).
    pub fn without_watching(self) -> OpenFileCache<T> {
        self.lock().watcher = None;
        self
    }

    /// Whether changes are watched (else every hit stats).
    pub fn watches_changes(&self) -> bool {
        self.lock().watcher.is_some()
    }

    /// (hits, misses) so far.
    pub fn counts(&self) -> (u64, u64) {
        let state = self.lock();
        (state.hits, state.misses)
    }

    /// Lookups of a cached file that had to `stat` it (the file or a
    /// directory on its path changed, or it is not watched).
    pub fn revalidations(&self) -> u64 {
        self.lock().revalidations
    }

    #[cfg(test)]
    fn queue_reads(&self) -> u64 {
        self.lock().watcher.as_ref().map_or(0, Watcher::reads)
    }

    #[cfg(test)]
    fn watch_count(&self) -> usize {
        self.lock().watcher.as_ref().map_or(0, Watcher::watch_count)
    }

    /// Open files held now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True when it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState<T>> {
        // A panic while holding the lock leaves the state consistent (every
        // operation on it is a single insert/remove or a counter bump): keep
        // using it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `relative` beneath `root`: a regular file with what `derive` makes of
    /// it (from the cache when the cached file is still the one at that
    /// path and unchanged), or a directory. `derive` is told whether the
    /// cache keeps what it makes (reading a file into memory is worth it
    /// only then).
    pub fn open(
        &self,
        root: &Root,
        relative: &str,
        derive: impl FnOnce(&Opened, bool) -> T,
    ) -> Result<Lookup<T>, OpenError> {
        self.open_as(root, relative, relative, derive)
    }

    /// [`open`](Self::open), kept in the cache under `key` instead of
    /// `relative`: when one file is derived in more than one way, each way
    /// needs a key of its own (else a hit returns what the other made).
    pub fn open_as(
        &self,
        root: &Root,
        relative: &str,
        key: &str,
        derive: impl FnOnce(&Opened, bool) -> T,
    ) -> Result<Lookup<T>, OpenError> {
        if self.capacity == 0 {
            return open_uncached(root, relative, derive);
        }
        let mut guard = self.lock();
        let state = &mut *guard;
        state.lookups += 1;
        let now = state.lookups;
        let mut cached = None;
        let mut generation = None;
        if let Some(entry) = state.entries.get_mut(key) {
            entry.last_used = now;
            // Only a hit reads the event queue: a miss adds nothing to
            // check (a `404` costs its open alone).
            generation = state.watcher.as_mut().map(Watcher::poll);
            if entry.valid_at.is_some() && entry.valid_at == generation {
                state.hits += 1;
                return Ok(Lookup::File(entry.derived.clone()));
            }
            cached = Some((entry.opened.clone(), entry.derived.clone(), entry.watchable));
        }
        let mut reuse = None;
        if let Some((opened, derived, watchable)) = cached {
            state.revalidations += 1;
            // Watch the way to the file again before looking at it: whatever
            // changes after the look is an event, and the generation read
            // above is older than it.
            let watched = watchable
                && state
                    .watcher
                    .as_mut()
                    .is_some_and(|w| w.watch_path(root.dir.as_fd(), relative, opened.file.as_fd()));
            match root.stat(relative).as_ref().and_then(meta_of) {
                Some(meta) if meta == opened.meta => {
                    if let Some(entry) = state.entries.get_mut(key) {
                        entry.valid_at = generation.filter(|_| watched);
                    }
                    state.hits += 1;
                    return Ok(Lookup::File(derived));
                }
                // The same file, rewritten in place: keep the descriptor.
                Some(meta) if meta.same_file(&opened.meta) && meta.kind == Kind::Regular => {
                    reuse = Some((
                        Opened {
                            file: opened.file,
                            meta,
                        },
                        watchable,
                        generation.filter(|_| watched),
                    ));
                }
                _ => {}
            }
        }
        state.misses += 1;
        let (opened, watchable, valid_at) = match reuse {
            Some(reused) => reused,
            None => {
                state.entries.remove(key);
                if !state.admits(key, self.capacity) {
                    drop(guard);
                    return open_uncached(root, relative, derive);
                }
                open_watched(root, relative, state.watcher.as_mut())?
            }
        };
        // Deriving reads a small file's bytes: not while other loops wait
        // for the lock.
        drop(guard);
        if opened.meta.kind == Kind::Directory {
            return Ok(Lookup::Directory(opened));
        }
        let derived = Arc::new(derive(&opened, true));
        let mut guard = self.lock();
        let state = &mut *guard;
        if state.entries.len() >= self.capacity && !state.entries.contains_key(key) {
            state.evict_one();
        }
        state.entries.insert(
            key.to_owned(),
            CacheEntry {
                opened,
                derived: derived.clone(),
                last_used: now,
                queued_at: now,
                watchable,
                valid_at,
                variants: Variants::default(),
            },
        );
        state.queue(key.to_owned(), now, self.capacity);
        Ok(Lookup::File(derived))
    }

    /// The first of the variants `indexes` (best first) of the cached file
    /// `relative` that is known to exist and be unchanged, or else the
    /// first not known to be missing, or none: what changed nothing since
    /// it was noted ([`note_variant`](Self::note_variant)) is not looked for
    /// again.
    pub(crate) fn known_variant(&self, relative: &str, indexes: &[u8]) -> KnownVariant<T> {
        let Some(&first) = indexes.first() else {
            return KnownVariant::None;
        };
        if self.capacity == 0 {
            return KnownVariant::LookFor {
                index: first,
                generation: None,
            };
        }
        let mut guard = self.lock();
        let state = &mut *guard;
        let generation = state.watcher.as_mut().map(Watcher::poll);
        let Some(entry) = state.entries.get(relative) else {
            return KnownVariant::LookFor {
                index: first,
                generation: None,
            };
        };
        let known = &entry.variants;
        if known.at.is_none() || known.at != generation {
            return KnownVariant::LookFor {
                index: first,
                generation,
            };
        }
        for &index in indexes {
            if known.missing & (1 << index) != 0 {
                continue;
            }
            let found = known.found.iter().find(|(i, _)| *i == index);
            match found.and_then(|(_, variant)| variant.upgrade()) {
                Some(variant) => return KnownVariant::Found(variant),
                None => return KnownVariant::LookFor { index, generation },
            }
        }
        KnownVariant::None
    }

    /// Note what looking for variant `index` of the cached file `of` found,
    /// after `generation` (from [`known_variant`](Self::known_variant)):
    /// the variant's entry under `key` (kept with `of` if it is current at
    /// that generation: it and its directories are watched), or nothing at
    /// `variant` beneath `root` (kept once the directories on its way are
    /// watched and a second look without links finds nothing either: a
    /// variant made from then on is an event).
    pub(crate) fn note_variant(
        &self,
        root: &Root,
        of: &str,
        index: u8,
        found: Option<&str>,
        variant: &str,
        generation: u64,
    ) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(watcher) = state.watcher.as_mut() else {
            return;
        };
        let noted = match found {
            Some(key) => match state.entries.get(key) {
                Some(entry) if entry.valid_at == Some(generation) => {
                    Some(Arc::downgrade(&entry.derived))
                }
                _ => return,
            },
            None => {
                if !watcher.watch_directories(root.dir.as_fd(), variant)
                    || !matches!(root.open_without_links(variant), Err(OpenError::NotFound))
                {
                    return;
                }
                None
            }
        };
        let Some(entry) = state.entries.get_mut(of) else {
            return;
        };
        let known = entry.variants.at(generation);
        match noted {
            Some(variant) => {
                known.found.retain(|(i, _)| *i != index);
                known.found.push((index, variant));
            }
            None => known.missing |= 1 << index,
        }
    }

    /// What `scan` makes of the directory holding `relative` (a mask the
    /// caller defines), remembered per directory while nothing changes on
    /// its way: the generation of changes is read before the directories
    /// are watched and the directory read, and adding or removing a name in
    /// it is an event. `None` where changes are not watched, a directory
    /// could not be, a symbolic link is on the way (what it leads to
    /// depends on more than these directories), or `scan` gives up.
    pub(crate) fn directory_mask(
        &self,
        root: &Root,
        relative: &str,
        scan: impl FnOnce(BorrowedFd<'_>) -> Option<u8>,
    ) -> Option<u8> {
        if self.capacity == 0 {
            return None;
        }
        let directory = relative.rsplit_once('/').map_or("", |(d, _)| d);
        let generation = {
            let mut guard = self.lock();
            let state = &mut *guard;
            let watcher = state.watcher.as_mut()?;
            let generation = watcher.poll();
            match state.directory_masks.get(directory) {
                Some(&(at, mask)) if at == generation => return Some(mask),
                _ => {}
            }
            if !watcher.watch_directories(root.dir.as_fd(), relative) {
                return None;
            }
            generation
        };
        let fd = root.open_without_links(directory).ok()??;
        let mask = scan(fd.as_fd())?;
        let mut guard = self.lock();
        let masks = &mut guard.directory_masks;
        if masks.len() >= self.capacity {
            masks.clear();
        }
        masks.insert(directory.to_owned(), (generation, mask));
        Some(mask)
    }
}

/// A lookup that keeps nothing: open, derive (told it is not kept).
fn open_uncached<T>(
    root: &Root,
    relative: &str,
    derive: impl FnOnce(&Opened, bool) -> T,
) -> Result<Lookup<T>, OpenError> {
    let opened = root.open_beneath(relative)?;
    Ok(match opened.meta.kind {
        Kind::Regular => Lookup::File(Arc::new(derive(&opened, false))),
        Kind::Directory => Lookup::Directory(opened),
    })
}

/// Open `relative` for the cache; whether it was reached through no
/// symbolic link (only then can it be watched), and if it is watched, the
/// watcher's generation it is current at: a regular file reached through no
/// link whose path still leads to it once it and the directories on its way
/// are watched. (Watching only what is found keeps a miss as cheap as an
/// open: a `404` adds no watch.)
fn open_watched(
    root: &Root,
    relative: &str,
    watcher: Option<&mut Watcher>,
) -> Result<(Opened, bool, Option<u64>), OpenError> {
    let Some(fd) = root.open_without_links(relative)? else {
        return Ok((root.open_beneath(relative)?, false, None));
    };
    let found = opened(fd)?;
    let Some(watcher) = watcher.filter(|_| found.meta.kind == Kind::Regular) else {
        return Ok((found, true, None));
    };
    // Events so far are about what came before; the watches come next.
    let generation = watcher.poll();
    if !watcher.watch_path(root.dir.as_fd(), relative, found.file.as_fd()) {
        return Ok((found, true, None));
    }
    // Look again now that changes are watched: a change between the open
    // and the watches shows here (another inode: left unwatched, so the next
    // hit stats; new metadata: taken).
    match root.stat(relative).as_ref().and_then(meta_of) {
        Some(meta) if meta.same_file(&found.meta) => Ok((
            Opened {
                file: found.file,
                meta,
            },
            true,
            Some(generation),
        )),
        _ => Ok((found, true, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::symlink;

    pub(crate) fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("iomux-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn read_all(opened: &Opened) -> String {
        let mut s = String::new();
        (&*opened.file).read_to_string(&mut s).unwrap();
        s
    }

    /// `base/root` is served; `base/secret` is the canary outside it.
    fn layout(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let base = scratch(name);
        let root = base.join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(base.join("secret"), "CANARY").unwrap();
        std::fs::write(root.join("a.txt"), "inside").unwrap();
        std::fs::write(root.join("sub/b.txt"), "inside b").unwrap();
        symlink("../secret", root.join("escape")).unwrap();
        symlink("/etc/passwd", root.join("absolute")).unwrap();
        symlink("../..", root.join("sub/up")).unwrap();
        symlink("sub/b.txt", root.join("inner")).unwrap();
        symlink("..", root.join("parent")).unwrap();
        symlink("/proc/self/root/etc/passwd", root.join("magic")).unwrap();
        let fifo = root.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        (base, root)
    }

    fn check_root(root: Root) {
        assert_eq!(read_all(&root.open_beneath("a.txt").unwrap()), "inside");
        assert_eq!(
            read_all(&root.open_beneath("sub/b.txt").unwrap()),
            "inside b"
        );
        assert_eq!(root.open_beneath("").unwrap().meta.kind, Kind::Directory);
        assert_eq!(root.open_beneath("sub").unwrap().meta.kind, Kind::Directory);
        assert!(matches!(
            root.open_beneath("missing"),
            Err(OpenError::NotFound)
        ));
        assert!(matches!(
            root.open_beneath("a.txt/x"),
            Err(OpenError::NotFound)
        ));
        // A FIFO is refused at once, without waiting for a writer.
        assert!(matches!(
            root.open_beneath("fifo"),
            Err(OpenError::Forbidden)
        ));
        for escaping in [
            "escape",
            "absolute",
            "sub/up/secret",
            "parent/secret",
            "magic",
            "../secret",
            "sub/../../secret",
        ] {
            match root.open_beneath(escaping) {
                Err(OpenError::Forbidden | OpenError::NotFound) => {}
                other => panic!("{escaping}: {other:?}"),
            }
        }
    }

    #[test]
    fn nothing_outside_the_root_opens() {
        let (base, root) = layout("beneath");
        let r = Root::open(&root).unwrap();
        assert!(r.uses_openat2(), "this kernel has openat2");
        // A link that stays inside is followed.
        assert_eq!(read_all(&r.open_beneath("inner").unwrap()), "inside b");
        check_root(r);
        check_root(Root::open(&root).unwrap().without_openat2());
        std::fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn root_errors_name_the_path() {
        let err = Root::open(Path::new("/nonexistent/iomux-root")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/iomux-root"), "{err}");
    }

    /// What the tests derive: the file and its contents when derived.
    fn derive(o: &Opened, _kept: bool) -> (Opened, String) {
        (o.clone(), read_all_at(&o.file))
    }

    fn read_all_at(file: &File) -> String {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0; 64];
        let n = file.read_at(&mut buf, 0).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    fn file(
        cache: &OpenFileCache<(Opened, String)>,
        root: &Root,
        path: &str,
    ) -> Result<Arc<(Opened, String)>, OpenError> {
        match cache.open(root, path, derive)? {
            Lookup::File(f) => Ok(f),
            Lookup::Directory(_) => panic!("{path} is a directory"),
        }
    }

    type TestCache = OpenFileCache<(Opened, String)>;

    #[test]
    fn cache_sees_replaced_and_rewritten_files() {
        let watching = |capacity| {
            let cache = TestCache::new(capacity);
            assert!(cache.watches_changes() || capacity == 0, "inotify here");
            cache
        };
        cache_sees_changes("cache-watching", watching);
        cache_sees_changes("cache-stat", |capacity| {
            TestCache::new(capacity).without_watching()
        });
    }

    fn cache_sees_changes(name: &str, new_cache: fn(usize) -> TestCache) {
        let base = scratch(name);
        std::fs::write(base.join("f"), "one").unwrap();
        let root = Root::open(&base).unwrap();
        let cache = new_cache(2);
        let first = file(&cache, &root, "f").unwrap();
        assert_eq!(first.1, "one");
        let again = file(&cache, &root, "f").unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(cache.counts(), (1, 1));
        // Replaced by rename: a new inode, opened afresh.
        std::fs::write(base.join("f.new"), "two!").unwrap();
        std::fs::rename(base.join("f.new"), base.join("f")).unwrap();
        let replaced = file(&cache, &root, "f").unwrap();
        assert!(!Arc::ptr_eq(&first.0.file, &replaced.0.file));
        assert_eq!((replaced.0.meta.size, replaced.1.as_str()), (4, "two!"));
        // Rewritten in place: same descriptor, derived again.
        std::fs::OpenOptions::new()
            .append(true)
            .open(base.join("f"))
            .unwrap()
            .write_all(b"+")
            .unwrap();
        let grown = file(&cache, &root, "f").unwrap();
        assert!(Arc::ptr_eq(&replaced.0.file, &grown.0.file));
        assert_eq!((grown.0.meta.size, grown.1.as_str()), (5, "two!+"));
        // Deleted: not served from the cache.
        std::fs::remove_file(base.join("f")).unwrap();
        assert!(matches!(file(&cache, &root, "f"), Err(OpenError::NotFound)));
        assert_eq!(cache.len(), 0);
        // Directories pass through, uncached.
        std::fs::create_dir_all(base.join("d")).unwrap();
        assert!(matches!(
            cache.open(&root, "d", derive),
            Ok(Lookup::Directory(_))
        ));
        assert_eq!(cache.len(), 0);
        // Bounded: a file asked for once while the cache is full is served
        // but not kept; asked for again, it replaces the entry that has
        // waited longest unused.
        for name in ["x", "y", "z"] {
            std::fs::write(base.join(name), name).unwrap();
        }
        file(&cache, &root, "x").unwrap();
        file(&cache, &root, "y").unwrap();
        file(&cache, &root, "x").unwrap();
        assert_eq!(file(&cache, &root, "z").unwrap().1, "z");
        assert!(!cache.lock().entries.contains_key("z"), "asked for once");
        file(&cache, &root, "z").unwrap();
        assert!(cache.lock().entries.contains_key("z"), "asked for twice");
        assert_eq!(cache.len(), 2);
        let before = cache.counts();
        file(&cache, &root, "x").unwrap();
        assert_eq!(cache.counts().0, before.0 + 1, "x was kept (recently used)");
        file(&cache, &root, "y").unwrap();
        assert_eq!(cache.counts().1, before.1 + 1, "y was evicted");
        // A link swapped to point outside is not served from the cache.
        std::fs::create_dir_all(base.join("in")).unwrap();
        let inner = Root::open(&base.join("in")).unwrap();
        std::fs::write(base.join("in/real"), "real").unwrap();
        symlink("real", base.join("in/link")).unwrap();
        let cache = new_cache(8);
        assert_eq!(file(&cache, &inner, "link").unwrap().1, "real");
        std::fs::remove_file(base.join("in/link")).unwrap();
        symlink("../x", base.join("in/link")).unwrap();
        assert!(matches!(
            file(&cache, &inner, "link"),
            Err(OpenError::Forbidden)
        ));
        // Without capacity: derived on every request.
        let none = new_cache(0);
        let a = file(&none, &inner, "real").unwrap();
        let b = file(&none, &inner, "real").unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
        std::fs::remove_dir_all(base).unwrap();
    }

    /// When full, an entry used since it joined the eviction queue is
    /// passed over (it joins again at the back) and the oldest unused one
    /// goes; the queue's stale places (entries replaced since) stay bounded.
    #[test]
    fn eviction_passes_over_used_entries_and_its_queue_stays_bounded() {
        let base = scratch("eviction");
        for name in ["a", "b", "c", "d", "e"] {
            std::fs::write(base.join(name), name).unwrap();
        }
        let root = Root::open(&base).unwrap();
        let cache = TestCache::new(3);
        assert!(cache.watches_changes(), "inotify here");
        for name in ["a", "b", "c", "a"] {
            file(&cache, &root, name).unwrap();
        }
        let held = |name: &str| cache.lock().entries.contains_key(name);
        // While full, a file is kept from its second miss on.
        let twice = |name: &str| {
            file(&cache, &root, name).unwrap();
            assert!(!held(name), "{name} kept at its first miss");
            file(&cache, &root, name).unwrap();
        };
        twice("d");
        assert_eq!(
            ["a", "b", "c", "d"].map(held),
            [true, false, true, true],
            "b, the oldest unused, went; a was used since it joined"
        );
        // a joined again behind c (and before d), unused since: c goes,
        // then a, then d.
        twice("e");
        assert_eq!(["a", "c", "d", "e"].map(held), [true, false, true, true]);
        twice("b");
        twice("c");
        assert_eq!(
            ["a", "b", "c", "d", "e"].map(held),
            [false, true, true, false, true]
        );
        // A file rewritten in place is derived and queued again each time:
        // the places it leaves behind are dropped.
        for i in 0..200 {
            std::fs::write(base.join("b"), "x".repeat(i % 7 + 2)).unwrap();
            file(&cache, &root, "b").unwrap();
        }
        assert_eq!(cache.len(), 3);
        assert!(
            cache.lock().order.len() <= 2 * 3 + 16,
            "{}",
            cache.lock().order.len()
        );
        std::fs::remove_dir_all(base).unwrap();
    }

    /// A scratch directory holding `dirs`, a descriptor of it, and a
    /// watcher of at most `limit` watches.
    fn directory_watcher(
        name: &str,
        dirs: &str,
        limit: usize,
    ) -> (std::path::PathBuf, OwnedFd, Watcher) {
        let base = scratch(name);
        std::fs::create_dir_all(base.join(dirs)).unwrap();
        let dir = rustix::fs::open(&base, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).unwrap();
        (base, dir, Watcher::new(limit).unwrap())
    }

    /// A directory is watched once until an event comes: misses of other
    /// files beneath it do not walk its path again.
    #[test]
    fn directories_are_watched_again_only_after_an_event() {
        let (base, dir, mut watcher) = directory_watcher("dirs-once", "a/b", 64);
        watcher.poll();
        assert!(watcher.watch_directories(dir.as_fd(), "a/b/f"));
        let added = watcher.adds();
        assert_eq!(added, 3, "the root, a and a/b");
        for name in ["a/b/g", "a/h", "i"] {
            assert!(watcher.watch_directories(dir.as_fd(), name));
        }
        assert_eq!(watcher.adds(), added, "nothing walked again");
        std::fs::write(base.join("a/new"), "x").unwrap();
        watcher.poll();
        assert!(watcher.watch_directories(dir.as_fd(), "a/b/f"));
        assert_eq!(watcher.adds(), added + 3, "after an event, all again");
        std::fs::remove_dir_all(base).unwrap();
    }

    /// With change notification a hit makes no `stat` while nothing
    /// changed, and a change anywhere on the path (the file, a directory on
    /// the way replaced, renamed or recreated) is seen by the next lookup.
    #[test]
    fn watched_cache_sees_changes_on_the_whole_path() {
        let base = scratch("watched");
        std::fs::create_dir_all(base.join("a/b")).unwrap();
        std::fs::write(base.join("a/b/f"), "one").unwrap();
        let root = Root::open(&base).unwrap();
        let cache = TestCache::new(8);
        assert!(cache.watches_changes(), "inotify here");
        assert_eq!(file(&cache, &root, "a/b/f").unwrap().1, "one");
        for _ in 0..50 {
            assert_eq!(file(&cache, &root, "a/b/f").unwrap().1, "one");
        }
        // By now this thread's bell on the queue is armed: hits read nothing.
        let reads = cache.queue_reads();
        for _ in 0..50 {
            assert_eq!(file(&cache, &root, "a/b/f").unwrap().1, "one");
        }
        assert_eq!(cache.queue_reads(), reads, "a silent bell, no read");
        assert_eq!(cache.counts(), (100, 1));
        assert_eq!(cache.revalidations(), 0, "no stat while nothing changed");
        // The root, a, a/b and the file; a miss adds none.
        assert_eq!(cache.watch_count(), 4);
        for missing in ["a/b/nothing", "a/nothing/f", "nothing"] {
            assert!(matches!(
                file(&cache, &root, missing),
                Err(OpenError::NotFound)
            ));
        }
        assert_eq!(cache.watch_count(), 4);
        // A change elsewhere in a watched directory: one stat, still a hit.
        std::fs::write(base.join("a/other"), "x").unwrap();
        assert_eq!(file(&cache, &root, "a/b/f").unwrap().1, "one");
        assert_eq!((cache.revalidations(), cache.counts().0), (1, 101));
        file(&cache, &root, "a/b/f").unwrap();
        assert_eq!(cache.revalidations(), 1, "watched again after the stat");
        // The innermost directory replaced by another holding a new f.
        std::fs::rename(base.join("a/b"), base.join("a/b.old")).unwrap();
        std::fs::create_dir_all(base.join("a/b")).unwrap();
        std::fs::write(base.join("a/b/f"), "two").unwrap();
        assert_eq!(file(&cache, &root, "a/b/f").unwrap().1, "two");
        // An outer directory renamed away and recreated.
        std::fs::rename(base.join("a"), base.join("a.old")).unwrap();
        std::fs::create_dir_all(base.join("a/b")).unwrap();
        std::fs::write(base.join("a/b/f"), "three").unwrap();
        assert_eq!(file(&cache, &root, "a/b/f").unwrap().1, "three");
        // The old directories' files changing is no concern of the cache's
        // any more, but the new ones' is.
        let hits = cache.counts().0;
        file(&cache, &root, "a/b/f").unwrap();
        assert_eq!(cache.counts().0, hits + 1);
        std::fs::write(base.join("a/b/f"), "four!").unwrap();
        assert_eq!(file(&cache, &root, "a/b/f").unwrap().1, "four!");
        // Renamed away with nothing in its place.
        std::fs::rename(base.join("a/b/f"), base.join("a/b/g")).unwrap();
        assert!(matches!(
            file(&cache, &root, "a/b/f"),
            Err(OpenError::NotFound)
        ));
        std::fs::remove_dir_all(base).unwrap();
    }

    /// The cache is shared by a server's loop threads: whichever of them
    /// reads a change's event, every thread's next lookup sees the change.
    #[test]
    fn every_thread_sees_a_change_whoever_reads_its_event() {
        let base = scratch("threads");
        std::fs::write(base.join("f"), "v0").unwrap();
        let root = Arc::new(Root::open(&base).unwrap());
        let cache = Arc::new(TestCache::new(8));
        assert_eq!(file(&cache, &root, "f").unwrap().1, "v0");
        for version in 1..=20 {
            let tmp = base.join("f.tmp");
            std::fs::write(&tmp, format!("v{version}")).unwrap();
            std::fs::rename(&tmp, base.join("f")).unwrap();
            let lookups: Vec<_> = (0..3)
                .map(|_| {
                    let (cache, root) = (cache.clone(), root.clone());
                    std::thread::spawn(move || file(&cache, &root, "f").unwrap().1.clone())
                })
                .collect();
            for lookup in lookups {
                assert_eq!(lookup.join().unwrap(), format!("v{version}"));
            }
        }
        std::fs::remove_dir_all(base).unwrap();
    }

    /// A path through a symbolic link leads where the link says, which no
    /// directory watch on the path covers: every hit revalidates by `stat`.
    #[test]
    fn a_linked_path_is_revalidated_on_every_hit() {
        let base = scratch("linked");
        std::fs::create_dir_all(base.join("real")).unwrap();
        std::fs::write(base.join("real/f"), "one").unwrap();
        symlink("real", base.join("link")).unwrap();
        let root = Root::open(&base).unwrap();
        let cache = TestCache::new(8);
        assert_eq!(file(&cache, &root, "link/f").unwrap().1, "one");
        for _ in 0..3 {
            file(&cache, &root, "link/f").unwrap();
        }
        assert_eq!(cache.revalidations(), 3);
        // The link pointed elsewhere: seen.
        std::fs::create_dir_all(base.join("elsewhere")).unwrap();
        std::fs::write(base.join("elsewhere/f"), "two").unwrap();
        std::fs::remove_file(base.join("link")).unwrap();
        symlink("elsewhere", base.join("link")).unwrap();
        assert_eq!(file(&cache, &root, "link/f").unwrap().1, "two");
        std::fs::remove_dir_all(base).unwrap();
    }

    /// Watches are bounded: at the limit the watcher starts afresh and every
    /// entry revalidates once.
    #[test]
    fn watches_are_bounded() {
        let (base, dir, mut watcher) = directory_watcher("bounded", "a/b/c", 2);
        let before = watcher.poll();
        assert!(watcher.watch_directories(dir.as_fd(), "a/b/c/f"));
        assert!(watcher.watch_count() <= 2, "{}", watcher.watch_count());
        assert!(watcher.poll() > before, "a fresh start invalidates");
        // Still watching after the fresh start.
        let now = watcher.poll();
        std::fs::write(base.join("a/b/c/new"), "x").unwrap();
        assert!(watcher.poll() > now);
        std::fs::remove_dir_all(base).unwrap();
    }
}
