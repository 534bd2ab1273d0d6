//! `Process`: Python's `multiprocessing.Process`, on `fork`.
//!
//! - `mod.rs` (this file): [`Builder`], [`Process`] and `join`;
//! - `child.rs`: what a forked child does, from the fork to `_exit`, and
//!   the std streams' locks around a fork;
//! - `status.rs`: how the parent watches, signals and reaps a child.

use std::fmt;
use std::io::{self, Write};
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::{ForkResult, Pid, fork, getpid};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::channel;

mod child;
mod status;

pub(crate) use child::{
    UNCAUGHT_PANIC_CODE, catch, child_main, exit_now, panic_message, run_child,
};
use child::{lock_std_streams, single_threaded};

use crate::error::{Error, Result};
use crate::forkserver;
use crate::spawn;
use crate::start::StartMethod;

/// What the child sends back: the closure's value, or its panic.
#[derive(Serialize, Deserialize)]
pub(crate) enum Outcome<T> {
    Returned(T),
    Panicked(String),
    /// A spawned child could not get to its task (`spawn.rs`).
    Failed(String),
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

/// Options for a new process, like [`std::thread::Builder`]: its name,
/// whether it is a daemon, and how it starts.
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
    start_method: Option<StartMethod>,
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

    /// How this process starts (Python's `mp.get_context(method)`), instead
    /// of the program's default ([`get_start_method`](crate::get_start_method)).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.start_method = Some(method);
        self
    }

    fn method(&self) -> StartMethod {
        self.start_method.unwrap_or_else(crate::get_start_method)
    }

    /// Forks a child process that runs `f` and sends back what it returns.
    ///
    /// `f` must own what it uses (`Send + 'static`, as for
    /// [`std::thread::spawn`]): see [`Process::spawn`] for why. The
    /// parent's own copy of what `f` captured is dropped here, in the
    /// parent, as usual.
    ///
    /// A closure is for [`StartMethod::Fork`] only: a spawned child is a
    /// fresh run of the program, which cannot receive what a closure
    /// captures (Python cannot pickle a lambda either). Under another
    /// method, give a plain `fn` and its argument to
    /// [`spawn_fn`](Self::spawn_fn).
    ///
    /// # Errors
    ///
    /// [`Error::ClosureNeedsFork`] when the start method is not `Fork`;
    /// [`Error::Os`] when the socket, the fork or the pidfd cannot be made.
    pub fn spawn<T, F>(self, f: F) -> Result<Process<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Serialize + DeserializeOwned,
    {
        match self.method() {
            StartMethod::Fork => self.fork(f),
            method => Err(Error::ClosureNeedsFork { method }),
        }
    }

    /// Starts a child process that runs `f(arg)` and sends back what it
    /// returns, by this builder's start method (Python's
    /// `Process(target=f, args=(arg,))`).
    ///
    /// Under [`StartMethod::Spawn`] the child is a fresh run of this
    /// program (`exec` of `/proc/self/exe`). It finds its way to `f` before
    /// `main` runs, by itself: the program needs no set-up, and under
    /// `cargo test` the test binary runs the task, not the tests. It has
    /// one thread and none of the parent's locks or memory; it gets `arg`,
    /// serialized. A [`Queue`](crate::Queue), [`Value`](crate::Value),
    /// [`Array`](crate::Array), [`Lock`](crate::Lock) or
    /// [`Event`](crate::Event) in `arg` travels as a descriptor and is the
    /// same shared object in the child. Under [`StartMethod::ForkServer`]
    /// the same is sent to the program's fork server, which forks the
    /// child: no `exec` but the server's own, once. Under
    /// [`StartMethod::Fork`] this is `spawn(move || f(arg))`.
    ///
    /// ```
    /// use mpcore::{Queue, StartMethod, process};
    ///
    /// fn job((q, n): (Queue<u64>, u64)) -> u64 {
    ///     q.put(n * n).unwrap();
    ///     n + 1
    /// }
    ///
    /// let q = Queue::new()?;
    /// let mut child = process::Builder::new()
    ///     .start_method(StartMethod::Spawn)
    ///     .spawn_fn(job, (q.clone(), 7))?;
    /// assert_eq!(child.join()?, 8);
    /// assert_eq!(q.get()?, 49);
    /// # Ok::<(), mpcore::Error>(())
    /// ```
    ///
    /// `join`, `join_timeout`, `kill`, `terminate`, `is_alive` and the
    /// exit code work as for a forked child, and the child dies with its
    /// parent (`PR_SET_PDEATHSIG`) in the same way. A child of the fork
    /// server is the server's child, not ours: the server reaps it and
    /// reports how it ended, and kills it if this program ends. If the
    /// server is killed, its children die with it, and their `join`
    /// returns [`Error::ForkServerLost`] (unless a result had come).
    ///
    /// # Errors
    ///
    /// [`Error::Codec`] when `arg` cannot be serialized (a handle in it
    /// that is not of a spawned child's argument, say);
    /// [`Error::InvalidArgument`] for an `f` that lives in another
    /// shared library than mpcore, or an `arg` with more than 253 handles;
    /// [`Error::Os`] when the socket, the `exec` or the fork server's fork
    /// fails; [`Error::Io`] when the fork server dies twice in a row before
    /// it could start the child. A child that cannot decode `arg` makes its
    /// `join` return [`Error::StartFailed`].
    pub fn spawn_fn<A, R>(mut self, f: fn(A) -> R, arg: A) -> Result<Process<R>>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        match self.method() {
            StartMethod::Fork => self.fork(move || f(arg)),
            StartMethod::Spawn => {
                let (number, name) = self.number_and_name();
                let (pid, results) = spawn::spawn(f, &arg)?;
                // The argument's handles were sent; the parent's own copy
                // goes now, as with a fork.
                drop(arg);
                Ok(Process::started(pid, name, number, self.daemon, results))
            }
            StartMethod::ForkServer => {
                let (number, name) = self.number_and_name();
                let task = spawn::Task::new(f, &arg)?;
                let (pid, results, reports) = forkserver::start(&task)?;
                // As under Spawn: the handles were sent, the parent's copy
                // of the argument goes now.
                drop(task);
                drop(arg);
                let mut child = Process::started(pid, name, number, self.daemon, results);
                child.watch_reports(reports);
                Ok(child)
            }
        }
    }

    /// The child's number, and its name if one was given.
    fn number_and_name(&mut self) -> (usize, OnceLock<String>) {
        let name = match self.name.take() {
            Some(name) => OnceLock::from(name),
            None => OnceLock::new(),
        };
        (PROCESS_COUNTER.fetch_add(1, Ordering::Relaxed), name)
    }

    fn fork<T, F>(mut self, f: F) -> Result<Process<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Serialize + DeserializeOwned,
    {
        // The default name is numbered now, as Python numbers it, but
        // written out only when asked for: an allocation here would be one
        // more heap page for the child to copy.
        let (number, name) = self.number_and_name();
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
        let mut std_locks = if single_threaded() {
            None
        } else {
            Some(lock_std_streams()?)
        };
        // The same for the fork server's lock: a child that found it held
        // for ever could never start a fork-server child of its own.
        let server_lock = std_locks.is_some().then(forkserver::hold_across_fork);
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
                drop((std_locks, server_lock));
                drop(rx);
                run_child(f, tx.as_fd(), parent)
            }
            Ok(ForkResult::Parent { child }) => {
                drop((std_locks, server_lock));
                drop(tx);
                Ok(Process::started(child, name, number, self.daemon, rx))
            }
        }
    }
}

