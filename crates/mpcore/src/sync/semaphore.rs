//! [`Semaphore`]: Python's `multiprocessing.Semaphore` and
//! `BoundedSemaphore`, a counter word in shared memory and a futex.
//!
//! No lock: `acquire` takes a permit with one compare-and-swap on the
//! counter, `release` gives one back with one addition, and a waiter
//! sleeps on the counter's futex while it reads 0. A process killed at
//! any point holds nothing that others wait for, except the permits it
//! had taken (see [`Semaphore`]'s docs).

use std::fmt;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::base::{Error, Result};
use crate::os::memfd::Segment;
use crate::os::{deadline, futex, spin};
use crate::wire::handles::{Handle, travels_as_descriptor};

/// A counter of permits that processes (and threads) share, Python's
/// `multiprocessing.Semaphore`; made with [`Semaphore::bounded`], its
/// `BoundedSemaphore`.
///
/// [`acquire`](Semaphore::acquire) waits for a permit and returns it as a
/// [`Permit`], which gives itself back when dropped, as at the end of
/// Python's `with sem:` block. Here two of five processes are in at once:
///
/// ```
/// use mpcore::{Process, Semaphore, Value};
///
/// let sem = Semaphore::new(2)?;
/// let (inside, most) = (Value::new(0u32)?, Value::new(0u32)?);
/// let workers: Vec<_> = (0..5)
///     .map(|_| {
///         let (sem, inside, most) = (sem.clone(), inside.clone(), most.clone());
///         Process::spawn(move || {
///             let _permit = sem.acquire().unwrap();
///             let now = { let mut n = inside.lock().unwrap(); *n += 1; *n };
///             { let mut m = most.lock().unwrap(); *m = (*m).max(now); }
///             std::thread::sleep(std::time::Duration::from_millis(10));
///             *inside.lock().unwrap() -= 1;
///         })
///     })
///     .collect::<mpcore::Result<_>>()?;
/// for mut w in workers {
///     w.join()?;
/// }
/// assert!(most.get()? <= 2);
/// assert_eq!(sem.value(), 2);
/// # Ok::<(), mpcore::Error>(())
/// ```
///
/// # Releasing from elsewhere
///
/// Python lets any process `release` a semaphore, and a common pattern
/// has one process `acquire` and another `release`. Here a [`Permit`]
/// can be kept taken with [`Permit::forget`], and any process may give
/// one back with [`Semaphore::release`]. A bounded semaphore refuses a
/// release that would take its value above its start value, with
/// [`Error::ReleasedTooManyTimes`] (Python's `ValueError`).
///
/// # When a holder dies
///
/// The permits of a process that is killed while it holds them are lost,
/// as in Python: the semaphore cannot tell a permit held by a dead
/// process from one that was forgotten on purpose, to be released
/// elsewhere. [`value`](Semaphore::value) shows it, and
/// [`release`](Semaphore::release) puts the permit back. Nothing else is
/// left behind: a waiter that is killed blocks nobody.
#[derive(Clone)]
pub struct Semaphore {
    segment: Arc<Segment>,
}

/// The semaphore's memory.
#[repr(C)]
struct State {
    /// The permits free now, which is also the futex that waiters sleep
    /// on while it reads 0.
    value: AtomicU32,
    /// How many waiters are (about to be) asleep: a `release` makes the
    /// wake-up call only when some are. A waiter killed asleep leaves it
    /// one too high for good, which costs later releases a system call
    /// and nothing else.
    sleepers: AtomicU32,
    /// The most `value` may be: the start value of a bounded semaphore,
    /// `u32::MAX` for the others. Written once, before any sharing.
    max: AtomicU32,
}

/// How long an `acquire` looks at the counter before it sleeps.
const SPIN: Duration = Duration::from_micros(20);

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("value", &self.value())
            .finish_non_exhaustive()
    }
}

/// A semaphore travels to a spawned child as its memfd's descriptor (see
/// [`process::Builder::spawn_fn`](crate::process::Builder::spawn_fn)); it
/// serializes nowhere else.
impl Handle for Semaphore {
    const WHAT: &'static str = "Semaphore";

    fn memfd(&self) -> BorrowedFd<'_> {
        self.segment.memfd()
    }

    fn from_memfd(memfd: OwnedFd, _: u64) -> Result<Self> {
        let segment = Segment::from_memfd(memfd, size_of::<State>())?;
        Ok(Semaphore {
            segment: Arc::new(segment),
        })
    }
}

travels_as_descriptor!(Semaphore);

