//! The robust mutex under [`Lock`](crate::Lock), [`Value`](crate::Value),
//! [`Array`](crate::Array), the [`Queue`](crate::Queue)'s two locks and
//! [`SharedMemory`](crate::SharedMemory).
//!
//! # Why not `raw_sync`
//!
//! `raw_sync` (the crate most Rust code would reach for) puts a pthread mutex and
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
//! - [`Lock`](crate::Lock) (and the lock inside [`Value`](crate::Value) and
//!   [`Array`](crate::Array)) is a pthread mutex that is
//!   `PTHREAD_PROCESS_SHARED` (it lives in memory both processes map),
//!   `PTHREAD_MUTEX_ROBUST` (the kernel marks it when its owner dies, and
//!   the next locker gets `EOWNERDEAD`) and `PTHREAD_MUTEX_ERRORCHECK`
//!   (locking it twice from one thread is an error, not a hang). Timed
//!   locks use `pthread_mutex_clocklock` with an absolute
//!   `CLOCK_MONOTONIC` deadline (glibc 2.30 or newer), which a change of
//!   the wall clock cannot move.
//! - [`Event`](crate::Event) (in `event.rs`) is one 32-bit word and a
//!   futex: no mutex, no condition variable.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::{deadline, spin};
use crate::base::{Error, Result};

/// How many times [`RawMutex::lock`] looks at a busy lock before it
/// sleeps, and how many spin-loop pauses it makes between looks. Few looks,
/// far apart: a waiter that looks often keeps taking the lock's cache line
/// from the holder, which then runs slower; one that looks seldom lets the
/// holder run on (and take the lock again), which is what throughput
/// wants. Measured with 2 processes x 100,000 `*v.lock()? += 1` on the
/// course's machine (2 cores): 4 pauses, 40 ms; 16, 6 to 16 ms; 128, 7.4
/// ms; 256, 7.0 ms, where std's `Mutex` between 2 threads takes 6.6 ms.
const SPIN_TRIES: u32 = 20;
const SPIN_PAUSES: u32 = 256;

