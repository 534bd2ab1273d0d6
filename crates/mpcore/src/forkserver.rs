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
//!    already left what a spawned child reads ([`Task::packed`]): where the
//!    task is, the handles' descriptors and the argument. The server never
//!    looks at them; the child reads them as a spawned child does
//!    ([`spawn::run_sent_task`]), and sends its result straight to the
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

use std::ffi::OsStr;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::{ForkResult, Pid, fork, getpid, getppid};

use crate::channel;
use crate::error::{Error, Result};
use crate::process::{self, ExitStatus};
use crate::spawn::{self, Task};

/// The variable that tells a fresh run of the program that it is the fork
/// server: `"<request socket descriptor> <program's pid>"`.
const SERVER_ENV: &str = "MPCORE_FORKSERVER";

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
    let pid = spawn::exec_self(SERVER_ENV, &value, theirs, false)?;
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
        Ok(Some([_, signal])) => match Signal::try_from(signal) {
            Ok(signal) => Ok(Report::Ended(ExitStatus::Signal(signal))),
            Err(e) => Err(Error::os("waitid", e)),
        },
        Err(Errno::UnknownErrno | Errno::ECONNRESET) => Ok(Report::ServerGone),
        Err(e) => Err(Error::os("recv", e)),
    }
}

/// The first number of a report: the child exited (the second is its
/// code), or else a signal ended it (the second is the signal).
const EXITED: i32 = 1;
const SIGNALED: i32 = 2;

// ---------------------------------------------------------------------
// The server's side.
// ---------------------------------------------------------------------

/// Called by mpcore's constructor before `main`: if this run of the
/// program is the fork server, serves, and exits without returning.
pub(crate) fn serve_if_asked() {
    let Some(value) = std::env::var_os(SERVER_ENV) else {
        return;
    };
    // SAFETY: constructors run before `main`, while the loader's thread is
    // the only one: nobody else can be reading the environment. Removed so
    // that the server's children, and what they start, are not taken for
    // fork servers themselves.
    unsafe { std::env::remove_var(SERVER_ENV) };
    let code = process::catch(|| serve(&value)).unwrap_or(process::UNCAUGHT_PANIC_CODE);
    process::exit_now(code)
}

/// A child of the server, until it is reaped.
struct Child {
    pid: Pid,
    /// Where its pid went and how it ended goes.
    reports: OwnedFd,
}

/// How often a server without pidfds looks for exited children.
const NO_PIDFD_TICK: Duration = Duration::from_millis(20);

/// The server's loop; returns the exit code.
fn serve(value: &OsStr) -> i32 {
    let parsed = std::str::from_utf8(value.as_bytes()).ok().and_then(|text| {
        let (socket, program) = text.split_once(' ')?;
        Some((socket.parse::<RawFd>().ok()?, program.parse::<i32>().ok()?))
    });
    let Some((socket, program)) = parsed.filter(|&(socket, _)| spawn::is_socket(socket)) else {
        eprintln!(
            "mpcore: {SERVER_ENV}={value:?} is set, but this is not a fork server that mpcore \
             started; unset the variable to run the program"
        );
        return 2;
    };
    // SAFETY: the program left this descriptor open for us alone
    // (`is_socket` checked that it is one); nothing else in this fresh
    // program owns it.
    let requests = unsafe { OwnedFd::from_raw_fd(socket) };
    // SAFETY: `fcntl(F_SETFD)` on a descriptor we own touches no memory.
    unsafe { libc::fcntl(requests.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    if getppid().as_raw() != program {
        // The program is gone already.
        return 0;
    }
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
        let Ok(ready) = channel::wait_readable_any(&fds, deadline) else {
            break;
        };
        drop(fds);
        if ready[0] {
            match receive_request(requests.as_fd()) {
                Ok(Some((task, reports))) => {
                    if let Some(child) = fork_child(me, &requests, &children, task, reports) {
                        let pidfd = pidfd_open(child.pid);
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
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = loop {
        match recvmsg::<()>(
            requests.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(Errno::EINTR) => continue,
            other => break other?,
        }
    };
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            // SAFETY: the kernel just installed these descriptors for us.
            fds.extend(
                received
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    if msg.bytes == 0 && fds.is_empty() {
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
                process::exit_now(1);
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
            let code = process::catch(|| spawn::run_sent_task(task.as_fd(), me))
                .unwrap_or(process::UNCAUGHT_PANIC_CODE);
            process::exit_now(code)
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

fn send_i32s<const N: usize>(fd: BorrowedFd<'_>, values: [i32; N]) -> nix::Result<()> {
    let bytes = values.map(i32::to_ne_bytes);
    loop {
        match nix::sys::socket::send(fd.as_raw_fd(), bytes.as_flattened(), MsgFlags::MSG_NOSIGNAL) {
            Err(Errno::EINTR) => continue,
            other => return other.map(drop),
        }
    }
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

/// As in `process/mod.rs`: a descriptor that becomes readable when the
/// child exits, or `None` on kernels before 5.3.
fn pidfd_open(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1; it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    // SAFETY: the kernel just returned this descriptor to us; we are its
    // only owner.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
