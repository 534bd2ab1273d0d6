//! `Lock` and `Event`: Python's `multiprocessing.Lock` and `.Event`, in
//! shared memory, safe against a holder that is killed.
//!
//! # Why not `raw_sync`
//!
//! `raw_sync` (the crate the design first named) puts a pthread mutex and
//! condition variable in shared memory, but
//!
//! - its mutex is not *robust*: when a process is killed while it holds
//!   the lock, every other process waits for it for ever (exactly Python's
//!   behaviour, and the one thing we want to fix);
//! - its timed waits add the duration to `CLOCK_REALTIME` without carrying
//!   nanoseconds into seconds, so a deadline can have `tv_nsec` past one
//!   billion (the wait then fails with `EINVAL`), and a change of the wall
//!   clock moves the deadline.
//!
//! So mpcore makes the calls itself, and uses no part of `raw_sync`:
//!
//! - [`Lock`] (and the lock inside [`Value`](crate::Value) and
//!   [`Array`](crate::Array)) is a pthread mutex that is
//!   `PTHREAD_PROCESS_SHARED` (it lives in memory both processes map),
//!   `PTHREAD_MUTEX_ROBUST` (the kernel marks it when its owner dies, and
//!   the next locker gets `EOWNERDEAD`) and `PTHREAD_MUTEX_ERRORCHECK`
//!   (locking it twice from one thread is an error, not a hang). Timed
//!   locks use `pthread_mutex_clocklock` with an absolute
//!   `CLOCK_MONOTONIC` deadline (glibc 2.30 or newer), which a change of
//!   the wall clock cannot move.
//! - [`Event`] is one 32-bit word and a futex: no mutex, no condition
//!   variable. glibc's process-shared condition variable is not safe
//!   against a waiter that is killed: a later signaller waits for every
//!   waiter of the old group to leave (`__condvar_quiesce_and_switch_g1`),
//!   and a killed one never leaves. A futex keeps no record of its
//!   waiters in user memory, so a killed waiter leaves nothing behind, and
//!   with no lock there is nothing a `fork` could copy in a locked state.
//!   `FUTEX_WAIT_BITSET` takes an absolute `CLOCK_MONOTONIC` deadline.
//!   Besides the flag, the word counts the `set`s, so that a waiter can
//!   tell that one happened while it slept, even if a `clear` came at
//!   once.

use std::fmt;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::time::{ClockId, clock_gettime};

use crate::error::{Error, Result};
use crate::futex;
use crate::shm::Segment;

const NANOS_PER_SEC: i64 = 1_000_000_000;
/// How many times [`RawMutex::lock`] tries a busy lock before it sleeps,
/// and how many spin-loop pauses it makes between tries (a few µs in all).
const SPIN_TRIES: u32 = 200;
const SPIN_PAUSES: u32 = 4;

