//! [`Array`]: a fixed number of items of plain data that processes share.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;

use bytemuck::Pod;

use super::{segment_for, segment_from};
use crate::base::{Error, Result};
use crate::os::memfd::Segment;
use crate::os::mutex::{Held, RawMutex};
use crate::wire::handles::{Handle, travels_as_descriptor};

/// A fixed-length array of plain data that processes share, Python's
/// `multiprocessing.Array`.
///
/// | Python | mpcore |
/// | --- | --- |
/// | `a = mp.Array('i', [1, 2, 3, 4])` | `let a = Array::new(&[1i32, 2, 3, 4])?;` |
/// | `a = mp.Array('i', 10)` | `let a = Array::<i32>::zeroed(10)?;` |
/// | `a[i]`, `a[i] = x` | `a.get(i)?`, `a.set(i, x)?` |
/// | `a[:]` | `a.to_vec()?` |
/// | `len(a)` | `a.len()` |
/// | `with a.get_lock(): a[0] += 1` | `a.lock()?[0] += 1;` |
///
/// ```
/// use mpcore::{Array, Process};
///
/// let a = Array::new(&[1i32, 2, 3, 4])?;
/// let mut child = Process::spawn({
///     let a = a.clone();
///     move || {
///         let mut items = a.lock().unwrap();
///         items.iter_mut().for_each(|x| *x *= 10);
///     }
/// })?;
/// child.join()?;
/// assert_eq!(a.to_vec()?, [10, 20, 30, 40]);
/// assert!(a.get(4).is_err()); // out of range: an error, not a panic
/// # Ok::<(), mpcore::Error>(())
/// ```
///
/// # Errors
///
/// As for [`Value`](crate::Value): [`Error::OwnerDied`] and [`Error::WouldDeadlock`] from
/// every method that takes the lock; [`Error::IndexOutOfRange`] from `get`
/// and `set`.
pub struct Array<T> {
    segment: Arc<Segment>,
    mutex: RawMutex,
    data: *mut T,
    len: usize,
}

// SAFETY: as for `Value`: the data is only touched under the mutex.
unsafe impl<T: Pod + Send> Send for Array<T> {}
// SAFETY: as for `Value`.
unsafe impl<T: Pod + Send> Sync for Array<T> {}

impl<T> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array {
            segment: Arc::clone(&self.segment),
            mutex: self.mutex,
            data: self.data,
            len: self.len,
        }
    }
}

/// Shows the type and length, not the items, for the reason given at
/// `Value`'s `Debug`.
impl<T> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array")
            .field("type", &std::any::type_name::<T>())
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// An array travels to a spawned child as its memfd's descriptor and its
/// length (see
/// [`process::Builder::spawn_fn`](crate::process::Builder::spawn_fn)); it
/// serializes nowhere else.
impl<T: Pod> Handle for Array<T> {
    const WHAT: &'static str = "Array";

    fn memfd(&self) -> BorrowedFd<'_> {
        self.segment.memfd()
    }

    fn len(&self) -> u64 {
        self.len as u64
    }

    fn from_memfd(memfd: OwnedFd, len: u64) -> Result<Self> {
        let len = usize::try_from(len)
            .map_err(|_| Error::InvalidArgument("an Array too long for this machine"))?;
        let (segment, mutex, data) = segment_from::<T>(memfd, len)?;
        Ok(Array {
            segment,
            mutex,
            data,
            len,
        })
    }
}

travels_as_descriptor!(Array<T>);

impl<T: Pod> Array<T> {
    /// A new shared array holding a copy of `items` (Python's
    /// `mp.Array(code, [...])`).
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the shared memory cannot be mapped,
    /// [`Error::AlignmentTooLarge`] for a type aligned to more than a page.
    pub fn new(items: &[T]) -> Result<Array<T>> {
        let array = Array::zeroed(items.len())?;
        // SAFETY: `data` is valid for `len` items and no other process can
        // see it yet; `items` is a separate slice of ours.
        unsafe { std::ptr::copy_nonoverlapping(items.as_ptr(), array.data, items.len()) };
        Ok(array)
    }

    /// A new shared array of `len` items, all bits zero (Python's
    /// `mp.Array(code, len)`).
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the shared memory cannot be mapped,
    /// [`Error::AlignmentTooLarge`] for a type aligned to more than a page.
    pub fn zeroed(len: usize) -> Result<Array<T>> {
        // A fresh anonymous mapping is zero-filled, and zero bits are a
        // valid `T` for every `Pod` type.
        let (segment, mutex, data) = segment_for::<T>(len)?;
        Ok(Array {
            segment,
            mutex,
            data,
            len,
        })
    }

    /// The number of items, fixed at creation (Python's `len(a)`).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array has no items.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The item at `index` (Python's `a[index]`), read under the lock.
    pub fn get(&self, index: usize) -> Result<T> {
        self.check(index)?;
        self.mutex.lock()?;
        // SAFETY: `index < len`, and we hold the mutex.
        let item = unsafe { self.data.add(index).read() };
        self.mutex.unlock()?;
        Ok(item)
    }

    /// Replaces the item at `index` (Python's `a[index] = item`), under
    /// the lock.
    pub fn set(&self, index: usize, item: T) -> Result<()> {
        self.check(index)?;
        self.mutex.lock()?;
        // SAFETY: `index < len`, and we hold the mutex.
        unsafe { self.data.add(index).write(item) };
        self.mutex.unlock()
    }

    /// A copy of every item, taken under the lock (Python's `a[:]`).
    pub fn to_vec(&self) -> Result<Vec<T>> {
        Ok(self.lock()?.to_vec())
    }

    /// Takes the array's lock and returns a guard that derefs to the items
    /// as a slice (Python's `with a.get_lock(): ...`).
    pub fn lock(&self) -> Result<ArrayGuard<'_, T>> {
        self.mutex.lock()?;
        Ok(ArrayGuard {
            _held: Held::new(self.mutex),
            data: self.data,
            len: self.len,
            _array: PhantomData,
        })
    }

    fn check(&self, index: usize) -> Result<()> {
        if index < self.len {
            Ok(())
        } else {
            Err(Error::IndexOutOfRange {
                index,
                len: self.len,
            })
        }
    }
}

/// The array's lock, held; derefs to the items as a slice. Dropping it
/// releases the lock.
///
/// Neither `Send` nor `Sync`, on purpose, for the reasons given at
/// [`ValueGuard`](crate::ValueGuard): the guard, and every `&mut` slice from it, stays in the
/// thread that took the lock.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ArrayGuard<'a, T> {
    _held: Held,
    data: *mut T,
    len: usize,
    _array: PhantomData<&'a mut [T]>,
}

impl<T> Deref for ArrayGuard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `data` is valid and aligned for `len` items for as long as
        // the guard keeps the segment; the mutex keeps other processes out.
        unsafe { std::slice::from_raw_parts(self.data, self.len) }
    }
}

impl<T> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as for `deref`, and `&mut self` makes this the only
        // reference in this process.
        unsafe { std::slice::from_raw_parts_mut(self.data, self.len) }
    }
}

impl<T: fmt::Debug> fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}
