//! The memory under a [`Queue`](crate::Queue): a ring of messages in one
//! memfd that every process holding the queue maps, a robust lock, and two
//! words to sleep on.
//!
//! # Where the bytes live
//!
//! The memfd is 2 GiB long, but it is *sparse*: a page takes memory only
//! once a message is written to it. A queue that holds a few small
//! messages uses a page or two; one that holds 1 GiB uses 1 GiB, and gives
//! it back as it is read (`fallocate(PUNCH_HOLE)`), keeping only the first
//! [`KEEP`] bytes warm for the next messages. Whenever the queue becomes
//! empty, the next message starts at the beginning again, in pages that
//! are already there.
//!
//! # Why a killed process cannot tear a message
//!
//! A message is a length and its bytes, written into free space behind
//! the tail. The positions of head and tail are two 32-bit numbers in one
//! 64-bit word, and a `put` or `get` takes effect with one store to that
//! word, after the bytes are in place. A producer killed before that store
//! leaves no message; one killed after it left a whole one. A consumer
//! killed before its store leaves the message for the next `get`; one
//! killed after it took the message with it, as in Python. The count of
//! messages is kept beside, and rebuilt from head and tail by whoever next
//! takes the lock after such a death ([`RawMutex::lock_repairing`]).

use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::fcntl::{FallocateFlags, fallocate};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

use crate::error::{Error, Result};
use crate::futex;
use crate::sync::{Deadline, RawMutex};

/// The ring's size. Positions fit in 32 bits.
const CAP: usize = 1 << 31;
/// The largest message a queue takes: small enough that a ring holding
/// under 1 GiB always has room for one more.
pub(crate) const MAX_MESSAGE: usize = 256 << 20;
/// The bytes at the start of the ring that stay in memory once written,
/// for the next messages: everything beyond is given back as it is read.
const KEEP: usize = 8 << 20;
/// While the queue is drained, what was read beyond [`KEEP`] is given back
/// in steps of this much.
const STEP: usize = 16 << 20;
/// The page before the ring: the lock, the positions, the wait words.
const HEADER: usize = 4096;
/// A message's length, before its bytes; this value instead says that the
/// rest of the ring is unused and the next message is at the start.
const WRAP: u64 = u64::MAX;
/// How long a sleeper sleeps at most before it looks again: a waker that
/// was killed between its change and its wake-up costs no more than this.
const SLICE: Duration = Duration::from_millis(100);

/// The shared page before the ring. Every field but the wait words is
/// read and written under `mutex`.
#[repr(C)]
struct Header {
    mutex: libc::pthread_mutex_t,
    /// The head's position (low 32 bits) and the tail's (high 32 bits).
    /// Equal: empty. One store of this word commits a `put` or a `get`.
    ends: AtomicU64,
    /// How many messages lie between head and tail.
    count: AtomicU64,
    /// The most messages the queue holds (`u64::MAX`: as many as fit).
    max_count: AtomicU64,
    /// The furthest position written since memory was last given back.
    high: AtomicU64,
    /// Below this position, what was read has been given back already.
    freed_to: AtomicU64,
    _line: [u8; 64],
    /// Bumped by every `put`; a `get` that finds nothing sleeps on it.
    items: AtomicU32,
    /// How many `get`s sleep on `items`.
    getters: AtomicU32,
    _line2: [u8; 64],
    /// Bumped by every `get`; a `put` that finds no room sleeps on it.
    space: AtomicU32,
    /// How many `put`s sleep on `space`.
    putters: AtomicU32,
}

const _: () = assert!(size_of::<Header>() <= HEADER);

/// How long an operation may wait.
#[derive(Clone, Copy)]
pub(crate) enum Wait {
    /// Not at all: `Full` or `Empty` at once.
    Never,
    /// Until this instant, then `Timeout(the duration)`.
    Until(Instant, Duration),
    Forever,
}

impl Wait {
    pub(crate) fn from_timeout(timeout: Duration) -> Wait {
        match Instant::now().checked_add(timeout) {
            Some(at) => Wait::Until(at, timeout),
            None => Wait::Forever,
        }
    }
}

/// One queue's ring, mapped in this process.
pub(crate) struct Ring {
    memfd: OwnedFd,
    base: NonNull<u8>,
    mutex: RawMutex,
}

