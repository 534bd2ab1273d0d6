//! `SharedMemory`: Python's `multiprocessing.shared_memory.SharedMemory`, a
//! block of bytes with a name, which a program that is *not* a child opens
//! by that name.
//!
//! Forked children need no name: they inherit [`Value`](crate::Value) and
//! [`Array`](crate::Array)'s anonymous mappings. A second program started
//! on its own has nothing to inherit, so the segment gets a name in
//! `/dev/shm`: the file `shm_open` would make, owner-only (mode 0600),
//! mapped shared.
//!
//! A name outlives the processes that use it. Python leaves it to
//! `unlink()`, and behind that to each program's `resource_tracker`
//! process, which unlinks (with a warning) every segment the program
//! created or opened and did not unlink, once the program has ended,
//! however it ended. That tracker cannot know whether *another* program
//! still uses the segment, and removes it from under it (CPython issue
//! 82300; Python 3.13's `track=False` turns the tracking off, and then
//! nothing removes a segment whose creator was killed). Here every user
//! (the creator and each opener) holds a shared `flock` on its own open of
//! the file for as long as it uses the segment, and hands the file to its
//! program's tracker (`start/tracker/`): one small process per program, a
//! fresh run of it started at its first `create` or `open`, which tries
//! for an exclusive lock on each file it holds. The kernel drops a
//! process's locks when it closes the file or dies, `SIGKILL` included,
//! so a tracker gets its lock exactly when the last user of any program
//! is gone, and then removes the name.
//!
//! A segment is made in an order that leaves no window: a file with no
//! name (`O_TMPFILE`), its memory reserved (`fallocate`: a segment that
//! `/dev/shm` has no room for is an error then, not a `SIGBUS` later), its
//! lock set up, the file handed to the tracker, and only then the name
//! (`linkat`). A creator killed at any point leaves no name, or a tracked
//! one; an opener never finds a half-made segment. An opener refuses a
//! file that another user could reach (see [`SharedMemory::open`]).
//!
//! What remains: a tracker killed on purpose (`SIGKILL`) forgets the names
//! it held (another program that opened the segment has a tracker of its
//! own, which still removes it); and a program of the same user (or root)
//! may shorten the file, after which touching the lost pages is a
//! `SIGBUS`, or remove the name early.
//!
//! Files: `mod.rs` (this file), [`SharedMemory`] and its guard;
//! `segment.rs`, the file and its mapping.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytemuck::Pod;

use crate::base::{Error, Result};
use crate::os::mutex::RawMutex;
use crate::start::tracker;

mod segment;

use segment::{Segment, path_of, unfinished};

/// The segment starts with this header: the robust mutex every view
/// takes, then a word that says the mutex is ready. The data follows, so
/// it is aligned to 64 bytes (the base is page-aligned).
const HEADER: usize = 64;
const READY_AT: usize = 48;
/// Written last by the creator; an opener that sees it knows the mutex is
/// initialised.
const READY: u32 = 0x6d70_7368; // "mpsh"

/// How long an opener waits for a segment that another process is still
/// creating (an older mpcore's, which named it before it was ready).
const CREATING: Duration = Duration::from_secs(2);

