//! `SharedMemory`: Python's `multiprocessing.shared_memory.SharedMemory`, a
//! block of bytes with a name, which a program that is *not* a child opens
//! by that name.
//!
//! Forked children need no name: they inherit [`Value`](crate::Value) and
//! [`Array`](crate::Array)'s anonymous mappings. A second program started
//! on its own has nothing to inherit, so the segment gets a name in
//! `/dev/shm`, through the [`shared_memory`] crate (`shm_open` + `mmap`;
//! it creates the file owner-only, mode 0600).
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
//! the file for as long as it uses the segment, and the creator starts a
//! small tracker process that waits for an exclusive `flock` on the same
//! file. The kernel drops a process's locks when it closes the file or
//! dies, `SIGKILL` included, so the tracker gets its lock exactly when the
//! last user is gone; it then removes the name and exits. It runs in a
//! session of its own (a double fork: nobody's zombie, out of reach of the
//! terminal's Ctrl-C) and holds no other descriptor of its creator's.
//!
//! Two windows remain, each a few system calls wide: a creator killed
//! between creating the name and starting the tracker leaves the name
//! behind, and so does a tracker killed on purpose.
//!
//! Files: `mod.rs` (this file), [`SharedMemory`] and its guard;
//! `tracker.rs`, the process that removes a name.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytemuck::Pod;
use nix::errno::Errno;
use shared_memory::{Shmem, ShmemConf, ShmemError};

use crate::base::{Error, Result};
use crate::os::mutex::RawMutex;

mod tracker;

use tracker::start_tracker;

/// Where POSIX shared memory lives on Linux: `shm_open("/x")` is
/// `/dev/shm/x`.
const SHM_DIR: &str = "/dev/shm";

/// The segment starts with this header: the robust mutex every view
/// takes, then a word that says the mutex is ready. The data follows, so
/// it is aligned to 64 bytes (the base is page-aligned).
const HEADER: usize = 64;
const READY_AT: usize = 48;
/// Written last by the creator; an opener that sees it knows the mutex is
/// initialised.
const READY: u32 = 0x6d70_7368; // "mpsh"

/// How long an opener waits for a segment that another process is still
/// creating (sizing it, initialising its lock).
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
///
/// # Errors
///
/// The calls that take the lock return [`Error::OwnerDied`] when a process
/// died holding it (the lock is repaired and released: call again), and
/// [`Error::WouldDeadlock`] when this thread holds it already.
pub struct SharedMemory {
    shmem: Shmem,
    name: String,
    size: usize,
    mutex: RawMutex,
    /// Our own open of the file, holding the shared `flock` that tells the
    /// tracker this process still uses the segment.
    _in_use: File,
}

