//! [`Imap`]: the results of `imap` and its kin as they come, reading
//! their inputs lazily as the results are taken.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::chunk::{Call, Chunk};
use super::results::Results;
use super::{LOOK_AHEAD, Link, Pool, call};
use crate::base::{Error, Result};
use crate::wire::codec;

/// The results of [`Pool::imap`](super::Pool::imap) and its kin, yielded
/// as they arrive: exactly one `Result` per input, in input order or, for
/// the `_unordered` ones, in the order the tasks finish.
///
/// It reads its inputs lazily, on the caller's thread, as results are
/// taken: each call to `next` first hands over more inputs, up to a few
/// chunks per worker ahead of the results taken (see
/// [`Pool::imap`](super::Pool::imap)). So an endless input works, memory
/// stays bounded, and the first result comes as soon as its task is done.
/// It is `Send` when the input iterator is.
///
/// Dropping it early does not stop the tasks already handed over (as in
/// Python): they run to the end and their results are thrown away. The
/// inputs not read yet are never read.
pub struct Imap<R, I> {
    results: Results<R>,
    feed: Feed<I>,
}

/// The inputs of an [`Imap`] not read yet, and what it needs to hand them
/// over.
pub(super) struct Feed<I> {
    /// `None` once they ran out, or once the pool closed.
    pub(super) inputs: Option<I>,
    /// `None` with `inputs`: then no sender of the results channel is left
    /// on this side, so the channel tells when the supervisor is gone.
    pub(super) call: Option<Call>,
    pub(super) link: Link,
    pub(super) chunksize: usize,
    /// The index of the next chunk.
    pub(super) next_index: usize,
    /// How many tasks may be handed over and not yet yielded.
    pub(super) window: usize,
    /// The arguments of the chunk being made; kept to reuse its buffer.
    pub(super) args: Vec<u8>,
}

impl<R, I> fmt::Debug for Imap<R, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Imap")
            .field("ordered", &self.results.ordered)
            .field("in_flight", &self.results.remaining)
            .field("reading", &self.feed.inputs.is_some())
            .finish()
    }
}

impl<R, I> Imap<R, I>
where
    R: DeserializeOwned,
    I: Iterator,
    I::Item: Serialize + DeserializeOwned,
{
    /// Hands over the first chunks, one per worker, so that the workers
    /// start at once, before the first `next`.
    pub(super) fn start(results: Results<R>, feed: Feed<I>) -> Self {
        let mut imap = Imap { results, feed };
        let first = imap.feed.link.processes.saturating_mul(imap.feed.chunksize);
        imap.top_up(first.min(imap.feed.window));
        imap
    }

    /// Reads inputs and hands them over, chunk by chunk, until `want`
    /// tasks are out, the inputs run out, or (after the first chunk) the
    /// result due next is here: a slow input must not keep back a result
    /// that is ready.
    fn top_up(&mut self, want: usize) {
        let mut batch = Vec::new();
        while self.results.remaining < want && self.feed.inputs.is_some() {
            if let Some(why) = self.feed.link.refusal() {
                self.stop_reading(why);
                break;
            }
            let (count, bad) = self.feed.read_chunk();
            if count > 0 {
                let index = self.feed.take_index();
                match self.feed.make_chunk(index, count) {
                    Ok(chunk) => {
                        self.results.handed_over(index, count);
                        batch.push(chunk);
                    }
                    Err(e) => {
                        let items = (0..count).map(|_| Err(same_error(&e))).collect();
                        self.results.failed_here(index, items);
                    }
                }
            }
            if let Some(e) = bad {
                // In that input's place, so that every other input still
                // gets its own result.
                let index = self.feed.take_index();
                self.results.failed_here(index, VecDeque::from([Err(e)]));
            }
            // While a worker may be idle, every chunk goes at once; after
            // that they go together, one command for many.
            if self.results.chunks_out() <= self.feed.link.processes {
                self.hand_over(&mut batch);
            }
            if self.results.due_now() {
                break;
            }
        }
        self.hand_over(&mut batch);
        if self.feed.inputs.is_none() {
            self.feed.call = None;
        }
    }

    fn hand_over(&mut self, batch: &mut Vec<Chunk>) {
        if batch.is_empty() {
            return;
        }
        if let Err(chunks) = self.feed.link.submit(std::mem::take(batch)) {
            // The supervisor has ended: these chunks never left.
            for chunk in chunks {
                let items = (0..chunk.count).map(|_| Err(Error::PoolClosed)).collect();
                self.results.file(chunk.index, items);
            }
            self.stop_reading(Error::PoolClosed);
        }
    }

    /// The pool closed or ended: read no more inputs, and end the results
    /// with one error, `why`, in place of those never read.
    fn stop_reading(&mut self, why: Error) {
        if self.feed.inputs.take().is_some() {
            self.feed.call = None;
            let index = self.feed.take_index();
            self.results.failed_here(index, VecDeque::from([Err(why)]));
        }
    }
}

