//! Issue 20's goal for `join_async`: 1,000 children awaited from one
//! tokio task on a current-thread runtime, beside the same 1,000 joined
//! from 1,000 threads (one blocking `join` each). Goal: the async
//! version within 1.5x of the threads' time, with fewer than 10 threads
//! (the thread count is checked by mpcore-tests' `join_async` test and
//! by async_join_demo, not timed here).
//!
//! No CPython row: Python has no async join, and its nearest,
//! `connection.wait` over the sentinels in a loop, answers another
//! question (one thread polling, not a runtime); this compares mpcore's
//! two ways of waiting for many children with each other.
//!
//! What is timed: the children are started (untimed), each waiting for
//! one `Event`; the timed part sets it, then waits for every child's
//! value. Run with `cargo bench -p mpbench --bench join_async`.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use mpcore::{Event, Process};
use nix::sys::resource::{Resource, getrlimit, setrlimit};

const CHILDREN: u64 = 1_000;

fn wait_then(go: Event, i: u64) -> u64 {
    go.wait_timeout(Duration::from_secs(60)).unwrap();
    i
}

/// 1,000 children, each waiting for `go`. A fork that finds stdout
/// locked for half a second (`Error::StreamLocked`: on a loaded machine,
/// once the threads version has made this process multi-threaded, the
/// probe thread that checks the lock may not run in time) is tried again.
fn start(go: &Event) -> Vec<Process<u64>> {
    (0..CHILDREN)
        .map(|i| {
            loop {
                let go = go.clone();
                match Process::spawn(move || wait_then(go, i)) {
                    Err(mpcore::Error::StreamLocked { .. }) => continue,
                    started => break started.unwrap(),
                }
            }
        })
        .collect()
}

fn from_one_task(rt: &tokio::runtime::Runtime, children: &mut [Process<u64>]) -> u64 {
    rt.block_on(async {
        let mut joins: Vec<Pin<Box<dyn Future<Output = mpcore::Result<u64>> + '_>>> = children
            .iter_mut()
            .map(|c| Box::pin(c.join_async()) as _)
            .collect();
        let mut values: Vec<Option<u64>> = vec![None; joins.len()];
        std::future::poll_fn(|cx| {
            for (join, value) in joins.iter_mut().zip(&mut values) {
                if value.is_none() {
                    if let Poll::Ready(v) = join.as_mut().poll(cx) {
                        *value = Some(v.unwrap());
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
        values.into_iter().flatten().sum()
    })
}

fn from_threads(children: Vec<Process<u64>>) -> u64 {
    let threads: Vec<_> = children
        .into_iter()
        .map(|mut c| std::thread::spawn(move || c.join().unwrap()))
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).sum()
}

fn join_async(c: &mut Criterion) {
    // Two descriptors per child: more than the usual soft limit of 1,024.
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let needed = 2 * CHILDREN + 256;
    if soft < needed {
        setrlimit(Resource::RLIMIT_NOFILE, needed.min(hard), hard).unwrap();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let expected = CHILDREN * (CHILDREN - 1) / 2;

    let mut group = c.benchmark_group("join_async");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("mpcore: 1,000 children, join_async from one task", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let go = Event::new().unwrap();
                let mut children = start(&go);
                let t0 = Instant::now();
                go.set();
                assert_eq!(from_one_task(&rt, &mut children), expected);
                total += t0.elapsed();
            }
            total
        })
    });
    group.bench_function("mpcore: 1,000 children, join from 1,000 threads", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let go = Event::new().unwrap();
                let children = start(&go);
                let t0 = Instant::now();
                go.set();
                assert_eq!(from_threads(children), expected);
                total += t0.elapsed();
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, join_async);
criterion_main!(benches);
