//! Pool: results in order, failures confined to their task, nothing left
//! behind. Every test runs under a deadline: a hang fails, it never blocks CI.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mpcore::pool::{Builder, default_chunksize};
use mpcore::{Error, ExitStatus, Pool};
use nix::sys::signal::{Signal, kill, raise};
use nix::unistd::Pid;
use testkit::{proc_state, within};

const LIMIT: Duration = Duration::from_secs(120);

fn square(x: u64) -> u64 {
    x * x
}

/// The worker's pid and the square: shows who ran what.
fn square_with_pid(x: u64) -> (i32, u64) {
    (std::process::id() as i32, x * x)
}

fn sleep_ms(ms: u64) -> u64 {
    thread::sleep(Duration::from_millis(ms));
    ms
}

/// Waits until the file `path` exists (the test creates it when it wants
/// the task to finish), then returns `path`. Gating tasks on files keeps the
/// tests free of guesses about how fast this machine is.
fn wait_for_file(path: String) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::path::Path::new(&path).exists() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(2));
    }
    path
}

/// Creates the file `path` (so the test knows the task has started), then
/// sleeps far longer than any test waits.
fn announce_then_sleep(path: String) -> u64 {
    std::fs::write(&path, b"started").expect("write the marker");
    thread::sleep(Duration::from_secs(60));
    0
}

/// A fresh path in the temp dir, unique to this test process and call.
fn marker(name: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("mpcore-pool-{}-{name}-{n}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path.to_string_lossy().into_owned()
}

fn touch(path: &str) {
    std::fs::write(path, b"go").expect("create the marker");
}

fn wait_until_exists(path: &str) {
    while !std::path::Path::new(path).exists() {
        thread::sleep(Duration::from_millis(2));
    }
}

fn panics_on_3(x: u32) -> u32 {
    if x == 3 {
        panic!("task {x} failed");
    }
    x
}

/// Kills its own worker with SIGKILL in the middle of task 3.
fn killed_on_3(x: u32) -> u32 {
    if x == 3 {
        raise(Signal::SIGKILL).expect("raise");
        thread::sleep(Duration::from_secs(60));
    }
    x
}

fn exits_with_3(_: ()) -> u32 {
    std::process::exit(3)
}

/// The test process's pid, so that a value can tell whether it is in a
/// worker.
static TEST_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn in_a_worker() -> bool {
    std::process::id() != TEST_PID.load(std::sync::atomic::Ordering::SeqCst)
}

/// An argument whose `Deserialize` panics in a worker. (The caller reads
/// every argument back too, before it sends it; a panic there, in the test
/// process, would be printed under std's panic-output lock, which a worker
/// forked by another test at that instant would inherit held.)
#[derive(Debug, serde::Serialize)]
struct PanicsWhenDeserialized;

impl<'de> serde::Deserialize<'de> for PanicsWhenDeserialized {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if in_a_worker() {
            panic!("this argument refuses to be deserialized")
        }
        <()>::deserialize(d).map(|()| PanicsWhenDeserialized)
    }
}

/// A result whose `Serialize` panics (only workers encode results).
#[derive(Debug, serde::Deserialize)]
struct PanicsWhenSerialized;

impl serde::Serialize for PanicsWhenSerialized {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        panic!("this result refuses to be serialized")
    }
}

/// A value whose `Drop` panics in a worker, and only there.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct PanicsWhenDroppedInAWorker;

impl Drop for PanicsWhenDroppedInAWorker {
    fn drop(&mut self) {
        if in_a_worker() {
            panic!("this value refuses to be dropped in a worker");
        }
    }
}

fn takes_unreadable(_: PanicsWhenDeserialized) -> u32 {
    0
}

fn gives_unserializable(_: u32) -> PanicsWhenSerialized {
    PanicsWhenSerialized
}

fn gives_undroppable(_: u32) -> PanicsWhenDroppedInAWorker {
    PanicsWhenDroppedInAWorker
}

fn panics_with_an_undroppable_payload(_: u32) -> u32 {
    std::panic::panic_any(PanicsWhenDroppedInAWorker)
}

/// Fails unless every pid is gone from /proc: not running, not a zombie.
fn assert_all_gone(pids: &BTreeSet<i32>) {
    for &pid in pids {
        assert_eq!(proc_state(pid), None, "worker {pid} is still in /proc");
    }
}

