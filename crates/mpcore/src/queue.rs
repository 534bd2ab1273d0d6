//! `Queue`: Python's `multiprocessing.Queue`, for processes and threads.

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::channel;
use crate::error::{Error, Result};

/// A first-in first-out queue that any number of processes and threads may
/// `put` to and `get` from at once, Python's `multiprocessing.Queue`.
///
/// Make it before [`Process::spawn`](crate::Process::spawn) and move a
/// clone into each child: after the fork, parent and child hold the same
/// queue. Every message is delivered whole to exactly one `get`.
///
/// ```
/// use mpcore::{Process, Queue};
///
/// let q = Queue::new()?;
/// let child_q = q.clone();
/// let mut p = Process::spawn(move || child_q.put(String::from("hello")).is_ok())?;
/// assert_eq!(q.get()?, "hello");
/// assert!(p.join()?);
/// # Ok::<(), mpcore::Error>(())
/// ```
///
/// Unlike Python's, whose `put` hands the item to a feeder thread and
/// returns at once, `put` here writes to the socket itself: it returns when
/// the message is in the kernel's buffer, and waits while that buffer is
/// full until some process `get`s. How many messages fit depends on the
/// machine's `net.core.wmem_max`: about 280 small ones with the common
/// 208 KiB, about 10,000 with 4 MiB. Messages over 32 KiB travel as a memfd
/// and take only one small slot each, so a child can put a large result and
/// exit before anyone reads it.
pub struct Queue<T> {
    inner: Arc<Ends>,
    _item: PhantomData<fn(T) -> T>,
}

/// Both ends of the socket pair: `put` writes to one, `get` reads the other.
struct Ends {
    tx: OwnedFd,
    rx: OwnedFd,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            inner: Arc::clone(&self.inner),
            _item: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("tx", &self.inner.tx)
            .field("rx", &self.inner.rx)
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// An empty queue (Python's `mp.Queue()`).
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the socket pair cannot be made (too many open files).
    pub fn new() -> Result<Self> {
        let (tx, rx) = channel::pair()?;
        channel::grow_send_buffer(tx.as_fd());
        Ok(Queue {
            inner: Arc::new(Ends { tx, rx }),
            _item: PhantomData,
        })
    }

    /// Adds `item` at the back (Python's `q.put(item)`).
    ///
    /// # Errors
    ///
    /// [`Error::Codec`] when `item` cannot be serialized, or when its
    /// encoding would not read back as a `T` (a `#[serde(untagged)]` enum,
    /// `skip_serializing_if`, `serde_json::Value`: postcard, mpcore's format,
    /// is not self-describing); then nothing is sent. [`Error::Os`] when
    /// the send fails.
    pub fn put(&self, item: T) -> Result<()> {
        channel::send_as::<T, T>(self.inner.tx.as_fd(), &item)
    }

    /// Removes and returns the item at the front, waiting for one as long as
    /// it takes (Python's `q.get()`).
    ///
    /// On an empty queue it looks again for up to 20 µs before it sleeps:
    /// a producer that is running is seldom further behind than that, and
    /// falling asleep and being woken costs more.
    pub fn get(&self) -> Result<T> {
        self.recv_until(None, Duration::MAX, channel::try_recv)
    }

    /// Like [`get`](Self::get), but after `timeout` with nothing to take,
    /// returns [`Error::Timeout`] (Python's `q.get(timeout=...)`, which
    /// raises `queue.Empty`). Never earlier, for any duration.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.recv_until(channel::deadline_after(timeout), timeout, channel::try_recv)
    }

    /// Takes an item if one is waiting, or returns [`Error::Empty`] at once
    /// (Python's `q.get_nowait()`).
    pub fn try_get(&self) -> Result<T> {
        channel::try_recv(self.inner.rx.as_fd())?.ok_or(Error::Empty)
    }
}

/// How long `get` keeps looking at an empty queue before it sleeps, and
/// how many spin-loop pauses it makes between looks.
const SPIN: Duration = Duration::from_micros(20);
const SPIN_PAUSES: u32 = 64;

impl<T> Queue<T> {
    /// Takes one message with `try_recv`, waiting for one until `deadline`
    /// (`None`: for ever), then [`Error::Timeout`] with `timeout`.
    fn recv_until<R>(
        &self,
        deadline: Option<Instant>,
        timeout: Duration,
        try_recv: impl Fn(BorrowedFd<'_>) -> Result<Option<R>>,
    ) -> Result<R> {
        let rx = self.inner.rx.as_fd();
        if let Some(item) = try_recv(rx)? {
            return Ok(item);
        }
        // A producer that is running sends its next item within a few
        // microseconds, and going to sleep and being woken costs more than
        // that (on a virtual machine, far more): look again for a little
        // while first.
        let spin_until = Instant::now() + SPIN;
        let spin_until = deadline.map_or(spin_until, |d| d.min(spin_until));
        while Instant::now() < spin_until {
            for _ in 0..SPIN_PAUSES {
                std::hint::spin_loop();
            }
            if let Some(item) = try_recv(rx)? {
                return Ok(item);
            }
        }
        loop {
            // Another reader may take the packet between the poll and the
            // recv; then we simply wait again.
            if let Some(item) = try_recv(rx)? {
                return Ok(item);
            }
            if channel::wait_readable([rx], deadline)? == [false] {
                return match try_recv(rx)? {
                    Some(item) => Ok(item),
                    None => Err(Error::Timeout(timeout)),
                };
            }
        }
    }
}

impl Queue<Vec<u8>> {
    /// Puts `bytes` as one message, the same message that
    /// `put(bytes.to_vec())` would put, but carried as bytes: no copy into
    /// a `Vec` first and no serde call per byte. Python's `q.put(b"...")`.
    ///
    /// ```
    /// use mpcore::Queue;
    ///
    /// let q: Queue<Vec<u8>> = Queue::new()?;
    /// q.put_bytes(b"hello")?;
    /// q.put(b"world".to_vec())?;
    /// assert_eq!(q.get_bytes()?, b"hello");
    /// assert_eq!(q.get()?, b"world"); // both ways mix freely
    /// # Ok::<(), mpcore::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the send fails.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<()> {
        let mut prefix = [0u8; 10];
        let prefix = varint(bytes.len() as u64, &mut prefix);
        channel::send_parts(self.inner.tx.as_fd(), &[prefix, bytes])
    }

    /// Like [`get`](Self::get), but reads the bytes as bytes (one copy out
    /// of the kernel, no serde call per byte). Takes messages put by
    /// [`put_bytes`](Self::put_bytes) or by `put`.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get), and [`Error::Codec`] for a message that is
    /// not a byte string.
    pub fn get_bytes(&self) -> Result<Vec<u8>> {
        self.recv_until(None, Duration::MAX, channel::try_recv_byte_string)
    }
}

/// `n` as postcard writes a length: LEB128, 7 bits a byte, low bits first.
fn varint(mut n: u64, buf: &mut [u8; 10]) -> &[u8] {
    let mut i = 0;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            buf[i] = byte;
            return &buf[..=i];
        }
        buf[i] = byte | 0x80;
        i += 1;
    }
}
