//! [`AsyncResult`]: what `apply_async`, `map_async` and `starmap_async`
//! return, Python's `AsyncResult`; and `map_async` itself.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::in_order::{InOrder, file_all};
use super::results::Results;
use super::{Pool, call, default_chunksize, hand_over};
use crate::base::{Error, Result};
use crate::os::deadline;

/// The result of [`Pool::apply_async`](super::Pool::apply_async) (one
/// value) or of [`Pool::map_async`](super::Pool::map_async) and
/// [`Pool::starmap_async`](super::Pool::starmap_async) (a `Vec` of them),
/// Python's `AsyncResult`.
///
/// ```
/// let pool = mpcore::Pool::new(2)?;
/// let mut squares = pool.map_async(|x: u64| x * x, 0..5)?;
/// squares.wait(); // Python's res.wait(): the result stays here
/// assert!(squares.ready());
/// assert!(squares.successful()?);
/// assert_eq!(squares.get()?, [0, 1, 4, 9, 16]);
/// # Ok::<(), mpcore::Error>(())
/// ```
pub struct AsyncResult<R> {
    pending: Pending<R>,
    outcome: Option<Result<R>>,
    /// Whether the outcome was a value, once it is here; kept after the
    /// outcome is taken.
    succeeded: Option<bool>,
    taken: bool,
}

impl<R> fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResult")
            .field("arrived", &self.outcome.is_some())
            .field("succeeded", &self.succeeded)
            .field("taken", &self.taken)
            .finish()
    }
}

/// The chunks an [`AsyncResult`] waits for, made into its result as they
/// come back.
struct Pending<R> {
    /// Only its way of receiving is used (with its quick look for a fast
    /// answer before it sleeps); it files nothing.
    results: Results<()>,
    in_order: InOrder<R>,
}

impl<R> Pending<R> {
    /// Waits until every chunk is in, or until `deadline` ([`Error::Timeout`]).
    /// If the supervisor ends first, the chunks still missing fail.
    fn wait(&mut self, deadline: Option<Instant>) -> Result<()> {
        while self.in_order.missing() > 0 {
            match self.results.recv_done(deadline)? {
                Some(done) => self.in_order.take(done),
                None => self.in_order.give_up(),
            }
        }
        Ok(())
    }
}

impl<R> AsyncResult<R> {
    /// A handle to the results of a call's chunks, which come back on
    /// `results`' channel, made into `R` by `in_order`.
    pub(super) fn new(results: Results<()>, in_order: InOrder<R>) -> Self {
        AsyncResult {
            pending: Pending { results, in_order },
            outcome: None,
            succeeded: None,
            taken: false,
        }
    }

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
    /// returned the result. For `map_async`, the first failed task's
    /// error in input order, as [`Pool::map`](super::Pool::map).
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
        self.fetch_within(timeout)?;
        self.take()
    }

    /// Waits until the task has finished, and keeps its result here for
    /// [`get`](Self::get) (Python's `res.wait()`).
    pub fn wait(&mut self) {
        // Without a deadline, only the outcome comes back.
        let _ = self.fetch(None);
    }

    /// Waits until the task has finished or `timeout` has passed, and
    /// says whether it has finished (Python's `res.wait(timeout)`, which
    /// returns `None` either way: ask `ready()` there).
    pub fn wait_timeout(&mut self, timeout: Duration) -> bool {
        let _ = self.fetch_within(timeout);
        self.ready()
    }

    /// Whether the task has finished, with a value or an error (Python's
    /// `res.ready()`); never waits.
    pub fn ready(&mut self) -> bool {
        let _ = self.fetch(Some(Instant::now()));
        self.succeeded.is_some()
    }

    /// Whether the task finished with a value rather than an error
    /// (Python's `res.successful()`); never waits. Still known after the
    /// result was taken by [`get_timeout`](Self::get_timeout).
    ///
    /// # Errors
    ///
    /// [`Error::NotReady`] while the task has not finished, as Python
    /// raises `ValueError`: "not yet" is neither yes nor no.
    pub fn successful(&mut self) -> Result<bool> {
        if self.ready() {
            Ok(self.succeeded == Some(true))
        } else {
            Err(Error::NotReady)
        }
    }

    fn fetch_within(&mut self, timeout: Duration) -> Result<()> {
        match deadline::after(timeout) {
            Some(deadline) => self.fetch(Some(deadline)).map_err(|e| match e {
                Error::Timeout(_) => Error::Timeout(timeout),
                other => other,
            }),
            None => self.fetch(None),
        }
    }

    fn fetch(&mut self, deadline: Option<Instant>) -> Result<()> {
        if self.succeeded.is_none() {
            self.pending.wait(deadline)?;
            let outcome = self.pending.in_order.finish();
            self.succeeded = Some(outcome.is_ok());
            self.outcome = Some(outcome);
        }
        Ok(())
    }

    fn take(&mut self) -> Result<R> {
        if self.taken {
            return Err(Error::AlreadyTaken);
        }
        self.taken = true;
        // `fetch` without a deadline leaves an outcome.
        self.outcome.take().unwrap_or(Err(Error::TaskLost))
    }
}

impl Pool {
    /// Like [`map`](Self::map), but returns at once with a handle to the
    /// `Vec` of results (Python's `pool.map_async(f, iterable)`). The
    /// inputs are read, encoded and handed to the workers before it
    /// returns; [`AsyncResult::get`] waits for the last result.
    ///
    /// ```
    /// fn job(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// let pool = mpcore::Pool::new(2)?;
    /// let squares = pool.map_async(job, 0..10)?;
    /// // ... other work here, while the workers run ...
    /// assert_eq!(squares.get()?, pool.map(job, 0..10)?);
    /// # Ok::<(), mpcore::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::PoolClosed`] after [`close`](Self::close), and
    /// [`Error::Codec`] when an input cannot be serialized (then no task
    /// has started). The tasks' failures come from [`AsyncResult::get`]:
    /// the first in input order, as from `map`.
    pub fn map_async<T, R>(
        &self,
        f: fn(T) -> R,
        inputs: impl IntoIterator<Item = T>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let inputs: Vec<T> = inputs.into_iter().collect();
        let chunksize = default_chunksize(inputs.len(), self.processes);
        self.map_async_chunked(f, inputs, chunksize)
    }

    /// [`map_async`](Self::map_async) with a chunk size of your choice
    /// (Python's `chunksize=`), as [`map_chunked`](Self::map_chunked).
    ///
    /// # Errors
    ///
    /// As [`map_async`](Self::map_async).
    pub fn map_async_chunked<T, R>(
        &self,
        f: fn(T) -> R,
        inputs: impl IntoIterator<Item = T>,
        chunksize: usize,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let link = self.link()?;
        let (call, done) = call(f, self.start_method)?;
        let results = Results::new(done, Arc::clone(&self.answer_time), true);
        let inputs: Vec<T> = inputs.into_iter().collect();
        let chunksize = chunksize.clamp(1, u32::MAX as usize);
        let count = inputs.len().div_ceil(chunksize);
        let values = Vec::with_capacity(inputs.len());
        hand_over(&link, call, inputs, chunksize)?;
        let in_order = InOrder::new(count, Some(values), file_all::<R>);
        Ok(AsyncResult::new(results, in_order))
    }
}
