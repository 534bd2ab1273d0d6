//! Descriptors that travel over a Unix socket (`SCM_RIGHTS`): the one
//! place where a received descriptor becomes an [`OwnedFd`].

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, RecvMsg, recvmsg};

/// The descriptors that came with a received message, now ours.
pub(crate) fn owned<S>(msg: &RecvMsg<'_, '_, S>) -> nix::Result<Vec<OwnedFd>> {
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            // SAFETY: the kernel has just installed these descriptors in
            // this process for this message; nothing else owns them.
            fds.extend(
                received
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    Ok(fds)
}

/// Waits for one packet on `socket`, into `buf`, with room for up to
/// `MAX` descriptors; returns its length and its descriptors
/// (close-on-exec). A signal does not end the wait. End of file is a
/// length of 0 with no descriptor.
pub(crate) fn recv_with_fds<const MAX: usize>(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
) -> nix::Result<(usize, Vec<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; MAX]);
    let mut iov = [IoSliceMut::new(buf)];
    loop {
        match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
            Ok(msg) => return Ok((msg.bytes, owned(&msg)?)),
        }
    }
}
