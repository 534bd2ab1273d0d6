//! Large messages of a [`Connection`](crate::Connection) in memfds that
//! are used again: the sender keeps a few, with their pages, and writes
//! the next message into one its receiver has said it is done with.
//!
//! A fresh memfd for every message (what `channel.rs` does for the other
//! senders) costs the sender a page allocation and a page-cache insertion
//! for every 4 KiB it writes, and the receiver's `close` frees them all
//! again: for 1 MiB, about three quarters of the time went there, and the
//! copies themselves were the rest. A memfd used again has its pages
//! already, and both sides map it once: a message costs one copy in each
//! process, as through a [`Queue`](crate::Queue)'s ring.
//!
//! # The state word
//!
//! A kept memfd ([`Slot`]) is one page of header, whose first word says
//! who may touch the bytes after it, then the bytes:
//!
//! - [`FREE`]: nobody reads them; a sender may take the slot with one
//!   compare-and-swap to [`BUSY`], and only then writes;
//! - [`BUSY`]: a message is in them, or being written; the receiver that
//!   took the packet copies the bytes out and only then stores [`FREE`];
//! - [`RETIRED`]: a sender gave it up; nobody writes it again.
//!
//! So nothing is ever written into bytes a receiver may still read, also
//! with copies of one end in several processes after a `fork` (they share
//! the word, and one compare-and-swap wins). A packet that never reaches a
//! reader (the receiver was killed after taking it, or had no free
//! descriptor) leaves its slot [`BUSY`] for good: the sender writes it no
//! more and makes a fresh memfd when it finds none free, as every sender
//! did before. A sender never waits for a slot.
//!
//! # A peer that is not honest
//!
//! Every memfd is sealed against shrinking before it is sent, and the
//! receiver maps only one that is (a file that shrinks under a mapping
//! would kill its reader with `SIGBUS`); it checks the announced length
//! against the file's size, and copies the bytes out before it reads them.
//! A peer that writes into the pages, or says it is done too early, can
//! only spoil messages that pass through its own hands.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::socket::{ControlMessage, MsgFlags};
use serde::de::DeserializeOwned;

use super::channel::{self, Payload, TAG_POOLED};
use super::codec::decode;
use super::kept::{
    BUSY, FREE, FileId, HEADER, Map, RETIRED, checked, copy_out, read_once, sealed_map,
};
use crate::base::{Error, Result};

/// The largest message that goes through a kept memfd; larger ones take a
/// fresh memfd each, as rare as they are large.
const MAX_POOLED: usize = 16 << 20;
/// The smallest slot: smaller messages share a size, so that one slot
/// serves all of them.
const MIN_SLOT: usize = 64 << 10;
/// How many slots a sender keeps, and how many bytes in all.
const MAX_SLOTS: usize = 16;
const MAX_KEPT: usize = 64 << 20;
/// How many mappings a receiver keeps, and how many bytes in all: room
/// for every slot of two senders (copies of one end after a `fork`).
const MAX_MAPS: usize = 2 * MAX_SLOTS;
const MAX_MAPPED: usize = 128 << 20;

/// Sends `payload` as one message on `tx`, as `channel::send_bytes` does
/// (`wait`) or `channel::try_send_bytes` (not `wait`: `Ok(false)` when the
/// socket is full and nothing was sent); a large one in a memfd that
/// `outbox` keeps, when one is free.
pub(crate) fn send_bytes(
    tx: BorrowedFd<'_>,
    payload: &[u8],
    wait: bool,
    outbox: &Outbox,
) -> Result<bool> {
    if !channel::is_inline(payload.len()) {
        if let Some(written) = outbox.write(payload) {
            let len = (payload.len() as u64).to_le_bytes();
            let iov = [IoSlice::new(&[TAG_POOLED]), IoSlice::new(&len)];
            let fds = [written.memfd().as_raw_fd()];
            let cmsgs = [ControlMessage::ScmRights(&fds)];
            // Unsent (full, or an error), `written` is free again as it drops.
            let sent = channel::send_packet(tx, &iov, &cmsgs, flags(wait))?;
            if sent {
                written.sent();
            }
            return Ok(sent);
        }
    }
    if wait {
        channel::send_bytes(tx, payload).map(|()| true)
    } else {
        channel::try_send_bytes(tx, payload)
    }
}

