//! The keyspace: string keys and values, shared by every connection and every
//! event-loop thread of a server, with expiry.
//!
//! Keys live in a few shards, each behind its own mutex, so loops on
//! different threads rarely wait for each other; a command on several keys
//! (MGET, MSET, DEL and EXISTS of several keys) locks every shard in order and
//! is atomic, as in Redis.
//!
//! Expiry is lazy (a key past its deadline is removed when a command touches
//! it) and active: each shard keeps a min-heap of `(deadline, generation,
//! key)`, and [`Db::expire_due`] pops only the entries that are due. Setting,
//! changing or removing a TTL leaves the old heap entry behind, recognised as
//! stale by its generation when it is popped; when stale entries outnumber
//! live ones the heap is rebuilt from its live entries (amortised O(1) per
//! TTL set). No operation scans every key.
//!
//! Times are milliseconds on the database's own monotonic clock
//! ([`Db::now_ms`]); every operation takes `now` as an argument, so tests run
//! on made-up clocks.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// Shards of a [`Db`] made by [`Db::new`].
const DEFAULT_SHARDS: usize = 16;

/// Most due heap entries one shard pops per [`Db::expire_due`] call, so one
/// call never holds a shard's lock for long; the caller calls again while
/// [`Db::next_expiry`] is due.
const EXPIRE_BATCH: usize = 1024;

/// Keys from which [`Db::flush_async`] drops the old keyspace on a thread
/// of its own: fewer drop faster than a thread starts.
const LAZY_FREE_AT: usize = 1024;

/// The longest i64 in decimal: a counter's value is allocated this large once,
/// so INCR never reallocates as it gains digits.
const I64_DIGITS: usize = 20;

/// A shared keyspace of binary-safe string keys and values.
#[derive(Debug)]
pub struct Db {
    shards: Box<[Mutex<Shard>]>,
    epoch: Instant,
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<Box<[u8]>, Entry>,
    deadlines: BinaryHeap<Reverse<Deadline>>,
    next_generation: u64,
    /// Heap size past which stale entries are dropped.
    compact_at: usize,
}

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    expiry: Option<Expiry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Expiry {
    at: u64,
    generation: u64,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Deadline {
    at: u64,
    generation: u64,
    key: Box<[u8]>,
}

impl Entry {
    fn is_expired(&self, now: u64) -> bool {
        self.expiry.is_some_and(|e| e.at <= now)
    }
}

/// When SET writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SetCondition {
    /// Always (plain SET).
    #[default]
    Always,
    /// Only when the key does not exist (NX).
    IfAbsent,
    /// Only when the key exists (XX).
    IfPresent,
}

/// How SET writes: its condition, the key's TTL after it, and whether it
/// returns the previous value. The default is a plain SET.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetOptions {
    /// When to write (NX, XX).
    pub condition: SetCondition,
    /// The TTL afterwards (EX, PX, KEEPTTL).
    pub expiry: SetExpiry,
    /// Return the previous value (GET).
    pub get_old: bool,
}

impl SetOptions {
    /// A plain SET whose key expires at `at`.
    pub fn expiring_at(at: u64) -> SetOptions {
        SetOptions {
            expiry: SetExpiry::At(at),
            ..SetOptions::default()
        }
    }
}

/// What happens to a key's time to live when it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SetExpiry {
    /// The key no longer expires (plain SET).
    #[default]
    Clear,
    /// The key keeps the TTL it had (KEEPTTL).
    Keep,
    /// The key expires at this time (EX, PX), in [`Db::now_ms`] milliseconds.
    At(u64),
}

/// When EXPIRE changes a key's deadline (Redis 7's NX, XX, GT, LT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpireCondition {
    /// Always.
    #[default]
    Always,
    /// Only when the key has no TTL.
    IfNone,
    /// Only when the key has a TTL.
    IfSome,
    /// Only when the new deadline is later (no TTL counts as infinitely late).
    IfGreater,
    /// Only when the new deadline is earlier (no TTL counts as infinitely late).
    IfLess,
}

/// A key's remaining time to live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// No such key.
    Missing,
    /// The key does not expire.
    Persistent,
    /// Milliseconds left.
    Millis(u64),
}

/// Why INCR and friends refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncrError {
    /// The value is not a 64-bit signed integer in decimal.
    NotInteger,
    /// The result would not fit in 64 bits.
    Overflow,
}

