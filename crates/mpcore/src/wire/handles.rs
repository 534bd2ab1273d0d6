//! How a [`Queue`](crate::Queue), [`JoinableQueue`](crate::JoinableQueue),
//! [`Value`](crate::Value), [`Array`](crate::Array), [`Lock`](crate::Lock),
//! [`Event`](crate::Event) or [`Barrier`](crate::Barrier) travels to a
//! spawned child: as a descriptor.
//!
//! Each of them is memory in a memfd. A forked child inherits the mapping;
//! a spawned one (a fresh `exec`) has none, so it gets the memfd itself and
//! maps it again. The parent encodes the child's argument inside
//! [`collect`]: each handle in it writes down "descriptor number `i`" and
//! adds its memfd to a list, which travels beside the encoded argument
//! (`SCM_RIGHTS`, so the kernel installs copies in the child). The child
//! decodes the argument inside [`provide`], with the descriptors it
//! received: each handle maps descriptor `i` again. This is what Python's
//! `multiprocessing` does for its locks and queues under `spawn`.
//!
//! Anywhere else (a message in a [`Queue`](crate::Queue), a
//! [`Pool`](crate::Pool) task's argument) a handle does not serialize: the
//! error says where it may go instead.

use std::cell::RefCell;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::base::Error;

thread_local! {
    /// While a spawned child's argument is encoded: the descriptors its
    /// handles named, in order. (Borrowed: the handles outlive the encoding.)
    static OUTGOING: RefCell<Option<Vec<RawFd>>> = const { RefCell::new(None) };
    /// While a spawned child decodes its argument: the descriptors that
    /// came with it.
    static INCOMING: RefCell<Option<Vec<OwnedFd>>> = const { RefCell::new(None) };
    /// Why the last handle failed to decode. postcard keeps only "a custom
    /// error" of a `Deserialize`'s message, and this one says what to do.
    static FAILURE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `encode` with handles allowed to serialize; returns its result and
/// the descriptors that the handles in it named, each once.
pub(crate) fn collect<R>(encode: impl FnOnce() -> R) -> (R, Vec<RawFd>) {
    OUTGOING.with(|table| *table.borrow_mut() = Some(Vec::new()));
    // Cleared even if `encode` panics (a `Serialize` of the caller's may):
    // a later encoding must not find a stale table.
    let _clear = Clear(&OUTGOING);
    let result = encode();
    let fds = OUTGOING.with(|table| table.borrow_mut().take());
    (result, fds.unwrap_or_default())
}

/// Runs `decode` with the descriptors `fds` for the handles in it to map.
/// The descriptors are closed afterwards: a handle keeps its own copy.
///
/// If a handle in it failed, the second value says why.
pub(crate) fn provide<R>(fds: Vec<OwnedFd>, decode: impl FnOnce() -> R) -> (R, Option<String>) {
    INCOMING.with(|table| *table.borrow_mut() = Some(fds));
    FAILURE.with(|failure| failure.borrow_mut().take());
    let _clear = Clear(&INCOMING);
    let result = decode();
    (result, FAILURE.with(|failure| failure.borrow_mut().take()))
}

/// A decoding error that says why, also kept for [`provide`] to report.
fn failed<E: serde::de::Error>(message: String) -> E {
    let e = E::custom(&message);
    FAILURE.with(|failure| *failure.borrow_mut() = Some(message));
    e
}

/// Empties a table when dropped.
struct Clear<T: 'static>(&'static std::thread::LocalKey<RefCell<Option<T>>>);

impl<T> Drop for Clear<T> {
    fn drop(&mut self) {
        self.0.with(|table| drop(table.borrow_mut().take()));
    }
}

/// Writes a handle as the index of its memfd in the outgoing list, and
/// `len` (the number of items, for an [`Array`](crate::Array)).
pub(crate) fn serialize<S: Serializer>(
    serializer: S,
    what: &'static str,
    memfd: BorrowedFd<'_>,
    len: u64,
) -> std::result::Result<S::Ok, S::Error> {
    let fd = memfd.as_raw_fd();
    let index = OUTGOING.with(|table| {
        let mut table = table.borrow_mut();
        let table = table.as_mut()?;
        Some(match table.iter().position(|&known| known == fd) {
            Some(index) => index,
            None => {
                table.push(fd);
                table.len() - 1
            }
        })
    });
    match index {
        Some(index) => (index as u32, len).serialize(serializer),
        None => Err(S::Error::custom(format_args!(
            "a {what} can be sent only in the argument of a spawned process \
             (process::Builder::spawn_fn under StartMethod::Spawn), which receives \
             its memory as a descriptor; to give it to a forked child, move it into \
             the closure instead; to give it to a pool's workers, pass it to \
             pool::Builder::initializer_fn"
        ))),
    }
}

