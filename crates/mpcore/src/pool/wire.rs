//! What travels between a pool and its workers: the packet to a worker
//! ([`ToWorker`]), a batch of them in one packet, each task's
//! [`TaskOutcome`] on the way back and how the pool reads it
//! ([`take_result`]), and how a task's function is named.
//!
//! A task is a plain `fn(T) -> R`, not a closure that captures: the worker
//! is a forked copy of this program, so the function's code is already
//! there, at the same address (fork copies the address space as it is).
//! The pool sends that address, the address of a small function
//! instantiated for `T` and `R` that decodes the arguments, calls the task
//! and encodes the results, and the arguments themselves (serde). Python
//! pickles the function by name instead, which is why it must be defined
//! at the top level of a module; here a non-capturing closure coerces to a
//! `fn` too. A worker that is a fresh run of the program rather than a
//! fork ([Start methods](#start-methods)) finds the function at another
//! address, but the whole program moved by one distance, which it adds.
//!

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::base::{Error, Result};
use crate::start::task;
use crate::wire::codec;

/// Runs one chunk in a worker: the task's address, the encoded arguments
/// and their number in; the reply out: [`ALL_RETURNED`] and the values
/// when every task returned, else [`OUTCOMES`] and a [`TaskOutcome`] per
/// argument.
pub(super) type ChunkEntry = fn(func: u64, args: &[u8], count: u32) -> Vec<u8>;

/// The header of a packet to a worker. After `Run` come the encoded
/// arguments; the packet's length tells where they end.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum ToWorker {
    /// Call the `fn(T) -> R` at `func` through the [`ChunkEntry`] at
    /// `entry` (instantiated for the same `T` and `R`) on each of the
    /// `count` arguments that follow. (The count is needed: a `()`
    /// argument takes no bytes at all.)
    Run { entry: u64, func: u64, count: u32 },
    /// Leave the loop and exit.
    Stop,
    /// Several chunks in one packet, so that one system call carries them
    /// all: `chunks` byte strings follow, each a whole `Run` packet. The
    /// worker runs them in order and answers each one before it starts
    /// the next, exactly as if they had come one by one.
    Batch { chunks: u32 },
}

/// One task's result, as a worker sends it.
#[derive(Serialize, Deserialize)]
pub(super) enum TaskOutcome<R> {
    Returned(R),
    Panicked(String),
    /// The argument could not be decoded in the worker.
    BadArgument(String),
    /// The result could not be encoded in the worker.
    BadResult(String),
    /// The results were encoded but could not be sent (this says why).
    NotSent(String),
}

/// A function, as a number that can travel to a worker: its offset from
/// mpcore's anchor ([`task::offset_of`]), which names the same function
/// in a forked worker and, for a function of the program itself, in a
/// worker that is a fresh run of it.
pub(super) fn fn_addr(f: *const ()) -> u64 {
    task::offset_of(f.expose_provenance())
}

/// The pointer that [`fn_addr`] made a number of, in this process; still
/// to be transmuted to the right `fn` type by the caller, who knows it.
pub(super) fn fn_ptr(addr: u64) -> *const () {
    std::ptr::with_exposed_provenance(task::address_at(addr))
}

/// One [`ToWorker::Batch`] packet holding `count` whole `Run` packets.
pub(super) fn batch<'a>(packets: impl Iterator<Item = &'a [u8]>, count: usize) -> Result<Vec<u8>> {
    let header = ToWorker::Batch {
        chunks: count as u32,
    };
    let mut packet = codec::encode(&header)?;
    for chunk in packets {
        codec::push_byte_string(&mut packet, chunk);
    }
    Ok(packet)
}

/// The `Run` packets inside a [`ToWorker::Batch`] packet, in order (a
/// `None` where one cannot be read, after which none can); `None` when
/// `packet` is not a batch.
pub(super) fn batch_parts(packet: &[u8]) -> Option<impl Iterator<Item = Option<&[u8]>>> {
    let Ok((ToWorker::Batch { chunks }, mut rest)) = postcard::take_from_bytes::<ToWorker>(packet)
    else {
        return None;
    };
    Some((0..chunks).map(move |_| {
        let (chunk, tail) = codec::take_byte_string(rest)?;
        rest = tail;
        Some(chunk)
    }))
}

/// The first byte of a chunk's reply when every task of it returned: the
/// values follow bare, one after another.
pub(super) const ALL_RETURNED: u8 = 0;

/// The first byte of a chunk's reply when some task failed: a
/// [`TaskOutcome`] follows for each task.
pub(super) const OUTCOMES: u8 = 1;

/// Whether a chunk's reply holds bare values ([`ALL_RETURNED`]) or
/// outcomes ([`OUTCOMES`]), and what follows its first byte.
pub(super) fn split_reply(reply: &[u8]) -> Result<(bool, &[u8])> {
    match reply.split_first() {
        Some((&ALL_RETURNED, rest)) => Ok((true, rest)),
        Some((&OUTCOMES, rest)) => Ok((false, rest)),
        _ => Err(Error::Codec {
            action: "decode",
            reason: "a chunk's reply begins with neither of its two marks".to_owned(),
        }),
    }
}

/// The next task's result in `bytes`, the rest of a chunk's reply from
/// the worker `pid` (bare values or outcomes, as [`split_reply`] says),
/// and what follows it; `None` for the rest when it cannot be read
/// (nothing after a bad result can be found either).
pub(super) fn take_result<R: DeserializeOwned>(
    bytes: &[u8],
    bare: bool,
    pid: i32,
) -> (Result<R>, Option<&[u8]>) {
    let taken = if bare {
        postcard::take_from_bytes::<R>(bytes).map(|(value, tail)| (Ok(value), tail))
    } else {
        postcard::take_from_bytes::<TaskOutcome<R>>(bytes)
            .map(|(outcome, tail)| (outcome.into_result(pid), tail))
    };
    match taken {
        Ok((result, tail)) => (result, Some(tail)),
        Err(e) => (Err(undecodable(e)), None),
    }
}

/// Every result of a chunk's reply from the worker `pid`, `count` of
/// them, appended to `values` with one deserializer for them all; the
/// first failure instead, in input order, as [`take_result`] would give it.
pub(super) fn take_all_results<R: DeserializeOwned>(
    reply: &[u8],
    count: u32,
    pid: i32,
    values: &mut Vec<R>,
) -> Result<()> {
    let (bare, bytes) = split_reply(reply)?;
    let mut deserializer = postcard::Deserializer::from_bytes(bytes);
    for _ in 0..count {
        let value = if bare {
            R::deserialize(&mut deserializer).map_err(undecodable)?
        } else {
            TaskOutcome::<R>::deserialize(&mut deserializer)
                .map_err(undecodable)?
                .into_result(pid)?
        };
        values.push(value);
    }
    Ok(())
}

fn undecodable(e: postcard::Error) -> Error {
    Error::Codec {
        action: "decode",
        reason: e.to_string(),
    }
}

impl<R> TaskOutcome<R> {
    /// The task's result, as the caller gets it from the worker `pid`.
    fn into_result(self, pid: i32) -> Result<R> {
        match self {
            TaskOutcome::Returned(value) => Ok(value),
            TaskOutcome::Panicked(message) => Err(Error::Panicked { pid, message }),
            TaskOutcome::BadArgument(reason) => Err(Error::Codec {
                action: "decode",
                reason,
            }),
            TaskOutcome::BadResult(reason) => Err(Error::Codec {
                action: "encode",
                reason,
            }),
            TaskOutcome::NotSent(reason) => Err(Error::ResultNotSent { pid, reason }),
        }
    }
}
