//! `Queue`: Python's `multiprocessing.Queue`, for processes and threads.
//!
//! - `mod.rs` (this file): [`Queue`], what a message is (serde bytes, or
//!   raw bytes for `put_bytes`), and the limits;
//! - `ring.rs`: the ring in shared memory that holds the messages, its two
//!   locks and its invariants;
//! - `layout.rs`: where in the ring each message goes, so that `put`
//!   waits only when the ring is full;
//! - `sleepers.rs`: where producers and consumers sleep, and who wakes them;
//! - `joinable.rs`: [`JoinableQueue`], a queue that counts the items not
//!   yet marked done.

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::base::{Error, Result};
use crate::wire::codec;
use crate::wire::handles::{Handle, travels_as_descriptor};
pub use joinable::JoinableQueue;
use ring::Ring;

use crate::os::deadline::Wait;

mod joinable;
mod layout;
mod ring;
mod sleepers;

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
/// # What it holds, and where
///
/// As in Python, `put` never waits for a reader: fill the queue first and
/// start the consumers later, if you like. The messages wait in shared
/// memory (a memfd that every holder of the queue maps), which takes
/// memory only as messages wait and gives it back as they are read. `put`
/// waits only when the queue's 2 GiB are full: when the messages waiting
/// take more than 1 GiB of them (each its bytes rounded up to 8, and 8
/// more), however they are cut and however far the readers have read
/// (a reader that took a few messages and stopped costs no room); or,
/// for a [`bounded`](Self::bounded) queue, when it holds its most
/// messages. A message may be up to 256 MiB.
///
/// Python's `put` hands the item to a feeder thread, and a child waits at
/// exit until that thread has written everything into a pipe, which is why
/// its docs warn against joining a child before draining the queue. Here
/// `put` has written the message into the shared memory when it returns:
/// a child may put and exit at once, and its messages stay in the queue
/// for whoever reads them.
///
/// A process killed in the middle of a `put` leaves the whole message or
/// none of it; one killed in the middle of a `get` takes at most the
/// message it was taking. Either way the queue goes on working for
/// everyone else (it is guarded by a robust lock, and every change takes
/// effect with one store: see the docs of `ring.rs`).
pub struct Queue<T> {
    ring: Arc<Ring>,
    _item: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            ring: Arc::clone(&self.ring),
            _item: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("qsize", &self.ring.count())
            .finish_non_exhaustive()
    }
}

/// A queue travels to a spawned child as its memfd's descriptor (see
/// [`process::Builder::spawn_fn`](crate::process::Builder::spawn_fn)); it
/// serializes nowhere else.
impl<T> Handle for Queue<T> {
    const WHAT: &'static str = "Queue";

    fn memfd(&self) -> BorrowedFd<'_> {
        self.ring.memfd()
    }

    fn from_memfd(memfd: OwnedFd, _: u64) -> Result<Self> {
        Ok(Queue {
            ring: Arc::new(Ring::from_memfd(memfd)?),
            _item: PhantomData,
        })
    }
}