/// A named block of shared bytes, Python's
/// `multiprocessing.shared_memory.SharedMemory`.
///
/// | Python | mpcore |
/// | --- | --- |
/// | `shm = SharedMemory(create=True, size=n)` | `let shm = SharedMemory::new(n)?;` (a name is made up) |
/// | `shm = SharedMemory(name="x", create=True, size=n)` | `let shm = SharedMemory::create("x", n)?;` |
/// | `shm = SharedMemory(name="x")` | `let shm = SharedMemory::open("x")?;` |
/// | `shm.name`, `shm.size` | [`SharedMemory::name`], [`SharedMemory::size`] |
/// | `shm.buf[0] = 1` | `shm.lock()?[0] = 1;` (the bytes, under the segment's lock) |
/// | `ShareableList`, `np.ndarray(buffer=shm.buf)` | `shm.lock()?.view_mut::<u64>()?` (any [`bytemuck::Pod`] type) |
/// | `shm.close()` | [`SharedMemory::close`] (or drop it) |
/// | `shm.unlink()` | [`SharedMemory::unlink`] |
///
/// ```
/// use mpcore::SharedMemory;
///
/// let name = format!("mpcore-doc-{}", std::process::id());
/// let shm = SharedMemory::create(&name, 4 * 8)?;
/// shm.lock()?.view_mut::<u64>()?.copy_from_slice(&[1, 2, 3, 4]);
///
/// // In another program, started on its own: the name is all it needs.
/// let other = SharedMemory::open(&name)?;
/// assert_eq!(other.size(), 32);
/// assert_eq!(other.lock()?.view::<u64>()?, &[1, 2, 3, 4]);
/// # Ok::<(), mpcore::Error>(())
/// ```
///
/// # How it differs from Python
///
/// - The bytes are reached only under the segment's own lock (a robust,
///   process-shared mutex in its first bytes), never as a bare `buf`:
///   another process may write them at any moment, and Rust does not let
///   safe code read memory while someone else writes it.
/// - The name goes away by itself once the last process using the segment,
///   in any program, has dropped it or died, `SIGKILL` included, and never
///   before. Python's `resource_tracker` removes it when the program that
///   created (or opened) it ends, even while another program still uses
///   it. [`unlink`](SharedMemory::unlink) still removes the name at once,
///   as in Python.
/// - A name cannot be reused while its segment is being removed:
///   [`open`](SharedMemory::open) then says so ([`Error::SegmentRemoved`]).
/// - The memory is reserved when the segment is made, as a file of that
///   size in `/dev/shm` (Python's is sparse, its pages taken at first
///   use): a segment larger than `/dev/shm` has room for is an error of
///   [`create`](SharedMemory::create), where Python's segment kills its
///   process with `SIGBUS` when it reaches the missing pages.
/// - [`open`](SharedMemory::open) refuses a segment that another user
///   could reach; Python opens whatever the name leads to.
///
/// # What is promised, and what is not
///
/// - Each program runs one tracker, whatever the number of segments it
///   makes or opens: a small process (`mpcore-tracker` in `ps`), a fresh
///   run of the program started by its first `create` or `open`, holding
///   none of the program's memory or descriptors. It is the program's
///   child, in a session of its own, and ignores the signals that ask a
///   process to stop (`SIGTERM`, `SIGINT`, `SIGHUP`, ...): `killall
///   -TERM`, `pkill` or `systemctl stop` end the program, and the tracker
///   then removes each name whose last user is gone, and exits once none
///   is left. A forked child uses its parent's tracker.
/// - A name goes within a moment of its last user: the tracker hears of
///   each close at once (`inotify`), and looks at each segment at least
///   once a second in any case.
/// - Not covered: a tracker killed on purpose (`SIGKILL`) forgets the
///   names it held (a program that opened the segment has a tracker of
///   its own, which still removes it). A program of the same user, or
///   root, can shorten the file (`ftruncate`), after which touching the
///   pages past its new end kills the process with `SIGBUS`, or remove
///   the name early: the kernel gives a file's owner no way to forbid
///   either, so a segment is only as safe as the programs of its user.
/// - The tracker is a fresh run of the program itself, so `create` and
///   `open` fail in a program that runs with secure execution (set-user-ID,
///   set-group-ID or file capabilities) and where mpcore is in a shared
///   library rather than in the program.
///
/// # Errors
///
/// The calls that take the lock return [`Error::OwnerDied`] when a process
/// died holding it (the lock is repaired and released: call again), and
/// [`Error::WouldDeadlock`] when this thread holds it already.
pub struct SharedMemory {
    mutex: RawMutex,
    /// The file (holding the shared `flock` that tells the tracker this
    /// process still uses the segment) and its mapping.
    segment: Segment,
    name: String,
    size: usize,
}

