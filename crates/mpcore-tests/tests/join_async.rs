//! `join_async` of 1,000 children from one tokio task, on a
//! current-thread runtime: every value comes back, and the process
//! never holds more than a handful of threads meanwhile (counted in
//! `/proc/self/task` at every wake of the task). Alone in its file, so
//! that no other test's threads are counted.
//!
//! Each child costs the parent two descriptors (its result socket and
//! its pidfd): 1,000 children need more than the usual soft limit of
//! 1,024 open files, so the test raises the soft limit (up to the hard
//! one) first, as a program that holds this many children must.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use mpcore::Process;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use testkit::within;

const CHILDREN: usize = 1_000;

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Raises the soft limit on open files to what `needed` asks for, up to
/// the hard limit; fails the test, saying why, if the hard limit is lower.
fn make_room_for(needed: u64) {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        hard >= needed,
        "this test needs {needed} open files, and the hard limit (ulimit -Hn) is {hard}"
    );
    if soft < needed {
        setrlimit(Resource::RLIMIT_NOFILE, needed, hard).unwrap();
    }
}

#[test]
fn a_thousand_children_awaited_from_one_task_on_one_thread() {
    make_room_for(2 * CHILDREN as u64 + 256);
    let (values, peak) = within(Duration::from_secs(120), || {
        let mut children: Vec<Process<u64>> = (0..CHILDREN as u64)
            .map(|i| Process::spawn(move || i * 3).unwrap())
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        rt.block_on(async {
            // Every join polled from this one task, each wake counting
            // the threads.
            let mut joins: Vec<Pin<Box<dyn Future<Output = mpcore::Result<u64>> + '_>>> = children
                .iter_mut()
                .map(|c| Box::pin(c.join_async()) as _)
                .collect();
            let mut values: Vec<Option<u64>> = vec![None; CHILDREN];
            let mut peak = threads();
            std::future::poll_fn(|cx| {
                peak = peak.max(threads());
                for (i, join) in joins.iter_mut().enumerate() {
                    if values[i].is_none() {
                        if let Poll::Ready(value) = join.as_mut().poll(cx) {
                            values[i] = Some(value.unwrap());
                        }
                    }
                }
                if values.iter().all(Option::is_some) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
            (
                values.into_iter().map(Option::unwrap).collect::<Vec<_>>(),
                peak,
            )
        })
    });
    let expected: Vec<u64> = (0..CHILDREN as u64).map(|i| i * 3).collect();
    assert_eq!(values, expected);
    assert!(peak < 10, "{peak} threads at the peak");
}