#[test]
fn map_returns_results_in_input_order() {
    within(LIMIT, || {
        let pool = Pool::new(3).unwrap();
        assert_eq!(pool.processes(), 3);
        assert_eq!(
            pool.map(square, 0..10).unwrap(),
            [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]
        );
        let expected: Vec<u64> = (0..10_000).map(square).collect();
        assert_eq!(pool.map(square, 0..10_000).unwrap(), expected);
        assert_eq!(pool.map_chunked(square, 0..10_000, 7).unwrap(), expected);
        assert_eq!(pool.map_chunked(square, 0..100, 0).unwrap().len(), 100);
        assert_eq!(pool.map(square, Vec::new()).unwrap(), Vec::<u64>::new());
        let words = ["fork", "copies", "memory"].map(String::from);
        assert_eq!(
            pool.map(|s: String| s.to_uppercase(), words).unwrap(),
            ["FORK", "COPIES", "MEMORY"]
        );
        // Several arguments travel as a tuple; `()` travels as nothing.
        assert_eq!(
            pool.map(|(a, b): (u32, u32)| a * b, [(2, 3), (4, 5)])
                .unwrap(),
            [6, 20]
        );
        assert_eq!(pool.map(|(): ()| 7u8, [(), (), ()]).unwrap(), [7, 7, 7]);
    });
}

#[test]
fn python_chunk_size_rule() {
    // chunksize, extra = divmod(len, 4 * processes); if extra: chunksize += 1
    assert_eq!(default_chunksize(10, 3), 1);
    assert_eq!(default_chunksize(10, 2), 2);
    assert_eq!(default_chunksize(8, 2), 1);
    assert_eq!(default_chunksize(100, 2), 13);
    assert_eq!(default_chunksize(96, 2), 12);
    assert_eq!(default_chunksize(0, 2), 0);
    assert_eq!(default_chunksize(1, 8), 1);
}

#[test]
fn large_arguments_and_results_come_back_whole() {
    within(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        // Over the socket's inline limit, so they travel as memfds.
        let inputs: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; 300_000]).collect();
        let sums = pool
            .map(
                |v: Vec<u8>| v.iter().map(|&b| u64::from(b)).sum::<u64>(),
                inputs,
            )
            .unwrap();
        assert_eq!(sums, (0..6).map(|i| i * 300_000).collect::<Vec<u64>>());
        let big = pool.apply(|n: usize| vec![7u32; n], 1 << 20).unwrap();
        assert_eq!(big.len(), 1 << 20);
        assert!(big.iter().all(|&x| x == 7));
    });
}

#[test]
fn workers_are_reused_not_forked_per_task() {
    within(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        let workers: BTreeSet<i32> = pool.pids().into_iter().collect();
        assert_eq!(workers.len(), 2);
        let ran_on: BTreeSet<i32> = pool
            .map_chunked(square_with_pid, 0..200, 1)
            .unwrap()
            .into_iter()
            .map(|(pid, _)| pid)
            .collect();
        assert!(ran_on.is_subset(&workers), "{ran_on:?} vs {workers:?}");
        assert_eq!(pool.pids().into_iter().collect::<BTreeSet<_>>(), workers);
        assert!(!workers.contains(&(std::process::id() as i32)));
    });
}

#[test]
fn imap_is_ordered_and_imap_unordered_yields_each_once() {
    within(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        // The first task is the slowest; imap still yields in input order.
        let waits = [300, 10, 20, 30, 40];
        let ordered: Vec<u64> = pool
            .imap(sleep_ms, waits)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(ordered, waits);

        // imap_unordered yields in the order tasks finish: the first task
        // cannot finish before its file exists, which comes last.
        let (slow, fast1, fast2) = (marker("slow"), marker("fast1"), marker("fast2"));
        let mut imap = pool
            .imap_unordered(wait_for_file, [slow.clone(), fast1.clone(), fast2.clone()])
            .unwrap();
        assert_eq!(imap.len(), 3);
        touch(&fast1);
        touch(&fast2);
        let first_two: BTreeSet<String> = imap.by_ref().take(2).map(Result::unwrap).collect();
        assert_eq!(first_two, BTreeSet::from([fast1.clone(), fast2.clone()]));
        touch(&slow);
        assert_eq!(imap.next().unwrap().unwrap(), slow);
        assert!(imap.next().is_none());
        for path in [slow, fast1, fast2] {
            std::fs::remove_file(path).unwrap();
        }
    });
}

