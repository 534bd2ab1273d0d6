//! A task that panics, exits or is killed fails alone: the pool replaces
//! the worker and goes on.
//! Every test runs under a deadline: a hang fails, it never blocks CI.

use std::collections::BTreeSet;
use std::thread;
use std::time::Duration;

use mpcore::{Error, ExitStatus, Pool};
use nix::sys::signal::{Signal, kill, raise};
use nix::unistd::Pid;
use testkit::{proc_state, within};

mod pool_tasks;
use pool_tasks::*;

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
                assert_eq!(*status, Some(ExitStatus::Signal(mpcore::Signal::SIGKILL)));
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
            matches!(err, Error::WorkerDied { pid, status: Some(ExitStatus::Signal(mpcore::Signal::SIGKILL)) } if pid == victim),
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

/// A result that fails in a worker in the way its number says: 2, its
/// `Serialize` panics; 3, its `Drop` panics; 4, its `Serialize` returns
/// an error. (Its task panics on 1.)
#[derive(Debug, PartialEq, serde::Deserialize)]
struct FailsByNumber(u32);

impl serde::Serialize for FailsByNumber {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 % 5 {
            2 if in_a_worker() => panic!("{} refuses to be serialized", self.0),
            4 if in_a_worker() => Err(serde::ser::Error::custom(format!(
                "{} is unwelcome",
                self.0
            ))),
            _ => s.serialize_newtype_struct("FailsByNumber", &self.0),
        }
    }
}

impl Drop for FailsByNumber {
    fn drop(&mut self) {
        if self.0 % 5 == 3 && in_a_worker() {
            panic!("{} refuses to be dropped", self.0);
        }
    }
}

fn fails_by_number(x: u32) -> FailsByNumber {
    if x % 5 == 1 {
        panic!("task {x} failed");
    }
    FailsByNumber(x)
}

/// An argument whose `Deserialize` panics in a worker for 7.
#[derive(Debug, serde::Serialize)]
struct SevenIsUnreadable(u32);

impl<'de> serde::Deserialize<'de> for SevenIsUnreadable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let x = u32::deserialize(d)?;
        if x == 7 && in_a_worker() {
            panic!("seven refuses to be deserialized");
        }
        Ok(SevenIsUnreadable(x))
    }
}

fn unwrap_seven(x: SevenIsUnreadable) -> u32 {
    x.0
}

#[test]
fn every_failure_inside_one_chunk_fails_its_task_alone() {
    within(LIMIT, || {
        TEST_PID.store(std::process::id(), std::sync::atomic::Ordering::SeqCst);
        let pool = Pool::new(1).unwrap();
        // One chunk of 20 tasks, failing every way a task can, in turn.
        let results: Vec<_> = pool
            .imap_chunked(fails_by_number, 0..20, 20)
            .unwrap()
            .collect();
        for (x, result) in results.into_iter().enumerate() {
            let x = x as u32;
            match (x % 5, result) {
                (0, Ok(value)) => assert_eq!(value, FailsByNumber(x)),
                (1, Err(e)) => assert_eq!(e.panic_message(), Some(&*format!("task {x} failed"))),
                (2, Err(e)) => assert_eq!(
                    e.panic_message(),
                    Some(&*format!(
                        "the result panicked while it was being serialized: {x} refuses to be \
                         serialized"
                    ))
                ),
                (3, Err(e)) => assert_eq!(
                    e.panic_message(),
                    Some(&*format!(
                        "the result's destructor panicked after it was serialized: {x} refuses \
                         to be dropped"
                    ))
                ),
                (4, Err(Error::Codec { action, reason })) => {
                    assert_eq!(action, "encode");
                    assert_eq!(reason, format!("{x} is unwelcome"));
                }
                (_, other) => panic!("task {x}: {other:?}"),
            }
        }
        // An argument that panics while it is read: after it, where the
        // next one starts is unknown, so the rest of its chunk fails too.
        let inputs = (0..12).map(SevenIsUnreadable);
        let results: Vec<_> = pool
            .imap_chunked(unwrap_seven, inputs, 12)
            .unwrap()
            .collect();
        for (x, result) in results.into_iter().enumerate() {
            match (x, result) {
                (0..7, Ok(value)) => assert_eq!(value as usize, x),
                (7, Err(e)) => assert_eq!(
                    e.panic_message(),
                    Some(
                        "the argument panicked while it was being deserialized: seven refuses \
                         to be deserialized"
                    )
                ),
                (8.., Err(Error::Codec { action, reason })) => {
                    assert_eq!(action, "decode");
                    assert_eq!(
                        reason,
                        "an earlier argument of its chunk panicked while it was being \
                         deserialized: seven refuses to be deserialized"
                    );
                }
                (_, other) => panic!("task {x}: {other:?}"),
            }
        }
        assert_eq!(pool.map(square, 0..10).unwrap()[9], 81);
    });
}
