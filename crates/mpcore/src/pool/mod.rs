//! `Pool`: Python's `multiprocessing.Pool`, by `fork` or by `spawn`.
//!
//! | Python | mpcore |
//! | --- | --- |
//! | `pool = mp.Pool()` | [`Pool::with_cpu_count`] |
//! | `pool = mp.Pool(processes=3)` | [`Pool::new`]`(3)` |
//! | `mp.Pool(3, maxtasksperchild=10)` | [`Builder::new`]`().processes(3).max_tasks_per_child(10).build()` |
//! | `mp.Pool(3, initializer=f, initargs=(x,))` | [`Builder::new`]`().processes(3).initializer(f, x).build()` |
//! | `mp.get_context("spawn").Pool(3)` | [`Builder::new`]`().processes(3).start_method(StartMethod::Spawn).build()` (see [`Builder::start_method`]) |
//! | `pool.map(job, range(10))` | [`Pool::map`]`(job, 0..10)` |
//! | `pool.map(job, xs, chunksize=4)` | [`Pool::map_chunked`]`(job, xs, 4)` |
//! | `pool.starmap(job, [(1, 2), (3, 4)])` | [`Pool::starmap`]`(job, [(1, 2), (3, 4)])` (a `fn` of 2 or 3 arguments, see [`StarFn`]) |
//! | `pool.map_async(job, xs)`, `pool.starmap_async(job, pairs)` | [`Pool::map_async`], [`Pool::starmap_async`]: an [`AsyncResult`] of a `Vec` |
//! | `pool.imap(job, xs)`, `pool.imap_unordered(job, xs)` | [`Pool::imap`], [`Pool::imap_unordered`] (they read `xs` lazily) |
//! | `pool.imap(job, xs, chunksize=4)`, and `imap_unordered` | [`Pool::imap_chunked`]`(job, xs, 4)`, [`Pool::imap_unordered_chunked`] |
//! | `res = pool.apply_async(job, (2,)); res.get()` | [`Pool::apply_async`]`(job, 2)?.get()` |
//! | `res.get(timeout=1)`, `res.ready()` | [`AsyncResult::get_timeout`], [`AsyncResult::ready`] |
//! | `res.wait()`, `res.wait(1)`, `res.successful()` | [`AsyncResult::wait`], [`AsyncResult::wait_timeout`], [`AsyncResult::successful`] |
//! | `callback=`, `concurrent.futures.as_completed(futures)` | [`Pool::as_completed`]: results in the order they finish, on your thread |
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
//! How the pool works, what a dead worker costs and how each start method
//! behaves is chapter 6 of the course (`docs/06-pool.md`); the rules a
//! caller needs are on each method, and on [`Builder::start_method`] and
//! [`Builder::initializer_fn`] for start methods.
//!
//! # Where each part lives
//!
//! - `mod.rs` (this file): the API, [`Pool`], and how `map` and
//!   `apply_async` make their calls;
//! - `link.rs`: how a call's inputs are cut into chunks and handed to the
//!   supervisor;
//! - `in_order.rs`: how a call's results are made in input order as its
//!   chunks come back;
//! - `builder.rs`: [`Builder`], how a pool is made, and Python's rule for
//!   `map`'s default chunk size;
//! - `async_result.rs`: [`AsyncResult`], what `apply_async` and
//!   `map_async` return, and `map_async`;
//! - `star.rs`: [`StarFn`], `starmap` and `starmap_async`;
//! - `completed.rs`: [`AsCompleted`], results in the order they finish;
//! - `imap.rs`: [`Imap`], which reads its inputs lazily as the results
//!   are taken;
//! - `supervisor.rs`: the supervisor thread, which starts, feeds, watches
//!   and replaces the workers;
//! - `wire.rs`: what travels between the pool and a worker, and how a
//!   task's function is found there;
//! - `worker.rs`: how a worker that is not forked starts, and the loop a
//!   worker runs;
//! - `chunk.rs`: the bookkeeping of the tasks in flight, and why a chunk
//!   can come back without results.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak, mpsc};
use std::thread::{self, JoinHandle};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::base::{Error, Result, StartMethod, panic_message};
use crate::start::task as spawn;
use crate::wire::codec;