// SAFETY: `Segment` is only a mapping (a pointer, a length and a
// descriptor), which any thread may use or unmap; the bytes in it are
// reached only under the process-shared mutex, as with `Value`.
unsafe impl Send for SharedMemory {}
// SAFETY: as above: `&SharedMemory` hands out the bytes only under the
// mutex, like `&Mutex<[u8]>`.
unsafe impl Sync for SharedMemory {}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory")
            .field("name", &self.name)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl SharedMemory {
    /// A new segment of `size` bytes, all zero, under a name made up from
    /// this process's id (Python's `SharedMemory(create=True, size=n)`).
    /// Hand [`name`](SharedMemory::name) to the program that should open it.
    ///
    /// # Errors
    ///
    /// As [`create`](SharedMemory::create).
    pub fn new(size: usize) -> Result<SharedMemory> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        loop {
            let name = format!(
                "mpcore-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            match SharedMemory::create(&name, size) {
                // A name of an earlier process with the same id.
                Err(Error::NameExists { .. }) => continue,
                other => return other,
            }
        }
    }

    /// A new segment of `size` bytes, all zero, named `name` (Python's
    /// `SharedMemory(name=name, create=True, size=n)`): `/dev/shm/<name>`,
    /// readable and writable by this user only. Its memory is reserved
    /// now, and counts as used in `/dev/shm` from now on.
    ///
    /// # Errors
    ///
    /// [`Error::NameExists`] when a segment has that name already;
    /// [`Error::BadSegment`] for a size of 0, a size that `/dev/shm` has
    /// no room for (`ENOSPC`, its free and total bytes in the message) or
    /// that this process may not make (`ulimit -f`), or a name that is
    /// empty, too long or holds a `/`; [`Error::Os`] when the system
    /// refuses, e.g. `EAGAIN` when the program's tracker cannot be started
    /// under a process limit (no name is left behind then), and
    /// [`Error::Io`] when it cannot be started at all (a program with
    /// secure execution, or mpcore in a shared library) or does not take
    /// the segment within 10 s (a stopped tracker).
    pub fn create(name: &str, size: usize) -> Result<SharedMemory> {
        let path = path_of(name)?;
        if size == 0 {
            return Err(Error::BadSegment {
                what: "cannot make a shared memory segment of 0 bytes: ask for at least one byte"
                    .to_owned(),
            });
        }
        let total = size.checked_add(HEADER).ok_or_else(|| Error::BadSegment {
            what: format!(
                "cannot make a shared memory segment of {size} bytes: that is more than \
                 memory can hold"
            ),
        })?;
        // A file with no name yet: if anything below fails, or this
        // process dies, it goes with its last descriptor, and nothing is
        // left in /dev/shm.
        let segment = Segment::create(size, total)?;
        // SAFETY: the mapping is fresh, page-aligned and `total` bytes
        // long; nobody else can reach it before it is named below.
        let mutex = unsafe { RawMutex::init(segment.as_ptr())? };
        ready_word(&segment).store(READY, Ordering::Release);
        // The tracker holds the file before it has a name, so that a name
        // never exists untracked.
        tracker::track(segment.fd(), name)?;
        segment.link(&path, name)?;
        Ok(SharedMemory {
            mutex,
            segment,
            name: name.to_owned(),
            size,
        })
    }

    /// Opens the segment that another process created under `name`
    /// (Python's `SharedMemory(name=name)`), as one more of its users.
    ///
    /// Only a segment that no other user can reach is opened: a regular
    /// file (not a symbolic link) that belongs to the user this process
    /// runs as (its effective id), and that neither its group nor others
    /// may read or write. Another user's, or one open to others, could be
    /// shortened under us (every touch past its new end a `SIGBUS`) or
    /// written behind its lock.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchName`] when no segment has that name,
    /// [`Error::SegmentRemoved`] when its last user has just gone and it
    /// is being removed, [`Error::BadSegment`] for a name that is empty,
    /// too long or holds a `/`, for a segment refused as above (the
    /// message says why), or for one that its creator never finished
    /// making (it died, or it is not an mpcore segment); as
    /// [`create`](SharedMemory::create) when the program's tracker cannot
    /// be started.
    pub fn open(name: &str) -> Result<SharedMemory> {
        let path = path_of(name)?;
        let segment = Segment::open(&path, name)?;
        // An older mpcore named its segment before it was ready: wait (a
        // little) for that.
        let since = Instant::now();
        while ready_word(&segment).load(Ordering::Acquire) != READY {
            if since.elapsed() > CREATING {
                return Err(unfinished(name));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // SAFETY: READY says the creator initialised the mutex at the
        // start of the mapping, which lives as long as `segment`.
        let mutex = unsafe { RawMutex::at(segment.as_ptr()) };
        // This program's tracker holds it too: if the creator's program
        // and its tracker are gone (a `systemctl stop` ends both, in the
        // end), the name still goes when this program lets go.
        tracker::track(segment.fd(), name)?;
        Ok(SharedMemory {
            mutex,
            size: segment.len() - HEADER,
            segment,
            name: name.to_owned(),
        })
    }

    /// The segment's name, as [`open`](SharedMemory::open) takes it
    /// (Python's `shm.name`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The number of bytes in it (Python's `shm.size`): the size its
    /// creator asked for. (The segment is 64 bytes larger: its lock and a
    /// word that says it is ready come first.)
    pub fn size(&self) -> usize {
        self.size
    }

    /// Takes the segment's lock, waiting as long as it takes, and gives
    /// the bytes (Python's `shm.buf`, under a lock). Dropping the guard
    /// releases it.
    ///
    /// # Errors
    ///
    /// [`Error::OwnerDied`] when a process died holding it,
    /// [`Error::WouldDeadlock`] when this thread holds it already.
    pub fn lock(&self) -> Result<SharedMemoryGuard<'_>> {
        self.mutex.lock()?;
        Ok(SharedMemoryGuard {
            shm: self,
            _this_thread: PhantomData,
        })
    }

    /// Like [`lock`](SharedMemory::lock), but gives up with
    /// [`Error::Timeout`] once `timeout` has passed.
    ///
    /// # Errors
    ///
    /// As [`lock`](SharedMemory::lock), and [`Error::Timeout`].
    pub fn lock_timeout(&self, timeout: Duration) -> Result<SharedMemoryGuard<'_>> {
        self.mutex.lock_timeout(timeout)?;
        Ok(SharedMemoryGuard {
            shm: self,
            _this_thread: PhantomData,
        })
    }

    /// Stops using the segment in this process (Python's `shm.close()`):
    /// the same as dropping it. The last process to do so (or to die)
    /// removes the name.
    pub fn close(self) {}

    /// Removes the name now (Python's `shm.unlink()`): no process can open
    /// the segment any more, while those that have it open go on using it.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchName`] when the name is gone already.
    pub fn unlink(&self) -> Result<()> {
        // Remove only our own segment, not a newer one under the name.
        let path = path_of(&self.name)?;
        if self.segment.is_named(&path)? {
            nix::unistd::unlink(path.as_c_str()).map_err(|e| Error::os("shm_unlink", e))
        } else {
            Err(Error::NoSuchName {
                name: self.name.clone(),
            })
        }
    }

    fn data(&self) -> *mut u8 {
        // SAFETY: the mapping is HEADER + size bytes long.
        unsafe { self.segment.as_ptr().add(HEADER) }
    }
}

