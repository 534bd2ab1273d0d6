//! A simulated GIL that hands over the way CPython's does.
//!
//! A plain `Mutex` taken for each step of the loop would not do: nothing
//! makes the thread that lets go wait, so it can take the lock straight
//! back, and one thread may well run its whole job before the other
//! starts. CPython (3.2 and later: `Python/ceval_gil.h` up to 3.11,
//! `Python/ceval_gil.c` since 3.12) forces the turns:
//!
//! - a thread that wants the GIL waits at most the switch interval,
//!   `sys.getswitchinterval()`, 5 ms by default; if the holder has not let
//!   go by then, the waiter sets a *drop request*;
//! - the holder checks for the request between bytecodes, lets go, and
//!   then waits until another thread has taken the GIL before it asks for
//!   it again, so that it cannot win it straight back.
//!
//! `Gil` does the same with a mutex, a condition variable and a flag; the
//! holder checks the flag between steps of its loop. Each `Holder`
//! writes down the slices of time it held the GIL, for the timeline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// CPython's default `sys.getswitchinterval()`.
pub const SWITCH_INTERVAL: Duration = Duration::from_millis(5);

pub struct Gil {
    interval: Duration,
    state: Mutex<State>,
    /// Signalled when the GIL is let go, and when it changes hands.
    changed: Condvar,
    /// A waiter has waited a whole interval: the holder should let go.
    drop_request: AtomicBool,
}

struct State {
    held: bool,
    /// How many times the GIL was taken: tells a waiter whether it changed
    /// hands while it slept, and a thread that let go whether another took it.
    takes: u64,
}

impl Gil {
    pub fn new(interval: Duration) -> Gil {
        Gil {
            interval,
            state: Mutex::new(State {
                held: false,
                takes: 0,
            }),
            changed: Condvar::new(),
            drop_request: AtomicBool::new(false),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is two plain fields, valid after any panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self) {
        let mut state = self.state();
        while state.held {
            let takes = state.takes;
            let (next, wait) = self
                .changed
                .wait_timeout(state, self.interval)
                .unwrap_or_else(PoisonError::into_inner);
            state = next;
            // A whole interval with the same holder: ask it to let go.
            if wait.timed_out() && state.held && state.takes == takes {
                self.drop_request.store(true, Ordering::Relaxed);
            }
        }
        state.held = true;
        state.takes += 1;
        self.drop_request.store(false, Ordering::Relaxed);
        self.changed.notify_all();
    }

    /// Lets go; when `forced`, waits until another thread has taken it.
    fn release(&self, forced: bool) {
        let mut state = self.state();
        state.held = false;
        let takes = state.takes;
        self.changed.notify_all();
        while forced && state.takes == takes {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// One thread's use of the GIL, and the slices of time it held it, in
/// seconds since `t0`.
pub struct Holder<'a> {
    gil: &'a Gil,
    t0: Instant,
    since: Option<f64>,
    pub slices: Vec<(f64, f64)>,
}

impl<'a> Holder<'a> {
    pub fn new(gil: &'a Gil, t0: Instant) -> Holder<'a> {
        Holder {
            gil,
            t0,
            since: None,
            slices: Vec::new(),
        }
    }

    pub fn take(&mut self) {
        self.gil.take();
        self.since = Some(self.t0.elapsed().as_secs_f64());
    }

    pub fn release(&mut self) {
        self.end_slice();
        self.gil.release(false);
    }

    /// CPython's check between bytecodes: if another thread asked for the
    /// GIL, let it have it, and queue up for it again.
    pub fn yield_if_asked(&mut self) {
        if self.gil.drop_request.load(Ordering::Relaxed) {
            self.end_slice();
            self.gil.release(true);
            self.take();
        }
    }

    fn end_slice(&mut self) {
        if let Some(start) = self.since.take() {
            self.slices.push((start, self.t0.elapsed().as_secs_f64()));
        }
    }
}