impl<I: Iterator> Feed<I>
where
    I::Item: Serialize + DeserializeOwned,
{
    /// Reads and encodes up to `chunksize` inputs into `args`: how many it
    /// encoded, and the error of the input after them if that one could
    /// not be encoded. Drops the inputs when they run out.
    fn read_chunk(&mut self) -> (u32, Option<Error>) {
        self.args.clear();
        let mut count = 0u32;
        let Some(inputs) = self.inputs.as_mut() else {
            return (0, None);
        };
        while (count as usize) < self.chunksize {
            let Some(input) = inputs.next() else {
                self.inputs = None;
                break;
            };
            match codec::encode_checked_into(&mut self.args, &input) {
                Ok(()) => count += 1,
                Err(e) => return (count, Some(e)),
            }
        }
        (count, None)
    }

    fn take_index(&mut self) -> usize {
        self.next_index += 1;
        self.next_index - 1
    }

    fn make_chunk(&self, index: usize, count: u32) -> Result<Chunk> {
        match &self.call {
            Some(call) => call.chunk(index, count, &self.args),
            None => Err(Error::PoolClosed),
        }
    }
}

/// A copy of an error that is not `Clone`, for each task of a chunk that
/// could not be made.
fn same_error(e: &Error) -> Error {
    match e {
        Error::Codec { action, reason } => Error::Codec {
            action,
            reason: reason.clone(),
        },
        _ => Error::PoolClosed,
    }
}

