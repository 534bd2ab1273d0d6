//! What a proxy and the manager's server say to each other, and the
//! functions that run in the server on a client's behalf.
//!
//! The server stores values as their postcard encoding and never decodes
//! one, with two exceptions that need the type: `sort` (the type's own
//! `Ord`, not the order of the bytes) and the atomic updates (the
//! caller's function). For those a request carries two functions as
//! offsets from mpcore's anchor, as a spawned task's does: a trampoline,
//! an instantiation for the value's type of one of the generic functions
//! below (each registers itself as an entry, and the server calls no
//! other), and the caller's `fn` that it calls.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::base::{Error, catch};
use crate::start::image::{self, register_entry};
use crate::start::task::{address_at, offset_of};
use crate::wire::codec;

/// One encoded value.
pub(super) type Bytes = Vec<u8>;

/// A request: one packet, answered by one [`Reply`].
#[derive(Serialize, Deserialize, Debug)]
pub(super) enum Request {
    /// A new dict; the reply is its id.
    NewDict,
    /// A new list holding these items; the reply is its id.
    NewList(Vec<Bytes>),
    /// A new namespace holding this value; the reply is its id.
    NewNamespace(Bytes),
    /// The number of entries of a dict or items of a list.
    Len(u64),
    /// Empties a dict or a list.
    Clear(u64),
    /// Dict: key, value; replies with the value it replaced.
    Insert(u64, Bytes, Bytes),
    /// Dict: the value of a key.
    Get(u64, Bytes),
    /// Dict: removes a key; replies with its value.
    Remove(u64, Bytes),
    /// Dict: whether a key is there.
    ContainsKey(u64, Bytes),
    /// Dict: the keys, the values, or both, in key order.
    Keys(u64),
    Values(u64),
    Items(u64),
    /// Dict: inserts every pair.
    Update(u64, Vec<(Bytes, Bytes)>),
    /// Dict: runs the update on the key's value; replies with the new one.
    UpdateWith(u64, Bytes, Call),
    /// List: appends an item.
    Push(u64, Bytes),
    /// List: removes the last item.
    Pop(u64),
    /// List: the item at an index.
    ListGet(u64, u64),
    /// List: replaces the item at an index; replies with the old one.
    ListSet(u64, u64, Bytes),
    /// List: inserts an item before an index (at most the length).
    ListInsert(u64, u64, Bytes),
    /// List: removes the item at an index; replies with it.
    ListRemove(u64, u64),
    /// List: appends every item.
    Extend(u64, Vec<Bytes>),
    /// List: reverses the items in place.
    Reverse(u64),
    /// List: sorts the items with the trampoline (a [`SortFn`]).
    Sort(u64, u64),
    /// List: every item.
    Snapshot(u64),
    /// List: runs the update on the item at an index; replies with it.
    ListUpdate(u64, u64, Call),
    /// Namespace: its value.
    NsGet(u64),
    /// Namespace: replaces its value; replies with the old one.
    NsSet(u64, Bytes),
    /// Namespace: runs the update on its value; replies with the new one.
    NsUpdate(u64, Call),
}

/// An update to run in the server: an [`UpdateFn`] trampoline and the
/// caller's function, as offsets from mpcore's anchor.
#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
pub(super) struct Call {
    pub(super) trampoline: u64,
    pub(super) function: u64,
}

/// The answer to a [`Request`].
#[derive(Serialize, Deserialize, Debug)]
pub(super) enum Reply {
    Done,
    Id(u64),
    Value(Option<Bytes>),
    Bool(bool),
    Len(u64),
    Many(Vec<Bytes>),
    Pairs(Vec<(Bytes, Bytes)>),
    Failed(Failure),
}

/// Why the server did not do what it was asked.
#[derive(Serialize, Deserialize, Debug)]
pub(super) enum Failure {
    /// No object has that id, or it is of another kind.
    NoSuchObject,
    IndexOutOfRange {
        index: u64,
        len: u64,
    },
    /// The caller's function (or the type's `Ord`, `Serialize`,
    /// `Deserialize`) panicked in the server; nothing changed.
    Panicked(String),
    /// A stored value did not decode as the caller's type.
    Codec(String),
    /// The functions of an update are not ones this program may call.
    BadFunction,
    /// The request itself could not be read.
    BadRequest(String),
}

impl Failure {
    /// The error a proxy call returns for it.
    pub(super) fn into_error(self) -> Error {
        match self {
            Failure::NoSuchObject => Error::InvalidArgument(
                "the manager holds no such object (a proxy of another manager?)",
            ),
            Failure::IndexOutOfRange { index, len } => Error::IndexOutOfRange {
                index: index as usize,
                len: len as usize,
            },
            Failure::Panicked(message) => Error::Codec {
                action: "run the update of",
                reason: format!("it panicked in the manager, which changed nothing: {message}"),
            },
            Failure::Codec(reason) => Error::Codec {
                action: "decode",
                reason,
            },
            Failure::BadFunction => Error::InvalidArgument(
                "the update's function is not in the code of the image that holds mpcore, so the \
                 manager will not call it",
            ),
            Failure::BadRequest(reason) => Error::Codec {
                action: "decode",
                reason,
            },
        }
    }
}

/// A trampoline of an update: decodes the old value (if any), calls the
/// caller's function at the address given, encodes what it returns
/// (`None`: remove the entry). An error is the reason to report.
pub(super) type UpdateFn = fn(usize, Option<&[u8]>) -> Result<Option<Bytes>, Failure>;