mod async_result;
mod builder;
mod chunk;
mod completed;
mod imap;
mod in_order;
mod link;
mod results;
mod star;
mod supervisor;
mod wire;
mod worker;

pub use async_result::AsyncResult;
pub use builder::{Builder, default_chunksize};
pub use completed::AsCompleted;
pub use imap::Imap;
pub use star::StarFn;

use builder::Initializer;
use in_order::{InOrder, file_one};
use link::{Link, hand_over};

use chunk::{Call, CallDone, ChunkDone, Speed};
use results::Results;
use supervisor::{Command, Wake};
use wire::{ChunkEntry, fn_addr};
use worker::run_chunk;

/// A pool of worker processes that run tasks, Python's
/// `multiprocessing.Pool`.
///
/// The workers are started once, when the pool is made, and reused for
/// every task; a worker that dies is replaced. All methods take `&self`
/// and the pool is `Sync`, so threads may share one pool: one thread may
/// [`terminate`](Self::terminate) while another waits in `map`.
///
/// ```
/// use mpcore::Pool;
///
/// fn cube(x: u64) -> u64 {
///     x * x * x
/// }
///
/// let pool = Pool::new(2)?;
/// assert_eq!(pool.map(cube, 1..=4)?, [1, 8, 27, 64]);
/// assert_eq!(pool.apply_async(cube, 5)?.get()?, 125);
/// # Ok::<(), mpcore::Error>(())
/// ```
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
/// A pool belongs to the process that made it. A [`Process`](crate::Process) forked
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
    start_method: StartMethod,
    commands: mpsc::Sender<Command>,
    wake: Arc<Wake>,
    pids: Arc<Mutex<Vec<i32>>>,
    closed: Arc<AtomicBool>,
    terminated: Arc<AtomicBool>,
    /// Whether the supervisor thread still runs.
    alive: Weak<()>,
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
            .field("start_method", &self.start_method)
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

    /// How this pool's workers start ([`Builder::start_method`], or the
    /// program's default when the pool was made).
    pub fn start_method(&self) -> StartMethod {
        self.start_method
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
    /// # Several arguments: Python's `starmap`
    ///
    /// Python's `pool.starmap(f, [(1, 2), (3, 4)])` calls `f(1, 2)` and
    /// `f(3, 4)`: that is [`starmap`](Self::starmap) here, for a `fn` of
    /// two or three arguments. Here a task takes one argument, a tuple for
    /// several, so a closure that unpacks the tuple and calls your `fn`
    /// works too, for any number of arguments and with every method
    /// ([`imap`](Self::imap), [`apply_async`](Self::apply_async), ...):
    /// ```
    /// fn power(base: u64, exp: u32) -> u64 {
    ///     base.pow(exp)
    /// }
    ///
    /// let pool = mpcore::Pool::new(2)?;
    /// let pairs = [(2, 10), (3, 2), (10, 3)];
    /// assert_eq!(pool.map(|(b, e): (u64, u32)| power(b, e), pairs)?, [1024, 9, 1000]);
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
    ///
    /// An input that cannot be serialized fails the whole call with
    /// [`Error::Codec`], and then no task of it has run, not even for the
    /// inputs before it: every input is encoded before any task starts.
    /// Inputs of a primitive type or `String`, which cannot fail, are
    /// handed to the workers a chunk at a time instead, as they are
    /// encoded, so that the first tasks run while the rest is encoded.
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
        let link = self.link()?;
        let (mut call, done) = call(f, self.start_method)?;
        let mut results = Results::new(done, Arc::clone(&self.answer_time), true);
        let inputs: Vec<T> = inputs.into_iter().collect();
        let chunksize = chunksize.clamp(1, u32::MAX as usize);
        let count = inputs.len().div_ceil(chunksize);
        // `map` wants every result before it returns: wake this thread
        // once, when the last chunk is in, not once per chunk.
        let all = Arc::new(CallDone {
            left: AtomicUsize::new(count),
            thread: thread::current(),
        });
        call.all = Some(Arc::clone(&all));
        results.wait_for_all(all);
        let tasks = inputs.len();
        hand_over(&link, call, inputs, chunksize)?;
        results.collect_all(count, tasks)
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
        let link = self.link()?;
        let (call, done) = call(f, self.start_method)?;
        let results = Results::new(done, Arc::clone(&self.answer_time), true);
        let mut args = Vec::new();
        codec::encode_checked_into(&mut args, &arg)?;
        let chunk = call.chunk(0, 1, &args)?;
        // Dropped unsent when the supervisor has ended: then the channel
        // closes and `get` returns `TaskLost`.
        drop(call);
        let _ = link.submit(vec![chunk]);
        Ok(AsyncResult::new(
            results,
            InOrder::new(1, None, file_one::<R>),
        ))
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
    /// [`Error::SupervisorPanicked`] if the pool's own supervisor thread
    /// panicked (a bug in mpcore).
    pub fn join(&self) -> Result<()> {
        self.close();
        self.wait_for_supervisor()
    }

    /// Stops at once (Python's `pool.terminate()`): kills every worker with
    /// `SIGKILL`, reaps it, and fails every task that has not finished
    /// with [`Error::PoolTerminated`]. Returns when the workers are gone.
    /// Python sends `SIGTERM`; a task could catch or block that, and
    /// `terminate` must not hang.
    ///
    /// Nor does it wait for ever on a worker that the kill cannot reach:
    /// a forked worker after this process gave up the privileges the
    /// worker runs with (the fork server's workers are killed by their
    /// server, which may always). Such a worker's socket is closed, so it
    /// leaves as soon as it is idle; one busy with a task is waited for a
    /// few seconds, then left to a thread of mpcore's that reaps it when
    /// its task is done.
    pub fn terminate(&self) {
        self.terminated.store(true, Ordering::SeqCst);
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
                Err(payload) => Err(Error::SupervisorPanicked {
                    message: panic_message(&*payload),
                }),
            },
            None => Ok(()),
        }
    }

    /// What a call needs to hand chunks to the supervisor, once it is
    /// sure the pool takes them.
    fn link(&self) -> Result<Link> {
        if self.in_child() {
            return Err(Error::InvalidArgument(
                "a pool belongs to the process that made it; a forked child cannot use it",
            ));
        }
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::PoolClosed);
        }
        Ok(Link {
            commands: self.commands.clone(),
            wake: Arc::clone(&self.wake),
            closed: Arc::clone(&self.closed),
            terminated: Arc::clone(&self.terminated),
            alive: Weak::clone(&self.alive),
            processes: self.processes,
        })
    }
}