travels_as_descriptor!(Queue<T>);

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// An empty queue (Python's `mp.Queue()`).
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when its memory cannot be made or mapped (too many
    /// open files, say).
    pub fn new() -> Result<Self> {
        Queue::with_ring(Ring::new(u64::MAX)?)
    }

    /// An empty queue that holds at most `maxsize` messages (Python's
    /// `mp.Queue(maxsize)`): when it is full, `put` waits for a `get`.
    ///
    /// ```
    /// use mpcore::{Error, Queue};
    ///
    /// let q = Queue::bounded(2)?;
    /// q.put(1)?;
    /// q.put(2)?;
    /// assert!(matches!(q.try_put(3), Err(Error::Full)));
    /// assert_eq!(q.get()?, 1);
    /// q.try_put(3)?;
    /// # Ok::<(), mpcore::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for 0 (Python takes 0 for "no bound": use
    /// [`new`](Self::new)), and as [`new`](Self::new).
    pub fn bounded(maxsize: usize) -> Result<Self> {
        if maxsize == 0 {
            return Err(Error::InvalidArgument(
                "a bounded queue holds at least one message; Queue::new() has no bound",
            ));
        }
        Queue::with_ring(Ring::new(maxsize as u64)?)
    }

    fn with_ring(ring: Ring) -> Result<Self> {
        Ok(Queue {
            ring: Arc::new(ring),
            _item: PhantomData,
        })
    }

    /// Adds `item` at the back (Python's `q.put(item)`). Returns as soon
    /// as the message is in the queue; waits only while the queue is full.
    ///
    /// # Errors
    ///
    /// [`Error::Codec`] when `item` cannot be serialized, or when its
    /// encoding would not read back as a `T` (a `#[serde(untagged)]` enum,
    /// `skip_serializing_if`, `serde_json::Value`: postcard, mpcore's format,
    /// is not self-describing); then nothing is sent.
    /// [`Error::MessageTooLarge`] over 256 MiB.
    pub fn put(&self, item: T) -> Result<()> {
        self.put_with(&item, Wait::Forever)
    }

    /// Like [`put`](Self::put), but when the queue stays full for
    /// `timeout`, gives up with [`Error::Timeout`] (Python's
    /// `q.put(item, timeout=...)`, which raises `queue.Full`). It looks
    /// first, so a zero timeout puts into a queue that has room.
    ///
    /// # Errors
    ///
    /// As [`put`](Self::put), and [`Error::Timeout`].
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<()> {
        self.put_with(&item, Wait::from_timeout(timeout))
    }

    /// Adds `item` if the queue has room, or returns [`Error::Full`] at
    /// once (Python's `q.put_nowait(item)`).
    ///
    /// # Errors
    ///
    /// As [`put`](Self::put), and [`Error::Full`].
    #[doc(alias = "put_nowait")]
    pub fn try_put(&self, item: T) -> Result<()> {
        self.put_with(&item, Wait::Never)
    }

    fn put_with(&self, item: &T, wait: Wait) -> Result<()> {
        // A small message is encoded on the stack: no allocation, which
        // in a freshly forked child would also copy the allocator's pages.
        let mut small = [0u8; 256];
        let large;
        let encoded = match postcard::to_slice(item, &mut small) {
            Ok(encoded) => &*encoded,
            Err(_) => {
                large = codec::encode(item)?;
                &large[..]
            }
        };
        codec::check_decodes::<T>(encoded)?;
        self.ring.put(&[encoded], wait)
    }

    /// Removes and returns the item at the front, waiting for one as long as
    /// it takes (Python's `q.get()`).
    ///
    /// On an empty queue it looks again for up to 20 µs before it sleeps:
    /// a producer that is running is seldom further behind than that, and
    /// falling asleep and being woken costs more.
    ///
    /// # Errors
    ///
    /// [`Error::Codec`] if the message cannot be decoded as a `T` (its
    /// `Deserialize` refused it).
    pub fn get(&self) -> Result<T> {
        self.get_with(Wait::Forever)
    }

    /// Like [`get`](Self::get), but after `timeout` with nothing to take,
    /// returns [`Error::Timeout`] (Python's `q.get(timeout=...)`, which
    /// raises `queue.Empty`). Never earlier, for any duration; and it looks
    /// first, so a zero timeout takes what is there.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get), and [`Error::Timeout`].
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_with(Wait::from_timeout(timeout))
    }

    /// Takes an item if one is waiting, or returns [`Error::Empty`] at once
    /// (Python's `q.get_nowait()`).
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get), and [`Error::Empty`].
    #[doc(alias = "get_nowait")]
    pub fn try_get(&self) -> Result<T> {
        self.get_with(Wait::Never)
    }

    fn get_with(&self, wait: Wait) -> Result<T> {
        let message = self.ring.get(wait, Message::copy)?;
        codec::decode(message.bytes())
    }

    /// How many messages the queue holds now (Python's `q.qsize()`). Exact
    /// at the instant it is read, which may be out of date by the time
    /// you look at it, as in Python.
    pub fn qsize(&self) -> usize {
        self.ring.count() as usize
    }

    /// Whether the queue holds nothing now (Python's `q.empty()`); as
    /// [`qsize`](Self::qsize), true only at that instant.
    pub fn empty(&self) -> bool {
        self.ring.count() == 0
    }

    /// Whether a [`bounded`](Self::bounded) queue holds its most messages
    /// now (Python's `q.full()`).
    pub fn full(&self) -> bool {
        self.ring.count() >= self.ring.max_count()
    }

    /// The bytes of memory that the queue's waiting messages take now:
    /// it grows as messages wait and shrinks as they are read, down to a
    /// few MiB kept for the next ones.
    pub fn memory_used(&self) -> Result<u64> {
        self.ring.resident_bytes()
    }
}

/// A message copied out of the ring: on the stack when it is small.
// The small case is large on purpose: it lives on the stack for one `get`,
// and boxing it would be the very allocation it is there to save.
#[allow(clippy::large_enum_variant)]
enum Message {
    Small([u8; 256], usize),
    Large(Vec<u8>),
}

impl Message {
    fn copy(bytes: &[u8]) -> Message {
        if bytes.len() <= 256 {
            let mut small = [0u8; 256];
            small[..bytes.len()].copy_from_slice(bytes);
            Message::Small(small, bytes.len())
        } else {
            Message::Large(bytes.to_vec())
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Message::Small(bytes, len) => &bytes[..*len],
            Message::Large(bytes) => bytes,
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
    /// [`Error::MessageTooLarge`] over 256 MiB.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<()> {
        let mut prefix = [0u8; 10];
        let prefix = codec::length(bytes.len() as u64, &mut prefix);
        self.ring.put(&[prefix, bytes], Wait::Forever)
    }

    /// Like [`get`](Self::get), but reads the bytes as bytes (one copy out
    /// of the shared memory, no serde call per byte). Takes messages put by
    /// [`put_bytes`](Self::put_bytes) or by `put`.
    ///
    /// # Errors
    ///
    /// [`Error::Codec`] for a message that is not a byte string.
    pub fn get_bytes(&self) -> Result<Vec<u8>> {
        self.ring.get(Wait::Forever, |message| {
            byte_string(message).map(<[u8]>::to_vec)
        })?
    }
}

/// The bytes of a postcard byte string: a LEB128 length, then the bytes.
fn byte_string(message: &[u8]) -> Result<&[u8]> {
    let (len, skip) = codec::read_length(message).ok_or_else(not_a_byte_string)?;
    match message.get(skip..) {
        Some(rest) if rest.len() as u64 == len => Ok(rest),
        _ => Err(not_a_byte_string()),
    }
}

fn not_a_byte_string() -> Error {
    Error::Codec {
        action: "decode",
        reason: "the message is not a byte string".to_owned(),
    }
}