/// Reads a handle written by [`serialize`]: a copy of its memfd (the
/// caller maps it) and its `len`.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
    what: &'static str,
) -> std::result::Result<(OwnedFd, u64), D::Error> {
    let (index, len) = <(u32, u64)>::deserialize(deserializer)?;
    let fd = INCOMING.with(|table| {
        let table = table.borrow();
        let Some(table) = table.as_ref() else {
            return Err(format!(
                "a {what} can be received only as (part of) the argument of a \
                 spawned process, which comes with its descriptor"
            ));
        };
        let fd = table.get(index as usize).ok_or_else(|| {
            format!(
                "a {what} names descriptor {index}, but only {} came with the argument",
                table.len()
            )
        })?;
        // A copy, so that a handle sent twice (two clones of one queue in
        // the argument) gives two handles, each owning its descriptor.
        fd.as_fd()
            .try_clone_to_owned()
            .map_err(|e| format!("could not copy the descriptor of a {what}: {e}"))
    });
    fd.map(|fd| (fd, len)).map_err(failed)
}

/// Turns an error of mapping a received handle into the decoder's error.
pub(crate) fn map_error<E: serde::de::Error>(what: &'static str, e: Error) -> E {
    failed(format!("could not map the {what} that was received: {e}"))
}

/// A shared object that travels to a spawned child as its memfd's
/// descriptor (and a length), and serializes nowhere else. Its serde
/// impls come from [`travels_as_descriptor!`].
pub(crate) trait Handle: Sized {
    /// Its name in errors: "a Queue can be sent only ...".
    const WHAT: &'static str;
    /// The memfd under it, to send.
    fn memfd(&self) -> BorrowedFd<'_>;
    /// How many items it holds, for those whose size is not in their type.
    fn len(&self) -> u64 {
        0
    }
    /// The handle again, from a received memfd and its length.
    fn from_memfd(memfd: OwnedFd, len: u64) -> crate::base::Result<Self>;
}

/// [`serialize`] for a [`Handle`].
pub(crate) fn serialize_handle<H: Handle, S: Serializer>(
    handle: &H,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    serialize(serializer, H::WHAT, handle.memfd(), handle.len())
}

/// [`deserialize`] for a [`Handle`]: maps what was received.
pub(crate) fn deserialize_handle<'de, H: Handle, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<H, D::Error> {
    let (memfd, len) = deserialize(deserializer, H::WHAT)?;
    H::from_memfd(memfd, len).map_err(|e| map_error(H::WHAT, e))
}

/// `Serialize` and `Deserialize` for a [`Handle`] type: as a descriptor.
macro_rules! travels_as_descriptor {
    ($name:ident $(<$($param:ident),+>)?) => {
        impl$(<$($param),+>)? serde::Serialize for $name$(<$($param),+>)?
        where
            Self: $crate::wire::handles::Handle,
        {
            fn serialize<S: serde::Serializer>(
                &self,
                serializer: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                $crate::wire::handles::serialize_handle(self, serializer)
            }
        }

        impl<'de $($(, $param)+)?> serde::Deserialize<'de> for $name$(<$($param),+>)?
        where
            Self: $crate::wire::handles::Handle,
        {
            fn deserialize<D: serde::Deserializer<'de>>(
                deserializer: D,
            ) -> std::result::Result<Self, D::Error> {
                $crate::wire::handles::deserialize_handle(deserializer)
            }
        }
    };
}
pub(crate) use travels_as_descriptor;

/// A plain descriptor that travels to a spawned child as the handles do:
/// the socket on which a pool's spawned worker talks to its pool.
#[derive(Debug)]
pub(crate) struct Descriptor(pub(crate) OwnedFd);

impl Handle for Descriptor {
    const WHAT: &'static str = "descriptor";

    fn memfd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    fn from_memfd(memfd: OwnedFd, _: u64) -> crate::base::Result<Self> {
        Ok(Descriptor(memfd))
    }
}

travels_as_descriptor!(Descriptor);
