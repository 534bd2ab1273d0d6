//! Many packets at once, for a socket whose one reader takes them in
//! batches ([`try_recv_many_bytes`], one `recvmmsg` for up to
//! [`MANY_SLOTS`] packets): a pool's supervisor reading its workers'
//! results.
//!
//! Each packet lands in a slot of [`MANY_INLINE_MAX`] bytes, so a larger
//! message cannot travel as one packet. Up to [`PARTS_MAX`] bytes it
//! travels in parts, every one a slot's size, sent with one `sendmmsg`
//! and put back together here; beyond that, through a memfd as on every
//! channel. A message in parts costs what its bytes cost to copy; a
//! memfd costs its creation, the shared pages it fills, the descriptor
//! passed and the pages freed again. With a map of 100,000 tiny tasks,
//! whose chunks answer with 37 KB each, the parts made the whole map
//! about a quarter faster.

use std::cell::RefCell;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, MultiHeaders};

use super::channel::{
    Payload, TAG_INLINE, TAG_PART, payload_of, received_fd, retrying, send_error, send_message,
};
use crate::base::{Error, Result};

/// The largest payload that [`try_recv_many_bytes`] takes in one packet.
pub(crate) const MANY_INLINE_MAX: usize = 4 * 1024;
/// How many packets one [`try_recv_many_bytes`] takes at most.
pub(crate) const MANY_SLOTS: usize = 32;
/// The largest message that travels in parts: one batch of packets.
/// Larger ones go through a memfd, whose fixed costs they outweigh.
const PARTS_MAX: usize = MANY_INLINE_MAX * MANY_SLOTS;

thread_local! {
    /// One slot of `MANY_INLINE_MAX` + 2 bytes per packet (the tag, and one
    /// byte more so that an oversized packet shows as truncated).
    static MANY_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; MANY_SLOTS * (MANY_INLINE_MAX + 2)]);
}

/// Sends `payload` as one message to a socket whose reader takes packets
/// with [`try_recv_many_bytes`]; blocks while the socket buffer is full.
/// Up to [`MANY_INLINE_MAX`] bytes it is one packet, up to [`PARTS_MAX`]
/// several, beyond that a memfd.
///
/// Only for a socket with one sender: the parts of two messages sent at
/// once would mix.
pub(crate) fn send_bytes_to_many(tx: BorrowedFd<'_>, payload: &[u8]) -> Result<()> {
    if payload.len() <= MANY_INLINE_MAX || payload.len() > PARTS_MAX {
        return send_message(tx, payload, MsgFlags::empty(), MANY_INLINE_MAX).map(|_| ());
    }
    let parts: Vec<&[u8]> = payload.chunks(MANY_INLINE_MAX).collect();
    let last = parts.len() - 1;
    let packets: Vec<[IoSlice<'_>; 2]> = parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let tag = if i == last {
                &[TAG_INLINE]
            } else {
                &[TAG_PART]
            };
            [IoSlice::new(tag), IoSlice::new(part)]
        })
        .collect();
    let mut sent = 0;
    while sent < packets.len() {
        let rest = &packets[sent..];
        let mut headers = MultiHeaders::<()>::preallocate(rest.len(), None);
        let addrs = vec![None; rest.len()];
        // A signal, or a full socket buffer, can end the call after some
        // of the packets: the others follow in the next.
        let taken = retrying(|| {
            nix::sys::socket::sendmmsg(
                tx.as_raw_fd(),
                &mut headers,
                rest,
                &addrs,
                [],
                MsgFlags::MSG_NOSIGNAL,
            )
            .map(|results| results.count())
        });
        match taken {
            // A blocking send returns once it has sent something: never.
            Ok(0) => return Err(send_error("sendmmsg", Errno::EIO)),
            Ok(n) => sent += n,
            Err(e) => return Err(send_error("sendmmsg", e)),
        }
    }
    Ok(())
}

/// A message arriving in parts, as far as it has come: kept by the reader
/// between calls of [`try_recv_many_bytes`], since a batch may end
/// between two parts of one message.
#[derive(Default)]
pub(crate) struct Parts {
    bytes: Vec<u8>,
    /// A part came: the message is open until its last part.
    open: bool,
    /// A part could not be read: the whole message fails with this.
    broken: Option<Error>,
}

impl Parts {
    /// Whether a message has come in part, and its last part not yet.
    pub(crate) fn is_open(&self) -> bool {
        self.open
    }

