//! The published crates a reader would add to a project of their own,
//! [`raw_sync`] and [`shared_memory`], behind safe calls.
//!
//! The chapters do each job twice: on mpcore, and on these crates, so that
//! the two can be compared. Both crates hand out raw pointers into memory
//! that other processes share: `raw_sync`'s constructors are `unsafe fn`s,
//! and a `shared_memory` segment is a pointer and a length. This module
//! makes those calls, each behind a `// SAFETY:` note, and gives the
//! examples, the benchmarks and the chapters safe types to use instead:
//!
//! | Type | What it holds | raw_sync / shared_memory calls |
//! | --- | --- | --- |
//! | [`RawSyncMutex<T>`] | a [`bytemuck::Pod`] value under raw_sync's process-shared mutex | `Mutex::new`, `Mutex::from_existing`, `lock`, `try_lock` |
//! | [`RawSyncEvent`] | raw_sync's event (a pthread condition variable, its mutex and a flag) | `Event::new`, `Event::from_existing`, `set`, `wait` |
//! | [`SharedAtomics<T>`] | atomics ([`AtomicI32`], [`AtomicF64`], arrays and tuples of them) | only `ShmemConf` and `as_ptr` |
//!
//! Each lives in a segment of its own, made with `ShmemConf::new().size(n)
//! .create()` (`/dev/shm/shmem_<random>`, owner-only). Another process
//! opens it with the segment's name, [`os_id`](RawSyncMutex::os_id):
//! raw_sync's objects are raw pointers, so a child cannot be handed one.
//! The creator's handle removes the name when it is dropped, as the
//! `shared_memory` crate does; a creator killed with `SIGKILL` leaves it in
//! `/dev/shm` (mpcore's [`SharedMemory`](mpcore::SharedMemory) is the one
//! that cleans up after a killed creator).
//!
//! # What the safe calls promise
//!
//! Every segment starts with a 64-byte header that names what the creator
//! put in it and its layout, written last; `open` checks it before it
//! makes a single raw_sync call, so a segment that holds something else,
//! or that its creator never finished, is an error
//! ([`mpcore::Error::BadSegment`], inside [`Error::Mpcore`]) instead of a pthread call on garbage. The value behind a
//! [`RawSyncMutex`] is reached only through its guard, while the mutex is
//! held; a [`SharedAtomics`] holds nothing but integer atomics, so two
//! processes that write it at once cannot make a data race.
//!
//! What raw_sync itself does stays as it is; that is the point of
//! showing it: its mutex is not robust (a holder killed with `SIGKILL`
//! leaves it locked for ever: a timeout is the only way out), it reports
//! every failure, a timeout included, as a message
//! ([`Error::RawSync`]), and its timed calls add the duration to
//! `CLOCK_REALTIME` without carrying nanoseconds into seconds, so a
//! timeout with a fraction of a second can be refused at once (`EINVAL`)
//! instead of waited out. Whole seconds always work. The safe calls here
//! keep the promises raw_sync's `unsafe fn`s ask for; what raw_sync does
//! inside is its own (it fills pthread attribute structs and a `timespec`
//! that it declares initialised before they are, and reads an event's
//! flag without its lock while opening it).
//!
//! ```
//! use course::published::RawSyncMutex;
//!
//! let counter = RawSyncMutex::create(0u64)?;
//! // Another process: the same segment by its name, the same mutex.
//! let theirs = RawSyncMutex::<u64>::open(counter.os_id())?;
//! *theirs.lock()? += 3;
//! assert_eq!(*counter.lock()?, 3);
//! # Ok::<(), course::published::Error>(())
//! ```

use std::cell::Cell;
use std::fmt::{self, Write as _};
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use bytemuck::Pod;
use nix::errno::Errno;
use raw_sync::Timeout;
use raw_sync::events::{Event, EventImpl, EventInit, EventState};
use raw_sync::locks::{LockGuard, LockImpl, LockInit, Mutex};
use shared_memory::{Shmem, ShmemConf, ShmemError};

