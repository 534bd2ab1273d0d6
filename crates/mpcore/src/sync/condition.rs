//! [`Condition`]: Python's `multiprocessing.Condition`, a [`Lock`] and
//! three words in shared memory that waiters sleep on (a futex).
//!
//! Not glibc's process-shared condition variable, which a waiter killed
//! while it waits can jam for every later `notify` (see `event.rs`).
//! Here the words are:
//!
//! - `seq`, the futex: it moves at every `notify`, and a waiter sleeps
//!   only while it still reads what it read before it last looked for a
//!   signal, so a `notify` that comes between a waiter's check of its
//!   predicate and its sleep is never lost (the waiter registered under
//!   the lock, before it let go of it);
//! - `counts`: the waiters registered and not yet signalled (low 16
//!   bits) and the signals not yet taken (high 16 bits), in one word so
//!   that a `notify(n)` turns up to `n` waiters into signals, and a
//!   waiter that returns takes one unit away, in one step each;
//! - `sleepers`: how many are asleep, so that a `notify` with nobody
//!   asleep makes no system call.
//!
//! A waiter that is killed leaves its unit in `counts`: a later `notify`
//! may count it and give its signal to a live waiter (so a `notify(1)`
//! still wakes one live waiter), or, if the dead one was already
//! signalled, the next waiter finds that signal and wakes at once: a
//! spurious wake-up, which a predicate loop ([`ConditionGuard::wait_for`])
//! shrugs off.

use std::fmt;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use serde::{Deserialize, Serialize};

use crate::base::{Error, Result};
use crate::lock::{Lock, LockGuard};
use crate::os::memfd::Segment;
use crate::os::{deadline, futex, spin};
use crate::wire::handles::{Handle, travels_as_descriptor};

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
///     move || -> mpcore::Result<u32> {
///         let guard = cond.acquire()?;
///         let _guard = guard.wait_for(|| ready.get().is_ok_and(|r| r > 0))?;
///         ready.get()
///     }
/// })?;
/// {
///     let guard = cond.acquire()?;
///     ready.set(7)?;
///     guard.notify_all();
/// }
/// assert_eq!(consumer.join()??, 7);
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

/// The condition's three words, in a mapping of their own: a handle that
/// travels as a descriptor, beside its lock's.
#[derive(Clone)]
struct Words(Arc<Segment>);

#[repr(C)]
struct State {
    seq: AtomicU32,
    counts: AtomicU32,
    sleepers: AtomicU32,
    /// Unused: makes the mapping 16 bytes, a size no other handle has.
    _reserved: AtomicU32,
}

const WAITER: u32 = 1;
const SIGNAL: u32 = 1 << 16;
const MASK: u32 = 0xffff;

/// How long a waiter looks for a signal before it sleeps.
const SPIN: Duration = Duration::from_micros(20);

impl Handle for Words {
    const WHAT: &'static str = "Condition";

    fn memfd(&self) -> BorrowedFd<'_> {
        self.0.memfd()
    }

    fn from_memfd(memfd: OwnedFd, _: u64) -> Result<Self> {
        Ok(Words(Arc::new(Segment::from_memfd(
            memfd,
            size_of::<State>(),
        )?)))
    }
}

travels_as_descriptor!(Words);

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
        let words = Words(Segment::shared(size_of::<State>(), align_of::<State>())?);
        Ok(Condition { words, lock })
    }

    /// The condition's lock.
    pub fn lock(&self) -> &Lock {
        &self.lock
    }

    fn state(&self) -> &State {
        // SAFETY: the segment starts with a zeroed `State`, page-aligned,
        // that lives as long as `self`; every process touches it only
        // atomically.
        unsafe { &*self.words.0.base().cast::<State>() }
    }

    /// Takes the lock (Python's `with cond:`), to look at the shared data
    /// and then wait or notify.
    ///
    /// # Errors
    ///
    /// As [`Lock::acquire`]: [`Error::OwnerDied`] when the last holder
    /// died holding the lock.
    pub fn acquire(&self) -> Result<ConditionGuard<'_>> {
        Ok(ConditionGuard {
            cond: self,
            guard: self.lock.acquire()?,
        })
    }

    /// Like [`acquire`](Self::acquire), giving up with [`Error::Timeout`]
    /// once `timeout` has passed.
    ///
    /// # Errors
    ///
    /// As [`Lock::acquire_timeout`].
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<ConditionGuard<'_>> {
        Ok(ConditionGuard {
            cond: self,
            guard: self.lock.acquire_timeout(timeout)?,
        })
    }

    /// Takes one signal, if there is one.
    fn take_signal(&self) -> bool {
        self.state()
            .counts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                (c >> 16 > 0).then(|| c - SIGNAL)
            })
            .is_ok()
    }

    /// A waiter gives up: takes its unit away, as a signal if one is
    /// waiting (then it was notified after all), else as a waiter.
    fn leave(&self) -> bool {
        let was = self
            .state()
            .counts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                if c >> 16 > 0 {
                    Some(c - SIGNAL)
                } else {
                    Some(c.saturating_sub(WAITER))
                }
            });
        was.is_ok_and(|c| c >> 16 > 0)
    }

    fn notify(&self, n: u32) {
        let State {
            seq,
            counts,
            sleepers,
            ..
        } = self.state();
        let moved = counts.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
            let k = (c & MASK).min(n).min(MASK - (c >> 16));
            (k > 0).then(|| c - k * WAITER + k * SIGNAL)
        });
        if moved.is_err() {
            return; // nobody waits
        }
        seq.fetch_add(1, Ordering::SeqCst);
        // Every sleeper wakes and tries for a signal; those that get none
        // sleep again. Waking only `n` would lose the signal of one that
        // was killed as it woke.
        if sleepers.load(Ordering::SeqCst) > 0 {
            futex::wake(seq, i32::MAX);
        }
    }
}

