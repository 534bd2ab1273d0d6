//! [`Results`]: a call's results as they come back, in input order or as
//! they finish, under [`AsyncResult`](super::AsyncResult), [`Imap`](super::Imap)
//! and `map`.

use std::collections::{BTreeMap, VecDeque};
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::chunk::{CallDone, ChunkDone, Lost};
use super::in_order::{InOrder, file_all};
use super::wire::{split_reply, take_result};
use crate::base::{Error, Result};
use crate::os::spin;

/// The results of a call as they come back, in input order or as they
/// finish: what [`Imap`](super::Imap) and [`AsyncResult`](super::AsyncResult) read, and what `map` collects.
pub(super) struct Results<R> {
    pub(super) done: mpsc::Receiver<ChunkDone>,
    /// The pool's `Pool::answer_time`, read and written by every call.
    pub(super) answer_time: Arc<AtomicU64>,
    /// When the call was made, and whether its first result has come.
    pub(super) submitted: Instant,
    pub(super) timed: bool,
    /// Set for `map`: park until every chunk is done instead of waking
    /// for each small one.
    pub(super) all: Option<Arc<CallDone>>,
    pub(super) ordered: bool,
    /// The chunks handed to the supervisor that have not come back yet,
    /// and how many tasks each holds, by chunk index. (`map` leaves it
    /// empty: it counts its chunks itself.)
    pub(super) in_flight: BTreeMap<usize, u32>,
    /// Ordered only: the chunk whose results are due next.
    pub(super) next_chunk: usize,
    /// Ordered only: chunks that came back before their turn.
    pub(super) waiting: BTreeMap<usize, VecDeque<Result<R>>>,
    pub(super) ready: VecDeque<Result<R>>,
    /// Tasks handed over whose results have not been yielded yet.
    pub(super) remaining: usize,
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
    pub(super) fn failed_here(&mut self, index: usize, items: VecDeque<Result<R>>) {
        self.remaining += items.len();
        self.file(index, items);
    }

    /// How many chunks are with the supervisor or the workers.
    pub(super) fn chunks_out(&self) -> usize {
        self.in_flight.len()
    }

    /// Puts a chunk's results where they are due.
    pub(super) fn file(&mut self, index: usize, items: VecDeque<Result<R>>) {
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
    pub(super) fn fail_in_flight(&mut self, error: fn() -> Error) {
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
    pub(super) fn pop_due(&mut self) -> Option<Result<R>> {
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
    pub(super) fn due_now(&mut self) -> bool {
        while let Ok(done) = self.done.try_recv() {
            self.note_answer();
            self.file_done(done);
        }
        !self.ready.is_empty() || (self.ordered && self.waiting.contains_key(&self.next_chunk))
    }

    pub(super) fn file_done(&mut self, done: ChunkDone) {
        let index = done.index;
        let items = ChunkResults::new(done).collect();
        self.file(index, items);
    }

    /// The next chunk to come back, waiting until `deadline` at most
    /// (`None`: for ever, and with `all` set, until the last chunk is in).
    /// `Ok(None)`: the supervisor has ended and nothing more will come.
    pub(super) fn recv_done(&mut self, deadline: Option<Instant>) -> Result<Option<ChunkDone>> {
        let done = self.wait_done(deadline);
        if matches!(done, Ok(Some(_))) {
            self.note_answer();
        }
        done
    }

    /// Records how long the call waited for its first result.
    pub(super) fn note_answer(&mut self) {
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
    pub(super) fn wait_done(&mut self, deadline: Option<Instant>) -> Result<Option<ChunkDone>> {
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
    pub(super) fn look_for_answer(&mut self) -> Option<Option<ChunkDone>> {
        let typical = Duration::from_nanos(self.answer_time.load(Ordering::Relaxed));
        if self.timed || typical.is_zero() || typical > CALLER_LOOK_MAX {
            return None;
        }
        let until = (self.submitted + typical * 2).min(Instant::now() + CALLER_LOOK_MAX);
        spin::until(until, || match self.done.try_recv() {
            Ok(done) => Some(Some(done)),
            Err(mpsc::TryRecvError::Disconnected) => Some(None),
            Err(mpsc::TryRecvError::Empty) => None,
        })
    }

    /// What `map` returns: the results of its `chunks` chunks, `tasks`
    /// in all, decoded in input order as they come ([`InOrder`]).
    pub(super) fn collect_all(mut self, chunks: usize, tasks: usize) -> Result<Vec<R>> {
        let mut in_order = InOrder::new(chunks, Some(Vec::with_capacity(tasks)), file_all::<R>);
        while in_order.missing() > 0 {
            match self.recv_done(None)? {
                Some(done) => in_order.take(done),
                // The supervisor is gone: the missing chunks fail.
                None => in_order.give_up(),
            }
        }
        in_order.finish()
    }
}

/// The longest a caller looks for a result before it sleeps
/// ([`Results::look_for_answer`]).
const CALLER_LOOK_MAX: Duration = Duration::from_micros(200);

/// A chunk's reply, turned into one result per task as it is iterated.
pub(super) struct ChunkResults<R> {
    /// How many results are still to come.
    left: u32,
    /// The worker's pid and its encoded outcomes, or why there are none.
    outcome: std::result::Result<(i32, Vec<u8>), Lost>,
    /// Where the next encoded result starts, after the reply's first byte.
    at: usize,
    _result: PhantomData<fn() -> R>,
}

impl<R> ChunkResults<R> {
    pub(super) fn new(done: ChunkDone) -> Self {
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
        let (bare, body) = match split_reply(bytes) {
            Ok(split) => split,
            Err(e) => return Some(Err(e)),
        };
        let rest = body.get(self.at..).unwrap_or_default();
        let (result, tail) = take_result(rest, bare, pid);
        self.at = body.len() - tail.map_or(0, <[u8]>::len);
        Some(result)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}
