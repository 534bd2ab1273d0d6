//! The wire under [`Process`](crate::Process) results and the
//! [`Pool`](crate::Pool): packets on a socket pair. (What goes into a
//! packet, serde with postcard, is `codec.rs`.)
//!
//! One Unix `SOCK_SEQPACKET` socket pair. Every message is exactly one
//! packet, and the kernel hands a packet whole to exactly one reader, so any
//! number of processes and threads may send on one end and receive on the
//! other with no lock: nothing is torn, lost or duplicated. With no lock
//! there is also nothing that a `fork` could copy in a locked state.
//!
//! A message larger than [`INLINE_MAX`] is written to an anonymous `memfd`
//! and only the file descriptor travels in the packet (`SCM_RIGHTS`). So a
//! sender of a large value never waits for a reader to drain a pipe: a
//! child can send its 50 MiB result and exit while its parent is still
//! waiting for that exit. A memfd has no name, so it cannot leak into
//! `/dev/shm`; the kernel frees it when the last descriptor closes.
//! A [`Connection`](crate::Connection) sends its large messages through
//! memfds it keeps and uses again (`large.rs`), in packets of their own
//! tag, which every receive here reads.

use std::cell::RefCell;
use std::fs::File;
use std::io::{IoSlice, IoSliceMut, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;

use nix::errno::Errno;
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, RecvMsg, SockFlag, SockType, recvmsg, sendmsg,
    socketpair,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::codec::{decode, encode_in};
use super::kept;
use crate::base::{Error, Result};
use crate::os::fds;

/// Payloads up to this size travel inside the packet itself. The default
/// socket buffer (about 208 KiB) holds three packets of this size; on a
/// system whose buffers are smaller than one, the kernel refuses it
/// (`EMSGSIZE`) and it goes through a memfd after all. A memfd costs its
/// creation, the shared pages it fills and frees, and a descriptor passed:
/// at 32 KiB, the 37 KB chunks of a pool's map of 100,000 tiny tasks went
/// that way, and the map took a quarter longer.
const INLINE_MAX: usize = 64 * 1024;
pub(super) const TAG_INLINE: u8 = 0;
const TAG_MEMFD: u8 = 1;
/// A memfd that its sender keeps and writes again once it is read
/// (`large.rs`).
pub(super) const TAG_POOLED: u8 = 2;
/// A part of a message that goes on in the next packet (`many.rs`).
pub(super) const TAG_PART: u8 = 3;

/// The first bytes of a packet are received on the stack, the rest (if
/// any) into [`RecvBuf`]. A small packet then writes no heap page at all,
/// which matters in a parent that has just forked: every page it writes
/// after the fork costs it a copy-on-write fault.
const RECV_STACK: usize = 512;

/// A thread's buffers for receiving: reused, so that a receive allocates
/// nothing.
struct RecvBuf {
    /// Room for a whole inline packet (tag and payload).
    data: Vec<u8>,
    /// Room for the descriptor of a memfd message.
    cmsg: Vec<u8>,
}

thread_local! {
    static RECV_BUF: RefCell<RecvBuf> = RefCell::new(RecvBuf {
        data: vec![0; INLINE_MAX + 1],
        cmsg: nix::cmsg_space!([RawFd; 1]),
    });
}

/// A connected pair: packets sent on `tx` arrive on `rx`.
pub(crate) fn pair() -> Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| Error::os("socketpair", e))
}

/// Sends one encoded message as one packet; blocks while the socket buffer
/// is full.
pub(crate) fn send_bytes(tx: BorrowedFd<'_>, payload: &[u8]) -> Result<()> {
    send_message(tx, payload, MsgFlags::empty(), INLINE_MAX).map(|_| ())
}

/// Like [`send_bytes`], but never waits: `Ok(false)` when the socket
/// buffer is full and nothing was sent.
pub(crate) fn try_send_bytes(tx: BorrowedFd<'_>, payload: &[u8]) -> Result<bool> {
    send_message(tx, payload, MsgFlags::MSG_DONTWAIT, INLINE_MAX)
}

/// A message shorter than this, with its tag, is sent from one buffer on
/// the stack.
const SMALL_PACKET: usize = 257;

