//! A connection's output the kernel has not taken yet: a queue of segments,
//! bytes and file regions, sent in order through one path.
//!
//! The common case costs what a plain buffer costs: bytes only ever go to
//! `head`, and the rest of the queue is not even allocated until a file
//! region is sent. A region splits the bytes around it: what was written
//! before it stays in front, what is written after it queues behind it.
//!
//! Invariant: `rest`, when not empty, starts with a file region (bytes that
//! come to the front after a region are moved into `head`), so the front of
//! the queue is `head`'s unsent bytes, or else the first region.

use crate::buffer::BufPool;
use iomux_proto::FileRegion;
use std::collections::VecDeque;

/// One piece of a [`Segments`] queue.
#[derive(Debug)]
pub(crate) enum Segment {
    Bytes(Vec<u8>),
    File(FileRegion),
}

/// What the kernel should take next.
#[derive(Debug)]
pub(crate) enum Front<'a> {
    /// Bytes in memory; `more` when a file region follows them (send them
    /// with `MSG_MORE`, so a response head shares a segment with its body).
    Bytes { bytes: &'a [u8], more: bool },
    /// A part of a file.
    File(&'a FileRegion),
}

#[derive(Debug, Default)]
pub(crate) struct Output {
    /// The first bytes of the queue; unallocated when empty.
    head: Vec<u8>,
    /// How much of `head` is already sent.
    sent: usize,
    /// Everything behind `head`, starting with a file region (allocated on
    /// the first region: 8 bytes in every session until then).
    rest: Option<Box<Segments>>,
}

/// The engine's one queue of bytes and file regions in order, and how much
/// of each it holds: the part of a connection's output behind `head`, and
/// over TLS the plaintext waiting behind a file region to be encrypted
/// (`tls::TlsSession`'s backlog).
#[derive(Debug, Default)]
pub(crate) struct Segments {
    queue: VecDeque<Segment>,
    /// Bytes of its byte segments (held in memory).
    bytes: usize,
    /// Bytes left in its file regions (not in memory).
    files: usize,
}

impl Segments {
    /// Bytes queued, in memory and in file regions.
    pub(crate) fn len(&self) -> usize {
        self.bytes + self.files
    }

    /// Bytes queued in memory.
    pub(crate) fn in_memory(&self) -> usize {
        self.bytes
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Queue `bytes` as a segment of its own.
    pub(crate) fn push_bytes(&mut self, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        self.bytes += bytes.len();
        self.queue.push_back(Segment::Bytes(bytes));
    }

    /// Append `bytes` to the byte segment at the back.
    pub(crate) fn extend_bytes(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.back_bytes().extend_from_slice(bytes);
        self.bytes += bytes.len();
    }

    /// The byte segment at the back, made if the back is a region; what is
    /// appended to it is counted with [`Segments::appended`].
    fn back_bytes(&mut self) -> &mut Vec<u8> {
        if !matches!(self.queue.back(), Some(Segment::Bytes(_))) {
            self.queue.push_back(Segment::Bytes(Vec::new()));
        }
        match self.queue.back_mut() {
            Some(Segment::Bytes(bytes)) => bytes,
            _ => unreachable!("a byte segment is at the back"),
        }
    }

    /// `n` bytes were appended to [`Segments::back_bytes`].
    fn appended(&mut self, n: usize) {
        self.bytes += n;
    }

    /// Queue a file region (an empty one is dropped).
    pub(crate) fn push_file(&mut self, region: FileRegion) {
        if region.is_empty() {
            return;
        }
        self.files += region.len() as usize;
        self.queue.push_back(Segment::File(region));
    }

    pub(crate) fn front(&self) -> Option<&Segment> {
        self.queue.front()
    }

    /// Take the front segment off the queue.
    pub(crate) fn pop_front(&mut self) -> Option<Segment> {
        let segment = self.queue.pop_front()?;
        match &segment {
            Segment::Bytes(bytes) => self.bytes -= bytes.len(),
            Segment::File(region) => self.files -= region.len() as usize,
        }
        Some(segment)
    }

    /// `n` bytes of the front segment are taken (at most all of it); an
    /// emptied segment leaves the queue.
    pub(crate) fn advance(&mut self, n: usize) {
        let Some(front) = self.queue.front_mut() else {
            return;
        };
        let emptied = match front {
            Segment::File(region) => {
                let n = n.min(region.len() as usize);
                region.advance(n as u64);
                self.files -= n;
                region.is_empty()
            }
            Segment::Bytes(bytes) => {
                let n = n.min(bytes.len());
                bytes.drain(..n);
                self.bytes -= n;
                bytes.is_empty()
            }
        };
        if emptied {
            self.queue.pop_front();
        }
    }
}

impl Output {
    /// Bytes queued, in memory and in file regions.
    pub(crate) fn len(&self) -> usize {
        self.head.len() - self.sent + self.rest.as_ref().map_or(0, |r| r.len())
    }

    /// Nothing queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes queued in memory (file regions excluded): what output caps count.
    pub(crate) fn in_memory(&self) -> usize {
        self.head.len() - self.sent + self.rest.as_ref().map_or(0, |r| r.in_memory())
    }

    /// The queue behind `head`, when it holds anything.
    fn rest_mut(&mut self) -> Option<&mut Segments> {
        self.rest.as_deref_mut().filter(|r| !r.is_empty())
    }

    fn has_rest(&self) -> bool {
        self.rest.as_ref().is_some_and(|r| !r.is_empty())
    }

    /// The buffer bytes appended now go to: `head` while no region is
    /// queued, else a byte segment at the back of the queue.
    pub(crate) fn back_bytes(&mut self, pool: &mut BufPool, hint: usize) -> &mut Vec<u8> {
        if self.has_rest() {
            return self.rest.as_mut().expect("has rest").back_bytes();
        }
        if self.head.capacity() == 0 {
            self.head = pool.get_for(hint);
        }
        &mut self.head
    }

    /// [`Output::back_bytes`] about to take `more` bytes, for a transport
    /// that produces the output in batches (TLS's refill) while no region
    /// is queued: `head` without its sent prefix, grown to exactly what it
    /// will hold (never doubled past it), and an oversized one (past the
    /// loop's buffer size) shrunk to it once the batches get smaller.
    pub(crate) fn fitted_back(&mut self, pool: &mut BufPool, more: usize) -> &mut Vec<u8> {
        if self.has_rest() {
            return self.back_bytes(pool, more);
        }
        if self.sent > 0 {
            self.head.drain(..self.sent);
            self.sent = 0;
        }
        let want = self.head.len() + more;
        if self.head.capacity() == 0 {
            self.head = pool.get_for(want);
        }
        if self.head.capacity() < want {
            self.head.reserve_exact(more);
        } else if pool.oversized(&self.head) && self.head.capacity() > 2 * want {
            // Larger than the loop's buffers and than needed now: fitted.
            self.head.shrink_to(want);
        }
        &mut self.head
    }

    /// Append bytes at the back.
    pub(crate) fn push_bytes(&mut self, bytes: &[u8], pool: &mut BufPool) {
        if bytes.is_empty() {
            return;
        }
        self.back_bytes(pool, bytes.len()).extend_from_slice(bytes);
        if let Some(rest) = self.rest_mut() {
            rest.appended(bytes.len());
        }
    }

    /// After a call appended to [`Output::back_bytes`] (from `before` bytes
    /// long) and sent file `regions`, each at the length that buffer had
    /// then: count the new bytes, and cut the buffer at each region's place
    /// so the region goes between the bytes around it. `regions` is left
    /// empty (its storage is the caller's to use again).
    pub(crate) fn appended(&mut self, before: usize, regions: &mut Vec<(usize, FileRegion)>) {
        let behind_a_region = self.has_rest();
        let back = match self.rest_mut() {
            Some(rest) => rest.back_bytes(),
            None => &mut self.head,
        };
        let grown = back.len().saturating_sub(before);
        // The bytes after the first region leave the back buffer; they are
        // queued again behind it, with the other regions between them.
        let first = regions.first().map_or(back.len(), |(at, _)| *at);
        let tail = back.split_off(first.clamp(before, back.len()));
        if behind_a_region {
            self.rest
                .as_mut()
                .expect("has rest")
                .appended(grown - tail.len());
        }
        if regions.is_empty() {
            return;
        }
        let first = first.clamp(before, before + grown);
        let mut cut = 0;
        let mut regions = regions.drain(..).peekable();
        while let Some((_, region)) = regions.next() {
            self.push_file(region);
            let next = regions
                .peek()
                .map_or(tail.len(), |(at, _)| at.saturating_sub(first));
            let next = next.clamp(cut, tail.len());
            if next > cut {
                let rest = self.rest.as_mut().expect("a region was queued");
                rest.push_bytes(tail[cut..next].to_vec());
                cut = next;
            }
        }
        // `head` may have been all sent: the first region is the front now.
        if self.head.len() == self.sent {
            self.head.clear();
            self.sent = 0;
        }
    }

    /// Append a file region at the back.
    pub(crate) fn push_file(&mut self, region: FileRegion) {
        if region.is_empty() {
            return;
        }
        self.rest
            .get_or_insert_with(Default::default)
            .push_file(region);
    }

    /// What the kernel should take next; `None` when nothing is queued.
    pub(crate) fn front(&self) -> Option<Front<'_>> {
        if self.sent < self.head.len() {
            return Some(Front::Bytes {
                bytes: &self.head[self.sent..],
                more: self.has_rest(),
            });
        }
        match self.rest.as_ref()?.front()? {
            Segment::File(region) => Some(Front::File(region)),
            Segment::Bytes(_) => unreachable!("the queue behind head starts with a region"),
        }
    }

    /// The kernel took `n` bytes of the front (at most all of it).
    pub(crate) fn advance(&mut self, n: usize, pool: &mut BufPool) {
        if n == 0 {
            return;
        }
        if self.sent < self.head.len() {
            self.sent += n;
            debug_assert!(self.sent <= self.head.len());
            if self.sent >= self.head.len() {
                self.head.clear();
                self.sent = 0;
                if !self.has_rest() {
                    // Nothing owed: an idle connection holds no buffer.
                    pool.put(&mut self.head);
                }
            } else if self.sent > self.head.len() / 2 {
                // Reclaim the sent prefix once it dominates, so the buffer stays bounded.
                self.head.drain(..self.sent);
                self.sent = 0;
            }
            return;
        }
        let Some(rest) = self.rest_mut() else {
            return;
        };
        debug_assert!(matches!(rest.front(), Some(Segment::File(_))));
        rest.advance(n);
        // Bytes behind a region sent in full become `head`.
        if let Some(Segment::Bytes(_)) = rest.front() {
            let Some(Segment::Bytes(bytes)) = rest.pop_front() else {
                unreachable!("just matched")
            };
            self.head = bytes;
            self.sent = 0;
        }
    }

    /// Hand the front bytes (all of `head`'s, none sent yet) to a completion
    /// engine's send: swapped into `into`, which must be empty. Returns how
    /// many.
    pub(crate) fn take_head(&mut self, into: &mut Vec<u8>) -> usize {
        debug_assert!(into.is_empty() && self.sent == 0);
        std::mem::swap(&mut self.head, into);
        into.len()
    }

    /// Give the buffers back and drop every queued region.
    pub(crate) fn release(&mut self, pool: &mut BufPool) {
        pool.put(&mut self.head);
        self.sent = 0;
        self.rest = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A region of `len` bytes `f` (of a file whose name is gone at once).
    fn file(len: usize) -> FileRegion {
        let name = format!(
            "iomux-output-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        );
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, vec![b'f'; len]).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        FileRegion::new(Arc::new(file), 0, len as u64)
    }

    /// Drain the queue the way an engine does, `step` bytes at a time,
    /// reading regions: what the peer would get.
    fn drain(out: &mut Output, pool: &mut BufPool, step: usize) -> Vec<u8> {
        let mut got = Vec::new();
        while let Some(front) = out.front() {
            let n = match front {
                Front::Bytes { bytes, .. } => {
                    let n = bytes.len().min(step);
                    got.extend_from_slice(&bytes[..n]);
                    n
                }
                Front::File(region) => {
                    let mut buf = vec![0; step];
                    let n = region.read_at(&mut buf).unwrap();
                    got.extend_from_slice(&buf[..n]);
                    n
                }
            };
            let before = out.len();
            out.advance(n, pool);
            assert_eq!(out.len(), before - n, "len counts what is left");
        }
        assert!(out.is_empty());
        got
    }

    #[test]
    fn regions_go_between_the_bytes_around_them() {
        let mut pool = BufPool::new(4, 64);
        for step in [1, 3, 1000] {
            let mut out = Output::default();
            let back = out.back_bytes(&mut pool, 0);
            back.extend_from_slice(b"head");
            let before = 0;
            back.extend_from_slice(b"mid");
            out.appended(before, &mut vec![(4, file(5)), (7, file(2)), (7, file(1))]);
            assert_eq!(out.in_memory(), 7);
            assert_eq!(out.len(), 15);
            // Written while the regions wait: behind them.
            let before = out.back_bytes(&mut pool, 0).len();
            out.back_bytes(&mut pool, 0).extend_from_slice(b"tail");
            out.appended(before, &mut Vec::new());
            out.push_bytes(b"!", &mut pool);
            assert_eq!(out.in_memory(), 12);
            assert_eq!(
                drain(&mut out, &mut pool, step),
                b"headfffffmidffftail!",
                "step {step}"
            );
        }
    }

    #[test]
    fn a_fitted_back_follows_its_batch_and_keeps_the_unsent_bytes() {
        let mut pool = BufPool::new(4, 64);
        let mut out = Output::default();
        out.fitted_back(&mut pool, 10_000)
            .extend_from_slice(&[b'a'; 10_000]);
        let big = out.head.capacity();
        assert!((10_000..20_000).contains(&big), "no doubling: {big}");
        out.advance(9_990, &mut pool);
        let back = out.fitted_back(&mut pool, 100);
        assert_eq!(back, &[b'a'; 10], "the sent prefix is gone, the rest kept");
        assert!(
            back.capacity() < 1000,
            "shrunk to the batch: {}",
            back.capacity()
        );
        back.extend_from_slice(b"bc");
        assert_eq!(out.len(), 12);
        assert_eq!(drain(&mut out, &mut pool, 5), b"aaaaaaaaaabc");
    }

    #[test]
    fn plain_bytes_never_allocate_the_queue() {
        let mut pool = BufPool::new(4, 64);
        let mut out = Output::default();
        out.push_bytes(b"abc", &mut pool);
        assert!(out.rest.is_none());
        assert!(matches!(
            out.front(),
            Some(Front::Bytes { more: false, .. })
        ));
        out.advance(3, &mut pool);
        assert!(
            out.is_empty() && out.head.capacity() == 0,
            "an idle connection holds no buffer"
        );
    }

    #[test]
    fn a_region_behind_sent_bytes_is_the_front_and_bytes_before_it_say_more() {
        let mut pool = BufPool::new(4, 64);
        let mut out = Output::default();
        out.push_bytes(b"ab", &mut pool);
        out.push_file(file(3));
        assert!(matches!(out.front(), Some(Front::Bytes { more: true, .. })));
        out.advance(2, &mut pool);
        assert!(matches!(out.front(), Some(Front::File(r)) if r.len() == 3));
        out.push_bytes(b"cd", &mut pool);
        let mut into = Vec::new();
        assert_eq!(drain(&mut out, &mut pool, 2), b"fffcd");
        assert_eq!(out.take_head(&mut into), 0);
    }
}
