//! [`Link`]: what a call holds of its pool to hand chunks to the
//! supervisor, and [`hand_over`], which encodes a call's inputs into
//! chunks and hands them over.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak, mpsc};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::chunk::{Call, Chunk};
use super::supervisor::{Command, Wake};
use crate::base::{Error, Result};
use crate::wire::codec;

/// Encodes `inputs` into the chunks of `call`, `chunksize` inputs each
/// (at least 1), and hands them to the supervisor through `link`, which
/// runs them as they come.
///
/// Inputs of a type that always travels ([`codec::always_travels`]: its
/// encoding can neither fail nor misread) are handed over a chunk at a
/// time, as they are encoded, so that the workers start on the first
/// chunk while this thread encodes the others: a `map` of 100,000 tiny
/// tasks spent a fifth of its time encoding while the workers waited.
/// Inputs of every other type are all encoded first, so that one that
/// cannot travel fails the call with [`Error::Codec`] before any task of
/// it has run.
///
/// A chunk that cannot be handed over (the supervisor has ended) is
/// dropped unsent: the call's channel then closes, and its tasks fail
/// with `TaskLost`.
pub(super) fn hand_over<T>(link: &Link, call: Call, inputs: Vec<T>, chunksize: usize) -> Result<()>
where
    T: Serialize + DeserializeOwned,
{
    if !codec::always_travels::<T>() {
        let chunks = call.chunks(inputs, chunksize)?;
        drop(call);
        let _ = link.submit(chunks);
        return Ok(());
    }
    let count = inputs.len().div_ceil(chunksize);
    let mut inputs = inputs.into_iter();
    let mut args = Vec::new();
    // The chunks never made will never count themselves done.
    let unmade = |n: usize| {
        if let Some(all) = &call.all {
            all.left.fetch_sub(n, Ordering::SeqCst);
        }
    };
    for index in 0..count {
        let chunk = match call.next_chunk(index, &mut inputs, chunksize, &mut args) {
            Ok(chunk) => chunk,
            Err(e) => {
                unmade(count - index);
                return Err(e);
            }
        };
        if link.submit(vec![chunk]).is_err() {
            unmade(count - index - 1);
            return Ok(());
        }
    }
    Ok(())
}

/// What a call needs of the pool to hand chunks to its supervisor. An
/// [`Imap`] keeps one, to hand over its inputs as it reads them.
#[derive(Clone)]
pub(super) struct Link {
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) wake: Arc<Wake>,
    pub(super) closed: Arc<AtomicBool>,
    pub(super) terminated: Arc<AtomicBool>,
    pub(super) alive: Weak<()>,
    pub(super) processes: usize,
}

impl Link {
    /// Hands `chunks` to the supervisor; gives them back if it has ended.
    pub(super) fn submit(&self, chunks: Vec<Chunk>) -> std::result::Result<(), Vec<Chunk>> {
        match self.commands.send(Command::Submit(chunks)) {
            Ok(()) => {
                self.wake.notify();
                Ok(())
            }
            Err(mpsc::SendError(Command::Submit(chunks))) => Err(chunks),
            Err(mpsc::SendError(_)) => Err(Vec::new()),
        }
    }

    /// Why the pool takes no new tasks, if it takes none.
    pub(super) fn refusal(&self) -> Option<Error> {
        if self.terminated.load(Ordering::SeqCst) {
            Some(Error::PoolTerminated)
        } else if self.closed.load(Ordering::SeqCst) {
            Some(Error::PoolClosed)
        } else {
            None
        }
    }

    /// Whether the supervisor thread still runs.
    pub(super) fn is_alive(&self) -> bool {
        self.alive.strong_count() > 0
    }
}
