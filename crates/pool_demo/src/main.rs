//! Section 5 of the 多进程 tutorial ("进程池 Pool"): put a function and its inputs
//! into a pool of worker processes and get the return values back, in
//! order, with `map` and `apply_async`.
//!
//! The Python it mirrors:
//!
//! ```python
//! import multiprocessing as mp
//!
//! def job(x):
//!     return x*x
//!
//! def multicore():
//!     pool = mp.Pool()                       # or mp.Pool(processes=3)
//!     res = pool.map(job, range(10))
//!     print(res)
//!     res = pool.apply_async(job, (2,))
//!     print(res.get())
//!     multi_res = [pool.apply_async(job, (i,)) for i in range(10)]
//!     print([res.get() for res in multi_res])
//! ```
//!
//! Run it with
//!
//!     cargo run -p pool_demo
//!
//! It prints the tutorial's four results, each under a heading that names
//! the Python call: `[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]` from `map` (with
//! one worker per CPU, then with 3), `4` from one `apply_async`, the same
//! list again from ten `apply_async` calls. Then it shows what the
//! tutorial asks you to watch in a CPU monitor: which worker process ran
//! which task.
//!
//! Last, the pool's async side (chapter 6, "The pool's async side"):
//! `map_async`, `starmap`, `starmap_async` with `wait` and `successful`,
//! `successful` asked too early, and three naps of 500, 100 and 300 ms
//! whose results `as_completed` yields in the order they finish, as
//! Python's callbacks and `concurrent.futures.as_completed` see them.

use std::collections::BTreeMap;
use std::thread;
use std::time::Duration;

use mpcore::{AsyncResult, Pool};

/// The tutorial's `job`.
fn job(x: u64) -> u64 {
    x * x
}

/// `job`, plus the pid of the worker that ran it. The short sleep stands
/// for real work: without it the first worker to answer could take most
/// tasks before the others have woken up.
fn job_with_pid(x: u64) -> (u32, u64) {
    thread::sleep(Duration::from_millis(20));
    (std::process::id(), x * x)
}

/// Python's `power(base, exp)`, a task of two arguments for `starmap`.
fn power(base: u64, exp: u32) -> u64 {
    base.pow(exp)
}

/// Sleeps `ms` milliseconds and returns them: tasks that finish in a
/// known order.
fn nap(ms: u64) -> u64 {
    thread::sleep(Duration::from_millis(ms));
    ms
}

/// The pool's async side, on a pool of 3 workers.
fn async_side(pool: &Pool) -> Result<(), mpcore::Error> {
    println!("== res = pool.map_async(job, range(10)); res.get() ==");
    let res = pool.map_async(job, 0..10)?;
    println!("{:?}", res.get()?);

    println!("== pool.starmap(power, [(2, 10), (3, 2), (10, 3)]) ==");
    println!("{:?}", pool.starmap(power, [(2, 10), (3, 2), (10, 3)])?);

    println!("== res = pool.starmap_async(power, [(2, 3), (5, 2)]); res.wait() ==");
    let mut res = pool.starmap_async(power, [(2, 3), (5, 2)])?;
    res.wait();
    let (ready, successful) = (res.ready(), res.successful()?);
    let values = res.get()?;
    println!("ready: {ready}, successful: {successful}, get: {values:?}");

    println!("== res = pool.apply_async(nap, (300,)); res.successful() ==");
    let mut res = pool.apply_async(nap, 300)?;
    // Python raises ValueError: "not finished" is neither yes nor no.
    match res.successful() {
        Ok(successful) => println!("successful: {successful}"),
        Err(e) => println!("error: {e}"),
    }
    res.get()?;

    println!("== as_completed: naps of 500, 100 and 300 ms ==");
    let mut tasks = pool.as_completed();
    for ms in [500, 100, 300] {
        tasks.apply_async(nap, ms)?;
    }
    for (number, slept) in tasks {
        println!("task {number} slept {} ms", slept?);
    }
    Ok(())
}

fn main() -> Result<(), mpcore::Error> {
    let pool = Pool::with_cpu_count()?;
    println!(
        "== pool = mp.Pool() ({} workers, one per CPU); pool.map(job, range(10)) ==",
        pool.processes()
    );
    println!("{:?}", pool.map(job, 0..10)?);

    let pool3 = Pool::new(3)?;
    println!("== pool = mp.Pool(processes=3); pool.map(job, range(10)) ==");
    println!("{:?}", pool3.map(job, 0..10)?);

    println!("== res = pool.apply_async(job, (2,)); res.get() ==");
    let res = pool.apply_async(job, 2)?;
    println!("{}", res.get()?);

    println!("== multi_res = [pool.apply_async(job, (i,)) for i in range(10)] ==");
    // Every task is sent before the first `get` waits: they run in parallel.
    let multi_res = (0..10)
        .map(|i| pool.apply_async(job, i))
        .collect::<Result<Vec<_>, _>>()?;
    let squares = multi_res
        .into_iter()
        .map(AsyncResult::get)
        .collect::<Result<Vec<_>, _>>()?;
    println!("{squares:?}");

    println!("== who ran what: pool.map(job_with_pid, range(10)) with processes=3 ==");
    let mut tasks_by_worker: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for (x, (pid, _square)) in (0..).zip(pool3.map(job_with_pid, 0..10)?) {
        tasks_by_worker.entry(pid).or_default().push(x);
    }
    for (pid, xs) in &tasks_by_worker {
        println!("worker {pid} ran x = {xs:?}");
    }
    println!("main   {} ran none of them", std::process::id());

    async_side(&pool3)?;

    // Python's pool.close(); pool.join(): let the workers exit, reap them.
    for pool in [pool, pool3] {
        pool.close();
        pool.join()?;
    }
    Ok(())
}
