//! [`JoinableQueue`]: a [`Queue`] that counts the items not yet marked
//! done, Python's `multiprocessing.JoinableQueue`.
//!
//! The count needs no word of its own for the puts: the ring already
//! counts every message put, with the very store that makes it whole
//! (`ring.rs`). So [`Tasks`] keeps only how many `task_done` calls came,
//! in the ring's header page; the unfinished tasks are the difference,
//! exact at every instant, even when a producer is killed mid-`put`. A
//! `task_done` is one compare-exchange, and a system call only when it
//! brings the count to zero while somebody `join`s.

use std::fmt;
use std::ops::Deref;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Queue;
use crate::base::{Error, Result};
use crate::os::deadline::Wait;
use crate::os::{futex, spin};
use crate::wire::handles::{Handle, travels_as_descriptor};

/// How long a `join` sleeps at most before it looks again.
const SLICE: Duration = Duration::from_millis(100);
/// How long a `join` looks before it sleeps.
const SPIN: Duration = Duration::from_micros(20);

/// The `task_done` count, in the ring's header, on a cache line of its own.
#[repr(C, align(64))]
pub(crate) struct Tasks {
    /// How many `task_done` calls came, wrapping; never more than the
    /// puts. Also the futex that `join` sleeps on.
    done: AtomicU32,
    /// How many `join`s sleep, or are about to.
    joiners: AtomicU32,
}

/// A [`Queue`] whose producer can wait until every item put has been
/// processed, Python's `multiprocessing.JoinableQueue`.
///
/// A consumer calls [`task_done`](Self::task_done) once for each item it
/// got, when it has finished with it; [`join`](Self::join) waits until
/// every item put so far has been marked so. Everything else is a
/// [`Queue`]'s: `put`, `get`, `qsize`, ... come through `Deref`.
///
/// ```
/// use std::time::Duration;
/// use mpcore::{JoinableQueue, Process};
///
/// let q = JoinableQueue::<u32>::new()?;
/// let mut consumer = Process::spawn({
///     let q = q.clone();
///     move || {
///         let mut sum = 0;
///         for _ in 0..3 {
///             sum += q.get().unwrap();
///             q.task_done().unwrap();
///         }
///         sum
///     }
/// })?;
/// for i in 1..=3 {
///     q.put(i)?;
/// }
/// q.join_timeout(Duration::from_secs(60))?; // every item is done
/// assert_eq!(consumer.join()?, 6);
/// # Ok::<(), mpcore::Error>(())
/// ```
///
/// # A consumer killed between `get` and `task_done`
///
/// Its item was taken out of the queue and will never be marked done, so
/// a plain `join` would wait for ever, in Python as here. Use
/// [`join_timeout`](Self::join_timeout): it gives up with
/// [`Error::Timeout`], and [`unfinished`](Self::unfinished) says how many
/// items are missing. A producer killed in the middle of a `put` is no
/// such trouble: its item counts exactly when it is in the queue.
pub struct JoinableQueue<T> {
    queue: Queue<T>,
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue {
            queue: self.queue.clone(),
        }
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinableQueue")
            .field("qsize", &self.queue.ring.count())
            .field("unfinished", &self.unfinished())
            .finish_non_exhaustive()
    }
}

impl<T> Deref for JoinableQueue<T> {
    type Target = Queue<T>;

    fn deref(&self) -> &Queue<T> {
        &self.queue
    }
}

/// A joinable queue travels to a spawned child as its memfd's descriptor,
/// as a [`Queue`] does.
impl<T> Handle for JoinableQueue<T> {
    const WHAT: &'static str = "JoinableQueue";

    fn memfd(&self) -> BorrowedFd<'_> {
        self.queue.memfd()
    }

    fn from_memfd(memfd: OwnedFd, len: u64) -> Result<Self> {
        Ok(JoinableQueue {
            queue: Queue::from_memfd(memfd, len)?,
        })
    }
}

