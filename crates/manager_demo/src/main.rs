//! Chapter 15, "Managers": a child fills a managed dict and reverses a
//! managed list; then eight workers count into one dict, first the
//! Python way (a get, then a set: updates are lost), then with
//! `update_with`, which runs the increment in the manager (none is lost);
//! then what a proxy call costs beside a `Value` under its lock, and what
//! a proxy says once its manager is killed.
//!
//! The Python it mirrors:
//!
//! ```python
//! def fill(d, l):
//!     for i in range(5):
//!         d[f"k{i}"] = i * i
//!     l.reverse()
//!
//! def count(d, n):
//!     for _ in range(n):
//!         d["hits"] += 1
//!
//! with mp.Manager() as manager:
//!     d = manager.dict()
//!     l = manager.list(range(5))
//!     p = mp.Process(target=fill, args=(d, l)); p.start(); p.join()
//!     print("a child filled the dict:", dict(d))
//!     print("and reversed the list:", l)
//!     d["hits"] = 0
//!     workers = [mp.Process(target=count, args=(d, 10_000)) for _ in range(8)]
//!     ...
//! ```
//!
//! Run it with
//!
//!     cargo run -p manager_demo
//!
//! It prints the dict (an entry a line) and the list the child left, the
//! two counts of 8 x 10000 increments (the first loses some, the second
//! ends at exactly 80000), the time of one proxy call and of one locked
//! `Value` increment, and the error of a proxy whose manager was killed.

use std::collections::BTreeMap;
use std::time::Instant;

use mpcore::{Dict, List, Manager, Process, Value};

const WORKERS: u64 = 8;
const N: u64 = 10_000;

/// The child's job: fills the dict, reverses the list.
fn fill(d: &Dict<String, u32>, l: &List<u32>) -> mpcore::Result<()> {
    for i in 0..5 {
        d.insert(format!("k{i}"), i * i)?;
    }
    l.reverse()
}

/// `d["hits"] += 1`, as Python does it: a get, then a set.
fn count_get_then_set(d: &Dict<String, u64>) -> mpcore::Result<()> {
    let key = "hits".to_owned();
    for _ in 0..N {
        let hits = d.get(&key)?.unwrap_or(0);
        d.insert(key.clone(), hits + 1)?;
    }
    Ok(())
}

/// The same increment run in the manager, one request each.
fn count_update_with(d: &Dict<String, u64>) -> mpcore::Result<()> {
    let key = "hits".to_owned();
    for _ in 0..N {
        d.update_with(&key, |hits| Some(hits.unwrap_or(0) + 1))?;
    }
    Ok(())
}

/// Eight processes run `job` on the dict from 0; returns the count.
fn eight_count(
    d: &Dict<String, u64>,
    job: fn(&Dict<String, u64>) -> mpcore::Result<()>,
) -> Result<u64, Box<dyn std::error::Error>> {
    d.insert("hits".to_owned(), 0)?;
    let workers = (0..WORKERS)
        .map(|_| {
            let d = d.clone();
            Process::spawn(move || job(&d).map_err(|e| e.to_string()))
        })
        .collect::<mpcore::Result<Vec<_>>>()?;
    for mut worker in workers {
        worker.join()??;
    }
    Ok(d.get(&"hits".to_owned())?.unwrap_or(0))
}

/// The mean time of `f` over `rounds` runs, in microseconds.
fn micros(rounds: u32, mut f: impl FnMut() -> mpcore::Result<()>) -> mpcore::Result<f64> {
    let start = Instant::now();
    for _ in 0..rounds {
        f()?;
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / f64::from(rounds))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manager = Manager::new()?;
    let d = manager.dict::<String, u32>()?;
    let l = manager.list(0..5)?;
    let (theirs, their_list) = (d.clone(), l.clone());
    let mut p = Process::spawn(move || fill(&theirs, &their_list).map_err(|e| e.to_string()))?;
    p.join()??;
    // A snapshot of the entries, in a map of this process's own.
    let filled: BTreeMap<String, u32> = d.items()?.into_iter().collect();
    println!("a child filled the dict:");
    for (k, v) in &filled {
        println!("  {k:?}: {v}");
    }
    println!("and reversed the list: {:?}", l.to_vec()?);

    let counts = manager.dict::<String, u64>()?;
    let total = WORKERS * N;
    let hits = eight_count(&counts, count_get_then_set)?;
    println!(
        "{WORKERS} processes x {N} get-then-set: {hits} ({} updates lost)",
        total - hits
    );
    let hits = eight_count(&counts, count_update_with)?;
    println!(
        "{WORKERS} processes x {N} update_with: {hits} ({} updates lost)",
        total - hits
    );

    let key = "hits".to_owned();
    let call = micros(2_000, || counts.get(&key).map(|_| ()))?;
    let v = Value::new(0u64)?;
    let locked = micros(2_000, || {
        *v.lock()? += 1;
        Ok(())
    })?;
    println!(
        "one proxy call (dict get): {call:.1} µs; one Value increment under its lock: {locked:.2} µs"
    );

    // The manager's server killed, as a crash or the OOM killer would.
    std::process::Command::new("kill")
        .args(["-KILL", &manager.pid().to_string()])
        .status()?;
    match counts.get(&key) {
        Ok(hits) => println!("the manager survived?! {hits:?}"),
        Err(e) => println!("after the manager is killed: {e}"),
    }
    Ok(())
}