/// A new call of `f`: what its chunks share, and where their results come.
///
/// A worker that is a fresh run of the program finds `f` at the same
/// distance from mpcore's anchor as here, which holds only for a function
/// of the same image: checked once per call, and only then.
fn call<T, R>(f: fn(T) -> R, method: StartMethod) -> Result<(Call, mpsc::Receiver<ChunkDone>)>
where
    T: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    let (reply, done) = mpsc::channel();
    Ok((call_replying_to(f, method, reply)?, done))
}

/// [`call`], whose chunks send their results to `reply`: several calls
/// may share one channel ([`AsCompleted`]).
fn call_replying_to<T, R>(
    f: fn(T) -> R,
    method: StartMethod,
    reply: mpsc::Sender<ChunkDone>,
) -> Result<Call>
where
    T: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    let entry = run_chunk::<T, R> as ChunkEntry as *const ();
    let func = f as *const ();
    if method != StartMethod::Fork
        && !(spawn::in_anchor_image(func as usize) && spawn::in_anchor_image(entry as usize))
    {
        return Err(Error::InvalidArgument(
            "a pool task under StartMethod::Spawn or ForkServer must be a function of the \
             program itself (or of the library that holds mpcore), not one from another shared \
             library: its address would mean nothing in a spawned worker",
        ));
    }
    Ok(Call {
        entry: fn_addr(entry),
        func: fn_addr(func),
        reply,
        speed: Arc::new(Speed::default()),
        all: None,
    })
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// How many chunks per worker an [`Imap`] hands over ahead of the results
/// taken: few enough that an endless input costs bounded memory, enough
/// that a worker with fast tasks always finds the next chunk waiting (the
/// supervisor gives such a worker many chunks at once, and collects their
/// results in batches). With 4, an `imap` of 20,000 tiny tasks on two
/// workers took four times as long as with its whole input handed over
/// at once; with 16, about as long.
pub const LOOK_AHEAD: usize = 16;
