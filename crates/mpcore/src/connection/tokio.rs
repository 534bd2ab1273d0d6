//! With the cargo feature `tokio`: a [`Connection`]'s receive and send,
//! and a [`Listener`]'s accept, as futures on tokio's [`AsyncFd`], so
//! one task can serve thousands of connections without a thread each.
//!
//! Each call first tries without waiting; only when it must wait does it
//! register a copy of the descriptor with the runtime's reactor, for the
//! length of the call.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::{Connection, Listener};
use crate::base::{Error, Result};
use crate::wire::{codec, large};

/// `fd`, registered with the current runtime for `interest`. (tokio
/// 1.54 deprecates `with_interest` for a type that might hand out a
/// descriptor it does not own; an `OwnedFd` owns its own, and the call
/// works on every tokio 1.)
#[allow(deprecated)]
fn register(fd: BorrowedFd<'_>, interest: Interest) -> Result<AsyncFd<OwnedFd>> {
    let copy = fd.try_clone_to_owned().map_err(|e| Error::io("dup", e))?;
    AsyncFd::with_interest(copy, interest).map_err(|e| Error::io("epoll_ctl", e))
}

/// Tries `attempt` until it gives something, waiting for `interest` on
/// `fd` between tries.
async fn until_done<T>(
    fd: BorrowedFd<'_>,
    interest: Interest,
    mut attempt: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    if let Some(done) = attempt()? {
        return Ok(done);
    }
    let registered = register(fd, interest)?;
    loop {
        let mut guard = registered
            .ready(interest)
            .await
            .map_err(|e| Error::io("epoll_wait", e))?;
        if let Some(done) = attempt()? {
            return Ok(done);
        }
        guard.clear_ready();
    }
}

impl<S, R: DeserializeOwned> Connection<S, R> {
    /// [`recv`](Self::recv) as a future: it waits on the tokio runtime's
    /// reactor, not in a thread of its own. Must run inside a tokio
    /// runtime.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv); [`Error::Os`] when the descriptor cannot
    /// be registered with the runtime.
    pub async fn recv_async(&self) -> Result<R> {
        until_done(self.as_fd(), Interest::READABLE, || {
            self.take(self.as_fd(), false)
        })
        .await
    }
}

impl<S, R> Connection<S, R> {
    /// [`recv_bytes`](Self::recv_bytes) as a future.
    ///
    /// # Errors
    ///
    /// As [`recv_async`](Self::recv_async).
    pub async fn recv_bytes_async(&self) -> Result<Vec<u8>> {
        until_done(self.as_fd(), Interest::READABLE, || {
            self.take_bytes(self.as_fd(), false)
        })
        .await
    }
}

impl<S: Serialize + DeserializeOwned, R> Connection<S, R> {
    /// [`send`](Self::send) as a future: when the socket is full, it
    /// waits on the runtime's reactor until the other end reads.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub async fn send_async(&self, value: &S) -> Result<()> {
        let encoded = codec::encode(value)?;
        codec::check_decodes::<S>(&encoded)?;
        until_done(self.as_fd(), Interest::WRITABLE, || {
            Ok(large::send_bytes(self.as_fd(), &encoded, false, &self.outbox)?.then_some(()))
        })
        .await
    }
}

impl Listener {
    /// [`accept`](Self::accept) as a future. The handshake of a client
    /// that is let in runs in the call, bounded by the handshake timeout.
    ///
    /// # Errors
    ///
    /// As [`accept`](Self::accept).
    pub async fn accept_async<S, R>(&self) -> Result<Connection<S, R>> {
        until_done(self.as_fd(), Interest::READABLE, || self.try_accept()).await
    }
}
