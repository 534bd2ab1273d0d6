//! [`InOrder`]: a call's chunks as they come back, made into its result in
//! input order, each chunk as soon as the ones before it are in: what
//! `map` returns and what an [`AsyncResult`](super::AsyncResult) holds.

use serde::de::DeserializeOwned;

use super::chunk::ChunkDone;
use super::wire::{split_reply, take_all_results, take_result};
use crate::base::{Error, Result};

/// The chunks of one call, made into an `R` in input order as they come:
/// chunk `k` is decoded as soon as chunks `0..k` are, so that a `map`
/// decodes most of its results while the workers still run the last
/// chunks, rather than all of them after. The first failure met is the
/// first in input order, and nothing after it is decoded.
pub(super) struct InOrder<R> {
    /// Chunks that came back before their turn.
    arrived: Vec<Option<ChunkDone>>,
    /// The chunk due next.
    next: usize,
    missing: usize,
    /// What the chunks so far made.
    value: Option<R>,
    failure: Option<Error>,
    /// Adds one chunk's results to `value`.
    file: fn(&mut Option<R>, ChunkDone) -> Result<()>,
}

impl<R> InOrder<R> {
    /// For `chunks` chunks, whose results `file` adds one chunk at a time
    /// to `value` ([`file_all`], [`file_one`]).
    pub(super) fn new(
        chunks: usize,
        value: Option<R>,
        file: fn(&mut Option<R>, ChunkDone) -> Result<()>,
    ) -> Self {
        InOrder {
            arrived: (0..chunks).map(|_| None).collect(),
            next: 0,
            missing: chunks,
            value,
            failure: None,
            file,
        }
    }

    /// How many chunks have not come back.
    pub(super) fn missing(&self) -> usize {
        self.missing
    }

    /// Takes a chunk that came back, and decodes what is now due.
    pub(super) fn take(&mut self, done: ChunkDone) {
        let index = done.index;
        if index < self.next {
            return;
        }
        let Some(slot) = self.arrived.get_mut(index) else {
            return;
        };
        if slot.replace(done).is_none() {
            self.missing -= 1;
        }
        while let Some(done) = self.arrived.get_mut(self.next).and_then(Option::take) {
            self.next += 1;
            if self.failure.is_none()
                && let Err(e) = (self.file)(&mut self.value, done)
            {
                self.failure = Some(e);
            }
        }
    }

    /// No more chunks will come (the supervisor has gone): the missing
    /// ones fail with `TaskLost`.
    pub(super) fn give_up(&mut self) {
        self.missing = 0;
    }

    /// The result: the first failure in input order ([`Error::TaskLost`]
    /// for a chunk that never came back), or the value.
    pub(super) fn finish(&mut self) -> Result<R> {
        if let Some(e) = self.failure.take() {
            return Err(e);
        }
        if self.next < self.arrived.len() {
            return Err(Error::TaskLost);
        }
        self.value.take().ok_or(Error::TaskLost)
    }
}

/// Adds every result of a `map` chunk to `values`, decoded straight into
/// it (going through an iterator would move every result several times).
pub(super) fn file_all<R: DeserializeOwned>(
    values: &mut Option<Vec<R>>,
    done: ChunkDone,
) -> Result<()> {
    let values = values.get_or_insert_with(Vec::new);
    match &done.outcome {
        Ok((pid, bytes)) => take_all_results(bytes, done.count, *pid, values),
        Err(lost) if done.count > 0 => Err(lost.to_error()),
        Err(_) => Ok(()),
    }
}

/// The one result of an `apply_async` chunk.
pub(super) fn file_one<R: DeserializeOwned>(value: &mut Option<R>, done: ChunkDone) -> Result<()> {
    let (pid, bytes) = match &done.outcome {
        Ok((pid, bytes)) if done.count > 0 => (*pid, bytes),
        Ok(_) => return Err(Error::TaskLost),
        Err(lost) => return Err(lost.to_error()),
    };
    let (bare, body) = split_reply(bytes)?;
    *value = Some(take_result(body, bare, pid).0?);
    Ok(())
}