// SAFETY: this is the declaration in glibc's <pthread.h>, which has had the
// function since 2.30 (2019); the `libc` crate does not bind it yet.
unsafe extern "C" {
    fn pthread_mutex_clocklock(
        mutex: *mut libc::pthread_mutex_t,
        clock: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

/// An absolute time on `CLOCK_MONOTONIC`, the clock `Instant` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Deadline {
    sec: i64,
    nsec: i64,
}

impl Deadline {
    fn now() -> Result<Deadline> {
        let now =
            clock_gettime(ClockId::CLOCK_MONOTONIC).map_err(|e| Error::os("clock_gettime", e))?;
        Ok(Deadline {
            sec: now.tv_sec(),
            nsec: now.tv_nsec(),
        })
    }

    /// Now plus `d`, with the nanoseconds carried into the seconds. `None`
    /// when that is past the end of time (`Duration::MAX`): wait for ever.
    pub(crate) fn after(d: Duration) -> Result<Option<Deadline>> {
        let now = Deadline::now()?;
        let Ok(secs) = i64::try_from(d.as_secs()) else {
            return Ok(None);
        };
        let mut nsec = now.nsec + i64::from(d.subsec_nanos());
        let mut carry = 0;
        if nsec >= NANOS_PER_SEC {
            nsec -= NANOS_PER_SEC;
            carry = 1;
        }
        Ok(now
            .sec
            .checked_add(secs)
            .and_then(|s| s.checked_add(carry))
            .map(|sec| Deadline { sec, nsec }))
    }

    pub(crate) fn has_passed(self) -> Result<bool> {
        Ok(Deadline::now()? >= self)
    }

    /// Sleeps until the deadline has passed, however often the sleep is
    /// cut short.
    fn sleep_until(self) -> Result<()> {
        loop {
            let now = Deadline::now()?;
            if now >= self {
                return Ok(());
            }
            let left = (self.sec - now.sec) * NANOS_PER_SEC + (self.nsec - now.nsec);
            std::thread::sleep(Duration::from_nanos(left.unsigned_abs()));
        }
    }

    pub(crate) fn timespec(self) -> libc::timespec {
        libc::timespec {
            tv_sec: self.sec,
            tv_nsec: self.nsec,
        }
    }
}

/// A robust, process-shared, error-checking pthread mutex somewhere in a
/// [`Segment`]. Whoever holds one keeps that segment alive.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawMutex(*mut libc::pthread_mutex_t);

impl RawMutex {
    /// Initialises a mutex in place.
    ///
    /// # Safety
    ///
    /// `at` must be aligned for `pthread_mutex_t`, point into shared memory
    /// that outlives every use of the returned value, and not be in use
    /// as a mutex yet (no process may be locking it).
    pub(crate) unsafe fn init(at: *mut u8) -> Result<RawMutex> {
        let mutex = at.cast::<libc::pthread_mutex_t>();
        let mut attr = MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: `attr` is ours to initialise.
        check("pthread_mutexattr_init", unsafe {
            libc::pthread_mutexattr_init(attr.as_mut_ptr())
        })?;
        let attr = attr.as_mut_ptr();
        // SAFETY: `attr` was initialised just above; the setters only write
        // to it, and `mutex` is valid memory for a mutex (the caller's
        // promise) that nobody uses yet.
        let result = unsafe {
            check(
                "pthread_mutexattr_setpshared",
                libc::pthread_mutexattr_setpshared(attr, libc::PTHREAD_PROCESS_SHARED),
            )
            .and_then(|()| {
                check(
                    "pthread_mutexattr_setrobust",
                    libc::pthread_mutexattr_setrobust(attr, libc::PTHREAD_MUTEX_ROBUST),
                )
            })
            .and_then(|()| {
                check(
                    "pthread_mutexattr_settype",
                    libc::pthread_mutexattr_settype(attr, libc::PTHREAD_MUTEX_ERRORCHECK),
                )
            })
            .and_then(|()| check("pthread_mutex_init", libc::pthread_mutex_init(mutex, attr)))
        };
        // SAFETY: `attr` is initialised and not used after this.
        unsafe { libc::pthread_mutexattr_destroy(attr) };
        result.map(|()| RawMutex(mutex))
    }

    /// A mutex that another process initialised (with [`init`]
    /// (RawMutex::init)) in memory that this process has mapped since.
    ///
    /// # Safety
    ///
    /// `at` must point to such an initialised mutex, in shared memory
    /// that outlives every use of the returned value.
    pub(crate) unsafe fn at(at: *mut u8) -> RawMutex {
        RawMutex(at.cast())
    }

    /// Locks, waiting as long as it takes.
    ///
    /// It first tries a few times without sleeping: a lock around a short
    /// step (`*v.lock()? += 1`) is usually free again within a microsecond,
    /// far sooner than a sleep in the kernel and a wake-up would take.
    pub(crate) fn lock(self) -> Result<()> {
        let (call, rc) = self.acquire();
        self.locked(call, rc)
    }

    /// Locks, waiting as long as it takes; when the last holder died
    /// holding it, marks it consistent and goes on holding it. Only for
    /// data that a holder's death cannot leave half-changed: every change
    /// takes effect with one store (the [`Queue`](crate::Queue)'s ring).
    pub(crate) fn lock_recovering(self) -> Result<()> {
        match self.acquire() {
            (_, 0) => Ok(()),
            (_, libc::EOWNERDEAD) => {
                // SAFETY: as in `acquire`; we hold the mutex, which is what
                // `pthread_mutex_consistent` asks for.
                let rc = unsafe { libc::pthread_mutex_consistent(self.0) };
                check("pthread_mutex_consistent", rc)
            }
            (call, rc) => self.locked(call, rc),
        }
    }

    /// `pthread_mutex_lock`, after a few tries without sleeping: the name
    /// of the call that answered, and its answer.
    fn acquire(self) -> (&'static str, libc::c_int) {
        for _ in 0..SPIN_TRIES {
            // Look before trying: a failed try is a write to the lock's
            // cache line, which takes the line away from the holder and
            // slows it down; a look only shares the line.
            if self.looks_free() {
                // SAFETY: as below.
                let rc = unsafe { libc::pthread_mutex_trylock(self.0) };
                if rc != libc::EBUSY {
                    // Taken (0), or a dead owner's lock is ours to repair.
                    return ("pthread_mutex_trylock", rc);
                }
            }
            for _ in 0..SPIN_PAUSES {
                std::hint::spin_loop();
            }
        }
        // SAFETY: `self.0` is an initialised mutex in live shared memory
        // (the invariant of `RawMutex`).
        let rc = unsafe { libc::pthread_mutex_lock(self.0) };
        ("pthread_mutex_lock", rc)
    }

    /// Whether the mutex looks free right now. Its first word is the
    /// futex word of the robust-futex protocol (the kernel reads it when a
    /// holder dies): the owner's thread id, 0 when free, with the kernel's
    /// `FUTEX_WAITERS` and `FUTEX_OWNER_DIED` bits on top; glibc keeps it
    /// at the start of the mutex (`__data.__lock`).
    fn looks_free(self) -> bool {
        // SAFETY: the mutex is initialised, 4-aligned, in shared memory that
        // outlives this call (the invariant of `RawMutex`); every locker,
        // glibc and the kernel included, touches that word atomically.
        unsafe { (*self.0.cast::<AtomicI32>()).load(Ordering::Relaxed) == 0 }
    }

    /// Locks if nobody holds the mutex; `Ok(false)` if somebody (this
    /// thread included) does.
    pub(crate) fn try_lock(self) -> Result<bool> {
        // SAFETY: as in `lock`.
        let rc = unsafe { libc::pthread_mutex_trylock(self.0) };
        match rc {
            libc::EBUSY | libc::EDEADLK => Ok(false),
            rc => self.locked("pthread_mutex_trylock", rc).map(|()| true),
        }
    }

    /// Locks, or gives up with [`Error::Timeout`] once `timeout` has passed
    /// (never before).
    pub(crate) fn lock_timeout(self, timeout: Duration) -> Result<()> {
        let Some(deadline) = Deadline::after(timeout)? else {
            return self.lock();
        };
        loop {
            let abstime = deadline.timespec();
            // SAFETY: as in `lock`; `abstime` is a valid timespec with
            // `tv_nsec` below one billion, on the clock we name.
            let rc = unsafe { pthread_mutex_clocklock(self.0, libc::CLOCK_MONOTONIC, &abstime) };
            match rc {
                libc::ETIMEDOUT if deadline.has_passed()? => return Err(Error::Timeout(timeout)),
                libc::ETIMEDOUT => continue,
                libc::EDEADLK => {
                    // This thread holds it, so it cannot be freed before
                    // the deadline: what a plain wait would have found out
                    // by waiting, we find out at once, and still wait.
                    deadline.sleep_until()?;
                    return Err(Error::Timeout(timeout));
                }
                rc => return self.locked("pthread_mutex_clocklock", rc),
            }
        }
    }

    /// Unlocks. Only the thread that locked may: for any other thread the
    /// mutex (an error-checking one) stays as it is, and the answer is
    /// [`Error::NotLockHolder`].
    pub(crate) fn unlock(self) -> Result<()> {
        // SAFETY: as in `lock`. A thread that does not own the mutex gets
        // `EPERM`, and the mutex is left untouched.
        match unsafe { libc::pthread_mutex_unlock(self.0) } {
            0 => Ok(()),
            libc::EPERM => Err(Error::NotLockHolder),
            rc => Err(Error::os("pthread_mutex_unlock", Errno::from_raw(rc))),
        }
    }

    /// Turns the result of a lock call into ours. On `EOWNERDEAD` we hold
    /// the lock that a dead thread left: mark it consistent, so that it
    /// works again, release it, and report the death.
    fn locked(self, call: &'static str, rc: libc::c_int) -> Result<()> {
        match rc {
            0 => Ok(()),
            libc::EOWNERDEAD => {
                // SAFETY: as in `lock`; we hold the mutex, which is what
                // `pthread_mutex_consistent` asks for.
                let rc = unsafe { libc::pthread_mutex_consistent(self.0) };
                let unlocked = self.unlock();
                check("pthread_mutex_consistent", rc)?;
                unlocked?;
                Err(Error::OwnerDied)
            }
            libc::EDEADLK => Err(Error::WouldDeadlock),
            rc => Err(Error::os(call, Errno::from_raw(rc))),
        }
    }
}

/// A [`RawMutex`] that this thread has locked, and the segment it lives in;
/// dropping it unlocks. The one part that every guard (of a [`Lock`], a
/// [`Value`](crate::Value), an [`Array`](crate::Array)) shares.
///
/// It is neither `Send` nor `Sync` (it holds a raw pointer), and must stay
/// so: it says "this thread holds the lock". In another thread it would
/// unlock a mutex that thread does not own; in a forked child (which
/// [`Process::spawn`](crate::Process::spawn)'s `Send + 'static` bound
/// keeps it from reaching) it would let two processes write "under the
/// lock" at once.
pub(crate) struct Held {
    /// `None` once [`release`](Held::release) has unlocked it.
    mutex: Option<RawMutex>,
    _segment: Arc<Segment>,
}

impl Held {
    /// Takes over a mutex that this thread has just locked.
    pub(crate) fn new(mutex: RawMutex, segment: &Arc<Segment>) -> Held {
        Held {
            mutex: Some(mutex),
            _segment: Arc::clone(segment),
        }
    }

    /// Unlocks now, and says whether that worked.
    pub(crate) fn release(mut self) -> Result<()> {
        self.mutex.take().map_or(Ok(()), RawMutex::unlock)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(mutex) = self.mutex.take() {
            // A destructor cannot return the error, and a lock that stays
            // locked must not go unnoticed: the next acquire would wait
            // for ever without a word.
            if let Err(e) = mutex.unlock() {
                log::error!(
                    "mpcore: a lock's guard was dropped, but the lock was not released: {e}"
                );
            }
        }
    }
}

fn check(call: &'static str, rc: libc::c_int) -> Result<()> {
    match rc {
        0 => Ok(()),
        rc => Err(Error::os(call, Errno::from_raw(rc))),
    }
}

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
/// [`Event`] it waits for (or a [`Value`](crate::Value) it checks).
///
/// # When the holder dies
///
/// If a process is killed while it holds the lock, Python's lock stays
/// locked for ever. Here the next `acquire` (or `try_acquire`, or
/// `acquire_timeout`, including one already waiting) returns
/// [`Error::OwnerDied`]. By then the lock has been repaired and released:
/// call `acquire` again to take it. Whatever the dead process was changing
/// under the lock may be half-done; the error is your cue to check it.
///
/// The lock is not reentrant, like Python's `Lock` (not `RLock`): `acquire`
/// from the thread that holds it returns [`Error::WouldDeadlock`] where
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

impl Lock {
    /// A new, unlocked lock (Python's `mp.Lock()`).
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the shared memory cannot be mapped.
    pub fn new() -> Result<Lock> {
        let segment = Segment::new(
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
    /// [`Error::OwnerDied`] when the last holder died holding it (the lock
    /// is usable again: call `acquire` again), [`Error::WouldDeadlock`]
    /// when this thread holds it already.
    pub fn acquire(&self) -> Result<LockGuard<'_>> {
        self.mutex.lock()?;
        Ok(self.guard())
    }

    /// Takes the lock if it is free, at once; `Ok(None)` if anyone,
    /// this thread included, holds it (Python's `l.acquire(False)`).
    ///
    /// # Errors
    ///
    /// [`Error::OwnerDied`] as for [`acquire`](Self::acquire).
    pub fn try_acquire(&self) -> Result<Option<LockGuard<'_>>> {
        Ok(self.mutex.try_lock()?.then(|| self.guard()))
    }

    /// Like [`acquire`](Self::acquire), but gives up with
    /// [`Error::Timeout`] once `timeout` has passed, never before, for any
    /// duration (Python's `l.acquire(timeout=...)` returning `False`).
    /// A zero timeout takes a free lock, like `try_acquire`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`], or [`Error::OwnerDied`] as for `acquire`. When
    /// this thread itself holds the lock, the answer is still a timeout,
    /// after the full duration, as the wait would have found.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<LockGuard<'_>> {
        self.mutex.lock_timeout(timeout)?;
        Ok(self.guard())
    }

    fn guard(&self) -> LockGuard<'_> {
        LockGuard {
            held: Held::new(self.mutex, &self.segment),
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
    /// [`Error::NotLockHolder`] if this thread does not hold the lock after all
    /// (which safe code cannot bring about: the guard stays in the thread
    /// that acquired the lock); [`Error::Os`] if the system refuses.
    pub fn release(self) -> Result<()> {
        self.held.release()
    }
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard").finish_non_exhaustive()
    }
}

