//! Chapter 8's lock job on published crates: raw_sync's `Mutex` inside a
//! shared_memory segment. Two processes add 1 and 3 to one counter a
//! thousand times each, under the lock. Then a process that holds the
//! lock is killed with SIGKILL: raw_sync's mutex stays locked for ever
//! (the next lock here gives up after a second only because it asks for
//! a timeout), where mpcore's `Lock` reports `OwnerDied` and goes on.
//!
//!     cargo run -p lock_demo --example raw_sync
//!
//! raw_sync's calls are `unsafe`: it hands out raw pointers into shared
//! memory, and the caller promises what the compiler cannot check. That
//! is the other reason mpcore keeps its own lock. `course::published`
//! makes those calls, each behind the promise it keeps, and hands this
//! example a safe `RawSyncMutex`: a value under raw_sync's mutex.

use std::time::{Duration, Instant};

use course::published::RawSyncMutex;
use mpcore::{Event, Lock, Process};

/// Adds `num` to the counter `times` times, each time under the lock.
fn add(counter: &RawSyncMutex<u64>, num: u64, times: u32) -> course::published::Result<()> {
    for _ in 0..times {
        *counter.lock()? += num;
    }
    Ok(())
}

/// A child that opens the segment by its name, as raw_sync's objects
/// (raw pointers) cannot be moved into a child.
fn in_child(
    os_id: &str,
    body: impl FnOnce(&RawSyncMutex<u64>) -> course::published::Result<()>,
) -> Result<(), String> {
    let counter = RawSyncMutex::open(os_id).map_err(|e| e.to_string())?;
    body(&counter).map_err(|e| e.to_string())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let counter = RawSyncMutex::create(0u64)?;
    let os_id = counter.os_id().to_owned();

    let mut adders = [1u64, 3].map(|num| {
        let os_id = os_id.clone();
        Process::spawn(move || in_child(&os_id, |m| add(m, num, 1000)))
    });
    for adder in &mut adders {
        adder.as_mut().map_err(|e| e.to_string())?.join()??;
    }
    let total = *counter.lock()?;
    println!("raw_sync: 1000 x 1 and 1000 x 3 under the lock: {total}");

    // A holder killed with SIGKILL: it never unlocks.
    let locked = Event::new()?;
    let mut holder = Process::spawn({
        let (os_id, locked) = (os_id.clone(), locked.clone());
        move || {
            in_child(&os_id, |m| {
                let _guard = m.lock()?;
                locked.set();
                std::thread::sleep(Duration::from_secs(60));
                Ok(())
            })
        }
    })?;
    locked.wait_timeout(Duration::from_secs(10))?;
    holder.kill()?;
    println!(
        "raw_sync: the holder was killed: {}",
        holder.join().unwrap_err()
    );
    let start = Instant::now();
    match counter.try_lock(Duration::from_secs(1)) {
        Ok(_) => println!("raw_sync: the next lock: taken"),
        Err(e) => println!(
            "raw_sync: the next lock: \"{e}\" after {:.0?}: still locked by the dead process, \
             and a lock without a timeout waits for ever",
            start.elapsed()
        ),
    }

    // The same with mpcore's Lock, a robust mutex.
    let lock = Lock::new()?;
    locked.clear();
    let mut holder = Process::spawn({
        let (lock, locked) = (lock.clone(), locked.clone());
        move || {
            let _guard = lock.acquire();
            locked.set();
            std::thread::sleep(Duration::from_secs(60));
        }
    })?;
    locked.wait_timeout(Duration::from_secs(10))?;
    holder.kill()?;
    println!(
        "mpcore:   the holder was killed: {}",
        holder.join().unwrap_err()
    );
    match lock.acquire() {
        Ok(_) => println!("mpcore:   the next acquire: taken"),
        Err(e) => println!("mpcore:   the next acquire: \"{e}\""),
    }
    let again = lock.acquire().map(|_| "taken");
    println!("mpcore:   the one after: {}", again?);
    Ok(())
}
