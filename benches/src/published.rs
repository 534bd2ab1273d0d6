//! The same shared-state workloads on the published crates a reader
//! would add to a project of their own: raw_sync's mutex and events,
//! placed in segments of the `shared_memory` crate. They are the
//! baselines beside mpcore's `Value`, `Lock` and `Event` in the `shared`
//! group.
//!
//! raw_sync's calls are `unsafe` (raw pointers into shared memory):
//! `course::published` makes them, each behind the promise it keeps, and
//! these baselines use its safe types, which add next to nothing to the
//! paths measured (a lock is raw_sync's `lock` after a check of a flag, a
//! set is raw_sync's `set`). A
//! forked child reaches a segment by opening it by name, as raw_sync's
//! objects cannot be moved into it.

use std::error::Error;

use course::published::{RawSyncEvent, RawSyncMutex};
use mpcore::Process;
use shared_memory::ShmemConf;

type Res<T> = std::result::Result<T, Box<dyn Error>>;

/// A `u64` counter under raw_sync's mutex, in a segment of its own.
pub struct RawSyncCounter {
    counter: RawSyncMutex<u64>,
}

impl RawSyncCounter {
    /// A new segment, its mutex initialised, its counter 0.
    pub fn new() -> Res<RawSyncCounter> {
        Ok(RawSyncCounter {
            counter: RawSyncMutex::create(0)?,
        })
    }

    /// The same counter, from a process that opens the segment by name.
    fn open(os_id: &str) -> Res<RawSyncCounter> {
        Ok(RawSyncCounter {
            counter: RawSyncMutex::open(os_id)?,
        })
    }

    /// Locks, adds 1, unlocks.
    pub fn increment(&self) -> Res<()> {
        *self.counter.lock()? += 1;
        Ok(())
    }

    /// Locks and unlocks, uncontended: the baseline of `Lock`'s acquire
    /// plus release.
    pub fn lock_unlock(&self) -> Res<()> {
        drop(self.counter.lock()?);
        Ok(())
    }

    /// The counter, read under the lock.
    pub fn get(&self) -> Res<u64> {
        Ok(*self.counter.lock()?)
    }
}

/// `procs` processes add 1 to one raw_sync-locked counter `per_proc`
/// times each; returns the count (`procs * per_proc`): the baseline of
/// `value_incr`.
pub fn raw_sync_incr(procs: usize, per_proc: u64) -> Res<u64> {
    let counter = RawSyncCounter::new()?;
    let children = (0..procs)
        .map(|_| {
            let os_id = counter.counter.os_id().to_owned();
            Process::spawn(move || -> Result<(), String> {
                let counter = RawSyncCounter::open(&os_id).map_err(|e| e.to_string())?;
                for _ in 0..per_proc {
                    counter.increment().map_err(|e| e.to_string())?;
                }
                Ok(())
            })
        })
        .collect::<mpcore::Result<Vec<_>>>()?;
    for mut child in children {
        child.join()??;
    }
    counter.get()
}

/// Ping-pong between this process and a child with two raw_sync
/// auto-reset events, `rounds` times: the baseline of `event_wake`.
pub fn raw_sync_event_wake(rounds: u64) -> Res<u64> {
    let (ping, pong) = (RawSyncEvent::create(true)?, RawSyncEvent::create(true)?);
    let ids = (ping.os_id().to_owned(), pong.os_id().to_owned());
    let mut child = Process::spawn(move || -> Result<(), String> {
        let open = |os_id: &str| RawSyncEvent::open(os_id).map_err(|e| e.to_string());
        let (ping, pong) = (open(&ids.0)?, open(&ids.1)?);
        for _ in 0..rounds {
            ping.wait().map_err(|e| e.to_string())?;
            pong.set().map_err(|e| e.to_string())?;
        }
        Ok(())
    })?;
    for _ in 0..rounds {
        ping.set()?;
        pong.wait()?;
    }
    child.join()??;
    Ok(rounds)
}

/// Creates a 4 KiB segment of the shared_memory crate and drops it
/// (`shm_open`, `ftruncate`, `mmap`; `munmap`, `shm_unlink`): the
/// baseline of `mpcore::SharedMemory::new`, which also reserves the
/// memory, takes its lock and hands the file to its program's tracker.
pub fn shared_memory_create_drop() -> Res<usize> {
    let shmem = ShmemConf::new().size(4096).create()?;
    Ok(shmem.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_raw_sync_baselines_do_their_work() {
        assert_eq!(raw_sync_incr(2, 1000).unwrap(), 2000);
        assert_eq!(raw_sync_event_wake(100).unwrap(), 100);
        let counter = RawSyncCounter::new().unwrap();
        counter.lock_unlock().unwrap();
        counter.increment().unwrap();
        assert_eq!(counter.get().unwrap(), 1);
        assert_eq!(shared_memory_create_drop().unwrap(), 4096);
    }
}
