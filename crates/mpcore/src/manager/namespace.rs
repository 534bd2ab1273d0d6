//! [`Namespace`]: Python's `manager.Namespace()`, as one typed value.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::client::{Remote, encode, value};
use super::protocol::{Request, call, value_update};
use crate::base::{Error, Result};

/// One value held by a [`Manager`](super::Manager)'s server (Python's
/// `manager.Namespace()`, whose attributes are here the fields of one
/// typed value).
///
/// ```
/// #[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
/// struct Settings { rounds: u32, label: String }
///
/// let manager = mpcore::Manager::new()?;
/// let ns = manager.namespace(Settings { rounds: 1, label: "a".into() })?;
/// ns.update(|mut s| { s.rounds += 1; s })?;
/// assert_eq!(ns.get()?.rounds, 2);
/// # Ok::<(), mpcore::Error>(())
/// ```
pub struct Namespace<T> {
    remote: Remote,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for Namespace<T> {
    fn clone(&self) -> Self {
        Namespace {
            remote: self.remote.clone(),
            _type: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Namespace<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Namespace(#{})", self.remote.id)
    }
}

impl<T: Serialize + DeserializeOwned> Namespace<T> {
    pub(super) fn new(remote: Remote) -> Self {
        Namespace {
            remote,
            _type: PhantomData,
        }
    }

    /// A clone whose calls give up after `timeout` with
    /// [`Error::Timeout`]. A call that timed out may still be done by the
    /// server later.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Namespace::new(self.remote.with_timeout(timeout))
    }

    /// The value.
    pub fn get(&self) -> Result<T> {
        value(self.remote.call(&Request::NsGet(self.remote.id))?)?.ok_or_else(missing)
    }

    /// Replaces the value; returns the old one.
    pub fn set(&self, new: T) -> Result<T> {
        let request = Request::NsSet(self.remote.id, encode(&new)?);
        value(self.remote.call(&request)?)?.ok_or_else(missing)
    }

    /// Runs `f` on the value in the manager, in one request (atomic, as
    /// [`Dict::update_with`](super::Dict::update_with)); returns the new
    /// value.
    pub fn update(&self, f: fn(T) -> T) -> Result<T> {
        let request = Request::NsUpdate(self.remote.id, call(value_update::<T>, f as usize));
        value(self.remote.call(&request)?)?.ok_or_else(missing)
    }
}

fn missing() -> Error {
    Error::Codec {
        action: "decode",
        reason: "the manager answered without the value".to_owned(),
    }
}

impl<T> Serialize for Namespace<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.remote.serialize(serializer)
    }
}

impl<'de, T> Deserialize<'de> for Namespace<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        Ok(Namespace {
            remote: Remote::deserialize(deserializer)?,
            _type: PhantomData,
        })
    }
}
