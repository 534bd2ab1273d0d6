//! Python's `multiprocessing.Pipe` and `multiprocessing.connection`:
//! two typed ends of one socket, a listener that programs started
//! separately connect to, and a wait over many of them. Above `wire/`,
//! whose packets it sends.
//!
//! - `mod.rs`: [`Connection`], one end, and [`Pipe`], which makes two;
//! - `listener.rs`: [`Listener`] and [`Client`], a named socket, with the
//!   same-user check;
//! - `auth.rs`: the handshake, an optional key checked both ways (HMAC);
//! - `wait.rs`: [`wait()`], for whichever of many is ready first;
//! - `tokio.rs` (feature `tokio`): `recv_async`, `send_async`,
//!   `accept_async`.
//!
//! A connection is one end of a Unix `SOCK_SEQPACKET` socket, the
//! private channel under a process's result and a pool's tasks: a
//! message is one packet (a large one a memfd that the packet carries,
//! which the sending end keeps and uses again: `wire/large.rs`), so it
//! arrives whole or not at all.

mod auth;
mod listener;
#[cfg(feature = "tokio")]
mod tokio;
mod wait;

use std::convert::Infallible;
use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::base::{Error, Result};
use crate::os::{deadline, poll, spin};
use crate::wire::channel;
use crate::wire::codec;
use crate::wire::handles::{Handle, travels_as_descriptor};
use crate::wire::large::{self, Inbox, Outbox};

pub use listener::{Client, Listener};
pub use wait::wait;

/// How long `recv` looks again before it sleeps in the kernel: a peer
/// that is running answers a round trip within less, and a sleep and a
/// wake-up cost a few microseconds in each process (`os/spin.rs`).
pub(super) const SPIN: Duration = Duration::from_micros(20);

/// How many receives go straight to sleep before one looks again: at
/// first, and after a look-again that found nothing (doubling up to
/// [`MAX_SKIP`]). So a connection looks again only once it has been busy,
/// and on a machine with more runnable processes than cores, where a
/// spinning receiver only keeps its peer from the core, it stops.
const FIRST_SKIP: u32 = 4;
const MAX_SKIP: u32 = 256;

/// One end of a [`Pipe`], or a connection that a [`Listener`] accepted
/// or a [`Client`] made: it sends `S` and receives `R` (Python's
/// `Connection`, whose ends hold any picklable object).
///
/// Messages of any size arrive whole and in order. When the other end
/// has gone (closed, exited, killed), [`recv`](Self::recv) returns what
/// it had sent and then [`Error::Disconnected`] (Python's `EOFError`),
/// and [`send`](Self::send) returns [`Error::Disconnected`] at once
/// (where a plain write would raise `SIGPIPE` and end the program).
///
/// An end goes to a forked child by moving it into the closure; to a
/// [`Spawn`](crate::StartMethod::Spawn) or
/// [`ForkServer`](crate::StartMethod::ForkServer) child in the argument
/// of [`process::Builder::spawn_fn`](crate::process::Builder::spawn_fn),
/// as a descriptor. It is not `Clone`: give each end to one process.
///
/// End of file comes when every copy of the other end is closed. As in
/// Python, a forked child holds a copy of every descriptor its parent
/// had at the fork, the parent's own end of the pipe included: in that
/// child, the parent's departure shows only when the child exits too, so
/// a forked child should stop on a message, not wait for end of file (it
/// dies with its parent in any case). A spawned or fork-server child
/// holds only the ends in its argument. The parent sees a child's end go
/// as soon as every process that held a copy of it has exited.
pub struct Connection<S, R> {
    fd: OwnedFd,
    /// Receives still to go without looking again first; after a look
    /// that found nothing, how many the next miss makes it.
    skip: AtomicU32,
    next_skip: AtomicU32,
    /// The memfds this end sends its large messages in, kept to be
    /// written again, and its mappings of those it was sent (`large.rs`).
    outbox: Outbox,
    inbox: Inbox,
    _types: PhantomData<fn(S) -> R>,
}

/// Makes the two ends of a new connection (Python's `multiprocessing.Pipe`).
///
/// ```
/// use mpcore::{Pipe, Process};
///
/// let (parent, child) = Pipe::new::<u32, String>()?;
/// let mut p = Process::spawn(move || {
///     let n = child.recv().unwrap();
///     child.send(&format!("got {n}")).unwrap();
/// })?;
/// parent.send(&42)?;
/// assert_eq!(parent.recv()?, "got 42");
/// p.join()?;
/// # Ok::<(), mpcore::Error>(())
/// ```
#[derive(Debug)]
pub struct Pipe;

