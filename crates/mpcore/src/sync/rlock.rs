//! [`RLock`]: Python's `multiprocessing.RLock`, a robust process-shared
//! mutex (`os/mutex.rs`) and, after it in the same mapping, how many
//! times its holder has taken it.

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::base::{Error, Result};
use crate::os::memfd::{Segment, align_up};
use crate::os::mutex::RawMutex;
use crate::wire::handles::{Handle, travels_as_descriptor};

/// A re-entrant lock that processes (and threads) share, Python's
/// `multiprocessing.RLock`.
///
/// The thread that holds it may take it again: each
/// [`acquire`](RLock::acquire) returns a guard, and the lock is released
/// when the last of them (the outermost) is dropped. Any other thread, in
/// this process or another, waits until then.
///
/// ```
/// use mpcore::{Process, RLock};
///
/// fn both(lock: &RLock) -> mpcore::Result<u32> {
///     let _outer = lock.acquire()?;
///     one(lock) // takes the lock again: no deadlock
/// }
/// fn one(lock: &RLock) -> mpcore::Result<u32> {
///     let _inner = lock.acquire()?;
///     Ok(lock.depth())
/// }
///
/// let lock = RLock::new()?;
/// let mut child = Process::spawn({
///     let lock = lock.clone();
///     move || both(&lock).unwrap()
/// })?;
/// assert_eq!(child.join()?, 2);
/// assert!(lock.try_acquire()?.is_some(), "the child released it");
/// # Ok::<(), mpcore::Error>(())
/// ```
///
/// # When the holder dies
///
/// As with [`Lock`](crate::Lock): if the holder dies (however many times
/// it had taken the lock), the next `acquire`, `try_acquire` or
/// `acquire_timeout` returns [`Error::OwnerDied`], and the lock has been
/// repaired and released by then: call `acquire` again. Python's `RLock`
/// stays locked for ever.
///
/// Guards are neither `Send` nor `Sync`: only the thread that took the
/// lock may give it back, as Python's `RLock` requires of its `release`.
#[derive(Clone)]
pub struct RLock {
    segment: Arc<Segment>,
    mutex: RawMutex,
}

// SAFETY: `mutex` points into `segment`, which `RLock` keeps alive; the
// mutex is made for use from any thread of any process, and the depth
// word is atomic.
unsafe impl Send for RLock {}
// SAFETY: as above; every method takes `&self`, and the depth word is
// written only by the thread that holds the mutex.
unsafe impl Sync for RLock {}

impl fmt::Debug for RLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLock").finish_non_exhaustive()
    }
}

/// The mutex, then the depth word: the size of the mapping and the
/// word's offset in it.
fn layout() -> (usize, usize) {
    let offset = align_up(size_of::<libc::pthread_mutex_t>(), align_of::<AtomicU32>());
    // Two words after the mutex, not one: 48 bytes, a size no `Lock`
    // (40) has, so that a handle received as the wrong type is refused.
    (offset + 2 * size_of::<AtomicU32>(), offset)
}

/// An `RLock` travels to a spawned child as its memfd's descriptor (see
/// [`process::Builder::spawn_fn`](crate::process::Builder::spawn_fn)); it
/// serializes nowhere else.
impl Handle for RLock {
    const WHAT: &'static str = "RLock";

    fn memfd(&self) -> BorrowedFd<'_> {
        self.segment.memfd()
    }

    fn from_memfd(memfd: OwnedFd, _: u64) -> Result<Self> {
        let segment = Arc::new(Segment::from_memfd(memfd, layout().0)?);
        // SAFETY: the sender's `RLock::new` initialised the mutex at the
        // start of the segment, which lives as long as the `RLock`.
        let mutex = unsafe { RawMutex::at(segment.base()) };
        Ok(RLock { segment, mutex })
    }
}

travels_as_descriptor!(RLock);

impl RLock {
    /// A new, unlocked re-entrant lock (Python's `mp.RLock()`).
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the shared memory cannot be mapped.
    pub fn new() -> Result<RLock> {
        let segment = Segment::shared(layout().0, align_of::<libc::pthread_mutex_t>())?;
        // SAFETY: the segment is fresh, page-aligned and big enough for
        // the mutex and the depth word, and lives as long as the `RLock`.
        let mutex = unsafe { RawMutex::init(segment.base())? };
        Ok(RLock { segment, mutex })
    }

    /// How many guards the holder has: only the holder writes it.
    fn depth_word(&self) -> &AtomicU32 {
        // SAFETY: `layout` put an aligned, zeroed word at this offset of
        // the mapping, which lives as long as `self`; it is only touched
        // atomically.
        unsafe { &*self.segment.base().add(layout().1).cast::<AtomicU32>() }
    }

    /// How many guards this thread holds: 0 when it does not hold the lock.
    pub fn depth(&self) -> u32 {
        if self.mutex.held_here() {
            self.depth_word().load(Ordering::Relaxed)
        } else {
            0
        }
    }

