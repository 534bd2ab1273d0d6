//! The memory under [`Value`](crate::Value), [`Array`](crate::Array),
//! [`Lock`](crate::Lock) and [`Event`](crate::Event): one anonymous shared
//! mapping each.
//!
//! `mmap(MAP_SHARED | MAP_ANONYMOUS)` gives pages that a `fork` does not
//! copy: parent and child see the very same bytes. The mapping has no name,
//! so nothing ever appears in `/dev/shm` and nothing can be left there, not
//! after a panic and not after a `SIGKILL`: the kernel frees the pages when
//! the last process that maps them unmaps them or dies. With no name there
//! is also no file whose permissions another user could get past; only
//! this process and the children it forks after creating the mapping can
//! reach it. (A named segment from the `shared_memory` crate would need
//! `shm_open` plus an immediate `shm_unlink` to give the same guarantees,
//! and would still leak if the process died between the two calls.)

use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::Arc;

use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, munmap};

use crate::error::{Error, Result};

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
    pub(crate) fn new(len: usize, align: usize) -> Result<Arc<Segment>> {
        if align > MIN_PAGE {
            // A page-aligned mapping cannot promise more than that.
            return Err(Error::AlignmentTooLarge { align });
        }
        let len = NonZeroUsize::new(len).unwrap_or(NonZeroUsize::MIN);
        // SAFETY: an anonymous mapping at an address of the kernel's choice
        // overlaps nothing of ours; we check the result before using it.
        let base = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }
        .map_err(|e| Error::os("mmap", e))?;
        Ok(Arc::new(Segment {
            base: base.cast(),
            len,
        }))
    }

    /// The first byte of the mapping; valid for `len` bytes while `self` lives.
    pub(crate) fn base(&self) -> *mut u8 {
        self.base.as_ptr()
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
