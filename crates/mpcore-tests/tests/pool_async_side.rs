//! The pool's async side: map_async, starmap and starmap_async,
//! AsyncResult's wait, wait_timeout and successful, and as_completed,
//! under every start method where the task travels (spawn and forkserver
//! workers are fresh runs of this test binary). Every test runs under a
//! deadline: a hang fails, it never blocks CI.

use std::time::Duration;

use mpcore::{Error, Pool};
use testkit::within;

#[macro_use]
mod methods;
mod pool_tasks;
use pool_tasks::*;

fn power(base: u64, exp: u32) -> u64 {
    base.pow(exp)
}

fn volume(x: u32, y: u32, z: u32) -> u32 {
    x * y * z
}

fn product_or_panic(a: u32, b: u32) -> u32 {
    assert!(a != 3, "task {a} failed");
    a * b
}

under_every_method! {
    /// map_async + get gives exactly what map gives, for any chunk size
    /// and for no input at all.
    fn map_async_equals_map(method) {
        within(LIMIT, move || {
            let pool = pool(method, 2);
            let want = pool.map(square, 0..1000).unwrap();
            assert_eq!(want.len(), 1000);
            assert_eq!(pool.map_async(square, 0..1000).unwrap().get().unwrap(), want);
            let chunked = pool.map_async_chunked(square, 0..1000, 7).unwrap();
            assert_eq!(chunked.get().unwrap(), want);
            let mut none = pool.map_async(square, Vec::new()).unwrap();
            assert!(none.ready());
            assert_eq!(none.get_timeout(Duration::ZERO).unwrap(), Vec::<u64>::new());
        });
    }

    /// starmap calls a fn of two or three arguments with each tuple, in
    /// input order; starmap_async gives the same.
    fn starmap_spreads_each_tuple_over_the_arguments(method) {
        within(LIMIT, move || {
            let pool = pool(method, 2);
            let pairs: Vec<(u64, u32)> = (0..50).map(|i| (i, i as u32 % 4)).collect();
            let want: Vec<u64> = pairs.iter().map(|&(b, e)| b.pow(e)).collect();
            assert_eq!(pool.starmap(power, pairs.clone()).unwrap(), want);
            assert_eq!(pool.starmap_async(power, pairs).unwrap().get().unwrap(), want);
            let boxes = [(1, 2, 3), (2, 2, 2), (10, 1, 7)];
            assert_eq!(pool.starmap(volume, boxes).unwrap(), [6, 8, 70]);
            let closure = pool.starmap(|a: u8, b: u8| a.max(b), [(1, 9), (8, 2)]);
            assert_eq!(closure.unwrap(), [9, 8]);
        });
    }

    /// as_completed yields each task's number and result in the order the
    /// tasks finish, not the order they started: here the test decides
    /// that order by opening each task's gate in turn.
    fn as_completed_yields_in_finishing_order(method) {
        within(LIMIT, move || {
            let pool = pool(method, 3);
            let gates = [marker("late"), marker("first"), marker("second")];
            let mut tasks = pool.as_completed();
            for (i, gate) in gates.iter().enumerate() {
                assert_eq!(tasks.apply_async(wait_for_file, gate.clone()).unwrap(), i);
            }
            assert_eq!(tasks.pending(), 3);
            touch(&gates[1]);
            let (number, result) = tasks.next().unwrap();
            assert_eq!((number, result.unwrap()), (1, gates[1].clone()));
            let err = tasks.next_timeout(Duration::from_millis(50)).unwrap_err();
            assert_eq!(err.to_string(), "timed out after 50ms");
            touch(&gates[2]);
            let (number, result) = tasks.next().unwrap();
            assert_eq!((number, result.unwrap()), (2, gates[2].clone()));
            touch(&gates[0]);
            let (number, result) = tasks.next().unwrap();
            assert_eq!((number, result.unwrap()), (0, gates[0].clone()));
            assert_eq!(tasks.pending(), 0);
            assert!(tasks.next().is_none());
            assert!(tasks.next_timeout(Duration::ZERO).unwrap().is_none());
            for gate in gates {
                std::fs::remove_file(gate).unwrap();
            }
        });
    }
}

#[test]
fn wait_wait_timeout_and_successful_before_and_after() {
    within(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        // Before it is ready.
        let gate = marker("gate");
        let mut slow = pool.apply_async(wait_for_file, gate.clone()).unwrap();
        assert!(matches!(slow.successful(), Err(Error::NotReady)));
        assert_eq!(
            slow.successful().unwrap_err().to_string(),
            "the task has not finished yet, so it is neither successful nor failed"
        );
        assert!(!slow.wait_timeout(Duration::from_millis(100)));
        assert!(!slow.wait_timeout(Duration::ZERO));
        assert!(!slow.ready());
        // After success: wait keeps the value here for get.
        touch(&gate);
        slow.wait();
        assert!(slow.ready());
        assert!(slow.successful().unwrap());
        assert!(slow.wait_timeout(Duration::ZERO));
        assert_eq!(slow.get_timeout(Duration::ZERO).unwrap(), gate);
        // Still known once the value is taken.
        assert!(slow.successful().unwrap());
        std::fs::remove_file(gate).unwrap();

        // After an error.
        let mut failed = pool.apply_async(panics_on_3, 3).unwrap();
        assert!(failed.wait_timeout(Duration::from_secs(60)));
        assert!(!failed.successful().unwrap());
        let err = failed.get().unwrap_err();
        assert!(
            matches!(&err, Error::Panicked { message, .. } if message == "task 3 failed"),
            "{err:?}"
        );

        // map_async: one failed task makes the whole call unsuccessful,
        // and get gives the first failure in input order.
        let mut mapped = pool.map_async_chunked(panics_on_3, 0..10, 1).unwrap();
        mapped.wait();
        assert!(!mapped.successful().unwrap());
        let err = mapped.get().unwrap_err();
        assert!(
            matches!(&err, Error::Panicked { message, .. } if message == "task 3 failed"),
            "{err:?}"
        );
        let mut fine = pool.starmap_async(power, [(2, 2)]).unwrap();
        fine.wait();
        assert!(fine.successful().unwrap());
        assert_eq!(fine.get().unwrap(), [4]);
    });
}

