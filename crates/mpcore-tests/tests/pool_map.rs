//! Pool::map: results in input order, whole at every size, the first
//! failure in input order, every input checked before any task runs.
//! Every test runs under a deadline: a hang fails, it never blocks CI.

use std::collections::BTreeSet;

use mpcore::pool::{Builder, default_chunksize};
use mpcore::{Error, Pool};
use testkit::within;

mod pool_tasks;
use pool_tasks::*;

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
        // The supervisor takes a worker's results 32 packets at a time,
        // each up to 4 KiB: a larger result comes in parts up to 128 KiB,
        // beyond that as a memfd. It sends chunks in packets of up to
        // 16 KiB, and a larger chunk alone, up to 64 KiB inline, beyond
        // that as a memfd. Sizes on both sides of each limit, mixed, many
        // times over so that fast chunks travel in batches.
        let pool = Pool::new(2).unwrap();
        let sizes = [
            0,
            1,
            4090,
            4094,
            4095,
            4096,
            4097,
            5000,
            16 * 1024,
            40_000,
            64 * 1024,
            128 * 1024 - 8,
            128 * 1024,
            128 * 1024 + 8,
            200_000,
        ];
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
