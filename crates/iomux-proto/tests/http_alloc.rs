//! The hello-world HTTP path and the RESP GET/SET/INCR path allocate nothing
//! per request: a counting global allocator watches thousands of pipelined
//! requests. Only the test's own thread's allocations count (the harness's
//! other threads, and the other test, may allocate meanwhile).

use iomux_proto::http::{hello, DEFAULT_CONFIG};
use iomux_proto::resp::{Resp, Shared};
use iomux_proto::{ConnId, Context, Http, Service};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    /// Count this thread's allocations (const-initialised, no destructor:
    /// safe to read from inside the allocator).
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation() {
    if counting() {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

fn counting() -> bool {
    COUNTING.try_with(Cell::get).unwrap_or(false)
}

/// How many times `f` allocated on this thread.
fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get) - before
}

/// `requests` one after another, sixteen times: one read's worth of
/// pipelined requests.
fn pipelined(requests: &[&[u8]]) -> Vec<u8> {
    requests.concat().repeat(16)
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn hello_world_requests_allocate_nothing() {
    let pipeline = pipelined(&[
        b"GET /plaintext HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\nUser-Agent: t\r\n\r\n",
        b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody",
    ]);
    let mut http = Http::new(&DEFAULT_CONFIG, std::sync::Arc::new(hello::routes()));
    let mut out = Vec::with_capacity(1 << 20);
    let mut commands = Vec::new();
    let now = std::time::Instant::now();
    let mut cx = Context::new(ConnId::new(0, 1), now, &mut out, &mut commands);
    // Warm up: the first call sets up the thread's date cache.
    http.on_data(&pipeline, &mut cx);
    cx.out().clear();
    let mut answered = 0;
    let allocated = allocations_in(|| {
        for _ in 0..1000 {
            let step = http.on_data(&pipeline, &mut cx);
            assert_eq!(step.consumed, pipeline.len());
            assert!(!step.close);
            answered += cx.out().windows(9).filter(|w| w == b"HTTP/1.1 ").count();
            cx.out().clear();
        }
    });
    assert_eq!(answered, 1000 * 16 * 5);
    assert_eq!(
        allocated, 0,
        "heap allocations while answering {answered} requests"
    );
    // The counter does see allocations: a chunked /echo body is buffered.
    let allocated = allocations_in(|| {
        http.on_data(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            &mut cx,
        );
    });
    assert!(allocated > 0, "the counter counts");
    assert!(cx.out().ends_with(b"abc"));
}

#[test]
fn resp_get_set_incr_allocate_nothing() {
    let pipeline = pipelined(&[
        b"*3\r\n$3\r\nSET\r\n$7\r\nkey:001\r\n$3\r\nxyz\r\n",
        b"*2\r\n$3\r\nGET\r\n$7\r\nkey:001\r\n",
        b"*2\r\n$4\r\nINCR\r\n$7\r\ncounter\r\n",
        b"*2\r\n$6\r\nEXISTS\r\n$7\r\nkey:001\r\n",
        b"*1\r\n$4\r\nPING\r\n",
        b"GET key:001\r\n",
    ]);
    let mut conn = Resp::new(std::sync::Arc::new(Shared::default()));
    let mut out = Vec::with_capacity(1 << 20);
    let mut commands = Vec::new();
    let now = std::time::Instant::now();
    let mut cx = Context::new(ConnId::new(0, 1), now, &mut out, &mut commands);
    // Warm up: the keys are created, the parser's span list grows once.
    conn.on_data(&pipeline, &mut cx);
    cx.out().clear();
    let allocated = allocations_in(|| {
        for _ in 0..1000 {
            let step = conn.on_data(&pipeline, &mut cx);
            assert_eq!(step.consumed, pipeline.len());
            assert!(!step.close);
        }
    });
    let answered = cx.out().windows(5).filter(|w| w == b"$3\r\nx").count();
    assert_eq!(answered, 1000 * 16 * 2, "every GET answered the value");
    assert_eq!(
        allocated, 0,
        "heap allocations while answering RESP commands"
    );
    // The counter does see allocations: a new key is allocated.
    let allocated = allocations_in(|| {
        conn.on_data(b"SET another v\r\n", &mut cx);
    });
    assert!(allocated > 0, "the counter counts");
}
