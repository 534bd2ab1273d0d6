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

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::os::fd::OwnedFd;
use std::sync::Arc;

use bytemuck::Pod;
use nix::errno::Errno;
use serde::{Deserialize, Serialize};

use crate::base::{Error, Result};
use crate::os::memfd::{Segment, align_up};
use crate::os::mutex::{Held, RawMutex};
use crate::wire::handles;

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
fn segment_for<T>(len: usize) -> Result<(Arc<Segment>, RawMutex, *mut T)> {
    let (total, offset) = layout::<T>(len)?;
    let segment = Segment::new(
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
fn segment_from<T>(memfd: OwnedFd, len: usize) -> Result<(Arc<Segment>, RawMutex, *mut T)> {
    let (total, offset) = layout::<T>(len)?;
    let segment = Segment::from_memfd(memfd, total)?;
    // SAFETY: the sender initialised the mutex at the start of the segment
    // (`segment_for`), and the segment lives as long as every handle.
    let mutex = unsafe { RawMutex::at(segment.base()) };
    // SAFETY: as in `segment_for`: the size was checked to be `total`.
    let data = unsafe { segment.base().add(offset) }.cast::<T>();
    Ok((segment, mutex, data))
}

/// One value of plain data that processes share, Python's
/// `multiprocessing.Value`.
///
/// | Python | mpcore |
/// | --- | --- |
/// | `v = mp.Value('i', 0)` | `let v = Value::new(0i32)?;` |
/// | `v = mp.Value('d', 3.14)` | `let v = Value::new(3.14f64)?;` |
/// | `x = v.value` | `let x = v.get()?;` |
/// | `v.value = 5` | `v.set(5)?;` |
/// | `with v.get_lock(): v.value += 1` | `*v.lock()? += 1;` |
///
/// ```
/// use mpcore::{Process, Value};
///
/// let v = Value::new(0i32)?;
/// let mut child = Process::spawn({
///     let v = v.clone();
///     move || v.set(42).is_ok()
/// })?;
/// assert!(child.join()?);
/// assert_eq!(v.get()?, 42);
/// # Ok::<(), mpcore::Error>(())
/// ```
///
/// Make it before [`Process::spawn`](crate::Process::spawn) and move a
/// clone into the child: clones share the one value.
///
/// # Errors
///
/// Every method that takes the lock returns [`Error::OwnerDied`] if a
/// process died while holding it (the lock is repaired and released: call
/// again), and [`Error::WouldDeadlock`] if this thread holds the value's
/// [`lock`](Value::lock) guard already.
pub struct Value<T> {
    segment: Arc<Segment>,
    mutex: RawMutex,
    data: *mut T,
}

// SAFETY: the data lives in `segment`, which every handle keeps alive, and
// is only read or written under the process-shared mutex; a `T` that may be
// sent between threads may be sent between them inside a `Value`.
unsafe impl<T: Pod + Send> Send for Value<T> {}
// SAFETY: as above; `&Value` gives access to the data only under the mutex,
// like `&Mutex<T>` does.
unsafe impl<T: Pod + Send> Sync for Value<T> {}

impl<T> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value {
            segment: Arc::clone(&self.segment),
            mutex: self.mutex,
            data: self.data,
        }
    }
}

/// Shows the type, not the value: reading it would take the lock, and a
/// lock whose holder died would then report that to `Debug` instead of to
/// the next `get`.
impl<T> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Value")
            .field("type", &std::any::type_name::<T>())
            .finish_non_exhaustive()
    }
}

/// A value travels to a spawned child as its memfd's descriptor (see
/// [`process::Builder::spawn_fn`](crate::process::Builder::spawn_fn)); it
/// serializes nowhere else.
impl<T> Serialize for Value<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        handles::serialize(serializer, "Value", self.segment.memfd(), 1)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Value<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (memfd, _) = handles::deserialize(deserializer, "Value")?;
        let (segment, mutex, data) =
            segment_from::<T>(memfd, 1).map_err(|e| handles::map_error("Value", e))?;
        Ok(Value {
            segment,
            mutex,
            data,
        })
    }
}

impl<T: Pod> Value<T> {
    /// A new shared value holding `value` (Python's `mp.Value(code, value)`).
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the shared memory cannot be mapped,
    /// [`Error::AlignmentTooLarge`] for a type aligned to more than a page.
    pub fn new(value: T) -> Result<Value<T>> {
        let (segment, mutex, data) = segment_for::<T>(1)?;
        // SAFETY: `data` is valid and aligned for one `T`, and no other
        // process can see it yet.
        unsafe { data.write(value) };
        Ok(Value {
            segment,
            mutex,
            data,
        })
    }

    /// The current value (Python's `v.value`), read under the lock.
    pub fn get(&self) -> Result<T> {
        self.mutex.lock()?;
        // SAFETY: we hold the mutex, so no process writes while we read.
        let value = unsafe { self.data.read() };
        self.mutex.unlock()?;
        Ok(value)
    }

    /// Replaces the value (Python's `v.value = x`), under the lock.
    pub fn set(&self, value: T) -> Result<()> {
        self.mutex.lock()?;
        // SAFETY: we hold the mutex, so nobody else reads or writes.
        unsafe { self.data.write(value) };
        self.mutex.unlock()
    }

    /// Takes the value's lock and returns a guard that reads and writes the
    /// value in place (Python's `with v.get_lock(): ...`): a
    /// read-modify-write under it, `*v.lock()? += 1`, loses no update.
    pub fn lock(&self) -> Result<ValueGuard<'_, T>> {
        self.mutex.lock()?;
        Ok(ValueGuard {
            _held: Held::new(self.mutex, &self.segment),
            data: self.data,
            _value: PhantomData,
        })
    }
}

/// The value's lock, held; derefs to the value. Dropping it releases the
/// lock.
///
/// Neither `Send` nor `Sync`, on purpose: the thread that locked must
/// unlock, and a guard (or a `&mut` from it) in a child process would let
/// two processes write the value "under the lock" at once.
/// [`Process::spawn`](crate::Process::spawn) takes only `Send + 'static`
/// closures, so neither can get there.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ValueGuard<'a, T> {
    _held: Held,
    data: *mut T,
    _value: PhantomData<&'a mut T>,
}

impl<T> Deref for ValueGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the mutex, so no process writes the data;
        // the segment lives as long as the guard.
        unsafe { &*self.data }
    }
}

impl<T> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`, and `&mut self` makes this the only
        // reference in this process.
        unsafe { &mut *self.data }
    }
}

impl<T: fmt::Debug> fmt::Debug for ValueGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

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
/// As for [`Value`]: [`Error::OwnerDied`] and [`Error::WouldDeadlock`] from
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
impl<T> Serialize for Array<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        handles::serialize(serializer, "Array", self.segment.memfd(), self.len as u64)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Array<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (memfd, len) = handles::deserialize(deserializer, "Array")?;
        let len = usize::try_from(len)
            .map_err(|_| serde::de::Error::custom("an Array too long for this machine"))?;
        let (segment, mutex, data) =
            segment_from::<T>(memfd, len).map_err(|e| handles::map_error("Array", e))?;
        Ok(Array {
            segment,
            mutex,
            data,
            len,
        })
    }
}

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
            _held: Held::new(self.mutex, &self.segment),
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
/// [`ValueGuard`]: the guard, and every `&mut` slice from it, stays in the
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
