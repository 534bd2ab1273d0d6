//! One error type for everything that can go wrong between processes.

use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::Signal;

/// What went wrong. Every message reads as a sentence, so `main` can return
/// `Result<(), mpcore::Error>` and the reader sees what happened.
#[derive(Debug, thiserror::Error)]
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

    /// Every process that could have sent a message has gone away.
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
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
