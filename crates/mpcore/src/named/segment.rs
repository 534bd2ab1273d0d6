//! A segment's file in `/dev/shm` and its mapping: made with no name,
//! its memory reserved, then named in one step; or opened by name, once
//! it is known to be ours alone.

use std::ffi::{CStr, CString};
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, FallocateFlags, OFlag, fallocate, open};
use nix::sys::mman::munmap;
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, lstat};
use nix::unistd::{Uid, linkat};

use crate::base::{Error, Result};
use crate::os::memfd::map_shared;
use crate::start::tracker::SHM_DIR;

/// How long an opener waits for a segment that another process is still
/// making (an older mpcore's, which sized it after naming it).
const CREATING: Duration = Duration::from_secs(2);

/// A segment's open file (holding this process's shared `flock`, which
/// says that it uses the segment) and its mapping, unmapped on drop.
pub(super) struct Segment {
    file: OwnedFd,
    at: NonNull<u8>,
    len: usize,
}

impl Segment {
    /// A new file in `/dev/shm` with no name yet, `len` bytes long (the
    /// caller's `size` plus the header), all zero, owner-only, with its
    /// memory reserved now: a segment that `/dev/shm` has no room for is
    /// an error here, not a `SIGBUS` at its first use. Locked shared,
    /// and mapped.
    pub(super) fn create(size: usize, len: usize) -> Result<Segment> {
        let too_big = |why: String| Error::BadSegment {
            what: format!("cannot make a shared memory segment of {size} bytes: {why}"),
        };
        let bytes = i64::try_from(len)
            .map_err(|_| too_big("that is more than a file can hold".to_owned()))?;
        // Past the file size limit the kernel would send SIGXFSZ, which
        // kills the process: say so instead.
        if let Ok((limit, _)) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_FSIZE)
        {
            if limit != libc::RLIM_INFINITY && len as u64 > limit {
                return Err(too_big(format!(
                    "this process may not make a file larger than {limit} bytes (ulimit -f)"
                )));
            }
        }
        // O_TMPFILE: a file in /dev/shm that no name leads to yet, so
        // nothing is left there if we die before it is named and tracked.
        let file = open(
            SHM_DIR,
            OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC,
            Mode::S_IRUSR | Mode::S_IWUSR,
        )
        .map_err(|e| Error::os("open(/dev/shm, O_TMPFILE)", e))?;
        // The mode is exactly 0600, whatever the umask took away.
        fchmod(&file, Mode::S_IRUSR | Mode::S_IWUSR).map_err(|e| Error::os("fchmod", e))?;
        match fallocate(&file, FallocateFlags::empty(), 0, bytes) {
            Ok(()) => {}
            Err(Errno::ENOSPC) => {
                let (free, total) = space_in_shm_dir();
                return Err(too_big(format!(
                    "{SHM_DIR} has {free} bytes free of {total} (ENOSPC): ask for less, free \
                     some there, or give {SHM_DIR} more room (docker run --shm-size, say)"
                )));
            }
            Err(Errno::EFBIG) => {
                return Err(too_big(format!(
                    "that is more than a file in {SHM_DIR} can hold (EFBIG)"
                )));
            }
            Err(e) => return Err(Error::os("fallocate", e)),
        }
        flock(file.as_fd(), libc::LOCK_SH).map_err(|e| Error::os("flock", e))?;
        Segment::map(file, len)
    }

    /// Gives the file the name `path`, in one step: it was unreachable
    /// until now, and is complete from now on.
    pub(super) fn link(&self, path: &CStr, name: &str) -> Result<()> {
        let ours = format!("/proc/self/fd/{}", self.file.as_raw_fd());
        match linkat(
            nix::fcntl::AT_FDCWD,
            ours.as_str(),
            nix::fcntl::AT_FDCWD,
            path,
            AtFlags::AT_SYMLINK_FOLLOW,
        ) {
            Ok(()) => Ok(()),
            Err(Errno::EEXIST) => Err(Error::NameExists {
                name: name.to_owned(),
            }),
            Err(e) => Err(Error::os("linkat", e)),
        }
    }

    /// Opens the segment named `path` (`name` in `/dev/shm`), as one of
    /// its users: only a regular file that belongs to this process's
    /// (effective) user and that nobody else may read or write, whose
    /// last user has not gone yet.
    pub(super) fn open(path: &CStr, name: &str) -> Result<Segment> {
        let file = open(
            path,
            OFlag::O_RDWR
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC
                | OFlag::O_NOCTTY
                | OFlag::O_NONBLOCK,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::ENOENT => Error::NoSuchName {
                name: name.to_owned(),
            },
            Errno::ELOOP => refused(name, "it is a symbolic link, not a segment".to_owned()),
            e => Error::os("open", e),
        })?;
        let stat = fstat(&file).map_err(|e| Error::os("fstat", e))?;
        check_owner_only(&stat, name)?;
        match flock(file.as_fd(), libc::LOCK_SH | libc::LOCK_NB) {
            Ok(()) => {}
            Err(Errno::EWOULDBLOCK) => {
                return Err(Error::SegmentRemoved {
                    name: name.to_owned(),
                });
            }
            Err(e) => return Err(Error::os("flock", e)),
        }
        // Between our open and our lock the last user may have gone, and
        // the name with it: then this file is nobody's any more.
        if !names(path, &stat) {
            return Err(Error::NoSuchName {
                name: name.to_owned(),
            });
        }
        // A segment that another mpcore is still making is sized, then
        // initialised: wait (a little) for its size.
        let since = Instant::now();
        let len = loop {
            let len = fstat(&file).map_err(|e| Error::os("fstat", e))?.st_size;
            if len > super::HEADER as i64 {
                break len;
            }
            if since.elapsed() > CREATING {
                return Err(unfinished(name));
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let len = usize::try_from(len)
            .ok()
            .filter(|&len| len <= isize::MAX as usize)
            .ok_or_else(|| refused(name, format!("its size ({len} bytes) cannot be mapped")))?;
        Segment::map(file, len)
    }

    /// Maps `len` bytes of `file`, shared.
    fn map(file: OwnedFd, len: usize) -> Result<Segment> {
        let length = NonZeroUsize::new(len).ok_or(Error::InvalidArgument("an empty segment"))?;
        let at = map_shared(file.as_fd(), length)?;
        Ok(Segment { file, at, len })
    }

    /// Whether `path` still names this file.
    pub(super) fn is_named(&self, path: &CStr) -> Result<bool> {
        let ours = fstat(&self.file).map_err(|e| Error::os("fstat", e))?;
        Ok(names(path, &ours))
    }

    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// The start of the mapping (page-aligned).
    pub(super) fn as_ptr(&self) -> *mut u8 {
        self.at.as_ptr()
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: our own mapping, of this length; nothing refers to it
        // past this point (the `SharedMemory` that owns us is going, and
        // its guards borrow it). The file closes after, and with it this
        // process's lock.
        let _ = unsafe { munmap(self.at.cast(), self.len) };
    }
}

