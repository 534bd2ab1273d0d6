//! [`Lock`]: Python's `multiprocessing.Lock`, a robust process-shared
//! mutex (`os/mutex.rs`) in a shared mapping of its own.

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use crate::base::Result;
use crate::os::memfd::Segment;
use crate::os::mutex::{Held, RawMutex};
use crate::wire::handles::{Handle, travels_as_descriptor};

/// A lock that processes (and threads) share, Python's
/// `multiprocessing.Lock`.
///
/// Make it before [`Process::spawn`](crate::Process::spawn) and move a
/// clone into the child: every clone is the same lock.
/// [`acquire`](Lock::acquire) returns a guard; the lock is released when
/// the guard is dropped, as at the end of Python's `with l:` block.
///
/// ```
/// use mpcore::{Lock, Process, Value};
///
/// fn job(lock: &Lock, v: &Value<i32>, num: i32) -> mpcore::Result<()> {
///     let _held = lock.acquire()?;
///     for _ in 0..5 {
///         v.set(v.get()? + num)?;
///     }
///     Ok(())
/// }
///
/// let lock = Lock::new()?;
/// let v = Value::new(0i32)?;
/// let start = |num| {
///     let (lock, v) = (lock.clone(), v.clone());
///     Process::spawn(move || job(&lock, &v, num).is_ok())
/// };
/// let (mut p1, mut p2) = (start(1)?, start(3)?);
/// assert!(p1.join()? && p2.join()?);
/// assert_eq!(v.get()?, 20);
/// # Ok::<(), mpcore::Error>(())
/// ```
///
/// # Who releases it
///
/// The thread that acquired the lock releases it, by dropping the guard
/// (or calling [`release`](LockGuard::release)). Python lets any process
/// release a `multiprocessing.Lock`, and a common pattern has the parent
/// acquire it and a child release it. Here the guard cannot leave its
/// thread: it is not `Send`, so neither another thread nor a child process
/// can have it. To let a waiting process go on, set an
/// [`Event`](crate::Event) it waits for (or a [`Value`](crate::Value) it checks).
///
/// # When the holder dies
///
/// If a process is killed while it holds the lock, Python's lock stays
/// locked for ever. Here the next `acquire` (or `try_acquire`, or
/// `acquire_timeout`, including one already waiting) returns
/// [`Error::OwnerDied`](crate::Error::OwnerDied). By then the lock has been repaired and released:
/// call `acquire` again to take it. Whatever the dead process was changing
/// under the lock may be half-done; the error is your cue to check it.
///
/// The lock is not reentrant, like Python's `Lock` (not `RLock`): `acquire`
/// from the thread that holds it returns [`Error::WouldDeadlock`](crate::Error::WouldDeadlock) where
/// Python would hang.
#[derive(Clone)]
pub struct Lock {
    segment: Arc<Segment>,
    mutex: RawMutex,
}

// SAFETY: `mutex` points into `segment`, which `Lock` keeps alive; the
// mutex is made for use from any thread of any process.
unsafe impl Send for Lock {}
// SAFETY: as above; every method takes `&self` and goes through the mutex.
unsafe impl Sync for Lock {}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock").finish_non_exhaustive()
    }
}

/// A lock travels to a spawned child as its memfd's descriptor (see
/// [`process::Builder::spawn_fn`](crate::process::Builder::spawn_fn)); it
/// serializes nowhere else.
impl Handle for Lock {
    const WHAT: &'static str = "Lock";

    fn memfd(&self) -> BorrowedFd<'_> {
        self.segment.memfd()
    }

    fn from_memfd(memfd: OwnedFd, _: u64) -> Result<Self> {
        let segment = Arc::new(Segment::from_memfd(
            memfd,
            size_of::<libc::pthread_mutex_t>(),
        )?);
        // SAFETY: the sender's `Lock::new` initialised the mutex at the
        // start of the segment, which lives as long as the `Lock`.
        let mutex = unsafe { RawMutex::at(segment.base()) };
        Ok(Lock { segment, mutex })
    }
}

travels_as_descriptor!(Lock);

impl Lock {
    /// A new, unlocked lock (Python's `mp.Lock()`).
    ///
    /// # Errors
    ///
    /// [`Error::Os`](crate::Error::Os) when the shared memory cannot be mapped.
    pub fn new() -> Result<Lock> {
        let segment = Segment::shared(
            size_of::<libc::pthread_mutex_t>(),
            align_of::<libc::pthread_mutex_t>(),
        )?;
        // SAFETY: the segment is fresh, page-aligned and big enough for one
        // mutex, and lives as long as the `Lock` (it holds the Arc).
        let mutex = unsafe { RawMutex::init(segment.base())? };
        Ok(Lock { segment, mutex })
    }

