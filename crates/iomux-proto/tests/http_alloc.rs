//! The hello-world path allocates nothing per request: a counting global
//! allocator watches thousands of pipelined requests. Only this thread's
//! allocations count (the test harness's own threads may allocate meanwhile).

use iomux_proto::{Http, Protocol};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

thread_local! {
    /// Count this thread's allocations (const-initialised, no destructor:
    /// safe to read from inside the allocator).
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

fn counting() -> bool {
    COUNTING.try_with(Cell::get).unwrap_or(false)
}

fn count(on: bool) {
    COUNTING.with(|c| c.set(on));
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counting() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counting() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn hello_world_requests_allocate_nothing() {
    let pipeline: Vec<u8> = [
        &b"GET /plaintext HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\nUser-Agent: t\r\n\r\n"[..],
        b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody",
    ]
    .concat()
    .repeat(16);
    let mut http = Http::default();
    let mut out = Vec::with_capacity(1 << 20);
    // Warm up: the first call sets up the thread's date cache.
    http.on_input(&pipeline, &mut out);
    out.clear();
    count(true);
    let mut answered = 0;
    for _ in 0..1000 {
        let step = http.on_input(&pipeline, &mut out);
        assert_eq!(step.consumed, pipeline.len());
        assert!(!step.close);
        answered += out.windows(9).filter(|w| w == b"HTTP/1.1 ").count();
        out.clear();
    }
    count(false);
    assert_eq!(answered, 1000 * 16 * 5);
    assert_eq!(
        ALLOCATIONS.load(Ordering::SeqCst),
        0,
        "heap allocations while answering {answered} requests"
    );
    // The counter does see allocations: a chunked /echo body is buffered.
    count(true);
    http.on_input(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        &mut out,
    );
    count(false);
    assert!(ALLOCATIONS.load(Ordering::SeqCst) > 0, "the counter counts");
    assert!(out.ends_with(b"abc"));
}