// SAFETY: the mapping is shared memory meant for many processes; every
// access to it goes through atomics or under the process-shared mutex.
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

impl Ring {
    /// A new, empty ring that holds at most `max_count` messages.
    pub(crate) fn new(max_count: u64) -> Result<Ring> {
        let memfd = memfd_create("mpcore-queue", MFdFlags::MFD_CLOEXEC)
            .map_err(|e| Error::os("memfd_create", e))?;
        nix::unistd::ftruncate(&memfd, (HEADER + CAP) as i64)
            .map_err(|e| Error::os("ftruncate", e))?;
        // SAFETY: a fresh shared mapping of our own memfd, at an address of
        // the kernel's choice, overlaps nothing; checked before use.
        let base = unsafe {
            mmap(
                None,
                (HEADER + CAP)
                    .try_into()
                    .expect("the ring's size is not zero"),
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                memfd.as_fd(),
                0,
            )
        }
        .map_err(|e| Error::os("mmap", e))?;
        let base = base.cast::<u8>();
        // SAFETY: the header page is fresh, zeroed and page-aligned, nobody
        // else maps it yet, and it lives as long as the `Ring`, which
        // unmaps it only when dropped.
        let mutex = match unsafe { RawMutex::init(base.as_ptr()) } {
            Ok(mutex) => mutex,
            Err(e) => {
                // SAFETY: we mapped it just above and hand it out nowhere.
                let _ = unsafe { munmap(base.cast(), HEADER + CAP) };
                return Err(e);
            }
        };
        let ring = Ring { memfd, base, mutex };
        ring.header().max_count.store(max_count, Ordering::Relaxed);
        Ok(ring)
    }

    /// Maps a ring that another process made and sent as a descriptor
    /// (a spawned child's queue). Its lock and counts are already there.
    pub(crate) fn from_memfd(memfd: OwnedFd) -> Result<Ring> {
        let stat = nix::sys::stat::fstat(memfd.as_fd()).map_err(|e| Error::os("fstat", e))?;
        if usize::try_from(stat.st_size).ok() != Some(HEADER + CAP) {
            return Err(Error::InvalidArgument(
                "the memory received as a queue is not a queue's ring",
            ));
        }
        // SAFETY: a shared mapping of the memfd, as long as the memfd, at
        // an address of the kernel's choice, overlaps nothing; checked
        // before use.
        let base = unsafe {
            mmap(
                None,
                (HEADER + CAP)
                    .try_into()
                    .expect("the ring's size is not zero"),
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                memfd.as_fd(),
                0,
            )
        }
        .map_err(|e| Error::os("mmap", e))?
        .cast::<u8>();
        // SAFETY: the sender's `Ring::new` initialised the mutex at the
        // start of the header; the mapping lives as long as the `Ring`.
        let mutex = unsafe { RawMutex::at(base.as_ptr()) };
        Ok(Ring { memfd, base, mutex })
    }