impl Default for Db {
    fn default() -> Db {
        Db::new()
    }
}

impl Db {
    /// An empty keyspace.
    pub fn new() -> Db {
        Db::with_shards(DEFAULT_SHARDS)
    }

    /// An empty keyspace split over `shards` locks (at least one).
    pub fn with_shards(shards: usize) -> Db {
        Db {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(Shard::default()))
                .collect(),
            epoch: Instant::now(),
        }
    }

    /// Milliseconds since this database was made: the clock every `now`
    /// argument counts in.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn shard_index(&self, key: &[u8]) -> usize {
        // FNV-1a: only spreads keys over locks; the maps themselves use
        // SipHash with a random key, so crafted keys cannot degrade them.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in key {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        (hash % self.shards.len() as u64) as usize
    }

    fn shard(&self, key: &[u8]) -> MutexGuard<'_, Shard> {
        lock(&self.shards[self.shard_index(key)])
    }

    fn lock_all(&self) -> Vec<MutexGuard<'_, Shard>> {
        self.shards.iter().map(lock).collect()
    }

    /// Calls `read` with the key's value (`None` when it is missing or expired).
    pub fn get<R>(&self, key: &[u8], now: u64, read: impl FnOnce(Option<&[u8]>) -> R) -> R {
        self.shard(key).get(key, now, read)
    }

    /// Writes `value` under `key` as `options` say. Returns whether it
    /// wrote, and the previous value when [`SetOptions::get_old`].
    pub fn set(
        &self,
        key: &[u8],
        value: &[u8],
        options: SetOptions,
        now: u64,
    ) -> (bool, Option<Vec<u8>>) {
        self.shard(key).set(key, value, options, now)
    }

    /// Removes `key`; true if it existed.
    pub fn del(&self, key: &[u8], now: u64) -> bool {
        self.shard(key).remove_live(key, now)
    }

    /// True if `key` exists.
    pub fn exists(&self, key: &[u8], now: u64) -> bool {
        self.get(key, now, |v| v.is_some())
    }

    /// Removes every key in `keys` atomically; how many existed.
    pub fn del_many<'k>(&self, keys: impl Iterator<Item = &'k [u8]>, now: u64) -> usize {
        let mut shards = self.lock_all();
        keys.filter(|key| shards[self.shard_index(key)].remove_live(key, now))
            .count()
    }

    /// How many of `keys` exist (a key named twice counts twice), atomically.
    pub fn exists_many<'k>(&self, keys: impl Iterator<Item = &'k [u8]>, now: u64) -> usize {
        let mut shards = self.lock_all();
        keys.filter(|key| shards[self.shard_index(key)].get(key, now, |v| v.is_some()))
            .count()
    }

    /// Calls `read` with each key's value in order, atomically (MGET).
    pub fn get_many<'k>(
        &self,
        keys: impl Iterator<Item = &'k [u8]>,
        now: u64,
        mut read: impl FnMut(Option<&[u8]>),
    ) {
        let mut shards = self.lock_all();
        for key in keys {
            shards[self.shard_index(key)].get(key, now, &mut read);
        }
    }

    /// Writes every `(key, value)` pair atomically, clearing their TTLs (MSET).
    pub fn set_many<'k>(&self, pairs: impl Iterator<Item = (&'k [u8], &'k [u8])>, now: u64) {
        let mut shards = self.lock_all();
        for (key, value) in pairs {
            shards[self.shard_index(key)].set(key, value, SetOptions::default(), now);
        }
    }

    /// Adds `delta` to the integer stored at `key` (a missing key counts as
    /// 0) and returns the result; the key keeps its TTL.
    pub fn incr_by(&self, key: &[u8], delta: i64, now: u64) -> Result<i64, IncrError> {
        self.shard(key).incr_by(key, delta, now)
    }

    /// Sets `key` to expire at `at` if `condition` allows; true if the key
    /// exists and the condition held. A deadline not after `now` deletes it.
    pub fn expire_at(&self, key: &[u8], at: u64, condition: ExpireCondition, now: u64) -> bool {
        self.shard(key).expire_at(key, at, condition, now)
    }

    /// The key's remaining time to live.
    pub fn ttl(&self, key: &[u8], now: u64) -> Ttl {
        let mut shard = self.shard(key);
        match shard.live(key, now) {
            None => Ttl::Missing,
            Some(Entry { expiry: None, .. }) => Ttl::Persistent,
            Some(Entry {
                expiry: Some(e), ..
            }) => Ttl::Millis(e.at - now),
        }
    }

    /// Keys stored, counting expired keys not yet removed (as Redis's DBSIZE does).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).map.len()).sum()
    }

    /// True when no key is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every key.
    pub fn flush(&self) {
        for mut shard in self.lock_all() {
            *shard = Shard::default();
        }
    }

    /// Removes every key at once and frees their memory on a thread of its
    /// own (Redis's lazy free): the keyspace is empty when this returns, but
    /// dropping a million values takes hundreds of milliseconds that no
    /// connection should wait for. A keyspace of fewer than 1,024 keys is
    /// dropped here (a thread costs more). Returns
    /// the thread that drops it, if one was started (none could be: dropped
    /// here).
    pub fn flush_async(&self) -> Option<std::thread::JoinHandle<()>> {
        let old: Vec<Shard> = self
            .lock_all()
            .iter_mut()
            .map(|shard| std::mem::take(&mut **shard))
            .collect();
        if old.iter().map(|s| s.map.len()).sum::<usize>() < LAZY_FREE_AT {
            return None;
        }
        // A thread that cannot start drops the closure, and the keyspace
        // with it, here.
        std::thread::Builder::new()
            .name("iomux-lazy-free".into())
            .spawn(move || drop(old))
            .ok()
    }

    /// Removes keys whose deadline is not after `now`, popping only due heap
    /// entries (at most a batch per shard: call again while
    /// [`Db::next_expiry`] is due). Returns how many keys it removed.
    pub fn expire_due(&self, now: u64) -> usize {
        self.shards.iter().map(|s| lock(s).expire_due(now)).sum()
    }

    /// The earliest deadline in the heaps (possibly of an entry that turns
    /// out stale), or `None` when no key has a TTL.
    pub fn next_expiry(&self) -> Option<u64> {
        self.shards
            .iter()
            .filter_map(|s| lock(s).deadlines.peek().map(|Reverse(d)| d.at))
            .min()
    }

    /// Heap entries held, live and stale (for tests of the heap's bound).
    pub fn pending_deadlines(&self) -> usize {
        self.shards.iter().map(|s| lock(s).deadlines.len()).sum()
    }
}

