//! [`Barrier`]: Python's `multiprocessing.Barrier`, for processes and
//! threads, that a party killed while it waits breaks for the others.
//!
//! # The shared memory
//!
//! One memfd: a [`Header`] (a robust mutex and the round's words), then
//! two [`Slot`]s per party, one set for even rounds and one for odd ones.
//! A party that arrives takes its place `index` in the round under the
//! header's mutex, locks the robust mutex of its slot, and waits until
//! its slot says how the round ended (the *outcome*, tagged with the
//! round's number): the last arrival writes "passed" into every slot of
//! the round, a break writes "broken". A slot is read only by the one
//! party that holds it, so a fast party that is already in the next round
//! (which uses the other set of slots) never mixes with this one.
//!
//! # A party killed while it waits
//!
//! The kernel keeps a list of the robust mutexes that each thread holds,
//! and when a thread dies it marks each of them "owner died". So a
//! waiting party's slot mutex says whether that party is still alive,
//! exactly, with no process id that could be reused and no polling of
//! `/proc`. Waiters sleep at most [`SLICE`] at a time; when one wakes
//! with the round still open, it takes the header's mutex and tries the
//! slot mutexes of the round's other parties: busy means alive, "owner
//! died" means that the party was killed (or its thread ended) while it
//! waited, and the barrier breaks, as on a timeout. A round with a dead
//! party breaks within about [`SLICE`]; a round whose parties are all
//! alive costs one lock of the header's mutex per waiter per [`SLICE`].
//!
//! The last party to arrive looks at the slots of the others in the same
//! way before it lets the round pass, so that a round whose party died
//! breaks even when nobody is left to wait in it: `n - 1` `trylock`s a
//! round.
//!
//! A party killed *before* it calls `wait` cannot be told from a slow
//! one: the others wait for it as Python's do, so give such waits a
//! timeout.
//!
//! A process killed while it holds the header's mutex leaves `busy` set:
//! the next holder (told by the robust mutex that its owner died) breaks
//! the barrier, since the dead process may have been in the middle of
//! counting an arrival or ending a round.

use std::fmt;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::base::{Error, Result};
use crate::os::deadline::Wait;
use crate::os::memfd::Segment;
use crate::os::mutex::RawMutex;
use crate::os::{futex, spin};
use crate::wire::handles::{Handle, travels_as_descriptor};

/// How long a waiter sleeps at most before it looks whether the other
/// waiting parties are still alive.
const SLICE: Duration = Duration::from_millis(100);
/// How long a waiter looks at its slot before it sleeps: parties that run
/// arrive within microseconds of each other, and falling asleep and
/// being woken costs more than that. It yields its core between looks:
/// on a machine with more runnable processes than cores, the party it
/// waits for may be waiting for that core (a plain spin there made a
/// round three to seven times slower, measured on the course's 2 cores
/// under load).
const SPIN: Duration = Duration::from_micros(20);
/// The most parties a barrier takes (its memory is 128 bytes a party).
const MAX_PARTIES: usize = 1 << 16;

/// The words every party shares, on a cache line of their own.
#[repr(C, align(64))]
struct Header {
    /// Guards every change of the words below.
    mutex: libc::pthread_mutex_t,
    /// 1 while the holder of `mutex` changes several words: found set by
    /// the next holder, it says that the last one died half-way.
    busy: AtomicU32,
    parties: AtomicU32,
    /// The round's number (high 32 bits) and how many parties wait in it
    /// (low 32 bits): changed with one store.
    round: AtomicU64,
    /// 1 from a break (a timeout, `abort`, a killed party) until `reset`.
    broken: AtomicU32,
    /// Moves at the end of every round: the futex the waiters sleep on.
    ended: AtomicU32,
    /// How many waiters sleep, or are about to, on `ended`.
    sleepers: AtomicU32,
}

/// One waiting party's place in a round.
#[repr(C, align(64))]
struct Slot {
    /// Held by the party while it waits: the kernel marks it "owner died"
    /// if that party's thread dies.
    mutex: libc::pthread_mutex_t,
    /// How the last round that used this slot ended ([`outcome`]).
    outcome: AtomicU64,
}

/// The outcome word for round `round`: passed or broken. Bit 1 is always
/// set, so that a fresh slot (0) reads as no outcome.
fn outcome(round: u32, passed: bool) -> u64 {
    u64::from(round) << 2 | 2 | u64::from(passed)
}

