//! [`AsyncResult`]: what `apply_async` returns, Python's `AsyncResult`.

use std::fmt;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::results::Results;
use crate::base::{Error, Result};
use crate::os::deadline;

/// The result of [`Pool::apply_async`](super::Pool::apply_async), Python's `AsyncResult`.
pub struct AsyncResult<R> {
    pub(super) results: Results<R>,
    pub(super) outcome: Option<Result<R>>,
    pub(super) taken: bool,
}

impl<R> fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResult")
            .field("arrived", &self.outcome.is_some())
            .field("taken", &self.taken)
            .finish()
    }
}

impl<R: DeserializeOwned> AsyncResult<R> {
    /// Waits as long as it takes for the task and returns its value, or its
    /// failure (Python's `res.get()`).
    ///
    /// When the pool answered its last call within 200 µs, `get` first
    /// looks for the result for up to twice that time after the call, and
    /// only then sleeps: for a quick task, falling asleep and being woken
    /// would cost about as much as the task's whole round trip.
    ///
    /// # Errors
    ///
    /// [`Error::Panicked`], [`Error::WorkerDied`], [`Error::PoolTerminated`],
    /// [`Error::AlreadyTaken`] after [`get_timeout`](Self::get_timeout)
    /// returned the result.
    pub fn get(mut self) -> Result<R> {
        self.fetch(None)?;
        self.take()
    }

    /// Like [`get`](Self::get), but returns [`Error::Timeout`] when the
    /// task has not finished after `timeout`; the handle stays usable, so
    /// a later call may still get the result (Python's
    /// `res.get(timeout=...)`, which raises `TimeoutError`).
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get), and [`Error::Timeout`].
    pub fn get_timeout(&mut self, timeout: Duration) -> Result<R> {
        match deadline::after(timeout) {
            Some(deadline) => self.fetch(Some(deadline)).map_err(|e| match e {
                Error::Timeout(_) => Error::Timeout(timeout),
                other => other,
            })?,
            None => self.fetch(None)?,
        }
        self.take()
    }

    /// Whether the task has finished, with a value or an error (Python's
    /// `res.ready()`); never waits.
    pub fn ready(&mut self) -> bool {
        let _ = self.fetch(Some(Instant::now()));
        self.outcome.is_some() || self.taken
    }

    fn fetch(&mut self, deadline: Option<Instant>) -> Result<()> {
        if self.outcome.is_none() && !self.taken {
            self.outcome = self.results.next_until(deadline)?;
        }
        Ok(())
    }

    fn take(&mut self) -> Result<R> {
        if self.taken {
            return Err(Error::AlreadyTaken);
        }
        self.taken = true;
        // `fetch` without a deadline leaves an outcome: the iterator yields
        // exactly one item per input.
        self.outcome.take().unwrap_or(Err(Error::TaskLost))
    }
}
