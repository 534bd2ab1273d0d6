//! `Event`: Python's `multiprocessing.Event`, one word in shared memory.
//!
//! An [`Event`] is one 32-bit word and a futex: no mutex, no condition
//! variable. glibc's process-shared condition variable is not safe against
//! a waiter that is killed: a later signaller waits for every waiter of the
//! old group to leave (`__condvar_quiesce_and_switch_g1`), and a killed one
//! never leaves. A futex keeps no record of its waiters in user memory, so
//! a killed waiter leaves nothing behind, and with no lock there is nothing
//! a `fork` could copy in a locked state. `FUTEX_WAIT_BITSET` takes an
//! absolute `CLOCK_MONOTONIC` deadline. Besides the flag, the word counts
//! the `set`s, so that a waiter can tell that one happened while it slept,
//! even if a `clear` came at once.

use std::fmt;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

use crate::base::{Error, Result};
use crate::os::futex;
use crate::os::memfd::Segment;
use crate::os::{deadline, spin};
use crate::wire::handles::{Handle, travels_as_descriptor};

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

/// How long a `wait` looks at the word before it sleeps.
const SPIN: Duration = Duration::from_micros(20);

/// An event travels to a spawned child as its memfd's descriptor (see
/// [`process::Builder::spawn_fn`](crate::process::Builder::spawn_fn)); it
/// serializes nowhere else.
impl Handle for Event {
    const WHAT: &'static str = "Event";

    fn memfd(&self) -> BorrowedFd<'_> {
        self.segment.memfd()
    }

    fn from_memfd(memfd: OwnedFd, _: u64) -> Result<Self> {
        let segment = Segment::from_memfd(memfd, size_of::<AtomicU32>())?;
        Ok(Event {
            segment: Arc::new(segment),
        })
    }
}

travels_as_descriptor!(Event);

impl Event {
    /// A new event, not set (Python's `mp.Event()`).
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the shared memory cannot be mapped.
    pub fn new() -> Result<Event> {
        let segment = Segment::shared(size_of::<AtomicU32>(), align_of::<AtomicU32>())?;
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
        match deadline::after(timeout) {
            Some(deadline) => self.wait_until(Some(deadline), timeout),
            None => self.wait(),
        }
    }

    fn wait_until(&self, deadline: Option<Instant>, timeout: Duration) -> Result<()> {
        let word = self.word();
        let start = word.load(Ordering::SeqCst);
        if start & FLAG != 0 {
            return Ok(());
        }
        // Look again for a little while before sleeping: a peer that is
        // running sets its event within microseconds, and falling asleep
        // and being woken costs more than that (a `set` then needs no
        // system call either, as nobody sleeps yet).
        let over = || wait_is_over(start, word.load(Ordering::Relaxed)).then_some(());
        if spin::until(Instant::now() + SPIN, over).is_some() {
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
                if !wait_is_over(start, word.load(Ordering::SeqCst)) && Instant::now() >= deadline {
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
