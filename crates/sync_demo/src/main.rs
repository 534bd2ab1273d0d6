//! Chapter 14, "The rest of the synchronisation toolbox": Python's
//! `RLock`, `Semaphore`, `Condition`, `Barrier` and `JoinableQueue`, each
//! between real processes.
//!
//! - `rlock()`: two processes each make 5 deposits inside one hold of an
//!   `RLock`, and each deposit takes the lock again;
//! - `semaphore()`: 5 workers, 2 permits: never more than 2 inside at
//!   once; a bounded semaphore released once too often; a permit holder
//!   that is killed;
//! - `condition()`: a producer makes 3 items, one at a time, and 3
//!   consumers each wait for one;
//! - `barrier()`: three workers of 50, 100 and 150 ms a phase start each
//!   of three phases together; then a party killed while it waits breaks
//!   the barrier for the other one;
//! - `joinable_queue()`: two workers do six jobs and mark each one done;
//!   the producer's `join` returns once all six are done.
//!
//! The Python each one mirrors is in the chapter. Run it with
//!
//!     cargo run -p sync_demo
//!
//! It prints a `== name ==` line per section, then what the Python
//! prints, and for the semaphore and the barrier what a killed process
//! leaves behind.

use std::thread;
use std::time::{Duration, Instant};

