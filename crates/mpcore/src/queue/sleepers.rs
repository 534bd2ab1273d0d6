//! Where the ring's producers and consumers sleep: a futex word each side,
//! with a count of sleepers, so that a `put` or `get` with nobody asleep
//! makes no system call.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::base::{Error, Result};
use crate::os::deadline::Wait;
use crate::os::futex;

/// How long a sleeper sleeps at most before it looks again: a waker that
/// was killed between its change and its wake-up costs no more than this.
const SLICE: Duration = Duration::from_millis(100);

/// A word to sleep on, and how many sleep on it, on a cache line of its own.
#[repr(C, align(64))]
pub(super) struct Sleepers {
    word: AtomicU32,
    count: AtomicU32,
    /// 1 while a wake-up is on its way to a sleeper that has not run yet:
    /// a producer far ahead of a woken consumer that waits for a core
    /// would otherwise make a system call for every message meanwhile.
    pending: AtomicU32,
}

impl Sleepers {
    /// Wakes up to `n` sleepers, if any sleep and no wake-up is on its way.
    pub(super) fn wake(&self, n: i32) {
        if self.count.load(Ordering::SeqCst) > 0 && self.pending.swap(1, Ordering::SeqCst) == 0 {
            self.word.fetch_add(1, Ordering::SeqCst);
            futex::wake(&self.word, n);
        }
    }

    /// Wakes one more sleeper, if any, whatever is on its way: in case
    /// the one woken before was killed before it could take its turn.
    pub(super) fn wake_another(&self) {
        if self.count.load(Ordering::SeqCst) > 0 {
            self.word.fetch_add(1, Ordering::SeqCst);
            futex::wake(&self.word, 1);
        }
    }

    /// Counts the caller in as a sleeper, before it looks a last time;
    /// returns the word's value to sleep on.
    pub(super) fn announce(&self) -> u32 {
        // A wake-up that found nobody to wake must not hold back the
        // next one.
        self.pending.store(0, Ordering::SeqCst);
        let word = self.word.load(Ordering::SeqCst);
        self.count.fetch_add(1, Ordering::SeqCst);
        word
    }

    /// The last look found what it waited for: no sleep after all.
    pub(super) fn cancel(&self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
    }

    /// Sleeps while the word reads `seen` (see [`sleep`]), then counts the
    /// caller out again.
    pub(super) fn sleep(&self, seen: u32, wait: Wait) -> Result<()> {
        let slept = sleep(&self.word, seen, wait);
        self.count.fetch_sub(1, Ordering::SeqCst);
        self.pending.store(0, Ordering::SeqCst);
        slept
    }
}

/// Sleeps on `word` while it still reads `seen`, at most [`SLICE`] and
/// not past the wait's deadline.
fn sleep(word: &AtomicU32, seen: u32, wait: Wait) -> Result<()> {
    let slice = Instant::now() + SLICE;
    let until = wait.deadline().map_or(slice, |at| at.min(slice));
    match futex::wait(word, seen, Some(until)) {
        Ok(())
        | Err(nix::errno::Errno::EAGAIN)
        | Err(nix::errno::Errno::EINTR)
        | Err(nix::errno::Errno::ETIMEDOUT) => Ok(()),
        Err(e) => Err(Error::os("futex", e)),
    }
}