/// What went wrong: what mpcore itself would say (the segment, a second
/// lock through one handle), or what raw_sync said.
///
/// Its `Debug` prints the same sentence as its `Display`, as
/// [`mpcore::Error`]'s does, so that a `main` that returns it shows the
/// reader what happened.
#[derive(thiserror::Error, Clone)]
#[non_exhaustive]
pub enum Error {
    /// An error that mpcore reports too, with mpcore's words: a segment
    /// that cannot be made ([`mpcore::Error::Os`]), a name that no segment
    /// has ([`mpcore::Error::NoSuchName`]), a segment that holds something
    /// else ([`mpcore::Error::BadSegment`]), a type aligned past a page
    /// ([`mpcore::Error::AlignmentTooLarge`]), a second lock through one
    /// handle ([`mpcore::Error::WouldDeadlock`]).
    #[error(transparent)]
    Mpcore(#[from] mpcore::Error),

    /// A call of the `raw_sync` crate failed. `reason` is raw_sync's own
    /// message, word for word: raw_sync reports a timeout this way too
    /// (`Failed to acquire mutex : 110`, `Failed waiting for signal`), and
    /// does not tell it apart from a failure.
    #[error("{reason}")]
    RawSync {
        /// The raw_sync call, e.g. `"try_lock"`.
        call: &'static str,
        /// What raw_sync said.
        reason: String,
    },
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The shared_memory crate's error as mpcore reports it: an errno stays
/// one.
fn shmem_error(call: &'static str, e: ShmemError) -> Error {
    Error::Mpcore(match e {
        ShmemError::MapCreateFailed(errno)
        | ShmemError::MapOpenFailed(errno)
        | ShmemError::UnknownOsError(errno) => mpcore::Error::Os {
            call,
            errno: mpcore::Errno::from_raw(errno as i32),
        },
        other => mpcore::Error::Io {
            call,
            reason: other.to_string(),
        },
    })
}

/// mpcore's sentence for a segment that cannot be used.
fn bad_segment(what: String) -> Error {
    Error::Mpcore(mpcore::Error::BadSegment { what })
}

/// A timeout as raw_sync takes it. raw_sync adds the seconds to the clock
/// as a signed number, unchecked: a timeout of some 300 billion years
/// (`Duration::MAX`, say) would overflow there, or wrap round into the
/// past. Any timeout beyond a century is taken as "no timeout", which is
/// what such a caller means.
fn raw_sync_timeout(timeout: Duration) -> Timeout {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    if timeout >= CENTURY {
        Timeout::Infinite
    } else {
        Timeout::Val(timeout)
    }
}

/// The header: the kind word (written last), then the layout word. What
/// the creator placed starts at `HEADER`, so at 64-byte alignment (the
/// mapping is page-aligned).
const HEADER: usize = 64;
const LAYOUT_AT: usize = 8;
/// Mappings are page-aligned, no more.
const PAGE: usize = 4096;

/// What a segment holds: the kind word of its header.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Mutex = 0x6d70_6d78,   // "mpmx"
    Event = 0x6d70_6576,   // "mpev"
    Atomics = 0x6d70_6174, // "mpat"
}

impl Kind {
    fn what(self) -> &'static str {
        match self {
            Kind::Mutex => "a RawSyncMutex",
            Kind::Event => "a RawSyncEvent",
            Kind::Atomics => "a SharedAtomics",
        }
    }
}

/// A `shared_memory` segment with the header above.
struct Segment {
    shmem: Shmem,
}

impl Segment {
    /// A fresh segment (zeroed, as every new shared memory file is) with
    /// room for `body` bytes after the header. The caller places its
    /// object, then [`publish`](Segment::publish)es it.
    fn create(body: usize) -> Result<Segment> {
        let size = body.checked_add(HEADER).ok_or_else(|| {
            bad_segment(format!("cannot make a shared memory segment of {body} bytes: that is more than memory can hold"))
        })?;
        let shmem = ShmemConf::new()
            .size(size)
            .create()
            .map_err(|e| shmem_error("shm_open", e))?;
        Ok(Segment { shmem })
    }

    /// Opens the segment named `os_id` and checks that its creator
    /// finished placing a `kind` of this `layout` in it.
    fn open(os_id: &str, kind: Kind, layout: u64, body: usize) -> Result<Segment> {
        let shmem = ShmemConf::new().os_id(os_id).open().map_err(|e| match e {
            ShmemError::MapOpenFailed(errno) if errno == Errno::ENOENT as u32 => {
                Error::Mpcore(mpcore::Error::NoSuchName {
                    name: os_id.to_owned(),
                })
            }
            other => shmem_error("shm_open", other),
        })?;
        let segment = Segment { shmem };
        let bad = |why: &str| {
            bad_segment(format!(
                "the shared memory segment {os_id:?} does not hold {}: {why}",
                kind.what()
            ))
        };
        if segment.shmem.len() < HEADER {
            return Err(bad("it is too small"));
        }
        // Acquire: the creator's writes before `publish` (the pthread
        // objects, the first value) are seen from here on.
        match segment.word32(0).load(Ordering::Acquire) {
            k if k == kind as u32 => {}
            0 => {
                return Err(bad(
                    "its creator has not finished making it (or died doing so)",
                ));
            }
            _ => return Err(bad("it holds something else")),
        }
        if segment.word64(LAYOUT_AT).load(Ordering::Relaxed) != layout {
            return Err(bad("it was made for another type"));
        }
        if segment.shmem.len() < HEADER + body {
            return Err(bad("it is too small"));
        }
        Ok(segment)
    }

    /// Says that the object is in place: openers may use it from now on.
    fn publish(&self, kind: Kind, layout: u64) {
        self.word64(LAYOUT_AT).store(layout, Ordering::Relaxed);
        self.word32(0).store(kind as u32, Ordering::Release);
    }

