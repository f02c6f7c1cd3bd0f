//! Byte-buffer recycling: connections hold buffers only while data is in
//! flight, so thousands of idle connections cost no buffer memory.

/// A bounded free list of byte buffers.
#[derive(Debug)]
pub(crate) struct BufPool {
    free: Vec<Vec<u8>>,
    keep: usize,
    capacity: usize,
}

impl BufPool {
    /// Keep at most `keep` spare buffers of about `capacity` bytes.
    pub(crate) fn new(keep: usize, capacity: usize) -> BufPool {
        BufPool {
            free: Vec::new(),
            keep,
            capacity,
        }
    }

    /// An empty buffer, recycled when one is spare.
    pub(crate) fn get(&mut self) -> Vec<u8> {
        self.free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.capacity))
    }

    /// Take a buffer back (leaving an unallocated one in its place); oversized
    /// ones are freed so one large transfer does not pin memory.
    pub(crate) fn put(&mut self, buf: &mut Vec<u8>) {
        let mut buf = std::mem::take(buf);
        if buf.capacity() == 0 {
            return;
        }
        if self.free.len() < self.keep && buf.capacity() <= 2 * self.capacity {
            buf.clear();
            self.free.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
