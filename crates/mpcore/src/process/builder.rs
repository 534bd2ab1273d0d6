//! [`Builder`]: how a child starts, by each start method.

use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::unistd::{ForkResult, Pid, fork, getpid};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Process;
use crate::base::{Error, Result, StartMethod, get_start_method};
use crate::start::child::{run_child, single_threaded};
use crate::start::identity::{self, Identity};
use crate::start::streams::{self, lock_std_streams};
use crate::start::{Task, exec, forker, forkserver, tracker};
use crate::wire::channel;

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
    /// of the program's default ([`get_start_method`]).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.start_method = Some(method);
        self
    }

    fn method(&self) -> StartMethod {
        self.start_method.unwrap_or_else(get_start_method)
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
    /// program (`exec` of `/proc/self/exe`), with the program's arguments
    /// (`std::env::args()` is the same in the child) and its name (in `ps`,
    /// `top`, `killall`). It finds its way to `f` before `main` runs, by
    /// itself: the program needs no set-up, and under `cargo test` the
    /// test binary runs the task, not the tests. The program's
    /// constructors (its own and its libraries' `.init_array` functions)
    /// do run again in it, before that; `main` does not. It has one thread
    /// and none of the parent's locks or memory; it gets `arg`,
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
    /// A fresh run of the program can be started only where it reaches
    /// mpcore before `main`: mpcore in the program itself or in a library
    /// the program loads at start-up (not one loaded with `dlopen`, as a
    /// plugin or a Python extension is: the fresh run would be the host
    /// program, and run its own `main`), `/proc` mounted, the program
    /// started directly (not as `ld.so PROGRAM`, where `/proc/self/exe` is
    /// the loader), and not privileged (set-user-ID, set-group-ID, file
    /// capabilities, secure execution). Elsewhere this fails, starting
    /// nothing, with an error that says why; [`StartMethod::Fork`] works
    /// there.
    ///
    /// What the fresh run trusts: mpcore's hook before `main` runs in every
    /// program that links mpcore, so it obeys only a socket that its parent
    /// process made for it, as a process of the same user, in a run that
    /// is not privileged (no secure execution, real ids equal to the
    /// effective ones); it calls only a task entry that mpcore registered,
    /// and `f` only if it lies in the code of the image that holds mpcore.
    /// Which function of that code `f` is, the parent says: a process of
    /// the same user that started the child, which could run any code in
    /// it anyway.
    ///
    /// `join`, `join_timeout`, `kill`, `terminate`, `is_alive` and the
    /// exit code work as for a forked child, and the child dies with its
    /// parent (`PR_SET_PDEATHSIG`) in the same way. A child of the fork
    /// server is the server's child, not ours: the server reaps it and
    /// reports how it ended, sends it the signals of `kill` and
    /// `terminate` (so they work even after this program has dropped the
    /// privileges the child runs with), and kills it if this program
    /// ends. It runs in this process's working directory of the moment of
    /// the request; what else it inherits, and from when, is said at
    /// [`StartMethod::ForkServer`]. If the
    /// server is killed, its children die with it, and their `join`
    /// returns [`Error::ForkServerLost`] (unless a result had come).
    ///
    /// # Errors
    ///
    /// [`Error::Codec`] when `arg` cannot be serialized (a handle in it
    /// that is not of a spawned child's argument, say);
    /// [`Error::InvalidArgument`] for an `f` that lives in another
    /// shared library than mpcore, an `arg` with more than 253 handles, or
    /// a program that cannot be run afresh (mpcore loaded with `dlopen`,
    /// a program started through the dynamic loader, a privileged
    /// program); [`Error::Io`] without `/proc/self/exe`;
    /// [`Error::Os`] when the socket, the `exec` or the fork server's fork
    /// fails, and with `EMFILE` ("fork server request failed: EMFILE: Too
    /// many open files") when the fork server has no file descriptor left
    /// for another child (that request fails alone; the server and its
    /// other children go on); [`Error::Io`] when the fork server dies
    /// twice in a row before it could start the child. A child that cannot decode `arg`, or has
    /// no room in its descriptor table for the handles in it ("too many
    /// open files"), makes its `join` return [`Error::StartFailed`].
    pub fn spawn_fn<A, R>(mut self, f: fn(A) -> R, arg: A) -> Result<Process<R>>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        match self.method() {
            StartMethod::Fork => self.fork(move || f(arg)),
            StartMethod::Spawn => {
                let name = self.number_and_name();
                let identity = self.identity(&name, StartMethod::Spawn);
                let (pid, results) = exec::spawn(f, &arg, &identity)?;
                // The argument's handles were sent; the parent's own copy
                // goes now, as with a fork.
                drop(arg);
                Ok(Process::started(
                    pid,
                    name,
                    self.daemon,
                    StartMethod::Spawn,
                    results,
                ))
            }
            StartMethod::ForkServer => {
                let name = self.number_and_name();
                let identity = self.identity(&name, StartMethod::ForkServer);
                let task = Task::new(f, &arg, &identity)?;
                let (pid, results, reports) = forkserver::start(&task)?;
                // As under Spawn: the handles were sent, the parent's copy
                // of the argument goes now.
                drop(task);
                drop(arg);
                Ok(Process::served(pid, name, self.daemon, results, reports))
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

    /// Who a fresh run of the program is to be: sent with its task.
    fn identity(
        &self,
        (number, name): &(usize, OnceLock<String>),
        method: StartMethod,
    ) -> Identity {
        let name = match name.get() {
            Some(name) => name.clone(),
            None => format!("Process-{number}"),
        };
        Identity::of_child(name, self.daemon, method)
    }

    fn fork<T, F>(mut self, f: F) -> Result<Process<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Serialize + DeserializeOwned,
    {
        // The default name is numbered now, as Python numbers it, but
        // written out only when asked for: an allocation here would be one
        // more heap page for the child to copy.
        let name = self.number_and_name();
        let identity = self.identity(&name, StartMethod::Fork);
        // Forked by a thread that lives as long as the process, so that
        // the child dies with the process, never with a thread of it.
        let (pid, results) = forker::on_lasting_thread(move || fork_child(f, identity))??;
        Ok(Process::started(
            pid,
            name,
            self.daemon,
            StartMethod::Fork,
            results,
        ))
    }
}

/// Forks a child that runs `f` and sends what it returns on a new socket;
/// returns its pid and the parent's end of that socket. The child first
/// records who it is (`identity`).
fn fork_child<T, F>(f: F, identity: Identity) -> Result<(Pid, OwnedFd)>
where
    F: FnOnce() -> T,
    T: Serialize + DeserializeOwned,
{
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
    // The same for the fork server's lock, the forking thread's, the
    // named segments' tracker's, the streams' probe's and the list of
    // children's: a child that found one held for ever could never start
    // a child of its own, make or open a segment, or call
    // `active_children`.
    let server_lock = std_locks.is_some().then(forkserver::hold_across_fork);
    let forker_lock = std_locks.is_some().then(forker::hold_across_fork);
    let tracker_lock = std_locks.is_some().then(tracker::hold_across_fork);
    let probe_lock = std_locks.is_some().then(streams::hold_across_fork);
    let children_lock = std_locks.is_some().then(super::hold_across_fork);
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
            let locks = (std_locks, server_lock, forker_lock, tracker_lock);
            drop((locks, probe_lock, children_lock));
            drop(rx);
            identity::record(identity);
            run_child(f, tx.as_fd(), parent)
        }
        Ok(ForkResult::Parent { child }) => {
            let locks = (std_locks, server_lock, forker_lock, tracker_lock);
            drop((locks, probe_lock, children_lock));
            drop(tx);
            Ok((child, rx))
        }
    }
}
