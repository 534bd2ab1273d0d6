//! `Process`: Python's `multiprocessing.Process`, on `fork`.

use std::any::Any;
use std::fmt;
use std::io::{self, Write};
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, getpid, getppid};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::channel;
use crate::error::{Error, Result};

/// What the child sends back: the closure's value, or its panic.
#[derive(Serialize, Deserialize)]
enum Outcome<T> {
    Returned(T),
    Panicked(String),
    /// Only in the parent: the message came but could not be read.
    #[serde(skip)]
    Lost(Error),
}

/// How a child process ended, as `waitpid` reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code (0 after a normal return or a handled error).
    Code(i32),
    /// A signal ended it.
    Signal(Signal),
}

impl ExitStatus {
    /// Python's `Process.exitcode`: the exit code, or minus the signal number.
    pub fn exitcode(self) -> i32 {
        match self {
            ExitStatus::Code(code) => code,
            ExitStatus::Signal(signal) => -(signal as i32),
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(code) => write!(f, "exit code {code}"),
            ExitStatus::Signal(signal) => write!(f, "signal {signal}"),
        }
    }
}

static PROCESS_COUNTER: AtomicUsize = AtomicUsize::new(1);

/// Options for a new process, like [`std::thread::Builder`]: its name and
/// whether it is a daemon.
///
/// ```
/// let mut p = mpcore::process::Builder::new()
///     .name("worker")
///     .daemon(true)
///     .spawn(|| 6 * 7)?;
/// assert_eq!(p.name(), "worker");
/// assert_eq!(p.join()?, 42);
/// # Ok::<(), mpcore::Error>(())
/// ```
#[derive(Debug, Default, Clone)]
pub struct Builder {
    name: Option<String>,
    daemon: bool,
}

impl Builder {
    /// A non-daemon process named like Python's (`Process-1`, `Process-2`, ...).
    pub fn new() -> Self {
        Self::default()
    }

    /// Names the process (Python's `name=`). Only the handle keeps the name;
    /// the operating system's process name is unchanged.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Python's `daemon=`: a daemon child is killed (`SIGKILL`) when its
    /// handle is dropped unjoined; a non-daemon child is waited for.
    pub fn daemon(mut self, daemon: bool) -> Self {
        self.daemon = daemon;
        self
    }

    /// Forks a child process that runs `f` and sends back what it returns.
    ///
    /// Because the child is a copy of this process (fork), `f` may use
    /// anything the parent had, borrowed or moved; the parent's own copy of
    /// what `f` captured is dropped here, in the parent, as usual.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the socket, the fork or the pidfd cannot be made.
    pub fn spawn<T, F>(self, f: F) -> Result<Process<T>>
    where
        F: FnOnce() -> T,
        T: Serialize + DeserializeOwned,
    {
        // The default name is numbered now, as Python numbers it, but
        // written out only when asked for: an allocation here would be one
        // more heap page for the child to copy.
        let name = match self.name {
            Some(name) => OnceLock::from(name),
            None => OnceLock::new(),
        };
        let number = PROCESS_COUNTER.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = channel::pair()?;
        let parent = getpid();

        // If other threads exist, hold the std streams' locks across the
        // fork, so that none of them owns one at the instant of the copy: a
        // lock that is held then stays held for ever in the child, which
        // would hang at its first `println!`. A process with one thread has
        // nobody to hold them, and is spared the copy-on-write faults of
        // releasing them after the fork (two in each process). Flush
        // stdout either way (under the lock, if taken), or the child would
        // inherit, and print again, whatever the parent had buffered.
        let mut std_locks =
            (!single_threaded()).then(|| (io::stdout().lock(), io::stderr().lock()));
        let _ = match &mut std_locks {
            Some((stdout, _)) => stdout.flush(),
            None => io::stdout().flush(),
        };

        // SAFETY: after `fork` the child has one thread, a copy of this one.
        // What makes that hazardous is a lock some other thread held at the
        // instant of the fork. The std streams' locks are held by this
        // thread (above) when another thread might want them; glibc takes
        // its malloc locks around `fork` itself.
        // Locks of the caller's own that other threads hold are outside our
        // reach: the crate docs say so (the "fork with threads" hazard).
        match unsafe { fork() } {
            Err(e) => Err(Error::os("fork", e)),
            Ok(ForkResult::Child) => {
                drop(std_locks);
                drop(rx);
                run_child(f, tx.as_fd(), parent)
            }
            Ok(ForkResult::Parent { child }) => {
                drop(std_locks);
                drop(tx);
                let pidfd = pidfd_open(child);
                Ok(Process {
                    pid: child,
                    name,
                    number,
                    daemon: self.daemon,
                    results: rx,
                    pidfd,
                    status: None,
                    outcome: None,
                    hung_up: false,
                    joined: false,
                    _result: PhantomData,
                })
            }
        }
    }
}

