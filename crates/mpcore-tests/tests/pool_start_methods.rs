//! `Pool` under start methods other than fork: each worker, and each that
//! replaces one, is a fresh run of this test binary, which mpcore's
//! constructor sends to the worker loop before libtest's `main`.
//!
//! Every scenario is written once and runs as one test per method
//! (`scenario::spawn`, `scenario::forkserver`, and `scenario::fork` for
//! those that hold for every method; see `methods/mod.rs`). `Fork` alone
//! is covered by the `tests/pool_*.rs` files.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use mpcore::pool::Builder;
use mpcore::{Error, Event, ExitStatus, Lock, Pool, Queue, Signal, StartMethod, Value};
use nix::sys::signal::raise;
use testkit::{has_ended, within};

#[macro_use]
mod methods;
mod pool_tasks;
use pool_tasks::pool;

const LIMIT: Duration = Duration::from_secs(60);

/// Tests that hold the stdout lock, or that fork while other threads run,
/// take turns: a fork waits for the stdout lock (`Error::StreamLocked`
/// after a while), which would make the two disturb each other.
static TAKE_TURNS: Mutex<()> = Mutex::new(());

fn my_turn() -> MutexGuard<'static, ()> {
    TAKE_TURNS.lock().unwrap_or_else(PoisonError::into_inner)
}

fn assert_all_gone(pids: &BTreeSet<i32>) {
    for &pid in pids {
        assert!(
            testkit::wait_until_ended(pid, Duration::from_secs(10)),
            "worker {pid} still runs"
        );
    }
}

fn square(x: u64) -> u64 {
    x * x
}

/// Set by each test that reads it, in the test process only.
static MARK: AtomicU32 = AtomicU32::new(0);

fn mark(_: ()) -> (u32, u32) {
    (MARK.load(Ordering::SeqCst), std::process::id())
}