impl<R, I> Iterator for Imap<R, I>
where
    R: DeserializeOwned,
    I: Iterator,
    I::Item: Serialize + DeserializeOwned,
{
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        // Topping up only once half the window is taken lets one command
        // carry many chunks instead of one per result.
        if self.results.remaining <= self.feed.window / 2 {
            self.top_up(self.feed.window);
        }
        loop {
            if self.feed.call.is_none() {
                // Without a deadline only an item or the end comes back.
                return self
                    .results
                    .next_until(None)
                    .unwrap_or_else(|e| Some(Err(e)));
            }
            // This side still holds a sender of the results channel, so
            // the channel cannot tell that the supervisor is gone: ask the
            // pool now and then while waiting.
            match self.results.next_until(Some(Instant::now() + ALIVE_CHECK)) {
                Ok(item) => return item,
                Err(Error::Timeout(_)) => {
                    if !self.feed.link.is_alive() {
                        self.stop_reading(Error::PoolClosed);
                    }
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        // One result per input, whatever the chunk size.
        let (low, high) = self
            .feed
            .inputs
            .as_ref()
            .map_or((0, Some(0)), Iterator::size_hint);
        let out = self.results.remaining;
        (
            low.saturating_add(out),
            high.and_then(|high| high.checked_add(out)),
        )
    }
}

impl<R, I> ExactSizeIterator for Imap<R, I>
where
    R: DeserializeOwned,
    I: ExactSizeIterator,
    I::Item: Serialize + DeserializeOwned,
{
}

/// How often an [`Imap`] that may still hand over inputs checks, while it
/// waits, that the pool's supervisor is still there.
const ALIVE_CHECK: Duration = Duration::from_millis(100);

impl Pool {
    /// Like [`map`](Self::map), but returns at once with an iterator that
    /// yields each result, in input order, as soon as it and those before
    /// it are done (Python's `pool.imap(f, iterable)`, chunk size 1). It
    /// yields exactly one item per input; a failed task yields its error
    /// and the others still come.
    ///
    /// ```
    /// let pool = mpcore::Pool::new(2)?;
    /// for (x, square) in (0..4u32).zip(pool.imap(|x: u32| x * x, 0..4)?) {
    ///     assert_eq!(square?, x * x);
    /// }
    /// # Ok::<(), mpcore::Error>(())
    /// ```
    ///
    /// # Reading the inputs lazily
    ///
    /// The inputs are read as the results are taken, on the thread that
    /// takes them: `imap` hands the first chunk to each worker and
    /// returns, and each `next` then reads and hands over more, up to
    /// [`LOOK_AHEAD`] chunks per worker ahead of the results taken. So an
    /// endless input works, memory stays bounded, and a slow input does
    /// not hold back results that are ready. (Python's `imap` reads the
    /// whole input on a thread of the pool instead.)
    ///
    /// ```
    /// let pool = mpcore::Pool::new(2)?;
    /// let first: Vec<u64> = pool
    ///     .imap(|x: u64| x * x, 1..)? // never ends
    ///     .take(3)
    ///     .collect::<Result<_, _>>()?;
    /// assert_eq!(first, [1, 4, 9]);
    /// # Ok::<(), mpcore::Error>(())
    /// ```
    ///
    /// If the pool is closed or terminated while inputs are left to read,
    /// the iterator reads no more: it yields the results of the inputs it
    /// read, then one [`Error::PoolClosed`] (or [`Error::PoolTerminated`])
    /// in place of the rest, and ends.
    ///
    /// # Errors
    ///
    /// [`Error::PoolClosed`] after [`close`](Self::close). Failures of
    /// single tasks come through the iterator, and so does
    /// [`Error::Codec`] in place of an input that cannot be serialized.
    pub fn imap<T, R, I>(&self, f: fn(T) -> R, inputs: I) -> Result<Imap<R, I::IntoIter>>
    where
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = T>,
    {
        self.imap_with(f, inputs, 1, true)
    }

    /// [`imap`](Self::imap) with a chunk size of your choice (Python's
    /// `pool.imap(f, iterable, chunksize)`): each worker fetches
    /// `chunksize` inputs at a time, and their results come back together,
    /// when the last of them is done. A chunk size of 0 is taken as 1.
    ///
    /// ```
    /// let pool = mpcore::Pool::new(2)?;
    /// let squares: Vec<u64> = pool
    ///     .imap_chunked(|x: u64| x * x, 0..1000, 50)?
    ///     .collect::<Result<_, _>>()?;
    /// assert_eq!(squares[999], 998_001);
    /// # Ok::<(), mpcore::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`imap`](Self::imap).
    pub fn imap_chunked<T, R, I>(
        &self,
        f: fn(T) -> R,
        inputs: I,
        chunksize: usize,
    ) -> Result<Imap<R, I::IntoIter>>
    where
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = T>,
    {
        self.imap_with(f, inputs, chunksize, true)
    }

    /// Like [`imap`](Self::imap), but yields the results in the order they
    /// finish (Python's `pool.imap_unordered`).
    ///
    /// # Errors
    ///
    /// As [`imap`](Self::imap).
    pub fn imap_unordered<T, R, I>(&self, f: fn(T) -> R, inputs: I) -> Result<Imap<R, I::IntoIter>>
    where
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = T>,
    {
        self.imap_with(f, inputs, 1, false)
    }

    /// [`imap_unordered`](Self::imap_unordered) with a chunk size of your
    /// choice (Python's `pool.imap_unordered(f, iterable, chunksize)`).
    ///
    /// ```
    /// let pool = mpcore::Pool::new(2)?;
    /// let mut lengths: Vec<usize> = pool
    ///     .imap_unordered_chunked(|s: String| s.len(), ["a", "bb", "ccc"].map(String::from), 2)?
    ///     .collect::<Result<_, _>>()?;
    /// lengths.sort();
    /// assert_eq!(lengths, [1, 2, 3]);
    /// # Ok::<(), mpcore::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`imap`](Self::imap).
    pub fn imap_unordered_chunked<T, R, I>(
        &self,
        f: fn(T) -> R,
        inputs: I,
        chunksize: usize,
    ) -> Result<Imap<R, I::IntoIter>>
    where
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = T>,
    {
        self.imap_with(f, inputs, chunksize, false)
    }

    fn imap_with<T, R, I>(
        &self,
        f: fn(T) -> R,
        inputs: I,
        chunksize: usize,
        ordered: bool,
    ) -> Result<Imap<R, I::IntoIter>>
    where
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = T>,
    {
        let link = self.link()?;
        let (call, done) = call(f, self.start_method)?;
        let results = Results::new(done, Arc::clone(&self.answer_time), ordered);
        let chunksize = chunksize.clamp(1, u32::MAX as usize);
        let feed = Feed {
            inputs: Some(inputs.into_iter()),
            call: Some(call),
            link,
            chunksize,
            next_index: 0,
            window: self
                .processes
                .saturating_mul(LOOK_AHEAD)
                .saturating_mul(chunksize),
            args: Vec::new(),
        };
        Ok(Imap::start(results, feed))
    }
}
