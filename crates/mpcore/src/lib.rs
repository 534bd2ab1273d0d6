//! Python's `multiprocessing` vocabulary for Rust, on `fork`.
//!
//! | Python | mpcore |
//! | --- | --- |
//! | `p = mp.Process(target=f, args=(1, 2)); p.start()` | `let mut p = Process::spawn(move \|\| f(1, 2))?;` |
//! | `p.join()` | `let value = p.join()?;` (the closure's return value) |
//! | `p.pid`, `p.is_alive()`, `p.exitcode` | [`Process::pid`], [`Process::is_alive`], [`Process::exitcode`] |
//! | `p.terminate()`, `p.kill()` | [`Process::terminate`], [`Process::kill`] |
//! | `mp.cpu_count()` | [`cpu_count()`] |
//! | `q = mp.Queue(); q.put(x); q.get()` | [`Queue::new`], [`Queue::put`], [`Queue::get`] |
//! | `q.get(timeout=1)`, `q.get_nowait()` | [`Queue::get_timeout`], [`Queue::try_get`] |
//! | `mp.Queue(maxsize=n)`, `q.put_nowait(x)`, `q.put(x, timeout=1)` | [`Queue::bounded`], [`Queue::try_put`], [`Queue::put_timeout`] |
//! | `q.qsize()`, `q.empty()`, `q.full()` | [`Queue::qsize`], [`Queue::empty`], [`Queue::full`] |
//! | `q.put(b"...")` of bytes, `q.get()` | [`Queue::put_bytes`], [`Queue::get_bytes`] (bytes as bytes, not byte by byte through serde) |
//! | `mp.Value('i', 0)`, `v.value`, `v.value = x` | [`Value::new`]`(0i32)`, [`Value::get`], [`Value::set`] |
//! | `mp.Array('i', [1, 2, 3, 4])`, `a[i]`, `a[i] = x` | [`Array::new`]`(&[1i32, 2, 3, 4])`, [`Array::get`], [`Array::set`] |
//! | `with v.get_lock(): v.value += 1` | `*v.lock()? += 1;` ([`Value::lock`]) |
//! | `l = mp.Lock()`, `with l:`, `l.acquire(timeout=1)` | [`Lock::new`], [`Lock::acquire`] (a guard), [`Lock::acquire_timeout`] |
//! | `e = mp.Event()`, `e.set()`, `e.wait(1)` | [`Event::new`], [`Event::set`], [`Event::wait_timeout`] |
//! | `pool = mp.Pool(3)`, `pool.map(job, range(10))` | [`Pool::new`]`(3)`, [`Pool::map`]`(job, 0..10)` (more in [`pool`]) |
//! | `SharedMemory(name="x", create=True, size=n)`, `SharedMemory(name="x")` | [`SharedMemory::create`]`("x", n)`, [`SharedMemory::open`]`("x")` (a second program, not a child) |
//! | `pool.apply_async(job, (2,)).get()` | [`Pool::apply_async`]`(job, 2)?.get()` |
//! | `b = mp.Barrier(3)`, `i = b.wait()`, `b.wait(timeout=1)` | [`Barrier::new`]`(3)`, [`Barrier::wait`] (a [`BarrierWaitResult`]), [`Barrier::wait_timeout`] |
//! | `b.abort()`, `b.reset()`, `b.broken`, `b.n_waiting`, `BrokenBarrierError` | [`Barrier::abort`], [`Barrier::reset`], [`Barrier::is_broken`], [`Barrier::n_waiting`], [`Error::BrokenBarrier`] |
//! | `q = mp.JoinableQueue(); q.task_done(); q.join()` | [`JoinableQueue::new`], [`JoinableQueue::task_done`], [`JoinableQueue::join`], [`JoinableQueue::join_timeout`] |
//! | `pool.starmap(job, pairs)`, `pool.map_async(job, xs).get()`, `as_completed(futures)` | [`Pool::starmap`]`(job, pairs)`, [`Pool::map_async`]`(job, xs)?.get()`, [`Pool::as_completed`] |
//! | `mp.set_start_method("spawn")`, `("forkserver")` | [`set_start_method`]`(StartMethod::Spawn)?`, `(StartMethod::ForkServer)?` |
//! | `mp.get_context("spawn").Process(target=f, args=(x,))` | `process::Builder::new().start_method(StartMethod::Spawn).spawn_fn(f, x)?` |
//! | `a, b = mp.Pipe()`, `mp.Pipe(duplex=False)` | [`Pipe::new`]`::<S, R>()?`, [`Pipe::one_way`]`::<T>()?` |
//! | `c.send(x)`, `c.recv()`, `c.poll(1)`, `c.send_bytes(b)`, `c.recv_bytes()` | [`Connection::send`]`(&x)`, [`Connection::recv`], [`Connection::poll`], [`Connection::send_bytes`], [`Connection::recv_bytes`] |
//! | `EOFError` from `c.recv()` | [`Error::Disconnected`] (and from `send`, never `SIGPIPE`) |
//! | `Listener(address, authkey=k)`, `l.accept()` | [`connection::Listener::bind_with_authkey`]`(name, k)?`, [`connection::Listener::accept`] |
//! | `Client(address, authkey=k)` | [`connection::Client::connect_with_authkey`]`(name, k)?` |
//! | `multiprocessing.connection.wait(objects, timeout)` | [`connection::wait`]`(&objects, timeout)?` (indices of the ready ones) |
//! | `mp.current_process().name`, `mp.parent_process()` | [`current_process()`]`.name()` (and `.start_method()`), [`parent_process()`] |
//! | `mp.active_children()` | [`active_children()`] (reaps the finished ones, as Python's does) |
//! | `p.interrupt()` (3.14), `os.kill(p.pid, sig)` | [`Process::interrupt`], [`Process::send_signal`] |
//! | `p.sentinel`, `connection.wait([p.sentinel, ...])` | [`Process::sentinel`] (`Process` is `AsFd`): `poll`, mio or tokio |
//! | `mp.get_all_start_methods()` | [`get_all_start_methods()`] |
//! | (no Python) await a child from async code | `p.join_async().await?` (feature `tokio`) |
//! | `rl = mp.RLock()`, `with rl:` (again, in the same thread) | [`RLock::new`], [`RLock::acquire`] (a guard; the outermost one releases) |
//! | `sem = mp.Semaphore(2)`, `with sem:`, `sem.release()` | [`Semaphore::new`]`(2)`, [`Semaphore::acquire`] (a [`Permit`]), [`Semaphore::release`] |
//! | `mp.BoundedSemaphore(2)` | [`Semaphore::bounded`]`(2)` (over-release: [`Error::ReleasedTooManyTimes`]) |
//! | `c = mp.Condition()`, `with c: c.wait_for(pred)`, `c.notify()` | [`Condition::new`], `c.acquire()?.wait_for(pred)?`, [`ConditionGuard::notify`]`(1)` |
//! | `m = mp.Manager()`, `d = m.dict()`, `d[k] = v`, `d.get(k)` | [`Manager::new`], [`Manager::dict`]`::<K, V>()`, [`Dict::insert`], [`Dict::get`] |
//! | `l = m.list([1, 2])`, `l.append(x)`, `l.reverse()`, `ns = m.Namespace()` | [`Manager::list`]`([1, 2])`, [`List::push`], [`List::reverse`], [`Manager::namespace`]`(value)` |
//! | `d[k] += 1` from many processes (loses updates) | [`Dict::update_with`]`(&k, \|n\| Some(n.unwrap_or(0) + 1))` (atomic, in the manager) |
//!
//! ```
//! use mpcore::{Process, Queue};
//!
//! fn job(q: Queue<u64>) {
//!     let res: u64 = (0..1000u64).map(|i| i + i.pow(2) + i.pow(3)).sum();
//!     q.put(res).unwrap();
//! }
//!
//! let q = Queue::new()?;
//! let (q1, q2) = (q.clone(), q.clone());
//! let mut p1 = Process::spawn(move || job(q1))?;
//! let mut p2 = Process::spawn(move || job(q2))?;
//! p1.join()?;
//! p2.join()?;
//! assert_eq!(q.get()? + q.get()?, 499_667_166_000);
//! # Ok::<(), mpcore::Error>(())
//! ```
//!
//! # How a child runs
//!
//! [`Process::spawn`] forks, as Python does on Linux by default before 3.14.
//! The child is a copy of the parent at that instant; it runs the closure
//! under `catch_unwind`, sends back the value (or the panic message) with
//! serde, flushes stdout, and leaves with `_exit`, so it never
//! returns into the parent's code and never runs the parent's destructors.
//! It asks the kernel for `PR_SET_PDEATHSIG` so that it dies with its
//! parent. That signal fires when the *thread* that forked exits, not only
//! the process, so a `spawn` from any thread but the main one is forked
//! by a thread of mpcore's that lives as long as the process: a child
//! started by a short-lived thread (a thread pool's worker, a scoped
//! thread) runs on after that thread ends, and dies with the process.
//!
//! [`StartMethod::Spawn`] starts the child as a fresh `exec` of the same
//! program instead ([`process::Builder::spawn_fn`]): it runs a plain `fn`
//! with a serde argument, and inherits no threads, no locks and no memory
//! of the parent's. mpcore's own constructor sends it to its task before
//! `main` runs, so the program needs no set-up. A [`Queue`], [`Value`],
//! [`Array`], [`Lock`], [`Event`], [`RLock`], [`Semaphore`], [`Condition`],
//! [`Barrier`] or [`JoinableQueue`] in the argument travels as a descriptor.
//! [`StartMethod::ForkServer`] sends the same `fn` and argument to a
//! single-threaded server, a fresh `exec` of the program started once, on
//! first use; it forks the child, which is as clean as a spawned one and
//! starts as fast as a fork.
//!
//! # The fork-with-threads hazard
//!
//! `fork` copies the whole memory but only the calling thread. A lock that
//! another thread held at that instant is copied locked, and no thread in
//! the child will ever release it. When other threads exist, `spawn`
//! holds Rust's stdout and stderr locks across the fork (and glibc guards
//! malloc), so `println!` and a logger that writes to stderr are safe in
//! a child even while other threads print.
//! A `Mutex` of your own that another thread holds during `spawn` is not:
//! the child hangs on it. Neither is a lock inside std that mpcore cannot
//! reach: if another thread is in the middle of printing a panic message
//! at the instant of the fork, a child that then panics waits for ever on
//! std's panic-output lock. Where that can happen, join with
//! [`Process::join_timeout`], or start such a child with
//! [`StartMethod::Spawn`] or [`StartMethod::ForkServer`], which have none
//! of those locks to inherit.
//! Python 3.12 warns about forking a process that has threads, and Python
//! 3.14 no longer forks by default on Linux.
//! [`Queue`] is safe to use from threads and children at once: its lock
//! lives in the shared memory itself, so a holder in another thread of
//! the parent releases it for the child too.
//!
//! # The source, by level
//!
//! Each folder of `src/` opens with a map of itself, and imports only
//! from the levels below it:
//!
//! 1. `base/`: the error type and the plain values it names (an exit
//!    status, a signal, a start method), and a panic as a message;
//! 2. `os/`: one kernel mechanism a file: futex, deadlines, the robust
//!    mutex, memfd mappings, pidfds, poll, descriptors over a socket;
//! 3. `wire/`: packets on a socket pair, the codec, and the handles that
//!    travel to a spawned child as descriptors;
//! 4. `start/`: a child's life after the fork, a task sent to a fresh
//!    run of the program, the hook before `main`, the fork server;
//! 5. one room per public type: `lock.rs`, `event.rs`, `barrier.rs`,
//!    `shared/`, `queue/`, `named/`, `process/`, `connection/`; `sync/`
//!    (RLock, Semaphore, Condition) above `lock.rs`, and `pool/` and
//!    `manager/` above `process/`.
#![deny(missing_docs)]
// The examples in these docs are what a user copies: no unsafe code in them.
#![doc(test(attr(forbid(unsafe_code))))]

