//! Kernel probing and ring set-up: which task-run mode and which kind of
//! receive this kernel takes, and how requests are told apart.

use super::bufring::BufRing;
use io_uring::{squeue, IoUring};
use iomux::Token;
use std::io;

/// Submission ring entries; completions get four times as many.
const RING_ENTRIES: u32 = 4096;

/// How receives are issued, best first. Each needs a newer kernel than the
/// next; a receive refused with `EINVAL` moves the loop to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum RecvMode {
    /// Multishot receive with a byte limit (`sqe->optlen`, Linux 6.17): armed
    /// with the connection's room under `output_high_water`, it ends by itself
    /// once that much has arrived (at most one buffer more), and the loop
    /// arms the next one only below the limit. An echo peer that does not
    /// read gets the limit plus less than one buffer taken from it (epoll:
    /// plus less than one 64 KiB read).
    CappedMultishot,
    /// Multishot receive without a limit (Linux 6.0): it keeps filling
    /// buffers until the cancel sent on a pause lands, and bytes that
    /// arrived must be kept (measured: up to 1.5 MB held instead of 320 KiB,
    /// `bench/pause_overshoot.py`).
    Multishot,
    /// One receive per request, of at most one buffer.
    SingleShot,
}

impl RecvMode {
    pub(crate) const ALL: [RecvMode; 3] = [
        RecvMode::CappedMultishot,
        RecvMode::Multishot,
        RecvMode::SingleShot,
    ];

    /// The mode to fall back to when this one is refused.
    pub(crate) fn next(self) -> Option<RecvMode> {
        RecvMode::ALL.into_iter().find(|m| *m > self)
    }
}

/// Set `sqe->optlen` (bytes 44..48 of the 64-byte SQE, the `file_index`
/// union): for a multishot receive the total it may take before it ends
/// (Linux 6.17). The io-uring crate has no setter for it; kernels before
/// 6.17 refuse a non-zero value there with `EINVAL`.
pub(crate) fn set_total_len(entry: &mut squeue::Entry, total: u32) {
    const OPTLEN: usize = 44;
    const _: () = assert!(std::mem::size_of::<squeue::Entry>() == 64);
    // SAFETY: `Entry` is `repr(C)` around the kernel's 64-byte
    // `io_uring_sqe`, whose bytes 44..48 are a plain `u32` union; the write
    // is unaligned-safe and stays inside the entry.
    unsafe {
        (entry as *mut squeue::Entry)
            .cast::<u8>()
            .add(OPTLEN)
            .cast::<u32>()
            .write_unaligned(total)
    };
}

/// What a request was for, in the low bits of its `user_data`.
pub(crate) mod kind {
    pub const ACCEPT: u64 = 1;
    pub const RECV: u64 = 2;
    pub const SEND: u64 = 3;
    pub const TIMEOUT: u64 = 4;
    pub const WAKER: u64 = 5;
    /// Cancellations and timeout removals: their completions need nothing.
    pub const IGNORED: u64 = 6;
    /// A connecting socket's poll for writability (an outgoing connection).
    pub const CONNECT: u64 = 7;
    /// A user's watched descriptor's poll (`LoopCx::watch`).
    pub const WATCH: u64 = 8;
    /// A poll for writability standing for a send: after a `sendfile` made
    /// outside the ring, the next piece waits for room.
    pub const SENDFILE: u64 = 9;
}

/// `user_data`: kind (4 bits) | the connection token's slot (28 bits) | its
/// generation (32 bits).
pub(crate) fn user_data(kind: u64, token: Token) -> u64 {
    let token = token.0 as u64;
    debug_assert!(
        token & 0xffff_ffff < 1 << 28,
        "slot {token:#x} past 28 bits"
    );
    kind | ((token & 0x0fff_ffff) << 4) | (token & !0xffff_ffff)
}