/// Takes the next message's bytes, waiting for one if `wait` (`Ok(None)`:
/// nothing there); one in a kept memfd is read through `inbox`.
pub(crate) fn recv_bytes(rx: BorrowedFd<'_>, wait: bool, inbox: &Inbox) -> Result<Option<Vec<u8>>> {
    channel::recv_payload(rx, flags(wait), |payload| match payload {
        Payload::Pooled(memfd, len) => inbox.read(memfd, len),
        payload => payload.into_vec(),
    })
}

/// [`recv_bytes`], decoded.
pub(crate) fn recv<T: DeserializeOwned>(
    rx: BorrowedFd<'_>,
    wait: bool,
    inbox: &Inbox,
) -> Result<Option<T>> {
    channel::recv_payload(rx, flags(wait), |payload| match payload {
        Payload::Pooled(memfd, len) => decode(&inbox.read(memfd, len)?),
        payload => payload.read_with(decode),
    })
}

fn flags(wait: bool) -> MsgFlags {
    if wait {
        MsgFlags::empty()
    } else {
        MsgFlags::MSG_DONTWAIT
    }
}

/// One memfd a sender keeps: its mapping and its descriptor, to send.
struct Slot {
    map: Map,
    memfd: OwnedFd,
}

impl Slot {
    /// A new slot with room for `room` bytes, sealed, taken ([`BUSY`]).
    fn new(room: usize) -> Result<Slot> {
        let memfd = memfd_create(
            "mpcore-message",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )
        .map_err(|e| Error::os("memfd_create", e))?;
        let len = HEADER + room;
        nix::unistd::ftruncate(&memfd, len as i64).map_err(|e| Error::os("ftruncate", e))?;
        let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
        fcntl(&memfd, FcntlArg::F_ADD_SEALS(seals)).map_err(|e| Error::os("fcntl", e))?;
        let map = Map::new(memfd.as_fd(), len)?;
        map.state().store(BUSY, Ordering::Relaxed);
        Ok(Slot { map, memfd })
    }
}

/// A slot this sender has taken and written a message into: sent, or
/// made free again when dropped unsent.
pub(crate) struct Written {
    slot: Arc<Slot>,
    sent: bool,
}

impl Written {
    /// The memfd to send in the packet.
    pub(crate) fn memfd(&self) -> BorrowedFd<'_> {
        self.slot.memfd.as_fd()
    }

    /// The packet left: the receiver makes the slot free once it has read it.
    pub(crate) fn sent(mut self) {
        self.sent = true;
    }
}

impl Drop for Written {
    fn drop(&mut self) {
        if !self.sent {
            // Nobody else has seen it: the packet did not leave.
            self.slot.map.state().store(FREE, Ordering::Release);
        }
    }
}

