//! [`Condition`]: Python's `multiprocessing.Condition`, a [`Lock`] and a
//! table of waiters in shared memory.
//!
//! Not glibc's process-shared condition variable, which a waiter killed
//! while it waits can jam for every later `notify` (see `event.rs`), and
//! not one sequence word either: a `notify(1)` must wake one waiter that
//! was there before it, not a later one that happens to look first (that
//! one would take the wake-up, go back to sleep, and the first would
//! sleep on: a lost wake-up). So each waiter takes a slot of the table,
//! under the lock:
//!
//! - its word (`state`), which it sleeps on (a futex), and which a
//!   `notify` sets to `SIGNALLED`: the wake-up is addressed, and a waiter
//!   registered under the lock before it let go of it cannot miss it;
//! - its ticket, so that `notify(n)` signals the `n` oldest waiters, in
//!   the order they came (Python's order);
//! - a robust mutex, held by the waiter for as long as it has the slot:
//!   a waiter that is killed leaves it "owner died", and the next
//!   `notify` that picks that slot finds out (with a `trylock`), frees
//!   the slot and signals a live waiter instead. So a killed waiter
//!   takes no wake-up with it.
//!
//! A notify wakes the sleepers it picked only once its guard has let go
//! of the lock, so that they find the lock free; a notifier killed in
//! between never wakes them, so a waiter sleeps in slices and looks at
//! its word again after each.
//!
//! Everything but the word a waiter sleeps on changes only under the
//! condition's lock (a `notify` is a method of the guard), and a waiter
//! that times out decides whether it was notified after it has the lock
//! again: a `notify` then either came first (and it counts) or did not
//! pick it.

use std::cell::Cell;
use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::waiters::{SLOTS, Words};
use crate::base::{Error, Result};
use crate::lock::{Lock, LockGuard};
use crate::os::{deadline, futex, spin};

/// How long a woken waiter tries the lock often before it waits for it.
const RELOCK_SPIN: Duration = Duration::from_micros(20);

/// A condition variable that processes (and threads) share, Python's
/// `multiprocessing.Condition`: waiters sleep until another process
/// changes something under the condition's lock and notifies them.
///
/// [`acquire`](Condition::acquire) takes the lock and returns a
/// [`ConditionGuard`], which waits ([`wait`](ConditionGuard::wait),
/// [`wait_for`](ConditionGuard::wait_for) with a predicate, each with a
/// timeout too) and notifies ([`notify`](ConditionGuard::notify),
/// [`notify_all`](ConditionGuard::notify_all)). Python raises
/// `RuntimeError` for a `notify` without the lock; here it is a method of
/// the guard, so it cannot be called without it.
///
/// ```
/// use std::time::Duration;
/// use mpcore::{Condition, Process, Value};
///
/// let cond = Condition::new()?;
/// let ready = Value::new(0u32)?;
/// let mut consumer = Process::spawn({
///     let (cond, ready) = (cond.clone(), ready.clone());
///     move || {
///         let guard = cond.acquire().unwrap();
///         let _guard = guard.wait_for(|| ready.get().is_ok_and(|r| r > 0)).unwrap();
///         ready.get().unwrap()
///     }
/// })?;
/// {
///     let guard = cond.acquire()?;
///     ready.set(7)?;
///     guard.notify_all();
/// }
/// assert_eq!(consumer.join()?, 7);
/// # Ok::<(), mpcore::Error>(())
/// ```
///
/// Python's `Condition()` makes an `RLock` of its own; this one makes a
/// [`Lock`] ([`with_lock`](Condition::with_lock) takes one you have), and a
/// waiter that is killed while it waits stops nobody else. A holder of
/// the lock that is killed gives the next locker (a waiter re-taking the
/// lock included) [`Error::OwnerDied`], as with any [`Lock`].
#[derive(Clone, Serialize, Deserialize)]
pub struct Condition {
    /// First, so that a Condition sent where handles cannot go says so
    /// by its own name.
    words: Words,
    lock: Lock,
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition").finish_non_exhaustive()
    }
}

impl Condition {
    /// A new condition with a lock of its own (Python's `mp.Condition()`).
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the shared memory cannot be mapped.
    pub fn new() -> Result<Condition> {
        Condition::with_lock(Lock::new()?)
    }

    /// A new condition over `lock` (Python's `mp.Condition(lock)`): taking
    /// the condition takes that lock, and the other way round.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the shared memory cannot be mapped.
    pub fn with_lock(lock: Lock) -> Result<Condition> {
        Ok(Condition {
            words: Words::new()?,
            lock,
        })
    }