/// `/dev/shm/<name>`, for a name that `shm_open` takes as one file.
pub(super) fn path_of(name: &str) -> Result<CString> {
    let what = if name.is_empty() {
        "a shared memory segment cannot have an empty name: give it one"
    } else if name.contains('/') || name.contains('\0') || name == "." || name == ".." {
        "a shared memory segment's name cannot hold a '/' or a NUL, nor be '.' or '..': \
         Python adds the leading '/' itself, and so does mpcore, so leave it out"
    } else if name.len() > 255 {
        // NAME_MAX; `shm_open` adds nothing to the name on Linux.
        "a shared memory segment's name cannot be longer than 255 bytes: use a shorter one"
    } else {
        return CString::new(format!("{SHM_DIR}/{name}")).map_err(|_| Error::BadSegment {
            what: "a shared memory segment's name cannot hold a NUL".to_owned(),
        });
    };
    Err(Error::BadSegment {
        what: what.to_owned(),
    })
}

/// Refuses a segment that another user could reach: one that is not a
/// regular file, belongs to another user, or lets others in. Such a user
/// could shorten the file under us (every access past its new end is a
/// `SIGBUS`), or write the bytes and the lock behind our backs.
fn check_owner_only(stat: &FileStat, name: &str) -> Result<()> {
    let euid = Uid::effective().as_raw();
    if SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFREG {
        return Err(refused(name, "it is not a regular file".to_owned()));
    }
    if stat.st_uid != euid {
        return Err(refused(
            name,
            format!(
                "it belongs to user {}, not to user {euid}, whom this process runs as; another \
                 user could shorten it under us (a SIGBUS) or change it behind its lock",
                stat.st_uid
            ),
        ));
    }
    let mode = stat.st_mode & 0o7777;
    if mode & 0o077 != 0 {
        return Err(refused(
            name,
            format!(
                "its mode {mode:04o} lets other users in, who could shorten it under us (a \
                 SIGBUS) or change it behind its lock; mpcore makes its segments readable and \
                 writable by their owner only (0600)"
            ),
        ));
    }
    Ok(())
}

fn refused(name: &str, why: String) -> Error {
    Error::BadSegment {
        what: format!("refusing to open the shared memory segment {name:?}: {why}"),
    }
}

/// The error for a segment that its creator never finished making.
pub(super) fn unfinished(name: &str) -> Error {
    Error::BadSegment {
        what: format!(
            "cannot open the shared memory segment {name:?}: its creator never finished \
             making it (it died while doing so, or the segment is not one of mpcore's): \
             remove /dev/shm/{name} and create it anew"
        ),
    }
}

/// Whether `path` names the file `ours` describes (not following a
/// symbolic link).
fn names(path: &CStr, ours: &FileStat) -> bool {
    lstat(path).is_ok_and(|now| now.st_ino == ours.st_ino && now.st_dev == ours.st_dev)
}

/// The free and total bytes of `/dev/shm`, for an error message (0 and 0
/// if it cannot be told).
fn space_in_shm_dir() -> (u64, u64) {
    nix::sys::statvfs::statvfs(SHM_DIR).map_or((0, 0), |s| {
        let unit = s.fragment_size();
        (
            s.blocks_available().saturating_mul(unit),
            s.blocks().saturating_mul(unit),
        )
    })
}

/// `flock(2)` on a file we hold open. (nix's `Flock` owns the file and
/// unlocks on drop; here the lock lives exactly as long as the file, which
/// the kernel already ensures.)
fn flock(file: BorrowedFd<'_>, operation: libc::c_int) -> std::result::Result<(), Errno> {
    loop {
        // SAFETY: a valid descriptor that `file` borrows; flock touches no
        // memory of ours.
        match Errno::result(unsafe { libc::flock(file.as_raw_fd(), operation) }) {
            Err(Errno::EINTR) => continue,
            other => return other.map(drop),
        }
    }
}