impl Pipe {
    /// Two ends that both send and receive (Python's `Pipe()`, duplex):
    /// the first sends `S` and receives `R`, the second the other way
    /// round.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the socket pair cannot be made (no free
    /// descriptor).
    #[allow(clippy::new_ret_no_self)]
    pub fn new<S, R>() -> Result<(Connection<S, R>, Connection<R, S>)> {
        let (a, b) = channel::pair()?;
        Ok((Connection::from_fd(a), Connection::from_fd(b)))
    }

    /// Two ends of a one-way pipe (Python's `Pipe(duplex=False)`): the
    /// first only receives `T`s, the second only sends them. Neither has
    /// a `send`/`recv` for the other direction ([`Infallible`] has no
    /// serde), and the raw [`send_bytes`](Connection::send_bytes) of the
    /// receiving end returns [`Error::Disconnected`].
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn one_way<T>() -> Result<(Connection<Infallible, T>, Connection<T, Infallible>)> {
        let (rx, tx) = channel::pair()?;
        shut(&rx, nix::sys::socket::Shutdown::Write)?;
        shut(&tx, nix::sys::socket::Shutdown::Read)?;
        Ok((Connection::from_fd(rx), Connection::from_fd(tx)))
    }
}

fn shut(fd: &OwnedFd, how: nix::sys::socket::Shutdown) -> Result<()> {
    nix::sys::socket::shutdown(fd.as_raw_fd(), how).map_err(|e| Error::os("shutdown", e))
}

impl<S, R> Connection<S, R> {
    pub(crate) fn from_fd(fd: OwnedFd) -> Self {
        Connection {
            fd,
            // A new pipe's first receives sleep at once: an end used for
            // one exchange never spins.
            skip: AtomicU32::new(FIRST_SKIP),
            next_skip: AtomicU32::new(FIRST_SKIP),
            outbox: Outbox::default(),
            inbox: Inbox::default(),
            _types: PhantomData,
        }
    }

    /// A connection that a [`Listener`] accepted or a [`Client`] made,
    /// just after their handshake: its first receive looks again before it
    /// sleeps, as the peer has just shown that it runs (a client sends
    /// its request, a listener answers it, within microseconds). A look
    /// that finds nothing backs off as on any connection.
    pub(crate) fn from_handshake(fd: OwnedFd) -> Self {
        let connection = Connection::from_fd(fd);
        connection.skip.store(0, Relaxed);
        connection
    }

    /// Sends `bytes` as one message, whatever its size (Python's
    /// `send_bytes`): up to 64 KiB inside a packet, more through a memfd,
    /// so a sender of 100 MiB waits for no reader. This end keeps the
    /// memfds of messages up to 16 MiB (16 of them, 64 MiB in all, until
    /// it is dropped) and writes the next message into one the other end
    /// has finished reading, whose pages are there already; with none
    /// free, it makes a new one.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] when the other end has gone;
    /// [`Error::TooManyInFlight`], [`Error::Os`] when a large message
    /// cannot be made.
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<()> {
        large::send_bytes(self.fd.as_fd(), bytes, true, &self.outbox).map(|_| ())
    }

    /// The next message's bytes, waiting for one if `wait`; `Ok(None)`
    /// when nothing is there.
    pub(crate) fn take_bytes(&self, fd: BorrowedFd<'_>, wait: bool) -> Result<Option<Vec<u8>>> {
        large::recv_bytes(fd, wait, &self.inbox)
    }

    /// Waits for the next message and returns its bytes as they were
    /// sent by [`send_bytes`](Self::send_bytes) (Python's `recv_bytes`).
    /// This end maps each memfd the other end keeps once, and keeps the
    /// mapping (up to 32 of them, 128 MiB in all, until it is dropped)
    /// for the next message in it.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] once the other end has gone and everything
    /// it sent has been read; [`Error::NoFreeDescriptor`] for a large
    /// message when this process has no free descriptor.
    pub fn recv_bytes(&self) -> Result<Vec<u8>> {
        self.spin_then(
            |fd| self.take_bytes(fd, false),
            |fd| self.take_bytes(fd, true)?.ok_or(Error::Disconnected),
        )
    }

    /// Like [`recv_bytes`](Self::recv_bytes), but gives up with
    /// [`Error::Timeout`] after `timeout` with nothing to read.
    ///
    /// # Errors
    ///
    /// As [`recv_bytes`](Self::recv_bytes), and [`Error::Timeout`].
    pub fn recv_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>> {
        self.recv_within(timeout, |fd| self.take_bytes(fd, false))
    }