    /// Takes one part that is not the last.
    fn take_part(&mut self, part: Result<&[u8]>) {
        self.open = true;
        // A sender never sends more than `PARTS_MAX` in parts: one that
        // did would only grow this without end.
        let part = part.and_then(|bytes| {
            if self.bytes.len() + bytes.len() < PARTS_MAX {
                Ok(bytes)
            } else {
                Err(Error::Codec {
                    action: "decode",
                    reason: format!("a message in parts went on past {PARTS_MAX} bytes"),
                })
            }
        });
        match part {
            Ok(bytes) if self.broken.is_none() => self.bytes.extend_from_slice(bytes),
            Ok(_) => {}
            Err(e) => {
                self.broken.get_or_insert(e);
                self.bytes = Vec::new();
            }
        }
    }

    /// The whole message, given the packet that ends it: alone, or the
    /// last part of an open one.
    fn finish(&mut self, last: Result<Payload<'_>>) -> Result<Vec<u8>> {
        if !self.open {
            return last.and_then(Payload::into_vec);
        }
        self.open = false;
        let mut bytes = std::mem::take(&mut self.bytes);
        match (self.broken.take(), last) {
            (Some(e), _) | (None, Err(e)) => Err(e),
            (None, Ok(Payload::Inline(tail))) => {
                bytes.extend_from_slice(tail);
                Ok(bytes)
            }
            (None, Ok(Payload::Memfd(..) | Payload::Pooled(..))) => Err(Error::Codec {
                action: "decode",
                reason: "a message sent in parts ended with a memfd".to_owned(),
            }),
        }
    }
}

/// Takes up to [`MANY_SLOTS`] waiting packets with one `recvmmsg` and
/// appends the messages they complete to `out`, in order; never blocks.
/// Returns how many packets it took: 0 when none was waiting. One system
/// call where `recvmsg` would take one per packet and one more to learn
/// that none is left. `parts` holds a message whose last part has not
/// come yet; keep one per socket.
///
/// Every packet must come from [`send_bytes_to_many`]. A message that was
/// taken but cannot be read is an `Err` in its place in `out`:
/// [`Error::Codec`] for a packet too large for its slot,
/// [`Error::NoFreeDescriptor`] for a large one whose memory this process
/// had no descriptor free to receive. `Err` after some packets leaves
/// those in `out`: [`Error::Disconnected`] when end of file follows them
/// (every sender is gone).
pub(crate) fn try_recv_many_bytes(
    rx: BorrowedFd<'_>,
    out: &mut Vec<Result<Vec<u8>>>,
    parts: &mut Parts,
) -> Result<usize> {
    MANY_BUF.with_borrow_mut(|buf| {
        let mut end_seen = false;
        loop {
            match recv_many_once(rx, buf, out, parts) {
                Ok(Some(taken)) => return Ok(taken),
                Ok(None) => {}
                // An end of file: look once more, as `recv_payload` does,
                // and for the same reason.
                Err(Error::Disconnected) if !end_seen => end_seen = true,
                Err(e) => return Err(e),
            }
        }
    })
}

