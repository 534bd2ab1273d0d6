//! Pool::imap and imap_unordered: lazy over their input, ordered or not,
//! each result once, a failure in its place.
//! Every test runs under a deadline: a hang fails, it never blocks CI.

use std::collections::BTreeSet;
use std::thread;
use std::time::Duration;

use mpcore::{Error, Pool};
use testkit::within;

mod pool_tasks;
use pool_tasks::*;

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
