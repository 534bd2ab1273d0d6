//! `Pool`: Python's `multiprocessing.Pool`, on `fork`.
//!
//! | Python | mpcore |
//! | --- | --- |
//! | `pool = mp.Pool()` | [`Pool::with_cpu_count`] |
//! | `pool = mp.Pool(processes=3)` | [`Pool::new`]`(3)` |
//! | `mp.Pool(3, maxtasksperchild=10)` | [`Builder::new`]`().processes(3).max_tasks_per_child(10).build()` |
//! | `pool.map(job, range(10))` | [`Pool::map`]`(job, 0..10)` |
//! | `pool.map(job, xs, chunksize=4)` | [`Pool::map_chunked`]`(job, xs, 4)` |
//! | `pool.imap(job, xs)`, `pool.imap_unordered(job, xs)` | [`Pool::imap`], [`Pool::imap_unordered`] |
//! | `res = pool.apply_async(job, (2,)); res.get()` | [`Pool::apply_async`]`(job, 2)?.get()` |
//! | `res.get(timeout=1)`, `res.ready()` | [`AsyncResult::get_timeout`], [`AsyncResult::ready`] |
//! | `pool.close(); pool.join()` | [`Pool::close`], [`Pool::join`] |
//! | `pool.terminate()`, leaving `with Pool() as pool:` | [`Pool::terminate`], dropping the `Pool` |
//!
//! ```
//! use mpcore::Pool;
//!
//! fn job(x: u64) -> u64 {
//!     x * x
//! }
//!
//! let pool = Pool::new(2)?;
//! assert_eq!(pool.map(job, 0..10)?, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
//! assert_eq!(pool.apply_async(job, 2)?.get()?, 4);
//! pool.close();
//! pool.join()?;
//! # Ok::<(), mpcore::Error>(())
//! ```
//!
//! # How a task reaches a worker
//!
//! A task is a plain `fn(T) -> R`, not a closure that captures: the worker
//! is a forked copy of this program, so the function's code is already
//! there, at the same address (fork copies the address space as it is).
//! The pool sends that address, the address of a small function
//! instantiated for `T` and `R` that decodes the arguments, calls the task
//! and encodes the results, and the arguments themselves (serde). Python
//! pickles the function by name instead, which is why it must be defined
//! at the top level of a module; here a non-capturing closure coerces to a
//! `fn` too.
//!
//! # Who forks, and why it is a thread of the pool
//!
//! Each pool owns one supervisor thread, and that thread forks every
//! worker, the first ones and every replacement. A worker asks the kernel
//! for `PR_SET_PDEATHSIG`, which fires when the *thread* that forked it
//! exits, not only the process: workers forked by a thread that ends early
//! (a short request handler that made the pool, say) would be killed with
//! it. The supervisor lives exactly as long as the pool, so the signal
//! fires only when the pool is gone or the whole program dies, and then it
//! is what we want: no worker outlives its pool's program. The supervisor
//! also does the rest of the bookkeeping that Python's `Pool` spreads over
//! three threads: it hands out tasks, collects results, and replaces
//! workers.
//!
//! # How a dead worker is noticed
//!
//! Every worker has a socket of its own, and the pool always knows which
//! chunks of tasks a worker holds. A worker holds one chunk at a time,
//! except when the chunks of a call have proved fast (under 100 µs each):
//! then it holds up to 64, the one it runs and the next ones waiting for
//! it, so that it never sits idle while the supervisor wakes up to send
//! more. What a worker is given in one go travels in one packet, and the
//! supervisor collects results in batches (up to 32 packets with one
//! `recvmmsg`) rather than waking for each: a `map` of 20,000 tiny tasks
//! at chunk size 1 costs about one system call per task instead of seven or eight.
//! A worker starts a chunk only after it has sent the results of the one
//! before, so the first chunk without results is the one it was running,
//! and the chunks after it never started.
//!
//! After a fork, a read from a socket never reports that the process at
//! the other end died while some other process still holds a copy of its
//! end (servo/ipc-channel#281), so the supervisor waits with one `poll` on
//! every worker's socket *and* every worker's pidfd, a descriptor that
//! becomes readable when the process exits. When a worker exits, the
//! supervisor first reads whatever results it sent before dying, then
//! fails the chunk it was running with [`Error::WorkerDied`], gives the
//! chunks it had not read yet to other workers, reaps it (no zombie) and
//! forks a replacement. The other tasks go on. CPython's
//! `Pool` hangs for ever in this case (python/cpython#96062), and
//! `concurrent.futures.ProcessPoolExecutor` fails every pending task.
//!
//! A task that panics is caught inside the worker: that task's result is
//! [`Error::Panicked`] with the message, and the worker goes on with the
//! next task, as Python's worker catches an exception.
//!
//! # The fork-with-threads hazard, again
//!
//! The supervisor forks while your other threads run. A lock that another
//! thread holds at that instant is copied locked into the worker (see the
//! crate docs): a task that takes a `Mutex` of yours, held by another
//! thread when a worker was forked, hangs. Rust's stdout and stderr are
//! safe (the fork holds their locks). Python's `Pool` has the same hazard,
//! which is one reason Python 3.14 stopped forking by default.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::channel;
use crate::error::{Error, Result};
use crate::process::{self, ExitStatus, Process, panic_message};

/// Python's rule for `map`'s default chunk size: cut the input into about
/// four chunks per worker, so that each worker fetches a few large chunks
/// rather than one message per item, yet the work still spreads evenly.
///
/// ```python
/// chunksize, extra = divmod(len(iterable), len(self._pool) * 4)
/// if extra:
///     chunksize += 1
/// ```
///
/// ```
/// use mpcore::pool::default_chunksize;
///
/// assert_eq!(default_chunksize(10, 3), 1); // the tutorial's map(job, range(10))
/// assert_eq!(default_chunksize(100, 2), 13); // divmod(100, 8) == (12, 4)
/// assert_eq!(default_chunksize(0, 4), 0); // nothing to cut
/// ```
pub fn default_chunksize(len: usize, processes: usize) -> usize {
    let per = processes.max(1).saturating_mul(4);
    let (chunksize, extra) = (len / per, len % per);
    if extra > 0 { chunksize + 1 } else { chunksize }
}

/// Options for a new pool, Python's `Pool(processes, maxtasksperchild=...)`.
///
/// ```
/// let pool = mpcore::pool::Builder::new()
///     .processes(2)
///     .max_tasks_per_child(1)
///     .build()?;
/// assert_eq!(pool.processes(), 2);
/// # Ok::<(), mpcore::Error>(())
/// ```
#[derive(Debug, Default, Clone)]
pub struct Builder {
    processes: Option<usize>,
    max_tasks_per_child: Option<usize>,
}

impl Builder {
    /// One worker per CPU ([`cpu_count`](crate::cpu_count)), each living
    /// as long as the pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of worker processes (Python's `processes=`).
    pub fn processes(mut self, processes: usize) -> Self {
        self.processes = Some(processes);
        self
    }

    /// Replace a worker with a fresh one after it has run this many tasks
    /// (Python's `maxtasksperchild=`), e.g. to give back memory that a task
    /// leaks. As in Python, one chunk of a `map` counts as one task.
    pub fn max_tasks_per_child(mut self, tasks: usize) -> Self {
        self.max_tasks_per_child = Some(tasks);
        self
    }

