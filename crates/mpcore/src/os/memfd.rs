//! The memory under [`Value`](crate::Value), [`Array`](crate::Array),
//! [`Lock`](crate::Lock) and [`Event`](crate::Event): one shared mapping of
//! a memfd each.
//!
//! A `MAP_SHARED` mapping gives pages that a `fork` does not copy: parent
//! and child see the very same bytes. An `exec` drops every mapping,
//! though, so a spawned child ([`StartMethod::Spawn`](crate::StartMethod))
//! needs something it can map again: the memfd's descriptor, which travels
//! with the child's argument (see `handles.rs`). A memfd has no name in any
//! file system, so nothing ever appears in `/dev/shm` and nothing can be
//! left there, not after a panic and not after a `SIGKILL`: the kernel
//! frees the pages when the last descriptor and the last mapping are gone.
//! With no name there is also no file whose permissions another user could
//! get past; only this process, the children it forks and those it hands
//! the descriptor to can reach it. (A named segment from the
//! `shared_memory` crate would need `shm_open` plus an immediate
//! `shm_unlink` to give the same guarantees, and would still leak if the
//! process died between the two calls.)
//!
//! The price is one open descriptor per segment, which counts against the
//! process's limit (`ulimit -n`), as the memfd under each
//! [`Queue`](crate::Queue) already did.

use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;

use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

use crate::base::{Error, Result};

/// Every mapping starts on a page boundary; 4096 bytes is the smallest page
/// Linux has, so any alignment up to it is met at offset 0.
const MIN_PAGE: usize = 4096;

/// One shared mapping, unmapped when the last handle in this process drops.
/// The handles (`Value`, `Lock`, ...) hold it in an [`Arc`], and so do their
/// guards: a guard that is `mem::forget`-ed keeps the mapping alive, so a
/// locked mutex is never unmapped while glibc still lists it as held.
#[derive(Debug)]
pub(crate) struct Segment {
    base: NonNull<u8>,
    len: NonZeroUsize,
    /// Kept open so that the segment can be handed to a spawned child.
    memfd: OwnedFd,
}

// SAFETY: the segment only owns the mapping; every access to the bytes in
// it goes through atomics or under the process-shared mutex it holds, which
// is exactly what makes it safe to use from several processes, and so from
// several threads too.
unsafe impl Send for Segment {}
// SAFETY: as above: `&Segment` hands out only a raw pointer, and the types
// built on it synchronise every access themselves.
unsafe impl Sync for Segment {}

impl Segment {
    /// A new zero-filled shared mapping of at least `len` bytes (at least
    /// one), readable and writable, whose first byte is aligned to `align`.
    pub(crate) fn new(name: &str, len: usize, align: usize) -> Result<Segment> {
        if align > MIN_PAGE {
            // A page-aligned mapping cannot promise more than that.
            return Err(Error::AlignmentTooLarge { align });
        }
        let len = NonZeroUsize::new(len).unwrap_or(NonZeroUsize::MIN);
        let memfd =
            memfd_create(name, MFdFlags::MFD_CLOEXEC).map_err(|e| Error::os("memfd_create", e))?;
        let size = i64::try_from(len.get())
            .map_err(|_| Error::os("ftruncate", nix::errno::Errno::EFBIG))?;
        nix::unistd::ftruncate(&memfd, size).map_err(|e| Error::os("ftruncate", e))?;
        Segment::map(memfd, len)
    }

    /// [`Segment::new`] for the handles that share one mapping among
    /// their clones and guards (`Value`, `Lock`, ...): named
    /// `mpcore-shared`, in an [`Arc`].
    pub(crate) fn shared(len: usize, align: usize) -> Result<Arc<Segment>> {
        Segment::new("mpcore-shared", len, align).map(Arc::new)
    }

    /// Maps a segment that another process made and sent as a descriptor.
    /// The memfd must be exactly `len` bytes long (at least one), as
    /// [`Segment::new`] made it: a different size means that the sender's
    /// handle was of another type, and is refused rather than read.
    pub(crate) fn from_memfd(memfd: OwnedFd, len: usize) -> Result<Segment> {
        let len = NonZeroUsize::new(len).unwrap_or(NonZeroUsize::MIN);
        let stat = nix::sys::stat::fstat(memfd.as_fd()).map_err(|e| Error::os("fstat", e))?;
        if usize::try_from(stat.st_size).ok() != Some(len.get()) {
            return Err(Error::InvalidArgument(
                "the shared memory received does not have the size of the handle it was sent as; \
                 give the spawned function's argument the same types as the sender's",
            ));
        }
        Segment::map(memfd, len)
    }

    fn map(memfd: OwnedFd, len: NonZeroUsize) -> Result<Segment> {
        // The memfd is `len` bytes long, and ours.
        let base = map_shared(memfd.as_fd(), len)?;
        Ok(Segment { base, len, memfd })
    }

    /// The first byte of the mapping; valid for `len` bytes while `self` lives.
    pub(crate) fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// The memfd under the mapping, to send to a spawned child.
    pub(crate) fn memfd(&self) -> BorrowedFd<'_> {
        self.memfd.as_fd()
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: we mapped exactly `len` bytes at `base`, and this is the
        // last handle in this process (it is only dropped through its Arc),
        // so nothing here uses the pages any more. Other processes keep
        // their own mapping of the same pages.
        let _ = unsafe { munmap(self.base.cast(), self.len.get()) };
    }
}

/// Rounds `offset` up to a multiple of `align` (a power of two).
pub(crate) fn align_up(offset: usize, align: usize) -> usize {
    offset.next_multiple_of(align)
}

/// Maps the first `len` bytes of `file`, shared, readable and writable,
/// at an address of the kernel's choice. What the bytes may be used for
/// is the caller's to know: the file must stay that long while they are
/// (a file that shrinks under a mapping kills its reader with `SIGBUS`).
pub(crate) fn map_shared(file: BorrowedFd<'_>, len: NonZeroUsize) -> Result<NonNull<u8>> {
    // SAFETY: without `MAP_FIXED`, the kernel puts the mapping where
    // nothing of ours is, so making it changes no memory we use.
    let base = unsafe {
        mmap(
            None,
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
            file,
            0,
        )
    }
    .map_err(|e| Error::os("mmap", e))?;
    Ok(base.cast())
}
