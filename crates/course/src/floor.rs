//! The physical floors that the benchmarks (`mpbench`) hold mpcore up
//! against: the bare system calls, with nothing of mpcore's around them.
//!
//! It is here, not in the benchmarks, because it needs `unsafe` (a raw
//! `fork`, a shared mapping), which the course keeps to mpcore and to this
//! crate. It is not part of the Python vocabulary; a course reader meets it
//! in chapter 10 of the course (`docs/10-performance.md`). Failures are
//! reported as [`mpcore::Error`]s, so that a floor and the mpcore call it
//! is the floor of fail alike.

use std::fs::File;
use std::io::{Read, Write};
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, munmap};
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, getpid, getppid, pipe2};

use mpcore::{Error, Result};

/// A failed system call, as mpcore reports one.
fn os(call: &'static str, errno: Errno) -> Error {
    Error::Os {
        call,
        errno: mpcore::Errno::from_raw(errno as i32),
    }
}

/// A failed `call` that reported an `io::Error`, as mpcore reports one: its
/// errno when it has one, else its own words.
fn io(call: &'static str, e: std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(errno) => os(call, Errno::from_raw(errno)),
        None => Error::Io {
            call,
            reason: e.to_string(),
        },
    }
}

/// One page of anonymous memory shared with the children forked after it
/// is made (`MAP_SHARED | MAP_ANONYMOUS`), unmapped when dropped.
struct SharedPage {
    base: NonNull<std::ffi::c_void>,
}

impl SharedPage {
    const LEN: NonZeroUsize = NonZeroUsize::new(4096).unwrap();

    fn new() -> Result<SharedPage> {
        // SAFETY: a fresh anonymous mapping at an address of the kernel's
        // choice overlaps nothing of ours; the result is checked.
        let base = unsafe {
            mmap_anonymous(
                None,
                Self::LEN,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }
        .map_err(|e| os("mmap", e))?;
        Ok(SharedPage { base })
    }

    /// The page's first 8 bytes as a counter, zero at first.
    fn counter(&self) -> &AtomicU64 {
        // SAFETY: the page is zeroed (any bits are a valid AtomicU64) and
        // page-aligned, lives as long as `self`, which the reference
        // borrows, and every process touches it only atomically.
        unsafe { &*self.base.as_ptr().cast::<AtomicU64>() }
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: we mapped exactly `LEN` bytes at `base`, and no reference
        // into them outlives `self`.
        let _ = unsafe { munmap(self.base, Self::LEN.get()) };
    }
}

/// Forks a child that writes `value + 1` to a pipe and `_exit`s; reads it
/// and reaps the child. What `Process::spawn(move || value + 1)` plus
/// `join` costs at the very least.
///
/// ```
/// assert_eq!(course::floor::fork_pipe_waitpid(41)?, 42);
/// # Ok::<(), mpcore::Error>(())
/// ```
pub fn fork_pipe_waitpid(value: u64) -> Result<u64> {
    let mut reply = [0u8; 8];
    fork_with_pipe(
        |w| {
            let _ = w.write_all(&(value + 1).to_le_bytes());
        },
        |r| r.read_exact(&mut reply),
    )?;
    Ok(u64::from_le_bytes(reply))
}

/// Forks a child that writes `count` messages of `size` bytes to a pipe,
/// reads them all, reaps the child, and returns the number of bytes read.
/// The floor under a queue carrying the same messages one way.
///
/// ```
/// assert_eq!(course::floor::fork_pipe_stream(1000, 8)?, 8000);
/// # Ok::<(), mpcore::Error>(())
/// ```
pub fn fork_pipe_stream(count: usize, size: usize) -> Result<usize> {
    let mut total = 0;
    fork_with_pipe(
        |w| {
            let message = vec![7u8; size];
            for _ in 0..count {
                if w.write_all(&message).is_err() {
                    return;
                }
            }
        },
        |r| {
            let mut buf = vec![0u8; size.clamp(1, 1 << 20)];
            loop {
                match r.read(&mut buf)? {
                    0 => return Ok(()),
                    n => total += n,
                }
            }
        },
    )?;
    Ok(total)
}

/// Forks a child and plays `rounds` rounds of ping-pong with it over two
/// pipes, one byte each way per round; returns the rounds played. The
/// floor under any request-and-reply between two processes (a pool's
/// `apply_async(..).get()`, a pair of events).
///
/// ```
/// assert_eq!(course::floor::fork_pipe_pingpong(100)?, 100);
/// # Ok::<(), mpcore::Error>(())
/// ```
pub fn fork_pipe_pingpong(rounds: u64) -> Result<u64> {
    let (to_child_r, to_child_w) =
        pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| os("pipe2", e))?;
    let (mut to_child_r, mut to_child_w) = (File::from(to_child_r), File::from(to_child_w));
    let mut played = 0;
    let parent = getpid();
    fork_with_pipe(
        |w| {
            // The child waits on a pipe whose write end it holds too (fork
            // copied it), so no end of file would ever wake it if the
            // parent died: it dies with the parent instead, as a
            // `Process` does. The parent may be gone already.
            if set_pdeathsig(Signal::SIGKILL).is_err() || getppid() != parent {
                return;
            }
            let mut byte = [0u8; 1];
            for _ in 0..rounds {
                if to_child_r.read_exact(&mut byte).is_err() || w.write_all(&byte).is_err() {
                    return;
                }
            }
        },
        |r| {
            let mut byte = [1u8; 1];
            for _ in 0..rounds {
                to_child_w.write_all(&byte)?;
                r.read_exact(&mut byte)?;
                played += 1;
            }
            Ok(())
        },
    )?;
    Ok(played)
}