    /// Starts the supervisor thread, which forks the workers; returns once
    /// they all run.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for zero processes or zero tasks per
    /// child (Python's `ValueError`), [`Error::Os`] when the thread or a
    /// worker cannot be started.
    pub fn build(self) -> Result<Pool> {
        let processes = self.processes.unwrap_or_else(crate::cpu_count);
        if processes == 0 {
            return Err(Error::InvalidArgument("a pool needs at least one process"));
        }
        if self.max_tasks_per_child == Some(0) {
            return Err(Error::InvalidArgument(
                "max_tasks_per_child must be at least 1",
            ));
        }
        let (wake_tx, wake_rx) = channel::pair()?;
        let wake = Arc::new(Wake {
            tx: wake_tx,
            rx: wake_rx,
            pending: AtomicBool::new(false),
        });
        let pids = Arc::new(Mutex::new(Vec::new()));
        let (commands, command_rx) = mpsc::channel();
        let (started_tx, started_rx) = mpsc::channel();
        let supervisor = Supervisor {
            size: processes,
            max_tasks: self.max_tasks_per_child,
            commands: command_rx,
            wake: Arc::clone(&wake),
            pids: Arc::clone(&pids),
            workers: Vec::new(),
            queue: VecDeque::new(),
            state: State::Running,
            forked: 0,
            retry_fork_at: None,
        };
        let handle = thread::Builder::new()
            .name("mpcore-pool".to_owned())
            .spawn(move || supervisor.run(started_tx))
            .map_err(|e| Error::os("pthread_create", errno_of(&e)))?;
        match started_rx.recv() {
            Ok(Ok(())) => Ok(Pool {
                processes,
                commands,
                wake,
                pids,
                closed: AtomicBool::new(false),
                answer_time: Arc::new(AtomicU64::new(0)),
                supervisor: Mutex::new(Some(handle)),
                owner: std::process::id(),
            }),
            Ok(Err(e)) => {
                let _ = handle.join();
                Err(e)
            }
            Err(_) => Err(supervisor_panicked(handle)),
        }
    }
}

/// A pool of worker processes that run tasks, Python's
/// `multiprocessing.Pool`.
///
/// The workers are forked once, when the pool is made, and reused for
/// every task; a worker that dies is replaced. All methods take `&self`
/// and the pool is `Sync`, so threads may share one pool: one thread may
/// [`terminate`](Self::terminate) while another waits in `map`.
///
/// # Dropping a pool
///
/// Dropping a pool terminates it, like leaving Python's
/// `with Pool() as pool:` block: the workers are killed and reaped, and
/// tasks that had not finished fail with [`Error::PoolTerminated`]. To let
/// them finish, call [`close`](Self::close) and [`join`](Self::join)
/// first. Either way no worker and no zombie is left behind.
///
/// # In a forked child
///
/// A pool belongs to the process that made it. A [`Process`] forked
/// later has a copy of the handle but not the pool's thread (fork copies
/// only the thread that calls it), so there every task fails with
/// [`Error::InvalidArgument`] and dropping the copy does nothing; the
/// workers stay the parent's. Make a pool in the child if it needs one.
///
/// # Not `Default`
///
/// Python's `Pool()` is [`Pool::with_cpu_count`] here. It is not
/// `Default::default()` because starting processes can fail, and
/// `default` could only panic then.
pub struct Pool {
    processes: usize,
    commands: mpsc::Sender<Command>,
    wake: Arc<Wake>,
    pids: Arc<Mutex<Vec<i32>>>,
    closed: AtomicBool,
    /// How long the last call waited for its first result, in ns (0:
    /// none yet): how long a caller may look for a result before it sleeps.
    answer_time: Arc<AtomicU64>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
    /// The process that made the pool. A forked child has a copy of this
    /// handle but not the supervisor thread (fork copies one thread only),
    /// so the handle must do nothing there.
    owner: u32,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("processes", &self.processes)
            .field("pids", &self.pids())
            .field("closed", &self.closed.load(Ordering::SeqCst))
            .finish()
    }
}

impl Pool {
    /// A pool of `processes` workers (Python's `Pool(processes=3)`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for zero, [`Error::Os`] when a worker
    /// cannot be forked.
    pub fn new(processes: usize) -> Result<Pool> {
        Builder::new().processes(processes).build()
    }

    /// A pool of one worker per CPU, [`cpu_count`](crate::cpu_count)
    /// (Python's `Pool()`).
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when a worker cannot be forked.
    pub fn with_cpu_count() -> Result<Pool> {
        Builder::new().build()
    }

    /// The number of workers the pool keeps running.
    pub fn processes(&self) -> usize {
        self.processes
    }

    /// The process ids of the workers running now. A worker that died or
    /// was retired ([`Builder::max_tasks_per_child`]) is replaced by one
    /// with a new pid. Empty once the pool has ended.
    pub fn pids(&self) -> Vec<i32> {
        self.pids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Applies `f` to every input in the workers and returns the results in
    /// input order (Python's `pool.map(f, iterable)`). The inputs are cut
    /// into chunks by Python's rule, [`default_chunksize`].
    ///
    /// ```
    /// fn job(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// let pool = mpcore::Pool::new(3)?;
    /// assert_eq!(pool.map(job, 0..10)?, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
    /// // A closure that captures nothing is a `fn` too.
    /// assert_eq!(pool.map(|s: String| s.len(), ["a", "bb"].map(String::from))?, [1, 2]);
    /// # Ok::<(), mpcore::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The first failed task's error, in input order: [`Error::Panicked`],
    /// [`Error::WorkerDied`] (every task of the chunk that the dead worker
    /// held fails), [`Error::PoolTerminated`]; [`Error::PoolClosed`] after
    /// [`close`](Self::close); [`Error::Codec`] when a value cannot be
    /// serialized.
    pub fn map<T, R>(&self, f: fn(T) -> R, inputs: impl IntoIterator<Item = T>) -> Result<Vec<R>>
    where
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let inputs: Vec<T> = inputs.into_iter().collect();
        let chunksize = default_chunksize(inputs.len(), self.processes);
        self.map_chunked(f, inputs, chunksize)
    }

