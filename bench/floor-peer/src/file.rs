//! The floor of a static-file server on epoll: per request, a canned head
//! (the file's length, fixed dates) sent with MSG_MORE, then the body with
//! one `sendfile` per writable socket (the rest of a large file waits for
//! EPOLLOUT). No parsing (a request is counted by its blank line), no path
//! lookup (one file per process), no limits: the least any server sending
//! that file with sendfile can do. bench/static-peers.sh runs it.
//!
//! `file-read` is the same floor reading the body instead: the file read
//! (pread) behind the head into one buffer, then one send — the copy a
//! server pays when it does not use sendfile. `file-mem` sends head and body
//! from memory (read once at start: a server's cache of small files), one
//! send per writable socket. Run them to see where sendfile starts to pay
//! for its extra system call (docs/performance.md).

use crate::{accept_all, count_requests, epoll_listening, wait};
use std::fs::File;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;

/// How the body goes out.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Body {
    /// `sendfile` from the file, behind the head sent with MSG_MORE.
    Sendfile,
    /// `pread` of [`PIECE`] bytes at a time into one buffer, each sent.
    Pieces,
    /// `pread` into a buffer behind the head, then `send`.
    Pread,
    /// `send` of head and body held in memory.
    Memory,
    /// [`Body::Sendfile`] with Nagle on (no TCP_NODELAY).
    SendfileNagle,
    /// [`Body::Pieces`] with Nagle on, every piece but the body's last sent
    /// with MSG_MORE.
    PiecesMore,
}

impl Body {
    fn nodelay(self) -> bool {
        !matches!(self, Body::SendfileNagle | Body::PiecesMore)
    }
}

/// The piece [`Body::Pieces`] reads and sends at a time.
const PIECE: usize = 32 * 1024;

/// Per connection: what is left to send.
#[derive(Default, Clone)]
struct Conn {
    /// The last bytes seen (blank-line detection across reads).
    tail: u32,
    /// Requests read whose response has not started.
    queued: u64,
    /// Bytes of the current body (sendfile) or response (memory) still to send.
    left: u64,
    /// Bytes of the current response still to send (read mode).
    pending: Vec<u8>,
    /// Registered for EPOLLOUT too.
    writing: bool,
}

/// The canned head of the file's response (also the io_uring file floor's).
pub(crate) fn head(len: u64) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nServer: floor\r\nDate: Wed, 25 Nov 2026 00:00:00 GMT\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {len}\r\n\
         Last-Modified: Wed, 25 Nov 2026 00:00:00 GMT\r\nETag: \"6925-{len:x}\"\r\n\
         Accept-Ranges: bytes\r\n\r\n"
    )
    .into_bytes()
}

fn interest(epfd: RawFd, fd: RawFd, out: bool) {
    let events = libc::EPOLLIN as u32 | if out { libc::EPOLLOUT as u32 } else { 0 };
    let mut ev = libc::epoll_event {
        events,
        u64: fd as u64,
    };
    // SAFETY: epfd and fd are open descriptors; ev lives across the call.
    unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_MOD, fd, &mut ev) };
}

/// What one `send` of a connection's pending bytes did.
enum Sent {
    /// All of them went.
    All,
    /// Some (or none): the socket pushed back.
    Part,
    /// The connection broke.
    Broken,
}

/// One `send` of `data` with MSG_NOSIGNAL and `flags`: bytes sent, or -1
/// (errno set) as `send(2)` returns.
fn send_bytes(fd: RawFd, data: &[u8], flags: libc::c_int) -> isize {
    // SAFETY: `data` is a live slice of its length.
    unsafe {
        libc::send(
            fd,
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_NOSIGNAL | flags,
        )
    }
}

/// One `send` of `pending` with `flags`; what went is removed from it.
fn send_pending(fd: RawFd, pending: &mut Vec<u8>, flags: libc::c_int) -> Sent {
    let n = send_bytes(fd, pending, flags);
    if n < 0 {
        return if io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock {
            Sent::Part
        } else {
            Sent::Broken
        };
    }
    pending.drain(..n as usize);
    if pending.is_empty() {
        Sent::All
    } else {
        Sent::Part
    }
}