travels_as_descriptor!(JoinableQueue<T>);

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// An empty joinable queue (Python's `mp.JoinableQueue()`).
    ///
    /// # Errors
    ///
    /// As [`Queue::new`].
    pub fn new() -> Result<Self> {
        Ok(JoinableQueue {
            queue: Queue::new()?,
        })
    }

    /// An empty joinable queue that holds at most `maxsize` items (Python's
    /// `mp.JoinableQueue(maxsize)`).
    ///
    /// # Errors
    ///
    /// As [`Queue::bounded`].
    pub fn bounded(maxsize: usize) -> Result<Self> {
        Ok(JoinableQueue {
            queue: Queue::bounded(maxsize)?,
        })
    }
}

impl<T> JoinableQueue<T> {
    fn tasks(&self) -> &Tasks {
        self.queue.ring.tasks()
    }

    /// How many items were put and not yet marked done, now.
    pub fn unfinished(&self) -> usize {
        // `done` first: it never passes the puts, so read in this order
        // the difference is never negative.
        let done = self.tasks().done.load(Ordering::SeqCst);
        self.queue.ring.puts().wrapping_sub(done) as usize
    }

    /// Marks one item that was got as processed (Python's
    /// `q.task_done()`). When that was the last unfinished item, every
    /// [`join`](Self::join) returns.
    ///
    /// # Errors
    ///
    /// [`Error::TaskDoneTooOften`] when every item put is already marked
    /// done (Python's `ValueError`); nothing changes then.
    pub fn task_done(&self) -> Result<()> {
        let tasks = self.tasks();
        let mut done = tasks.done.load(Ordering::SeqCst);
        loop {
            if self.queue.ring.puts() == done {
                return Err(Error::TaskDoneTooOften);
            }
            let next = done.wrapping_add(1);
            match tasks
                .done
                .compare_exchange(done, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => {
                    // The last one: wake the joiners. (A `join` counts
                    // itself in before its last look, so either it sees
                    // this count or we see it.)
                    if tasks.joiners.load(Ordering::SeqCst) > 0 && self.queue.ring.puts() == next {
                        futex::wake(&tasks.done, i32::MAX);
                    }
                    return Ok(());
                }
                Err(now) => done = now,
            }
        }
    }

    /// Waits until every item put so far has been marked done with
    /// [`task_done`](Self::task_done) (Python's `q.join()`); at once if
    /// none is unfinished.
    ///
    /// # Errors
    ///
    /// Only [`Error::Os`], if the kernel refuses the wait.
    pub fn join(&self) -> Result<()> {
        self.join_with(Wait::Forever)
    }

    /// Like [`join`](Self::join), but gives up with [`Error::Timeout`]
    /// once `timeout` has passed, never before: the way out when a
    /// consumer may have been killed between its `get` and its
    /// `task_done`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`], or as [`join`](Self::join).
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        self.join_with(Wait::from_timeout(timeout))
    }

    fn join_with(&self, wait: Wait) -> Result<()> {
        let tasks = self.tasks();
        let spin = Instant::now() + SPIN;
        let until = wait.deadline().map_or(spin, |at| at.min(spin));
        if spin::until(until, || (self.unfinished() == 0).then_some(())).is_some() {
            return Ok(());
        }
        loop {
            tasks.joiners.fetch_add(1, Ordering::SeqCst);
            let done = tasks.done.load(Ordering::SeqCst);
            if self.queue.ring.puts() == done {
                tasks.joiners.fetch_sub(1, Ordering::SeqCst);
                return Ok(());
            }
            if let Err(e) = wait.give_up(Error::Timeout(Duration::ZERO)) {
                tasks.joiners.fetch_sub(1, Ordering::SeqCst);
                return Err(e);
            }
            // Sleeps while no `task_done` comes, at most a slice: the
            // count may also reach zero by a `task_done` that saw a put
            // coming in after it, and did not wake us.
            let slice = Instant::now() + SLICE;
            let until = wait.deadline().map_or(slice, |at| at.min(slice));
            let slept = futex::wait(&tasks.done, done, Some(until));
            tasks.joiners.fetch_sub(1, Ordering::SeqCst);
            match slept {
                Ok(()) | Err(Errno::EAGAIN) | Err(Errno::EINTR) | Err(Errno::ETIMEDOUT) => {}
                Err(e) => return Err(Error::os("futex", e)),
            }
        }
    }
}
