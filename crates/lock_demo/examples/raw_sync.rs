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
//! is the other reason mpcore keeps its own lock.

use std::time::{Duration, Instant};

use mpcore::{Event, Lock, Process};
use raw_sync::Timeout;
use raw_sync::locks::{LockImpl, LockInit, Mutex};
use shared_memory::{Shmem, ShmemConf};

/// The mutex at the start of the segment, the counter after it.
const DATA_AT: usize = 64;

/// The segment's mutex, as raw_sync sees it from this process.
fn mutex_in(shmem: &Shmem, create: bool) -> Result<Box<dyn LockImpl>, Box<dyn std::error::Error>> {
    let base = shmem.as_ptr();
    // SAFETY: the segment is at least DATA_AT + 8 bytes, the mutex (at
    // most DATA_AT bytes with its padding) comes first and the counter
    // after it; `create` is true only in the process that made the
    // segment, before any other process maps it.
    let (mutex, _) = unsafe {
        let data = base.add(DATA_AT);
        if create {
            Mutex::new(base, data)?
        } else {
            Mutex::from_existing(base, data)?
        }
    };
    Ok(mutex)
}

/// Adds `num` to the counter `times` times, each time under the lock.
fn add(mutex: &dyn LockImpl, num: u64, times: u32) -> Result<(), Box<dyn std::error::Error>> {
    for _ in 0..times {
        let guard = mutex.lock()?;
        let counter = (*guard).cast::<u64>();
        // SAFETY: the counter is 8-aligned (the segment is page-aligned),
        // inside the segment, and every process touches it only under
        // this mutex, which we hold.
        unsafe { *counter += num };
    }
    Ok(())
}

/// A child that opens the segment by its name, as raw_sync's objects
/// (raw pointers) cannot be moved into a child.
fn in_child(
    os_id: &str,
    body: impl FnOnce(&dyn LockImpl) -> Result<(), Box<dyn std::error::Error>>,
) -> Result<(), String> {
    let shmem = ShmemConf::new()
        .os_id(os_id)
        .open()
        .map_err(|e| e.to_string())?;
    let mutex = mutex_in(&shmem, false).map_err(|e| e.to_string())?;
    body(&*mutex).map_err(|e| e.to_string())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let shmem = ShmemConf::new().size(DATA_AT + 8).create()?;
    let os_id = shmem.get_os_id().to_owned();
    let mutex = mutex_in(&shmem, true)?;

    let mut adders = [1u64, 3].map(|num| {
        let os_id = os_id.clone();
        Process::spawn(move || in_child(&os_id, |m| add(m, num, 1000)))
    });
    for adder in &mut adders {
        adder.as_mut().map_err(|e| e.to_string())?.join()??;
    }
    let guard = mutex.lock()?;
    // SAFETY: as in `add`: we hold the lock.
    let total = unsafe { *(*guard).cast::<u64>() };
    drop(guard);
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
    match mutex.try_lock(Timeout::Val(Duration::from_secs(1))) {
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
