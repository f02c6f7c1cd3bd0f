//! A pre-forked epoll echo server: the parent binds one listener and forks
//! `--workers N` processes; each registers the shared listener with
//! `EPOLLEXCLUSIVE`, so a new connection wakes one worker, not all of them.
//! `cargo run -p iomux --example prefork_echo -- --addr 127.0.0.1:7000 --workers 4`
//!
//! Workers die with the parent (PR_SET_PDEATHSIG), so stopping the parent stops them all.

mod common;

use common::LISTENER;
use iomux::{EpollSelector, Interest, Trigger};
use std::io::{self, Write};
use std::net::TcpListener;

fn main() -> io::Result<()> {
    let flags = common::Flags::parse(&[("--workers", "N")]);
    let workers: usize = flags.get(
        "--workers",
        "2",
        Some("give a number of processes such as 4"),
    );
    let listener = flags.listen()?;
    // Flush before forking, or each child would inherit and repeat buffered output.
    io::stdout().flush()?;
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    let mut children = Vec::new();
    for _ in 0..workers {
        // SAFETY: the process is single-threaded here, so the child may run any code.
        match unsafe { libc::fork() } {
            -1 => return Err(io::Error::last_os_error()),
            0 => {
                // SAFETY: prctl(PR_SET_PDEATHSIG) and getppid take no pointers.
                let orphaned = unsafe {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    libc::getppid() != parent
                };
                if orphaned {
                    std::process::exit(0);
                }
                let err = worker(&listener).unwrap_err();
                eprintln!("worker {}: {err}", std::process::id());
                std::process::exit(1);
            }
            pid => children.push(pid),
        }
    }
    for pid in children {
        let mut status = 0;
        // SAFETY: waits for our own child, writing its status into a live int.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        eprintln!("worker {pid} exited with status {status}");
    }
    Ok(())
}

fn worker(listener: &TcpListener) -> io::Result<()> {
    let mut selector = EpollSelector::new(Trigger::Level)?;
    selector.register_exclusive(listener, LISTENER, Interest::READABLE)?;
    common::echo_loop(&mut selector, listener)
}
