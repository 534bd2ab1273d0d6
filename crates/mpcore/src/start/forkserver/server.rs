//! The fork server's own loop: a single-threaded process that forks
//! children on request, signals them on request, reaps them and reports
//! how each ended.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, pthread_sigmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fchdir, fork, getpid, getppid};

use super::intake::{Intake, Request};
use super::{
    EXITED, FORK_FAILED, REFUSED, REQUEST_FDS, SERVER_ENV, SIGNAL, SIGNALED, STARTED, read_i32s,
    send_i32s,
};
use crate::base::{ExitStatus, catch};
use crate::os::poll;
use crate::os::wait::{self, Which};
use crate::start::child::{Outcome, UNCAUGHT_PANIC_CODE, exit_now};
use crate::start::request::take_request;
use crate::start::task::run_sent_task;
use crate::wire::channel;

/// Called by mpcore's constructor before `main`: if this run of the
/// program is the fork server, serves, and exits without returning.
pub(crate) fn serve_if_asked() {
    // The variable is removed, and obeyed only if it names a socket that
    // the program made for this run (`hook.rs`): else `main` runs.
    let Some((requests, program)) = take_request(SERVER_ENV) else {
        return;
    };
    let code = catch(|| serve(requests, program)).unwrap_or(UNCAUGHT_PANIC_CODE);
    exit_now(code)
}

/// How often a server without a signalfd looks for exited children.
const NO_SIGNALFD_TICK: Duration = Duration::from_millis(20);

/// How many signal requests one child's requester gets served per round,
/// so that one cannot keep the server from the others.
const SIGNALS_PER_ROUND: usize = 16;

/// The server's loop on the socket `requests` of the `program` that
/// started it; returns the exit code.
fn serve(requests: OwnedFd, program: Pid) -> i32 {
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
    Server::new(requests, program).run()
}

/// A child of the server, until it is reaped.
struct Child {
    pid: Pid,
    /// Where its pid went and how it ended goes; where its requester asks
    /// for signals.
    reports: OwnedFd,
    /// The requester's end is open: watch it for signal requests.
    listening: bool,
}

/// The server's state.
struct Server {
    me: Pid,
    intake: Intake,
    /// Readable when a child has exited: `SIGCHLD`, blocked, read through
    /// a signalfd, one descriptor for all the children. Without one, the
    /// server looks every [`NO_SIGNALFD_TICK`].
    exits: Option<SignalFd>,
    /// The signal mask the server started with, which its children get
    /// back (the server blocks `SIGCHLD` for its signalfd).
    mask: SigSet,
    /// The soft and hard limits on open files the server started with,
    /// if it raised the soft one: its children get them back.
    files: Option<(libc::rlim_t, libc::rlim_t)>,
    children: Vec<Child>,
    /// Told to retire: it forks no more, and ends with its last child.
    retiring: bool,
}