/// A flag that processes (and threads) share and can wait for, Python's
/// `multiprocessing.Event`.
///
/// ```
/// use std::time::Duration;
/// use mpcore::{Event, Process};
///
/// let ready = Event::new()?;
/// let mut child = Process::spawn({
///     let ready = ready.clone();
///     move || ready.wait_timeout(Duration::from_secs(60)).is_ok()
/// })?;
/// ready.set();
/// assert!(child.join()?);
/// # Ok::<(), mpcore::Error>(())
/// ```
///
/// An `Event` holds no lock, so a process killed while it waits or sets
/// leaves nothing behind, and it is as safe in a thread as in a process.
///
/// A `set` ends every wait that is under way, as Python's does, even if
/// the event is cleared again before a waiter gets to look at it.
#[derive(Clone)]
pub struct Event {
    segment: Arc<Segment>,
}

// The event's one word, which is also the futex that waiters sleep on:
//
// - bit 0, `FLAG`: the event is set;
// - bit 1, `SLEEPERS`: a waiter may be asleep on the futex, so a `set`
//   must wake it (without it, a `set` makes no system call);
// - bits 2 to 31: how many times a `set` found the flag clear, wrapping.
//
// A waiter notes the count when it starts and returns when the flag is
// set or the count has moved: a `set` followed at once by a `clear` still
// moves the count. The count wraps after 2^30 sets; a waiter misses one
// only if exactly that many happen while it does not look (it is woken
// by each of them).
const FLAG: u32 = 1;
const SLEEPERS: u32 = 2;
/// What one `set` adds to the word.
const ONE_SET: u32 = 4;