#[test]
fn a_failed_task_fails_alone_in_as_completed() {
    within(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        let mut tasks = pool.as_completed();
        for i in 0..6 {
            tasks.apply_async(panics_on_3, i).unwrap();
        }
        let mut got: Vec<(usize, Result<u32, String>)> = tasks
            .map(|(n, r)| (n, r.map_err(|e| e.to_string())))
            .collect();
        got.sort();
        assert_eq!(got.len(), 6);
        for (n, result) in got {
            if n == 3 {
                let message = result.unwrap_err();
                assert!(message.ends_with("panicked: task 3 failed"), "{message}");
            } else {
                assert_eq!(result.unwrap(), n as u32);
            }
        }
        // starmap's failure is map's: the first in input order.
        let err = pool
            .starmap(product_or_panic, [(1, 1), (3, 1), (2, 2)])
            .unwrap_err();
        assert!(
            matches!(&err, Error::Panicked { message, .. } if message == "task 3 failed"),
            "{err:?}"
        );
    });
}

#[test]
fn a_closed_or_terminated_pool_ends_as_completed_and_map_async() {
    within(LIMIT, || {
        let pool = Pool::new(1).unwrap();
        let mut tasks = pool.as_completed::<String>();
        let gate = marker("never");
        tasks.apply_async(wait_for_file, gate.clone()).unwrap();
        let mut mapped = pool.map_async(wait_for_file, [gate.clone()]).unwrap();
        pool.close();
        assert!(matches!(
            tasks.apply_async(wait_for_file, gate.clone()),
            Err(Error::PoolClosed)
        ));
        assert!(matches!(
            pool.map_async(square, [1]),
            Err(Error::PoolClosed)
        ));
        assert!(matches!(
            pool.starmap_async(power, [(1, 1)]),
            Err(Error::PoolClosed)
        ));
        assert!(matches!(
            pool.as_completed::<u64>().apply_async(square, 1),
            Err(Error::PoolClosed)
        ));
        pool.terminate();
        let (number, result) = tasks.next().unwrap();
        assert_eq!(number, 0);
        assert!(matches!(result, Err(Error::PoolTerminated)), "{result:?}");
        assert!(tasks.next().is_none());
        assert!(mapped.wait_timeout(Duration::from_secs(60)));
        assert!(!mapped.successful().unwrap());
        assert!(matches!(mapped.get(), Err(Error::PoolTerminated)));
        let _ = std::fs::remove_file(gate);
    });
}

/// Drops its field when it is `None`: such a value encodes, but does not
/// read back.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct MaybeNote {
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<u32>,
}

fn note_unless_odd(x: u32) -> MaybeNote {
    MaybeNote {
        note: (x % 2 == 0).then_some(x),
    }
}

fn no_five(x: u32) -> NoFive {
    NoFive(x)
}

/// A chunk's reply carries bare values while every task returns, and
/// outcomes from its first failure on: a failure in the middle of a
/// chunk, of any kind, fails that task alone, before and after it.
#[test]
fn a_failure_in_the_middle_of_a_chunk_fails_that_task_alone() {
    within(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        let got: Vec<_> = pool.imap_chunked(panics_on_3, 0..8, 8).unwrap().collect();
        for (x, result) in (0..).zip(got) {
            match result {
                Ok(value) => assert_eq!(value, x),
                Err(Error::Panicked { message, .. }) => {
                    assert_eq!((x, message.as_str()), (3, "task 3 failed"));
                }
                Err(e) => panic!("task {x}: {e}"),
            }
        }
        let got: Vec<_> = pool.imap_chunked(no_five, 0..8, 8).unwrap().collect();
        for (x, result) in (0..).zip(got) {
            match result {
                Ok(value) => assert_eq!(value.0, x),
                Err(e) => assert_eq!(
                    (x, e.to_string()),
                    (5, "could not encode a message: 5 cannot travel".to_owned())
                ),
            }
        }
        // Read back as a whole chunk this fails; task by task, only the
        // odd ones do.
        let got: Vec<_> = pool
            .imap_chunked(note_unless_odd, 0..8, 8)
            .unwrap()
            .collect();
        for (x, result) in (0..).zip(got) {
            if x % 2 == 0 {
                assert_eq!(result.unwrap(), MaybeNote { note: Some(x) });
            } else {
                let e = result.unwrap_err();
                assert!(
                    matches!(&e, Error::Codec { action: "encode", reason }
                        if reason.contains("cannot be read back")),
                    "task {x}: {e:?}"
                );
            }
        }
        // And map gives the first failure in input order.
        let e = pool.map_chunked(note_unless_odd, 0..8, 8).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Codec {
                    action: "encode",
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            pool.map_chunked(note_unless_odd, [0, 2, 4], 3).unwrap(),
            [0, 2, 4].map(|x| MaybeNote { note: Some(x) })
        );
    });
}