    fn word32(&self, at: usize) -> &AtomicU32 {
        debug_assert!(at + 4 <= HEADER && at % 4 == 0);
        // SAFETY: `at` is inside the header, which every segment has (it
        // is checked in `open`, and `create` made it), and 4-aligned (the
        // mapping is page-aligned). Any bits are a valid AtomicU32, and
        // every process touches the header's words atomically only. The
        // reference borrows `self`, so it cannot outlive the mapping.
        unsafe { &*self.shmem.as_ptr().add(at).cast::<AtomicU32>() }
    }

    fn word64(&self, at: usize) -> &AtomicU64 {
        debug_assert!(at + 8 <= HEADER && at % 8 == 0);
        // SAFETY: as in `word32`, 8-aligned.
        unsafe { &*self.shmem.as_ptr().add(at).cast::<AtomicU64>() }
    }

    /// Where the body starts, `at` bytes after the header.
    fn body(&self, at: usize) -> *mut u8 {
        self.shmem.as_ptr().wrapping_add(HEADER + at)
    }

    fn os_id(&self) -> &str {
        self.shmem.get_os_id()
    }
}

fn raw_sync_error(call: &'static str) -> impl FnOnce(Box<dyn std::error::Error>) -> Error {
    move |e| Error::RawSync {
        call,
        reason: e.to_string(),
    }
}

/// `n` rounded up to a multiple of `align` (a power of two).
fn round_up(n: usize, align: usize) -> usize {
    n.div_ceil(align) * align
}

/// A [`bytemuck::Pod`] value in a segment of the `shared_memory` crate,
/// under raw_sync's process-shared mutex: chapter 8's lock job on the
/// published crates.
///
/// It makes raw_sync's `Mutex::new` (in [`create`](RawSyncMutex::create))
/// and `Mutex::from_existing` (in [`open`](RawSyncMutex::open)), both
/// `unsafe`, and its `lock` and `try_lock`. The mutex is a plain pthread
/// mutex with `PTHREAD_PROCESS_SHARED`, not a robust one: a process killed
/// while it holds it leaves it locked for ever, and only
/// [`try_lock`](RawSyncMutex::try_lock)'s timeout gets a waiter out.
///
/// It is neither `Send` nor `Sync` (raw_sync's objects are raw pointers):
/// each process, and each thread, opens the segment by its name.
///
/// ```
/// use std::time::Duration;
/// use course::published::RawSyncMutex;
///
/// let pair = RawSyncMutex::create([1.5f64, 2.5])?;
/// let mut guard = pair.try_lock(Duration::from_secs(1))?;
/// guard[0] += 1.0;
/// assert_eq!(*guard, [2.5, 2.5]);
/// # Ok::<(), course::published::Error>(())
/// ```
pub struct RawSyncMutex<T: Pod> {
    mutex: Box<dyn LockImpl>,
    /// Whether this handle's guard is alive: a second lock through it
    /// would wait for ever.
    held: Cell<bool>,
    /// Where the value is, after the header.
    value_at: usize,
    segment: Segment,
    _value: PhantomData<T>,
}

impl<T: Pod> RawSyncMutex<T> {
    /// Where the value starts after the header: past the mutex, at its
    /// own alignment. The mapping is page-aligned, and the body starts
    /// [`HEADER`] bytes into it: the value is aligned where it lands in
    /// memory, for any alignment up to a page (a `#[repr(align(128))]`
    /// type, crossbeam's `CachePadded`), not just in the body.
    fn value_offset() -> Result<usize> {
        let align = align_of::<T>();
        if align > PAGE {
            return Err(mpcore::Error::AlignmentTooLarge { align }.into());
        }
        Ok(round_up(HEADER + Mutex::size_of(None), align.max(64)) - HEADER)
    }

    /// What the header records: the value's size and alignment.
    fn layout() -> u64 {
        ((size_of::<T>() as u64) << 16) | align_of::<T>() as u64
    }

    /// A new segment, a raw_sync mutex in it, and `value` beside it, at
    /// its type's alignment in memory (up to a page).
    ///
    /// # Errors
    ///
    /// [`mpcore::Error::AlignmentTooLarge`] for a type aligned to more than a
    /// page; [`mpcore::Error::Os`] when the segment cannot be made;
    /// [`Error::RawSync`] when raw_sync cannot initialise its mutex.
    pub fn create(value: T) -> Result<RawSyncMutex<T>> {
        let value_at = Self::value_offset()?;
        let segment = Segment::create(value_at + size_of::<T>())?;
        let (mem, data) = (segment.body(0), segment.body(value_at));
        // SAFETY: `mem` is the start of the body, 64-aligned, with
        // `value_at` bytes (at least `Mutex::size_of`) before the value;
        // the segment is fresh, and no other process can find it before
        // `publish` below, so nobody else touches these bytes meanwhile.
        let (mutex, _) = unsafe { Mutex::new(mem, data) }.map_err(raw_sync_error("Mutex::new"))?;
        // SAFETY: `data` is inside the segment (it was sized for it) and
        // aligned for `T` (`value_offset`); nobody else can see the
        // segment yet.
        unsafe { data.cast::<T>().write(value) };
        segment.publish(Kind::Mutex, Self::layout());
        Ok(RawSyncMutex {
            mutex,
            held: Cell::new(false),
            value_at,
            segment,
            _value: PhantomData,
        })
    }