impl Server {
    fn new(requests: OwnedFd, program: Pid) -> Server {
        // Room for many children: each costs the server one descriptor,
        // its report socket. The program's soft limit is often far below
        // the hard one (1024 against 500,000 and more).
        let files = match getrlimit(Resource::RLIMIT_NOFILE) {
            Ok((soft, hard))
                if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() =>
            {
                Some((soft, hard))
            }
            _ => None,
        };
        let mut chld = SigSet::empty();
        chld.add(Signal::SIGCHLD);
        let mut mask = SigSet::empty();
        let exits = match pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&chld), Some(&mut mask)) {
            Ok(()) => {
                match SignalFd::with_flags(&chld, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK) {
                    Ok(exits) => Some(exits),
                    Err(_) => {
                        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&mask), None);
                        None
                    }
                }
            }
            Err(_) => None,
        };
        Server {
            me: getpid(),
            intake: Intake::new(requests, program),
            exits,
            mask,
            files,
            children: Vec::new(),
            retiring: false,
        }
    }

    fn run(mut self) -> i32 {
        loop {
            if self.retiring && self.children.is_empty() {
                return 0;
            }
            let listening: Vec<usize> = (0..self.children.len())
                .filter(|&i| self.children[i].listening)
                .collect();
            let mut watch = vec![self.intake.socket()];
            watch.extend(self.exits.as_ref().map(|exits| exits.as_fd()));
            watch.extend(listening.iter().map(|&i| self.children[i].reports.as_fd()));
            let deadline = self
                .exits
                .is_none()
                .then(|| Instant::now() + NO_SIGNALFD_TICK);
            let ready = poll::readable_any(&watch, deadline).unwrap_or_else(|_| {
                // `poll` itself failed (for want of memory, or a limit
                // lowered under the server): look at everything, now and
                // then, rather than give up the children.
                std::thread::sleep(NO_SIGNALFD_TICK);
                vec![true; watch.len()]
            });
            drop(watch);
            let first_report = 1 + usize::from(self.exits.is_some());
            for (&i, &ready) in listening.iter().zip(&ready[first_report..]) {
                if ready {
                    self.take_signal_requests(i);
                }
            }
            if ready[0] && !self.take_request() {
                break;
            }
            if let Some(exits) = &self.exits {
                // Empty the signalfd; `report_exits` looks for every exit.
                while let Ok(Some(_)) = exits.read_signal() {}
            }
            self.report_exits();
        }
        // The program is gone: so are its children, none left as an orphan.
        for child in &self.children {
            let _ = kill(child.pid, Signal::SIGKILL);
        }
        for child in &self.children {
            while let Err(Errno::EINTR) = waitpid(child.pid, None) {}
        }
        0
    }

    /// Takes one request; `false` at the end of the program.
    fn take_request(&mut self) -> bool {
        match self.intake.receive() {
            Request::End => return false,
            Request::Nothing => {}
            Request::Retire => self.retiring = true,
            Request::Refuse { reports, errno } => {
                let _ = send_i32s(reports.as_fd(), [REFUSED, errno as i32], false);
            }
            Request::Fork { reports, .. } if self.retiring => {
                let _ = send_i32s(reports.as_fd(), [REFUSED, Errno::EPERM as i32], false);
            }
            Request::Fork { reports, task, cwd } => self.fork_child(reports, task, cwd),
        }
        // The request's descriptors are closed or kept by now: the room
        // they took is free again, for the next one.
        self.intake.refill(REQUEST_FDS);
        true
    }

    /// Sends the signals the requester of child `i` asked for. The child
    /// is not yet reaped (it is still in the list), so its pid is still
    /// its own: the signal cannot reach a later process.
    fn take_signal_requests(&mut self, i: usize) {
        let child = &mut self.children[i];
        for _ in 0..SIGNALS_PER_ROUND {
            match read_i32s::<2>(child.reports.as_fd(), false) {
                Ok(None) => return,
                Ok(Some([SIGNAL, signal])) if (1..=libc::SIGRTMAX()).contains(&signal) => {
                    // SAFETY: `kill` takes two numbers and touches no memory.
                    unsafe { libc::kill(child.pid.as_raw(), signal) };
                }
                // Not a request of ours: ignored.
                Ok(Some(_)) | Err(Errno::EBADMSG) => {}
                // The requester has gone (or its socket is unusable): it
                // will ask nothing more.
                Err(_) => {
                    child.listening = false;
                    return;
                }
            }
        }
    }

    /// Forks a child that runs the task waiting in `task`, in the
    /// directory `cwd`, and tells the requester its pid on `reports` (or
    /// why the fork failed).
    fn fork_child(&mut self, reports: OwnedFd, task: OwnedFd, cwd: OwnedFd) {
        // The server ignores SIGINT, and the child begins so: a SIGINT
        // sent to it (`Process::interrupt`) before it has set SIGINT back
        // to the default would be lost. Blocked across the fork, such a
        // signal waits instead, and the child takes it once it has set
        // the default and its mask back (`be_the_child`). (The server's
        // own, ignored, are dropped when it unblocks.)
        let mut interrupt = SigSet::empty();
        interrupt.add(Signal::SIGINT);
        let mut before = SigSet::empty();
        let blocked =
            pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&interrupt), Some(&mut before)).is_ok();
        let unblock = || {
            if blocked {
                let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&before), None);
            }
        };
        // SAFETY: this process has one thread (it runs before `main` and
        // starts none), so no lock can be held by another thread at the fork.
        match unsafe { fork() } {
            Err(e) => {
                unblock();
                let _ = send_i32s(reports.as_fd(), [FORK_FAILED, e as i32], false);
            }
            Ok(ForkResult::Child) => self.be_the_child(reports, task, cwd),
            Ok(ForkResult::Parent { child }) => {
                unblock();
                // If the requester is gone, nobody reads this: the child
                // still runs and is reaped like any other.
                let _ = send_i32s(reports.as_fd(), [STARTED, child.as_raw()], false);
                self.children.push(Child {
                    pid: child,
                    reports,
                    listening: true,
                });
            }
        }
    }

    /// The child's side of [`fork_child`](Self::fork_child): undo what the
    /// server set up for itself, enter the requester's directory, run the
    /// task.
    fn be_the_child(&self, reports: OwnedFd, task: OwnedFd, cwd: OwnedFd) -> ! {
        // Die with the server; it may have died before we asked.
        let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
        if getppid() != self.me {
            exit_now(1);
        }
        // The server's descriptors are none of the task's business, and a
        // copy of a report socket held here would hide the server's death
        // from its requester.
        for fd in self.intake.descriptors() {
            close_in_child(fd);
        }
        if let Some(exits) = &self.exits {
            close_in_child(exits.as_fd());
        }
        close_in_child(reports.as_fd());
        for child in &self.children {
            close_in_child(child.reports.as_fd());
        }
        // SAFETY: restoring a default disposition installs no handler.
        unsafe { libc::signal(libc::SIGINT, libc::SIG_DFL) };
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.mask), None);
        if let Some((soft, hard)) = self.files {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, soft, hard);
        }
        // Where the requester is now, not where the program was when the
        // server started.
        if let Err(e) = fchdir(&cwd) {
            let message = format!("could not enter its parent's working directory: {e}");
            let _ = channel::send(task.as_fd(), &Outcome::<()>::Failed(message));
            exit_now(1);
        }
        drop(cwd);
        let code = catch(|| run_sent_task(task.as_fd(), self.me)).unwrap_or(UNCAUGHT_PANIC_CODE);
        exit_now(code)
    }

    /// Reports every child that has exited, then reaps it and forgets
    /// it: from then on no signal request for it is read (its report
    /// socket is closed), so none can reach a later process with its pid.
    ///
    /// The status is read without reaping (`WNOWAIT`) and sent first, so
    /// that the requester has it by the time the pid is free.
    fn report_exits(&mut self) {
        loop {
            // Not nix's `waitid`: it fails on a child killed by a
            // real-time signal, which would then never be reported.
            let (pid, report) = match wait::ended(Which::Any, libc::WNOHANG | libc::WNOWAIT) {
                Ok(Some((pid, ExitStatus::Code(code)))) => (pid, [EXITED, code]),
                Ok(Some((pid, ExitStatus::Signal(signal)))) => (pid, [SIGNALED, signal.number()]),
                _ => return,
            };
            if let Some(i) = self.children.iter().position(|child| child.pid == pid) {
                let child = self.children.swap_remove(i);
                let _ = send_i32s(child.reports.as_fd(), report, false);
            }
            while let Err(Errno::EINTR) = waitpid(pid, None) {}
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