pub(crate) fn decode(ud: u64) -> (u64, Token) {
    (
        ud & 0xf,
        Token((((ud >> 4) & 0x0fff_ffff) | (ud & !0xffff_ffff)) as usize),
    )
}

/// Requests that are not a connection's (accept, waker, cancellations).
pub(crate) const NO_CONN: Token = Token(0);

/// The timeout request's token: its generation tells a stale one apart.
pub(crate) fn timeout_token(generation: u32) -> Token {
    Token((generation as usize) << 32)
}

/// When the kernel runs a ring's completion work (task work), best first.
/// Each needs a newer kernel than the next; a kernel that refuses one
/// (`EINVAL` from `io_uring_setup`) gets the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskRun {
    /// `SINGLE_ISSUER | DEFER_TASKRUN` (Linux 6.1): the work runs only inside
    /// the loop's own `io_uring_enter`, in one batch, and the loop is woken
    /// only when it waits. Without it a receive interrupts the loop thread
    /// with an IPI (21% of the server's samples under pipelined HTTP).
    Deferred,
    /// `COOP_TASKRUN | TASKRUN_FLAG` (Linux 5.19): no interrupt; the work
    /// runs at the thread's next kernel entry.
    Cooperative,
    /// The kernel interrupts the loop thread to run the work at once.
    Interrupting,
}

impl TaskRun {
    /// From best to the one every io_uring kernel takes.
    pub(crate) const ALL: [TaskRun; 3] = [
        TaskRun::Deferred,
        TaskRun::Cooperative,
        TaskRun::Interrupting,
    ];

    fn apply(self, builder: &mut io_uring::Builder) {
        match self {
            TaskRun::Deferred => {
                builder.setup_single_issuer().setup_defer_taskrun();
            }
            TaskRun::Cooperative => {
                builder.setup_coop_taskrun().setup_taskrun_flag();
            }
            TaskRun::Interrupting => {}
        }
    }
}

/// Open a ring with the best task-run mode from `best` down that this
/// kernel takes, naming what to do when it refuses io_uring altogether.
pub(crate) fn open_ring(best: TaskRun) -> io::Result<(IoUring, TaskRun)> {
    open_ring_with(best, build_ring)
}

/// One `io_uring_setup` in `mode`, the error as the kernel gave it.
pub(crate) fn build_ring(mode: TaskRun) -> io::Result<IoUring> {
    let mut builder = IoUring::builder();
    builder.setup_cqsize(RING_ENTRIES * 4);
    mode.apply(&mut builder);
    builder.build(RING_ENTRIES)
}

/// `open_ring` with the ring set-up call passed in, so tests can play a
/// kernel that refuses a mode.
pub(crate) fn open_ring_with(
    best: TaskRun,
    mut build: impl FnMut(TaskRun) -> io::Result<IoUring>,
) -> io::Result<(IoUring, TaskRun)> {
    let mut modes = TaskRun::ALL
        .into_iter()
        .skip_while(|m| *m != best)
        .peekable();
    while let Some(mode) = modes.next() {
        match build(mode) {
            Ok(ring) => return Ok((ring, mode)),
            // EINVAL: an unknown set-up flag; try without it.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && modes.peek().is_some() => {}
            Err(e) => return Err(iomux::selector::uring::unavailable(e)),
        }
    }
    unreachable!("TaskRun::ALL ends with a mode that is returned either way")
}

/// Fail with advice when this kernel cannot run the engine (no io_uring, or
/// no provided-buffer rings). On a thread of its own, so the caller's next
/// blocking call is not interrupted when the ring goes
/// ([`iomux::selector::uring::probe_apart`]).
pub(crate) fn check_available() -> io::Result<()> {
    iomux::selector::uring::probe_apart(|| {
        let (ring, _) = open_ring(TaskRun::Deferred)?;
        let bufs = BufRing::register(&ring)?;
        drop(ring);
        drop(bufs);
        Ok(())
    })
}