    /// The mutex and value that [`create`](RawSyncMutex::create) made in
    /// the segment named `os_id`, from any process.
    ///
    /// # Errors
    ///
    /// [`mpcore::Error::NoSuchName`] when no segment has that name;
    /// [`mpcore::Error::BadSegment`] when the segment holds something else (another
    /// kind of object, a value of another size) or is not finished.
    pub fn open(os_id: &str) -> Result<RawSyncMutex<T>> {
        let value_at = Self::value_offset()?;
        let segment = Segment::open(
            os_id,
            Kind::Mutex,
            Self::layout(),
            value_at + size_of::<T>(),
        )?;
        let (mem, data) = (segment.body(0), segment.body(value_at));
        // SAFETY: the header says that `create` initialised a mutex at
        // `mem` and a `T`-sized value at `data` (same layout, checked by
        // `open`), and the mapping lives as long as `segment`, which the
        // returned handle owns beside the mutex.
        let (mutex, _) = unsafe { Mutex::from_existing(mem, data) }
            .map_err(raw_sync_error("Mutex::from_existing"))?;
        Ok(RawSyncMutex {
            mutex,
            held: Cell::new(false),
            value_at,
            segment,
            _value: PhantomData,
        })
    }

    /// The segment's name, for [`open`](RawSyncMutex::open) in another
    /// process (`shared_memory`'s `get_os_id`, e.g. `/shmem_85F4...`).
    pub fn os_id(&self) -> &str {
        self.segment.os_id()
    }

    /// Locks the mutex (raw_sync's `lock`, `pthread_mutex_lock`), waiting
    /// as long as it takes: for ever, if its holder was killed.
    ///
    /// # Errors
    ///
    /// [`mpcore::Error::WouldDeadlock`] when this handle's guard is alive;
    /// [`Error::RawSync`] when the pthread call fails.
    pub fn lock(&self) -> Result<RawSyncGuard<'_, T>> {
        self.not_held()?;
        let guard = self.mutex.lock().map_err(raw_sync_error("lock"))?;
        Ok(self.guard(guard))
    }

    /// Locks the mutex, or gives up after `timeout` (raw_sync's
    /// `try_lock(Timeout::Val(timeout))`, `pthread_mutex_timedlock`).
    ///
    /// # Errors
    ///
    /// [`Error::RawSync`] with raw_sync's words, when the time is up too:
    /// `Failed to acquire mutex : 110` (110 is `ETIMEDOUT`; 22,
    /// `EINVAL`, is raw_sync's deadline bug, see the [module](self));
    /// [`mpcore::Error::WouldDeadlock`] when this handle's guard is alive.
    pub fn try_lock(&self, timeout: Duration) -> Result<RawSyncGuard<'_, T>> {
        self.not_held()?;
        let guard = self
            .mutex
            .try_lock(raw_sync_timeout(timeout))
            .map_err(raw_sync_error("try_lock"))?;
        Ok(self.guard(guard))
    }

    fn not_held(&self) -> Result<()> {
        match self.held.get() {
            true => Err(mpcore::Error::WouldDeadlock.into()),
            false => Ok(()),
        }
    }

    fn guard<'a>(&'a self, lock: LockGuard<'a>) -> RawSyncGuard<'a, T> {
        self.held.set(true);
        // SAFETY: the value at `data` is a `T` (`create` wrote one; `open`
        // checked the layout; any bits are a valid `Pod`), aligned, inside
        // the mapping that `self` keeps alive for 'a. We hold the mutex,
        // every process reaches the value only through a guard, and
        // `held` keeps this handle from making a second guard: the
        // reference is the only one until the guard (and the lock) drops.
        let value = unsafe { &mut *self.segment.body(self.value_at).cast::<T>() };
        RawSyncGuard {
            value,
            held: &self.held,
            _lock: lock,
        }
    }
}

impl<T: Pod> fmt::Debug for RawSyncMutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawSyncMutex")
            .field("os_id", &self.os_id())
            .finish_non_exhaustive()
    }
}

/// The value of a [`RawSyncMutex`], while the mutex is held: derefs to
/// `T`. Dropping it unlocks (raw_sync's `release`,
/// `pthread_mutex_unlock`).
pub struct RawSyncGuard<'a, T: Pod> {
    value: &'a mut T,
    held: &'a Cell<bool>,
    // Declared last, so dropped last: the value is let go before the
    // mutex is.
    _lock: LockGuard<'a>,
}

impl<T: Pod> Deref for RawSyncGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value
    }
}

impl<T: Pod> DerefMut for RawSyncGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for RawSyncGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: Pod> Drop for RawSyncGuard<'_, T> {
    fn drop(&mut self) {
        self.held.set(false);
    }
}