fn pack(round: u32, waiting: u32) -> u64 {
    u64::from(round) << 32 | u64::from(waiting)
}

fn unpack(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

/// The bytes of a barrier of `parties`.
fn size(parties: usize) -> usize {
    size_of::<Header>() + 2 * parties * size_of::<Slot>()
}

/// A point that `n` processes (or threads) reach before any of them goes
/// on, Python's `multiprocessing.Barrier`.
///
/// Each call to [`wait`](Barrier::wait) blocks until `n` calls wait, then
/// all of them return, and the barrier is ready for the next round. Make
/// it before [`Process::spawn`](crate::Process::spawn) and move a clone
/// into each child; a spawned child gets it as a descriptor.
///
/// ```
/// use std::time::Duration;
/// use mpcore::{Barrier, Process};
///
/// let barrier = Barrier::new(2)?;
/// let mut child = Process::spawn({
///     let barrier = barrier.clone();
///     move || barrier.wait_timeout(Duration::from_secs(60)).map(|r| r.index).ok()
/// })?;
/// let mine = barrier.wait_timeout(Duration::from_secs(60))?;
/// let theirs = child.join()?.expect("the child passed the barrier");
/// assert_eq!(mine.index + theirs, 1); // one arrived first (0), one last (1)
/// # Ok::<(), mpcore::Error>(())
/// ```
///
/// # When it breaks
///
/// As in Python, a wait that times out, or a call to
/// [`abort`](Barrier::abort), *breaks* the barrier: every party waiting
/// in the round returns [`Error::BrokenBarrier`], and so does every later
/// `wait`, until [`reset`](Barrier::reset). The wait that timed out
/// itself returns [`Error::Timeout`] (Python raises `BrokenBarrierError`
/// there too), so that it can tell its own deadline from a break.
///
/// Beyond Python: a party that is killed (or whose thread ends) while it
/// waits breaks the barrier too, within about 100 ms, or at once for the
/// party that arrives last, where Python's next `wait` hangs for ever,
/// timeout or not (its condition variable waits for the dead sleeper to
/// wake). A party killed before it reaches `wait` is only late, as far as
/// anyone can tell: the others wait for it, so give them a timeout. The waiters look every 100 ms
/// whether the others are still alive; they ask the kernel, through the
/// robust mutex that each waiting party holds, so a process id used
/// again by another process cannot fool them.
#[derive(Clone)]
pub struct Barrier {
    segment: Arc<Segment>,
    parties: usize,
}

// SAFETY: `segment` is shared memory that `Barrier` keeps alive; every
// access to it goes through atomics or the process-shared robust mutexes.
unsafe impl Send for Barrier {}
// SAFETY: as above.
unsafe impl Sync for Barrier {}

/// What [`Barrier::wait`] returns to each party of a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarrierWaitResult {
    /// The order of arrival in the round, from 0 to `parties - 1`
    /// (Python's return value of `wait()`).
    pub index: usize,
    /// True for exactly one party of each round: the last to arrive, the
    /// one that let the others go (Rust's `BarrierWaitResult::is_leader`).
    /// Python programs use `index == 0` for the same purpose.
    pub is_leader: bool,
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties)
            .field("n_waiting", &self.n_waiting())
            .field("is_broken", &self.is_broken())
            .finish()
    }
}

/// A barrier travels to a spawned child as its memfd's descriptor (see
/// [`process::Builder::spawn_fn`](crate::process::Builder::spawn_fn)); it
/// serializes nowhere else.
impl Handle for Barrier {
    const WHAT: &'static str = "Barrier";

    fn memfd(&self) -> BorrowedFd<'_> {
        self.segment.memfd()
    }

    fn len(&self) -> u64 {
        self.parties as u64
    }

    fn from_memfd(memfd: OwnedFd, parties: u64) -> Result<Self> {
        let parties = usize::try_from(parties)
            .ok()
            .filter(|&n| (1..=MAX_PARTIES).contains(&n))
            .ok_or(Error::InvalidArgument(
                "the barrier received names a number of parties no barrier has",
            ))?;
        let segment = Arc::new(Segment::from_memfd(memfd, size(parties))?);
        let barrier = Barrier { segment, parties };
        if barrier.header().parties.load(Ordering::Relaxed) as usize != parties {
            return Err(Error::InvalidArgument(
                "the memory received as a barrier is not a barrier's",
            ));
        }
        Ok(barrier)
    }
}

