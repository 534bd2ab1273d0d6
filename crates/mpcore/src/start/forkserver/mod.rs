//! [`StartMethod::ForkServer`](crate::StartMethod::ForkServer): children
//! forked by a small server process that never runs anything else.
//!
//! Files: `servers.rs`, the program's record of its servers (start one,
//! notice that the program's credentials changed, reap one that ended);
//! `client.rs`, the program's side of a request (ask for a child, read
//! its report, ask for a signal); `server.rs`, the server's loop;
//! `intake.rs`, how the server receives a request, with room kept for it
//! and its sender checked; this file, what the two sides say to each
//! other.
//!
//! The first request of a program starts the server: a fresh `exec` of
//! the program, reached before `main` by the same constructor as a
//! spawned child (`start/hook.rs`), with its own environment variable. It
//! has one thread, and it stays that way: all it does is wait for
//! requests and for its children's exits. So a child it forks is cheap
//! like a fork and clean like a spawn: it copies a small process that
//! holds no lock.
//!
//! A request is one packet on the server's socket, the byte [`FORK`] with
//! three descriptors, in this order:
//!
//! 1. the server's end of a new report socket. On it the server answers
//!    with the child's pid (or why it could not start it), and later with
//!    how the child ended: the requester is not the child's parent, so it
//!    cannot `waitpid` for it. The server reaps, and writes the status
//!    down, as Python's forkserver writes the return code. The requester
//!    asks on it, in turn, for a signal to be sent to the child
//!    ([`SIGNAL`]): the server, its parent, may always signal it, and
//!    knows that its pid is still the child's (it has not reaped it), so
//!    `kill` and `terminate` need no permission over the child and never
//!    hit a later process that got its pid;
//! 2. the child's end of its result socket, in which the requester has
//!    already left what a spawned child reads (`Task::packed`): where the
//!    task is, the handles' descriptors and the argument. The server never
//!    looks at them; the child reads them as a spawned child does
//!    (`task::run_sent_task`), and sends its result straight to the
//!    requester. The anchor offsets hold: the server is the same file;
//! 3. the requester's working directory (`O_PATH`), which the child
//!    enters before its task: it runs where the requester is now, not
//!    where the program was when the server started.
//!
//! The kernel adds the sender's credentials to each request
//! (`SO_PASSCRED`); the server serves only the program, with the user
//! and group it had itself when it started. The program, for its part,
//! starts a new server as soon as its credentials (real and effective
//! user and group, supplementary groups) differ from those it started the
//! server with, and tells the old one to retire ([`RETIRE`]): it forks no
//! more, and ends when its last child has. So no child gets credentials
//! the program no longer has.
//!
//! A request fails alone. The server raises its soft limit on open files
//! to the hard one, and keeps [`REQUEST_FDS`] descriptors in reserve,
//! which it closes just before it receives a request: a request's
//! descriptors always find room. If it then has no room left for another
//! child, it answers "too many open files" ([`REFUSED`]) and goes on.
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
//! a thread of its own.) A thread of mpcore's waits for each server's
//! end, and reaps it at once: a killed server is no zombie for long, and
//! the next request starts a new one.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::sys::socket::MsgFlags;

mod client;
mod intake;
pub(crate) mod server;
mod servers;

pub(crate) use client::{Report, read_report, send_signal, start};
pub(crate) use servers::hold_across_fork;

/// The variable that tells a fresh run of the program that it is the fork
/// server: `"<request socket descriptor> <program's pid>"`.
pub(super) const SERVER_ENV: &str = "MPCORE_FORKSERVER";

/// A request's byte: fork a child (with [`REQUEST_FDS`] descriptors).
const FORK: u8 = b'f';
/// A request's byte: fork no more, and end with the last child.
const RETIRE: u8 = b'r';
/// How many descriptors a [`FORK`] request carries: the report socket,
/// the task socket and the working directory.
const REQUEST_FDS: usize = 3;

/// The server's answers and reports, each a packet of two `i32`s: the
/// child started (with its pid);
const STARTED: i32 = 0;
/// the child exited (with its code);
const EXITED: i32 = 1;
/// a signal ended the child (with the signal);
const SIGNALED: i32 = 2;
/// the fork failed (with the errno);
const FORK_FAILED: i32 = 3;
/// the server did not take the request (with the errno: `EMFILE` when it
/// has no room for another child, `EPERM` when the sender is not the
/// program as it was when the server started, or the server retires).
const REFUSED: i32 = 4;

/// The requester's request on a report socket, two `i32`s: send this
/// signal to the child.
const SIGNAL: i32 = 5;

/// Reads one packet of `N` native-endian `i32`s. `Ok(None)` if `wait` is
/// false and none has come yet; end of file is `Err(UnknownErrno)`.
fn read_i32s<const N: usize>(fd: BorrowedFd<'_>, wait: bool) -> nix::Result<Option<[i32; N]>> {
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

/// Sends one packet of `N` native-endian `i32`s, without waiting if
/// `wait` is false (the server never waits for a requester).
fn send_i32s<const N: usize>(fd: BorrowedFd<'_>, values: [i32; N], wait: bool) -> nix::Result<()> {
    let bytes = values.map(i32::to_ne_bytes);
    let flags = if wait {
        MsgFlags::MSG_NOSIGNAL
    } else {
        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT
    };
    loop {
        match nix::sys::socket::send(fd.as_raw_fd(), bytes.as_flattened(), flags) {
            Err(Errno::EINTR) => continue,
            other => return other.map(drop),
        }
    }
}
