//! [`List`]: Python's `manager.list()`, typed.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::client::{Remote, done, encode, len, many, value};
use super::protocol::{Request, call, sort_call, sort_items, value_update};
use crate::base::{Error, Result};

/// A list held by a [`Manager`](super::Manager)'s server: every method is
/// one request to it (Python's `manager.list()`). An index out of range
/// is [`Error::IndexOutOfRange`], where Python raises `IndexError`.
///
/// ```
/// let manager = mpcore::Manager::new()?;
/// let list = manager.list([3, 1, 2])?;
/// list.push(0)?;
/// list.sort()?;
/// assert_eq!(list.to_vec()?, [0, 1, 2, 3]);
/// # Ok::<(), mpcore::Error>(())
/// ```
pub struct List<T> {
    remote: Remote,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for List<T> {
    fn clone(&self) -> Self {
        List {
            remote: self.remote.clone(),
            _type: PhantomData,
        }
    }
}

impl<T> fmt::Debug for List<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "List(#{})", self.remote.id)
    }
}

impl<T: Serialize + DeserializeOwned> List<T> {
    pub(super) fn new(remote: Remote) -> Self {
        List {
            remote,
            _type: PhantomData,
        }
    }

    /// A clone whose calls give up after `timeout` with
    /// [`Error::Timeout`]. A call that timed out may still be done by the
    /// server later.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        List::new(self.remote.with_timeout(timeout))
    }

    fn id(&self) -> u64 {
        self.remote.id
    }

    /// `l.append(item)`.
    pub fn push(&self, item: T) -> Result<()> {
        done(
            self.remote
                .call(&Request::Push(self.id(), encode(&item)?))?,
        )
    }

    /// Removes the last item and returns it; `None` when the list is
    /// empty (where Python's `l.pop()` raises).
    pub fn pop(&self) -> Result<Option<T>> {
        value(self.remote.call(&Request::Pop(self.id()))?)
    }

    /// `l[index]`.
    pub fn get(&self, index: usize) -> Result<T> {
        let reply = self
            .remote
            .call(&Request::ListGet(self.id(), index as u64))?;
        value(reply)?.ok_or_else(missing)
    }

    /// `l[index] = item`; returns the item it replaced.
    pub fn set(&self, index: usize, item: T) -> Result<T> {
        let request = Request::ListSet(self.id(), index as u64, encode(&item)?);
        value(self.remote.call(&request)?)?.ok_or_else(missing)
    }

    /// `len(l)`.
    pub fn len(&self) -> Result<usize> {
        len(self.remote.call(&Request::Len(self.id()))?)
    }

    /// `len(l) == 0`.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// `l.insert(index, item)`: before `index`, or at the end when `index`
    /// is past it (as Python does).
    pub fn insert(&self, index: usize, item: T) -> Result<()> {
        let request = Request::ListInsert(self.id(), index as u64, encode(&item)?);
        done(self.remote.call(&request)?)
    }

    /// Removes the item at `index` and returns it (Python's `l.pop(index)`;
    /// Python's `l.remove(x)` removes by value instead).
    pub fn remove(&self, index: usize) -> Result<T> {
        let reply = self
            .remote
            .call(&Request::ListRemove(self.id(), index as u64))?;
        value(reply)?.ok_or_else(missing)
    }

    /// `l.extend(items)`: all of them in one request.
    pub fn extend(&self, items: impl IntoIterator<Item = T>) -> Result<()> {
        let items = items
            .into_iter()
            .map(|item| encode(&item))
            .collect::<Result<Vec<_>>>()?;
        done(self.remote.call(&Request::Extend(self.id(), items))?)
    }

    /// `l.clear()`.
    pub fn clear(&self) -> Result<()> {
        done(self.remote.call(&Request::Clear(self.id()))?)
    }

    /// `l.reverse()`.
    pub fn reverse(&self) -> Result<()> {
        done(self.remote.call(&Request::Reverse(self.id()))?)
    }

    /// The items, at one instant (Python's `l[:]`).
    pub fn to_vec(&self) -> Result<Vec<T>> {
        many(self.remote.call(&Request::Snapshot(self.id()))?)
    }

    /// Runs `f` on the item at `index` in the manager, in one request
    /// (atomic, as [`Dict::update_with`](super::Dict::update_with));
    /// returns the new item.
    pub fn update(&self, index: usize, f: fn(T) -> T) -> Result<T> {
        let request =
            Request::ListUpdate(self.id(), index as u64, call(value_update::<T>, f as usize));
        value(self.remote.call(&request)?)?.ok_or_else(missing)
    }
}

impl<T: Ord + Serialize + DeserializeOwned> List<T> {
    /// `l.sort()`: by `T`'s own `Ord`, stable, in the manager. (The server
    /// holds encodings, whose byte order is not `T`'s: `300u32` encodes
    /// as `[172, 2]` and `3` as `[3]`; so it decodes the items with a
    /// function of this program instantiated for `T`.)
    pub fn sort(&self) -> Result<()> {
        done(
            self.remote
                .call(&Request::Sort(self.id(), sort_call(sort_items::<T>)))?,
        )
    }
}

fn missing() -> Error {
    Error::Codec {
        action: "decode",
        reason: "the manager answered without the item".to_owned(),
    }
}

impl<T> Serialize for List<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.remote.serialize(serializer)
    }
}

impl<'de, T> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        Ok(List {
            remote: Remote::deserialize(deserializer)?,
            _type: PhantomData,
        })
    }
}