/// raw_sync's event in a segment of the `shared_memory` crate: chapter 9's
/// side-by-side. A pthread condition variable, the pthread mutex that
/// guards it, and a flag. Manual-reset (like Python's `Event`, it stays
/// set until cleared) or auto-reset (one waiter per set, which Python
/// does not have).
///
/// It makes raw_sync's `Event::new` (in [`create`](RawSyncEvent::create))
/// and `Event::from_existing` (in [`open`](RawSyncEvent::open)), both
/// `unsafe`, and its `set` and `wait`. Neither `Send` nor `Sync`: each
/// process opens the segment by its name.
///
/// ```
/// use std::time::Duration;
/// use course::published::RawSyncEvent;
///
/// let event = RawSyncEvent::create(false)?;
/// let theirs = RawSyncEvent::open(event.os_id())?;
/// event.set()?;
/// theirs.wait_timeout(Duration::from_secs(1))?;
/// # Ok::<(), course::published::Error>(())
/// ```
pub struct RawSyncEvent {
    event: Box<dyn EventImpl>,
    segment: Segment,
}

impl RawSyncEvent {
    /// Room for the event: `Event::size_of` at the 64-aligned start of
    /// the body needs no padding; the rest is slack.
    fn body() -> usize {
        round_up(Event::size_of(None) + 8, 64)
    }

    /// A new segment with a cleared event in it; `auto_reset` makes each
    /// [`set`](RawSyncEvent::set) wake one waiter and clear the event.
    ///
    /// # Errors
    ///
    /// [`mpcore::Error::Os`] when the segment cannot be made; [`Error::RawSync`]
    /// when raw_sync cannot initialise the event.
    pub fn create(auto_reset: bool) -> Result<RawSyncEvent> {
        let segment = Segment::create(Self::body())?;
        // SAFETY: the body is 64-aligned and `body()` bytes long, more
        // than `Event::size_of` asks for at that alignment; the segment
        // is fresh and nobody can find it before `publish` below.
        let (event, _) = unsafe { Event::new(segment.body(0), auto_reset) }
            .map_err(raw_sync_error("Event::new"))?;
        segment.publish(Kind::Event, Self::body() as u64);
        Ok(RawSyncEvent { event, segment })
    }

    /// The event that [`create`](RawSyncEvent::create) made in the
    /// segment named `os_id`, from any process.
    ///
    /// # Errors
    ///
    /// [`mpcore::Error::NoSuchName`] when no segment has that name;
    /// [`mpcore::Error::BadSegment`] when the segment holds something else or is
    /// not finished.
    pub fn open(os_id: &str) -> Result<RawSyncEvent> {
        let segment = Segment::open(os_id, Kind::Event, Self::body() as u64, Self::body())?;
        // SAFETY: the header says that `create` initialised an event at
        // the start of the body, and the mapping lives as long as
        // `segment`, which the returned handle owns beside the event.
        let (event, _) = unsafe { Event::from_existing(segment.body(0)) }
            .map_err(raw_sync_error("Event::from_existing"))?;
        Ok(RawSyncEvent { event, segment })
    }

    /// The segment's name, for [`open`](RawSyncEvent::open) in another
    /// process.
    pub fn os_id(&self) -> &str {
        self.segment.os_id()
    }

    /// Sets the event and wakes its waiters, or one of them if it is
    /// auto-reset (raw_sync's `set(EventState::Signaled)`).
    ///
    /// # Errors
    ///
    /// [`Error::RawSync`] when a pthread call fails.
    pub fn set(&self) -> Result<()> {
        self.event
            .set(EventState::Signaled)
            .map_err(raw_sync_error("set"))
    }

    /// Clears the event (raw_sync's `set(EventState::Clear)`).
    ///
    /// # Errors
    ///
    /// [`Error::RawSync`] when a pthread call fails.
    pub fn clear(&self) -> Result<()> {
        self.event
            .set(EventState::Clear)
            .map_err(raw_sync_error("clear"))
    }

    /// Waits until the event is set, however long that takes (raw_sync's
    /// `wait(Timeout::Infinite)`).
    ///
    /// # Errors
    ///
    /// [`Error::RawSync`] when a pthread call fails.
    pub fn wait(&self) -> Result<()> {
        self.event
            .wait(Timeout::Infinite)
            .map_err(raw_sync_error("wait"))
    }

    /// Waits until the event is set, or `timeout` has passed (raw_sync's
    /// `wait(Timeout::Val(timeout))`).
    ///
    /// # Errors
    ///
    /// [`Error::RawSync`] with raw_sync's words, `Failed waiting for
    /// signal`, when the time is up, and also when a pthread call fails
    /// (raw_sync does not tell them apart).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        self.event
            .wait(raw_sync_timeout(timeout))
            .map_err(raw_sync_error("wait"))
    }
}

impl fmt::Debug for RawSyncEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawSyncEvent")
            .field("os_id", &self.os_id())
            .finish_non_exhaustive()
    }
}

/// An `f64` that processes share: its bits in an [`AtomicU64`] (std has
/// no `AtomicF64`).
///
/// ```
/// use std::sync::atomic::Ordering::Relaxed;
/// use course::published::AtomicF64;
///
/// let x = AtomicF64::new(3.25);
/// x.store(x.load(Relaxed) * 2.0, Relaxed);
/// assert_eq!(x.load(Relaxed), 6.5);
/// ```
#[repr(transparent)]
#[derive(Default)]
pub struct AtomicF64(AtomicU64);

