//! What a caller holds while its tasks run: [`AsyncResult`] for one task,
//! [`Imap`] for many (it also reads their inputs, lazily), [`Results`]
//! under both, and [`ChunkResults`], which turns a chunk's encoded reply
//! into one `Result` per task.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Link;
use super::chunk::{Call, CallDone, Chunk, ChunkDone, Lost};
use super::worker::Outcome;
use crate::base::{Error, Result};
use crate::os::deadline;
use crate::wire::codec;

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

/// The results of a call as they come back, in input order or as they
/// finish: what [`Imap`] and [`AsyncResult`] read, and what `map` collects.
pub(super) struct Results<R> {
    done: mpsc::Receiver<ChunkDone>,
    /// The pool's [`Pool::answer_time`], read and written by every call.
    answer_time: Arc<AtomicU64>,
    /// When the call was made, and whether its first result has come.
    submitted: Instant,
    timed: bool,
    /// Set for `map`: park until every chunk is done instead of waking
    /// for each small one.
    all: Option<Arc<CallDone>>,
    ordered: bool,
    /// The chunks handed to the supervisor that have not come back yet,
    /// and how many tasks each holds, by chunk index. (`map` leaves it
    /// empty: it counts its chunks itself.)
    in_flight: BTreeMap<usize, u32>,
    /// Ordered only: the chunk whose results are due next.
    next_chunk: usize,
    /// Ordered only: chunks that came back before their turn.
    waiting: BTreeMap<usize, VecDeque<Result<R>>>,
    ready: VecDeque<Result<R>>,
    /// Tasks handed over whose results have not been yielded yet.
    remaining: usize,
}

impl<R> Results<R> {
    /// The results of a call made now.
    pub(super) fn new(
        done: mpsc::Receiver<ChunkDone>,
        answer_time: Arc<AtomicU64>,
        ordered: bool,
    ) -> Self {
        Results {
            done,
            answer_time,
            submitted: Instant::now(),
            timed: false,
            all: None,
            ordered,
            in_flight: BTreeMap::new(),
            next_chunk: 0,
            waiting: BTreeMap::new(),
            ready: VecDeque::new(),
            remaining: 0,
        }
    }

    /// For `map`: sleep until `all` says every chunk is in.
    pub(super) fn wait_for_all(&mut self, all: Arc<CallDone>) {
        self.all = Some(all);
    }

    /// Chunk `index`, of `count` tasks, is on its way to a worker.
    pub(super) fn handed_over(&mut self, index: usize, count: u32) {
        self.in_flight.insert(index, count);
        self.remaining += count as usize;
    }

    /// Chunk `index` never left this thread: `items` are its results.
    fn failed_here(&mut self, index: usize, items: VecDeque<Result<R>>) {
        self.remaining += items.len();
        self.file(index, items);
    }

    /// How many chunks are with the supervisor or the workers.
    fn chunks_out(&self) -> usize {
        self.in_flight.len()
    }

    /// Puts a chunk's results where they are due.
    fn file(&mut self, index: usize, items: VecDeque<Result<R>>) {
        self.in_flight.remove(&index);
        if self.ordered {
            self.waiting.insert(index, items);
        } else {
            self.ready.extend(items);
        }
    }

    /// Fails every chunk still out with `error()`: the supervisor ended
    /// without sending them (it can only happen if it panicked, or a task
    /// came in as it closed), and nothing may wait for them.
    fn fail_in_flight(&mut self, error: fn() -> Error) {
        for (index, count) in std::mem::take(&mut self.in_flight) {
            let items = (0..count).map(|_| Err(error())).collect();
            self.file(index, items);
        }
    }
}

impl<R: DeserializeOwned> Results<R> {
    /// The next result, waiting until `deadline` at most (`None`: for
    /// ever). `Ok(None)` when every result handed over has been yielded.
    pub(super) fn next_until(&mut self, deadline: Option<Instant>) -> Result<Option<Result<R>>> {
        loop {
            if let Some(item) = self.pop_due() {
                return Ok(Some(item));
            }
            if self.remaining == 0 {
                return Ok(None);
            }
            match self.recv_done(deadline)? {
                Some(done) => self.file_done(done),
                None => self.fail_in_flight(|| Error::TaskLost),
            }
        }
    }

    /// The result due next, if it is here.
    fn pop_due(&mut self) -> Option<Result<R>> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                self.remaining -= 1;
                return Some(item);
            }
            if !self.ordered {
                return None;
            }
            self.ready = self.waiting.remove(&self.next_chunk)?;
            self.next_chunk += 1;
        }
    }

    /// Whether the result due next is here; files whatever has come back
    /// meanwhile, and never waits.
    fn due_now(&mut self) -> bool {
        while let Ok(done) = self.done.try_recv() {
            self.note_answer();
            self.file_done(done);
        }
        !self.ready.is_empty() || (self.ordered && self.waiting.contains_key(&self.next_chunk))
    }

    fn file_done(&mut self, done: ChunkDone) {
        let index = done.index;
        let items = ChunkResults::new(done).collect();
        self.file(index, items);
    }

    /// The next chunk to come back, waiting until `deadline` at most
    /// (`None`: for ever, and with `all` set, until the last chunk is in).
    /// `Ok(None)`: the supervisor has ended and nothing more will come.
    fn recv_done(&mut self, deadline: Option<Instant>) -> Result<Option<ChunkDone>> {
        let done = self.wait_done(deadline);
        if matches!(done, Ok(Some(_))) {
            self.note_answer();
        }
        done
    }

    /// Records how long the call waited for its first result.
    fn note_answer(&mut self) {
        if !self.timed {
            self.timed = true;
            let waited = self.submitted.elapsed().as_nanos();
            self.answer_time.store(
                waited.clamp(1, u128::from(u64::MAX)) as u64,
                Ordering::Relaxed,
            );
        }
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

    /// What `map` returns: waits for its `chunks` chunks of `tasks` tasks
    /// in all, then decodes them in input order straight into one `Vec` of
    /// the right size, so that the first failure it meets is the first in
    /// input order. (Going through the iterator would move every result
    /// several times and grow the `Vec` by doubling.)
    pub(super) fn collect_all(mut self, chunks: usize, tasks: usize) -> Result<Vec<R>> {
        let mut arrived: Vec<Option<ChunkDone>> = (0..chunks).map(|_| None).collect();
        let mut missing = chunks;
        while missing > 0 {
            let Some(done) = self.recv_done(None)? else {
                break; // the supervisor is gone: the missing chunks fail below
            };
            let index = done.index;
            if arrived[index].replace(done).is_none() {
                missing -= 1;
            }
        }
        let mut values = Vec::with_capacity(tasks);
        for done in arrived {
            for result in ChunkResults::<R>::new(done.ok_or(Error::TaskLost)?) {
                values.push(result?);
            }
        }
        Ok(values)
    }
}

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
/// ([`Results::look_for_answer`]).
const CALLER_LOOK_MAX: Duration = Duration::from_micros(200);

/// How often an [`Imap`] that may still hand over inputs checks, while it
/// waits, that the pool's supervisor is still there.
const ALIVE_CHECK: Duration = Duration::from_millis(100);
