//! The program's side of the fork server: start it, ask it for a child,
//! read how the child ended.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Mutex, MutexGuard};

use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getpid};

use super::{EXITED, SERVER_ENV, read_i32s};
use crate::base::{Error, ExitStatus, Result, Signal};
use crate::start::exec::exec_self;
use crate::start::task::Task;
use crate::wire::channel;

/// The program's server, once started.
pub(crate) struct Server {
    pid: Pid,
    /// The process that started it, and alone may send it requests: a
    /// process forked later holds a copy of this, and starts its own.
    owner: Pid,
    requests: OwnedFd,
}

static SERVER: Mutex<Option<Server>> = Mutex::new(None);

/// What a request can come to, besides a child.
enum Refused {
    /// The server is gone (killed, say): try again with a new one.
    ServerGone,
    Failed(Error),
}

/// Has the fork server start `task`; returns the child's pid, the
/// requester's end of its result socket and its end of the report socket
/// ([`read_report`]).
pub(crate) fn start(task: &Task<'_>) -> Result<(Pid, OwnedFd, OwnedFd)> {
    // A server found dead is replaced once; a second death in a row is
    // not bad luck but something that kills it, and is reported.
    for _ in 0..2 {
        // Packed anew for each attempt: a child of a dying server may have
        // read the packets of the first.
        let (results, theirs) = task.packed()?;
        let (server, requests) = server_socket()?;
        match ask(requests.as_fd(), theirs) {
            Ok((pid, reports)) => return Ok((pid, results, reports)),
            Err(Refused::ServerGone) => retire(server),
            Err(Refused::Failed(e)) => return Err(e),
        }
    }
    Err(Error::Io {
        call: "fork server request",
        reason: "the fork server died twice in a row before it could start the child".to_owned(),
    })
}

/// The server's lock, held by the thread that forks across the fork, so
/// that no other thread holds it at that instant: a lock copied held would
/// stay held for ever in the child.
pub(crate) fn hold_across_fork() -> MutexGuard<'static, Option<Server>> {
    SERVER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A server whose socket has closed is on its way out: forget it, and
/// reap it (it has closed its descriptors, so its exit is a moment away).
fn retire(pid: Pid) {
    let mut server = SERVER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if server
        .as_ref()
        .is_some_and(|s| s.pid == pid && s.owner == getpid())
    {
        *server = None;
        while let Err(Errno::EINTR) = waitpid(pid, None) {}
    }
}

/// The pid of a running server and a copy of its request socket; the
/// server is started now if there is none (or the last one has died).
fn server_socket() -> Result<(Pid, OwnedFd)> {
    let mut slot = SERVER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let me = getpid();
    // A copy inherited from a parent is just closed: that server is the
    // parent's, to keep or to lose.
    let server = match slot.take() {
        Some(server) if server.owner == me && still_running(server.pid) => slot.insert(server),
        _ => slot.insert(launch()?),
    };
    // A copy, so that the request is sent without holding the lock.
    let requests = server
        .requests
        .try_clone()
        .map_err(|e| Error::os("dup", Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
    Ok((server.pid, requests))
}

/// Whether our server still runs; if it has ended, it is reaped here.
fn still_running(pid: Pid) -> bool {
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return true,
            Err(Errno::EINTR) => continue,
            // Ended (and now reaped), or reaped by the kernel already
            // (`SIGCHLD` ignored).
            _ => return false,
        }
    }
}

/// Starts the server: a fresh run of this program, holding the other end
/// of a socket that only this process holds.
fn launch() -> Result<Server> {
    let (ours, theirs) = channel::pair()?;
    let program = getpid();
    // No death signal: it would follow the thread that starts the server,
    // not this program; the server watches its socket instead.
    let value = format!("{} {program}", theirs.as_raw_fd());
    let pid = exec_self(SERVER_ENV, &value, theirs, false)?;
    Ok(Server {
        pid,
        owner: program,
        requests: ours,
    })
}

/// Sends one request: the child's end of its result socket `task` and the
/// server's end of a new report socket. Waits for the pid.
fn ask(requests: BorrowedFd<'_>, task: OwnedFd) -> std::result::Result<(Pid, OwnedFd), Refused> {
    let (reports, theirs) = channel::pair().map_err(Refused::Failed)?;
    let fds = [task.as_raw_fd(), theirs.as_raw_fd()];
    let sent = loop {
        match sendmsg::<()>(
            requests.as_raw_fd(),
            &[IoSlice::new(b"f")],
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
    drop((task, theirs));
    // The server answers at once: it forks and writes. If it dies first,
    // its copy of the report socket closes, and this read ends.
    match read_i32s::<1>(reports.as_fd(), true) {
        Ok(Some([pid])) if pid > 0 => Ok((Pid::from_raw(pid), reports)),
        Ok(Some([errno])) => Err(Refused::Failed(Error::os("fork", Errno::from_raw(-errno)))),
        // End of file before an answer: the server died.
        Err(Errno::UnknownErrno | Errno::ECONNRESET) => Err(Refused::ServerGone),
        Err(e) => Err(Refused::Failed(Error::os("recv", e))),
        // (A read that waits returns a packet or an error.)
        Ok(None) => Err(Refused::Failed(Error::Io {
            call: "fork server request",
            reason: "no answer came".to_owned(),
        })),
    }
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
        Ok(Some([_, signal])) => Ok(Report::Ended(ExitStatus::Signal(Signal::from_number(
            signal,
        )))),
        Err(Errno::UnknownErrno | Errno::ECONNRESET) => Ok(Report::ServerGone),
        Err(e) => Err(Error::os("recv", e)),
    }
}