under_spawn_and_forkserver! {
    fn map_apply_and_imap_run_in_fresh_workers(method) {
        within(LIMIT, move || {
            MARK.store(7, Ordering::SeqCst);
            let pool = pool(method, 2);
            assert_eq!(pool.start_method(), method);
            assert_eq!(
                pool.map(square, 0..10).unwrap(),
                [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]
            );
            assert_eq!(pool.apply(square, 12).unwrap(), 144);
            assert_eq!(pool.apply_async(square, 2).unwrap().get().unwrap(), 4);
            let asyncs: Vec<_> = (0..10)
                .map(|i| pool.apply_async(square, i).unwrap())
                .collect();
            let got: Vec<u64> = asyncs.into_iter().map(|r| r.get().unwrap()).collect();
            assert_eq!(got, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
            let ordered: Vec<u64> = pool
                .imap(square, 0..20)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert_eq!(ordered, (0..20).map(|x| x * x).collect::<Vec<_>>());
            let mut unordered: Vec<u64> = pool
                .imap_unordered(square, 0..20)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            unordered.sort_unstable();
            assert_eq!(unordered, ordered);

            // Not a copy of this process: the worker never saw the mark.
            let (seen, pid) = pool.apply(mark, ()).unwrap();
            assert_eq!(seen, 0, "a {method} worker inherits no memory");
            assert_ne!(pid, std::process::id());
            assert!(pool.pids().contains(&(pid as i32)));

            let pids: BTreeSet<i32> = pool.pids().into_iter().collect();
            pool.close();
            pool.join().unwrap();
            assert!(pool.pids().is_empty());
            assert_all_gone(&pids);
        });
    }
}

fn panics_on_3(x: u32) -> u32 {
    if x == 3 {
        panic!("task {x} failed");
    }
    x
}

under_spawn_and_forkserver! {
    fn a_panic_is_named_after_the_worker_on_stderr(method) {
        let out = testkit::run(
            env!("CARGO_BIN_EXE_mpcore-test-helper"),
            &["pool-panic", &method.to_string()],
            LIMIT,
        );
        out.assert_success();
        assert_eq!(out.stdout, "task 4 failed on purpose\n");
        let worker = match method {
            StartMethod::Fork => "ForkPoolWorker",
            StartMethod::Spawn => "SpawnPoolWorker",
            StartMethod::ForkServer => "ForkServerPoolWorker",
        };
        assert!(
            out.stderr.contains(&format!("thread '{worker}-1' (")),
            "{}",
            out.stderr
        );
    }
}

under_spawn_and_forkserver! {
    fn a_panicking_task_fails_alone(method) {
        within(LIMIT, move || {
            let pool = pool(method, 2);
            let pids = pool.pids();
            let results: Vec<_> = pool.imap(panics_on_3, 0..6).unwrap().collect();
            for (x, result) in results.into_iter().enumerate() {
                match result {
                    Err(Error::Panicked { message, .. }) => {
                        assert_eq!(x, 3);
                        assert_eq!(message, "task 3 failed");
                    }
                    other => assert_eq!(other.unwrap(), x as u32),
                }
            }
            assert_eq!(pool.apply(square, 5).unwrap(), 25);
            assert_eq!(pool.pids(), pids, "a panic kills no worker");
        });
    }
}

/// Kills its own worker with SIGKILL in the middle of task 3.
fn killed_on_3(x: u32) -> u32 {
    if x == 3 {
        raise(nix::sys::signal::Signal::SIGKILL).expect("raise");
        std::thread::sleep(Duration::from_secs(60));
    }
    x
}

under_spawn_and_forkserver! {
    fn a_killed_worker_fails_its_task_only_and_is_replaced(method) {
        within(LIMIT, move || {
            let pool = pool(method, 2);
            let mut seen: BTreeSet<i32> = pool.pids().into_iter().collect();
            let results: Vec<_> = pool.imap(killed_on_3, 0..8).unwrap().collect();
            for (x, result) in results.iter().enumerate() {
                if x == 3 {
                    let err = result.as_ref().unwrap_err();
                    let Error::WorkerDied { pid, status } = err else {
                        panic!("task 3: {err:?}")
                    };
                    assert!(seen.contains(pid), "a worker of this pool died");
                    assert_eq!(*status, Some(ExitStatus::Signal(Signal::SIGKILL)));
                } else {
                    assert_eq!(*result.as_ref().unwrap() as usize, x);
                }
            }
            let err = pool.apply_async(killed_on_3, 3).unwrap().get().unwrap_err();
            assert!(err.is_worker_died(), "{err:?}");
            assert_eq!(pool.apply(square, 12).unwrap(), 144);
            assert_eq!(pool.pids().len(), 2, "back to full strength");
            seen.extend(pool.pids());
            assert!(seen.len() >= 4, "each death started a replacement");
            pool.close();
            pool.join().unwrap();
            assert_all_gone(&seen);
        });
    }
}

fn square_with_pid(x: u64) -> (i32, u64) {
    (std::process::id() as i32, x * x)
}

under_spawn_and_forkserver! {
    fn max_tasks_per_child_replaces_workers(method) {
        within(LIMIT, move || {
            let pool = Builder::new()
                .processes(1)
                .max_tasks_per_child(2)
                .start_method(method)
                .build()
                .unwrap();
            let first = pool.pids();
            let ran: Vec<(i32, u64)> = pool.map_chunked(square_with_pid, 0..6, 1).unwrap();
            assert_eq!(
                ran.iter().map(|&(_, y)| y).collect::<Vec<_>>(),
                [0, 1, 4, 9, 16, 25]
            );
            let pids: Vec<i32> = ran.iter().map(|&(pid, _)| pid).collect();
            assert!(
                pids.chunks(2).all(|c| c[0] == c[1]),
                "two tasks per worker: {pids:?}"
            );
            let distinct: BTreeSet<i32> = pids.iter().copied().collect();
            assert_eq!(distinct.len(), 3, "{pids:?}");
            assert!(distinct.contains(&first[0]));
            pool.close();
            pool.join().unwrap();
            assert_all_gone(&distinct);
        });
    }
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

under_spawn_and_forkserver! {
    fn terminate_and_drop_reap_every_worker(method) {
        within(LIMIT, move || {
            let pool = pool(method, 2);
            let pids: BTreeSet<i32> = pool.pids().into_iter().collect();
            let running = pool.apply_async(sleep_ms, 30_000).unwrap();
            pool.terminate();
            assert!(matches!(running.get(), Err(Error::PoolTerminated)));
            assert!(pool.pids().is_empty());
            assert_all_gone(&pids);

            let pool = pool_for_drop(method);
            let pids: BTreeSet<i32> = pool.pids().into_iter().collect();
            drop(pool);
            assert_all_gone(&pids);
        });
    }
}

fn pool_for_drop(method: StartMethod) -> Pool {
    let pool = pool(method, 2);
    assert_eq!(pool.apply(square, 3).unwrap(), 9);
    pool
}

under_every_method! {
    fn a_pool_worker_dies_with_its_killed_parent(method) {
        let name = method.to_string();
        let (ended, worker) = testkit::child_dies_with_killed_parent(
            env!("CARGO_BIN_EXE_mpcore-test-helper"),
            &["pool-orphan", &name],
        );
        assert!(
            ended,
            "the {name} pool's worker {worker} outlived its killed parent: an orphan"
        );
    }
}

/// The queue the workers' tasks put their results in, set by the
/// initializer in each worker (Python's idiom: a global set by the
/// pool's initializer).
static RESULTS: OnceLock<Queue<u64>> = OnceLock::new();

fn keep_queue(q: Queue<u64>) {
    let _ = RESULTS.set(q);
}

/// Seed 001's job, putting its result in the queue.
fn job(n: u64) {
    let res: u64 = (0..n).map(|i| i + i.pow(2) + i.pow(3)).sum();
    RESULTS
        .get()
        .expect("the initializer ran")
        .put(res)
        .unwrap();
}

fn job_with_queue((q, n): (Queue<u64>, u64)) {
    q.put(n).unwrap();
}

under_every_method! {
    fn a_queue_reaches_the_workers_through_initializer_fn_not_a_task_argument(method) {
    // initializer_fn is for every method: Fork too.
        within(LIMIT, move || {
            let _turn = my_turn();
            let q = Queue::new().unwrap();
            let pool = Builder::new()
                .processes(2)
                .start_method(method)
                .initializer_fn(keep_queue, q.clone())
                .build()
                .unwrap();
            pool.map(job, [1000, 1000]).unwrap();
            assert_eq!(q.get().unwrap() + q.get().unwrap(), 499_667_166_000);

            // A task's own argument carries no handle, under any method.
            let err = pool
                .apply_async(job_with_queue, (q.clone(), 1))
                .unwrap_err();
            assert!(matches!(err, Error::Codec { .. }), "{err:?}");
            assert!(
                err.to_string().contains(
                    "to give it to a pool's workers, pass it to pool::Builder::initializer_fn"
                ),
                "{err}"
            );
            assert!(q.empty());
        });
    }
}

static COUNTER: OnceLock<(Value<u32>, Lock)> = OnceLock::new();

fn keep_counter(shared: (Value<u32>, Lock)) {
    let _ = COUNTER.set(shared);
}

/// Adds one, in two steps that only the lock keeps whole.
fn count(_: u32) {
    let (value, lock) = COUNTER.get().expect("the initializer ran");
    let _held = lock.acquire().unwrap();
    let now = value.get().unwrap();
    std::thread::yield_now();
    value.set(now + 1).unwrap();
}

under_spawn_and_forkserver! {
    fn workers_count_in_a_value_under_a_lock(method) {
        within(LIMIT, move || {
            let value = Value::new(0u32).unwrap();
            let lock = Lock::new().unwrap();
            let pool = Builder::new()
                .processes(3)
                .start_method(method)
                .initializer_fn(keep_counter, (value.clone(), lock.clone()))
                .build()
                .unwrap();
            pool.map_chunked(count, 0..300, 1).unwrap();
            assert_eq!(value.get().unwrap(), 300);
        });
    }
}

static GO: OnceLock<Event> = OnceLock::new();

fn keep_event(e: Event) {
    let _ = GO.set(e);
}

/// Waits for the event; whether it came.
fn wait_for_go(_: ()) -> bool {
    GO.get()
        .expect("the initializer ran")
        .wait_timeout(Duration::from_secs(20))
        .is_ok()
}

under_spawn_and_forkserver! {
    fn workers_wait_on_an_event_the_parent_sets(method) {
        within(LIMIT, move || {
            let go = Event::new().unwrap();
            let pool = Builder::new()
                .processes(2)
                .start_method(method)
                .initializer_fn(keep_event, go.clone())
                .build()
                .unwrap();
            let mut waiting = pool.apply_async(wait_for_go, ()).unwrap();
            assert!(matches!(
                waiting.get_timeout(Duration::from_millis(200)),
                Err(Error::Timeout(_))
            ));
            go.set();
            assert!(waiting.get().unwrap());
        });
    }
}

fn set_nothing(_: u8) {}

under_spawn_and_forkserver! {
    fn a_closure_initializer_needs_fork_and_says_what_to_use(method) {
        let err = Builder::new()
            .processes(1)
            .start_method(method)
            .initializer(set_nothing, 1)
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        assert!(
            err.to_string().contains("use initializer_fn(f, arg)"),
            "{err}"
        );
    }
}

/// A lock of the program's own that a task takes: each worker that is a
/// fresh run has its own, unlocked, whoever holds this process's copy.
static STATE: Mutex<u64> = Mutex::new(0);

fn add_to_state(x: u64) -> u64 {
    let mut state = STATE.lock().unwrap_or_else(PoisonError::into_inner);
    *state += x;
    *state
}

/// A "logger" that keeps its lines behind a static lock, as many do.
mod logger {
    use std::sync::{Mutex, PoisonError};

    pub static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

    pub fn log(line: String) {
        LINES
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    }
}

fn logs(x: u64) -> u64 {
    logger::log(format!("task {x}"));
    x
}

fn prints(x: u64) -> u64 {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "pool_start_methods: a worker prints {x}");
    x
}

under_spawn_and_forkserver! {
    fn locks_held_by_another_thread_do_not_reach_fresh_workers(method) {
        within(LIMIT, move || {
            // This thread holds all three while the pool's thread starts
            // workers, and while they run the tasks that take them.
            let _turn = my_turn();
            let state = STATE.lock().unwrap_or_else(PoisonError::into_inner);
            let lines = logger::LINES.lock().unwrap_or_else(PoisonError::into_inner);
            let stdout = std::io::stdout().lock();

            let pool = pool(method, 1);
            assert_eq!(pool.apply(add_to_state, 5).unwrap(), 5);
            assert_eq!(pool.apply(logs, 6).unwrap(), 6);
            assert_eq!(pool.apply(prints, 7).unwrap(), 7);
            // A replacement starts while they are still held.
            let victim = pool.pids()[0];
            assert!(pool.apply(killed_on_3, 3).unwrap_err().is_worker_died());
            assert_eq!(pool.apply(add_to_state, 1).unwrap(), 1);
            assert_eq!(pool.apply(logs, 8).unwrap(), 8);
            assert_ne!(pool.pids(), [victim]);

            assert_eq!(*state, 0, "the tasks changed their own copies");
            assert!(lines.is_empty());
            drop((state, lines, stdout));
        });
    }
}

#[test]
fn under_fork_a_lock_held_at_the_fork_hangs_the_task_that_takes_it() {
    within(LIMIT, || {
        let _turn = my_turn();
        // Held by this thread while the pool's thread forks the worker:
        // the worker's copy is locked for ever, though this one is
        // released right after.
        let state = STATE.lock().unwrap_or_else(PoisonError::into_inner);
        let pool = pool(StartMethod::Fork, 1);
        drop(state);
        let mut hung = pool.apply_async(add_to_state, 1).unwrap();
        assert!(matches!(
            hung.get_timeout(Duration::from_millis(500)),
            Err(Error::Timeout(_))
        ));
        let pids: BTreeSet<i32> = pool.pids().into_iter().collect();
        assert!(pids.iter().all(|&pid| !has_ended(pid)), "it waits, alive");
        pool.terminate();
        assert!(matches!(hung.get(), Err(Error::PoolTerminated)));
        assert_all_gone(&pids);
    });
}