    /// Whether this thread holds the lock already; if so, counts one more
    /// guard. A quick look at the depth first: a free lock needs no
    /// system call to tell.
    fn reenter(&self) -> Result<bool> {
        let depth = self.depth_word();
        if depth.load(Ordering::Relaxed) == 0 || !self.mutex.held_here() {
            return Ok(false);
        }
        let now = depth.load(Ordering::Relaxed);
        let more = now.checked_add(1).ok_or(Error::InvalidArgument(
            "an RLock was taken 4294967295 times by one thread without a release",
        ))?;
        depth.store(more, Ordering::Relaxed);
        Ok(true)
    }

    /// Waits for the lock and takes it, or takes it again if this thread
    /// holds it (Python's `rl.acquire()`).
    ///
    /// # Errors
    ///
    /// [`Error::OwnerDied`] when the last holder died holding it (the
    /// lock is usable again: call `acquire` again).
    pub fn acquire(&self) -> Result<RLockGuard<'_>> {
        if !self.reenter()? {
            self.mutex.lock()?;
            self.depth_word().store(1, Ordering::Relaxed);
        }
        Ok(self.guard())
    }

    /// Takes the lock if it is free or this thread holds it, at once;
    /// `Ok(None)` if another thread holds it (Python's
    /// `rl.acquire(False)`).
    ///
    /// # Errors
    ///
    /// [`Error::OwnerDied`] as for [`acquire`](Self::acquire).
    pub fn try_acquire(&self) -> Result<Option<RLockGuard<'_>>> {
        if !self.reenter()? {
            if !self.mutex.try_lock()? {
                return Ok(None);
            }
            self.depth_word().store(1, Ordering::Relaxed);
        }
        Ok(Some(self.guard()))
    }

    /// Like [`acquire`](Self::acquire), but gives up with
    /// [`Error::Timeout`] once `timeout` has passed, never before (Python's
    /// `rl.acquire(timeout=...)` returning `False`). This thread's own
    /// lock is taken again at once.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`], or [`Error::OwnerDied`] as for `acquire`.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<RLockGuard<'_>> {
        if !self.reenter()? {
            self.mutex.lock_timeout(timeout)?;
            self.depth_word().store(1, Ordering::Relaxed);
        }
        Ok(self.guard())
    }

    fn guard(&self) -> RLockGuard<'_> {
        RLockGuard {
            lock: self.clone(),
            released: false,
            _not_send: PhantomData,
            _lock: PhantomData,
        }
    }
}

/// One hold on an [`RLock`]; the lock is released when the last guard of
/// its holder is dropped.
///
/// Neither `Send` nor `Sync`: it says "this thread holds the lock", and
/// must stay in that thread. It keeps the lock's memory mapped even if
/// the `RLock` itself is dropped first.
#[must_use = "the hold is given back as soon as the guard is dropped"]
pub struct RLockGuard<'a> {
    /// A clone: its Arc keeps the mapping alive.
    lock: RLock,
    released: bool,
    _not_send: PhantomData<*const ()>,
    _lock: PhantomData<&'a RLock>,
}

impl RLockGuard<'_> {
    /// Gives this hold back now (Python's `rl.release()`): the lock is
    /// released if it was the last one. Dropping the guard does the same,
    /// but can only log a failure; this returns it.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if the system refuses to unlock.
    pub fn release(mut self) -> Result<()> {
        self.released = true;
        self.give_back()
    }

    fn give_back(&self) -> Result<()> {
        let depth = self.lock.depth_word();
        let left = depth.load(Ordering::Relaxed).saturating_sub(1);
        depth.store(left, Ordering::Relaxed);
        if left == 0 {
            self.lock.mutex.unlock()
        } else {
            Ok(())
        }
    }
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        if !self.released {
            if let Err(e) = self.give_back() {
                log::error!(
                    "mpcore: an RLock's guard was dropped, but the lock was not released: {e}"
                );
            }
        }
    }
}

impl fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLockGuard").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_enters_again_and_the_outermost_guard_releases() {
        let lock = RLock::new().unwrap();
        assert_eq!(lock.depth(), 0);
        let outer = lock.acquire().unwrap();
        let inner = lock.try_acquire().unwrap().expect("its own lock");
        let third = lock.acquire_timeout(Duration::ZERO).unwrap();
        assert_eq!(lock.depth(), 3);
        drop(outer);
        drop(third);
        assert_eq!(lock.depth(), 1);
        let other = std::thread::scope(|s| {
            s.spawn(|| lock.try_acquire().unwrap().is_some())
                .join()
                .unwrap()
        });
        assert!(!other, "still held by this thread");
        inner.release().unwrap();
        assert_eq!(lock.depth(), 0);
        let other = std::thread::scope(|s| {
            s.spawn(|| lock.try_acquire().unwrap().is_some())
                .join()
                .unwrap()
        });
        assert!(other, "free once the last guard is gone");
    }
}