travels_as_descriptor!(Barrier);

/// Holds the header's mutex; unlocks when dropped.
struct Locked<'a>(&'a Barrier);

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.0.header().busy.store(0, Ordering::SeqCst);
        // Only this thread took it, within one call: an unlock fails only
        // if memory was corrupted, and then it must not pass unnoticed.
        if let Err(e) = self.0.mutex().unlock() {
            log::error!("mpcore: a barrier's lock could not be released: {e}");
        }
    }
}

impl Barrier {
    /// A barrier for `parties` processes or threads (Python's
    /// `mp.Barrier(parties)`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for 0 parties, or more than 65,536;
    /// [`Error::Os`] when the shared memory cannot be made.
    pub fn new(parties: usize) -> Result<Barrier> {
        if parties == 0 {
            return Err(Error::InvalidArgument(
                "a barrier needs at least one party to wait for",
            ));
        }
        if parties > MAX_PARTIES {
            return Err(Error::InvalidArgument(
                "a barrier takes at most 65,536 parties",
            ));
        }
        let segment = Segment::shared(size(parties), align_of::<Header>())?;
        let barrier = Barrier { segment, parties };
        for i in 0..=2 * parties {
            let at = if i == 0 {
                barrier.segment.base()
            } else {
                barrier.slot_ptr(i - 1).cast()
            };
            // SAFETY: the segment is fresh, zeroed and not shared yet;
            // the header and every slot start on a 64-byte boundary, with
            // the mutex first, and live as long as the segment.
            unsafe { RawMutex::init(at)? };
        }
        barrier
            .header()
            .parties
            .store(parties as u32, Ordering::Relaxed);
        Ok(barrier)
    }

    fn header(&self) -> &Header {
        // SAFETY: the segment starts with an initialised `Header`, 64-byte
        // aligned, that lives as long as `self`; its fields are atomics, or
        // the mutex, which is only used through `RawMutex`.
        unsafe { &*self.segment.base().cast::<Header>() }
    }

    fn mutex(&self) -> RawMutex {
        // SAFETY: `Barrier::new` initialised it; the segment outlives the
        // value, which is used only while `self` is borrowed.
        unsafe { RawMutex::at(self.segment.base()) }
    }

    /// The `i`th slot: `round % 2 * parties + index`.
    fn slot_ptr(&self, i: usize) -> *mut Slot {
        debug_assert!(i < 2 * self.parties);
        // SAFETY: the segment holds the header and then `2 * parties`
        // slots, so the slot is within it.
        unsafe {
            self.segment
                .base()
                .add(size_of::<Header>() + i * size_of::<Slot>())
                .cast()
        }
    }

    fn slot(&self, round: u32, index: usize) -> (&AtomicU64, RawMutex) {
        let slot = self.slot_ptr(round as usize % 2 * self.parties + index);
        // SAFETY: an initialised slot (see `slot_ptr`) that lives as long
        // as `self`; its outcome is only used atomically, its mutex only
        // through `RawMutex`.
        unsafe { (&(*slot).outcome, RawMutex::at(slot.cast())) }
    }

    /// How many parties must call `wait` for a round to pass (Python's
    /// `b.parties`).
    pub fn parties(&self) -> usize {
        self.parties
    }

    /// How many parties wait in the current round now (Python's
    /// `b.n_waiting`).
    pub fn n_waiting(&self) -> usize {
        unpack(self.header().round.load(Ordering::SeqCst)).1 as usize
    }

    /// Whether the barrier is broken (Python's `b.broken`): every `wait`
    /// returns [`Error::BrokenBarrier`] until [`reset`](Self::reset).
    pub fn is_broken(&self) -> bool {
        self.header().broken.load(Ordering::SeqCst) != 0
    }

    /// Waits until all the parties have called `wait` (Python's
    /// `b.wait()`), and returns the order in which this one arrived.
    ///
    /// # Errors
    ///
    /// [`Error::BrokenBarrier`] when the barrier is broken, or breaks while
    /// this party waits: another party's wait timed out, it was aborted
    /// or reset, or another waiting party was killed.
    pub fn wait(&self) -> Result<BarrierWaitResult> {
        self.wait_with(Wait::Forever)
    }