/// One `recvmmsg` for [`try_recv_many_bytes`]; `None` when it should be
/// tried again (a signal came, or the kernel reported a reset peer once).
fn recv_many_once(
    rx: BorrowedFd<'_>,
    buf: &mut [u8],
    out: &mut Vec<Result<Vec<u8>>>,
    parts: &mut Parts,
) -> Result<Option<usize>> {
    let mut slots: Vec<[std::io::IoSliceMut<'_>; 1]> = buf
        .chunks_mut(MANY_INLINE_MAX + 2)
        .map(|slot| [std::io::IoSliceMut::new(slot)])
        .collect();
    // Made afresh each call: the kernel writes each header's control
    // length back, and a header reused with 0 there could take no
    // descriptor.
    let mut headers =
        MultiHeaders::<()>::preallocate(slots.len(), Some(nix::cmsg_space!([RawFd; 1])));
    let received = match nix::sys::socket::recvmmsg(
        rx.as_raw_fd(),
        &mut headers,
        slots.iter_mut(),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        None,
    ) {
        Ok(received) => received,
        Err(Errno::EINTR | Errno::ECONNRESET) => return Ok(None),
        Err(Errno::EAGAIN) => return Ok(Some(0)),
        Err(e) => return Err(Error::os("recvmmsg", e)),
    };
    let mut taken = 0;
    for msg in received {
        let packet = msg.iovs().next().map_or(&[][..], |iov| &iov[..msg.bytes]);
        taken += 1;
        // Each packet is taken now, whatever happens to the others: one
        // that cannot be read fails alone, in its place (a part fails
        // its whole message).
        if packet.first() == Some(&TAG_PART) {
            let whole = !msg
                .flags
                .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
            let part = match received_fd(&msg, "recvmmsg") {
                Ok(None) if whole => Ok(&packet[1..]),
                Ok(_) => Err(Error::Codec {
                    action: "decode",
                    reason: format!(
                        "a part of a message came truncated or with a descriptor ({} bytes)",
                        packet.len()
                    ),
                }),
                Err(e) => Err(e),
            };
            parts.take_part(part);
            continue;
        }
        let payload = received_fd(&msg, "recvmmsg")
            .and_then(|memfd| payload_of(rx, packet, msg.flags, memfd));
        match payload {
            Err(Error::Disconnected) => return Err(Error::Disconnected),
            payload => out.push(parts.finish(payload)),
        }
    }
    Ok(Some(taken))
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;
    use crate::wire::channel::pair;

    /// Every message until the sender has gone, and what is left open.
    fn receive_until_the_end(rx: BorrowedFd<'_>) -> (Vec<Result<Vec<u8>>>, Parts) {
        let (mut out, mut parts) = (Vec::new(), Parts::default());
        loop {
            match try_recv_many_bytes(rx, &mut out, &mut parts) {
                Ok(_) => std::thread::yield_now(),
                Err(Error::Disconnected) => return (out, parts),
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn messages_of_every_size_arrive_whole_and_in_order() {
        let (tx, rx) = pair().unwrap();
        let sizes = [
            0,
            1,
            4095,
            4096,
            4097,
            37_500,
            PARTS_MAX,
            PARTS_MAX + 1,
            300_000,
        ];
        let sender = std::thread::spawn(move || {
            for (i, &size) in sizes.iter().enumerate() {
                let message: Vec<u8> = (0..size).map(|j| (i * 7 + j) as u8).collect();
                send_bytes_to_many(tx.as_fd(), &message).unwrap();
            }
        });
        let (got, parts) = receive_until_the_end(rx.as_fd());
        sender.join().unwrap();
        assert_eq!(got.len(), sizes.len());
        for (i, (message, &size)) in got.into_iter().zip(&sizes).enumerate() {
            let message = message.unwrap();
            assert_eq!(message.len(), size, "message {i}");
            assert!(
                message
                    .iter()
                    .enumerate()
                    .all(|(j, &b)| b == (i * 7 + j) as u8)
            );
        }
        assert!(!parts.open);
    }

    #[test]
    fn a_message_cut_off_after_some_parts_is_never_taken_as_whole() {
        let (tx, rx) = pair().unwrap();
        // Two parts of a message whose sender died before its last.
        let part = vec![1u8; MANY_INLINE_MAX];
        for _ in 0..2 {
            let iov = [IoSlice::new(&[TAG_PART]), IoSlice::new(&part)];
            nix::sys::socket::sendmsg::<()>(tx.as_raw_fd(), &iov, &[], MsgFlags::empty(), None)
                .unwrap();
        }
        drop(tx);
        let (out, parts) = receive_until_the_end(rx.as_fd());
        assert!(out.is_empty());
        assert!(parts.open);
    }

    #[test]
    fn a_message_in_more_parts_than_a_sender_sends_fails_whole_and_the_next_arrives() {
        let (tx, rx) = pair().unwrap();
        let sender = std::thread::spawn(move || {
            // One part more than the largest message in parts holds, then
            // its end: it fails as one message. Then a good one.
            let part = vec![1u8; MANY_INLINE_MAX];
            for _ in 0..MANY_SLOTS {
                let iov = [IoSlice::new(&[TAG_PART]), IoSlice::new(&part)];
                nix::sys::socket::sendmsg::<()>(tx.as_raw_fd(), &iov, &[], MsgFlags::empty(), None)
                    .unwrap();
            }
            send_bytes_to_many(tx.as_fd(), &[7; 5]).unwrap();
            send_bytes_to_many(tx.as_fd(), &[8; 9000]).unwrap();
        });
        let (out, parts) = receive_until_the_end(rx.as_fd());
        sender.join().unwrap();
        assert_eq!(out.len(), 2);
        let e = out[0].as_ref().unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "could not decode a message: a message in parts went on past {PARTS_MAX} bytes"
            )
        );
        assert_eq!(out[1].as_deref().unwrap(), &[8; 9000][..]);
        assert!(!parts.open);
    }
}
