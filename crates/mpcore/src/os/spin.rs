//! Looking again before sleeping. Falling asleep and being woken costs a
//! few microseconds in each process; a peer that is running answers
//! within less. So a waiter that has reason to expect an answer soon
//! looks again for a short while, pausing between looks, and sleeps only
//! if none came. Every such wait in mpcore is [`until`].

use std::time::Instant;

/// The pause between two looks: a few hundred cycles, during which the
/// core lets its sibling hyperthread run and leaves the cache line alone.
const PAUSES: u32 = 64;

/// Looks (`look` returns `Some`) until `deadline`, pausing between looks;
/// `None` when nothing came by then. Looks at least once.
pub(crate) fn until<T>(deadline: Instant, mut look: impl FnMut() -> Option<T>) -> Option<T> {
    loop {
        if let Some(found) = look() {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        pause(PAUSES);
    }
}

/// `n` spin-loop hints: a pause that keeps the thread on its core.
pub(crate) fn pause(n: u32) {
    for _ in 0..n {
        std::hint::spin_loop();
    }
}

/// Like [`until`], but gives the core away (`sched_yield`) between looks
/// instead of pausing on it: for a waiter whose answer must come from a
/// process or thread that may need this very core to make it (a machine
/// with more runnable threads than cores). With a core to spare, a yield
/// returns at once and this looks as often as `until` does.
pub(crate) fn until_yielding<T>(
    deadline: Instant,
    mut look: impl FnMut() -> Option<T>,
) -> Option<T> {
    loop {
        if let Some(found) = look() {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::yield_now();
    }
}