/// The child's side of `spawn`: run, send, flush, `_exit`. It never
/// returns: unwinding into the parent's stack (a test harness, say) or
/// running the parent's destructors in the child would be a bug.
fn run_child<T, F>(f: F, tx: BorrowedFd<'_>, parent: Pid) -> !
where
    F: FnOnce() -> T,
    T: Serialize,
{
    // Die with the parent, so that no child outlives it as an orphan. The
    // parent may have died before we asked: then we are already an orphan.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if getppid() != parent {
        exit_now(1);
    }

    let outcome = panic::catch_unwind(AssertUnwindSafe(f));
    let code = match outcome {
        Ok(value) => match channel::send(tx, &Outcome::Returned(&value)) {
            Ok(()) => 0,
            Err(e) => {
                let message = format!("could not send the result: {e}");
                let _ = channel::send(tx, &Outcome::<()>::Panicked(message));
                1
            }
        },
        Err(payload) => {
            let _ = channel::send(tx, &Outcome::<()>::Panicked(panic_message(&*payload)));
            1
        }
    };
    exit_now(code)
}

/// Whether this process has only one thread, the caller. glibc (2.32 and
/// newer) keeps this flag: set at start, cleared by the first
/// `pthread_create`, and never set again.
fn single_threaded() -> bool {
    // SAFETY: glibc's <sys/single_threaded.h> declares this byte; the
    // `libc` crate does not bind it yet.
    unsafe extern "C" {
        static __libc_single_threaded: libc::c_char;
    }
    // SAFETY: the byte is always there to read. Only `pthread_create`
    // writes it, so while it reads 1 no other thread exists to race with
    // this read; a 0 stays 0.
    unsafe { std::ptr::read_volatile(&raw const __libc_single_threaded) != 0 }
}

/// Flushes stdout and leaves at once, without `atexit` handlers or
/// destructors: those belong to the parent. (Rust's stderr keeps no
/// buffer: there is nothing of it to flush.)
fn exit_now(code: i32) -> ! {
    let _ = io::stdout().flush();
    // SAFETY: `_exit` ends the process; it has no preconditions.
    unsafe { libc::_exit(code) }
}

/// The text of a panic's payload (`panic!` makes a `&str` or a `String`).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a payload that is not a string".to_owned()
    }
}

