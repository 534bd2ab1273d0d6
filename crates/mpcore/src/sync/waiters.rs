//! The table of waiters under a [`Condition`](super::Condition): a slot
//! per waiting process or thread, each with the word it sleeps on, its
//! ticket (its place in the queue) and a robust mutex it holds while it
//! has the slot. See `condition.rs` for why.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::base::{Error, Result};
use crate::os::memfd::Segment;
use crate::os::mutex::RawMutex;
use crate::os::{futex, spin};
use crate::wire::handles::{Handle, travels_as_descriptor};

/// The condition's table of waiters, in a mapping of its own: a handle
/// that travels as a descriptor, beside its lock's.
#[derive(Clone)]
pub(super) struct Words(Arc<Segment>);

/// How many processes and threads may wait on one condition at once.
pub(super) const SLOTS: usize = 256;

/// The table's layout: two words (how many slots wait unsignalled, the
/// next ticket), then the slots' words, their tickets, their mutexes.
const STATES: usize = 8;
const TICKETS: usize = STATES + 4 * SLOTS;
const MUTEXES: usize = TICKETS + 4 * SLOTS;
const SIZE: usize = MUTEXES + SLOTS * size_of::<libc::pthread_mutex_t>();

/// A slot's word: free, or taken by a waiter that waits (and may sleep),
/// or that has been signalled.
pub(super) const FREE: u32 = 0;
pub(super) const WAITING: u32 = 1;
pub(super) const SLEEPING: u32 = 2;
pub(super) const SIGNALLED: u32 = 4;

/// How long a waiter looks for its signal before it sleeps.
const SPIN: Duration = Duration::from_micros(20);
/// The longest a waiter sleeps without looking at its slot again.
const SLICE: Duration = Duration::from_millis(100);

impl Handle for Words {
    const WHAT: &'static str = "Condition";

    fn memfd(&self) -> BorrowedFd<'_> {
        self.0.memfd()
    }

    fn from_memfd(memfd: OwnedFd, _: u64) -> Result<Self> {
        Ok(Words(Arc::new(Segment::from_memfd(memfd, SIZE)?)))
    }
}

travels_as_descriptor!(Words);

impl Words {
    pub(super) fn new() -> Result<Words> {
        let segment = Segment::shared(SIZE, align_of::<libc::pthread_mutex_t>())?;
        for i in 0..SLOTS {
            // SAFETY: the segment is fresh, page-aligned and `SIZE` long;
            // slot `i`'s mutex lies inside it, aligned (`MUTEXES` is a
            // multiple of 8, as is the mutex's size), and lives as long as
            // every handle to the condition.
            unsafe {
                RawMutex::init(
                    segment
                        .base()
                        .add(MUTEXES + i * size_of::<libc::pthread_mutex_t>()),
                )?
            };
        }
        Ok(Words(segment))
    }

    fn word(&self, offset: usize) -> &AtomicU32 {
        debug_assert!(offset + 4 <= MUTEXES && offset % 4 == 0);
        // SAFETY: `offset` is one of the table's words (below `MUTEXES`,
        // 4-aligned), in a mapping that lives as long as `self`; every
        // process touches them only atomically.
        unsafe { &*self.0.base().add(offset).cast::<AtomicU32>() }
    }

    /// How many slots wait, not yet signalled.
    pub(super) fn waiting(&self) -> &AtomicU32 {
        self.word(0)
    }

    fn next_ticket(&self) -> &AtomicU32 {
        self.word(4)
    }

    pub(super) fn state(&self, i: usize) -> &AtomicU32 {
        self.word(STATES + 4 * i)
    }

    fn ticket(&self, i: usize) -> &AtomicU32 {
        self.word(TICKETS + 4 * i)
    }

    fn mutex(&self, i: usize) -> RawMutex {
        // SAFETY: `Words::new` initialised a mutex here, inside the
        // mapping, which lives as long as `self`.
        unsafe {
            RawMutex::at(
                self.0
                    .base()
                    .add(MUTEXES + i * size_of::<libc::pthread_mutex_t>()),
            )
        }
    }

    /// Whether the waiter that holds slot `i` is dead; if so the slot is
    /// free again. Under the condition's lock.
    fn reclaim_if_dead(&self, i: usize) -> bool {
        match self.mutex(i).try_lock() {
            Ok(false) => false,
            Ok(true) => {
                // Free, yet the word says taken: its waiter died between
                // freeing its word and its mutex. Free it again.
                let _ = self.mutex(i).unlock();
                self.forget(i);
                true
            }
            Err(_) => {
                // `OwnerDied`: the mutex is repaired and released.
                self.forget(i);
                true
            }
        }
    }