impl AtomicF64 {
    /// A new atomic holding `value`.
    pub fn new(value: f64) -> AtomicF64 {
        AtomicF64(AtomicU64::new(value.to_bits()))
    }

    /// The value ([`AtomicU64::load`] of its bits).
    pub fn load(&self, order: Ordering) -> f64 {
        f64::from_bits(self.0.load(order))
    }

    /// Replaces the value ([`AtomicU64::store`] of its bits).
    pub fn store(&self, value: f64, order: Ordering) {
        self.0.store(value.to_bits(), order);
    }
}

impl fmt::Debug for AtomicF64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.load(Ordering::Relaxed), f)
    }
}

mod sealed {
    pub trait Sealed {}
}

/// The types a [`SharedAtomics`] can hold: [`AtomicI32`], [`AtomicU32`],
/// [`AtomicI64`], [`AtomicU64`], [`AtomicF64`], and arrays and tuples (of
/// up to four) of them.
///
/// Each is made of integer atomics alone: all-zero bits are a value (the
/// new segment's), so is every other pattern, and it changes only through
/// atomic operations, so processes that write it at once make no data
/// race. It cannot be implemented outside this crate.
pub trait Atomics: sealed::Sealed + Sync {
    /// Writes the type's shape, with the offsets of a tuple's fields, so
    /// that `open` can tell two layouts apart.
    #[doc(hidden)]
    fn shape(out: &mut String);
}

macro_rules! leaf {
    ($($atomic:ty => $name:literal),*) => {$(
        impl sealed::Sealed for $atomic {}
        impl Atomics for $atomic {
            fn shape(out: &mut String) {
                out.push_str($name);
            }
        }
    )*};
}

leaf!(AtomicI32 => "i32", AtomicU32 => "u32", AtomicI64 => "i64", AtomicU64 => "u64", AtomicF64 => "f64");

impl<A: Atomics, const N: usize> sealed::Sealed for [A; N] {}
impl<A: Atomics, const N: usize> Atomics for [A; N] {
    fn shape(out: &mut String) {
        out.push('[');
        A::shape(out);
        let _ = write!(out, ";{N}]");
    }
}

macro_rules! tuple {
    ($($field:tt: $ty:ident),*) => {
        impl<$($ty: Atomics),*> sealed::Sealed for ($($ty,)*) {}
        impl<$($ty: Atomics),*> Atomics for ($($ty,)*) {
            fn shape(out: &mut String) {
                out.push('(');
                $(
                    let _ = write!(out, "@{}:", std::mem::offset_of!(Self, $field));
                    $ty::shape(out);
                    out.push(',');
                )*
                out.push(')');
            }
        }
    };
}

tuple!(0: A);
tuple!(0: A, 1: B);
tuple!(0: A, 1: B, 2: C);
tuple!(0: A, 1: B, 2: C, 3: D);

/// Atomics in a segment of the `shared_memory` crate: chapter 7's
/// `Value`s and `Array` on the published crate, that a process opens by
/// the segment's name. Derefs to `T`, e.g.
/// `(AtomicI32, AtomicF64, [AtomicI32; 4])`.
///
/// The crate itself gives a pointer and a length; reading and writing
/// through them while another process writes is a data race, which Rust
/// leaves undefined. Atomics make every access a whole, ordered one, so
/// safe code in two processes can use the segment at once. A
/// read-modify-write of several values still needs a lock (a
/// [`RawSyncMutex`], or mpcore's [`Value`](mpcore::Value) and
/// [`Array`](mpcore::Array)).
///
/// ```
/// use std::sync::atomic::{AtomicI32, Ordering::Relaxed};
/// use course::published::{AtomicF64, SharedAtomics};
///
/// let shared = SharedAtomics::<(AtomicI32, AtomicF64)>::create()?;
/// let (count, mean) = &*shared;
/// count.store(3, Relaxed);
/// mean.store(0.5, Relaxed);
///
/// // Another process: the same segment by its name.
/// let theirs = SharedAtomics::<(AtomicI32, AtomicF64)>::open(shared.os_id())?;
/// assert_eq!((theirs.0.load(Relaxed), theirs.1.load(Relaxed)), (3, 0.5));
/// # Ok::<(), course::published::Error>(())
/// ```
pub struct SharedAtomics<T: Atomics> {
    segment: Segment,
    _value: PhantomData<T>,
}

