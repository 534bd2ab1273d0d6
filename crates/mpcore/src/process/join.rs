//! `join`: waiting for a child's result and its exit at once, and what
//! becomes of an unjoined child when its handle drops.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Process;
use crate::base::{Error, ExitStatus, Result};
use crate::os::deadline;
use crate::start::Outcome;
use crate::wire::channel;

impl<T: Serialize + DeserializeOwned> Process<T> {
    /// Waits for the child to finish and returns the closure's value.
    ///
    /// A child that calls `std::process::exit(0)` sends no value. For a
    /// `Process<()>` (or any `T` with a single value, which needs no bytes
    /// to send) that is success, as in Python: `join` returns `Ok(())`. For
    /// any other `T` there is no value to return: [`Error::Exited`] with
    /// code 0.
    ///
    /// # Errors
    ///
    /// [`Error::Panicked`] with the panic message (also when the value's
    /// `Serialize` or `Drop` panicked in the child), [`Error::Signaled`]
    /// when a signal killed it, [`Error::Exited`] when it exited without a
    /// result, [`Error::ReapedElsewhere`] when something else reaped it
    /// before it sent one, [`Error::ForkServerLost`] when the fork server
    /// that started it died first, [`Error::AlreadyJoined`] on a second call,
    /// [`Error::NotOwner`] in a process other than the one that started it.
    /// [`Error::NoFreeDescriptor`] when a large result waits but this
    /// process has no file descriptor free to receive it: the result stays
    /// there, and a `join` once descriptors are free returns it.
    pub fn join(&mut self) -> Result<T> {
        self.wait(None)
    }

    /// Like [`join`](Self::join), but gives up after `timeout` with
    /// [`Error::Timeout`]; the child keeps running and may be joined again.
    /// Every timeout, zero included, first looks at what is already there:
    /// `join_timeout(Duration::ZERO)` on a child that has finished returns
    /// its value, as Python's `p.join(0)` in a polling loop expects.
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<T> {
        match deadline::after(timeout) {
            Some(deadline) => self.wait(Some(deadline)).map_err(|e| match e {
                Error::Timeout(_) => Error::Timeout(timeout),
                other => other,
            }),
            None => self.wait(None),
        }
    }

    fn wait(&mut self, deadline: Option<Instant>) -> Result<T> {
        // Before anything else: in a copy of the handle, even reading the
        // socket would steal the result from the parent.
        self.check_owner("join")?;
        if self.joined {
            return Err(Error::AlreadyJoined {
                pid: self.pid.as_raw(),
            });
        }
        // A fresh child has neither sent nor exited yet: wait for news
        // first rather than ask for it (two system calls less per join).
        if self.outcome.is_none() && !self.hung_up && !self.has_ended() {
            self.wait_for_event(deadline)?;
        }
        loop {
            // Read first: a child with a large result must never wait for a
            // parent that waits for its exit.
            self.read_outcome()?;
            if !self.has_ended() {
                if deadline.is_none() && (self.outcome.is_some() || self.hung_up) {
                    // Nothing more can come from the child, and we wait
                    // for as long as it takes: one blocking `waitpid`
                    // instead of a poll and a `waitpid`.
                    self.wait_exit()?;
                } else {
                    self.poll_exit()?;
                }
            }
            if self.has_ended() {
                // It exited: whatever it sent is in the socket by now.
                self.read_outcome()?;
                self.joined = true;
                return self.finish();
            }
            self.wait_for_event(deadline)?;
        }
    }

    /// Takes the child's message if it is there. End of file means every
    /// copy of the sending end is closed, so no message will come: only the
    /// exit status is left to wait for.
    fn read_outcome(&mut self) -> Result<()> {
        if self.outcome.is_none() && !self.hung_up {
            match channel::try_recv_keeping(self.results.as_fd()) {
                Ok(outcome) => self.outcome = outcome,
                Err(Error::Disconnected) => self.hung_up = true,
                Err(e) => {
                    // A message taken but unreadable is gone: every later
                    // join must say so, not that none was sent.
                    if !matches!(e, Error::NoFreeDescriptor { kept: true, .. }) {
                        self.outcome = Some(Outcome::Lost(e.clone()));
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// What `join` returns once the child has ended: what it sent, or
    /// else what its exit says.
    fn finish(&mut self) -> Result<T> {
        let pid = self.pid.as_raw();
        match (self.outcome.take(), self.status) {
            (Some(Outcome::Returned(value)), _) => Ok(value),
            (Some(Outcome::Panicked(message)), _) => Err(Error::Panicked { pid, message }),
            (Some(Outcome::Failed(message)), _) => Err(Error::StartFailed { pid, message }),
            (Some(Outcome::Lost(e)), _) => Err(e),
            (None, Some(ExitStatus::Signal(signal))) => Err(Error::Signaled { pid, signal }),
            (None, Some(ExitStatus::Code(0))) => {
                // `exit(0)` before returning. A `T` that encodes to no
                // bytes at all, `()`, has just one value: that is the
                // value, and the exit a success, as in Python.
                postcard::from_bytes::<T>(&[]).map_err(|_| Error::Exited { pid, code: 0 })
            }
            (None, Some(ExitStatus::Code(code))) => Err(Error::Exited { pid, code }),
            (None, None) if self.server_lost => Err(Error::ForkServerLost { pid }),
            (None, None) => Err(Error::ReapedElsewhere { pid }),
        }
    }
}

impl<T> Drop for Process<T> {
    fn drop(&mut self) {
        // A copy of the handle in a forked child neither kills nor waits:
        // the child belongs to the process that started it.
        if self.has_ended() || !self.is_owner() {
            return;
        }
        if self.is_daemon() || std::thread::panicking() {
            let _ = self.kill();
        }
        self.reap_blocking();
    }
}
