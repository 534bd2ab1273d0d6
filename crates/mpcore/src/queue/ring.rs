//! The memory under a [`Queue`](crate::Queue): a ring of messages in one
//! memfd that every process holding the queue maps, a robust lock for the
//! producers and one for the consumers, and words to sleep on
//! (`sleepers.rs`).
//!
//! # Invariants
//!
//! 1. A message is in the ring whole or not at all: a reader never sees
//!    part of one, even when its writer is killed mid-`put`.
//! 2. A message is taken by exactly one `get`: none is lost while it
//!    waits, none is read twice, even when a reader is killed mid-`get`.
//! 3. The tail never catches the head: a full ring never reads as empty.
//! 4. Only the producers' lock moves the tail and only the consumers'
//!    lock moves the head, each with one store of one 64-bit word.
//! 5. A ring that was read gives back its pages beyond the first [`KEEP`],
//!    and only pages that hold no message.
//! 6. A `put` finds room until the ring is full: it waits only with at
//!    least 1 GiB of messages unread, whatever the readers did before.
//!
//! The tests that prove them (the ring's unit tests are in
//! `ring_tests.rs`, `place`'s in `layout.rs`): (1) and (2)
//! `a_producer_that_died_mid_put_left_no_message_and_a_working_ring`,
//! `a_producer_that_died_mid_jump_left_a_working_ring`,
//! `a_consumer_that_died_mid_get_left_the_message_in_place` and
//! `messages_put_and_got_in_random_bursts_arrive_whole_and_in_order`, and in
//! mpcore's integration tests `many_producers_and_consumers_lose_and_duplicate_nothing`,
//! `producers_and_consumers_killed_at_random_lose_at_most_what_they_held`
//! and `large_messages_going_round_the_ring_arrive_whole`; (3)
//! `place_never_lets_the_tail_catch_the_head` and
//! `a_million_puts_with_no_reader_then_a_million_gets`; (5)
//! `a_queue_that_held_a_gibibyte_gives_it_back_as_it_is_read`,
//! `a_queue_drained_twice_far_into_its_ring_keeps_no_page_there` and
//! `a_ring_read_behind_a_jump_gives_back_only_what_was_read`; (6)
//! `a_tail_with_no_room_in_front_of_the_head_goes_on_beyond_its_lap`,
//! `a_busy_queue_goes_round_early_only_with_a_small_backlog`, and in the
//! integration tests `a_reader_that_took_a_few_messages_leaves_the_queue_its_whole_size`,
//! `a_reader_that_kept_up_then_stopped_leaves_the_queue_its_whole_size`,
//! `a_queue_drained_far_into_its_ring_still_holds_a_million` and
//! `a_queue_filled_while_its_reader_started_is_drained_by_it`.
//!
//! # Where the bytes live
//!
//! The memfd is 2 GiB long, but it is *sparse*: a page takes memory only
//! once a message is written to it. A queue that holds a few small
//! messages uses a page or two; one that holds 1 GiB uses 1 GiB, and gives
//! it back as it is read (`fallocate(PUNCH_HOLE)`), keeping only the first
//! [`KEEP`] bytes warm for the next messages. A `put` into an empty queue
//! whose tail has gone past [`EARLY_WRAP`] starts again at the beginning,
//! in pages that are already there, and so does one into a busy queue
//! with a small backlog (`layout.rs`). Going back early must not cost
//! room: a tail that then meets the head, because the readers stopped,
//! goes on beyond the end of the lap they are still reading (with a mark
//! that sends them there once they have come round), and may go back to
//! the start only once they have read what it left there ([`Fence`]).
//!
//! # Two sides that rarely meet
//!
//! Producers and consumers each have a lock and an *end* of their own, on
//! cache lines of their own: a `put` takes the producers' lock and moves
//! the tail, a `get` takes the consumers' lock and moves the head. So a
//! producer and a consumer never wait for each other's lock, and each
//! message moves about two cache lines between the cores (the tail and
//! the message itself). A producer remembers where it last saw the head,
//! and looks again only when that says the ring is full, or may be empty.
//!
//! # Why a killed process cannot tear a message
//!
//! Each end is one 64-bit word: a position in the ring (low 32 bits) and
//! how many messages have passed it (high 32 bits). A `put` writes the
//! message into free space behind the tail, then moves the tail with one
//! store; a `get` copies the message at the head out, then moves the head
//! with one store. A producer killed before its store leaves no message;
//! one killed after it left a whole one. A consumer killed before its
//! store leaves the message for the next `get`; one killed after it took
//! the message with it, as in Python. Either way the words are never
//! half-written, so the next process to take the (robust) lock is told
//! its holder died, and simply goes on ([`RawMutex::lock_recovering`]).