    /// Whether a message (or the other end's departure) is there to be
    /// read, waiting up to `timeout` for one; takes nothing (Python's
    /// `poll(timeout)`). A zero timeout only looks.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if `ppoll` fails.
    pub fn poll(&self, timeout: Duration) -> Result<bool> {
        let [ready] = poll::readable([self.fd.as_fd()], deadline::after(timeout))?;
        Ok(ready)
    }

    /// Closes this end (Python's `close`); dropping it does the same.
    /// The other end then reads what was sent and then
    /// [`Error::Disconnected`].
    pub fn close(self) {}

    /// Tries `take` (a receive that does not wait) for up to [`SPIN`],
    /// unless recent looks found nothing, then `wait` (one that does).
    fn spin_then<T>(
        &self,
        take: impl Fn(BorrowedFd<'_>) -> Result<Option<T>>,
        wait: impl FnOnce(BorrowedFd<'_>) -> Result<T>,
    ) -> Result<T> {
        let fd = self.fd.as_fd();
        let skip = self.skip.load(Relaxed);
        if skip > 0 {
            self.skip.store(skip - 1, Relaxed);
            return wait(fd);
        }
        match spin::until(Instant::now() + SPIN, || take(fd).transpose()) {
            Some(result) => {
                self.next_skip.store(FIRST_SKIP, Relaxed);
                result
            }
            None => {
                let next = self.next_skip.load(Relaxed);
                self.skip.store(next, Relaxed);
                self.next_skip.store((next * 2).min(MAX_SKIP), Relaxed);
                wait(fd)
            }
        }
    }

    /// Tries `take` until it finds a message, or `timeout` passes.
    fn recv_within<T>(
        &self,
        timeout: Duration,
        take: impl Fn(BorrowedFd<'_>) -> Result<Option<T>>,
    ) -> Result<T> {
        let until = deadline::after(timeout);
        loop {
            if let Some(message) = take(self.fd.as_fd())? {
                return Ok(message);
            }
            let [ready] = poll::readable([self.fd.as_fd()], until)?;
            if !ready {
                return Err(Error::Timeout(timeout));
            }
        }
    }
}

impl<S: Serialize + DeserializeOwned, R> Connection<S, R> {
    /// Sends `value` (Python's `send`). It is encoded and read back
    /// before it leaves, so a value the other end could not decode is an
    /// error here, and nothing is sent.
    ///
    /// # Errors
    ///
    /// [`Error::Codec`] when `value` does not encode or read back; as
    /// [`send_bytes`](Self::send_bytes) otherwise.
    pub fn send(&self, value: &S) -> Result<()> {
        let mut small = [0u8; 256];
        let encoded = codec::encode_in(value, &mut small)?;
        codec::check_decodes::<S>(&encoded)?;
        self.send_bytes(&encoded)
    }
}

impl<S, R: DeserializeOwned> Connection<S, R> {
    /// The next value, waiting for one if `wait`; `Ok(None)` when nothing
    /// is there.
    pub(crate) fn take(&self, fd: BorrowedFd<'_>, wait: bool) -> Result<Option<R>> {
        large::recv(fd, wait, &self.inbox)
    }

    /// Waits for the next value (Python's `recv`). On a busy connection
    /// it looks again for 20 µs before it sleeps, as long as such looks
    /// find something: a peer that is running answers sooner.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] once the other end has gone and everything
    /// it sent has been read; [`Error::Codec`] when a message is not an
    /// `R`.
    pub fn recv(&self) -> Result<R> {
        self.spin_then(
            |fd| self.take(fd, false),
            |fd| self.take(fd, true)?.ok_or(Error::Disconnected),
        )
    }

    /// Like [`recv`](Self::recv), but gives up with [`Error::Timeout`]
    /// after `timeout` with nothing to read. It looks first, so a zero
    /// timeout takes what is there.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv), and [`Error::Timeout`].
    pub fn recv_timeout(&self, timeout: Duration) -> Result<R> {
        self.recv_within(timeout, |fd| self.take(fd, false))
    }

    /// The next value if one is there, `None` if not; never waits.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    pub fn try_recv(&self) -> Result<Option<R>> {
        self.take(self.fd.as_fd(), false)
    }
}

impl<S, R> AsFd for Connection<S, R> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl<S, R> fmt::Debug for Connection<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("fd", &self.fd.as_raw_fd())
            .finish()
    }
}

impl<S, R> Handle for Connection<S, R> {
    const WHAT: &'static str = "Connection";

    fn memfd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn from_memfd(fd: OwnedFd, _: u64) -> Result<Self> {
        if !crate::os::fds::is_socket(fd.as_raw_fd()) {
            return Err(Error::InvalidArgument(
                "the descriptor received for a Connection is not a socket",
            ));
        }
        Ok(Connection::from_fd(fd))
    }
}

travels_as_descriptor!(Connection<Out, In>);