    /// Waits for the lock and takes it (Python's `l.acquire()`).
    ///
    /// # Errors
    ///
    /// [`Error::OwnerDied`](crate::Error::OwnerDied) when the last holder died holding it (the lock
    /// is usable again: call `acquire` again), [`Error::WouldDeadlock`](crate::Error::WouldDeadlock)
    /// when this thread holds it already.
    #[inline]
    pub fn acquire(&self) -> Result<LockGuard<'_>> {
        self.mutex.lock()?;
        Ok(self.guard())
    }

    /// Takes the lock if it is free, at once; `Ok(None)` if anyone,
    /// this thread included, holds it (Python's `l.acquire(False)`).
    ///
    /// # Errors
    ///
    /// [`Error::OwnerDied`](crate::Error::OwnerDied) as for [`acquire`](Self::acquire).
    pub fn try_acquire(&self) -> Result<Option<LockGuard<'_>>> {
        Ok(self.mutex.try_lock()?.then(|| self.guard()))
    }

    /// Like [`acquire`](Self::acquire), but gives up with
    /// [`Error::Timeout`](crate::Error::Timeout) once `timeout` has passed, never before, for any
    /// duration (Python's `l.acquire(timeout=...)` returning `False`).
    /// A zero timeout takes a free lock, like `try_acquire`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`](crate::Error::Timeout), or [`Error::OwnerDied`](crate::Error::OwnerDied) as for `acquire`. When
    /// this thread itself holds the lock, the answer is still a timeout,
    /// after the full duration, as the wait would have found.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<LockGuard<'_>> {
        self.mutex.lock_timeout(timeout)?;
        Ok(self.guard())
    }

    #[inline]
    fn guard(&self) -> LockGuard<'_> {
        LockGuard {
            held: Held::new(self.mutex),
            _lock: PhantomData,
        }
    }
}

/// Holds a [`Lock`]; dropping it releases the lock.
///
/// A guard is neither `Send` nor `Sync`, on purpose: a pthread mutex must
/// be released by the thread that took it, and a guard copied into a
/// child process would let both processes write "under the lock". So it
/// stays in its thread ([`Process::spawn`](crate::Process::spawn) takes
/// only `Send + 'static` closures). It keeps the lock's memory mapped even
/// if the `Lock` itself is dropped first (or the guard is leaked).
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a> {
    held: Held,
    _lock: PhantomData<&'a Lock>,
}

impl LockGuard<'_> {
    /// Releases the lock now (Python's `l.release()`). Dropping the guard
    /// does the same, but can only log a failure; this returns it.
    ///
    /// # Errors
    ///
    /// [`Error::NotLockHolder`](crate::Error::NotLockHolder) if this thread does not hold the lock after all
    /// (which safe code cannot bring about: the guard stays in the thread
    /// that acquired the lock); [`Error::Os`](crate::Error::Os) if the system refuses.
    pub fn release(self) -> Result<()> {
        self.held.release()
    }
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::Error;

    #[test]
    fn releasing_a_lock_another_thread_holds_is_an_error_and_changes_nothing() {
        let lock = Lock::new().unwrap();
        let (held_tx, held) = std::sync::mpsc::channel();
        let (done, done_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn({
            let lock = lock.clone();
            move || {
                let _guard = lock.acquire().unwrap();
                held_tx.send(()).unwrap();
                done_rx.recv().unwrap();
            }
        });
        held.recv().unwrap();

        // Safe code cannot get a guard for a lock it does not hold: build
        // one the way `acquire` does, minus the acquiring.
        let err = lock.guard().release().unwrap_err();
        assert!(matches!(err, Error::NotLockHolder), "{err:?}");
        assert_eq!(
            err.to_string(),
            "this thread does not hold the lock, so it cannot release it; \
             only the thread that acquired a lock can release it"
        );
        assert!(
            lock.try_acquire().unwrap().is_none(),
            "still held by the other thread"
        );

        done.send(()).unwrap();
        holder.join().unwrap();
        lock.acquire().unwrap().release().unwrap();
    }

    #[test]
    fn unlocking_a_free_mutex_is_an_error() {
        let lock = Lock::new().unwrap();
        assert!(matches!(lock.mutex.unlock(), Err(Error::NotLockHolder)));
        assert!(
            lock.try_acquire().unwrap().is_some(),
            "and it is still free"
        );
    }
}