impl Semaphore {
    /// A semaphore with `value` permits (Python's `mp.Semaphore(value)`).
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the shared memory cannot be mapped.
    pub fn new(value: u32) -> Result<Semaphore> {
        Semaphore::with_max(value, u32::MAX)
    }

    /// A semaphore with `value` permits that may never hold more (Python's
    /// `mp.BoundedSemaphore(value)`): a [`release`](Self::release) beyond
    /// that is [`Error::ReleasedTooManyTimes`].
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the shared memory cannot be mapped.
    pub fn bounded(value: u32) -> Result<Semaphore> {
        Semaphore::with_max(value, value)
    }

    fn with_max(value: u32, max: u32) -> Result<Semaphore> {
        let segment = Segment::shared(size_of::<State>(), align_of::<State>())?;
        let sem = Semaphore { segment };
        sem.state().value.store(value, Ordering::Relaxed);
        sem.state().max.store(max, Ordering::Relaxed);
        Ok(sem)
    }

    #[inline]
    fn state(&self) -> &State {
        // SAFETY: the segment starts with a zeroed (or initialised)
        // `State`, page-aligned, that lives as long as `self`; every
        // process touches it only atomically.
        unsafe { &*self.segment.base().cast::<State>() }
    }

    /// The permits free now (Python's `sem.get_value()`). Another process
    /// may change it at once: a figure to show, not to decide on.
    pub fn value(&self) -> u32 {
        self.state().value.load(Ordering::SeqCst)
    }

    /// Whether this semaphore refuses releases beyond its start value
    /// (made by [`bounded`](Self::bounded)).
    pub fn is_bounded(&self) -> bool {
        self.state().max.load(Ordering::Relaxed) != u32::MAX
    }

    /// Takes a permit if one is free, at once.
    #[inline]
    fn take(&self) -> bool {
        let value = &self.state().value;
        let mut now = value.load(Ordering::Relaxed);
        while now > 0 {
            match value.compare_exchange_weak(now, now - 1, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(seen) => now = seen,
            }
        }
        false
    }

    /// Waits for a permit and takes it (Python's `with sem:` or
    /// `sem.acquire()`).
    ///
    /// # Errors
    ///
    /// Only [`Error::Os`], if the kernel refuses the wait.
    #[inline]
    pub fn acquire(&self) -> Result<Permit<'_>> {
        // A free permit is one compare-and-swap, inlined into the caller;
        // the waiting is out of line.
        if self.take() {
            return Ok(Permit::new(self));
        }
        self.acquire_until(None, Duration::MAX)
    }

    /// Takes a permit if one is free, at once; `None` if none is (Python's
    /// `sem.acquire(False)`).
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        self.take().then(|| Permit::new(self))
    }

    /// Like [`acquire`](Self::acquire), but gives up with
    /// [`Error::Timeout`] once `timeout` has passed, never before, for any
    /// duration (Python's `sem.acquire(timeout=...)` returning `False`).
    /// A zero timeout takes a free permit, like `try_acquire`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`], or [`Error::Os`] as for `acquire`.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<Permit<'_>> {
        match deadline::after(timeout) {
            Some(at) => self.acquire_until(Some(at), timeout),
            None => self.acquire(),
        }
    }

    fn acquire_until(&self, deadline: Option<Instant>, timeout: Duration) -> Result<Permit<'_>> {
        if self.take() {
            return Ok(Permit::new(self));
        }
        // Look again for a while, yielding the CPU between looks: the
        // holder that will release may be waiting for this very CPU.
        let spin_until = Instant::now() + SPIN;
        let spin_until = deadline.map_or(spin_until, |d| d.min(spin_until));
        if spin::until_yielding(spin_until, || self.take().then_some(())).is_some() {
            return Ok(Permit::new(self));
        }
        let State {
            value, sleepers, ..
        } = self.state();
        loop {
            if self.take() {
                return Ok(Permit::new(self));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Error::Timeout(timeout));
            }
            // Say that a sleeper is coming, then sleep only while the
            // counter still reads 0: a `release` either comes after our
            // count (and sees it, and wakes us) or before the futex's
            // look (which then returns at once). Both SeqCst.
            sleepers.fetch_add(1, Ordering::SeqCst);
            let slept = futex::wait(value, 0, deadline);
            sleepers.fetch_sub(1, Ordering::SeqCst);
            match slept {
                Ok(()) | Err(Errno::EAGAIN | Errno::EINTR | Errno::ETIMEDOUT) => {}
                Err(e) => return Err(Error::os("futex", e)),
            }
        }
    }

    /// Gives a permit back (Python's `sem.release()`): one that a
    /// [`Permit::forget`] kept taken, or a new one for an unbounded
    /// semaphore. Any process may call it.
    ///
    /// # Errors
    ///
    /// [`Error::ReleasedTooManyTimes`] when the value would go above a
    /// bounded semaphore's start value (or above `u32::MAX`); the value
    /// is left as it was.
    #[inline]
    pub fn release(&self) -> Result<()> {
        let State {
            value,
            sleepers,
            max,
        } = self.state();
        let max = max.load(Ordering::Relaxed);
        value
            .fetch_update(Ordering::SeqCst, Ordering::Relaxed, |v| {
                (v < max).then_some(v + 1)
            })
            .map_err(|_| Error::ReleasedTooManyTimes { max })?;
        // Every sleeper wakes and tries: one gets the permit, the others
        // sleep again. Waking one only would strand the permit if that one
        // were killed before it took it.
        if sleepers.load(Ordering::SeqCst) > 0 {
            futex::wake(value, i32::MAX);
        }
        Ok(())
    }
}