/// Send what `conn` owes until the socket pushes back; false when the
/// connection broke.
fn pump(fd: RawFd, conn: &mut Conn, file: &File, head: &[u8], len: u64, body: Body) -> bool {
    loop {
        if body == Body::Memory {
            // `head` is the whole response here.
            if conn.left == 0 {
                if conn.queued == 0 {
                    return true;
                }
                conn.queued -= 1;
                conn.left = head.len() as u64;
            }
            let data = &head[head.len() - conn.left as usize..];
            let n = send_bytes(fd, data, 0);
            if n < 0 {
                return io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock;
            }
            conn.left -= n as u64;
            if conn.left > 0 {
                return true;
            }
            continue;
        }
        if matches!(body, Body::Pieces | Body::PiecesMore) {
            // `pending` holds the unsent rest of the current piece.
            if conn.pending.is_empty() {
                if conn.left == 0 {
                    if conn.queued == 0 {
                        return true;
                    }
                    conn.queued -= 1;
                    conn.left = len;
                    conn.pending.extend_from_slice(head);
                }
                let at = conn.pending.len();
                let n = PIECE.saturating_sub(at).max(4096).min(conn.left as usize);
                conn.pending.resize(at + n, 0);
                if file
                    .read_exact_at(&mut conn.pending[at..], len - conn.left)
                    .is_err()
                {
                    return false;
                }
                conn.left -= n as u64;
            }
            let more = if body == Body::PiecesMore && conn.left > 0 {
                libc::MSG_MORE
            } else {
                0
            };
            match send_pending(fd, &mut conn.pending, more) {
                Sent::All => continue,
                Sent::Part => return true,
                Sent::Broken => return false,
            }
        }
        if body == Body::Pread {
            if conn.pending.is_empty() {
                if conn.queued == 0 {
                    return true;
                }
                conn.queued -= 1;
                conn.pending.extend_from_slice(head);
                let at = conn.pending.len();
                conn.pending.resize(at + len as usize, 0);
                if file.read_exact_at(&mut conn.pending[at..], 0).is_err() {
                    return false;
                }
            }
            match send_pending(fd, &mut conn.pending, 0) {
                Sent::All => continue,
                Sent::Part => return true,
                Sent::Broken => return false,
            }
        }
        if conn.left == 0 {
            if conn.queued == 0 {
                return true;
            }
            conn.queued -= 1;
            // A head is small: the socket takes it whole or the floor gives up.
            let more = if len > 0 { libc::MSG_MORE } else { 0 };
            let n = send_bytes(fd, head, more);
            if n != head.len() as isize {
                return false;
            }
            conn.left = len;
            continue;
        }
        let mut offset = (len - conn.left) as libc::off_t;
        // SAFETY: sendfile from an open file to an open socket; `offset` is a live local.
        let n = unsafe { libc::sendfile(fd, file.as_raw_fd(), &mut offset, conn.left as usize) };
        if n < 0 {
            return io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock;
        }
        if n == 0 {
            return false;
        }
        conn.left -= n as u64;
        if conn.left > 0 {
            // One sendfile per writable socket: the rest on EPOLLOUT.
            return true;
        }
    }
}

pub fn run(listener: TcpListener, path: &str, body: Body) -> io::Result<()> {
    let file = File::open(path).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    let len = file.metadata()?.len();
    let mut head = head(len);
    if body == Body::Memory {
        let at = head.len();
        head.resize(at + len as usize, 0);
        file.read_exact_at(&mut head[at..], 0)?;
    }
    let (lfd, epfd) = epoll_listening(&listener)?;
    let mut conns: Vec<Conn> = Vec::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        for ev in wait(epfd, &mut events) {
            let fd = ev.u64 as RawFd;
            if fd == lfd {
                accept_all(epfd, lfd, |c| {
                    if conns.len() <= c as usize {
                        conns.resize(c as usize + 1, Conn::default());
                    }
                    conns[c as usize] = Conn::default();
                    if body.nodelay() {
                        crate::set_nodelay(c);
                    }
                });
                continue;
            }
            let conn = &mut conns[fd as usize];
            let mut alive = true;
            if ev.events & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
                // SAFETY: `buf` is writable memory of its length.
                let got = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
                if got > 0 {
                    conn.queued += count_requests(&mut conn.tail, &buf[..got as usize]) as u64;
                } else if got == 0 || io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock
                {
                    alive = false;
                }
            }
            alive = alive && pump(fd, conn, &file, &head, len, body);
            if !alive {
                // SAFETY: fd is ours and open; close also removes it from epoll.
                unsafe { libc::close(fd) };
                continue;
            }
            let owes = conn.left > 0 || !conn.pending.is_empty() || conn.queued > 0;
            if owes != conn.writing {
                conn.writing = owes;
                interest(epfd, fd, owes);
            }
        }
    }
}