/// The lock of a [`Condition`], held; dropping it releases the lock.
///
/// Like a [`LockGuard`] it stays in the thread that took it.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ConditionGuard<'a> {
    cond: &'a Condition,
    guard: LockGuard<'a>,
}

impl<'a> ConditionGuard<'a> {
    /// Releases the lock, sleeps until notified, takes the lock again
    /// (Python's `cond.wait()`). No spurious wake-ups, except after a
    /// waiter was killed (see [`Condition`]); still, check what you wait
    /// for in a loop, or use [`wait_for`](Self::wait_for): another
    /// process may have got there first.
    ///
    /// # Errors
    ///
    /// [`Error::OwnerDied`] if, while this one waited, a holder of the
    /// lock died holding it: the lock works again, but this guard is
    /// gone; [`Error::Os`] if the kernel refuses the wait.
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
        self.cond.notify(n);
    }

    /// Wakes every process and thread waiting on the condition (Python's
    /// `cond.notify_all()`).
    pub fn notify_all(&self) {
        self.cond.notify(u32::MAX);
    }

    /// Releases the lock now. Dropping the guard does the same, but can
    /// only log a failure; this returns it.
    ///
    /// # Errors
    ///
    /// As [`LockGuard::release`].
    pub fn release(self) -> Result<()> {
        self.guard.release()
    }

    fn wait_until(self, deadline: Option<Instant>) -> Result<(ConditionGuard<'a>, bool)> {
        let cond = self.cond;
        let State {
            seq,
            counts,
            sleepers,
            ..
        } = cond.state();
        // Register while we hold the lock: a notify from now on counts us.
        counts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                (c & MASK < MASK).then_some(c + WAITER)
            })
            .map_err(|_| {
                Error::InvalidArgument("a Condition takes at most 65535 waiters at once")
            })?;
        let notified = self
            .guard
            .release()
            .and_then(|()| cond.sleep(seq, sleepers, deadline));
        let notified = match notified {
            Ok(notified) => notified,
            Err(e) => {
                cond.leave();
                return Err(e);
            }
        };
        Ok((
            ConditionGuard {
                cond,
                guard: cond.lock.acquire()?,
            },
            notified,
        ))
    }
}

impl Condition {
    /// Between a waiter's letting go of the lock and its taking it again:
    /// looks for a signal, then sleeps on `seq`. Whether it was notified.
    fn sleep(
        &self,
        seq: &AtomicU32,
        sleepers: &AtomicU32,
        deadline: Option<Instant>,
    ) -> Result<bool> {
        let spin_until = Instant::now() + SPIN;
        let spin_until = deadline.map_or(spin_until, |d| d.min(spin_until));
        if spin::until(spin_until, || self.take_signal().then_some(())).is_some() {
            return Ok(true);
        }
        loop {
            // Read the sequence before looking for a signal: a notify
            // after the look moves it, and the futex then returns at once.
            let now = seq.load(Ordering::SeqCst);
            if self.take_signal() {
                return Ok(true);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(self.leave());
            }
            sleepers.fetch_add(1, Ordering::SeqCst);
            let slept = futex::wait(seq, now, deadline);
            sleepers.fetch_sub(1, Ordering::SeqCst);
            match slept {
                Ok(()) | Err(Errno::EAGAIN | Errno::EINTR | Errno::ETIMEDOUT) => {}
                Err(e) => return Err(Error::os("futex", e)),
            }
        }
    }
}

impl fmt::Debug for ConditionGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConditionGuard").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(
            cond.state().counts.load(Ordering::SeqCst),
            0,
            "unregistered"
        );
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
            while cond.state().counts.load(Ordering::SeqCst) & MASK < 2 {
                std::thread::yield_now();
            }
            cond.acquire().unwrap().notify(1);
        });
        assert_eq!(woke.load(Ordering::SeqCst), 1);
        assert_eq!(cond.state().counts.load(Ordering::SeqCst), 0);
    }
}
