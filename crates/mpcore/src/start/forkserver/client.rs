//! The program's side of a request: ask the server for a child, read how
//! the child ended, ask for a signal to be sent to it.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use nix::sys::stat::Mode;
use nix::unistd::Pid;

use super::servers::{forget, server_socket};
use super::{EXITED, FORK, FORK_FAILED, REFUSED, SIGNAL, SIGNALED, STARTED, read_i32s, send_i32s};
use crate::base::{Error, ExitStatus, Result, Signal};
use crate::os::poll;
use crate::start::task::Task;
use crate::wire::channel;

/// What a request can come to, besides a child.
enum Refused {
    /// The server is gone (killed, say): try again with a new one.
    ServerGone,
    /// The server did not take the request from the program as it is now
    /// (its credentials changed meanwhile): try again, with a new server.
    Stranger,
    Failed(Error),
}

/// How long a requester whose report socket closed before the answer
/// waits for the server's request socket to close too (the sign that the
/// server died) before it concludes that the server lives and dropped
/// the request.
const DEATH_GRACE: Duration = Duration::from_secs(1);

/// Has the fork server start `task`; returns the child's pid, the
/// requester's end of its result socket and its end of the report socket
/// ([`read_report`]).
pub(crate) fn start(task: &Task<'_>) -> Result<(Pid, OwnedFd, OwnedFd)> {
    // A server found dead is replaced once; a second death in a row is
    // not bad luck but something that kills it, and is reported. A
    // server that found the program changed (its credentials, between
    // our look and the request) is replaced too.
    for _ in 0..2 {
        // Packed anew for each attempt: a child of a dying server may have
        // read the packets of the first.
        let (results, theirs) = task.packed()?;
        let (server, requests) = server_socket()?;
        match ask(requests.as_fd(), theirs) {
            Ok((pid, reports)) => return Ok((pid, results, reports)),
            Err(Refused::ServerGone) => forget(server),
            Err(Refused::Stranger) => {}
            Err(Refused::Failed(e)) => return Err(e),
        }
    }
    Err(Error::Io {
        call: "fork server request",
        reason: "the fork server died (or refused the request) twice in a row before it could \
                 start the child"
            .to_owned(),
    })
}

/// Sends one request: the server's end of a new report socket, the
/// child's end of its result socket `task`, and the working directory.
/// Waits for the answer.
fn ask(requests: BorrowedFd<'_>, task: OwnedFd) -> std::result::Result<(Pid, OwnedFd), Refused> {
    // The directory itself, not its path: the child enters this very one
    // even if it has been renamed meanwhile. `O_PATH` needs no permission
    // to read it.
    let cwd = open(
        ".",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Refused::Failed(Error::os("open the working directory", e)))?;
    let (reports, theirs) = channel::pair().map_err(Refused::Failed)?;
    let fds = [theirs.as_raw_fd(), task.as_raw_fd(), cwd.as_raw_fd()];
    let sent = loop {
        match sendmsg::<()>(
            requests.as_raw_fd(),
            &[IoSlice::new(&[FORK])],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Err(Errno::EINTR) => continue,
            other => break other,
        }
    };
    match sent {
        Ok(_) => {}
        Err(Errno::EPIPE | Errno::ECONNRESET | Errno::ECONNREFUSED) => {
            return Err(Refused::ServerGone);
        }
        Err(e) => return Err(Refused::Failed(Error::os("sendmsg", e))),
    }
    // The server holds its own copies now (or the kernel does, in flight).
    drop((task, theirs, cwd));
    // The server answers at once: it forks and writes, or says why not.
    // If it dies first, its copy of the report socket closes, and this
    // read ends.
    let errno = match read_i32s::<2>(reports.as_fd(), true) {
        Ok(Some([STARTED, pid])) if pid > 0 => return Ok((Pid::from_raw(pid), reports)),
        Ok(Some([FORK_FAILED, errno])) => {
            return Err(Refused::Failed(Error::os("fork", Errno::from_raw(errno))));
        }
        Ok(Some([REFUSED, errno])) if errno == Errno::EPERM as i32 => {
            return Err(Refused::Stranger);
        }
        Ok(Some([REFUSED, errno])) => Errno::from_raw(errno),
        // End of file before an answer.
        Err(Errno::UnknownErrno | Errno::ECONNRESET) => {
            if server_died(requests) {
                return Err(Refused::ServerGone);
            }
            // The server lives, yet its copy of the report socket is
            // gone: the kernel dropped the request's descriptors on the
            // way in, which it does when the server's descriptor table is
            // full (the server keeps room for them, so this takes a limit
            // lowered under it).
            Errno::EMFILE
        }
        Err(e) => return Err(Refused::Failed(Error::os("recv", e))),
        Ok(_) => Errno::EBADMSG,
    };
    Err(Refused::Failed(Error::os("fork server request", errno)))
}

/// Whether the server behind `requests` has died: its end of the socket
/// closes when it does, if not at the very instant its end of a report
/// socket did, then a moment later.
fn server_died(requests: BorrowedFd<'_>) -> bool {
    // Nothing is ever written to the program's end: it becomes readable
    // only when the server's end closes.
    poll::readable([requests], Some(Instant::now() + DEATH_GRACE)).is_ok_and(|r| r == [true])
}

/// What the fork server said about a child's end.
pub(crate) enum Report {
    /// It ended so, and has been reaped.
    Ended(ExitStatus),
    /// It has not ended yet (asked without waiting).
    NotYet,
    /// The server died before it said: the child died with it (its
    /// `PR_SET_PDEATHSIG`), but how it ended is lost.
    ServerGone,
}

/// Reads the report of how a child ended from `reports`, waiting for it if
/// `wait` is true.
pub(crate) fn read_report(reports: BorrowedFd<'_>, wait: bool) -> Result<Report> {
    match read_i32s::<2>(reports, wait) {
        Ok(None) => Ok(Report::NotYet),
        Ok(Some([EXITED, code])) => Ok(Report::Ended(ExitStatus::Code(code))),
        Ok(Some([SIGNALED, signal])) => Ok(Report::Ended(ExitStatus::Signal(Signal::from_number(
            signal,
        )))),
        Ok(Some(_)) => Err(Error::os("recv", Errno::EBADMSG)),
        Err(Errno::UnknownErrno | Errno::ECONNRESET) => Ok(Report::ServerGone),
        Err(e) => Err(Error::os("recv", e)),
    }
}

/// Asks the server to send `signal` to the child whose report socket is
/// `reports`. The server is its parent: it may always signal it, and it
/// does so only while the child is not yet reaped, so never a later
/// process with the same pid. A child already reaped (its report socket
/// closed by the server) or a server gone (and the child with it) is no
/// error: there is nothing left to signal.
pub(crate) fn send_signal(reports: BorrowedFd<'_>, signal: i32) -> Result<()> {
    match send_i32s(reports, [SIGNAL, signal], true) {
        Ok(()) | Err(Errno::EPIPE | Errno::ECONNRESET | Errno::ECONNREFUSED) => Ok(()),
        Err(e) => Err(Error::os("send", e)),
    }
}