    /// [`map`](Self::map) with a chunk size of your choice (Python's
    /// `chunksize=`): each worker fetches `chunksize` inputs at a time.
    /// Larger chunks cost fewer messages; smaller ones spread uneven work
    /// better. A chunk size of 0 is taken as 1.
    pub fn map_chunked<T, R>(
        &self,
        f: fn(T) -> R,
        inputs: impl IntoIterator<Item = T>,
        chunksize: usize,
    ) -> Result<Vec<R>>
    where
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let inputs: Vec<T> = inputs.into_iter().collect();
        let calls = inputs.len().div_ceil(chunksize.clamp(1, u32::MAX as usize));
        // `map` wants every result before it returns: wake this thread
        // once, when the last chunk is in, not once per chunk.
        let all = Arc::new(CallDone {
            left: AtomicUsize::new(calls),
            thread: thread::current(),
        });
        self.submit_with(f, inputs, chunksize, true, Some(all))?
            .collect_all()
    }

    /// Like [`map`](Self::map), but returns at once with an iterator that
    /// yields each result, in input order, as soon as it and those before
    /// it are done (Python's `pool.imap(f, iterable)`, chunk size 1). It
    /// yields exactly one item per input; a failed task yields its error
    /// and the others still come.
    ///
    /// ```
    /// let pool = mpcore::Pool::new(2)?;
    /// for (x, square) in (0..4u32).zip(pool.imap(|x: u32| x * x, 0..4)?) {
    ///     assert_eq!(square?, x * x);
    /// }
    /// # Ok::<(), mpcore::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::PoolClosed`] after [`close`](Self::close), [`Error::Codec`]
    /// when an input cannot be serialized. Failures of single tasks come
    /// through the iterator.
    pub fn imap<T, R>(&self, f: fn(T) -> R, inputs: impl IntoIterator<Item = T>) -> Result<Imap<R>>
    where
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.submit(f, inputs, 1, true)
    }

    /// Like [`imap`](Self::imap), but yields the results in the order they
    /// finish (Python's `pool.imap_unordered`).
    ///
    /// # Errors
    ///
    /// As [`imap`](Self::imap).
    pub fn imap_unordered<T, R>(
        &self,
        f: fn(T) -> R,
        inputs: impl IntoIterator<Item = T>,
    ) -> Result<Imap<R>>
    where
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.submit(f, inputs, 1, false)
    }

    /// Starts `f(arg)` in a worker and returns at once with a handle to its
    /// result (Python's `pool.apply_async(f, (arg,))`). For several
    /// arguments, take a tuple: `fn job((a, b): (u32, u32)) -> u32`.
    ///
    /// ```
    /// fn job(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// let pool = mpcore::Pool::new(2)?;
    /// let multi_res = (0..10)
    ///     .map(|i| pool.apply_async(job, i))
    ///     .collect::<Result<Vec<_>, _>>()?;
    /// let squares = multi_res
    ///     .into_iter()
    ///     .map(|res| res.get())
    ///     .collect::<Result<Vec<_>, _>>()?;
    /// assert_eq!(squares, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
    /// # Ok::<(), mpcore::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::PoolClosed`] after [`close`](Self::close), [`Error::Codec`]
    /// when `arg` cannot be serialized. The task's own failure comes from
    /// [`AsyncResult::get`].
    pub fn apply_async<T, R>(&self, f: fn(T) -> R, arg: T) -> Result<AsyncResult<R>>
    where
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let imap = self.submit(f, [arg], 1, true)?;
        Ok(AsyncResult {
            imap,
            outcome: None,
            taken: false,
        })
    }

    /// Runs `f(arg)` in a worker and waits for its result (Python's
    /// `pool.apply(f, (arg,))`).
    ///
    /// # Errors
    ///
    /// As [`apply_async`](Self::apply_async) and [`AsyncResult::get`].
    pub fn apply<T, R>(&self, f: fn(T) -> R, arg: T) -> Result<R>
    where
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.apply_async(f, arg)?.get()
    }

    /// Takes no new tasks from now on (Python's `pool.close()`); the tasks
    /// already given still run, and then the workers exit. Follow with
    /// [`join`](Self::join).
    pub fn close(&self) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            self.command(Command::Close);
        }
    }

    /// Waits until every task given has finished and every worker has
    /// exited and been reaped (Python's `pool.join()`). Closes the pool
    /// first if it is still open; Python raises `ValueError` then instead.
    ///
    /// # Errors
    ///
    /// [`Error::Panicked`] if the pool's own supervisor thread panicked (a
    /// bug in mpcore).
    pub fn join(&self) -> Result<()> {
        self.close();
        self.wait_for_supervisor()
    }

    /// Stops at once (Python's `pool.terminate()`): kills every worker with
    /// `SIGKILL`, reaps it, and fails every task that has not finished
    /// with [`Error::PoolTerminated`]. Returns when the workers are gone.
    /// Python sends `SIGTERM`; a task could catch or block that, and
    /// `terminate` must not hang.
    pub fn terminate(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.command(Command::Terminate);
        let _ = self.wait_for_supervisor();
    }

    /// Whether this is a copy of the pool in a forked child.
    fn in_child(&self) -> bool {
        std::process::id() != self.owner
    }

    fn command(&self, command: Command) {
        // Fails only when the supervisor has ended: then there is nothing
        // left to tell it.
        if !self.in_child() && self.commands.send(command).is_ok() {
            self.wake.notify();
        }
    }

    fn wait_for_supervisor(&self) -> Result<()> {
        if self.in_child() {
            // The supervisor thread is not in this process: there is
            // nothing to wait for, and joining it would wait for ever.
            return Ok(());
        }
        let handle = self
            .supervisor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match handle {
            Some(handle) => match handle.join() {
                Ok(()) => Ok(()),
                Err(payload) => Err(Error::Panicked {
                    pid: std::process::id() as i32,
                    message: format!(
                        "the pool's supervisor thread panicked: {}",
                        panic_message(&*payload)
                    ),
                }),
            },
            None => Ok(()),
        }
    }

    /// Encodes the inputs in chunks, hands them to the supervisor, and
    /// returns the iterator that will collect their results.
    fn submit<T, R>(
        &self,
        f: fn(T) -> R,
        inputs: impl IntoIterator<Item = T>,
        chunksize: usize,
        ordered: bool,
    ) -> Result<Imap<R>>
    where
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.submit_with(f, inputs, chunksize, ordered, None)
    }

    /// [`submit`](Self::submit); with `all`, the caller waits for every
    /// result at once and is woken (unparked) only when the last chunk is
    /// done. `all.left` must be the number of chunks.
    fn submit_with<T, R>(
        &self,
        f: fn(T) -> R,
        inputs: impl IntoIterator<Item = T>,
        chunksize: usize,
        ordered: bool,
        all: Option<Arc<CallDone>>,
    ) -> Result<Imap<R>>
    where
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        if self.in_child() {
            return Err(Error::InvalidArgument(
                "a pool belongs to the process that made it; a forked child cannot use it",
            ));
        }
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::PoolClosed);
        }
        let submitted = Instant::now();
        let chunksize = chunksize.clamp(1, u32::MAX as usize);
        let trampoline = fn_addr(run_chunk::<T, R> as Trampoline as *const ());
        let func = fn_addr(f as *const ());
        let (reply, done) = mpsc::channel();
        let speed = Arc::new(Speed::default());
        // Chunks go to the supervisor in batches as they are encoded, so
        // the workers start on the first ones while the rest are encoded.
        let mut pending = Vec::new();
        let mut pending_bytes = 0;
        let mut started = false;
        let mut counts = Vec::new();
        let mut inputs = inputs.into_iter().peekable();
        let mut args = Vec::new();
        while inputs.peek().is_some() {
            args.clear();
            let mut count = 0u32;
            for input in inputs.by_ref().take(chunksize) {
                channel::encode_into(&mut args, &input)?;
                count += 1;
            }
            let mut packet = channel::encode(&ToWorker::Run {
                trampoline,
                func,
                count,
            })?;
            packet.extend_from_slice(&args);
            pending_bytes += packet.len();
            pending.push(Chunk {
                index: counts.len(),
                count,
                packet,
                reply: reply.clone(),
                sent: None,
                speed: Arc::clone(&speed),
                all: all.clone(),
            });
            counts.push(count);
            if (!started && pending.len() >= self.processes) || pending_bytes >= SUBMIT_BYTES {
                self.command(Command::Submit(std::mem::take(&mut pending)));
                started = true;
                pending_bytes = 0;
            }
        }
        drop(reply);
        let total = counts.iter().map(|&c| c as usize).sum();
        if !pending.is_empty() {
            self.command(Command::Submit(pending));
        }
        Ok(Imap {
            done,
            answer_time: Arc::clone(&self.answer_time),
            submitted,
            timed: false,
            all,
            ordered,
            counts,
            received: Vec::new(),
            next_chunk: 0,
            waiting: BTreeMap::new(),
            ready: VecDeque::new(),
            remaining: total,
            _result: PhantomData,
        })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// The result of [`Pool::apply_async`], Python's `AsyncResult`.
pub struct AsyncResult<R> {
    imap: Imap<R>,
    outcome: Option<Result<R>>,
    taken: bool,
}

impl<R> fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResult")
            .field("arrived", &self.outcome.is_some())
            .field("taken", &self.taken)
            .finish()
    }
}

impl<R: DeserializeOwned> AsyncResult<R> {
    /// Waits as long as it takes for the task and returns its value, or its
    /// failure (Python's `res.get()`).
    ///
    /// When the pool answered its last call within 200 µs, `get` first
    /// looks for the result for up to twice that time after the call, and
    /// only then sleeps: for a quick task, falling asleep and being woken
    /// would cost about as much as the task's whole round trip.
    ///
    /// # Errors
    ///
    /// [`Error::Panicked`], [`Error::WorkerDied`], [`Error::PoolTerminated`],
    /// [`Error::AlreadyTaken`] after [`get_timeout`](Self::get_timeout)
    /// returned the result.
    pub fn get(mut self) -> Result<R> {
        self.fetch(None)?;
        self.take()
    }

    /// Like [`get`](Self::get), but returns [`Error::Timeout`] when the
    /// task has not finished after `timeout`; the handle stays usable, so
    /// a later call may still get the result (Python's
    /// `res.get(timeout=...)`, which raises `TimeoutError`).
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get), and [`Error::Timeout`].
    pub fn get_timeout(&mut self, timeout: Duration) -> Result<R> {
        match channel::deadline_after(timeout) {
            Some(deadline) => self.fetch(Some(deadline)).map_err(|e| match e {
                Error::Timeout(_) => Error::Timeout(timeout),
                other => other,
            })?,
            None => self.fetch(None)?,
        }
        self.take()
    }

    /// Whether the task has finished, with a value or an error (Python's
    /// `res.ready()`); never waits.
    pub fn ready(&mut self) -> bool {
        let _ = self.fetch(Some(Instant::now()));
        self.outcome.is_some() || self.taken
    }

    fn fetch(&mut self, deadline: Option<Instant>) -> Result<()> {
        if self.outcome.is_none() && !self.taken {
            self.outcome = self.imap.next_until(deadline)?;
        }
        Ok(())
    }

    fn take(&mut self) -> Result<R> {
        if self.taken {
            return Err(Error::AlreadyTaken);
        }
        self.taken = true;
        // `fetch` without a deadline leaves an outcome: the iterator yields
        // exactly one item per input.
        self.outcome.take().unwrap_or(Err(Error::PoolClosed))
    }
}

