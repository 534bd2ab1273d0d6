//! A pool's initializer: once in each worker, before its tasks.
//! Every test runs under a deadline: a hang fails, it never blocks CI.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::thread;

use mpcore::Pool;
use mpcore::pool::Builder;
use testkit::within;

mod pool_tasks;
use pool_tasks::*;

/// Set by `init_worker` in each worker: how often it ran there, and with
/// what argument.
static INIT_RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static INIT_ARG: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn init_worker((base, _name): (u64, String)) {
    use std::sync::atomic::Ordering;
    INIT_RUNS.fetch_add(1, Ordering::SeqCst);
    INIT_ARG.store(base, Ordering::SeqCst);
}

/// The worker's pid, how often its initializer ran, and `x` plus its argument.
fn after_init(x: u64) -> (i32, u64, u64) {
    use std::sync::atomic::Ordering;
    let runs = INIT_RUNS.load(Ordering::SeqCst);
    (
        std::process::id() as i32,
        runs,
        x + INIT_ARG.load(Ordering::SeqCst),
    )
}

fn init_panics(_: ()) {
    panic!("no database today");
}

#[test]
fn the_initializer_runs_once_in_each_worker_before_its_tasks() {
    use std::sync::atomic::Ordering;
    within(LIMIT, || {
        let pool = Builder::new()
            .processes(2)
            .max_tasks_per_child(5)
            .initializer(init_worker, (1000, "db".to_owned()))
            .build()
            .unwrap();
        let results = pool.map_chunked(after_init, 0..40, 1).unwrap();
        let mut workers = BTreeSet::new();
        for (x, (pid, runs, value)) in results.into_iter().enumerate() {
            assert_eq!(runs, 1, "task {x} in worker {pid}");
            assert_eq!(value, 1000 + x as u64);
            workers.insert(pid);
        }
        // Five tasks a worker: the replacements ran it too, once each.
        assert!(workers.len() >= 8, "only {} workers", workers.len());
        // It ran in the workers, not here.
        assert_eq!(INIT_RUNS.load(Ordering::SeqCst), 0);
    });
}

#[test]
fn a_panicking_initializer_fails_every_task_and_does_not_hang() {
    within(LIMIT, || {
        let pool = Builder::new()
            .processes(2)
            .initializer(init_panics, ())
            .build()
            .unwrap();
        let workers = pool.pids();
        for result in pool.imap(square, 0..6).unwrap() {
            match result {
                Err(e) => assert_eq!(
                    e.panic_message(),
                    Some("the pool's initializer panicked in this worker: no database today")
                ),
                Ok(y) => panic!("a task ran: {y}"),
            }
        }
        // The workers stayed: no fork storm of replacements.
        assert_eq!(pool.pids(), workers);
        pool.close();
        pool.join().unwrap();
    });
}

/// The threads of the process this runs in, as the kernel counts them.
fn threads_here(_: ()) -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Threads:")).unwrap();
    line["Threads:".len()..].trim().parse().unwrap()
}

/// A worker is a fork of a process whose other threads may hold std's
/// internal locks at that instant: starting a thread takes one of them
/// (std's record of each thread's stack guard), and a worker that started
/// its own thread (as workers once did, to carry their name) waited on
/// that copy for ever, now and then. So a worker runs on the one thread
/// the fork copied, and starts none, even while the caller's threads come
/// and go.
#[test]
fn a_worker_is_one_thread_and_starts_none() {
    within(LIMIT, || {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let churner = thread::spawn({
            let stop = Arc::clone(&stop);
            move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    thread::spawn(|| ()).join().unwrap();
                }
            }
        });
        for _ in 0..20 {
            let pool = Pool::new(2).unwrap();
            assert_eq!(pool.map(threads_here, [(), (), ()]).unwrap(), [1, 1, 1]);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        churner.join().unwrap();
    });
}