#[test]
fn imap_yields_the_first_result_before_the_last_is_done() {
    within(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        let (first, second) = (marker("first"), marker("second"));
        touch(&first);
        let mut imap = pool
            .imap(wait_for_file, [first.clone(), second.clone()])
            .unwrap();
        // The second task waits for a file that exists only once the first
        // result is here: an imap that waited for all would hang here.
        assert_eq!(imap.next().unwrap().unwrap(), first);
        touch(&second);
        assert_eq!(imap.next().unwrap().unwrap(), second);
        assert!(imap.next().is_none());
        std::fs::remove_file(first).unwrap();
        std::fs::remove_file(second).unwrap();
    });
}

#[test]
fn apply_async_get_get_timeout_and_ready() {
    within(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        assert_eq!(pool.apply_async(square, 2).unwrap().get().unwrap(), 4);

        let multi_res = (0..10)
            .map(|i| pool.apply_async(square, i))
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let squares = multi_res
            .into_iter()
            .map(|r| r.get())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        assert_eq!(squares, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);

        let gate = marker("gate");
        let mut slow = pool.apply_async(wait_for_file, gate.clone()).unwrap();
        assert!(!slow.ready());
        let started = Instant::now();
        let err = slow.get_timeout(Duration::from_millis(100)).unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert_eq!(err.to_string(), "timed out after 100ms");
        touch(&gate);
        assert_eq!(slow.get_timeout(Duration::from_secs(60)).unwrap(), gate);
        std::fs::remove_file(gate).unwrap();
        assert!(slow.ready());
        assert!(matches!(
            slow.get_timeout(Duration::ZERO),
            Err(Error::AlreadyTaken)
        ));

        let mut quick = pool.apply_async(square, 9).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !quick.ready() {
            assert!(Instant::now() < deadline, "never ready");
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(quick.get().unwrap(), 81);
    });
}

#[test]
fn get_timeout_zero_returns_a_result_that_is_already_there() {
    within(LIMIT, || {
        let pool = Pool::new(1).unwrap();
        let mut quick = pool.apply_async(square, 6).unwrap();
        // A later task on the only worker ends after this one has.
        pool.apply_async(square, 7).unwrap().get().unwrap();
        assert_eq!(quick.get_timeout(Duration::ZERO).unwrap(), 36);

        let gate = marker("zero-gate");
        let mut slow = pool.apply_async(wait_for_file, gate.clone()).unwrap();
        let err = slow.get_timeout(Duration::ZERO).unwrap_err();
        assert_eq!(err.to_string(), "timed out after 0ns");
        touch(&gate);
        assert_eq!(slow.get_timeout(Duration::from_secs(60)).unwrap(), gate);
        std::fs::remove_file(gate).unwrap();
    });
}

#[test]
fn a_panic_while_a_worker_decodes_or_encodes_fails_that_task_alone() {
    within(LIMIT, || {
        TEST_PID.store(std::process::id(), std::sync::atomic::Ordering::SeqCst);
        let pool = Pool::new(1).unwrap();
        let workers = pool.pids();
        let messages = [
            pool.apply(takes_unreadable, PanicsWhenDeserialized)
                .map(drop),
            pool.apply(gives_unserializable, 1).map(drop),
            pool.apply(gives_undroppable, 2).map(drop),
            pool.apply(panics_with_an_undroppable_payload, 3).map(drop),
        ]
        .map(|result| {
            let err = result.unwrap_err();
            assert!(err.is_panic(), "{err:?}");
            err.panic_message().unwrap().to_owned()
        });
        assert_eq!(
            messages,
            [
                "the argument panicked while it was being deserialized: \
                 this argument refuses to be deserialized",
                "the result panicked while it was being serialized: \
                 this result refuses to be serialized",
                "the result's destructor panicked after it was serialized: \
                 this value refuses to be dropped in a worker",
                "a panic with a payload that is not a string",
            ]
        );
        assert_eq!(pool.pids(), workers, "the worker died");
        assert_eq!(pool.apply(square, 3).unwrap(), 9);
    });
}

#[test]
fn a_task_that_panics_is_named_after_its_worker_on_stderr() {
    let out = testkit::run(
        env!("CARGO_BIN_EXE_mpcore-test-helper"),
        &["pool-panic"],
        Duration::from_secs(60),
    );
    out.assert_success();
    assert_eq!(out.stdout, "task 4 failed on purpose\n");
    assert!(
        out.stderr.contains("thread 'ForkPoolWorker-1' ("),
        "{}",
        out.stderr
    );
}

