//! Pool::apply_async: get, get_timeout and ready.
//! Every test runs under a deadline: a hang fails, it never blocks CI.

use std::thread;
use std::time::{Duration, Instant};

use mpcore::{Error, Pool};
use testkit::within;

mod pool_tasks;
use pool_tasks::*;

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