/// Whether a wait that began when the word read `start` (flag clear) is
/// over now that it reads `now`.
fn wait_is_over(start: u32, now: u32) -> bool {
    now & FLAG != 0 || (now ^ start) & !(FLAG | SLEEPERS) != 0
}

/// Sets the flag, counts the set and wakes the sleepers, if there are any.
/// Only atomics and one system call: safe in a signal handler.
fn set_word(word: &AtomicU32) {
    let was = word.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
        // Already set: nothing changes, and nobody waits for this flag.
        (w & FLAG == 0).then(|| ((w | FLAG) & !SLEEPERS).wrapping_add(ONE_SET))
    });
    // Every sleeper wakes, sees the count moved and leaves, so the
    // sleepers bit is cleared with this one wake-up.
    if was.is_ok_and(|w| w & SLEEPERS != 0) {
        futex::wake(word, i32::MAX);
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("is_set", &self.is_set())
            .finish()
    }
}

impl Event {
    /// A new event, not set (Python's `mp.Event()`).
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the shared memory cannot be mapped.
    pub fn new() -> Result<Event> {
        let segment = Segment::new(size_of::<AtomicU32>(), align_of::<AtomicU32>())?;
        Ok(Event { segment })
    }

    fn word(&self) -> &AtomicU32 {
        // SAFETY: the segment starts with 4 zeroed (= unset), page-aligned
        // bytes that live as long as `self`; every process touches them
        // only atomically.
        unsafe { &*self.segment.base().cast::<AtomicU32>() }
    }