#[test]
fn a_panicking_task_fails_alone_and_the_pool_goes_on() {
    within(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        let workers = pool.pids();

        let err = pool.map(panics_on_3, 0..10).unwrap_err();
        assert!(err.is_panic(), "{err:?}");
        assert_eq!(err.panic_message(), Some("task 3 failed"));

        let results: Vec<_> = pool.imap(panics_on_3, 0..6).unwrap().collect();
        for (x, result) in results.iter().enumerate() {
            match result {
                Ok(v) => assert_eq!(*v as usize, x),
                Err(e) => {
                    assert_eq!(x, 3);
                    assert!(workers.contains(&match e {
                        Error::Panicked { pid, .. } => *pid,
                        other => panic!("{other:?}"),
                    }));
                    assert!(e.to_string().ends_with("panicked: task 3 failed"), "{e}");
                }
            }
        }
        assert!(results[3].is_err());

        let err = pool.apply_async(panics_on_3, 3).unwrap().get().unwrap_err();
        assert_eq!(err.panic_message(), Some("task 3 failed"));
        // A panic is caught in the worker: the same workers go on.
        assert_eq!(pool.map(square, 0..10).unwrap()[9], 81);
        assert_eq!(pool.pids(), workers);
    });
}

#[test]
fn a_worker_killed_mid_task_fails_that_task_and_is_replaced() {
    within(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        let mut seen: BTreeSet<i32> = pool.pids().into_iter().collect();

        // imap (chunk size 1): only task 3 is lost.
        let results: Vec<_> = pool.imap(killed_on_3, 0..8).unwrap().collect();
        for (x, result) in results.iter().enumerate() {
            if x == 3 {
                let err = result.as_ref().unwrap_err();
                assert!(err.is_worker_died(), "{err:?}");
                let Error::WorkerDied { pid, status } = err else {
                    unreachable!()
                };
                assert!(seen.contains(pid), "a worker of this pool died");
                assert_eq!(*status, Some(ExitStatus::Signal(Signal::SIGKILL)));
                assert_eq!(
                    err.to_string(),
                    format!("pool worker {pid} died (signal SIGKILL) while running this task")
                );
            } else {
                assert_eq!(
                    *result.as_ref().unwrap_or_else(|e| panic!("task {x}: {e}")) as usize,
                    x
                );
            }
        }

        // The pool replaced the worker and goes on; it happens again and again.
        for _ in 0..3 {
            let err = pool.apply_async(killed_on_3, 3).unwrap().get().unwrap_err();
            assert!(err.is_worker_died(), "{err:?}");
            assert_eq!(pool.map(square, 0..100).unwrap()[10], 100);
            seen.extend(pool.pids());
        }
        assert!(pool.map(killed_on_3, 0..10).unwrap_err().is_worker_died());
        assert_eq!(pool.apply(square, 12).unwrap(), 144);
        assert_eq!(pool.pids().len(), 2, "back to full strength");
        seen.extend(pool.pids());
        assert!(seen.len() >= 2 + 4, "each death forked a replacement");

        pool.close();
        pool.join().unwrap();
        assert!(pool.pids().is_empty());
        assert_all_gone(&seen);
    });
}

#[test]
fn a_worker_killed_from_outside_fails_its_task_only() {
    within(LIMIT, || {
        let pool = Pool::new(1).unwrap();
        let victim = pool.pids()[0];
        let started = marker("started");
        let doomed = pool
            .apply_async(announce_then_sleep, started.clone())
            .unwrap();
        let queued = pool.apply_async(square, 5).unwrap();
        wait_until_exists(&started);
        std::fs::remove_file(started).unwrap();
        kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
        let err = doomed.get().unwrap_err();
        assert!(
            matches!(err, Error::WorkerDied { pid, status: Some(ExitStatus::Signal(Signal::SIGKILL)) } if pid == victim),
            "{err:?}"
        );
        // The queued task never reached the dead worker: its replacement ran it.
        assert_eq!(queued.get().unwrap(), 25);
        assert_eq!(proc_state(victim), None, "reaped");
        assert_ne!(pool.pids(), [victim]);
    });
}

