//! Experiment: select, poll and epoll asked directly, through libc, not
//! iomux: what select(2) does with a descriptor above FD_SETSIZE and what
//! the C library's FD_SET does with it; whether select's and poll's cost
//! grows with the descriptors watched or with the highest descriptor number;
//! whether epoll maps memory shared with the process.

use super::chart::{self, Point, Series};
use super::judge::{self, CostAxes, Growth, KernelSelect, MmapProbe, SelectProbe};
use super::report::{Section, Spread, Table};
use super::Ctx;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// A new descriptor for `fd` numbered `min` or above (F_DUPFD_CLOEXEC).
fn dup_at_least(fd: RawFd, min: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor that nothing else owns.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` was just returned by fcntl and is owned here only.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// A descriptor set for select(2) on the heap, as large as `max_fd` needs.
struct BigFdSet(Vec<u64>);

impl BigFdSet {
    fn new(max_fd: RawFd) -> BigFdSet {
        BigFdSet(vec![0; max_fd as usize / 64 + 1])
    }

    fn set(&mut self, fd: RawFd) {
        self.0[fd as usize / 64] |= 1 << (fd as usize % 64);
    }

    fn is_set(&self, fd: RawFd) -> bool {
        self.0[fd as usize / 64] & (1 << (fd as usize % 64)) != 0
    }

    /// select(2) for readability over descriptors below `nfds`, not waiting.
    fn select_read(&mut self, nfds: RawFd) -> io::Result<i32> {
        assert!(nfds as usize <= self.0.len() * 64);
        let mut zero = libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        };
        // SAFETY: the kernel reads and writes (nfds + 7) / 8 bytes of the set,
        // which the vector holds (asserted above); the other sets are null.
        let n = unsafe {
            libc::select(
                nfds,
                self.0.as_mut_ptr().cast::<libc::fd_set>(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &mut zero,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n)
        }
    }
}

/// The descriptor the select test uses, far above FD_SETSIZE when the
/// descriptor limit allows.
fn high_fd_target(limit: u64) -> Option<RawFd> {
    let want = 1500u64;
    (limit > want + 10).then_some(want as RawFd)
}

fn select_probe(limit: u64) -> SelectProbe {
    let mut probe = SelectProbe {
        fd_setsize: libc::FD_SETSIZE,
        fd_set_bytes: std::mem::size_of::<libc::fd_set>(),
        high_fd: 1500,
        kernel: KernelSelect::NotTested(String::new()),
        libc_fd_set: Err(String::new()),
    };
    let Some(target) = high_fd_target(limit) else {
        probe.kernel =
            KernelSelect::NotTested(format!("the descriptor limit ({limit}) is too low"));
        probe.libc_fd_set = Err("no descriptor above FD_SETSIZE".into());
        return probe;
    };
    let kernel = (|| -> io::Result<(RawFd, KernelSelect)> {
        let (mut writer, reader) = UnixStream::pair()?;
        writer.write_all(b"x")?;
        let high = dup_at_least(reader.as_raw_fd(), target)?;
        let fd = high.as_raw_fd();
        let mut set = BigFdSet::new(fd);
        set.set(fd);
        Ok((
            fd,
            match set.select_read(fd + 1) {
                Ok(_) if set.is_set(fd) => KernelSelect::Reported,
                Ok(_) => KernelSelect::NotReported,
                Err(e) => KernelSelect::Refused(e.to_string()),
            },
        ))
    })();
    match kernel {
        Ok((fd, k)) => {
            probe.high_fd = fd;
            probe.kernel = k;
        }
        Err(e) => probe.kernel = KernelSelect::NotTested(e.to_string()),
    }
    probe.libc_fd_set = checked_fd_set_in_child(probe.high_fd);
    probe
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
extern "C" {
    /// What glibc's FD_SET, FD_CLR and FD_ISSET call under _FORTIFY_SOURCE
    /// to turn a descriptor into a word index (aborting when out of range).
    fn __fdelt_chk(fd: libc::c_long) -> libc::c_long;
}

/// Run glibc's checked FD_SET index (`__fdelt_chk`) on `fd` in a forked
/// child, so whatever it does cannot harm the lab; say what happened.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn checked_fd_set_in_child(fd: RawFd) -> Result<String, String> {
    let (mut read_end, write_end) = UnixStream::pair().map_err(|e| e.to_string())?;
    // SAFETY: the child only calls dup2, __fdelt_chk, write and _exit
    // (async-signal-safe, or glibc's own abort path) before exiting.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork failed: {}", io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: in the child: plain system calls on descriptors it owns.
        unsafe {
            libc::dup2(write_end.as_raw_fd(), 2);
            let word = __fdelt_chk(fd as libc::c_long);
            let msg = format!("returned word {word}\n");
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::_exit(0);
        }
    }
    drop(write_end);
    let mut status = 0;
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        // SAFETY: waitpid on our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        if r < 0 || Instant::now() > until {
            // SAFETY: kill and reap our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return Err("the child did not finish within 5 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut said = String::new();
    let _ = read_end.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = read_end.read_to_string(&mut said);
    let said = said.trim().replace('\n', " ");
    Ok(if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        let name = if sig == libc::SIGABRT {
            "SIGABRT".to_string()
        } else {
            format!("signal {sig}")
        };
        if said.is_empty() {
            format!("the process was killed by {name}")
        } else {
            format!("the process was killed by {name} after printing \"{said}\"")
        }
    } else {
        format!(
            "the call returned (exit status {}): \"{said}\"",
            libc::WEXITSTATUS(status)
        )
    })
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn checked_fd_set_in_child(_fd: RawFd) -> Result<String, String> {
    Err("this C library is not glibc".into())
}

/// Descriptors to watch: `count` of them, the highest numbered `highest`
/// or above, the rest as low as they come; all copies of one socket that
/// never becomes readable.
fn watched(sock: RawFd, count: usize, highest: RawFd) -> io::Result<Vec<OwnedFd>> {
    let mut fds = Vec::with_capacity(count);
    for _ in 1..count {
        fds.push(dup_at_least(sock, 0)?);
    }
    fds.push(dup_at_least(sock, highest)?);
    Ok(fds)
}

/// Nanoseconds per call of select(2) or poll(2) on `fds`, nothing ready,
/// median and range of `repeats` timings of `calls` calls.
fn time_calls(select: bool, fds: &[OwnedFd], calls: usize, repeats: usize) -> io::Result<Spread> {
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let max = raw.iter().copied().max().unwrap_or(0);
    let mut base = BigFdSet::new(max);
    for &fd in &raw {
        base.set(fd);
    }
    let mut pollfds: Vec<libc::pollfd> = raw
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut work = BigFdSet(base.0.clone());
    let mut times = Vec::new();
    for _ in 0..repeats {
        let start = Instant::now();
        for _ in 0..calls {
            if select {
                // select(2) overwrites the set: restore it each call.
                work.0.copy_from_slice(&base.0);
                work.select_read(max + 1)?;
            } else {
                // SAFETY: poll reads and writes the pollfd array of the length given.
                let n =
                    unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, 0) };
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        times.push(start.elapsed().as_nanos() as f64 / calls as f64);
    }
    Spread::of(&times).ok_or_else(|| io::Error::other("no timings"))
}

/// Cost by count (highest number fixed) and by highest number (one watched).
struct Axes {
    by_count: Vec<(usize, RawFd, Spread)>,
    by_highest: Vec<(usize, RawFd, Spread)>,
}

fn cost_axes(
    select: bool,
    counts: &[usize],
    fixed_highest: RawFd,
    highests: &[RawFd],
    calls: usize,
    repeats: usize,
) -> io::Result<Axes> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let mut axes = Axes {
        by_count: Vec::new(),
        by_highest: Vec::new(),
    };
    for &n in counts {
        let fds = watched(sock.as_raw_fd(), n, fixed_highest)?;
        let top = fds.last().map_or(0, AsRawFd::as_raw_fd);
        axes.by_count
            .push((n, top, time_calls(select, &fds, calls, repeats)?));
    }
    for &h in highests {
        let fds = watched(sock.as_raw_fd(), 1, h)?;
        let top = fds[0].as_raw_fd();
        axes.by_highest
            .push((1, top, time_calls(select, &fds, calls, repeats)?));
    }
    Ok(axes)
}

fn growth(points: &[(usize, RawFd, Spread)], by_count: bool) -> Option<Growth> {
    let (first, last) = (points.first()?, points.last()?);
    let n = |p: &(usize, RawFd, Spread)| if by_count { p.0 } else { p.1 as usize };
    Some(Growth {
        from_n: n(first),
        to_n: n(last),
        from: first.2,
        to: last.2,
    })
}

fn maps() -> (usize, usize) {
    let text = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    (
        text.lines().filter(|l| l.contains("eventpoll")).count(),
        text.lines().count(),
    )
}

/// epoll and the process's memory: mappings before and after an epoll
/// instance with a ready descriptor and a wait; then a wait into a
/// read-only buffer.
fn mmap_probe() -> MmapProbe {
    let before = maps();
    let result = (|| -> io::Result<(bool, (usize, usize))> {
        // SAFETY: epoll_create1 returns a new descriptor owned here only.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: just created, owned here.
        let ep = unsafe { OwnedFd::from_raw_fd(ep) };
        let (mut writer, reader) = UnixStream::pair()?;
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 7,
        };
        // SAFETY: valid descriptors and an initialised event.
        if unsafe {
            libc::epoll_ctl(
                ep.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                reader.as_raw_fd(),
                &mut ev,
            )
        } != 0
        {
            return Err(io::Error::last_os_error());
        }
        writer.write_all(b"x")?;
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 8];
        // SAFETY: the array holds the 8 events asked for.
        let n = unsafe { libc::epoll_wait(ep.as_raw_fd(), events.as_mut_ptr(), 8, 1000) };
        if n != 1 {
            return Err(io::Error::other(format!(
                "epoll_wait returned {n}, expected 1"
            )));
        }
        let after = maps();
        // SAFETY: an anonymous read-only page, unmapped below.
        let page = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if page == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel checks the buffer; a read-only one gives EFAULT.
        let r = unsafe { libc::epoll_wait(ep.as_raw_fd(), page.cast(), 1, 0) };
        let err = io::Error::last_os_error();
        // SAFETY: the page mapped above.
        unsafe { libc::munmap(page, 4096) };
        Ok((r < 0 && err.raw_os_error() == Some(libc::EFAULT), after))
    })();
    match result {
        Ok((fault, after)) => MmapProbe {
            eventpoll_maps: (before.0, after.0),
            maps: (before.1, after.1),
            copy_faults: Ok(fault),
        },
        Err(e) => MmapProbe {
            eventpoll_maps: (before.0, before.0),
            maps: (before.1, before.1),
            copy_faults: Err(e.to_string()),
        },
    }
}

pub(crate) fn run(ctx: &mut Ctx) -> io::Result<Section> {
    ctx.progress("syscalls: select(2) above FD_SETSIZE, glibc's checked FD_SET");
    let select = select_probe(ctx.fd_limit);
    let mut probe_table = Table::new(&["question", "answer"]);
    probe_table.push(vec!["FD_SETSIZE".into(), select.fd_setsize.to_string()]);
    probe_table.push(vec![
        "sizeof(fd_set), bytes".into(),
        select.fd_set_bytes.to_string(),
    ]);
    probe_table.push(vec![
        format!("select(2), descriptor {} in a heap set", select.high_fd),
        format!("{:?}", select.kernel),
    ]);
    probe_table.push(vec![
        format!("glibc's checked FD_SET({})", select.high_fd),
        match &select.libc_fd_set {
            Ok(s) => s.clone(),
            Err(e) => format!("not tried: {e}"),
        },
    ]);
    ctx.progress("syscalls: epoll and mmap");
    let mmap = mmap_probe();
    probe_table.push(vec![
        "eventpoll mappings before/after".into(),
        format!("{:?}", mmap.eventpoll_maps),
    ]);
    probe_table.push(vec![
        "epoll_wait into a read-only buffer fails with EFAULT".into(),
        format!("{:?}", mmap.copy_faults),
    ]);

    ctx.progress("syscalls: select and poll cost by count and by highest number");
    let (calls, repeats) = ctx.pick((2000, 5), (500, 3));
    let counts = [1usize, 30, 300, 900];
    let top = (ctx.fd_limit.saturating_sub(200)).min(16_000) as RawFd;
    let highests: Vec<RawFd> = [64, 1000, 16_000]
        .into_iter()
        .filter(|&h| h <= top)
        .collect();
    let mut cost = Table::new(&[
        "call",
        "axis",
        "watched",
        "highest_fd",
        "ns_per_call",
        "ns_min",
        "ns_max",
    ]);
    let mut axes = Vec::new();
    let mut notes = Vec::new();
    for (name, is_select) in [("select", true), ("poll", false)] {
        match cost_axes(is_select, &counts, 1000, &highests, calls, repeats) {
            Ok(a) => {
                for (axis, pts) in [("count", &a.by_count), ("highest", &a.by_highest)] {
                    for &(n, fd, s) in pts.iter() {
                        cost.push(vec![
                            name.into(),
                            axis.into(),
                            n.to_string(),
                            fd.to_string(),
                            format!("{:.0}", s.median),
                            format!("{:.0}", s.lo),
                            format!("{:.0}", s.hi),
                        ]);
                    }
                }
                axes.push((name, a));
            }
            Err(e) => notes.push(format!("{name}: {e}")),
        }
    }
    let axis_of = |name: &str| {
        axes.iter().find(|a| a.0 == name).and_then(|(_, a)| {
            Some(CostAxes {
                count_highest_fd: a.by_count.last()?.1,
                by_count: growth(&a.by_count, true)?,
                by_highest: growth(&a.by_highest, false)?,
            })
        })
    };
    let verdicts = vec![
        judge::select_limit(&select),
        judge::cost_axes(axis_of("select"), axis_of("poll")),
        judge::epoll_mmap(&mmap),
    ];
    let chart_of = |by_count: bool| -> Vec<Series> {
        axes.iter()
            .map(|(name, a)| Series {
                label: name.to_string(),
                points: (if by_count { &a.by_count } else { &a.by_highest })
                    .iter()
                    .map(|&(n, fd, s)| Point {
                        x: if by_count { n as f64 } else { fd as f64 },
                        y: s,
                    })
                    .collect(),
            })
            .collect()
    };
    let (count_file, highest_file) = ("syscall_cost_count.svg", "syscall_cost_highest.svg");
    chart::lines(
        &ctx.out(count_file),
        "One call, nothing ready, by descriptors watched (highest number ~1000)",
        "descriptors watched",
        "nanoseconds per call",
        &chart_of(true),
    )?;
    chart::lines(
        &ctx.out(highest_file),
        "One call, nothing ready, one descriptor watched, by its number",
        "highest descriptor number",
        "nanoseconds per call",
        &chart_of(false),
    )?;
    Ok(Section {
        name: "syscalls",
        title: "select, poll and epoll asked directly",
        method: format!(
            "In-process, through libc, not iomux. select(2): a descriptor set on the heap, large enough for descriptor {} (a readable socket duplicated there with F_DUPFD), and a zero timeout. The C library's FD_SET: glibc's `__fdelt_chk`, the index check FD_SET compiles to under _FORTIFY_SOURCE, called in a forked child. Cost: {calls} calls of select(2) or poll(2) with a zero timeout and nothing ready, {repeats} repeats (median and range); descriptors are copies of one UDP socket; by count, the highest number stays near 1000 while the count grows; by number, one descriptor is watched at a growing number. epoll: /proc/self/maps before and after epoll_create1, epoll_ctl and a wait that returns an event, then epoll_wait with the event still ready into a read-only page.",
            select.high_fd
        ),
        tables: vec![
            ("What the kernel and the C library did".into(), probe_table, Some("syscalls.csv".into())),
            ("Nanoseconds per call".into(), cost, Some("syscall_cost.csv".into())),
        ],
        charts: vec![count_file.into(), highest_file.into()],
        verdicts,
        notes,
    })
}
