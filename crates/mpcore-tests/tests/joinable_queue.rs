//! `JoinableQueue` across processes: `join` returns once the last
//! `task_done` has come, and not before; one `task_done` too many is an
//! error; a consumer killed between `get` and `task_done` leaves an item
//! unfinished, which `join_timeout` reports. Under every start method
//! (the queue travels to spawn and forkserver children as a descriptor).

use std::sync::mpsc;
use std::time::Duration;

use mpcore::process::Builder;
use mpcore::{Error, Event, JoinableQueue, Process, Value};
use testkit::within;

#[macro_use]
mod methods;

const LIMIT: Duration = Duration::from_secs(60);
const PATIENCE: Duration = Duration::from_secs(20);

/// Takes `n` items; for each, adds it to `sum` and only then marks it
/// done.
fn consume((q, sum, n): (JoinableQueue<u64>, Value<u64>, u64)) -> u64 {
    for _ in 0..n {
        let item = q.get_timeout(PATIENCE).unwrap();
        *sum.lock().unwrap() += item;
        q.task_done().unwrap();
    }
    n
}

under_every_method! {
    fn join_returns_after_every_item_was_processed(method) {
        within(LIMIT, move || {
            const PER_CONSUMER: u64 = 1000;
            let q = JoinableQueue::new().unwrap();
            let sum = Value::new(0u64).unwrap();
            let consumers: Vec<_> = (0..3)
                .map(|_| {
                    Builder::new()
                        .start_method(method)
                        .spawn_fn(consume, (q.clone(), sum.clone(), PER_CONSUMER))
                        .unwrap()
                })
                .collect();
            let n = 3 * PER_CONSUMER;
            for i in 0..n {
                q.put(i).unwrap();
            }
            q.join_timeout(PATIENCE).unwrap();
            // Each consumer adds an item to the sum before it marks it
            // done: a join that returned before the last task_done could
            // find the sum short.
            assert_eq!(sum.get().unwrap(), n * (n - 1) / 2);
            assert_eq!(q.unfinished(), 0);
            for mut c in consumers {
                assert_eq!(c.join().unwrap(), PER_CONSUMER);
            }
        });
    }
}

/// Takes three items, marks two done, says so, waits for `go`, sets
/// `flag` and marks the third done.
fn hold_the_last((q, two_done, go, flag): (JoinableQueue<u32>, Event, Event, Value<u32>)) -> bool {
    for _ in 0..3 {
        q.get_timeout(PATIENCE).unwrap();
    }
    q.task_done().unwrap();
    q.task_done().unwrap();
    two_done.set();
    go.wait_timeout(PATIENCE).unwrap();
    flag.set(1).unwrap();
    q.task_done().is_ok()
}

#[test]
fn join_waits_for_the_last_task_done_and_not_for_less() {
    within(LIMIT, || {
        let q = JoinableQueue::new().unwrap();
        let (two_done, go) = (Event::new().unwrap(), Event::new().unwrap());
        let flag = Value::new(0u32).unwrap();
        for i in 0..3 {
            q.put(i).unwrap();
        }
        assert_eq!(q.unfinished(), 3);
        let mut child = Process::spawn({
            let args = (q.clone(), two_done.clone(), go.clone(), flag.clone());
            move || hold_the_last(args)
        })
        .unwrap();
        two_done.wait_timeout(PATIENCE).unwrap();
        assert_eq!(q.unfinished(), 1);
        assert_eq!(q.qsize(), 0, "every item was got");
        // A join in a thread: it must still be waiting while one item is
        // unfinished.
        let (joined_tx, joined) = mpsc::channel();
        let joiner = std::thread::spawn({
            let (q, flag) = (q.clone(), flag.clone());
            move || {
                q.join_timeout(PATIENCE).unwrap();
                joined_tx.send(flag.get().unwrap()).unwrap();
            }
        });
        assert!(
            joined.recv_timeout(Duration::from_millis(300)).is_err(),
            "join returned early"
        );
        let e = q.join_timeout(Duration::from_millis(50)).unwrap_err();
        assert!(
            matches!(e, Error::Timeout(d) if d == Duration::from_millis(50)),
            "{e}"
        );
        go.set();
        q.join_timeout(Duration::MAX).unwrap();
        // The flag is set before the last task_done: the join sees it.
        assert_eq!(joined.recv_timeout(PATIENCE).unwrap(), 1);
        joiner.join().unwrap();
        assert!(child.join().unwrap());
        q.join_timeout(Duration::ZERO).unwrap();
    });
}

#[test]
fn one_task_done_too_many_is_an_error_that_changes_nothing() {
    let q = JoinableQueue::<String>::new().unwrap();
    let e = q.task_done().unwrap_err();
    assert!(matches!(e, Error::TaskDoneTooOften), "{e}");
    assert_eq!(
        e.to_string(),
        "task_done was called more times than items were put in the queue"
    );
    q.put("a".to_owned()).unwrap();
    q.put("b".to_owned()).unwrap();
    assert_eq!(q.get().unwrap(), "a");
    q.task_done().unwrap();
    // Python counts against the puts, not the gets: "b" still waits, and
    // may be marked done before it is got.
    q.task_done().unwrap();
    assert!(matches!(q.task_done(), Err(Error::TaskDoneTooOften)));
    assert_eq!(q.unfinished(), 0);
    q.join_timeout(Duration::ZERO).unwrap();
    assert_eq!(q.get().unwrap(), "b", "the queue itself is untouched");
}

#[test]
fn a_put_into_a_full_queue_that_fails_counts_no_task() {
    let q = JoinableQueue::bounded(1).unwrap();
    q.put(1u8).unwrap();
    assert!(matches!(q.try_put(2), Err(Error::Full)));
    assert!(
        q.put_timeout(3, Duration::from_millis(10))
            .unwrap_err()
            .is_timeout()
    );
    assert_eq!(q.unfinished(), 1);
    assert_eq!(q.get().unwrap(), 1);
    q.task_done().unwrap();
    q.join_timeout(Duration::ZERO).unwrap();
}

/// Takes an item and marks it done, takes another, says so, and then
/// waits to be killed.
fn get_and_hang((q, got): (JoinableQueue<u32>, Event)) {
    q.get_timeout(PATIENCE).unwrap();
    q.task_done().unwrap();
    q.get_timeout(PATIENCE).unwrap();
    got.set();
    std::thread::sleep(PATIENCE);
}

under_every_method! {
    fn a_consumer_killed_before_task_done_leaves_join_timeout_a_way_out(method) {
        within(LIMIT, move || {
            let q = JoinableQueue::new().unwrap();
            let got = Event::new().unwrap();
            q.put(1).unwrap();
            q.put(2).unwrap();
            let mut consumer = Builder::new()
                .start_method(method)
                .spawn_fn(get_and_hang, (q.clone(), got.clone()))
                .unwrap();
            got.wait_timeout(PATIENCE).unwrap();
            consumer.kill().unwrap();
            assert!(consumer.join().unwrap_err().signal().is_some());
            assert_eq!(q.qsize(), 0);
            assert_eq!(q.unfinished(), 1, "the item the consumer took with it");
            let e = q.join_timeout(Duration::from_millis(200)).unwrap_err();
            assert!(e.is_timeout(), "{e}");
            // Whoever knows that item is lost may mark it done.
            q.task_done().unwrap();
            q.join_timeout(Duration::ZERO).unwrap();
        });
    }
}
