//! Section 7 of the 多进程 tutorial, "进程锁 Lock": two processes add to one shared
//! `Value`, first without a lock, then with one; then the same at scale,
//! where the updates that are lost without the lock are counted.
//!
//! The Python it mirrors:
//!
//! ```python
//! def job(v, num, l):
//!     l.acquire()            # the first half has no lock
//!     for _ in range(5):
//!         time.sleep(0.1)
//!         v.value += num
//!         print(v.value)
//!     l.release()
//!
//! l = mp.Lock()
//! v = mp.Value('i', 0)
//! p1 = mp.Process(target=job, args=(v, 1, l))
//! p2 = mp.Process(target=job, args=(v, 3, l))
//! p1.start(); p2.start(); p1.join(); p2.join()
//! ```
//!
//! Run it with
//!
//!     cargo run -p lock_demo
//!
//! It prints the numbers one per line, as the tutorial's output shows them.
//! Without the lock the two processes' additions interleave (the tutorial
//! got `1 4 5 8 9 12 13 16 17 20`); with it one process runs its five steps
//! first (`1 2 3 4 5 8 11 14 17 20`, or `3 6 9 12 15 16 17 18 19 20` when
//! the other one wins).
//! Then 2 processes x 100000 increments: without the lock some updates are
//! lost (it prints how many), with it the total is exactly 200000.

use std::thread;
use std::time::Duration;

use mpcore::{Event, Lock, Process, Value};

/// The tutorial's job: five times, wait 0.1 s, add `num`, print the value.
/// With `lock`, it holds the lock for all five steps.
fn job(v: &Value<i32>, num: i32, lock: Option<&Lock>) -> Result<(), Box<dyn std::error::Error>> {
    // l.acquire(); the guard releases it (l.release()) when the job ends.
    let _held = lock.map(Lock::acquire).transpose()?;
    for _ in 0..5 {
        thread::sleep(Duration::from_millis(100));
        // v.value += num: a read and a write, each atomic, the pair not.
        v.set(v.get()? + num)?;
        // print(v.value): stdout writes each line out at its newline, so
        // the numbers appear in the order they were made.
        println!("{}", v.get()?);
    }
    Ok(())
}

/// The tutorial's `multicore()`: p1 adds 1, p2 adds 3.
fn multicore(lock: Option<&Lock>) -> Result<(), Box<dyn std::error::Error>> {
    let v = Value::new(0i32)?;
    // Like Python's args=(v, num, l), each process gets the handles it
    // needs: clones, which share the one value and the one lock.
    let start = |num| {
        let (v, lock) = (v.clone(), lock.cloned());
        Process::spawn(move || job(&v, num, lock.as_ref()).map_err(|e| e.to_string()))
    };
    let mut p1 = start(1)?;
    let mut p2 = start(3)?;
    p1.join()??;
    p2.join()??;
    Ok(())
}

/// Once `go` is set, adds 1 to `v` `n` times with `v.set(v.get() + 1)`,
/// under `lock` if there is one.
fn count(v: &Value<u32>, go: &Event, n: u32, lock: Option<&Lock>) -> mpcore::Result<()> {
    go.wait()?;
    for _ in 0..n {
        let _held = lock.map(Lock::acquire).transpose()?;
        v.set(v.get()? + 1)?;
    }
    Ok(())
}

/// Two processes each `count` to `n` on one shared counter, under `lock`
/// if there is one. Returns the total.
fn increments(n: u32, lock: Option<&Lock>) -> Result<u32, Box<dyn std::error::Error>> {
    let v = Value::new(0u32)?;
    // A starting gun, so that the two run at the same time.
    let go = Event::new()?;
    let start = || {
        let (v, go, lock) = (v.clone(), go.clone(), lock.cloned());
        Process::spawn(move || count(&v, &go, n, lock.as_ref()).map_err(|e| e.to_string()))
    };
    let mut p1 = start()?;
    let mut p2 = start()?;
    go.set();
    p1.join()??;
    p2.join()??;
    Ok(v.get()?)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("without a lock:");
    multicore(None)?;
    let l = Lock::new()?;
    println!("with a lock:");
    multicore(Some(&l))?;

    const N: u32 = 100_000;
    println!("2 processes x {N} increments of v.set(v.get() + 1):");
    for (name, lock) in [("without a lock", None), ("with a lock", Some(&l))] {
        let total = increments(N, lock)?;
        println!("{name:>14}: {total} ({} updates lost)", 2 * N - total);
    }
    Ok(())
}
