//! [`Dict`]: Python's `manager.dict()`, typed.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::client::{Remote, decode, done, encode, len, many, unexpected, value};
use super::protocol::{Reply, Request, call, dict_update};
use crate::base::Result;

/// A dictionary held by a [`Manager`](super::Manager)'s server: every
/// method is one request to it, so every process that holds a clone of
/// the proxy sees the same entries (Python's `manager.dict()`).
///
/// Keys and values travel with serde (postcard). The server compares keys
/// by their encodings, which for a given type is canonical: two equal
/// keys encode alike (but a float key `-0.0` is not `0.0`, and a key that
/// holds a `HashMap` would depend on its iteration order). `keys`,
/// `values` and `items` come in the order of the encodings, not in the
/// order of insertion as in Python.
///
/// ```
/// let manager = mpcore::Manager::new()?;
/// let scores = manager.dict::<String, u32>()?;
/// scores.insert("ada".to_owned(), 3)?;
/// scores.update_with(&"ada".to_owned(), |n| Some(n.unwrap_or(0) + 1))?;
/// assert_eq!(scores.get(&"ada".to_owned())?, Some(4));
/// # Ok::<(), mpcore::Error>(())
/// ```
pub struct Dict<K, V> {
    remote: Remote,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for Dict<K, V> {
    fn clone(&self) -> Self {
        Dict {
            remote: self.remote.clone(),
            _types: PhantomData,
        }
    }
}

impl<K, V> fmt::Debug for Dict<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dict(#{})", self.remote.id)
    }
}

impl<K, V> Dict<K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    pub(super) fn new(remote: Remote) -> Self {
        Dict {
            remote,
            _types: PhantomData,
        }
    }

    /// A clone whose calls give up after `timeout` with
    /// [`Error::Timeout`](crate::Error::Timeout). A call that timed out
    /// may still be done by the server later.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Dict::new(self.remote.with_timeout(timeout))
    }

    /// `d[key] = value`; returns the value it replaced.
    pub fn insert(&self, key: K, value: V) -> Result<Option<V>> {
        let request = Request::Insert(self.remote.id, encode(&key)?, encode(&value)?);
        super::client::value(self.remote.call(&request)?)
    }

    /// `d.get(key)`.
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        value(
            self.remote
                .call(&Request::Get(self.remote.id, encode(key)?))?,
        )
    }

    /// `d.pop(key, None)`: removes the entry, returns its value.
    pub fn remove(&self, key: &K) -> Result<Option<V>> {
        value(
            self.remote
                .call(&Request::Remove(self.remote.id, encode(key)?))?,
        )
    }

    /// `key in d`.
    pub fn contains_key(&self, key: &K) -> Result<bool> {
        match self
            .remote
            .call(&Request::ContainsKey(self.remote.id, encode(key)?))?
        {
            Reply::Bool(there) => Ok(there),
            reply => Err(unexpected(reply)),
        }
    }

    /// `len(d)`.
    pub fn len(&self) -> Result<usize> {
        len(self.remote.call(&Request::Len(self.remote.id))?)
    }

    /// `len(d) == 0`.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The keys, at one instant.
    pub fn keys(&self) -> Result<Vec<K>> {
        many(self.remote.call(&Request::Keys(self.remote.id))?)
    }

    /// The values, at one instant.
    pub fn values(&self) -> Result<Vec<V>> {
        many(self.remote.call(&Request::Values(self.remote.id))?)
    }

    /// The entries, at one instant (Python's `d.copy()`).
    pub fn items(&self) -> Result<Vec<(K, V)>> {
        match self.remote.call(&Request::Items(self.remote.id))? {
            Reply::Pairs(pairs) => pairs
                .iter()
                .map(|(k, v)| Ok((decode(k)?, decode(v)?)))
                .collect(),
            reply => Err(unexpected(reply)),
        }
    }

    /// `d.clear()`.
    pub fn clear(&self) -> Result<()> {
        done(self.remote.call(&Request::Clear(self.remote.id))?)
    }

    /// `d.update(pairs)`: every pair in one request.
    pub fn update(&self, pairs: impl IntoIterator<Item = (K, V)>) -> Result<()> {
        let pairs = pairs
            .into_iter()
            .map(|(k, v)| Ok((encode(&k)?, encode(&v)?)))
            .collect::<Result<Vec<_>>>()?;
        done(self.remote.call(&Request::Update(self.remote.id, pairs))?)
    }

    /// Runs `f` on the entry of `key` in the manager, in one request:
    /// no other request comes between the read and the write, so updates
    /// from any number of processes are never lost (where Python's
    /// `d[k] += 1` loses some). `f` gets the value (`None`: no entry) and
    /// returns the new one (`None`: remove the entry); this returns the
    /// new one.
    ///
    /// `f` is a plain `fn` of the program, which the server calls: it
    /// runs in the server process, and sees none of the caller's
    /// variables. If it panics, the entry stays as it was and the call
    /// fails with [`Error::Codec`](crate::Error::Codec).
    pub fn update_with(&self, key: &K, f: fn(Option<V>) -> Option<V>) -> Result<Option<V>> {
        let request = Request::UpdateWith(
            self.remote.id,
            encode(key)?,
            call(dict_update::<V>, f as usize),
        );
        value(self.remote.call(&request)?)
    }
}

impl<K, V> Serialize for Dict<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.remote.serialize(serializer)
    }
}

impl<'de, K, V> Deserialize<'de> for Dict<K, V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        Ok(Dict {
            remote: Remote::deserialize(deserializer)?,
            _types: PhantomData,
        })
    }
}