/// A trampoline of `sort`: sorts encoded items by their type's `Ord`.
pub(super) type SortFn = fn(&mut Vec<Bytes>) -> Result<(), Failure>;

/// The [`Call`] of `f` through the trampoline `trampoline`.
pub(super) fn call(trampoline: UpdateFn, f: usize) -> Call {
    Call {
        trampoline: offset_of(trampoline as usize),
        function: offset_of(f),
    }
}

/// The offset of a sort trampoline.
pub(super) fn sort_call(trampoline: SortFn) -> u64 {
    offset_of(trampoline as usize)
}

/// The functions of `call` in this process, if the trampoline is a
/// registered entry and the function lies in mpcore's image's code.
/// `known` remembers the pairs already checked: a check walks the loaded
/// images, which would cost more than the update.
pub(super) fn resolve_update(call: Call, known: &mut Vec<(u64, u64)>) -> Option<(UpdateFn, usize)> {
    let (trampoline, function) = (address_at(call.trampoline), address_at(call.function));
    let pair = (call.trampoline, call.function);
    if !known.contains(&pair) {
        if !image::is_entry(trampoline) || !image::in_mpcore_code(function) {
            return None;
        }
        known.push(pair);
    }
    // SAFETY: `trampoline` is a registered task entry of this program, and
    // the only entries registered with an `UpdateFn`'s offsets come from
    // `dict_update` and `value_update`, whose type is `UpdateFn`: the
    // client took the offset from one of them (same program: the server
    // runs the client's program, forked or afresh). A client is a process
    // of our user holding the manager's door, which it got from the owner.
    let trampoline = unsafe { std::mem::transmute::<*const (), UpdateFn>(trampoline as *const ()) };
    Some((trampoline, function))
}

/// The sort trampoline at `offset`, if it is a registered entry.
pub(super) fn resolve_sort(offset: u64) -> Option<SortFn> {
    let address = address_at(offset);
    // SAFETY: as in `resolve_update`: a registered entry that the client
    // took from `sort_items`, whose type is `SortFn`.
    image::is_entry(address)
        .then(|| unsafe { std::mem::transmute::<*const (), SortFn>(address as *const ()) })
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Failure> {
    codec::decode(bytes).map_err(|e| Failure::Codec(e.to_string()))
}

fn encode<T: Serialize + DeserializeOwned>(value: &T) -> Result<Bytes, Failure> {
    let mut out = Vec::new();
    codec::encode_checked_into(&mut out, value).map_err(|e| Failure::Codec(e.to_string()))?;
    Ok(out)
}

/// The trampoline of a dict's `update_with`: `f` is a
/// `fn(Option<V>) -> Option<V>`.
pub(super) fn dict_update<V: Serialize + DeserializeOwned>(
    f: usize,
    old: Option<&[u8]>,
) -> Result<Option<Bytes>, Failure> {
    register_entry!(dict_update::<V>);
    // SAFETY: the client took `f` from a `fn(Option<V>) -> Option<V>` and
    // sent it with this very instantiation; the server checked that it
    // lies in this program's code (`resolve_update`).
    let f = unsafe { std::mem::transmute::<*const (), fn(Option<V>) -> Option<V>>(f as *const ()) };
    catch(|| {
        let old = old.map(decode::<V>).transpose()?;
        f(old).as_ref().map(encode).transpose()
    })
    .unwrap_or_else(|message| Err(Failure::Panicked(message)))
}

/// The trampoline of a list item's or a namespace's update: `f` is a
/// `fn(T) -> T`, and there is always an old value.
pub(super) fn value_update<T: Serialize + DeserializeOwned>(
    f: usize,
    old: Option<&[u8]>,
) -> Result<Option<Bytes>, Failure> {
    register_entry!(value_update::<T>);
    // SAFETY: as in `dict_update`, for a `fn(T) -> T`.
    let f = unsafe { std::mem::transmute::<*const (), fn(T) -> T>(f as *const ()) };
    let Some(old) = old else {
        return Err(Failure::NoSuchObject);
    };
    catch(|| encode(&f(decode::<T>(old)?)).map(Some))
        .unwrap_or_else(|message| Err(Failure::Panicked(message)))
}

/// The trampoline of a list's `sort`: decodes every item, sorts them by
/// `T`'s `Ord` (stable, as Python's), and puts their encodings in that
/// order. Nothing changes if any of it fails.
pub(super) fn sort_items<T: Ord + DeserializeOwned>(items: &mut Vec<Bytes>) -> Result<(), Failure> {
    register_entry!(sort_items::<T>);
    let sorted = catch(|| {
        let mut decoded = items
            .iter()
            .enumerate()
            .map(|(i, bytes)| Ok((decode::<T>(bytes)?, i)))
            .collect::<Result<Vec<_>, Failure>>()?;
        decoded.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(decoded.into_iter().map(|(_, i)| i).collect::<Vec<_>>())
    })
    .unwrap_or_else(|message| Err(Failure::Panicked(message)))?;
    let mut old: Vec<Option<Bytes>> = std::mem::take(items).into_iter().map(Some).collect();
    *items = sorted
        .into_iter()
        .map(|i| old[i].take().unwrap_or_default())
        .collect();
    Ok(())
}