/// The results of [`Pool::imap`] or [`Pool::imap_unordered`], yielded as
/// they arrive: exactly one `Result` per input.
///
/// Dropping it early does not stop the tasks (as in Python): they run to
/// the end and their results are thrown away.
pub struct Imap<R> {
    done: mpsc::Receiver<ChunkDone>,
    /// The pool's [`Pool::answer_time`], read and written by every call.
    answer_time: Arc<AtomicU64>,
    /// When the call was made, and whether its first result has come.
    submitted: Instant,
    timed: bool,
    /// Set for `map`: park until every chunk is done instead of waking
    /// for each small one.
    all: Option<Arc<CallDone>>,
    ordered: bool,
    /// How many tasks each chunk holds, by chunk index.
    counts: Vec<u32>,
    /// Which chunks have come back, by chunk index.
    received: Vec<bool>,
    /// Ordered only: the chunk whose results are due next.
    next_chunk: usize,
    /// Ordered only: chunks that came back before their turn.
    waiting: BTreeMap<usize, VecDeque<Result<R>>>,
    ready: VecDeque<Result<R>>,
    remaining: usize,
    _result: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for Imap<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Imap")
            .field("ordered", &self.ordered)
            .field("remaining", &self.remaining)
            .finish()
    }
}

impl<R: DeserializeOwned> Imap<R> {
    /// The next result, waiting until `deadline` at most (`None`: for
    /// ever). `Ok(None)` when every result has been yielded.
    fn next_until(&mut self, deadline: Option<Instant>) -> Result<Option<Result<R>>> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                self.remaining -= 1;
                return Ok(Some(item));
            }
            if self.remaining == 0 {
                return Ok(None);
            }
            if self.ordered {
                if let Some(items) = self.waiting.remove(&self.next_chunk) {
                    self.ready = items;
                    self.next_chunk += 1;
                    continue;
                }
            }
            let arrived = self.recv_done(deadline)?;
            match arrived {
                Some(done) => {
                    let index = done.index;
                    let items = ChunkResults::new(done).collect();
                    self.file(index, items);
                }
                // The supervisor ended without sending these (it can only
                // happen if it panicked, or a task came in as it closed):
                // every missing task gets an error, so nothing waits.
                None => {
                    for index in 0..self.counts.len() {
                        if !self.received.get(index).copied().unwrap_or(false) {
                            let count = self.counts[index];
                            let items = (0..count).map(|_| Err(Error::PoolClosed)).collect();
                            self.file(index, items);
                        }
                    }
                }
            }
        }
    }

    /// The next chunk to come back, waiting until `deadline` at most
    /// (`None`: for ever, and with `all` set, until the last chunk is in).
    /// `Ok(None)`: the supervisor has ended and nothing more will come.
    fn recv_done(&mut self, deadline: Option<Instant>) -> Result<Option<ChunkDone>> {
        let done = self.wait_done(deadline);
        if !self.timed && matches!(done, Ok(Some(_))) {
            self.timed = true;
            let waited = self.submitted.elapsed().as_nanos();
            self.answer_time.store(
                waited.clamp(1, u128::from(u64::MAX)) as u64,
                Ordering::Relaxed,
            );
        }
        done
    }

    /// [`recv_done`](Self::recv_done), without the bookkeeping.
    fn wait_done(&mut self, deadline: Option<Instant>) -> Result<Option<ChunkDone>> {
        match (deadline, &self.all) {
            (None, Some(all)) => loop {
                match self.done.try_recv() {
                    Ok(done) => return Ok(Some(done)),
                    Err(mpsc::TryRecvError::Disconnected) => return Ok(None),
                    // Each chunk is in the channel before it counts as
                    // done: at zero, everything is there to take.
                    Err(mpsc::TryRecvError::Empty) => {
                        if all.left.load(Ordering::SeqCst) > 0 {
                            thread::park();
                        }
                    }
                }
            },
            (None, None) => {
                if let Some(done) = self.look_for_answer() {
                    return Ok(done);
                }
                Ok(self.done.recv().ok())
            }
            (Some(deadline), _) => {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.done.recv_timeout(left) {
                    Ok(done) => Ok(Some(done)),
                    Err(mpsc::RecvTimeoutError::Timeout) => Err(Error::Timeout(left)),
                    Err(mpsc::RecvTimeoutError::Disconnected) => Ok(None),
                }
            }
        }
    }

    /// When the pool's last call had its first result quickly (an
    /// `apply_async` round trip, say), this one's is likely as quick, and
    /// sleeping and being woken would cost about as much again: look for
    /// it until twice that time after the call, [`CALLER_LOOK_MAX`] at
    /// most. `None`: nothing came meanwhile.
    fn look_for_answer(&mut self) -> Option<Option<ChunkDone>> {
        let typical = Duration::from_nanos(self.answer_time.load(Ordering::Relaxed));
        if self.timed || typical.is_zero() || typical > CALLER_LOOK_MAX {
            return None;
        }
        let until = (self.submitted + typical * 2).min(Instant::now() + CALLER_LOOK_MAX);
        while Instant::now() < until {
            match self.done.try_recv() {
                Ok(done) => return Some(Some(done)),
                Err(mpsc::TryRecvError::Disconnected) => return Some(None),
                Err(mpsc::TryRecvError::Empty) => {
                    for _ in 0..64 {
                        std::hint::spin_loop();
                    }
                }
            }
        }
        None
    }

    /// What `map` returns: waits for every chunk, then decodes them in
    /// input order straight into one `Vec` of the right size, so that the
    /// first failure it meets is the first in input order. (Going through
    /// the iterator would move every result several times and grow the
    /// `Vec` by doubling.)
    fn collect_all(mut self) -> Result<Vec<R>> {
        let mut chunks: Vec<Option<ChunkDone>> = self.counts.iter().map(|_| None).collect();
        let mut missing = chunks.len();
        while missing > 0 {
            let Some(done) = self.recv_done(None)? else {
                break; // the supervisor is gone: the missing chunks fail below
            };
            let index = done.index;
            if chunks[index].replace(done).is_none() {
                missing -= 1;
            }
        }
        let mut values = Vec::with_capacity(self.remaining);
        for done in chunks {
            for result in ChunkResults::<R>::new(done.ok_or(Error::PoolClosed)?) {
                values.push(result?);
            }
        }
        Ok(values)
    }

    /// Puts a chunk's results where they are due.
    fn file(&mut self, index: usize, items: VecDeque<Result<R>>) {
        if self.received.len() < self.counts.len() {
            self.received.resize(self.counts.len(), false);
        }
        self.received[index] = true;
        if self.ordered {
            self.waiting.insert(index, items);
        } else {
            self.ready.extend(items);
        }
    }
}

