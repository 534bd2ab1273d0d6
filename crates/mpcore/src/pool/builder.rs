//! How a pool is made: [`Builder`], Python's `Pool(processes,
//! maxtasksperchild, initializer, initargs)`, and the rule for `map`'s
//! default chunk size.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Pool;
use super::supervisor::{State, Supervisor, Wake};
use super::worker::{SpawnWorker, spawner};
use crate::base::{Error, Result, StartMethod, get_start_method, panic_message};
use crate::os;
use crate::wire::channel;

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
    initializer: Option<Initializer>,
    start_method: Option<StartMethod>,
}

/// What a worker runs once when it starts, before its first task: the
/// `fn` and its argument, bound together ([`Builder::initializer`]), and,
/// when the argument can be serialized ([`Builder::initializer_fn`]), the
/// way to start a worker that is a fresh run of the program and runs it.
#[derive(Clone)]
pub(super) struct Initializer {
    run: Arc<dyn Fn() + Send + Sync>,
    spawn: Option<SpawnWorker>,
}

impl Initializer {
    pub(super) fn run(&self) {
        (self.run)();
    }
}

impl fmt::Debug for Initializer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Initializer")
    }
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

    /// How the workers start (Python's `mp.get_context(method).Pool()`),
    /// instead of the program's default
    /// ([`get_start_method`]). Under
    /// [`StartMethod::Spawn`] each worker, and each that replaces one, is a
    /// fresh run of the program: it inherits no thread, no lock and no
    /// memory of this process's; see below.
    ///
    /// ```
    /// use mpcore::StartMethod;
    ///
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// let pool = mpcore::pool::Builder::new()
    ///     .processes(2)
    ///     .start_method(StartMethod::Spawn)
    ///     .build()?;
    /// assert_eq!(pool.map(square, 0..5)?, [0, 1, 4, 9, 16]);
    /// # Ok::<(), mpcore::Error>(())
    /// ```
    ///
    /// # What each method gives a task
    ///
    /// [`Builder::start_method`] says how the workers start; without it, by the
    /// program's default ([`get_start_method`]: `Fork`
    /// unless [`set_start_method`](crate::set_start_method) said otherwise).
    ///
    /// | | [`StartMethod::Fork`] | [`StartMethod::Spawn`] |
    /// | --- | --- | --- |
    /// | A worker is | a copy of this process, forked by the pool's thread | a fresh run of the program, sent to the worker loop before `main` |
    /// | A task sees | this process's memory as it was at the fork | statics at their first values, and what the initializer set up |
    /// | Locks other threads held | copied held: a task that takes one hangs | none |
    /// | Starting a worker costs | a fork | an `exec` and the program's start-up: more, once per worker |
    /// | Initializer | [`Builder::initializer`] or [`Builder::initializer_fn`] | [`Builder::initializer_fn`] only |
    ///
    /// Either way a task is a plain `fn` of the program and its argument is
    /// sent with serde; once the workers run, a task costs the same. Under
    /// `Spawn` the `fn` must belong to the program itself (or to the library
    /// that holds mpcore), not to another shared library, whose address would
    /// mean nothing in a fresh run: a call with one fails with
    /// [`Error::InvalidArgument`]. A
    /// worker's start costs again when it is replaced (a death,
    /// [`Builder::max_tasks_per_child`]). Under `ForkServer`, a worker starts
    /// as a [`Process`](crate::Process) by that method does, under the rules
    /// of `Spawn`.
    ///
    /// A task's argument may not hold a [`Queue`](crate::Queue),
    /// [`Value`](crate::Value), [`Array`](crate::Array), [`Lock`](crate::Lock)
    /// or [`Event`](crate::Event), under any method (encoding it fails with
    /// [`Error::Codec`]): the argument of [`Builder::initializer_fn`] may,
    /// and every worker gets the same shared object, to keep in a `static`
    /// for its tasks, as Python passes a queue to its pool's initializer.
    ///
    /// ```
    /// use std::sync::OnceLock;
    /// use mpcore::{Lock, StartMethod, Value};
    ///
    /// static COUNTER: OnceLock<(Value<u32>, Lock)> = OnceLock::new();
    ///
    /// fn keep((count, lock): (Value<u32>, Lock)) {
    ///     let _ = COUNTER.set((count, lock));
    /// }
    ///
    /// fn tick(_: u32) {
    ///     let (count, lock) = COUNTER.get().expect("set by the initializer");
    ///     let _held = lock.acquire().unwrap();
    ///     count.set(count.get().unwrap() + 1).unwrap();
    /// }
    ///
    /// let (count, lock) = (Value::new(0u32)?, Lock::new()?);
    /// let pool = mpcore::pool::Builder::new()
    ///     .processes(2)
    ///     .start_method(StartMethod::Spawn)
    ///     .initializer_fn(keep, (count.clone(), lock))
    ///     .build()?;
    /// pool.map(tick, 0..50)?;
    /// assert_eq!(count.get()?, 50);
    /// # Ok::<(), mpcore::Error>(())
    /// ```
    ///
    ///
    /// # The fork-with-threads hazard
    ///
    /// The supervisor forks while your other threads run. A lock that another
    /// thread holds at that instant is copied locked into the worker (see the
    /// [crate docs](crate)): a task that takes a `Mutex` of yours, held by another
    /// thread when a worker was forked, hangs. Rust's stdout and stderr are
    /// safe (the fork holds their locks). Python's `Pool` has the same hazard,
    /// which is one reason Python 3.14 stopped forking by default. Workers
    /// started by [`StartMethod::Spawn`] inherit no lock at all.
    ///
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.start_method = Some(method);
        self
    }

    /// Runs `f(arg)` once in each worker when it starts, before its first
    /// task (Python's `initializer=f, initargs=(arg,)`), and in each worker
    /// that replaces one. For several arguments, take a tuple. What it sets
    /// up (a `static`, a thread-local, a connection) stays for every task
    /// the worker runs. For forked workers only: under another start
    /// method, use [`initializer_fn`](Self::initializer_fn).
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    ///
    /// static SCALE: AtomicU64 = AtomicU64::new(1);
    ///
    /// fn set_scale(scale: u64) {
    ///     SCALE.store(scale, Ordering::Relaxed);
    /// }
    ///
    /// fn scaled(x: u64) -> u64 {
    ///     x * SCALE.load(Ordering::Relaxed)
    /// }
    ///
    /// let pool = mpcore::pool::Builder::new()
    ///     .processes(2)
    ///     .initializer(set_scale, 10)
    ///     .build()?;
    /// assert_eq!(pool.map(scaled, [1, 2, 3])?, [10, 20, 30]);
    /// assert_eq!(SCALE.load(Ordering::Relaxed), 1); // set in the workers only
    /// # Ok::<(), mpcore::Error>(())
    /// ```
    ///
    /// The argument is not serialized: the worker is forked from this
    /// process, so it has its own copy of it, cloned for each worker.
    /// If `f` panics, that worker runs no task: every task it is given
    /// fails with [`Error::Panicked`], with the initializer's message.
    /// (Python's worker dies instead, and the pool starts another, which
    /// fails the same way, for ever.)
    pub fn initializer<A>(mut self, f: fn(A), arg: A) -> Self
    where
        A: Clone + Send + Sync + 'static,
    {
        self.initializer = Some(Initializer {
            run: Arc::new(move || f(arg.clone())),
            spawn: None,
        });
        self
    }

    /// [`initializer`](Self::initializer) for every start method: `arg`
    /// must be serde, because a worker that is a fresh run of the program
    /// ([`StartMethod::Spawn`]) receives it serialized. A
    /// [`Queue`](crate::Queue), [`Value`](crate::Value),
    /// [`Array`](crate::Array), [`Lock`](crate::Lock) or
    /// [`Event`](crate::Event) in `arg` travels as a descriptor, and is
    /// the same shared object in every worker: this is how tasks reach a
    /// queue or a lock, which a task's own argument cannot carry. A forked
    /// worker gets a clone of `arg`, as with `initializer`.
    ///
    /// ```
    /// use std::sync::OnceLock;
    /// use mpcore::{Queue, StartMethod};
    ///
    /// static RESULTS: OnceLock<Queue<u64>> = OnceLock::new();
    ///
    /// fn keep_queue(q: Queue<u64>) {
    ///     let _ = RESULTS.set(q);
    /// }
    ///
    /// fn job(x: u64) {
    ///     RESULTS.get().expect("set by the initializer").put(x * x).unwrap();
    /// }
    ///
    /// let q = Queue::new()?;
    /// let pool = mpcore::pool::Builder::new()
    ///     .processes(2)
    ///     .start_method(StartMethod::Spawn)
    ///     .initializer_fn(keep_queue, q.clone())
    ///     .build()?;
    /// pool.map(job, [3, 4])?;
    /// assert_eq!(q.get()? + q.get()?, 25);
    /// # Ok::<(), mpcore::Error>(())
    /// ```
    pub fn initializer_fn<A>(mut self, f: fn(A), arg: A) -> Self
    where
        A: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    {
        let spawn = spawner(Some((f, arg.clone())));
        self.initializer = Some(Initializer {
            run: Arc::new(move || f(arg.clone())),
            spawn: Some(spawn),
        });
        self
    }

    /// Starts the supervisor thread, which starts the workers; returns
    /// once they all run.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for zero processes or zero tasks per
    /// child (Python's `ValueError`), or for an
    /// [`initializer`](Self::initializer) under a start method other than
    /// `Fork` (use [`initializer_fn`](Self::initializer_fn));
    /// [`Error::Os`] when the thread or a worker cannot be started.
    pub fn build(self) -> Result<Pool> {
        let processes = self.processes.unwrap_or_else(os::cpu_count);
        if processes == 0 {
            return Err(Error::InvalidArgument("a pool needs at least one process"));
        }
        if self.max_tasks_per_child == Some(0) {
            return Err(Error::InvalidArgument(
                "max_tasks_per_child must be at least 1",
            ));
        }
        let start_method = self.start_method.unwrap_or_else(get_start_method);
        // Only a fork needs no way to start a worker from scratch.
        let spawner = match (start_method, &self.initializer) {
            (StartMethod::Fork, _) => None,
            (_, None) => Some(spawner::<()>(None)),
            (
                _,
                Some(Initializer {
                    spawn: Some(spawn), ..
                }),
            ) => Some(Arc::clone(spawn)),
            (_, Some(Initializer { spawn: None, .. })) => {
                return Err(Error::InvalidArgument(
                    "a pool's initializer() runs only in forked workers: under \
                     StartMethod::Spawn or ForkServer its argument must travel to a fresh run \
                     of the program, so use initializer_fn(f, arg) with a serde argument",
                ));
            }
        };
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
            initializer: self.initializer,
            start_method,
            spawner,
            alive: Arc::new(()),
            commands: command_rx,
            wake: Arc::clone(&wake),
            pids: Arc::clone(&pids),
            workers: Vec::new(),
            queue: VecDeque::new(),
            state: State::Running,
            forked: 0,
            retry_fork_at: None,
            fork_failing_since: None,
        };
        let alive = Arc::downgrade(&supervisor.alive);
        let handle = thread::Builder::new()
            // Not a worker's name: the workers name their own threads.
            .name("pool-supervisor".to_owned())
            .spawn(move || supervisor.run(started_tx))
            .map_err(|e| Error::io("pthread_create", e))?;
        match started_rx.recv() {
            Ok(Ok(())) => Ok(Pool {
                processes,
                start_method,
                commands,
                wake,
                pids,
                closed: Arc::new(AtomicBool::new(false)),
                terminated: Arc::new(AtomicBool::new(false)),
                alive,
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

fn supervisor_panicked(handle: JoinHandle<()>) -> Error {
    let message = match handle.join() {
        Err(payload) => panic_message(&*payload),
        Ok(()) => "it ended before starting the workers".to_owned(),
    };
    Error::SupervisorPanicked { message }
}
