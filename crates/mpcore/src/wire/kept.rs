//! A kept memfd as both its ends see it: one page of header, whose first
//! word says who may touch the bytes after it, then the bytes; mapped
//! once by its sender and by each receiver (`large.rs` says who keeps
//! which, and why). Below `channel.rs`, which reads a message in one
//! that arrives where nobody keeps mappings.

use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering;

use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::mman::munmap;

use crate::base::{Error, Result};
use crate::os::memfd::map_shared;

/// The page before a slot's bytes; its first word is the state.
pub(super) const HEADER: usize = 4096;
/// The state word's values.
pub(super) const FREE: u32 = 0;
pub(super) const BUSY: u32 = 1;
pub(super) const RETIRED: u32 = 2;
/// One shared mapping of a whole memfd, unmapped when dropped.
pub(super) struct Map {
    base: NonNull<u8>,
    pub(super) len: NonZeroUsize,
}

// SAFETY: the mapping is shared memory meant for many processes: its
// state word is only used through an atomic, and its bytes only copied
// in or out with raw pointers, never through a reference.
unsafe impl Send for Map {}
// SAFETY: as above.
unsafe impl Sync for Map {}

impl Map {
    /// Maps all `len` bytes of `memfd`, which must be sealed against
    /// shrinking or be ours.
    pub(super) fn new(memfd: BorrowedFd<'_>, len: usize) -> Result<Map> {
        let len = NonZeroUsize::new(len).ok_or_else(|| too_short(0, 0))?;
        // The file is `len` bytes long and cannot shrink (sealed, or ours),
        // so every byte of the mapping stays there.
        let base = map_shared(memfd, len)?;
        Ok(Map { base, len })
    }

    pub(super) fn state(&self) -> &AtomicU32 {
        // SAFETY: the mapping is at least a page long (checked by every
        // caller of `new`), page-aligned, and lives as long as `self`; the
        // word is only ever used as an atomic, here and in every peer.
        unsafe { &*self.base.as_ptr().cast::<AtomicU32>() }
    }

    /// The first byte after the header.
    pub(super) fn data(&self) -> *mut u8 {
        // SAFETY: the mapping is longer than HEADER (checked by every
        // caller of `new`).
        unsafe { self.base.as_ptr().add(HEADER) }
    }

    /// How many bytes fit after the header.
    pub(super) fn room(&self) -> usize {
        self.len.get() - HEADER
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: we mapped exactly `len` bytes at `base`, and every user
        // holds the `Map` (through an `Arc`), so nobody uses them now.
        let _ = unsafe { munmap(self.base.cast(), self.len.get()) };
    }
}

/// A file by its device and inode.
pub(super) type FileId = (u64, u64);

/// Reads a message in a kept memfd that arrived where no [`Inbox`] is: the
/// memfd is mapped for this message only.
pub(super) fn read_once(memfd: OwnedFd, len: usize) -> Result<Vec<u8>> {
    let (_, size) = checked(memfd.as_fd(), len)?;
    let map = sealed_map(memfd.as_fd(), size)?;
    copy_out(&map, len)
}

/// The file behind `memfd` (device, inode) and its size, once it is known
/// to hold a header and `len` bytes.
pub(super) fn checked(memfd: BorrowedFd<'_>, len: usize) -> Result<(FileId, usize)> {
    let stat = nix::sys::stat::fstat(memfd).map_err(|e| Error::os("fstat", e))?;
    let size = usize::try_from(stat.st_size).unwrap_or(0);
    if size <= HEADER || size - HEADER < len {
        return Err(too_short(len, size));
    }
    Ok(((stat.st_dev, stat.st_ino), size))
}

/// Maps `memfd` of `size` bytes if it is ordinary shared memory (tmpfs:
/// a huge-page memfd could fail a read with `SIGBUS` when huge pages run
/// out) sealed against shrinking.
pub(super) fn sealed_map(memfd: BorrowedFd<'_>, size: usize) -> Result<Map> {
    let fs = nix::sys::statfs::fstatfs(memfd).map_err(|e| Error::os("fstatfs", e))?;
    let seals = fcntl(memfd, FcntlArg::F_GET_SEALS).map_err(|e| Error::os("fcntl", e))?;
    if fs.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC
        || !SealFlag::from_bits_truncate(seals).contains(SealFlag::F_SEAL_SHRINK)
    {
        return Err(Error::Codec {
            action: "decode",
            reason: "a message came in memory that its sender could still shrink \
                     (not sealed), or that is not ordinary shared memory: it is not read"
                .to_owned(),
        });
    }
    Map::new(memfd, size)
}

/// Copies the message's `len` bytes out of `map` (which has room for
/// them), then makes the slot free for its sender. A length this process
/// has no memory for is an error, not an abort: the memory was the
/// sender's to make as large as it liked.
pub(super) fn copy_out(map: &Map, len: usize) -> Result<Vec<u8>> {
    let mut bytes = room_for(len)?;
    // SAFETY: `map` has room for `len` bytes after its header (`checked`);
    // the destination is our own, with capacity for `len`, and every byte
    // value is a valid `u8`. The source is copied through raw pointers,
    // never a reference: a dishonest peer writing there meanwhile spoils
    // only the bytes of this message, as with the queue's ring.
    unsafe {
        std::ptr::copy_nonoverlapping(map.data(), bytes.as_mut_ptr(), len);
        bytes.set_len(len);
    }
    // After the copy: the sender's compare-and-swap (Acquire) sees it done.
    map.state().store(FREE, Ordering::Release);
    Ok(bytes)
}

/// An empty `Vec` with room for a received message of `len` bytes; an
/// error, not an abort, when this process has no memory for that many.
pub(super) fn room_for(len: usize) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(len).map_err(|_| Error::Codec {
        action: "decode",
        reason: format!("a message of {len} bytes does not fit in this process's memory"),
    })?;
    Ok(bytes)
}

pub(super) fn too_short(len: usize, size: usize) -> Error {
    Error::Codec {
        action: "decode",
        reason: format!(
            "a message of {len} bytes came in memory of {size} bytes, too short to hold it"
        ),
    }
}
