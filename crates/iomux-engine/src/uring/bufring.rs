//! The provided-buffer ring: the one place in the engine that allocates raw
//! memory for the kernel, and its unsafe code.

use io_uring::{types, IoUring};
use std::io;

/// Provided buffers: how many, and how large each one is.
pub(crate) const BUFFERS: u16 = 512;
pub(crate) const BUFFER_SIZE: usize = 16 * 1024;
pub(crate) const BUFFER_GROUP: u16 = 7;

/// A provided-buffer ring: `BUFFERS` buffers the kernel picks from for each
/// receive, handed back by buffer id once their bytes are consumed.
pub(crate) struct BufRing {
    /// The ring of buffer descriptors the kernel reads (page-aligned).
    entries: *mut types::BufRingEntry,
    entries_layout: std::alloc::Layout,
    /// The buffers themselves, `BUFFER_SIZE` each.
    data: Vec<u8>,
    tail: u16,
}

impl BufRing {
    pub(crate) fn register(ring: &IoUring) -> io::Result<BufRing> {
        let layout = std::alloc::Layout::from_size_align(
            BUFFERS as usize * std::mem::size_of::<types::BufRingEntry>(),
            4096,
        )
        .expect("static layout");
        // SAFETY: a non-zero-sized layout; zeroed memory is a valid empty ring.
        let entries = unsafe { std::alloc::alloc_zeroed(layout) } as *mut types::BufRingEntry;
        if entries.is_null() {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "allocating the buffer ring",
            ));
        }
        let mut buf_ring = BufRing {
            entries,
            entries_layout: layout,
            data: vec![0u8; BUFFERS as usize * BUFFER_SIZE],
            tail: 0,
        };
        // SAFETY: `entries` is page-aligned memory for BUFFERS entries that
        // lives as long as the ring (BufRing is dropped after unregistering).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries as u64, BUFFERS, BUFFER_GROUP, 0)
        }
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("registering a provided-buffer ring needs Linux 5.19 or later ({e})"),
            )
        })?;
        for bid in 0..BUFFERS {
            buf_ring.push(bid);
        }
        buf_ring.publish();
        Ok(buf_ring)
    }

    /// Put buffer `bid` back in the ring (seen by the kernel after `publish`).
    pub(crate) fn push(&mut self, bid: u16) {
        let index = (self.tail & (BUFFERS - 1)) as usize;
        // SAFETY: index < BUFFERS; the entry is ours to write until published.
        let entry = unsafe { &mut *self.entries.add(index) };
        // SAFETY: bid < BUFFERS, so the buffer lies inside `data`.
        entry.set_addr(unsafe { self.data.as_mut_ptr().add(bid as usize * BUFFER_SIZE) } as u64);
        entry.set_len(BUFFER_SIZE as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Make pushed buffers visible to the kernel.
    pub(crate) fn publish(&self) {
        // SAFETY: the tail field lives in the first entry of our ring; the
        // release store orders the entries written before it.
        unsafe {
            let tail =
                types::BufRingEntry::tail(self.entries) as *const std::sync::atomic::AtomicU16;
            (*tail).store(self.tail, std::sync::atomic::Ordering::Release);
        }
    }

    pub(crate) fn buffer(&self, bid: u16, len: usize) -> &[u8] {
        let start = bid as usize * BUFFER_SIZE;
        &self.data[start..start + len.min(BUFFER_SIZE)]
    }
}

impl BufRing {
    /// The kernel may still write into these buffers (a request it never
    /// completed): never free them.
    pub(crate) fn leak(&mut self) {
        std::mem::forget(std::mem::take(&mut self.data));
        self.entries = std::ptr::null_mut();
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.entries.is_null() {
            return; // leaked
        }
        // SAFETY: allocated in `register` with this layout; the ring that
        // used it is unregistered (or dropped) first.
        unsafe { std::alloc::dealloc(self.entries as *mut u8, self.entries_layout) };
    }
}
