//! How long a wait may last: one deadline, an [`Instant`] (`None`: for
//! ever), for every wait in mpcore, and [`Wait`] for the calls that may
//! also not wait at all (Python's `block=False`). The kernel's timed
//! calls (a futex, `pthread_mutex_clocklock`) take the same deadline as
//! an absolute time on `CLOCK_MONOTONIC` ([`monotonic`]), the clock that
//! `Instant` reads and that a change of the wall clock cannot move.

use std::time::{Duration, Instant};

use nix::time::{ClockId, clock_gettime};

use crate::base::{Error, Result};

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// Now plus `d`; `None` (wait for ever) when that is past the end of
/// time (`Duration::MAX`).
pub(crate) fn after(d: Duration) -> Option<Instant> {
    Instant::now().checked_add(d)
}

/// `at` as an absolute time on `CLOCK_MONOTONIC`, with the nanoseconds
/// carried into the seconds; `None` when it does not fit a `timespec`
/// (then the wait is for ever in all but name).
pub(crate) fn monotonic(at: Instant) -> Result<Option<libc::timespec>> {
    let now = clock_gettime(ClockId::CLOCK_MONOTONIC).map_err(|e| Error::os("clock_gettime", e))?;
    let left = at.saturating_duration_since(Instant::now());
    let Ok(secs) = i64::try_from(left.as_secs()) else {
        return Ok(None);
    };
    let mut nsec = now.tv_nsec() + i64::from(left.subsec_nanos());
    let mut carry = 0;
    if nsec >= NANOS_PER_SEC {
        nsec -= NANOS_PER_SEC;
        carry = 1;
    }
    Ok(now
        .tv_sec()
        .checked_add(secs)
        .and_then(|s| s.checked_add(carry))
        .map(|tv_sec| libc::timespec {
            tv_sec,
            tv_nsec: nsec,
        }))
}

/// Sleeps until `at` has passed, however often the sleep is cut short.
pub(crate) fn sleep_until(at: Instant) {
    loop {
        let left = at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left);
    }
}

/// How long an operation may wait.
#[derive(Clone, Copy)]
pub(crate) enum Wait {
    /// Not at all: `Full` or `Empty` at once.
    Never,
    /// Until this instant, then `Timeout(the duration)`.
    Until(Instant, Duration),
    Forever,
}

impl Wait {
    pub(crate) fn from_timeout(timeout: Duration) -> Wait {
        match after(timeout) {
            Some(at) => Wait::Until(at, timeout),
            None => Wait::Forever,
        }
    }

    /// The deadline, if there is one (for `Never`, now).
    pub(crate) fn deadline(self) -> Option<Instant> {
        match self {
            Wait::Never => Some(Instant::now()),
            Wait::Until(at, _) => Some(at),
            Wait::Forever => None,
        }
    }

    /// `Err` when it is time to give up: at once for `Never`, after the
    /// deadline for `Until`.
    pub(crate) fn give_up(self, nothing: Error) -> Result<()> {
        match self {
            Wait::Never => Err(nothing),
            Wait::Until(at, timeout) if Instant::now() >= at => Err(Error::Timeout(timeout)),
            _ => Ok(()),
        }
    }
}