/// Forks a child and plays ping-pong with it over one `SOCK_SEQPACKET`
/// socket pair, one byte a packet, `rounds` times: the bare round trip of
/// the socket that mpcore's channels (a manager's connections, the
/// results of a `Process`) are made of. Returns the rounds played.
///
/// ```
/// assert_eq!(course::floor::fork_socket_pingpong(100)?, 100);
/// # Ok::<(), mpcore::Error>(())
/// ```
pub fn fork_socket_pingpong(rounds: u64) -> Result<u64> {
    use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, recv, send, socketpair};
    use std::os::fd::AsRawFd;
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| os("socketpair", e))?;
    // SAFETY: the child only receives and sends on a socket and calls
    // `_exit`; it allocates nothing and takes no lock.
    match unsafe { fork() }.map_err(|e| os("fork", e))? {
        ForkResult::Child => {
            drop(ours);
            let mut byte = [0u8; 1];
            // Its peer's end closes when the parent dies: `recv` then
            // returns 0 and the child leaves.
            for _ in 0..rounds {
                match recv(theirs.as_raw_fd(), &mut byte, MsgFlags::empty()) {
                    Ok(1) if send(theirs.as_raw_fd(), &byte, MsgFlags::MSG_NOSIGNAL).is_ok() => {}
                    _ => break,
                }
            }
            // SAFETY: `_exit` ends the process; it has no preconditions.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(theirs);
            let mut played = 0;
            let mut byte = [1u8; 1];
            let mut failed = None;
            for _ in 0..rounds {
                if let Err(e) = send(ours.as_raw_fd(), &byte, MsgFlags::MSG_NOSIGNAL) {
                    failed = Some(os("send", e));
                    break;
                }
                match recv(ours.as_raw_fd(), &mut byte, MsgFlags::empty()) {
                    Ok(1) => played += 1,
                    Ok(_) => {
                        failed = Some(Error::Disconnected);
                        break;
                    }
                    Err(e) => {
                        failed = Some(os("recv", e));
                        break;
                    }
                }
            }
            drop(ours);
            loop {
                match waitpid(child, None) {
                    Err(Errno::EINTR) => continue,
                    other => {
                        other.map_err(|e| os("waitpid", e))?;
                        break;
                    }
                }
            }
            failed.map_or(Ok(played), Err)
        }
    }
}

/// Forks `procs` children that each add 1 to one `AtomicU64` in a shared
/// anonymous mapping `per_proc` times (`fetch_add`, no lock); reaps them
/// and returns the final count. The floor under locked increments of a
/// shared `Value`: the cheapest correct shared counter there is.
///
/// ```
/// assert_eq!(course::floor::shared_atomic_increments(2, 1000)?, 2000);
/// # Ok::<(), mpcore::Error>(())
/// ```
pub fn shared_atomic_increments(procs: usize, per_proc: u64) -> Result<u64> {
    // The page lives until the end of this function, after every child
    // is reaped.
    let page = SharedPage::new()?;
    let counter = page.counter();
    let mut children = Vec::with_capacity(procs);
    for _ in 0..procs {
        // SAFETY: the child only does atomic adds and calls `_exit`: it
        // takes no lock and allocates nothing.
        let forked = unsafe { fork() }.map_err(|e| os("fork", e));
        match forked.inspect_err(|_| kill_and_reap(&children))? {
            ForkResult::Child => {
                for _ in 0..per_proc {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                // SAFETY: `_exit` ends the process; it has no preconditions.
                unsafe { libc::_exit(0) }
            }
            ForkResult::Parent { child } => children.push(child),
        }
    }
    for child in children {
        reap(child).map_err(|e| os("waitpid", e))?;
    }
    Ok(counter.load(Ordering::SeqCst))
}

/// Ends and reaps the children forked so far, when a later fork fails:
/// none of them is left running without a parent that waits for it.
fn kill_and_reap(children: &[Pid]) {
    for &child in children {
        let _ = kill(child, Signal::SIGKILL);
    }
    for &child in children {
        let _ = reap(child);
    }
}

/// `waitpid(child)` until it is not interrupted.
fn reap(child: Pid) -> nix::Result<WaitStatus> {
    loop {
        match waitpid(child, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other,
        }
    }
}

/// Forks; the child runs `write` on the pipe's write end and `_exit`s, the
/// parent runs `read` on the read end and then reaps the child.
fn fork_with_pipe(
    write: impl FnOnce(&mut File),
    read: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<()> {
    let (r, w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| os("pipe2", e))?;
    // SAFETY: the child only writes to a pipe and calls `_exit`; it takes
    // no lock that another thread could hold (no allocation before the
    // write in `fork_pipe_waitpid`; `fork_pipe_stream` allocates, which
    // glibc makes safe after fork).
    match unsafe { fork() }.map_err(|e| os("fork", e))? {
        ForkResult::Child => {
            drop(r);
            let mut w = File::from(w);
            write(&mut w);
            drop(w);
            // SAFETY: `_exit` ends the process; it has no preconditions.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(w);
            let mut r = File::from(r);
            let read_result = read(&mut r);
            let status = loop {
                match waitpid(child, None) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    other => break other.map_err(|e| os("waitpid", e))?,
                }
            };
            read_result.map_err(|e| io("read", e))?;
            match status {
                WaitStatus::Exited(_, 0) => Ok(()),
                WaitStatus::Exited(pid, code) => Err(Error::Exited {
                    pid: pid.as_raw(),
                    code,
                }),
                WaitStatus::Signaled(pid, signal, _) => Err(Error::Signaled {
                    pid: pid.as_raw(),
                    signal: mpcore::Signal::from_number(signal as i32),
                }),
                _ => Ok(()),
            }
        }
    }
}
