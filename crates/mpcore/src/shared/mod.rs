//! `Value` and `Array`: Python's `multiprocessing.Value` and `.Array`, plain
//! data in memory that forked children share.
//!
//! Python picks the element type with a type code (`'i'`, `'d'`, ...);
//! here the Rust type is the type code: any [`bytemuck::Pod`] type, that
//! is, plain bytes with no pointers and no invalid bit patterns (`i32`,
//! `f64`, `[u8; 16]`, a `#[repr(C)]` struct of such). A pointer would mean
//! nothing in another process, and a type with invalid bit patterns
//! (`bool`, `char`) could be handed an invalid one by another process.
//!
//! Each object carries its own robust pthread mutex, like Python's
//! `Value(..., lock=True)`: every `get` and every `set` takes it, so a read
//! never sees half a write. But `v.set(v.get()? + 1)?` is two steps, and
//! another process may write between them: that update is lost, just as
//! with Python's `v.value += 1`, and with no undefined behaviour. To make
//! the whole step atomic, hold the value's own lock
//! (`*v.lock()? += 1`) or a [`Lock`](crate::Lock) around it.
//!
//! - `value.rs`: [`Value`], one item;
//! - `array.rs`: [`Array`], a fixed number of items;
//! - this file: the layout both share (a mutex, then the data).

use std::os::fd::OwnedFd;
use std::sync::Arc;

use nix::errno::Errno;

use crate::base::{Error, Result};
use crate::os::memfd::{Segment, align_up};
use crate::os::mutex::RawMutex;

mod array;
mod value;

pub use array::{Array, ArrayGuard};
pub use value::{Value, ValueGuard};

/// A mutex first, then the data, aligned for `T`: the size of the mapping
/// and the data's offset in it.
fn layout<T>(len: usize) -> Result<(usize, usize)> {
    let offset = align_up(size_of::<libc::pthread_mutex_t>(), align_of::<T>());
    size_of::<T>()
        .checked_mul(len)
        .and_then(|bytes| bytes.checked_add(offset))
        .map(|total| (total, offset))
        .ok_or(Error::os("mmap", Errno::ENOMEM))
}

/// A fresh segment with an initialised mutex at its start; returns the
/// pointer to the (zeroed) data after it.
pub(super) fn segment_for<T>(len: usize) -> Result<(Arc<Segment>, RawMutex, *mut T)> {
    let (total, offset) = layout::<T>(len)?;
    let segment = Segment::shared(
        total,
        align_of::<T>().max(align_of::<libc::pthread_mutex_t>()),
    )?;
    // SAFETY: the segment is fresh and page-aligned, so its start suits a
    // mutex, and it lives as long as every handle (they hold the Arc).
    let mutex = unsafe { RawMutex::init(segment.base())? };
    // SAFETY: `offset` is within the mapping (`layout` sized it), and
    // aligned for `T` because the base is page-aligned.
    let data = unsafe { segment.base().add(offset) }.cast::<T>();
    Ok((segment, mutex, data))
}

/// The segment of a handle that another process made with [`segment_for`]
/// and sent as a memfd: its mutex and its data, as the sender laid them out.
pub(super) fn segment_from<T>(
    memfd: OwnedFd,
    len: usize,
) -> Result<(Arc<Segment>, RawMutex, *mut T)> {
    let (total, offset) = layout::<T>(len)?;
    let segment = Arc::new(Segment::from_memfd(memfd, total)?);
    // SAFETY: the sender initialised the mutex at the start of the segment
    // (`segment_for`), and the segment lives as long as every handle.
    let mutex = unsafe { RawMutex::at(segment.base()) };
    // SAFETY: as in `segment_for`: the size was checked to be `total`.
    let data = unsafe { segment.base().add(offset) }.cast::<T>();
    Ok((segment, mutex, data))
}