/// A poisoned lock only means another thread panicked mid-command; every
/// shard operation leaves the map consistent, so carry on.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shard {
    /// The key's entry unless it is missing or expired (an expired one is removed).
    fn live(&mut self, key: &[u8], now: u64) -> Option<&mut Entry> {
        if self.map.get(key)?.is_expired(now) {
            self.map.remove(key);
            return None;
        }
        self.map.get_mut(key)
    }

    fn get<R>(&mut self, key: &[u8], now: u64, read: impl FnOnce(Option<&[u8]>) -> R) -> R {
        match self.map.get(key) {
            Some(entry) if !entry.is_expired(now) => read(Some(&entry.value)),
            None => read(None),
            Some(_) => {
                self.map.remove(key);
                read(None)
            }
        }
    }

    fn remove_live(&mut self, key: &[u8], now: u64) -> bool {
        match self.map.remove(key) {
            Some(entry) => !entry.is_expired(now),
            None => false,
        }
    }

    fn set(
        &mut self,
        key: &[u8],
        value: &[u8],
        options: SetOptions,
        now: u64,
    ) -> (bool, Option<Vec<u8>>) {
        let SetOptions {
            condition,
            expiry,
            get_old,
        } = options;
        let Shard {
            map,
            deadlines,
            next_generation,
            ..
        } = self;
        let new_expiry = |old: Option<Expiry>, generation: &mut u64| match expiry {
            SetExpiry::Clear => None,
            SetExpiry::Keep => old,
            SetExpiry::At(at) => {
                *generation += 1;
                Some(Expiry {
                    at,
                    generation: *generation,
                })
            }
        };
        let written = match map.get_mut(key) {
            Some(entry) if !entry.is_expired(now) => {
                let old = get_old.then(|| entry.value.clone());
                if condition == SetCondition::IfAbsent {
                    return (false, old);
                }
                overwrite(&mut entry.value, value);
                entry.expiry = new_expiry(entry.expiry, next_generation);
                (entry.expiry, old)
            }
            found => {
                let expired = found.is_some();
                if condition == SetCondition::IfPresent {
                    if expired {
                        map.remove(key);
                    }
                    return (false, None);
                }
                let expiry = new_expiry(None, next_generation);
                let entry = Entry {
                    value: value.to_vec(),
                    expiry,
                };
                map.insert(key.into(), entry);
                (expiry, None)
            }
        };
        if let (Some(e), SetExpiry::At(_)) = (written.0, expiry) {
            deadlines.push(Reverse(Deadline {
                at: e.at,
                generation: e.generation,
                key: key.into(),
            }));
            self.compact_if_stale();
        }
        (true, written.1)
    }

    fn incr_by(&mut self, key: &[u8], delta: i64, now: u64) -> Result<i64, IncrError> {
        let mut digits = itoa::Buffer::new();
        match self.live(key, now) {
            Some(entry) => {
                let current = super::parse::parse_i64(&entry.value).ok_or(IncrError::NotInteger)?;
                let next = current.checked_add(delta).ok_or(IncrError::Overflow)?;
                if entry.value.capacity() < I64_DIGITS {
                    entry.value = Vec::with_capacity(I64_DIGITS);
                }
                overwrite(&mut entry.value, digits.format(next).as_bytes());
                Ok(next)
            }
            None => {
                let mut value = Vec::with_capacity(I64_DIGITS);
                value.extend_from_slice(digits.format(delta).as_bytes());
                let entry = Entry {
                    value,
                    expiry: None,
                };
                self.map.insert(key.into(), entry);
                Ok(delta)
            }
        }
    }

    fn expire_at(&mut self, key: &[u8], at: u64, condition: ExpireCondition, now: u64) -> bool {
        let next = self.next_generation + 1;
        let Some(entry) = self.live(key, now) else {
            return false;
        };
        // No TTL counts as an infinitely late deadline.
        let current = entry.expiry.map_or(u64::MAX, |e| e.at);
        let allowed = match condition {
            ExpireCondition::Always => true,
            ExpireCondition::IfNone => entry.expiry.is_none(),
            ExpireCondition::IfSome => entry.expiry.is_some(),
            ExpireCondition::IfGreater => entry.expiry.is_some() && at > current,
            ExpireCondition::IfLess => at < current,
        };
        if !allowed {
            return false;
        }
        if at <= now {
            self.map.remove(key);
            return true;
        }
        entry.expiry = Some(Expiry {
            at,
            generation: next,
        });
        self.next_generation = next;
        self.deadlines.push(Reverse(Deadline {
            at,
            generation: next,
            key: key.into(),
        }));
        self.compact_if_stale();
        true
    }

    fn expire_due(&mut self, now: u64) -> usize {
        let mut removed = 0;
        for _ in 0..EXPIRE_BATCH {
            match self.deadlines.peek() {
                Some(Reverse(d)) if d.at <= now => {}
                _ => break,
            }
            let Some(Reverse(due)) = self.deadlines.pop() else {
                break;
            };
            let current = self
                .map
                .get(&due.key)
                .and_then(|e| e.expiry)
                .is_some_and(|e| e.generation == due.generation);
            if current {
                self.map.remove(&due.key);
                removed += 1;
            }
        }
        removed
    }

    /// Drop heap entries whose key no longer carries their generation, once
    /// the heap has doubled since the last time (amortised O(1) per push).
    fn compact_if_stale(&mut self) {
        if self.deadlines.len() <= self.compact_at {
            return;
        }
        let map = &self.map;
        self.deadlines.retain(|Reverse(d)| {
            map.get(&d.key)
                .and_then(|e| e.expiry)
                .is_some_and(|e| e.generation == d.generation)
        });
        self.compact_at = 2 * self.deadlines.len() + 1024;
    }
}

/// Replace `buf`'s contents with `value`, reusing its allocation when it fits
/// without wasting more than half of it.
fn overwrite(buf: &mut Vec<u8>, value: &[u8]) {
    if buf.capacity() >= value.len() && buf.capacity() <= 2 * value.len().max(16) {
        buf.clear();
        buf.extend_from_slice(value);
    } else {
        *buf = value.to_vec();
    }
}