// SAFETY: `Shmem` is only a mapping (a pointer, a length and a
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
    /// readable and writable by this user only.
    ///
    /// # Errors
    ///
    /// [`Error::NameExists`] when a segment has that name already,
    /// [`Error::BadSegment`] for a size of 0 or a name that is empty, too
    /// long or holds a `/`, [`Error::Os`] when the system refuses.
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
        let mut shmem = ShmemConf::new()
            .os_id(format!("/{name}"))
            .size(total)
            .create()
            .map_err(|e| match e {
                ShmemError::MappingIdExists => Error::NameExists {
                    name: name.to_owned(),
                },
                other => shmem_error("shm_open", other),
            })?;
        // The tracker removes the name, not this handle's drop: it knows
        // when the last user is gone.
        shmem.set_owner(false);
        let started = (|| {
            let in_use = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| Error::io("open", e))?;
            // Nobody else can hold the exclusive lock yet: the tracker is
            // started only below.
            flock(&in_use, libc::LOCK_SH).map_err(|e| Error::os("flock", e))?;
            // SAFETY: the mapping is fresh, page-aligned and `total` bytes
            // long; nobody locks its mutex before READY is set below.
            let mutex = unsafe { RawMutex::init(shmem.as_ptr())? };
            ready_word(&shmem).store(READY, Ordering::Release);
            start_tracker(&path)?;
            Ok((in_use, mutex))
        })();
        match started {
            Ok((in_use, mutex)) => Ok(SharedMemory {
                mutex,
                shmem,
                name: name.to_owned(),
                size,
                _in_use: in_use,
            }),
            Err(e) => {
                // No tracker will remove it: do it now.
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Opens the segment that another process created under `name`
    /// (Python's `SharedMemory(name=name)`).
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchName`] when no segment has that name,
    /// [`Error::SegmentRemoved`] when its last user has just gone and it
    /// is being removed, [`Error::BadSegment`] for a name that is empty,
    /// too long or holds a `/`, or for a segment that its creator never
    /// finished making (it died, or it is not an mpcore segment).
    pub fn open(name: &str) -> Result<SharedMemory> {
        let path = path_of(name)?;
        let missing = || Error::NoSuchName {
            name: name.to_owned(),
        };
        let in_use = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => missing(),
                _ => Error::io("open", e),
            })?;
        match flock(&in_use, libc::LOCK_SH | libc::LOCK_NB) {
            Ok(()) => {}
            Err(Errno::EWOULDBLOCK) => {
                return Err(Error::SegmentRemoved {
                    name: name.to_owned(),
                });
            }
            Err(e) => return Err(Error::os("flock", e)),
        }
        // A segment being created is sized, then initialised: wait (a
        // little) for both.
        let since = Instant::now();
        let unfinished = || Error::BadSegment {
            what: format!(
                "cannot open the shared memory segment {name:?}: its creator never finished \
                 making it (it died while doing so, or the segment is not one of mpcore's): \
                 remove /dev/shm/{name} and create it anew"
            ),
        };
        loop {
            let len = in_use.metadata().map_err(|e| Error::io("fstat", e))?.len();
            if len > HEADER as u64 {
                break;
            }
            if since.elapsed() > CREATING {
                return Err(unfinished());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let shmem = ShmemConf::new()
            .os_id(format!("/{name}"))
            .open()
            .map_err(|e| match e {
                ShmemError::MapOpenFailed(errno) if errno == Errno::ENOENT as u32 => missing(),
                other => shmem_error("shm_open", other),
            })?;
        // `shm_open` looked the name up again: make sure it found the file
        // we hold locked, not a new segment made under the same name after
        // an `unlink`.
        let ours = in_use.metadata().map_err(|e| Error::io("fstat", e))?;
        match std::fs::metadata(&path) {
            Ok(now) if now.ino() == ours.ino() && now.dev() == ours.dev() => {}
            _ => return Err(missing()),
        }
        while ready_word(&shmem).load(Ordering::Acquire) != READY {
            if since.elapsed() > CREATING {
                return Err(unfinished());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // SAFETY: READY says the creator initialised the mutex at the
        // start of the mapping, which lives as long as `shmem`.
        let mutex = unsafe { RawMutex::at(shmem.as_ptr()) };
        Ok(SharedMemory {
            mutex,
            size: shmem.len() - HEADER,
            shmem,
            name: name.to_owned(),
            _in_use: in_use,
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
        let ours = self._in_use.metadata().map_err(|e| Error::io("fstat", e))?;
        let path = path_of(&self.name)?;
        match std::fs::metadata(&path) {
            Ok(now) if now.ino() == ours.ino() && now.dev() == ours.dev() => {
                std::fs::remove_file(&path).map_err(|e| Error::io("shm_unlink", e))
            }
            _ => Err(Error::NoSuchName {
                name: self.name.clone(),
            }),
        }
    }

    fn data(&self) -> *mut u8 {
        // SAFETY: the mapping is HEADER + size bytes long.
        unsafe { self.shmem.as_ptr().add(HEADER) }
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

/// `/dev/shm/<name>`, for a name that `shm_open` takes as one file.
fn path_of(name: &str) -> Result<String> {
    // NAME_MAX is 255; `shm_open` adds nothing to the name on Linux.
    let what = if name.is_empty() {
        "a shared memory segment cannot have an empty name: give it one"
    } else if name.contains('/') || name.contains('\0') || name == "." || name == ".." {
        "a shared memory segment's name cannot hold a '/' or a NUL, nor be '.' or '..': \
         Python adds the leading '/' itself, and so does mpcore, so leave it out"
    } else if name.len() > 255 {
        "a shared memory segment's name cannot be longer than 255 bytes: use a shorter one"
    } else {
        return Ok(format!("{SHM_DIR}/{name}"));
    };
    Err(Error::BadSegment {
        what: what.to_owned(),
    })
}

/// `flock(2)` on a file we hold open. (nix's `Flock` owns the file and
/// unlocks on drop; here the lock lives exactly as long as the file, which
/// the kernel already ensures.)
fn flock(file: &File, operation: libc::c_int) -> std::result::Result<(), Errno> {
    loop {
        // SAFETY: a valid descriptor that `file` owns; flock touches no
        // memory of ours.
        match Errno::result(unsafe { libc::flock(file.as_raw_fd(), operation) }) {
            Err(Errno::EINTR) => continue,
            other => return other.map(drop),
        }
    }
}

/// The READY word in the header.
fn ready_word(shmem: &Shmem) -> &AtomicU32 {
    // SAFETY: READY_AT is inside the header and 4-aligned (the base is
    // page-aligned); every process touches the word atomically only.
    unsafe { &*shmem.as_ptr().add(READY_AT).cast::<AtomicU32>() }
}

/// The shared_memory crate's error as mpcore's: an errno stays one.
pub(crate) fn shmem_error(call: &'static str, e: ShmemError) -> Error {
    match e {
        ShmemError::MapCreateFailed(errno)
        | ShmemError::MapOpenFailed(errno)
        | ShmemError::UnknownOsError(errno) => Error::os(call, Errno::from_raw(errno as i32)),
        other => Error::Io {
            call,
            reason: other.to_string(),
        },
    }
}