    /// Frees slot `i`, whose waiter is gone without freeing it.
    fn forget(&self, i: usize) {
        let was = self.state(i).swap(FREE, Ordering::SeqCst);
        if was & SIGNALLED == 0 && was != FREE {
            self.waiting().fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Takes a free slot for this thread. Under the condition's lock.
    pub(super) fn register(&self) -> Result<usize> {
        let free = (0..SLOTS).find(|&i| self.state(i).load(Ordering::SeqCst) == FREE);
        let slot = free.or_else(|| (0..SLOTS).find(|&i| self.reclaim_if_dead(i)));
        let Some(i) = slot else {
            return Err(Error::InvalidArgument(
                "a Condition takes at most 256 waiters at once",
            ));
        };
        // A free slot's mutex is free, or was left by a waiter killed as
        // it freed the slot: `try_lock` then repairs it, and the next
        // takes it.
        let mutex = self.mutex(i);
        if !matches!(mutex.try_lock(), Ok(true)) && !mutex.try_lock()? {
            return Err(Error::InvalidArgument(
                "a Condition's waiter slot was held by a live thread while marked free",
            ));
        }
        let ticket = self.next_ticket().fetch_add(1, Ordering::SeqCst);
        self.ticket(i).store(ticket, Ordering::SeqCst);
        self.state(i).store(WAITING, Ordering::SeqCst);
        self.waiting().fetch_add(1, Ordering::SeqCst);
        Ok(i)
    }

    /// Gives slot `i` back; says whether it was signalled. Under the
    /// condition's lock, by the thread that took it.
    pub(super) fn leave(&self, i: usize) -> bool {
        let was = self.state(i).swap(FREE, Ordering::SeqCst);
        let signalled = was & SIGNALLED != 0;
        if !signalled {
            self.waiting().fetch_sub(1, Ordering::SeqCst);
        }
        if let Err(e) = self.mutex(i).unlock() {
            log::error!("mpcore: a Condition's waiter could not release its slot: {e}");
        }
        signalled
    }

    /// The waiting slot that came first, if any.
    fn oldest(&self) -> Option<usize> {
        let next = self.next_ticket().load(Ordering::SeqCst);
        (0..SLOTS)
            .filter(|&i| self.state(i).load(Ordering::SeqCst) & (WAITING | SIGNALLED) == WAITING)
            .max_by_key(|&i| next.wrapping_sub(self.ticket(i).load(Ordering::SeqCst)))
    }

    /// Signals up to `n` live waiters, oldest first, and notes in `wake`
    /// those that sleep: they are woken once the lock is released. Under
    /// the lock.
    pub(super) fn notify(&self, mut n: u32, wake: &mut [u64; SLOTS / 64]) {
        while n > 0 && self.waiting().load(Ordering::SeqCst) > 0 {
            let Some(i) = self.oldest() else { return };
            if self.reclaim_if_dead(i) {
                continue;
            }
            let was = self.state(i).swap(SIGNALLED, Ordering::SeqCst);
            self.waiting().fetch_sub(1, Ordering::SeqCst);
            if was & SLEEPING != 0 {
                wake[i / 64] |= 1 << (i % 64);
            }
            n -= 1;
        }
    }

    /// Between letting go of the lock and taking it again: looks for the
    /// signal, then sleeps on the slot's word until it comes or the
    /// deadline passes.
    pub(super) fn sleep(&self, i: usize, deadline: Option<Instant>) -> Result<()> {
        let state = self.state(i);
        let signalled = || (state.load(Ordering::Relaxed) & SIGNALLED != 0).then_some(());
        let spin_until = Instant::now() + SPIN;
        let spin_until = deadline.map_or(spin_until, |d| d.min(spin_until));
        // Look again for a while, but yielding between looks rather than
        // pausing: the notifier may be waiting for this very CPU, and
        // then a spin would only keep it from running.
        if spin::until_yielding(spin_until, signalled).is_some() {
            return Ok(());
        }
        loop {
            let now = state.load(Ordering::SeqCst);
            if now & SIGNALLED != 0 || deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(());
            }
            if now & SLEEPING == 0
                && state
                    .compare_exchange(now, now | SLEEPING, Ordering::SeqCst, Ordering::SeqCst)
                    .is_err()
            {
                continue;
            }
            // In slices: a notifier wakes us after it lets go of the
            // lock, and one killed in between never does; the next look
            // finds its signal all the same.
            let slice = Instant::now() + SLICE;
            let until = deadline.map_or(slice, |d| d.min(slice));
            match futex::wait(state, now | SLEEPING, Some(until)) {
                Ok(()) | Err(Errno::EAGAIN | Errno::EINTR | Errno::ETIMEDOUT) => {}
                Err(e) => return Err(Error::os("futex", e)),
            }
        }
    }
}
