//! A child dies with its parent process, never with the thread that
//! started it: a thread pool's worker, a scoped thread or a short-lived
//! request handler may start a child and end long before it.

use std::time::Duration;

use mpcore::process::Builder;
use mpcore::{Process, StartMethod};
use testkit::within;

const LIMIT: Duration = Duration::from_secs(60);

/// Outlives the thread that started it by far.
fn slow_increment(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(300));
    x + 1
}

#[test]
fn a_child_of_a_thread_that_ended_runs_on_under_every_method() {
    within(LIMIT, || {
        for method in [
            StartMethod::Fork,
            StartMethod::Spawn,
            StartMethod::ForkServer,
        ] {
            for round in 0..5u64 {
                let mut child = std::thread::spawn(move || {
                    let child = Builder::new()
                        .start_method(method)
                        .spawn_fn(slow_increment, round);
                    // Long enough for the child to have asked for its
                    // death signal (or to have started, under Spawn)
                    // before this thread ends.
                    std::thread::sleep(Duration::from_millis(50));
                    child
                })
                .join()
                .expect("the starting thread")
                .expect("started");
                // The thread that started it has ended by now.
                assert_eq!(
                    child.join_timeout(Duration::from_secs(20)).unwrap(),
                    round + 1,
                    "{method}, round {round}"
                );
            }
        }
    });
}

#[test]
fn a_closure_forked_from_a_scoped_thread_outlives_the_scope() {
    within(LIMIT, || {
        let mut child = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let child = Process::spawn(|| {
                        std::thread::sleep(Duration::from_millis(300));
                        String::from("still here")
                    });
                    // Long enough for the child to have asked for its
                    // death signal before this thread ends.
                    std::thread::sleep(Duration::from_millis(50));
                    child
                })
                .join()
                .expect("the scoped thread")
        })
        .expect("forked");
        assert_eq!(child.join().unwrap(), "still here");
    });
}

#[test]
fn a_forked_child_forks_from_its_own_threads_too() {
    within(LIMIT, || {
        // The test runs on a thread of the harness, so this fork is made
        // by mpcore's forking thread; in the child, that thread's copy is
        // the only one, and a thread of the child's must get a forking
        // thread of the child's own, not the parent's copied one.
        let mut child = Process::spawn(|| {
            std::thread::spawn(|| {
                let mut grandchild = Process::spawn(|| {
                    std::thread::sleep(Duration::from_millis(100));
                    7u32
                })
                .unwrap();
                grandchild.join().unwrap()
            })
            .join()
            .unwrap()
                + 1
        })
        .unwrap();
        assert_eq!(child.join_timeout(Duration::from_secs(20)).unwrap(), 8);
    });
}

/// How many of this process's threads have a name that starts with
/// `prefix` (the kernel keeps the first 15 bytes of a name).
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end().starts_with(prefix))
        .count()
}

/// A fork made while other threads run first asks a thread of mpcore's
/// whether stdout and stderr are free (`start/streams.rs`). That thread
/// is started once and lasts: it was one new thread per fork, which made
/// every such fork several times dearer. A forked child, which holds a
/// copy of its parent's record of that thread but not the thread, starts
/// its own when it forks from threads of its own.
#[test]
fn forks_from_a_process_with_threads_share_one_stream_probe() {
    within(LIMIT, || {
        // The harness runs each test on a thread of its own, so this
        // process has threads: its forks take the streams' locks.
        for x in 0..20u64 {
            assert_eq!(
                Process::spawn(move || x + 1).unwrap().join().unwrap(),
                x + 1
            );
        }
        assert_eq!(threads_named("mpcore-stdio-pr"), 1, "one lasting probe");

        let mut child = Process::spawn(|| -> (u64, usize) {
            let from_a_thread =
                std::thread::spawn(|| Process::spawn(|| 41u64 + 1).unwrap().join().unwrap());
            let here = Process::spawn(|| 1u64).unwrap().join().unwrap();
            let sum = from_a_thread.join().unwrap() + here;
            (sum, threads_named("mpcore-stdio-pr"))
        })
        .unwrap();
        let (sum, probes) = child.join_timeout(LIMIT).unwrap();
        assert_eq!(sum, 43, "the grandchildren's answers");
        assert_eq!(probes, 1, "the child's own probe, and only one");
    });
}