use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::fcntl::{FallocateFlags, fallocate};

use super::joinable::Tasks;
use super::layout::{CAP, EARLY_WRAP, Ends, Fence, KEEP, SKIP, place};
use super::sleepers::Sleepers;
use crate::base::{Error, Result};
use crate::os::deadline::Wait;
use crate::os::memfd::Segment;
use crate::os::mutex::RawMutex;
use crate::os::spin;

/// The largest message a queue takes: small enough that a ring holding
/// under 1 GiB always has room for one more.
pub(crate) const MAX_MESSAGE: usize = 256 << 20;
/// While a long queue is read, what was read beyond [`KEEP`] is given
/// back in steps of this much.
const STEP: usize = 16 << 20;
/// The page before the ring: the locks, the ends, the wait words.
const HEADER: usize = 4096;
/// A message this large or larger gets its pages with one system call
/// before it is copied ([`Ring::populate`]).
const POPULATE: usize = 64 << 10;
/// How long a `get` looks again at an empty queue before it sleeps: a
/// producer that is running puts its next message within microseconds,
/// and falling asleep and being woken costs more than that.
const SPIN: Duration = Duration::from_micros(20);

/// One side of the ring, on a cache line of its own.
#[repr(C, align(64))]
struct Side {
    mutex: libc::pthread_mutex_t,
    /// This side's end: its position and how many messages have passed it.
    /// Written only under `mutex`, with one store.
    end: AtomicU64,
    /// The other side's end as this side last saw it (never ahead of it):
    /// looking at the real one costs a trip for its cache line.
    seen: AtomicU64,
    /// Consumers: the position in this lap of the ring up to which what
    /// was read went back.
    freed: AtomicU64,
    /// Consumers: how far earlier laps reached, beyond what went back.
    reach: AtomicU64,
    /// Producers: where the last lap ended ([`Ends::lap_end`]).
    lap_end: AtomicU64,
    /// Producers: where the tail went on beyond the head's lap, if it did
    /// ([`Fence`]; 0: it did not).
    fence: AtomicU64,
}

/// The shared page before the ring.
#[repr(C)]
struct Header {
    tail: Side,
    head: Side,
    /// Consumers sleep here for messages.
    items: Sleepers,
    /// Producers sleep here for room.
    space: Sleepers,
    /// The most messages the queue holds (`u64::MAX`: as many as fit).
    max_count: AtomicU64,
    /// A [`JoinableQueue`](crate::JoinableQueue)'s `task_done` count.
    tasks: Tasks,
}

const _: () = assert!(size_of::<Header>() <= HEADER);

fn pack(position: usize, passed: u32) -> u64 {
    position as u64 | u64::from(passed) << 32
}

fn unpack(end: u64) -> (usize, u32) {
    ((end & 0xffff_ffff) as usize, (end >> 32) as u32)
}

/// One queue's ring, mapped in this process.
pub(crate) struct Ring {
    /// The header page, then the ring: `HEADER + CAP` bytes, sparse.
    segment: Segment,
    producers: RawMutex,
    consumers: RawMutex,
}

// SAFETY: the mapping is shared memory meant for many processes; every
// access to it goes through atomics or under the process-shared mutexes.
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

impl Ring {
    /// A new, empty ring that holds at most `max_count` messages.
    pub(crate) fn new(max_count: u64) -> Result<Ring> {
        let segment = Segment::new("mpcore-queue", HEADER + CAP, HEADER)?;
        let header = segment.base().cast::<Header>();
        // SAFETY: the header page is fresh, zeroed and page-aligned, so
        // both mutexes are aligned; nobody else maps it yet, and it lives as
        // long as the `Ring`, which unmaps it only when dropped.
        let mutexes = unsafe {
            RawMutex::init((&raw mut (*header).tail.mutex).cast()).and_then(|producers| {
                RawMutex::init((&raw mut (*header).head.mutex).cast())
                    .map(|consumers| (producers, consumers))
            })
        };
        let (producers, consumers) = mutexes?;
        let ring = Ring {
            segment,
            producers,
            consumers,
        };
        ring.header().max_count.store(max_count, Ordering::Relaxed);
        Ok(ring)
    }