#[test]
fn a_task_that_exits_reports_the_exit_code() {
    within(LIMIT, || {
        let pool = Pool::new(1).unwrap();
        let err = pool.apply(exits_with_3, ()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::WorkerDied {
                    status: Some(ExitStatus::Code(3)),
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(pool.apply(square, 3).unwrap(), 9);
    });
}

#[test]
fn terminate_with_tasks_in_flight_fails_them_and_kills_the_workers() {
    within(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        let workers: BTreeSet<i32> = pool.pids().into_iter().collect();
        let pending = pool.apply_async(sleep_ms, 30_000).unwrap();
        let started = marker("started");
        thread::scope(|s| {
            let mapper = s.spawn(|| pool.map(announce_then_sleep, vec![started.clone(); 6]));
            // A task of the map runs: it is in flight.
            wait_until_exists(&started);
            pool.terminate();
            let err = mapper.join().unwrap().unwrap_err();
            assert!(matches!(err, Error::PoolTerminated), "{err:?}");
        });
        std::fs::remove_file(started).unwrap();
        assert!(matches!(pending.get(), Err(Error::PoolTerminated)));
        assert!(pool.pids().is_empty());
        assert_all_gone(&workers);
        assert!(matches!(pool.map(square, 0..3), Err(Error::PoolClosed)));
        pool.join().unwrap();
    });
}

#[test]
fn dropping_a_pool_without_close_ends_its_workers() {
    within(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        let workers: BTreeSet<i32> = pool.pids().into_iter().collect();
        let pending = pool.apply_async(sleep_ms, 30_000).unwrap();
        let mut unfinished = pool.imap(sleep_ms, [30_000, 30_000, 30_000]).unwrap();
        thread::sleep(Duration::from_millis(100));
        drop(pool);
        assert_all_gone(&workers);
        assert!(matches!(pending.get(), Err(Error::PoolTerminated)));
        for _ in 0..3 {
            assert!(matches!(
                unfinished.next(),
                Some(Err(Error::PoolTerminated))
            ));
        }
        assert!(unfinished.next().is_none());
    });
}

#[test]
fn an_idle_pool_dropped_leaves_nothing() {
    within(LIMIT, || {
        let pool = Pool::new(3).unwrap();
        let workers: BTreeSet<i32> = pool.pids().into_iter().collect();
        assert_eq!(workers.len(), 3);
        drop(pool);
        assert_all_gone(&workers);
    });
}

#[test]
fn close_lets_given_tasks_finish_and_join_reaps_every_worker() {
    within(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        let workers: BTreeSet<i32> = pool.pids().into_iter().collect();
        let results: Vec<_> = (0..6)
            .map(|_| pool.apply_async(sleep_ms, 50).unwrap())
            .collect();
        pool.close();
        assert!(matches!(
            pool.apply_async(square, 1),
            Err(Error::PoolClosed)
        ));
        pool.join().unwrap();
        for r in results {
            assert_eq!(r.get().unwrap(), 50);
        }
        assert!(pool.pids().is_empty());
        assert_all_gone(&workers);
        pool.join().unwrap();
        pool.terminate();
    });
}

#[test]
fn max_tasks_per_child_replaces_workers() {
    within(LIMIT, || {
        let pool = Builder::new()
            .processes(2)
            .max_tasks_per_child(1)
            .build()
            .unwrap();
        let first: BTreeSet<i32> = pool.pids().into_iter().collect();
        let ran_on: Vec<i32> = pool
            .map_chunked(square_with_pid, 0..6, 1)
            .unwrap()
            .into_iter()
            .map(|(pid, _)| pid)
            .collect();
        let distinct: BTreeSet<i32> = ran_on.iter().copied().collect();
        assert_eq!(distinct.len(), 6, "one task per worker: {ran_on:?}");
        let mut all = first.clone();
        all.extend(&distinct);
        pool.close();
        pool.join().unwrap();
        assert_all_gone(&all);

        let pool = Builder::new()
            .processes(1)
            .max_tasks_per_child(3)
            .build()
            .unwrap();
        let ran_on: Vec<i32> = pool
            .map_chunked(square_with_pid, 0..9, 1)
            .unwrap()
            .into_iter()
            .map(|(pid, _)| pid)
            .collect();
        assert_eq!(
            ran_on.iter().collect::<BTreeSet<_>>().len(),
            3,
            "{ran_on:?}"
        );
        assert!(ran_on.chunks(3).all(|c| c.iter().all(|&p| p == c[0])));
    });
}