    /// The memfd under the ring, to send to a spawned child.
    pub(crate) fn memfd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.memfd.as_fd()
    }

    fn header(&self) -> &Header {
        // SAFETY: the header page lives as long as `self`; its fields are
        // atomics, or the mutex, which is only used through `RawMutex`.
        unsafe { &*self.base.as_ptr().cast::<Header>() }
    }

    /// The first byte of the ring.
    fn data(&self) -> *mut u8 {
        // SAFETY: the mapping is HEADER + CAP bytes long.
        unsafe { self.base.as_ptr().add(HEADER) }
    }

    /// The most messages this ring holds.
    pub(crate) fn max_count(&self) -> u64 {
        self.header().max_count.load(Ordering::Relaxed)
    }

    /// How many messages it holds now (exact at the instant it is read).
    pub(crate) fn count(&self) -> u64 {
        self.header().count.load(Ordering::Acquire)
    }

    /// The pages of the ring that hold memory now, in bytes.
    pub(crate) fn resident_bytes(&self) -> Result<u64> {
        let stat = nix::sys::stat::fstat(self.memfd.as_fd()).map_err(|e| Error::os("fstat", e))?;
        Ok(stat.st_blocks as u64 * 512)
    }

    /// Takes the lock; after a holder's death, rebuilds the count first.
    fn lock(&self) -> Result<Locked<'_>> {
        self.mutex.lock_repairing(|| self.recount())?;
        Ok(Locked(self))
    }

    /// Counts the messages between head and tail again (under the lock).
    fn recount(&self) {
        let (head, tail) = self.ends();
        let mut at = head;
        let mut count = 0;
        while at != tail {
            match self.length_at(at) {
                WRAP => at = 0,
                len => {
                    at = (at + record(len as usize)) % CAP;
                    count += 1;
                }
            }
        }
        self.header().count.store(count, Ordering::Release);
    }

    fn ends(&self) -> (usize, usize) {
        let ends = self.header().ends.load(Ordering::Acquire);
        ((ends & 0xffff_ffff) as usize, (ends >> 32) as usize)
    }

    fn set_ends(&self, head: usize, tail: usize) {
        let ends = head as u64 | (tail as u64) << 32;
        self.header().ends.store(ends, Ordering::Release);
    }

    fn length_at(&self, at: usize) -> u64 {
        // SAFETY: `at` is a position of a record (8-aligned, below CAP),
        // within the mapping; read under the lock.
        unsafe { self.data().add(at).cast::<u64>().read() }
    }

    /// Where a record of `rec` bytes can go, with head and tail as they
    /// are; `None` when there is no room. Head and tail must never become
    /// equal by a `put`: that would read as empty.
    fn place(head: usize, tail: usize, rec: usize) -> Option<usize> {
        if head == tail {
            return Some(0).filter(|_| rec < CAP);
        }
        if tail > head {
            if rec < CAP - tail || (rec == CAP - tail && head != 0) {
                return Some(tail);
            }
            // Skip the end of the ring; start again at 0.
            return (rec < head).then_some(0);
        }
        (rec < head - tail).then_some(tail)
    }

    /// Adds a message made of `parts`, waiting for room as `wait` says.
    pub(crate) fn put(&self, parts: &[&[u8]], wait: Wait) -> Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > MAX_MESSAGE {
            return Err(Error::MessageTooLarge {
                len,
                max: MAX_MESSAGE,
            });
        }
        let rec = record(len);
        let header = self.header();
        loop {
            let locked = self.lock()?;
            let (head, tail) = self.ends();
            let room = (header.count.load(Ordering::Relaxed) < self.max_count())
                .then(|| Ring::place(head, tail, rec))
                .flatten();
            if let Some(at) = room {
                // SAFETY: `place` found `rec` free bytes at `at`, within
                // the ring and behind the tail: no reader looks there, and
                // we hold the lock, so no writer either.
                unsafe {
                    let mut to = self.data().add(at);
                    if at != tail {
                        self.data().add(tail).cast::<u64>().write(WRAP);
                    }
                    to.cast::<u64>().write(len as u64);
                    to = to.add(8);
                    for part in parts {
                        std::ptr::copy_nonoverlapping(part.as_ptr(), to, part.len());
                        to = to.add(part.len());
                    }
                }
                // The message is whole: now it counts. (Into an empty ring
                // it went to the start, which is then the head too.)
                let head = if head == tail { 0 } else { head };
                self.set_ends(head, (at + rec) % CAP);
                header.count.fetch_add(1, Ordering::Release);
                header.high.fetch_max((at + rec) as u64, Ordering::Relaxed);
                header.items.fetch_add(1, Ordering::Release);
                let sleeping = header.getters.load(Ordering::Acquire) > 0;
                drop(locked);
                if sleeping {
                    futex::wake(&header.items, 1);
                }
                return Ok(());
            }
            let seen = header.space.load(Ordering::Acquire);
            match wait {
                Wait::Never => return Err(Error::Full),
                Wait::Until(at, timeout) if Instant::now() >= at => {
                    return Err(Error::Timeout(timeout));
                }
                _ => {}
            }
            header.putters.fetch_add(1, Ordering::AcqRel);
            drop(locked);
            let slept = sleep(&header.space, seen, wait);
            header.putters.fetch_sub(1, Ordering::AcqRel);
            slept?;
        }
    }

    /// Takes the oldest message and hands its bytes to `read` (under the
    /// lock: `read` should only copy them), waiting for one as `wait` says.
    pub(crate) fn get<R>(&self, wait: Wait, read: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let header = self.header();
        let mut read = Some(read);
        loop {
            if header.count.load(Ordering::Acquire) == 0 {
                spin_for_items(header, wait);
            }
            let locked = self.lock()?;
            if header.count.load(Ordering::Relaxed) > 0 {
                let (mut head, tail) = self.ends();
                let mut len = self.length_at(head);
                if len == WRAP {
                    // The rest of the ring was skipped: what was read up
                    // to here may go back.
                    self.give_back_wrapped(head, tail);
                    head = 0;
                    len = self.length_at(0);
                }
                let len = len as usize;
                // SAFETY: a committed record: `len` bytes after its length,
                // within the ring (a `put` placed it whole), and nobody
                // writes there while we hold the lock.
                let bytes = unsafe { std::slice::from_raw_parts(self.data().add(head + 8), len) };
                let value = (read.take().expect("read is called once"))(bytes);
                let next = (head + record(len)) % CAP;
                if next == tail {
                    // Empty now: the next message starts at the beginning,
                    // in warm pages, and what lies beyond them goes back.
                    self.set_ends(0, 0);
                    self.give_back_all();
                } else {
                    self.set_ends(next, tail);
                    self.give_back_read(head, next, tail);
                }
                let left = header.count.fetch_sub(1, Ordering::AcqRel) - 1;
                header.space.fetch_add(1, Ordering::Release);
                let putters = header.putters.load(Ordering::Acquire) > 0;
                let getters = left > 0 && header.getters.load(Ordering::Acquire) > 0;
                drop(locked);
                if putters {
                    futex::wake(&header.space, i32::MAX);
                }
                if getters {
                    // In case the sleeper woken for the message we took was
                    // killed before it got here.
                    futex::wake(&header.items, 1);
                }
                return Ok(value);
            }
            let seen = header.items.load(Ordering::Acquire);
            match wait {
                Wait::Never => return Err(Error::Empty),
                Wait::Until(at, timeout) if Instant::now() >= at => {
                    return Err(Error::Timeout(timeout));
                }
                _ => {}
            }
            header.getters.fetch_add(1, Ordering::AcqRel);
            drop(locked);
            let slept = sleep(&header.items, seen, wait);
            header.getters.fetch_sub(1, Ordering::AcqRel);
            slept?;
        }
    }

    /// Gives back the pages read before the new head `to` (a record from
    /// `from` was just taken), in steps of [`STEP`], beyond the first
    /// [`KEEP`] bytes, and never at or past a `tail` that has come round
    /// behind the head: from there on, the bytes are messages again.
    fn give_back_read(&self, from: usize, to: usize, tail: usize) {
        let header = self.header();
        let freed = (header.freed_to.load(Ordering::Relaxed) as usize).max(KEEP);
        if to > from && to >= freed + STEP {
            let behind_tail = if tail < to { tail } else { 0 };
            self.punch(freed.max(behind_tail), to);
            header.freed_to.store(to as u64, Ordering::Relaxed);
        }
    }

    /// The head reached the end of the ring at `end` and goes on at the
    /// start, where the messages up to `tail` lie: gives back what was read
    /// up to `end`.
    fn give_back_wrapped(&self, end: usize, tail: usize) {
        let header = self.header();
        let freed = (header.freed_to.load(Ordering::Relaxed) as usize).max(KEEP);
        self.punch(freed.max(tail), end);
        header.freed_to.store(0, Ordering::Relaxed);
    }

    /// The queue is empty: gives back every page beyond the first [`KEEP`]
    /// bytes that was written since the last time.
    fn give_back_all(&self) {
        let header = self.header();
        let high = header.high.load(Ordering::Relaxed) as usize;
        if high > KEEP {
            self.punch(KEEP, high);
        }
        header.high.store(high.min(KEEP) as u64, Ordering::Relaxed);
        header.freed_to.store(0, Ordering::Relaxed);
    }

    /// Frees the whole pages of the ring between positions `from` and `to`.
    fn punch(&self, from: usize, to: usize) {
        let from = from.next_multiple_of(4096);
        let to = to.min(CAP) / 4096 * 4096;
        if to > from {
            // Failing only frees less memory: nothing to report.
            let _ = fallocate(
                self.memfd.as_fd(),
                FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
                (HEADER + from) as i64,
                (to - from) as i64,
            );
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: we mapped exactly HEADER + CAP bytes at `base`, and this
        // is the last handle in this process (it is dropped through the
        // queue's Arc): nothing here uses the pages any more.
        let _ = unsafe { munmap(self.base.cast(), HEADER + CAP) };
    }
}

