//! What a caller holds while its tasks run: [`AsyncResult`] for one task,
//! [`Imap`] for many, and [`ChunkResults`], which turns a chunk's encoded
//! reply into one `Result` per task.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::chunk::{CallDone, ChunkDone, Lost};
use super::worker::Outcome;
use crate::channel;
use crate::error::{Error, Result};

/// The result of [`Pool::apply_async`](super::Pool::apply_async), Python's `AsyncResult`.
pub struct AsyncResult<R> {
    pub(super) imap: Imap<R>,
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
        match channel::deadline_after(timeout) {
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
            self.outcome = self.imap.next_until(deadline)?;
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

/// The results of [`Pool::imap`](super::Pool::imap) or
/// [`Pool::imap_unordered`](super::Pool::imap_unordered), yielded as
/// they arrive: exactly one `Result` per input.
///
/// Dropping it early does not stop the tasks (as in Python): they run to
/// the end and their results are thrown away.
pub struct Imap<R> {
    pub(super) done: mpsc::Receiver<ChunkDone>,
    /// The pool's [`Pool::answer_time`], read and written by every call.
    pub(super) answer_time: Arc<AtomicU64>,
    /// When the call was made, and whether its first result has come.
    pub(super) submitted: Instant,
    pub(super) timed: bool,
    /// Set for `map`: park until every chunk is done instead of waking
    /// for each small one.
    pub(super) all: Option<Arc<CallDone>>,
    pub(super) ordered: bool,
    /// How many tasks each chunk holds, by chunk index.
    pub(super) counts: Vec<u32>,
    /// Which chunks have come back, by chunk index.
    pub(super) received: Vec<bool>,
    /// Ordered only: the chunk whose results are due next.
    pub(super) next_chunk: usize,
    /// Ordered only: chunks that came back before their turn.
    pub(super) waiting: BTreeMap<usize, VecDeque<Result<R>>>,
    pub(super) ready: VecDeque<Result<R>>,
    pub(super) remaining: usize,
    pub(super) _result: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for Imap<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Imap")
            .field("ordered", &self.ordered)
            .field("remaining", &self.remaining)
            .finish()
    }
}

impl<R: DeserializeOwned> Imap<R> {
    /// The next result, waiting until `deadline` at most (`None`: for
    /// ever). `Ok(None)` when every result has been yielded.
    fn next_until(&mut self, deadline: Option<Instant>) -> Result<Option<Result<R>>> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                self.remaining -= 1;
                return Ok(Some(item));
            }
            if self.remaining == 0 {
                return Ok(None);
            }
            if self.ordered {
                if let Some(items) = self.waiting.remove(&self.next_chunk) {
                    self.ready = items;
                    self.next_chunk += 1;
                    continue;
                }
            }
            let arrived = self.recv_done(deadline)?;
            match arrived {
                Some(done) => {
                    let index = done.index;
                    let items = ChunkResults::new(done).collect();
                    self.file(index, items);
                }
                // The supervisor ended without sending these (it can only
                // happen if it panicked, or a task came in as it closed):
                // every missing task gets an error, so nothing waits.
                None => {
                    for index in 0..self.counts.len() {
                        if !self.received.get(index).copied().unwrap_or(false) {
                            let count = self.counts[index];
                            let items = (0..count).map(|_| Err(Error::TaskLost)).collect();
                            self.file(index, items);
                        }
                    }
                }
            }
        }
    }

    /// The next chunk to come back, waiting until `deadline` at most
    /// (`None`: for ever, and with `all` set, until the last chunk is in).
    /// `Ok(None)`: the supervisor has ended and nothing more will come.
    fn recv_done(&mut self, deadline: Option<Instant>) -> Result<Option<ChunkDone>> {
        let done = self.wait_done(deadline);
        if !self.timed && matches!(done, Ok(Some(_))) {
            self.timed = true;
            let waited = self.submitted.elapsed().as_nanos();
            self.answer_time.store(
                waited.clamp(1, u128::from(u64::MAX)) as u64,
                Ordering::Relaxed,
            );
        }
        done
    }

    /// [`recv_done`](Self::recv_done), without the bookkeeping.
    fn wait_done(&mut self, deadline: Option<Instant>) -> Result<Option<ChunkDone>> {
        match (deadline, &self.all) {
            (None, Some(all)) => loop {
                match self.done.try_recv() {
                    Ok(done) => return Ok(Some(done)),
                    Err(mpsc::TryRecvError::Disconnected) => return Ok(None),
                    // Each chunk is in the channel before it counts as
                    // done: at zero, everything is there to take.
                    Err(mpsc::TryRecvError::Empty) => {
                        if all.left.load(Ordering::SeqCst) > 0 {
                            thread::park();
                        }
                    }
                }
            },
            (None, None) => {
                if let Some(done) = self.look_for_answer() {
                    return Ok(done);
                }
                Ok(self.done.recv().ok())
            }
            (Some(deadline), _) => {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.done.recv_timeout(left) {
                    Ok(done) => Ok(Some(done)),
                    Err(mpsc::RecvTimeoutError::Timeout) => Err(Error::Timeout(left)),
                    Err(mpsc::RecvTimeoutError::Disconnected) => Ok(None),
                }
            }
        }
    }

    /// When the pool's last call had its first result quickly (an
    /// `apply_async` round trip, say), this one's is likely as quick, and
    /// sleeping and being woken would cost about as much again: look for
    /// it until twice that time after the call, [`CALLER_LOOK_MAX`] at
    /// most. `None`: nothing came meanwhile.
    fn look_for_answer(&mut self) -> Option<Option<ChunkDone>> {
        let typical = Duration::from_nanos(self.answer_time.load(Ordering::Relaxed));
        if self.timed || typical.is_zero() || typical > CALLER_LOOK_MAX {
            return None;
        }
        let until = (self.submitted + typical * 2).min(Instant::now() + CALLER_LOOK_MAX);
        while Instant::now() < until {
            match self.done.try_recv() {
                Ok(done) => return Some(Some(done)),
                Err(mpsc::TryRecvError::Disconnected) => return Some(None),
                Err(mpsc::TryRecvError::Empty) => {
                    for _ in 0..64 {
                        std::hint::spin_loop();
                    }
                }
            }
        }
        None
    }

    /// What `map` returns: waits for every chunk, then decodes them in
    /// input order straight into one `Vec` of the right size, so that the
    /// first failure it meets is the first in input order. (Going through
    /// the iterator would move every result several times and grow the
    /// `Vec` by doubling.)
    pub(super) fn collect_all(mut self) -> Result<Vec<R>> {
        let mut chunks: Vec<Option<ChunkDone>> = self.counts.iter().map(|_| None).collect();
        let mut missing = chunks.len();
        while missing > 0 {
            let Some(done) = self.recv_done(None)? else {
                break; // the supervisor is gone: the missing chunks fail below
            };
            let index = done.index;
            if chunks[index].replace(done).is_none() {
                missing -= 1;
            }
        }
        let mut values = Vec::with_capacity(self.remaining);
        for done in chunks {
            for result in ChunkResults::<R>::new(done.ok_or(Error::TaskLost)?) {
                values.push(result?);
            }
        }
        Ok(values)
    }

    /// Puts a chunk's results where they are due.
    fn file(&mut self, index: usize, items: VecDeque<Result<R>>) {
        if self.received.len() < self.counts.len() {
            self.received.resize(self.counts.len(), false);
        }
        self.received[index] = true;
        if self.ordered {
            self.waiting.insert(index, items);
        } else {
            self.ready.extend(items);
        }
    }
}

