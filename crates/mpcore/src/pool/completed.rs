//! [`AsCompleted`]: the results of many `apply_async` calls in the order
//! they finish, the Rust answer to Python's callbacks and to
//! `concurrent.futures.as_completed`.

use std::collections::BTreeSet;
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::chunk::ChunkDone;
use super::results::{ChunkResults, Results};
use super::{Link, Pool, call_replying_to};
use crate::base::{Error, Result, StartMethod};
use crate::os::deadline;

/// Tasks started one by one, whose results come back in the order they
/// finish, each with the number [`apply_async`](Self::apply_async) gave
/// its task (0, 1, 2, ...): made by [`Pool::as_completed`].
///
/// It is an iterator of `(number, Result<R>)`: one item per task started
/// and not yet yielded, waiting as long as it takes for the next one to
/// finish; it ends when every task started has been yielded (start more
/// and it goes on). [`next_timeout`](Self::next_timeout) waits a limited
/// time.
///
/// Dropping it does not stop the tasks (as in Python): they run to the
/// end and their results are thrown away.
pub struct AsCompleted<R> {
    link: Result<Link>,
    start_method: StartMethod,
    /// Where the tasks send their results: `None` once the pool's
    /// supervisor is gone, so that the channel tells when the last chunk
    /// that could still come is gone too.
    reply: Option<mpsc::Sender<ChunkDone>>,
    results: Results<()>,
    /// The tasks started and not yet yielded, by number.
    out: BTreeSet<usize>,
    next_number: usize,
    _result: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for AsCompleted<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsCompleted")
            .field("started", &self.next_number)
            .field("out", &self.out.len())
            .finish()
    }
}

impl Pool {
    /// An empty [`AsCompleted`]: start tasks with its
    /// [`apply_async`](AsCompleted::apply_async), and iterate over it to
    /// get each result as soon as its task finishes, whatever the order
    /// they started in (Python's `concurrent.futures.as_completed`).
    ///
    /// This is also the Rust answer to Python's `callback=`: what a
    /// callback would do, do in the loop, on your own thread, where a
    /// panic is yours and no thread of the pool is held up.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// fn nap(ms: u64) -> u64 {
    ///     std::thread::sleep(Duration::from_millis(ms));
    ///     ms
    /// }
    ///
    /// let pool = mpcore::Pool::new(3)?;
    /// let mut tasks = pool.as_completed();
    /// for ms in [300, 0, 150] {
    ///     tasks.apply_async(nap, ms)?;
    /// }
    /// let mut finished = Vec::new();
    /// for (number, result) in tasks {
    ///     finished.push((number, result?));
    /// }
    /// // Finished in order of their naps (on a machine not too busy):
    /// // task 1 first, then task 2, then task 0.
    /// finished.sort();
    /// assert_eq!(finished, [(0, 300), (1, 0), (2, 150)]);
    /// # Ok::<(), mpcore::Error>(())
    /// ```
    pub fn as_completed<R>(&self) -> AsCompleted<R> {
        let (reply, done) = mpsc::channel();
        AsCompleted {
            link: self.link(),
            start_method: self.start_method,
            reply: Some(reply),
            results: Results::new(done, Arc::clone(&self.answer_time), false),
            out: BTreeSet::new(),
            next_number: 0,
            _result: PhantomData,
        }
    }
}

impl<R: DeserializeOwned> AsCompleted<R> {
    /// Starts `f(arg)` in a worker, as [`Pool::apply_async`], and returns
    /// the task's number, which comes back with its result.
    ///
    /// # Errors
    ///
    /// As [`Pool::apply_async`]: [`Error::PoolClosed`] once the pool is
    /// closed (or was when this was made), [`Error::Codec`] when `arg`
    /// cannot be serialized. Then no task starts and no number is used.
    pub fn apply_async<T>(&mut self, f: fn(T) -> R, arg: T) -> Result<usize>
    where
        T: Serialize + DeserializeOwned,
        R: Serialize,
    {
        let link = self.link.as_ref().map_err(Clone::clone)?;
        if let Some(why) = link.refusal() {
            return Err(why);
        }
        let reply = self.reply.clone().ok_or(Error::PoolClosed)?;
        let call = call_replying_to(f, self.start_method, reply)?;
        let mut args = Vec::new();
        crate::wire::codec::encode_checked_into(&mut args, &arg)?;
        let number = self.next_number;
        let chunk = call.chunk(number, 1, &args)?;
        drop(call);
        if link.submit(vec![chunk]).is_err() {
            return Err(Error::PoolClosed);
        }
        self.next_number += 1;
        self.out.insert(number);
        Ok(number)
    }

    /// How many tasks started have not been yielded yet.
    pub fn pending(&self) -> usize {
        self.out.len()
    }

    /// The next task to finish, as [`next`](Iterator::next), waiting
    /// `timeout` at most. `Ok(None)` when no task is left to yield.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when no task finished in time; the tasks go on,
    /// and a later call yields them.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<(usize, Result<R>)>> {
        self.next_until(deadline::after(timeout))
            .map_err(|e| match e {
                Error::Timeout(_) => Error::Timeout(timeout),
                other => other,
            })
    }

    fn next_until(&mut self, deadline: Option<Instant>) -> Result<Option<(usize, Result<R>)>> {
        loop {
            let Some(&first) = self.out.first() else {
                return Ok(None);
            };
            if self.reply.is_some() {
                // This side holds a sender of the results channel, so the
                // channel cannot tell that the supervisor is gone: ask the
                // pool now and then while waiting.
                let slice = Instant::now() + ALIVE_CHECK;
                let until = deadline.map_or(slice, |d| d.min(slice));
                match self.results.recv_done(Some(until)) {
                    Ok(Some(done)) => {
                        if let Some(item) = self.yielded(done) {
                            return Ok(Some(item));
                        }
                    }
                    Ok(None) => self.reply = None,
                    Err(Error::Timeout(_)) => {
                        if deadline.is_some_and(|d| Instant::now() >= d) {
                            return Err(Error::Timeout(Duration::ZERO));
                        }
                        if !self.link.as_ref().is_ok_and(Link::is_alive) {
                            self.reply = None;
                        }
                    }
                    Err(e) => return Err(e),
                }
            } else {
                match self.results.recv_done(deadline)? {
                    Some(done) => {
                        if let Some(item) = self.yielded(done) {
                            return Ok(Some(item));
                        }
                    }
                    // Nothing more can come: the tasks still out are lost.
                    None => {
                        self.out.remove(&first);
                        return Ok(Some((first, Err(Error::TaskLost))));
                    }
                }
            }
        }
    }

    /// The number and result of the task whose chunk is `done`.
    fn yielded(&mut self, done: ChunkDone) -> Option<(usize, Result<R>)> {
        let number = done.index;
        if !self.out.remove(&number) {
            return None;
        }
        let result = ChunkResults::new(done)
            .next()
            .unwrap_or(Err(Error::TaskLost));
        Some((number, result))
    }
}

impl<R: DeserializeOwned> Iterator for AsCompleted<R> {
    type Item = (usize, Result<R>);

    fn next(&mut self) -> Option<(usize, Result<R>)> {
        match self.next_until(None) {
            Ok(item) => item,
            // Without a deadline only an item or the end comes back.
            Err(e) => self.out.pop_first().map(|number| (number, Err(e))),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.out.len(), Some(self.out.len()))
    }
}

/// How often an [`AsCompleted`] checks, while it waits, that the pool's
/// supervisor is still there.
const ALIVE_CHECK: Duration = Duration::from_millis(100);