    /// Like [`wait`](Self::wait), but gives up once `timeout` has passed,
    /// never before, and then *breaks the barrier* for everyone, as
    /// Python's `b.wait(timeout)` does. A zero timeout passes only if this
    /// party is the last to arrive.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] for this party when its time ran out (the
    /// others, and every later `wait`, get [`Error::BrokenBarrier`]);
    /// otherwise as [`wait`](Self::wait).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<BarrierWaitResult> {
        self.wait_with(Wait::from_timeout(timeout))
    }

    /// Breaks the barrier (Python's `b.abort()`): every party waiting now
    /// returns [`Error::BrokenBarrier`], and so does every later `wait`
    /// until [`reset`](Self::reset).
    ///
    /// # Errors
    ///
    /// [`Error::Os`] only, if the barrier's lock cannot be taken.
    pub fn abort(&self) -> Result<()> {
        let locked = self.lock()?;
        self.break_round(&locked);
        Ok(())
    }

    /// Makes the barrier whole and empty again (Python's `b.reset()`):
    /// parties waiting now return [`Error::BrokenBarrier`]; later waits
    /// start a new round.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] only, if the barrier's lock cannot be taken.
    pub fn reset(&self) -> Result<()> {
        let locked = self.lock()?;
        if self.n_waiting() > 0 {
            self.break_round(&locked);
        }
        self.header().broken.store(0, Ordering::SeqCst);
        Ok(())
    }

    /// Takes the header's mutex. If its last holder died holding it, it
    /// may have been half-way through counting an arrival or ending a
    /// round: the barrier breaks.
    fn lock(&self) -> Result<Locked<'_>> {
        self.mutex().lock_recovering()?;
        let header = self.header();
        let died_inside = header.busy.swap(1, Ordering::SeqCst) != 0;
        let locked = Locked(self);
        if died_inside {
            self.break_round(&locked);
        }
        Ok(locked)
    }

    /// Ends the current round with "broken" for every party in it, and
    /// marks the barrier broken. Under the header's mutex.
    fn break_round(&self, _locked: &Locked<'_>) {
        let header = self.header();
        header.broken.store(1, Ordering::SeqCst);
        self.end_round(false);
    }

    /// Writes how the current round ended into the slot of each party
    /// in it, then opens the next round and wakes the sleepers. Under
    /// the header's mutex.
    fn end_round(&self, passed: bool) {
        let header = self.header();
        let (round, waiting) = unpack(header.round.load(Ordering::SeqCst));
        for index in 0..(waiting as usize).min(self.parties) {
            self.slot(round, index)
                .0
                .store(outcome(round, passed), Ordering::SeqCst);
        }
        header
            .round
            .store(pack(round.wrapping_add(1), 0), Ordering::SeqCst);
        header.ended.fetch_add(1, Ordering::SeqCst);
        if header.sleepers.load(Ordering::SeqCst) > 0 {
            futex::wake(&header.ended, i32::MAX);
        }
    }

    fn wait_with(&self, wait: Wait) -> Result<BarrierWaitResult> {
        let header = self.header();
        // Arrive: take a place in the round, and hold its slot.
        let (round, index, slot) = loop {
            let locked = self.lock()?;
            if header.broken.load(Ordering::SeqCst) != 0 {
                return Err(Error::BrokenBarrier);
            }
            let (round, waiting) = unpack(header.round.load(Ordering::SeqCst));
            let index = waiting as usize;
            if index >= self.parties {
                // Never written so (only by a stray write into the shared
                // memory): no slot is there, so end the round instead.
                self.break_round(&locked);
                return Err(Error::BrokenBarrier);
            }
            if index + 1 == self.parties {
                // The last to arrive lets the round pass, unless a party
                // of it was killed while it waited: the next round would
                // wait for that one for ever.
                if self.a_party_died(round, index)? {
                    self.break_round(&locked);
                    return Err(Error::BrokenBarrier);
                }
                header
                    .round
                    .store(pack(round, waiting + 1), Ordering::SeqCst);
                self.end_round(true);
                drop(locked);
                return Ok(BarrierWaitResult {
                    index,
                    is_leader: true,
                });
            }
            let (outcome, slot) = self.slot(round, index);
            match slot.try_lock() {
                Ok(true) => {
                    header
                        .round
                        .store(pack(round, waiting + 1), Ordering::SeqCst);
                    break (round, index, (outcome, slot));
                }
                // A party of the round before last that has not left yet
                // (a caller outside the usual set of parties): let it go.
                Ok(false) | Err(Error::OwnerDied) => {}
                Err(e) => return Err(e),
            }
            drop(locked);
            if let Err(e) = wait.give_up(Error::Timeout(Duration::ZERO)) {
                self.abort()?;
                return Err(e);
            }
            std::thread::yield_now();
        };
        let result = self.wait_for_outcome(round, index, slot.0, wait);
        // Only this thread took it: an unlock fails only if memory was
        // corrupted, and then it must not pass unnoticed.
        if let Err(e) = slot.1.unlock() {
            log::error!("mpcore: a barrier's slot could not be released: {e}");
        }
        result.map(|()| BarrierWaitResult {
            index,
            is_leader: false,
        })
    }

    /// Waits until the round ends (our slot holds its outcome), the wait
    /// runs out, or another waiting party is found dead.
    fn wait_for_outcome(
        &self,
        round: u32,
        index: usize,
        outcome_word: &AtomicU64,
        wait: Wait,
    ) -> Result<()> {
        let header = self.header();
        let ended = |o: u64| o == outcome(round, true) || o == outcome(round, false);
        let answer = |o: u64| {
            if o == outcome(round, true) {
                Ok(())
            } else {
                Err(Error::BrokenBarrier)
            }
        };
        let spin = Instant::now() + SPIN;
        let until = wait.deadline().map_or(spin, |at| at.min(spin));
        // Between looks, give the core to whatever else waits for it:
        // on a busy machine that is often the very party we wait for.
        let look = || Some(outcome_word.load(Ordering::Relaxed)).filter(|&o| ended(o));
        if let Some(o) = spin::until_yielding(until, look) {
            return answer(o);
        }
        loop {
            header.sleepers.fetch_add(1, Ordering::SeqCst);
            let seen = header.ended.load(Ordering::SeqCst);
            let o = outcome_word.load(Ordering::SeqCst);
            if ended(o) {
                header.sleepers.fetch_sub(1, Ordering::SeqCst);
                return answer(o);
            }
            let slice = Instant::now() + SLICE;
            let sleep_until = wait.deadline().map_or(slice, |at| at.min(slice));
            let slept = futex::wait(&header.ended, seen, Some(sleep_until));
            header.sleepers.fetch_sub(1, Ordering::SeqCst);
            match slept {
                Ok(()) | Err(Errno::EAGAIN) | Err(Errno::EINTR) | Err(Errno::ETIMEDOUT) => {}
                Err(e) => return Err(Error::os("futex", e)),
            }
            let o = outcome_word.load(Ordering::SeqCst);
            if ended(o) {
                return answer(o);
            }
            let now = Instant::now();
            let timed_out = wait.deadline().is_some_and(|at| now >= at);
            if !timed_out && now < slice {
                continue;
            }
            // The deadline, or a slice, has passed with the round open:
            // under the lock, see whether it ended meanwhile, else break it
            // (a timeout) or look for dead parties (a slice).
            let locked = self.lock()?;
            let o = outcome_word.load(Ordering::SeqCst);
            if ended(o) {
                return answer(o);
            }
            if timed_out {
                self.break_round(&locked);
                return match wait {
                    Wait::Until(_, timeout) => Err(Error::Timeout(timeout)),
                    _ => Err(Error::Timeout(Duration::ZERO)),
                };
            }
            if self.a_party_died(round, index)? {
                self.break_round(&locked);
                return Err(Error::BrokenBarrier);
            }
        }
    }

    /// Whether a party of the open round `round`, other than `me`, died
    /// while it waited. Under the header's mutex.
    fn a_party_died(&self, round: u32, me: usize) -> Result<bool> {
        let waiting = self.n_waiting().min(self.parties);
        for index in (0..waiting).filter(|&i| i != me) {
            let (_, slot) = self.slot(round, index);
            match slot.try_lock() {
                // Held: its party waits, alive.
                Ok(false) => {}
                // Free: cannot happen to a party counted in an open round
                // (it locks its slot before it counts); give it back.
                Ok(true) => slot.unlock()?,
                Err(Error::OwnerDied) => return Ok(true),
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }
}