impl<T> Process<T> {
    /// The handle on a child just started by this process, whose result
    /// comes on `results`.
    fn started(
        pid: Pid,
        name: OnceLock<String>,
        number: usize,
        daemon: bool,
        results: OwnedFd,
    ) -> Process<T> {
        Process {
            pid,
            owner: getpid(),
            name,
            number,
            daemon,
            results,
            pidfd: pidfd_open(pid),
            reports: None,
            status: None,
            reaped_elsewhere: false,
            server_lost: false,
            outcome: None,
            hung_up: false,
            joined: false,
            _result: PhantomData,
        }
    }
}

impl<T> Process<T> {
    /// Makes this the handle on a child of the fork server, whose exit
    /// the server reports on `reports` (it is not our child: no `waitpid`).
    fn watch_reports(&mut self, reports: OwnedFd) {
        // The pidfd names the child only if the child had not yet been
        // reaped when it was opened: the server sends its report before it
        // reaps. A report already there means the child is gone.
        if channel::ready_now(&[reports.as_fd()]).map_or(true, |ready| ready[0]) {
            self.pidfd = None;
        }
        self.reports = Some(reports);
        let _ = self.poll_exit();
    }
}

/// `pidfd_send_signal(pidfd, signal, NULL, 0)`: signals exactly the
/// process the pidfd was opened for.
fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: Signal) -> nix::Result<()> {
    // SAFETY: the call takes a descriptor we hold open, a signal number, a
    // null `siginfo` (the kernel then fills one in as `kill` would) and no
    // flags; it touches no memory of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    Errno::result(rc).map(drop)
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
///
/// # In a forked child
///
/// A child forked later holds a copy of every handle its parent had. The
/// child process belongs to the process that started it: in any other,
/// dropping the copy does nothing, and [`join`](Self::join),
/// [`kill`](Self::kill) and [`terminate`](Self::terminate) return
/// [`Error::NotOwner`] rather than wait for or signal a process that is
/// not theirs.
pub struct Process<T> {
    pid: Pid,
    /// The process that forked the child, the only one that may wait for
    /// it or signal it: a process forked later holds a copy of this handle
    /// too, and must do neither.
    owner: Pid,
    /// Set by [`Builder::name`], or `Process-{number}` on first use.
    name: OnceLock<String>,
    number: usize,
    daemon: bool,
    results: OwnedFd,
    pidfd: Option<OwnedFd>,
    /// For a child of the fork server: where the server reports how the
    /// child ended, since only the server can `waitpid` for it.
    reports: Option<OwnedFd>,
    /// Set once the child is reaped; from then on its pid may belong to
    /// another process, so no signal is sent to it any more.
    status: Option<ExitStatus>,
    /// The child has exited, but something else reaped it (`SIGCHLD` set
    /// to `SIG_IGN`, or a `waitpid(-1)` elsewhere), so its exit status is
    /// lost; from then on, too, no signal is sent to its pid.
    reaped_elsewhere: bool,
    /// The fork server that started the child died before it reported the
    /// child's end (the child died with it).
    server_lost: bool,
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

impl<T: Serialize + DeserializeOwned + 'static> Process<T> {
    /// Starts a child that runs `f(arg)`, by the program's default start
    /// method ([`get_start_method`](crate::get_start_method)). The same as
    /// `Builder::new().spawn_fn(f, arg)`: see
    /// [`Builder::spawn_fn`] for what travels and how.
    ///
    /// ```
    /// use mpcore::Process;
    ///
    /// fn add((a, b): (i32, i32)) -> i32 {
    ///     a + b
    /// }
    ///
    /// let mut p = Process::spawn_fn(add, (1, 2))?;
    /// assert_eq!(p.join()?, 3);
    /// # Ok::<(), mpcore::Error>(())
    /// ```
    pub fn spawn_fn<A>(f: fn(A) -> T, arg: A) -> Result<Process<T>>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
    {
        Builder::new().spawn_fn(f, arg)
    }
}

impl<T: Serialize + DeserializeOwned> Process<T> {
    /// Forks a child that runs `f`; [`join`](Self::join) returns what `f`
    /// returned. The same as `Builder::new().spawn(f)`.
    ///
    /// # What the child may use
    ///
    /// The rule is [`std::thread::spawn`]'s: `f` is `Send + 'static`, so it
    /// owns what it uses. Write a `move` closure and give it the handles it
    /// needs; a [`Value`](crate::Value), [`Array`](crate::Array),
    /// [`Lock`](crate::Lock), [`Event`](crate::Event) or
    /// [`Queue`](crate::Queue) clone is a cheap second handle on the same
    /// shared object.
    ///
    /// ```
    /// use mpcore::{Process, Value};
    ///
    /// let v = Value::new(0i32)?;
    /// let mut child = Process::spawn({
    ///     let v = v.clone();
    ///     move || v.set(42).is_ok()
    /// })?;
    /// assert!(child.join()?);
    /// assert_eq!(v.get()?, 42);
    /// # Ok::<(), mpcore::Error>(())
    /// ```
    ///
    /// A fork would copy a borrowed value just as well; what must never be
    /// copied is a held lock. The guard of a [`Lock`](crate::Lock), or of a `Value`'s or
    /// `Array`'s lock, and every `&mut` taken from one, says "this thread
    /// holds the lock": copied into a child, it would say so in two
    /// processes at once, and both would write "under the lock". So the
    /// compiler refuses to let one in. A guard is not `Send` (nor is a
    /// reference to one), so it can be neither moved in nor borrowed
    /// (error E0277, "cannot be sent between threads safely"):
    ///
    /// ```compile_fail,E0277
    /// let v = mpcore::Value::new(0i32)?;
    /// let mut guard = v.lock()?;
    /// let child = mpcore::Process::spawn(move || *guard += 1)?;
    /// # Ok::<(), mpcore::Error>(())
    /// ```
    ///
    /// ```compile_fail,E0277
    /// let v = mpcore::Value::new(0i32)?;
    /// let mut guard = v.lock()?;
    /// let child = mpcore::Process::spawn(|| *guard += 1)?;
    /// # Ok::<(), mpcore::Error>(())
    /// ```
    ///
    /// A `&mut` taken from a guard lives no longer than the guard, not for
    /// `'static` (error E0597, "does not live long enough"):
    ///
    /// ```compile_fail,E0597
    /// let a = mpcore::Array::new(&[1i32, 2, 3])?;
    /// let mut guard = a.lock()?;
    /// let items: &mut [i32] = &mut guard;
    /// let child = mpcore::Process::spawn(move || items[0] = 10)?;
    /// # Ok::<(), mpcore::Error>(())
    /// ```
    ///
    /// And a [`LockGuard`](crate::LockGuard) is no more `Send` than the
    /// others (E0277 again):
    ///
    /// ```compile_fail,E0277
    /// let lock = mpcore::Lock::new()?;
    /// let held = lock.acquire()?;
    /// let child = mpcore::Process::spawn(move || held.release().is_ok())?;
    /// # Ok::<(), mpcore::Error>(())
    /// ```
    ///
    /// That is Python's "the parent acquires, the child releases",
    /// which cannot work with a lock that knows its owner: the child's
    /// copy of the guard would release a lock its process does not hold.
    /// To hand work over, set an [`Event`](crate::Event) (or a `Value`
    /// flag) instead; a lock is released by the thread that took it.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the fork or its plumbing fails.
    pub fn spawn<F: FnOnce() -> T + Send + 'static>(f: F) -> Result<Self> {
        Builder::new().spawn(f)
    }

    /// Waits for the child to finish and returns the closure's value.
    ///
    /// A child that calls `std::process::exit(0)` sends no value. For a
    /// `Process<()>` (or any `T` with a single value, which needs no bytes
    /// to send) that is success, as in Python: `join` returns `Ok(())`. For
    /// any other `T` there is no value to return: [`Error::Exited`] with
    /// code 0.
    ///
    /// # Errors
    ///
    /// [`Error::Panicked`] with the panic message (also when the value's
    /// `Serialize` or `Drop` panicked in the child), [`Error::Signaled`]
    /// when a signal killed it, [`Error::Exited`] when it exited without a
    /// result, [`Error::ReapedElsewhere`] when something else reaped it
    /// before it sent one, [`Error::ForkServerLost`] when the fork server
    /// that started it died first, [`Error::AlreadyJoined`] on a second call,
    /// [`Error::NotOwner`] in a process other than the one that started it.
    /// [`Error::NoFreeDescriptor`] when a large result waits but this
    /// process has no file descriptor free to receive it: the result stays
    /// there, and a `join` once descriptors are free returns it.
    pub fn join(&mut self) -> Result<T> {
        self.wait(None)
    }

    /// Like [`join`](Self::join), but gives up after `timeout` with
    /// [`Error::Timeout`]; the child keeps running and may be joined again.
    /// Every timeout, zero included, first looks at what is already there:
    /// `join_timeout(Duration::ZERO)` on a child that has finished returns
    /// its value, as Python's `p.join(0)` in a polling loop expects.
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
        // Before anything else: in a copy of the handle, even reading the
        // socket would steal the result from the parent.
        self.check_owner("join")?;
        if self.joined {
            return Err(Error::AlreadyJoined {
                pid: self.pid.as_raw(),
            });
        }
        // A fresh child has neither sent nor exited yet: wait for news
        // first rather than ask for it (two system calls less per join).
        if self.outcome.is_none() && !self.hung_up && !self.has_ended() {
            self.wait_for_event(deadline)?;
        }
        loop {
            // Read first: a child with a large result must never wait for a
            // parent that waits for its exit.
            self.read_outcome()?;
            if !self.has_ended() {
                if deadline.is_none() && (self.outcome.is_some() || self.hung_up) {
                    // Nothing more can come from the child, and we wait
                    // for as long as it takes: one blocking `waitpid`
                    // instead of a poll and a `waitpid`.
                    self.wait_exit()?;
                } else {
                    self.poll_exit()?;
                }
            }
            if self.has_ended() {
                // It exited: whatever it sent is in the socket by now.
                self.read_outcome()?;
                self.joined = true;
                return self.finish();
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

    /// What `join` returns once the child has ended: what it sent, or
    /// else what its exit says.
    fn finish(&mut self) -> Result<T> {
        let pid = self.pid.as_raw();
        match (self.outcome.take(), self.status) {
            (Some(Outcome::Returned(value)), _) => Ok(value),
            (Some(Outcome::Panicked(message)), _) => Err(Error::Panicked { pid, message }),
            (Some(Outcome::Failed(message)), _) => Err(Error::StartFailed { pid, message }),
            (Some(Outcome::Lost(e)), _) => Err(e),
            (None, Some(ExitStatus::Signal(signal))) => Err(Error::Signaled { pid, signal }),
            (None, Some(ExitStatus::Code(0))) => {
                // `exit(0)` before returning. A `T` that encodes to no
                // bytes at all, `()`, has just one value: that is the
                // value, and the exit a success, as in Python.
                postcard::from_bytes::<T>(&[]).map_err(|_| Error::Exited { pid, code: 0 })
            }
            (None, Some(ExitStatus::Code(code))) => Err(Error::Exited { pid, code }),
            (None, None) if self.server_lost => Err(Error::ForkServerLost { pid }),
            (None, None) => Err(Error::ReapedElsewhere { pid }),
        }
    }
}

impl<T> Drop for Process<T> {
    fn drop(&mut self) {
        // A copy of the handle in a forked child neither kills nor waits:
        // the child belongs to the process that started it.
        if self.has_ended() || !self.is_owner() {
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
    /// [`Pool`](crate::Pool) can watch many workers' exits in one `poll`
    /// (for a child of the fork server, the socket of the server's report,
    /// readable once the report is there); `None` on kernels without
    /// pidfds.
    pub(crate) fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.exit_watch()
    }

    /// What becomes readable when the child has ended: the fork server's
    /// report socket for its children (readable once the status is there
    /// to read), the pidfd for our own.
    pub(super) fn exit_watch(&self) -> Option<BorrowedFd<'_>> {
        self.reports
            .as_ref()
            .or(self.pidfd.as_ref())
            .map(|fd| fd.as_fd())
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