    /// Takes the lock, to wait or notify, or again after a wait. Its
    /// holder is a waiter about to sleep or a notifier about to let go
    /// (it holds the lock as it wakes us): both let go within
    /// microseconds, so look again often for a little while, before the
    /// lock's own wait (which looks seldom, to let a busy holder run on,
    /// and then sleeps).
    fn relock(&self) -> Result<LockGuard<'_>> {
        let soon = spin::until(Instant::now() + RELOCK_SPIN, || {
            match self.lock.try_acquire() {
                Ok(None) => None,
                taken => Some(taken),
            }
        });
        match soon {
            Some(Ok(Some(guard))) => Ok(guard),
            Some(Err(e)) => Err(e),
            _ => self.lock.acquire(),
        }
    }

    /// The condition's lock.
    pub fn lock(&self) -> &Lock {
        &self.lock
    }

    /// Takes the lock (Python's `with cond:`), to look at the shared data
    /// and then wait or notify.
    ///
    /// # Errors
    ///
    /// As [`Lock::acquire`]: [`Error::OwnerDied`] when the last holder
    /// died holding the lock.
    pub fn acquire(&self) -> Result<ConditionGuard<'_>> {
        Ok(ConditionGuard::new(self, self.relock()?))
    }

    /// Like [`acquire`](Self::acquire), giving up with [`Error::Timeout`]
    /// once `timeout` has passed.
    ///
    /// # Errors
    ///
    /// As [`Lock::acquire_timeout`].
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<ConditionGuard<'_>> {
        Ok(ConditionGuard::new(
            self,
            self.lock.acquire_timeout(timeout)?,
        ))
    }
}

/// The lock of a [`Condition`], held; dropping it releases the lock.
///
/// Like a [`LockGuard`] it stays in the thread that took it.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ConditionGuard<'a> {
    cond: &'a Condition,
    /// `None` once released.
    guard: Option<LockGuard<'a>>,
    /// The slots whose sleepers this guard's notifies picked: woken once
    /// the lock is released, so that they find it free rather than wake
    /// only to wait for it (and, should the scheduler run the woken one
    /// on this very CPU, spin while this holder cannot run).
    wake: Cell<[u64; SLOTS / 64]>,
}

impl Drop for ConditionGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.unlock() {
            log::error!(
                "mpcore: a Condition's guard was dropped, but the lock was not released: {e}"
            );
        }
    }
}