impl<R: DeserializeOwned> Iterator for Imap<R> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        // Without a deadline only an item or the end comes back.
        self.next_until(None).unwrap_or_else(|e| Some(Err(e)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<R: DeserializeOwned> ExactSizeIterator for Imap<R> {}

// ---------------------------------------------------------------------------
// What travels between the pool and a worker.

/// Runs one chunk in a worker: the task's address, the encoded arguments
/// and their number in; the encoded [`Outcome`]s, one per argument, out.
type Trampoline = fn(func: u64, args: &[u8], count: u32) -> Vec<u8>;

/// The header of a packet to a worker. After `Run` come the encoded
/// arguments; the packet's length tells where they end.
#[derive(Debug, Serialize, Deserialize)]
enum ToWorker {
    /// Call the `fn(T) -> R` at `func` through the [`Trampoline`] at
    /// `trampoline` (instantiated for the same `T` and `R`) on each of the
    /// `count` arguments that follow. (The count is needed: a `()`
    /// argument takes no bytes at all.)
    Run {
        trampoline: u64,
        func: u64,
        count: u32,
    },
    /// Leave the loop and exit.
    Stop,
    /// Several chunks in one packet, so that one system call carries them
    /// all: `chunks` byte strings follow, each a whole `Run` packet. The
    /// worker runs them in order and answers each one before it starts
    /// the next, exactly as if they had come one by one.
    Batch { chunks: u32 },
}

/// One task's result, as a worker sends it.
#[derive(Serialize, Deserialize)]
enum Outcome<R> {
    Returned(R),
    Panicked(String),
    /// The argument could not be decoded in the worker.
    BadArgument(String),
    /// The result could not be encoded in the worker.
    BadResult(String),
}

/// The address of a function, as a number that can travel to a worker.
fn fn_addr(f: *const ()) -> u64 {
    f.expose_provenance() as u64
}

/// The pointer that [`fn_addr`] made a number of; still to be transmuted
/// to the right `fn` type by the caller, who knows it.
fn fn_ptr(addr: u64) -> *const () {
    std::ptr::with_exposed_provenance(addr as usize)
}

/// The trampoline for tasks `fn(T) -> R`: decodes each argument, calls the
/// task under `catch_unwind`, encodes each outcome. Runs in the worker.
fn run_chunk<T: DeserializeOwned, R: Serialize>(func: u64, args: &[u8], count: u32) -> Vec<u8> {
    // SAFETY: `func` was made by `fn_addr(f as *const ())` from an
    // `f: fn(T) -> R` in `Pool::submit`, in the same packet as the address
    // of this very instantiation `run_chunk::<T, R>`, so the type is
    // right. The address is valid here: this worker was forked from the
    // process that took it, and fork copies the whole address space, the
    // same executable image at the same place, and nothing execs.
    let task = unsafe { std::mem::transmute::<*const (), fn(T) -> R>(fn_ptr(func)) };
    let mut out = Vec::new();
    let mut rest = args;
    let mut bad_argument: Option<String> = None;
    for _ in 0..count {
        let outcome: Outcome<R> = match &bad_argument {
            Some(reason) => Outcome::BadArgument(reason.clone()),
            None => match postcard::take_from_bytes::<T>(rest) {
                Ok((arg, tail)) => {
                    rest = tail;
                    match panic::catch_unwind(AssertUnwindSafe(|| task(arg))) {
                        Ok(value) => Outcome::Returned(value),
                        Err(payload) => Outcome::Panicked(panic_message(&*payload)),
                    }
                }
                Err(e) => {
                    // The arguments after a bad one cannot be found either.
                    bad_argument = Some(e.to_string());
                    Outcome::BadArgument(e.to_string())
                }
            },
        };
        if let Err(Error::Codec { reason, .. }) = channel::encode_into(&mut out, &outcome) {
            let _ = channel::encode_into(&mut out, &Outcome::<()>::BadResult(reason));
        }
    }
    out
}

/// A worker's life: wait for a packet, run it, send the results back, until
/// `Stop` or until the pool is gone.
fn worker_loop(conn: OwnedFd) {
    let conn = conn.as_fd();
    // Only this worker reads its socket, so it may sleep in `recvmsg`.
    while let Ok(packet) = channel::recv_bytes(conn) {
        let keep_going = match postcard::take_from_bytes::<ToWorker>(&packet) {
            Ok((ToWorker::Batch { chunks }, mut rest)) => {
                (0..chunks).all(|_| match postcard::take_from_bytes::<&[u8]>(rest) {
                    Ok((chunk, tail)) => {
                        rest = tail;
                        run_packet(conn, chunk)
                    }
                    Err(_) => false,
                })
            }
            _ => run_packet(conn, &packet),
        };
        if !keep_going {
            return;
        }
    }
}

/// Runs one `Run` packet and sends its results; `false` when the worker
/// should exit (`Stop`, a packet it cannot read, or the pool gone).
fn run_packet(conn: BorrowedFd<'_>, packet: &[u8]) -> bool {
    let Ok((
        ToWorker::Run {
            trampoline,
            func,
            count,
        },
        args,
    )) = postcard::take_from_bytes::<ToWorker>(packet)
    else {
        return false;
    };
    // SAFETY: the pool wrote this address with
    // `fn_addr(run_chunk::<T, R> as Trampoline as *const ())`, so it is
    // a `Trampoline`. It is valid in this process: we are a fork of the
    // pool's process, with the same executable mapped at the same
    // addresses, and we never exec.
    let trampoline = unsafe { std::mem::transmute::<*const (), Trampoline>(fn_ptr(trampoline)) };
    let results = trampoline(func, args, count);
    // Sent before the next chunk starts: if this worker dies later, the
    // pool knows that this chunk is done and which one it was running.
    channel::send_bytes_to_many(conn, &results).is_ok()
}

/// Finishes every chunk of `chunks` with the same failure.
fn fail_all(chunks: Vec<Chunk>, why: Lost) {
    for chunk in chunks {
        chunk.finish(Err(why.clone()));
    }
}

/// One [`ToWorker::Batch`] packet holding the `Run` packets of `chunks`.
fn batch_packet(chunks: &[Chunk]) -> Result<Vec<u8>> {
    let header = ToWorker::Batch {
        chunks: chunks.len() as u32,
    };
    let mut packet = channel::encode(&header)?;
    for chunk in chunks {
        // A byte string: a LEB128 length, then the bytes.
        let mut len = chunk.packet.len();
        while len >= 0x80 {
            packet.push((len as u8) | 0x80);
            len >>= 7;
        }
        packet.push(len as u8);
        packet.extend_from_slice(&chunk.packet);
    }
    Ok(packet)
}

/// A chunk's reply, turned into one result per task as it is iterated.
struct ChunkResults<R> {
    /// How many results are still to come.
    left: u32,
    /// The worker's pid and its encoded outcomes, or why there are none.
    outcome: std::result::Result<(i32, Vec<u8>), Lost>,
    /// Where the next encoded outcome starts.
    at: usize,
    _result: PhantomData<fn() -> R>,
}

impl<R> ChunkResults<R> {
    fn new(done: ChunkDone) -> Self {
        ChunkResults {
            left: done.count,
            outcome: done.outcome,
            at: 0,
            _result: PhantomData,
        }
    }
}

impl<R: DeserializeOwned> Iterator for ChunkResults<R> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        self.left = self.left.checked_sub(1)?;
        let (pid, bytes) = match &self.outcome {
            Ok((pid, bytes)) => (*pid, bytes),
            Err(lost) => return Some(Err(lost.to_error())),
        };
        let rest = bytes.get(self.at..).unwrap_or_default();
        Some(match postcard::take_from_bytes::<Outcome<R>>(rest) {
            Ok((outcome, tail)) => {
                self.at = bytes.len() - tail.len();
                match outcome {
                    Outcome::Returned(value) => Ok(value),
                    Outcome::Panicked(message) => Err(Error::Panicked { pid, message }),
                    Outcome::BadArgument(reason) => Err(Error::Codec {
                        action: "decode",
                        reason,
                    }),
                    Outcome::BadResult(reason) => Err(Error::Codec {
                        action: "encode",
                        reason,
                    }),
                }
            }
            Err(e) => {
                // Nothing after a bad result can be found either.
                self.at = bytes.len();
                Err(Error::Codec {
                    action: "decode",
                    reason: e.to_string(),
                })
            }
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

// ---------------------------------------------------------------------------
// The supervisor thread.

/// What the pool's handle tells its supervisor.
enum Command {
    Submit(Vec<Chunk>),
    Close,
    Terminate,
}

/// Some tasks of one `map`/`imap`/`apply_async` call, in one packet.
struct Chunk {
    /// Its place among the chunks of its call.
    index: usize,
    /// How many tasks it holds.
    count: u32,
    /// `ToWorker::Run` followed by the encoded arguments.
    packet: Vec<u8>,
    reply: mpsc::Sender<ChunkDone>,
    /// When it was sent to a worker.
    sent: Option<Instant>,
    /// How fast the chunks of its call run, shared by them all.
    speed: Arc<Speed>,
    /// For `map`: counts the chunks of the call down, and wakes the
    /// caller at zero.
    all: Option<Arc<CallDone>>,
}

/// How long one chunk of a call takes, smoothed over its results so far;
/// 0 while unknown. Only the supervisor reads and writes it.
#[derive(Default)]
struct Speed {
    nanos: AtomicU64,
}

impl Speed {
    fn chunk_time(&self) -> Option<Duration> {
        match self.nanos.load(Ordering::Relaxed) {
            0 => None,
            n => Some(Duration::from_nanos(n)),
        }
    }

    fn record(&self, sample: Duration) {
        let sample = (sample.as_nanos() as u64).max(1);
        let smoothed = match self.nanos.load(Ordering::Relaxed) {
            0 => sample,
            old => (old * 3 + sample) / 4,
        };
        self.nanos.store(smoothed.max(1), Ordering::Relaxed);
    }
}

/// The chunks of a `map` call still to finish, and the thread that waits.
struct CallDone {
    left: AtomicUsize,
    thread: thread::Thread,
}

/// What the supervisor sends back for a chunk.
struct ChunkDone {
    index: usize,
    count: u32,
    /// The worker's pid and its encoded outcomes, or why there are none.
    outcome: std::result::Result<(i32, Vec<u8>), Lost>,
}

/// Why a chunk came back without results; one per chunk, turned into one
/// error per task.
#[derive(Debug, Clone)]
enum Lost {
    WorkerDied {
        pid: i32,
        status: Option<ExitStatus>,
    },
    Terminated,
    Closed,
    Os {
        call: &'static str,
        errno: Errno,
    },
}

impl Lost {
    /// `Lost::Os` for an OS error, the call's name otherwise.
    fn from_error(e: Error, call: &'static str) -> Lost {
        match e {
            Error::Os { call, errno } => Lost::Os { call, errno },
            _ => Lost::Os {
                call,
                errno: Errno::UnknownErrno,
            },
        }
    }

    fn to_error(&self) -> Error {
        match *self {
            Lost::WorkerDied { pid, status } => Error::WorkerDied { pid, status },
            Lost::Terminated => Error::PoolTerminated,
            Lost::Closed => Error::PoolClosed,
            Lost::Os { call, errno } => Error::os(call, errno),
        }
    }
}

impl Chunk {
    fn finish(self, outcome: std::result::Result<(i32, Vec<u8>), Lost>) {
        // The caller may have stopped listening (a dropped `Imap`): fine.
        let _ = self.reply.send(ChunkDone {
            index: self.index,
            count: self.count,
            outcome,
        });
        // `Drop` counts it done, after the send.
    }
}

impl Drop for Chunk {
    /// A chunk is done when it is finished, or dropped unfinished (the
    /// supervisor panicked): either way a `map` waiting for it must wake.
    fn drop(&mut self) {
        if let Some(all) = &self.all {
            // The last chunk wakes the caller; so does a large one, whose
            // results it may as well decode while the others still run.
            if all.left.fetch_sub(1, Ordering::SeqCst) == 1 || self.count >= WAKE_COUNT {
                all.thread.unpark();
            }
        }
    }
}

/// Wakes the supervisor from its `poll` when a command is sent: one packet
/// on a socket pair, sent only when none is pending, so a burst of
/// `apply_async` calls never fills the socket.
struct Wake {
    tx: OwnedFd,
    rx: OwnedFd,
    pending: AtomicBool,
}

impl Wake {
    fn notify(&self) {
        if !self.pending.swap(true, Ordering::SeqCst)
            && channel::send_bytes(self.tx.as_fd(), &[]).is_err()
        {
            self.pending.store(false, Ordering::SeqCst);
        }
    }

    /// Empties the socket and re-arms `notify`; the commands sent before
    /// this are then in the channel.
    fn drain(&self) {
        while let Ok(true) = channel::try_discard(self.rx.as_fd()) {}
        self.pending.store(false, Ordering::SeqCst);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Closed,
    Terminating,
}

/// One worker process, as the supervisor sees it.
struct Worker {
    process: Process<()>,
    /// The pool's end of the worker's own socket: tasks out, results in.
    conn: OwnedFd,
    /// The chunks sent to it and not yet answered, oldest first: the
    /// first is the one it runs, the others have not started (at most
    /// [`FAST_IN_FLIGHT`] in all).
    jobs: VecDeque<Chunk>,
    tasks_done: usize,
    /// `Stop` was sent: it takes no more tasks and is about to exit.
    stopping: bool,
    /// Its socket reported end of file or an error: nothing more to read.
    hung_up: bool,
    /// A send to it failed: it gets nothing more, but what it sent before
    /// is still read (its exit fails only the chunk it was running).
    unreachable: bool,
    /// Reaped; removed at the end of the round.
    dead: bool,
    /// When its last result came in.
    last_result: Instant,
}

impl Worker {
    fn pid(&self) -> i32 {
        self.process.pid()
    }

    /// It holds one chunk, sent a moment ago, of a call whose chunks are
    /// not known to take longer than [`ANSWER_LOOK`].
    fn may_answer_soon(&self) -> bool {
        match (&self.jobs.front(), self.jobs.len()) {
            (Some(chunk), 1) if !self.hung_up && !self.dead => {
                chunk.sent.is_some_and(|sent| sent.elapsed() < ANSWER_LOOK)
                    && chunk
                        .speed
                        .chunk_time()
                        .is_none_or(|time| time < ANSWER_LOOK)
            }
            _ => false,
        }
    }

    /// The chunk it runs belongs to a call whose chunks are known to be
    /// fast, and it holds more: worth collecting from in batches.
    fn batch_wait(&self) -> Option<Duration> {
        let time = self.jobs.front()?.speed.chunk_time()?;
        (time < FAST_CHUNK && self.jobs.len() >= 2 && !self.hung_up)
            .then(|| (time * (self.jobs.len() as u32 / 2)).clamp(BATCH_MIN, BATCH_MAX))
    }

    /// How many chunks it may hold, with `next` the chunk to give.
    fn depth(&self, next: &Chunk, max_tasks: Option<usize>) -> usize {
        let depth = match next.speed.chunk_time() {
            Some(time) if time < FAST_CHUNK => FAST_IN_FLIGHT,
            _ => 1,
        };
        match max_tasks {
            Some(max) => depth.min(max.saturating_sub(self.tasks_done)),
            None => depth,
        }
    }

    /// Takes the worker out of service: `Stop`, then it exits on its own.
    fn stop(&mut self) {
        if !self.stopping {
            self.stopping = true;
            let stop = channel::encode(&ToWorker::Stop).unwrap_or_default();
            if channel::send_bytes(self.conn.as_fd(), &stop).is_err() {
                self.hung_up = true;
            }
        }
    }
}

/// Which descriptor a poll slot watches.
#[derive(Clone, Copy)]
enum Slot {
    Wake,
    Conn(usize),
    Exit(usize),
}

/// How many chunks a worker may hold once the chunks of the call are known
/// to be fast (under [`FAST_CHUNK`] each); until then, and for slower
/// ones, it holds one at a time: enough that it never waits for the
/// supervisor, few enough that uneven chunks cannot pile up behind it for
/// more than a couple of milliseconds.
const FAST_IN_FLIGHT: usize = 64;
/// The chunks of a call that take less than this each are fed to the
/// workers [`FAST_IN_FLIGHT`] at a time, and their results collected in
/// batches.
const FAST_CHUNK: Duration = Duration::from_micros(100);
/// How long the supervisor lets a well-fed worker's results pile up, at
/// most and at least.
const BATCH_MAX: Duration = Duration::from_micros(400);
const BATCH_MIN: Duration = Duration::from_micros(20);
/// The most bytes of chunks a worker is sent in one packet: well under
/// the size that would go through a memfd.
const BATCH_BYTES: usize = 16 * 1024;
/// `submit` hands its chunks to the supervisor whenever this many bytes of
/// them are encoded (and as soon as there is one per worker).
const SUBMIT_BYTES: usize = 32 * 1024;
/// A `map` chunk of this many tasks or more wakes its caller when it is
/// done; smaller ones only at the end of the call.
const WAKE_COUNT: u32 = 64;
/// The longest a caller looks for a result before it sleeps
/// ([`Imap::look_for_answer`]).
const CALLER_LOOK_MAX: Duration = Duration::from_micros(200);
/// How long the supervisor looks for the answer to a chunk it has just
/// handed to an idle worker before it sleeps
/// ([`Supervisor::look_for_answers`]).
const ANSWER_LOOK: Duration = Duration::from_micros(50);
/// How long to wait before trying again to fork a worker after a failure.
const FORK_RETRY: Duration = Duration::from_millis(100);
/// How often to look at workers that have no pidfd (kernels before 5.3).
const NO_PIDFD_TICK: Duration = Duration::from_millis(20);

struct Supervisor {
    size: usize,
    max_tasks: Option<usize>,
    commands: mpsc::Receiver<Command>,
    wake: Arc<Wake>,
    pids: Arc<Mutex<Vec<i32>>>,
    workers: Vec<Worker>,
    queue: VecDeque<Chunk>,
    state: State,
    forked: usize,
    retry_fork_at: Option<Instant>,
}

impl Supervisor {
    fn run(mut self, started: mpsc::Sender<Result<()>>) {
        // Batched waits are tens of microseconds: ask the kernel not to
        // stretch them by its default 50 µs of timer slack.
        let _ = nix::sys::prctl::set_timerslack(1_000);
        for _ in 0..self.size {
            if let Err(e) = self.fork_worker() {
                let _ = started.send(Err(e));
                self.kill_all();
                return;
            }
        }
        let _ = started.send(Ok(()));
        drop(started);

        loop {
            self.take_commands();
            if self.state == State::Terminating {
                self.kill_all();
                self.fail_late_commands(Lost::Terminated);
                return;
            }
            self.keep_workers();
            self.dispatch();
            if self.state == State::Closed && self.queue.is_empty() {
                // Every task is done or running: let the idle workers go.
                for worker in self.workers.iter_mut().filter(|w| w.jobs.is_empty()) {
                    worker.stop();
                }
                if self.workers.is_empty() {
                    self.fail_late_commands(Lost::Closed);
                    return;
                }
            }
            if let Err(e) = self.wait_and_handle() {
                // poll itself failed: nothing can be watched any more, so
                // end the pool rather than spin or hang.
                log::error!("mpcore pool: {e}; terminating the pool");
                self.kill_all();
                self.fail_late_commands(Lost::Terminated);
                return;
            }
        }
    }

    fn take_commands(&mut self) {
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Submit(chunks) => self.queue.extend(chunks),
                Command::Close => {
                    if self.state == State::Running {
                        self.state = State::Closed;
                    }
                }
                Command::Terminate => self.state = State::Terminating,
            }
        }
    }

    /// Fails the tasks of commands that arrive after the end.
    fn fail_late_commands(&mut self, why: Lost) {
        self.take_commands();
        for chunk in self.queue.drain(..) {
            chunk.finish(Err(why.clone()));
        }
    }

    /// Forks replacements until `size` workers are in service, while
    /// there is work to do or may come.
    fn keep_workers(&mut self) {
        let wanted = if self.state == State::Running || !self.queue.is_empty() {
            self.size
        } else {
            0
        };
        if self.retry_fork_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        self.retry_fork_at = None;
        while self.in_service() < wanted {
            if let Err(e) = self.fork_worker() {
                log::warn!("mpcore pool: could not start a worker: {e}");
                self.retry_fork_at = Some(Instant::now() + FORK_RETRY);
                if self.in_service() == 0 {
                    // No worker to run the queue: fail it rather than let
                    // its callers wait for ever.
                    let why = Lost::from_error(e, "fork");
                    for chunk in self.queue.drain(..) {
                        chunk.finish(Err(why.clone()));
                    }
                }
                return;
            }
        }
    }

    fn in_service(&self) -> usize {
        self.workers
            .iter()
            .filter(|w| !w.stopping && !w.hung_up && !w.unreachable && !w.dead)
            .count()
    }

    fn fork_worker(&mut self) -> Result<()> {
        let (here, there) = channel::pair()?;
        self.forked += 1;
        // The closure owns the worker's end of the socket; `spawn` drops
        // this process's copy of it before returning, so the worker holds
        // the only one.
        let process = process::Builder::new()
            .name(format!("ForkPoolWorker-{}", self.forked))
            .daemon(true)
            .spawn(move || worker_loop(there))?;
        self.workers.push(Worker {
            process,
            conn: here,
            jobs: VecDeque::new(),
            last_result: Instant::now(),
            tasks_done: 0,
            stopping: false,
            hung_up: false,
            unreachable: false,
            dead: false,
        });
        self.publish_pids();
        Ok(())
    }

    fn publish_pids(&self) {
        let pids = self.workers.iter().filter(|w| !w.dead).map(Worker::pid);
        let mut shared = self.pids.lock().unwrap_or_else(PoisonError::into_inner);
        shared.clear();
        shared.extend(pids);
    }

    /// Hands out queued chunks: first one to every idle worker, then,
    /// when the chunks are known to be fast, more to the busy ones, round
    /// by round, up to [`FAST_IN_FLIGHT`], so that a worker that finishes
    /// a chunk finds the next one already in its socket instead of waiting
    /// for the supervisor to wake up and send it. Chunks of unknown or
    /// slow speed go one at a time to idle workers only, so that a slow
    /// chunk never holds up another that an idle worker could run. What a
    /// worker gets in one go travels in one packet ([`ToWorker::Batch`]).
    fn dispatch(&mut self) {
        let max_tasks = self.max_tasks;
        let mut batches: Vec<Vec<Chunk>> = self.workers.iter().map(|_| Vec::new()).collect();
        let mut batch_bytes = vec![0; self.workers.len()];
        'rounds: for round in 1..=FAST_IN_FLIGHT {
            let mut gave = false;
            for (i, worker) in self.workers.iter().enumerate() {
                let Some(next) = self.queue.front() else {
                    break 'rounds;
                };
                let held = worker.jobs.len() + batches[i].len();
                let full =
                    !batches[i].is_empty() && batch_bytes[i] + next.packet.len() > BATCH_BYTES;
                if held >= round.min(worker.depth(next, max_tasks))
                    || full
                    || worker.stopping
                    || worker.hung_up
                    || worker.unreachable
                    || worker.dead
                {
                    continue;
                }
                let chunk = self.queue.pop_front().expect("the queue is not empty");
                batch_bytes[i] += chunk.packet.len();
                batches[i].push(chunk);
                gave = true;
            }
            if !gave {
                break;
            }
        }
        for (i, batch) in batches.into_iter().enumerate() {
            if !batch.is_empty() {
                self.send_batch(i, batch);
            }
        }
    }

    /// Sends `batch` to worker `i` in one packet, or puts it back in the
    /// queue when the worker cannot take it now.
    fn send_batch(&mut self, i: usize, batch: Vec<Chunk>) {
        let worker = &mut self.workers[i];
        let joined;
        let packet = match &batch[..] {
            [chunk] => &chunk.packet,
            chunks => match batch_packet(chunks) {
                Ok(packet) => {
                    joined = packet;
                    &joined
                }
                Err(e) => return fail_all(batch, Lost::from_error(e, "encode")),
            },
        };
        // An idle worker is reading: a send to it may wait. A busy one may
        // itself be waiting to send us results, so a send to it must not
        // wait: with its socket full, it simply gets no more chunks now.
        let sent = if worker.jobs.is_empty() {
            channel::send_bytes(worker.conn.as_fd(), packet).map(|()| true)
        } else {
            channel::try_send_bytes(worker.conn.as_fd(), packet)
        };
        match sent {
            Ok(true) => {
                // Keep the packets: if the worker dies before it starts
                // them, another worker gets them.
                let now = Instant::now();
                for mut chunk in batch {
                    chunk.sent = Some(now);
                    worker.jobs.push_back(chunk);
                }
            }
            Ok(false) => self.requeue(batch),
            Err(Error::Disconnected) => {
                // Not delivered: the worker is gone or going. Its exit is
                // handled when its pidfd fires; the chunks never reached
                // it, so another worker may run them.
                worker.unreachable = true;
                self.requeue(batch);
            }
            // A failure on our side (no memfd for a large packet, say):
            // these chunks fail, the worker stays in service.
            Err(e) => fail_all(batch, Lost::from_error(e, "sendmsg")),
        }
    }

    /// Puts chunks back at the front of the queue, in their order.
    fn requeue(&mut self, chunks: Vec<Chunk>) {
        for chunk in chunks.into_iter().rev() {
            self.queue.push_front(chunk);
        }
    }

    /// One `poll` over the wake socket, every worker's socket and every
    /// worker's exit; then handles what it reported.
    fn wait_and_handle(&mut self) -> Result<()> {
        let answered = self.look_for_answers();
        let mut slots = vec![Slot::Wake];
        let mut fds = vec![self.wake.rx.as_fd()];
        let mut deadline = self.retry_fork_at;
        let mut batched = Vec::new();
        for (i, worker) in self.workers.iter().enumerate() {
            // A worker with fast chunks and more to run would wake us for
            // every result: leave its socket alone for a while and take
            // its results in one batch. Its exit still wakes us at once,
            // and every result is read before a dead worker's chunks fail.
            if let Some(wait) = worker.batch_wait() {
                batched.push(i);
                let at = Instant::now() + wait;
                deadline = Some(deadline.map_or(at, |d| d.min(at)));
            } else if !worker.hung_up {
                slots.push(Slot::Conn(i));
                fds.push(worker.conn.as_fd());
            }
            match worker.process.pidfd() {
                Some(pidfd) => {
                    slots.push(Slot::Exit(i));
                    fds.push(pidfd);
                }
                None => {
                    let tick = Instant::now() + NO_PIDFD_TICK;
                    deadline = Some(deadline.map_or(tick, |d| d.min(tick)));
                }
            }
        }
        // After an answer, only look at the rest (an exit, a command)
        // without sleeping.
        let readable = if answered {
            channel::ready_now(&fds)?
        } else {
            channel::wait_readable_any(&fds, deadline)?
        };
        drop(fds);

        for i in batched {
            self.read_results(i);
        }
        let mut exits = Vec::new();
        for (slot, ready) in slots.into_iter().zip(readable) {
            match (slot, ready) {
                (Slot::Wake, true) => self.wake.drain(),
                (Slot::Conn(i), true) => {
                    self.read_results(i);
                }
                (Slot::Exit(i), true) => exits.push(i),
                _ => {}
            }
        }
        // Without pidfds, look at every worker each tick.
        for (i, worker) in self.workers.iter().enumerate() {
            if worker.process.pidfd().is_none() {
                exits.push(i);
            }
        }
        for i in exits {
            self.reap_if_exited(i);
        }
        if self.workers.iter().any(|w| w.dead) {
            self.workers.retain(|w| !w.dead);
            self.publish_pids();
        }
        Ok(())
    }

    /// A chunk just handed to an idle worker, of a call whose chunks are
    /// quick or not timed yet (an `apply_async`, the first chunks of a
    /// `map`), is often answered within tens of microseconds, and sleeping
    /// in `poll` and being woken costs about as much again: look for the
    /// answer for up to [`ANSWER_LOOK`] first. Returns whether an answer
    /// (or a command) came meanwhile.
    fn look_for_answers(&mut self) -> bool {
        let waiting: Vec<usize> = (0..self.workers.len())
            .filter(|&i| self.workers[i].may_answer_soon())
            .collect();
        if waiting.is_empty() {
            return false;
        }
        let until = Instant::now() + ANSWER_LOOK;
        loop {
            for &i in &waiting {
                if self.read_results(i) > 0 {
                    return true;
                }
            }
            if self.wake.pending.load(Ordering::SeqCst) {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            for _ in 0..64 {
                std::hint::spin_loop();
            }
        }
    }

    /// Reads every result worker `i` has sent.
    fn read_results(&mut self, i: usize) -> u32 {
        let max_tasks = self.max_tasks;
        let worker = &mut self.workers[i];
        let since = match worker.jobs.front().and_then(|c| c.sent) {
            Some(sent) => sent.max(worker.last_result),
            None => worker.last_result,
        };
        let mut count = 0u32;
        let mut speed = None;
        let mut packets = Vec::new();
        while !worker.hung_up {
            let taken = channel::try_recv_many_bytes(worker.conn.as_fd(), &mut packets);
            for results in packets.drain(..) {
                count += 1;
                // A worker answers its chunks in the order it got them.
                if let Some(chunk) = worker.jobs.pop_front() {
                    speed = Some(Arc::clone(&chunk.speed));
                    chunk.finish(Ok((worker.pid(), results)));
                }
                worker.tasks_done += 1;
                if max_tasks.is_some_and(|max| worker.tasks_done >= max) {
                    worker.stop();
                }
            }
            match taken {
                // Fewer than a full batch: the socket is empty (or nearly:
                // a packet arriving now makes the next poll return).
                Ok(taken) if taken < channel::MANY_SLOTS => break,
                Ok(_) => {}
                // End of file: the worker is exiting; its pidfd will say so.
                Err(Error::Disconnected) => worker.hung_up = true,
                Err(e) => {
                    // Its socket is unusable, so is the worker: kill it, so
                    // that its exit fails the chunk it holds and a
                    // replacement takes its place.
                    log::warn!("mpcore pool: worker {}: {e}", worker.pid());
                    worker.hung_up = true;
                    let _ = worker.process.kill();
                }
            }
        }
        if count > 0 {
            // How long a chunk takes, averaged over this batch, smoothed.
            let now = Instant::now();
            if let Some(speed) = speed {
                speed.record(now.saturating_duration_since(since) / count);
            }
            worker.last_result = now;
        }
        count
    }

    /// If worker `i` has exited: collects what it sent before, fails the
    /// chunk it was running, puts the chunks it never started back at the
    /// front of the queue, and reaps it.
    fn reap_if_exited(&mut self, i: usize) {
        if self.workers[i].dead || self.workers[i].process.is_alive() {
            return;
        }
        self.read_results(i);
        let worker = &mut self.workers[i];
        worker.dead = true;
        // A worker starts its next chunk only after it has sent the
        // results of the one before, and those are all read by now: so the
        // first chunk left is the one it was running (or about to), and
        // the others never started. Only the first is lost.
        let running = worker.jobs.pop_front();
        while let Some(not_started) = worker.jobs.pop_back() {
            self.queue.push_front(not_started);
        }
        let worker = &mut self.workers[i];
        if let Some(chunk) = running {
            let (pid, status) = (worker.pid(), worker.process.exit_status());
            let error = Lost::WorkerDied { pid, status }.to_error();
            log::warn!("mpcore pool: {error}; starting a replacement");
            chunk.finish(Err(Lost::WorkerDied { pid, status }));
        }
    }

    /// Kills every worker, fails every task not finished, reaps them all.
    fn kill_all(&mut self) {
        // Signal all first, so they die together, then reap one by one.
        for worker in &self.workers {
            let _ = worker.process.kill();
        }
        for mut worker in self.workers.drain(..) {
            for chunk in worker.jobs.drain(..) {
                chunk.finish(Err(Lost::Terminated));
            }
            // A daemon `Process` kills (again, harmlessly) and reaps on drop.
            drop(worker);
        }
        for chunk in self.queue.drain(..) {
            chunk.finish(Err(Lost::Terminated));
        }
        self.publish_pids();
    }
}

fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(0))
}

fn supervisor_panicked(handle: JoinHandle<()>) -> Error {
    let message = match handle.join() {
        Err(payload) => panic_message(&*payload),
        Ok(()) => "it ended before starting the workers".to_owned(),
    };
    Error::Panicked {
        pid: std::process::id() as i32,
        message: format!("the pool's supervisor thread panicked: {message}"),
    }
}
