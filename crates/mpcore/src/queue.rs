//! `Queue`: Python's `multiprocessing.Queue`, for processes and threads.

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::channel;
use crate::error::{Error, Result};
use crate::shm::Segment;

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

/// Both ends of the socket pair: `put` writes to one, `get` reads the
/// other; and the count of messages in between, for `qsize`.
struct Ends {
    tx: OwnedFd,
    rx: OwnedFd,
    count: Count,
}

/// How many messages have been put and not yet taken, in a shared mapping
/// (an [`AtomicI64`] at its start) that every forked copy of the queue
/// sees. The socket cannot say it: for a `SOCK_SEQPACKET` socket,
/// `ioctl(SIOCINQ)` gives the size of the next packet, not the number of
/// packets.
struct Count(Arc<Segment>);

impl Count {
    fn new() -> Result<Count> {
        Segment::new(size_of::<AtomicI64>(), align_of::<AtomicI64>()).map(Count)
    }

    fn get(&self) -> &AtomicI64 {
        // SAFETY: the segment is at least `size_of::<AtomicI64>()` bytes,
        // aligned for it, zero-filled at first (a valid `AtomicI64` of 0),
        // and lives as long as `self`. Every process that shares it only
        // ever touches it through this atomic, which is exactly what an
        // atomic in shared memory allows.
        unsafe { &*self.0.base().cast::<AtomicI64>() }
    }

    fn added(&self) {
        self.get().fetch_add(1, Ordering::SeqCst);
    }

    fn taken(&self) {
        self.get().fetch_sub(1, Ordering::SeqCst);
    }
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
        let count = Count::new()?;
        Ok(Queue {
            inner: Arc::new(Ends { tx, rx, count }),
            _item: PhantomData,
        })
    }

    /// Adds `item` at the back (Python's `q.put(item)`).
    ///
    /// # Errors
    ///
    /// [`Error::Codec`] when `item` cannot be serialized, [`Error::Os`] when
    /// the send fails.
    pub fn put(&self, item: T) -> Result<()> {
        channel::send(self.inner.tx.as_fd(), &item)?;
        self.inner.count.added();
        Ok(())
    }

    /// Adds `item` at the back if there is room now, or returns
    /// [`Error::Full`] at once (Python's `q.put_nowait(item)`, which raises
    /// `queue.Full`). Room means room in the socket's buffer (see above):
    /// a queue that no one reads fills after some hundreds of small
    /// messages.
    ///
    /// ```
    /// use mpcore::{Error, Queue};
    ///
    /// let q = Queue::new()?;
    /// let mut put = 0;
    /// loop {
    ///     match q.put_nowait(put) {
    ///         Ok(()) => put += 1,
    ///         Err(Error::Full) => break,
    ///         Err(other) => return Err(other),
    ///     }
    /// }
    /// assert_eq!(q.qsize(), put);
    /// assert_eq!(q.get()?, 0); // taking one makes room again
    /// q.put_nowait(put)?;
    /// # Ok::<(), mpcore::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Full`], [`Error::Codec`] when `item` cannot be serialized,
    /// [`Error::Os`] when the send fails.
    pub fn put_nowait(&self, item: T) -> Result<()> {
        let message = channel::encode(&item)?;
        if !channel::try_send_bytes(self.inner.tx.as_fd(), &message)? {
            return Err(Error::Full);
        }
        self.inner.count.added();
        Ok(())
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
        let item = channel::try_recv(self.inner.rx.as_fd())?.ok_or(Error::Empty)?;
        self.inner.count.taken();
        Ok(item)
    }
}

impl<T> Queue<T> {
    /// How many messages are in the queue: put and not yet taken, by any
    /// process (Python's `q.qsize()`).
    ///
    /// ```
    /// let q = mpcore::Queue::new()?;
    /// assert_eq!(q.qsize(), 0);
    /// q.put(String::from("a"))?;
    /// q.put(String::from("b"))?;
    /// assert_eq!(q.qsize(), 2);
    /// q.get()?;
    /// assert_eq!(q.qsize(), 1);
    /// # Ok::<(), mpcore::Error>(())
    /// ```
    ///
    /// Exact when no `put` or `get` is under way; one that is may or may
    /// not be counted yet, so with other processes at work it is a
    /// snapshot, as Python's is. A process killed between sending a
    /// message and counting it (or taking one and counting that) leaves
    /// the count off by one for good. Unlike Python's, it works on every
    /// system: the count lives in memory the processes share, not in a
    /// semaphore that macOS cannot read.
    pub fn qsize(&self) -> usize {
        // A `get` may count its message before the `put` that sent it
        // does: the count is then briefly -1.
        self.inner.count.get().load(Ordering::SeqCst).max(0) as usize
    }

    /// Whether no message is waiting right now (Python's `q.empty()`).
    /// Exact at the instant it looks (it asks the socket itself), and as
    /// in Python only a snapshot: another process may put or take a
    /// message the next moment.
    ///
    /// ```
    /// let q = mpcore::Queue::new()?;
    /// assert!(q.empty());
    /// q.put(1u8)?;
    /// assert!(!q.empty());
    /// # Ok::<(), mpcore::Error>(())
    /// ```
    pub fn empty(&self) -> bool {
        // Should the poll itself fail, the queue is unusable: say there is
        // nothing to take, which every `get` will then confirm with the error.
        !channel::ready_now(&[self.inner.rx.as_fd()]).is_ok_and(|ready| ready == [true])
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
        let item = self.wait_for_message(deadline, timeout, try_recv)?;
        self.inner.count.taken();
        Ok(item)
    }

    /// [`recv_until`](Self::recv_until), without the count.
    fn wait_for_message<R>(
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
        channel::send_parts(self.inner.tx.as_fd(), &[prefix, bytes])?;
        self.inner.count.added();
        Ok(())
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
