//! Deadlines: how long a wait may last, as the kernel's timed calls want
//! it (an absolute time on `CLOCK_MONOTONIC`).

use std::time::{Duration, Instant};

use nix::time::{ClockId, clock_gettime};

use crate::base::{Error, Result};

const NANOS_PER_SEC: i64 = 1_000_000_000;

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
    pub(crate) fn sleep_until(self) -> Result<()> {
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

/// `Instant::now() + d`, or `None` (for ever) when that does not fit.
pub(crate) fn after(d: Duration) -> Option<Instant> {
    Instant::now().checked_add(d)
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
        match Instant::now().checked_add(timeout) {
            Some(at) => Wait::Until(at, timeout),
            None => Wait::Forever,
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
