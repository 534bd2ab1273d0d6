//! One error type for everything that can go wrong between processes.

use std::time::Duration;

use super::errno::Errno;
use super::status::Signal;

/// What went wrong. Every message reads as a sentence, and `Debug` prints
/// that same sentence, so a `main` that returns `Result<(), mpcore::Error>`
/// shows the reader what happened, not a struct dump.
///
/// Match on the variant, or ask with the `is_*` helpers:
///
/// ```
/// use std::time::Duration;
/// use mpcore::{Error, Process};
///
/// let mut p = Process::spawn(|| -> u32 { panic!("no answer") })?;
/// let e = p.join().unwrap_err();
/// assert!(e.is_panic());
/// assert_eq!(e.panic_message(), Some("no answer"));
///
/// let q = mpcore::Queue::<u32>::new()?;
/// let e = q.get_timeout(Duration::ZERO).unwrap_err();
/// assert!(matches!(e, Error::Timeout(_)) && e.is_timeout());
/// # Ok::<(), Error>(())
/// ```
#[derive(thiserror::Error, Clone)]
#[non_exhaustive]
pub enum Error {
    /// The child's closure panicked; `message` is the panic's payload.
    #[error("child process {pid} panicked: {message}")]
    Panicked {
        /// The child's process id.
        pid: i32,
        /// The panic message, as `panic!` formatted it.
        message: String,
    },

    /// The child was ended by a signal before it sent a result.
    #[error("child process {pid} was killed by signal {signal}")]
    Signaled {
        /// The child's process id.
        pid: i32,
        /// The signal that ended it, e.g. `SIGKILL`.
        signal: Signal,
    },

    /// The child exited (e.g. through `std::process::exit`) without sending a
    /// result. Code 0 is an error only when there was a value to send: for
    /// a `Process<()>`, `exit(0)` is success, as in Python.
    #[error("child process {pid} exited with code {code} without sending a result")]
    Exited {
        /// The child's process id.
        pid: i32,
        /// Its exit code.
        code: i32,
    },

