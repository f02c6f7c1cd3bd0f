//! Byte-buffer recycling: connections hold buffers only while data is in
//! flight, so thousands of idle connections cost no buffer memory.

/// A bounded free list of byte buffers.
#[derive(Debug)]
pub(crate) struct BufPool {
    free: Vec<Vec<u8>>,
    keep: usize,
    capacity: usize,
    /// The list a call's file regions go into, lent to each call in turn.
    regions: Vec<(usize, iomux_proto::FileRegion)>,
}

impl BufPool {
    /// Keep at most `keep` spare buffers of about `capacity` bytes.
    pub(crate) fn new(keep: usize, capacity: usize) -> BufPool {
        BufPool {
            free: Vec::new(),
            keep,
            capacity,
            regions: Vec::new(),
        }
    }

    /// The loop's empty list for the file regions of one call (a call that
    /// sends a file would otherwise allocate one).
    pub(crate) fn take_region_list(&mut self) -> Vec<(usize, iomux_proto::FileRegion)> {
        std::mem::take(&mut self.regions)
    }

    /// The list back after the call, emptied.
    pub(crate) fn put_region_list(&mut self, mut list: Vec<(usize, iomux_proto::FileRegion)>) {
        list.clear();
        if list.capacity() > self.regions.capacity() {
            self.regions = list;
        }
    }

    /// An empty buffer, recycled when one is spare.
    pub(crate) fn get(&mut self) -> Vec<u8> {
        self.free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.capacity))
    }

    /// A buffer about to take `len` bytes: a recycled full-size one when
    /// `len` is a good part of one, else a fresh one of `len`'s size. A
    /// pub/sub frame or a few leftover bytes must not take a full buffer
    /// each: handing each of 5,000 subscribers 64 KiB per PUBLISH grew and
    /// shrank the heap by hundreds of MiB a message (page faults and unmaps
    /// were a tenth of the server's CPU, measured with perf).
    pub(crate) fn get_for(&mut self, len: usize) -> Vec<u8> {
        if len >= self.capacity / 4 {
            self.get()
        } else {
            Vec::with_capacity(len)
        }
    }

    /// Whether `buf` grew past what the loop keeps (twice the pool's size):
    /// such a buffer is freed once empty, so one large transfer does not
    /// pin its memory.
    pub(crate) fn oversized(&self, buf: &Vec<u8>) -> bool {
        buf.capacity() > 2 * self.capacity
    }

    /// Take a buffer back (leaving an unallocated one in its place); only
    /// buffers of about the pool's size are kept: oversized ones are freed so
    /// one large transfer does not pin memory, small ones so the pool hands
    /// out full-size buffers.
    pub(crate) fn put(&mut self, buf: &mut Vec<u8>) {
        let mut buf = std::mem::take(buf);
        if buf.capacity() == 0 {
            return;
        }
        let size = buf.capacity();
        if self.free.len() < self.keep && !self.oversized(&buf) && size >= self.capacity / 2 {
            buf.clear();
            self.free.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_output_gets_a_small_buffer_and_is_not_pooled() {
        let mut pool = BufPool::new(4, 64);
        let small = pool.get_for(10);
        assert!(small.capacity() >= 10 && small.capacity() < 64);
        let mut big = pool.get_for(40);
        assert!(big.capacity() >= 64, "a good part of a buffer: a full one");
        let mut small = small;
        pool.put(&mut small);
        assert_eq!(pool.free.len(), 0, "a small buffer is freed, not pooled");
        pool.put(&mut big);
        assert_eq!(pool.free.len(), 1);
    }

    #[test]
    fn recycles_up_to_the_bound_and_frees_oversized() {
        let mut pool = BufPool::new(1, 16);
        let mut a = pool.get();
        a.extend_from_slice(b"abc");
        let ptr = a.as_ptr();
        pool.put(&mut a);
        assert_eq!(a.capacity(), 0, "the connection keeps nothing");
        let b = pool.get();
        assert!(b.is_empty());
        assert_eq!(b.as_ptr(), ptr, "the buffer was reused");
        let mut big = Vec::with_capacity(1000);
        big.push(1u8);
        pool.put(&mut big);
        assert_eq!(pool.free.len(), 0);
    }
}