// SAFETY: this is the declaration in glibc's <pthread.h>, which has had the
// function since 2.30 (2019); the `libc` crate does not bind it yet.
unsafe extern "C" {
    fn pthread_mutex_clocklock(
        mutex: *mut libc::pthread_mutex_t,
        clock: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

/// A robust, process-shared, error-checking pthread mutex somewhere in a
/// [`Segment`](super::memfd::Segment). Whoever holds one keeps that segment alive.
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

    /// The mutex that [`init`](Self::init) made at `at`, in memory mapped
    /// again by another process (a spawned child).
    ///
    /// # Safety
    ///
    /// As for `init`, except that a mutex must already be initialised
    /// there, and may be in use.
    pub(crate) unsafe fn at(at: *mut u8) -> RawMutex {
        RawMutex(at.cast())
    }

    /// Locks, waiting as long as it takes.
    ///
    /// It first tries a few times without sleeping: a lock around a short
    /// step (`*v.lock()? += 1`) is usually free again within a microsecond,
    /// far sooner than a sleep in the kernel and a wake-up would take.
    ///
    /// The first try and its success are inlined into the caller: an
    /// uncontended lock is then one call into glibc, with nothing of ours
    /// between it and the caller's code (chapter 10 measures what that
    /// saves).
    #[inline]
    pub(crate) fn lock(self) -> Result<()> {
        // SAFETY: `self.0` is an initialised mutex in live shared memory
        // (the invariant of `RawMutex`).
        match unsafe { libc::pthread_mutex_trylock(self.0) } {
            0 => Ok(()),
            rc => self.lock_slowly(rc),
        }
    }

    /// The rest of [`lock`](Self::lock), once its first try has answered
    /// `first` (busy, or a dead owner's lock to repair, or an error).
    #[cold]
    #[inline(never)]
    fn lock_slowly(self, first: libc::c_int) -> Result<()> {
        let (call, rc) = if first == libc::EBUSY {
            self.acquire_after_first_try()
        } else {
            ("pthread_mutex_trylock", first)
        };
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
        // SAFETY: as below.
        let rc = unsafe { libc::pthread_mutex_trylock(self.0) };
        if rc != libc::EBUSY {
            return ("pthread_mutex_trylock", rc);
        }
        self.acquire_after_first_try()
    }

    /// [`acquire`](Self::acquire) once its first try found the mutex busy.
    fn acquire_after_first_try(self) -> (&'static str, libc::c_int) {
        for _ in 1..SPIN_TRIES {
            spin::pause(SPIN_PAUSES);
            // Look before each try: a failed try is a write to the lock's
            // cache line, which takes the line from the holder and slows
            // it down; a look only shares the line. (The first try, in
            // `acquire`, does not look: that would cost a second trip for
            // the line when the lock is free but last used elsewhere.)
            if self.looks_free() {
                // SAFETY: as below.
                let rc = unsafe { libc::pthread_mutex_trylock(self.0) };
                if rc != libc::EBUSY {
                    // Taken (0), or a dead owner's lock is ours to repair.
                    return ("pthread_mutex_trylock", rc);
                }
            }
        }
        spin::pause(SPIN_PAUSES);
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

    /// Whether this very thread holds the mutex: the futex word names the
    /// owner by its thread id (see [`looks_free`](Self::looks_free)), which
    /// only the owner writes there, and which the kernel clears when the
    /// owner dies. For [`RLock`](crate::RLock), which lets its holder in
    /// again.
    pub(crate) fn held_here(self) -> bool {
        // SAFETY: as in `looks_free`.
        let word = unsafe { (*self.0.cast::<AtomicI32>()).load(Ordering::Relaxed) };
        // SAFETY: `gettid` has no preconditions and cannot fail.
        let me = unsafe { libc::gettid() };
        word as u32 & libc::FUTEX_TID_MASK == me as u32
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
        let Some(deadline) = deadline::after(timeout) else {
            return self.lock();
        };
        loop {
            let Some(abstime) = deadline::monotonic(deadline)? else {
                return self.lock();
            };
            // SAFETY: as in `lock`; `abstime` is a valid timespec with
            // `tv_nsec` below one billion, on the clock we name.
            let rc = unsafe { pthread_mutex_clocklock(self.0, libc::CLOCK_MONOTONIC, &abstime) };
            match rc {
                libc::ETIMEDOUT if Instant::now() >= deadline => {
                    return Err(Error::Timeout(timeout));
                }
                libc::ETIMEDOUT => continue,
                libc::EDEADLK => {
                    // This thread holds it, so it cannot be freed before
                    // the deadline: what a plain wait would have found out
                    // by waiting, we find out at once, and still wait.
                    deadline::sleep_until(deadline);
                    return Err(Error::Timeout(timeout));
                }
                rc => return self.locked("pthread_mutex_clocklock", rc),
            }
        }
    }

    /// Unlocks. Only the thread that locked may: for any other thread the
    /// mutex (an error-checking one) stays as it is, and the answer is
    /// [`Error::NotLockHolder`].
    #[inline]
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

/// A [`RawMutex`] that this thread has locked; dropping it unlocks. The one
/// part that every guard (of a [`Lock`](crate::Lock), a
/// [`Value`](crate::Value), an [`Array`](crate::Array)) shares.
///
/// It keeps no segment alive: each of those guards borrows the value that
/// holds the segment, so the mutex's memory outlives the guard. (It once
/// held a clone of the segment's `Arc`: two atomic read-modify-writes more
/// per lock and unlock, part of what chapter 10 found the uncontended
/// lock spending beyond glibc's calls.)
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
}

impl Held {
    /// Takes over a mutex that this thread has just locked.
    ///
    /// The caller's guard must borrow what keeps the mutex's segment
    /// alive, for as long as the `Held` lives.
    #[inline]
    pub(crate) fn new(mutex: RawMutex) -> Held {
        Held { mutex: Some(mutex) }
    }

    /// Unlocks now, and says whether that worked.
    pub(crate) fn release(mut self) -> Result<()> {
        self.mutex.take().map_or(Ok(()), RawMutex::unlock)
    }
}

impl Drop for Held {
    #[inline]
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