    /// The child ended without sending a result, and something else reaped
    /// it, so how it ended is unknown: with `SIGCHLD` set to `SIG_IGN` the
    /// kernel reaps children itself, and a `waitpid(-1)` elsewhere takes
    /// any child. A result the child did send is still returned.
    #[error(
        "child process {pid} ended without sending a result, and something else reaped it \
         (is SIGCHLD ignored?), so how it ended is unknown"
    )]
    ReapedElsewhere {
        /// The child's process id.
        pid: i32,
    },

    /// A child started by the fork server
    /// ([`StartMethod::ForkServer`](crate::StartMethod::ForkServer)) ended
    /// without sending a result, and the server died before it reported
    /// how. The server's children die with it, so the child was most
    /// likely killed along with the server. A result the child did send is
    /// still returned.
    #[error(
        "child process {pid} ended without sending a result, and the fork server that started \
         it died before reporting how it ended (was the server killed?)"
    )]
    ForkServerLost {
        /// The child's process id.
        pid: i32,
    },

    /// A [`Process`](crate::Process) handle was used in a process that did
    /// not start the child: a forked child holding a copy of its parent's
    /// handle. Only the starter may signal or wait for the child (the
    /// copy's `Drop` does nothing).
    #[error(
        "child process {pid} was started by process {owner}; this copy of its handle is in \
         another process (a fork), which cannot {action} it: do that in process {owner}"
    )]
    NotOwner {
        /// The child's process id.
        pid: i32,
        /// The process that started it.
        owner: i32,
        /// What was asked: `"join"`, `"kill"` or `"terminate"`.
        action: &'static str,
    },

    /// A system call failed.
    #[error("{call} failed: {errno}")]
    Os {
        /// The call, e.g. `"fork"`.
        call: &'static str,
        /// What the kernel said.
        errno: Errno,
    },

    /// A call failed with an error that has no errno (one of the standard
    /// library's own, such as an unexpected end of file).
    #[error("{call} failed: {reason}")]
    Io {
        /// The call, e.g. `"read"`.
        call: &'static str,
        /// What the error said.
        reason: String,
    },

    /// A large message (its bytes travel in a memfd, whose descriptor the
    /// packet carries) arrived while this process had no free file
    /// descriptor to receive that descriptor with: its open-file limit
    /// (`ulimit -n`) was reached (`EMFILE`).
    #[error(
        "a message of {bytes} bytes arrived, but this process has no free file descriptor \
         to receive its memory with (too many open files, EMFILE); {}",
        if *kept {
            "the message is kept: close some files or raise the limit (ulimit -n), then try again"
        } else {
            "the kernel dropped its memory, so the message is lost: \
             close some files or raise the limit (ulimit -n)"
        }
    )]
    NoFreeDescriptor {
        /// The message's size.
        bytes: u64,
        /// Whether the message is still waiting to be received (`true`),
        /// or was lost (`false`).
        kept: bool,
    },

    /// A large message could not be sent: too many are in flight, sent
    /// but not yet received (`ETOOMANYREFS`).
    #[error(
        "could not send a large message: too many large messages are in flight, sent but not \
         yet received (ETOOMANYREFS); each holds a file descriptor, and the kernel lets a user \
         have no more of them in flight than the open-file limit: receive some before sending \
         more, or raise the limit (ulimit -n)"
    )]
    TooManyInFlight,

    /// A type's alignment is more than shared memory can promise.
    #[error(
        "a type aligned to {align} bytes cannot live in shared memory, whose mappings are \
         aligned to the page (4096 bytes): use a type aligned to 4096 bytes or less"
    )]
    AlignmentTooLarge {
        /// The type's alignment.
        align: usize,
    },

    /// A [`Pool`](crate::Pool)'s supervisor thread panicked (a bug in
    /// mpcore): the pool runs no more tasks.
    #[error(
        "the pool's supervisor thread panicked: {message}; the pool runs no more tasks, \
         so make a new one (and please report this bug in mpcore)"
    )]
    SupervisorPanicked {
        /// The panic message.
        message: String,
    },

    /// A [`Pool`](crate::Pool) task's answer never came: its pool's
    /// supervisor ended without sending one (it panicked, or the pool was
    /// ended as the task came in), so the task may or may not have run.
    #[error(
        "the pool ended without an answer for this task, so it may or may not have run: \
         submit it again to a new pool"
    )]
    TaskLost,

    /// A [`Pool`](crate::Pool) worker ran this task but could not send
    /// its result back (no memory, no free file descriptor for a large
    /// result, ...). The worker stays in service.
    #[error(
        "pool worker {pid} ran this task but could not send its result back ({reason}); \
         the task may have had effects: if its result was large, free what is short \
         (memory, open files in the worker) and run it again"
    )]
    ResultNotSent {
        /// The worker's process id.
        pid: i32,
        /// Why the send failed.
        reason: String,
    },

    /// The wait ran out before anything arrived.
    #[error("timed out after {0:?}")]
    Timeout(Duration),

    /// [`Queue::try_put`](crate::Queue::try_put) found the queue full
    /// (Python's `queue.Full`): a [`Queue::bounded`](crate::Queue::bounded)
    /// queue holds its most messages, or any queue holds 2 GiB of them.
    #[error("the queue is full")]
    Full,

    /// A message larger than a [`Queue`](crate::Queue) takes.
    #[error(
        "a message of {len} bytes is larger than a queue takes ({max} bytes); \
         send it in parts, or write it to a file and send the file's name"
    )]
    MessageTooLarge {
        /// The message's size in bytes.
        len: usize,
        /// The most a queue takes.
        max: usize,
    },

    /// [`Queue::try_get`](crate::Queue::try_get) found nothing waiting.
    #[error("the queue is empty")]
    Empty,

    /// A `task_done` with every item put marked done (Python's `ValueError`).
    #[error("task_done was called more times than items were put in the queue")]
    TaskDoneTooOften,

    /// A broken [`Barrier`](crate::Barrier) (Python's `BrokenBarrierError`).
    #[error(
        "the barrier is broken (a wait timed out, a waiting party died, or abort \
         or reset was called); reset() makes it usable again"
    )]
    BrokenBarrier,

    /// A channel reported end of file: every copy of its sending end is
    /// closed, so nothing more can arrive. (A [`Queue`](crate::Queue) never
    /// reports this: like Python's, every handle holds both ends, so a `get`
    /// with no producer left waits; use `get_timeout`.)
    #[error("the other side disconnected")]
    Disconnected,

    /// A value could not be turned into bytes, or bytes back into a value.
    #[error("could not {action} a message: {reason}")]
    Codec {
        /// `"encode"` or `"decode"`.
        action: &'static str,
        /// What the serializer said.
        reason: String,
    },

    /// `join` was called again after it had already returned the result.
    #[error("child process {pid} was already joined; its result was taken by the first join")]
    AlreadyJoined {
        /// The child's process id.
        pid: i32,
    },

    /// The thread or process that held a [`Lock`](crate::Lock) (or the lock
    /// of a [`Value`](crate::Value) or [`Array`](crate::Array)) died while
    /// holding it. The lock has been made consistent and released: the next
    /// call takes it as usual. What it protected may be half-updated.
    #[error(
        "the process or thread that held the lock died while holding it; \
         the lock works again, but the data it protected may be half-updated"
    )]
    OwnerDied,

    /// This thread already holds the lock it asked for, so waiting for it
    /// would wait for ever (Python's `Lock` would hang here).
    #[error("this thread already holds the lock, so waiting for it would wait for ever")]
    WouldDeadlock,

    /// A fork was refused because another thread (or the caller itself,
    /// through a pool's thread) held the standard output or error stream's
    /// lock for longer than `waited`. A child forked then would inherit
    /// that lock held, and hang at its first `println!`; waiting longer
    /// could hang the caller, if the holder waits for this very fork.
    #[error(
        "could not fork: stdout or stderr stayed locked by another thread for {waited:?} \
         (a child forked now would hang at its first print); release the lock \
         (a `stdout().lock()` held across this call, say) and try again"
    )]
    StreamLocked {
        /// How long the fork waited for the lock.
        waited: Duration,
    },

    /// This thread tried to release a lock that it does not hold. The lock
    /// is left as it was: only the thread that acquired it can release it.
    #[error(
        "this thread does not hold the lock, so it cannot release it; \
         only the thread that acquired a lock can release it"
    )]
    NotLockHolder,

    /// [`Array::get`](crate::Array::get) or [`Array::set`](crate::Array::set)
    /// with an index past the end.
    #[error("index {index} is out of range for an array of length {len}")]
    IndexOutOfRange {
        /// The index asked for.
        index: usize,
        /// The array's length.
        len: usize,
    },

    /// A [`Pool`](crate::Pool) worker died (killed by a signal, or exited)
    /// while it held this task. The pool has replaced it; other tasks are
    /// not affected.
    #[error("pool worker {pid} died ({}) while running this task", exit_text(.status))]
    WorkerDied {
        /// The dead worker's process id.
        pid: i32,
        /// How it ended (`None` if it could not be learnt).
        status: Option<crate::ExitStatus>,
    },

    /// A [`Pool`](crate::Pool) had no worker left and could not start one
    /// for a while, so this task did not run.
    #[error(
        "the pool has no worker left and could not start one for {tried:?} ({reason}), \
         so this task did not run: free what is short (processes, open files, memory) \
         and submit it again"
    )]
    NoWorker {
        /// How long the pool kept trying.
        tried: Duration,
        /// Why the last start failed.
        reason: String,
    },

    /// The [`Pool`](crate::Pool) was closed or terminated, so it runs no
    /// new task (Python's `ValueError: Pool not running`).
    #[error("the pool is closed or terminated, so it runs no new tasks")]
    PoolClosed,

    /// The [`Pool`](crate::Pool) was terminated (or dropped) before this
    /// task finished.
    #[error("the pool was terminated before this task finished")]
    PoolTerminated,

    /// [`AsyncResult::get_timeout`](crate::AsyncResult::get_timeout)
    /// already returned this task's result.
    #[error("this task's result was already taken by an earlier get")]
    AlreadyTaken,

    /// [`AsyncResult::successful`](crate::AsyncResult::successful) was
    /// asked before the task finished (Python raises `ValueError`).
    #[error("the task has not finished yet, so it is neither successful nor failed")]
    NotReady,

    /// [`set_start_method`](crate::set_start_method) was called again
    /// with another method: like Python's without `force=True`, the
    /// program's default is chosen once.
    #[error(
        "the start method is already set to {current}, and can be set only once per program; \
         choose it once, at the top of main, or pick another one for a single process with \
         process::Builder::start_method({requested:?})"
    )]
    StartMethodAlreadySet {
        /// The method set first.
        current: crate::StartMethod,
        /// The method asked for since.
        requested: crate::StartMethod,
    },

    /// A closure was given to a child that would not be forked. A fresh
    /// program (`spawn`) cannot receive what a closure captures, as Python
    /// cannot pickle a lambda.
    #[error(
        "a closure can start a child only by fork, not by {method}: a {method} child is a fresh \
         run of the program, which cannot receive what a closure captures; pass a plain fn and \
         its argument to process::Builder::spawn_fn instead"
    )]
    ClosureNeedsFork {
        /// The start method that was asked for.
        method: crate::StartMethod,
    },

    /// A spawned child could not get to its task: it could not read the
    /// argument, or it is not the same program as its parent.
    #[error("spawned child process {pid} could not start its task: {message}")]
    StartFailed {
        /// The child's process id.
        pid: i32,
        /// What went wrong, as the child saw it.
        message: String,
    },

    /// [`SharedMemory::create`](crate::SharedMemory::create) was given a
    /// name that a segment in `/dev/shm` has already (Python's
    /// `FileExistsError`).
    #[error(
        "a shared memory segment named {name:?} exists already: open it with \
         SharedMemory::open, or create yours under another name"
    )]
    NameExists {
        /// The name asked for.
        name: String,
    },

    /// [`SharedMemory::open`](crate::SharedMemory::open) found no segment
    /// of that name (Python's `FileNotFoundError`).
    #[error(
        "no shared memory segment is named {name:?}: check the name, and that the program \
         that creates it is running (a segment goes away with its last user)"
    )]
    NoSuchName {
        /// The name asked for.
        name: String,
    },

    /// [`SharedMemory::open`](crate::SharedMemory::open) found a segment
    /// whose last user has gone: it is being removed, and nobody may join
    /// it any more.
    #[error(
        "the shared memory segment {name:?} is being removed, because every program that \
         used it has closed it or ended: create a new one"
    )]
    SegmentRemoved {
        /// The segment's name.
        name: String,
    },

    /// A name that `/dev/shm` cannot hold, a size it cannot give (or has
    /// no room for), a segment that its creator never finished making, or
    /// one that [`SharedMemory::open`](crate::SharedMemory::open) refuses
    /// because another user could reach it.
    #[error("{what}")]
    BadSegment {
        /// What was wrong and what to do, as a sentence.
        what: String,
    },

    /// A [`SharedMemory`](crate::SharedMemory) view was asked for as a
    /// type whose size does not divide the segment's, or whose alignment
    /// its data cannot meet.
    #[error(
        "the segment's {bytes} bytes cannot be viewed as {type_name}s: its size must be a \
         multiple of {size} bytes and its alignment at most 64; create the segment with \
         such a size"
    )]
    BadView {
        /// The segment's data size in bytes.
        bytes: usize,
        /// The type asked for.
        type_name: &'static str,
        /// That type's size.
        size: usize,
    },

    /// An argument was out of its range, e.g. a pool of zero processes.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),

    /// A [`Semaphore`](crate::Semaphore) was released more often than it
    /// was acquired: a bounded one above its start value (Python's
    /// `ValueError: Semaphore released too many times`), any one above
    /// the most a semaphore counts. Its value is left as it was.
    #[error(
        "the semaphore was released too many times: its value would go above {max}, \
         the most it may count (a bounded semaphore may not go above its start value)"
    )]
    ReleasedTooManyTimes {
        /// The most the semaphore may count.
        max: u32,
    },

    /// The manager's server process is gone (its [`Manager`](crate::Manager)
    /// was dropped, its owner ended, or it was killed): a proxy call
    /// cannot reach the objects it held.
    #[error(
        "the manager's server process is gone (its Manager was dropped, the process that \
         started it ended, or it was killed), so the objects it held are lost"
    )]
    ManagerLost,

    /// A [`Client`](crate::connection::Client) could not get through the
    /// handshake with a [`Listener`](crate::connection::Listener) (Python's
    /// `AuthenticationError`): the keys differ, only one side has a key,
    /// the other side belongs to another user, or is not an mpcore
    /// listener or client.
    #[error("authentication with the other side failed: {reason}")]
    AuthenticationFailed {
        /// What went wrong, as a sentence.
        reason: String,
    },
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl Error {
    /// Wraps a failed system call.
    pub(crate) fn os(call: &'static str, errno: nix::errno::Errno) -> Self {
        Error::Os {
            call,
            errno: Errno::from_raw(errno as i32),
        }
    }

    /// Wraps a failed `call` that reported an `io::Error`: its errno when
    /// it has one, else its own words (an error of the standard library's
    /// own, such as an unexpected end of file, has no errno).
    pub(crate) fn io(call: &'static str, e: std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(errno) => Error::os(call, nix::errno::Errno::from_raw(errno)),
            None => Error::Io {
                call,
                reason: e.to_string(),
            },
        }
    }

    /// True when a wait ran out ([`Error::Timeout`]).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout(_))
    }

    /// True when a lock's owner died while holding it ([`Error::OwnerDied`]).
    pub fn is_owner_died(&self) -> bool {
        matches!(self, Error::OwnerDied)
    }

    /// True when the child panicked ([`Error::Panicked`]).
    pub fn is_panic(&self) -> bool {
        matches!(self, Error::Panicked { .. })
    }

    /// The panic message, when the child panicked.
    pub fn panic_message(&self) -> Option<&str> {
        match self {
            Error::Panicked { message, .. } => Some(message),
            _ => None,
        }
    }

    /// The exit code, when the child exited without a result.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Error::Exited { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The signal, when the child was killed by one.
    pub fn signal(&self) -> Option<Signal> {
        match self {
            Error::Signaled { signal, .. } => Some(*signal),
            _ => None,
        }
    }

    /// True when a pool worker died while holding the task
    /// ([`Error::WorkerDied`]).
    pub fn is_worker_died(&self) -> bool {
        matches!(self, Error::WorkerDied { .. })
    }
}

/// `WorkerDied`'s "signal SIGKILL", "exit code 3" or "status unknown".
fn exit_text(status: &Option<crate::ExitStatus>) -> String {
    status.map_or_else(|| "status unknown".to_owned(), |s| s.to_string())
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests;