/// A permit taken from a [`Semaphore`]; dropping it gives it back.
///
/// Unlike a lock's guard, a permit belongs to no thread: it may be moved
/// to another thread, which then gives it back. To give it back from
/// another *process*, [`forget`](Permit::forget) it here and call
/// [`Semaphore::release`] there.
#[must_use = "the permit is given back as soon as it is dropped"]
pub struct Permit<'a> {
    sem: &'a Semaphore,
    /// False once given back or forgotten.
    held: bool,
}

impl<'a> Permit<'a> {
    #[inline]
    fn new(sem: &'a Semaphore) -> Permit<'a> {
        Permit { sem, held: true }
    }

    /// Gives the permit back now (Python's `sem.release()`). Dropping it
    /// does the same, but can only log a failure; this returns it.
    ///
    /// # Errors
    ///
    /// [`Error::ReleasedTooManyTimes`] when a bounded semaphore is full
    /// already: someone called [`Semaphore::release`] for a permit that
    /// was not forgotten.
    pub fn release(mut self) -> Result<()> {
        self.held = false;
        self.sem.release()
    }

    /// Keeps the permit taken, for good: the semaphore has one permit
    /// fewer until someone calls [`Semaphore::release`] (Python's
    /// `acquire` without a `release`, to be released elsewhere).
    pub fn forget(mut self) {
        self.held = false;
    }
}

impl Drop for Permit<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.held {
            if let Err(e) = self.sem.release() {
                log::error!("mpcore: a semaphore's permit was dropped, but not given back: {e}");
            }
        }
    }
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_count_down_and_come_back() {
        let sem = Semaphore::new(2).unwrap();
        let a = sem.acquire().unwrap();
        let b = sem.try_acquire().expect("a second permit");
        assert_eq!(sem.value(), 0);
        assert!(sem.try_acquire().is_none());
        let e = sem.acquire_timeout(Duration::from_millis(5)).unwrap_err();
        assert!(matches!(e, Error::Timeout(_)), "{e:?}");
        drop(a);
        b.forget();
        assert_eq!(sem.value(), 1);
        sem.release().unwrap();
        assert_eq!(sem.value(), 2);
    }

    #[test]
    fn a_bounded_semaphore_refuses_a_release_beyond_its_start_value() {
        let sem = Semaphore::bounded(1).unwrap();
        assert!(sem.is_bounded());
        let e = sem.release().unwrap_err();
        assert!(matches!(e, Error::ReleasedTooManyTimes { max: 1 }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "the semaphore was released too many times: its value would go above 1, the most \
             it may count (a bounded semaphore may not go above its start value)"
        );
        assert_eq!(sem.value(), 1, "left as it was");
        let p = sem.acquire().unwrap();
        sem.release().unwrap();
        assert!(matches!(
            p.release(),
            Err(Error::ReleasedTooManyTimes { max: 1 })
        ));
        assert!(!Semaphore::new(0).unwrap().is_bounded());
    }

    #[test]
    fn a_sleeping_acquire_wakes_on_a_release_from_another_thread() {
        let sem = Semaphore::new(0).unwrap();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                sem.acquire_timeout(Duration::from_secs(30))
                    .map(Permit::forget)
            });
            std::thread::sleep(Duration::from_millis(50));
            sem.release().unwrap();
            waiter.join().unwrap().unwrap();
        });
        assert_eq!(sem.value(), 0);
    }
}