#[test]
fn bad_sizes_are_errors_not_panics() {
    assert!(matches!(Pool::new(0), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        Builder::new().processes(1).max_tasks_per_child(0).build(),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn with_cpu_count_starts_one_worker_per_cpu() {
    within(LIMIT, || {
        let pool = Pool::with_cpu_count().unwrap();
        assert_eq!(pool.processes(), mpcore::cpu_count());
        assert_eq!(pool.pids().len(), mpcore::cpu_count());
    });
}

#[test]
fn threads_may_share_one_pool() {
    within(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        thread::scope(|s| {
            let handles: Vec<_> = (0..4u64)
                .map(|t| {
                    let pool = &pool;
                    s.spawn(move || pool.map(square, t * 100..t * 100 + 100).unwrap())
                })
                .collect();
            for (t, h) in handles.into_iter().enumerate() {
                let got = h.join().unwrap();
                let t = t as u64;
                assert_eq!(
                    got,
                    (t * 100..t * 100 + 100).map(square).collect::<Vec<_>>()
                );
            }
        });
    });
}

#[test]
fn many_pools_leak_no_descriptor() {
    within(LIMIT, || {
        let before = testkit::open_fds();
        for _ in 0..20 {
            let pool = Pool::new(2).unwrap();
            assert_eq!(pool.apply(square, 4).unwrap(), 16);
        }
        // Other tests open descriptors on other threads meanwhile: allow a
        // little slack; a leak would be 100 or more.
        assert!(
            testkit::open_fds() < before + 30,
            "before {before}, after {}",
            testkit::open_fds()
        );
    });
}

#[test]
fn a_pool_and_its_results_may_move_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Pool>();
    send::<mpcore::AsyncResult<String>>();
    send::<mpcore::pool::Imap<String, std::vec::IntoIter<u64>>>();
}

#[test]
fn a_forked_child_cannot_use_its_copy_of_the_pool_and_does_not_hang() {
    within(LIMIT, || {
        let pool = Arc::new(Pool::new(1).unwrap());
        let workers = pool.pids();
        // The child's copy of the pool has no supervisor thread.
        let mut child = mpcore::Process::spawn({
            let pool = Arc::clone(&pool);
            move || match pool.apply(square, 2) {
                Err(Error::InvalidArgument(_)) => "refused".to_owned(),
                other => format!("{other:?}"),
            }
        })
        .unwrap();
        assert_eq!(child.join().unwrap(), "refused");
        let pool = Arc::into_inner(pool).expect("the parent's only handle");
        // Dropping the copy in the child neither hangs nor kills our workers.
        let mut child = mpcore::Process::spawn(move || drop(pool)).unwrap();
        child.join().unwrap();
        // The parent's pool was moved into the closure and dropped here, as
        // a captured value is; its workers are gone, reaped by the parent.
        for pid in workers {
            assert_eq!(proc_state(pid), None);
        }
    });
}

/// Kills its own worker with SIGKILL in the middle of task 3,000.
fn killed_on_3000(x: u32) -> u32 {
    if x == 3000 {
        raise(Signal::SIGKILL).expect("raise");
        thread::sleep(Duration::from_secs(60));
    }
    x
}

#[test]
fn fast_tasks_in_flight_when_a_worker_dies_fail_only_the_running_one() {
    within(LIMIT, || {
        // Tiny tasks at chunk size 1: after the first results the pool
        // knows they are fast and feeds each worker many chunks at once.
        // The worker that dies in task 3,000 holds some that it never
        // read: those run elsewhere; only task 3,000 fails.
        let pool = Pool::new(2).unwrap();
        let results: Vec<_> = pool.imap(killed_on_3000, 0..6000).unwrap().collect();
        for (x, result) in results.iter().enumerate() {
            if x == 3000 {
                assert!(result.as_ref().unwrap_err().is_worker_died(), "{result:?}");
            } else {
                assert_eq!(
                    *result.as_ref().unwrap_or_else(|e| panic!("task {x}: {e}")) as usize,
                    x
                );
            }
        }
        let err = pool.map_chunked(killed_on_3000, 0..6000, 1).unwrap_err();
        assert!(err.is_worker_died(), "{err:?}");
        assert_eq!(pool.map_chunked(square, 0..6000, 1).unwrap()[77], 77 * 77);
    });
}

fn echo(s: String) -> String {
    s
}

#[test]
fn fast_tasks_with_large_arguments_and_results_do_not_deadlock() {
    within(LIMIT, || {
        // Many fast chunks of 20 KB each way: more than a socket buffer
        // holds in flight, in both directions at once.
        let pool = Pool::new(2).unwrap();
        let inputs: Vec<String> = (0..3000).map(|i| format!("{i:020000}")).collect();
        let outputs = pool.map_chunked(echo, inputs.clone(), 1).unwrap();
        assert_eq!(outputs, inputs);
    });
}

fn bytes_of_len(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

#[test]
fn results_of_every_size_around_the_batch_limits_arrive_whole_and_in_order() {
    within(LIMIT, || {
        // The supervisor takes a worker's results 32 at a time, each up to
        // 4 KiB inline, larger ones as memfds; it sends chunks in packets
        // of up to 16 KiB. Sizes on both sides of each limit, mixed, many
        // times over so that fast chunks travel in batches.
        let pool = Pool::new(2).unwrap();
        let sizes = [0, 1, 4090, 4094, 4095, 4096, 4097, 5000, 16 * 1024, 40_000];
        let inputs: Vec<usize> = (0..2000).map(|i| sizes[i % sizes.len()]).collect();
        let results = pool.map_chunked(bytes_of_len, inputs.clone(), 1).unwrap();
        for (n, bytes) in inputs.iter().zip(&results) {
            assert_eq!(*bytes, bytes_of_len(*n));
        }
        let echoed = pool.map_chunked(bytes_of_len, inputs.clone(), 7).unwrap();
        assert_eq!(echoed, results);
        let strings: Vec<String> = inputs.iter().map(|&n| "s".repeat(n / 3)).collect();
        assert_eq!(pool.map_chunked(echo, strings.clone(), 1).unwrap(), strings);
    });
}

/// Panics on every multiple of 7 but 0, saying which.
fn panics_on_multiples_of_7(x: u32) -> u32 {
    if x > 0 && x % 7 == 0 {
        panic!("task {x} failed");
    }
    x
}

#[test]
fn map_returns_the_first_failure_in_input_order() {
    within(LIMIT, || {
        // Failures in many chunks, which finish in any order: map reports
        // the first in input order, whatever the chunk size.
        let pool = Pool::new(2).unwrap();
        for chunksize in [1, 3, 7, 30, 100] {
            let err = pool
                .map_chunked(panics_on_multiples_of_7, 0..100, chunksize)
                .unwrap_err();
            assert_eq!(
                err.panic_message(),
                Some("task 7 failed"),
                "chunk size {chunksize}"
            );
        }
        let ok = pool
            .map_chunked(panics_on_multiples_of_7, [1, 2, 3], 2)
            .unwrap();
        assert_eq!(ok, [1, 2, 3]);
        assert!(pool.map(square, Vec::<u64>::new()).unwrap().is_empty());
    });
}

#[test]
fn imap_of_an_endless_input_returns_at_once_and_yields_what_is_taken() {
    within(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        // An imap that read its whole input first would never return; the
        // guard makes it fail quickly instead of eating the machine's memory.
        let endless = (0u64..).inspect(|&x| {
            assert!(x < 1_000_000, "imap read far ahead of its consumer");
        });
        let first: Vec<u64> = pool
            .imap(square, endless)
            .unwrap()
            .take(10)
            .map(Result::unwrap)
            .collect();
        assert_eq!(first, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
        let mut unordered: Vec<u64> = pool
            .imap_unordered(square, (0u64..).inspect(|&x| assert!(x < 1_000_000)))
            .unwrap()
            .take(10)
            .map(Result::unwrap)
            .collect();
        unordered.sort_unstable();
        // Which ten come first is up to the workers; each is a square.
        assert!(unordered.iter().all(|&y| y.isqrt() * y.isqrt() == y));
        // The pool is still fine after the iterators were dropped half-read.
        assert_eq!(pool.map(square, 0..3).unwrap(), [0, 1, 4]);
    });
}

#[test]
fn imap_yields_its_first_result_long_before_a_slow_input_is_read() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    within(LIMIT, || {
        const TOTAL: usize = 300;
        let pool = Pool::new(2).unwrap();
        let read = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&read);
        let slow = (0..TOTAL as u64).inspect(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(1));
        });
        let mut results = pool.imap(square, slow).unwrap();
        assert_eq!(results.next().unwrap().unwrap(), 0);
        let read_at_first = read.load(Ordering::SeqCst);
        // A few chunks per worker of look-ahead, not the whole input.
        assert!(read_at_first < TOTAL / 4, "read {read_at_first} of {TOTAL}");
        let rest: Vec<u64> = results.map(Result::unwrap).collect();
        assert_eq!(rest, (1..TOTAL as u64).map(square).collect::<Vec<_>>());
        assert_eq!(read.load(Ordering::SeqCst), TOTAL);
    });
}