impl<R: DeserializeOwned> Iterator for Imap<R> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        // Without a deadline only an item or the end comes back.
        self.next_until(None).unwrap_or_else(|e| Some(Err(e)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<R: DeserializeOwned> ExactSizeIterator for Imap<R> {}

/// A chunk's reply, turned into one result per task as it is iterated.
pub(super) struct ChunkResults<R> {
    /// How many results are still to come.
    left: u32,
    /// The worker's pid and its encoded outcomes, or why there are none.
    outcome: std::result::Result<(i32, Vec<u8>), Lost>,
    /// Where the next encoded outcome starts.
    at: usize,
    _result: PhantomData<fn() -> R>,
}

impl<R> ChunkResults<R> {
    fn new(done: ChunkDone) -> Self {
        ChunkResults {
            left: done.count,
            outcome: done.outcome,
            at: 0,
            _result: PhantomData,
        }
    }
}

impl<R: DeserializeOwned> Iterator for ChunkResults<R> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        self.left = self.left.checked_sub(1)?;
        let (pid, bytes) = match &self.outcome {
            Ok((pid, bytes)) => (*pid, bytes),
            Err(lost) => return Some(Err(lost.to_error())),
        };
        let rest = bytes.get(self.at..).unwrap_or_default();
        Some(match postcard::take_from_bytes::<Outcome<R>>(rest) {
            Ok((outcome, tail)) => {
                self.at = bytes.len() - tail.len();
                match outcome {
                    Outcome::Returned(value) => Ok(value),
                    Outcome::Panicked(message) => Err(Error::Panicked { pid, message }),
                    Outcome::BadArgument(reason) => Err(Error::Codec {
                        action: "decode",
                        reason,
                    }),
                    Outcome::BadResult(reason) => Err(Error::Codec {
                        action: "encode",
                        reason,
                    }),
                    Outcome::NotSent(reason) => Err(Error::ResultNotSent { pid, reason }),
                }
            }
            Err(e) => {
                // Nothing after a bad result can be found either.
                self.at = bytes.len();
                Err(Error::Codec {
                    action: "decode",
                    reason: e.to_string(),
                })
            }
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

/// The longest a caller looks for a result before it sleeps
/// ([`Imap::look_for_answer`]).
const CALLER_LOOK_MAX: Duration = Duration::from_micros(200);
