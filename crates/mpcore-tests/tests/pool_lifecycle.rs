//! A pool's life: close, join, terminate and drop leave no worker
//! behind; threads and forks around a pool.
//! Every test runs under a deadline: a hang fails, it never blocks CI.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use mpcore::pool::Builder;
use mpcore::{Error, Pool};
use testkit::{proc_state, within};

mod pool_tasks;
use pool_tasks::*;

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