    /// Maps a ring that another process made and sent as a descriptor
    /// (a spawned child's queue). Its lock and counts are already there.
    pub(crate) fn from_memfd(memfd: OwnedFd) -> Result<Ring> {
        let segment = Segment::from_memfd(memfd, HEADER + CAP).map_err(|e| match e {
            Error::InvalidArgument(_) => {
                Error::InvalidArgument("the memory received as a queue is not a queue's ring")
            }
            e => e,
        })?;
        let header = segment.base().cast::<Header>();
        // SAFETY: the sender's `Ring::new` initialised both mutexes in the
        // header; the mapping lives as long as the `Ring`.
        let (producers, consumers) = unsafe {
            (
                RawMutex::at((&raw mut (*header).tail.mutex).cast()),
                RawMutex::at((&raw mut (*header).head.mutex).cast()),
            )
        };
        Ok(Ring {
            segment,
            producers,
            consumers,
        })
    }

    /// The memfd under the ring, to send to a spawned child.
    pub(crate) fn memfd(&self) -> BorrowedFd<'_> {
        self.segment.memfd()
    }

    fn header(&self) -> &Header {
        // SAFETY: the header page lives as long as `self`; its fields are
        // atomics, or the mutexes, which are only used through `RawMutex`.
        unsafe { &*self.segment.base().cast::<Header>() }
    }

    /// The first byte of the ring.
    fn data(&self) -> *mut u8 {
        // SAFETY: the mapping is HEADER + CAP bytes long.
        unsafe { self.segment.base().add(HEADER) }
    }

    /// The most messages this ring holds.
    pub(crate) fn max_count(&self) -> u64 {
        self.header().max_count.load(Ordering::Relaxed)
    }

    /// How many messages were ever put, wrapping: counted by the store
    /// that makes each message whole, so a producer killed mid-`put` is
    /// counted exactly when its message is in the ring.
    pub(super) fn puts(&self) -> u32 {
        unpack(self.header().tail.end.load(Ordering::SeqCst)).1
    }

    /// The words of a [`JoinableQueue`](crate::JoinableQueue).
    pub(super) fn tasks(&self) -> &Tasks {
        &self.header().tasks
    }

    /// How many messages it holds now (exact at the instant it is read).
    pub(crate) fn count(&self) -> u64 {
        // The head first: it never passes the tail, so read in this order
        // the difference is never negative.
        let (_, taken) = unpack(self.header().head.end.load(Ordering::Acquire));
        let (_, put) = unpack(self.header().tail.end.load(Ordering::Acquire));
        u64::from(put.wrapping_sub(taken))
    }

    /// The pages of the ring that hold memory now, in bytes.
    pub(crate) fn resident_bytes(&self) -> Result<u64> {
        let stat =
            nix::sys::stat::fstat(self.segment.memfd()).map_err(|e| Error::os("fstat", e))?;
        Ok(stat.st_blocks as u64 * 512)
    }

    fn lock(&self, mutex: RawMutex) -> Result<Locked> {
        mutex.lock_recovering()?;
        Ok(Locked(mutex))
    }

    fn length_at(&self, at: usize) -> u64 {
        // SAFETY: `at` is the position of a record (8-aligned, below CAP),
        // within the mapping, and committed: nobody writes it now.
        unsafe { self.data().add(at).cast::<u64>().read() }
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
        let max_count = self.max_count();
        let side = &header.tail;
        loop {
            let locked = self.lock(self.producers)?;
            let (tail, put) = unpack(side.end.load(Ordering::Relaxed));
            let lap_end = side.lap_end.load(Ordering::Relaxed) as usize;
            let fence = Fence::load(side.fence.load(Ordering::Relaxed));
            let mut seen = side.seen.load(Ordering::Relaxed);
            let mut fresh = false;
            let (room, held) = loop {
                let (head, taken) = unpack(seen);
                let count = put.wrapping_sub(taken);
                let held = fence.is_some_and(|fence| fence.holds(head, tail));
                let ends = Ends {
                    head,
                    tail,
                    empty: count == 0,
                    lap_end,
                    start_held: held,
                };
                let room = (u64::from(count) < max_count)
                    .then(|| place(ends, rec))
                    .flatten();
                // The head seen last may be out of date: look again before
                // calling the ring full or going on beyond the head's lap,
                // and before writing far from its start into a ring that
                // may have emptied meanwhile.
                if !fresh && (room.is_none_or(|at| at > tail) || (count > 0 && tail > EARLY_WRAP)) {
                    seen = header.head.end.load(Ordering::SeqCst);
                    side.seen.store(seen, Ordering::Relaxed);
                    fresh = true;
                    continue;
                }
                break (room, held);
            };
            if fence.is_some() && !held {
                // The head has come round (or the jump never counted): the
                // head never goes back into the lap it was in.
                side.fence.store(0, Ordering::Relaxed);
            }
            if let Some(at) = room {
                if rec >= POPULATE {
                    self.populate(at, rec);
                }
                // Where the lap ends, or where the tail goes on beyond it,
                // before the message counts: a producer killed in between
                // leaves a word that the next one finds out of date
                // (`Fence::holds`), or that nobody reads before a lap
                // ends again (`lap_end` matters only behind the head).
                if at < tail {
                    side.lap_end.store(tail as u64, Ordering::Relaxed);
                } else if at + rec == CAP {
                    side.lap_end.store(CAP as u64, Ordering::Relaxed);
                } else if at > tail {
                    let jump = Fence { from: tail, to: at };
                    side.fence.store(jump.word(), Ordering::Relaxed);
                }
                // SAFETY: `place` found `rec` free bytes at `at` (and, if
                // it is not at the tail, 8 at `tail` for the mark), within
                // the ring, beyond every committed message: no consumer
                // reads there, and we hold the producers' lock, so no
                // producer writes there.
                unsafe {
                    if at != tail {
                        self.data().add(tail).cast::<u64>().write(SKIP | at as u64);
                    }
                    let mut to = self.data().add(at);
                    to.cast::<u64>().write(len as u64);
                    to = to.add(8);
                    for part in parts {
                        std::ptr::copy_nonoverlapping(part.as_ptr(), to, part.len());
                        to = to.add(part.len());
                    }
                }
                // The message is whole: now it counts.
                side.end.store(
                    pack((at + rec) % CAP, put.wrapping_add(1)),
                    Ordering::SeqCst,
                );
                drop(locked);
                header.items.wake(1);
                return Ok(());
            }
            wait.give_up(Error::Full)?;
            // Announce the sleep, then look once more: a `get` that moved
            // the head before it could see us is seen here.
            let word = header.space.announce();
            if header.head.end.load(Ordering::SeqCst) != seen {
                header.space.cancel();
                continue;
            }
            drop(locked);
            header.space.sleep(word, wait)?;
        }
    }

    /// Takes the oldest message and hands its bytes to `read` (under the
    /// consumers' lock: `read` should only copy them), waiting for one as
    /// `wait` says.
    pub(crate) fn get<R>(&self, wait: Wait, read: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let header = self.header();
        let mut read = Some(read);
        let mut spun = false;
        loop {
            let locked = self.lock(self.consumers)?;
            let (head, taken) = unpack(header.head.end.load(Ordering::Relaxed));
            let mut put = unpack(header.head.seen.load(Ordering::Relaxed)).1;
            if put == taken {
                // Empty, as last seen: look at the real tail.
                let tail = header.tail.end.load(Ordering::Acquire);
                header.head.seen.store(tail, Ordering::Relaxed);
                put = unpack(tail).1;
            }
            if put != taken {
                let mut at = head;
                let mut len = self.length_at(at);
                if len & SKIP != 0 {
                    // A mark: the message is where it says.
                    at = (len & !SKIP) as usize % CAP;
                    len = self.length_at(at);
                }
                let len = len as usize;
                // SAFETY: a committed record: `len` bytes after its length,
                // within the ring (a `put` placed it whole), and nobody
                // writes there until the head has passed it.
                let bytes = unsafe { std::slice::from_raw_parts(self.data().add(at + 8), len) };
                let value = (read.take().expect("read is called once"))(bytes);
                let next = (at + record(len)) % CAP;
                let taken = taken.wrapping_add(1);
                header.head.end.store(pack(next, taken), Ordering::SeqCst);
                self.give_back((at < head).then_some(head), next);
                drop(locked);
                header.space.wake(i32::MAX);
                if put != taken {
                    // More wait: wake another sleeper for them.
                    header.items.wake_another();
                }
                return Ok(value);
            }
            wait.give_up(Error::Empty)?;
            if !spun {
                drop(locked);
                self.spin_for_items(taken, wait);
                spun = true;
                continue;
            }
            // Announce the sleep, then look once more: a `put` that moved
            // the tail before it could see us is seen here.
            let word = header.items.announce();
            if unpack(header.tail.end.load(Ordering::SeqCst)).1 != taken {
                header.items.cancel();
                continue;
            }
            drop(locked);
            header.items.sleep(word, wait)?;
        }
    }

    /// Looks for up to [`SPIN`] for a message after the `taken`th, before
    /// a `get` sleeps.
    fn spin_for_items(&self, taken: u32, wait: Wait) {
        let spin = Instant::now() + SPIN;
        let until = wait.deadline().map_or(spin, |at| at.min(spin));
        let tail = &self.header().tail.end;
        spin::until(until, || {
            (unpack(tail.load(Ordering::Relaxed)).1 != taken).then_some(())
        });
    }

    /// After a `get` (under the consumers' lock) moved the head to `next`,
    /// from the end of the ring if it `wrapped_at` a position there: gives
    /// back the pages read beyond [`KEEP`], in steps of [`STEP`] as they
    /// are read, and all of them once the ring is drained.
    fn give_back(&self, wrapped_at: Option<usize>, next: usize) {
        let header = self.header();
        let head = &header.head;
        let mut reach = head.reach.load(Ordering::Relaxed) as usize;
        if let Some(end) = wrapped_at {
            // What the last lap left beyond this one's start goes back
            // when the ring is drained: until then a producer that came
            // round again may have messages anywhere below `end`.
            reach = reach.max(end);
            head.reach.store(reach as u64, Ordering::Relaxed);
            head.freed.store(0, Ordering::Relaxed);
        }
        let from = (head.freed.load(Ordering::Relaxed) as usize).max(KEEP);
        let tail_at = || unpack(header.tail.end.load(Ordering::Acquire)).0;
        let step = next >= from + STEP;
        let drained = next.max(reach) > from + 4096 && tail_at() == next;
        if !step && !drained {
            return;
        }
        // Under the producers' lock, which no producer then holds: nobody
        // writes the free space meanwhile, and the tail is where it is.
        let Ok(_producers) = self.lock(self.producers) else {
            return;
        };
        let tail = tail_at();
        if tail == next {
            // Drained: nothing beyond the pages kept holds a message, nor
            // the page of the mark at the end of an earlier lap.
            self.punch(KEEP, next.max((reach + 8).next_multiple_of(4096)));
            head.reach.store(0, Ordering::Relaxed);
        } else if step {
            // Read from `from` to `next` in this lap. A producer that came
            // round to the start has messages below its tail, and one that
            // went on beyond this lap below its fence: keep them.
            let fence = Fence::load(header.tail.fence.load(Ordering::Relaxed))
                .filter(|fence| fence.holds(next, tail));
            let kept = match fence {
                _ if tail < next => tail,
                Some(fence) => fence.from + 8,
                None => 0,
            };
            self.punch(from.max(kept), next);
        } else {
            return;
        }
        // `punch` frees whole pages only: the page where `next` falls is
        // still in use, and is given back with the next step.
        head.freed
            .store((next / 4096 * 4096) as u64, Ordering::Relaxed);
    }

    /// Gives the `len` bytes at position `at` their pages now, with one
    /// system call, rather than with a page fault for every 4 KiB as the
    /// copy meets them: for a 1 MiB message, one call instead of 256
    /// faults. Failing (before Linux 5.14) costs only the faults.
    fn populate(&self, at: usize, len: usize) {
        let from = at / 4096 * 4096;
        let to = (at + len).next_multiple_of(4096).min(CAP);
        // SAFETY: the range lies within our mapping; MADV_POPULATE_WRITE
        // only faults its pages in, as a write would, and changes no byte.
        unsafe {
            libc::madvise(
                self.data().add(from).cast(),
                to - from,
                libc::MADV_POPULATE_WRITE,
            );
        }
    }

    /// Frees the whole pages of the ring between positions `from` and `to`.
    fn punch(&self, from: usize, to: usize) {
        let from = from.next_multiple_of(4096);
        let to = to.min(CAP) / 4096 * 4096;
        if to > from {
            // Failing only frees less memory: nothing to report.
            let _ = fallocate(
                self.segment.memfd(),
                FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
                (HEADER + from) as i64,
                (to - from) as i64,
            );
        }
    }
}

/// Holds one of the ring's locks; unlocks when dropped.
struct Locked(RawMutex);

impl Drop for Locked {
    fn drop(&mut self) {
        // Only this thread took it, within one call: an unlock fails only
        // if memory was corrupted, and then it must not pass unnoticed.
        if let Err(e) = self.0.unlock() {
            log::error!("mpcore: a queue's lock could not be released: {e}");
        }
    }
}

/// A record's size: its length word and its bytes, rounded up to 8.
fn record(len: usize) -> usize {
    (8 + len).next_multiple_of(8)
}

#[cfg(test)]
#[path = "ring_tests.rs"]
mod tests;