impl<T: Atomics> SharedAtomics<T> {
    /// A hash of `T`'s shape, size and alignment, for the header.
    fn layout() -> u64 {
        let mut shape = String::new();
        T::shape(&mut shape);
        let _ = write!(shape, "/{}/{}", size_of::<T>(), align_of::<T>());
        // FNV-1a: the same in every program, unlike std's hasher.
        shape.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    /// A new segment, every atomic in it 0 (`0.0` for an [`AtomicF64`]).
    ///
    /// # Errors
    ///
    /// [`mpcore::Error::Os`] when the segment cannot be made.
    pub fn create() -> Result<SharedAtomics<T>> {
        let segment = Segment::create(size_of::<T>())?;
        segment.publish(Kind::Atomics, Self::layout());
        Ok(SharedAtomics {
            segment,
            _value: PhantomData,
        })
    }

    /// The atomics that [`create`](SharedAtomics::create) made in the
    /// segment named `os_id`, from any process.
    ///
    /// # Errors
    ///
    /// [`mpcore::Error::NoSuchName`] when no segment has that name;
    /// [`mpcore::Error::BadSegment`] when the segment holds something else (other
    /// atomics, or another object).
    pub fn open(os_id: &str) -> Result<SharedAtomics<T>> {
        let segment = Segment::open(os_id, Kind::Atomics, Self::layout(), size_of::<T>())?;
        Ok(SharedAtomics {
            segment,
            _value: PhantomData,
        })
    }

    /// The segment's name, for [`open`](SharedAtomics::open) in another
    /// process.
    pub fn os_id(&self) -> &str {
        self.segment.os_id()
    }
}

impl<T: Atomics> Deref for SharedAtomics<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // Every `Atomics` type is aligned to 8 at most; were one added
        // that is not, it would not compile rather than be misaligned.
        const { assert!(align_of::<T>() <= HEADER) };
        // SAFETY: the body starts 64-aligned, which meets the alignment of
        // every `Atomics` type (asserted above), and holds `size_of::<T>()`
        // bytes (`create` sized it, `open` checked it). The header says it
        // holds a `T` of this very shape; a `T` is integer atomics only, so
        // any bits (the fresh segment's zeros, whatever another process
        // stored) are a valid `T`, and every access, from any process, is
        // atomic. The reference borrows `self`, which keeps the mapping.
        unsafe { &*self.segment.body(0).cast::<T>() }
    }
}

