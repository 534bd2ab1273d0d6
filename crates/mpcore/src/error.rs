//! One error type for everything that can go wrong between processes.

use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::Signal;

/// What went wrong. Every message reads as a sentence, and `Debug` prints
/// that same sentence, so a `main` that returns `Result<(), mpcore::Error>`
/// shows the reader what happened, not a struct dump.
#[derive(thiserror::Error)]
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
    /// result.
    #[error("child process {pid} exited with code {code} without sending a result")]
    Exited {
        /// The child's process id.
        pid: i32,
        /// Its exit code.
        code: i32,
    },

    /// A system call failed.
    #[error("{call} failed: {errno}")]
    Os {
        /// The call, e.g. `"fork"`.
        call: &'static str,
        /// What the kernel said.
        errno: Errno,
    },

    /// The wait ran out before anything arrived.
    #[error("timed out after {0:?}")]
    Timeout(Duration),

    /// [`Queue::try_get`](crate::Queue::try_get) found nothing waiting.
    #[error("the queue is empty")]
    Empty,

    /// [`Queue::put_nowait`](crate::Queue::put_nowait) found no room: the
    /// socket's buffer is full until some process takes a message.
    #[error("the queue is full: wait for a reader to take a message, or use put, which waits")]
    Full,

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

    /// An argument was out of its range, e.g. a pool of zero processes.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl Error {
    /// Wraps a failed system call.
    pub(crate) fn os(call: &'static str, errno: Errno) -> Self {
        Error::Os { call, errno }
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
