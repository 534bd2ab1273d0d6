//! [`Process`]: Python's `multiprocessing.Process`.
//!
//! - `mod.rs` (this file): the [`Process`] handle;
//! - `builder.rs`: [`Builder`], and how a child starts by each start
//!   method (the fork itself; spawn and the fork server are `start/`);
//! - `join.rs`: waiting for the result and the exit at once, and dropping;
//! - `status.rs`: how the parent watches, signals and reaps a child;
//! - `registry.rs`: what watches a child's end, shared by its handle and
//!   this process's list of its children (`active_children`);
//! - `current.rs`: who is running: `current_process`, `parent_process`;
//! - `fd.rs`: the handle as a descriptor (`AsFd`, `sentinel`), and
//!   `join_async` (feature `tokio`).

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::{Arc, OnceLock};

use nix::unistd::{Pid, getpid};
use serde::Serialize;
use serde::de::DeserializeOwned;

mod builder;
mod current;
mod fd;
mod join;
mod registry;
mod status;

pub use builder::Builder;
pub use current::{ParentProcess, ProcessInfo, current_process, parent_process};
use registry::Watch;
pub use registry::active_children;
pub(crate) use registry::hold_across_fork;

use crate::base::{ExitStatus, Result, StartMethod};
use crate::os::pidfd;
use crate::start::Outcome;

impl<T> Process<T> {
    /// The handle on a child just started by this process, whose result
    /// comes on `results`.
    fn started(
        pid: Pid,
        name: (usize, OnceLock<String>),
        daemon: bool,
        method: StartMethod,
        results: OwnedFd,
    ) -> Process<T> {
        let pidfd = pidfd::open(pid);
        Process::handle(Watch::new(pid, name, daemon, method, pidfd, None), results)
    }

    /// The handle on a child of the fork server, whose result comes on
    /// `results` and whose exit the server reports on `reports` (it is
    /// not our child: no `waitpid`). No pidfd: the report socket says
    /// when the child has ended, and the server signals it for us.
    fn served(
        pid: Pid,
        name: (usize, OnceLock<String>),
        daemon: bool,
        results: OwnedFd,
        reports: OwnedFd,
    ) -> Process<T> {
        let watch = Watch::new(
            pid,
            name,
            daemon,
            StartMethod::ForkServer,
            None,
            Some(reports),
        );
        let mut child = Process::handle(watch, results);
        let _ = child.poll_exit();
        child
    }

    fn handle(watch: Arc<Watch>, results: OwnedFd) -> Process<T> {
        Process {
            pid: watch.pid,
            owner: getpid(),
            watch,
            results,
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
/// [`Error::NotOwner`](crate::Error::NotOwner) rather than wait for or signal a process that is
/// not theirs.
pub struct Process<T> {
    pid: Pid,
    /// The process that forked the child, the only one that may wait for
    /// it or signal it: a process forked later holds a copy of this handle
    /// too, and must do neither.
    owner: Pid,
    /// Its name, and what says it has ended (its pidfd, or the fork
    /// server's report socket): shared with this process's list of its
    /// children ([`active_children`]).
    watch: Arc<Watch>,
    results: OwnedFd,
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
            .field("daemon", &self.is_daemon())
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
    /// [`Error::Os`](crate::Error::Os) when the fork or its plumbing fails.
    pub fn spawn<F: FnOnce() -> T + Send + 'static>(f: F) -> Result<Self> {
        Builder::new().spawn(f)
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
        self.watch.exit_fd()
    }
}
