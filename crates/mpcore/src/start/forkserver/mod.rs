//! [`StartMethod::ForkServer`](crate::StartMethod::ForkServer): children
//! forked by a small server process that never runs anything else.
//!
//! The first request of a program starts the server: a fresh `exec` of
//! the program, reached before `main` by the same constructor as a
//! spawned child (`spawn.rs`), with its own environment variable. It has
//! one thread, and it stays that way: all it does is wait for requests and
//! for its children's exits. So a child it forks is cheap like a fork and
//! clean like a spawn: it copies a small process that holds no lock.
//!
//! A request is one packet on the server's socket, carrying two
//! descriptors:
//!
//! 1. the child's end of its result socket, in which the requester has
//!    already left what a spawned child reads (`Task::packed`): where the
//!    task is, the handles' descriptors and the argument. The server never
//!    looks at them; the child reads them as a spawned child does
//!    (`task::run_sent_task`), and sends its result straight to the
//!    requester. The anchor offsets hold: the server is the same file.
//! 2. the server's end of a report socket. On it the server answers with
//!    the child's pid (or why the fork failed), and later with how the
//!    child ended: the requester is not the child's parent, so it cannot
//!    `waitpid` for it. The server reaps, and writes the status down, as
//!    Python's forkserver writes the return code.
//!
//! Nothing outlives the program. The server's children ask for
//! `PR_SET_PDEATHSIG` on the server, which has one thread, so the signal
//! comes exactly when the server dies. The server itself watches its
//! request socket: when the program ends, however it ends (a `SIGKILL`
//! included), the kernel closes the program's end, the server sees end of
//! file, kills its children and exits. (It does not rely on
//! `PR_SET_PDEATHSIG` of its own: that signal follows the *thread* that
//! started the server, and the first request may come from a thread that
//! ends long before the program does, as every test of a harness runs on
//! a thread of its own.) A server that has died is noticed at the next
//! request, reaped, and started again.

//! Files: `client.rs`, the program's side (start the server, ask it for
//! a child, read its report); `server.rs`, the server's loop; this file,
//! what the two say to each other.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::sys::socket::MsgFlags;

mod client;
pub(crate) mod server;

pub(crate) use client::{Report, hold_across_fork, read_report, start};

/// The variable that tells a fresh run of the program that it is the fork
/// server: `"<request socket descriptor> <program's pid>"`.
pub(super) const SERVER_ENV: &str = "MPCORE_FORKSERVER";

/// The first number of a report: the child exited (the second is its
/// code), or else a signal ended it (the second is the signal).
pub(super) const EXITED: i32 = 1;
pub(super) const SIGNALED: i32 = 2;

/// Reads one packet of `N` native-endian `i32`s. `Ok(None)` if `wait` is
/// false and none has come yet; end of file is `Err(UnknownErrno)`.
pub(super) fn read_i32s<const N: usize>(
    fd: BorrowedFd<'_>,
    wait: bool,
) -> nix::Result<Option<[i32; N]>> {
    let mut buf = [[0u8; 4]; N];
    let flags = if wait {
        MsgFlags::empty()
    } else {
        MsgFlags::MSG_DONTWAIT
    };
    loop {
        match nix::sys::socket::recv(fd.as_raw_fd(), buf.as_flattened_mut(), flags) {
            Ok(0) => return Err(Errno::UnknownErrno),
            Ok(n) if n == 4 * N => return Ok(Some(buf.map(i32::from_ne_bytes))),
            // Not a packet of ours: nothing else writes here.
            Ok(_) => return Err(Errno::EBADMSG),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

/// Sends one packet of `N` native-endian `i32`s.
pub(super) fn send_i32s<const N: usize>(fd: BorrowedFd<'_>, values: [i32; N]) -> nix::Result<()> {
    let bytes = values.map(i32::to_ne_bytes);
    loop {
        match nix::sys::socket::send(fd.as_raw_fd(), bytes.as_flattened(), MsgFlags::MSG_NOSIGNAL) {
            Err(Errno::EINTR) => continue,
            other => return other.map(drop),
        }
    }
}