/// A pidfd becomes readable when the child exits, so a wait can watch the
/// child's exit and its result socket at once. `None` on kernels before 5.3:
/// then waits fall back to short polls of `waitpid`.
fn pidfd_open(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1; it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just returned this descriptor to us; we are its
    // only owner.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A child process running a closure, Python's `multiprocessing.Process`.
///
/// ```
/// use mpcore::Process;
///
/// fn job(a: i32, b: i32) -> i32 {
///     a + b
/// }
///
/// let mut p = Process::spawn(move || job(1, 2))?;
/// assert_eq!(p.join()?, 3);
/// assert_eq!(p.exitcode(), Some(0));
/// # Ok::<(), mpcore::Error>(())
/// ```
///
/// # Dropping a handle
///
/// Like Python, which joins non-daemon children at exit and kills daemon
/// ones: dropping an unjoined non-daemon `Process` waits for the child
/// (reading its result, so a child with a large result cannot block), and
/// dropping a daemon one ([`Builder::daemon`]) kills it with `SIGKILL`.
/// Either way the child is reaped: no zombie is left. If the parent is
/// already unwinding from a panic, a non-daemon child is killed too, so a
/// failing test cannot hang in a destructor.
pub struct Process<T> {
    pid: Pid,
    /// Set by [`Builder::name`], or `Process-{number}` on first use.
    name: OnceLock<String>,
    number: usize,
    daemon: bool,
    results: OwnedFd,
    pidfd: Option<OwnedFd>,
    /// Set once the child is reaped; from then on its pid may belong to
    /// another process, so no signal is sent to it any more.
    status: Option<ExitStatus>,
    outcome: Option<Outcome<T>>,
    /// The result socket reported end of file: nothing more will arrive.
    hung_up: bool,
    joined: bool,
    _result: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Process<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name())
            .field("pid", &self.pid.as_raw())
            .field("daemon", &self.daemon)
            .field("status", &self.status)
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned> Process<T> {
    /// Forks a child that runs `f`; [`join`](Self::join) returns what `f`
    /// returned. The same as `Builder::new().spawn(f)`.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the fork or its plumbing fails.
    pub fn spawn<F: FnOnce() -> T>(f: F) -> Result<Self> {
        Builder::new().spawn(f)
    }

    /// Waits for the child to finish and returns the closure's value.
    ///
    /// # Errors
    ///
    /// [`Error::Panicked`] with the panic message, [`Error::Signaled`] when a
    /// signal killed it, [`Error::Exited`] when it exited without a result,
    /// [`Error::AlreadyJoined`] on a second call.
    /// [`Error::NoFreeDescriptor`] when a large result waits but this
    /// process has no file descriptor free to receive it: the result stays
    /// there, and a `join` once descriptors are free returns it.
    pub fn join(&mut self) -> Result<T> {
        self.wait(None)
    }

    /// Like [`join`](Self::join), but gives up after `timeout` with
    /// [`Error::Timeout`]; the child keeps running and may be joined again.
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<T> {
        match channel::deadline_after(timeout) {
            Some(deadline) => self.wait(Some(deadline)).map_err(|e| match e {
                Error::Timeout(_) => Error::Timeout(timeout),
                other => other,
            }),
            None => self.wait(None),
        }
    }

    fn wait(&mut self, deadline: Option<Instant>) -> Result<T> {
        if self.joined {
            return Err(Error::AlreadyJoined {
                pid: self.pid.as_raw(),
            });
        }
        // A fresh child has neither sent nor exited yet: wait for news
        // first rather than ask for it (two system calls less per join).
        if self.outcome.is_none() && !self.hung_up && self.status.is_none() {
            self.wait_for_event(deadline)?;
        }
        loop {
            // Read first: a child with a large result must never wait for a
            // parent that waits for its exit.
            self.read_outcome()?;
            if self.status.is_none() {
                if deadline.is_none() && (self.outcome.is_some() || self.hung_up) {
                    // Nothing more can come from the child, and we wait
                    // for as long as it takes: one blocking `waitpid`
                    // instead of a poll and a `waitpid`.
                    self.wait_exit()?;
                } else {
                    self.poll_exit()?;
                }
            }
            if let Some(status) = self.status {
                // It exited: whatever it sent is in the socket by now.
                self.read_outcome()?;
                self.joined = true;
                return self.finish(status);
            }
            self.wait_for_event(deadline)?;
        }
    }

    /// Takes the child's message if it is there. End of file means every
    /// copy of the sending end is closed, so no message will come: only the
    /// exit status is left to wait for.
    fn read_outcome(&mut self) -> Result<()> {
        if self.outcome.is_none() && !self.hung_up {
            match channel::try_recv_keeping(self.results.as_fd()) {
                Ok(outcome) => self.outcome = outcome,
                Err(Error::Disconnected) => self.hung_up = true,
                Err(e) => {
                    // A message taken but unreadable is gone: every later
                    // join must say so, not that none was sent.
                    if !matches!(e, Error::NoFreeDescriptor { kept: true, .. }) {
                        self.outcome = Some(Outcome::Lost(e.clone()));
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self, status: ExitStatus) -> Result<T> {
        let pid = self.pid.as_raw();
        match (self.outcome.take(), status) {
            (Some(Outcome::Returned(value)), _) => Ok(value),
            (Some(Outcome::Panicked(message)), _) => Err(Error::Panicked { pid, message }),
            (Some(Outcome::Lost(e)), _) => Err(e),
            (None, ExitStatus::Signal(signal)) => Err(Error::Signaled { pid, signal }),
            (None, ExitStatus::Code(code)) => Err(Error::Exited { pid, code }),
        }
    }
}

impl<T> Process<T> {
    /// The child's process id (Python's `p.pid`).
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// The name given by [`Builder::name`], or `Process-N`.
    pub fn name(&self) -> &str {
        self.name.get_or_init(|| format!("Process-{}", self.number))
    }

    /// Whether the handle kills (daemon) or waits for (non-daemon) the child
    /// when dropped unjoined.
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }

    /// Whether the child is still running (Python's `p.is_alive()`). When it
    /// has exited, this reaps it and records its status.
    pub fn is_alive(&mut self) -> bool {
        if self.status.is_none() {
            // An error here means the child is no longer ours to wait for.
            if self.poll_exit().is_err() {
                return false;
            }
        }
        self.status.is_none()
    }

    /// How the child ended, once it has been reaped (by `join`, `is_alive`
    /// or a wait); `None` while it runs.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.status
    }

    /// Python's `p.exitcode`: `None` while running, the exit code, or minus
    /// the number of the signal that ended it (`-9` after [`kill`](Self::kill)).
    pub fn exitcode(&self) -> Option<i32> {
        self.status.map(ExitStatus::exitcode)
    }

    /// Asks the child to stop with `SIGTERM` (Python's `p.terminate()`).
    /// Does nothing once the child has been reaped. Follow with `join`.
    pub fn terminate(&self) -> Result<()> {
        self.signal(Signal::SIGTERM)
    }

    /// Ends the child with `SIGKILL` (Python's `p.kill()`). Does nothing
    /// once the child has been reaped. Follow with `join`.
    pub fn kill(&self) -> Result<()> {
        self.signal(Signal::SIGKILL)
    }

    fn signal(&self, signal: Signal) -> Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        // Until we reap it, the pid is still our child's (a zombie at
        // worst), so this cannot hit an unrelated process.
        match kill(self.pid, signal) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(Error::os("kill", e)),
        }
    }

    /// `waitpid(pid)`: waits for the child to exit and records its status.
    fn wait_exit(&mut self) -> Result<()> {
        self.reap(None)
    }

    /// `waitpid(pid, WNOHANG)`: records the status if the child has exited.
    fn poll_exit(&mut self) -> Result<()> {
        self.reap(Some(WaitPidFlag::WNOHANG))
    }

    /// `waitpid` on this child only (`waitpid(-1)` would reap other code's
    /// children), recording how it ended. With `WNOHANG`, a child still
    /// running leaves `status` at `None`; without, it waits for the exit.
    fn reap(&mut self, flags: Option<WaitPidFlag>) -> Result<()> {
        loop {
            match waitpid(self.pid, flags) {
                Ok(WaitStatus::Exited(_, code)) => self.status = Some(ExitStatus::Code(code)),
                Ok(WaitStatus::Signaled(_, signal, _)) => {
                    self.status = Some(ExitStatus::Signal(signal))
                }
                Ok(_) if flags.is_none() => continue,
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(Error::os("waitpid", e)),
            }
            return Ok(());
        }
    }

    /// Blocks until the result socket or the child's exit has news, or the
    /// deadline passes ([`Error::Timeout`], its duration filled in by the
    /// caller that knows it).
    fn wait_for_event(&self, deadline: Option<Instant>) -> Result<()> {
        // Once the message is in or the socket hung up, the socket stays
        // readable: watching it then would spin.
        let watch_socket = self.outcome.is_none() && !self.hung_up;
        let timed_out = match &self.pidfd {
            Some(pidfd) if watch_socket => {
                channel::wait_readable([self.results.as_fd(), pidfd.as_fd()], deadline)?
                    == [false, false]
            }
            Some(pidfd) => channel::wait_readable([pidfd.as_fd()], deadline)? == [false],
            None => {
                // No pidfd: nothing wakes us on exit, so look every few ms.
                let slice = Instant::now() + Duration::from_millis(5);
                let until = deadline.map_or(slice, |d| d.min(slice));
                if watch_socket {
                    channel::wait_readable([self.results.as_fd()], Some(until))?;
                } else {
                    std::thread::sleep(until.saturating_duration_since(Instant::now()));
                }
                deadline.is_some_and(|d| Instant::now() >= d)
            }
        };
        if timed_out {
            return Err(Error::Timeout(Duration::ZERO));
        }
        Ok(())
    }

    /// Blocks until the child is reaped, draining its result socket
    /// meanwhile so that a child writing a result is never stuck behind us.
    /// Used by `Drop`, which has no use for the value and no way to fail.
    fn reap_blocking(&mut self) {
        while self.status.is_none() {
            while self.outcome.is_none() && !self.hung_up {
                match channel::try_discard(self.results.as_fd()) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(_) => self.hung_up = true,
                }
            }
            if self.poll_exit().is_err() || self.status.is_some() {
                return;
            }
            if self.wait_for_event(None).is_err() {
                // Polling failed: fall back to a plain blocking wait.
                let _ = waitpid(self.pid, None);
                return;
            }
        }
    }
}

impl<T> Drop for Process<T> {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        if self.daemon || std::thread::panicking() {
            let _ = self.kill();
        }
        self.reap_blocking();
    }
}

impl<T> Process<T> {
    /// The pidfd that becomes readable when the child exits, so that a
    /// [`Pool`](crate::Pool) can watch many workers' exits in one `poll`;
    /// `None` on kernels without pidfds.
    pub(crate) fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(|fd| fd.as_fd())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_process_that_started_a_thread_is_not_single_threaded() {
        // Once any thread has been started, spawn must take the std
        // streams' locks, even after that thread has ended.
        std::thread::spawn(|| ()).join().unwrap();
        assert!(!super::single_threaded());
    }
}
