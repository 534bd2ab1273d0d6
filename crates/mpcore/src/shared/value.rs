//! [`Value`]: one item of plain data that processes share.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;

use bytemuck::Pod;

use super::{segment_for, segment_from};
use crate::base::Result;
use crate::os::memfd::Segment;
use crate::os::mutex::{Held, RawMutex};
use crate::wire::handles::{Handle, travels_as_descriptor};

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
/// Every method that takes the lock returns [`Error::OwnerDied`](crate::Error::OwnerDied) if a
/// process died while holding it (the lock is repaired and released: call
/// again), and [`Error::WouldDeadlock`](crate::Error::WouldDeadlock) if this thread holds the value's
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
impl<T: Pod> Handle for Value<T> {
    const WHAT: &'static str = "Value";

    fn memfd(&self) -> BorrowedFd<'_> {
        self.segment.memfd()
    }

    fn from_memfd(memfd: OwnedFd, _: u64) -> Result<Self> {
        let (segment, mutex, data) = segment_from::<T>(memfd, 1)?;
        Ok(Value {
            segment,
            mutex,
            data,
        })
    }
}

travels_as_descriptor!(Value<T>);

impl<T: Pod> Value<T> {
    /// A new shared value holding `value` (Python's `mp.Value(code, value)`).
    ///
    /// # Errors
    ///
    /// [`Error::Os`](crate::Error::Os) when the shared memory cannot be mapped,
    /// [`Error::AlignmentTooLarge`](crate::Error::AlignmentTooLarge) for a type aligned to more than a page.
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
            _held: Held::new(self.mutex),
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