impl<'a> ConditionGuard<'a> {
    fn new(cond: &'a Condition, guard: LockGuard<'a>) -> ConditionGuard<'a> {
        ConditionGuard {
            cond,
            guard: Some(guard),
            wake: Cell::new([0; SLOTS / 64]),
        }
    }

    /// Releases the lock, then wakes the sleepers that this guard's
    /// notifies picked.
    fn unlock(&mut self) -> Result<()> {
        let released = self.guard.take().map_or(Ok(()), LockGuard::release);
        for (word, bits) in self.wake.take().into_iter().enumerate() {
            let mut bits = bits;
            while bits != 0 {
                let i = word * 64 + bits.trailing_zeros() as usize;
                futex::wake(self.cond.words.state(i), 1);
                bits &= bits - 1;
            }
        }
        released
    }

    fn notify_n(&self, n: u32) {
        let mut wake = self.wake.get();
        self.cond.words.notify(n, &mut wake);
        self.wake.set(wake);
    }

    /// Releases the lock, sleeps until notified, takes the lock again
    /// (Python's `cond.wait()`). It returns only after a notify that
    /// picked it (no spurious wake-ups); still, check what you wait for
    /// in a loop, or use [`wait_for`](Self::wait_for): another process
    /// may have taken the lock first and changed it again.
    ///
    /// # Errors
    ///
    /// [`Error::OwnerDied`] if, while this one waited, a holder of the
    /// lock died holding it: the lock works again, but this guard is
    /// gone; [`Error::InvalidArgument`] when 256 processes and threads
    /// wait on this condition already; [`Error::Os`] if the kernel
    /// refuses the wait.
    pub fn wait(self) -> Result<ConditionGuard<'a>> {
        self.wait_until(None).map(|(guard, _)| guard)
    }

    /// Like [`wait`](Self::wait), but gives up once `timeout` has passed
    /// (never before): the lock is held again either way, and the `bool`
    /// says whether a notify came (Python's `cond.wait(timeout)`'s
    /// return value).
    ///
    /// # Errors
    ///
    /// As for `wait`.
    pub fn wait_timeout(self, timeout: Duration) -> Result<(ConditionGuard<'a>, bool)> {
        self.wait_until(deadline::after(timeout))
    }

    /// Waits until `ready` returns true (Python's `cond.wait_for(pred)`):
    /// looks first, and again after each notify, always under the lock.
    ///
    /// # Errors
    ///
    /// As for [`wait`](Self::wait).
    pub fn wait_for(mut self, mut ready: impl FnMut() -> bool) -> Result<ConditionGuard<'a>> {
        while !ready() {
            self = self.wait()?;
        }
        Ok(self)
    }

    /// Like [`wait_for`](Self::wait_for), but gives up once `timeout` has
    /// passed: the lock is held again either way, and the `bool` is what
    /// `ready` said last (Python's `cond.wait_for(pred, timeout)`).
    ///
    /// # Errors
    ///
    /// As for [`wait`](Self::wait).
    pub fn wait_for_timeout(
        mut self,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(ConditionGuard<'a>, bool)> {
        let deadline = deadline::after(timeout);
        loop {
            if ready() {
                return Ok((self, true));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok((self, false));
            }
            self = self.wait_until(deadline)?.0;
        }
    }

    /// Wakes up to `n` of the processes and threads waiting on the
    /// condition (Python's `cond.notify(n)`); they run once this guard
    /// releases the lock.
    pub fn notify(&self, n: u32) {
        self.notify_n(n);
    }

    /// Wakes every process and thread waiting on the condition (Python's
    /// `cond.notify_all()`).
    pub fn notify_all(&self) {
        self.notify_n(u32::MAX);
    }

    /// Releases the lock now. Dropping the guard does the same, but can
    /// only log a failure; this returns it.
    ///
    /// # Errors
    ///
    /// As [`LockGuard::release`].
    pub fn release(mut self) -> Result<()> {
        self.unlock()
    }

    fn wait_until(mut self, deadline: Option<Instant>) -> Result<(ConditionGuard<'a>, bool)> {
        let cond = self.cond;
        let words = &cond.words;
        // Take a slot while we hold the lock: a notify from now on sees us.
        let slot = words.register()?;
        let slept = self.unlock().and_then(|()| words.sleep(slot, deadline));
        // The lock again, whatever happened: the slot is given back under
        // it. A holder that died meanwhile leaves it repaired and free.
        let mut died = false;
        let guard = loop {
            match cond.relock() {
                Ok(guard) => break guard,
                Err(Error::OwnerDied) => died = true,
                Err(e) => {
                    // Not ours to hold: give the slot back without it
                    // rather than leave it taken.
                    words.leave(slot);
                    return Err(e);
                }
            }
        };
        let notified = words.leave(slot);
        slept?;
        if died {
            drop(guard);
            return Err(Error::OwnerDied);
        }
        Ok((ConditionGuard::new(cond, guard), notified))
    }
}

impl fmt::Debug for ConditionGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConditionGuard").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::super::waiters::FREE;
    use super::*;

    #[test]
    fn a_wait_with_nobody_to_notify_times_out_holding_the_lock() {
        let cond = Condition::new().unwrap();
        let guard = cond.acquire().unwrap();
        let start = Instant::now();
        let (guard, notified) = guard.wait_timeout(Duration::from_millis(20)).unwrap();
        assert!(!notified);
        assert!(start.elapsed() >= Duration::from_millis(20));
        assert!(cond.lock().try_acquire().unwrap().is_none(), "held again");
        drop(guard);
        assert_eq!(cond.words.waiting().load(Ordering::SeqCst), 0);
        assert!((0..SLOTS).all(|i| cond.words.state(i).load(Ordering::SeqCst) == FREE));
    }

    #[test]
    fn notify_one_wakes_one_of_two_threads() {
        let cond = Condition::new().unwrap();
        let woke = AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    let g = cond.acquire().unwrap();
                    let (_g, notified) = g.wait_timeout(Duration::from_millis(500)).unwrap();
                    if notified {
                        woke.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
            while cond.words.waiting().load(Ordering::SeqCst) < 2 {
                std::thread::yield_now();
            }
            cond.acquire().unwrap().notify(1);
        });
        assert_eq!(woke.load(Ordering::SeqCst), 1);
        assert_eq!(cond.words.waiting().load(Ordering::SeqCst), 0);
    }
}