use mpcore::{Barrier, Condition, Error, Event, JoinableQueue, Process, RLock, Semaphore, Value};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// A section of the chapter: its title, and the function that runs it.
type Section = (&'static str, fn() -> Res<()>);

/// Python's `deposit`: takes the lock again, inside `transfer`'s hold.
fn deposit(lock: &RLock, balance: &Value<i32>, amount: i32) -> mpcore::Result<()> {
    let _again = lock.acquire()?; // with lock:  (this thread holds it already)
    *balance.lock()? += amount;
    Ok(())
}

/// Python's `transfer`: one hold of the lock around `n` deposits.
fn transfer(lock: &RLock, balance: &Value<i32>, amount: i32, n: u32) -> mpcore::Result<()> {
    let _hold = lock.acquire()?; // with lock:
    for _ in 0..n {
        deposit(lock, balance, amount)?;
    }
    println!("{n} deposits of {amount} in one hold");
    Ok(())
} // the outermost guard drops here: now the other process may go in

fn rlock() -> Res<()> {
    let lock = RLock::new()?;
    let balance = Value::new(0i32)?;
    let ps = [1, 10]
        .into_iter()
        .map(|amount| {
            let (lock, balance) = (lock.clone(), balance.clone());
            Process::spawn(move || transfer(&lock, &balance, amount, 5).map_err(|e| e.to_string()))
        })
        .collect::<mpcore::Result<Vec<_>>>()?;
    for mut p in ps {
        p.join()??;
    }
    println!("balance: {}", balance.get()?);
    Ok(())
}

/// Python's `worker`: inside for 0.1 s, while holding a permit.
fn worker(sem: &Semaphore, inside: &Value<u32>, most: &Value<u32>) -> mpcore::Result<()> {
    let _permit = sem.acquire()?; // with sem:
    {
        let mut now = inside.lock()?;
        *now += 1;
        let mut most = most.lock()?;
        *most = (*most).max(*now);
    }
    thread::sleep(Duration::from_millis(100));
    *inside.lock()? -= 1;
    Ok(())
} // the permit gives itself back here

fn semaphore() -> Res<()> {
    let sem = Semaphore::new(2)?;
    let (inside, most) = (Value::new(0u32)?, Value::new(0u32)?);
    let start = Instant::now();
    let ps = (0..5)
        .map(|_| {
            let (sem, inside, most) = (sem.clone(), inside.clone(), most.clone());
            Process::spawn(move || worker(&sem, &inside, &most).map_err(|e| e.to_string()))
        })
        .collect::<mpcore::Result<Vec<_>>>()?;
    for mut p in ps {
        p.join()??;
    }
    println!(
        "5 workers, 2 permits: at most {} inside at once, {:.1} s in all",
        most.get()?,
        start.elapsed().as_secs_f64()
    );

    let bounded = Semaphore::bounded(2)?;
    let e = bounded
        .release()
        .err()
        .ok_or("a release too many was let through")?;
    println!("Semaphore::bounded(2).release(): {e}");

    // A holder killed with its permit: the permit is gone with it, as in
    // Python, until someone gives it back.
    let held = Event::new()?;
    let mut holder = Process::spawn({
        let (sem, held) = (sem.clone(), held.clone());
        move || {
            let _permit = sem.acquire();
            held.set();
            thread::sleep(Duration::from_secs(60));
        }
    })?;
    held.wait_timeout(Duration::from_secs(30))?;
    holder.kill()?;
    let _ = holder.join(); // killed by SIGKILL, as asked
    println!(
        "a permit holder was killed: {} of 2 permits free",
        sem.value()
    );
    sem.release()?;
    println!("after sem.release(): {} of 2 permits free", sem.value());
    Ok(())
}

/// Python's `consumer`: waits until there is an item, takes it.
fn consumer(cond: &Condition, item: &Value<u32>, name: u32) -> mpcore::Result<()> {
    let guard = cond.acquire()?; // with cond:
    let _guard = guard.wait_for(|| item.get().is_ok_and(|n| n > 0))?;
    println!("consumer {name} took item {}", item.get()?);
    item.set(0)?; // taken
    Ok(())
}

fn condition() -> Res<()> {
    let cond = Condition::new()?;
    let item = Value::new(0u32)?;
    let consumers = (0..3)
        .map(|name| {
            let (cond, item) = (cond.clone(), item.clone());
            Process::spawn(move || consumer(&cond, &item, name).map_err(|e| e.to_string()))
        })
        .collect::<mpcore::Result<Vec<_>>>()?;
    thread::sleep(Duration::from_millis(200)); // let them all wait
    for n in 1..=3 {
        {
            let guard = cond.acquire()?; // with cond:
            item.set(n)?;
            println!("producer made item {n}");
            guard.notify(1); // wakes one consumer
        }
        thread::sleep(Duration::from_millis(100));
    }
    for mut c in consumers {
        c.join()??;
    }
    Ok(())
}

/// Python's `worker` of the barrier: three phases of `ms` each, and
/// nobody starts a phase before all three finished the one before.
fn phases(b: &Barrier, name: &str, ms: u64) -> mpcore::Result<()> {
    for phase in 1..=3 {
        thread::sleep(Duration::from_millis(ms)); // each its own time
        println!("{name} finished phase {phase}");
        // Python's `if b.wait() == 0:`; here the leader is the last to
        // arrive, the one that lets the others go.
        if b.wait()?.is_leader {
            println!("-- all three finished phase {phase}");
        }
    }
    Ok(())
}

fn barrier() -> Res<()> {
    let b = Barrier::new(3)?;
    let ps = [("a", 50), ("b", 100), ("c", 150)]
        .into_iter()
        .map(|(name, ms)| {
            let b = b.clone();
            Process::spawn(move || phases(&b, name, ms).map_err(|e| e.to_string()))
        })
        .collect::<mpcore::Result<Vec<_>>>()?;
    for mut p in ps {
        p.join()??;
    }
    a_party_killed()
}

/// One of two parties killed while it waits: Python's other party waits
/// for ever, timeout or not; here it finds the barrier broken.
fn a_party_killed() -> Res<()> {
    let b = Barrier::new(2)?;
    let mut party = Process::spawn({
        let b = b.clone();
        move || b.wait().is_ok()
    })?;
    let start = Instant::now();
    while b.n_waiting() < 1 {
        if start.elapsed() > Duration::from_secs(30) {
            return Err("the party never reached the barrier".into());
        }
        thread::sleep(Duration::from_millis(1));
    }
    party.kill()?;
    let _ = party.join(); // killed by SIGKILL, as asked
    match b.wait_timeout(Duration::from_secs(2)) {
        Err(Error::BrokenBarrier) => println!("the other party was killed: the barrier is broken"),
        other => return Err(format!("a broken barrier expected, not {other:?}").into()),
    }
    b.reset()?;
    println!("after reset, is_broken = {}", b.is_broken());
    Ok(())
}

/// Python's `consumer` of the joinable queue: does jobs until a `None`,
/// and marks each one done, the `None` too.
fn do_jobs(q: &JoinableQueue<Option<u32>>, name: &str) -> mpcore::Result<()> {
    while let Some(job) = q.get()? {
        thread::sleep(Duration::from_millis(50)); // the work
        println!("{name} did job {job}");
        q.task_done()?;
    }
    q.task_done() // for the None
}

fn joinable_queue() -> Res<()> {
    let q = JoinableQueue::<Option<u32>>::new()?;
    let ps = ["w1", "w2"]
        .into_iter()
        .map(|name| {
            let q = q.clone();
            Process::spawn(move || do_jobs(&q, name).map_err(|e| e.to_string()))
        })
        .collect::<mpcore::Result<Vec<_>>>()?;
    for job in 0..6 {
        q.put(Some(job))?;
    }
    q.join()?; // returns once every job is marked done
    println!("all 6 jobs done");
    for _ in &ps {
        q.put(None)?; // one stop signal per worker
    }
    for mut p in ps {
        p.join()??;
    }
    Ok(())
}

fn main() -> Res<()> {
    // One section per type.
    let sections: [Section; 5] = [
        ("RLock", rlock),
        ("Semaphore", semaphore),
        ("Condition", condition),
        ("Barrier", barrier),
        ("JoinableQueue", joinable_queue),
    ];
    for (name, run) in sections {
        println!("== {name} ==");
        run()?;
    }
    Ok(())
}