/// Takes `mutex` if nobody holds it: a sender or receiver never waits for
/// another thread here (nor, after a `fork`, for a thread that is gone),
/// it goes the way that keeps nothing.
fn try_lock<T>(mutex: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match mutex.try_lock() {
        Ok(guard) => Some(guard),
        // Nothing in here panics while holding it; if something did, the
        // list is still a list.
        Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

/// A sender's kept memfds (one per end of a connection), freed with it.
#[derive(Default)]
pub(crate) struct Outbox {
    slots: Mutex<Vec<Arc<Slot>>>,
}

impl Outbox {
    /// Writes `payload` into a kept memfd that is free, or into a new one
    /// kept from now on; `None` when none is free and no more may be kept
    /// (or another thread is choosing one): the caller then sends it in a
    /// fresh memfd.
    pub(crate) fn write(&self, payload: &[u8]) -> Option<Written> {
        let len = payload.len();
        if len > MAX_POOLED {
            return None;
        }
        let slot = self.take(len)?;
        // SAFETY: we took the slot (FREE to BUSY, or made it), so no
        // receiver reads its bytes and no sender writes them until a
        // receiver makes it FREE again; it has room for `len` bytes.
        unsafe { std::ptr::copy_nonoverlapping(payload.as_ptr(), slot.map.data(), len) };
        Some(Written { slot, sent: false })
    }

    /// A slot with room for `len` bytes, taken for this sender.
    fn take(&self, len: usize) -> Option<Arc<Slot>> {
        let mut slots = try_lock(&self.slots)?;
        let free = |slot: &Slot| {
            slot.map
                .state()
                .compare_exchange(FREE, BUSY, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        };
        if let Some(slot) = slots.iter().find(|s| s.map.room() >= len && free(s)) {
            return Some(Arc::clone(slot));
        }
        // Slots that are gone for good (a copy of this end in another
        // process retired them) make room.
        slots.retain(|s| s.map.state().load(Ordering::Relaxed) != RETIRED);
        let room = len.next_power_of_two().max(MIN_SLOT);
        let kept = |slots: &[Arc<Slot>]| slots.iter().map(|s| s.map.room()).sum::<usize>();
        while slots.len() >= MAX_SLOTS || kept(&slots) + room > MAX_KEPT {
            // Give up the smallest free one; none free: keep them all.
            let state = |i: usize| slots[i].map.state();
            let smallest = (0..slots.len())
                .filter(|&i| state(i).load(Ordering::Relaxed) == FREE)
                .min_by_key(|&i| slots[i].map.room())?;
            // Another process's copy of this end may take it first.
            if state(smallest)
                .compare_exchange(FREE, RETIRED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                slots.swap_remove(smallest);
            }
        }
        // Failing, the caller's fresh memfd reports the cause.
        let slot = Arc::new(Slot::new(room).ok()?);
        slots.push(Arc::clone(&slot));
        Some(slot)
    }
}

/// connection), most recently used first, unmapped with it. Each is known
/// by its file (device and inode), which cannot name another file while
/// the mapping holds it.
#[derive(Default)]
pub(crate) struct Inbox {
    maps: Mutex<Vec<(FileId, Arc<Map>)>>,
}

impl Inbox {
    /// The `len` bytes of a message in a kept memfd, copied out; the memfd
    /// is made free for its sender.
    pub(crate) fn read(&self, memfd: OwnedFd, len: usize) -> Result<Vec<u8>> {
        let (file, size) = checked(memfd.as_fd(), len)?;
        let Some(mut maps) = try_lock(&self.maps) else {
            return read_once(memfd, len);
        };
        let at = maps
            .iter()
            .position(|(known, map)| *known == file && map.len.get() == size);
        let map = match at {
            Some(at) => {
                let entry = maps.remove(at);
                let map = Arc::clone(&entry.1);
                maps.insert(0, entry);
                map
            }
            None => {
                let map = Arc::new(sealed_map(memfd.as_fd(), size)?);
                // A new memfd may stand for one its sender gave up: that
                // one will not come again.
                maps.retain(|(_, map)| map.state().load(Ordering::Relaxed) != RETIRED);
                maps.insert(0, (file, Arc::clone(&map)));
                let mut mapped = 0;
                let keep = maps
                    .iter()
                    .take_while(|(_, map)| {
                        mapped += map.len.get();
                        mapped <= MAX_MAPPED
                    })
                    .count();
                maps.truncate(keep.clamp(1, MAX_MAPS));
                map
            }
        };
        drop(maps);
        copy_out(&map, len)
    }
}

#[cfg(test)]
#[path = "large_tests.rs"]
mod tests;