#[test]
fn imap_chunked_sends_chunks_and_loses_a_whole_chunk_with_its_worker() {
    within(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        let squares: Vec<u64> = pool
            .imap_chunked(square, 0..100, 7)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(squares, (0..100).map(square).collect::<Vec<_>>());
        // A chunk's results travel together, after its last task: the
        // worker that dies in task 3 takes tasks 0 to 3 with it, and only
        // those (chunk size 1 would lose task 3 alone).
        let results: Vec<_> = pool.imap_chunked(killed_on_3, 0..8, 4).unwrap().collect();
        assert_eq!(results.len(), 8);
        for (x, result) in results.iter().enumerate() {
            match result {
                Ok(y) => assert!(x >= 4 && *y == x as u32, "{x}: {y}"),
                Err(Error::WorkerDied { .. }) => assert!(x < 4, "{x} failed"),
                Err(other) => panic!("{x}: unexpected {other}"),
            }
        }
        let mut unordered: Vec<u32> = pool
            .imap_unordered_chunked(|x: u32| x + 1, 0..50, 8)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        unordered.sort_unstable();
        assert_eq!(unordered, (1..=50).collect::<Vec<_>>());
        assert!(matches!(
            pool.imap_chunked(square, 0..1, 0).unwrap().next(),
            Some(Ok(0))
        ));
    });
}