    /// Sets the flag and wakes every process and thread that waits for it.
    /// With nobody waiting, it makes no system call.
    pub fn set(&self) {
        set_word(self.word());
    }

    /// Clears the flag: `wait` blocks again until the next `set`. A wait
    /// that was under way when the flag was set still ends.
    pub fn clear(&self) {
        self.word().fetch_and(!FLAG, Ordering::SeqCst);
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.word().load(Ordering::SeqCst) & FLAG != 0
    }

    /// Waits until the flag is set (returns at once if it is). A `set`
    /// from anywhere ends the wait, even if a `clear` follows at once.
    ///
    /// # Errors
    ///
    /// Only [`Error::Os`], if the kernel refuses the wait.
    pub fn wait(&self) -> Result<()> {
        self.wait_until(None, Duration::MAX)
    }

    /// Waits until the flag is set, or gives up with [`Error::Timeout`]
    /// once `timeout` has passed, never before, for any duration. Python's
    /// `e.wait(timeout)` returns `False` instead.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        match Deadline::after(timeout)? {
            Some(deadline) => self.wait_until(Some(deadline), timeout),
            None => self.wait(),
        }
    }

    fn wait_until(&self, deadline: Option<Deadline>, timeout: Duration) -> Result<()> {
        let word = self.word();
        let start = word.load(Ordering::SeqCst);
        if start & FLAG != 0 {
            return Ok(());
        }
        loop {
            let mut now = word.load(Ordering::SeqCst);
            if wait_is_over(start, now) {
                return Ok(());
            }
            if now & SLEEPERS == 0 {
                // Say that a sleeper is coming before sleeping, so that the
                // next `set` wakes us. If the word changed meanwhile, look
                // again: it may have been that `set`.
                let asleep = now | SLEEPERS;
                if word
                    .compare_exchange(now, asleep, Ordering::SeqCst, Ordering::SeqCst)
                    .is_err()
                {
                    continue;
                }
                now = asleep;
            }
            // Sleeps only while the word still reads `now`: a `set` (or a
            // `clear`) after our last look returns at once.
            match futex::wait(word, now, deadline) {
                Ok(()) | Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
                Err(Errno::ETIMEDOUT) => {}
                Err(e) => return Err(Error::os("futex", e)),
            }
            if let Some(deadline) = deadline {
                if !wait_is_over(start, word.load(Ordering::SeqCst)) && deadline.has_passed()? {
                    return Err(Error::Timeout(timeout));
                }
            }
        }
    }

    /// From now on, Ctrl-C (`SIGINT`) and `SIGTERM` set this event instead
    /// of ending the process, so that `main` can stop its workers cleanly.
    ///
    /// Children forked afterwards inherit this: Ctrl-C, which the terminal
    /// sends to the whole process group, sets the event in them too
    /// instead of killing them; stop them as usual, through their own
    /// event. The event's memory stays mapped for the rest of the process
    /// (the handler may run at any time). A later call, with this event or
    /// another, replaces the earlier one.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the handler cannot be installed.
    pub fn set_on_interrupt(&self) -> Result<()> {
        let word = self.segment.base().cast::<AtomicU32>();
        // Leak one handle, so the mapping outlives any handler call.
        std::mem::forget(Arc::clone(&self.segment));
        INTERRUPT_EVENT.store(word, Ordering::SeqCst);
        let action = SigAction::new(
            SigHandler::Handler(on_interrupt),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        for signal in [Signal::SIGINT, Signal::SIGTERM] {
            // SAFETY: `on_interrupt` does only what a signal handler may:
            // atomic loads and compare-exchanges, and one `futex` system
            // call.
            unsafe { sigaction(signal, &action) }.map_err(|e| Error::os("sigaction", e))?;
        }
        Ok(())
    }
}

/// The event word that [`Event::set_on_interrupt`] chose, or null.
static INTERRUPT_EVENT: AtomicPtr<AtomicU32> = AtomicPtr::new(ptr::null_mut());

extern "C" fn on_interrupt(_signal: libc::c_int) {
    let word = INTERRUPT_EVENT.load(Ordering::SeqCst);
    if word.is_null() {
        return;
    }
    // A handler must leave `errno` as it found it.
    let saved = Errno::last_raw();
    // SAFETY: a non-null pointer here is the word of an event whose
    // mapping was leaked on purpose, so it is valid for the whole process.
    set_word(unsafe { &*word });
    Errno::set_raw(saved);
}

#[cfg(test)]
mod tests {
    use super::*;

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