/// Holds the ring's lock; unlocks when dropped.
struct Locked<'a>(&'a Ring);

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // Only this thread took it, within one call: an unlock fails only
        // if memory was corrupted, and then it must not pass unnoticed.
        if let Err(e) = self.0.mutex.unlock() {
            log::error!("mpcore: a queue's lock could not be released: {e}");
        }
    }
}

/// A record's size: its length word and its bytes, rounded up to 8.
fn record(len: usize) -> usize {
    (8 + len).next_multiple_of(8)
}

/// How long a `get` looks again at an empty queue before it sleeps: a
/// producer that is running puts its next message within microseconds,
/// and falling asleep and being woken costs more than that.
const SPIN: Duration = Duration::from_micros(20);

fn spin_for_items(header: &Header, wait: Wait) {
    let mut until = Instant::now() + SPIN;
    match wait {
        Wait::Never => return,
        Wait::Until(at, _) => until = until.min(at),
        Wait::Forever => {}
    }
    while header.count.load(Ordering::Acquire) == 0 && Instant::now() < until {
        for _ in 0..64 {
            std::hint::spin_loop();
        }
    }
}

/// Sleeps on `word` while it still reads `seen`, at most [`SLICE`] and
/// not past the wait's deadline.
fn sleep(word: &AtomicU32, seen: u32, wait: Wait) -> Result<()> {
    let slice = Instant::now() + SLICE;
    let until = match wait {
        Wait::Until(at, _) => at.min(slice),
        _ => slice,
    };
    let deadline = Deadline::after(until.saturating_duration_since(Instant::now()))?;
    match futex::wait(word, seen, deadline) {
        Ok(())
        | Err(nix::errno::Errno::EAGAIN)
        | Err(nix::errno::Errno::EINTR)
        | Err(nix::errno::Errno::ETIMEDOUT) => Ok(()),
        Err(e) => Err(Error::os("futex", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn place_never_lets_the_tail_catch_the_head() {
        assert_eq!(Ring::place(0, 0, 16), Some(0));
        assert_eq!(Ring::place(0, CAP - 16, 16), None);
        assert_eq!(Ring::place(8, CAP - 16, 16), Some(CAP - 16));
        assert_eq!(Ring::place(16, CAP - 8, 16), None);
        assert_eq!(Ring::place(24, CAP - 8, 16), Some(0));
        assert_eq!(Ring::place(64, 32, 24), Some(32));
        assert_eq!(Ring::place(64, 32, 32), None);
    }

    #[test]
    fn a_holder_that_died_mid_put_left_no_message_and_a_working_ring() {
        let ring = Ring::new(u64::MAX).unwrap();
        ring.put(&[b"first"], Wait::Never).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                // Half a put, then the thread ends holding the lock: bytes
                // behind the tail and a count bumped, but no commit.
                let locked = ring.lock().unwrap();
                // SAFETY: position 16 is free space within the ring, and
                // we hold the lock.
                unsafe { ring.data().add(16).cast::<u64>().write(3) };
                ring.header().count.fetch_add(1, Ordering::Relaxed);
                std::mem::forget(locked);
            });
        });
        // The next locker finds the owner dead and counts again.
        let first = ring.get(Wait::Never, <[u8]>::to_vec).unwrap();
        assert_eq!(first, b"first");
        assert_eq!(ring.count(), 0);
        assert!(matches!(
            ring.get(Wait::Never, <[u8]>::to_vec),
            Err(Error::Empty)
        ));
        ring.put(&[b"second"], Wait::Never).unwrap();
        assert_eq!(ring.get(Wait::Never, <[u8]>::to_vec).unwrap(), b"second");
    }
}
