//! Waiting for descriptors to become readable: a child's exit (its
//! pidfd), a result, a request, with a deadline that means what it says.

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::time::TimeSpec;

use crate::base::{Error, Result};

/// Waits until `fds[i]` is readable for some `i`, or until `deadline`
/// (`None`: wait for ever). Returns which ones are readable; all `false`
/// means the deadline passed. Never returns early: a wait for 10 s waits
/// 10 s, however the kernel slices it.
pub(crate) fn readable<const N: usize>(
    fds: [BorrowedFd<'_>; N],
    deadline: Option<Instant>,
) -> Result<[bool; N]> {
    let mut polls = fds.map(|fd| PollFd::new(fd, PollFlags::POLLIN));
    poll_until(&mut polls, deadline)?;
    Ok(polls.map(|p| is_readable(&p)))
}

/// [`readable`] for a number of descriptors known only at run time
/// (a pool's workers).
pub(crate) fn readable_any(fds: &[BorrowedFd<'_>], deadline: Option<Instant>) -> Result<Vec<bool>> {
    let mut polls = poll_readable(fds);
    poll_until(&mut polls, deadline)?;
    Ok(polls.iter().map(is_readable).collect())
}

/// Which of `fds` are readable right now: one `ppoll` that does not wait.
pub(crate) fn readable_now(fds: &[BorrowedFd<'_>]) -> Result<Vec<bool>> {
    let mut polls = poll_readable(fds);
    loop {
        match ppoll(
            &mut polls,
            Some(TimeSpec::from_duration(Duration::ZERO)),
            None,
        ) {
            Ok(_) => return Ok(polls.iter().map(is_readable).collect()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::os("ppoll", e)),
        }
    }
}

/// One `poll` entry per descriptor, asking whether it is readable.
fn poll_readable<'fd>(fds: &[BorrowedFd<'fd>]) -> Vec<PollFd<'fd>> {
    fds.iter()
        .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
        .collect()
}

/// `ppoll` until something is ready or the deadline passes; on return each
/// entry's `revents` says which (none, after a timeout). Every wait looks
/// at least once, even when the deadline has already passed, so that a
/// zero timeout reports what is already there (Python's `p.join(0)` in a
/// polling loop). Only the clock decides a timeout, so an early wake-up
/// never ends the wait.
fn poll_until(polls: &mut [PollFd<'_>], deadline: Option<Instant>) -> Result<()> {
    loop {
        let timeout =
            deadline.map(|d| TimeSpec::from_duration(d.saturating_duration_since(Instant::now())));
        match ppoll(polls, timeout, None) {
            // Nothing ready: every revents is empty. Re-check the clock.
            Ok(0) if deadline.is_some_and(|d| Instant::now() >= d) => return Ok(()),
            Ok(0) => continue,
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::os("ppoll", e)),
        }
    }
}

fn is_readable(p: &PollFd<'_>) -> bool {
    p.revents()
        .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR))
}
