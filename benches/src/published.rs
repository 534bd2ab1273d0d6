//! The same shared-state workloads on the published crates a reader
//! would add to a project of their own: raw_sync's mutex and events,
//! placed in segments of the `shared_memory` crate. They are the
//! baselines beside mpcore's `Value`, `Lock` and `Event` in the `shared`
//! group.
//!
//! raw_sync's calls are `unsafe` (raw pointers into shared memory); each
//! block says what it relies on. A forked child reaches a segment by
//! opening it by name, as raw_sync's objects cannot be moved into it.

use std::error::Error;

use mpcore::Process;
use raw_sync::Timeout;
use raw_sync::events::{Event, EventImpl, EventInit, EventState};
use raw_sync::locks::{LockImpl, LockInit, Mutex};
use shared_memory::{Shmem, ShmemConf};

type Res<T> = std::result::Result<T, Box<dyn Error>>;

/// The mutex at the start, the counter here.
const COUNTER_AT: usize = 64;

/// A raw_sync mutex and a `u64` counter in a segment of their own.
pub struct RawSyncCounter {
    shmem: Shmem,
    mutex: Box<dyn LockImpl>,
}

impl RawSyncCounter {
    /// A new segment, its mutex initialised, its counter 0.
    pub fn new() -> Res<RawSyncCounter> {
        let shmem = ShmemConf::new().size(COUNTER_AT + 8).create()?;
        // SAFETY: a fresh, zeroed, page-aligned segment of COUNTER_AT + 8
        // bytes that no other process maps yet; the mutex fits before
        // COUNTER_AT.
        let (mutex, _) = unsafe { Mutex::new(shmem.as_ptr(), shmem.as_ptr().add(COUNTER_AT))? };
        Ok(RawSyncCounter { shmem, mutex })
    }

    /// The same counter, from a process that opens the segment by name.
    fn open(os_id: &str) -> Res<RawSyncCounter> {
        let shmem = ShmemConf::new().os_id(os_id).open()?;
        // SAFETY: `new` initialised a mutex at the start of this segment.
        let (mutex, _) =
            unsafe { Mutex::from_existing(shmem.as_ptr(), shmem.as_ptr().add(COUNTER_AT))? };
        Ok(RawSyncCounter { shmem, mutex })
    }

    /// Locks, adds 1, unlocks.
    pub fn increment(&self) -> Res<()> {
        let guard = self.mutex.lock()?;
        // SAFETY: the counter is 8-aligned and in the segment, and every
        // process touches it only under this mutex, which we hold.
        unsafe { *(*guard).cast::<u64>() += 1 };
        Ok(())
    }

    /// Locks and unlocks, uncontended: the baseline of `Lock`'s acquire
    /// plus release.
    pub fn lock_unlock(&self) -> Res<()> {
        drop(self.mutex.lock()?);
        Ok(())
    }

    /// The counter, read under the lock.
    pub fn get(&self) -> Res<u64> {
        let guard = self.mutex.lock()?;
        // SAFETY: as in `increment`.
        Ok(unsafe { *(*guard).cast::<u64>() })
    }
}

/// `procs` processes add 1 to one raw_sync-locked counter `per_proc`
/// times each; returns the count (`procs * per_proc`): the baseline of
/// `value_incr`.
pub fn raw_sync_incr(procs: usize, per_proc: u64) -> Res<u64> {
    let counter = RawSyncCounter::new()?;
    let children = (0..procs)
        .map(|_| {
            let os_id = counter.shmem.get_os_id().to_owned();
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

/// Two raw_sync auto-reset events in one segment.
struct PingPong {
    _shmem: Shmem,
    ping: Box<dyn EventImpl>,
    pong: Box<dyn EventImpl>,
}

impl PingPong {
    fn new_or_open(os_id: Option<&str>) -> Res<PingPong> {
        let shmem = match os_id {
            None => ShmemConf::new().size(4096).create()?,
            Some(id) => ShmemConf::new().os_id(id).open()?,
        };
        let second = 2048;
        // SAFETY: a page of 4096 bytes; each event (a pthread mutex, a
        // condition variable and two bytes, well under 2048) has its own
        // half. Only the creator initialises them, before any child
        // opens the segment.
        let (ping, pong) = unsafe {
            let (a, b) = (shmem.as_ptr(), shmem.as_ptr().add(second));
            if os_id.is_none() {
                (Event::new(a, true)?.0, Event::new(b, true)?.0)
            } else {
                (Event::from_existing(a)?.0, Event::from_existing(b)?.0)
            }
        };
        Ok(PingPong {
            _shmem: shmem,
            ping,
            pong,
        })
    }
}

/// Ping-pong between this process and a child with two raw_sync
/// auto-reset events, `rounds` times: the baseline of `event_wake`.
pub fn raw_sync_event_wake(rounds: u64) -> Res<u64> {
    let events = PingPong::new_or_open(None)?;
    let os_id = events._shmem.get_os_id().to_owned();
    let mut child = Process::spawn(move || -> Result<(), String> {
        let events = PingPong::new_or_open(Some(&os_id)).map_err(|e| e.to_string())?;
        for _ in 0..rounds {
            events
                .ping
                .wait(Timeout::Infinite)
                .map_err(|e| e.to_string())?;
            events
                .pong
                .set(EventState::Signaled)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    })?;
    for _ in 0..rounds {
        events.ping.set(EventState::Signaled)?;
        events.pong.wait(Timeout::Infinite)?;
    }
    child.join()??;
    Ok(rounds)
}

/// Creates a 4 KiB segment of the shared_memory crate and drops it
/// (`shm_open`, `ftruncate`, `mmap`; `munmap`, `shm_unlink`): the
/// baseline of `mpcore::SharedMemory::new`, which also starts its
/// tracker process.
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