impl<T: Atomics + fmt::Debug> fmt::Debug for SharedAtomics<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedAtomics")
            .field("os_id", &self.os_id())
            .field("value", &**self)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::atomic::Ordering::Relaxed;

    fn file(os_id: &str) -> String {
        format!("/dev/shm{os_id}")
    }

    #[test]
    fn a_mutex_is_found_by_name_and_its_value_is_shared() {
        let counter = RawSyncMutex::create(7u64).unwrap();
        let os_id = counter.os_id().to_owned();
        assert!(Path::new(&file(&os_id)).exists());
        {
            let theirs = RawSyncMutex::<u64>::open(&os_id).unwrap();
            *theirs.lock().unwrap() += 3;
        }
        assert_eq!(*counter.try_lock(Duration::from_secs(1)).unwrap(), 10);
        drop(counter);
        assert!(!Path::new(&file(&os_id)).exists(), "the creator unlinks");
    }

    #[test]
    fn a_second_lock_through_one_handle_is_refused_not_waited_for() {
        let m = RawSyncMutex::create(0i32).unwrap();
        let guard = m.lock().unwrap();
        assert!(matches!(
            m.lock(),
            Err(Error::Mpcore(mpcore::Error::WouldDeadlock))
        ));
        assert!(matches!(
            m.try_lock(Duration::from_secs(1)),
            Err(Error::Mpcore(mpcore::Error::WouldDeadlock))
        ));
        drop(guard);
        assert_eq!(*m.lock().unwrap(), 0);
    }

    #[test]
    fn a_held_mutex_times_out_with_raw_syncs_words() {
        let m = RawSyncMutex::create(0u8).unwrap();
        let other = RawSyncMutex::<u8>::open(m.os_id()).unwrap();
        let _guard = m.lock().unwrap();
        let e = other.try_lock(Duration::from_secs(1)).unwrap_err();
        assert!(
            matches!(
                e,
                Error::RawSync {
                    call: "try_lock",
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(e.to_string(), "Failed to acquire mutex : 110");
    }

    #[test]
    fn a_timeout_too_large_for_raw_sync_waits_for_the_holder() {
        let m = RawSyncMutex::create(0u8).unwrap();
        for timeout in [Duration::MAX, Duration::from_secs(i64::MAX as u64)] {
            let (held, release) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
            let os_id = m.os_id().to_owned();
            let holder = std::thread::spawn(move || {
                let theirs = RawSyncMutex::<u8>::open(&os_id).unwrap();
                let mut guard = theirs.lock().unwrap();
                *guard += 1;
                held.0.send(()).unwrap();
                let _ = release.1.recv_timeout(Duration::from_millis(200));
            });
            held.1.recv().unwrap();
            // Held for another 200 ms: raw_sync's own arithmetic would
            // have failed at once (a deadline in the past) or overflowed.
            let value = *m.try_lock(timeout).unwrap();
            holder.join().unwrap();
            drop(release.0);
            assert!(value >= 1);
        }
        assert_eq!(*m.lock().unwrap(), 2);
    }

    #[test]
    fn open_refuses_a_segment_that_holds_something_else() {
        let m = RawSyncMutex::create(0u64).unwrap();
        let e = RawSyncMutex::<u32>::open(m.os_id()).unwrap_err();
        assert!(e.to_string().contains("made for another type"), "{e}");
        let e = RawSyncEvent::open(m.os_id()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "the shared memory segment {:?} does not hold a RawSyncEvent: it holds \
                 something else",
                m.os_id()
            )
        );
        let a = SharedAtomics::<[AtomicI32; 2]>::create().unwrap();
        let e = SharedAtomics::<AtomicU64>::open(a.os_id()).unwrap_err();
        assert!(e.to_string().contains("made for another type"), "{e}");
        let e = SharedAtomics::<(AtomicI32, AtomicI32)>::open(a.os_id()).unwrap_err();
        assert!(e.to_string().contains("made for another type"), "{e}");
    }

    #[test]
    fn open_refuses_a_segment_that_is_not_finished() {
        let bare = ShmemConf::new().size(4096).create().unwrap();
        let e = RawSyncMutex::<u64>::open(bare.get_os_id()).unwrap_err();
        assert!(
            matches!(e, Error::Mpcore(mpcore::Error::BadSegment { .. })),
            "{e}"
        );
        assert!(e.to_string().contains("has not finished making it"), "{e}");
        let small = ShmemConf::new().size(8).create().unwrap();
        let e = RawSyncEvent::open(small.get_os_id()).unwrap_err();
        assert!(e.to_string().ends_with("it is too small"), "{e}");
    }

    #[test]
    fn open_of_a_missing_name_says_so() {
        let e = RawSyncEvent::open("/mpcore-published-no-such-name").unwrap_err();
        assert!(
            matches!(e, Error::Mpcore(mpcore::Error::NoSuchName { .. })),
            "{e}"
        );
    }

    #[test]
    fn an_event_wakes_its_other_handle_and_times_out_with_raw_syncs_words() {
        let event = RawSyncEvent::create(true).unwrap();
        let theirs = RawSyncEvent::open(event.os_id()).unwrap();
        event.set().unwrap();
        theirs.wait_timeout(Duration::from_secs(1)).unwrap();
        // Auto-reset: the wait took the signal.
        let e = theirs.wait_timeout(Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.to_string(), "Failed waiting for signal");
        event.set().unwrap();
        event.clear().unwrap();
        assert!(theirs.wait_timeout(Duration::from_secs(1)).is_err());
    }

    #[test]
    fn atomics_start_at_zero_and_are_shared_by_name() {
        type Data = (AtomicI32, AtomicF64, [AtomicI32; 4]);
        let data = SharedAtomics::<Data>::create().unwrap();
        assert_eq!(data.0.load(Relaxed), 0);
        assert_eq!(data.1.load(Relaxed), 0.0);
        data.1.store(3.5, Relaxed);
        data.2[3].store(-4, Relaxed);
        let theirs = SharedAtomics::<Data>::open(data.os_id()).unwrap();
        assert_eq!(theirs.1.load(Relaxed), 3.5);
        assert_eq!(theirs.2[3].load(Relaxed), -4);
    }

    #[test]
    fn a_type_aligned_past_64_bytes_is_aligned_in_the_segment() {
        /// Aligned as crossbeam's `CachePadded` is on x86_64.
        #[derive(Clone, Copy, Debug, PartialEq, bytemuck::Zeroable, bytemuck::Pod)]
        #[repr(C, align(128))]
        struct Padded([u64; 16]);
        /// Aligned to a page, the most a segment can give.
        #[derive(Clone, Copy, bytemuck::Zeroable, bytemuck::Pod)]
        #[repr(C, align(4096))]
        struct Paged([u8; 4096]);

        let m = RawSyncMutex::create(Padded([7; 16])).unwrap();
        {
            let mut guard = m.lock().unwrap();
            assert_eq!((&raw const *guard).addr() % 128, 0, "a misaligned &mut");
            guard.0[15] = 8;
        }
        let theirs = RawSyncMutex::<Padded>::open(m.os_id()).unwrap();
        let guard = theirs.lock().unwrap();
        assert_eq!((&raw const *guard).addr() % 128, 0, "a misaligned &mut");
        assert_eq!(guard.0[..2], [7, 7]);
        assert_eq!(guard.0[15], 8);

        let page = RawSyncMutex::create(Paged([1; 4096])).unwrap();
        let guard = page.lock().unwrap();
        assert_eq!((&raw const *guard).addr() % 4096, 0, "a misaligned &mut");
        assert!(guard.0.iter().all(|&b| b == 1));
    }

    #[test]
    fn a_type_aligned_past_a_page_is_refused() {
        #[derive(Clone, Copy, bytemuck::Zeroable, bytemuck::Pod)]
        #[repr(C, align(8192))]
        struct Huge([[u8; 4096]; 2]);
        let e = RawSyncMutex::create(Huge([[0; 4096]; 2])).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Mpcore(mpcore::Error::AlignmentTooLarge { align: 8192 })
            ),
            "{e}"
        );
    }
}