/// The segment's bytes, while this thread holds its lock: derefs to
/// `[u8]`, and [`view`](SharedMemoryGuard::view) /
/// [`view_mut`](SharedMemoryGuard::view_mut) see them as a slice of any
/// [`bytemuck::Pod`] type (Python's `ShareableList`, or a NumPy array on
/// `shm.buf`). It is neither `Send` nor `Sync`, so it never leaves the
/// thread that locked (only that thread may unlock):
///
/// ```compile_fail
/// fn needs_send<T: Send>(_: T) {}
/// let shm = mpcore::SharedMemory::new(8).unwrap();
/// needs_send(shm.lock().unwrap());
/// ```
pub struct SharedMemoryGuard<'a> {
    shm: &'a SharedMemory,
    /// A raw pointer is neither `Send` nor `Sync`, and neither is the
    /// guard, whatever `&SharedMemory` is.
    _this_thread: PhantomData<*mut ()>,
}

impl SharedMemoryGuard<'_> {
    /// The bytes as a slice of `T`s.
    ///
    /// # Errors
    ///
    /// [`Error::BadView`] when the size is not a multiple of `T`'s, or `T`
    /// is aligned to more than 64 bytes.
    pub fn view<T: Pod>(&self) -> Result<&[T]> {
        bytemuck::try_cast_slice(self).map_err(|_| bad_view::<T>(self.shm.size))
    }

    /// The bytes as a mutable slice of `T`s.
    ///
    /// # Errors
    ///
    /// As [`view`](SharedMemoryGuard::view).
    pub fn view_mut<T: Pod>(&mut self) -> Result<&mut [T]> {
        let bytes = self.shm.size;
        bytemuck::try_cast_slice_mut(self).map_err(|_| bad_view::<T>(bytes))
    }
}

fn bad_view<T>(bytes: usize) -> Error {
    Error::BadView {
        bytes,
        type_name: std::any::type_name::<T>(),
        size: size_of::<T>(),
    }
}

impl Deref for SharedMemoryGuard<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: this thread holds the segment's lock, and every process
        // reaches the bytes only under it; they live as long as `shm`.
        unsafe { std::slice::from_raw_parts(self.shm.data(), self.shm.size) }
    }
}

impl DerefMut for SharedMemoryGuard<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` makes this the only view
        // through this guard.
        unsafe { std::slice::from_raw_parts_mut(self.shm.data(), self.shm.size) }
    }
}

impl Drop for SharedMemoryGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.shm.mutex.unlock() {
            log::error!(
                "mpcore: a shared memory guard was dropped, but its lock was not released: {e}"
            );
        }
    }
}

impl fmt::Debug for SharedMemoryGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemoryGuard")
            .field("name", &self.shm.name)
            .finish_non_exhaustive()
    }
}

/// The READY word in the header.
fn ready_word(segment: &Segment) -> &AtomicU32 {
    // SAFETY: READY_AT is inside the header and 4-aligned (the base is
    // page-aligned); every process touches the word atomically only.
    unsafe { &*segment.as_ptr().add(READY_AT).cast::<AtomicU32>() }
}