/// A number that refuses to be serialized when it is 5.
#[derive(Debug, serde::Deserialize)]
struct NoFive(u32);

impl serde::Serialize for NoFive {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == 5 {
            return Err(serde::ser::Error::custom("5 cannot travel"));
        }
        s.serialize_u32(self.0)
    }
}

/// Counts the tasks that ran, in memory the workers share with the test.
static RAN: std::sync::OnceLock<mpcore::Value<u64>> = std::sync::OnceLock::new();

fn count_and_return(x: NoFive) -> u32 {
    let ran = RAN.get().expect("set before the pool was made");
    *ran.lock().unwrap() += 1;
    x.0
}

#[test]
fn map_checks_every_input_before_any_task_runs() {
    within(LIMIT, || {
        let ran = RAN.get_or_init(|| mpcore::Value::new(0).unwrap());
        ran.set(0).unwrap();
        // Made after the counter: the workers are forked with it.
        let pool = Pool::new(2).unwrap();
        let inputs = || (0..10).map(NoFive);
        for result in [
            pool.map_chunked(count_and_return, inputs(), 1),
            pool.map(count_and_return, inputs()),
        ] {
            match result {
                // The Serialize impl's own words.
                Err(Error::Codec { action, reason }) => {
                    assert_eq!((action, reason.as_str()), ("encode", "5 cannot travel"));
                }
                other => panic!("expected a codec error, got {other:?}"),
            }
        }
        // Anything handed to a worker has run once close and join return.
        pool.close();
        pool.join().unwrap();
        assert_eq!(ran.get().unwrap(), 0, "tasks ran although map failed");
    });
}

#[test]
fn imap_fails_an_input_that_cannot_be_encoded_in_its_place() {
    within(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        let results: Vec<_> = pool
            .imap_chunked(|x: NoFive| x.0, (0..10).map(NoFive), 3)
            .unwrap()
            .collect();
        assert_eq!(results.len(), 10);
        for (x, result) in results.into_iter().enumerate() {
            match (x, result) {
                (
                    5,
                    Err(Error::Codec {
                        action: "encode", ..
                    }),
                ) => {}
                (x, Ok(y)) if x != 5 => assert_eq!(y, x as u32),
                (x, other) => panic!("{x}: unexpected {other:?}"),
            }
        }
    });
}

#[test]
fn closing_the_pool_ends_an_endless_imap_with_one_error() {
    within(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        let mut squares = pool.imap(square, 0u64..).unwrap();
        assert_eq!(squares.next().unwrap().unwrap(), 0);
        pool.close();
        // What was handed over before the close still runs, in order; then
        // one error says why the rest was never read, and the end.
        let mut x = 1;
        loop {
            match squares.next() {
                Some(Ok(y)) => assert_eq!(y, square(x)),
                Some(Err(Error::PoolClosed)) => break,
                other => panic!("after {x}: unexpected {other:?}"),
            }
            x += 1;
        }
        assert!(x < 1_000, "read {x} inputs after the close");
        assert!(squares.next().is_none());
        pool.join().unwrap();
    });
}

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