/// The one way a message goes out: inline in the packet, or through a
/// memfd whose descriptor the packet carries. It builds nothing on the
/// heap itself, so a freshly forked child sending a small result copies
/// none of the allocator's pages.
pub(super) fn send_message(
    tx: BorrowedFd<'_>,
    payload: &[u8],
    flags: MsgFlags,
    inline_max: usize,
) -> Result<bool> {
    let total = payload.len();
    if total < SMALL_PACKET && total <= inline_max {
        // A small message is copied behind its tag and sent with `send`,
        // which costs the kernel less than `sendmsg` with an iovec.
        let mut packet = [0u8; SMALL_PACKET];
        packet[0] = TAG_INLINE;
        packet[1..=total].copy_from_slice(payload);
        return sent("send", flags, || {
            nix::sys::socket::send(
                tx.as_raw_fd(),
                &packet[..=total],
                flags | MsgFlags::MSG_NOSIGNAL,
            )
        });
    }
    if total <= inline_max {
        let iov = [IoSlice::new(&[TAG_INLINE]), IoSlice::new(payload)];
        let sent = sendmsg_retrying(tx, &iov, &[], flags);
        // Larger than this socket's buffer: a memfd, below.
        if sent != Err(Errno::EMSGSIZE) {
            return outcome("sendmsg", flags, sent);
        }
    }
    let memfd = memfd_create("mpcore-message", MFdFlags::MFD_CLOEXEC)
        .map_err(|e| Error::os("memfd_create", e))?;
    let mut file = File::from(memfd);
    file.write_all(payload).map_err(|e| Error::io("write", e))?;
    let len = (total as u64).to_le_bytes();
    let iov = [IoSlice::new(&[TAG_MEMFD]), IoSlice::new(&len)];
    let fds = [file.as_raw_fd()];
    send_packet(tx, &iov, &[ControlMessage::ScmRights(&fds)], flags)
    // `file` closes here; the receiver holds its own descriptor by now.
}

/// Whether a payload of `len` bytes travels inside its packet.
pub(super) fn is_inline(len: usize) -> bool {
    len <= INLINE_MAX
}

