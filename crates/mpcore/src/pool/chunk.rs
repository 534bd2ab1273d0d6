//! The bookkeeping of tasks in flight: a [`Chunk`] of tasks, how fast the
//! chunks of a call run, how a `map` caller is woken, and why a chunk came
//! back without results ([`Lost`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::wire::{self, ToWorker};
use crate::base::ExitStatus;
use crate::base::{Error, Result};
use crate::wire::codec;

/// Finishes every chunk of `chunks` with the same failure.
pub(super) fn fail_all(chunks: Vec<Chunk>, why: Lost) {
    for chunk in chunks {
        chunk.finish(Err(why.clone()));
    }
}

/// One [`ToWorker::Batch`] packet holding
/// the `Run` packets of `chunks`.
pub(super) fn batch_packet(chunks: &[Chunk]) -> Result<Vec<u8>> {
    wire::batch(chunks.iter().map(|chunk| &chunk.packet[..]), chunks.len())
}

/// What every chunk of one call shares, and how a chunk of it is made.
pub(super) struct Call {
    /// The addresses of the task and of the entry that runs it.
    pub(super) entry: u64,
    pub(super) func: u64,
    pub(super) reply: mpsc::Sender<ChunkDone>,
    pub(super) speed: Arc<Speed>,
    pub(super) all: Option<Arc<CallDone>>,
}

impl Call {
    /// The chunks of `chunksize` inputs each (0 is taken as 1) that carry
    /// `inputs` to the workers, in order.
    ///
    /// Every input is encoded before any chunk is made: an input that
    /// cannot be serialized, or does not read back, fails the whole call
    /// with [`Error::Codec`], and then no task of it runs.
    pub(super) fn chunks<T: Serialize + DeserializeOwned>(
        &self,
        inputs: impl IntoIterator<Item = T>,
        chunksize: usize,
    ) -> Result<Vec<Chunk>> {
        let chunksize = chunksize.clamp(1, u32::MAX as usize);
        let mut chunks = Vec::new();
        let mut args = Vec::new();
        let mut inputs = inputs.into_iter().peekable();
        while inputs.peek().is_some() {
            chunks.push(self.next_chunk(chunks.len(), &mut inputs, chunksize, &mut args)?);
        }
        Ok(chunks)
    }

    /// Chunk `index` of the call: the next `chunksize` of `inputs` (at
    /// least one is left), encoded and checked to read back; `args` is
    /// room to encode them in.
    pub(super) fn next_chunk<T: Serialize + DeserializeOwned>(
        &self,
        index: usize,
        inputs: &mut impl Iterator<Item = T>,
        chunksize: usize,
        args: &mut Vec<u8>,
    ) -> Result<Chunk> {
        args.clear();
        let count = codec::encode_each_into(args, inputs.take(chunksize))?;
        // Read back a chunk at a time: one pass instead of a check
        // per input, which doubled the cost of a map of tiny tasks.
        codec::check_decodes_all::<T>(args, count)?;
        self.chunk(index, count, args)
    }

    /// Chunk `index` of the call: the `count` arguments encoded in `args`.
    pub(super) fn chunk(&self, index: usize, count: u32, args: &[u8]) -> Result<Chunk> {
        let mut packet = codec::encode(&ToWorker::Run {
            entry: self.entry,
            func: self.func,
            count,
        })?;
        packet.extend_from_slice(args);
        Ok(Chunk {
            index,
            count,
            packet,
            reply: self.reply.clone(),
            sent: None,
            speed: Arc::clone(&self.speed),
            all: self.all.clone(),
        })
    }
}

/// Some tasks of one `map`/`imap`/`apply_async` call, in one packet.
pub(super) struct Chunk {
    /// Its place among the chunks of its call.
    pub(super) index: usize,
    /// How many tasks it holds.
    pub(super) count: u32,
    /// `ToWorker::Run` followed by the encoded arguments.
    pub(super) packet: Vec<u8>,
    pub(super) reply: mpsc::Sender<ChunkDone>,
    /// When it was sent to a worker.
    pub(super) sent: Option<Instant>,
    /// How fast the chunks of its call run, shared by them all.
    pub(super) speed: Arc<Speed>,
    /// For `map`: counts the chunks of the call down, and wakes the
    /// caller at zero.
    pub(super) all: Option<Arc<CallDone>>,
}

/// How long one chunk of a call takes, smoothed over its results so far;
/// 0 while unknown. Only the supervisor reads and writes it.
#[derive(Default)]
pub(super) struct Speed {
    pub(super) nanos: AtomicU64,
}

impl Speed {
    pub(super) fn chunk_time(&self) -> Option<Duration> {
        match self.nanos.load(Ordering::Relaxed) {
            0 => None,
            n => Some(Duration::from_nanos(n)),
        }
    }

    pub(super) fn record(&self, sample: Duration) {
        let sample = (sample.as_nanos() as u64).max(1);
        let smoothed = match self.nanos.load(Ordering::Relaxed) {
            0 => sample,
            old => (old * 3 + sample) / 4,
        };
        self.nanos.store(smoothed.max(1), Ordering::Relaxed);
    }
}

/// The chunks of a `map` call still to finish, and the thread that waits.
pub(super) struct CallDone {
    pub(super) left: AtomicUsize,
    pub(super) thread: thread::Thread,
}

/// What the supervisor sends back for a chunk.
pub(super) struct ChunkDone {
    pub(super) index: usize,
    pub(super) count: u32,
    /// The worker's pid and its encoded outcomes, or why there are none.
    pub(super) outcome: std::result::Result<(i32, Vec<u8>), Lost>,
}

/// Why a chunk came back without results; one per chunk, turned into one
/// error per task.
#[derive(Debug, Clone)]
pub(super) enum Lost {
    WorkerDied {
        pid: i32,
        status: Option<ExitStatus>,
    },
    Terminated,
    Closed,
    /// It could not be sent, or its results could not be received: the
    /// error says why, in its own words.
    Failed(Error),
}

impl Lost {
    pub(super) fn to_error(&self) -> Error {
        match self {
            Lost::WorkerDied { pid, status } => Error::WorkerDied {
                pid: *pid,
                status: *status,
            },
            Lost::Terminated => Error::PoolTerminated,
            Lost::Closed => Error::PoolClosed,
            Lost::Failed(e) => e.clone(),
        }
    }
}

impl Chunk {
    pub(super) fn finish(self, outcome: std::result::Result<(i32, Vec<u8>), Lost>) {
        // The caller may have stopped listening (a dropped `Imap`): fine.
        let _ = self.reply.send(ChunkDone {
            index: self.index,
            count: self.count,
            outcome,
        });
        // `Drop` counts it done, after the send.
    }
}

impl Drop for Chunk {
    /// A chunk is done when it is finished, or dropped unfinished (the
    /// supervisor panicked): either way a `map` waiting for it must wake.
    fn drop(&mut self) {
        if let Some(all) = &self.all {
            // The last chunk wakes the caller; so does a large one, whose
            // results it may as well decode while the others still run.
            if all.left.fetch_sub(1, Ordering::SeqCst) == 1 || self.count >= WAKE_COUNT {
                all.thread.unpark();
            }
        }
    }
}

/// A `map` chunk of this many tasks or more wakes its caller when it is
/// done; smaller ones only at the end of the call.
const WAKE_COUNT: u32 = 64;