mod base;
mod os;
mod wire;

mod start;

mod barrier;
pub mod connection;
mod event;
mod lock;
mod manager;
mod named;
pub mod pool;
pub mod process;
mod queue;
mod shared;
mod sync;

pub use base::{
    Errno, Error, ExitStatus, Result, Signal, StartMethod, get_all_start_methods, get_start_method,
    set_start_method,
};

// The README's example is compiled and run with the other doc tests, so
// that what a crates.io reader sees first keeps working.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;
pub use barrier::{Barrier, BarrierWaitResult};
pub use connection::{Connection, Pipe};
pub use event::Event;
pub use lock::{Lock, LockGuard};
pub use manager::{Dict, List, Manager, Namespace};
pub use named::{SharedMemory, SharedMemoryGuard};
pub use pool::{AsCompleted, AsyncResult, Pool, StarFn};
pub use process::Process;
pub use process::{ParentProcess, ProcessInfo, active_children, current_process, parent_process};
pub use queue::{JoinableQueue, Queue};
pub use shared::{Array, ArrayGuard, Value, ValueGuard};
pub use sync::{Condition, ConditionGuard, Permit, RLock, RLockGuard, Semaphore};

/// The number of CPUs this process may run on: the cores in its affinity
/// mask, further limited by a cgroup CPU quota when there is one.
///
/// That is the right number of workers to start, which is what the
/// tutorials use `mp.cpu_count()` for. Python's `cpu_count()` counts every
/// logical CPU of the machine instead, even those `taskset` or a container
/// keeps this process off. Python 3.13's `os.process_cpu_count()` honours
/// the affinity mask but not a cgroup quota. A fractional quota (1.5 CPUs)
/// is rounded up here (num_cpus), where `std::thread::available_parallelism`
/// rounds it down.
///
/// ```
/// assert!(mpcore::cpu_count() >= 1);
/// ```
pub fn cpu_count() -> usize {
    os::cpu_count()
}