/// `sendmsg` with `flags` (and `MSG_NOSIGNAL`); `Ok(false)` when
/// `MSG_DONTWAIT` is among them and the socket buffer is full.
pub(super) fn send_packet(
    tx: BorrowedFd<'_>,
    iov: &[IoSlice<'_>],
    cmsgs: &[ControlMessage<'_>],
    flags: MsgFlags,
) -> Result<bool> {
    outcome("sendmsg", flags, sendmsg_retrying(tx, iov, cmsgs, flags))
}

/// `sendmsg` with `flags` and `MSG_NOSIGNAL`, made again when a signal
/// interrupts it; what it returned, as the kernel said it.
fn sendmsg_retrying(
    tx: BorrowedFd<'_>,
    iov: &[IoSlice<'_>],
    cmsgs: &[ControlMessage<'_>],
    flags: MsgFlags,
) -> nix::Result<usize> {
    retrying(|| {
        sendmsg::<()>(
            tx.as_raw_fd(),
            iov,
            cmsgs,
            flags | MsgFlags::MSG_NOSIGNAL,
            None,
        )
    })
}

/// Makes the send `call` (the system call `name`) until it is not
/// interrupted, and says what its outcome means ([`outcome`]).
fn sent(
    name: &'static str,
    flags: MsgFlags,
    call: impl FnMut() -> nix::Result<usize>,
) -> Result<bool> {
    outcome(name, flags, retrying(call))
}

/// Makes the system call `call` until a signal does not interrupt it.
pub(super) fn retrying<T>(mut call: impl FnMut() -> nix::Result<T>) -> nix::Result<T> {
    loop {
        match call() {
            Err(Errno::EINTR) => continue,
            result => return result,
        }
    }
}

/// What the `result` of the send system call `name` means: `Ok(false)`
/// when `MSG_DONTWAIT` is among `flags` and the socket buffer is full.
fn outcome(name: &'static str, flags: MsgFlags, result: nix::Result<usize>) -> Result<bool> {
    match result {
        Ok(_) => Ok(true),
        Err(Errno::EAGAIN) if flags.contains(MsgFlags::MSG_DONTWAIT) => Ok(false),
        Err(e) => Err(send_error(name, e)),
    }
}

/// What the error `e` of the send system call `name` means.
pub(super) fn send_error(name: &'static str, e: Errno) -> Error {
    match e {
        // A peer that closed with packets of ours unread resets the
        // connection: it is gone all the same.
        Errno::EPIPE | Errno::ECONNRESET => Error::Disconnected,
        // Each memfd message in flight holds a descriptor, and the
        // kernel caps them per user (at the open-file limit).
        Errno::ETOOMANYREFS => Error::TooManyInFlight,
        e => Error::os(name, e),
    }
}

/// Encodes `value` and sends it. A small value is encoded on the stack:
/// no allocation, which in a freshly forked child would also copy the
/// allocator's pages (copy-on-write).
pub(crate) fn send<T: Serialize + ?Sized>(tx: BorrowedFd<'_>, value: &T) -> Result<()> {
    let mut small = [0u8; 256];
    send_bytes(tx, &encode_in(value, &mut small)?)
}

/// Takes one message if one is waiting; never blocks. `Ok(None)` means
/// nothing was there (or another reader took it first).
pub(crate) fn try_recv<T: DeserializeOwned>(rx: BorrowedFd<'_>) -> Result<Option<T>> {
    try_recv_with(rx, decode)
}

/// [`try_recv`] for a socket with one reader that must not lose its
/// message (a [`Process`](crate::Process)'s result): a large message's
/// memory arrives as a descriptor, and a process with no free descriptor
/// would have the packet taken and the memory dropped by the kernel. So
/// the packet is first looked at where it lies (`MSG_PEEK`): when there is
/// no room for its descriptor, it stays in the socket and the caller gets
/// [`Error::NoFreeDescriptor`], and may try again once it has room. One
/// system call more than [`try_recv`], which a fork and a `waitpid` dwarf.
pub(crate) fn try_recv_keeping<T: DeserializeOwned>(rx: BorrowedFd<'_>) -> Result<Option<T>> {
    let peeked = RECV_BUF.with_borrow_mut(|RecvBuf { cmsg, .. }| {
        // A memfd packet is 9 bytes; the first 9 of an inline one do.
        let mut head = [0u8; 9];
        let mut iov = [IoSliceMut::new(&mut head)];
        loop {
            match recvmsg::<()>(
                rx.as_raw_fd(),
                &mut iov,
                Some(&mut *cmsg),
                MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                // A peek hands us a copy of the descriptor, if there is
                // room for one: closed here, it leaves that room for the
                // receive that follows.
                Ok(msg) => {
                    let refused = msg.flags.contains(MsgFlags::MSG_CTRUNC);
                    drop(received_fd(&msg, "recvmsg")?);
                    let bytes = msg.bytes;
                    break Ok(refused.then(|| memfd_size(&head[..bytes])).flatten());
                }
                Err(Errno::EINTR | Errno::ECONNRESET) => continue,
                // Nothing there, or an error that the receive below reports.
                Err(_) => break Ok(None),
            }
        }
    })?;
    match peeked {
        Some(bytes) => match descriptor_refused(rx, bytes, true) {
            no_room @ Error::NoFreeDescriptor { .. } => Err(no_room),
            // There is room by now (another thread closed a descriptor).
            _ => try_recv(rx),
        },
        None => try_recv(rx),
    }
}

/// Takes one message if one is waiting and throws it away unread.
pub(crate) fn try_discard(rx: BorrowedFd<'_>) -> Result<bool> {
    Ok(try_recv_with(rx, |_| Ok(()))?.is_some())
}

/// Takes one packet if one is waiting and hands its payload to `read`.
fn try_recv_with<R>(
    rx: BorrowedFd<'_>,
    read: impl FnOnce(&[u8]) -> Result<R>,
) -> Result<Option<R>> {
    try_recv_payload(rx, |payload| payload.read_with(read))
}

/// Where a received payload is: in the packet, or in a memfd of `size`
/// bytes (a fresh one, or one its sender keeps).
pub(super) enum Payload<'a> {
    Inline(&'a [u8]),
    Memfd(File, usize),
    Pooled(OwnedFd, usize),
}

impl Payload<'_> {
    /// Hands `read` the payload's bytes, wherever they are.
    pub(super) fn read_with<R>(self, read: impl FnOnce(&[u8]) -> Result<R>) -> Result<R> {
        match self {
            Payload::Inline(bytes) => read(bytes),
            memfd => read(&memfd.into_vec()?),
        }
    }

    /// The payload's bytes as a `Vec`: copied out of the packet, or read
    /// out of the memfd once.
    pub(super) fn into_vec(self) -> Result<Vec<u8>> {
        match self {
            Payload::Inline(bytes) => Ok(bytes.to_vec()),
            Payload::Memfd(file, size) => {
                // The size is the sender's word: too large is an error.
                let mut payload = kept::room_for(size)?;
                payload.resize(size, 0);
                file.read_exact_at(&mut payload, 0)
                    .map_err(|e| Error::io("read", e))?;
                Ok(payload)
            }
            Payload::Pooled(memfd, size) => kept::read_once(memfd, size),
        }
    }
}

/// Takes one packet if one is waiting and hands `read` where its payload is.
fn try_recv_payload<R>(
    rx: BorrowedFd<'_>,
    read: impl FnOnce(Payload<'_>) -> Result<R>,
) -> Result<Option<R>> {
    recv_payload(rx, MsgFlags::MSG_DONTWAIT, read)
}

/// Waits for the next packet and returns its payload as it was sent: one
/// `recvmsg`, where a `poll` and a retry would be three system calls.
/// Only for a socket that has one reader (a pool's worker): with several,
/// a packet another reader takes would leave this one asleep.
pub(crate) fn recv_bytes(rx: BorrowedFd<'_>) -> Result<Vec<u8>> {
    let received = recv_payload(rx, MsgFlags::empty(), |payload| payload.into_vec())?;
    // Without MSG_DONTWAIT, recvmsg returns a packet or end of file.
    received.ok_or(Error::Disconnected)
}

/// Waits for the next message and decodes it, as [`recv_bytes`] does (one
/// reader only); `Ok(None)` when the socket's receive timeout
/// (`SO_RCVTIMEO`) passed first. One `recvmsg`, where a `poll` first would
/// be two system calls: a manager's proxy waits for its reply so.
pub(crate) fn recv_within_timeout<T: DeserializeOwned>(rx: BorrowedFd<'_>) -> Result<Option<T>> {
    recv_payload(rx, MsgFlags::empty(), |payload| payload.read_with(decode))
}

/// Like [`recv_bytes`], but never waits: `Ok(None)` when nothing is there.
pub(crate) fn try_recv_bytes(rx: BorrowedFd<'_>) -> Result<Option<Vec<u8>>> {
    try_recv_payload(rx, |payload| payload.into_vec())
}

/// Takes one packet (waiting for it unless `flags` has `MSG_DONTWAIT`) and
/// hands `read` where its payload is. `Ok(None)`: nothing was waiting.
pub(super) fn recv_payload<R>(
    rx: BorrowedFd<'_>,
    flags: MsgFlags,
    read: impl FnOnce(Payload<'_>) -> Result<R>,
) -> Result<Option<R>> {
    RECV_BUF.with_borrow_mut(|RecvBuf { data, cmsg }| {
        let mut head = [0u8; RECV_STACK];
        let mut end_seen = false;
        let (len, msg_flags, memfd) = loop {
            let mut iov = [
                IoSliceMut::new(&mut head),
                IoSliceMut::new(&mut data[RECV_STACK..]),
            ];
            match recvmsg::<()>(
                rx.as_raw_fd(),
                &mut iov,
                Some(&mut *cmsg),
                flags | MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                // End of file, seen by a receive that does not wait: look
                // once more. The kernel's non-blocking receive on a
                // `SOCK_SEQPACKET` socket looks at the queue, finds it
                // empty, and only then looks whether the peer has gone: a
                // peer that sends its last packet and closes between the
                // two looks makes it report end of file with the packet
                // queued (Linux's `unix_dgram_recvmsg`, "Signal EOF on
                // disconnected non-blocking SEQPACKET socket"). The packet
                // was queued before the peer closed, so a second look
                // finds it; a real end of file is one again. (Seen as a
                // `Listener`'s reply lost once in a few thousand
                // connections, when both sides looked before sleeping.)
                Ok(msg)
                    if msg.bytes == 0 && flags.contains(MsgFlags::MSG_DONTWAIT) && !end_seen =>
                {
                    drop(received_fd(&msg, "recvmsg")?);
                    end_seen = true;
                }
                Ok(msg) => break (msg.bytes, msg.flags, received_fd(&msg, "recvmsg")?),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Ok(None),
                // The peer closed with packets of ours unread. The kernel
                // reports that once; the packets it sent before are still
                // queued for us, and then comes end of file.
                Err(Errno::ECONNRESET) => continue,
                Err(e) => return Err(Error::os("recvmsg", e)),
            }
        };
        let packet = if len <= RECV_STACK {
            &head[..len]
        } else {
            data[..RECV_STACK].copy_from_slice(&head);
            &data[..len]
        };
        read(payload_of(rx, packet, msg_flags, memfd)?).map(Some)
    })
}

/// The descriptor a received packet carries, if any: a memfd message's.
pub(super) fn received_fd<S>(
    msg: &RecvMsg<'_, '_, S>,
    call: &'static str,
) -> Result<Option<OwnedFd>> {
    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        // The kernel could not hand us the descriptor (it installs none
        // then); nix would call this ENOBUFS. `payload_of` says what it
        // means for the message.
        return Ok(None);
    }
    let fds = fds::owned(msg).map_err(|e| Error::os(call, e))?;
    // Only one is ever sent; any other is closed here.
    Ok(fds.into_iter().next())
}

/// Where the payload of a received `packet` is, given the `flags` and the
/// descriptor it came with: end of file when it is empty, an error when
/// it was truncated or is not one of ours.
pub(super) fn payload_of<'a>(
    rx: BorrowedFd<'_>,
    packet: &'a [u8],
    flags: MsgFlags,
    memfd: Option<OwnedFd>,
) -> Result<Payload<'a>> {
    let len = packet.len();
    if len == 0 {
        // Zero bytes on a packet socket is end of file: every sender is gone.
        return Err(Error::Disconnected);
    }
    if flags.contains(MsgFlags::MSG_CTRUNC) && memfd.is_none() {
        if let Some(bytes) = memfd_size(packet) {
            // The packet is gone, and the memory with it: say so.
            return Err(descriptor_refused(rx, bytes, false));
        }
    }
    if flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC) {
        return Err(Error::Codec {
            action: "decode",
            reason: format!("a packet of {len} bytes was truncated"),
        });
    }
    match (packet[0], memfd) {
        (TAG_INLINE, None) => Ok(Payload::Inline(&packet[1..])),
        (TAG_MEMFD, Some(memfd)) if len == 9 => {
            let size = u64::from_le_bytes(packet[1..9].try_into().expect("8 bytes"));
            Ok(Payload::Memfd(File::from(memfd), size as usize))
        }
        (TAG_POOLED, Some(memfd)) if len == 9 => {
            let size = u64::from_le_bytes(packet[1..9].try_into().expect("8 bytes"));
            Ok(Payload::Pooled(memfd, size as usize))
        }
        (tag, fd) => Err(Error::Codec {
            action: "decode",
            reason: format!(
                "unexpected packet (tag {tag}, {len} bytes, descriptor: {})",
                fd.is_some()
            ),
        }),
    }
}

/// The size a memfd packet announces, if `packet` is one.
fn memfd_size(packet: &[u8]) -> Option<u64> {
    match packet {
        [TAG_MEMFD | TAG_POOLED, size @ ..] => Some(u64::from_le_bytes(size.try_into().ok()?)),
        _ => None,
    }
}

/// Why the descriptor of a memfd message of `bytes` bytes did not reach
/// us; `kept`: the message is still in the socket. The kernel drops the
/// descriptor when this process has no free slot for it (`EMFILE`), and
/// says only `MSG_CTRUNC`: a probe on the error path tells whether that
/// was the cause (a security module may also refuse a descriptor).
fn descriptor_refused(rx: BorrowedFd<'_>, bytes: u64, kept: bool) -> Error {
    match nix::fcntl::fcntl(rx, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(0)) {
        Err(Errno::EMFILE) => Error::NoFreeDescriptor { bytes, kept },
        probe => {
            if let Ok(fd) = probe {
                // SAFETY: `fcntl` just made this descriptor for us alone.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
            }
            Error::Codec {
                action: "decode",
                reason: format!(
                    "a message of {bytes} bytes came without the descriptor of its memory \
                     (the kernel refused to pass it on){}",
                    if kept { "" } else { "; the message is lost" }
                ),
            }
        }
    }
}

#[cfg(test)]
#[path = "channel_tests.rs"]
mod tests;
