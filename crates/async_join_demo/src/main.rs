//! Chapter 13, "Who is running, and awaiting children": Python's
//! `current_process()`, `parent_process()`, `active_children()` and
//! `p.interrupt()`, then 1,000 children awaited from one tokio task on
//! one thread (Python's nearest is `multiprocessing.connection.wait` over
//! the children's sentinels, in a loop).
//!
//! ```python
//! import multiprocessing as mp
//! from multiprocessing.connection import wait
//!
//! def who(_):
//!     me, parent = mp.current_process(), mp.parent_process()
//!     return f"{me.name}, by {mp.get_start_method()}; parent {parent.name}, alive: {parent.is_alive()}"
//!
//! if __name__ == "__main__":
//!     print(mp.current_process().name, mp.parent_process())
//!     procs = [mp.Process(target=pow, args=(i, 2)) for i in range(1000)]
//!     for p in procs: p.start()
//!     pending = {p.sentinel: p for p in procs}
//!     while pending:
//!         for s in wait(list(pending)): pending.pop(s).join()
//! ```
//!
//! Run it with
//!
//!     cargo run -p async_join_demo
//!
//! Every line is the same from run to run (no pids, no times). The last
//! counts the threads of the process while the children are awaited:
//! the runtime's (the main thread) and one of mpcore's that watches the
//! fork server the first part started; never one per child.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use mpcore::process::Builder;
use mpcore::{
    Error, Event, Process, active_children, current_process, get_all_start_methods, parent_process,
};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::resource::{Resource, getrlimit, setrlimit};

const CHILDREN: u64 = 1_000;

/// What a child says of itself and of its parent.
fn who(_: ()) -> String {
    let me = current_process();
    let method = me
        .start_method()
        .map_or("none".to_owned(), |m| m.to_string());
    match parent_process() {
        Some(parent) => format!(
            "{}, started by {method}; parent {}, alive: {}",
            me.name(),
            parent.name(),
            parent.is_alive()
        ),
        None => format!("{}, started by {method}; no parent", me.name()),
    }
}

fn wait_for(go: Event) -> bool {
    go.wait_timeout(Duration::from_secs(30)).is_ok()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("main: {}", who(()));
    for method in get_all_start_methods() {
        let mut child = Builder::new()
            .start_method(method)
            .name(format!("{method}-child"))
            .spawn_fn(who, ())?;
        println!("child: {}", child.join()?);
    }

    // active_children: three wait, one has already finished.
    let go = Event::new()?;
    let mut done = Builder::new().name("quick").spawn_fn(|()| 1, ())?;
    let mut waiting = (1..=3)
        .map(|n| {
            Builder::new()
                .name(format!("waiter-{n}"))
                .spawn_fn(wait_for, go.clone())
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Its sentinel (the pidfd) becomes readable when it has exited.
    poll(
        &mut [PollFd::new(done.sentinel(), PollFlags::POLLIN)],
        PollTimeout::from(10_000u16),
    )?;
    for child in active_children() {
        println!("active child: {}", child.name());
    }
    println!("quick was reaped: exit code {:?}", done.exitcode());
    done.join()?;
    go.set();
    for child in &mut waiting {
        child.join()?;
    }
    println!(
        "active children after the joins: {}",
        active_children().len()
    );

    // interrupt: SIGINT, as Ctrl-C would send it.
    let mut sleeper = Process::spawn(|| std::thread::sleep(Duration::from_secs(30)))?;
    sleeper.interrupt()?;
    match sleeper.join() {
        Err(e @ Error::Signaled { .. }) => println!(
            "interrupted: {}; exit code {:?}",
            e.signal().map_or("?".to_owned(), |s| s.to_string()),
            sleeper.exitcode()
        ),
        other => println!("interrupted: unexpected {other:?}"),
    }

    await_a_thousand()
}

/// Starts 1,000 children, then awaits them all from one task on a
/// current-thread runtime.
fn await_a_thousand() -> Result<(), Box<dyn std::error::Error>> {
    // Each child holds two descriptors of ours (its result socket and its
    // pidfd): more than the usual soft limit of 1,024 open files.
    let needed = 2 * CHILDREN + 256;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < needed {
        setrlimit(Resource::RLIMIT_NOFILE, needed.min(hard), hard)?;
    }
    let mut children = (0..CHILDREN)
        .map(|i| Process::spawn(move || i * i))
        .collect::<Result<Vec<_>, _>>()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let (sum, peak) = rt.block_on(async {
        let mut joins: Vec<Pin<Box<dyn Future<Output = mpcore::Result<u64>> + '_>>> = children
            .iter_mut()
            .map(|c| Box::pin(c.join_async()) as _)
            .collect();
        let mut results: Vec<Option<mpcore::Result<u64>>> = joins.iter().map(|_| None).collect();
        let mut peak = threads();
        // One task polls every join; each is woken by its child's
        // descriptors, through tokio's reactor.
        std::future::poll_fn(|cx| {
            peak = peak.max(threads());
            for (join, result) in joins.iter_mut().zip(&mut results) {
                if result.is_none() {
                    if let Poll::Ready(r) = join.as_mut().poll(cx) {
                        *result = Some(r);
                    }
                }
            }
            if results.iter().all(Option::is_some) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        let sum = results.into_iter().flatten().sum::<mpcore::Result<u64>>();
        (sum, peak)
    });
    println!(
        "awaited {CHILDREN} children from one task: the sum of their squares is {}",
        sum?
    );
    println!("threads in this process while they were awaited: {peak}");
    Ok(())
}

/// The threads of this process, as `/proc/self/task` lists them.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}
