//! The fork server's own loop: a single-threaded process that forks
//! children on request, reaps them and reports how each ended.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::{ForkResult, Pid, fork, getpid, getppid};

use super::{EXITED, SERVER_ENV, SIGNALED, send_i32s};
use crate::base::catch;
use crate::os::{fds, pidfd, poll};
use crate::start::child::{UNCAUGHT_PANIC_CODE, exit_now};
use crate::start::hook::take_request;
use crate::start::task::run_sent_task;

/// Called by mpcore's constructor before `main`: if this run of the
/// program is the fork server, serves, and exits without returning.
pub(crate) fn serve_if_asked() {
    // The variable is removed, and obeyed only if it names a socket that
    // the program made for this run (`hook.rs`): else `main` runs.
    let Some((requests, _program)) = take_request(SERVER_ENV) else {
        return;
    };
    let code = catch(|| serve(requests)).unwrap_or(UNCAUGHT_PANIC_CODE);
    exit_now(code)
}

/// A child of the server, until it is reaped.
struct Child {
    pid: Pid,
    /// Where its pid went and how it ended goes.
    reports: OwnedFd,
}

/// How often a server without pidfds looks for exited children.
const NO_PIDFD_TICK: Duration = Duration::from_millis(20);

/// The server's loop on the program's socket `requests`; returns the
/// exit code.
fn serve(requests: OwnedFd) -> i32 {
    // SAFETY: setting dispositions to "ignore" or "default" installs no
    // handler of ours; this process has one thread. SIGPIPE: a requester
    // that is gone must not kill the server as it writes a report. SIGINT:
    // a Ctrl-C at the terminal reaches the whole process group; the
    // program decides what becomes of its children, as with Python's
    // forkserver. SIGCHLD: a program that ignores it passes that on
    // through the exec, and then the kernel would reap the server's
    // children before the server could read how they ended.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
    }

    let me = getpid();
    let mut children: Vec<(Child, Option<OwnedFd>)> = Vec::new();
    loop {
        let mut fds = vec![requests.as_fd()];
        fds.extend(
            children
                .iter()
                .filter_map(|(_, pidfd)| pidfd.as_ref().map(|p| p.as_fd())),
        );
        let deadline = children
            .iter()
            .any(|(_, pidfd)| pidfd.is_none())
            .then(|| Instant::now() + NO_PIDFD_TICK);
        let Ok(ready) = poll::readable_any(&fds, deadline) else {
            break;
        };
        drop(fds);
        if ready[0] {
            match receive_request(requests.as_fd()) {
                Ok(Some((task, reports))) => {
                    if let Some(child) = fork_child(me, &requests, &children, task, reports) {
                        let pidfd = pidfd::open(child.pid);
                        children.push((child, pidfd));
                    }
                }
                Ok(None) => {}
                // End of file: the program has ended.
                Err(_) => break,
            }
        }
        report_exits(&mut children);
    }
    // The program is gone: so are its children, none left as an orphan.
    for (child, _) in &children {
        let _ = kill(child.pid, Signal::SIGKILL);
    }
    for (child, _) in &children {
        while let Err(Errno::EINTR) = waitpid(child.pid, None) {}
    }
    0
}

/// One request: the child's task socket and its report socket. `Ok(None)`
/// for a packet that is not a well-formed request (ignored); `Err` at end
/// of file.
fn receive_request(requests: BorrowedFd<'_>) -> nix::Result<Option<(OwnedFd, OwnedFd)>> {
    let mut buf = [0u8; 8];
    let (len, fds) = fds::recv_with_fds::<2>(requests, &mut buf)?;
    if len == 0 && fds.is_empty() {
        return Err(Errno::UnknownErrno);
    }
    let mut fds = fds.into_iter();
    Ok(match (fds.next(), fds.next(), fds.next()) {
        (Some(task), Some(reports), None) => Some((task, reports)),
        _ => None,
    })
}

/// Forks a child that runs the task waiting in `task`, and tells the
/// requester its pid on `reports`. `None` if the fork failed (the
/// requester is told why).
fn fork_child(
    me: Pid,
    requests: &OwnedFd,
    children: &[(Child, Option<OwnedFd>)],
    task: OwnedFd,
    reports: OwnedFd,
) -> Option<Child> {
    // SAFETY: this process has one thread (it runs before `main` and
    // starts none), so no lock can be held by another thread at the fork.
    match unsafe { fork() } {
        Err(e) => {
            let _ = send_i32s(reports.as_fd(), [-(e as i32)]);
            None
        }
        Ok(ForkResult::Child) => {
            // Die with the server; it may have died before we asked.
            let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
            if getppid() != me {
                exit_now(1);
            }
            // The server's descriptors are none of the task's business,
            // and a copy of a report socket held here would hide the
            // server's death from its requester.
            close_in_child(requests.as_fd());
            close_in_child(reports.as_fd());
            for (child, pidfd) in children {
                close_in_child(child.reports.as_fd());
                if let Some(pidfd) = pidfd {
                    close_in_child(pidfd.as_fd());
                }
            }
            // SAFETY: restoring a default disposition installs no handler.
            unsafe { libc::signal(libc::SIGINT, libc::SIG_DFL) };
            let code = catch(|| run_sent_task(task.as_fd(), me)).unwrap_or(UNCAUGHT_PANIC_CODE);
            exit_now(code)
        }
        Ok(ForkResult::Parent { child }) => {
            // If the requester is gone, nobody reads this: the child still
            // runs and is reaped like any other.
            let _ = send_i32s(reports.as_fd(), [child.as_raw()]);
            Some(Child {
                pid: child,
                reports,
            })
        }
    }
}

/// Closes a descriptor of the server's in its child, which leaves by
/// `_exit` and so never drops (and never closes again) the handle.
fn close_in_child(fd: BorrowedFd<'_>) {
    // SAFETY: the descriptor is open, and the `OwnedFd` it belongs to is
    // never dropped in this process (see above): no double close, and no
    // later use of the number.
    unsafe { libc::close(fd.as_raw_fd()) };
}

/// Reports every child that has exited, then reaps it.
///
/// The status is read without reaping (`WNOWAIT`) and sent first: until
/// the requester has it, the child's pid is still taken by the zombie, so
/// a requester that opened a pidfd for it before the report came knows
/// that the pidfd names the child and no later process.
fn report_exits(children: &mut Vec<(Child, Option<OwnedFd>)>) {
    loop {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        let (pid, report) = match waitid(Id::All, flags) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, [EXITED, code]),
            Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, [SIGNALED, signal as i32]),
            Err(Errno::EINTR) => continue,
            _ => return,
        };
        if let Some(i) = children.iter().position(|(child, _)| child.pid == pid) {
            let (child, _) = children.swap_remove(i);
            let _ = send_i32s(child.reports.as_fd(), report);
        }
        while let Err(Errno::EINTR) = waitpid(pid, None) {}
    }
}
